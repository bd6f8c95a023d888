//! The server's configuration (what `[radius]` becomes, see [`crate::notify::config`]).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use serde::{Deserialize, Serialize};

/// A RADIUS client (a BRAS or policy server) allowed to talk to us.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientConfig {
    /// Source address of its packets.
    pub addr: IpAddr,
    /// Shared secret (RFC 2865 §3).
    pub secret: String,
    /// Drop CoA/Disconnect requests without a Message-Authenticator (RFC 5176 §3.1 allows it to
    /// be optional; BlastRADIUS hardening says require it).
    #[serde(default)]
    pub require_message_authenticator: bool,
    /// For logs.
    #[serde(default)]
    pub name: Option<String>,
}

impl std::fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientConfig")
            .field("addr", &self.addr)
            .field("secret", &"<redacted>")
            .field(
                "require_message_authenticator",
                &self.require_message_authenticator,
            )
            .field("name", &self.name)
            .finish()
    }
}

/// Who this NAS is, for the NAS-Identification-Mismatch check (RFC 5176 §3.5, 403).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NasIdentity {
    pub ip: Option<Ipv4Addr>,
    pub identifier: Option<String>,
}

/// Default of [`RadiusServerConfig::replay_cache_per_client`].
pub const DEFAULT_REPLAY_CACHE_PER_CLIENT: usize = 100_000;
/// How long a Request Authenticator is remembered when no `event_timestamp_window_s` is set.
pub const DEFAULT_REPLAY_WINDOW_S: u64 = 300;
/// Default of [`RadiusServerConfig::session_timeout_s`]: an hour, three times a 20-minute
/// Interim-Update interval.
pub const DEFAULT_SESSION_TIMEOUT_S: u64 = 3600;

/// Server configuration.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RadiusServerConfig {
    /// CoA/Disconnect listener (RFC 5176 §3: UDP 3799).
    pub coa_listen: SocketAddr,
    /// Accounting listener (RFC 2866: UDP 1813); `None` = no accounting intake.
    pub acct_listen: Option<SocketAddr>,
    pub clients: Vec<ClientConfig>,
    /// How long a response is kept for retransmissions (RFC 5080 §2.2.2).
    pub duplicate_window_ms: u64,
    /// Drop requests whose Event-Timestamp is further than this from now (RFC 5176 §3.6
    /// suggests 300 s); `None` = do not check. Also how long a CoA/Disconnect's Request
    /// Authenticator stays in the replay cache (300 s when `None`).
    pub event_timestamp_window_s: Option<u64>,
    /// Drop CoA/Disconnect requests without an Event-Timestamp (RFC 5176 §3.6: replay
    /// protection needs it).
    pub require_event_timestamp: bool,
    /// The most Request Authenticators remembered per client (replay cache); when a client's
    /// cache is full of unexpired entries, its new CoA/Disconnect requests are dropped (and
    /// counted) rather than old entries forgotten. Each entry costs about 64 bytes.
    pub replay_cache_per_client: usize,
    /// A session not heard of (Start or Interim-Update) for this long is ended (`None` = never).
    /// A session whose accounting carries Acct-Interim-Interval uses three times that instead
    /// (at least 60 s).
    pub session_timeout_s: Option<u64>,
    /// If set, NAS-IP-Address / NAS-Identifier in a CoA must name us (else 403). If unset, they
    /// narrow the session match to the BRAS that reported the session.
    pub nas_identity: Option<NasIdentity>,
    /// Recorded in each session as the gateway that received its accounting.
    pub gateway: Option<String>,
}

impl Default for RadiusServerConfig {
    fn default() -> Self {
        Self {
            coa_listen: SocketAddr::from(([0, 0, 0, 0], 3799)),
            acct_listen: Some(SocketAddr::from(([0, 0, 0, 0], 1813))),
            clients: Vec::new(),
            duplicate_window_ms: 30_000,
            event_timestamp_window_s: Some(300),
            require_event_timestamp: true,
            replay_cache_per_client: DEFAULT_REPLAY_CACHE_PER_CLIENT,
            session_timeout_s: Some(DEFAULT_SESSION_TIMEOUT_S),
            nas_identity: None,
            gateway: None,
        }
    }
}

/// A configuration that cannot run.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum ConfigError {
    #[error("radius client {0}: empty shared secret")]
    EmptySecret(IpAddr),
    #[error("radius client {0} is configured twice")]
    DuplicateClient(IpAddr),
    #[error("coa_listen and acct_listen are the same address {0}")]
    SamePort(SocketAddr),
    #[error("replay_cache_per_client must be at least 1")]
    EmptyReplayCache,
    #[error("{field} must be at least 1 s (0 is not a window)")]
    ZeroWindow { field: &'static str },
}

impl RadiusServerConfig {
    /// Checks what can be checked before binding.
    pub fn validate(&self) -> Result<(), ConfigError> {
        for (i, c) in self.clients.iter().enumerate() {
            if c.secret.is_empty() {
                return Err(ConfigError::EmptySecret(c.addr));
            }
            if self.clients[..i].iter().any(|o| o.addr == c.addr) {
                return Err(ConfigError::DuplicateClient(c.addr));
            }
        }
        if self.acct_listen == Some(self.coa_listen) && self.coa_listen.port() != 0 {
            return Err(ConfigError::SamePort(self.coa_listen));
        }
        if self.replay_cache_per_client == 0 {
            return Err(ConfigError::EmptyReplayCache);
        }
        for (field, v) in [
            ("event_timestamp_window_s", self.event_timestamp_window_s),
            ("session_timeout_s", self.session_timeout_s),
        ] {
            if v == Some(0) {
                return Err(ConfigError::ZeroWindow { field });
            }
        }
        Ok(())
    }

    /// How long a Request Authenticator is remembered after its Event-Timestamp (or after its
    /// arrival, without one), in seconds.
    #[must_use]
    pub fn replay_window_s(&self) -> u64 {
        self.event_timestamp_window_s
            .unwrap_or(DEFAULT_REPLAY_WINDOW_S)
    }
}
