//! Finding the multipart uploads a dead process left (S3's `ListMultipartUploads`).

use std::collections::HashSet;
use std::io;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use std::time::SystemTime;

use object_store::aws::{AmazonS3, AwsAuthorizer};
use object_store::client::{HttpClient, HttpRequestBody};
use object_store::path::Path;
use object_store::signer::Signer;

use super::Calls;

/// Multipart uploads under way that this process's sinks are writing (their objects'
/// paths): a sweep never aborts one of them, whatever the bucket says of its age.
#[derive(Debug, Default)]
pub(super) struct LiveUploads(Mutex<HashSet<String>>);

impl LiveUploads {
    pub(super) fn set(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// What listing S3's multipart uploads takes (`object_store` has no call for it): the
/// store's credentials and endpoint, and an HTTP client with the store's options.
pub(super) struct S3Uploads {
    pub(super) s3: Arc<AmazonS3>,
    pub(super) region: String,
    pub(super) client: HttpClient,
}

/// One multipart upload under way, as `ListMultipartUploads` tells it.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct InProgress {
    pub(super) key: String,
    pub(super) upload_id: String,
    /// `None` when the bucket's date could not be read (such an upload is kept).
    pub(super) initiated: Option<SystemTime>,
}

/// Pages of `ListMultipartUploads` read at most by one sweep (1,000 uploads each).
pub(super) const MULTIPART_PAGES: usize = 100;

impl S3Uploads {
    /// The multipart uploads under way whose key starts with `prefix`, every page.
    pub(super) async fn list(&self, calls: &Calls, prefix: &str) -> io::Result<Vec<InProgress>> {
        let credential = calls
            .bounded(
                &Path::default(),
                "credentials request",
                calls.timeout,
                self.s3.credentials().get_credential(),
            )
            .await?;
        // The bucket's own URL, as object_store addresses it (path or virtual-hosted style).
        let mut bucket = calls
            .bounded(
                &Path::default(),
                "URL signing",
                calls.timeout,
                self.s3
                    .signed_url(http::Method::GET, &Path::default(), Duration::from_mins(1)),
            )
            .await?;
        bucket.set_query(None);
        let mut uploads = Vec::new();
        let mut marker: Option<(String, String)> = None;
        for _ in 0..MULTIPART_PAGES {
            let mut url = bucket.clone();
            {
                let mut query = url.query_pairs_mut();
                query
                    .append_key_only("uploads")
                    .append_pair("prefix", prefix);
                if let Some((key, upload_id)) = &marker {
                    query
                        .append_pair("key-marker", key)
                        .append_pair("upload-id-marker", upload_id);
                }
            }
            let mut request = http::Request::get(url.as_str())
                .body(HttpRequestBody::empty())
                .map_err(io::Error::other)?;
            AwsAuthorizer::new(&credential, "s3", &self.region).authorize(&mut request, None);
            let listing = async {
                let response = self.client.execute(request).await?;
                let status = response.status();
                let body = response.into_body().bytes().await?;
                Ok::<_, object_store::client::HttpError>((status, body))
            };
            let (status, body) = match tokio::time::timeout(calls.timeout, listing).await {
                Ok(answer) => answer.map_err(io::Error::other)?,
                Err(_) => {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!(
                            "the object store {} did not list its multipart uploads within {:?}",
                            calls.name, calls.timeout
                        ),
                    ));
                }
            };
            let body = String::from_utf8_lossy(&body);
            if !status.is_success() {
                return Err(io::Error::other(format!(
                    "the object store {} refused to list its multipart uploads ({status}): {body}",
                    calls.name
                )));
            }
            let (page, next) = parse_multipart_uploads(&body);
            uploads.extend(page);
            marker = next;
            if marker.is_none() {
                break;
            }
        }
        Ok(uploads)
    }
}

/// The uploads of a `ListMultipartUploads` answer, and the markers of the next page when it
/// is truncated.
pub(super) fn parse_multipart_uploads(xml: &str) -> (Vec<InProgress>, Option<(String, String)>) {
    let uploads = xml
        .split("<Upload>")
        .skip(1)
        .filter_map(|upload| {
            Some(InProgress {
                key: xml_text(upload, "Key")?,
                upload_id: xml_text(upload, "UploadId")?,
                initiated: xml_text(upload, "Initiated").and_then(|time| parse_time(&time)),
            })
        })
        .collect();
    let truncated = xml_text(xml, "IsTruncated").is_some_and(|value| value == "true");
    let next = match (
        xml_text(xml, "NextKeyMarker"),
        xml_text(xml, "NextUploadIdMarker"),
    ) {
        (Some(key), Some(upload_id)) if truncated && !key.is_empty() => Some((key, upload_id)),
        _ => None,
    };
    (uploads, next)
}

/// The text of the first `<name>` element in `xml`, entities decoded.
pub(super) fn xml_text(xml: &str, name: &str) -> Option<String> {
    let start = xml.find(&format!("<{name}>"))? + name.len() + 2;
    let end = start + xml[start..].find(&format!("</{name}>"))?;
    Some(
        xml[start..end]
            .replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&quot;", "\"")
            .replace("&apos;", "'")
            .replace("&amp;", "&"),
    )
}

/// `2026-12-07T09:44:59.000Z` (S3's dates; the fraction is ignored).
pub(super) fn parse_time(text: &str) -> Option<SystemTime> {
    let number = |range: std::ops::Range<usize>| text.get(range)?.parse::<i64>().ok();
    let (year, month, day) = (number(0..4)?, number(5..7)?, number(8..10)?);
    let (hour, minute, second) = (number(11..13)?, number(14..16)?, number(17..19)?);
    // Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
    let shifted = if month <= 2 { year - 1 } else { year };
    let era = shifted.div_euclid(400);
    let year_of_era = shifted - era * 400;
    let day_of_year = (153 * ((month + 9) % 12) + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    let days = era * 146_097 + day_of_era - 719_468;
    let seconds = days * 86_400 + hour * 3600 + minute * 60 + second;
    Some(SystemTime::UNIX_EPOCH + Duration::from_secs(u64::try_from(seconds).ok()?))
}
