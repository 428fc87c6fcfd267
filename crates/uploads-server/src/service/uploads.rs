//! The handlers of `/uploads`: create, add a Part, complete, cancel.

use std::io;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::{Request, Response};
use http_body::Body;
use uploads_core::ledger::{CompletePlan, Owner, Planned, Verification};
use uploads_core::rejection::Rejection;
use uploads_core::types::{PartId, UploadId};

use super::forms::read_form;
use super::{Answer, Service, json, storage_rejection};
use crate::body::ResponseBody;
use crate::metrics::UploadEvent;
use crate::records::Records;
use crate::records::{MutationError, NewBytes, Scope};
use crate::stats::InFlight;
use uploads_core::forms::PartFormReader;
use uploads_core::forms::form_head;

impl<R: Records> Service<R> {
    /// `POST /uploads`.
    pub(super) async fn create_upload(
        self: &Arc<Self>,
        owner: Owner,
        body: Bytes,
    ) -> Answer<Response<ResponseBody>> {
        let created = self
            .mutate(self.create_scope(&owner), move |ledger, now, ids| {
                ledger.create_upload(&owner, &body, now, ids)
            })
            .await?;
        self.metrics.uploads(UploadEvent::Created, 1);
        json(&created)
    }

    /// `POST /uploads/{id}/parts`: streams the `data` field to the store, then records the Part.
    pub(super) async fn add_part<B>(
        self: &Arc<Self>,
        owner: &Owner,
        upload_id: &UploadId,
        request: Request<B>,
    ) -> Answer<Response<ResponseBody>>
    where
        B: Body<Data = Bytes, Error = hyper::Error> + Send + Unpin + 'static,
    {
        let _in_flight = InFlight::enter(&self.stats);
        let position = uploads_core::api::part_index(request.headers());
        let slot = self
            .read(new_part(upload_id, None, position), |ledger, now| {
                ledger.check_add_part(owner, upload_id, now, &mut self.ids())
            })
            .await?;
        let max_part_bytes = self.config.limits.max_part_bytes;
        let store = Arc::clone(&self.bytes);
        let (upload, part) = (slot.upload_id().clone(), slot.part_id().clone());
        // Failed unless committed below: then the md5 chain skips this Part.
        let hashing = Arc::clone(&self.md5_ahead).started(&upload, &part, position);
        self.intend(NewBytes::Part(&upload, &part)).await?;
        let (content_type, declared) = form_head(request.headers());
        let form = PartFormReader::open(content_type, declared, max_part_bytes)?;
        let (sink_upload, sink_part) = (upload.clone(), part.clone());
        let ((), writer) = read_form(
            form,
            request.into_body(),
            self.config.body_pace,
            move || store.begin_part(&sink_upload, &sink_part),
        )
        .await?;
        let part_bytes = writer.commit().await?;
        let owner = owner.clone();
        let planned = self
            .mutate(
                new_part(&upload, Some(&part), position),
                move |ledger, now, _| ledger.add_part(&owner, &slot, part_bytes, now),
            )
            .await;
        let part = match planned {
            Ok(part) => part,
            Err(MutationError::Refused(rejection)) => {
                // The Upload moved on while the bytes streamed: they are nobody's.
                let store = Arc::clone(&self.bytes);
                let _ =
                    tokio::task::spawn_blocking(move || store.remove_parts(&upload, &[part])).await;
                return Err(rejection);
            }
            Err(MutationError::Failed(rejection)) => return Err(rejection),
        };
        self.stats.count_stored();
        hashing.committed();
        json(&part)
    }

    /// `POST /uploads/{id}/complete`, with the md5 (if asked for) computed outside the lock.
    pub(super) async fn complete(
        self: &Arc<Self>,
        owner: &Owner,
        upload_id: &UploadId,
        body: &[u8],
    ) -> Answer<Response<ResponseBody>> {
        let plan = self
            .read(Scope::Upload(upload_id.clone()), |ledger, now| {
                ledger.plan_complete(owner, upload_id, body, now)
            })
            .await?;
        let verification = match plan {
            CompletePlan::Replay(upload) => return json(&upload),
            CompletePlan::Verify(verification) => verification,
        };
        if let Err(missing) = self.check_parts_stored(&verification).await {
            return self
                .answer_after_race(owner, upload_id, body, missing)
                .await;
        }
        // The md5 is computed outside the lock: it reads every listed byte, and
        // `finish_complete` checks everything again.
        let md5 = if verification.expected_md5().is_some() {
            let listed = verification
                .parts()
                .iter()
                .map(|part| part.id.clone())
                .collect();
            let hashing = Instant::now();
            let digest = self.md5_ahead.digest(upload_id, listed).await;
            self.metrics.md5_wait(hashing.elapsed());
            match digest {
                Ok(digest) => Some(digest),
                Err(error) => {
                    tracing::error!(%error, "reading parts for the md5 failed");
                    let failed =
                        storage_rejection(&error, "The server could not read the Upload's parts.");
                    return self.answer_after_race(owner, upload_id, body, failed).await;
                }
            }
        } else {
            None
        };
        let owner = owner.clone();
        let (changed, completed) = self
            .mutate(Scope::Upload(upload_id.clone()), move |ledger, now, ids| {
                ledger
                    .finish_complete(&owner, &verification, md5, now, ids)
                    .map(noting_change)
            })
            .await?;
        if changed {
            self.metrics.uploads(UploadEvent::Completed, 1);
        }
        self.md5_ahead.forget(upload_id);
        json(&completed)
    }

    /// The answer to a complete whose Parts turned out missing or unreadable: a cancel or
    /// another complete that won the race may have removed them, and the loser gets the
    /// answer it would get had it arrived second (400, or the replayed Upload). The winner
    /// holds the Upload's lock until its change is applied: wait for it, then ask again.
    /// When nothing won, `failed` is the answer.
    async fn answer_after_race(
        &self,
        owner: &Owner,
        upload_id: &UploadId,
        body: &[u8],
        failed: Rejection,
    ) -> Answer<Response<ResponseBody>> {
        self.records.settled(upload_id.as_str()).await;
        let plan = self
            .read(Scope::Upload(upload_id.clone()), |ledger, now| {
                ledger.plan_complete(owner, upload_id, body, now)
            })
            .await?;
        match plan {
            CompletePlan::Replay(upload) => json(&upload),
            CompletePlan::Verify(_) => Err(failed),
        }
    }

    /// Refuses (400 `part_ids`, the Upload unchanged) a complete listing Parts whose bytes
    /// are gone, so that no File is acknowledged that could never be read.
    async fn check_parts_stored(&self, verification: &Verification) -> Answer<()> {
        let upload = verification.upload_id().clone();
        let listed: Vec<PartId> = verification
            .parts()
            .iter()
            .map(|part| part.id.clone())
            .collect();
        let store = Arc::clone(&self.bytes);
        let missing = tokio::task::spawn_blocking(move || store.missing_parts(&upload, &listed))
            .await
            .map_err(io::Error::other)
            .and_then(|missing| missing)
            .map_err(|error| {
                tracing::error!(%error, "checking that the listed Parts are stored failed");
                storage_rejection(&error, "The server could not check the Upload's parts.")
            })?;
        if missing.is_empty() {
            Ok(())
        } else {
            tracing::error!(upload = %verification.upload_id(), ?missing, "listed Parts' bytes are gone");
            Err(Rejection::parts_not_stored(&missing))
        }
    }

    /// `POST /uploads/{id}/cancel`; the Upload's hashing-ahead chain goes with it.
    pub(super) async fn cancel_upload(
        self: &Arc<Self>,
        owner: Owner,
        upload_id: UploadId,
    ) -> Answer<Response<ResponseBody>> {
        let id = upload_id.clone();
        let (changed, cancelled) = self
            .mutate(Scope::Upload(upload_id.clone()), move |ledger, now, _| {
                ledger.cancel_upload(&owner, &id, now).map(noting_change)
            })
            .await?;
        if changed {
            self.metrics.uploads(UploadEvent::Cancelled, 1);
        }
        self.md5_ahead.forget(&upload_id);
        json(&cancelled)
    }
}

/// A plan whose answer also says whether it changes anything (a replay, an idempotent
/// retry, does not), so that only real transitions are counted.
fn noting_change<T>(planned: Planned<T>) -> Planned<(bool, T)> {
    Planned {
        response: (planned.change.is_some(), planned.response),
        change: planned.change,
    }
}

/// The records adding a Part reads: the Upload's, with its Parts' tally, and the slot's
/// (recorded at `position` in the file, when its request named one).
fn new_part(upload: &UploadId, part: Option<&PartId>, position: Option<u32>) -> Scope {
    Scope::NewPart {
        upload: upload.clone(),
        part: part.cloned(),
        position,
    }
}
