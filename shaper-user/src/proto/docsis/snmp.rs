//! TLV 11, SNMP MIB object: one BER-encoded VarBind `SEQUENCE { OID, value }` (MULPI
//! C.1.1.11; X.690 BER; RFC 2578 application types). The codec keeps the bytes; this module
//! decodes them into OID and value for the text form and builds the common cases.

/// The value bytes of one TLV 11, kept exactly as they were.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VarBind(pub Vec<u8>);

/// A VarBind value this module understands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SnmpValue {
    Integer(i64),
    OctetString(Vec<u8>),
    Null,
    Oid(Vec<u32>),
    IpAddress([u8; 4]),
    Counter32(u32),
    Gauge32(u32),
    TimeTicks(u32),
    /// Any other tag, raw.
    Other {
        tag: u8,
        data: Vec<u8>,
    },
}

/// A VarBind that is not well-formed BER.
#[derive(Debug, thiserror::Error, PartialEq, Eq, Clone)]
pub enum BerError {
    #[error("byte {offset}: expected tag {expected:#04x}, found {found:#04x}")]
    Tag {
        offset: usize,
        expected: u8,
        found: u8,
    },
    #[error("byte {offset}: element runs past the end")]
    Truncated { offset: usize },
    #[error("byte {offset}: unsupported length form")]
    Length { offset: usize },
    #[error("{extra} bytes after the VarBind")]
    Trailing { extra: usize },
    #[error("malformed OID")]
    Oid,
}

/// Reads one BER element at `i`: (tag, content, next offset).
fn element(b: &[u8], i: usize) -> Result<(u8, &[u8], usize), BerError> {
    let tag = *b.get(i).ok_or(BerError::Truncated { offset: i })?;
    let l0 = *b.get(i + 1).ok_or(BerError::Truncated { offset: i + 1 })?;
    let (len, hdr) = match l0 {
        0..=0x7f => (usize::from(l0), 2),
        0x81 => (
            usize::from(*b.get(i + 2).ok_or(BerError::Truncated { offset: i + 2 })?),
            3,
        ),
        0x82 => {
            let hi = *b.get(i + 2).ok_or(BerError::Truncated { offset: i + 2 })?;
            let lo = *b.get(i + 3).ok_or(BerError::Truncated { offset: i + 3 })?;
            (usize::from(u16::from_be_bytes([hi, lo])), 4)
        }
        _ => return Err(BerError::Length { offset: i + 1 }),
    };
    let start = i + hdr;
    let end = start
        .checked_add(len)
        .filter(|&e| e <= b.len())
        .ok_or(BerError::Truncated { offset: i })?;
    Ok((tag, &b[start..end], end))
}

fn push_len(out: &mut Vec<u8>, len: usize) {
    match len {
        0..=0x7f => out.push(u8::try_from(len).expect("short form")),
        0x80..=0xff => out.extend_from_slice(&[0x81, u8::try_from(len).expect("one byte")]),
        _ => {
            let l = u16::try_from(len).expect("VarBinds in a 255-byte TLV are short");
            out.push(0x82);
            out.extend_from_slice(&l.to_be_bytes());
        }
    }
}

fn push_element(out: &mut Vec<u8>, tag: u8, content: &[u8]) {
    out.push(tag);
    push_len(out, content.len());
    out.extend_from_slice(content);
}

fn decode_oid(c: &[u8]) -> Result<Vec<u32>, BerError> {
    let mut arcs = Vec::new();
    let mut v: u32 = 0;
    for (k, &b) in c.iter().enumerate() {
        v = v.checked_mul(128).ok_or(BerError::Oid)? | u32::from(b & 0x7f);
        if b & 0x80 == 0 {
            if arcs.is_empty() {
                let first = (v / 40).min(2);
                arcs.push(first);
                arcs.push(v - first * 40);
            } else {
                arcs.push(v);
            }
            v = 0;
        } else if k == c.len() - 1 {
            return Err(BerError::Oid);
        }
    }
    if arcs.is_empty() {
        return Err(BerError::Oid);
    }
    Ok(arcs)
}

fn encode_oid(arcs: &[u32]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut put = |v: u32| {
        let mut tmp = [0u8; 5];
        let mut n = 0;
        let mut x = v;
        loop {
            tmp[n] = u8::try_from(x & 0x7f).expect("7 bits");
            n += 1;
            x >>= 7;
            if x == 0 {
                break;
            }
        }
        for k in (0..n).rev() {
            out.push(tmp[k] | if k > 0 { 0x80 } else { 0 });
        }
    };
    match arcs {
        [a, b, rest @ ..] => {
            put(a.saturating_mul(40).saturating_add(*b));
            rest.iter().for_each(|&x| put(x));
        }
        [a] => put(a.saturating_mul(40)),
        [] => {}
    }
    out
}

fn be_u32(c: &[u8]) -> u32 {
    c.iter().fold(0u32, |acc, &b| (acc << 8) | u32::from(b))
}

impl VarBind {
    /// The VarBind `oid = value` in BER.
    #[must_use]
    pub fn new(oid: &[u32], value: &SnmpValue) -> VarBind {
        let mut inner = Vec::new();
        push_element(&mut inner, 0x06, &encode_oid(oid));
        match value {
            SnmpValue::Integer(v) => {
                let bytes = v.to_be_bytes();
                // Minimal two's complement: drop leading bytes that repeat the sign.
                let mut k = 0;
                while k < 7
                    && ((bytes[k] == 0 && bytes[k + 1] & 0x80 == 0)
                        || (bytes[k] == 0xff && bytes[k + 1] & 0x80 != 0))
                {
                    k += 1;
                }
                push_element(&mut inner, 0x02, &bytes[k..]);
            }
            SnmpValue::OctetString(s) => push_element(&mut inner, 0x04, s),
            SnmpValue::Null => push_element(&mut inner, 0x05, &[]),
            SnmpValue::Oid(o) => push_element(&mut inner, 0x06, &encode_oid(o)),
            SnmpValue::IpAddress(a) => push_element(&mut inner, 0x40, a),
            SnmpValue::Counter32(v) | SnmpValue::Gauge32(v) | SnmpValue::TimeTicks(v) => {
                let tag = match value {
                    SnmpValue::Counter32(_) => 0x41,
                    SnmpValue::Gauge32(_) => 0x42,
                    _ => 0x43,
                };
                let mut c = v.to_be_bytes().to_vec();
                while c.len() > 1 && c[0] == 0 && c[1] & 0x80 == 0 {
                    c.remove(0);
                }
                if c[0] & 0x80 != 0 {
                    c.insert(0, 0);
                }
                push_element(&mut inner, tag, &c);
            }
            SnmpValue::Other { tag, data } => push_element(&mut inner, *tag, data),
        }
        let mut out = Vec::with_capacity(inner.len() + 4);
        push_element(&mut out, 0x30, &inner);
        VarBind(out)
    }

    /// Decodes the OID and the value.
    ///
    /// # Errors
    /// [`BerError`] for bytes that are not one `SEQUENCE { OID, value }`.
    pub fn decode(&self) -> Result<(Vec<u32>, SnmpValue), BerError> {
        let b = &self.0;
        let (tag, seq, end) = element(b, 0)?;
        if tag != 0x30 {
            return Err(BerError::Tag {
                offset: 0,
                expected: 0x30,
                found: tag,
            });
        }
        if end != b.len() {
            return Err(BerError::Trailing {
                extra: b.len() - end,
            });
        }
        let (tag, oid, next) = element(seq, 0)?;
        if tag != 0x06 {
            return Err(BerError::Tag {
                offset: 2,
                expected: 0x06,
                found: tag,
            });
        }
        let oid = decode_oid(oid)?;
        let (tag, c, end) = element(seq, next)?;
        if end != seq.len() {
            return Err(BerError::Trailing {
                extra: seq.len() - end,
            });
        }
        let value = match tag {
            0x02 if !c.is_empty() && c.len() <= 8 => {
                let sign = if c[0] & 0x80 != 0 { -1i64 } else { 0 };
                SnmpValue::Integer(c.iter().fold(sign, |acc, &b| (acc << 8) | i64::from(b)))
            }
            0x04 => SnmpValue::OctetString(c.to_vec()),
            0x05 if c.is_empty() => SnmpValue::Null,
            0x06 => SnmpValue::Oid(decode_oid(c)?),
            0x40 if c.len() == 4 => SnmpValue::IpAddress([c[0], c[1], c[2], c[3]]),
            0x41..=0x43 if !c.is_empty() && c.len() <= 5 => {
                let v = be_u32(c);
                match tag {
                    0x41 => SnmpValue::Counter32(v),
                    0x42 => SnmpValue::Gauge32(v),
                    _ => SnmpValue::TimeTicks(v),
                }
            }
            _ => SnmpValue::Other {
                tag,
                data: c.to_vec(),
            },
        };
        Ok((oid, value))
    }
}

impl std::fmt::Display for SnmpValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SnmpValue::Integer(v) => write!(f, "INTEGER {v}"),
            SnmpValue::OctetString(s) => match std::str::from_utf8(s) {
                Ok(t) if t.chars().all(|c| !c.is_control()) => write!(f, "STRING {t:?}"),
                _ => {
                    f.write_str("STRING 0x")?;
                    s.iter().try_for_each(|b| write!(f, "{b:02x}"))
                }
            },
            SnmpValue::Null => f.write_str("NULL"),
            SnmpValue::Oid(o) => write!(f, "OID {}", oid_text(o)),
            SnmpValue::IpAddress(a) => write!(f, "IpAddress {}.{}.{}.{}", a[0], a[1], a[2], a[3]),
            SnmpValue::Counter32(v) => write!(f, "Counter32 {v}"),
            SnmpValue::Gauge32(v) => write!(f, "Gauge32 {v}"),
            SnmpValue::TimeTicks(v) => write!(f, "TimeTicks {v}"),
            SnmpValue::Other { tag, data } => {
                write!(f, "tag {tag:#04x} 0x")?;
                data.iter().try_for_each(|b| write!(f, "{b:02x}"))
            }
        }
    }
}

/// Dotted text of an OID (`1.3.6.1.2.1.69.1.3.5.0`).
#[must_use]
pub fn oid_text(arcs: &[u32]) -> String {
    arcs.iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(".")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docs_dev_nm_access_style_varbinds_round_trip() {
        // docsDevResetNow.0 (1.3.6.1.2.1.69.1.1.3.0) INTEGER 1 (DOCS-CABLE-DEVICE-MIB).
        let oid = [1, 3, 6, 1, 2, 1, 69, 1, 1, 3, 0];
        let vb = VarBind::new(&oid, &SnmpValue::Integer(1));
        assert_eq!(
            vb.0,
            [
                0x30, 0x0f, 0x06, 0x0a, 0x2b, 6, 1, 2, 1, 69, 1, 1, 3, 0, 0x02, 0x01, 0x01
            ]
        );
        assert_eq!(vb.decode().unwrap(), (oid.to_vec(), SnmpValue::Integer(1)));
        for v in [
            SnmpValue::Integer(-129),
            SnmpValue::Integer(128),
            SnmpValue::Integer(0),
            SnmpValue::OctetString(b"public".to_vec()),
            SnmpValue::IpAddress([10, 0, 0, 1]),
            SnmpValue::Gauge32(0x8000_0000),
            SnmpValue::Counter32(5),
            SnmpValue::Null,
            SnmpValue::Oid(vec![1, 3, 6, 1, 4, 1, 4491]),
        ] {
            let vb = VarBind::new(&[1, 3, 6, 1, 4, 1, 200_000, 1], &v);
            assert_eq!(
                vb.decode().unwrap(),
                (vec![1, 3, 6, 1, 4, 1, 200_000, 1], v.clone())
            );
        }
        assert!(matches!(
            VarBind(vec![0x31, 0]).decode(),
            Err(BerError::Tag { found: 0x31, .. })
        ));
        assert!(matches!(
            VarBind(vec![0x30, 5, 6, 1]).decode(),
            Err(BerError::Truncated { .. })
        ));
    }
}
