// SPDX-License-Identifier: GPL-2.0 OR Apache-2.0
/* Benchmark baselines: the cheapest XDP programs, measured in the same run as shaper's. */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

char LICENSE[] SEC("license") = "Dual BSD/GPL";

SEC("xdp")
int floor_pass(struct xdp_md *ctx)
{
	return XDP_PASS;
}

SEC("xdp")
int floor_prandom(struct xdp_md *ctx)
{
	return bpf_get_prandom_u32() == 0xffffffff ? XDP_DROP : XDP_PASS;
}
