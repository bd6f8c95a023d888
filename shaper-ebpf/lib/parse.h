/* SPDX-License-Identifier: Apache-2.0 */
/* Packet parsing per docs/DATAPLANE.md §1. Every read goes through pkt_ptr(), which bounds the
 * offset (for the verifier) and checks it against data_end (for correctness). Offsets are from
 * the start of the frame. */
#ifndef SHAPER_PARSE_H
#define SHAPER_PARSE_H

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/in6.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "shaper_abi.h"

/* No header of interest starts beyond this offset in any frame XDP or TC hands us linearly. */
#define SHAPER_MAX_OFF 0x3fff
#define SHAPER_MAX_VLAN 2
#define SHAPER_MAX_V6_EXT 6

struct pkt {
	__u8 src[16]; /* IPv4 in the first 4 bytes, rest zero */
	__u8 dst[16];
	__u32 l3_off;  /* offset of the IP header */
	__u32 l3_len;  /* IP total length */
	__u32 l4_off;  /* offset of the L4 header when l4 == 1 */
	__u32 pppoe_off; /* offset of the PPPoE header, 0 = none */
	__u16 sport;   /* host order; 0 when the packet has no ports */
	__u16 dport;
	__u8 family;   /* 4 or 6 */
	__u8 proto;
	__u8 frag;     /* any fragment: ports not read */
	__u8 frag_nonfirst;
	__u8 df;
	__u8 l4;       /* L4 header parsed */
	__u8 tcp_flags;
	__u8 icmp_type;
	__u32 tcp_hlen; /* TCP header length in bytes */
};

static __always_inline void *pkt_ptr(void *data, void *data_end, __u32 off, __u32 len)
{
	if (off > SHAPER_MAX_OFF)
		return 0;
	void *p = data + off;
	if (p + len > data_end)
		return 0;
	return p;
}

#define PKT_PTR(off, len) pkt_ptr(data, data_end, (off), (len))

static __always_inline int is_vlan(__u16 proto)
{
	return proto == ETH_P_8021Q || proto == ETH_P_8021AD || proto == 0x9100;
}

static __always_inline int parse_l4(void *data, void *data_end, struct pkt *pk, __u32 off,
				    __u32 l3_end, __u32 *err)
{
	__u8 *p;
	pk->l4_off = off;
	switch (pk->proto) {
	case IPPROTO_TCP: {
		if (off + 20 > l3_end || !(p = PKT_PTR(off, 20))) {
			*err = SHAPER_PE_L4;
			return SHAPER_PARSE_MALFORMED;
		}
		__u32 hlen = (p[12] >> 4) * 4;
		if (hlen < 20 || off + hlen > l3_end) {
			*err = SHAPER_PE_L4;
			return SHAPER_PARSE_MALFORMED;
		}
		pk->sport = ((__u16)p[0] << 8) | p[1];
		pk->dport = ((__u16)p[2] << 8) | p[3];
		pk->tcp_flags = p[13];
		pk->tcp_hlen = hlen;
		break;
	}
	case IPPROTO_UDP:
	case IPPROTO_SCTP: {
		__u32 need = pk->proto == IPPROTO_UDP ? 8 : 12;
		if (off + need > l3_end || !(p = PKT_PTR(off, 4))) {
			*err = SHAPER_PE_L4;
			return SHAPER_PARSE_MALFORMED;
		}
		pk->sport = ((__u16)p[0] << 8) | p[1];
		pk->dport = ((__u16)p[2] << 8) | p[3];
		break;
	}
	case IPPROTO_ICMP:
	case IPPROTO_ICMPV6: {
		if (off + 4 > l3_end || !(p = PKT_PTR(off, 4))) {
			*err = SHAPER_PE_L4;
			return SHAPER_PARSE_MALFORMED;
		}
		pk->icmp_type = p[0];
		break;
	}
	default:
		return SHAPER_PARSE_OK;
	}
	pk->l4 = 1;
	return SHAPER_PARSE_OK;
}

static __always_inline int parse_ipv4(void *data, void *data_end, struct pkt *pk, __u32 off,
				      __u32 frame_len, __u32 *err)
{
	__u8 *p = PKT_PTR(off, 20);
	if (!p || (p[0] >> 4) != 4 || (p[0] & 0xf) < 5)
		goto bad;
	__u32 hlen = (p[0] & 0xf) * 4;
	__u32 tot = ((__u32)p[2] << 8) | p[3];
	if (off + hlen > frame_len || tot < hlen || off + tot > frame_len)
		goto bad;
	pk->family = 4;
	pk->l3_off = off;
	pk->l3_len = tot;
	pk->proto = p[9];
	__builtin_memcpy(pk->src, p + 12, 4);
	__builtin_memcpy(pk->dst, p + 16, 4);
	__u16 frag = ((__u16)p[6] << 8) | p[7];
	pk->df = !!(frag & 0x4000);
	if (frag & 0x3fff) {
		pk->frag = 1;
		pk->frag_nonfirst = !!(frag & 0x1fff);
		return SHAPER_PARSE_OK;
	}
	return parse_l4(data, data_end, pk, off + hlen, off + tot, err);
bad:
	*err = SHAPER_PE_IPV4;
	return SHAPER_PARSE_MALFORMED;
}

static __always_inline int parse_ipv6(void *data, void *data_end, struct pkt *pk, __u32 off,
				      __u32 frame_len, __u32 *err)
{
	__u8 *p = PKT_PTR(off, 40);
	if (!p || (p[0] >> 4) != 6)
		goto bad;
	__u32 plen = ((__u32)p[4] << 8) | p[5];
	if (off + 40 + plen > frame_len)
		goto bad;
	pk->family = 6;
	pk->l3_off = off;
	pk->l3_len = 40 + plen;
	__builtin_memcpy(pk->src, p + 8, 16);
	__builtin_memcpy(pk->dst, p + 24, 16);
	__u32 l3_end = off + 40 + plen;
	__u8 nh = p[6];
	__u32 cur = off + 40;
	int i;
	for (i = 0; i <= SHAPER_MAX_V6_EXT; i++) {
		if (nh != 0 && nh != 43 && nh != 60 && nh != 51 && nh != 44)
			break;
		if (i == SHAPER_MAX_V6_EXT)
			return SHAPER_PARSE_UNSUPPORTED;
		__u8 *e;
		if (cur + 8 > l3_end || !(e = PKT_PTR(cur, 8))) {
			*err = SHAPER_PE_IPV6_EXT;
			return SHAPER_PARSE_MALFORMED;
		}
		if (nh == 44) {
			__u16 fo = ((__u16)e[2] << 8) | e[3];
			nh = e[0];
			cur += 8;
			if (fo & 0xfff9) {
				pk->frag = 1;
				pk->frag_nonfirst = !!(fo & 0xfff8);
				pk->proto = nh;
				return SHAPER_PARSE_OK;
			}
			continue;
		}
		__u32 len = nh == 51 ? ((__u32)e[1] + 2) * 4 : ((__u32)e[1] + 1) * 8;
		if (cur + len > l3_end) {
			*err = SHAPER_PE_IPV6_EXT;
			return SHAPER_PARSE_MALFORMED;
		}
		nh = e[0];
		cur += len;
	}
	pk->proto = nh;
	return parse_l4(data, data_end, pk, cur, l3_end, err);
bad:
	*err = SHAPER_PE_IPV6;
	return SHAPER_PARSE_MALFORMED;
}

/* Returns SHAPER_PARSE_*; on MALFORMED, *err holds SHAPER_PE_*. */
static __always_inline int parse_packet(void *data, void *data_end, struct pkt *pk, __u32 *err)
{
	__u32 frame_len = data_end - data;
	__u8 *p = PKT_PTR(0, ETH_HLEN);
	if (!p) {
		*err = SHAPER_PE_ETH;
		return SHAPER_PARSE_MALFORMED;
	}
	__u16 proto = ((__u16)p[12] << 8) | p[13];
	__u32 off = ETH_HLEN;
	int i;
	for (i = 0; i <= SHAPER_MAX_VLAN; i++) {
		if (!is_vlan(proto))
			break;
		if (i == SHAPER_MAX_VLAN)
			return SHAPER_PARSE_UNSUPPORTED;
		p = PKT_PTR(off, 4);
		if (!p) {
			*err = SHAPER_PE_VLAN;
			return SHAPER_PARSE_MALFORMED;
		}
		proto = ((__u16)p[2] << 8) | p[3];
		off += 4;
	}
	if (proto == ETH_P_PPP_SES) {
		p = PKT_PTR(off, 8);
		if (!p) {
			*err = SHAPER_PE_PPPOE;
			return SHAPER_PARSE_MALFORMED;
		}
		__u32 len = ((__u32)p[4] << 8) | p[5];
		if (p[0] != 0x11 || p[1] != 0 || len < 2 || off + 6 + len > frame_len) {
			*err = SHAPER_PE_PPPOE;
			return SHAPER_PARSE_MALFORMED;
		}
		__u16 ppp = ((__u16)p[6] << 8) | p[7];
		pk->pppoe_off = off;
		off += 8;
		if (ppp == 0x0021)
			proto = ETH_P_IP;
		else if (ppp == 0x0057)
			proto = ETH_P_IPV6;
		else
			return SHAPER_PARSE_NON_IP;
	}
	if (proto == ETH_P_IP)
		return parse_ipv4(data, data_end, pk, off, frame_len, err);
	if (proto == ETH_P_IPV6)
		return parse_ipv6(data, data_end, pk, off, frame_len, err);
	return SHAPER_PARSE_NON_IP;
}

#endif
