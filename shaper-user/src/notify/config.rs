//! `[radius]` in `shaper.toml`: the RADIUS CoA/Disconnect and accounting servers `shaper run`
//! starts, the clients allowed to talk to them, and the BRASes shaper sends CoA to.
//!
//! ```toml
//! [radius]
//! coa_listen = "198.18.0.1:3799"      # CoA/Disconnect server (RFC 5176); absent = none
//! accounting_listen = ":1813"         # accounting server (RFC 2866); ":port" = every address
//! gateway = "gw1"                     # sessions' gateway (default: nsm.local_gateway)
//! require_event_timestamp = true      # CoA/Disconnect without Event-Timestamp are dropped
//! event_timestamp_window_s = 300      # CoA/Disconnect further than this from now are dropped
//! replay_cache_per_client = 100000    # Request Authenticators remembered per client
//! session_timeout_s = 3600            # end sessions silent this long; 0 = never
//!
//! [[radius.client]]                   # who may send to us (BRASes, billing, policy servers)
//! address = "198.18.0.2"
//! secret_file = "radius/bras1.secret" # relative to this file's directory
//! require_message_authenticator = true # CoA/Disconnect without one are dropped (default)
//! name = "bras1"
//!
//! [[radius.bras]]                     # where allocation changes are sent as CoA
//! name = "bras1"                      # the sessions' NAS-Identifier (their `bras`)
//! nas_ip = "198.18.0.2"               # optional: also match NAS-IP-Address sessions
//! address = "198.18.0.2"              # its CoA port; default port 3799
//! secret_file = "radius/bras1.secret"
//! profile = "mikrotik"                # mikrotik | cisco | juniper | plain
//! juniper_service = "svc-rate"        # juniper only: the dynamic service to activate
//! timeout_ms = 1000                   # wait per attempt
//! retries = 3                         # retransmissions after the first attempt
//! ```
//!
//! Replay protection (CoA/Disconnect, RFC 5176 §3.6): a request must carry an Event-Timestamp
//! (unless `require_event_timestamp = false`) within `event_timestamp_window_s` (1..=3600,
//! default 300) of shaper's clock — keep the clients' clocks in sync (NTP). Each client's
//! Request Authenticators are remembered, by client address whatever the source port, until
//! their timestamp leaves the window; the same request again is dropped as a replay. A
//! retransmission from the same port within 30 s gets the first answer again (RFC 5080). The
//! cache holds at most `replay_cache_per_client` (1..=10000000, default 100000, about 64 bytes
//! each) unexpired entries per client: when a client's cache is full its new requests are
//! dropped (and counted), never old entries forgotten — size it for the client's peak CoA
//! rate times twice the window.
//!
//! Sessions: a Start or Interim-Update for a session on an address another session holds ends
//! the older one (its Stop was lost) and records the new one; a report of a session that
//! started before the holder (a late Interim-Update of the ended session) is answered but not
//! recorded. A session with no Start or
//! Interim-Update for `session_timeout_s` (default 3600; 0 = never; at most 2592000) is ended
//! as a Stop would end it; a session whose accounting carries Acct-Interim-Interval uses three
//! intervals instead (at least 60 s). Set 0 when the BRAS sends no Interim-Updates. Sessions
//! restored from the network service manager's store after a restart are tracked from their
//! next Interim-Update.
//!
//! Secret files hold the shared secret on their first line (surrounding whitespace is not
//! part of it). They are read by `shaper check` too, so a missing or empty file is caught
//! before anything binds.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::coa::{NasTarget, RetryPolicy};
use super::coa_server::{
    ClientConfig, DEFAULT_REPLAY_CACHE_PER_CLIENT, DEFAULT_SESSION_TIMEOUT_S, RadiusServerConfig,
};
use crate::config::ConfigError;
use crate::notify::RateProfile;

/// The CoA port of RFC 5176 §3.
pub const COA_PORT: u16 = 3799;

fn yes() -> bool {
    true
}

fn default_timeout_ms() -> u64 {
    1000
}

fn default_retries() -> u32 {
    3
}

fn default_event_timestamp_window_s() -> u64 {
    300
}

fn default_replay_cache_per_client() -> usize {
    DEFAULT_REPLAY_CACHE_PER_CLIENT
}

fn default_session_timeout_s() -> u64 {
    DEFAULT_SESSION_TIMEOUT_S
}

/// Bounds of the `[radius]` numbers (see the module documentation).
const MAX_EVENT_TIMESTAMP_WINDOW_S: u64 = 3600;
const MAX_REPLAY_CACHE_PER_CLIENT: usize = 10_000_000;
const MAX_SESSION_TIMEOUT_S: u64 = 30 * 86_400;

/// `[[radius.client]]`.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ClientSection {
    pub address: String,
    pub secret_file: PathBuf,
    #[serde(default = "yes")]
    pub require_message_authenticator: bool,
    #[serde(default)]
    pub name: Option<String>,
}

/// How a BRAS reads rates (`profile`).
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ProfileName {
    Mikrotik,
    Cisco,
    Juniper,
    Plain,
}

/// `[[radius.bras]]`.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct BrasSection {
    pub name: String,
    #[serde(default)]
    pub nas_ip: Option<Ipv4Addr>,
    pub address: String,
    pub secret_file: PathBuf,
    pub profile: ProfileName,
    #[serde(default)]
    pub juniper_service: Option<String>,
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    #[serde(default = "default_retries")]
    pub retries: u32,
}

/// `[radius]`.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RadiusSection {
    #[serde(default)]
    pub coa_listen: Option<String>,
    #[serde(default)]
    pub accounting_listen: Option<String>,
    #[serde(default)]
    pub gateway: Option<String>,
    #[serde(default = "yes")]
    pub require_event_timestamp: bool,
    #[serde(default = "default_event_timestamp_window_s")]
    pub event_timestamp_window_s: u64,
    #[serde(default = "default_replay_cache_per_client")]
    pub replay_cache_per_client: usize,
    #[serde(default = "default_session_timeout_s")]
    pub session_timeout_s: u64,
    #[serde(default, rename = "client")]
    pub clients: Vec<ClientSection>,
    #[serde(default, rename = "bras")]
    pub bras: Vec<BrasSection>,
}

impl Default for RadiusSection {
    fn default() -> Self {
        RadiusSection {
            coa_listen: None,
            accounting_listen: None,
            gateway: None,
            require_event_timestamp: true,
            event_timestamp_window_s: default_event_timestamp_window_s(),
            replay_cache_per_client: default_replay_cache_per_client(),
            session_timeout_s: default_session_timeout_s(),
            clients: Vec::new(),
            bras: Vec::new(),
        }
    }
}

/// One BRAS shaper sends CoA to, checked, with its secret read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BrasPlan {
    pub name: String,
    pub nas_ip: Option<Ipv4Addr>,
    pub target: NasTarget,
    pub retry: RetryPolicy,
}

/// `[radius]`, checked, with the secrets read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RadiusPlan {
    pub coa_listen: Option<SocketAddr>,
    pub accounting_listen: Option<SocketAddr>,
    pub gateway: Option<String>,
    pub require_event_timestamp: bool,
    pub event_timestamp_window_s: u64,
    pub replay_cache_per_client: usize,
    /// `None` = sessions never expire.
    pub session_timeout_s: Option<u64>,
    pub clients: Vec<ClientConfig>,
    pub bras: Vec<BrasPlan>,
}

impl RadiusPlan {
    /// The server configuration (`None` when neither listener is configured). With only an
    /// accounting listener, CoA listens on an ephemeral loopback port nobody is told about:
    /// [`RadiusServerConfig`] always has one.
    #[must_use]
    pub fn server_config(&self) -> Option<RadiusServerConfig> {
        if self.coa_listen.is_none() && self.accounting_listen.is_none() {
            return None;
        }
        Some(RadiusServerConfig {
            coa_listen: self
                .coa_listen
                .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0))),
            acct_listen: self.accounting_listen,
            clients: self.clients.clone(),
            gateway: self.gateway.clone(),
            require_event_timestamp: self.require_event_timestamp,
            event_timestamp_window_s: Some(self.event_timestamp_window_s),
            replay_cache_per_client: self.replay_cache_per_client,
            session_timeout_s: self.session_timeout_s,
            ..RadiusServerConfig::default()
        })
    }
}

fn err(key: impl Into<String>, msg: impl Into<String>) -> ConfigError {
    ConfigError {
        key: key.into(),
        msg: msg.into(),
    }
}

/// `"ip:port"`, `"[v6]:port"`, or `":port"` for every IPv4 address.
fn listen_addr(key: &str, s: &str) -> Result<SocketAddr, ConfigError> {
    let full = if s.starts_with(':') {
        format!("0.0.0.0{s}")
    } else {
        s.to_owned()
    };
    full.parse().map_err(|_| {
        err(
            key,
            format!("{s:?} is not an address:port (e.g. \":1813\")"),
        )
    })
}

/// `"ip"` (port `default_port`) or `"ip:port"`.
fn peer_addr(key: &str, s: &str, default_port: u16) -> Result<SocketAddr, ConfigError> {
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, default_port));
    }
    s.parse().map_err(|_| {
        err(
            key,
            format!("{s:?} is not an address or address:port (e.g. \"198.18.0.2\")"),
        )
    })
}

/// Reads a shared secret from `file` (relative to `base`).
fn read_secret(key: &str, base: &Path, file: &Path) -> Result<String, ConfigError> {
    let path = base.join(file);
    let text = std::fs::read_to_string(&path)
        .map_err(|e| err(key, format!("reading {}: {e}", path.display())))?;
    let secret = text.lines().next().unwrap_or("").trim().to_owned();
    if secret.is_empty() {
        return Err(err(
            key,
            format!("{} holds no secret (first line empty)", path.display()),
        ));
    }
    Ok(secret)
}

/// Checks `[radius]`; secret files are read relative to `base` (the configuration file's
/// directory).
pub fn validate(s: &RadiusSection, base: &Path) -> Result<RadiusPlan, ConfigError> {
    let coa_listen = s
        .coa_listen
        .as_deref()
        .map(|a| listen_addr("radius.coa_listen", a))
        .transpose()?;
    let accounting_listen = s
        .accounting_listen
        .as_deref()
        .map(|a| listen_addr("radius.accounting_listen", a))
        .transpose()?;
    if let (Some(c), Some(a)) = (coa_listen, accounting_listen) {
        if c == a {
            return Err(err(
                "radius.accounting_listen",
                format!("is the same address as radius.coa_listen ({c})"),
            ));
        }
    }
    if let Some(g) = &s.gateway {
        if g.is_empty() {
            return Err(err("radius.gateway", "is empty"));
        }
    }
    if !(1..=MAX_EVENT_TIMESTAMP_WINDOW_S).contains(&s.event_timestamp_window_s) {
        return Err(err(
            "radius.event_timestamp_window_s",
            format!(
                "{} is outside 1..={MAX_EVENT_TIMESTAMP_WINDOW_S} (seconds)",
                s.event_timestamp_window_s
            ),
        ));
    }
    if !(1..=MAX_REPLAY_CACHE_PER_CLIENT).contains(&s.replay_cache_per_client) {
        return Err(err(
            "radius.replay_cache_per_client",
            format!(
                "{} is outside 1..={MAX_REPLAY_CACHE_PER_CLIENT} (entries)",
                s.replay_cache_per_client
            ),
        ));
    }
    if s.session_timeout_s > MAX_SESSION_TIMEOUT_S {
        return Err(err(
            "radius.session_timeout_s",
            format!(
                "{} is above {MAX_SESSION_TIMEOUT_S} (seconds; 0 = never expire)",
                s.session_timeout_s
            ),
        ));
    }
    let listening = coa_listen.is_some() || accounting_listen.is_some();
    if listening && s.clients.is_empty() {
        return Err(err(
            "radius.client",
            "a listener is configured but no [[radius.client]] may send to it",
        ));
    }
    let mut clients: Vec<ClientConfig> = Vec::new();
    for (i, c) in s.clients.iter().enumerate() {
        let key = format!("radius.client[{i}]");
        let addr: IpAddr = c.address.parse().map_err(|_| {
            err(
                format!("{key}.address"),
                format!("{:?} is not an IP address", c.address),
            )
        })?;
        if clients.iter().any(|o| o.addr == addr) {
            return Err(err(
                format!("{key}.address"),
                format!("{addr} listed twice"),
            ));
        }
        let secret = read_secret(&format!("{key}.secret_file"), base, &c.secret_file)?;
        clients.push(ClientConfig {
            addr,
            secret,
            require_message_authenticator: c.require_message_authenticator,
            name: c.name.clone(),
        });
    }
    let mut bras: Vec<BrasPlan> = Vec::new();
    for (i, b) in s.bras.iter().enumerate() {
        let key = format!("radius.bras[{i}]");
        if b.name.is_empty() {
            return Err(err(format!("{key}.name"), "is empty"));
        }
        if bras.iter().any(|o| o.name == b.name) {
            return Err(err(
                format!("{key}.name"),
                format!("{:?} listed twice", b.name),
            ));
        }
        let addr = peer_addr(&format!("{key}.address"), &b.address, COA_PORT)?;
        let secret = read_secret(&format!("{key}.secret_file"), base, &b.secret_file)?;
        let profile = match (b.profile, &b.juniper_service) {
            (ProfileName::Juniper, Some(service)) => {
                if service.is_empty() || service.contains(['(', ',']) {
                    return Err(err(
                        format!("{key}.juniper_service"),
                        format!("{service:?} is empty or contains '(' or ','"),
                    ));
                }
                RateProfile::Juniper {
                    service: service.clone(),
                }
            }
            (ProfileName::Juniper, None) => {
                return Err(err(
                    format!("{key}.juniper_service"),
                    "profile \"juniper\" needs the dynamic service to activate",
                ));
            }
            (_, Some(_)) => {
                return Err(err(
                    format!("{key}.juniper_service"),
                    "only for profile \"juniper\"",
                ));
            }
            (ProfileName::Mikrotik, None) => RateProfile::Mikrotik,
            (ProfileName::Cisco, None) => RateProfile::Cisco,
            (ProfileName::Plain, None) => RateProfile::Plain,
        };
        if b.timeout_ms == 0 || b.timeout_ms > 60_000 {
            return Err(err(
                format!("{key}.timeout_ms"),
                "must be in 1..=60000 (ms)",
            ));
        }
        if b.retries > 10 {
            return Err(err(format!("{key}.retries"), "must be at most 10"));
        }
        let timeout = Duration::from_millis(b.timeout_ms);
        bras.push(BrasPlan {
            name: b.name.clone(),
            nas_ip: b.nas_ip,
            target: NasTarget {
                addr,
                secret,
                profile,
                message_authenticator: true,
                require_response_message_authenticator: false,
            },
            retry: RetryPolicy {
                initial_timeout: timeout,
                max_timeout: timeout,
                attempts: b.retries + 1,
            },
        });
    }
    Ok(RadiusPlan {
        coa_listen,
        accounting_listen,
        gateway: s.gateway.clone(),
        require_event_timestamp: s.require_event_timestamp,
        event_timestamp_window_s: s.event_timestamp_window_s,
        replay_cache_per_client: s.replay_cache_per_client,
        session_timeout_s: (s.session_timeout_s != 0).then_some(s.session_timeout_s),
        clients,
        bras,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::TempDir;

    fn parse(dir: &Path, text: &str) -> Result<RadiusPlan, ConfigError> {
        let s: RadiusSection = toml::from_str(text).unwrap();
        validate(&s, dir)
    }

    #[test]
    fn secrets_are_read_relative_to_the_config_and_errors_name_the_key() {
        let dir = TempDir::new("radius-config");
        std::fs::create_dir_all(dir.path().join("radius")).unwrap();
        std::fs::write(dir.path().join("radius/bras1.secret"), "s3cret\n").unwrap();
        std::fs::write(dir.path().join("radius/empty.secret"), "\n").unwrap();
        let ok = r#"
coa_listen = "198.18.0.1:3799"
accounting_listen = ":1813"
[[client]]
address = "198.18.0.2"
secret_file = "radius/bras1.secret"
[[bras]]
name = "bras1"
address = "198.18.0.2"
secret_file = "radius/bras1.secret"
profile = "mikrotik"
retries = 2
timeout_ms = 500
"#;
        let p = parse(dir.path(), ok).unwrap();
        assert_eq!(p.coa_listen, Some("198.18.0.1:3799".parse().unwrap()));
        assert_eq!(p.accounting_listen, Some("0.0.0.0:1813".parse().unwrap()));
        assert_eq!(p.clients[0].secret, "s3cret");
        assert!(p.clients[0].require_message_authenticator);
        assert_eq!(p.bras[0].target.addr, "198.18.0.2:3799".parse().unwrap());
        assert_eq!(p.bras[0].target.profile, RateProfile::Mikrotik);
        assert_eq!(p.bras[0].retry.attempts, 3);
        assert_eq!(p.bras[0].retry.initial_timeout, Duration::from_millis(500));
        let cfg = p.server_config().unwrap();
        assert_eq!(cfg.acct_listen, p.accounting_listen);
        assert!(cfg.require_event_timestamp);
        assert_eq!(cfg.event_timestamp_window_s, Some(300));
        assert_eq!(cfg.replay_cache_per_client, 100_000);
        assert_eq!(cfg.session_timeout_s, Some(3600));
        let tuned = parse(
            dir.path(),
            &format!(
                "require_event_timestamp = false\nevent_timestamp_window_s = 60\n\
                 replay_cache_per_client = 5\nsession_timeout_s = 0\n{ok}"
            ),
        )
        .unwrap()
        .server_config()
        .unwrap();
        assert!(!tuned.require_event_timestamp);
        assert_eq!(
            (
                tuned.event_timestamp_window_s,
                tuned.replay_cache_per_client,
                tuned.session_timeout_s
            ),
            (Some(60), 5, None)
        );
        for (bad, key) in [
            (
                "event_timestamp_window_s = 0",
                "radius.event_timestamp_window_s",
            ),
            (
                "event_timestamp_window_s = 3601",
                "radius.event_timestamp_window_s",
            ),
            (
                "replay_cache_per_client = 0",
                "radius.replay_cache_per_client",
            ),
            ("session_timeout_s = 2592001", "radius.session_timeout_s"),
        ] {
            let e = parse(dir.path(), &format!("{bad}\n{ok}")).unwrap_err();
            assert_eq!(e.key, key, "{bad}");
            assert!(
                e.msg.contains("outside") || e.msg.contains("above"),
                "{e:?}"
            );
        }

        let key = |text: &str| parse(dir.path(), text).unwrap_err().key;
        assert_eq!(key("coa_listen = \"nowhere\""), "radius.coa_listen");
        assert_eq!(key("coa_listen = \":3799\""), "radius.client");
        assert_eq!(
            key(&ok.replace(
                "radius/bras1.secret\"\n[[bras]]",
                "radius/missing\"\n[[bras]]"
            )),
            "radius.client[0].secret_file"
        );
        assert_eq!(
            key(&ok.replace(
                "\"radius/bras1.secret\"\nprofile",
                "\"radius/empty.secret\"\nprofile"
            )),
            "radius.bras[0].secret_file"
        );
        assert_eq!(
            key(&ok.replace("\"mikrotik\"", "\"juniper\"")),
            "radius.bras[0].juniper_service"
        );
        assert_eq!(
            key(&ok.replace(
                "address = \"198.18.0.2\"\nsecret_file",
                "address = \"x\"\nsecret_file"
            )),
            "radius.client[0].address"
        );
        assert_eq!(
            key(&ok.replace("timeout_ms = 500", "timeout_ms = 0")),
            "radius.bras[0].timeout_ms"
        );
        assert_eq!(
            key(&ok.replace(":1813", "198.18.0.1:3799")),
            "radius.accounting_listen"
        );
        assert!(toml::from_str::<RadiusSection>("profile = 1").is_err());
    }
}
