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

#endif
