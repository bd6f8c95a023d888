//! `shaper.toml`: the gateway's data-plane configuration, parsed with serde and validated as a
//! whole before anything is loaded or bound (`shaper check`). Every error names the key that
//! was wrong, as `class[2].burst` or `interface[0].role`.

use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr},
    path::{Path, PathBuf},
    str::FromStr,
};

use serde::Deserialize;

use crate::controller::{ControllerConfig, EnforcementConfig};
use crate::dataplane::{Limits, Role, htb};
use crate::modem::pipeline::{ModemReboot, PipelineError, PipelineOptions};
use crate::modem::reboot::{ForceRenewKey, RebootMethod, parse_mac};
use crate::policy::{ClassConfig, PortRange, Prefix, Rule, SubscriberKey, validate_rules};
use crate::provision::{QosError, QosLevel};
use crate::tokens::{Role as TokenRole, TokenEntry, TokenError, TokenTable};

/// A configuration error: which key, and what is wrong with it.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{key}: {msg}")]
pub struct ConfigError {
    pub key: String,
    pub msg: String,
}

fn err(key: impl Into<String>, msg: impl Into<String>) -> ConfigError {
    ConfigError {
        key: key.into(),
        msg: msg.into(),
    }
}

/// A rate: a number of bit/s, or a string with a k/M/G suffix ("20M", "1.5G", "64k").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rate(pub u64);

impl FromStr for Rate {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let (num, mult) = match s.char_indices().last() {
            Some((i, 'k' | 'K')) => (&s[..i], 1e3),
            Some((i, 'm' | 'M')) => (&s[..i], 1e6),
            Some((i, 'g' | 'G')) => (&s[..i], 1e9),
            _ => (s, 1.0),
        };
        let v: f64 = num
            .trim()
            .parse()
            .map_err(|_| format!("{s:?} is not a rate (examples: 20000000, \"20M\", \"1.5G\")"))?;
        if !v.is_finite() || v < 0.0 {
            return Err(format!("{s:?} is not a rate"));
        }
        Ok(Rate((v * mult).round() as u64))
    }
}

impl<'de> Deserialize<'de> for Rate {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            N(u64),
            S(String),
        }
        match Raw::deserialize(d)? {
            Raw::N(n) => Ok(Rate(n)),
            Raw::S(s) => s.parse().map_err(serde::de::Error::custom),
        }
    }
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub dataplane: DataplaneSection,
    #[serde(default, rename = "interface")]
    pub interfaces: Vec<InterfaceSection>,
    #[serde(default, rename = "class")]
    pub classes: Vec<ClassSection>,
    #[serde(default, rename = "subscriber")]
    pub subscribers: Vec<SubscriberSection>,
    #[serde(default, rename = "rule")]
    pub rules: Vec<RuleSection>,
    /// The provisioning controller and its HTTP API; absent = data plane only.
    pub controller: Option<ControllerSection>,
    /// Modems the controller provisions (needs `[controller]`).
    #[serde(default, rename = "modem")]
    pub modems: Vec<ModemSection>,
    /// The network service manager (needs `[controller]`): [`crate::nsm::config`].
    pub nsm: Option<crate::nsm::config::NsmSection>,
    /// RADIUS CoA/accounting servers and the BRASes to send CoA to (needs `[controller]`):
    /// [`crate::notify::config`].
    pub radius: Option<crate::notify::config::RadiusSection>,
}

/// `[controller]`: the provisioning controller, its store and its HTTP API.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ControllerSection {
    /// SQLite database holding modems, events and the audit log (created if absent).
    pub store: PathBuf,
    /// Address the HTTP API listens on, e.g. "127.0.0.1:8080".
    pub listen: String,
    /// TOML file of API tokens: `[[token]]` tables with `sha256`, `role`, `subject`.
    pub tokens_file: PathBuf,
    /// First data-plane class id for modems (two per modem); default 1024.
    pub class_first: Option<u32>,
    /// Last data-plane class id for modems; default `dataplane.limits.max_classes - 1`.
    pub class_last: Option<u32>,
    /// HTB minors for modems (one per modem, in each HTB tree: downstream on the
    /// subscriber-side interface, upstream on the upstream one): HTB `rate` = the modem's
    /// committed rate, `ceil` = its maximum, `prio` from its priority. Both or neither; no
    /// HTB classes for modems without them.
    pub htb_minor_first: Option<u16>,
    pub htb_minor_last: Option<u16>,
    #[serde(default)]
    pub enforcement: EnforcementConfig,
    /// The modem pipeline (files, delivery, reboots); required when
    /// `enforcement.modem_pipeline` is on.
    pub modem_pipeline: Option<ModemPipelineSection>,
    /// The grant catalogue subscribers (and CSRs, if so configured) choose from; owned and
    /// checked by `provision::catalogue`.
    #[serde(default)]
    pub grants: crate::provision::catalogue::GrantsSection,
}

/// `[controller.modem_pipeline]` (docs/MODEM-CONFIG.md). Relative paths are relative to the
/// configuration file's directory.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ModemPipelineSection {
    /// Where the pipeline writes the files (created if absent).
    pub config_dir: PathBuf,
    /// Where operators drop files for the controller to check and enforce.
    pub incoming_dir: Option<PathBuf>,
    /// The CMTS MIC shared secret.
    pub cmts_key_file: PathBuf,
    /// Ed25519 secret key (`shaper modem-config keygen`) signing generated files.
    pub signing_key_file: Option<PathBuf>,
    /// Public keys accepted on dropped files (none: signatures are not checked).
    #[serde(default)]
    pub trusted_keys: Vec<PathBuf>,
    /// 32-byte secret (64 hex digits) naming the files.
    pub name_key_file: PathBuf,
    pub keep_versions: Option<u64>,
    pub max_cpe: Option<u8>,
    /// Serve `config_dir` by TFTP on this address.
    pub tftp_listen: Option<String>,
    pub reboot_attempts: Option<u32>,
    pub reboot_backoff_ms: Option<u64>,
    pub snmp_port: Option<u16>,
    pub forcerenew_source_port: Option<u16>,
    /// Command hook: program and arguments.
    pub hook: Option<Vec<String>>,
}

/// `[[modem]]`: a modem, its addresses and its base plan.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ModemSection {
    pub id: String,
    /// "198.18.0.10" (/32), "2001:db8::10" (/128) or "2001:db8:0:10::/64".
    #[serde(default)]
    pub addrs: Vec<String>,
    pub max_down: Option<Rate>,
    pub max_up: Option<Rate>,
    pub committed_down: Option<Rate>,
    pub committed_up: Option<Rate>,
    /// Token-bucket depth in bytes.
    pub burst: Option<u32>,
    /// Traffic priority 0..=7, higher is better.
    pub priority: Option<u8>,
    pub mtu: Option<u16>,
    /// The modem's MAC address (needed to reboot it).
    pub mac: Option<String>,
    /// How the modem pipeline reboots it: "snmp", "forcerenew", "command" or "none".
    pub reboot: Option<String>,
    /// SNMP write community for `reboot = "snmp"`.
    pub snmp_community: Option<String>,
    /// RFC 6704 reconfigure key, 32 hex digits, for `reboot = "forcerenew"`.
    pub forcerenew_key: Option<String>,
    /// The xid the modem's DHCP client expects in a FORCERENEW.
    pub forcerenew_xid: Option<u32>,
}

/// One `[[modem]]`, checked.
#[derive(Clone, Debug, PartialEq)]
pub struct ModemPlan {
    pub id: String,
    pub addrs: Vec<SubscriberKey>,
    pub base: QosLevel,
    /// How the modem pipeline reboots it; `None`: it does not.
    pub reboot: Option<ModemReboot>,
}

/// `[controller]` and the `[[modem]]`s, checked.
#[derive(Clone, Debug, PartialEq)]
pub struct ControllerPlan {
    pub store: PathBuf,
    pub listen: SocketAddr,
    pub tokens_file: PathBuf,
    pub config: ControllerConfig,
    pub enforcement: EnforcementConfig,
    /// `[controller.modem_pipeline]`, paths resolved.
    pub pipeline: Option<PipelineOptions>,
    pub modems: Vec<ModemPlan>,
    /// `[controller.grants]`, checked.
    pub catalogue: crate::provision::GrantCatalogue,
    /// The HTB trees modems get classes in: (direction, interface, link rate, default minor).
    pub htb_trees: Vec<(crate::controller::Direction, String, u64, u16)>,
}

impl ControllerPlan {
    /// Every modem's binding, in configuration order: modem `i` gets classes `first + 2i`
    /// (up) and `first + 2i + 1` (down), so the ids stay the same across restarts as long as
    /// the modem list keeps its order.
    pub fn bindings(&self) -> Vec<crate::controller::ModemBinding> {
        let first = *self.config.classes.start();
        self.modems
            .iter()
            .enumerate()
            .map(|(i, m)| {
                let up = first + 2 * i as u32;
                let minor = |r: &Option<std::ops::RangeInclusive<u16>>| {
                    r.as_ref().map(|r| r.start() + i as u16)
                };
                crate::controller::ModemBinding {
                    modem: m.id.clone(),
                    addrs: m.addrs.clone(),
                    up_class: up,
                    down_class: up + 1,
                    htb_minor_down: minor(&self.config.htb_minors_down),
                    htb_minor_up: minor(&self.config.htb_minors_up),
                }
            })
            .collect()
    }
}

/// A tokens file: `[[token]]` tables (only digests, never tokens).
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
struct TokensFile {
    #[serde(default, rename = "token")]
    tokens: Vec<TokenSection>,
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
struct TokenSection {
    /// SHA-256 of the token, 64 hex digits (`shaper token hash <TOKEN>`).
    sha256: String,
    role: TokenRole,
    subject: String,
}

impl ControllerPlan {
    /// Reads and parses `controller.tokens_file`: `shaper check` and `shaper run` both call it
    /// before anything is applied, so a configuration that checks is one that runs.
    ///
    /// # Errors
    /// The file cannot be read, or a token in it is wrong (the key names it).
    pub fn load_tokens(&self) -> Result<TokenTable, ConfigError> {
        let path = &self.tokens_file;
        let text = std::fs::read_to_string(path).map_err(|e| {
            err(
                "controller.tokens_file",
                format!("reading {}: {e}", path.display()),
            )
        })?;
        parse_tokens(&text).map_err(|e| ConfigError {
            key: format!("controller.tokens_file ({}): {}", path.display(), e.key),
            msg: e.msg,
        })
    }
}

/// Parses a tokens file into the API's token table. Errors name the key (`token[1].sha256`).
pub fn parse_tokens(text: &str) -> Result<TokenTable, ConfigError> {
    let file: TokensFile = toml::from_str(text).map_err(|e| {
        let key = e.span().map(|s| locate(text, s.start)).unwrap_or_default();
        err(
            if key.is_empty() { "tokens".into() } else { key },
            e.message().to_string(),
        )
    })?;
    TokenTable::new(file.tokens.into_iter().map(|t| TokenEntry {
        sha256_hex: t.sha256,
        role: t.role,
        subject: t.subject,
    }))
    .map_err(|e| match e {
        TokenError::BadHash { index } => err(
            format!("token[{index}].sha256"),
            "not 64 hex digits (make one with `shaper token hash <TOKEN>`)",
        ),
        TokenError::EmptySubject { index } => err(format!("token[{index}].subject"), "is empty"),
        TokenError::Duplicate { index, first } => err(
            format!("token[{index}].sha256"),
            format!("the same digest as token[{first}]"),
        ),
    })
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct DataplaneSection {
    /// bpffs directory for pinned maps and links.
    pub pin_root: PathBuf,
    pub fail_closed: bool,
    pub malformed_drop: bool,
    pub flow_sample_shift: u32,
    /// Subscriber address pools: IPv4 prefixes (/12../32) of subscriber addresses, IPv6
    /// prefixes (/44../64) of subscriber /64s. Subscribers in a pool are found by arithmetic
    /// instead of a hash lookup (DATAPLANE.md §2.1).
    pub subscriber_pools: Vec<String>,
    pub limits: Limits,
}

impl Default for DataplaneSection {
    fn default() -> Self {
        Self {
            pin_root: PathBuf::from("/sys/fs/bpf/shaper"),
            fail_closed: false,
            malformed_drop: false,
            flow_sample_shift: 4,
            subscriber_pools: Vec::new(),
            limits: Limits::default(),
        }
    }
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct InterfaceSection {
    pub name: String,
    pub role: Role,
    /// Link rate for the HTB tree on this interface's egress; no HTB when absent.
    pub htb_link_rate: Option<Rate>,
    /// HTB class for traffic no class claims (default 0xfffe).
    pub htb_default_minor: Option<u16>,
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HtbSection {
    /// Interface whose egress HTB tree holds the class.
    pub interface: String,
    pub minor: u16,
    pub rate: Rate,
    pub ceil: Rate,
    #[serde(default)]
    pub prio: u8,
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ClassSection {
    pub id: u32,
    /// Policer rate (XDP drops above rate + burst).
    pub rate: Option<Rate>,
    /// Policer burst in bytes.
    #[serde(default)]
    pub burst: u32,
    pub dscp: Option<u8>,
    pub mtu: Option<u16>,
    #[serde(default)]
    pub block: bool,
    /// Every subscriber on the class shares one bucket (default: one bucket per subscriber,
    /// the class being their plan).
    #[serde(default)]
    pub shared_bucket: bool,
    pub htb: Option<HtbSection>,
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SubscriberSection {
    /// "198.18.0.10", "2001:db8::10" (= /128) or "2001:db8:0:5::/64".
    pub addr: String,
    #[serde(default)]
    pub up_class: u32,
    #[serde(default)]
    pub down_class: u32,
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RuleSection {
    pub id: u32,
    /// Protocol number or name (tcp, udp, sctp, icmp, icmpv6); absent = any.
    pub proto: Option<toml::Value>,
    pub src: Option<String>,
    pub dst: Option<String>,
    /// "443", "1024-65535"; absent = any.
    pub sport: Option<String>,
    pub dport: Option<String>,
    pub precedence: u32,
    pub class: u32,
}

/// A configuration turned into data-plane objects, all checked.
#[derive(Clone, Debug)]
pub struct Validated {
    pub config: Config,
    /// `dataplane.subscriber_pools`, parsed and laid out.
    pub pools: Vec<Prefix>,
    pub classes: Vec<(u32, ClassConfig, Option<HtbSection>)>,
    pub subscribers: Vec<(SubscriberKey, [u32; 2])>,
    pub rules: Vec<Rule>,
    /// The controller, when `[controller]` is present.
    pub controller: Option<ControllerPlan>,
    /// The network service manager, when `[nsm]` is present.
    pub nsm: Option<crate::nsm::config::NsmPlan>,
    /// RADIUS, when `[radius]` is present (secrets read).
    pub radius: Option<crate::notify::config::RadiusPlan>,
}

/// Reads, parses and validates a configuration file; relative paths in it (the modem
/// pipeline's) are relative to its directory.
pub fn parse_file(path: &Path) -> Result<Validated, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| err("config", format!("reading {}: {e}", path.display())))?;
    let base = path.parent().filter(|p| !p.as_os_str().is_empty());
    parse_in(&text, base.unwrap_or(Path::new(".")))
}

/// Parses and validates TOML text; relative paths are taken as they are (relative to the
/// working directory).
pub fn parse(text: &str) -> Result<Validated, ConfigError> {
    parse_in(text, Path::new(""))
}

/// Parses and validates TOML text; relative paths are relative to `base`.
pub fn parse_in(text: &str, base: &Path) -> Result<Validated, ConfigError> {
    let config: Config = toml::from_str(text).map_err(|e| {
        let key = e.span().map(|s| locate(text, s.start)).unwrap_or_default();
        err(
            if key.is_empty() {
                "config".to_string()
            } else {
                key
            },
            e.message().to_string(),
        )
    })?;
    validate_in(config, base)
}

/// "line N" for a byte offset, so parse errors point somewhere.
fn locate(text: &str, offset: usize) -> String {
    let line = text[..offset.min(text.len())].matches('\n').count() + 1;
    format!("line {line}")
}

pub fn parse_prefix(s: &str, default_v6_len: u8) -> Result<Prefix, String> {
    let (addr, len) = match s.split_once('/') {
        Some((a, l)) => (a, Some(l)),
        None => (s, None),
    };
    let addr: IpAddr = addr
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not an IP address or prefix"))?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    let len = match len {
        Some(l) => l
            .trim()
            .parse::<u8>()
            .map_err(|_| format!("{s:?}: bad prefix length"))?,
        None if addr.is_ipv4() => 32,
        None => default_v6_len,
    };
    if len > max {
        return Err(format!("{s:?}: prefix length {len} is longer than {max}"));
    }
    Ok(Prefix { addr, len })
}

pub fn parse_ports(s: &str) -> Result<PortRange, String> {
    let p = |x: &str| {
        x.trim()
            .parse::<u16>()
            .map_err(|_| format!("{s:?} is not a port or port range (\"443\", \"1024-65535\")"))
    };
    let r = match s.split_once('-') {
        Some((a, b)) => PortRange {
            lo: p(a)?,
            hi: p(b)?,
        },
        None => {
            let v = p(s)?;
            PortRange { lo: v, hi: v }
        }
    };
    if r.lo > r.hi {
        return Err(format!("{s:?}: empty range"));
    }
    Ok(r)
}

fn parse_proto(v: &toml::Value) -> Result<u8, String> {
    match v {
        toml::Value::Integer(n) if (0..=255).contains(n) => Ok(*n as u8),
        toml::Value::String(s) => match s.to_ascii_lowercase().as_str() {
            "tcp" => Ok(6),
            "udp" => Ok(17),
            "sctp" => Ok(132),
            "icmp" => Ok(1),
            "icmpv6" | "ipv6-icmp" => Ok(58),
            "gre" => Ok(47),
            "esp" => Ok(50),
            other => other.parse().map_err(|_| format!("unknown protocol {s:?}")),
        },
        other => Err(format!(
            "{other} is not a protocol (a number 0..255 or tcp/udp/sctp/icmp/icmpv6)"
        )),
    }
}

/// Checks a parsed configuration (relative paths as they are).
pub fn validate(config: Config) -> Result<Validated, ConfigError> {
    validate_in(config, Path::new(""))
}

/// Checks a parsed configuration; relative paths are relative to `base`.
pub fn validate_in(config: Config, base: &Path) -> Result<Validated, ConfigError> {
    let dp = &config.dataplane;
    if dp.flow_sample_shift > 31 {
        return Err(err(
            "dataplane.flow_sample_shift",
            "must be 0..=31 (31 = no flow sampling)",
        ));
    }
    let mut pools = Vec::new();
    for (i, p) in dp.subscriber_pools.iter().enumerate() {
        let key = format!("dataplane.subscriber_pools[{i}]");
        pools.push(parse_prefix(p, 64).map_err(|e| err(key.clone(), e))?);
    }
    crate::dataplane::subs::Pools::new(&pools, dp.limits.max_subscribers)
        .map_err(|e| err("dataplane.subscriber_pools", e.to_string()))?;
    let mut ifaces: HashMap<&str, &InterfaceSection> = HashMap::new();
    for (i, it) in config.interfaces.iter().enumerate() {
        if it.name.is_empty() || it.name.len() > 15 || it.name.contains('/') {
            return Err(err(
                format!("interface[{i}].name"),
                format!("{:?} is not an interface name", it.name),
            ));
        }
        if ifaces.insert(&it.name, it).is_some() {
            return Err(err(
                format!("interface[{i}].name"),
                format!("interface {:?} is listed twice", it.name),
            ));
        }
        if let Some(r) = it.htb_link_rate {
            if r.0 < htb::MIN_RATE_BPS {
                return Err(err(
                    format!("interface[{i}].htb_link_rate"),
                    "must be at least 8 bit/s",
                ));
            }
        }
    }
    let mut classes = Vec::new();
    let mut ids = HashMap::new();
    for (i, c) in config.classes.iter().enumerate() {
        let key = |f: &str| format!("class[{i}].{f}");
        if let Some(prev) = ids.insert(c.id, i) {
            return Err(err(
                key("id"),
                format!("class id {} is also used by class[{prev}]", c.id),
            ));
        }
        if c.id >= dp.limits.max_classes {
            return Err(err(
                key("id"),
                format!(
                    "{} is beyond dataplane.limits.max_classes ({})",
                    c.id, dp.limits.max_classes
                ),
            ));
        }
        let mut skb_priority = 0;
        if let Some(h) = &c.htb {
            let Some(it) = ifaces.get(h.interface.as_str()) else {
                return Err(err(
                    key("htb.interface"),
                    format!("{:?} is not a configured interface", h.interface),
                ));
            };
            if it.htb_link_rate.is_none() {
                return Err(err(
                    key("htb.interface"),
                    format!("interface {:?} has no htb_link_rate", h.interface),
                ));
            }
            if !(htb::MIN_MINOR..=htb::MAX_MINOR).contains(&h.minor) {
                return Err(err(
                    key("htb.minor"),
                    format!(
                        "{} is outside {}..={}",
                        h.minor,
                        htb::MIN_MINOR,
                        htb::MAX_MINOR
                    ),
                ));
            }
            if h.ceil.0 < h.rate.0 {
                return Err(err(key("htb.ceil"), "must be at least htb.rate"));
            }
            if h.prio > htb::MAX_PRIO {
                return Err(err(key("htb.prio"), "must be 0..=7"));
            }
            skb_priority = htb::skb_priority(h.minor);
        }
        let cfg = ClassConfig {
            rate_bps: c.rate.map(|r| r.0),
            burst_bytes: c.burst,
            dscp: c.dscp,
            mtu: c.mtu,
            skb_priority,
            block: c.block,
            shared_bucket: c.shared_bucket,
        };
        cfg.validate(c.id).map_err(|e| {
            let field = match e {
                crate::policy::PolicyError::RateTooLow { .. }
                | crate::policy::PolicyError::RateTooHigh { .. } => "rate",
                crate::policy::PolicyError::BurstTooSmall { .. } => "burst",
                crate::policy::PolicyError::BadDscp { .. } => "dscp",
                crate::policy::PolicyError::MtuTooSmall { .. } => "mtu",
                _ => "id",
            };
            err(key(field), e.to_string())
        })?;
        classes.push((c.id, cfg, c.htb.clone()));
    }
    let mut subscribers = Vec::new();
    let mut seen = HashMap::new();
    for (i, s) in config.subscribers.iter().enumerate() {
        let key = |f: &str| format!("subscriber[{i}].{f}");
        let p = parse_prefix(&s.addr, 128).map_err(|m| err(key("addr"), m))?;
        if !matches!((p.is_v4(), p.len), (true, 32) | (false, 128 | 64)) {
            return Err(err(
                key("addr"),
                "IPv4 subscribers are /32, IPv6 subscribers /128 or /64",
            ));
        }
        for (f, c) in [("up_class", s.up_class), ("down_class", s.down_class)] {
            if c != 0 && !ids.contains_key(&c) {
                return Err(err(key(f), format!("class {c} is not defined")));
            }
        }
        let k = SubscriberKey {
            addr: Prefix {
                addr: p.addr,
                len: p.len,
            }
            .masked_addr(),
            len: p.len,
        };
        if let Some(prev) = seen.insert(k, i) {
            return Err(err(
                key("addr"),
                format!("same subscriber as subscriber[{prev}]"),
            ));
        }
        subscribers.push((k, [s.up_class, s.down_class]));
    }
    if subscribers.len() as u64 > u64::from(dp.limits.max_subscribers) {
        return Err(err(
            "subscriber",
            format!(
                "{} subscribers; dataplane.limits.max_subscribers is {}",
                subscribers.len(),
                dp.limits.max_subscribers
            ),
        ));
    }
    let mut rules = Vec::new();
    for (i, r) in config.rules.iter().enumerate() {
        let key = |f: &str| format!("rule[{i}].{f}");
        if r.id == 0 {
            return Err(err(key("id"), "0 is reserved; use 1 or more"));
        }
        if r.precedence == u32::MAX {
            return Err(err(key("precedence"), "4294967295 is reserved"));
        }
        if !ids.contains_key(&r.class) {
            return Err(err(
                key("class"),
                format!("class {} is not defined", r.class),
            ));
        }
        let proto = r
            .proto
            .as_ref()
            .map(parse_proto)
            .transpose()
            .map_err(|m| err(key("proto"), m))?;
        let src = r
            .src
            .as_deref()
            .map(|s| parse_prefix(s, 128))
            .transpose()
            .map_err(|m| err(key("src"), m))?;
        let dst = r
            .dst
            .as_deref()
            .map(|s| parse_prefix(s, 128))
            .transpose()
            .map_err(|m| err(key("dst"), m))?;
        let v6 = src
            .map(|p| !p.is_v4())
            .or(dst.map(|p| !p.is_v4()))
            .unwrap_or(false);
        let any = if v6 {
            Prefix::any_v6()
        } else {
            Prefix::any_v4()
        };
        let src = src.unwrap_or(any);
        let dst = dst.unwrap_or(any);
        if src.is_v4() != dst.is_v4() {
            return Err(err(
                key("dst"),
                "source and destination are of different address families",
            ));
        }
        let sport = r
            .sport
            .as_deref()
            .map(parse_ports)
            .transpose()
            .map_err(|m| err(key("sport"), m))?
            .unwrap_or(PortRange::ANY);
        let dport = r
            .dport
            .as_deref()
            .map(parse_ports)
            .transpose()
            .map_err(|m| err(key("dport"), m))?
            .unwrap_or(PortRange::ANY);
        rules.push(Rule {
            id: r.id,
            proto,
            src,
            dst,
            sport,
            dport,
            precedence: r.precedence,
            class: r.class,
        });
    }
    validate_rules(&rules).map_err(|e| err("rule", e.to_string()))?;
    crate::dataplane::rules::compile(&rules, 0, 0).map_err(|e| err("rule", e.to_string()))?;
    let controller = validate_controller(&config, &ids, &seen, base)?;
    let radius = match (&config.radius, &controller) {
        (None, _) => None,
        (Some(_), None) => {
            return Err(err(
                "radius",
                "needs [controller] (CoA changes its modems' levels)",
            ));
        }
        (Some(r), Some(_)) => Some(crate::notify::config::validate(r, base)?),
    };
    let bras_configured = radius.as_ref().is_some_and(|r| !r.bras.is_empty());
    let nsm = match (&config.nsm, &controller) {
        (None, _) => None,
        (Some(_), None) => return Err(err("nsm", "needs [controller] (its API and store)")),
        (Some(n), Some(ctl)) => Some(crate::nsm::config::validate(
            n,
            config.dataplane.limits.max_classes,
            &classes.iter().map(|c| c.0).collect::<Vec<_>>(),
            &rules.iter().map(|r| r.id).collect::<Vec<_>>(),
            Some(&ctl.config.classes),
            &config
                .classes
                .iter()
                .filter_map(|c| c.htb.as_ref().map(|h| h.minor))
                .chain(
                    config
                        .interfaces
                        .iter()
                        .filter(|i| i.htb_link_rate.is_some())
                        .map(|i| i.htb_default_minor.unwrap_or(htb::MAX_MINOR)),
                )
                .collect::<Vec<_>>(),
            bras_configured,
        )?),
    };
    Ok(Validated {
        config,
        pools,
        classes,
        subscribers,
        rules,
        controller,
        nsm,
        radius,
    })
}

/// The config key of a QoS field.
fn modem_field(e: &QosError) -> &'static str {
    let field = match e {
        QosError::RateTooLow { field, .. }
        | QosError::RateTooHigh { field, .. }
        | QosError::CommittedAboveMax { field, .. } => *field,
        QosError::BurstTooSmall { .. } => "burst",
        QosError::PriorityOutOfRange(_) => "priority",
        QosError::MtuTooSmall(_) => "mtu",
        _ => "",
    };
    match field {
        "max_up_bps" => "max_up",
        "max_down_bps" => "max_down",
        "committed_up_bps" => "committed_up",
        "committed_down_bps" => "committed_down",
        "burst" => "burst",
        "priority" => "priority",
        "mtu" => "mtu",
        _ => "id",
    }
}

/// Checks `[controller]` and `[[modem]]`. `class_ids`: static class ids; `static_subs`: static
/// subscriber keys (a modem may not claim one).
fn validate_controller(
    config: &Config,
    class_ids: &HashMap<u32, usize>,
    static_subs: &HashMap<SubscriberKey, usize>,
    base_dir: &Path,
) -> Result<Option<ControllerPlan>, ConfigError> {
    let Some(c) = &config.controller else {
        if !config.modems.is_empty() {
            return Err(err(
                "modem",
                "[[modem]] entries need a [controller] section",
            ));
        }
        return Ok(None);
    };
    if c.store.as_os_str().is_empty() {
        return Err(err("controller.store", "is empty"));
    }
    if c.tokens_file.as_os_str().is_empty() {
        return Err(err("controller.tokens_file", "is empty"));
    }
    let listen: SocketAddr = c.listen.parse().map_err(|_| {
        err(
            "controller.listen",
            format!(
                "{:?} is not an address:port (e.g. \"127.0.0.1:8080\")",
                c.listen
            ),
        )
    })?;
    let pipeline = c
        .modem_pipeline
        .as_ref()
        .map(|p| validate_pipeline(p, base_dir))
        .transpose()?;
    if c.enforcement.modem_pipeline && pipeline.is_none() {
        return Err(err(
            "controller.modem_pipeline",
            "the section is required when controller.enforcement.modem_pipeline = true",
        ));
    }
    let max_classes = config.dataplane.limits.max_classes;
    let first = c.class_first.unwrap_or(1024);
    let last = c.class_last.unwrap_or(max_classes.saturating_sub(1));
    if first == 0 {
        return Err(err(
            "controller.class_first",
            "class id 0 means \"no class\"",
        ));
    }
    if last >= max_classes {
        return Err(err(
            "controller.class_last",
            format!("{last} is beyond dataplane.limits.max_classes ({max_classes})"),
        ));
    }
    if first > last {
        return Err(err(
            "controller.class_first",
            format!("{first} is above controller.class_last ({last})"),
        ));
    }
    if let Some((id, i)) = class_ids
        .iter()
        .filter(|(id, _)| (first..=last).contains(*id))
        .min_by_key(|(_, i)| **i)
    {
        return Err(err(
            format!("class[{i}].id"),
            format!("{id} lies in the controller's class ids {first}..={last}"),
        ));
    }
    let mut modems = Vec::new();
    let mut ids: HashMap<&str, usize> = HashMap::new();
    let mut addrs_seen: HashMap<SubscriberKey, usize> = HashMap::new();
    for (i, m) in config.modems.iter().enumerate() {
        let key = |f: &str| format!("modem[{i}].{f}");
        if m.id.is_empty() || m.id.len() > 128 || m.id.chars().any(|ch| ch.is_control()) {
            return Err(err(key("id"), format!("{:?} is not a modem id", m.id)));
        }
        if let Some(prev) = ids.insert(&m.id, i) {
            return Err(err(
                key("id"),
                format!("modem {:?} is also modem[{prev}]", m.id),
            ));
        }
        let mut addrs = Vec::new();
        for (j, a) in m.addrs.iter().enumerate() {
            let akey = format!("modem[{i}].addrs[{j}]");
            let p = parse_prefix(a, 128).map_err(|msg| err(&akey, msg))?;
            if !matches!((p.is_v4(), p.len), (true, 32) | (false, 128 | 64)) {
                return Err(err(
                    akey,
                    "IPv4 addresses are /32, IPv6 addresses /128 or /64",
                ));
            }
            let k = SubscriberKey {
                addr: p.masked_addr(),
                len: p.len,
            };
            if let Some(prev) = static_subs.get(&k) {
                return Err(err(akey, format!("same address as subscriber[{prev}]")));
            }
            if let Some(prev) = addrs_seen.insert(k, i) {
                return Err(err(
                    akey,
                    if prev == i {
                        "listed twice".to_string()
                    } else {
                        format!("also an address of modem[{prev}]")
                    },
                ));
            }
            addrs.push(k);
        }
        let base = QosLevel {
            max_up_bps: m.max_up.map(|r| r.0),
            max_down_bps: m.max_down.map(|r| r.0),
            committed_up_bps: m.committed_up.map(|r| r.0),
            committed_down_bps: m.committed_down.map(|r| r.0),
            burst_bytes: m.burst,
            priority: m.priority,
            mtu: m.mtu,
            ..QosLevel::default()
        };
        base.validate()
            .map_err(|e| err(key(modem_field(&e)), e.to_string()))?;
        let reboot = validate_reboot(m, i, &addrs, pipeline.as_ref())?;
        modems.push(ModemPlan {
            id: m.id.clone(),
            addrs,
            base,
            reboot,
        });
    }
    let needed = 2 * modems.len() as u64;
    if needed > u64::from(last - first) + 1 {
        return Err(err(
            "modem",
            format!(
                "{} modems need {needed} class ids; controller.class_first..=class_last holds {}",
                modems.len(),
                u64::from(last - first) + 1
            ),
        ));
    }
    let subs = static_subs.len() as u64 + addrs_seen.len() as u64;
    if subs > u64::from(config.dataplane.limits.max_subscribers) {
        return Err(err(
            "modem",
            format!(
                "{subs} subscriber entries with the modems' addresses; \
                 dataplane.limits.max_subscribers is {}",
                config.dataplane.limits.max_subscribers
            ),
        ));
    }
    let (htb_minors, htb_trees) = validate_modem_htb(config, c, modems.len())?;
    let catalogue = crate::provision::GrantCatalogue::from_section(&c.grants).map_err(|e| {
        let text = e.to_string();
        match text.split_once(": ") {
            Some((key, msg)) => err(key, msg),
            None => err("controller.grants", text),
        }
    })?;
    let in_dir = |d| {
        htb_trees
            .iter()
            .any(|(dir, ..)| *dir == d)
            .then(|| htb_minors.clone())
            .flatten()
    };
    Ok(Some(ControllerPlan {
        store: c.store.clone(),
        listen,
        tokens_file: c.tokens_file.clone(),
        config: ControllerConfig {
            classes: first..=last,
            htb_minors_down: in_dir(crate::controller::Direction::Down),
            htb_minors_up: in_dir(crate::controller::Direction::Up),
        },
        enforcement: c.enforcement,
        pipeline,
        modems,
        catalogue,
        htb_trees,
    }))
}

/// `controller.htb_minor_first..=htb_minor_last`: the modems' HTB minors and the trees they
/// go in (a subscriber-side interface's tree shapes downstream, an upstream one's upstream).
#[allow(clippy::type_complexity, reason = "a private helper's tuple")]
fn validate_modem_htb(
    config: &Config,
    c: &ControllerSection,
    modems: usize,
) -> Result<
    (
        Option<std::ops::RangeInclusive<u16>>,
        Vec<(crate::controller::Direction, String, u64, u16)>,
    ),
    ConfigError,
> {
    let (first, last) = match (c.htb_minor_first, c.htb_minor_last) {
        (None, None) => return Ok((None, Vec::new())),
        (Some(f), Some(l)) => (f, l),
        (Some(_), None) => {
            return Err(err(
                "controller.htb_minor_last",
                "needed with htb_minor_first",
            ));
        }
        (None, Some(_)) => {
            return Err(err(
                "controller.htb_minor_first",
                "needed with htb_minor_last",
            ));
        }
    };
    if first < htb::MIN_MINOR || last >= htb::MAX_MINOR || first > last {
        return Err(err(
            "controller.htb_minor_first",
            format!(
                "{first:#x}..={last:#x} must lie within {:#x}..={:#x}",
                htb::MIN_MINOR,
                htb::MAX_MINOR - 1
            ),
        ));
    }
    if modems > usize::from(last - first) + 1 {
        return Err(err(
            "controller.htb_minor_last",
            format!(
                "{modems} modems need {modems} HTB minors; {first:#x}..={last:#x} holds {}",
                last - first + 1
            ),
        ));
    }
    let mut trees = Vec::new();
    for (i, it) in config.interfaces.iter().enumerate() {
        let Some(rate) = it.htb_link_rate else {
            continue;
        };
        let default_minor = it.htb_default_minor.unwrap_or(htb::MAX_MINOR);
        if (first..=last).contains(&default_minor) {
            return Err(err(
                format!("interface[{i}].htb_default_minor"),
                format!("{default_minor:#x} lies in the modems' HTB minors {first:#x}..={last:#x}"),
            ));
        }
        let dir = match it.role {
            Role::Subscriber => crate::controller::Direction::Down,
            Role::Upstream => crate::controller::Direction::Up,
        };
        trees.push((dir, it.name.clone(), rate.0, default_minor));
    }
    if trees.is_empty() {
        return Err(err(
            "controller.htb_minor_first",
            "no interface has an HTB tree (interface.htb_link_rate)",
        ));
    }
    if let Some((i, h)) = config.classes.iter().enumerate().find_map(|(i, k)| {
        k.htb
            .as_ref()
            .filter(|h| (first..=last).contains(&h.minor))
            .map(|h| (i, h))
    }) {
        return Err(err(
            format!("class[{i}].htb.minor"),
            format!(
                "{:#x} lies in the modems' HTB minors {first:#x}..={last:#x}",
                h.minor
            ),
        ));
    }
    Ok((Some(first..=last), trees))
}

/// `path` relative to `base` unless absolute.
fn resolve(base: &Path, path: &Path) -> PathBuf {
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        base.join(path)
    }
}

/// Checks `[controller.modem_pipeline]`, reading every key file.
fn validate_pipeline(
    p: &ModemPipelineSection,
    base: &Path,
) -> Result<PipelineOptions, ConfigError> {
    let key = |f: &str| format!("controller.modem_pipeline.{f}");
    for (f, v) in [
        ("config_dir", &p.config_dir),
        ("cmts_key_file", &p.cmts_key_file),
        ("name_key_file", &p.name_key_file),
    ] {
        if v.as_os_str().is_empty() {
            return Err(err(key(f), "is empty"));
        }
    }
    let mut o = PipelineOptions::new(
        resolve(base, &p.config_dir),
        resolve(base, &p.cmts_key_file),
        resolve(base, &p.name_key_file),
    );
    if let Some(d) = &p.incoming_dir {
        if d.as_os_str().is_empty() {
            return Err(err(key("incoming_dir"), "is empty"));
        }
        let d = resolve(base, d);
        if d == o.config_dir {
            return Err(err(
                key("incoming_dir"),
                "must differ from config_dir (dropped files are moved away once handled)",
            ));
        }
        o.incoming_dir = Some(d);
    }
    o.signing_key_file = p.signing_key_file.as_deref().map(|f| resolve(base, f));
    o.trusted_keys = p.trusted_keys.iter().map(|f| resolve(base, f)).collect();
    if let Some(k) = p.keep_versions {
        if k < 2 {
            return Err(err(
                key("keep_versions"),
                "must be at least 2 (the current file and the previous one, for revert)",
            ));
        }
        o.keep_versions = k;
    }
    if let Some(n) = p.max_cpe {
        if n == 0 {
            return Err(err(key("max_cpe"), "must be 1..=255"));
        }
        o.max_cpe = n;
    }
    if let Some(t) = &p.tftp_listen {
        o.tftp_listen = Some(t.parse().map_err(|_| {
            err(
                key("tftp_listen"),
                format!("{t:?} is not an address:port (e.g. \"198.18.0.1:69\")"),
            )
        })?);
    }
    if let Some(n) = p.reboot_attempts {
        if n == 0 {
            return Err(err(key("reboot_attempts"), "must be at least 1"));
        }
        o.reboot_attempts = n;
    }
    if let Some(ms) = p.reboot_backoff_ms {
        o.reboot_backoff_ms = ms;
    }
    if let Some(port) = p.snmp_port {
        if port == 0 {
            return Err(err(key("snmp_port"), "must be 1..=65535"));
        }
        o.snmp_port = port;
    }
    if let Some(port) = p.forcerenew_source_port {
        o.forcerenew_source_port = port;
    }
    if let Some(h) = &p.hook {
        if h.first().is_none_or(String::is_empty) {
            return Err(err(
                key("hook"),
                "must name a program first: [\"/path/to/program\", \"arg\", …]",
            ));
        }
        o.hook = Some(h.clone());
    }
    o.load_keys().map_err(|e| match e {
        PipelineError::Key { field, source } => err(key(&field), source.to_string()),
        other => err("controller.modem_pipeline", other.to_string()),
    })?;
    Ok(o)
}

/// Checks a `[[modem]]`'s reboot keys.
fn validate_reboot(
    m: &ModemSection,
    i: usize,
    addrs: &[SubscriberKey],
    pipeline: Option<&PipelineOptions>,
) -> Result<Option<ModemReboot>, ConfigError> {
    let key = |f: &str| format!("modem[{i}].{f}");
    let mac = m
        .mac
        .as_deref()
        .map(|s| parse_mac(s).map_err(|e| err(key("mac"), e.to_string())))
        .transpose()?;
    let fr_key = m
        .forcerenew_key
        .as_deref()
        .map(|s| {
            crate::modem::keys::hex16(s).ok_or_else(|| {
                err(
                    key("forcerenew_key"),
                    "expected 32 hex digits (the 16-byte RFC 6704 reconfigure key)",
                )
            })
        })
        .transpose()?;
    if m.snmp_community.as_deref() == Some("") {
        return Err(err(key("snmp_community"), "is empty"));
    }
    let method = match m.reboot.as_deref().unwrap_or("none") {
        "none" => return Ok(None),
        "snmp" => RebootMethod::Snmp {
            community: m
                .snmp_community
                .clone()
                .ok_or_else(|| err(key("snmp_community"), "required with reboot = \"snmp\""))?,
        },
        "forcerenew" => RebootMethod::ForceRenew {
            key: ForceRenewKey::Reconfigure(fr_key.ok_or_else(|| {
                err(
                    key("forcerenew_key"),
                    "required with reboot = \"forcerenew\"",
                )
            })?),
            xid: m.forcerenew_xid.unwrap_or(0),
        },
        "command" => RebootMethod::Command,
        other => {
            return Err(err(
                key("reboot"),
                format!("{other:?} is not a reboot method (snmp, forcerenew, command, none)"),
            ));
        }
    };
    let Some(p) = pipeline else {
        return Err(err(
            key("reboot"),
            "rebooting needs a [controller.modem_pipeline] section",
        ));
    };
    if method == RebootMethod::Command && p.hook.is_none() {
        return Err(err(
            key("reboot"),
            "reboot = \"command\" needs controller.modem_pipeline.hook",
        ));
    }
    let mac = mac.ok_or_else(|| err(key("mac"), "required when reboot is not \"none\""))?;
    if !addrs.iter().any(|a| a.addr.is_ipv4() && a.len == 32) {
        return Err(err(
            key("addrs"),
            "a modem that is rebooted needs an IPv4 address (its management address)",
        ));
    }
    Ok(Some(ModemReboot { mac, method }))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    const GOOD: &str = r#"
[dataplane]
pin_root = "/sys/fs/bpf/shaper"

[[interface]]
name = "sub0"
role = "subscriber"
htb_link_rate = "100M"

[[interface]]
name = "up0"
role = "upstream"

[[class]]
id = 1
rate = "20M"
burst = 50000
dscp = 10
mtu = 1500

[[class]]
id = 2
htb = { interface = "sub0", minor = 0x10, rate = "30M", ceil = "100M", prio = 1 }

[[subscriber]]
addr = "198.18.0.10"
up_class = 1
down_class = 2

[[subscriber]]
addr = "2001:db8:0:5::/64"
down_class = 2

[[rule]]
id = 1
proto = "udp"
dst = "198.19.0.0/24"
dport = "5000-5999"
precedence = 10
class = 1
"#;

    #[test]
    fn a_good_config_validates() {
        let v = parse(GOOD).unwrap();
        assert_eq!(v.classes.len(), 2);
        assert_eq!(v.classes[0].1.rate_bps, Some(20_000_000));
        assert_eq!(v.classes[1].1.skb_priority, 0x0001_0010);
        assert_eq!(v.subscribers[1].0.len, 64);
        assert_eq!(v.rules[0].dport, PortRange { lo: 5000, hi: 5999 });
        assert_eq!(v.rules[0].proto, Some(17));
    }

    #[test]
    fn errors_name_the_key() {
        let bad = GOOD.replace("burst = 50000", "burst = 100");
        assert_eq!(parse(&bad).unwrap_err().key, "class[0].burst");
        let bad = GOOD.replace("role = \"upstream\"", "role = \"sideways\"");
        let e = parse(&bad).unwrap_err();
        assert!(e.key.starts_with("line "), "{e}");
        assert!(e.msg.contains("sideways"), "{e}");
        let bad = GOOD.replace(
            "down_class = 2\n\n[[subscriber]]",
            "down_class = 9\n\n[[subscriber]]",
        );
        assert_eq!(
            parse(&bad).unwrap_err().to_string(),
            "subscriber[0].down_class: class 9 is not defined"
        );
        let bad = GOOD.replace("dport = \"5000-5999\"", "dport = \"6000-5000\"");
        assert_eq!(parse(&bad).unwrap_err().key, "rule[0].dport");
        let bad = GOOD.replace("rate = \"20M\"", "rate = \"fast\"");
        assert!(parse(&bad).unwrap_err().msg.contains("not a rate"));
        let bad = GOOD.replace("[dataplane]", "[dataplane]\ncolour = 1");
        assert!(parse(&bad).unwrap_err().msg.contains("unknown field"));
        let bad = GOOD.replace("interface = \"sub0\", minor", "interface = \"up0\", minor");
        assert_eq!(
            parse(&bad).unwrap_err().to_string(),
            "class[1].htb.interface: interface \"up0\" has no htb_link_rate"
        );
    }

    #[test]
    fn rates_parse_with_suffixes() {
        assert_eq!("20M".parse::<Rate>().unwrap(), Rate(20_000_000));
        assert_eq!("1.5G".parse::<Rate>().unwrap(), Rate(1_500_000_000));
        assert_eq!("64k".parse::<Rate>().unwrap(), Rate(64_000));
        assert!("-1M".parse::<Rate>().is_err());
    }

    const CONTROLLER: &str = r#"
[controller]
store = "/var/lib/shaper/shaper.db"
listen = "127.0.0.1:8080"
tokens_file = "/etc/shaper/tokens.toml"
class_first = 100
class_last = 199

[controller.enforcement]
dataplane = true

[[modem]]
id = "cm1"
addrs = ["198.18.0.20", "2001:db8:0:20::/64"]
max_down = "20M"
max_up = "2M"
committed_down = "5M"
burst = 30000
priority = 3
mtu = 1500

[[modem]]
id = "cm2"
addrs = ["198.18.0.21"]
max_down = "50M"
"#;

    fn with_controller() -> String {
        format!("{GOOD}{CONTROLLER}")
    }

    #[test]
    fn a_controller_section_validates() {
        let v = parse(&with_controller()).unwrap();
        let plan = v.controller.unwrap();
        assert_eq!(plan.listen, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(plan.config.classes, 100..=199);
        assert_eq!(plan.modems.len(), 2);
        let cm1 = &plan.modems[0];
        assert_eq!(cm1.addrs[1].len, 64);
        assert_eq!(cm1.base.max_down_bps, Some(20_000_000));
        assert_eq!(cm1.base.committed_down_bps, Some(5_000_000));
        assert_eq!(cm1.base.burst_bytes, Some(30_000));
        let b = plan.bindings();
        assert_eq!((b[0].up_class, b[0].down_class), (100, 101));
        assert_eq!((b[1].up_class, b[1].down_class), (102, 103));
        assert_eq!(b[1].modem, "cm2");
        // Without [controller], nothing changes.
        assert!(parse(GOOD).unwrap().controller.is_none());
        // The default class range runs to the data plane's last class.
        let text = with_controller()
            .replace("class_first = 100\n", "")
            .replace("class_last = 199\n", "");
        let plan = parse(&text).unwrap().controller.unwrap();
        assert_eq!(plan.config.classes, 1024..=65_535);
    }

    #[test]
    fn modem_htb_minors_validate_and_errors_name_the_key() {
        let c = with_controller().replace(
            "class_last = 199\n",
            "class_last = 199\nhtb_minor_first = 0x100\nhtb_minor_last = 0x1ff\n",
        );
        let plan = parse(&c).unwrap().controller.unwrap();
        // Only sub0 has an HTB tree: modems get downstream classes there, none upstream.
        assert_eq!(plan.config.htb_minors_down, Some(0x100..=0x1ff));
        assert_eq!(plan.config.htb_minors_up, None);
        let b = plan.bindings();
        assert_eq!(
            (b[0].htb_minor_down, b[1].htb_minor_down, b[1].htb_minor_up),
            (Some(0x100), Some(0x101), None)
        );
        let msg = |text: String| parse(&text).unwrap_err().to_string();
        assert_eq!(
            msg(c.replace("htb_minor_last = 0x1ff\n", "")),
            "controller.htb_minor_last: needed with htb_minor_first"
        );
        assert_eq!(
            msg(c.replace("htb_minor_last = 0x1ff", "htb_minor_last = 0x100")),
            "controller.htb_minor_last: 2 modems need 2 HTB minors; 0x100..=0x100 holds 1"
        );
        assert_eq!(
            msg(c.replace("htb_minor_first = 0x100", "htb_minor_first = 0x10")),
            "class[1].htb.minor: 0x10 lies in the modems' HTB minors 0x10..=0x1ff"
        );
    }

    /// What a refused configuration must say: its key, its whole text, or a part of its message.
    enum Want {
        Key(&'static str),
        Text(&'static str),
        MsgHas(&'static str),
    }

    /// Each case: a replacement in the text, and what the refusal must say.
    fn check_refusals(text: &str, cases: &[(&str, &str, Want)]) {
        for (from, to, want) in cases {
            assert!(text.contains(from), "the case {from:?} does not apply");
            let e = parse(&text.replace(from, to)).unwrap_err();
            match want {
                Want::Key(k) => assert_eq!(e.key, *k, "{from:?} -> {to:?}: {e}"),
                Want::Text(t) => assert_eq!(e.to_string(), *t, "{from:?} -> {to:?}"),
                Want::MsgHas(m) => assert!(e.msg.contains(m), "{from:?} -> {to:?}: {e}"),
            }
        }
    }

    #[test]
    fn controller_errors_name_the_key() {
        use Want::{Key, MsgHas, Text};
        #[rustfmt::skip]
        let cases = [
            ("\"198.18.0.21\"", "\"198.18.0.0/24\"", Text("modem[1].addrs[0]: IPv4 addresses are /32, IPv6 addresses /128 or /64")),
            ("\"198.18.0.21\"", "\"198.18.0.20\"", Text("modem[1].addrs[0]: also an address of modem[0]")),
            ("\"198.18.0.21\"", "\"198.18.0.10\"", Text("modem[1].addrs[0]: same address as subscriber[0]")),
            ("\"198.18.0.21\"", "\"cm\"", Key("modem[1].addrs[0]")),
            ("id = \"cm2\"", "id = \"cm1\"", Key("modem[1].id")),
            ("committed_down = \"5M\"", "committed_down = \"25M\"", Key("modem[0].committed_down")),
            ("burst = 30000", "burst = 100", Key("modem[0].burst")),
            ("priority = 3", "priority = 9", Key("modem[0].priority")),
            ("max_down = \"50M\"", "max_down = \"fast\"", MsgHas("not a rate")),
            ("127.0.0.1:8080", "localhost", Key("controller.listen")),
            ("class_last = 199", "class_last = 70000", Key("controller.class_last")),
            ("class_first = 100", "class_first = 300", Key("controller.class_first")),
            ("class_first = 100", "class_first = 2", Text("class[1].id: 2 lies in the controller's class ids 2..=199")),
            ("class_last = 199", "class_last = 102", Key("modem")),
            ("dataplane = true", "modem_pipeline = true", Key("controller.modem_pipeline")),
            ("[controller.enforcement]", "[controller.enforcement]\ncolour = 1", MsgHas("unknown field")),
            ("mtu = 1500", "mtu = 1500\ncolour = 1", MsgHas("unknown field")),
            ("[controller.enforcement]", "[controller.grants]\nmax_per_month = 0\n[controller.enforcement]", Key("controller.grants.max_per_month")),
            ("[controller.enforcement]", "[[controller.grants.level]]\nname = \"a b\"\nmax_down_bps = 8000\nmax_duration_s = 60\n[controller.enforcement]", Key("controller.grants.level[0].name")),
        ];
        check_refusals(&with_controller(), &cases);
        // Modems without a controller.
        let text = format!("{GOOD}\n[[modem]]\nid = \"cm1\"\n");
        assert_eq!(
            parse(&text).unwrap_err().to_string(),
            "modem: [[modem]] entries need a [controller] section"
        );
    }

    #[test]
    fn tokens_files_parse_and_errors_name_the_key() {
        let digest = crate::tokens::hash_token("secret");
        let text =
            format!("[[token]]\nsha256 = \"{digest}\"\nrole = \"csr\"\nsubject = \"alice\"\n");
        let table = parse_tokens(&text).unwrap();
        assert_eq!(table.len(), 1);
        let p = table.lookup("secret").unwrap();
        assert_eq!((p.role, p.subject.as_str()), (TokenRole::Csr, "alice"));
        assert!(parse_tokens("").unwrap().is_empty());
        let twice = format!("{text}{}", text.replace("alice", "bob"));
        assert_eq!(parse_tokens(&twice).unwrap_err().key, "token[1].sha256");
        assert_eq!(
            parse_tokens(&text.replace(&digest, "abc")).unwrap_err().key,
            "token[0].sha256"
        );
        assert_eq!(
            parse_tokens(&text.replace("alice", "")).unwrap_err().key,
            "token[0].subject"
        );
        let e = parse_tokens(&text.replace("\"csr\"", "\"root\"")).unwrap_err();
        assert!(e.key.starts_with("line "), "{e}");
        let e = parse_tokens(&text.replace("sha256 =", "token =")).unwrap_err();
        assert!(e.msg.contains("unknown field"), "{e}");
    }

    #[test]
    fn the_shipped_controller_example_validates() {
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../configs/shaper.toml"
        ))
        .unwrap();
        let (v, dir) = shipped_example(&text);
        let plan = v.controller.unwrap();
        assert_eq!(plan.modems.len(), 1);
        assert_eq!(plan.listen.port(), 8080);
        let levels: Vec<&str> = plan.catalogue.levels().map(|l| l.name.as_str()).collect();
        assert_eq!(levels, ["boost-100", "gaming"]);
        assert_eq!(plan.catalogue.max_per_month, Some(10));
        let p = plan.pipeline.unwrap();
        assert_eq!(p.cmts_key_file, dir.path().join("cmts.key"));
        assert_eq!(p.tftp_listen, Some("198.18.0.1:69".parse().unwrap()));
        assert!(matches!(
            plan.modems[0].reboot.as_ref().unwrap().method,
            RebootMethod::Snmp { .. }
        ));
    }

    /// The shipped configuration with its commented examples (from `[controller]` on)
    /// uncommented, validated with the example's secret files in a temporary directory.
    pub(crate) fn shipped_example(text: &str) -> (Validated, crate::store::TempDir) {
        let (_, example) = text.split_once("\n# [controller]\n").unwrap();
        let uncommented: String = example
            .lines()
            .filter_map(|l| l.strip_prefix("# ").or_else(|| (l == "#").then_some("")))
            .filter(|l| !l.starts_with("# "))
            .collect::<Vec<_>>()
            .join("\n");
        let dir = crate::store::TempDir::new("shipped-example");
        std::fs::create_dir_all(dir.path().join("radius")).unwrap();
        std::fs::write(dir.path().join("radius/bras1.secret"), "example-secret\n").unwrap();
        write_keys(dir.path());
        let v = parse_in(
            &format!("{text}\n[controller]\n{uncommented}\n"),
            dir.path(),
        )
        .unwrap();
        (v, dir)
    }

    #[test]
    fn radius_needs_the_controller_and_nsm_bras_needs_radius_bras() {
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../configs/shaper.toml"
        ))
        .unwrap();
        let (v, dir) = shipped_example(&text);
        let radius = v.radius.unwrap();
        assert_eq!(radius.bras[0].target.secret, "example-secret");
        assert!(v.nsm.unwrap().bras);
        // The example without its [[radius.bras]]: nsm.bras = true is refused, naming it.
        let (head, _) = text.split_once("# [[radius.bras]]").unwrap();
        let (_, example) = head.split_once("\n# [controller]\n").unwrap();
        let uncommented: String = example
            .lines()
            .filter_map(|l| l.strip_prefix("# ").or_else(|| (l == "#").then_some("")))
            .filter(|l| !l.starts_with("# "))
            .collect::<Vec<_>>()
            .join("\n");
        let e = parse_in(
            &format!("{head}\n[controller]\n{uncommented}\n"),
            dir.path(),
        )
        .unwrap_err();
        assert_eq!(e.key, "nsm.bras");
        assert!(e.msg.contains("[[radius.bras]]"), "{e}");
        // [radius] without [controller].
        let e = parse_in(
            &format!("{text}\n[radius]\naccounting_listen = \":1813\"\n"),
            dir.path(),
        )
        .unwrap_err();
        assert_eq!(e.key, "radius");
    }

    /// cmts.key, name.key, signing.key and signing.pub in `dir`.
    fn write_keys(dir: &Path) {
        let s = crate::proto::docsis::Signer::from_seed(&[5; 32]);
        let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
        std::fs::write(dir.join("cmts.key"), "cmts-secret\n").unwrap();
        std::fs::write(dir.join("name.key"), format!("{}\n", "1f".repeat(32))).unwrap();
        std::fs::write(dir.join("signing.key"), format!("{}\n", hex(&s.seed()))).unwrap();
        std::fs::write(
            dir.join("signing.pub"),
            format!("{}\n", hex(s.verifying_key().as_bytes())),
        )
        .unwrap();
    }

    const PIPELINE: &str = r#"
[controller.modem_pipeline]
config_dir = "cfg"
incoming_dir = "cfg/incoming"
cmts_key_file = "cmts.key"
signing_key_file = "signing.key"
trusted_keys = ["signing.pub"]
name_key_file = "name.key"
keep_versions = 4
max_cpe = 4
tftp_listen = "198.18.0.1:69"
reboot_attempts = 3
reboot_backoff_ms = 500
snmp_port = 161
forcerenew_source_port = 67
hook = ["/usr/local/bin/reboot-modem"]
"#;

    fn with_pipeline() -> String {
        with_controller()
            .replace("dataplane = true", "dataplane = true\nmodem_pipeline = true")
            .replace(
                "[[modem]]\nid = \"cm1\"",
                &format!(
                    "{PIPELINE}\n[[modem]]\nid = \"cm1\"\nmac = \"02:00:5e:00:00:01\"\n\
                     reboot = \"forcerenew\"\nforcerenew_key = \"00112233445566778899aabbccddeeff\"\n\
                     forcerenew_xid = 7"
                ),
            )
    }

    #[test]
    fn the_modem_pipeline_section_validates_and_errors_name_the_key() {
        let dir = crate::store::TempDir::new("pipeline-config");
        write_keys(dir.path());
        let ok = with_pipeline();
        let plan = parse_in(&ok, dir.path()).unwrap().controller.unwrap();
        let p = plan.pipeline.unwrap();
        assert_eq!(p.config_dir, dir.path().join("cfg"));
        assert_eq!(p.incoming_dir, Some(dir.path().join("cfg/incoming")));
        assert_eq!(p.trusted_keys, vec![dir.path().join("signing.pub")]);
        assert_eq!(
            (p.keep_versions, p.reboot_attempts, p.snmp_port),
            (4, 3, 161)
        );
        assert!(p.load_keys().unwrap().signer.is_some());
        assert_eq!(
            plan.modems[0].reboot,
            Some(ModemReboot {
                mac: [2, 0, 0x5e, 0, 0, 1],
                method: RebootMethod::ForceRenew {
                    key: ForceRenewKey::Reconfigure([
                        0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0x99, 0xaa, 0xbb,
                        0xcc, 0xdd, 0xee, 0xff
                    ]),
                    xid: 7
                }
            })
        );
        assert_eq!(plan.modems[1].reboot, None);
        let key = |text: String| parse_in(&text, dir.path()).unwrap_err().key;
        let msg = |text: String| parse_in(&text, dir.path()).unwrap_err().to_string();
        assert!(
            msg(ok.replace(
                "cmts_key_file = \"cmts.key\"",
                "cmts_key_file = \"nope.key\""
            ))
            .starts_with("controller.modem_pipeline.cmts_key_file: reading ")
        );
        std::fs::write(dir.path().join("bad.key"), "xyz\n").unwrap();
        for (from, to, want) in [
            (
                "name_key_file = \"name.key\"",
                "name_key_file = \"bad.key\"",
                "controller.modem_pipeline.name_key_file",
            ),
            (
                "signing_key_file = \"signing.key\"",
                "signing_key_file = \"bad.key\"",
                "controller.modem_pipeline.signing_key_file",
            ),
            (
                "[\"signing.pub\"]",
                "[\"signing.pub\", \"bad.key\"]",
                "controller.modem_pipeline.trusted_keys[1]",
            ),
            (
                "keep_versions = 4",
                "keep_versions = 1",
                "controller.modem_pipeline.keep_versions",
            ),
            (
                "max_cpe = 4",
                "max_cpe = 0",
                "controller.modem_pipeline.max_cpe",
            ),
            (
                "198.18.0.1:69",
                "tftp",
                "controller.modem_pipeline.tftp_listen",
            ),
            (
                "reboot_attempts = 3",
                "reboot_attempts = 0",
                "controller.modem_pipeline.reboot_attempts",
            ),
            (
                "snmp_port = 161",
                "snmp_port = 0",
                "controller.modem_pipeline.snmp_port",
            ),
            (
                "[\"/usr/local/bin/reboot-modem\"]",
                "[]",
                "controller.modem_pipeline.hook",
            ),
            (
                "incoming_dir = \"cfg/incoming\"",
                "incoming_dir = \"cfg\"",
                "controller.modem_pipeline.incoming_dir",
            ),
            ("mac = \"02:00:5e:00:00:01\"\n", "", "modem[0].mac"),
            (
                "mac = \"02:00:5e:00:00:01\"",
                "mac = \"02:00:5e\"",
                "modem[0].mac",
            ),
            (
                "reboot = \"forcerenew\"",
                "reboot = \"telnet\"",
                "modem[0].reboot",
            ),
            (
                "00112233445566778899aabbccddeeff",
                "0011",
                "modem[0].forcerenew_key",
            ),
            (
                "forcerenew_key = \"00112233445566778899aabbccddeeff\"\n",
                "",
                "modem[0].forcerenew_key",
            ),
            (
                "reboot = \"forcerenew\"",
                "reboot = \"snmp\"",
                "modem[0].snmp_community",
            ),
        ] {
            assert!(ok.contains(from), "{from}");
            assert_eq!(key(ok.replace(from, to)), want, "{from} -> {to}");
        }
        // The command method needs the hook.
        let text = ok
            .replace("reboot = \"forcerenew\"", "reboot = \"command\"")
            .replace("hook = [\"/usr/local/bin/reboot-modem\"]\n", "");
        assert_eq!(key(text), "modem[0].reboot");
        // A rebooted modem needs an IPv4 address.
        let text = ok.replace("addrs = [\"198.18.0.20\", ", "addrs = [");
        assert_eq!(key(text), "modem[0].addrs");
        // The pipeline switched on without its section.
        let text = with_controller().replace("dataplane = true", "modem_pipeline = true");
        assert_eq!(
            msg(text),
            "controller.modem_pipeline: the section is required when \
             controller.enforcement.modem_pipeline = true"
        );
        let e = parse_in(
            &ok.replace("max_cpe = 4", "max_cpe = 4\ncolour = 1"),
            dir.path(),
        )
        .unwrap_err();
        assert!(e.msg.contains("unknown field"), "{e}");
    }

    #[test]
    fn the_shipped_config_validates() {
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../configs/shaper.toml"
        ))
        .unwrap();
        parse(&text).unwrap();
    }
}
