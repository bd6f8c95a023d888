/* SPDX-License-Identifier: Apache-2.0 */
/* Classification per docs/DATAPLANE.md §2: subscriber by exact address, then provider rules by
 * tuple-space search (one hash lookup per match shape, sorted by precedence, early exit). */
#ifndef SHAPER_CLASSIFY_H
#define SHAPER_CLASSIFY_H

#include "maps.h"
#include "parse.h"

struct cls {
	__u32 sub_id;  /* valid subscriber class, or 0 */
	__u32 rule_id_class; /* valid rule class, or 0 */
	__u32 rule_id; /* winning rule's id, or 0 */
	struct class_entry *sub;
	struct class_entry *rule;
};

static __always_inline struct class_entry *class_get(__u32 id)
{
	if (id == SHAPER_CLASS_NONE)
		return 0;
	struct class_entry *c = bpf_map_lookup_elem(&shaper_classes, &id);
	if (!c || !(c->flags & SHAPER_CLASS_F_VALID))
		return 0;
	return c;
}

static __always_inline __u32 sub_lookup(const struct pkt *pk, const __u8 *addr, int dir)
{
	struct sub_value *v;
	if (pk->family == 4) {
		struct sub_key_v4 k;
		__builtin_memcpy(&k.addr, addr, 4);
		v = bpf_map_lookup_elem(&shaper_subs_v4, &k);
	} else {
		struct sub_key_v6 k;
		__builtin_memcpy(k.addr, addr, 16);
		v = bpf_map_lookup_elem(&shaper_subs_v6, &k);
		if (!v) {
			struct sub_key_v6_64 k64;
			__builtin_memcpy(k64.prefix, addr, 8);
			v = bpf_map_lookup_elem(&shaper_subs_v6_64, &k64);
		}
	}
	if (!v)
		return 0;
	return v->class_id[dir & 1];
}

/* Walks a chain of rule entries (sorted by precedence) for the first whose ports match. */
static __always_inline void chain_walk(__u32 e, const struct pkt *pk, __u32 *best_prec,
				       __u32 *best_class, __u32 *best_rule)
{
	int i;
	for (i = 0; i < SHAPER_MAX_CHAIN; i++) {
		if (e == SHAPER_RULE_END)
			return;
		struct rule_entry *re = bpf_map_lookup_elem(&shaper_rule_entries, &e);
		if (!re || re->precedence >= *best_prec)
			return;
		if (pk->sport >= re->sport_lo && pk->sport <= re->sport_hi &&
		    pk->dport >= re->dport_lo && pk->dport <= re->dport_hi) {
			*best_prec = re->precedence;
			*best_class = re->class_id;
			*best_rule = re->rule_id;
			return;
		}
		e = re->next;
	}
}

static __always_inline void rules_v4(const struct pkt *pk, __u32 set, __u32 *best_prec,
				     __u32 *best_class, __u32 *best_rule)
{
	__be32 src, dst;
	__builtin_memcpy(&src, pk->src, 4);
	__builtin_memcpy(&dst, pk->dst, 4);
	int t;
	for (t = 0; t < SHAPER_MAX_TUPLES; t++) {
		__u32 idx = set * SHAPER_MAX_TUPLES + t;
		struct tuple_v4 *tp = bpf_map_lookup_elem(&shaper_tuples_v4, &idx);
		if (!tp || !(tp->flags & SHAPER_TUPLE_F_VALID) || tp->min_precedence >= *best_prec)
			return;
		struct rule_key_v4 k = {
			.tuple = idx,
			.proto = (tp->flags & SHAPER_TUPLE_F_ANY_PROTO) ? 0 : pk->proto,
			.src = src & tp->src_mask,
			.dst = dst & tp->dst_mask,
		};
		struct rule_head *h = bpf_map_lookup_elem(&shaper_rules_v4, &k);
		if (h)
			chain_walk(h->entry, pk, best_prec, best_class, best_rule);
	}
}

static __always_inline void rules_v6(const struct pkt *pk, __u32 set, __u32 *best_prec,
				     __u32 *best_class, __u32 *best_rule)
{
	__u32 src[4], dst[4];
	__builtin_memcpy(src, pk->src, 16);
	__builtin_memcpy(dst, pk->dst, 16);
	int t;
	for (t = 0; t < SHAPER_MAX_TUPLES; t++) {
		__u32 idx = set * SHAPER_MAX_TUPLES + t;
		struct tuple_v6 *tp = bpf_map_lookup_elem(&shaper_tuples_v6, &idx);
		if (!tp || !(tp->flags & SHAPER_TUPLE_F_VALID) || tp->min_precedence >= *best_prec)
			return;
		struct rule_key_v6 k = {
			.tuple = idx,
			.proto = (tp->flags & SHAPER_TUPLE_F_ANY_PROTO) ? 0 : pk->proto,
		};
		__u32 sm[4], dm[4], ks[4], kd[4];
		__builtin_memcpy(sm, tp->src_mask, 16);
		__builtin_memcpy(dm, tp->dst_mask, 16);
		ks[0] = src[0] & sm[0];
		ks[1] = src[1] & sm[1];
		ks[2] = src[2] & sm[2];
		ks[3] = src[3] & sm[3];
		kd[0] = dst[0] & dm[0];
		kd[1] = dst[1] & dm[1];
		kd[2] = dst[2] & dm[2];
		kd[3] = dst[3] & dm[3];
		__builtin_memcpy(k.src, ks, 16);
		__builtin_memcpy(k.dst, kd, 16);
		struct rule_head *h = bpf_map_lookup_elem(&shaper_rules_v6, &k);
		if (h)
			chain_walk(h->entry, pk, best_prec, best_class, best_rule);
	}
}

struct rule_match {
	__u32 prec;
	__u32 class_id;
	__u32 rule_id;
	__u32 pad;
};
int shaper_rules_match(struct pkt *pk, __u32 set, struct rule_match *m);

static __always_inline void classify(const struct pkt *pk, const __u8 *sub_addr, int dir,
				     struct cls *c)
{
	c->sub_id = sub_lookup(pk, sub_addr, dir);
	c->sub = class_get(c->sub_id);
	if (!c->sub)
		c->sub_id = 0;

	__u32 zero = 0, set = 0;
	struct shaper_ctl *ctl = bpf_map_lookup_elem(&shaper_ctl, &zero);
	if (ctl)
		set = ctl->active_set & 1;
	struct rule_match m = {};
	shaper_rules_match((struct pkt *)pk, set, &m);
	c->rule_id = m.rule_id;
	c->rule = class_get(m.class_id);
	c->rule_id_class = c->rule ? m.class_id : 0;
}

#endif
