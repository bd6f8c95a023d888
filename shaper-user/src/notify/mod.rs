//! Notifications to and from network elements (docs/ARCHITECTURE.md §1.6): RADIUS CoA to the BRAS
//! ([`coa`], RFC 5176 client; [`bras`] picks each session's BRAS), and the CoA/Disconnect + accounting server ([`coa_server`])
//! through which a policy server or the BRAS itself reaches shaper.
//!
//! [`config`] is `[radius]` in `shaper.toml`; [`run`] wires it into `shaper run`: the servers
//! over the controller and the network service manager's session store, and CoA to the BRAS
//! for allocation changes.
//!
//! These are the tokio shells around the sans-IO codec in [`crate::proto::radius`], and
//! [`rate`]: how a QoS level travels in RADIUS rate attributes for each kind of BRAS.

pub mod bras;
pub mod coa;
pub mod coa_server;
pub mod config;
pub mod controller_sink;
pub mod nsm_sessions;
pub mod rate;
pub mod run;

pub use bras::{BrasDirectory, BrasEntry, BrasNotifier, NotifyError, SessionNotice};
pub use coa::{CoaClient, CoaError, CoaOutcome, NasTarget, RetryPolicy};
pub use coa_server::{
    ClientConfig, CoaRefusal, CoaSink, DropReason, EndCause, Handled, Listener, RadiusServer,
    RadiusServerConfig, RadiusServerHandle, ServerStats,
};
pub use controller_sink::ControllerSink;
pub use rate::{MikrotikRateLimit, RateError, RateKind, RateProfile, decode_rate};
