/* SPDX-License-Identifier: Apache-2.0 */
/* BPF global functions. A global (non-static, noinline) function is verified once, on its own,
 * instead of at every call site: this keeps the loops behind them (rule tuples and chains, TCP
 * options, ICMP checksums) within the verifier's budget. The verifier assumes nothing about
 * their pointer arguments, so each one checks them for NULL first.
 *
 * Each header that defines a global function is included by shaper.bpf.c only (one
 * translation unit per object), so the definitions never clash. */
#ifndef SHAPER_GLOBAL_H
#define SHAPER_GLOBAL_H

#define SHAPER_GLOBAL __attribute__((noinline))

#endif
