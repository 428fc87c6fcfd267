//! Where requests go and who sends them: [`ClientConfig`], the headers every request
//! carries, and [`BuildError`] for a request that cannot be built.

use std::fmt;

use bytes::Bytes;
use http::header::{
    ACCEPT, AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, HeaderName, HeaderValue, USER_AGENT,
};
use http::{Method, Request, Uri};
use serde::Serialize;

use super::encoding::encode_component;
use crate::multipart::MultipartBody;

/// The base URL of OpenAI's API, used when none is configured.
pub const DEFAULT_BASE_URL: &str = "https://api.openai.com/v1";

/// The `User-Agent` every request carries.
pub const USER_AGENT_VALUE: &str = concat!("uploads-rs/", env!("CARGO_PKG_VERSION"));

/// The `Accept` of endpoints that answer JSON.
pub(super) const ACCEPT_JSON: &str = "application/json";

/// Header naming the organization a request is billed to.
const OPENAI_ORGANIZATION: HeaderName = HeaderName::from_static("openai-organization");
/// Header naming the project a request is billed to.
const OPENAI_PROJECT: HeaderName = HeaderName::from_static("openai-project");

/// Where requests go and the credentials they carry.
///
/// Every operation is a method on this value that builds an [`http::Request`] and never
/// sends it (see the [module docs](super) for the list). Methods, rather than free functions,
/// because every request needs the base URL and the credentials, and a method call reads as
/// the operation it builds: `config.complete_upload(&id, &body)`.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ClientConfig {
    /// The API's base URL, e.g. [`DEFAULT_BASE_URL`]; trailing slashes are ignored.
    pub base_url: String,
    /// The API key, sent as `Authorization: Bearer <key>`.
    pub api_key: Option<String>,
    /// Sent as `OpenAI-Organization` when set.
    pub organization: Option<String>,
    /// Sent as `OpenAI-Project` when set.
    pub project: Option<String>,
}

impl fmt::Debug for ClientConfig {
    /// Shows everything but the key, so a config can be logged without leaking it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientConfig")
            .field("base_url", &self.base_url)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("organization", &self.organization)
            .field("project", &self.project)
            .finish()
    }
}

impl Default for ClientConfig {
    /// OpenAI's base URL, no credentials.
    fn default() -> Self {
        Self::new(DEFAULT_BASE_URL)
    }
}

/// Why a request could not be built. Nothing was sent.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// The base URL is not an absolute `http`/`https` URL, or carries a query or fragment
    /// that would swallow the operation's path.
    #[error(
        "base url {base_url:?} must be an absolute http or https url without query or fragment"
    )]
    UnusableBaseUrl {
        /// The configured base URL.
        base_url: String,
    },
    /// The request URI does not parse (the base URL holds characters a URI may not).
    #[error("invalid request uri {uri:?}")]
    InvalidUri {
        /// The URI as built.
        uri: String,
        /// Why it does not parse.
        #[source]
        source: http::uri::InvalidUri,
    },
    /// A header value (the API key, organization or project) holds a character outside
    /// visible ASCII and space. The value itself is not shown: it may be a secret.
    #[error("the {header} header value holds characters outside visible ascii")]
    InvalidHeaderValue {
        /// The header the value was meant for.
        header: &'static str,
    },
    /// An id given as a path parameter is empty: the request would reach another route.
    #[error("{param} must not be empty")]
    EmptyId {
        /// The path parameter, e.g. `upload_id`.
        param: &'static str,
    },
    /// The JSON body could not be encoded.
    #[error("could not encode the json body")]
    Json(#[from] serde_json::Error),
}

impl ClientConfig {
    /// A config for `base_url` without credentials; trailing slashes are dropped.
    pub fn new(base_url: impl Into<String>) -> Self {
        let base_url = base_url.into();
        Self {
            base_url: trim_base_url(&base_url).to_owned(),
            api_key: None,
            organization: None,
            project: None,
        }
    }

    /// Reads `OPENAI_API_KEY`, `OPENAI_BASE_URL` (default [`DEFAULT_BASE_URL`]),
    /// `OPENAI_ORG_ID` and `OPENAI_PROJECT_ID` through `lookup`; an empty value counts as
    /// unset. The core never reads the environment itself: an adapter passes
    /// `|name| std::env::var(name).ok()`.
    pub fn from_env(lookup: impl Fn(&str) -> Option<String>) -> Self {
        let read = |name: &str| lookup(name).filter(|value| !value.is_empty());
        Self {
            api_key: read("OPENAI_API_KEY"),
            organization: read("OPENAI_ORG_ID"),
            project: read("OPENAI_PROJECT_ID"),
            ..Self::new(read("OPENAI_BASE_URL").unwrap_or_else(|| DEFAULT_BASE_URL.to_owned()))
        }
    }

    /// This config with an API key.
    #[must_use]
    pub fn with_api_key(mut self, api_key: impl Into<String>) -> Self {
        self.api_key = Some(api_key.into());
        self
    }

    /// This config with an organization.
    #[must_use]
    pub fn with_organization(mut self, organization: impl Into<String>) -> Self {
        self.organization = Some(organization.into());
        self
    }

    /// This config with a project.
    #[must_use]
    pub fn with_project(mut self, project: impl Into<String>) -> Self {
        self.project = Some(project.into());
        self
    }

    /// A request to `{base}{path_and_query}` with the headers every request carries:
    /// credentials, `Accept` and `User-Agent`.
    pub(super) fn request<B>(
        &self,
        method: Method,
        path_and_query: &str,
        accept: &'static str,
        body: B,
    ) -> Result<Request<B>, BuildError> {
        let mut request = Request::new(body);
        *request.method_mut() = method;
        *request.uri_mut() = self.uri(path_and_query)?;
        let headers = request.headers_mut();
        if let Some(api_key) = &self.api_key {
            let mut value = header_value("authorization", &format!("Bearer {api_key}"))?;
            // Keeps the key out of HTTP/2 header compression tables and of debug output.
            value.set_sensitive(true);
            headers.insert(AUTHORIZATION, value);
        }
        if let Some(organization) = &self.organization {
            headers.insert(
                OPENAI_ORGANIZATION,
                header_value("openai-organization", organization)?,
            );
        }
        if let Some(project) = &self.project {
            headers.insert(OPENAI_PROJECT, header_value("openai-project", project)?);
        }
        headers.insert(ACCEPT, HeaderValue::from_static(accept));
        headers.insert(USER_AGENT, HeaderValue::from_static(USER_AGENT_VALUE));
        Ok(request)
    }

    /// A request with nothing in its body, e.g. a `GET`.
    pub(super) fn empty_request(
        &self,
        method: Method,
        path_and_query: &str,
        accept: &'static str,
    ) -> Result<Request<Bytes>, BuildError> {
        self.request(method, path_and_query, accept, Bytes::new())
    }

    /// A `POST` whose body is `body` as JSON, answered with JSON.
    pub(super) fn json_request(
        &self,
        path: &str,
        body: &impl Serialize,
    ) -> Result<Request<Bytes>, BuildError> {
        let body = Bytes::from(serde_json::to_vec(body)?);
        let mut request = self.request(Method::POST, path, ACCEPT_JSON, Bytes::new())?;
        request
            .headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static(ACCEPT_JSON));
        set_content_length(&mut request, body.len() as u64);
        *request.body_mut() = body;
        Ok(request)
    }

    /// The head of a multipart `POST` answered with JSON: `Content-Type` with the boundary
    /// and `Content-Length` of head, data and tail. The adapter sends `body.head`, the data,
    /// then `body.tail`.
    pub(super) fn multipart_head(
        &self,
        path: &str,
        body: &MultipartBody,
    ) -> Result<Request<()>, BuildError> {
        let mut request = self.request(Method::POST, path, ACCEPT_JSON, ())?;
        // The boundary comes from `Boundary`, which admits only header-safe characters.
        let content_type = header_value("content-type", &body.content_type)?;
        request.headers_mut().insert(CONTENT_TYPE, content_type);
        set_content_length(&mut request, body.content_length);
        Ok(request)
    }

    fn uri(&self, path_and_query: &str) -> Result<Uri, BuildError> {
        let base_url = trim_base_url(&self.base_url);
        let unusable = || BuildError::UnusableBaseUrl {
            base_url: self.base_url.clone(),
        };
        let lowercase = base_url.to_ascii_lowercase();
        let http_scheme = lowercase.starts_with("http://") || lowercase.starts_with("https://");
        if !http_scheme || base_url.contains(['?', '#']) {
            return Err(unusable());
        }
        let text = format!("{base_url}{path_and_query}");
        let uri = Uri::try_from(text.as_str()).map_err(|source| BuildError::InvalidUri {
            uri: text.clone(),
            source,
        })?;
        if uri.host().is_none_or(str::is_empty) {
            return Err(unusable());
        }
        Ok(uri)
    }
}

/// A multipart head with the whole body in place, for data held in memory.
pub(super) fn with_data(head: Request<()>, body: &MultipartBody, data: &[u8]) -> Request<Bytes> {
    head.map(|()| Bytes::from(body.assemble(data)))
}

/// `/{prefix}/{id}{suffix}` with the id percent-encoded as one path segment.
pub(super) fn id_path(
    prefix: &str,
    param: &'static str,
    id: &str,
    suffix: &str,
) -> Result<String, BuildError> {
    if id.is_empty() {
        return Err(BuildError::EmptyId { param });
    }
    Ok(format!("/{prefix}/{}{suffix}", encode_component(id)))
}

fn trim_base_url(base_url: &str) -> &str {
    base_url.trim_end_matches('/')
}

/// Sets `Content-Length`, which every request with a body (even an empty one) carries.
pub(super) fn set_content_length<B>(request: &mut Request<B>, length: u64) {
    request
        .headers_mut()
        .insert(CONTENT_LENGTH, HeaderValue::from(length));
}

/// A header value of visible ASCII and spaces. Stricter than [`HeaderValue::from_str`],
/// which lets UTF-8 through: a key pasted with a non-ASCII character must fail here, not as
/// a confusing 401 from the service.
fn header_value(header: &'static str, value: &str) -> Result<HeaderValue, BuildError> {
    let invalid = || BuildError::InvalidHeaderValue { header };
    if !value
        .bytes()
        .all(|byte| byte == b' ' || byte.is_ascii_graphic())
    {
        return Err(invalid());
    }
    HeaderValue::from_str(value).map_err(|_| invalid())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn lookup(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|&(name, value)| (name.to_owned(), value.to_owned()))
            .collect();
        move |name| map.get(name).cloned()
    }

    #[test]
    fn from_env_defaults_to_openai_without_credentials() {
        assert_eq!(ClientConfig::from_env(lookup(&[])), ClientConfig::default());
        assert_eq!(
            ClientConfig::default().base_url,
            "https://api.openai.com/v1"
        );
        assert_eq!(ClientConfig::default().api_key, None);
    }

    #[test]
    fn from_env_reads_every_variable() {
        let config = ClientConfig::from_env(lookup(&[
            ("OPENAI_API_KEY", "sk-test"),
            ("OPENAI_BASE_URL", "http://127.0.0.1:8080/v1/"),
            ("OPENAI_ORG_ID", "org-1"),
            ("OPENAI_PROJECT_ID", "proj_1"),
        ]));
        assert_eq!(
            config,
            ClientConfig::new("http://127.0.0.1:8080/v1")
                .with_api_key("sk-test")
                .with_organization("org-1")
                .with_project("proj_1")
        );
    }

    #[test]
    fn from_env_treats_empty_values_as_unset() {
        let config = ClientConfig::from_env(lookup(&[
            ("OPENAI_API_KEY", ""),
            ("OPENAI_BASE_URL", ""),
            ("OPENAI_ORG_ID", ""),
            ("OPENAI_PROJECT_ID", ""),
        ]));
        assert_eq!(config, ClientConfig::default());
    }

    #[test]
    fn trailing_slashes_are_ignored() {
        assert_eq!(ClientConfig::new("http://h/v1//").base_url, "http://h/v1");
        // Also when the field is set directly, bypassing `new`.
        let config = ClientConfig {
            base_url: "http://h/v1/".to_owned(),
            ..ClientConfig::default()
        };
        let request = config
            .empty_request(Method::GET, "/files", ACCEPT_JSON)
            .unwrap();
        assert_eq!(request.uri(), "http://h/v1/files");
    }

    #[test]
    fn debug_output_hides_the_key() {
        let config = ClientConfig::default().with_api_key("sk-secret");
        let shown = format!("{config:?}");
        assert!(!shown.contains("sk-secret"), "{shown}");
        assert!(shown.contains("<redacted>"), "{shown}");
    }

    #[test]
    fn bad_header_values_are_refused_without_echoing_them() {
        for config in [
            ClientConfig::default().with_api_key("sk-\nInjected: yes"),
            ClientConfig::default().with_api_key("sk-é"),
        ] {
            let error = config
                .empty_request(Method::GET, "/files", ACCEPT_JSON)
                .unwrap_err();
            assert!(matches!(
                error,
                BuildError::InvalidHeaderValue {
                    header: "authorization"
                }
            ));
            assert_eq!(
                error.to_string(),
                "the authorization header value holds characters outside visible ascii"
            );
        }
        let error = ClientConfig::default()
            .with_project("proj\r1")
            .empty_request(Method::GET, "/files", ACCEPT_JSON)
            .unwrap_err();
        assert!(matches!(
            error,
            BuildError::InvalidHeaderValue {
                header: "openai-project"
            }
        ));
    }

    #[test]
    fn unusable_base_urls_are_refused() {
        for base_url in [
            "localhost:8080",
            "/v1",
            "ftp://h/v1",
            "http://h/v1?x=1",
            "http://h/v1#top",
            "http://:80/v1",
        ] {
            let error = ClientConfig::new(base_url)
                .empty_request(Method::GET, "/files", ACCEPT_JSON)
                .unwrap_err();
            assert!(
                matches!(error, BuildError::UnusableBaseUrl { .. }),
                "{base_url}: {error:?}"
            );
        }
        let error = ClientConfig::new("http://h/v 1")
            .empty_request(Method::GET, "/files", ACCEPT_JSON)
            .unwrap_err();
        assert!(matches!(error, BuildError::InvalidUri { .. }), "{error:?}");
    }

    #[test]
    fn empty_ids_are_refused_so_the_route_cannot_change() {
        let error = id_path("files", "file_id", "", "").unwrap_err();
        assert!(matches!(error, BuildError::EmptyId { param: "file_id" }));
        assert_eq!(error.to_string(), "file_id must not be empty");
    }
}
