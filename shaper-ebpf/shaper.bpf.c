// SPDX-License-Identifier: GPL-2.0 OR Apache-2.0
/* shaper data plane: XDP ingress (classify, police, remark, clamp, answer MTU violations) and
 * TC egress (steer into HTB via skb->priority). Semantics: docs/DATAPLANE.md. */
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
#include "shaper_abi.h"
#include "maps.h"
#include "parse.h"
#include "global.h"
#include "classify.h"
#include "telemetry.h"
#include "act.h"
#include "icmp.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";


/* Parsing. Inline in the XDP programs: a BPF-to-BPF call ends in a `ret`, which costs a
 * mispredicted return on CPUs with the SRSO "Safe RET" mitigation (~9 ns per packet,
 * docs/PERFORMANCE.md). The TC programs keep the global function, verified once. */
static __always_inline int shaper_parse_xdp(struct xdp_md *ctx, struct pkt *pk, __u32 *err)
{
	if (!ctx || !pk || !err)
		return SHAPER_PARSE_MALFORMED;
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	return parse_packet(data, data_end, pk, err);
}

SHAPER_GLOBAL int shaper_parse_skb(struct __sk_buff *skb, struct pkt *pk, __u32 *err)
{
	if (!skb || !pk || !err)
		return SHAPER_PARSE_MALFORMED;
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	return parse_packet(data, data_end, pk, err);
}

/* Lowers the MSS of a TCP SYN at TC egress. The checksum goes through bpf_l4_csum_replace,
 * which knows the skb's checksum state: a CHECKSUM_PARTIAL packet (sent by a local stack or
 * through a veth) keeps its partial sum, where an in-place XDP rewrite would corrupt it. */
SHAPER_GLOBAL int shaper_mss_clamp(struct __sk_buff *skb, struct pkt *pk, __u32 clamp)
{
	if (!skb || !pk)
		return 0;
	struct mss_walk w = { .clamp = clamp };
	__u32 len = pk->tcp_hlen - 20;
	if (pk->tcp_hlen < 20 || len > sizeof(w.opts))
		return 0;
	if (len == 0 || bpf_skb_load_bytes(skb, pk->l4_off + 20, w.opts, len))
		return 0;
	w.len = len;
	bpf_loop(sizeof(w.opts), mss_walk_step, &w, 0);
	if (!w.found)
		return 0;
	__u32 off = pk->l4_off + 20 + w.off;
	__u16 old = w.value;
	__u16 new = clamp;
	__be16 new_be = bpf_htons(new);
	/* csum_replace2 sums raw 16-bit words from the TCP header start; a field at an odd
	 * offset straddles two words and contributes byte-swapped, i.e. as the host-order
	 * value on this little-endian target. */
	__u64 from = bpf_htons(old), to = new_be;
	if ((off + 2 - pk->l4_off) & 1) {
		from = old;
		to = new;
	}
	if (bpf_l4_csum_replace(skb, pk->l4_off + 16, from, to, 2))
		return 0;
	if (bpf_skb_store_bytes(skb, off + 2, &new_be, 2, 0))
		return 0;
	return 1;
}

SHAPER_GLOBAL int shaper_icmp_answer(struct xdp_md *ctx, struct pkt *pk, __u32 mtu)
{
	if (!ctx || !pk)
		return -1;
	if (pk->family == 4)
		return icmp4_frag_needed(ctx, pk, mtu);
	return icmp6_too_big(ctx, pk, mtu);
}

static __always_inline __u64 clock_ns(void)
{
#ifdef SHAPER_TEST
	__u32 zero = 0;
	__u64 *t = bpf_map_lookup_elem(&shaper_test_clock, &zero);
	return t ? *t : 0;
#else
	return bpf_ktime_get_ns();
#endif
}

static __always_inline int is_icmp_error(const struct pkt *pk)
{
	if (!pk->l4)
		return 0;
	if (pk->family == 4 && pk->proto == IPPROTO_ICMP) {
		__u8 t = pk->icmp_type;
		return t == 3 || t == 4 || t == 5 || t == 11 || t == 12;
	}
	if (pk->family == 6 && pk->proto == IPPROTO_ICMPV6)
		return pk->icmp_type < 128;
	return 0;
}

static __always_inline int shaper_xdp(struct xdp_md *ctx, int dir)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	__u32 zero = 0;
	int verdict = XDP_PASS;
#ifdef SHAPER_TEST
	struct test_record rec = {};
#endif
	struct global_stats *gs = bpf_map_lookup_elem(&shaper_global_stats, &zero);
	if (!gs)
		return XDP_PASS;
	gs->v[SHAPER_GS_RX_PKTS]++;

	struct cls c = {};
	struct pkt pk = {};
	__u32 err = 0;
	int kind = shaper_parse_xdp(ctx, &pk, &err);
	RECORD(parse, kind);
	RECORD(parse_err, err);
	if (kind == SHAPER_PARSE_NON_IP) {
		gs->v[SHAPER_GS_NON_IP]++;
		goto out;
	}
	if (kind == SHAPER_PARSE_MALFORMED) {
		gs->v[SHAPER_GS_MALFORMED]++;
		emit_event(ctx, SHAPER_EV_MALFORMED, 0, err);
		if (cfg_malformed_drop) {
			gs->v[SHAPER_GS_MALFORMED_DROP]++;
			RECORD(drop_reason, SHAPER_DROP_MALFORMED);
			verdict = XDP_DROP;
		}
		goto out;
	}
	if (kind == SHAPER_PARSE_UNSUPPORTED) {
		gs->v[SHAPER_GS_UNSUPPORTED]++;
		emit_event(ctx, SHAPER_EV_UNSUPPORTED, 0, 0);
		goto unclassified;
	}

	const __u8 *sub_addr = dir == SHAPER_DIR_UP ? pk.src : pk.dst;
#ifdef SHAPER_BENCH_SPREAD
	/* Benchmark build only: pretend the subscriber is a random one of cfg_bench_spread. */
	__u8 bench_addr[16] = {};
	if (pk.family == 4) {
		__u32 a = bpf_htonl(cfg_bench_base_v4 + bpf_get_prandom_u32() % cfg_bench_spread);
		__builtin_memcpy(bench_addr, &a, 4);
		if (dir == SHAPER_DIR_UP)
			__builtin_memcpy(pk.src, &a, 4);
		else
			__builtin_memcpy(pk.dst, &a, 4);
		sub_addr = bench_addr;
	}
#endif
	classify(&pk, sub_addr, dir, &c);
	RECORD(sub_class, c.sub_id);
	RECORD(rule_class, c.rule_id_class);
	RECORD(rule_id, c.rule_id);
	if (!c.sub && !c.rule)
		goto unclassified;
	/* The clock is read here, ahead of the counters' atomic adds: rdtscp waits for every
	 * earlier instruction, and reading it later cost ~8 ns more (docs/PERFORMANCE.md). */
	__u64 now = 0;
	if ((c.rule && c.rule->ns_per_byte_q16) || (c.sub && c.sub->ns_per_byte_q16))
		now = clock_ns();

	struct class_stats *ss = stats_of(c.sub_id);
	struct class_stats *rs = stats_of(c.rule_id_class);
	if (ss) {
		ss->pkts++;
		ss->bytes += pk.l3_len;
	}
	if (c.sd) {
		__sync_fetch_and_add(&c.sd->pkts, 1);
		__sync_fetch_and_add(&c.sd->bytes, pk.l3_len);
	}
	if (rs) {
		rs->pkts++;
		rs->bytes += pk.l3_len;
	}

	/* Block. */
	if (c.rule && (c.rule->flags & SHAPER_CLASS_F_BLOCK)) {
		if (rs)
			rs->drop_block++;
		RECORD(drop_reason, SHAPER_DROP_BLOCK);
		verdict = XDP_DROP;
		goto out;
	}
	if (c.sub && (c.sub->flags & SHAPER_CLASS_F_BLOCK)) {
		if (ss)
			ss->drop_block++;
		RECORD(drop_reason, SHAPER_DROP_BLOCK);
		verdict = XDP_DROP;
		goto out;
	}

	/* MTU: the smaller non-zero policy of the two classes binds. */
	__u16 mtu = 0;
	struct class_stats *ms = 0;
	if (c.rule && c.rule->mtu) {
		mtu = c.rule->mtu;
		ms = rs;
	}
	if (c.sub && c.sub->mtu && (!mtu || c.sub->mtu < mtu)) {
		mtu = c.sub->mtu;
		ms = ss;
	}
	if (mtu && pk.l3_len > mtu) {
		int answer = -1;
		if (pk.family == 4) {
			if (!pk.df) {
				/* The stack may fragment it: pass, but not as a drop. */
				goto act;
			}
			if (!is_icmp_error(&pk) && !pk.frag_nonfirst)
				answer = shaper_icmp_answer(ctx, &pk, mtu);
		} else if (!is_icmp_error(&pk)) {
			answer = shaper_icmp_answer(ctx, &pk, mtu);
		}
		if (ms)
			ms->drop_mtu++;
		RECORD(drop_reason, SHAPER_DROP_MTU);
		if (answer == 0) {
			if (ms)
				ms->icmp_sent++;
			gs->v[SHAPER_GS_XDP_TX]++;
			emit_event(ctx, SHAPER_EV_ICMP_SENT, 0, mtu);
			verdict = XDP_TX;
		} else {
			verdict = XDP_DROP;
		}
		goto out;
	}

act:;
	/* Police: the rule's bucket, then the subscriber's. */
	if (c.rule && !police(c.rule, now, pk.l3_len, gs)) {
		if (rs)
			rs->drop_police++;
		RECORD(drop_reason, SHAPER_DROP_POLICE_RULE);
		verdict = XDP_DROP;
		goto out;
	}
	if (c.sub && c.sd && !police_sub(c.sub, c.sd, now, pk.l3_len, gs)) {
		if (ss)
			ss->drop_police++;
		RECORD(drop_reason, SHAPER_DROP_POLICE_SUB);
		verdict = XDP_DROP;
		goto out;
	}

	/* DSCP: the rule's if it sets one, else the subscriber's. */
	__u8 dscp = SHAPER_DSCP_KEEP;
	struct class_stats *ds = 0;
	if (c.rule && c.rule->dscp != SHAPER_DSCP_KEEP) {
		dscp = c.rule->dscp;
		ds = rs;
	} else if (c.sub && c.sub->dscp != SHAPER_DSCP_KEEP) {
		dscp = c.sub->dscp;
		ds = ss;
	}
	if (dscp != SHAPER_DSCP_KEEP && dscp_mark(data, data_end, &pk, dscp & 0x3f) && ds)
		ds->dscp_marked++;

	flow_sample(&pk, dir, c.rule_id_class ? c.rule_id_class : c.sub_id, gs);
	goto out;

unclassified:
	gs->v[SHAPER_GS_UNCLASSIFIED]++;
	if (cfg_fail_closed) {
		gs->v[SHAPER_GS_FAIL_CLOSED]++;
		RECORD(drop_reason, SHAPER_DROP_FAIL_CLOSED);
		verdict = XDP_DROP;
	}
out:
	if (verdict != XDP_PASS && c.sd)
		__sync_fetch_and_add(&c.sd->drops, 1);
#ifdef SHAPER_TEST
	{
		struct test_record *last = bpf_map_lookup_elem(&shaper_test_last, &zero);
		if (last) {
			rec.runs = last->runs + 1;
			*last = rec;
		}
	}
#endif
	return verdict;
}

SEC("xdp")
int shaper_xdp_sub(struct xdp_md *ctx)
{
	return shaper_xdp(ctx, SHAPER_DIR_UP);
}

SEC("xdp")
int shaper_xdp_up(struct xdp_md *ctx)
{
	return shaper_xdp(ctx, SHAPER_DIR_DOWN);
}

static __always_inline int shaper_tc(struct __sk_buff *skb, int dir)
{
	__u32 zero = 0;
	struct global_stats *gs = bpf_map_lookup_elem(&shaper_global_stats, &zero);
	if (gs)
		gs->v[SHAPER_GS_TC_PKTS]++;
	/* Headers we read must be in the linear part. */
	if (skb->data_end - skb->data < 128 && skb->len > skb->data_end - skb->data)
		bpf_skb_pull_data(skb, skb->len < 128 ? skb->len : 128);
	struct pkt pk = {};
	__u32 err = 0;
	if (shaper_parse_skb(skb, &pk, &err) != SHAPER_PARSE_OK)
		return TC_ACT_OK;
	struct cls c = {};
	classify(&pk, dir == SHAPER_DIR_UP ? pk.src : pk.dst, dir, &c);
	__u32 prio = 0;
	if (c.rule && c.rule->skb_priority)
		prio = c.rule->skb_priority;
	else if (c.sub && c.sub->skb_priority)
		prio = c.sub->skb_priority;
	if (prio) {
		skb->priority = prio;
		if (gs)
			gs->v[SHAPER_GS_TC_STEERED]++;
	}
	/* MSS clamp on SYNs (never raised): the smaller non-zero MTU of the two classes. */
	__u16 mtu = 0;
	__u32 mclass = 0;
	if (c.rule && c.rule->mtu) {
		mtu = c.rule->mtu;
		mclass = c.rule_id_class;
	}
	if (c.sub && c.sub->mtu && (!mtu || c.sub->mtu < mtu)) {
		mtu = c.sub->mtu;
		mclass = c.sub_id;
	}
	if (mtu && pk.l4 && pk.proto == IPPROTO_TCP && (pk.tcp_flags & 0x02)) {
		__u16 clamp = mtu - (pk.family == 4 ? 40 : 60);
		if (shaper_mss_clamp(skb, &pk, clamp)) {
			struct class_stats *ms = stats_of(mclass);
			if (ms)
				ms->mss_clamped++;
		}
	}
	return TC_ACT_OK;
}

SEC("classifier")
int shaper_tc_down(struct __sk_buff *skb)
{
	return shaper_tc(skb, SHAPER_DIR_DOWN);
}

SEC("classifier")
int shaper_tc_up(struct __sk_buff *skb)
{
	return shaper_tc(skb, SHAPER_DIR_UP);
}
