//! Where requests go: `--local` (a server embedded in this process), else `--base-url`, else
//! `OPENAI_BASE_URL`, else OpenAI; the key from `OPENAI_API_KEY`.

use std::path::PathBuf;

use uploads_core::api::{ClientConfig, DEFAULT_BASE_URL};
use uploads_server::{RunningServer, Server};

use crate::Failure;

/// The target of a command, and the embedded server when there is one.
pub struct Target {
    /// Base URL and credentials.
    pub config: ClientConfig,
    /// The embedded server of `--local`, serving until dropped.
    pub local: Option<LocalServer>,
}

/// A server running in this process on 127.0.0.1 with an ephemeral port.
pub struct LocalServer {
    /// The running server.
    pub server: RunningServer,
}

/// The target options every remote command shares.
#[derive(clap::Args, Debug, Clone)]
pub struct TargetArgs {
    /// The API's base URL (default: $OPENAI_BASE_URL, else https://api.openai.com/v1).
    #[arg(long, global = true)]
    pub base_url: Option<String>,
    /// Use a server embedded in this process, storing into --data-dir: no network, no key.
    #[arg(long, global = true, conflicts_with = "base_url")]
    pub local: bool,
    /// The embedded server's data directory (with --local).
    #[arg(long, global = true, default_value = "uploads-data")]
    pub data_dir: PathBuf,
}

impl TargetArgs {
    /// `--local` with a data directory that does not exist: a read-only command answers
    /// "nothing stored" rather than create it.
    pub fn local_data_missing(&self) -> bool {
        self.local && !self.data_dir.exists()
    }

    /// Resolves the target; starts the embedded server for `--local`. `lookup` reads the
    /// environment. A remote target without a key is a usage error, found before any file
    /// is read.
    pub async fn resolve(
        &self,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<Target, Failure> {
        if self.local {
            let server = Server::builder()
                .data_dir(&self.data_dir)
                .start()
                .await
                .map_err(|error| {
                    if error.kind() == std::io::ErrorKind::ResourceBusy {
                        // A server (or another `--local` run) owns the directory.
                        return Failure::Transfer(format!(
                            "{error}: send to that server with --base-url (the URL `uploads serve` printed) instead of --local"
                        ));
                    }
                    Failure::Transfer(format!(
                        "cannot start the local server in {}: {error}",
                        self.data_dir.display()
                    ))
                })?;
            let config = ClientConfig::new(server.base_url());
            return Ok(Target {
                config,
                local: Some(LocalServer { server }),
            });
        }
        let mut config = ClientConfig::from_env(&lookup);
        if let Some(base_url) = &self.base_url {
            config.base_url = ClientConfig::new(base_url.as_str()).base_url;
        }
        if config.api_key.is_none() {
            let where_to = if config.base_url == DEFAULT_BASE_URL {
                "OpenAI".to_owned()
            } else {
                config.base_url.clone()
            };
            return Err(Failure::Usage(format!(
                "OPENAI_API_KEY is not set: it is needed to reach {where_to} (or use --local)"
            )));
        }
        Ok(Target {
            config,
            local: None,
        })
    }
}

impl Target {
    /// Shuts the embedded `--local` server down gracefully, if there is one.
    pub async fn close(self) {
        if let Some(local) = self.local {
            local.server.shutdown().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(base_url: Option<&str>) -> TargetArgs {
        TargetArgs {
            base_url: base_url.map(str::to_owned),
            local: false,
            data_dir: PathBuf::from("unused"),
        }
    }

    #[tokio::test]
    async fn the_flag_beats_the_environment_which_beats_the_default() {
        let env = |name: &str| match name {
            "OPENAI_API_KEY" => Some("sk-1".to_owned()),
            "OPENAI_BASE_URL" => Some("http://env.example/v1".to_owned()),
            _ => None,
        };
        let flag = args(Some("http://flag.example/v1/"))
            .resolve(env)
            .await
            .ok()
            .unwrap();
        assert_eq!(flag.config.base_url, "http://flag.example/v1");
        assert_eq!(flag.config.api_key.as_deref(), Some("sk-1"));
        let from_env = args(None).resolve(env).await.ok().unwrap();
        assert_eq!(from_env.config.base_url, "http://env.example/v1");
        let key_only = |name: &str| (name == "OPENAI_API_KEY").then(|| "sk-2".to_owned());
        let default = args(None).resolve(key_only).await.ok().unwrap();
        assert_eq!(default.config.base_url, DEFAULT_BASE_URL);
    }

    #[tokio::test]
    async fn a_remote_target_without_a_key_is_a_usage_error() {
        let Err(Failure::Usage(message)) = args(None).resolve(|_| None).await else {
            panic!("expected a usage error");
        };
        assert!(
            message.starts_with("OPENAI_API_KEY is not set"),
            "{message}"
        );
    }
}
