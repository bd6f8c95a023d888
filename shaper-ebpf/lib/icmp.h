/* SPDX-License-Identifier: Apache-2.0 */
/* ICMP fragmentation-needed (RFC 792/1191) and ICMPv6 packet-too-big (RFC 4443 §3.2) answers,
 * built in place and sent back with XDP_TX, per docs/DATAPLANE.md §5. */
#ifndef SHAPER_ICMP_H
#define SHAPER_ICMP_H

#include "parse.h"

/* Longest L2 header we keep: Ethernet 14 + two VLAN tags 8 + PPPoE 6 + PPP 2 = 30. */
#define SHAPER_L2_MAX 30
#define SHAPER_L2_COPY 32
#define SHAPER_V6_QUOTE 1232 /* 1280 - 40 - 8 */

static __always_inline __u32 csum_fold_be(__u32 sum)
{
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return (__u16)~sum;
}

/* Adds `nwords` 32-bit words at `off`, as two big-endian 16-bit values each. */
static __always_inline __u32 csum_words(void *data, void *data_end, __u32 off, __u32 nwords,
					__u32 sum, int max)
{
	int i;
	for (i = 0; i < max; i++) {
		if ((__u32)i >= nwords)
			break;
		__u8 *p = PKT_PTR(off + i * 4, 4);
		if (!p)
			break;
		sum += ((__u32)p[0] << 8 | p[1]) + ((__u32)p[2] << 8 | p[3]);
	}
	return sum;
}

static __always_inline __u32 csum_bytes16(const __u8 *b, int n, __u32 sum)
{
	int i;
#pragma unroll
	for (i = 0; i < n; i += 2)
		sum += ((__u32)b[i] << 8) | b[i + 1];
	return sum;
}

/* Copies the kept L2 header to the new frame start, swaps the MACs, fixes the PPPoE length. */
static __always_inline int l2_rewrite(void *data, void *data_end, const __u8 *l2buf,
				      const struct pkt *pk, __u32 l3_total)
{
	__u8 *eth = PKT_PTR(0, SHAPER_L2_COPY);
	if (!eth)
		return -1;
	__builtin_memcpy(eth, l2buf + 6, 6);
	__builtin_memcpy(eth + 6, l2buf, 6);
	__builtin_memcpy(eth + 12, l2buf + 12, SHAPER_L2_COPY - 12);
	if (pk->pppoe_off) {
		__u8 *pp = PKT_PTR(pk->pppoe_off, 6);
		if (!pp)
			return -1;
		__u32 len = l3_total + 2;
		pp[4] = len >> 8;
		pp[5] = len & 0xff;
	}
	return 0;
}

/* Turns the frame into room for an answer: keeps the L2 header, grows the head by `grow`
 * bytes (the new IP + ICMP headers, in front of the offending packet, which becomes the
 * quote) and cuts the frame to `l2 + grow + quote` bytes, then rewrites the L2 header for the
 * way back. Returns 0, or -1 when the packet should just be dropped. */
static __always_inline int answer_room(struct xdp_md *ctx, const struct pkt *pk, __u32 grow,
				       __u32 quote)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	__u32 l2 = pk->l3_off;
	__u8 *head = PKT_PTR(0, SHAPER_L2_COPY);
	if (l2 > SHAPER_L2_MAX || !head)
		return -1;
	__u8 l2buf[SHAPER_L2_COPY];
	__builtin_memcpy(l2buf, head, SHAPER_L2_COPY);
	if (bpf_xdp_adjust_head(ctx, -(int)grow))
		return -1;
	data = (void *)(long)ctx->data;
	data_end = (void *)(long)ctx->data_end;
	long cur_len = (long)data_end - (long)data;
	asm volatile("" : "+r"(cur_len)); /* keep the length arithmetic 64-bit for the verifier */
	int delta = (long)(l2 + grow + quote) - cur_len;
	if (bpf_xdp_adjust_tail(ctx, delta))
		return -1;
	data = (void *)(long)ctx->data;
	data_end = (void *)(long)ctx->data_end;
	return l2_rewrite(data, data_end, l2buf, pk, grow + quote);
}

/* Returns 0 when the answer is ready for XDP_TX, -1 when the packet should just be dropped. */
static __always_inline int icmp4_frag_needed(struct xdp_md *ctx, const struct pkt *pk, __u16 mtu)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	__u32 l2 = pk->l3_off;
	if (l2 > SHAPER_L2_MAX)
		return -1;
	__u8 *ip = PKT_PTR(l2, 20);
	if (!ip)
		return -1;
	__u32 q = (ip[0] & 0xf) * 4 + 8; /* offending header + 8 bytes, 28..68 */
	if (answer_room(ctx, pk, 28, q))
		return -1;
	data = (void *)(long)ctx->data;
	data_end = (void *)(long)ctx->data_end;

	__u8 *n = PKT_PTR(l2, 28);
	if (!n)
		return -1;
	__u32 tot = 28 + q;
	n[0] = 0x45;
	n[1] = 0;
	n[2] = tot >> 8;
	n[3] = tot & 0xff;
	n[4] = n[5] = n[6] = n[7] = 0;
	n[8] = 64;
	n[9] = IPPROTO_ICMP;
	n[10] = n[11] = 0;
	__builtin_memcpy(n + 12, pk->dst, 4);
	__builtin_memcpy(n + 16, pk->src, 4);
	__u32 s = csum_fold_be(csum_bytes16(n, 20, 0));
	n[10] = s >> 8;
	n[11] = s & 0xff;
	/* ICMP header: type 3, code 4, checksum, unused, next-hop MTU (RFC 1191). */
	n[20] = 3;
	n[21] = 4;
	n[22] = n[23] = 0;
	n[24] = n[25] = 0;
	n[26] = mtu >> 8;
	n[27] = mtu & 0xff;
	s = csum_words(data, data_end, l2 + 20, (8 + q) / 4, 0, 19);
	s = csum_fold_be(s);
	n = PKT_PTR(l2, 28);
	if (!n)
		return -1;
	n[22] = s >> 8;
	n[23] = s & 0xff;
	return 0;
}

static __always_inline int icmp6_too_big(struct xdp_md *ctx, const struct pkt *pk, __u16 mtu)
{
	__u32 l2 = pk->l3_off;
	if (answer_room(ctx, pk, 48, SHAPER_V6_QUOTE))
		return -1;
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;

	__u8 *n = PKT_PTR(l2, 48);
	if (!n)
		return -1;
	__u32 plen = 8 + SHAPER_V6_QUOTE;
	n[0] = 0x60;
	n[1] = n[2] = n[3] = 0;
	n[4] = plen >> 8;
	n[5] = plen & 0xff;
	n[6] = IPPROTO_ICMPV6;
	n[7] = 64;
	__builtin_memcpy(n + 8, pk->dst, 16);
	__builtin_memcpy(n + 24, pk->src, 16);
	n[40] = 2;
	n[41] = 0;
	n[42] = n[43] = 0;
	n[44] = 0;
	n[45] = 0;
	n[46] = mtu >> 8;
	n[47] = mtu & 0xff;
	/* Pseudo-header (RFC 8200 §8.1): addresses, upper-layer length, next header. */
	__u32 s = csum_bytes16(n + 8, 32, 0);
	s += plen >> 16;
	s += plen & 0xffff;
	s += IPPROTO_ICMPV6;
	s = csum_words(data, data_end, l2 + 40, plen / 4, s, 310);
	s = csum_fold_be(s);
	n = PKT_PTR(l2, 48);
	if (!n)
		return -1;
	n[42] = s >> 8;
	n[43] = s & 0xff;
	return 0;
}

#endif
