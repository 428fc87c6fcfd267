//! The bytes an upload sends: a source of known length that the part senders read at any
//! offset and the md5 pass reads in order, each a small chunk at a time.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::UNIX_EPOCH;

use uploads_core::buffer::AlignedBuffer;
use uploads_core::digest::Md5Hasher;
use uploads_core::upload::{OptionsError, UploadError, UploadOptions};
use uploads_core::uploader::{SessionSnapshot, Uploader, source_fingerprint};

/// How many bytes the md5 pass reads at a time.
const HASH_CHUNK_BYTES: usize = 1024 * 1024;

/// What a source reader must be able to do.
trait ReadSeek: Read + Seek + Send {}
impl<T: Read + Seek + Send> ReadSeek for T {}

/// The bytes of an upload, read by offset by every part in flight and the md5 pass.
///
/// A file is read with positioned reads (`pread`, [`std::os::unix::fs::FileExt::read_at`]): no lock, no shared
/// position, every reader at its own offset at once. A caller's reader ([`Source::new`]) has
/// one position, so its reads take turns behind a lock (seek, then read).
pub struct Source<'a> {
    bytes: Bytes<'a>,
    len: u64,
}

/// Where a [`Source`]'s bytes come from.
enum Bytes<'a> {
    File(File),
    Reader(Mutex<Box<dyn ReadSeek + 'a>>),
}

/// A file opened for upload, with what a snapshot records about it.
pub struct OpenedFile {
    /// The file as a source.
    pub source: Source<'static>,
    /// Its file name, the default name of the File.
    pub name: String,
    /// Its fingerprint (see [`source_fingerprint`]).
    pub fingerprint: String,
}

impl OpenedFile {
    /// The machine that uploads this file from the start, its clock read now.
    pub fn uploader<E>(&self, options: &UploadOptions) -> Result<Uploader<E>, OptionsError> {
        Uploader::new(
            options,
            &self.name,
            self.source.len(),
            Some(self.fingerprint.clone()),
            crate::now_unix_ms(),
        )
    }

    /// The machine that continues `snapshot`'s Upload of this file (refused when the file
    /// changed or the Upload expired), its clock read now.
    pub fn resume<E>(
        &self,
        options: &UploadOptions,
        snapshot: SessionSnapshot,
    ) -> Result<Uploader<E>, UploadError<E>> {
        Uploader::resume(
            options,
            snapshot,
            self.source.len(),
            &self.fingerprint,
            crate::now_unix_ms(),
        )
    }
}

impl<'a> Source<'a> {
    /// A source of `len` bytes read from `reader`.
    pub fn new(reader: impl Read + Seek + Send + 'a, len: u64) -> Self {
        Self {
            bytes: Bytes::Reader(Mutex::new(Box::new(reader))),
            len,
        }
    }

    /// A source of the `len` bytes of `file`, read by offset without a lock.
    pub fn file(file: File, len: u64) -> Self {
        Self {
            bytes: Bytes::File(file),
            len,
        }
    }

    /// Opens the file at `path`: its length, name and fingerprint are read once, here.
    pub fn open_file(path: &Path) -> io::Result<OpenedFile> {
        let file = File::open(path)?;
        let metadata = file.metadata()?;
        let modified = metadata
            .modified()
            .ok()
            .and_then(|modified| modified.duration_since(UNIX_EPOCH).ok())
            .map(|since| since.as_nanos());
        let canonical = std::fs::canonicalize(path)?;
        let fingerprint =
            source_fingerprint(&canonical.to_string_lossy(), metadata.len(), modified);
        let name = path
            .file_name()
            .map(|name| name.to_string_lossy().into_owned())
            .unwrap_or_default();
        Ok(OpenedFile {
            source: Source::file(file, metadata.len()),
            name,
            fingerprint,
        })
    }

    /// The source's length.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the source holds no bytes (a zero-byte file is still one empty Part).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Exactly `buf.len()` bytes from `offset`; a source shorter than promised is an
    /// `UnexpectedEof` error, never a short part.
    pub fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        match &self.bytes {
            Bytes::File(file) => read_exact_at(file, offset, buf),
            Bytes::Reader(reader) => {
                let mut reader = reader.lock().unwrap_or_else(PoisonError::into_inner);
                reader.seek(SeekFrom::Start(offset))?;
                reader.read_exact(buf)
            }
        }
    }

    /// The md5 of the whole source as lower-case hex, read in order one chunk at a time.
    /// Returns an `Interrupted` error once `stop` is set.
    pub fn md5_hex(&self, stop: &AtomicBool) -> io::Result<String> {
        let mut hasher = Md5Hasher::new();
        let mut chunk = AlignedBuffer::zeroed(HASH_CHUNK_BYTES);
        let mut offset = 0;
        while offset < self.len {
            if stop.load(Ordering::Relaxed) {
                return Err(io::Error::new(
                    io::ErrorKind::Interrupted,
                    "md5 pass stopped",
                ));
            }
            let len = (self.len - offset).min(HASH_CHUNK_BYTES as u64) as usize;
            let chunk = &mut chunk[..len];
            self.read_exact_at(offset, chunk)?;
            hasher.update(chunk);
            offset += len as u64;
        }
        Ok(hasher.finish_hex())
    }
}

/// Fills `buf` from `file` at `offset` with positioned reads; a file shorter than that is
/// `UnexpectedEof`.
#[cfg(unix)]
fn read_exact_at(file: &File, offset: u64, buf: &mut [u8]) -> io::Result<()> {
    std::os::unix::fs::FileExt::read_exact_at(file, buf, offset)
}

/// Fills `buf` from `file` at `offset` with positioned reads; a file shorter than that is
/// `UnexpectedEof`.
#[cfg(windows)]
fn read_exact_at(file: &File, mut offset: u64, mut buf: &mut [u8]) -> io::Result<()> {
    while !buf.is_empty() {
        match std::os::windows::fs::FileExt::seek_read(file, buf, offset) {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(read) => {
                buf = &mut buf[read..];
                offset += read as u64;
            }
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(error) => return Err(error),
        }
    }
    Ok(())
}

/// Writes `contents` to `path` atomically: a temporary file beside it, flushed to disk,
/// then renamed over it, so a crash leaves the old snapshot or the new one, never half.
/// Each write has a temporary file of its own, so two writers (an upload stopped while
/// writing and its resume, say) never mix their bytes.
pub fn write_atomically(path: &Path, contents: &str) -> io::Result<()> {
    use std::io::Write as _;
    static WRITES: AtomicU64 = AtomicU64::new(0);
    let write = WRITES.fetch_add(1, Ordering::Relaxed);
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(format!(".{}-{write}.tmp", std::process::id()));
    let temporary = std::path::PathBuf::from(temporary);
    let mut file = File::create(&temporary)?;
    file.write_all(contents.as_bytes())?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&temporary, path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    fn read_vec(source: &Source<'_>, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        let mut chunk = vec![0; len];
        source.read_exact_at(offset, &mut chunk)?;
        Ok(chunk)
    }

    #[test]
    fn reads_by_offset_and_refuses_a_short_source() {
        let source = Source::new(Cursor::new(b"0123456789".to_vec()), 10);
        assert_eq!(read_vec(&source, 3, 4).unwrap(), b"3456");
        assert_eq!(read_vec(&source, 0, 2).unwrap(), b"01");
        let short = read_vec(&source, 8, 4).unwrap_err();
        assert_eq!(short.kind(), io::ErrorKind::UnexpectedEof);
        let mut buf = [0; 3];
        source.read_exact_at(7, &mut buf).unwrap();
        assert_eq!(&buf, b"789");
    }

    #[test]
    fn a_file_is_read_by_offset_from_many_threads_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("data.bin");
        let data: Vec<u8> = (0..64 * 1024_u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(&path, &data).unwrap();
        let source = Source::open_file(&path).unwrap().source;
        assert!(matches!(source.bytes, Bytes::File(_)));
        std::thread::scope(|scope| {
            for part in 0..8_usize {
                let (source, data) = (&source, &data);
                scope.spawn(move || {
                    for _ in 0..50 {
                        let offset = part * 8 * 1024;
                        let chunk = read_vec(source, offset as u64, 8 * 1024).unwrap();
                        assert_eq!(chunk, data[offset..offset + 8 * 1024]);
                    }
                });
            }
        });
        let past_the_end = read_vec(&source, 60 * 1024, 8 * 1024).unwrap_err();
        assert_eq!(past_the_end.kind(), io::ErrorKind::UnexpectedEof);
    }

    #[test]
    fn hashes_the_whole_source_in_order_or_stops() {
        let data: Vec<u8> = (0..3 * HASH_CHUNK_BYTES + 5).map(|i| i as u8).collect();
        let mut expected = Md5Hasher::new();
        expected.update(&data);
        let len = data.len() as u64;
        let source = Source::new(Cursor::new(data), len);
        assert_eq!(
            source.md5_hex(&AtomicBool::new(false)).unwrap(),
            expected.finish_hex()
        );
        let stopped = source.md5_hex(&AtomicBool::new(true)).unwrap_err();
        assert_eq!(stopped.kind(), io::ErrorKind::Interrupted);
    }

    #[test]
    fn files_are_fingerprinted_and_snapshots_replaced_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("train.jsonl");
        write_atomically(&path, "first").unwrap();
        write_atomically(&path, "second").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "second");
        let opened = Source::open_file(&path).unwrap();
        assert_eq!(opened.name, "train.jsonl");
        assert_eq!(opened.source.len(), 6);
        assert!(
            opened.fingerprint.starts_with("6:"),
            "{}",
            opened.fingerprint
        );
        assert!(opened.fingerprint.ends_with("train.jsonl"));
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
