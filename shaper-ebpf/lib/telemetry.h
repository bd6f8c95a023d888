/* SPDX-License-Identifier: Apache-2.0 */
/* Telemetry of the XDP and TC programs, per docs/DATAPLANE.md: per-CPU class counters, kernel
 * events on the ring buffer (rate-limited per CPU and kind), the sampled flow table for the
 * top-N flow metrics, and the test record that BPF_PROG_TEST_RUN fixtures read back. Nothing
 * here changes a packet or a verdict. */
#ifndef SHAPER_TELEMETRY_H
#define SHAPER_TELEMETRY_H

#include "global.h"
#include "maps.h"
#include "parse.h"

/* A global function, so that struct shaper_event is in the object's BTF for the ABI check. */
SHAPER_GLOBAL int shaper_event_send(struct shaper_event *ev)
{
	if (!ev)
		return -1;
	return bpf_ringbuf_output(&shaper_events, ev, sizeof(*ev), 0);
}

/* A class's per-CPU counters, or NULL for class 0 (none). */
static __always_inline struct class_stats *stats_of(__u32 id)
{
	if (!id)
		return 0;
	return bpf_map_lookup_elem(&shaper_class_stats, &id);
}

/* Sends a kernel event, at most one per millisecond per CPU and kind (kind & 3), so a flood
 * of malformed packets cannot flood the ring buffer. */
static __always_inline void emit_event(struct xdp_md *ctx, __u32 kind, __u32 class_id,
				       __u32 detail)
{
	__u32 zero = 0;
	struct cpu_scratch *sc = bpf_map_lookup_elem(&shaper_scratch, &zero);
	if (!sc)
		return;
	__u64 now = bpf_ktime_get_ns();
	__u32 slot = kind & 3;
	if (now - sc->last_event_ns[slot] < 1000000)
		return;
	sc->last_event_ns[slot] = now;
	struct shaper_event ev = {
		.kind = kind,
		.ifindex = ctx->ingress_ifindex,
		.class_id = class_id,
		.detail = detail,
		.ts_ns = now,
	};
	shaper_event_send(&ev);
}

#define SHAPER_FLOW_ADMIT 8 /* power of two */

/* Counts one packet in every 2^cfg_flow_sample_shift into the LRU flow table (shift > 30
 * turns sampling off). */
static __always_inline void flow_sample(const struct pkt *pk, int dir, __u32 class_id,
					struct global_stats *gs)
{
	__u32 shift = cfg_flow_sample_shift;
	if (shift > 30)
		return;
	__u32 zero = 0;
	struct cpu_scratch *sc = bpf_map_lookup_elem(&shaper_scratch, &zero);
	if (!sc)
		return;
	__u64 n = sc->sample_ctr++;
	if (n & ((1ULL << shift) - 1))
		return;
	struct flow_key k = {};
	if (pk->family == 4) {
		k.src[10] = k.src[11] = 0xff;
		k.dst[10] = k.dst[11] = 0xff;
		__builtin_memcpy(k.src + 12, pk->src, 4);
		__builtin_memcpy(k.dst + 12, pk->dst, 4);
	} else {
		__builtin_memcpy(k.src, pk->src, 16);
		__builtin_memcpy(k.dst, pk->dst, 16);
	}
	k.sport = bpf_htons(pk->sport);
	k.dport = bpf_htons(pk->dport);
	k.proto = pk->proto;
	k.dir = dir;
	struct flow_value *v = bpf_map_lookup_elem(&shaper_flows, &k);
	if (v) {
		v->pkts++;
		v->bytes += pk->l3_len;
		v->class_id = class_id;
	} else if ((sc->flow_miss_ctr++ & (SHAPER_FLOW_ADMIT - 1)) == 0) {
		/* A new flow enters the table on one sampled miss in SHAPER_FLOW_ADMIT: an LRU
		 * insert that evicts costs ~1 µs, and with more flows than the table holds every
		 * miss would be one. Heavy flows, sampled often, still enter within a few samples;
		 * the table is for the top N, not for every flow. */
		struct flow_value nv = { .pkts = 1, .bytes = pk->l3_len, .class_id = class_id };
		bpf_map_update_elem(&shaper_flows, &k, &nv, BPF_ANY);
	}
	gs->v[SHAPER_GS_FLOW_SAMPLES]++;
}

/* The test build records what the XDP program decided in a local `struct test_record rec`
 * (stored into shaper_test_last at the end); the production build compiles RECORD away. */
#ifdef SHAPER_TEST
#define RECORD(field, val) (rec.field = (val))
#else
#define RECORD(field, val) ((void)0)
#endif

#endif
