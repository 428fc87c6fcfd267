//! `POST /v1/files`: a File from one multipart request (`purpose`, `file`, optionally
//! `expires_after[anchor]` and `expires_after[seconds]`); its content round-trips, and a bad
//! form is a 400 naming the field, with nothing stored.

mod support;

use http::{Method, StatusCode};
use support::{Client, T0, TestServer, file_form, full, paths_under, pattern};
use uploads_core::types::{FileList, FileObject, FileStatus};

async fn create_file(client: &Client, fields: &[(&str, &str)], data: &[u8]) -> support::Reply {
    let (content_type, body) = file_form(fields, "notes.txt", data);
    client
        .send(Method::POST, "/v1/files", Some(&content_type), full(body))
        .await
}

#[tokio::test]
async fn a_file_made_in_one_request_round_trips() {
    let server = TestServer::start().await;
    let client = server.client().await;
    let data = pattern(10_000, 4);
    let file: FileObject = create_file(
        &client,
        &[
            ("purpose", "assistants"),
            ("expires_after[anchor]", "created_at"),
            ("expires_after[seconds]", "3600"),
        ],
        &data,
    )
    .await
    .ok();
    assert_eq!(
        (
            file.object.as_str(),
            file.bytes,
            file.filename.as_str(),
            file.purpose.as_str()
        ),
        ("file", 10_000, "notes.txt", "assistants")
    );
    assert_eq!((file.created_at, file.expires_at), (T0, Some(T0 + 3600)));
    assert_eq!(file.status, Some(FileStatus::Processed));
    assert_eq!(client.retrieve(&file.id).await.ok::<FileObject>(), file);
    assert_eq!(client.content_ok(&file.id).await, data);
    let list: FileList = client.list("purpose=assistants").await.ok();
    assert_eq!(list.data, std::slice::from_ref(&file));

    let plain: FileObject = create_file(&client, &[("purpose", "user_data")], b"")
        .await
        .ok();
    assert_eq!((plain.bytes, plain.expires_at), (0, None));
    assert_eq!(client.content_ok(&plain.id).await, "");
    client.delete(&file.id).await.ok::<serde_json::Value>();
    assert_eq!(client.list_ids("").await, [plain.id]);
}

#[tokio::test]
async fn a_bad_form_is_400_naming_the_field_and_stores_nothing() {
    let server = TestServer::start().await;
    let client = server.client().await;
    let purposes = "['assistants', 'batch', 'fine-tune', 'vision', 'user_data', 'evals']";
    let cases = [
        (
            vec![("purpose", "nope")],
            "purpose",
            format!("'nope' is not one of {purposes} - 'purpose'"),
        ),
        (
            vec![],
            "purpose",
            "'purpose' is a required property".to_owned(),
        ),
        (
            vec![
                ("purpose", "user_data"),
                ("expires_after[anchor]", "created_at"),
                ("expires_after[seconds]", "60"),
            ],
            "expires_after.seconds",
            "60 is less than the minimum of 3600 - 'expires_after.seconds'".to_owned(),
        ),
        (
            vec![("purpose", "user_data"), ("expires_after[seconds]", "3600")],
            "expires_after.anchor",
            "'anchor' is a required property - 'expires_after'".to_owned(),
        ),
        (
            vec![("purpose", "user_data"), ("color", "blue")],
            "color",
            "Additional properties are not allowed ('color' was unexpected)".to_owned(),
        ),
    ];
    for (fields, param, message) in cases {
        create_file(&client, &fields, b"data").await.assert_error(
            StatusCode::BAD_REQUEST,
            Some(param),
            &message,
        );
    }
    let form = uploads_core::multipart::MultipartBody::new(
        &support::next_boundary(),
        &[],
        uploads_core::multipart::FileField {
            name: "purpose",
            filename: "x",
            content_type: "text/plain",
        },
        9,
    );
    client
        .send(
            Method::POST,
            "/v1/files",
            Some(&form.content_type),
            full(form.assemble(b"user_data")),
        )
        .await
        .assert_error(
            StatusCode::BAD_REQUEST,
            Some("file"),
            "'file' is a required property",
        );
    support::no_temp_files_eventually(server.data_dir()).await;
    assert_eq!(
        paths_under(&server.data_dir().join("files")),
        Vec::<std::path::PathBuf>::new()
    );
    assert!(client.list_ids("").await.is_empty());
}
