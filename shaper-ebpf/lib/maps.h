/* SPDX-License-Identifier: Apache-2.0 */
/* Every map of the shaper programs. The loader pins the ones the controller owns (under the
 * ABI-versioned directory), so a restarted controller reuses them and
 * enforcement never stops. */
#ifndef SHAPER_MAPS_H
#define SHAPER_MAPS_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "shaper_abi.h"

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, SHAPER_MAX_SUBSCRIBERS);
	__type(key, struct sub_key_v4);
	__type(value, struct sub_value);
} shaper_subs_v4 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, SHAPER_MAX_SUBSCRIBERS);
	__type(key, struct sub_key_v6);
	__type(value, struct sub_value);
} shaper_subs_v6 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, SHAPER_MAX_SUBSCRIBERS);
	__type(key, struct sub_key_v6_64);
	__type(value, struct sub_value);
} shaper_subs_v6_64 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, SHAPER_MAX_SUBSCRIBERS);
	__type(key, __u32);
	__type(value, struct sub_slot);
} shaper_sub_slots SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 2 * SHAPER_MAX_POOLS);
	__type(key, __u32);
	__type(value, struct sub_pool);
} shaper_pools SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, SHAPER_MAX_CLASSES);
	__type(key, __u32);
	__type(value, struct class_entry);
	__uint(map_flags, BPF_F_MMAPABLE); /* userspace writes classes into its mapping */
} shaper_classes SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, SHAPER_MAX_CLASSES);
	__type(key, __u32);
	__type(value, struct class_stats);
} shaper_class_stats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct global_stats);
} shaper_global_stats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, SHAPER_RULE_SETS * SHAPER_MAX_TUPLES);
	__type(key, __u32);
	__type(value, struct tuple_v4);
} shaper_tuples_v4 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, SHAPER_RULE_SETS * SHAPER_MAX_TUPLES);
	__type(key, __u32);
	__type(value, struct tuple_v6);
} shaper_tuples_v6 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, SHAPER_MAX_RULE_KEYS);
	__type(key, struct rule_key_v4);
	__type(value, struct rule_head);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} shaper_rules_v4 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, SHAPER_MAX_RULE_KEYS);
	__type(key, struct rule_key_v6);
	__type(value, struct rule_head);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} shaper_rules_v6 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, SHAPER_MAX_RULE_ENTRIES);
	__type(key, __u32);
	__type(value, struct rule_entry);
} shaper_rule_entries SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct shaper_ctl);
} shaper_ctl SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_PERCPU_HASH);
	__uint(max_entries, SHAPER_MAX_FLOWS);
	__type(key, struct flow_key);
	__type(value, struct flow_value);
} shaper_flows SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 256 * 1024);
} shaper_events SEC(".maps");

/* Per-CPU scratch: sampling counter and event rate limit. Not pinned (no state worth keeping). */
struct cpu_scratch {
	__u64 sample_ctr;
	__u64 flow_miss_ctr; /* sampled packets of flows not in the table */
	__u64 last_event_ns[4];
};
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct cpu_scratch);
} shaper_scratch SEC(".maps");

/* Per-CPU, direct-mapped cache of rule decisions (rule class and rule id) in front of the
 * tuple-space search. The key is the packet's rule-relevant fields: those the active rule set
 * ignores (SHAPER_IGNORE_*: e.g. the source address when no rule has a source prefix) are
 * zeroed, so the many subscribers talking to one provider server share one entry. A slot is
 * valid only for the epoch it was filled in: userspace bumps shaper_ctl.epoch at every
 * rule-set flip. Subscribers are not cached (their lookup is one access). Class contents are
 * always read fresh. Kernel-private: userspace never reads it. */
#ifndef SHAPER_RULE_CACHE_SLOTS
#define SHAPER_RULE_CACHE_SLOTS 4096 /* power of two */
#endif
struct rule_cache_key {
	__u32 src[4];
	__u32 dst[4];
	__u16 sport;
	__u16 dport;
	__u8 proto;
	__u8 family;
	__u8 pad[2];
};
_Static_assert(sizeof(struct rule_cache_key) == 40, "rule_cache_key");
struct rule_cache_slot {
	struct rule_cache_key k;
	__u32 epoch;
	__u32 valid;
	__u32 class_id;
	__u32 rule_id;
};
_Static_assert(sizeof(struct rule_cache_slot) == 56, "rule_cache_slot");
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, SHAPER_RULE_CACHE_SLOTS);
	__type(key, __u32);
	__type(value, struct rule_cache_slot);
} shaper_rule_cache SEC(".maps");

#ifdef SHAPER_TEST
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} shaper_test_clock SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct test_record);
} shaper_test_last SEC(".maps");
#endif

/* Load-time configuration (EbpfLoader::override_global). */
volatile const __u32 cfg_fail_closed = 0;
volatile const __u32 cfg_malformed_drop = 0;
volatile const __u32 cfg_flow_sample_shift = 4;
#ifdef SHAPER_BENCH_SPREAD
volatile const __u32 cfg_bench_base_v4 = 0; /* host order */
volatile const __u32 cfg_bench_spread = 1;
#endif

#endif
