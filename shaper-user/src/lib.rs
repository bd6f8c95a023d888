//! shaper: dynamic QoS for broadband access networks — the controller side.
//!
//! The `shaper` binary (`main.rs`) is the one user of most of this library; the integration
//! tests, benchmarks and fuzz targets use it too. Modules by layer, lowest first
//! (docs/ARCHITECTURE.md §2; `tests/layering.rs` holds the code to it):
//!
//! 1. **Ground floor**: [`clock`] (time is passed in, never read below the wiring),
//!    [`tokens`] (API tokens and roles), [`policy`] (data-plane classes, subscribers, rules
//!    and their validation), [`abi`] (the Rust mirror of the kernel ABI, checked against the
//!    object's BTF), [`malloc`], [`client`] (a small HTTP client), [`lab`] (namespaces and
//!    veths for tests and the demo).
//! 2. **Codecs and model**: [`proto`] (sans-IO DOCSIS, TFTP, DHCP, SNMP, RADIUS: no sockets,
//!    no clocks, nothing else of the crate), [`model`] (the reference model of the kernel
//!    programs and the differential test's packet generator).
//! 3. **Kernel and disk**: [`dataplane`] (aya loader, maps, HTB), [`store`] (SQLite).
//! 4. **Provisioning core**: [`provision`] (the clock-free event engine, grant catalogue).
//! 5. **Controller and services**: [`controller`] (group commit, ticker, enforcement, resync,
//!    admission), [`nsm`] (network service manager), [`modem`] (configuration files,
//!    pipeline, reboot), [`sessions`].
//! 6. **Adapters**: [`api`] (HTTP), [`notify`] (RADIUS), [`tftp`], [`metrics`].
//! 7. **Wiring**: [`config`], [`gateway`], [`demo`], [`demo_modem`].

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
