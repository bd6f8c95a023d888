//! Group commit of submissions: many requests, one store transaction, one fsync (see
//! [`SubmitQueue`]). The HTTP adapter queues `POST /v1/events` here; the queue owns the commit
//! thread that calls [`Controller::submit_batch_and_fire`].

use std::sync::{Arc, Mutex};

use super::{ChangeHook, Controller, ControllerError, changed_modems};
use crate::clock::Clock;
use crate::provision::{EventRequest, Submitted};

/// What the commit thread works with.
pub struct CommitDeps {
    pub controller: Arc<Mutex<Controller>>,
    pub clock: Clock,
    /// Notified after accepted submissions when the thread does not enforce them itself: the
    /// daemon's tick loop ([`super::ticker::tick_loop`]) fires them at once.
    pub wake: Arc<tokio::sync::Notify>,
    /// Fire the starts and stops due in the same commit as each batch and enforce them right
    /// after answering (the daemon); off: submitted events stay pending until a tick.
    pub tick_after_commit: bool,
    pub on_changes: Option<ChangeHook>,
}

/// The reply to one queued submission.
type SubmitReply = tokio::sync::oneshot::Sender<Result<Submitted, ControllerError>>;

/// One queued submission.
type SubmitJob = (EventRequest, SubmitReply);

/// Group commit of `POST /v1/events`. Handlers queue their submission and wait; one committer
/// thread (started with the first submission, ended when the queue is dropped) takes *every*
/// queued submission, commits them in one store transaction ([`Controller::submit_batch`]:
/// one fsync) and answers each. While a batch is being synced to disk the requests arriving
/// meanwhile queue up and share the next commit. Each request is answered only after the
/// batch holding its event is durable. After a batch with accepted submissions it enforces
/// what fired with it (`tick_after_commit`) or notifies `wake` (the tick loop's).
#[derive(Default)]
pub struct SubmitQueue {
    sender: std::sync::OnceLock<std::sync::mpsc::Sender<SubmitJob>>,
}

impl SubmitQueue {
    /// Queues `req`; the answer arrives on the returned receiver. The first call starts the
    /// commit thread with `deps` (later calls ignore them).
    ///
    /// # Errors
    /// [`ControllerError::NotCommitted`] when the commit thread has stopped.
    pub fn submit(
        &self,
        deps: impl FnOnce() -> CommitDeps,
        req: EventRequest,
    ) -> Result<tokio::sync::oneshot::Receiver<Result<Submitted, ControllerError>>, ControllerError>
    {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let sender = self.sender.get_or_init(|| {
            let (tx, rx) = std::sync::mpsc::channel();
            let CommitDeps {
                controller: ctl,
                clock,
                wake,
                tick_after_commit: tick,
                on_changes: hook,
            } = deps();
            std::thread::Builder::new()
                .name("shaper-commit".into())
                .spawn(move || commit_loop(&rx, &ctl, &clock, &wake, tick, hook.as_ref()))
                .expect("spawning the commit thread");
            tx
        });
        sender.send((req, reply)).map_err(|_| {
            ControllerError::NotCommitted(
                "the commit thread has stopped; restart the daemon".into(),
            )
        })?;
        Ok(answer)
    }
}

/// The committer of [`SubmitQueue`]: runs until every sender is gone.
fn commit_loop(
    rx: &std::sync::mpsc::Receiver<SubmitJob>,
    ctl: &Mutex<Controller>,
    clock: &Clock,
    wake: &tokio::sync::Notify,
    tick_after_commit: bool,
    on_changes: Option<&ChangeHook>,
) {
    while let Ok(first) = rx.recv() {
        let mut jobs = vec![first];
        jobs.extend(rx.try_iter());
        let (reqs, replies): (Vec<_>, Vec<_>) = jobs.into_iter().unzip();
        let mut c = crate::controller::lock(ctl, || clock());
        let now = clock();
        let (results, changes) = if tick_after_commit {
            // The starts due now (the accepted immediate events among them) fire in the same
            // commit as the acceptance.
            c.submit_batch_and_fire(reqs, now)
        } else {
            (c.submit_batch(reqs, now), Vec::new())
        };
        let accepted = results.iter().any(Result::is_ok);
        for (reply, result) in replies.into_iter().zip(results) {
            // A requester that went away (client disconnected) needs no answer.
            let _ = reply.send(result);
        }
        if tick_after_commit {
            let enforced = c.enforce_changes(&changes, now);
            if let Some(hook) = on_changes.filter(|_| !changes.is_empty()) {
                hook(&c, &changed_modems(&changes));
            }
            drop(c);
            if let Err(e) = enforced {
                tracing::error!("enforcing after a commit: {e}");
            }
            super::ticker::log_changes(&changes, clock());
        } else {
            drop(c);
            if accepted {
                wake.notify_one();
            }
        }
    }
}
