//! Notifications to and from network elements (DESIGN §1.6): RADIUS CoA to the BRAS
//! ([`coa`], RFC 5176 client; [`bras`] picks each session's BRAS), and the CoA/Disconnect + accounting server ([`coa_server`])
//! through which a policy server or the BRAS itself reaches shaper.
//!
//! These are the tokio shells around the sans-IO codec in [`crate::proto::radius`].

pub mod bras;
pub mod coa;
pub mod coa_server;
pub mod controller_sink;

pub use bras::{BrasDirectory, BrasEntry, BrasNotifier, NotifyError, SessionNotice};
pub use coa::{CoaClient, CoaError, CoaOutcome, NasTarget, RetryPolicy};
pub use coa_server::{
    ClientConfig, CoaRefusal, CoaSink, DropReason, Handled, Listener, RadiusServer,
    RadiusServerConfig, RadiusServerHandle,
};
pub use controller_sink::ControllerSink;
