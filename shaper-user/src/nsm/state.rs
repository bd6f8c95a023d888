//! The network service manager as the daemon shares it: the service under its lock and the
//! notifiers its decisions go out through. The HTTP routes (`api::nsm`), RADIUS accounting
//! (`notify`) and the composition root all hold one.

use std::sync::{Arc, Mutex};

use super::{Notifiers, NsmService};
use crate::store::SessionStore;

/// The manager and its notifiers, as the API holds them.
#[derive(Clone)]
pub struct NsmState {
    pub service: Arc<Mutex<NsmService>>,
    pub notifiers: Notifiers,
}

impl NsmState {
    /// Session intake for session sources outside the API (RADIUS accounting): runs `f` on
    /// the manager's [`SessionStore`] under its lock, then dispatches the notifications of the
    /// allocations a session change released. Blocking (SQLite): call it from a blocking task;
    /// the dispatch needs a tokio runtime.
    pub fn session_intake<T>(&self, f: impl FnOnce(&mut dyn SessionStore) -> T) -> T {
        let (value, jobs) = {
            let mut svc = self
                .service
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let value = f(&mut *svc);
            (value, svc.take_jobs())
        };
        self.notifiers.dispatch(jobs);
        value
    }
}
