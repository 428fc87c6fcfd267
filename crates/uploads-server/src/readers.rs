//! Downloads in flight, per Upload, so that removing Parts (a File deleted or expired while
//! someone downloads it) waits for the last reader instead of cutting a 200 short.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use uploads_core::types::{PartId, UploadId};

use crate::byte_store::ByteStore;

/// The readers of each Upload's Parts, and the removals waiting for them.
pub(crate) struct Readers {
    uploads: Mutex<HashMap<UploadId, Reading>>,
    store: Arc<dyn ByteStore>,
}

#[derive(Default)]
struct Reading {
    readers: usize,
    deferred: Vec<PartId>,
}

impl Readers {
    pub(crate) fn new(store: Arc<dyn ByteStore>) -> Self {
        Self {
            uploads: Mutex::new(HashMap::new()),
            store,
        }
    }

    fn uploads(&self) -> MutexGuard<'_, HashMap<UploadId, Reading>> {
        self.uploads.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A download of `upload`'s Parts starts; it ends when the guard is dropped.
    pub(crate) fn enter(self: &Arc<Self>, upload: &UploadId) -> ReadGuard {
        self.uploads().entry(upload.clone()).or_default().readers += 1;
        ReadGuard {
            readers: Arc::clone(self),
            upload: upload.clone(),
        }
    }

    /// Removes `parts` now, or when the last download of `upload` ends if one is in flight.
    pub(crate) fn remove_parts(&self, upload: &UploadId, parts: &[PartId]) -> std::io::Result<()> {
        {
            let mut uploads = self.uploads();
            if let Some(reading) = uploads.get_mut(upload) {
                reading.deferred.extend_from_slice(parts);
                return Ok(());
            }
        }
        self.store.remove_parts(upload, parts)
    }
}

/// One download in flight; the deferred removals run when the last one is dropped.
pub(crate) struct ReadGuard {
    readers: Arc<Readers>,
    upload: UploadId,
}

impl Drop for ReadGuard {
    fn drop(&mut self) {
        let deferred = {
            let mut uploads = self.readers.uploads();
            let Some(reading) = uploads.get_mut(&self.upload) else {
                return;
            };
            reading.readers -= 1;
            if reading.readers > 0 {
                return;
            }
            uploads
                .remove(&self.upload)
                .map(|reading| reading.deferred)
                .unwrap_or_default()
        };
        if deferred.is_empty() {
            return;
        }
        let (store, upload) = (Arc::clone(&self.readers.store), self.upload.clone());
        let remove = move || {
            if let Err(error) = store.remove_parts(&upload, &deferred) {
                tracing::warn!(%error, %upload, "could not remove Parts after their last download; left for recovery");
            }
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => drop(runtime.spawn_blocking(remove)),
            Err(_) => remove(),
        }
    }
}
