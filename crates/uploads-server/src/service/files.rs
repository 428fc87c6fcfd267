//! The handlers of `/files`: list, retrieve, delete, download, and `POST /files`.

use std::io::{self, Read};
use std::sync::Arc;

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use http::{HeaderValue, Request, Response};
use http_body::Body;
use tokio::sync::mpsc;
use uploads_core::api::parse_list_files_query;
use uploads_core::ledger::{FileRecord, Owner};
use uploads_core::types::FileId;

use super::forms::read_form;
use super::{Answer, Service, json, storage_rejection};
use crate::body::{ResponseBody, channel_body};
use crate::byte_store::ContentSource;
use crate::readers::ReadGuard;
use crate::records::Records;
use crate::records::{MutationError, NewBytes, Scope};
use crate::stats::Downloading;
use uploads_core::buffer::BufferPool;
use uploads_core::forms::FileFormReader;
use uploads_core::forms::form_head;

/// Chunks of File content read from disk per step of a download.
const DOWNLOAD_CHUNK: usize = 256 * 1024;
/// Chunk buffers a download keeps for reuse: the chunks its channel and hyper may hold.
const DOWNLOAD_CHUNKS_IDLE: usize = 8;

impl<R: Records> Service<R> {
    /// `GET /files?{query}`.
    pub(super) async fn list_files(
        &self,
        owner: &Owner,
        query: &str,
    ) -> Answer<Response<ResponseBody>> {
        let query = parse_list_files_query(query)?;
        let scope = Scope::List {
            owner: owner.as_str().to_owned(),
            query: query.clone(),
        };
        json(
            &self
                .read(scope, |ledger, now| ledger.list_files(owner, &query, now))
                .await?,
        )
    }

    /// `GET /files/{id}`.
    pub(super) async fn retrieve_file(
        &self,
        owner: &Owner,
        file_id: &FileId,
    ) -> Answer<Response<ResponseBody>> {
        json(
            &self
                .read(Scope::File(file_id.clone()), |ledger, now| {
                    ledger.retrieve_file(owner, file_id, now)
                })
                .await?,
        )
    }

    /// `DELETE /files/{id}`.
    pub(super) async fn delete_file(
        self: &Arc<Self>,
        owner: Owner,
        file_id: FileId,
    ) -> Answer<Response<ResponseBody>> {
        json(
            &self
                .mutate(Scope::File(file_id.clone()), move |ledger, now, _| {
                    ledger.delete_file(&owner, &file_id, now)
                })
                .await?,
        )
    }

    /// `GET /files/{id}/content`.
    pub(super) async fn download_file(
        &self,
        owner: &Owner,
        file_id: &FileId,
    ) -> Answer<Response<ResponseBody>> {
        // The read is registered while the ledger is held: a delete planned after this
        // leaves the Parts in place until the download ends.
        let (record, guard) = self
            .read(Scope::File(file_id.clone()), |ledger, now| {
                let record = ledger.file_manifest(owner, file_id, now)?.clone();
                let guard = record
                    .upload_id
                    .as_ref()
                    .and_then(|upload| self.records.enter_download(upload));
                Ok((record, guard))
            })
            .await?;
        self.download(&record, guard).await
    }

    /// Streams a File's bytes. The content is opened before answering, so bytes that cannot
    /// be read are a 500, not a 200 cut short.
    async fn download(
        &self,
        record: &FileRecord,
        guard: Option<ReadGuard>,
    ) -> Answer<Response<ResponseBody>> {
        let source = match &record.upload_id {
            Some(upload) => ContentSource::Parts {
                upload: upload.clone(),
                parts: record.part_ids.clone(),
            },
            None => ContentSource::Direct(record.file.id.clone()),
        };
        let store = Arc::clone(&self.bytes);
        let reader = tokio::task::spawn_blocking(move || store.open(&source))
            .await
            .map_err(io::Error::other)
            .and_then(|reader| reader)
            .map_err(|error| {
                tracing::error!(%error, file = %record.file.id, "a File's bytes cannot be read");
                storage_rejection(&error, "The server could not read the File's content.")
            })?;
        let (sender, receiver) = mpsc::channel(4);
        let downloading = Downloading::enter(&self.stats);
        tokio::spawn(async move {
            stream_content(reader, sender).await;
            drop(guard);
            drop(downloading);
        });
        let mut response = Response::new(channel_body(receiver));
        let headers = response.headers_mut();
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/octet-stream"),
        );
        headers.insert(CONTENT_LENGTH, HeaderValue::from(record.file.bytes));
        Ok(response)
    }

    /// `POST /files`: streams the `file` field to the store, then records the File.
    pub(super) async fn create_file<B>(
        self: &Arc<Self>,
        owner: &Owner,
        request: Request<B>,
    ) -> Answer<Response<ResponseBody>>
    where
        B: Body<Data = Bytes, Error = hyper::Error> + Send + Unpin + 'static,
    {
        let (_, declared) = form_head(request.headers());
        // Over a quota, refused from the head: no `100 Continue`, no byte of the body read.
        let file_id = self
            .read(self.create_scope(owner), |ledger, now| {
                ledger.check_create_file(owner, declared, now)?;
                ledger.new_file_id(&mut self.ids())
            })
            .await?;
        self.intend(NewBytes::File(&file_id)).await?;
        let (content_type, declared) = form_head(request.headers());
        let form = FileFormReader::open(content_type, declared)?;
        let store = Arc::clone(&self.bytes);
        let id = file_id.clone();
        let (form, writer) = read_form(
            form,
            request.into_body(),
            self.config.body_pace,
            move || store.begin_file_data(&id),
        )
        .await?;
        let bytes = writer.commit().await?;
        let (owner, id) = (owner.clone(), file_id.clone());
        let planned = self
            .mutate(self.create_scope(&owner), move |ledger, now, _| {
                ledger.create_file(&owner, &id, form.into_new_file(bytes), now)
            })
            .await;
        match planned {
            Ok(file) => json(&file),
            Err(MutationError::Refused(rejection)) => {
                // Refused after the bytes were stored: they are nobody's.
                let store = Arc::clone(&self.bytes);
                let _ = tokio::task::spawn_blocking(move || store.remove_file_data(&file_id)).await;
                Err(rejection)
            }
            Err(MutationError::Failed(rejection)) => Err(rejection),
        }
    }
}

/// Reads a File's bytes into the response channel, one chunk per blocking task: a download
/// whose client reads slowly waits here, on the runtime, not on a blocking thread.
async fn stream_content(reader: Box<dyn Read + Send>, sender: mpsc::Sender<io::Result<Bytes>>) {
    let mut reader = reader;
    // A chunk's buffer comes back once hyper has sent it: no allocation per chunk.
    let chunks = BufferPool::new(DOWNLOAD_CHUNK, DOWNLOAD_CHUNKS_IDLE);
    loop {
        let pool = chunks.clone();
        let read = tokio::task::spawn_blocking(move || {
            let read = pool.fill(|buffer| reader.read(buffer));
            (reader, read)
        })
        .await;
        match read {
            Ok((back, Ok(bytes))) if !bytes.is_empty() => {
                reader = back;
                if sender.send(Ok(bytes)).await.is_err() {
                    return; // the client went away
                }
            }
            Ok((_, Ok(_))) => return, // the end
            Ok((_, Err(error))) => {
                let _ = sender.send(Err(error)).await;
                return;
            }
            Err(error) => {
                let _ = sender.send(Err(io::Error::other(error))).await;
                return;
            }
        }
    }
}
