//! Rate attribute profiles: how a [`QosLevel`] travels in RADIUS to a given kind of BRAS
//! (docs/PROTOCOLS.md §4, rate attributes).
//!
//! | profile | attribute(s) | value |
//! |---|---|---|
//! | [`RateProfile::Mikrotik`] | Mikrotik-Rate-Limit (14988/8) | `rx/tx [rx-burst/tx-burst [rx-thr/tx-thr [rx-time/tx-time [prio [rx-min/tx-min]]]]]`, bit/s with k/M/G suffixes; **rx = client upload** |
//! | [`RateProfile::Plain`] | Filter-Id (11) | `down/up` in **kbit/s** (accel-ppp's default `attr=Filter-Id`) |
//! | [`RateProfile::Cisco`] | Cisco-AVPair (9/1), two of them | `lcp:interface-config#1=rate-limit output <bps> <normal-burst> <excess-burst> conform-action transmit exceed-action drop` (down) and `#2=… input …` (up); bursts in bytes (Cisco CAR; accel-ppp parses the same) |
//! | [`RateProfile::Juniper`] | ERX-Service-Activate (4874/65, tag 1) | `<service>(<down-bps>,<up-bps>)`: a dynamic service with two rate parameters, defined on the router |
//!
//! Mapping to [`QosLevel`]: maximum rates map both ways. MikroTik's `prio` 1 (best)..8 maps to
//! priority `8 - prio` (7 best..0), its `min` (limit-at) to the committed rates. MikroTik burst
//! rate/threshold/time describe an averaging window our token-bucket policer does not have:
//! they are parsed and re-encoded but not mapped. A rate of 0 is "unlimited" in RouterOS and
//! maps to `None`.

use std::fmt::Write as _;

use crate::proto::radius::dict;
use crate::proto::radius::{Attribute, Packet, SubAttribute};
use crate::provision::QosLevel;

/// Which attribute profile a BRAS speaks.
#[derive(Clone, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum RateProfile {
    Mikrotik,
    Plain,
    Cisco,
    /// `service`: the dynamic service (with two rate parameters) defined on the router.
    Juniper {
        service: String,
    },
}

/// Why a rate value cannot be encoded or parsed.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum RateError {
    #[error("the QoS level sets neither max_up_bps nor max_down_bps: nothing to send")]
    NoRate,
    #[error("{attr}: {value:?}: {reason}")]
    Syntax {
        attr: &'static str,
        value: String,
        reason: &'static str,
    },
    #[error("{attr}: not UTF-8")]
    Utf8 { attr: &'static str },
    #[error("{attr}: priority {prio} is outside 1..=8")]
    Priority { attr: &'static str, prio: u8 },
    #[error("Juniper profile: service name {0:?} is empty or contains '(' or ','")]
    ServiceName(String),
    #[error(
        "{attr}: {field} {value} bit/s is above the maximum {MAX_RATE_BPS} bit/s (the DOCSIS \
         maximum-sustained-rate TLV is 32 bits)"
    )]
    TooHigh {
        attr: &'static str,
        field: &'static str,
        value: u64,
    },
}

/// The highest rate a decoded rate attribute may ask for: 4,294,967,295 bit/s, what the
/// modem's DOCSIS configuration file can carry (the maximum-sustained-rate TLV is a `u32`).
pub const MAX_RATE_BPS: u64 = u32::MAX as u64;

/// Refuses a decoded level with a rate above [`MAX_RATE_BPS`] (`attr` names the attribute it
/// came from).
fn within_bounds(attr: &'static str, q: QosLevel) -> Result<QosLevel, RateError> {
    for (field, v) in [
        ("max_up_bps", q.max_up_bps),
        ("max_down_bps", q.max_down_bps),
        ("committed_up_bps", q.committed_up_bps),
        ("committed_down_bps", q.committed_down_bps),
    ] {
        if let Some(value) = v.filter(|&v| v > MAX_RATE_BPS) {
            return Err(RateError::TooHigh { attr, field, value });
        }
    }
    Ok(q)
}

// ---- MikroTik -------------------------------------------------------------------------------

/// A parsed `Mikrotik-Rate-Limit` value. Pairs are `(rx, tx)`: rx is what the router receives
/// from the client (client upload), tx what it sends (client download).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MikrotikRateLimit {
    pub rate: (u64, u64),
    pub burst_rate: Option<(u64, u64)>,
    pub burst_threshold: Option<(u64, u64)>,
    /// Seconds.
    pub burst_time: Option<(u64, u64)>,
    /// 1 (highest)..=8.
    pub priority: Option<u8>,
    /// limit-at: the guaranteed rate.
    pub min_rate: Option<(u64, u64)>,
}

const MT: &str = "Mikrotik-Rate-Limit";

fn syntax(attr: &'static str, value: &str, reason: &'static str) -> RateError {
    RateError::Syntax {
        attr,
        value: value.to_owned(),
        reason,
    }
}

/// A RouterOS rate: digits with an optional k/M/G suffix (decimal multiples, as RouterOS).
fn parse_rate(attr: &'static str, s: &str) -> Result<u64, RateError> {
    let (num, mult) = match s.as_bytes().last() {
        Some(b'k' | b'K') => (&s[..s.len() - 1], 1_000),
        Some(b'M' | b'm') => (&s[..s.len() - 1], 1_000_000),
        Some(b'G' | b'g') => (&s[..s.len() - 1], 1_000_000_000),
        _ => (s, 1),
    };
    if num.is_empty() || !num.bytes().all(|b| b.is_ascii_digit()) {
        return Err(syntax(
            attr,
            s,
            "a rate is digits with an optional k/M/G suffix",
        ));
    }
    num.parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
        .ok_or_else(|| syntax(attr, s, "rate overflows 64 bits"))
}

fn parse_time(attr: &'static str, s: &str) -> Result<u64, RateError> {
    let num = s.strip_suffix('s').unwrap_or(s);
    num.parse::<u64>()
        .map_err(|_| syntax(attr, s, "a burst time is whole seconds"))
}

fn parse_pair(
    s: &str,
    one: impl Fn(&'static str, &str) -> Result<u64, RateError>,
) -> Result<(u64, u64), RateError> {
    match s.split_once('/') {
        Some((a, b)) => Ok((one(MT, a)?, one(MT, b)?)),
        // RouterOS: a single value applies to both directions.
        None => {
            let v = one(MT, s)?;
            Ok((v, v))
        }
    }
}

fn fmt_rate(out: &mut String, v: u64) {
    let _ = match v {
        0 => write!(out, "0"),
        v if v % 1_000_000 == 0 => write!(out, "{}M", v / 1_000_000),
        v if v % 1_000 == 0 => write!(out, "{}k", v / 1_000),
        v => write!(out, "{v}"),
    };
}

impl MikrotikRateLimit {
    /// Parses the value (docs/PROTOCOLS.md §4; RouterOS manual "RADIUS client",
    /// Mikrotik-Rate-Limit).
    pub fn parse(s: &str) -> Result<MikrotikRateLimit, RateError> {
        let fields: Vec<&str> = s.split_ascii_whitespace().collect();
        if fields.is_empty() || fields.len() > 6 {
            return Err(syntax(MT, s, "expected 1 to 6 space-separated fields"));
        }
        let mut r = MikrotikRateLimit {
            rate: parse_pair(fields[0], parse_rate)?,
            ..MikrotikRateLimit::default()
        };
        if let Some(f) = fields.get(1) {
            r.burst_rate = Some(parse_pair(f, parse_rate)?);
        }
        if let Some(f) = fields.get(2) {
            r.burst_threshold = Some(parse_pair(f, parse_rate)?);
        }
        if let Some(f) = fields.get(3) {
            r.burst_time = Some(parse_pair(f, parse_time)?);
        }
        if let Some(f) = fields.get(4) {
            let prio: u8 = f
                .parse()
                .map_err(|_| syntax(MT, s, "priority is a number 1..8"))?;
            if !(1..=8).contains(&prio) {
                return Err(RateError::Priority { attr: MT, prio });
            }
            r.priority = Some(prio);
        }
        if let Some(f) = fields.get(5) {
            r.min_rate = Some(parse_pair(f, parse_rate)?);
        }
        Ok(r)
    }

    /// Formats the value; unset fields before a set one are written as RouterOS defaults
    /// (`0/0` = no burst, priority 8).
    #[must_use]
    pub fn format(&self) -> String {
        let mut out = String::new();
        let pair = |out: &mut String, (a, b): (u64, u64), time: bool| {
            if time {
                let _ = write!(out, "{a}/{b}");
            } else {
                fmt_rate(out, a);
                out.push('/');
                fmt_rate(out, b);
            }
        };
        pair(&mut out, self.rate, false);
        let last = if self.min_rate.is_some() {
            5
        } else if self.priority.is_some() {
            4
        } else if self.burst_time.is_some() {
            3
        } else if self.burst_threshold.is_some() {
            2
        } else {
            usize::from(self.burst_rate.is_some())
        };
        for i in 1..=last {
            out.push(' ');
            match i {
                1 => pair(&mut out, self.burst_rate.unwrap_or((0, 0)), false),
                2 => pair(&mut out, self.burst_threshold.unwrap_or((0, 0)), false),
                3 => pair(&mut out, self.burst_time.unwrap_or((0, 0)), true),
                4 => {
                    let _ = write!(out, "{}", self.priority.unwrap_or(8));
                }
                _ => pair(&mut out, self.min_rate.unwrap_or((0, 0)), false),
            }
        }
        out
    }

    /// The QoS level this asks for (see the module table for the mapping).
    #[must_use]
    pub fn to_qos(&self) -> QosLevel {
        let nz = |v: u64| (v != 0).then_some(v);
        QosLevel {
            max_up_bps: nz(self.rate.0),
            max_down_bps: nz(self.rate.1),
            committed_up_bps: self.min_rate.and_then(|m| nz(m.0)),
            committed_down_bps: self.min_rate.and_then(|m| nz(m.1)),
            priority: self.priority.map(|p| 8 - p),
            ..QosLevel::default()
        }
    }

    /// The value for a QoS level (maximum rates, committed rates, priority).
    pub fn from_qos(qos: &QosLevel) -> Result<MikrotikRateLimit, RateError> {
        if qos.max_up_bps.is_none() && qos.max_down_bps.is_none() {
            return Err(RateError::NoRate);
        }
        let min = match (qos.committed_up_bps, qos.committed_down_bps) {
            (None, None) => None,
            (u, d) => Some((u.unwrap_or(0), d.unwrap_or(0))),
        };
        Ok(MikrotikRateLimit {
            rate: (qos.max_up_bps.unwrap_or(0), qos.max_down_bps.unwrap_or(0)),
            priority: qos.priority.map(|p| 8 - p.min(7)),
            min_rate: min,
            ..MikrotikRateLimit::default()
        })
    }
}

// ---- plain (Filter-Id) ----------------------------------------------------------------------

const FILTER_ID: &str = "Filter-Id";

/// Parses accel-ppp's Filter-Id rate `down/up` (or one number for both), kbit/s.
pub fn parse_plain(s: &str) -> Result<QosLevel, RateError> {
    let kbit = |v: &str| -> Result<u64, RateError> {
        v.trim()
            .parse::<u64>()
            .ok()
            .and_then(|k| k.checked_mul(1000))
            .ok_or_else(|| syntax(FILTER_ID, s, "expected down/up in kbit/s"))
    };
    let (down, up) = match s.split_once('/') {
        Some((d, u)) => (kbit(d)?, kbit(u)?),
        None => {
            let v = kbit(s)?;
            (v, v)
        }
    };
    let nz = |v: u64| (v != 0).then_some(v);
    Ok(QosLevel {
        max_down_bps: nz(down),
        max_up_bps: nz(up),
        ..QosLevel::default()
    })
}

/// Formats `down/up` in kbit/s (rounded down; a missing direction is 0 = unlimited).
pub fn format_plain(qos: &QosLevel) -> Result<String, RateError> {
    if qos.max_up_bps.is_none() && qos.max_down_bps.is_none() {
        return Err(RateError::NoRate);
    }
    Ok(format!(
        "{}/{}",
        qos.max_down_bps.unwrap_or(0) / 1000,
        qos.max_up_bps.unwrap_or(0) / 1000
    ))
}

// ---- Cisco ----------------------------------------------------------------------------------

const CISCO: &str = "Cisco-AVPair";

/// Cisco's recommended normal burst: 1.5 s of traffic, at least 8000 bytes.
fn cisco_burst(bps: u64, burst_bytes: Option<u32>) -> u64 {
    burst_bytes.map_or_else(|| (bps / 8 * 3 / 2).max(8000), u64::from)
}

/// The two Cisco-AVPair values (down = `output`, up = `input`) for a QoS level.
pub fn format_cisco(qos: &QosLevel) -> Result<Vec<String>, RateError> {
    if qos.max_up_bps.is_none() && qos.max_down_bps.is_none() {
        return Err(RateError::NoRate);
    }
    let mut out = Vec::new();
    for (dir, rate) in [("output", qos.max_down_bps), ("input", qos.max_up_bps)] {
        if let Some(bps) = rate {
            let nb = cisco_burst(bps, qos.burst_bytes);
            out.push(format!(
                "lcp:interface-config#{}=rate-limit {dir} {bps} {nb} {} conform-action transmit exceed-action drop",
                out.len() + 1,
                nb * 2
            ));
        }
    }
    Ok(out)
}

/// Reads a `rate-limit input|output <bps> <nb> <eb>` AVPair into `qos`; `Ok(false)` when the
/// pair is about something else.
pub fn parse_cisco(s: &str, qos: &mut QosLevel) -> Result<bool, RateError> {
    let Some((_, cmd)) = s.split_once('=') else {
        return Ok(false);
    };
    let mut words = cmd.split_ascii_whitespace();
    if words.next() != Some("rate-limit") {
        return Ok(false);
    }
    let dir = words.next();
    let num = |w: Option<&str>| -> Result<u64, RateError> {
        w.and_then(|w| w.parse().ok()).ok_or_else(|| {
            syntax(
                CISCO,
                s,
                "expected rate-limit input|output <bps> <normal-burst> <excess-burst>",
            )
        })
    };
    let bps = num(words.next())?;
    let nb = num(words.next())?;
    match dir {
        Some("output") => qos.max_down_bps = Some(bps),
        Some("input") => qos.max_up_bps = Some(bps),
        _ => return Err(syntax(CISCO, s, "direction is input or output")),
    }
    qos.burst_bytes = Some(u32::try_from(nb).unwrap_or(u32::MAX));
    Ok(true)
}

// ---- Juniper / ERX --------------------------------------------------------------------------

const ERX: &str = "ERX-Service-Activate";

/// `service(down,up)` for ERX-Service-Activate.
pub fn format_juniper(service: &str, qos: &QosLevel) -> Result<String, RateError> {
    if service.is_empty() || service.contains(['(', ',', ')']) {
        return Err(RateError::ServiceName(service.to_owned()));
    }
    if qos.max_up_bps.is_none() && qos.max_down_bps.is_none() {
        return Err(RateError::NoRate);
    }
    Ok(format!(
        "{service}({},{})",
        qos.max_down_bps.unwrap_or(0),
        qos.max_up_bps.unwrap_or(0)
    ))
}

/// Parses `service(down,up)` (after the tag octet is removed): `(service, qos)`.
pub fn parse_juniper(s: &str) -> Result<(String, QosLevel), RateError> {
    let bad = || syntax(ERX, s, "expected service(down-bps,up-bps)");
    let (name, args) = s.split_once('(').ok_or_else(bad)?;
    let args = args.strip_suffix(')').ok_or_else(bad)?;
    let (d, u) = args.split_once(',').ok_or_else(bad)?;
    let d: u64 = d.trim().parse().map_err(|_| bad())?;
    let u: u64 = u.trim().parse().map_err(|_| bad())?;
    let nz = |v: u64| (v != 0).then_some(v);
    Ok((
        name.to_owned(),
        QosLevel {
            max_down_bps: nz(d),
            max_up_bps: nz(u),
            ..QosLevel::default()
        },
    ))
}

/// Strips an RFC 2868 §3.5 tag (0x01..=0x1f) from a tagged string; 0x00 too (untagged
/// senders sometimes write it).
#[must_use]
pub fn untag(v: &[u8]) -> &[u8] {
    match v.first() {
        Some(0..=0x1f) => &v[1..],
        _ => v,
    }
}

// ---- the profile ----------------------------------------------------------------------------

fn vsa(vendor: u32, typ: u8, value: Vec<u8>) -> Attribute {
    Attribute::Vendor {
        vendor,
        subs: vec![SubAttribute { typ, value }],
    }
}

impl RateProfile {
    /// The attributes that carry `qos` in this profile.
    pub fn encode(&self, qos: &QosLevel) -> Result<Vec<Attribute>, RateError> {
        Ok(match self {
            RateProfile::Mikrotik => {
                let (v, t) = dict::MIKROTIK_RATE_LIMIT;
                vec![vsa(
                    v,
                    t,
                    MikrotikRateLimit::from_qos(qos)?.format().into_bytes(),
                )]
            }
            RateProfile::Plain => vec![Attribute::Raw {
                typ: dict::FILTER_ID,
                value: format_plain(qos)?.into_bytes(),
            }],
            RateProfile::Cisco => {
                let (v, t) = dict::CISCO_AVPAIR;
                format_cisco(qos)?
                    .into_iter()
                    .map(|s| vsa(v, t, s.into_bytes()))
                    .collect()
            }
            RateProfile::Juniper { service } => {
                let (v, t) = dict::ERX_SERVICE_ACTIVATE;
                let mut value = vec![1u8];
                value.extend_from_slice(format_juniper(service, qos)?.as_bytes());
                vec![vsa(v, t, value)]
            }
        })
    }
}

/// Which profile a decoded rate came in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RateKind {
    Mikrotik,
    Plain,
    Cisco,
    Juniper,
}

fn utf8<'a>(attr: &'static str, v: &'a [u8]) -> Result<&'a str, RateError> {
    std::str::from_utf8(v).map_err(|_| RateError::Utf8 { attr })
}

/// Finds a rate in `packet`, in any profile: Mikrotik-Rate-Limit, then Filter-Id, then Cisco
/// rate-limit AVPairs, then ERX-Service-Activate. `Ok(None)` when it carries none. A rate
/// above [`MAX_RATE_BPS`] is an error ([`RateError::TooHigh`]).
pub fn decode_rate(packet: &Packet) -> Result<Option<(RateKind, QosLevel)>, RateError> {
    if let Some(v) = packet.vendor_values(dict::MIKROTIK_RATE_LIMIT).next() {
        let q = MikrotikRateLimit::parse(utf8(MT, v)?)?.to_qos();
        return Ok(Some((RateKind::Mikrotik, within_bounds(MT, q)?)));
    }
    if let Some(v) = packet.get(dict::FILTER_ID) {
        let q = parse_plain(utf8(FILTER_ID, v)?)?;
        return Ok(Some((RateKind::Plain, within_bounds(FILTER_ID, q)?)));
    }
    let mut qos = QosLevel::default();
    let mut found = false;
    for v in packet.vendor_values(dict::CISCO_AVPAIR) {
        found |= parse_cisco(utf8(CISCO, v)?, &mut qos)?;
    }
    if found {
        return Ok(Some((RateKind::Cisco, within_bounds(CISCO, qos)?)));
    }
    if let Some(v) = packet.vendor_values(dict::ERX_SERVICE_ACTIVATE).next() {
        let (_, q) = parse_juniper(utf8(ERX, untag(v))?)?;
        return Ok(Some((RateKind::Juniper, within_bounds(ERX, q)?)));
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    //! The rate profiles through real packets (the codec's own tests are in `proto/radius`).
    use super::{self as rate, *};
    use crate::proto::radius::{Code, encode_request};

    const SECRET: &[u8] = b"s3cr3t";
    /// radclient's CoA-Request with Mikrotik-Rate-Limit = "10M/50M" (proto/radius/tests.rs).
    const COA_REQ: &str = "2b740044dfbadd332f02292e1462b0e5cdd3acbd0107616c6963652c08736573732d311a0f00003a8c080931304d2f35304d501249de273cdc7187995e8b31edf0e8f6de";

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn radclient_mikrotik_rate_limit_decodes_to_the_grant() {
        let p = Packet::decode(&hex(COA_REQ)).unwrap();
        let (kind, qos) = decode_rate(&p).unwrap().unwrap();
        assert_eq!(kind, RateKind::Mikrotik);
        assert_eq!(qos.max_up_bps, Some(10_000_000), "rx = client upload");
        assert_eq!(qos.max_down_bps, Some(50_000_000));
    }

    #[test]
    fn mikrotik_rate_limit_strings() {
        let r = MikrotikRateLimit::parse("2M/10M 4M/20M 1500k/8M 16/32 5 512k/2M").unwrap();
        assert_eq!(
            r,
            MikrotikRateLimit {
                rate: (2_000_000, 10_000_000),
                burst_rate: Some((4_000_000, 20_000_000)),
                burst_threshold: Some((1_500_000, 8_000_000)),
                burst_time: Some((16, 32)),
                priority: Some(5),
                min_rate: Some((512_000, 2_000_000)),
            }
        );
        assert_eq!(r.format(), "2M/10M 4M/20M 1500k/8M 16/32 5 512k/2M");
        let q = r.to_qos();
        assert_eq!(q.max_up_bps, Some(2_000_000));
        assert_eq!(q.max_down_bps, Some(10_000_000));
        assert_eq!(q.committed_up_bps, Some(512_000));
        assert_eq!(q.committed_down_bps, Some(2_000_000));
        assert_eq!(q.priority, Some(3));
        // One value = both directions; 0 = unlimited.
        assert_eq!(
            MikrotikRateLimit::parse("1M").unwrap().rate,
            (1_000_000, 1_000_000)
        );
        assert_eq!(
            MikrotikRateLimit::parse("0/5M")
                .unwrap()
                .to_qos()
                .max_up_bps,
            None
        );
        // Priority and min only: defaults fill the gaps.
        let q = QosLevel {
            max_up_bps: Some(5_000_000),
            max_down_bps: Some(20_000_000),
            committed_down_bps: Some(1_000_000),
            priority: Some(7),
            ..QosLevel::default()
        };
        let s = MikrotikRateLimit::from_qos(&q).unwrap().format();
        assert_eq!(s, "5M/20M 0/0 0/0 0/0 1 0/1M");
        let back = MikrotikRateLimit::parse(&s).unwrap().to_qos();
        assert_eq!(back, q);
        for bad in ["", "10X/1M", "1M/", "1 2 3 4 9", "1 2 3 4 5 6 7", "a/b"] {
            assert!(MikrotikRateLimit::parse(bad).is_err(), "{bad:?}");
        }
        assert!(matches!(
            MikrotikRateLimit::parse("1M 0 0 0 9"),
            Err(RateError::Priority { prio: 9, .. })
        ));
        assert_eq!(
            MikrotikRateLimit::from_qos(&QosLevel::default()),
            Err(RateError::NoRate)
        );
    }

    #[test]
    fn plain_cisco_and_juniper_profiles_round_trip_through_packets() {
        let q = QosLevel {
            max_up_bps: Some(8_000_000),
            max_down_bps: Some(64_000_000),
            ..QosLevel::default()
        };
        for (profile, kind) in [
            (RateProfile::Mikrotik, RateKind::Mikrotik),
            (RateProfile::Plain, RateKind::Plain),
            (RateProfile::Cisco, RateKind::Cisco),
            (
                RateProfile::Juniper {
                    service: "svc-rate".into(),
                },
                RateKind::Juniper,
            ),
        ] {
            let mut p = Packet::new(Code::CoaRequest, 3);
            p.attributes = profile.encode(&q).unwrap();
            let bytes = encode_request(&p, SECRET).unwrap();
            let back = Packet::decode(&bytes).unwrap();
            let (k, mut got) = decode_rate(&back).unwrap().unwrap();
            assert_eq!(k, kind);
            got.burst_bytes = None; // Cisco carries a burst
            assert_eq!(got, q, "{profile:?}");
        }
        assert_eq!(rate::format_plain(&q).unwrap(), "64000/8000");
        assert_eq!(
            rate::format_cisco(&q).unwrap()[0],
            "lcp:interface-config#1=rate-limit output 64000000 12000000 24000000 conform-action transmit exceed-action drop"
        );
        assert_eq!(
            rate::format_juniper("svc-rate", &q).unwrap(),
            "svc-rate(64000000,8000000)"
        );
        assert!(matches!(
            rate::format_juniper("bad(name", &q),
            Err(RateError::ServiceName(_))
        ));
        assert!(rate::parse_plain("fast").is_err());
        assert!(rate::parse_juniper("svc(1,").is_err());
        let mut p = Packet::new(Code::CoaRequest, 1);
        p.push(dict::USER_NAME, "x");
        assert_eq!(decode_rate(&p).unwrap(), None);
    }

    #[test]
    fn decoded_rates_above_the_docsis_maximum_are_refused() {
        let mt = |v: &str| {
            let mut p = Packet::new(Code::CoaRequest, 1);
            p.push_vendor(dict::MIKROTIK_RATE_LIMIT, v.as_bytes());
            decode_rate(&p)
        };
        // 5G/5G: 5,000,000,000 bit/s does not fit the 32-bit DOCSIS TLV.
        assert!(matches!(
            mt("5G/5G"),
            Err(RateError::TooHigh {
                attr: "Mikrotik-Rate-Limit",
                value: 5_000_000_000,
                ..
            })
        ));
        let (_, q) = mt("4294967295/4294967295").unwrap().unwrap();
        assert_eq!(q.max_down_bps, Some(rate::MAX_RATE_BPS));
        // A committed (min) rate above it too.
        assert!(matches!(
            mt("1M/1M 0/0 0/0 0/0 8 1M/4294967296"),
            Err(RateError::TooHigh {
                field: "committed_down_bps",
                ..
            })
        ));
        let mut p = Packet::new(Code::CoaRequest, 1);
        p.push(dict::FILTER_ID, "5000000/1000"); // kbit/s: 5 Gbit/s down
        let e = decode_rate(&p).unwrap_err();
        assert!(e.to_string().contains("4294967295"), "{e}");
        let mut p = Packet::new(Code::CoaRequest, 1);
        p.push_vendor(
            dict::ERX_SERVICE_ACTIVATE,
            "svc(5000000000,1000000)".as_bytes(),
        );
        assert!(matches!(decode_rate(&p), Err(RateError::TooHigh { .. })));
    }
}
