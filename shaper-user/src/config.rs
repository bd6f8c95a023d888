//! `shaper.toml`: the gateway's data-plane configuration, parsed with serde and validated as a
//! whole before anything is loaded or bound (`shaper check`). Every error names the key that
//! was wrong, as `class[2].burst` or `interface[0].role`.

use std::{collections::HashMap, net::IpAddr, path::PathBuf, str::FromStr};

use serde::Deserialize;

use crate::dataplane::{Limits, Role, htb};
use crate::policy::{ClassConfig, PortRange, Prefix, Rule, SubscriberKey, validate_rules};

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
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct DataplaneSection {
    /// bpffs directory for pinned maps and links.
    pub pin_root: PathBuf,
    pub fail_closed: bool,
    pub malformed_drop: bool,
    pub flow_sample_shift: u32,
    pub limits: Limits,
}

impl Default for DataplaneSection {
    fn default() -> Self {
        Self {
            pin_root: PathBuf::from("/sys/fs/bpf/shaper"),
            fail_closed: false,
            malformed_drop: false,
            flow_sample_shift: 4,
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
    pub classes: Vec<(u32, ClassConfig, Option<HtbSection>)>,
    pub subscribers: Vec<(SubscriberKey, [u32; 2])>,
    pub rules: Vec<Rule>,
}

/// Parses and validates TOML text.
pub fn parse(text: &str) -> Result<Validated, ConfigError> {
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
    validate(config)
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

/// Checks a parsed configuration.
pub fn validate(config: Config) -> Result<Validated, ConfigError> {
    let dp = &config.dataplane;
    if dp.flow_sample_shift > 31 {
        return Err(err(
            "dataplane.flow_sample_shift",
            "must be 0..=31 (31 = no flow sampling)",
        ));
    }
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
    Ok(Validated {
        config,
        classes,
        subscribers,
        rules,
    })
}

#[cfg(test)]
mod tests {
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
