/* exp and erf for activation functions, and the activations themselves
 * (one definition for their ops and for the conv epilogues that fuse them),
 * written so that the compiler
 * vectorises the loops that call them: libm's expf and erff are calls per
 * element, which made Sigmoid (EfficientNet's SiLU, every squeeze-and-
 * excitation gate) 40 % of an EfficientNet's inference. Both are within a
 * few units in the last place of float (test_kernels_elementwise checks the
 * bounds below against double precision). */
#ifndef BD_CPU_FAST_MATH_H
#define BD_CPU_FAST_MATH_H

#include <math.h>
#include <stdint.h>
#include <string.h>
#ifdef __AVX512F__
#include <immintrin.h>
#endif

/* a * b + c, in one rounding where the target has fused multiply-adds (a
 * polynomial step in one instruction instead of two: the build is ISO C,
 * which contracts nothing by itself), else in two. */
#ifdef __FMA__
#define BD_MADD(a, b, c) fmaf(a, b, c)
#else
#define BD_MADD(a, b, c) ((a) * (b) + (c))
#endif

/* e^x within 2e-7 relative for x in [-87.3, 88.3]; 0 below, infinity
 * above, NaN stays NaN. Cody and Waite's reduction x = n ln 2 + r with ln 2
 * in two parts, then Cephes's degree-7 polynomial for e^r, |r| <= ln 2 / 2,
 * and 2^n put in the exponent bits. */
static inline float bd_expf(float x)
{
    float c = x > -87.3f ? x : -87.3f; /* NaN takes the bound: n stays an integer */
    c = c < 88.3f ? c : 88.3f;
    const float n = nearbyintf(c * 1.44269504088896341f);
    const float r = BD_MADD(n, 2.12194440e-4f, BD_MADD(n, -0.693359375f, c));
    float p = 1.9875691500e-4f;
    p = BD_MADD(p, r, 1.3981999507e-3f);
    p = BD_MADD(p, r, 8.3334519073e-3f);
    p = BD_MADD(p, r, 4.1665795894e-2f);
    p = BD_MADD(p, r, 1.6666665459e-1f);
    p = BD_MADD(p, r, 5.0000001201e-1f);
    p = BD_MADD(p * r, r, r) + 1.0f;
    const uint32_t bits = (uint32_t)((int32_t)n + 127) << 23;
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    const float y = p * scale;
    return x != x ? x : x > 88.3f ? INFINITY : x < -87.3f ? 0.0f : y;
}

/* 1 / (1 + e^-x), within 3e-7 relative. */
static inline float bd_sigmoidf(float x) { return 1.0f / (1.0f + bd_expf(-x)); }

#ifdef __AVX512F__
/* The sigmoid on 16 lanes, within 4e-7 relative. bd_expf's reduction,
 * then for e^r the degree-5 polynomial of least relative error on
 * |r| <= ln 2 / 2 (7.5e-8, found by Remez exchange; 1.9e-7 in float):
 * three operations fewer than bd_expf's degree 7 (SiLU of a 144x56x56
 * layer: 180 -> 160 us). 2^n by VSCALEFPS; the reciprocal by VRCP14PS and
 * one Newton step instead of a division, whose throughput held SiLU (a
 * quarter of EfficientNet-B0's inference) to 2 cycles a value. -x is
 * clamped to [-87.3, 88.3] by max and min, which pass a NaN through (the
 * result is NaN); below -88.3 the result is 0, as 1 / (1 + inf). */
static inline __m512 bd_sigmoid16(__m512 x)
{
    const __m512 neg = _mm512_sub_ps(_mm512_setzero_ps(), x);
    const __m512 c = _mm512_min_ps(_mm512_set1_ps(88.3f),
                                   _mm512_max_ps(_mm512_set1_ps(-87.3f), neg));
    const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(c, _mm512_set1_ps(1.44269504088896341f)),
                                          _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    const __m512 r = _mm512_fmadd_ps(n, _mm512_set1_ps(2.12194440e-4f),
                                     _mm512_fmadd_ps(n, _mm512_set1_ps(-0.693359375f), c));
    __m512 p = _mm512_set1_ps(8.2976550885e-3f);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1915381993e-2f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6667574729e-1f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.9998894851e-1f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(9.9999969199e-1f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0000000717e+00f));
    const __m512 d = _mm512_add_ps(_mm512_set1_ps(1.0f), _mm512_scalef_ps(p, n));
    const __m512 r0 = _mm512_rcp14_ps(d);
    const __m512 y = _mm512_fmadd_ps(r0, _mm512_fnmadd_ps(d, r0, _mm512_set1_ps(1.0f)), r0);
    return _mm512_maskz_mov_ps(~_mm512_cmp_ps_mask(neg, _mm512_set1_ps(88.3f), _CMP_GT_OQ), y);
}
#endif

/* y = sigmoid(x), or with gate x sigmoid(x) (SiLU), for n values (y may be
 * x): the one way the Sigmoid op, the SiLU gate's and the conv epilogues
 * that fuse them compute it, so fused or not a model gives the same bits
 * (with AVX-512 every value goes through bd_sigmoid16, the last ones
 * masked, never through bd_sigmoidf). */
static inline void bd_sigmoid_run(const float *x, float *y, int64_t n, int gate)
{
#ifdef __AVX512F__
    for (int64_t i = 0; i < n; i += 16) {
        const __mmask16 m = n - i >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (n - i)) - 1);
        const __m512 v = _mm512_maskz_loadu_ps(m, x + i), s = bd_sigmoid16(v);
        _mm512_mask_storeu_ps(y + i, m, gate ? _mm512_mul_ps(v, s) : s);
    }
#else
#pragma omp simd
    for (int64_t i = 0; i < n; i++)
        y[i] = gate ? x[i] * bd_sigmoidf(x[i]) : bd_sigmoidf(x[i]);
#endif
}

/* erf(x) within 4e-7 absolute, and 4e-7 relative below 1/2 in size: there
 * its Maclaurin series to x^11 (erf's own relative precision near 0, which
 * the next form loses to cancellation), above Abramowitz and Stegun's
 * 7.1.26, 1 - t (a1 + t (a2 + ...)) e^(-x^2) with t = 1 / (1 + p |x|);
 * odd in x. */
static inline float bd_erff(float x)
{
    const float a = x < 0 ? -x : x, t = 1.0f / (1.0f + 0.3275911f * a), z = x * x;
    float q = 1.061405429f;
    q = BD_MADD(q, t, -1.453152027f);
    q = BD_MADD(q, t, 1.421413741f);
    q = BD_MADD(q, t, -0.284496736f);
    q = BD_MADD(q, t, 0.254829592f);
    const float far = 1.0f - q * t * bd_expf(-z);
    float s = -1.0f / 1320;
    s = BD_MADD(s, z, 1.0f / 216);
    s = BD_MADD(s, z, -1.0f / 42);
    s = BD_MADD(s, z, 1.0f / 10);
    s = BD_MADD(s, z, -1.0f / 3);
    s = BD_MADD(s, z, 1.0f);
    const float near = 1.1283791670955126f * x * s;
    return x != x ? x : a < 0.5f ? near : x < 0 ? -far : far;
}

/* Bounds first, then NaN passes through; with lo > hi everything becomes
 * hi, as ONNX's Clip specifies. */
static inline float bd_clampf(float x, float lo, float hi)
{
    float v = x < lo ? lo : x;
    return v > hi ? hi : v;
}

/* ONNX's HardSigmoid, max(0, min(1, alpha x + beta)). */
static inline float bd_hard_sigmoidf(float x, float alpha, float beta)
{
    return bd_clampf(alpha * x + beta, 0, 1);
}

/* ONNX's HardSwish, x HardSigmoid(x) with alpha 1/6 and beta 1/2 (as x / 6:
 * PyTorch's formula, and so its bits). */
static inline float bd_hard_swishf(float x) { return x * bd_clampf(x / 6 + 0.5f, 0, 1); }

#ifdef __AVX512F__
/* The three above on 16 lanes, with their bits: the same operations, and
 * MAXPS and MINPS return their second operand for a NaN or two zeros, as
 * bd_clampf keeps x then. */
static inline __m512 bd_clamp16(__m512 x, float lo, float hi)
{
    return _mm512_min_ps(_mm512_set1_ps(hi), _mm512_max_ps(_mm512_set1_ps(lo), x));
}

static inline __m512 bd_hard_sigmoid16(__m512 x, float alpha, float beta)
{
    return bd_clamp16(_mm512_add_ps(_mm512_mul_ps(_mm512_set1_ps(alpha), x),
                                    _mm512_set1_ps(beta)),
                      0, 1);
}

static inline __m512 bd_hard_swish16(__m512 x)
{
    return _mm512_mul_ps(
        x, bd_clamp16(_mm512_add_ps(_mm512_div_ps(x, _mm512_set1_ps(6)), _mm512_set1_ps(0.5f)),
                      0, 1));
}
#endif

#endif
