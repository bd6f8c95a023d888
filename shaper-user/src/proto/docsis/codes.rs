//! The code table: names and value kinds of the TLVs this codec knows, declared once and used
//! by the decoder (known vs unknown), the typed accessors and the text form.
//!
//! Names follow rlaager/docsis's configuration language where it has one (`NetworkAccess`,
//! `MaxRateSustained`, …) so operators recognise them. Types and sizes: docs/PROTOCOLS.md §1 and
//! CM-SP-MULPIv3.0 Annex C.

/// What a value's bytes mean, for the text form.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Big-endian unsigned integer of `width` bytes, shown in `unit`.
    Int { width: u8, unit: Unit },
    /// IPv4 address (4 B).
    Ipv4,
    /// MAC address (6 B).
    Mac,
    /// IEEE OUI (3 B).
    Oui,
    /// Text without terminator.
    Str,
    /// Text with one terminating NUL (service class names, MULPI C.2.2.3.4).
    StrZ,
    /// Opaque bytes (MICs, signatures).
    Hex,
    /// One BER `SEQUENCE { OID, value }` (TLV 11).
    VarBind,
    /// Sub-TLVs.
    Aggregate,
}

/// Unit of an integer value in the text form.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unit {
    None,
    BitsPerSecond,
    Bytes,
    Micros,
    Millis,
    Seconds,
    Hertz,
    Ppm,
}

impl Unit {
    /// The unit word written after the number (empty for plain numbers).
    #[must_use]
    pub fn word(self) -> &'static str {
        match self {
            Unit::None => "",
            Unit::BitsPerSecond => "bit/s",
            Unit::Bytes => "bytes",
            Unit::Micros => "us",
            Unit::Millis => "ms",
            Unit::Seconds => "s",
            Unit::Hertz => "Hz",
            Unit::Ppm => "ppm",
        }
    }
}

/// One entry of the code table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CodeInfo {
    pub code: u8,
    pub name: &'static str,
    pub kind: Kind,
}

/// Where a code is looked up: the top level, inside an aggregate, or inside a vendor block
/// carrying shaper's own OUI (text form only: the decoder keeps those sub-TLVs `Unknown`,
/// since their meaning depends on the OUI, not on the parent type).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ctx {
    Top,
    Sub(u8),
    ShaperVendor,
}

impl Ctx {
    /// `Top` for `None`, `Sub(p)` for `Some(p)`.
    #[must_use]
    pub fn from_parent(parent: Option<u8>) -> Ctx {
        parent.map_or(Ctx::Top, Ctx::Sub)
    }
}

const fn int(width: u8, unit: Unit) -> Kind {
    Kind::Int { width, unit }
}

macro_rules! table {
    ($name:ident: $( $code:literal $label:literal $kind:expr ),* $(,)?) => {
        const $name: &[CodeInfo] = &[ $( CodeInfo { code: $code, name: $label, kind: $kind } ),* ];
    };
}

table!(TOP:
    1 "DownstreamFrequency" int(4, Unit::Hertz),
    2 "UpstreamChannelId" int(1, Unit::None),
    3 "NetworkAccess" int(1, Unit::None),
    4 "ClassOfService" Kind::Aggregate,
    6 "CmMic" Kind::Hex,
    7 "CmtsMic" Kind::Hex,
    9 "SwUpgradeFilename" Kind::Str,
    11 "SnmpMibObject" Kind::VarBind,
    14 "CpeMacAddress" Kind::Mac,
    18 "MaxCPE" int(1, Unit::None),
    19 "TftpTimestamp" int(4, Unit::Seconds),
    20 "TftpModemAddress" Kind::Ipv4,
    21 "SwUpgradeServer" Kind::Ipv4,
    22 "UsPacketClass" Kind::Aggregate,
    23 "DsPacketClass" Kind::Aggregate,
    24 "UsServiceFlow" Kind::Aggregate,
    25 "DsServiceFlow" Kind::Aggregate,
    26 "PHS" Kind::Aggregate,
    28 "MaxClassifiers" int(2, Unit::None),
    29 "GlobalPrivacyEnable" int(1, Unit::None),
    43 "VendorSpecific" Kind::Aggregate,
);

// TLV 4, DOCSIS 1.0 class of service (docs/PROTOCOLS.md §1, type 4).
table!(COS:
    1 "ClassID" int(1, Unit::None),
    2 "MaxRateDown" int(4, Unit::BitsPerSecond),
    3 "MaxRateUp" int(4, Unit::BitsPerSecond),
    4 "PriorityUp" int(1, Unit::None),
    5 "GuaranteedUp" int(4, Unit::BitsPerSecond),
    6 "MaxBurstUp" int(2, Unit::Bytes),
    7 "PrivacyEnable" int(1, Unit::None),
);

// TLV 24, upstream service flow (MULPI C.2.2.5 common + C.2.2.7 upstream).
table!(US_FLOW:
    1 "UsServiceFlowRef" int(2, Unit::None),
    2 "ServiceFlowId" int(4, Unit::None),
    4 "ServiceClassName" Kind::StrZ,
    6 "QosParamSetType" int(1, Unit::None),
    7 "TrafficPriority" int(1, Unit::None),
    8 "MaxRateSustained" int(4, Unit::BitsPerSecond),
    9 "MaxTrafficBurst" int(4, Unit::Bytes),
    10 "MinReservedRate" int(4, Unit::BitsPerSecond),
    14 "MaxConcatenatedBurst" int(2, Unit::Bytes),
    15 "SchedulingType" int(1, Unit::None),
);

// TLV 25, downstream service flow (MULPI C.2.2.5 common + C.2.2.8 downstream).
table!(DS_FLOW:
    1 "DsServiceFlowRef" int(2, Unit::None),
    2 "ServiceFlowId" int(4, Unit::None),
    4 "ServiceClassName" Kind::StrZ,
    6 "QosParamSetType" int(1, Unit::None),
    7 "TrafficPriority" int(1, Unit::None),
    8 "MaxRateSustained" int(4, Unit::BitsPerSecond),
    9 "MaxTrafficBurst" int(4, Unit::Bytes),
    10 "MinReservedRate" int(4, Unit::BitsPerSecond),
    14 "MaxDsLatency" int(4, Unit::Micros),
);

// TLV 43, vendor-specific: sub-TLV 8 is the vendor's OUI, the rest is the vendor's.
table!(VENDOR:
    8 "VendorIdentifier" Kind::Oui,
);

// Sub-TLVs of a TLV 43 block with shaper's OUI (see `vendor`), for the text form.
table!(SHAPER:
    1 "ShaperAvailability" int(4, Unit::Ppm),
    2 "ShaperErrorRate" int(4, Unit::Ppm),
    3 "ShaperLossUnderCongestion" int(4, Unit::Ppm),
    4 "ShaperSetupTime" int(4, Unit::Millis),
    5 "ShaperRepairTime" int(4, Unit::Millis),
    6 "ShaperMtu" int(2, Unit::Bytes),
    7 "ShaperModemId" Kind::Str,
    8 "VendorIdentifier" Kind::Oui,
    32 "ShaperSignatureKeyId" Kind::Hex,
    33 "ShaperSignature" Kind::Hex,
    34 "ShaperBatchPath" Kind::Hex,
);

fn table(ctx: Ctx) -> &'static [CodeInfo] {
    match ctx {
        Ctx::Top => TOP,
        Ctx::Sub(4) => COS,
        Ctx::Sub(24) => US_FLOW,
        Ctx::Sub(25) => DS_FLOW,
        Ctx::Sub(43) => VENDOR,
        Ctx::ShaperVendor => SHAPER,
        Ctx::Sub(_) => &[],
    }
}

/// The entry for `code` in `ctx`, if the table has one.
#[must_use]
pub fn lookup(ctx: Ctx, code: u8) -> Option<&'static CodeInfo> {
    table(ctx).iter().find(|c| c.code == code)
}

/// The entry named `name` (ASCII case-insensitive) in `ctx`.
#[must_use]
pub fn by_name(ctx: Ctx, name: &str) -> Option<&'static CodeInfo> {
    table(ctx)
        .iter()
        .find(|c| c.name.eq_ignore_ascii_case(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_have_unique_codes_and_names() {
        for ctx in [
            Ctx::Top,
            Ctx::Sub(4),
            Ctx::Sub(24),
            Ctx::Sub(25),
            Ctx::Sub(43),
            Ctx::ShaperVendor,
        ] {
            let t = table(ctx);
            for (i, a) in t.iter().enumerate() {
                for b in &t[i + 1..] {
                    assert_ne!(a.code, b.code, "{ctx:?}");
                    assert!(!a.name.eq_ignore_ascii_case(b.name), "{ctx:?}");
                }
                assert_eq!(lookup(ctx, a.code), Some(a));
                assert_eq!(by_name(ctx, &a.name.to_lowercase()), Some(a));
            }
        }
        // Aggregates in the table are exactly the decoder's aggregates.
        for c in TOP {
            assert_eq!(
                c.kind == Kind::Aggregate,
                super::super::tlv::is_aggregate(c.code),
                "{}",
                c.name
            );
        }
    }
}
