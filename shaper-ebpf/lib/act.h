/* SPDX-License-Identifier: Apache-2.0 */
/* Per-class actions per docs/DATAPLANE.md §3: GCRA policer (one compare-and-swap), DSCP
 * remark, TCP MSS clamp. Checksums are updated incrementally (RFC 1624 eqn. 3). */
#ifndef SHAPER_ACT_H
#define SHAPER_ACT_H

#include "maps.h"
#include "parse.h"

/* RFC 1624 eqn. 3: HC' = ~(~HC + ~m + m'), all 16-bit host-order values. */
static __always_inline __u16 csum_replace16(__u16 check, __u16 old, __u16 new)
{
	__u32 sum = (__u16)~check + (__u16)~old + (__u32) new;
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return (__u16)~sum;
}

static __always_inline __u16 swap16(__u16 v)
{
	return (v >> 8) | (v << 8);
}

/* GCRA: conforming iff max(tat, now) + cost - now <= burst_ns. Returns 1 = conform. The
 * bucket's state is the one word *tat, advanced with compare-and-swap. */
static __always_inline int gcra(__u64 *tat_p, __u64 npb, __u64 burst, __u64 now, __u32 len,
				struct global_stats *gs)
{
	if (!npb)
		return 1;
	__u64 cost = ((__u64)len * npb) >> 16;
	int i;
	for (i = 0; i < SHAPER_CAS_TRIES; i++) {
		__u64 tat = *(volatile __u64 *)tat_p;
		__u64 base = tat > now ? tat : now;
		__u64 next = base + cost;
		if (next - now > burst)
			return 0;
		if (__sync_val_compare_and_swap(tat_p, tat, next) == tat)
			return 1;
	}
	if (gs)
		gs->v[SHAPER_GS_POLICE_CONTENDED]++;
	return 1;
}

/* A rule's class: one bucket for all the rule's traffic. */
static __always_inline int police(struct class_entry *c, __u64 now, __u32 len,
				  struct global_stats *gs)
{
	return gcra(&c->tat, c->ns_per_byte_q16, c->burst_ns, now, len, gs);
}

/* A subscriber: the plan's rate and burst, the subscriber's own bucket (or the class's one
 * bucket when the class is F_SHARED). */
static __always_inline int police_sub(struct class_entry *plan, struct sub_dir *sd, __u64 now,
				      __u32 len, struct global_stats *gs)
{
	if (plan->flags & SHAPER_CLASS_F_SHARED)
		return police(plan, now, len, gs);
	return gcra(&sd->tat, plan->ns_per_byte_q16, plan->burst_ns, now, len, gs);
}

/* Rewrites the DS field keeping ECN. Returns 1 if the byte changed. */
static __always_inline int dscp_mark(void *data, void *data_end, const struct pkt *pk,
				     __u8 dscp)
{
	__u8 *p = PKT_PTR(pk->l3_off, 12);
	if (!p)
		return 0;
	if (pk->family == 4) {
		__u8 tos = p[1];
		__u8 ntos = (dscp << 2) | (tos & 3);
		if (ntos == tos)
			return 0;
		__u16 check = ((__u16)p[10] << 8) | p[11];
		__u16 old = ((__u16)p[0] << 8) | tos;
		__u16 new = ((__u16)p[0] << 8) | ntos;
		check = csum_replace16(check, old, new);
		p[1] = ntos;
		p[10] = check >> 8;
		p[11] = check & 0xff;
		return 1;
	}
	__u8 tc = ((p[0] & 0x0f) << 4) | (p[1] >> 4);
	__u8 ntc = (dscp << 2) | (tc & 3);
	if (ntc == tc)
		return 0;
	p[0] = (p[0] & 0xf0) | (ntc >> 4);
	p[1] = (p[1] & 0x0f) | ((ntc & 0x0f) << 4);
	return 1;
}

/* The TCP option walk of the MSS clamp (docs/DATAPLANE.md §4) runs over a copy of the options
 * in a bpf_loop callback: the verifier checks the callback once, where an open-coded walk
 * over up to 40 option bytes made it explore every sequence of option lengths (~900k
 * instructions, next to the 1M limit). */
struct mss_walk {
	__u8 opts[40];
	__u32 len;   /* option bytes present (doff * 4 - 20) */
	__u32 next;  /* offset of the next option to read */
	__u32 found; /* 1 once an MSS above the clamp is found */
	__u32 off;   /* its offset within the options */
	__u16 value; /* its value */
	__u16 clamp;
};

static long mss_walk_step(__u32 i, void *ctx)
{
	struct mss_walk *w = ctx;
	if (i >= w->len || i >= sizeof(w->opts))
		return 1;
	if (i < w->next)
		return 0;
	__u8 kind = w->opts[i];
	if (kind == 0)
		return 1;
	if (kind == 1) {
		w->next = i + 1;
		return 0;
	}
	if (i + 2 > w->len || i + 1 >= sizeof(w->opts))
		return 1;
	__u32 len = w->opts[i + 1];
	if (len < 2 || i + len > w->len)
		return 1;
	if (kind == 2 && len == 4 && i + 3 < sizeof(w->opts)) {
		__u16 mss = ((__u16)w->opts[i + 2] << 8) | w->opts[i + 3];
		if (mss > w->clamp) {
			w->found = 1;
			w->off = i;
			w->value = mss;
			return 1;
		}
	}
	w->next = i + len;
	return 0;
}

#endif
