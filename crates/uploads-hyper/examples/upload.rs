//! Uploads the file given on the command line with the async client and prints the completed
//! Upload as JSON.
//!
//! ```text
//! OPENAI_API_KEY=sk-... cargo run -p uploads-hyper --example upload-hyper -- train.jsonl [purpose]
//! ```
//!
//! `OPENAI_BASE_URL` points it at another service, e.g. a local `uploads serve`.

use std::process::ExitCode;

use uploads_hyper::uploads_core::types::Purpose;
use uploads_hyper::uploads_core::uploader::ProgressEvent;
use uploads_hyper::{Client, UploadOptions};

#[tokio::main]
async fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let Some(path) = args.next() else {
        eprintln!("usage: upload <file> [purpose (default: fine-tune)]");
        return ExitCode::from(2);
    };
    let purpose = args
        .next()
        .map_or(Purpose::FineTune, |purpose| Purpose::from_wire(&purpose));
    let options = UploadOptions::new(purpose).on_progress(|event| {
        if let ProgressEvent::PartDone {
            parts_done,
            parts_total,
            ..
        } = event
        {
            eprintln!("part {parts_done}/{parts_total} done");
        }
    });
    match Client::from_env().upload_file(&path, options).await {
        Ok(upload) => {
            println!(
                "{}",
                serde_json::to_string_pretty(&upload).unwrap_or_default()
            );
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("upload failed: {error}");
            ExitCode::FAILURE
        }
    }
}
