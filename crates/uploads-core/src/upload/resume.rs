//! What a resume starts from: the snapshot's source, and the fingerprint that ties it to its file.

use std::path::{Path, PathBuf};

use crate::session::{ResumeError, SessionSnapshot};

/// Where an adapter's `resume_upload` finds the session to resume.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum SnapshotSource {
    /// A snapshot file written by an earlier upload (see
    /// [`UploadOptions::snapshot_path`]); the resumed upload keeps writing it unless the
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
