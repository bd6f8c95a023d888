//! Protocol code: codecs and state machines without sockets, clocks or randomness
//! (docs/ARCHITECTURE.md §7).
//!
//! Every module here takes bytes and time as input and returns bytes and decisions; the tokio
//! tasks that own sockets live elsewhere. `auth` holds the digests the protocols share.

pub mod auth;
pub mod dhcp;
pub mod docsis;
pub mod radius;
pub mod snmp;
pub mod tftp;
