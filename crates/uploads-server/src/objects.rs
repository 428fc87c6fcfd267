//! Bytes in object storage (S3, MinIO, R2, GCS, Azure, or `file://`), through the
//! `object_store` crate: the byte side of the [`Store`] seam for the scale-out backend,
//! whose records live in PostgreSQL (the `pg` module).
//!
//! One object per Part (`<prefix>/uploads/<upload id>/<part id>`) and per `POST /files`
//! File (`<prefix>/files/<file id>`). A Part is streamed: up to 5 MiB are
//! held and sent with one `put`; past that, a multipart upload sends 5 MiB
//! pieces, so memory per Part stays bounded whatever its size. An object appears only when
//! its sink commits; an abandoned sink aborts its multipart upload. Reading streams the
//! objects in order.
//!
//! The [`Store`] methods block: the service calls them on blocking threads, and they wait
//! on the runtime's handle there.

use std::io::{self, Read};
use std::sync::Arc;

use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload, WriteMultipart};
use tokio::runtime::Handle;
use uploads_core::types::{FileId, PartId, UploadId};

use crate::store::{ContentSource, DataSink, Store, StoredState};

/// Bytes held before a Part's sink switches from one `put` to a multipart upload (S3's
/// smallest multipart piece).
const SMALL_OBJECT: usize = 5 * 1024 * 1024;
/// Multipart pieces of one Part in flight at once.
const PIECES_IN_FLIGHT: usize = 2;

/// The key of a Part's object, relative to the store's prefix.
pub(crate) fn part_key(upload: &UploadId, part: &PartId) -> String {
    format!("uploads/{upload}/{part}")
}

/// The key of a `POST /files` File's object, relative to the store's prefix.
pub(crate) fn file_key(file: &FileId) -> String {
    format!("files/{file}")
}

/// Object storage holding the bytes of Parts and Files.
pub struct ObjectBytes {
    store: Arc<dyn ObjectStore>,
    prefix: Path,
    handle: Handle,
}

impl std::fmt::Debug for ObjectBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObjectBytes")
            .field("store", &self.store.to_string())
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl ObjectBytes {
    /// Opens `url` (`s3://bucket/prefix`, `gs://...`, `az://...`, `file:///dir`), configured
    /// from `options` (the process environment's `AWS_*`, `GOOGLE_*`, `AZURE_*` names, as
    /// `object_store` reads them), on the current runtime.
    pub fn open<K: AsRef<str>, V: Into<String>>(
        url: &str,
        options: impl IntoIterator<Item = (K, V)>,
    ) -> io::Result<Self> {
        let parsed = url::Url::parse(url).map_err(|error| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("the object store URL {url:?} is not valid: {error}"),
            )
        })?;
        let (store, prefix) = object_store::parse_url_opts(&parsed, options).map_err(|error| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("cannot configure the object store {url}: {error}"),
            )
        })?;
        Ok(Self {
            store: Arc::from(store),
            prefix,
            handle: Handle::try_current().map_err(io::Error::other)?,
        })
    }

    fn path(&self, key: &str) -> Path {
        key.split('/')
            .fold(self.prefix.clone(), |path, part| path.clone().join(part))
    }

    /// Whether the bucket answers now (a list of at most one object under the prefix); the
    /// error says why not.
    pub async fn check(&self) -> io::Result<()> {
        let mut listing = self.store.list(Some(&self.prefix));
        match listing.next().await {
            Some(Err(error)) => Err(io::Error::other(format!(
                "cannot reach the object store {}: {error}",
                self.store
            ))),
            _ => Ok(()),
        }
    }

    /// Deletes the object of `key`; one that is already gone counts as deleted.
    pub async fn delete(&self, key: &str) -> io::Result<()> {
        match self.store.delete(&self.path(key)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(error) => Err(io::Error::other(error)),
        }
    }

    fn block_on<T>(&self, future: impl Future<Output = object_store::Result<T>>) -> io::Result<T> {
        self.handle.block_on(future).map_err(io::Error::other)
    }

    fn sink(&self, key: &str) -> Box<dyn DataSink> {
        Box::new(ObjectSink {
            store: Arc::clone(&self.store),
            path: self.path(key),
            handle: self.handle.clone(),
            state: SinkState::Small(Vec::new()),
            written: 0,
        })
    }
}

impl Store for ObjectBytes {
    fn begin_part(&self, upload: &UploadId, part: &PartId) -> io::Result<Box<dyn DataSink>> {
        Ok(self.sink(&part_key(upload, part)))
    }

    fn begin_file_data(&self, file: &FileId) -> io::Result<Box<dyn DataSink>> {
        Ok(self.sink(&file_key(file)))
    }

    fn save_upload(&self, _: &UploadId, _: &[u8]) -> io::Result<()> {
        Err(records_elsewhere())
    }

    fn append_part(&self, _: &UploadId, _: &[u8]) -> io::Result<()> {
        Err(records_elsewhere())
    }

    fn save_file(&self, _: &FileId, _: &[u8]) -> io::Result<()> {
        Err(records_elsewhere())
    }

    fn remove_file(&self, file: &FileId) -> io::Result<()> {
        self.handle.block_on(self.delete(&file_key(file)))
    }

    fn remove_parts(&self, upload: &UploadId, parts: &[PartId]) -> io::Result<()> {
        for part in parts {
            self.handle.block_on(self.delete(&part_key(upload, part)))?;
        }
        Ok(())
    }

    fn remove_upload(&self, _: &UploadId) -> io::Result<()> {
        // The records say which Parts an Upload had: they doom each one (see `crate::pg`).
        Err(records_elsewhere())
    }

    fn open(&self, source: &ContentSource) -> io::Result<Box<dyn Read + Send>> {
        let keys: Vec<Path> = match source {
            ContentSource::Direct(file) => vec![self.path(&file_key(file))],
            ContentSource::Parts { upload, parts } => parts
                .iter()
                .map(|part| self.path(&part_key(upload, part)))
                .collect(),
        };
        // Every object must be there now: missing bytes are a 500 before the 200 is sent.
        for key in &keys {
            self.block_on(self.store.head(key))?;
        }
        Ok(Box::new(ObjectReader {
            store: Arc::clone(&self.store),
            handle: self.handle.clone(),
            keys: keys.into_iter(),
            current: None,
            pending: Bytes::new(),
        }))
    }

    fn load(&self) -> io::Result<StoredState> {
        Err(records_elsewhere())
    }

    fn probe(&self) -> io::Result<()> {
        self.handle.block_on(self.check())
    }

    fn quarantine_upload(&self, _: &UploadId) -> io::Result<String> {
        Err(records_elsewhere())
    }

    fn quarantine_file(&self, _: &FileId) -> io::Result<String> {
        Err(records_elsewhere())
    }
}

fn records_elsewhere() -> io::Error {
    io::Error::new(
        io::ErrorKind::Unsupported,
        "the records of the scale-out backend live in PostgreSQL, not in the object store",
    )
}

enum SinkState {
    /// Bytes held until they are more than a small object.
    Small(Vec<u8>),
    /// A multipart upload under way.
    Multipart(WriteMultipart),
    /// Committed or failed.
    Done,
}

/// A Part's bytes on their way to the bucket.
struct ObjectSink {
    store: Arc<dyn ObjectStore>,
    path: Path,
    handle: Handle,
    state: SinkState,
    written: u64,
}

impl DataSink for ObjectSink {
    fn write(&mut self, data: &[u8]) -> io::Result<()> {
        self.written += data.len() as u64;
        match &mut self.state {
            SinkState::Small(held) if held.len() + data.len() <= SMALL_OBJECT => {
                held.extend_from_slice(data);
                Ok(())
            }
            SinkState::Small(held) => {
                let held = std::mem::take(held);
                let upload = self
                    .handle
                    .block_on(self.store.put_multipart(&self.path))
                    .map_err(io::Error::other)?;
                let mut writer = WriteMultipart::new_with_chunk_size(upload, SMALL_OBJECT);
                writer.write(&held);
                writer.write(data);
                self.state = SinkState::Multipart(writer);
                Ok(())
            }
            SinkState::Multipart(writer) => {
                self.handle
                    .block_on(writer.wait_for_capacity(PIECES_IN_FLIGHT))
                    .map_err(io::Error::other)?;
                writer.write(data);
                Ok(())
            }
            SinkState::Done => Err(io::Error::other("sink already committed")),
        }
    }

    fn commit(mut self: Box<Self>) -> io::Result<u64> {
        match std::mem::replace(&mut self.state, SinkState::Done) {
            SinkState::Small(held) => {
                let payload = PutPayload::from(Bytes::from(held));
                self.handle
                    .block_on(self.store.put(&self.path, payload))
                    .map_err(io::Error::other)?;
            }
            SinkState::Multipart(writer) => {
                self.handle
                    .block_on(writer.finish())
                    .map_err(io::Error::other)?;
            }
            SinkState::Done => return Err(io::Error::other("sink already committed")),
        }
        Ok(self.written)
    }
}

impl Drop for ObjectSink {
    fn drop(&mut self) {
        // Not committed: a multipart upload's pieces go (without blocking: a sink may be
        // dropped on the runtime).
        if let SinkState::Multipart(writer) = std::mem::replace(&mut self.state, SinkState::Done) {
            self.handle.spawn(async move {
                let _ = writer.abort().await;
            });
        }
    }
}

/// Objects read one after the other, each opened when it is reached.
struct ObjectReader {
    store: Arc<dyn ObjectStore>,
    handle: Handle,
    keys: std::vec::IntoIter<Path>,
    current: Option<BoxStream<'static, object_store::Result<Bytes>>>,
    pending: Bytes,
}

impl Read for ObjectReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            if !self.pending.is_empty() || buf.is_empty() {
                let n = self.pending.len().min(buf.len());
                buf[..n].copy_from_slice(&self.pending.split_to(n));
                return Ok(n);
            }
            if let Some(stream) = &mut self.current {
                match self.handle.block_on(stream.next()) {
                    Some(chunk) => {
                        self.pending = chunk.map_err(io::Error::other)?;
                        continue;
                    }
                    None => self.current = None,
                }
            }
            let Some(key) = self.keys.next() else {
                return Ok(0);
            };
            let result = self
                .handle
                .block_on(self.store.get(&key))
                .map_err(io::Error::other)?;
            self.current = Some(result.into_stream());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_services as services;

    /// The emulator's bucket of a fresh namespace, opened as `uploads serve` opens it.
    fn bucket() -> (services::Namespace, ObjectBytes) {
        let namespace = services::Services::get().fresh();
        let bytes = ObjectBytes::open(&namespace.object_store, namespace.s3_env()).unwrap();
        (namespace, bytes)
    }

    fn pattern(len: usize, seed: u8) -> Vec<u8> {
        (0..len)
            .map(|i| (i % 251) as u8 ^ seed)
            .collect::<Vec<u8>>()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn parts_small_and_multipart_read_back_in_listed_order_and_only_once_committed() {
        let (namespace, bytes) = bucket();
        bytes.check().await.unwrap();
        let bytes = Arc::new(bytes);
        let upload = UploadId::new("upload_1");
        let small = pattern(1000, 1);
        // Past one put: a multipart upload of three pieces, written in uneven chunks.
        let large = pattern(2 * SMALL_OBJECT + 12_345, 2);
        let (store, upload_id, expected) = (
            Arc::clone(&bytes),
            upload.clone(),
            (small.clone(), large.clone()),
        );
        let content = tokio::task::spawn_blocking(move || {
            for (part, data) in [("part_s", &expected.0), ("part_l", &expected.1)] {
                let mut sink = store.begin_part(&upload_id, &PartId::new(part)).unwrap();
                for chunk in data.chunks(700_001) {
                    sink.write(chunk).unwrap();
                }
                assert_eq!(sink.commit().unwrap(), data.len() as u64);
            }
            let mut abandoned = store
                .begin_part(&upload_id, &PartId::new("part_x"))
                .unwrap();
            abandoned.write(&pattern(SMALL_OBJECT + 1, 3)).unwrap();
            drop(abandoned);
            let mut content = Vec::new();
            store
                .open(&ContentSource::Parts {
                    upload: upload_id.clone(),
                    parts: vec![PartId::new("part_l"), PartId::new("part_s")],
                })
                .unwrap()
                .read_to_end(&mut content)
                .unwrap();
            let missing = store.open(&ContentSource::Parts {
                upload: upload_id,
                parts: vec![PartId::new("part_x")],
            });
            assert!(missing.is_err(), "an abandoned Part has no object");
            content
        })
        .await
        .unwrap();
        assert_eq!(content.len(), large.len() + small.len());
        assert!(content[..large.len()] == large[..] && content[large.len()..] == small[..]);
        let mut keys = services::Services::get().list_objects(&namespace.bucket);
        keys.sort();
        assert_eq!(
            keys,
            vec![
                "objects/uploads/upload_1/part_l",
                "objects/uploads/upload_1/part_s"
            ]
        );
        bytes.delete("uploads/upload_1/part_s").await.unwrap();
        bytes.delete("uploads/upload_1/part_s").await.unwrap();
        assert_eq!(
            services::Services::get().list_objects(&namespace.bucket),
            vec!["objects/uploads/upload_1/part_l"]
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_missing_bucket_is_named() {
        let namespace = services::Services::get().fresh();
        let url = namespace
            .object_store
            .replace(&namespace.bucket, "no-such-bucket");
        let bytes = ObjectBytes::open(&url, namespace.s3_env()).unwrap();
        let message = bytes.check().await.unwrap_err().to_string();
        assert!(
            message.contains("cannot reach the object store"),
            "{message}"
        );
    }
}
