/* Register-level helpers the AVX-512 conv kernels share: the 16x16
 * transpose of the channel-blocked ones (NCHW planes in, 16 channels per
 * vector out, and back), lane masks, and the epilogue on a vector of one
 * channel's outputs. Include only where __AVX512F__ is defined. */
#ifndef BD_CPU_AVX512_H
#define BD_CPU_AVX512_H

#include <immintrin.h>
#include <stdint.h>

#include "conv.h"
#include "fast_math.h"

/* In-register transpose of 16x16 floats: r[i] lane j becomes r[j] lane i. */
static inline __attribute__((always_inline)) void bd_transpose16(__m512 *r)
{
    __m512 t[16];
#pragma GCC unroll 16
    for (int i = 0; i < 16; i += 2) {
        t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
        t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
    }
#pragma GCC unroll 16
    for (int i = 0; i < 16; i += 4) {
        __m512d a = _mm512_castps_pd(t[i]), b = _mm512_castps_pd(t[i + 1]);
        __m512d c = _mm512_castps_pd(t[i + 2]), d = _mm512_castps_pd(t[i + 3]);
        r[i] = _mm512_castpd_ps(_mm512_unpacklo_pd(a, c));
        r[i + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a, c));
        r[i + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(b, d));
        r[i + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(b, d));
    }
    /* r[4g + j] now holds, in 128-bit lane l, column 4l + j of rows 4g..4g+3 */
#pragma GCC unroll 16
    for (int j = 0; j < 4; j++) {
        t[j] = _mm512_shuffle_f32x4(r[j], r[4 + j], 0x88);
        t[4 + j] = _mm512_shuffle_f32x4(r[j], r[4 + j], 0xdd);
        t[8 + j] = _mm512_shuffle_f32x4(r[8 + j], r[12 + j], 0x88);
        t[12 + j] = _mm512_shuffle_f32x4(r[8 + j], r[12 + j], 0xdd);
    }
#pragma GCC unroll 16
    for (int j = 0; j < 4; j++) {
        r[j] = _mm512_shuffle_f32x4(t[j], t[8 + j], 0x88);
        r[4 + j] = _mm512_shuffle_f32x4(t[4 + j], t[12 + j], 0x88);
        r[8 + j] = _mm512_shuffle_f32x4(t[j], t[8 + j], 0xdd);
        r[12 + j] = _mm512_shuffle_f32x4(t[4 + j], t[12 + j], 0xdd);
    }
}

/* The lanes i of a vector with lo <= i < hi. */
static inline __mmask16 bd_lanes(int64_t lo, int64_t hi)
{
    lo = lo < 0 ? 0 : lo > 16 ? 16 : lo;
    hi = hi < 0 ? 0 : hi > 16 ? 16 : hi;
    return (__mmask16)(((1u << hi) - 1) & ~((1u << lo) - 1));
}

/* The lanes whose column (cols, one index a lane) lies within [0, width):
 * one unsigned compare takes both ends, a negative column being above any
 * width. Loops that mask loads at every step keep cols running: bd_lanes's
 * clamps there had cost more than the loads (half of a stride-2 bordered
 * copy's time). */
static inline __mmask16 bd_lanes_within(__m512i cols, __m512i width)
{
    return _mm512_cmplt_epu32_mask(cols, width);
}

/* Lane i holds i. */
static inline __m512i bd_iota(void)
{
    return _mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0);
}

/* v * a + b, plus the residual's `mask` lanes at res (NULL: none), clamped
 * to [lo, hi]: bd_epilogue_apply's arithmetic on 16 outputs, a and b their
 * scales and shifts (one channel's, broadcast, or 16 channels' where the
 * lanes are channels), so fused or not a model gives the same bits. */
static inline __attribute__((always_inline)) __m512
bd_epilogue_vec(__m512 v, __m512 a, __m512 b, const float *res, __mmask16 mask, __m512 lo,
                __m512 hi)
{
    v = _mm512_add_ps(_mm512_mul_ps(v, a), b);
    if (res)
        v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(mask, res));
    return _mm512_min_ps(_mm512_max_ps(v, lo), hi);
}

/* The epilogue's function activation (Sigmoid, SiLU, HardSigmoid, its
 * gate, HardSwish; the clamps are bd_epilogue_vec's) on a vector in
 * registers, before it is stored: storing the tile and reading it back for
 * bd_activation_apply stalled on the masked stores' forwarding (a quarter
 * of EfficientNet-B0's time waited there). The same functions as the
 * Sigmoid, HardSigmoid and HardSwish ops, so the same bits. */
static inline __attribute__((always_inline)) __m512 bd_activation_vec(const bd_epilogue *ep,
                                                                       __m512 v)
{
    switch (ep ? ep->act : BD_ACT_NONE) {
    case BD_ACT_SIGMOID: return bd_sigmoid16(v);
    case BD_ACT_SILU: return _mm512_mul_ps(v, bd_sigmoid16(v));
    case BD_ACT_HARD_SIGMOID: return bd_hard_sigmoid16(v, ep->alpha, ep->beta);
    case BD_ACT_X_HARD_SIGMOID: return _mm512_mul_ps(v, bd_hard_sigmoid16(v, ep->alpha, ep->beta));
    case BD_ACT_HARD_SWISH: return bd_hard_swish16(v);
    default: return v;
    }
}

#endif
