//! The directory backend's storage ([`DirStore`]): the bytes of Parts and Files (its
//! [`ByteStore`] side) and the journal of its records (the ledger's records as opaque JSON
//! blobs, which only the directory backend's records read and write); it makes
//! no decisions. Every durable write follows one discipline, so a crash at any instant leaves
//! either the old or the new content, never a mix:
//!
//! ```text
//! write temp file in the target's directory -> fsync(file) -> rename over the target -> fsync(dir)
//! ```
//!
//! The directory layout (ids are ours, checked to be `[A-Za-z0-9_-]`; no user-supplied name
//! ever becomes a path):
//!
//! ```text
//! <data dir>/lock                               held by the process serving the directory
//! <data dir>/uploads/<upload id>/state.json      the Upload's record: its commit point
//! <data dir>/uploads/<upload id>/parts.log       Parts added since, one JSON line each
//! <data dir>/uploads/<upload id>/parts/<part id> one Part's bytes
//! <data dir>/files/<file id>.json                a File's record (and its manifest)
//! <data dir>/files/<file id>.data                the bytes of a File made by `POST /files`
//! <data dir>/quarantine/                         records that could not be read at startup
//! ```
//!
//! Temporary files start with `.tmp-` and are removed by [`DirStore::load`] at startup. The
//! startup walk never follows a symbolic link: a link where a record should be makes the
//! record unreadable (quarantined), any other link is left as it is, and nothing outside the
//! data directory is read or removed.

use std::collections::HashSet;
use std::fs::{self, File};
use std::io::{self, IoSlice, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use uploads_core::types::{FileId, PartId, UploadId};

use crate::byte_store::{ByteStore, ContentSource, DataSink};
use crate::probe::ProbeGate;

/// Prefix of every temporary file; anything with it is garbage after a restart.
pub const TEMP_PREFIX: &str = ".tmp-";

/// An Upload found on disk at startup: its state blob and the Parts whose bytes are there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredUpload {
    /// The Upload's id.
    pub id: UploadId,
    /// Where the state blob was read from (for the log).
    pub path: PathBuf,
    /// The state blob last saved with [`DirStore::save_upload`].
    pub state: Vec<u8>,
    /// Every record appended with [`DirStore::append_part`], each ending in `\n`, in order (a
    /// record torn by a crash is cut off).
    pub part_log: Vec<u8>,
    /// Every committed Part on disk (a regular file in its Parts directory), listed or not
    /// in the state, sorted.
    pub parts: Vec<PartId>,
}

/// A File record found on disk at startup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredFile {
    /// The File's id.
    pub id: FileId,
    /// Where the record blob was read from (for the log).
    pub path: PathBuf,
    /// The record blob last saved with [`DirStore::save_file`].
    pub record: Vec<u8>,
}

/// A committed record found at startup that cannot be read as one (a directory or a link
/// where a file should be, a read error): recovery quarantines it, and serves the rest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnreadableRecord<Id> {
    /// The Upload's or File's id.
    pub id: Id,
    /// The path that could not be read.
    pub path: PathBuf,
    /// Why, for the log.
    pub reason: String,
}

/// Everything durable, as found at startup after temp files were swept.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoredState {
    /// Uploads with a state blob.
    pub uploads: Vec<StoredUpload>,
    /// File records.
    pub files: Vec<StoredFile>,
    /// Committed Uploads whose state file or part log cannot be read.
    pub unreadable_uploads: Vec<UnreadableRecord<UploadId>>,
    /// File records that cannot be read.
    pub unreadable_files: Vec<UnreadableRecord<FileId>>,
}

/// The name of the lock file in a data directory; it holds the pid of the process serving it.
pub const LOCK_FILE: &str = "lock";

/// An exclusive lock on a data directory, held for as long as this value lives: two
/// processes recovering and writing one directory would delete each other's temp files and
/// let their ledgers diverge. The lock is advisory (`flock`), released by the kernel when the
/// process dies, so a crash never leaves a stale lock.
#[derive(Debug)]
pub struct DataDirLock {
    _file: File,
}

impl DataDirLock {
    /// Takes the lock of `root` (creating the directory if needed) and writes this process's
    /// pid into it. A directory locked by another process (or another server of this one) is
    /// refused with [`io::ErrorKind::ResourceBusy`] and a message naming the holder's pid.
    pub fn acquire(root: &Path) -> io::Result<Self> {
        fs::create_dir_all(root)?;
        let path = root.join(LOCK_FILE);
        let mut file = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                let holder = match holder.trim() {
                    "" => "an unknown pid".to_owned(),
                    pid => format!("pid {pid}"),
                };
                return Err(io::Error::new(
                    io::ErrorKind::ResourceBusy,
                    format!(
                        "the data directory {} is in use by another process ({holder})",
                        root.display()
                    ),
                ));
            }
            Err(fs::TryLockError::Error(error)) => return Err(error),
        }
        file.set_len(0)?;
        file.write_all(format!("{}\n", std::process::id()).as_bytes())?;
        file.sync_all()?;
        Ok(Self { _file: file })
    }
}

/// The default backend's storage: a directory on a local file system, holding the bytes (a
/// [`ByteStore`]) and the journal of its records.
#[derive(Debug)]
pub struct DirStore {
    root: PathBuf,
    /// Makes temp names unique when two writers target the same name at once.
    temp_counter: AtomicU64,
    /// The health probes (on a thread of their own, which a hung disk may keep).
    probe: Arc<ProbeGate>,
}

impl DirStore {
    /// Opens (creating if needed) a store rooted at `root`.
    pub fn open(root: impl Into<PathBuf>) -> io::Result<Self> {
        let root = root.into();
        for dir in [root.join("uploads"), root.join("files")] {
            fs::create_dir_all(&dir)?;
        }
        sync_dir(&root)?;
        Ok(Self {
            root,
            temp_counter: AtomicU64::new(0),
            probe: Arc::new(ProbeGate::default()),
        })
    }

    /// The directory this store lives in.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn upload_dir(&self, upload: &UploadId) -> io::Result<PathBuf> {
        Ok(self.root.join("uploads").join(safe_name(upload.as_str())?))
    }

    fn parts_dir(&self, upload: &UploadId) -> io::Result<PathBuf> {
        Ok(self.upload_dir(upload)?.join(PARTS_DIR))
    }

    fn files_dir(&self) -> PathBuf {
        self.root.join("files")
    }

    /// Where unreadable records are moved (created when first needed).
    fn quarantine_dir(&self) -> io::Result<PathBuf> {
        let dir = self.root.join("quarantine");
        match fs::symlink_metadata(&dir) {
            // Records are never moved out of the data directory through a link.
            Ok(found) if found.file_type().is_symlink() => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "{} is a symbolic link, which the server never follows",
                    dir.display()
                ),
            )),
            Ok(_) => Ok(dir),
            Err(error) if error.kind() == io::ErrorKind::NotFound => {
                fs::create_dir_all(&dir)?;
                sync_dir(&self.root)?;
                Ok(dir)
            }
            Err(error) => Err(error),
        }
    }

    fn temp_path(&self, dir: &Path, name: &str) -> PathBuf {
        let n = self.temp_counter.fetch_add(1, Ordering::Relaxed);
        dir.join(format!("{TEMP_PREFIX}{name}.{n}"))
    }

    /// Writes `bytes` to `dir/name` with the temp -> fsync -> rename -> fsync(dir) discipline.
    fn write_atomic(&self, dir: &Path, name: &str, bytes: &[u8]) -> io::Result<()> {
        let temp = self.temp_path(dir, name);
        let result = (|| {
            let mut file = File::create(&temp)?;
            file.write_all(bytes)?;
            file.sync_all()?;
            fs::rename(&temp, dir.join(name))?;
            sync_dir(dir)
        })();
        if result.is_err() {
            let _ = fs::remove_file(&temp);
        }
        result
    }

    fn sink(&self, dir: PathBuf, name: &str) -> io::Result<Box<dyn DataSink>> {
        fs::create_dir_all(&dir)?;
        let temp = self.temp_path(&dir, name);
        let file = File::create(&temp)?;
        Ok(Box::new(FileSink {
            file: Some(file),
            final_path: dir.join(name),
            temp,
            dir,
            written: 0,
        }))
    }
}

/// The journal of the directory backend's records: what only its records use (the bytes
/// seam is [`ByteStore`]).
impl DirStore {
    /// Durably replaces an Upload's state blob (its commit point).
    pub fn save_upload(&self, upload: &UploadId, state: &[u8]) -> io::Result<()> {
        let dir = self.upload_dir(upload)?;
        if !dir.exists() {
            fs::create_dir_all(&dir)?;
            // The new directory entry must itself survive a crash.
            sync_dir(&self.root.join("uploads"))?;
        }
        self.write_atomic(&dir, STATE_FILE, state)
    }

    /// Durably appends one Part's record (one line, no `\n` inside) to the Upload, in O(1)
    /// bytes written; a failed append leaves the earlier records as they were.
    pub fn append_part(&self, upload: &UploadId, record: &[u8]) -> io::Result<()> {
        let dir = self.upload_dir(upload)?;
        let path = dir.join(PART_LOG);
        let created = !path.exists();
        let mut log = fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(&path)?;
        let before = log.metadata()?.len();
        let mut line = Vec::with_capacity(record.len() + 1);
        line.extend_from_slice(record);
        line.push(b'\n');
        let written = log.write_all(&line).and_then(|()| log.sync_data());
        if let Err(error) = written {
            // A torn line would swallow the next record appended after it.
            let _ = log.set_len(before);
            return Err(error);
        }
        if created {
            sync_dir(&dir)?;
        }
        Ok(())
    }

    /// Durably replaces a File's record blob.
    pub fn save_file(&self, file: &FileId, record: &[u8]) -> io::Result<()> {
        let name = format!("{}.json", safe_name(file.as_str())?);
        self.write_atomic(&self.files_dir(), &name, record)
    }

    /// Removes a File's record and any bytes of its own (not the Parts it points at).
    pub fn remove_file(&self, file: &FileId) -> io::Result<()> {
        let name = safe_name(file.as_str())?;
        let dir = self.files_dir();
        // The record (the commit point) goes first: a crash or failure after it leaves only
        // orphan bytes, swept at load, so it is not an error of the removal.
        remove_if_present(&dir.join(format!("{name}.json")))?;
        if let Err(error) = remove_if_present(&dir.join(format!("{name}.data"))) {
            tracing::warn!(%error, file = %file, "could not remove a deleted File's bytes; left for recovery");
        }
        sync_dir(&dir)
    }

    /// Removes an Upload: its state and all its Parts.
    pub fn remove_upload(&self, upload: &UploadId) -> io::Result<()> {
        let dir = self.upload_dir(upload)?;
        // The state (commit point) goes first, so a half-removed Upload is an orphan, not a
        // record pointing at missing Parts.
        remove_if_present(&dir.join(STATE_FILE))?;
        if dir.exists() {
            sync_dir(&dir)?;
        }
        // Past the commit point: what is left is garbage that recovery removes.
        match fs::remove_dir_all(&dir) {
            Err(error) if error.kind() != io::ErrorKind::NotFound => {
                tracing::warn!(%error, %upload, "could not remove a removed Upload's directory; left for recovery");
            }
            _ => {}
        }
        sync_dir(&self.root.join("uploads"))
    }

    /// Sweeps temporary files and reads back everything durable (startup recovery).
    pub fn load(&self) -> io::Result<StoredState> {
        let mut state = StoredState::default();
        let mut upload_dirs = Vec::new();
        let uploads_dir = self.root.join("uploads");
        refuse_link(&uploads_dir)?;
        for (name, path, kind) in entries_kept(&uploads_dir)? {
            if kind.is_symlink() {
                tracing::warn!(path = %path.display(), "a symbolic link among the Uploads is not followed; it is left as it is");
            } else if kind.is_dir() {
                upload_dirs.push((UploadId::new(name), path));
            }
        }
        for loaded in in_parallel(upload_dirs, |(id, dir)| load_upload(id, &dir)) {
            match loaded? {
                UploadOnDisk::Committed(upload) => state.uploads.push(upload),
                UploadOnDisk::Unreadable(record) => state.unreadable_uploads.push(record),
                UploadOnDisk::Uncommitted => {}
            }
        }
        let files_dir = self.files_dir();
        let mut records = Vec::new();
        let mut data_files = Vec::new();
        refuse_link(&files_dir)?;
        for (name, path, kind) in entries_kept(&files_dir)? {
            if let Some(id) = name.strip_suffix(".json") {
                let id = FileId::new(id);
                match not_a_file(kind) {
                    None => records.push((id, path)),
                    Some(reason) => state.unreadable_files.push(UnreadableRecord {
                        id,
                        path,
                        reason: reason.to_owned(),
                    }),
                }
            } else if let Some(id) = name.strip_suffix(".data") {
                data_files.push((id.to_owned(), path, kind));
            }
        }
        let read = in_parallel(records, |(id, path)| match fs::read(&path) {
            Ok(record) => Ok(StoredFile { id, path, record }),
            Err(error) => Err(UnreadableRecord {
                id,
                path,
                reason: error.to_string(),
            }),
        });
        for record in read {
            match record {
                Ok(file) => state.files.push(file),
                Err(unreadable) => state.unreadable_files.push(unreadable),
            }
        }
        remove_orphan_data(&files_dir, &state, data_files)?;
        state.uploads.sort_by(|a, b| a.id.cmp(&b.id));
        state.files.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(state)
    }

    /// Moves an Upload whose records cannot be read out of the way (kept for an operator,
    /// never loaded again); says where it went.
    pub fn quarantine_upload(&self, upload: &UploadId) -> io::Result<String> {
        let target = self
            .quarantine_dir()?
            .join(format!("upload-{}", safe_name(upload.as_str())?));
        fs::rename(self.upload_dir(upload)?, &target)?;
        sync_dir(&self.root.join("uploads"))?;
        Ok(target.display().to_string())
    }

    /// Moves a File whose record cannot be read (and its bytes) out of the way; says where.
    pub fn quarantine_file(&self, file: &FileId) -> io::Result<String> {
        let name = safe_name(file.as_str())?;
        let target = self.quarantine_dir()?;
        for suffix in ["json", "data"] {
            let from = self.files_dir().join(format!("{name}.{suffix}"));
            // Whatever is there (a link too, which is moved, not followed).
            if fs::symlink_metadata(&from).is_ok() {
                fs::rename(from, target.join(format!("file-{name}.{suffix}")))?;
            }
        }
        sync_dir(&self.files_dir())?;
        Ok(target
            .join(format!("file-{name}.json"))
            .display()
            .to_string())
    }
}

impl ByteStore for DirStore {
    fn begin_part(&self, upload: &UploadId, part: &PartId) -> io::Result<Box<dyn DataSink>> {
        let name = safe_name(part.as_str())?.to_owned();
        self.sink(self.parts_dir(upload)?, &name)
    }

    fn begin_file_data(&self, file: &FileId) -> io::Result<Box<dyn DataSink>> {
        let name = format!("{}.data", safe_name(file.as_str())?);
        self.sink(self.files_dir(), &name)
    }

    fn open(&self, source: &ContentSource) -> io::Result<Box<dyn Read + Send>> {
        match source {
            ContentSource::Direct(file) => {
                let name = format!("{}.data", safe_name(file.as_str())?);
                Ok(Box::new(File::open(self.files_dir().join(name))?))
            }
            ContentSource::Parts { upload, parts } => {
                let dir = self.parts_dir(upload)?;
                let paths = parts
                    .iter()
                    .map(|part| {
                        let path = dir.join(safe_name(part.as_str())?);
                        // Every Part must be there now; each is opened when reached, so a
                        // File of many Parts holds one descriptor at a time.
                        fs::metadata(&path)?;
                        Ok(path)
                    })
                    .collect::<io::Result<Vec<_>>>()?;
                Ok(Box::new(ChainedFiles::new(paths)))
            }
        }
    }

    fn missing_parts(&self, upload: &UploadId, parts: &[PartId]) -> io::Result<Vec<PartId>> {
        let dir = self.parts_dir(upload)?;
        let mut missing = Vec::new();
        for part in parts {
            match fs::symlink_metadata(dir.join(safe_name(part.as_str())?)) {
                Ok(metadata) if metadata.is_file() => {}
                Ok(_) => missing.push(part.clone()),
                Err(error) if error.kind() == io::ErrorKind::NotFound => missing.push(part.clone()),
                Err(error) => return Err(error),
            }
        }
        Ok(missing)
    }

    fn remove_parts(&self, upload: &UploadId, parts: &[PartId]) -> io::Result<()> {
        let dir = self.parts_dir(upload)?;
        for part in parts {
            remove_if_present(&dir.join(safe_name(part.as_str())?))?;
        }
        if dir.exists() { sync_dir(&dir) } else { Ok(()) }
    }

    fn probe(&self) -> io::Result<()> {
        let dir = self.files_dir();
        // A temp name: a crash between the write and the removal leaves nothing recovery keeps.
        let temp = self.temp_path(&dir, "healthz");
        self.probe
            .run(PROBE_DEADLINE, move || probe_dir(&dir, &temp))
    }

    fn remove_file_data(&self, file: &FileId) -> io::Result<()> {
        let dir = self.files_dir();
        remove_if_present(&dir.join(format!("{}.data", safe_name(file.as_str())?)))?;
        sync_dir(&dir)
    }
}

/// How many threads read records back at startup. Reading is latency-bound on a cold cache
/// (two directory listings and two small reads per Upload), so many more reads are kept in
/// flight than there are cores; on a warm cache they share the cores. Measured on 2 cores
/// and a virtio disk, a server over 100,000 Files opened its port after 15 s with 8 threads
/// and 11 s with 32 on a cold cache, and after ~2.3 s with either on a warm one.
const LOAD_THREADS: usize = 32;

/// Records are handed to the reading threads in batches of this many, in order (a batch
/// per lock taken, and still enough batches to spread a few thousand records).
const LOAD_BATCH: usize = 64;

/// `work` applied to every item on up to [`LOAD_THREADS`] threads (the calling one among
/// them, so a thread the system refuses only makes it slower); the results in the items'
/// order. A panic in `work` is resumed on the calling thread.
pub(crate) fn in_parallel<T, R>(items: Vec<T>, work: impl Fn(T) -> R + Sync) -> Vec<R>
where
    T: Send,
    R: Send,
{
    let threads = LOAD_THREADS.min(items.len().div_ceil(LOAD_BATCH));
    if threads <= 1 {
        return items.into_iter().map(work).collect();
    }
    let batches = std::sync::Mutex::new(items.into_iter().enumerate());
    let next_batch = || {
        let mut items = batches
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        items.by_ref().take(LOAD_BATCH).collect::<Vec<_>>()
    };
    let drain = || {
        let mut done = Vec::new();
        loop {
            let batch = next_batch();
            if batch.is_empty() {
                return done;
            }
            done.extend(batch.into_iter().map(|(at, item)| (at, work(item))));
        }
    };
    let mut done: Vec<(usize, R)> = std::thread::scope(|scope| {
        let mut helpers = Vec::with_capacity(threads - 1);
        for _ in 1..threads {
            match std::thread::Builder::new()
                .name("store-load".to_owned())
                .spawn_scoped(scope, drain)
            {
                Ok(helper) => helpers.push(helper),
                Err(error) => {
                    tracing::warn!(%error, "could not start a thread to read records; reading with fewer");
                    break;
                }
            }
        }
        let mut done = drain();
        for helper in helpers {
            done.extend(
                helper
                    .join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic)),
            );
        }
        done
    });
    done.sort_unstable_by_key(|(at, _)| *at);
    done.into_iter().map(|(_, result)| result).collect()
}

/// The name of an Upload's state file (its commit point).
const STATE_FILE: &str = "state.json";

/// The name of the directory of an Upload's Parts.
const PARTS_DIR: &str = "parts";

/// What the startup walk found in one Upload's directory.
enum UploadOnDisk {
    /// A committed Upload, read back.
    Committed(StoredUpload),
    /// A committed Upload whose records cannot be read.
    Unreadable(UnreadableRecord<UploadId>),
    /// A directory never committed (no state file), now removed.
    Uncommitted,
}

/// Reads one Upload's directory back: one listing of it and one of its Parts, its temp
/// files removed, no link followed.
fn load_upload(id: UploadId, dir: &Path) -> io::Result<UploadOnDisk> {
    let (mut state_kind, mut log_kind, mut parts_kind) = (None, None, None);
    for (name, _, kind) in entries_kept(dir)? {
        match name.as_str() {
            STATE_FILE => state_kind = Some(kind),
            PART_LOG => log_kind = Some(kind),
            PARTS_DIR => parts_kind = Some(kind),
            _ => {}
        }
    }
    let Some(state_kind) = state_kind else {
        // Created but never committed: nothing refers to it. (`remove_dir_all` removes a
        // link inside, never what it points at.)
        if let Err(error) = fs::remove_dir_all(dir) {
            tracing::warn!(%error, path = %dir.display(), "could not remove an uncommitted Upload");
        }
        return Ok(UploadOnDisk::Uncommitted);
    };
    let unreadable = |name: &str, reason: String| {
        Ok(UploadOnDisk::Unreadable(UnreadableRecord {
            id: id.clone(),
            path: dir.join(name),
            reason,
        }))
    };
    if let Some(reason) = not_a_file(state_kind) {
        return unreadable(STATE_FILE, reason.to_owned());
    }
    if let Some(reason) = log_kind.and_then(not_a_file) {
        return unreadable(PART_LOG, reason.to_owned());
    }
    let parts = match parts_kind {
        None => Vec::new(),
        Some(kind) if kind.is_dir() => load_parts(&dir.join(PARTS_DIR))?,
        Some(kind) => {
            let reason = if kind.is_symlink() {
                SYMLINK_REASON
            } else {
                "it is not a directory"
            };
            return unreadable(PARTS_DIR, reason.to_owned());
        }
    };
    let path = dir.join(STATE_FILE);
    let state = match fs::read(&path) {
        Ok(state) => state,
        Err(error) => return unreadable(STATE_FILE, error.to_string()),
    };
    let part_log = match log_kind {
        None => Vec::new(),
        Some(_) => match read_part_log(&dir.join(PART_LOG)) {
            Ok(log) => log,
            Err(error) => return unreadable(PART_LOG, error.to_string()),
        },
    };
    Ok(UploadOnDisk::Committed(StoredUpload {
        id,
        path,
        state,
        part_log,
        parts,
    }))
}

/// The committed Parts in an Upload's Parts directory, sorted, its temp files removed.
/// Anything but a regular file is not a Part, and is left as it is.
fn load_parts(dir: &Path) -> io::Result<Vec<PartId>> {
    let mut parts = Vec::new();
    for (name, path, kind) in entries_kept(dir)? {
        match not_a_file(kind) {
            Some(reason) => {
                tracing::warn!(path = %path.display(), reason, "not a Part; left as it is");
            }
            None => parts.push(PartId::new(name)),
        }
    }
    parts.sort();
    Ok(parts)
}

/// Removes the bytes of `POST /files` requests that crashed before their record was saved
/// (a record that cannot be read keeps its bytes: they are quarantined with it).
fn remove_orphan_data(
    files_dir: &Path,
    state: &StoredState,
    data_files: Vec<(String, PathBuf, fs::FileType)>,
) -> io::Result<()> {
    let recorded: HashSet<&str> = state
        .files
        .iter()
        .map(|file| file.id.as_str())
        .chain(state.unreadable_files.iter().map(|file| file.id.as_str()))
        .collect();
    let mut removed = false;
    for (id, path, kind) in data_files {
        if recorded.contains(id.as_str()) {
            continue;
        }
        if kind.is_dir() {
            tracing::warn!(path = %path.display(), "a directory named like a File's bytes; left as it is");
            continue;
        }
        // A link is removed itself, never what it points at.
        match fs::remove_file(&path) {
            Ok(()) => removed = true,
            Err(error) => {
                tracing::warn!(%error, path = %path.display(), "could not remove the bytes of a File never recorded; left for the next start");
            }
        }
    }
    if removed { sync_dir(files_dir) } else { Ok(()) }
}

/// Why a startup walk does not follow a symbolic link.
const SYMLINK_REASON: &str = "it is a symbolic link, and the startup walk never follows one";

/// Why an entry that should be a regular file cannot be read as one; `None` when it is one.
fn not_a_file(kind: fs::FileType) -> Option<&'static str> {
    if kind.is_file() {
        None
    } else if kind.is_dir() {
        Some("it is a directory, not a file")
    } else if kind.is_symlink() {
        Some(SYMLINK_REASON)
    } else {
        Some("it is not a regular file")
    }
}

/// Refuses a store directory (`uploads`, `files`) that is a symbolic link: the startup walk
/// follows no link, and every write would go through it.
fn refuse_link(dir: &Path) -> io::Result<()> {
    if fs::symlink_metadata(dir)?.file_type().is_symlink() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "{} is a symbolic link; the data directory's own directories must be directories (the startup walk follows no link)",
                dir.display()
            ),
        ));
    }
    Ok(())
}

/// Free space under which the health probe counts the disk as full: room for the records
/// of a few hundred changes, and less than most Parts. Counted as an unprivileged process
/// sees it (`df`'s "Avail"), without the blocks a file system keeps for root.
pub const PROBE_MIN_FREE_BYTES: u64 = 1024 * 1024;

/// Free inodes under which the health probe counts the disk as full (a file system that
/// does not count inodes is never full of them).
pub const PROBE_MIN_FREE_INODES: u64 = 64;

/// How long the health probe may take: a disk that does not answer within it is not usable.
pub const PROBE_DEADLINE: Duration = Duration::from_secs(2);

/// The health probe of a store directory: the disk holding `dir` has room (see
/// [`PROBE_MIN_FREE_BYTES`]), and a small file can be written and removed there.
fn probe_dir(dir: &Path, temp: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        let disk = rustix::fs::statvfs(dir).map_err(io::Error::from)?;
        let free = disk.f_bavail.saturating_mul(disk.f_frsize);
        let full = if free < PROBE_MIN_FREE_BYTES {
            Some(format!(
                "{free} bytes free, under the {PROBE_MIN_FREE_BYTES} the server needs"
            ))
        } else if disk.f_files > 0 && disk.f_favail < PROBE_MIN_FREE_INODES {
            Some(format!("{} inodes free", disk.f_favail))
        } else {
            None
        };
        if let Some(full) = full {
            return Err(io::Error::new(
                io::ErrorKind::StorageFull,
                format!("the disk of {} is full: {full}", dir.display()),
            ));
        }
    }
    let written = File::create(temp).and_then(|mut file| file.write_all(b"ok"));
    let removed = remove_if_present(temp);
    written.and(removed)
}

/// The entries of a directory of the store at startup, with temp files removed (and the
/// directory synced when any was): `(name, path, kind)` of every other entry whose name is
/// UTF-8, links included (the caller decides about them; nothing here follows one).
fn entries_kept(dir: &Path) -> io::Result<Vec<(String, PathBuf, fs::FileType)>> {
    let mut kept = Vec::new();
    let mut swept = false;
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let kind = entry.file_type()?;
        let path = entry.path();
        if remove_if_temp(&path, kind)? {
            swept = true;
            continue;
        }
        if let Some(name) = entry.file_name().to_str() {
            kept.push((name.to_owned(), path, kind));
        }
    }
    if swept {
        sync_dir(dir)?;
    }
    Ok(kept)
}

/// The name of an Upload's part log, beside its state file.
const PART_LOG: &str = "parts.log";

/// An Upload's part log, with a record a crash tore cut off (on disk too, so the next
/// append starts on a line of its own).
fn read_part_log(path: &Path) -> io::Result<Vec<u8>> {
    let mut log = match fs::read(path) {
        Ok(log) => log,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(error) => return Err(error),
    };
    if log.last().is_some_and(|&last| last != b'\n') {
        let whole = log.iter().rposition(|&b| b == b'\n').map_or(0, |at| at + 1);
        log.truncate(whole);
        let file = fs::OpenOptions::new().write(true).open(path)?;
        file.set_len(whole as u64)?;
        file.sync_all()?;
    }
    Ok(log)
}

/// A Part's bytes on their way to disk.
struct FileSink {
    /// Unbuffered: callers hand over large batches.
    file: Option<File>,
    temp: PathBuf,
    final_path: PathBuf,
    dir: PathBuf,
    written: u64,
}

impl DataSink for FileSink {
    fn write(&mut self, data: &[u8]) -> io::Result<()> {
        let file = self
            .file
            .as_mut()
            .ok_or_else(|| io::Error::other("sink already committed"))?;
        file.write_all(data)?;
        self.written += data.len() as u64;
        Ok(())
    }

    fn write_chunks(&mut self, chunks: &[Bytes]) -> io::Result<()> {
        let file = self
            .file
            .as_mut()
            .ok_or_else(|| io::Error::other("sink already committed"))?;
        let mut slices: Vec<IoSlice<'_>> = chunks.iter().map(|chunk| IoSlice::new(chunk)).collect();
        let mut slices = &mut slices[..];
        // `Write::write_all_vectored` is not stable yet: the same loop, by hand.
        while !slices.is_empty() {
            match file.write_vectored(slices) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(written) => {
                    self.written += written as u64;
                    IoSlice::advance_slices(&mut slices, written);
                }
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => return Err(error),
            }
        }
        Ok(())
    }

    fn commit(mut self: Box<Self>) -> io::Result<u64> {
        let file = self
            .file
            .take()
            .ok_or_else(|| io::Error::other("sink already committed"))?;
        file.sync_all()?;
        drop(file);
        fs::rename(&self.temp, &self.final_path)?;
        sync_dir(&self.dir)?;
        Ok(self.written)
    }
}

impl Drop for FileSink {
    fn drop(&mut self) {
        // Not committed (or the commit failed before the rename): the temp file is garbage.
        let _ = fs::remove_file(&self.temp);
    }
}

/// Reads several files one after the other, opening each only when it is reached.
struct ChainedFiles {
    paths: std::vec::IntoIter<PathBuf>,
    current: Option<File>,
}

impl ChainedFiles {
    fn new(paths: Vec<PathBuf>) -> Self {
        Self {
            paths: paths.into_iter(),
            current: None,
        }
    }
}

impl Read for ChainedFiles {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            if let Some(file) = &mut self.current {
                let n = file.read(buf)?;
                if n > 0 || buf.is_empty() {
                    return Ok(n);
                }
            }
            match self.paths.next() {
                Some(path) => self.current = Some(File::open(path)?),
                None => return Ok(0),
            }
        }
    }
}

/// Accepts only names made of `[A-Za-z0-9_-]`: ids minted by the ledger. Anything else is
/// refused before it can become part of a path.
fn safe_name(name: &str) -> io::Result<&str> {
    let safe = !name.is_empty()
        && name.len() <= 128
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if safe {
        Ok(name)
    } else {
        Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("refusing to use {name:?} as a file name"),
        ))
    }
}

/// Makes a directory's entries (creations, renames, removals) durable.
fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

fn remove_if_present(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(error) if error.kind() != io::ErrorKind::NotFound => Err(error),
        _ => Ok(()),
    }
}

/// Removes `path` (a directory entry of type `kind`) if it is a temp entry; says whether
/// it was. A link is removed itself, never what it points at.
fn remove_if_temp(path: &Path, kind: fs::FileType) -> io::Result<bool> {
    let is_temp = path
        .file_name()
        .and_then(|name| name.to_str())
        .is_some_and(|name| name.starts_with(TEMP_PREFIX));
    if is_temp {
        // `remove_dir_all` does not follow links inside the directory either.
        let removed = if kind.is_dir() {
            fs::remove_dir_all(path)
        } else {
            fs::remove_file(path)
        };
        removed.map_err(|error| {
            io::Error::new(
                error.kind(),
                format!("cannot remove the temp file {}: {error}", path.display()),
            )
        })?;
    }
    Ok(is_temp)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, DirStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = DirStore::open(dir.path()).unwrap();
        (dir, store)
    }

    fn temp_files(root: &Path) -> Vec<PathBuf> {
        let mut found = Vec::new();
        let mut stack = vec![root.to_path_buf()];
        while let Some(dir) = stack.pop() {
            for entry in fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                if path
                    .file_name()
                    .unwrap()
                    .to_str()
                    .unwrap()
                    .starts_with(TEMP_PREFIX)
                {
                    found.push(path.clone());
                }
                if path.is_dir() {
                    stack.push(path);
                }
            }
        }
        found
    }

    #[test]
    fn parts_are_invisible_until_committed_and_read_back_in_listed_order() {
        let (dir, store) = store();
        let upload = UploadId::new("upload_1");
        store.save_upload(&upload, b"{}").unwrap();
        for (id, data) in [("part_a", b"hello ".as_slice()), ("part_b", b"world")] {
            let mut sink = store.begin_part(&upload, &PartId::new(id)).unwrap();
            sink.write(data).unwrap();
            let final_path = dir.path().join("uploads/upload_1/parts").join(id);
            assert!(!final_path.exists(), "visible before commit");
            assert_eq!(sink.commit().unwrap(), data.len() as u64);
        }
        let loaded = store.load().unwrap();
        assert_eq!(
            loaded.uploads[0].parts,
            vec![PartId::new("part_a"), PartId::new("part_b")]
        );
        let mut content = String::new();
        store
            .open(&ContentSource::Parts {
                upload,
                parts: vec![PartId::new("part_b"), PartId::new("part_a")],
            })
            .unwrap()
            .read_to_string(&mut content)
            .unwrap();
        assert_eq!(content, "worldhello ");
    }

    #[test]
    fn chunks_written_together_land_in_order_and_count() {
        let (dir, store) = store();
        let upload = UploadId::new("upload_1");
        store.save_upload(&upload, b"{}").unwrap();
        let mut sink = store.begin_part(&upload, &PartId::new("part_a")).unwrap();
        let big: Bytes = (0..300_000_u32).map(|i| (i % 251) as u8).collect();
        let chunks = [
            Bytes::from_static(b"one "),
            big.clone(),
            Bytes::new(),
            Bytes::from_static(b" two"),
        ];
        sink.write_chunks(&chunks).unwrap();
        sink.write(b"!").unwrap();
        let expected = [b"one ".as_slice(), &big, b" two!"].concat();
        assert_eq!(sink.commit().unwrap(), expected.len() as u64);
        let stored = fs::read(dir.path().join("uploads/upload_1/parts/part_a")).unwrap();
        assert!(stored == expected, "the chunks are stored in order");
    }

    #[test]
    fn an_abandoned_sink_leaves_nothing() {
        let (dir, store) = store();
        let upload = UploadId::new("upload_1");
        store.save_upload(&upload, b"{}").unwrap();
        let mut sink = store.begin_part(&upload, &PartId::new("part_a")).unwrap();
        sink.write(b"partial").unwrap();
        drop(sink);
        assert!(temp_files(dir.path()).is_empty());
        assert!(store.load().unwrap().uploads[0].parts.is_empty());
    }

    #[test]
    fn load_sweeps_temp_files_and_uncommitted_uploads() {
        let (dir, store) = store();
        let upload = UploadId::new("upload_1");
        store.save_upload(&upload, b"state-1").unwrap();
        store.save_upload(&upload, b"state-2").unwrap();
        // What a crash mid-write leaves behind.
        let upload_dir = dir.path().join("uploads/upload_1");
        fs::write(upload_dir.join(".tmp-state.json.9"), b"half").unwrap();
        fs::create_dir_all(upload_dir.join("parts")).unwrap();
        fs::write(upload_dir.join("parts/.tmp-part_x.3"), b"half").unwrap();
        fs::create_dir_all(dir.path().join("uploads/upload_never_committed/parts")).unwrap();
        fs::write(dir.path().join("files/file-orphan.data"), b"bytes").unwrap();
        let loaded = store.load().unwrap();
        assert_eq!(loaded.uploads.len(), 1);
        assert_eq!(loaded.uploads[0].state, b"state-2");
        assert!(temp_files(dir.path()).is_empty());
        assert!(!dir.path().join("uploads/upload_never_committed").exists());
        assert!(!dir.path().join("files/file-orphan.data").exists());
    }

    #[test]
    fn files_round_trip_and_removal_is_complete() {
        let (_dir, store) = store();
        let file = FileId::new("file-1");
        let mut sink = store.begin_file_data(&file).unwrap();
        sink.write(b"direct").unwrap();
        sink.commit().unwrap();
        store.save_file(&file, b"{\"id\":\"file-1\"}").unwrap();
        let loaded = store.load().unwrap();
        assert_eq!(
            loaded.files,
            vec![StoredFile {
                id: file.clone(),
                path: store.files_dir().join("file-1.json"),
                record: b"{\"id\":\"file-1\"}".to_vec()
            }]
        );
        let mut content = Vec::new();
        store
            .open(&ContentSource::Direct(file.clone()))
            .unwrap()
            .read_to_end(&mut content)
            .unwrap();
        assert_eq!(content, b"direct");
        store.remove_file(&file).unwrap();
        assert!(store.load().unwrap().files.is_empty());
        assert!(store.open(&ContentSource::Direct(file)).is_err());
    }

    #[test]
    fn names_that_are_not_ids_never_become_paths() {
        let (_dir, store) = store();
        for evil in ["../escape", "a/b", "", ".tmp-x", "nul\0byte", "dots.."] {
            let error = store.save_upload(&UploadId::new(evil), b"{}").unwrap_err();
            assert_eq!(error.kind(), io::ErrorKind::InvalidInput, "{evil:?}");
        }
    }

    #[test]
    fn in_parallel_keeps_the_order_of_the_items() {
        let items: Vec<u32> = (0..1000).collect();
        let doubled = in_parallel(items, |n| u64::from(n) * 2);
        assert_eq!(doubled, (0..1000).map(|n| n * 2).collect::<Vec<u64>>());
        assert_eq!(in_parallel(Vec::<u32>::new(), |n| n), Vec::<u32>::new());
    }

    #[test]
    fn many_records_are_all_read_back_on_several_threads() {
        let (dir, store) = store();
        // Several batches, so several threads (each record costs fsyncs to write).
        let count = LOAD_BATCH * 3 + 7;
        for n in 0..count {
            let upload = UploadId::new(format!("upload_{n:05}"));
            store
                .save_upload(&upload, format!("state {n}").as_bytes())
                .unwrap();
            store.append_part(&upload, b"{}").unwrap();
            let mut sink = store.begin_part(&upload, &PartId::new("part_a")).unwrap();
            sink.write(b"x").unwrap();
            sink.commit().unwrap();
            let parts = dir
                .path()
                .join("uploads")
                .join(upload.as_str())
                .join("parts");
            fs::write(parts.join(format!(".tmp-part_b.{n}")), b"half").unwrap();
            let file = FileId::new(format!("file-{n:05}"));
            store
                .save_file(&file, format!("file {n}").as_bytes())
                .unwrap();
        }
        let loaded = store.load().unwrap();
        assert_eq!(loaded.uploads.len(), count);
        assert_eq!(loaded.files.len(), count);
        for (n, (upload, file)) in loaded.uploads.iter().zip(&loaded.files).enumerate() {
            assert_eq!(upload.id.as_str(), format!("upload_{n:05}"));
            assert_eq!(upload.state, format!("state {n}").as_bytes());
            assert_eq!(upload.part_log, b"{}\n");
            assert_eq!(upload.parts, vec![PartId::new("part_a")]);
            assert_eq!(file.record, format!("file {n}").as_bytes());
        }
        assert!(temp_files(dir.path()).is_empty());
    }

    #[test]
    fn removing_an_upload_removes_its_parts() {
        let (dir, store) = store();
        let upload = UploadId::new("upload_1");
        store.save_upload(&upload, b"{}").unwrap();
        let mut sink = store.begin_part(&upload, &PartId::new("part_a")).unwrap();
        sink.write(b"x").unwrap();
        sink.commit().unwrap();
        store
            .remove_parts(&upload, &[PartId::new("part_a")])
            .unwrap();
        assert!(store.load().unwrap().uploads[0].parts.is_empty());
        store.remove_upload(&upload).unwrap();
        assert!(store.load().unwrap().uploads.is_empty());
        assert!(!dir.path().join("uploads/upload_1").exists());
    }
}
