//! A part's result on its way back to the driver's loop, whatever ends the part's task or
//! thread.

use uploads_core::session::PartJob;
use uploads_core::types::PartId;
use uploads_core::upload::RequestError;
use uploads_core::uploader::Report;

/// The result of one part attempt, handed to `send` (the driver's channel) when this value
/// is dropped: also when the part's task or thread panics or is aborted, so the loop never
/// waits in vain for a part (a report for a part the machine abandoned is ignored).
pub struct PartReport<E, S: Fn(Report<E>)> {
    send: S,
    job: PartJob,
    result: Option<Result<PartId, RequestError<E>>>,
}

impl<E, S: Fn(Report<E>)> PartReport<E, S> {
    /// The report of `job`, to be given to `send`.
    pub fn new(job: PartJob, send: S) -> Self {
        Self {
            send,
            job,
            result: None,
        }
    }

    /// Sends how the attempt ended.
    pub fn finish(mut self, result: Result<PartId, RequestError<E>>) {
        self.result = Some(result);
    }
}

impl<E, S: Fn(Report<E>)> Drop for PartReport<E, S> {
    fn drop(&mut self) {
        let result = self.result.take().unwrap_or_else(|| {
            Err(RequestError::Source(std::io::Error::other(
                "the part's task ended without a result",
            )))
        });
        (self.send)(Report::Part(self.job, result));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    #[test]
    fn a_part_reports_its_result_or_that_it_ended_without_one() {
        let job = PartJob {
            index: 2,
            offset: 8,
            len: 4,
            attempt: 1,
        };
        let (sender, received) = mpsc::channel::<Report<std::io::Error>>();
        let send = move |report| {
            let _ = sender.send(report);
        };
        PartReport::new(job, send.clone()).finish(Ok(PartId::new("part_1")));
        assert!(
            matches!(received.recv().unwrap(), Report::Part(_, Ok(id)) if id == PartId::new("part_1"))
        );
        let panicked = std::thread::spawn(move || {
            let _report = PartReport::new(job, send);
            panic!("a reader of the caller's panicked");
        });
        assert!(panicked.join().is_err());
        assert!(matches!(
            received.recv().unwrap(),
            Report::Part(reported, Err(RequestError::Source(_))) if reported == job
        ));
    }
}
