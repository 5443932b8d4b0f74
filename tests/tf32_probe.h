/* Which rounding a device's TF32 GEMMs give their fp32 operands, seen through a tf32 model's
 * forward (the public API only): shared by the precision tests (truncates_tf32) and the GPU
 * check's probe (tests/gpu/gpu_probe.c). */
#ifndef BPT_TF32_PROBE_H
#define BPT_TF32_PROBE_H

#include "backprop/backprop.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum bpt_tf32_rounding {
    BPT_TF32_UNROUNDED = 0, /* the operands kept all fp32 bits (no TF32 at this shape) */
    BPT_TF32_NEAREST_EVEN,
    BPT_TF32_TRUNCATION, /* toward zero */
    BPT_TF32_HALF_AWAY,  /* to nearest, ties away from zero */
    BPT_TF32_OTHER       /* none of these (the four products say which bits) */
} bpt_tf32_rounding;

const char *bpt_tf32_rounding_name(bpt_tf32_rounding r);

/* A tf32 model of `k` inputs and `n` (a multiple of 4) outputs, whose weight rows hold the four
 * probes below in turn, runs a forward of `rows` rows of ones: each output is k times the
 * TF32 value its probe got (exact in fp32 for k a power of two up to 2^12). y[4] receives the
 * first row's four outputs divided by k. Other statuses: the library's, with its message. */
bp_status bpt_tf32_rounding_of(bp_device *dev, int k, int n, int rows, bpt_tf32_rounding *out,
                               float y[4]);

#ifdef __cplusplus
}
#endif

#endif
