//! The network service manager's domain objects: providers, their applications (traffic
//! classifiers), links with capacity, subscriber sessions and allocations.
//!
//! These are the stored and API forms (serde, prefixes as text); [`Classifier::compile`] turns
//! a classifier into the data plane's literal rule fields ([`crate::policy::Rule`]).

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::policy::{PortRange, Prefix, proto_has_ports};

/// A direction of subscriber traffic.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Dir {
    /// Subscriber → network.
    Up,
    /// Network → subscriber.
    Down,
}

impl Dir {
    pub const BOTH: [Dir; 2] = [Dir::Up, Dir::Down];
}

impl std::fmt::Display for Dir {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Dir::Up => "up",
            Dir::Down => "down",
        })
    }
}

/// What a provider is (docs/ARCHITECTURE.md §1.6): an application service provider (a video
/// service, a game) or a network service provider (a VPN, a wholesale partner).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProviderKind {
    Asp,
    Nsp,
}

/// A service provider. `prefixes` are the provider's own (server) address ranges: an
/// application's provider-side addresses must lie inside them (entitlement, 3GPP
/// REQUESTED_SERVICE_NOT_AUTHORIZED otherwise).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Provider {
    pub id: String,
    pub kind: ProviderKind,
    pub name: String,
    /// Server prefixes, e.g. "198.19.0.0/24" or "2001:db8:100::/48".
    #[serde(default)]
    pub prefixes: Vec<String>,
    /// Where allocation notices are POSTed (plain `http://` URL); none = no webhook.
    #[serde(default)]
    pub webhook_url: Option<String>,
    /// HMAC-SHA256 key of the webhook signature; required with a URL.
    #[serde(default)]
    pub webhook_secret: Option<String>,
}

/// One traffic classifier of an application, in literal packet fields for one direction.
/// `down`: packets to the subscriber (the provider side is the source); `up`: packets from
/// the subscriber (the provider side is the destination). The subscriber-side address is not
/// given here: an allocation scopes it to the subscriber's session address.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Classifier {
    pub direction: Dir,
    /// IP protocol number (6 = TCP, 17 = UDP, ...); none = any.
    #[serde(default)]
    pub proto: Option<u8>,
    /// Provider-side prefix (required: entitlement is checked on it).
    pub provider_prefix: String,
    /// Provider-side port range ("443", "5000-5100"); none = any.
    #[serde(default)]
    pub provider_ports: Option<String>,
    /// Subscriber-side port range; none = any.
    #[serde(default)]
    pub subscriber_ports: Option<String>,
}

/// A classifier, parsed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CompiledClassifier {
    pub direction: Dir,
    pub proto: Option<u8>,
    pub provider_prefix: Prefix,
    pub provider_ports: PortRange,
    pub subscriber_ports: PortRange,
}

impl CompiledClassifier {
    /// The literal (proto, src, dst, sport, dport) of the classifier with the subscriber side
    /// being `subscriber` (a session prefix, or any address of the family).
    #[must_use]
    pub fn fields(&self, subscriber: Prefix) -> (Option<u8>, Prefix, Prefix, PortRange, PortRange) {
        match self.direction {
            Dir::Down => (
                self.proto,
                self.provider_prefix,
                subscriber,
                self.provider_ports,
                self.subscriber_ports,
            ),
            Dir::Up => (
                self.proto,
                subscriber,
                self.provider_prefix,
                self.subscriber_ports,
                self.provider_ports,
            ),
        }
    }
}

/// An application of a provider: its traffic, as classifiers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Application {
    pub provider: String,
    pub id: String,
    pub name: String,
    pub classifiers: Vec<Classifier>,
}

/// What a link is; every kind is capacity-checked the same way.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LinkKind {
    /// A routing gateway (a session's `gateway` names one).
    Gateway,
    /// A BRAS uplink (a session's `bras` names one, when registered).
    Bras,
    /// Any other link.
    Link,
}

/// A link or gateway with its capacity per direction, bit/s.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Link {
    pub id: String,
    pub kind: LinkKind,
    pub capacity_up_bps: u64,
    pub capacity_down_bps: u64,
}

impl Link {
    #[must_use]
    pub fn capacity(&self, dir: Dir) -> u64 {
        match dir {
            Dir::Up => self.capacity_up_bps,
            Dir::Down => self.capacity_down_bps,
        }
    }
}

/// A subscriber session (an IP-CAN session in 3GPP terms): the subscriber is online with
/// `prefix` (IPv4 /32, IPv6 /128 or /64) behind `bras` and routed by `gateway`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Session {
    pub id: String,
    pub subscriber: String,
    /// "198.18.0.10", "2001:db8::10" (/128) or "2001:db8:0:10::/64".
    pub prefix: String,
    pub bras: String,
    pub gateway: String,
    pub since_ms: u64,
    #[serde(default)]
    pub ended_ms: Option<u64>,
}

/// Which subscriber traffic an allocation covers: all sessions of a subscriber, or one
/// address (which must be online), or both (the address must be the subscriber's).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scope {
    #[serde(default)]
    pub subscriber: Option<String>,
    #[serde(default)]
    pub ip: Option<IpAddr>,
}

/// What a provider asks for (3GPP Rx AAR: Media-Component-Description).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AllocationRequest {
    pub application: String,
    pub scope: Scope,
    /// Committed rate towards the subscriber, bit/s (charged against link capacity).
    #[serde(default)]
    pub down_bps: Option<u64>,
    /// Committed rate from the subscriber, bit/s.
    #[serde(default)]
    pub up_bps: Option<u64>,
    /// Shaping ceiling per direction (≥ the rate); none = the rate. The policer polices at the
    /// ceiling, HTB guarantees the rate and borrows up to the ceiling.
    #[serde(default)]
    pub ceil_down_bps: Option<u64>,
    #[serde(default)]
    pub ceil_up_bps: Option<u64>,
    /// Token-bucket depth, bytes; none = 250 ms of the ceiling (at least one frame).
    #[serde(default)]
    pub burst_bytes: Option<u32>,
    /// Priority 0..=7, higher is better (DOCSIS convention): DSCP and HTB prio.
    #[serde(default)]
    pub priority: u8,
    /// DSCP to mark instead of the priority's default ([`dscp_for_priority`]).
    #[serde(default)]
    pub dscp: Option<u8>,
    /// Targets carried to the provider and BRAS; a packet path cannot enforce them.
    #[serde(default)]
    pub max_delay_ms: Option<u32>,
    #[serde(default)]
    pub max_loss_ppm: Option<u32>,
    /// L3 MTU policy for the traffic (≥ 1280).
    #[serde(default)]
    pub mtu: Option<u16>,
}

impl AllocationRequest {
    /// The committed rate of one direction (0 = none).
    #[must_use]
    pub fn rate(&self, dir: Dir) -> u64 {
        match dir {
            Dir::Up => self.up_bps,
            Dir::Down => self.down_bps,
        }
        .unwrap_or(0)
    }

    /// The ceiling of one direction: the given ceiling, else the rate.
    #[must_use]
    pub fn ceil(&self, dir: Dir) -> u64 {
        match dir {
            Dir::Up => self.ceil_up_bps,
            Dir::Down => self.ceil_down_bps,
        }
        .unwrap_or_else(|| self.rate(dir))
    }
}

/// Where an allocation is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AllocationState {
    Active,
    Released,
}

/// A capacity charge of an allocation (or of a provisioning grant) on one link direction.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Charge {
    pub link: String,
    pub dir: Dir,
    pub bps: u64,
}

/// An admitted allocation (3GPP: an installed charging rule).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Allocation {
    pub id: u64,
    pub provider: String,
    pub request: AllocationRequest,
    /// The sessions it covers, as admitted.
    pub sessions: Vec<String>,
    /// What it holds on each link.
    pub charges: Vec<Charge>,
    pub dscp: u8,
    pub state: AllocationState,
    pub created_ms: u64,
    #[serde(default)]
    pub released_ms: Option<u64>,
    /// Why it was released ("provider request", "session s1 ended", ...).
    #[serde(default)]
    pub release_reason: Option<String>,
}

/// DSCP for a priority (RFC 4594 service classes): 0 default (best effort), 1 AF11, 2 AF21,
/// 3 AF31, 4 AF41, 5 CS5 (signalling / broadcast video), 6 and 7 EF (real-time interactive).
#[must_use]
pub fn dscp_for_priority(priority: u8) -> u8 {
    match priority {
        0 => 0,
        1 => 10,
        2 => 18,
        3 => 26,
        4 => 34,
        5 => 40,
        _ => 46,
    }
}

/// Parses a session or provider prefix; IPv6 without a length is /128.
pub fn parse_prefix(s: &str) -> Result<Prefix, String> {
    crate::config::parse_prefix(s, 128)
}

/// Parses an optional port range; none = any.
pub fn parse_ports(s: Option<&str>) -> Result<PortRange, String> {
    s.map_or(Ok(PortRange::ANY), crate::config::parse_ports)
}

/// Why a classifier is malformed: which part, and how.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {detail}")]
pub struct ClassifierError {
    /// `provider_prefix`, `provider_ports`, `subscriber_ports` or `proto`.
    pub field: &'static str,
    pub detail: String,
}

impl Classifier {
    /// Parses and checks the classifier on its own.
    pub fn compile(&self) -> Result<CompiledClassifier, ClassifierError> {
        let bad = |field, detail| ClassifierError { field, detail };
        let provider_prefix =
            parse_prefix(&self.provider_prefix).map_err(|d| bad("provider_prefix", d))?;
        let provider_ports =
            parse_ports(self.provider_ports.as_deref()).map_err(|d| bad("provider_ports", d))?;
        let subscriber_ports = parse_ports(self.subscriber_ports.as_deref())
            .map_err(|d| bad("subscriber_ports", d))?;
        let ports = provider_ports != PortRange::ANY || subscriber_ports != PortRange::ANY;
        match self.proto {
            Some(p) if ports && !proto_has_ports(p) => {
                return Err(bad(
                    "proto",
                    format!("ports given for protocol {p}, which has none"),
                ));
            }
            None if ports => {
                return Err(bad(
                    "proto",
                    "ports need a protocol that has them (6, 17 or 132)".into(),
                ));
            }
            _ => {}
        }
        Ok(CompiledClassifier {
            direction: self.direction,
            proto: self.proto,
            provider_prefix,
            provider_ports,
            subscriber_ports,
        })
    }
}
