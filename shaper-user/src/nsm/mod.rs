//! The network service manager (issue 5; docs/ARCHITECTURE.md §1.6; 3GPP PCRF,
//! docs/PROTOCOLS.md §6).
//!
//! Service providers ask for a QoS level for their application's traffic to a subscriber
//! (`POST /v1/providers/{id}/allocations`). The manager identifies the provider and the
//! application, binds the request to the subscriber's online session(s) (which BRAS, which
//! gateway), checks the provider is entitled to the traffic, checks capacity on every link the
//! traffic crosses, and allocates — or refuses with the constraint that failed, what was asked
//! and what is left. An allocation is enforced in the data plane (its own class and rules:
//! [`enforce`]) and notified to the BRAS, the gateways and the provider ([`notify`]).
//!
//! - [`model`]: providers, applications, links, sessions, allocations.
//! - [`core`]: the pure decision core with in-memory indexes ([`NsmCore`]); its session
//!   index is [`sessions`].
//! - [`service`]: the shell: store, enforcement, notification jobs ([`NsmService`]).
//! - [`enforce`]: allocations → data-plane classes and rules ([`AllocationEnforcer`]).
//! - [`notify`]: [`Notifier`] per target kind, provider webhooks, remote gateways.
//! - [`http`]: the small HTTP client the notifiers use.
//! - [`validate`]: the bounds of every string and collection the manager takes in.
//! - [`config`]: `[nsm]` in `shaper.toml`; [`run`]: its wiring into `shaper run`.
//!
//! # Integration points for session sources and the BRAS
//!
//! - **Sessions** (RADIUS accounting Start/Interim/Stop, DHCP leases): call the
//!   [`crate::store::SessionStore`] implementation of [`NsmService`] — from outside the API
//!   through [`NsmState::session_intake`], which also dispatches the
//!   notifications of allocations a session change or end released. `upsert_session` for
//!   Start and Interim (idempotent; a changed address, BRAS or gateway releases the
//!   allocations admitted on the old one), `end_session` for Stop; lookups by id, address and
//!   subscriber read the in-memory indexes.
//!   RADIUS accounting does this through [`crate::notify::run::NsmSessions`].
//! - **BRAS notification** (RADIUS CoA, RFC 5176): [`crate::notify::run::BrasCoaNotifier`]
//!   implements [`Notifier`] for jobs whose target is [`Target::Bras`] (the BRAS id is the
//!   sessions' `bras`; the job's notice carries the allocation, its sessions and addresses);
//!   `shaper run` puts it in [`Notifiers::bras`] when `nsm.bras = true`, which
//!   [`config::validate`] allows only with `[[radius.bras]]` configured.

pub mod config;
pub mod core;
pub mod enforce;
pub mod error;
pub mod http;
pub mod model;
pub mod notify;
pub mod run;
pub mod service;
pub mod sessions;
mod state;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_edge;
pub mod validate;

pub use self::core::{CatalogError, Decision, NsmCore, Refusal};
pub use enforce::{
    AllocEnforceError, AllocationEnforcer, AllocationTarget, EnforcePlan, NoDataplane,
};
pub use notify::{
    AllocationNotice, BoxFuture, GatewayNotifier, GatewayState, HttpGateway, Job, Notifier,
    Notifiers, NotifyError, RemoteGateway, RetryPolicy, Target, WebhookNotifier,
};
pub use service::{LinkUsage, NsmConfig, NsmError, NsmService};
pub use state::NsmState;
