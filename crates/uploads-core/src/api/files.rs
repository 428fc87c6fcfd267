//! The Files operations: list, retrieve, delete, download, create. Each builds its request
//! here and parses its response here; the list query is also parsed here for servers.

use bytes::Bytes;
use http::{Method, Request, Response};

use super::config::{ACCEPT_JSON, BuildError, ClientConfig, id_path, with_data};
use super::encoding::{decode_query_component, encode_component};
use super::response::{ResponseError, parse, parse_bytes};
use crate::limits::{LIST_FILES_LIMITS, list_limit_error, not_one_of, quoted, shortened};
use crate::multipart::{Boundary, FileField, MultipartBody};
use crate::rejection::Rejection;
use crate::types::{
    DeletedFile, ExpiresAfter, FileId, FileList, FileObject, ListFilesQuery, ListOrder, Purpose,
};

/// The `Accept` of a download: anything. OpenAI's document declares the content as
/// `application/json` (a string) while the service sends the file's bytes whatever is asked;
/// `*/*` is what the document's own curl example sends. (The Python SDK's
/// `application/binary` is refused with 406 by a mock that follows the document.)
const ACCEPT_ANY: &str = "*/*";

/// The fields of a `POST /files` form other than the data itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateFileForm {
    /// The File's purpose.
    pub purpose: Purpose,
    /// The File's name, sent as the `filename` of the `file` field.
    pub filename: String,
    /// The `Content-Type` of the `file` field (see
    /// [`mime_type_for_filename`](crate::limits::mime_type_for_filename)).
    pub content_type: String,
    /// Expiration policy of the File.
    pub expires_after: Option<ExpiresAfter>,
}

impl CreateFileForm {
    /// The multipart body for `data_len` bytes of data: text fields `purpose`,
    /// `expires_after[anchor]` and `expires_after[seconds]` (when set), then the `file` field,
    /// the order the official SDK uses.
    pub fn body(&self, boundary: &Boundary, data_len: u64) -> MultipartBody {
        let seconds = self
            .expires_after
            .as_ref()
            .map(|expires_after| expires_after.seconds.to_string());
        let mut text_fields = vec![("purpose", self.purpose.as_str())];
        if let (Some(expires_after), Some(seconds)) = (&self.expires_after, &seconds) {
            text_fields.push(("expires_after[anchor]", expires_after.anchor.as_str()));
            text_fields.push(("expires_after[seconds]", seconds));
        }
        let file = FileField {
            name: "file",
            filename: &self.filename,
            content_type: &self.content_type,
        };
        MultipartBody::new(boundary, &text_fields, file, data_len)
    }
}

/// The path of one File, or of its content.
fn file_path(file_id: &FileId, suffix: &str) -> Result<String, BuildError> {
    id_path("files", "file_id", file_id.as_str(), suffix)
}

/// `?purpose=&limit=&order=&after=` with only the parameters that are set, percent-encoded;
/// empty when none is.
fn list_query_string(query: &ListFilesQuery) -> String {
    let limit = query.limit.map(|limit| limit.to_string());
    let pairs = [
        ("purpose", query.purpose.as_ref().map(Purpose::as_str)),
        ("limit", limit.as_deref()),
        ("order", query.order.as_ref().map(ListOrder::as_str)),
        ("after", query.after.as_ref().map(FileId::as_str)),
    ];
    let encoded: Vec<String> = pairs
        .iter()
        .filter_map(|&(name, value)| Some(format!("{name}={}", encode_component(value?))))
        .collect();
    if encoded.is_empty() {
        String::new()
    } else {
        format!("?{}", encoded.join("&"))
    }
}

impl ClientConfig {
    /// `GET {base}/files` with the query's set parameters. Parse the answer with
    /// [`parse_list_files`].
    pub fn list_files(&self, query: &ListFilesQuery) -> Result<Request<Bytes>, BuildError> {
        let path = format!("/files{}", list_query_string(query));
        self.empty_request(Method::GET, &path, ACCEPT_JSON)
    }

    /// `GET {base}/files/{id}`. Parse the answer with [`parse_retrieve_file`].
    pub fn retrieve_file(&self, file_id: &FileId) -> Result<Request<Bytes>, BuildError> {
        self.empty_request(Method::GET, &file_path(file_id, "")?, ACCEPT_JSON)
    }

    /// `DELETE {base}/files/{id}`. Parse the answer with [`parse_delete_file`].
    pub fn delete_file(&self, file_id: &FileId) -> Result<Request<Bytes>, BuildError> {
        self.empty_request(Method::DELETE, &file_path(file_id, "")?, ACCEPT_JSON)
    }

    /// `GET {base}/files/{id}/content` with `Accept: */*`, which both the service and
    /// OpenAI's document accept. Parse a buffered answer with [`parse_download_file`]; to stream the content
    /// instead, decide from the head with
    /// [`check_response_head`](super::check_response_head).
    pub fn download_file(&self, file_id: &FileId) -> Result<Request<Bytes>, BuildError> {
        self.empty_request(Method::GET, &file_path(file_id, "/content")?, ACCEPT_ANY)
    }

    /// The head of `POST {base}/files` for a form encoded as `body` (see
    /// [`CreateFileForm::body`]). The adapter MUST send exactly `body.head`, the data, then
    /// `body.tail`. Parse the answer with [`parse_create_file`].
    pub fn create_file(&self, body: &MultipartBody) -> Result<Request<()>, BuildError> {
        self.multipart_head("/files", body)
    }

    /// [`Self::create_file`] with the data in memory, as one whole request.
    pub fn create_file_bytes(
        &self,
        form: &CreateFileForm,
        boundary: &Boundary,
        data: &[u8],
    ) -> Result<Request<Bytes>, BuildError> {
        let body = form.body(boundary, data.len() as u64);
        Ok(with_data(self.create_file(&body)?, &body, data))
    }
}

/// The page of Files a list answered with.
pub fn parse_list_files<B: AsRef<[u8]>>(response: &Response<B>) -> Result<FileList, ResponseError> {
    parse(response)
}

/// The File a retrieve answered with.
pub fn parse_retrieve_file<B: AsRef<[u8]>>(
    response: &Response<B>,
) -> Result<FileObject, ResponseError> {
    parse(response)
}

/// What a delete answered with.
pub fn parse_delete_file<B: AsRef<[u8]>>(
    response: &Response<B>,
) -> Result<DeletedFile, ResponseError> {
    parse(response)
}

/// The File's content, as the body it came in (no copy).
pub fn parse_download_file<B: AsRef<[u8]>>(response: Response<B>) -> Result<B, ResponseError> {
    parse_bytes(response)
}

/// The File a create answered with.
pub fn parse_create_file<B: AsRef<[u8]>>(
    response: &Response<B>,
) -> Result<FileObject, ResponseError> {
    parse(response)
}

/// The server side of `GET /files`: reads the raw query string (with or without its `?`).
///
/// Parameters are percent-decoded (`+` is a space); unknown ones are ignored; when one
/// repeats, the last wins. An empty `purpose` or `after` counts as absent: an empty filter
/// or cursor means none. `limit` MUST be an integer in 1..=10000 and `order` MUST be `asc` or
/// `desc`, else a 400 naming the parameter.
pub fn parse_list_files_query(query: &str) -> Result<ListFilesQuery, Rejection> {
    let mut parsed = ListFilesQuery::default();
    let pairs = query
        .strip_prefix('?')
        .unwrap_or(query)
        .split('&')
        .filter(|pair| !pair.is_empty());
    for pair in pairs {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let value = decode_query_component(value);
        match decode_query_component(name).as_str() {
            "purpose" => parsed.purpose = (!value.is_empty()).then(|| Purpose::from_wire(&value)),
            "after" => parsed.after = (!value.is_empty()).then(|| FileId::new(value)),
            "limit" => parsed.limit = Some(parse_limit(&value)?),
            "order" => parsed.order = Some(parse_order(&value)?),
            _ => {}
        }
    }
    Ok(parsed)
}

fn parse_limit(value: &str) -> Result<u32, Rejection> {
    let digits = value.strip_prefix(['-', '+']).unwrap_or(value);
    if digits.is_empty() || !digits.bytes().all(|byte| byte.is_ascii_digit()) {
        return Err(Rejection::invalid(
            Some("limit"),
            format!("{} is not of type 'integer' - 'limit'", quoted(value)),
        ));
    }
    let (min, max) = (
        i64::from(*LIST_FILES_LIMITS.start()),
        i64::from(*LIST_FILES_LIMITS.end()),
    );
    match value.parse::<i64>() {
        Ok(limit) if limit < min => Err(list_limit_error(&limit.to_string(), true)),
        Ok(limit) if limit > max => Err(list_limit_error(&limit.to_string(), false)),
        // In range, so it fits.
        Ok(limit) => u32::try_from(limit).map_err(|_| list_limit_error(value, false)),
        // All digits yet no i64: too far from zero on the side of its sign.
        Err(_) => Err(list_limit_error(&shortened(value), value.starts_with('-'))),
    }
}

fn parse_order(value: &str) -> Result<ListOrder, Rejection> {
    match ListOrder::from_wire(value) {
        ListOrder::Other(_) => Err(not_one_of(value, ListOrder::KNOWN, "order").into()),
        known => Ok(known),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::test_support::{config, expected_headers, headers, ok};
    use crate::types::FileStatus;
    use http::StatusCode;
    use proptest::prelude::*;

    #[test]
    fn list_files_sends_only_the_set_parameters() {
        let request = config().list_files(&ListFilesQuery::default()).unwrap();
        assert_eq!(request.method(), Method::GET);
        assert_eq!(request.uri(), "http://127.0.0.1:8080/v1/files");
        assert!(request.body().is_empty());
        assert_eq!(headers(&request), expected_headers("application/json", &[]));

        let query = ListFilesQuery {
            purpose: Some(Purpose::FineTune),
            limit: Some(100),
            order: Some(ListOrder::Asc),
            after: Some(FileId::new("file-abc 1/2")),
        };
        let request = config().list_files(&query).unwrap();
        assert_eq!(
            request.uri(),
            "http://127.0.0.1:8080/v1/files?purpose=fine-tune&limit=100&order=asc&after=file-abc%201%2F2"
        );
        let only_after = ListFilesQuery {
            after: Some(FileId::new("file-x")),
            ..ListFilesQuery::default()
        };
        assert_eq!(
            config().list_files(&only_after).unwrap().uri(),
            "http://127.0.0.1:8080/v1/files?after=file-x"
        );
    }

    #[test]
    fn retrieve_delete_and_download_requests_are_exact() {
        let id = FileId::new("file-abc123");
        let retrieve = config().retrieve_file(&id).unwrap();
        assert_eq!(retrieve.method(), Method::GET);
        assert_eq!(retrieve.uri(), "http://127.0.0.1:8080/v1/files/file-abc123");
        assert!(retrieve.body().is_empty());
        assert_eq!(
            headers(&retrieve),
            expected_headers("application/json", &[])
        );

        let delete = config().delete_file(&id).unwrap();
        assert_eq!(delete.method(), Method::DELETE);
        assert_eq!(delete.uri(), "http://127.0.0.1:8080/v1/files/file-abc123");
        assert!(delete.body().is_empty());
        assert_eq!(headers(&delete), expected_headers("application/json", &[]));

        let download = config().download_file(&id).unwrap();
        assert_eq!(download.method(), Method::GET);
        assert_eq!(
            download.uri(),
            "http://127.0.0.1:8080/v1/files/file-abc123/content"
        );
        assert!(download.body().is_empty());
        assert_eq!(headers(&download), expected_headers("*/*", &[]));
    }

    #[test]
    fn file_ids_stay_one_path_segment() {
        let request = config().delete_file(&FileId::new("a/../b?c")).unwrap();
        assert_eq!(request.uri().path(), "/v1/files/a%2F%2E%2E%2Fb%3Fc");
        assert_eq!(request.uri().query(), None);
        let error = config().download_file(&FileId::new("")).unwrap_err();
        assert!(matches!(error, BuildError::EmptyId { param: "file_id" }));
    }

    fn form(expires_after: Option<ExpiresAfter>) -> CreateFileForm {
        CreateFileForm {
            purpose: Purpose::FineTune,
            filename: "mydata.jsonl".to_owned(),
            content_type: "text/jsonl".to_owned(),
            expires_after,
        }
    }

    #[test]
    fn create_file_sends_fields_in_order_then_the_file() {
        let boundary = Boundary::new("xyz").unwrap();
        let request = config()
            .create_file_bytes(
                &form(Some(ExpiresAfter::after_creation(2_592_000))),
                &boundary,
                b"{}\n",
            )
            .unwrap();
        let expected = "--xyz\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nfine-tune\r\n\
--xyz\r\nContent-Disposition: form-data; name=\"expires_after[anchor]\"\r\n\r\ncreated_at\r\n\
--xyz\r\nContent-Disposition: form-data; name=\"expires_after[seconds]\"\r\n\r\n2592000\r\n\
--xyz\r\nContent-Disposition: form-data; name=\"file\"; filename=\"mydata.jsonl\"\r\n\
Content-Type: text/jsonl\r\n\r\n{}\n\r\n--xyz--\r\n";
        assert_eq!(request.method(), Method::POST);
        assert_eq!(request.uri(), "http://127.0.0.1:8080/v1/files");
        assert_eq!(request.body(), expected.as_bytes());
        assert_eq!(
            headers(&request),
            expected_headers(
                "application/json",
                &[
                    ("content-type", "multipart/form-data; boundary=xyz"),
                    ("content-length", &expected.len().to_string()),
                ]
            )
        );
    }

    #[test]
    fn create_file_head_matches_the_form_without_expiry() {
        let boundary = Boundary::new("xyz").unwrap();
        let body = form(None).body(&boundary, 1000);
        assert_eq!(
            body.head,
            "--xyz\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nfine-tune\r\n\
--xyz\r\nContent-Disposition: form-data; name=\"file\"; filename=\"mydata.jsonl\"\r\n\
Content-Type: text/jsonl\r\n\r\n"
                .as_bytes()
        );
        let head = config().create_file(&body).unwrap();
        assert_eq!(
            head.headers()["content-length"],
            (body.head.len() + 1000 + body.tail.len()).to_string()
        );
        assert_eq!(
            head.headers()["content-type"],
            "multipart/form-data; boundary=xyz"
        );
    }

    const FILE_JSON: &str = r#"{"id": "file-abc123", "object": "file", "bytes": 120000,
        "created_at": 1677610602, "expires_at": 1677614202, "filename": "mydata.jsonl",
        "purpose": "fine-tune"}"#;

    #[test]
    fn file_responses_parse() {
        let list = parse_list_files(&ok(r#"{"object": "list", "data": [
            {"id": "file-abc123", "object": "file", "bytes": 175, "created_at": 1613677385,
             "expires_at": 1677614202, "filename": "salesOverview.pdf", "purpose": "assistants"},
            {"id": "file-abc456", "object": "file", "bytes": 140, "created_at": 1613779121,
             "expires_at": 1677614202, "filename": "puppy.jsonl", "purpose": "fine-tune",
             "status": "processed"}],
            "first_id": "file-abc123", "last_id": "file-abc456", "has_more": false}"#))
        .unwrap();
        assert_eq!(list.data.len(), 2);
        assert_eq!(list.data[1].status, Some(FileStatus::Processed));
        assert_eq!(list.last_id, Some(FileId::new("file-abc456")));
        assert!(!list.has_more);

        for file in [
            parse_retrieve_file(&ok(FILE_JSON)).unwrap(),
            parse_create_file(&ok(FILE_JSON)).unwrap(),
        ] {
            assert_eq!(file.id, FileId::new("file-abc123"));
            assert_eq!(file.bytes, 120_000);
            assert_eq!(file.expires_at, Some(1_677_614_202));
            assert_eq!(file.purpose, Purpose::FineTune);
        }

        let deleted = parse_delete_file(&ok(
            r#"{"id": "file-abc123", "object": "file", "deleted": true}"#,
        ))
        .unwrap();
        assert_eq!(deleted.id, FileId::new("file-abc123"));
        assert!(deleted.deleted);

        let content = parse_download_file(Response::new(Bytes::from_static(b"{\"a\":1}\n")));
        assert_eq!(content.unwrap(), Bytes::from_static(b"{\"a\":1}\n"));
    }

    #[test]
    fn a_missing_file_is_an_api_error() {
        let reply = Response::builder()
            .status(404)
            .header("x-request-id", "req_7")
            .body(Bytes::from_static(br#"{"error":{"message":"No such File object: file-x","type":"invalid_request_error","param":"file_id","code":null}}"#))
            .unwrap();
        let error = parse_retrieve_file(&reply).unwrap_err();
        assert_eq!(
            error.to_string(),
            "404 invalid_request_error: No such File object: file-x (param: file_id, request id: req_7)"
        );
        let error = parse_download_file(reply).unwrap_err();
        assert_eq!(error.api_error().unwrap().status, StatusCode::NOT_FOUND);
    }

    #[test]
    fn an_empty_query_gives_the_defaults() {
        assert_eq!(parse_list_files_query(""), Ok(ListFilesQuery::default()));
        assert_eq!(parse_list_files_query("?"), Ok(ListFilesQuery::default()));
        assert_eq!(
            parse_list_files_query("purpose=&after=&colour=red&&x"),
            Ok(ListFilesQuery::default())
        );
    }

    #[test]
    fn a_full_query_is_percent_decoded() {
        let parsed = parse_list_files_query(
            "?purpose=fine%2Dtune&limit=100&order=asc&after=file-abc%201%2F2",
        )
        .unwrap();
        assert_eq!(
            parsed,
            ListFilesQuery {
                purpose: Some(Purpose::FineTune),
                limit: Some(100),
                order: Some(ListOrder::Asc),
                after: Some(FileId::new("file-abc 1/2")),
            }
        );
        let parsed =
            parse_list_files_query("after=a+b&purpose=moderation&order=desc&order=asc").unwrap();
        assert_eq!(parsed.after, Some(FileId::new("a b")));
        assert_eq!(
            parsed.purpose,
            Some(Purpose::Other("moderation".to_owned()))
        );
        assert_eq!(parsed.order, Some(ListOrder::Asc));
        assert_eq!(parse_list_files_query("limit=1").unwrap().limit, Some(1));
        assert_eq!(
            parse_list_files_query("%6Cimit=10000").unwrap().limit,
            Some(10_000)
        );
    }

    /// The exact 400 body a bad query is answered with.
    fn rejection_body(query: &str) -> String {
        let rejection = parse_list_files_query(query).unwrap_err();
        assert_eq!(rejection.status, StatusCode::BAD_REQUEST);
        String::from_utf8(rejection.body_json()).unwrap()
    }

    fn invalid(param: &str, message: &str) -> String {
        let body =
            crate::types::ErrorBody::new("invalid_request_error", message, Some(param), None);
        serde_json::to_string(&body).unwrap()
    }

    #[test]
    fn bad_limits_get_an_exact_400() {
        let cases = [
            ("limit=0", "0 is less than the minimum of 1 - 'limit'"),
            ("limit=-5", "-5 is less than the minimum of 1 - 'limit'"),
            (
                "limit=10001",
                "10001 is greater than the maximum of 10000 - 'limit'",
            ),
            (
                "limit=99999999999999999999",
                "99999999999999999999 is greater than the maximum of 10000 - 'limit'",
            ),
            (
                "limit=-99999999999999999999",
                "-99999999999999999999 is less than the minimum of 1 - 'limit'",
            ),
            ("limit=ten", "'ten' is not of type 'integer' - 'limit'"),
            ("limit=1.5", "'1.5' is not of type 'integer' - 'limit'"),
            ("limit=", "'' is not of type 'integer' - 'limit'"),
            ("limit=%2B", "'+' is not of type 'integer' - 'limit'"),
        ];
        for (query, message) in cases {
            assert_eq!(rejection_body(query), invalid("limit", message), "{query}");
        }
        let long = format!("limit={}", "x".repeat(500));
        assert_eq!(
            rejection_body(&long),
            invalid(
                "limit",
                &format!("'{}...' is not of type 'integer' - 'limit'", "x".repeat(97))
            )
        );
    }

    #[test]
    fn bad_orders_get_an_exact_400() {
        assert_eq!(
            rejection_body("order=sideways"),
            r#"{"error":{"message":"'sideways' is not one of ['asc', 'desc'] - 'order'","type":"invalid_request_error","param":"order","code":null}}"#
        );
        assert_eq!(
            rejection_body("order=ASC"),
            invalid("order", "'ASC' is not one of ['asc', 'desc'] - 'order'")
        );
    }

    fn any_query() -> impl Strategy<Value = ListFilesQuery> {
        (
            proptest::option::of(".+"),
            proptest::option::of(1_u32..=10_000),
            proptest::option::of(prop_oneof![Just(ListOrder::Asc), Just(ListOrder::Desc)]),
            proptest::option::of(".+"),
        )
            .prop_map(|(purpose, limit, order, after)| ListFilesQuery {
                purpose: purpose.map(|purpose: String| Purpose::from_wire(&purpose)),
                limit,
                order,
                after: after.map(FileId::new),
            })
    }

    proptest! {
        #[test]
        fn what_the_client_sends_the_server_reads_back(query in any_query()) {
            let request = config().list_files(&query).unwrap();
            let raw = request.uri().query().unwrap_or_default();
            prop_assert_eq!(parse_list_files_query(raw), Ok(query));
        }

        #[test]
        fn any_query_string_parses_or_is_a_400(
            raw in "((purpose|limit|order|after|%6Cimit|x)(=[a-z0-9%+&=.-]{0,6})?&?){0,5}|.*",
        ) {
            if let Err(rejection) = parse_list_files_query(&raw) {
                prop_assert_eq!(rejection.status, StatusCode::BAD_REQUEST);
                prop_assert!(matches!(rejection.param(), Some("limit" | "order")));
            }
        }
    }
}
