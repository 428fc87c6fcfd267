//! Where `put` keeps each Upload's state between runs, so that running the same command
//! again continues it: one JSON snapshot per Upload under `$XDG_STATE_HOME/uploads/` (else
//! `~/.local/state/uploads/`), named by a hash of the file's canonical path, where it goes
//! (the base URL, or the `--local` data directory) and a hash of the API key. The key itself
//! is never written. A lock file beside each snapshot keeps two `put` processes off one
//! Upload; both files are removed when the run ends with nothing left to continue.

use std::fmt::Write;
use std::fs::{File, OpenOptions, TryLockError};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::Failure;

/// The per-user directory that holds the snapshots.
pub struct StateDir {
    path: PathBuf,
}

impl StateDir {
    /// `$XDG_STATE_HOME/uploads`, else `$HOME/.local/state/uploads` (the XDG base directory
    /// rule); `lookup` reads the environment. `None` when neither is set.
    pub fn for_user(lookup: impl Fn(&str) -> Option<String>) -> Option<Self> {
        let base = lookup("XDG_STATE_HOME")
            .filter(|dir| Path::new(dir).is_absolute())
            .map(PathBuf::from)
            .or_else(|| {
                lookup("HOME")
                    .filter(|home| !home.is_empty())
                    .map(|home| Path::new(&home).join(".local").join("state"))
            })?;
        Some(Self {
            path: base.join("uploads"),
        })
    }

    /// Takes the state of one file's Upload to `destination` for this process: refused while
    /// another process holds it. `canonical` is the file's canonical path; `destination`
    /// names where it goes (base URL or data directory) and `api_key` whose it is.
    pub fn claim(
        &self,
        label: &str,
        canonical: &Path,
        destination: &str,
        api_key: Option<&str>,
    ) -> Result<Claim, Failure> {
        let cannot = |error: std::io::Error| {
            Failure::Usage(format!(
                "cannot keep the upload state in {}: {error} (set XDG_STATE_HOME, or give --no-resume)",
                self.path.display()
            ))
        };
        std::fs::create_dir_all(&self.path).map_err(cannot)?;
        let name = state_name(canonical, destination, api_key);
        let state_file = self.path.join(format!("{name}.json"));
        let lock_path = self.path.join(format!("{name}.lock"));
        loop {
            let lock = OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&lock_path)
                .map_err(cannot)?;
            match lock.try_lock() {
                Ok(()) => {}
                Err(TryLockError::WouldBlock) => {
                    return Err(Failure::Transfer(format!(
                        "another `uploads put` of {label} to the same place is running; wait for it to end (or stop it), then run this again"
                    )));
                }
                Err(TryLockError::Error(error)) => return Err(cannot(error)),
            }
            // The holder before us may have removed the lock file after we opened it: then
            // our lock is on a file nobody else will find, and we take the new one.
            if same_file(&lock, &lock_path) {
                return Ok(Claim {
                    state_file,
                    lock_path,
                    _lock: lock,
                });
            }
        }
    }
}

/// Whether `path` still names the open `file`.
#[cfg(unix)]
fn same_file(file: &File, path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (file.metadata(), std::fs::metadata(path)) {
        (Ok(open), Ok(named)) => open.dev() == named.dev() && open.ino() == named.ino(),
        _ => false,
    }
}

/// Whether `path` still names the open `file` (without inode numbers: whether it exists).
#[cfg(not(unix))]
fn same_file(_file: &File, path: &Path) -> bool {
    path.exists()
}

/// The snapshot's name: a hash of what identifies one Upload of one file, so the name
/// reveals neither the path nor the key.
fn state_name(canonical: &Path, destination: &str, api_key: Option<&str>) -> String {
    let key_hash = Sha256::digest(api_key.unwrap_or_default().as_bytes());
    let mut hasher = Sha256::new();
    // Lengths first, so that no two different triples hash the same bytes.
    for field in [
        canonical.to_string_lossy().as_bytes(),
        destination.as_bytes(),
        key_hash.as_slice(),
    ] {
        hasher.update((field.len() as u64).to_le_bytes());
        hasher.update(field);
    }
    hasher
        .finalize()
        .iter()
        .take(16)
        .fold(String::with_capacity(32), |mut name, byte| {
            let _ = write!(name, "{byte:02x}");
            name
        })
}

/// One file's state, held by this process until dropped.
pub struct Claim {
    /// Where the Upload's snapshot is kept.
    pub state_file: PathBuf,
    lock_path: PathBuf,
    _lock: File,
}

impl Drop for Claim {
    fn drop(&mut self) {
        // Removed while still locked; a process that opened it meanwhile sees it is gone
        // (`same_file`) and takes a new one. It stays only when the snapshot does, as a
        // marker beside it is harmless and removing it could race with no gain.
        if !self.state_file.exists() {
            let _ = std::fs::remove_file(&self.lock_path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_directory_follows_xdg_and_falls_back_to_home() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                pairs
                    .iter()
                    .find(|(key, _)| *key == name)
                    .map(|(_, value)| (*value).to_owned())
            }
        };
        let xdg = StateDir::for_user(env(&[("XDG_STATE_HOME", "/s"), ("HOME", "/h")])).unwrap();
        assert_eq!(xdg.path, Path::new("/s/uploads"));
        // A relative XDG_STATE_HOME is invalid by the spec and ignored.
        let home = StateDir::for_user(env(&[("XDG_STATE_HOME", "s"), ("HOME", "/h")])).unwrap();
        assert_eq!(home.path, Path::new("/h/.local/state/uploads"));
        assert!(StateDir::for_user(env(&[])).is_none());
    }

    #[test]
    fn each_file_destination_and_key_has_its_own_state_and_the_key_is_not_in_it() {
        let file = Path::new("/data/a.jsonl");
        let name = state_name(file, "https://api.openai.com/v1", Some("sk-1"));
        assert_eq!(name.len(), 32);
        assert_ne!(
            name,
            state_name(
                Path::new("/data/b.jsonl"),
                "https://api.openai.com/v1",
                Some("sk-1")
            )
        );
        assert_ne!(
            name,
            state_name(file, "http://127.0.0.1:8000/v1", Some("sk-1"))
        );
        assert_ne!(
            name,
            state_name(file, "https://api.openai.com/v1", Some("sk-2"))
        );
        assert_eq!(
            name,
            state_name(file, "https://api.openai.com/v1", Some("sk-1"))
        );
        assert!(!name.contains("sk-1"));
    }

    #[test]
    fn a_second_claim_of_one_file_is_refused_until_the_first_ends() {
        let dir = tempfile::tempdir().unwrap();
        let states = StateDir {
            path: dir.path().join("uploads"),
        };
        let file = Path::new("/data/a.jsonl");
        let first = states.claim("a.jsonl", file, "u", None).ok().unwrap();
        let Err(Failure::Transfer(message)) = states.claim("a.jsonl", file, "u", None) else {
            panic!("a second claim must be refused");
        };
        assert!(
            message.contains("another `uploads put` of a.jsonl"),
            "{message}"
        );
        drop(first);
        // Nothing is left behind, and the file can be claimed again.
        assert_eq!(std::fs::read_dir(&states.path).unwrap().count(), 0);
        assert!(states.claim("a.jsonl", file, "u", None).is_ok());
    }
}
