/* SPDX-License-Identifier: Apache-2.0 */
/*
 * shaper_abi.h — the one definition of every map key, map value and event shared between the
 * kernel programs and the controller. The Rust mirror (shaper-user/src/abi/mod.rs) is
 * checked against the compiled object's BTF by a test; never edit one without the other.
 *
 * Rules: fixed-width fields only, explicit padding, no bool, no bitfields. Byte order is in the
 * field's comment: "be" = network byte order, everything else host order.
 *
 * Bump SHAPER_ABI_VERSION on any layout or meaning change: pinned maps live under a directory
 * named by it, so a new layout never reuses an old map.
 */
#ifndef SHAPER_ABI_H
#define SHAPER_ABI_H

#include <linux/types.h>

#define SHAPER_ABI_VERSION 3 /* 3: shaper_classes is BPF_F_MMAPABLE */

/* Build-time capacity defaults; the loader overrides them with set_max_entries. */
#ifndef SHAPER_MAX_SUBSCRIBERS
#define SHAPER_MAX_SUBSCRIBERS 65536
#endif
#ifndef SHAPER_MAX_CLASSES
#define SHAPER_MAX_CLASSES 65536
#endif
#ifndef SHAPER_MAX_RULE_KEYS
#define SHAPER_MAX_RULE_KEYS 16384
#endif
#ifndef SHAPER_MAX_RULE_ENTRIES
#define SHAPER_MAX_RULE_ENTRIES 16384
#endif
#ifndef SHAPER_MAX_POOLS
#define SHAPER_MAX_POOLS 16 /* subscriber address pools per family */
#endif
#ifndef SHAPER_MAX_FLOWS
#define SHAPER_MAX_FLOWS 65536
#endif

/* Rule matching: tuple-space search. A "tuple" is one match shape (protocol exact or any,
 * source prefix length, destination prefix length); each rule sits in the hash table of its
 * tuple, keyed by its masked fields, and port ranges are checked on a short chain of entries. */
#define SHAPER_MAX_TUPLES 16 /* per address family, per rule set */
#define SHAPER_MAX_CHAIN 8   /* rule entries sharing one masked key */
#define SHAPER_RULE_SETS 2   /* double buffer: userspace fills the inactive set, then flips */

/* Class 0 is reserved and means "none". */
#define SHAPER_CLASS_NONE 0

/* Direction of a packet relative to the subscriber, fixed by the interface role. */
#define SHAPER_DIR_UP 0   /* from the subscriber: subscriber-side ingress, subscriber = source */
#define SHAPER_DIR_DOWN 1 /* to the subscriber: upstream-side ingress, subscriber = destination */

/* ---- subscribers ------------------------------------------------------------------------- */

/* Every subscriber owns one slot of shaper_sub_slots (ARRAY, SHAPER_MAX_SUBSCRIBERS entries):
 * its class (plan) per direction and its own policer state and counters, in one 64-byte line,
 * so that a packet costs one memory access for everything about its subscriber.
 *
 * A subscriber address is found in one of two ways:
 * - in a *pool* (shaper_pools): a dense range of addresses (IPv4 /32s or IPv6 /64s, as RADIUS
 *   framed pools and DHCP ranges hand them out) whose slots are consecutive, so the slot is
 *   slot0 + (address - base): no hashing, no second memory access. A pool is authoritative
 *   for its range: an address inside it is a subscriber iff its slot has a class.
 * - otherwise in a HASH map (address -> slot index).
 * IPv6 order: exact /128 (hash), then the /64 (pool, then hash). */

/* shaper_subs_v4: HASH, key = struct sub_key_v4 */
struct sub_key_v4 {
	__be32 addr; /* be: IPv4 address */
};
_Static_assert(sizeof(struct sub_key_v4) == 4, "abi: sub_key_v4");

/* shaper_subs_v6: HASH, key = full /128; shaper_subs_v6_64: HASH, key = first 8 bytes (/64). */
struct sub_key_v6 {
	__u8 addr[16]; /* be: IPv6 address */
};
_Static_assert(sizeof(struct sub_key_v6) == 16, "abi: sub_key_v6");

struct sub_key_v6_64 {
	__u8 prefix[8]; /* be: first 64 bits of the IPv6 address */
};
_Static_assert(sizeof(struct sub_key_v6_64) == 8, "abi: sub_key_v6_64");

struct sub_value {
	__u32 slot; /* index into shaper_sub_slots */
};
_Static_assert(sizeof(struct sub_value) == 4, "abi: sub_value");

/* One direction of a subscriber. The kernel updates tat (compare-and-swap) and the counters
 * (atomic adds); userspace writes class_id, and resets tat to 0 (a full bucket) when the
 * class changes. */
struct sub_dir {
	__u32 class_id; /* the subscriber's class (plan) in this direction; 0 = none */
	__u32 drops;    /* packets of this subscriber not forwarded (dropped or answered by ICMP) */
	__u64 tat;      /* GCRA theoretical arrival time of the subscriber's own bucket */
	__u64 pkts;     /* packets classified to the subscriber */
	__u64 bytes;    /* their L3 bytes */
};
_Static_assert(sizeof(struct sub_dir) == 32, "abi: sub_dir");

struct sub_slot {
	struct sub_dir d[2]; /* indexed by SHAPER_DIR_* */
};
_Static_assert(sizeof(struct sub_slot) == 64, "abi: sub_slot");

/* shaper_pools: ARRAY of 2 * SHAPER_MAX_POOLS, index family * SHAPER_MAX_POOLS + i, family 0 =
 * IPv4 (base = address), 1 = IPv6 /64 prefixes (base = upper 64 bits). Within a family the
 * first entry with count == 0 ends the list. Written once, before any slot is used. */
struct sub_pool {
	__u64 base;  /* host order */
	__u32 count; /* addresses (or /64s) in the pool */
	__u32 slot0; /* slot of `base` */
};
_Static_assert(sizeof(struct sub_pool) == 16, "abi: sub_pool");

/* ---- classes ----------------------------------------------------------------------------- */

#define SHAPER_CLASS_F_VALID 0x01 /* entry in use */
#define SHAPER_CLASS_F_BLOCK 0x02 /* drop everything (e.g. DOCSIS network access off) */
/* Subscribers on this class share its one bucket (`tat` here), e.g. the addresses of one
 * modem; without it every subscriber on the class (a plan) has a bucket of its own. */
#define SHAPER_CLASS_F_SHARED 0x04

#define SHAPER_DSCP_KEEP 0xff

/* shaper_classes: ARRAY indexed by class id, created with BPF_F_MMAPABLE: userspace maps it
 * (values laid out contiguously, 64 bytes apart, from offset 0) and changes a class with plain
 * stores, no syscall. Configuration written by userspace, `flags` last (and first when a class
 * is deleted); `tat` is the policer state written by the kernel with compare-and-swap, and
 * userspace never writes it except to zero it when the class is deleted. A pinned map without
 * the flag is refused. One 64-byte line per class.
 * A class used by a rule polices all of the rule's traffic with this one bucket (a provider's
 * allocation); a class used as a subscriber's plan gives the rate and burst, and every
 * subscriber polices against its own bucket (sub_dir.tat): `tat` here is then unused. */
struct class_entry {
	__u64 ns_per_byte_q16; /* policer cost of one byte in ns, fixed point <<16; 0 = no policer */
	__u64 burst_ns;        /* bucket depth in ns: burst_bytes * ns_per_byte */
	__u64 tat;             /* GCRA theoretical arrival time, ns of bpf_ktime_get_ns */
	__u32 skb_priority;    /* TC: value for skb->priority (HTB classid major:minor); 0 = keep */
	__u16 mtu;             /* L3 MTU policy; 0 = none */
	__u8 dscp;             /* DSCP to mark (0..63) or SHAPER_DSCP_KEEP */
	__u8 flags;            /* SHAPER_CLASS_F_* */
	__u64 rate_bps;        /* informational: configured rate, bit/s */
	__u32 burst_bytes;     /* informational: configured burst, bytes */
	__u32 pad0;
	__u64 pad1[2];
};
_Static_assert(sizeof(struct class_entry) == 64, "abi: class_entry");

/* shaper_class_stats: PERCPU_ARRAY indexed by class id. */
struct class_stats {
	__u64 pkts;         /* packets classified into the class (before any drop) */
	__u64 bytes;        /* their L3 bytes */
	__u64 drop_police;  /* dropped: over rate + burst */
	__u64 drop_mtu;     /* dropped: over the MTU policy (ICMP sent or not) */
	__u64 drop_block;   /* dropped: class blocks all traffic */
	__u64 mss_clamped;  /* TCP SYNs whose MSS was lowered */
	__u64 dscp_marked;  /* packets whose DSCP was rewritten */
	__u64 icmp_sent;    /* fragmentation-needed / packet-too-big answers sent (XDP_TX) */
};
_Static_assert(sizeof(struct class_stats) == 64, "abi: class_stats");

/* ---- global counters --------------------------------------------------------------------- */

/* shaper_global_stats: PERCPU_ARRAY, one entry, indexed by SHAPER_GS_* (each a __u64). */
#define SHAPER_GS_RX_PKTS 0        /* every packet seen by XDP */
#define SHAPER_GS_NON_IP 1         /* not IPv4/IPv6 (ARP, PPP control, ...): passed */
#define SHAPER_GS_MALFORMED 2      /* truncated or invalid headers */
#define SHAPER_GS_UNSUPPORTED 3    /* too many VLAN tags or IPv6 extension headers */
#define SHAPER_GS_UNCLASSIFIED 4   /* IP with no subscriber and no rule */
#define SHAPER_GS_FAIL_CLOSED 5    /* dropped because unclassified and fail-closed */
#define SHAPER_GS_MALFORMED_DROP 6 /* malformed and dropped by policy */
#define SHAPER_GS_XDP_TX 7         /* ICMP answers transmitted */
#define SHAPER_GS_POLICE_CONTENDED 8 /* policer CAS lost SHAPER_CAS_TRIES times: passed */
#define SHAPER_GS_TC_PKTS 9        /* packets seen by TC egress */
#define SHAPER_GS_TC_STEERED 10    /* TC egress packets given an skb->priority */
#define SHAPER_GS_FLOW_SAMPLES 11  /* packets sampled into the flow table */
#define SHAPER_GS_COUNT 16
struct global_stats {
	__u64 v[SHAPER_GS_COUNT];
};
_Static_assert(sizeof(struct global_stats) == 128, "abi: global_stats");

#define SHAPER_CAS_TRIES 4

/* ---- rules ------------------------------------------------------------------------------- */

/* shaper_tuples_v4 / shaper_tuples_v6: ARRAY of SHAPER_RULE_SETS * SHAPER_MAX_TUPLES, index
 * set * SHAPER_MAX_TUPLES + t. Within a set, tuples are sorted by min_precedence ascending;
 * the first with flags == 0 ends the list. */
#define SHAPER_TUPLE_F_VALID 0x01
#define SHAPER_TUPLE_F_ANY_PROTO 0x02
/* `ignore`, meaningful in the first tuple of a set only: packet fields no rule of the set
 * (this family) looks at, so the classification cache leaves them out of its key. */
#define SHAPER_IGNORE_SRC 0x01
#define SHAPER_IGNORE_DST 0x02
#define SHAPER_IGNORE_SPORT 0x04
#define SHAPER_IGNORE_DPORT 0x08
struct tuple_v4 {
	__be32 src_mask; /* be */
	__be32 dst_mask; /* be */
	__u32 min_precedence; /* lowest precedence of any rule in this tuple */
	__u8 flags;
	__u8 ignore; /* SHAPER_IGNORE_* (first tuple of a set) */
	__u8 pad[2];
};
_Static_assert(sizeof(struct tuple_v4) == 16, "abi: tuple_v4");

struct tuple_v6 {
	__u8 src_mask[16]; /* be */
	__u8 dst_mask[16]; /* be */
	__u32 min_precedence;
	__u8 flags;
	__u8 ignore; /* SHAPER_IGNORE_* (first tuple of a set) */
	__u8 pad[2];
};
_Static_assert(sizeof(struct tuple_v6) == 40, "abi: tuple_v6");

/* shaper_rules_v4 / shaper_rules_v6: HASH, masked packet fields -> head of a rule chain. */
struct rule_key_v4 {
	__u8 tuple; /* set * SHAPER_MAX_TUPLES + tuple index */
	__u8 proto; /* IP protocol, 0 when the tuple matches any protocol */
	__u8 pad[2];
	__be32 src; /* be, masked */
	__be32 dst; /* be, masked */
};
_Static_assert(sizeof(struct rule_key_v4) == 12, "abi: rule_key_v4");

struct rule_key_v6 {
	__u8 tuple;
	__u8 proto;
	__u8 pad[2];
	__u8 src[16]; /* be, masked */
	__u8 dst[16]; /* be, masked */
};
_Static_assert(sizeof(struct rule_key_v6) == 36, "abi: rule_key_v6");

struct rule_head {
	__u32 entry; /* index into shaper_rule_entries */
};
_Static_assert(sizeof(struct rule_head) == 4, "abi: rule_head");

/* shaper_rule_entries: ARRAY. A chain is sorted by precedence ascending; the first entry whose
 * port ranges contain the packet's ports is the chain's match. Lower precedence wins. */
#define SHAPER_RULE_END 0xffffffff
struct rule_entry {
	__u32 class_id;
	__u32 precedence;
	__u16 sport_lo; /* host order, inclusive */
	__u16 sport_hi;
	__u16 dport_lo;
	__u16 dport_hi;
	__u32 next; /* next entry of the chain, or SHAPER_RULE_END */
	__u32 rule_id; /* the controller's id for this rule */
};
_Static_assert(sizeof(struct rule_entry) == 24, "abi: rule_entry");

/* shaper_ctl: ARRAY, one entry: state userspace flips at run time. */
struct shaper_ctl {
	__u32 active_set; /* which rule set (0 or 1) the programs use */
	__u32 epoch;      /* bumped on every rule-set flip (invalidates the classification cache) */
};
_Static_assert(sizeof(struct shaper_ctl) == 8, "abi: shaper_ctl");

/* ---- flows ------------------------------------------------------------------------------- */

/* shaper_flows: LRU_PERCPU_HASH, sampled packets of each flow, for top-N flow metrics. */
struct flow_key {
	__u8 src[16]; /* be; IPv4 as ::ffff:a.b.c.d */
	__u8 dst[16]; /* be */
	__be16 sport; /* be */
	__be16 dport; /* be */
	__u8 proto;
	__u8 dir; /* SHAPER_DIR_* */
	__u8 pad[2];
};
_Static_assert(sizeof(struct flow_key) == 40, "abi: flow_key");

struct flow_value {
	__u64 pkts;  /* sampled packets */
	__u64 bytes; /* sampled L3 bytes */
	__u32 class_id;
	__u32 pad;
};
_Static_assert(sizeof(struct flow_value) == 24, "abi: flow_value");

/* ---- events ------------------------------------------------------------------------------ */

/* shaper_events: RINGBUF. At most one event per kind per CPU per millisecond. */
#define SHAPER_EV_MALFORMED 1
#define SHAPER_EV_ICMP_SENT 2
#define SHAPER_EV_UNSUPPORTED 3
struct shaper_event {
	__u32 kind;     /* SHAPER_EV_* */
	__u32 ifindex;  /* ingress interface */
	__u32 class_id; /* class involved, or 0 */
	__u32 detail;   /* kind-specific: parse error code, MTU, ... */
	__u64 ts_ns;    /* bpf_ktime_get_ns */
};
_Static_assert(sizeof(struct shaper_event) == 24, "abi: shaper_event");

/* Parse error codes carried in shaper_event.detail and the test record. */
#define SHAPER_PE_NONE 0
#define SHAPER_PE_ETH 1        /* frame shorter than an Ethernet header */
#define SHAPER_PE_VLAN 2       /* truncated VLAN tag */
#define SHAPER_PE_PPPOE 3      /* truncated or invalid PPPoE session header */
#define SHAPER_PE_IPV4 4       /* truncated or invalid IPv4 header */
#define SHAPER_PE_IPV6 5       /* truncated IPv6 header */
#define SHAPER_PE_IPV6_EXT 6   /* truncated IPv6 extension header */
#define SHAPER_PE_L4 7         /* truncated or invalid TCP/UDP/SCTP/ICMP header */

/* ---- test record (SHAPER_TEST builds only) ----------------------------------------------- */

/* shaper_test_last: ARRAY, one entry: what the last XDP run decided. Only in the test build,
 * which also takes its clock from shaper_test_clock (ARRAY, one __u64) instead of ktime. */
#define SHAPER_PARSE_OK 0
#define SHAPER_PARSE_NON_IP 1
#define SHAPER_PARSE_MALFORMED 2
#define SHAPER_PARSE_UNSUPPORTED 3
struct test_record {
	__u32 parse;      /* SHAPER_PARSE_* */
	__u32 parse_err;  /* SHAPER_PE_* */
	__u32 sub_class;  /* subscriber's class for this direction, 0 = none */
	__u32 rule_class; /* matched rule's class, 0 = none */
	__u32 rule_id;    /* matched rule's id */
	__u32 drop_reason; /* SHAPER_DROP_* */
	__u32 runs;       /* incremented every run */
	__u32 pad;
};
_Static_assert(sizeof(struct test_record) == 32, "abi: test_record");

#define SHAPER_DROP_NONE 0
#define SHAPER_DROP_POLICE_RULE 1
#define SHAPER_DROP_POLICE_SUB 2
#define SHAPER_DROP_MTU 3
#define SHAPER_DROP_BLOCK 4
#define SHAPER_DROP_FAIL_CLOSED 5
#define SHAPER_DROP_MALFORMED 6

/* ---- load-time configuration (volatile const globals, set with override_global) ----------- */
/* cfg_fail_closed: __u32, 1 = drop IP traffic no policy covers.
 * cfg_malformed_drop: __u32, 1 = drop malformed packets (default: pass, counted).
 * cfg_flow_sample_shift: __u32, sample one packet in 2^n into the flow table; 31 = off. */

#endif /* SHAPER_ABI_H */
