//! A health probe of a disk with a deadline: run on a thread of its own, so a disk that
//! does not answer cannot hold the caller; one probe at a time, and callers that arrive
//! while it runs share its answer (two load balancers asking at once both get it), while
//! one stuck past its deadline makes later callers fail at once instead of piling up
//! threads on that disk.

use std::io;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// The outcome of a probe, kept to share (an `io::Error` is not `Clone`).
type Outcome = Result<(), (io::ErrorKind, String)>;

/// One probe at a time, its answer shared.
#[derive(Debug, Default)]
pub(crate) struct ProbeGate {
    state: Mutex<GateState>,
    finished: Condvar,
}

#[derive(Debug, Default)]
struct GateState {
    /// When the probe under way began.
    running_since: Option<Instant>,
    /// Probes finished so far.
    finished: u64,
    /// The answer of the last one finished.
    last: Option<Outcome>,
}

impl ProbeGate {
    /// Runs `work` (or joins the probe under way) and waits for it at most `deadline`.
    pub(crate) fn run(
        self: &Arc<Self>,
        deadline: Duration,
        work: impl FnOnce() -> io::Result<()> + Send + 'static,
    ) -> io::Result<()> {
        let not_answering = || {
            io::Error::new(
                io::ErrorKind::TimedOut,
                format!("the disk did not answer within {deadline:?}"),
            )
        };
        let mut state = self.lock();
        let waited_from = match state.running_since {
            Some(since) if since.elapsed() >= deadline => return Err(not_answering()),
            Some(since) => since,
            None => {
                let now = Instant::now();
                state.running_since = Some(now);
                let publish = Publish {
                    gate: Arc::clone(self),
                    outcome: None,
                };
                let spawned = std::thread::Builder::new()
                    .name("store-probe".to_owned())
                    .spawn(move || {
                        let mut publish = publish;
                        publish.outcome =
                            Some(work().map_err(|error| (error.kind(), error.to_string())));
                    });
                if let Err(error) = spawned {
                    state.running_since = None;
                    return Err(error);
                }
                now
            }
        };
        let seen = state.finished;
        let remaining = deadline.saturating_sub(waited_from.elapsed());
        let (state, _) = self
            .finished
            .wait_timeout_while(state, remaining, |state| state.finished == seen)
            .unwrap_or_else(PoisonError::into_inner);
        if state.finished == seen {
            return Err(not_answering());
        }
        match &state.last {
            Some(Ok(())) => Ok(()),
            Some(Err((kind, message))) => Err(io::Error::new(*kind, message.clone())),
            None => Err(not_answering()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, GateState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Publishes a probe's outcome when its thread ends, however it ends (a panic too).
struct Publish {
    gate: Arc<ProbeGate>,
    outcome: Option<Outcome>,
}

impl Drop for Publish {
    fn drop(&mut self) {
        let outcome = self
            .outcome
            .take()
            .unwrap_or_else(|| Err((io::ErrorKind::Other, "the probe failed".to_owned())));
        let mut state = self.gate.lock();
        state.running_since = None;
        state.finished += 1;
        state.last = Some(outcome);
        drop(state);
        self.gate.finished.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    /// Waits until no probe runs (a bound only so that a stuck gate fails the test).
    fn wait_until_idle(gate: &ProbeGate) {
        for _ in 0..10_000 {
            if gate.lock().running_since.is_none() {
                return;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        panic!("the probe's thread never finished");
    }

    #[test]
    fn a_probe_past_its_deadline_fails_and_the_next_fails_at_once_until_it_ends() {
        let gate = Arc::new(ProbeGate::default());
        let (release, released) = std::sync::mpsc::channel::<()>();
        let stuck = gate.run(Duration::from_millis(20), move || {
            let _ = released.recv();
            Ok(())
        });
        assert_eq!(stuck.unwrap_err().kind(), io::ErrorKind::TimedOut);
        let ran = Arc::new(AtomicUsize::new(0));
        let ran_too = Arc::clone(&ran);
        let meanwhile = gate.run(Duration::from_millis(20), move || {
            ran_too.fetch_add(1, Ordering::SeqCst);
            Ok(())
        });
        assert_eq!(meanwhile.unwrap_err().kind(), io::ErrorKind::TimedOut);
        assert_eq!(ran.load(Ordering::SeqCst), 0, "a second probe piled up");
        release.send(()).unwrap();
        wait_until_idle(&gate);
        gate.run(Duration::from_mins(1), || Ok(())).unwrap();
        let failed = gate.run(Duration::from_mins(1), || Err(io::Error::other("broken")));
        assert_eq!(failed.unwrap_err().to_string(), "broken");
        let panicked = gate.run(Duration::from_mins(1), || panic!("probe"));
        assert!(panicked.is_err());
        wait_until_idle(&gate);
        gate.run(Duration::from_mins(1), || Ok(())).unwrap();
    }

    #[test]
    fn callers_arriving_while_a_probe_runs_share_its_answer() {
        let gate = Arc::new(ProbeGate::default());
        let (release, released) = std::sync::mpsc::channel::<()>();
        let runs = Arc::new(AtomicUsize::new(0));
        let first = {
            let (gate, runs) = (Arc::clone(&gate), Arc::clone(&runs));
            std::thread::spawn(move || {
                gate.run(Duration::from_mins(1), move || {
                    runs.fetch_add(1, Ordering::SeqCst);
                    let _ = released.recv();
                    Ok(())
                })
            })
        };
        while gate.lock().running_since.is_none() {
            std::thread::sleep(Duration::from_millis(1));
        }
        let second = {
            let (gate, runs) = (Arc::clone(&gate), Arc::clone(&runs));
            std::thread::spawn(move || {
                gate.run(Duration::from_mins(1), move || {
                    runs.fetch_add(1, Ordering::SeqCst);
                    Ok(())
                })
            })
        };
        std::thread::sleep(Duration::from_millis(20));
        release.send(()).unwrap();
        first.join().unwrap().unwrap();
        second
            .join()
            .unwrap()
            .expect("the second caller got the first probe's answer");
        assert_eq!(runs.load(Ordering::SeqCst), 1, "one probe for both");
    }
}
