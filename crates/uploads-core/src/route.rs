//! The service's routes: which operation a method and path name, with OpenAI's answers for a
//! path that does not exist (404 `Invalid URL (METHOD /path)`) and a method a path does not
//! serve (405).

use http::Method;

use crate::rejection::Rejection;
use crate::types::{FileId, UploadId};

/// The prefix every route lives under, as in `https://api.openai.com/v1`.
pub const API_PREFIX: &str = "/v1";

/// The health check's path, outside the API: for load balancers and container health checks.
pub const HEALTH_PATH: &str = "/healthz";

/// An operation of the Uploads + Files service.
///
/// Exhaustive on purpose: a server MUST serve every route, so its `match` names each one and
/// a new route is a compile error, not a 404 or a 500 at runtime.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// `POST /v1/uploads`
    CreateUpload,
    /// `POST /v1/uploads/{id}/parts`
    AddUploadPart(UploadId),
    /// `POST /v1/uploads/{id}/complete`
    CompleteUpload(UploadId),
    /// `POST /v1/uploads/{id}/cancel`
    CancelUpload(UploadId),
    /// `GET /v1/files`
    ListFiles,
    /// `POST /v1/files`
    CreateFile,
    /// `GET /v1/files/{id}`
    RetrieveFile(FileId),
    /// `DELETE /v1/files/{id}`
    DeleteFile(FileId),
    /// `GET /v1/files/{id}/content`
    DownloadFile(FileId),
    /// `GET /healthz`: 200 when the server can serve, 503 when its store is not usable. It
    /// needs no key and reveals nothing but that.
    Health,
}

impl Route {
    /// The route's name, as OpenAI's API reference names the operation (`create_upload`,
    /// `add_upload_part`, ...): what a request log or a metric labels it with.
    pub fn name(&self) -> &'static str {
        match self {
            Self::CreateUpload => "create_upload",
            Self::AddUploadPart(_) => "add_upload_part",
            Self::CompleteUpload(_) => "complete_upload",
            Self::CancelUpload(_) => "cancel_upload",
            Self::ListFiles => "list_files",
            Self::CreateFile => "create_file",
            Self::RetrieveFile(_) => "retrieve_file",
            Self::DeleteFile(_) => "delete_file",
            Self::DownloadFile(_) => "download_file",
            Self::Health => "health",
        }
    }

    /// The route for a method and a path (without the query string).
    pub fn resolve(method: &Method, path: &str) -> Result<Self, Rejection> {
        let unknown = || Rejection::unknown_route(method, path);
        if path == HEALTH_PATH {
            return (*method == Method::GET)
                .then_some(Route::Health)
                .ok_or_else(|| Rejection::method_not_allowed(method, path));
        }
        let rest = path.strip_prefix(API_PREFIX).ok_or_else(unknown)?;
        let segments: Vec<&str> = rest
            .strip_prefix('/')
            .ok_or_else(unknown)?
            .split('/')
            .collect();
        let post = *method == Method::POST;
        // Each arm is a known path; `None` means it does not serve this method.
        let route = match segments.as_slice() {
            ["uploads"] => post.then_some(Route::CreateUpload),
            ["uploads", id, action @ ("parts" | "complete" | "cancel")] if !id.is_empty() => {
                let id = UploadId::new(percent_decode(id));
                let route = match *action {
                    "parts" => Route::AddUploadPart(id),
                    "complete" => Route::CompleteUpload(id),
                    _ => Route::CancelUpload(id),
                };
                post.then_some(route)
            }
            ["files"] => match *method {
                Method::GET => Some(Route::ListFiles),
                Method::POST => Some(Route::CreateFile),
                _ => None,
            },
            ["files", id] if !id.is_empty() => {
                let id = FileId::new(percent_decode(id));
                match *method {
                    Method::GET => Some(Route::RetrieveFile(id)),
                    Method::DELETE => Some(Route::DeleteFile(id)),
                    _ => None,
                }
            }
            ["files", id, "content"] if !id.is_empty() => {
                let id = FileId::new(percent_decode(id));
                (*method == Method::GET).then_some(Route::DownloadFile(id))
            }
            _ => return Err(unknown()),
        };
        route.ok_or_else(|| Rejection::method_not_allowed(method, path))
    }
}

/// The methods a path serves, for the `Allow` header of a 405; empty for a path that does
/// not exist.
pub fn allowed_methods(path: &str) -> Vec<Method> {
    [Method::GET, Method::POST, Method::DELETE]
        .into_iter()
        .filter(|method| Route::resolve(method, path).is_ok())
        .collect()
}

/// Decodes `%XX` escapes of a path segment; malformed escapes are kept as they are.
pub fn percent_decode(segment: &str) -> String {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        let escaped = (bytes[index] == b'%')
            .then(|| bytes.get(index + 1..index + 3))
            .flatten()
            .and_then(|hex| std::str::from_utf8(hex).ok())
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        if let Some(byte) = escaped {
            out.push(byte);
            index += 3;
        } else {
            out.push(bytes[index]);
            index += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::StatusCode;

    #[test]
    fn route_names_are_the_specs_operation_ids_in_snake_case() {
        let spec = include_str!("../../../spec/openai-uploads-files.openapi.yaml");
        let operations: Vec<String> = spec
            .lines()
            .filter_map(|line| line.trim().strip_prefix("operationId: "))
            .map(|id| {
                id.chars().fold(String::new(), |mut snake, c| {
                    if c.is_ascii_uppercase() {
                        snake.push('_');
                    }
                    snake.push(c.to_ascii_lowercase());
                    snake
                })
            })
            .collect();
        let id = || UploadId::new("upload_1");
        let file = || FileId::new("file-1");
        let routes = [
            Route::CreateUpload,
            Route::AddUploadPart(id()),
            Route::CompleteUpload(id()),
            Route::CancelUpload(id()),
            Route::ListFiles,
            Route::CreateFile,
            Route::RetrieveFile(file()),
            Route::DeleteFile(file()),
            Route::DownloadFile(file()),
        ];
        for route in routes {
            assert!(
                operations.iter().any(|operation| operation == route.name()),
                "{} is not one of the spec's operations {operations:?}",
                route.name()
            );
        }
        assert_eq!(Route::Health.name(), "health");
    }

    #[test]
    fn every_operation_resolves() {
        let cases = [
            (Method::POST, "/v1/uploads", Route::CreateUpload),
            (
                Method::POST,
                "/v1/uploads/upload_1/parts",
                Route::AddUploadPart("upload_1".into()),
            ),
            (
                Method::POST,
                "/v1/uploads/upload_1/complete",
                Route::CompleteUpload("upload_1".into()),
            ),
            (
                Method::POST,
                "/v1/uploads/upload_1/cancel",
                Route::CancelUpload("upload_1".into()),
            ),
            (Method::GET, "/v1/files", Route::ListFiles),
            (Method::POST, "/v1/files", Route::CreateFile),
            (
                Method::GET,
                "/v1/files/file-1",
                Route::RetrieveFile("file-1".into()),
            ),
            (
                Method::DELETE,
                "/v1/files/file-1",
                Route::DeleteFile("file-1".into()),
            ),
            (
                Method::GET,
                "/v1/files/file-1/content",
                Route::DownloadFile("file-1".into()),
            ),
            (
                Method::GET,
                "/v1/files/a%2Fb",
                Route::RetrieveFile("a/b".into()),
            ),
            (Method::GET, "/healthz", Route::Health),
        ];
        for (method, path, route) in cases {
            assert_eq!(Route::resolve(&method, path), Ok(route), "{method} {path}");
        }
    }

    #[test]
    fn unknown_paths_are_404_in_openai_words() {
        for path in [
            "/",
            "/v1",
            "/v1/",
            "/v2/uploads",
            "/v1/uploads/x/parts/y",
            "/v1/uploads//parts",
            "/v1/models",
        ] {
            let rejection = Route::resolve(&Method::POST, path).unwrap_err();
            assert_eq!(rejection.status, StatusCode::NOT_FOUND, "{path}");
            assert_eq!(
                rejection.body.error.message,
                format!("Invalid URL (POST {path})")
            );
        }
    }

    #[test]
    fn wrong_methods_are_405() {
        for (method, path) in [
            (Method::GET, "/v1/uploads"),
            (Method::DELETE, "/v1/uploads/u/complete"),
            (Method::PUT, "/v1/files"),
            (Method::POST, "/v1/files/f"),
            (Method::DELETE, "/v1/files/f/content"),
            (Method::POST, "/healthz"),
        ] {
            let rejection = Route::resolve(&method, path).unwrap_err();
            assert_eq!(
                rejection.status,
                StatusCode::METHOD_NOT_ALLOWED,
                "{method} {path}"
            );
        }
    }
}
