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

/* Does the active rule set of this family have more than one tuple? */
static __always_inline int rules_multi_tuple(__u8 family, __u32 set)
{
	__u32 idx = set * SHAPER_MAX_TUPLES + 1;
	if (family == 4) {
		struct tuple_v4 *t = bpf_map_lookup_elem(&shaper_tuples_v4, &idx);
		return t && (t->flags & SHAPER_TUPLE_F_VALID);
	}
	struct tuple_v6 *t = bpf_map_lookup_elem(&shaper_tuples_v6, &idx);
	return t && (t->flags & SHAPER_TUPLE_F_VALID);
}

/* The cache slot for a packet's rule-relevant fields (a multiplicative hash of them). */
static __always_inline struct rule_cache_slot *rule_cache_slot_of(const struct pkt *pk, int dir)
{
	__u32 a[4], b[4];
	__builtin_memcpy(a, pk->src, 16);
	__builtin_memcpy(b, pk->dst, 16);
	__u32 h = a[0] ^ a[1] ^ a[2] ^ a[3];
	h = (h * 0x9e3779b1) ^ b[0] ^ b[1] ^ b[2] ^ b[3];
	h = (h * 0x9e3779b1) ^ (((__u32)pk->sport << 16) | pk->dport);
	h = (h * 0x9e3779b1) ^ pk->proto ^ ((__u32)dir << 8);
	h *= 0x9e3779b1;
	__u32 idx = (h >> 16) & (SHAPER_RULE_CACHE_SLOTS - 1);
	return bpf_map_lookup_elem(&shaper_rule_cache, &idx);
}

static __always_inline int rule_cache_hit(const struct rule_cache_slot *s, const struct pkt *pk,
					  int dir, __u32 epoch)
{
	__u32 a[4], b[4];
	__builtin_memcpy(a, pk->src, 16);
	__builtin_memcpy(b, pk->dst, 16);
	return s->valid && s->epoch == epoch && s->dir == dir && s->family == pk->family &&
	       s->proto == pk->proto && s->sport == pk->sport && s->dport == pk->dport &&
	       s->src[0] == a[0] && s->src[1] == a[1] && s->src[2] == a[2] && s->src[3] == a[3] &&
	       s->dst[0] == b[0] && s->dst[1] == b[1] && s->dst[2] == b[2] && s->dst[3] == b[3];
}

static __always_inline void rule_cache_fill(struct rule_cache_slot *s, const struct pkt *pk,
					    int dir, __u32 epoch, __u32 sub_class,
					    const struct rule_match *m)
{
	__builtin_memcpy(s->src, pk->src, 16);
	__builtin_memcpy(s->dst, pk->dst, 16);
	s->sport = pk->sport;
	s->dport = pk->dport;
	s->proto = pk->proto;
	s->family = pk->family;
	s->epoch = epoch;
	s->class_id = m->class_id;
	s->rule_id = m->rule_id;
	s->sub_class = sub_class;
	s->dir = dir;
	s->valid = 1;
}

static __always_inline void classify(const struct pkt *pk, const __u8 *sub_addr, int dir,
				     struct cls *c)
{
	/* The epoch is read before anything it guards, so a decision filled from maps that
	 * changed meanwhile is filed under the old epoch and never served. */
	__u32 zero = 0, set = 0, epoch = 0;
	struct shaper_ctl *ctl = bpf_map_lookup_elem(&shaper_ctl, &zero);
	if (ctl) {
		set = ctl->active_set & 1;
		epoch = ctl->epoch;
	}
	struct rule_match m = {};
	/* With a single match shape the search is one probe: cheaper than a cache miss. */
	struct rule_cache_slot *slot = 0;
	if (rules_multi_tuple(pk->family, set))
		slot = rule_cache_slot_of(pk, dir);
	if (slot && rule_cache_hit(slot, pk, dir, epoch)) {
		c->sub_id = slot->sub_class;
		m.class_id = slot->class_id;
		m.rule_id = slot->rule_id;
	} else {
		c->sub_id = sub_lookup(pk, sub_addr, dir);
		shaper_rules_match((struct pkt *)pk, set, &m);
		if (slot)
			rule_cache_fill(slot, pk, dir, epoch, c->sub_id, &m);
	}
	c->sub = class_get(c->sub_id);
	if (!c->sub)
		c->sub_id = 0;
	c->rule_id = m.rule_id;
	c->rule = class_get(m.class_id);
	c->rule_id_class = c->rule ? m.class_id : 0;
}

#endif
