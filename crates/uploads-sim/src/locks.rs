//! The team backend's transactions held open: an instance frozen inside one keeps its row
//! lock; a request waits for a lock at most the database's `lock_timeout` (today's rules),
//! and the database ends a session idle inside a transaction; a thawed instance commits, or
//! finds its session ended.

use uploads_core::ledger::Step;
use uploads_core::rejection::Rejection;
use uploads_core::types::UploadId;

use crate::oracle::Acknowledged;
use crate::scenario::Rules;
use crate::server::{IDLE_IN_TRANSACTION_MS, Mutation, Store};
use crate::world::{Event, Message, World, rejection_response, seconds, trace};

/// A transaction frozen with its lock: what it will commit, and who waits for its answer.
pub struct OpenTransaction {
    pub(crate) upload: UploadId,
    pub(crate) steps: Vec<Step>,
    pub(crate) answer: Vec<u8>,
    pub(crate) message: Message,
    pub(crate) acknowledged: Acknowledged,
    /// The time the transaction decided by.
    pub(crate) decided_at: u64,
    /// The database ended its session: its commit will fail.
    pub(crate) ended: bool,
}

/// A request waiting for a row lock.
pub struct Waiter {
    pub(crate) instance: usize,
    pub(crate) message: Message,
    pub(crate) upload: UploadId,
}

impl World {
    /// Freezes `instance` inside the transaction `held`, holding its row lock.
    pub(crate) fn freeze(&mut self, instance: usize, held: OpenTransaction) -> Mutation {
        let for_ever = self.rng.chance(0.3);
        let until = (!for_ever).then(|| self.now + self.rng.range(1_000, 20 * 60 * 1000));
        let Store::Shared {
            rows, open, next, ..
        } = &mut self.store
        else {
            unreachable!("the team backend")
        };
        let transaction = *next;
        *next += 1;
        let upload = held.upload.clone();
        rows.locks.insert(upload.clone(), transaction);
        open.insert(transaction, held);
        self.instances[instance].frozen = Some((until, transaction));
        trace!(
            self,
            "instance {instance} freezes inside a transaction holding {upload}'s lock, {}",
            until.map_or("for ever".to_owned(), |until| format!(
                "until {}",
                seconds(until)
            ))
        );
        if let Some(until) = until {
            self.at(until, Event::Thaw(instance));
        }
        if self.scenario.rules == Rules::Current {
            self.after(IDLE_IN_TRANSACTION_MS, Event::SessionEnded(transaction));
        }
        Mutation::Frozen
    }

    pub(crate) fn thaw(&mut self, instance: usize) {
        let Some((_, transaction)) = self.instances[instance].frozen.take() else {
            return;
        };
        trace!(self, "instance {instance} thaws");
        let Store::Shared { open, rows, .. } = &mut self.store else {
            return;
        };
        if let Some(held) = open.remove(&transaction) {
            if held.ended {
                let rejection = Rejection::unavailable(
                    "The database ended the transaction. Retry the request.",
                );
                self.reply(&held.message, Ok(rejection_response(&rejection)));
            } else {
                rows.locks.remove(&held.upload);
                self.commit_rows(&held.steps, false);
                self.acknowledge(held.decided_at, &held.acknowledged, &held.answer);
                self.reply(&held.message, Ok(http::Response::new(held.answer)));
                self.wake_waiters(&held.upload);
            }
        }
        let queued = std::mem::take(&mut self.instances[instance].queued);
        for message in queued {
            self.arrive(instance, message);
        }
    }

    pub(crate) fn session_ended(&mut self, transaction: u64) {
        let Store::Shared { open, rows, .. } = &mut self.store else {
            return;
        };
        let Some(held) = open.get_mut(&transaction) else {
            return;
        };
        held.ended = true;
        rows.locks.remove(&held.upload);
        let upload = held.upload.clone();
        trace!(
            self,
            "the database ends the frozen session: {upload}'s lock is free"
        );
        self.wake_waiters(&upload);
    }

    pub(crate) fn lock_timeout(&mut self, waiter: u64) {
        let Store::Shared { waiters, .. } = &mut self.store else {
            return;
        };
        if let Some(waiter) = waiters.remove(&waiter) {
            let rejection = Rejection::unavailable(
                "Another request for this object is still being applied. Retry the request.",
            );
            self.reply(&waiter.message, Ok(rejection_response(&rejection)));
        }
    }

    /// Runs again every request that waited for `upload`'s lock.
    pub(crate) fn wake_waiters(&mut self, upload: &UploadId) {
        let Store::Shared { waiters, .. } = &mut self.store else {
            return;
        };
        let woken: Vec<u64> = waiters
            .iter()
            .filter(|(_, waiter)| waiter.upload == *upload)
            .map(|(id, _)| *id)
            .collect();
        for id in woken {
            let Store::Shared { waiters, .. } = &mut self.store else {
                return;
            };
            if let Some(waiter) = waiters.remove(&id) {
                self.arrive(waiter.instance, waiter.message);
            }
        }
    }
}
