//! shaper: dynamic QoS for broadband access networks.
//!
//! This crate is the controller side: the data-plane loader (`dataplane`), the policy objects
//! every path shares (`policy`), the Rust reference model of the kernel programs (`model`) and
//! the network-namespace lab used by tests and the demo (`lab`).

pub mod abi;
pub mod api;
pub mod client;
pub mod clock;
pub mod config;
pub mod controller;
pub mod dataplane;
pub mod demo;
pub mod demo_modem;
pub mod gateway;
pub mod lab;
pub mod malloc;
pub mod metrics;
pub mod model;
pub mod modem;
pub mod notify;
pub mod nsm;
pub mod policy;
pub mod proto;
pub mod provision;
pub mod sessions;
pub mod store;
pub mod tftp;
pub mod tokens;
