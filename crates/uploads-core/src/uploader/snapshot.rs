//! What a resume starts from: the snapshot of an upload, where it is read from, and the
//! fingerprint that ties it to its file.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::parts::Cut;
use super::plan::{PartPlan, PlanError};
use crate::limits::Limits;
use crate::types::{PartId, Upload, UploadId, UploadStatus};

/// The newest snapshot format, written for parts cut as the upload goes: it lists each
/// part's length ([`SessionSnapshot::part_lens`]). A reader of version 1 only refuses it, as
/// it must: it would cut the file differently.
pub const SNAPSHOT_VERSION: u32 = 2;
/// The first format, still written for equal parts (a fixed part size), so any version
/// resumes those.
pub(crate) const EQUAL_PARTS_VERSION: u32 = 1;
/// The formats this version reads.
const READABLE_VERSIONS: [u32; 2] = [EQUAL_PARTS_VERSION, SNAPSHOT_VERSION];

/// What an upload needs to resume after a crash, as JSON: the Upload, the plan,
/// and the part ids received so far. Parts in flight or waiting for a retry are not kept;
/// they are sent again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionSnapshot {
    /// The snapshot format, [`SNAPSHOT_VERSION`].
    pub version: u32,
    /// The Upload as create returned it.
    pub upload: Upload,
    /// The size of the file being uploaded.
    pub file_size: u64,
    /// The size of every part but the last (version 1), or the largest part (version 2).
    pub part_size: u64,
    /// One entry per part cut so far, in file order: its id once the service stored it.
    pub part_ids: Vec<Option<PartId>>,
    /// Version 2: each part's length, parallel to `part_ids`, the parts back to back from
    /// the file's start. Bytes after the last are not cut yet: a resume cuts them as the
    /// upload goes. Absent in version 1: every part is `part_size` but the last.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub part_lens: Option<Vec<u64>>,
    /// The adapter's fingerprint of the file (path, size, modification time...), to check
    /// before resuming that the file is still the same.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// When the Upload expires by this machine's clock (unix milliseconds): the Upload's
    /// lifetime (`expires_at - created_at`) counted from when create was answered. The
    /// service's own clock may be hours off this machine's. Absent in snapshots written
    /// before it was kept: then `upload.expires_at` is all there is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_locally_at_ms: Option<u64>,
}

/// Why a snapshot cannot be resumed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ResumeError {
    /// The text is not a session snapshot.
    #[error("the snapshot is not valid: {message}")]
    Malformed {
        /// What the JSON parser said.
        message: String,
    },
    /// The snapshot was written in a format this version does not read.
    #[error("snapshot version {found} is not supported (this version reads {supported})")]
    UnsupportedVersion {
        /// The snapshot's version.
        found: u32,
        /// The version this build reads.
        supported: u32,
    },
    /// The Upload is no longer pending, so it accepts no parts.
    #[error("upload {upload_id} is {status}, not pending")]
    NotPending {
        /// The Upload's id.
        upload_id: UploadId,
        /// Its status in the snapshot.
        status: UploadStatus,
    },
    /// The Upload has expired.
    #[error("upload {upload_id} expired at {expires_at} (unix seconds)")]
    Expired {
        /// The Upload's id.
        upload_id: UploadId,
        /// When it expired, in unix seconds.
        expires_at: u64,
    },
    /// The snapshot's plan breaks the limits.
    #[error("the snapshot's part plan is refused")]
    InvalidPlan(#[source] PlanError),
    /// The snapshot contradicts itself.
    #[error("the snapshot is inconsistent")]
    Inconsistent(#[source] Inconsistency),
}

/// How a snapshot contradicts itself.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Inconsistency {
    /// The file size is not the byte count the Upload declared.
    #[error("file size {file_size} differs from the {upload_bytes} bytes the upload declared")]
    SizeMismatch {
        /// The snapshot's file size.
        file_size: u64,
        /// The Upload's `bytes`.
        upload_bytes: u64,
    },
    /// The parts' lengths add up to more than the file.
    #[error("the parts hold {cut} bytes, more than the file's {file_size}")]
    PartsOverFile {
        /// The bytes the parts hold.
        cut: u64,
        /// The file's size.
        file_size: u64,
    },
    /// The part list does not have one entry per planned part.
    #[error("{found} part entries for a plan of {expected} parts")]
    PartCountMismatch {
        /// Parts in the plan.
        expected: u32,
        /// Entries in the snapshot.
        found: usize,
    },
    /// One part id is listed for two parts (the service would refuse the complete).
    #[error("part id {part_id} is listed twice")]
    DuplicatePartId {
        /// The repeated id.
        part_id: PartId,
    },
}

fn check_consistency(
    upload: &Upload,
    plan: &PartPlan,
    part_ids: &[Option<PartId>],
) -> Result<(), Inconsistency> {
    if plan.file_size() != upload.bytes {
        return Err(Inconsistency::SizeMismatch {
            file_size: plan.file_size(),
            upload_bytes: upload.bytes,
        });
    }
    let mut seen = HashSet::new();
    for part_id in part_ids.iter().flatten() {
        if !seen.insert(part_id) {
            return Err(Inconsistency::DuplicatePartId {
                part_id: part_id.clone(),
            });
        }
    }
    Ok(())
}

/// The parts as version 1 planned them: all of them, equal but the last.
fn equal_cuts(plan: &PartPlan, part_ids: &[Option<PartId>]) -> Result<Vec<Cut>, Inconsistency> {
    if part_ids.len() != plan.count() as usize {
        return Err(Inconsistency::PartCountMismatch {
            expected: plan.count(),
            found: part_ids.len(),
        });
    }
    Ok(plan
        .parts()
        .map(|job| Cut {
            offset: job.offset,
            len: job.len,
        })
        .collect())
}

/// The parts as version 2 lists them: back to back from the start, none over the part
/// limit, no more than the file, no more than the service takes.
fn listed_cuts(
    plan: &PartPlan,
    lens: &[u64],
    part_ids: &[Option<PartId>],
    limits: &Limits,
) -> Result<Vec<Cut>, ResumeError> {
    let count_mismatch = |expected: usize| {
        ResumeError::Inconsistent(Inconsistency::PartCountMismatch {
            expected: u32::try_from(expected).unwrap_or(u32::MAX),
            found: part_ids.len(),
        })
    };
    if lens.len() != part_ids.len() {
        return Err(count_mismatch(lens.len()));
    }
    if lens.len() as u64 > limits.max_parts_per_upload.max(1) {
        return Err(ResumeError::InvalidPlan(PlanError::TooManyParts {
            count: lens.len() as u64,
            max: limits.max_parts_per_upload,
            smallest_part_size: plan
                .file_size()
                .div_ceil(limits.max_parts_per_upload.max(1)),
        }));
    }
    let mut offset = 0u64;
    let mut cuts = Vec::with_capacity(lens.len());
    for &len in lens {
        if len > limits.max_part_bytes {
            return Err(ResumeError::InvalidPlan(PlanError::PartTooLarge {
                part_size: len,
                max: limits.max_part_bytes,
            }));
        }
        cuts.push(Cut { offset, len });
        offset = offset.saturating_add(len);
    }
    if offset > plan.file_size() {
        return Err(ResumeError::Inconsistent(Inconsistency::PartsOverFile {
            cut: offset,
            file_size: plan.file_size(),
        }));
    }
    Ok(cuts)
}

impl SessionSnapshot {
    /// Checks that this snapshot can be resumed at `now_unix_ms` under `limits`: its
    /// version, that the Upload is pending and not expired, and that the plan is valid and
    /// agrees with the Upload and the part list. Returns the plan and the parts cut so far
    /// (a version 2 snapshot's rest is cut as the upload goes).
    pub(crate) fn check(
        self,
        limits: &Limits,
        now_unix_ms: u64,
    ) -> Result<(PartPlan, Vec<Cut>, Self), ResumeError> {
        if !READABLE_VERSIONS.contains(&self.version) {
            return Err(ResumeError::UnsupportedVersion {
                found: self.version,
                supported: SNAPSHOT_VERSION,
            });
        }
        let upload = &self.upload;
        if upload.status != UploadStatus::Pending {
            return Err(ResumeError::NotPending {
                upload_id: upload.id.clone(),
                status: upload.status.clone(),
            });
        }
        let expiry = self
            .expires_locally_at_ms
            .unwrap_or_else(|| upload.expires_at.saturating_mul(1000));
        if now_unix_ms >= expiry {
            return Err(ResumeError::Expired {
                upload_id: upload.id.clone(),
                expires_at: upload.expires_at,
            });
        }
        let (plan, cuts) = match &self.part_lens {
            None => {
                let plan = PartPlan::new(self.file_size, self.part_size, limits)
                    .map_err(ResumeError::InvalidPlan)?;
                let cuts = equal_cuts(&plan, &self.part_ids).map_err(ResumeError::Inconsistent)?;
                (plan, cuts)
            }
            Some(lens) => {
                let plan =
                    PartPlan::adaptive(self.file_size, limits).map_err(ResumeError::InvalidPlan)?;
                let cuts = listed_cuts(&plan, lens, &self.part_ids, limits)?;
                (plan, cuts)
            }
        };
        check_consistency(upload, &plan, &self.part_ids).map_err(ResumeError::Inconsistent)?;
        Ok((plan, cuts, self))
    }

    /// The bytes of the parts the service has stored.
    pub fn stored_bytes(&self) -> u64 {
        let len_of = |index: usize| {
            if let Some(lens) = &self.part_lens {
                return lens.get(index).copied().unwrap_or(0);
            }
            let offset = (index as u64).saturating_mul(self.part_size);
            self.part_size.min(self.file_size.saturating_sub(offset))
        };
        self.part_ids
            .iter()
            .enumerate()
            .filter(|(_, id)| id.is_some())
            .map(|(index, _)| len_of(index))
            .sum()
    }

    /// The snapshot as JSON.
    pub fn to_json(&self) -> String {
        // Strings, numbers and options only: serializing cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Reads a snapshot from JSON. The version is checked first, so a snapshot from a newer
    /// format is reported as [`ResumeError::UnsupportedVersion`], not as malformed.
    pub fn from_json(json: &str) -> Result<Self, ResumeError> {
        #[derive(Deserialize)]
        struct VersionOnly {
            version: u32,
        }
        let malformed = |error: serde_json::Error| ResumeError::Malformed {
            message: error.to_string(),
        };
        let VersionOnly { version } = serde_json::from_str(json).map_err(malformed)?;
        if !READABLE_VERSIONS.contains(&version) {
            return Err(ResumeError::UnsupportedVersion {
                found: version,
                supported: SNAPSHOT_VERSION,
            });
        }
        serde_json::from_str(json).map_err(malformed)
    }
}
/// Where an adapter's `resume_upload` finds the session to resume.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum SnapshotSource {
    /// A snapshot file written by an earlier upload (see
    /// [`UploadOptions::snapshot_path`](crate::upload::UploadOptions::snapshot_path)); the resumed upload keeps writing it unless the
    /// options name another path.
    Path(PathBuf),
    /// A snapshot already read.
    Snapshot(Box<SessionSnapshot>),
}

impl From<PathBuf> for SnapshotSource {
    fn from(path: PathBuf) -> Self {
        Self::Path(path)
    }
}

impl From<&str> for SnapshotSource {
    /// The path of a snapshot file.
    fn from(path: &str) -> Self {
        Self::Path(path.into())
    }
}

impl From<String> for SnapshotSource {
    /// The path of a snapshot file.
    fn from(path: String) -> Self {
        Self::Path(path.into())
    }
}

impl From<&PathBuf> for SnapshotSource {
    fn from(path: &PathBuf) -> Self {
        Self::Path(path.clone())
    }
}

impl From<&Path> for SnapshotSource {
    fn from(path: &Path) -> Self {
        Self::Path(path.to_owned())
    }
}

impl From<SessionSnapshot> for SnapshotSource {
    fn from(snapshot: SessionSnapshot) -> Self {
        Self::Snapshot(Box::new(snapshot))
    }
}

impl SnapshotSource {
    /// The snapshot, and the path of the file it was read from, if it was (the resumed
    /// upload keeps writing it unless its options name another). `read` reads a file's text:
    /// the adapter's I/O. A file that cannot be read is [`ResumeError::Malformed`], naming it.
    pub fn load(
        self,
        read: impl FnOnce(&Path) -> std::io::Result<String>,
    ) -> Result<(SessionSnapshot, Option<PathBuf>), ResumeError> {
        match self {
            Self::Snapshot(snapshot) => Ok((*snapshot, None)),
            Self::Path(path) => {
                let text = read(&path).map_err(|error| ResumeError::Malformed {
                    message: format!("cannot read {}: {error}", path.display()),
                })?;
                Ok((SessionSnapshot::from_json(&text)?, Some(path)))
            }
        }
    }
}

/// The fingerprint of a source file that a snapshot records, so a resume refuses a file that
/// changed: its path, its length and its modification time (nanoseconds since the epoch, if
/// the platform has one). Both adapters compute it this way, so either can resume the other's
/// snapshot.
pub fn source_fingerprint(path: &str, len: u64, modified_unix_nanos: Option<u128>) -> String {
    match modified_unix_nanos {
        Some(modified) => format!("{len}:{modified}:{path}"),
        None => format!("{len}:-:{path}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fingerprint_names_the_length_the_modification_time_and_the_path() {
        // Snapshots keep it as text: a resume by another adapter, or by a later version,
        // compares this very string.
        assert_eq!(
            source_fingerprint("/data/train.jsonl", 6, Some(1_719_184_912_000_000_001)),
            "6:1719184912000000001:/data/train.jsonl"
        );
        assert_eq!(
            source_fingerprint("/data/train.jsonl", 6, None),
            "6:-:/data/train.jsonl"
        );
    }
}
