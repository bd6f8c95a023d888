//! The operators' text form of a configuration file: one TLV per line, names from the code
//! table, aggregates in braces, values in their units. [`render`] writes it and [`parse`]
//! reads it back, so `decode → edit → encode` works (docs/MODEM-CONFIG.md "Text form").
//!
//! ```text
//! NetworkAccess 1                              # 3
//! ClassOfService {                             # 4
//!     MaxRateDown 20000000 bit/s               # 4.2
//! }
//! Tlv200 0x0102                                # 200 (not in the code table)
//! ```
//!
//! Grammar, per line: `NAME VALUE [UNIT]`, `NAME {`, or `}`; `#` starts a comment (outside
//! quotes). `NAME` is a table name (case-insensitive) or `TlvN` for any type `N`. `VALUE`
//! `0x…` is raw bytes for any type; otherwise it is read as the type's kind: a decimal
//! integer (with its unit word if any), a dotted IPv4 address, `aa:bb:…` for MAC and OUI,
//! `"text"` (no escapes) for strings. A value whose length does not fit its kind is written
//! as `0x…`, so every decoded file renders to text that parses back to the same TLVs.

use std::fmt::Write as _;

use super::codes::{Ctx, Kind, Unit, by_name, lookup};
use super::snmp::{VarBind, oid_text};
use super::tlv::{ConfigFile, Tlv, is_aggregate};
use super::vendor::{SHAPER_OUI, is_shaper_block};

/// A line of the text form that cannot be read. `line` counts from 1.
#[derive(Debug, thiserror::Error, PartialEq, Eq, Clone)]
pub enum TextError {
    #[error("line {line}: {name:?} is not a setting name here (use a table name or TlvN)")]
    UnknownName { line: usize, name: String },
    #[error("line {line}: {name}: {value:?} is not {expected}")]
    BadValue {
        line: usize,
        name: String,
        value: String,
        expected: &'static str,
    },
    #[error("line {line}: {name} takes a value, not sub-settings")]
    NotAggregate { line: usize, name: String },
    #[error("line {line}: {name} is an aggregate: write `{name} {{` and its sub-settings")]
    AggregateNeedsBlock { line: usize, name: String },
    #[error("line {line}: sub-settings nest one level only (top-level aggregates 4, 22-26, 43)")]
    TooDeep { line: usize },
    #[error("line {line}: `}}` without an open aggregate")]
    Unbalanced { line: usize },
    #[error("line {line}: aggregate opened here is never closed")]
    Unclosed { line: usize },
}

// ---- render ---------------------------------------------------------------------------------

fn hex(data: &[u8]) -> String {
    let mut s = String::with_capacity(2 + 2 * data.len());
    s.push_str("0x");
    for b in data {
        let _ = write!(s, "{b:02x}");
    }
    s
}

fn printable(data: &[u8]) -> Option<&str> {
    data.iter()
        .all(|&b| (0x20..0x7f).contains(&b) && b != b'"')
        .then(|| std::str::from_utf8(data).expect("ASCII"))
}

fn colon_hex(data: &[u8]) -> String {
    data.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// The value of a leaf in its kind's notation, or `0x…` when its bytes do not fit the kind.
fn value_text(kind: Kind, data: &[u8]) -> String {
    match kind {
        Kind::Int { width, unit } if data.len() == usize::from(width) => {
            let v = data.iter().fold(0u64, |acc, &b| (acc << 8) | u64::from(b));
            match unit {
                Unit::None => v.to_string(),
                u => format!("{v} {}", u.word()),
            }
        }
        Kind::Ipv4 if data.len() == 4 => {
            format!("{}.{}.{}.{}", data[0], data[1], data[2], data[3])
        }
        Kind::Mac if data.len() == 6 => colon_hex(data),
        Kind::Oui if data.len() == 3 => colon_hex(data),
        Kind::Str => printable(data).map_or_else(|| hex(data), |s| format!("\"{s}\"")),
        Kind::StrZ => data
            .strip_suffix(&[0])
            .and_then(printable)
            .map_or_else(|| hex(data), |s| format!("\"{s}\"")),
        _ => hex(data),
    }
}

fn render_tlv(out: &mut String, t: &Tlv, parent: Option<u8>, ctx: Ctx, depth: usize) {
    let code = t.code();
    let info = lookup(ctx, code);
    let name = info.map_or_else(|| format!("Tlv{code}"), |i| i.name.to_owned());
    let indent = "    ".repeat(depth);
    let path = match parent {
        Some(p) => format!("{p}.{code}"),
        None => code.to_string(),
    };
    match t {
        Tlv::Aggregate { subs, .. } => {
            let head = format!("{indent}{name} {{");
            let _ = writeln!(out, "{head:<44} # {path}");
            let sub_ctx = if is_shaper_block(t) {
                Ctx::ShaperVendor
            } else {
                Ctx::Sub(code)
            };
            for s in subs {
                render_tlv(out, s, Some(code), sub_ctx, depth + 1);
            }
            let _ = writeln!(out, "{indent}}}");
        }
        Tlv::Value { data, .. } | Tlv::Unknown { data, .. } => {
            let kind = info.map_or(Kind::Hex, |i| i.kind);
            let line = format!("{indent}{name} {}", value_text(kind, data));
            let mut comment = path;
            if kind == Kind::VarBind {
                match VarBind(data.clone()).decode() {
                    Ok((oid, v)) => {
                        let _ = write!(comment, ": {} = {v}", oid_text(&oid));
                    }
                    Err(e) => {
                        let _ = write!(comment, ": not a BER VarBind ({e})");
                    }
                }
            }
            let _ = writeln!(out, "{line:<44} # {comment}");
        }
    }
}

/// The text form of `file`, MIC lines included (they are recomputed, not read, when encoding).
#[must_use]
pub fn render(file: &ConfigFile) -> String {
    let mut out = String::from("# DOCSIS CM configuration file, shaper text form v1\n");
    for t in &file.tlvs {
        render_tlv(&mut out, t, None, Ctx::Top, 0);
    }
    let _ = writeln!(out, "# end of data (type 255), {} pad bytes", file.pad);
    out
}

// ---- parse ----------------------------------------------------------------------------------

/// Strips a `#` comment that is not inside double quotes.
fn strip_comment(line: &str) -> &str {
    let mut quoted = false;
    for (i, c) in line.char_indices() {
        match c {
            '"' => quoted = !quoted,
            '#' if !quoted => return &line[..i],
            _ => {}
        }
    }
    line
}

fn parse_hex_bytes(s: &str) -> Option<Vec<u8>> {
    let h = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X"))?;
    if h.len() % 2 != 0 {
        return None;
    }
    (0..h.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(h.get(i..i + 2)?, 16).ok())
        .collect()
}

fn parse_colon_hex(s: &str, n: usize) -> Option<Vec<u8>> {
    let v: Vec<u8> = s
        .split(':')
        .map(|p| {
            (p.len() == 2)
                .then(|| u8::from_str_radix(p, 16).ok())
                .flatten()
        })
        .collect::<Option<_>>()?;
    (v.len() == n).then_some(v)
}

fn parse_quoted(s: &str) -> Option<&str> {
    let inner = s.strip_prefix('"')?.strip_suffix('"')?;
    (!inner.contains('"')).then_some(inner)
}

/// The bytes of `value` for a leaf of `kind` (`None` kind: unknown type, hex only).
fn value_bytes(kind: Option<Kind>, value: &str) -> Result<Vec<u8>, &'static str> {
    if value.starts_with("0x") || value.starts_with("0X") {
        return parse_hex_bytes(value).ok_or("hex bytes (0x followed by pairs of hex digits)");
    }
    match kind {
        Some(Kind::Int { width, unit }) => {
            let expected = match (width, unit) {
                (1, Unit::None) => "an integer 0..=255",
                (2, Unit::None) => "an integer 0..=65535",
                (4, Unit::None) => "an integer 0..=4294967295",
                (2, _) => "an integer 0..=65535 followed by its unit",
                _ => "an integer 0..=4294967295 followed by its unit",
            };
            let mut it = value.split_whitespace();
            let n: u64 = it.next().and_then(|t| t.parse().ok()).ok_or(expected)?;
            match (it.next(), unit) {
                (None, _) => {}
                (Some(u), unit) if unit != Unit::None && u == unit.word() => {}
                _ => return Err(expected),
            }
            if it.next().is_some() || n >> (8 * u32::from(width)) != 0 {
                return Err(expected);
            }
            Ok(n.to_be_bytes()[8 - usize::from(width)..].to_vec())
        }
        Some(Kind::Ipv4) => value
            .parse::<std::net::Ipv4Addr>()
            .map(|a| a.octets().to_vec())
            .map_err(|_| "a dotted IPv4 address"),
        Some(Kind::Mac) => parse_colon_hex(value, 6).ok_or("a MAC address aa:bb:cc:dd:ee:ff"),
        Some(Kind::Oui) => parse_colon_hex(value, 3).ok_or("an OUI aa:bb:cc"),
        Some(Kind::Str) => parse_quoted(value)
            .map(|s| s.as_bytes().to_vec())
            .ok_or("a \"quoted\" string"),
        Some(Kind::StrZ) => parse_quoted(value)
            .map(|s| {
                let mut v = s.as_bytes().to_vec();
                v.push(0);
                v
            })
            .ok_or("a \"quoted\" string"),
        Some(Kind::Hex | Kind::VarBind | Kind::Aggregate) | None => {
            Err("hex bytes (0x followed by pairs of hex digits)")
        }
    }
}

/// One open aggregate while parsing.
struct Open {
    code: u8,
    line: usize,
    ctx: Ctx,
    subs: Vec<Tlv>,
}

/// Resolves a setting name in `ctx`: a table name or `TlvN`.
fn resolve(ctx: Ctx, name: &str) -> Option<(u8, Option<Kind>)> {
    if let Some(info) = by_name(ctx, name) {
        return Some((info.code, Some(info.kind)));
    }
    let n = name
        .strip_prefix("Tlv")
        .or_else(|| name.strip_prefix("tlv"))?;
    let code: u8 = n.parse().ok()?;
    Some((code, lookup(ctx, code).map(|i| i.kind)))
}

/// Reads the text form into top-level TLVs (MIC lines included if present).
///
/// # Errors
/// [`TextError`] naming the line and what is wrong on it.
pub fn parse(text: &str) -> Result<Vec<Tlv>, TextError> {
    let mut top = Vec::new();
    let mut open: Option<Open> = None;
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let l = strip_comment(raw).trim();
        if l.is_empty() {
            continue;
        }
        if l == "}" {
            let o = open.take().ok_or(TextError::Unbalanced { line })?;
            top.push(Tlv::Aggregate {
                code: o.code,
                subs: o.subs,
            });
            continue;
        }
        let (name, value) = l.split_once(char::is_whitespace).unwrap_or((l, ""));
        let value = value.trim();
        let ctx = open.as_ref().map_or(Ctx::Top, |o| o.ctx);
        let (code, kind) = resolve(ctx, name).ok_or_else(|| TextError::UnknownName {
            line,
            name: name.to_owned(),
        })?;
        if value == "{" {
            if open.is_some() {
                return Err(TextError::TooDeep { line });
            }
            if !is_aggregate(code) {
                return Err(TextError::NotAggregate {
                    line,
                    name: name.to_owned(),
                });
            }
            open = Some(Open {
                code,
                line,
                ctx: Ctx::Sub(code),
                subs: Vec::new(),
            });
            continue;
        }
        if open.is_none() && is_aggregate(code) {
            return Err(TextError::AggregateNeedsBlock {
                line,
                name: name.to_owned(),
            });
        }
        let data = value_bytes(kind, value).map_err(|expected| TextError::BadValue {
            line,
            name: name.to_owned(),
            value: value.to_owned(),
            expected,
        })?;
        match open.as_mut() {
            Some(o) => {
                // A vendor block whose first sub-TLV is shaper's OUI names shaper's sub-types.
                if o.code == 43 && o.subs.is_empty() && code == 8 && data == SHAPER_OUI {
                    o.ctx = Ctx::ShaperVendor;
                }
                o.subs.push(Tlv::leaf(Some(o.code), code, data));
            }
            None => top.push(Tlv::leaf(None, code, data)),
        }
    }
    if let Some(o) = open {
        return Err(TextError::Unclosed { line: o.line });
    }
    Ok(top)
}
