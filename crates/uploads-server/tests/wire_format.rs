//! The wire format of a Part, byte for byte: what the official Python SDK (httpx) sends is
//! accepted; bodies that are not a well-formed one-field `data` form are clear 400s that
//! store nothing.

mod support;

use std::net::SocketAddr;

use http::StatusCode;
use support::{
    KEY_A, Reply, TestServer, no_temp_files_eventually, pattern, raw_exchange, request_head,
    stored_parts,
};
use uploads_core::multipart::{Boundary, MultipartBody};
use uploads_core::types::{UploadId, UploadPart};

/// httpx's boundary: 16 random bytes as 32 lower-case hex characters.
const SDK_BOUNDARY: &str = "9c6f0e1bd2a84f37a5e6c0d1b2f3a4e5";

/// A Part's body exactly as the Python SDK's httpx writes it.
fn sdk_part_body(boundary: &str, data: &[u8]) -> Vec<u8> {
    [
        format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"data\"; filename=\"upload\"\r\n\
             Content-Type: application/octet-stream\r\n\r\n"
        )
        .as_bytes(),
        data,
        format!("\r\n--{boundary}--\r\n").as_bytes(),
    ]
    .concat()
}

/// Sends `body` as a Part over a raw connection, with this `Content-Type` (none if `None`).
async fn send_part(
    addr: SocketAddr,
    upload: &UploadId,
    content_type: Option<&str>,
    body: &[u8],
) -> Reply {
    let headers: Vec<(&str, &str)> = content_type
        .map(|value| ("Content-Type", value))
        .into_iter()
        .collect();
    let mut request = request_head(
        "POST",
        &format!("/v1/uploads/{upload}/parts"),
        Some(KEY_A),
        &headers,
        Some(body.len() as u64),
    );
    request.extend_from_slice(body);
    raw_exchange(addr, &request).await
}

fn form_type(boundary: &str) -> String {
    format!("multipart/form-data; boundary={boundary}")
}

#[tokio::test]
async fn the_python_sdks_exact_part_bytes_are_accepted() {
    let server = TestServer::start().await;
    let client = server.client().await;
    // Data that looks like delimiters without being one.
    let data = [
        b"--".as_slice(),
        SDK_BOUNDARY.as_bytes(),
        b"\r\n--9c6f0e1b\r\n\r\n",
        &pattern(5000, 3),
        b"\r\n--",
    ]
    .concat();
    let body = sdk_part_body(SDK_BOUNDARY, &data);
    let ours = MultipartBody::upload_part(&Boundary::new(SDK_BOUNDARY).unwrap(), data.len() as u64);
    assert_eq!(
        ours.assemble(&data),
        body,
        "our encoder writes what the SDK writes"
    );

    let upload = client.create_upload(data.len() as u64).await;
    let reply = send_part(
        server.running.local_addr(),
        &upload.id,
        Some(&form_type(SDK_BOUNDARY)),
        &body,
    )
    .await;
    let part: UploadPart = reply.ok();
    let file = client
        .complete_ok(&upload.id, &[&part.id], Some(&support::md5_hex(&[&data])))
        .await
        .file
        .unwrap();
    assert_eq!(client.content_ok(&file.id).await, data);
}

#[tokio::test]
async fn a_short_preamble_is_skipped_as_rfc_2046_says_and_a_long_one_is_400() {
    let server = TestServer::start().await;
    let client = server.client().await;
    let addr = server.running.local_addr();
    let upload = client.create_upload(5).await;
    let boundary = "b0undary";
    let long = [vec![b'p'; 16 * 1024 + 1], sdk_part_body(boundary, b"never")].concat();
    send_part(addr, &upload.id, Some(&form_type(boundary)), &long)
        .await
        .assert_error(
            StatusCode::BAD_REQUEST,
            None,
            "Invalid multipart/form-data body: preamble is larger than 16384 bytes.",
        );
    assert!(stored_parts(server.data_dir(), &upload.id).is_empty());

    let short = [
        b"This is a preamble.\r\n".as_slice(),
        &sdk_part_body(boundary, b"hello"),
    ]
    .concat();
    let part: UploadPart = send_part(addr, &upload.id, Some(&form_type(boundary)), &short)
        .await
        .ok();
    let file = client
        .complete_ok(&upload.id, &[&part.id], None)
        .await
        .file
        .unwrap();
    assert_eq!(client.content_ok(&file.id).await, "hello");
}

#[tokio::test]
async fn malformed_part_bodies_are_clear_400s_and_store_nothing() {
    let server = TestServer::start().await;
    let client = server.client().await;
    let addr = server.running.local_addr();
    let upload = client.create_upload(2).await;
    let field = |name: &str, value: &str| {
        format!("--b\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n")
    };
    let data_then_extra = [
        sdk_part_body("b", b"ab")
            .strip_suffix(b"--b--\r\n")
            .unwrap(),
        field("purpose", "user_data").as_bytes(),
        b"--b--\r\n",
    ]
    .concat();
    let extra_then_data = [field("note", "x").into_bytes(), sdk_part_body("b", b"ab")].concat();
    let unexpected =
        |name: &str| format!("Additional properties are not allowed ('{name}' was unexpected)");
    let cases = [
        (
            Some("multipart/form-data; boundary=a"),
            sdk_part_body("b", b"ab"),
            None,
            "Invalid multipart/form-data body: body ended before the closing boundary.".to_owned(),
        ),
        (
            Some("application/octet-stream"),
            b"ab".to_vec(),
            None,
            "Invalid multipart/form-data body: content type \"application/octet-stream\" is \
             not multipart/form-data."
                .to_owned(),
        ),
        (
            None,
            sdk_part_body("b", b"ab"),
            None,
            "Invalid multipart/form-data body: content type \"\" is not multipart/form-data."
                .to_owned(),
        ),
        (
            Some("multipart/form-data"),
            sdk_part_body("b", b"ab"),
            None,
            "Invalid multipart/form-data body: multipart/form-data content type has no \
             boundary parameter."
                .to_owned(),
        ),
        (
            Some("multipart/form-data; boundary=b"),
            b"--b--\r\n".to_vec(),
            Some("data"),
            "'data' is a required property".to_owned(),
        ),
        (
            Some("multipart/form-data; boundary=b"),
            [field("file", "ab"), "--b--\r\n".into()]
                .concat()
                .into_bytes(),
            Some("file"),
            unexpected("file"),
        ),
        (
            Some("multipart/form-data; boundary=b"),
            data_then_extra,
            Some("purpose"),
            unexpected("purpose"),
        ),
        (
            Some("multipart/form-data; boundary=b"),
            extra_then_data,
            Some("note"),
            unexpected("note"),
        ),
    ];
    for (content_type, body, param, message) in cases {
        send_part(addr, &upload.id, content_type, &body)
            .await
            .assert_error(StatusCode::BAD_REQUEST, param, &message);
    }
    no_temp_files_eventually(server.data_dir()).await;
    assert!(stored_parts(server.data_dir(), &upload.id).is_empty());
    // Still pending and empty: one good Part completes it.
    let part = client.add_part_ok(&upload.id, b"ok").await;
    client.complete_ok(&upload.id, &[&part.id], None).await;
}
