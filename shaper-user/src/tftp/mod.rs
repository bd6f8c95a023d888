//! File delivery to modems: the TFTP server (tokio shell around [`crate::proto::tftp`]) and the
//! same files over HTTP (docs/ARCHITECTURE.md §1.4).
//!
//! Layout: `proto::tftp` is the sans-IO core (codec, negotiation, per-transfer state machine);
//! this module holds everything with sockets and files — [`server`] (UDP), [`http`] (axum
//! router) and [`handler`] (the [`Handler`] seam and the root-confined [`FsHandler`]). It sits
//! at `src/tftp/` rather than under a `delivery/` tree because TFTP and its HTTP twin are the
//! only delivery paths the design names.
//!
//! Files are served whole from memory (`Arc<[u8]>`): modem configuration files are a few
//! hundred bytes to a few KiB, and holding them lets every retransmission and every window be
//! a slice without file I/O in the transfer loop.

pub mod client;
pub mod handler;
pub mod http;
pub mod server;
#[cfg(test)]
pub(crate) mod testlog;

pub use handler::{FsHandler, Handler, HandlerError, PathRejection, check_name};
pub use server::{ServerConfig, ServerError, ServerHandle, Stats, TftpServer};
