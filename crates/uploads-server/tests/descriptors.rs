//! The server raises its soft open-file limit to the hard limit at startup (the common
//! default soft limit of 1024 runs out before the connection cap). Its own test binary:
//! it changes the process's limit.

#![cfg(unix)]

mod support;

use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
use support::TestServer;

#[tokio::test]
async fn startup_raises_the_soft_open_file_limit_to_the_hard_limit() {
    let limit = getrlimit(Resource::Nofile);
    let hard = limit.maximum;
    let lowered = Rlimit {
        current: Some(256),
        maximum: hard,
    };
    setrlimit(Resource::Nofile, lowered).unwrap();
    assert_eq!(getrlimit(Resource::Nofile).current, Some(256));
    let server = TestServer::start().await;
    assert_eq!(getrlimit(Resource::Nofile).current, hard);
    // And it serves.
    server.client().await.create_upload(1).await;
}
