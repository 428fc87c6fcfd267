//! An instance's life besides requests: its crash (its in-flight requests reset), its
//! restart (recovery, then a sweep) and its sweep, each as the real server runs it.

use crate::server::{Persisted, Store, steps_summary};
use crate::world::{Event, Failure, World, trace};

impl World {
    pub(crate) fn crash_instance(&mut self, instance: usize) {
        trace!(self, "instance {instance} crashes");
        let server = &mut self.instances[instance];
        server.up = false;
        server.ledger = None;
        server.life += 1;
        let queued = std::mem::take(&mut server.queued);
        for message in queued {
            self.reply(&message, Err(Failure::Reset));
        }
        if let Store::Shared { waiters, .. } = &mut self.store {
            let dropped: Vec<u64> = waiters
                .iter()
                .filter(|(_, waiter)| waiter.instance == instance)
                .map(|(id, _)| *id)
                .collect();
            for id in dropped {
                if let Store::Shared { waiters, .. } = &mut self.store
                    && let Some(waiter) = waiters.remove(&id)
                {
                    self.reply(&waiter.message, Err(Failure::Reset));
                }
            }
        }
        let delay = self.rng.range(200, 20_000);
        self.after(delay, Event::InstanceRestart(instance));
    }

    pub(crate) fn instance_restart(&mut self, instance: usize) {
        trace!(self, "instance {instance} restarts");
        self.instances[instance].up = true;
        self.instances[instance].recover_directory(&mut self.store, &self.limits);
        self.sweep(instance);
    }

    /// One sweep on `instance`, as the real server runs it.
    pub(crate) fn sweep(&mut self, instance: usize) {
        let server = &self.instances[instance];
        if !server.up || server.frozen.is_some() {
            return;
        }
        let now = self.deciding_secs(instance);
        if matches!(self.store, Store::Directory { .. }) {
            let changes = self.instances[instance]
                .ledger
                .as_ref()
                .expect("serving")
                .sweep_each(now);
            for change in changes {
                // Planned before the record's lock: a mutation may have changed it since.
                if !self.instances[instance]
                    .ledger
                    .as_ref()
                    .is_some_and(|ledger| ledger.is_current(&change))
                {
                    continue;
                }
                let before = self.store.truth();
                if let Err(broken) = self.oracle.check_sweep(
                    &before,
                    change.steps(),
                    now,
                    self.limits.upload_ttl_secs,
                ) {
                    self.violate(broken);
                    return;
                }
                // Judged legitimate above: what a crash half-way removed was the sweep's.
                self.oracle.swept(change.steps());
                trace!(
                    self,
                    "instance {instance} sweeps: {}",
                    steps_summary(change.steps())
                );
                match self.persist_directory(instance, change.steps()) {
                    Persisted::Crashed => return,
                    Persisted::Failed => continue,
                    Persisted::Done => {}
                }
                if let Some(ledger) = self.instances[instance].ledger.as_mut()
                    && let Err(error) = ledger.apply(change)
                {
                    let error = error.to_string();
                    self.violate(format!(
                        "the ledger refused a swept change it planned: {error}"
                    ));
                }
            }
            return;
        }
        let Store::Shared { rows, .. } = &self.store else {
            unreachable!("two backends")
        };
        // Rows another transaction holds are skipped (`FOR UPDATE SKIP LOCKED`).
        let Some(change) = rows.ledger(&self.limits, true).sweep(now) else {
            return;
        };
        if self.rng.chance(self.rates().server_crash) {
            self.crash_instance(instance);
            return;
        }
        trace!(
            self,
            "instance {instance} sweeps: {}",
            steps_summary(change.steps())
        );
        let before = self.store.truth();
        if let Err(broken) =
            self.oracle
                .check_sweep(&before, change.steps(), now, self.limits.upload_ttl_secs)
        {
            self.violate(broken);
            return;
        }
        self.commit_rows(change.steps(), true);
    }
}
