//! `uploads put` to a server that speaks the other scheme than its base URL, or whose
//! certificate nobody trusts: one attempt, one error line that says which scheme to use (or
//! why the handshake failed), exit 1, with either client.

mod support;

#[path = "../../uploads-hyper/tests/support/peers.rs"]
mod peers;

use support::{error_lines, sample_file, stderr, uploads};

/// Runs `uploads put` of a small file to `base_url` (`--blocking` when `blocking`); its one
/// error line, after checking the exit code.
fn put_error(base_url: &str, blocking: bool) -> String {
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = sample_file(dir.path(), "a.txt", 10);
    let path = path.to_str().unwrap();
    let mut args = vec![
        "put",
        path,
        "--purpose",
        "assistants",
        "--base-url",
        base_url,
    ];
    if blocking {
        args.push("--blocking");
    }
    let output = uploads(&args, &[("OPENAI_API_KEY", "sk-cli")], dir.path());
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    let errors = error_lines(&output);
    assert_eq!(errors.len(), 1, "{}", stderr(&output));
    errors[0].clone()
}

#[test]
fn https_to_a_plain_http_server_says_to_use_http_after_one_attempt() {
    for blocking in [false, true] {
        let peer = peers::plain_http();
        let error = put_error(&peer.base_url("https"), blocking);
        assert!(
            error.contains(&format!(
                "creating the Upload failed: {} does not speak https (it answered in plain http): use {}",
                peer.address(),
                peer.base_url("http")
            )),
            "blocking: {blocking}: {error}"
        );
        assert_eq!(peer.accepted(), 1, "blocking: {blocking}: {error}");
    }
}

#[test]
fn http_to_a_tls_server_says_to_use_https_after_one_attempt() {
    for blocking in [false, true] {
        let peer = peers::tls();
        let error = put_error(&peer.base_url("http"), blocking);
        assert!(
            error.contains(&format!(
                "creating the Upload failed: {} did not answer in plain http (does it speak https?): if so, use {}",
                peer.address(),
                peer.base_url("https")
            )),
            "blocking: {blocking}: {error}"
        );
        assert_eq!(peer.accepted(), 1, "blocking: {blocking}: {error}");
    }
}

#[test]
fn a_certificate_nobody_trusts_is_named_after_one_attempt() {
    for blocking in [false, true] {
        let peer = peers::tls();
        let error = put_error(&peer.base_url("https"), blocking);
        assert!(
            error.contains(&format!(
                "creating the Upload failed: cannot connect to {} (TLS handshake failed): ",
                peer.address()
            )),
            "blocking: {blocking}: {error}"
        );
        assert!(
            error.ends_with("invalid peer certificate: UnknownIssuer"),
            "blocking: {blocking}: {error}"
        );
        assert_eq!(peer.accepted(), 1, "blocking: {blocking}: {error}");
    }
}
