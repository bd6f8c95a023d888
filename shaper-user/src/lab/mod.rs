//! Network-namespace lab: a thin, explicit harness for tests and the demo.
//!
//! Everything here shells out to the ordinary tools (`ip`, `tc`, `sysctl`, `iperf3`, `ping`)
//! so that what a test does can be replayed by hand from its log. Nothing is hidden:
//!
//! - [`NetNs`] is an RAII guard for one `ip netns` namespace. Dropping it kills whatever still
//!   runs inside and deletes the namespace, also when a test panics.
//! - [`BgProcess`] is an RAII guard for a background child (killed and reaped on drop).
//! - [`Topology`] builds the three-namespace lab `sub` — `gw` — `net` used by the data-plane
//!   tests (see [`topo`] for the address plan).
//! - [`iperf`] starts `iperf3` servers/clients with hard timeouts and parses their JSON;
//!   [`ping`] wraps `ping`.
//!
//! Rules the harness follows (and callers must too): traffic only inside namespaces the test
//! created, addresses only from 198.18.0.0/15 and 2001:db8::/32, every namespace name unique
//! per process (pid + counter) so tests can run in parallel, and a timeout on every command.
//!
//! Required packages (Debian): `iproute2 iperf3 iputils-ping procps` (plus `ethtool` for
//! offload tweaks). All of it needs root (CAP_NET_ADMIN + CAP_SYS_ADMIN for `ip netns`).
//!
//! # veth and XDP (notes for the data-plane loader)
//!
//! - Native (driver) XDP on a veth runs in the veth's NAPI receive path. Frames arrive there
//!   only while *both* ends are up (a veth whose peer is down has no carrier), and the peer's
//!   MTU must fit the XDP buffer (≈ 3.5 kB for non-frags programs, else attach fails with
//!   "Peer MTU is too large to set XDP").
//! - `XDP_TX` on veth A sends the frame to A's peer B through B's XDP ring, which exists only
//!   while B's NAPI is enabled. Measured on this lab kernel (6.18), pinging from B through a
//!   program that returns `XDP_TX` on A:
//!   - B with nothing: A counts `rx_queue_0_xdp_tx_errors` (`ethtool -S A`), frames dropped;
//!   - B with GRO on (`ethtool -K B gro on`): A counts `xdp_tx` as *success*, but the frames
//!     never showed up on B (tcpdump, B's rx counters) — do not rely on it;
//!   - B with any XDP program attached (even one that just returns `XDP_PASS`): frames arrive
//!     on B. **So: to test `XDP_TX` answers (ICMP too-big etc.) on a veth, attach an XDP
//!     program (a pass-through is enough) to the peer as well.** The same holds for
//!     `XDP_REDIRECT` into a veth (`ndo_xdp_xmit`).

pub mod http;
pub mod iperf;
pub mod netns;
pub mod topo;

pub use http::http;
pub use iperf::{IperfClient, IperfOpts, IperfReport, IperfServer, next_port, ping};
pub use netns::{BgProcess, NetNs, in_netns, output_with_timeout};
pub use topo::{Link, Topology};
