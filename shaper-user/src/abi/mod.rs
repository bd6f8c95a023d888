//! Rust mirror of `shaper-ebpf/include/shaper_abi.h`.
//!
//! Every struct here is checked field by field (size and member offsets) against the BTF of
//! the compiled object by the (`abi::btf::tests`), so a change on one side that is not made on
//! the other fails the build's tests instead of corrupting maps.

pub mod btf;

/// Bump with the C header: pinned maps live under a directory named by it.
/// 3: `shaper_classes` is created with [`BPF_F_MMAPABLE`].
pub const ABI_VERSION: u32 = 3;

/// `BPF_F_MMAPABLE` (uapi `linux/bpf.h`): an array map userspace can `mmap`. `shaper_classes`
/// is created with it; the loader maps it and refuses a pinned one without it.
pub const BPF_F_MMAPABLE: u32 = 1 << 10;

pub const MAX_TUPLES: u32 = 16;
/// Subscriber address pools per family (`SHAPER_MAX_POOLS`).
pub const MAX_POOLS: u32 = 16;
pub const MAX_CHAIN: usize = 8;
pub const RULE_SETS: u32 = 2;
pub const RULE_END: u32 = 0xffff_ffff;

pub const DIR_UP: usize = 0;
pub const DIR_DOWN: usize = 1;

pub const CLASS_F_VALID: u8 = 0x01;
pub const CLASS_F_BLOCK: u8 = 0x02;
pub const CLASS_F_SHARED: u8 = 0x04;
pub const DSCP_KEEP: u8 = 0xff;

pub const TUPLE_F_VALID: u8 = 0x01;
pub const TUPLE_F_ANY_PROTO: u8 = 0x02;

/// `tuple_v4.ignore` / `tuple_v6.ignore` (first tuple of a set): fields no rule looks at.
pub const IGNORE_SRC: u8 = 0x01;
pub const IGNORE_DST: u8 = 0x02;
pub const IGNORE_SPORT: u8 = 0x04;
pub const IGNORE_DPORT: u8 = 0x08;

/// Indexes of [`GlobalStats::v`].
pub mod gs {
    pub const RX_PKTS: usize = 0;
    pub const NON_IP: usize = 1;
    pub const MALFORMED: usize = 2;
    pub const UNSUPPORTED: usize = 3;
    pub const UNCLASSIFIED: usize = 4;
    pub const FAIL_CLOSED: usize = 5;
    pub const MALFORMED_DROP: usize = 6;
    pub const XDP_TX: usize = 7;
    pub const POLICE_CONTENDED: usize = 8;
    pub const TC_PKTS: usize = 9;
    pub const TC_STEERED: usize = 10;
    pub const FLOW_SAMPLES: usize = 11;
    pub const COUNT: usize = 16;
    /// Names for metrics, in index order.
    pub const NAMES: [&str; 12] = [
        "rx_packets",
        "non_ip",
        "malformed",
        "unsupported",
        "unclassified",
        "fail_closed_drops",
        "malformed_drops",
        "xdp_tx",
        "police_contended",
        "tc_packets",
        "tc_steered",
        "flow_samples",
    ];
}

/// Event kinds (`shaper_event.kind`).
pub const EV_MALFORMED: u32 = 1;
pub const EV_ICMP_SENT: u32 = 2;
pub const EV_UNSUPPORTED: u32 = 3;

/// Parse outcome (`test_record.parse`).
pub const PARSE_OK: u32 = 0;
pub const PARSE_NON_IP: u32 = 1;
pub const PARSE_MALFORMED: u32 = 2;
pub const PARSE_UNSUPPORTED: u32 = 3;

/// Parse error codes (`SHAPER_PE_*`).
pub const PE_NONE: u32 = 0;
pub const PE_ETH: u32 = 1;
pub const PE_VLAN: u32 = 2;
pub const PE_PPPOE: u32 = 3;
pub const PE_IPV4: u32 = 4;
pub const PE_IPV6: u32 = 5;
pub const PE_IPV6_EXT: u32 = 6;
pub const PE_L4: u32 = 7;

/// Drop reasons (`test_record.drop_reason`).
pub const DROP_NONE: u32 = 0;
pub const DROP_POLICE_RULE: u32 = 1;
pub const DROP_POLICE_SUB: u32 = 2;
pub const DROP_MTU: u32 = 3;
pub const DROP_BLOCK: u32 = 4;
pub const DROP_FAIL_CLOSED: u32 = 5;
pub const DROP_MALFORMED: u32 = 6;

macro_rules! pod {
    ($($t:ty),*) => {$(
        // SAFETY: repr(C), only integer fields and arrays of them, no padding left implicit.
        unsafe impl aya::Pod for $t {}
    )*};
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct SubKeyV4 {
    /// Network byte order.
    pub addr: [u8; 4],
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct SubKeyV6 {
    pub addr: [u8; 16],
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct SubKeyV6_64 {
    pub prefix: [u8; 8],
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SubValue {
    /// Index into `shaper_sub_slots`.
    pub slot: u32,
}

/// One direction of a subscriber's slot: its class and its own policer state and counters.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SubDir {
    pub class_id: u32,
    pub drops: u32,
    pub tat: u64,
    pub pkts: u64,
    pub bytes: u64,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SubSlot {
    /// Indexed by `DIR_UP` / `DIR_DOWN`.
    pub d: [SubDir; 2],
}

/// A dense range of subscriber addresses whose slots are consecutive.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SubPool {
    /// Host order: the IPv4 address, or the upper 64 bits of an IPv6 /64.
    pub base: u64,
    pub count: u32,
    pub slot0: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClassEntry {
    pub ns_per_byte_q16: u64,
    pub burst_ns: u64,
    pub tat: u64,
    pub skb_priority: u32,
    pub mtu: u16,
    pub dscp: u8,
    pub flags: u8,
    pub rate_bps: u64,
    pub burst_bytes: u32,
    pub pad0: u32,
    pub pad1: [u64; 2],
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClassStats {
    pub pkts: u64,
    pub bytes: u64,
    pub drop_police: u64,
    pub drop_mtu: u64,
    pub drop_block: u64,
    pub mss_clamped: u64,
    pub dscp_marked: u64,
    pub icmp_sent: u64,
}

impl ClassStats {
    /// Field-wise sum (for adding up per-CPU values).
    pub fn add(&mut self, o: &ClassStats) {
        self.pkts += o.pkts;
        self.bytes += o.bytes;
        self.drop_police += o.drop_police;
        self.drop_mtu += o.drop_mtu;
        self.drop_block += o.drop_block;
        self.mss_clamped += o.mss_clamped;
        self.dscp_marked += o.dscp_marked;
        self.icmp_sent += o.icmp_sent;
    }
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GlobalStats {
    pub v: [u64; gs::COUNT],
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TupleV4 {
    pub src_mask: [u8; 4],
    pub dst_mask: [u8; 4],
    pub min_precedence: u32,
    pub flags: u8,
    /// `IGNORE_*`, meaningful in the first tuple of a set.
    pub ignore: u8,
    pub pad: [u8; 2],
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TupleV6 {
    pub src_mask: [u8; 16],
    pub dst_mask: [u8; 16],
    pub min_precedence: u32,
    pub flags: u8,
    /// `IGNORE_*`, meaningful in the first tuple of a set.
    pub ignore: u8,
    pub pad: [u8; 2],
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct RuleKeyV4 {
    pub tuple: u8,
    pub proto: u8,
    pub pad: [u8; 2],
    pub src: [u8; 4],
    pub dst: [u8; 4],
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct RuleKeyV6 {
    pub tuple: u8,
    pub proto: u8,
    pub pad: [u8; 2],
    pub src: [u8; 16],
    pub dst: [u8; 16],
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RuleHead {
    pub entry: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RuleEntry {
    pub class_id: u32,
    pub precedence: u32,
    pub sport_lo: u16,
    pub sport_hi: u16,
    pub dport_lo: u16,
    pub dport_hi: u16,
    pub next: u32,
    pub rule_id: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ShaperCtl {
    pub active_set: u32,
    pub epoch: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FlowKey {
    pub src: [u8; 16],
    pub dst: [u8; 16],
    /// Network byte order.
    pub sport: u16,
    /// Network byte order.
    pub dport: u16,
    pub proto: u8,
    pub dir: u8,
    pub pad: [u8; 2],
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowValue {
    pub pkts: u64,
    pub bytes: u64,
    pub class_id: u32,
    pub pad: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ShaperEvent {
    pub kind: u32,
    pub ifindex: u32,
    pub class_id: u32,
    pub detail: u32,
    pub ts_ns: u64,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TestRecord {
    pub parse: u32,
    pub parse_err: u32,
    pub sub_class: u32,
    pub rule_class: u32,
    pub rule_id: u32,
    pub drop_reason: u32,
    pub runs: u32,
    pub pad: u32,
}

pod!(
    SubKeyV4,
    SubKeyV6,
    SubKeyV6_64,
    SubValue,
    SubDir,
    SubSlot,
    SubPool,
    ClassEntry,
    ClassStats,
    GlobalStats,
    TupleV4,
    TupleV6,
    RuleKeyV4,
    RuleKeyV6,
    RuleHead,
    RuleEntry,
    ShaperCtl,
    FlowKey,
    FlowValue,
    ShaperEvent,
    TestRecord
);
