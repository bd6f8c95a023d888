/* SPDX-License-Identifier: Apache-2.0 */
/* Classification per docs/DATAPLANE.md §2: subscriber by exact address, then provider rules by
 * tuple-space search (one hash lookup per match shape, sorted by precedence, early exit). */
#ifndef SHAPER_CLASSIFY_H
#define SHAPER_CLASSIFY_H

#include "global.h"
#include "maps.h"
#include "parse.h"

struct cls {
	__u32 sub_id;  /* valid subscriber class, or 0 */
	__u32 rule_id_class; /* valid rule class, or 0 */
	__u32 rule_id; /* winning rule's id, or 0 */
	struct class_entry *sub;
	struct class_entry *rule;
	struct sub_dir *sd; /* the subscriber's own state for this direction (when sub is set) */
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

static __always_inline struct sub_slot *slot_get(__u32 idx)
{
	return bpf_map_lookup_elem(&shaper_sub_slots, &idx);
}

/* Finds `key` (host order) in the pools of `family` (0 = IPv4, 1 = IPv6 /64). Returns 1 when
 * a pool covers it (then *slot is its slot, or NULL if out of the map), 0 when none does. */
static __always_inline int pool_find(__u32 family, __u64 key, struct sub_slot **slot)
{
	int i;
	for (i = 0; i < SHAPER_MAX_POOLS; i++) {
		__u32 idx = family * SHAPER_MAX_POOLS + i;
		struct sub_pool *p = bpf_map_lookup_elem(&shaper_pools, &idx);
		if (!p || !p->count)
			return 0;
		__u64 off = key - p->base;
		if (key >= p->base && off < p->count) {
			*slot = slot_get(p->slot0 + (__u32)off);
			return 1;
		}
	}
	return 0;
}

static __always_inline struct sub_dir *sub_lookup(const struct pkt *pk, const __u8 *addr, int dir)
{
	struct sub_slot *s = 0;
	struct sub_value *v = 0;
	if (pk->family == 4) {
		__be32 a;
		__builtin_memcpy(&a, addr, 4);
		if (!pool_find(0, bpf_ntohl(a), &s)) {
			struct sub_key_v4 k = { .addr = a };
			v = bpf_map_lookup_elem(&shaper_subs_v4, &k);
		}
	} else {
		struct sub_key_v6 k;
		__builtin_memcpy(k.addr, addr, 16);
		v = bpf_map_lookup_elem(&shaper_subs_v6, &k);
		if (!v) {
			__u32 hi, lo;
			__builtin_memcpy(&hi, addr, 4);
			__builtin_memcpy(&lo, addr + 4, 4);
			__u64 p64 = ((__u64)bpf_ntohl(hi) << 32) | bpf_ntohl(lo);
			if (!pool_find(1, p64, &s)) {
				struct sub_key_v6_64 k64;
				__builtin_memcpy(k64.prefix, addr, 8);
				v = bpf_map_lookup_elem(&shaper_subs_v6_64, &k64);
			}
		}
	}
	if (v)
		s = slot_get(v->slot);
	if (!s)
		return 0;
	return dir == SHAPER_DIR_UP ? &s->d[0] : &s->d[1];
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

/* The winning rule of the active set `set` for this packet: the lowest precedence whose
 * prefixes, protocol and port ranges match (class and rule id 0 when none does). A global
 * function (global.h): the tuple and chain loops are verified once, not at every caller. */
SHAPER_GLOBAL int shaper_rules_match(struct pkt *pk, __u32 set, struct rule_match *m)
{
	if (!pk || !m)
		return 0;
	m->prec = 0xffffffff;
	m->class_id = 0;
	m->rule_id = 0;
	if (pk->family == 4)
		rules_v4(pk, set & 1, &m->prec, &m->class_id, &m->rule_id);
	else
		rules_v6(pk, set & 1, &m->prec, &m->class_id, &m->rule_id);
	return 0;
}

/* The cache mode of the active rule set of this family: returns 1 when it has rules, with the
 * fields no rule looks at in *ignore. A hit (one slot read) costs less than even one tuple
 * probe (a 12- or 36-byte jhash and a bucket walk), so the cache fronts every non-empty set. */
static __always_inline int rules_cache_mode(__u8 family, __u32 set, __u8 *ignore)
{
	__u32 idx0 = set * SHAPER_MAX_TUPLES;
	if (family == 4) {
		struct tuple_v4 *t0 = bpf_map_lookup_elem(&shaper_tuples_v4, &idx0);
		if (!t0 || !(t0->flags & SHAPER_TUPLE_F_VALID))
			return 0;
		*ignore = t0->ignore;
		return 1;
	}
	struct tuple_v6 *t0 = bpf_map_lookup_elem(&shaper_tuples_v6, &idx0);
	if (!t0 || !(t0->flags & SHAPER_TUPLE_F_VALID))
		return 0;
	*ignore = t0->ignore;
	return 1;
}

/* The packet's rule-relevant fields, the ignored ones zeroed. */
static __always_inline void rule_cache_key_of(const struct pkt *pk, __u8 ignore,
					      struct rule_cache_key *k)
{
	if (!(ignore & SHAPER_IGNORE_SRC))
		__builtin_memcpy(k->src, pk->src, 16);
	if (!(ignore & SHAPER_IGNORE_DST))
		__builtin_memcpy(k->dst, pk->dst, 16);
	k->sport = (ignore & SHAPER_IGNORE_SPORT) ? 0 : pk->sport;
	k->dport = (ignore & SHAPER_IGNORE_DPORT) ? 0 : pk->dport;
	k->proto = pk->proto;
	k->family = pk->family;
}

static __always_inline struct rule_cache_slot *rule_cache_slot_of(const struct rule_cache_key *k)
{
	__u32 h = k->src[0] ^ k->src[1] ^ k->src[2] ^ k->src[3];
	h = (h * 0x9e3779b1) ^ k->dst[0] ^ k->dst[1] ^ k->dst[2] ^ k->dst[3];
	h = (h * 0x9e3779b1) ^ (((__u32)k->sport << 16) | k->dport);
	h = (h * 0x9e3779b1) ^ k->proto ^ ((__u32)k->family << 8);
	h *= 0x9e3779b1;
	__u32 idx = (h >> 16) & (SHAPER_RULE_CACHE_SLOTS - 1);
	return bpf_map_lookup_elem(&shaper_rule_cache, &idx);
}

static __always_inline int rule_cache_hit(const struct rule_cache_slot *s,
					  const struct rule_cache_key *k, __u32 epoch)
{
	return s->valid && s->epoch == epoch && s->k.family == k->family &&
	       s->k.proto == k->proto && s->k.sport == k->sport && s->k.dport == k->dport &&
	       s->k.src[0] == k->src[0] && s->k.src[1] == k->src[1] &&
	       s->k.src[2] == k->src[2] && s->k.src[3] == k->src[3] &&
	       s->k.dst[0] == k->dst[0] && s->k.dst[1] == k->dst[1] &&
	       s->k.dst[2] == k->dst[2] && s->k.dst[3] == k->dst[3];
}

static __always_inline void classify(const struct pkt *pk, const __u8 *sub_addr, int dir,
				     struct cls *c)
{
	/* The epoch is read before anything it guards, so a decision filled from a rule set
	 * that flipped meanwhile is filed under the old epoch and never served. */
	__u32 zero = 0, set = 0, epoch = 0;
	struct shaper_ctl *ctl = bpf_map_lookup_elem(&shaper_ctl, &zero);
	if (ctl) {
		set = ctl->active_set & 1;
		epoch = ctl->epoch;
	}
	struct rule_match m = {};
	struct rule_cache_slot *slot = 0;
	struct rule_cache_key k = {};
	__u8 ignore = 0;
	if (rules_cache_mode(pk->family, set, &ignore)) {
		rule_cache_key_of(pk, ignore, &k);
		slot = rule_cache_slot_of(&k);
	}
	if (slot && rule_cache_hit(slot, &k, epoch)) {
		m.class_id = slot->class_id;
		m.rule_id = slot->rule_id;
	} else {
		shaper_rules_match((struct pkt *)pk, set, &m);
		if (slot) {
			slot->k = k;
			slot->epoch = epoch;
			slot->class_id = m.class_id;
			slot->rule_id = m.rule_id;
			slot->valid = 1;
		}
	}
	struct sub_dir *sd = sub_lookup(pk, sub_addr, dir);
	c->sub_id = sd ? sd->class_id : 0;
	c->sub = class_get(c->sub_id);
	if (!c->sub)
		c->sub_id = 0;
	c->sd = c->sub ? sd : 0;
	c->rule_id = m.rule_id;
	c->rule = class_get(m.class_id);
	c->rule_id_class = c->rule ? m.class_id : 0;
}

#endif
