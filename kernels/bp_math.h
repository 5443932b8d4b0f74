/* Per-element math shared by the CPU backend and the CUDA kernels.
 *
 * Activations and their derivatives, loss elements, optimizer update rules and the
 * counter-based random generator are written once here, so the CPU tests exercise the
 * arithmetic the GPU runs. Plain C11 and CUDA C++; no state. */
#ifndef BP_KERNELS_MATH_H
#define BP_KERNELS_MATH_H

#include <math.h>
#include <stdint.h>
#include <string.h>

#include "backprop/model.h"

#if defined(__CUDACC__)
#define BP_HD static __host__ __device__ __forceinline__
#else
#define BP_HD static inline
#endif

/* ---- reduced precision: bf16 and TF32 roundings (docs/precision.md) ---------------------- *
 *
 * bf16 is stored as its bit pattern in a uint16_t on every backend: the top half of the fp32
 * bit pattern, 8 exponent bits and 7 mantissa bits. TF32 values stay in fp32 storage with the
 * low 13 mantissa bits zero (10 are left). Both round to nearest, ties to even; infinities stay
 * infinities, a finite value past the largest bf16 becomes one, and a NaN stays a NaN (quiet,
 * with its sign). */

BP_HD uint32_t bp_f32_bits(float x) {
#if defined(__CUDA_ARCH__)
    return __float_as_uint(x);
#else
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    return u;
#endif
}

BP_HD float bp_f32_from_bits(uint32_t u) {
#if defined(__CUDA_ARCH__)
    return __uint_as_float(u);
#else
    float x;
    memcpy(&x, &u, sizeof x);
    return x;
#endif
}

BP_HD int bp_f32_bits_are_nan(uint32_t u) {
    return (u & 0x7fffffffu) > 0x7f800000u;
}

/* fp32 -> bf16, round to nearest even. Adding 0x7fff plus the lowest kept bit carries into the
 * kept half exactly when the dropped half is above one half, or equal to it with an odd kept
 * half; the carry out of the mantissa steps the exponent, up to infinity. */
BP_HD uint16_t bp_f32_to_bf16(float x) {
    uint32_t u = bp_f32_bits(x);
    uint32_t rounded = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
    /* a select, not a branch, so that loops over it vectorise: a NaN stays a quiet NaN */
    return (uint16_t)(bp_f32_bits_are_nan(u) ? (u >> 16) | 0x0040u : rounded);
}

/* bf16 -> fp32: exact. */
BP_HD float bp_bf16_to_f32(uint16_t h) {
    return bp_f32_from_bits((uint32_t)h << 16);
}

/* x rounded to the nearest bf16, as an fp32 value. */
BP_HD float bp_round_bf16(float x) {
    return bp_bf16_to_f32(bp_f32_to_bf16(x));
}

/* x rounded to the nearest TF32 (10 mantissa bits), ties to even, as an fp32 value. */
BP_HD float bp_round_tf32(float x) {
    uint32_t u = bp_f32_bits(x);
    if (bp_f32_bits_are_nan(u)) return bp_f32_from_bits(u | 0x00400000u);
    u += 0x0fffu + ((u >> 13) & 1u);
    return bp_f32_from_bits(u & 0xffffe000u);
}

/* ---- activations ---------------------------------------------------------------------- */

#define BP_SQRT1_2F        0.70710678118654752440f
#define BP_INV_SQRT_2PIF   0.39894228040143267794f
#define BP_SQRT_2_OVER_PIF 0.79788456080286535588f
#define BP_GELU_TANH_C     0.044715f

/* Never overflows: exp of a non-positive argument only. */
BP_HD float bp_sigmoidf(float x) {
    if (x >= 0.0f) return 1.0f / (1.0f + expf(-x));
    float e = expf(x);
    return e / (1.0f + e);
}

BP_HD float bp_act_forward(float x, bp_activation act, float slope) {
    switch (act) {
    case BP_ACT_RELU:
        return x < 0.0f ? 0.0f : x; /* NaN passes through, as in PyTorch */
    case BP_ACT_LEAKY_RELU:
        return x < 0.0f ? slope * x : x;
    case BP_ACT_SIGMOID:
        return bp_sigmoidf(x);
    case BP_ACT_TANH:
        return tanhf(x);
    case BP_ACT_GELU:
        return 0.5f * x * (1.0f + erff(x * BP_SQRT1_2F));
    case BP_ACT_GELU_TANH: {
        float u = BP_SQRT_2_OVER_PIF * (x + BP_GELU_TANH_C * x * x * x);
        return 0.5f * x * (1.0f + tanhf(u));
    }
    case BP_ACT_SILU:
        return x * bp_sigmoidf(x);
    default:
        return x;
    }
}

/* d act / d z at z; at z = 0 ReLU takes 0 and leaky ReLU the slope, like PyTorch. */
BP_HD float bp_act_derivative(float z, bp_activation act, float slope) {
    switch (act) {
    case BP_ACT_RELU:
        return z > 0.0f ? 1.0f : 0.0f;
    case BP_ACT_LEAKY_RELU:
        return z > 0.0f ? 1.0f : slope;
    case BP_ACT_SIGMOID: {
        float s = bp_sigmoidf(z);
        return s * (1.0f - s);
    }
    case BP_ACT_TANH: {
        float t = tanhf(z);
        return 1.0f - t * t;
    }
    case BP_ACT_GELU: {
        float cdf = 0.5f * (1.0f + erff(z * BP_SQRT1_2F));
        return cdf + z * BP_INV_SQRT_2PIF * expf(-0.5f * z * z);
    }
    case BP_ACT_GELU_TANH: {
        float z2 = z * z;
        float t = tanhf(BP_SQRT_2_OVER_PIF * (z + BP_GELU_TANH_C * z2 * z));
        float du = BP_SQRT_2_OVER_PIF * (1.0f + 3.0f * BP_GELU_TANH_C * z2);
        return 0.5f * (1.0f + t) + 0.5f * z * (1.0f - t * t) * du;
    }
    case BP_ACT_SILU: {
        float s = bp_sigmoidf(z);
        return s * (1.0f + z * (1.0f - s));
    }
    default:
        return 1.0f;
    }
}

/* ---- normalization (LayerNorm, RMSNorm) -------------------------------------------------- *
 *
 * A row of n features: mean (0 for RMSNorm) and var = the mean of (x - mean)^2 are the
 * statistics, accumulated by the backend in fp32 or wider; xhat = (x - mean) * rstd. */

BP_HD float bp_norm_rstd(float var, float eps) {
    return 1.0f / sqrtf(var + eps);
}

/* y = xhat * weight + bias (bias 0 for RMSNorm). */
BP_HD float bp_norm_forward_elem(float x, float mean, float rstd, float weight, float bias) {
    return (x - mean) * rstd * weight + bias;
}

/* dL/dx from g = dy * weight, xhat, and the row means of g (mean_g; 0 for RMSNorm, whose mean
 * is not subtracted) and of g * xhat (mean_gx): rstd * (g - mean_g - xhat * mean_gx). */
BP_HD float bp_norm_backward_elem(float g, float xhat, float rstd, float mean_g, float mean_gx) {
    return rstd * (g - mean_g - xhat * mean_gx);
}

/* ---- loss elements -------------------------------------------------------------------- */

/* Squared error of one element; *grad = d/dpred. */
BP_HD float bp_mse_elem(float pred, float target, float *grad) {
    float d = pred - target;
    *grad = 2.0f * d;
    return d * d;
}

/* Binary cross-entropy of sigmoid(z) against t, in the form that never overflows:
 * max(z, 0) - z t + log(1 + exp(-|z|)); *grad = sigmoid(z) - t. */
BP_HD float bp_bce_logits_elem(float z, float t, float *grad) {
    *grad = bp_sigmoidf(z) - t;
    return fmaxf(z, 0.0f) - z * t + log1pf(expf(-fabsf(z)));
}

/* Cross-entropy target weight of class j: (1 - s) [j == label] + s / classes. */
BP_HD float bp_xent_target(int j, int label, float smoothing, int classes) {
    return (j == label ? 1.0f - smoothing : 0.0f) + smoothing / (float)classes;
}

/* Gradient of one logit, given the row's log-sum-exp lse: softmax_j - q_j. The row's loss is
 * sum_j q_j (lse - z_j). */
BP_HD float bp_xent_grad_elem(float z, float lse, float q) {
    return expf(z - lse) - q;
}

/* ---- optimizer update rules (PyTorch's, see include/backprop/optim.h) -------------------- */

/* Norm clipping's coefficient from the squared norm, as PyTorch's clip_grad_norm_: the norm
 * rounded to fp32, then clip / (norm + 1e-6) in fp32, at most 1; 1 when clip_norm is 0. */
BP_HD float bp_clip_scale(float norm2, float clip_norm) {
    if (!(clip_norm > 0.0f)) return 1.0f;
    float coef = clip_norm / ((float)sqrt((double)norm2) + 1e-6f);
    return coef < 1.0f ? coef : 1.0f;
}

/* Why a training step may not update (core/backend.h's BP_REFUSED_*, in the order looked at):
 * 1 a class out of range (bad_row < INT64_MAX), 2 a non-finite loss sum, 3 a non-finite
 * squared gradient norm; 0 none. */
BP_HD int32_t bp_step_refusal(int64_t bad_row, float loss, float norm2) {
    if (bad_row != INT64_MAX) return 1;
    if (!isfinite(loss)) return 2;
    return isfinite(norm2) ? 0 : 3;
}

/* Scale (norm clipping), then clamp (value clipping) one gradient. */
BP_HD float bp_grad_prepare(float g, float scale, float clip_value) {
    g *= scale;
    if (clip_value > 0.0f) g = fminf(fmaxf(g, -clip_value), clip_value);
    return g;
}

/* SGD's three parts: weight decay, the momentum buffer's new value, and the direction; each a
 * select rather than a branch, so a loop over them vectorises. */
BP_HD float bp_sgd_decay(float g, float p, float weight_decay) {
    return weight_decay != 0.0f ? g + weight_decay * p : g;
}

/* one_minus_dampening is 1 - dampening formed in double and rounded, as torch.optim's alpha. */
BP_HD float bp_sgd_buffer(float buf, float g, float momentum, float one_minus_dampening,
                          int first_step) {
    return first_step ? g : momentum * buf + one_minus_dampening * g;
}

BP_HD float bp_sgd_direction(float g, float b, float momentum, int nesterov) {
    return nesterov ? g + momentum * b : b;
}

/* SGD; buf is read and written only when momentum != 0. */
BP_HD float bp_sgd_elem(float p, float g, float *buf, float lr, float weight_decay, float momentum,
                        float one_minus_dampening, int nesterov, int first_step) {
    g = bp_sgd_decay(g, p, weight_decay);
    if (momentum != 0.0f) {
        float b = bp_sgd_buffer(*buf, g, momentum, one_minus_dampening, first_step);
        *buf = b;
        g = bp_sgd_direction(g, b, momentum, nesterov);
    }
    return p - lr * g;
}

/* Adam (decoupled = 0) or AdamW (decoupled = 1; decay_factor = 1 - lr * wd). */
BP_HD float bp_adam_elem(float p, float g, float *m, float *v, float weight_decay, int decoupled,
                         float decay_factor, float one_minus_beta1, float beta2,
                         float one_minus_beta2, float eps, float step_size, float bc2_sqrt) {
    if (decoupled)
        p = p * decay_factor;
    else if (weight_decay != 0.0f)
        g = g + weight_decay * p;
    float mm = *m + one_minus_beta1 * (g - *m);
    float vv = *v * beta2 + one_minus_beta2 * g * g;
    *m = mm;
    *v = vv;
    float denom = sqrtf(vv) / bc2_sqrt + eps;
    return p - step_size * (mm / denom);
}

/* ---- counter-based random numbers (Philox4x32-10) ------------------------------------- */

BP_HD uint32_t bp_mulhi32(uint32_t a, uint32_t b, uint32_t *lo) {
    uint64_t p = (uint64_t)a * (uint64_t)b;
    *lo = (uint32_t)p;
    return (uint32_t)(p >> 32);
}

/* Four 32-bit random words for counter (c0..c3) under key (k0, k1). */
BP_HD void bp_philox4x32(uint32_t c[4], uint32_t k0, uint32_t k1) {
    for (int round = 0; round < 10; ++round) {
        uint32_t lo0, lo1;
        uint32_t hi0 = bp_mulhi32(0xD2511F53u, c[0], &lo0);
        uint32_t hi1 = bp_mulhi32(0xCD9E8D57u, c[2], &lo1);
        uint32_t n0 = hi1 ^ c[1] ^ k0, n2 = hi0 ^ c[3] ^ k1;
        c[0] = n0;
        c[1] = lo1;
        c[2] = n2;
        c[3] = lo0;
        k0 += 0x9E3779B9u;
        k1 += 0xBB67AE85u;
    }
}

/* The four words of block `block` of the stream (seed, stream): words 4*block .. 4*block+3. */
BP_HD void bp_random_block(uint64_t seed, uint64_t stream, uint64_t block, uint32_t w[4]) {
    w[0] = (uint32_t)block;
    w[1] = (uint32_t)(block >> 32);
    w[2] = (uint32_t)stream;
    w[3] = (uint32_t)(stream >> 32);
    bp_philox4x32(w, (uint32_t)seed, (uint32_t)(seed >> 32));
}

/* Word i of the stream (seed, stream). */
BP_HD uint32_t bp_random_u32(uint64_t seed, uint64_t stream, uint64_t i) {
    uint32_t w[4];
    bp_random_block(seed, stream, i >> 2, w);
    return w[i & 3];
}

/* Dropout keeps an element when its 24-bit draw is at least threshold = round(p * 2^24):
 * integer arithmetic only, so every device draws the same mask. */
BP_HD int bp_dropout_keep_word(uint32_t word, uint32_t threshold) {
    return (word >> 8) >= threshold;
}

/* Whether dropout keeps element i of the stream (seed, stream). */
BP_HD int bp_dropout_keep(uint64_t seed, uint64_t stream, uint64_t i, uint32_t threshold) {
    return bp_dropout_keep_word(bp_random_u32(seed, stream, i), threshold);
}

#endif
