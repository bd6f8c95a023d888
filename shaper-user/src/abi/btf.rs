//! Layout check of the Rust ABI mirror against the compiled object's BTF (in the manner of
//! Cilium's `pkg/alignchecker`).
//!
//! A small, self-contained BTF reader: it finds the `.BTF` section of an ELF64 little-endian
//! object, walks the type section and reports the size and member byte offsets of a named
//! struct. The format is the kernel's `Documentation/bpf/btf.rst`: section 2 ("BTF Type and
//! String Encoding") for the header, `struct btf_type`, every kind's trailing data and
//! `struct btf_member`.
//!
//! [`rust_layout!`] takes the Rust side (`size_of`, `offset_of!`, and a struct pattern without
//! `..`, so a Rust field missing from the list is a compile error); [`StructLayout::check`]
//! compares both, including the exact set of member names.

use std::collections::BTreeMap;

/// What went wrong reading the object or comparing a layout.
#[derive(Debug, thiserror::Error)]
pub enum BtfError {
    #[error("ELF: {0}")]
    Elf(String),
    #[error("the object has no .BTF section")]
    NoBtf,
    #[error("BTF header: {0}")]
    Header(String),
    #[error("BTF type [{id}]: {what}")]
    Type { id: usize, what: String },
    #[error("struct {name}: not in the object's BTF")]
    NotFound { name: String },
    #[error("struct {name}, member {member}: {what}")]
    Member {
        name: String,
        member: String,
        what: String,
    },
    #[error("struct {name}: Rust mirror differs from the C layout: {}", diffs.join("; "))]
    Mismatch { name: String, diffs: Vec<String> },
}

/// Size and members (name, byte offset) of a struct, in declaration order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StructLayout {
    pub size: u32,
    pub members: Vec<(String, u32)>,
}

/// The Rust side of a layout, built by [`rust_layout!`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RustLayout {
    pub size: usize,
    pub fields: Vec<(&'static str, usize)>,
}

/// `rust_layout!(Type: field, ...)`: size and field offsets of a `#[repr(C)]` struct. The
/// list must name every field (checked at compile time by a struct pattern without `..`).
#[allow(
    unused_macros,
    reason = "used by the tests; crate-visible for other checks"
)]
macro_rules! rust_layout {
    ($t:path: $($f:ident),* $(,)?) => {{
        #[allow(unused_variables, reason = "the pattern only proves the field list is complete")]
        let _complete = |v: &$t| {
            let $t { $($f: _),* } = v;
        };
        $crate::abi::btf::RustLayout {
            size: ::std::mem::size_of::<$t>(),
            fields: vec![$((stringify!($f), ::std::mem::offset_of!($t, $f))),*],
        }
    }};
}
#[allow(
    unused_imports,
    reason = "used by the tests; crate-visible for other checks"
)]
pub(crate) use rust_layout;

impl StructLayout {
    /// Compares with the Rust mirror `rust` of C struct `name`: size, the set of member names,
    /// and every member's offset. All differences are reported in one error.
    pub fn check(&self, name: &str, rust: &RustLayout) -> Result<(), BtfError> {
        let mut diffs = Vec::new();
        if self.size as usize != rust.size {
            diffs.push(format!("size: C {} vs Rust {}", self.size, rust.size));
        }
        let c: BTreeMap<&str, u32> = self.members.iter().map(|(n, o)| (n.as_str(), *o)).collect();
        let r: BTreeMap<&str, usize> = rust.fields.iter().copied().collect();
        for (n, &co) in &c {
            match r.get(n) {
                None => diffs.push(format!("member {n} (offset {co}) only in C")),
                Some(&ro) if ro != co as usize => {
                    diffs.push(format!("member {n}: offset C {co} vs Rust {ro}"))
                }
                Some(_) => {}
            }
        }
        for (n, ro) in &r {
            if !c.contains_key(n) {
                diffs.push(format!("field {n} (offset {ro}) only in Rust"));
            }
        }
        if diffs.is_empty() {
            Ok(())
        } else {
            Err(BtfError::Mismatch {
                name: name.to_string(),
                diffs,
            })
        }
    }
}

/// Unsigned little-endian integer of `n` bytes at `at`, if in bounds.
fn uint(b: &[u8], at: usize, n: usize) -> Option<usize> {
    let s = b.get(at..at.checked_add(n)?)?;
    usize::try_from(s.iter().rev().fold(0u64, |a, &x| a << 8 | u64::from(x))).ok()
}

/// The bytes of section `.BTF` of an ELF64 little-endian object (System V gABI: ELF header,
/// section header table, section names in the `e_shstrndx` section).
pub fn btf_section(elf: &[u8]) -> Result<&[u8], BtfError> {
    let bad = |w: &str| BtfError::Elf(w.to_string());
    if elf.get(..4) != Some(b"\x7fELF") || elf.get(4..6) != Some(&[2, 1]) {
        return Err(bad("not an ELF64 little-endian object"));
    }
    let rd = |at: usize, n| uint(elf, at, n).ok_or_else(|| bad("read past the end of the file"));
    let (shoff, shentsize, shnum, shstrndx) =
        (rd(0x28, 8)?, rd(0x3a, 2)?, rd(0x3c, 2)?, rd(0x3e, 2)?);
    if shoff == 0 {
        return Err(BtfError::NoBtf); // no section header table
    }
    if shentsize < 64 {
        return Err(bad("e_shentsize < 64"));
    }
    // Field at `off` (`n` bytes) of section header `i` (Elf64_Shdr).
    let sh = |i: usize, off: usize, n| {
        let at = i
            .checked_mul(shentsize)
            .and_then(|o| o.checked_add(shoff)?.checked_add(off));
        rd(at.ok_or_else(|| bad("section header offset overflows"))?, n)
    };
    let data = |i| -> Result<&[u8], BtfError> {
        if sh(i, 4, 4)? == 8 {
            return Ok(&[]); // SHT_NOBITS
        }
        let (off, size) = (sh(i, 24, 8)?, sh(i, 32, 8)?);
        elf.get(off..off.saturating_add(size))
            .ok_or_else(|| bad("section past the end of the file"))
    };
    // Extended numbering: e_shnum == 0 / e_shstrndx == SHN_XINDEX defer to section 0.
    let shnum = if shnum == 0 { sh(0, 32, 8)? } else { shnum };
    let shstrndx = if shstrndx == 0xffff {
        sh(0, 40, 4)?
    } else {
        shstrndx
    };
    if shstrndx >= shnum {
        return Err(bad("e_shstrndx out of range"));
    }
    let names = data(shstrndx)?;
    for i in 1..shnum {
        if names
            .get(sh(i, 0, 4)?..)
            .is_some_and(|n| n.starts_with(b".BTF\0"))
        {
            return data(i);
        }
    }
    Err(BtfError::NoBtf)
}

/// One `struct btf_type`: kind, vlen, kind_flag, name_off, size (or type), and the offset of
/// its trailing data in the type section.
#[derive(Clone, Copy, Debug)]
struct Entry {
    kind: usize,
    vlen: usize,
    kflag: bool,
    name_off: usize,
    size: usize,
    data: usize,
}

/// Parsed `.BTF`: its type and string sections, and the types in id order (id `i + 1` is
/// `entries[i]`; id 0 is `void`).
pub struct Btf<'a> {
    types: &'a [u8],
    strs: &'a [u8],
    entries: Vec<Entry>,
}

const KIND_STRUCT: usize = 4;

impl<'a> Btf<'a> {
    /// Finds and parses `.BTF` in `elf`: `struct btf_header` (magic `0xeB9F`, version 1, flags,
    /// hdr_len, then type_off/type_len/str_off/str_len relative to the end of the header), then
    /// each 12-byte `struct btf_type` followed by its kind's trailing data.
    pub fn parse(elf: &'a [u8]) -> Result<Self, BtfError> {
        let b = btf_section(elf)?;
        let h = |w: &str| BtfError::Header(w.to_string());
        match uint(b, 0, 2) {
            Some(0xeb9f) => {}
            Some(0x9feb) => return Err(h("big-endian BTF is not supported")),
            _ => return Err(h("bad magic")),
        }
        if b.get(2) != Some(&1) {
            return Err(h("version is not 1"));
        }
        let f = |at| uint(b, at, 4).ok_or_else(|| h("truncated"));
        let (hdr_len, type_off, type_len, str_off, str_len) =
            (f(4)?, f(8)?, f(12)?, f(16)?, f(20)?);
        let sect = |off: usize, len: usize, what: &str| {
            let s = hdr_len.checked_add(off).ok_or_else(|| h(what))?;
            b.get(s..s.checked_add(len).ok_or_else(|| h(what))?)
                .ok_or_else(|| h(what))
        };
        let types = sect(type_off, type_len, "type section out of bounds")?;
        let strs = sect(str_off, str_len, "string section out of bounds")?;
        let mut entries = Vec::new();
        let mut off = 0;
        while off < types.len() {
            let id = entries.len() + 1;
            let terr = |w: String| BtfError::Type { id, what: w };
            let f = |at| uint(types, off + at, 4).ok_or_else(|| terr("truncated btf_type".into()));
            let (name_off, info, size) = (f(0)?, f(4)?, f(8)?);
            let (vlen, kind, kflag) = (info & 0xffff, (info >> 24) & 0x1f, info >> 31 == 1);
            let extra = match kind {
                // PTR, FWD, TYPEDEF, VOLATILE, CONST, RESTRICT, FUNC, FLOAT, TYPE_TAG
                2 | 7..=12 | 16 | 18 => 0,
                1 | 14 | 17 => 4,             // INT, VAR, DECL_TAG
                3 => 12,                      // ARRAY: struct btf_array
                4 | 5 | 15 | 19 => 12 * vlen, // STRUCT/UNION members, DATASEC vars, ENUM64 values
                6 | 13 => 8 * vlen,           // ENUM values, FUNC_PROTO params
                k => return Err(terr(format!("unknown kind {k}"))),
            };
            let data = off + 12;
            if data + extra > types.len() {
                return Err(terr("trailing data past the type section".into()));
            }
            entries.push(Entry {
                kind,
                vlen,
                kflag,
                name_off,
                size,
                data,
            });
            off = data + extra;
        }
        Ok(Btf {
            types,
            strs,
            entries,
        })
    }

    /// The NUL-terminated string at `off` of the string section, named by type `id`.
    fn name(&self, id: usize, off: usize) -> Result<&'a str, BtfError> {
        let s = self.strs.get(off..).unwrap_or_default();
        let s = s
            .iter()
            .position(|&c| c == 0)
            .and_then(|e| std::str::from_utf8(&s[..e]).ok());
        s.ok_or_else(|| BtfError::Type {
            id,
            what: format!("bad name offset {off}"),
        })
    }

    /// Layout of the first `STRUCT` named `name`. Each `struct btf_member` is name_off, type,
    /// offset; the offset is in bits, and with kind_flag set its high 8 bits are the bitfield
    /// size and its low 24 the bit offset. Bitfields and offsets that are not whole bytes are
    /// errors: the ABI header allows neither.
    pub fn struct_layout(&self, name: &str) -> Result<StructLayout, BtfError> {
        for (i, e) in self.entries.iter().enumerate() {
            if e.kind != KIND_STRUCT || self.name(i + 1, e.name_off)? != name {
                continue;
            }
            let mut members = Vec::with_capacity(e.vlen);
            for at in (0..e.vlen).map(|m| e.data + 12 * m) {
                let (m_name, raw) = (uint(self.types, at, 4), uint(self.types, at + 8, 4));
                let member = self.name(i + 1, m_name.unwrap_or_default())?.to_string();
                let raw = raw.unwrap_or_default() as u32;
                let (bits, bitfield) = if e.kflag {
                    (raw & 0xff_ffff, raw >> 24)
                } else {
                    (raw, 0)
                };
                let what = match () {
                    _ if bitfield != 0 => format!("bitfield of {bitfield} bits"),
                    _ if bits % 8 != 0 => format!("bit offset {bits} is not byte aligned"),
                    _ => {
                        members.push((member, bits / 8));
                        continue;
                    }
                };
                return Err(BtfError::Member {
                    name: name.into(),
                    member,
                    what,
                });
            }
            return Ok(StructLayout {
                size: e.size as u32,
                members,
            });
        }
        Err(BtfError::NotFound {
            name: name.to_string(),
        })
    }
}

/// Size and member byte offsets of struct `name` in the BTF of `elf`.
pub fn struct_layout(elf: &[u8], name: &str) -> Result<StructLayout, BtfError> {
    Btf::parse(elf)?.struct_layout(name)
}

/// Checks the Rust mirror `rust` against C struct `name` in the BTF of `elf`.
pub fn check(elf: &[u8], name: &str, rust: &RustLayout) -> Result<(), BtfError> {
    struct_layout(elf, name)?.check(name, rust)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::abi::*;
    use shaper_ebpf::SHAPER_TEST as OBJ;

    #[rustfmt::skip]
    fn class_entry() -> RustLayout {
        rust_layout!(ClassEntry: ns_per_byte_q16, burst_ns, tat, skb_priority, mtu, dscp, flags,
            rate_bps, burst_bytes, pad0, pad1)
    }

    #[test]
    #[rustfmt::skip]
    fn every_abi_struct_matches_btf() {
        let btf = Btf::parse(OBJ).unwrap();
        let all = [
            ("sub_key_v4", rust_layout!(SubKeyV4: addr)),
            ("sub_key_v6", rust_layout!(SubKeyV6: addr)),
            ("sub_key_v6_64", rust_layout!(SubKeyV6_64: prefix)),
            ("sub_value", rust_layout!(SubValue: slot)),
            ("sub_dir", rust_layout!(SubDir: class_id, drops, tat, pkts, bytes)),
            ("sub_slot", rust_layout!(SubSlot: d)),
            ("sub_pool", rust_layout!(SubPool: base, count, slot0)),
            ("class_entry", class_entry()),
            ("class_stats", rust_layout!(ClassStats: pkts, bytes, drop_police, drop_mtu,
                drop_block, mss_clamped, dscp_marked, icmp_sent)),
            ("global_stats", rust_layout!(GlobalStats: v)),
            ("tuple_v4", rust_layout!(TupleV4: src_mask, dst_mask, min_precedence, flags, ignore, pad)),
            ("tuple_v6", rust_layout!(TupleV6: src_mask, dst_mask, min_precedence, flags, ignore, pad)),
            ("rule_key_v4", rust_layout!(RuleKeyV4: tuple, proto, pad, src, dst)),
            ("rule_key_v6", rust_layout!(RuleKeyV6: tuple, proto, pad, src, dst)),
            ("rule_head", rust_layout!(RuleHead: entry)),
            ("rule_entry", rust_layout!(RuleEntry: class_id, precedence, sport_lo, sport_hi,
                dport_lo, dport_hi, next, rule_id)),
            ("shaper_ctl", rust_layout!(ShaperCtl: active_set, epoch)),
            ("flow_key", rust_layout!(FlowKey: src, dst, sport, dport, proto, dir, pad)),
            ("flow_value", rust_layout!(FlowValue: pkts, bytes, class_id, pad)),
            ("shaper_event", rust_layout!(ShaperEvent: kind, ifindex, class_id, detail, ts_ns)),
            ("test_record", rust_layout!(TestRecord: parse, parse_err, sub_class, rule_class,
                rule_id, drop_reason, runs, pad)),
        ];
        let errs: Vec<String> = all
            .iter()
            .filter_map(|(c, r)| btf.struct_layout(c).and_then(|l| l.check(c, r)).err())
            .map(|e| e.to_string())
            .collect();
        assert!(errs.is_empty(), "ABI mismatches:\n{}", errs.join("\n"));
    }

    /// The version names the pin directory: a C bump the Rust side missed would reuse maps
    /// of the old layout (or meaning) under the old name.
    #[test]
    fn abi_version_matches_the_header() {
        let v: Option<u32> = shaper_ebpf::ABI_HEADER.lines().find_map(|l| {
            let mut w = l.split_whitespace();
            (w.next() == Some("#define") && w.next() == Some("SHAPER_ABI_VERSION"))
                .then(|| w.next()?.parse().ok())
                .flatten()
        });
        assert_eq!(v, Some(ABI_VERSION), "SHAPER_ABI_VERSION in shaper_abi.h");
    }

    #[test]
    fn parser_reads_class_entry() {
        let l = struct_layout(OBJ, "class_entry").unwrap();
        assert_eq!(l.size, 64);
        assert_eq!(l.members.len(), 11);
        assert_eq!(l.members[2], ("tat".to_string(), 16));
        assert_eq!(l.members[5], ("dscp".to_string(), 30));
        let e = struct_layout(OBJ, "no_such_struct");
        assert!(matches!(e, Err(BtfError::NotFound { .. })));
    }

    #[test]
    fn wrong_expectations_fail() {
        check(OBJ, "rule_head", &rust_layout!(RuleHead: entry)).unwrap();
        // Wrong size, wrong offset, a field only in Rust, a member only in C, a renamed field.
        let rl = |size, fields| RustLayout { size, fields };
        let cases = [
            rl(8, vec![("entry", 0)]),
            rl(4, vec![("entry", 2)]),
            rl(4, vec![("entry", 0), ("extra", 0)]),
            rl(4, vec![]),
            rl(4, vec![("entri", 0)]),
        ];
        for r in &cases {
            let e = check(OBJ, "rule_head", r).unwrap_err();
            let named = matches!(&e, BtfError::Mismatch { name, .. } if name == "rule_head");
            assert!(named, "{e}");
        }
        // The parser says class_entry is 64 bytes with tat at 16: other claims must fail.
        let mut r = class_entry();
        check(OBJ, "class_entry", &r).unwrap();
        r.fields[2] = ("tat", 24);
        r.size = 72;
        let e = check(OBJ, "class_entry", &r).unwrap_err().to_string();
        assert!(e.contains("size: C 64 vs Rust 72"), "{e}");
        assert!(e.contains("member tat: offset C 16 vs Rust 24"), "{e}");
        let e = check(OBJ, "class_stats", &class_entry())
            .unwrap_err()
            .to_string();
        assert!(e.contains("field tat (offset 16) only in Rust"), "{e}");
    }

    #[test]
    fn rejects_non_elf_and_missing_btf() {
        let e = struct_layout(b"not an object", "x");
        assert!(matches!(e, Err(BtfError::Elf(_))));
        // A valid ELF64 LE header with no section table.
        let mut elf = vec![0u8; 64];
        elf[..6].copy_from_slice(b"\x7fELF\x02\x01");
        elf[0x3a] = 64;
        assert!(matches!(struct_layout(&elf, "x"), Err(BtfError::NoBtf)));
    }
}
