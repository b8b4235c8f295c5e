#include "conv_depthwise.h"

#include <stdlib.h>
#include <string.h>

#ifdef __AVX512F__
#include <immintrin.h>
#endif

int bd_conv_is_depthwise(const bd_conv_geom *g) { return g->group == g->c && g->m == g->c; }

/* One channel, tap by tap over whole output rows, in the order ki, kj. */
static void channel_by_taps(const bd_conv_geom *g, const float *x, const float *w, float *y)
{
    for (int64_t oy = 0; oy < g->oh; oy++) {
        float *out = y + oy * g->ow;
        for (int64_t ox = 0; ox < g->ow; ox++)
            out[ox] = 0.0f;
        for (int64_t ki = 0; ki < g->kh; ki++) {
            int64_t iy = oy * g->sh - g->pad_t + ki * g->dh;
            if (iy < 0 || iy >= g->h)
                continue;
            const float *in = x + iy * g->w;
            for (int64_t kj = 0; kj < g->kw; kj++) {
                float wv = w[ki * g->kw + kj];
                int64_t x_off = kj * g->dw - g->pad_l, lo, hi;
                bd_conv_valid_cols(g, x_off, &lo, &hi);
                /* omp simd: out and in are different tensors */
                if (g->sw == 1) {
#pragma omp simd
                    for (int64_t ox = lo; ox < hi; ox++)
                        out[ox] += wv * in[ox + x_off];
                } else {
#pragma omp simd
                    for (int64_t ox = lo; ox < hi; ox++)
                        out[ox] += wv * in[ox * g->sw + x_off];
                }
            }
        }
    }
}

#ifdef __AVX512F__

enum { VL = 16 };

/* The zero-bordered copy of a plane: each padded row split by column phase
 * (column % sw) into sw runs of wq floats, so the inputs one tap reads for
 * 16 neighbouring outputs are neighbours at stride 1 or 2 alike; wide
 * enough that the last block of 16 outputs reads whole vectors (its extra
 * lanes are never stored), and wq a whole number of vectors. */
typedef struct bordered {
    int64_t rows, wq, stride; /* rows, floats per phase, floats per row */
} bordered;

static bordered bordered_size(const bd_conv_geom *g)
{
    const int64_t blocks = (g->ow + VL - 1) / VL, sw = g->sw;
    const int64_t wide = (g->w + g->pad_l + g->pad_r + sw - 1) / sw;
    const int64_t reach = blocks * VL + ((g->kw - 1) * g->dw) / sw;
    const int64_t wq = ((wide > reach ? wide : reach) + VL - 1) / VL * VL;
    return (bordered){.rows = g->h + g->pad_t + g->pad_b, .wq = wq, .stride = sw * wq};
}

/* The lanes i of a vector with lo <= i < hi. */
static __mmask16 lanes(int64_t lo, int64_t hi)
{
    lo = lo < 0 ? 0 : lo > VL ? VL : lo;
    hi = hi < 0 ? 0 : hi > VL ? VL : hi;
    return (__mmask16)(((1u << hi) - 1) & ~((1u << lo) - 1));
}

/* A vector at a time, masked loads taking the zeros outside the row: a
 * plane of a late layer is a few rows of a few columns, and a library call
 * per row had cost more than the products. */
static void border_copy(const bd_conv_geom *g, bordered b, const float *x, float *buf)
{
    const __m512 zero = _mm512_setzero_ps();
    const __m512i even = _mm512_set_epi32(30, 28, 26, 24, 22, 20, 18, 16, 14, 12, 10, 8, 6, 4,
                                          2, 0);
    for (int64_t r = 0; r < b.rows; r++) {
        float *row = buf + r * b.stride;
        const int64_t iy = r - g->pad_t;
        if (iy < 0 || iy >= g->h) {
            for (int64_t c = 0; c < b.stride; c += VL)
                _mm512_store_ps(row + c, zero);
            continue;
        }
        const float *in = x + iy * g->w;
        for (int64_t ph = 0; ph < g->sw; ph++)
            for (int64_t q = 0; q < b.wq; q += VL) {
                /* lane i holds padded column sw * (q + i) + ph */
                const int64_t at = g->sw * q + ph - g->pad_l;
                __m512 v = _mm512_maskz_loadu_ps(lanes(-at, g->w - at), in + at);
                if (g->sw == 2)
                    v = _mm512_permutex2var_ps(
                        v, even,
                        _mm512_maskz_loadu_ps(lanes(-at - VL, g->w - at - VL), in + at + VL));
                _mm512_store_ps(row + ph * b.wq + q, v);
            }
    }
}

/* Blocks of 16 outputs summed side by side, taken in row order across rows:
 * one block alone is a chain of kh*kw dependent multiply-adds, and a plane
 * of a late layer is rows of one block each. */
enum { NB = 4 };

/* The epilogue on 16 outputs in a register, then the store (the `mask`
 * lanes): bd_epilogue_apply's arithmetic, so fused or not a model gives the
 * same bits. */
static inline __attribute__((always_inline)) void
finish(__m512 v, __m512 a, __m512 sh, __m512 lo, __m512 hi, const float *res, float *out,
       __mmask16 mask)
{
    v = _mm512_add_ps(_mm512_mul_ps(v, a), sh);
    if (res)
        v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(mask, res));
    v = _mm512_min_ps(_mm512_max_ps(v, lo), hi);
    _mm512_mask_storeu_ps(out, mask, v);
}

/* One channel from its bordered plane. Taps are summed in channel_by_taps's
 * order (a padded tap adds w * 0) by fused multiply-adds: one rounding per
 * tap where it has two, so the two paths agree to a float's rounding, not
 * bit for bit. KH, KW, DW and SW are constants in the common instances, so
 * the tap loop unrolls and the weights stay in registers. */
static inline __attribute__((always_inline)) void
channel_body(const bd_conv_geom *g, bordered b, const float *buf, const float *w,
             const bd_epilogue *ep, int64_t c, const float *res, float *y, const int KH,
             const int KW, const int DW, const int SW)
{
    const __m512 a = _mm512_set1_ps(ep && ep->scale ? ep->scale[c] : 1.0f);
    const __m512 sh = _mm512_set1_ps(ep && ep->shift ? ep->shift[c] : 0.0f);
    float lof, hif;
    bd_epilogue_clamp(ep, &lof, &hif);
    const __m512 lo = _mm512_set1_ps(lof), hi = _mm512_set1_ps(hif);
    int64_t tap[49];
    __m512 wv[49];
    const int taps = KH * KW <= 49 ? KH * KW : 49;
#pragma GCC unroll 49
    for (int t = 0; t < taps; t++) {
        const int64_t col = (t % KW) * DW;
        tap[t] = (t / KW) * g->dh * b.stride + col % SW * b.wq + col / SW;
        wv[t] = _mm512_set1_ps(w[t]);
    }
    const int64_t nblk = (g->ow + VL - 1) / VL, items = g->oh * nblk;
    const __mmask16 tail = lanes(0, g->ow - (nblk - 1) * VL);
    int64_t oy = 0, bk = 0; /* the next block's row and place in it */
    for (int64_t j = 0; j < items; j += NB) {
        int64_t in[NB], out[NB];
        __mmask16 mk[NB];
#pragma GCC unroll 4
        for (int k = 0; k < NB; k++) {
            /* past the last block: recompute it, store nothing */
            in[k] = oy * g->sh * b.stride + bk * VL;
            out[k] = oy * g->ow + bk * VL;
            mk[k] = j + k >= items ? 0 : bk == nblk - 1 ? tail : (__mmask16)0xffff;
            if (j + k + 1 < items && ++bk == nblk) {
                bk = 0;
                oy++;
            }
        }
        __m512 acc[NB];
#pragma GCC unroll 4
        for (int k = 0; k < NB; k++)
            acc[k] = _mm512_setzero_ps();
#pragma GCC unroll 49
        for (int t = 0; t < taps; t++)
#pragma GCC unroll 4
            for (int k = 0; k < NB; k++)
                acc[k] = _mm512_fmadd_ps(wv[t], _mm512_loadu_ps(buf + in[k] + tap[t]), acc[k]);
#pragma GCC unroll 4
        for (int k = 0; k < NB; k++)
            finish(acc[k], a, sh, lo, hi, res ? res + out[k] : NULL, y + out[k], mk[k]);
    }
}

typedef void (*channel_fn)(const bd_conv_geom *g, bordered b, const float *buf, const float *w,
                           const bd_epilogue *ep, int64_t c, const float *res, float *y);

#define CHANNEL(KH, KW, SW)                                                                      \
    static void channel_##KH##x##KW##_s##SW(const bd_conv_geom *g, bordered b, const float *buf, \
                                           const float *w, const bd_epilogue *ep, int64_t c,     \
                                           const float *res, float *y)                           \
    {                                                                                            \
        channel_body(g, b, buf, w, ep, c, res, y, KH, KW, 1, SW);                                \
    }
CHANNEL(3, 3, 1) CHANNEL(3, 3, 2) CHANNEL(5, 5, 1) CHANNEL(5, 5, 2) CHANNEL(7, 7, 1)

/* Any kernel of up to 49 taps, any dilation, stride 1 or 2 across. */
static void channel_any(const bd_conv_geom *g, bordered b, const float *buf, const float *w,
                        const bd_epilogue *ep, int64_t c, const float *res, float *y)
{
    channel_body(g, b, buf, w, ep, c, res, y, (int)g->kh, (int)g->kw, (int)g->dw, (int)g->sw);
}

static channel_fn in_registers(const bd_conv_geom *g)
{
    if (!__builtin_cpu_supports("avx512f") || (g->sw != 1 && g->sw != 2) || g->kh * g->kw > 49)
        return NULL;
    if (g->dh == 1 && g->dw == 1 && g->kh == g->kw) {
        if (g->kh == 3)
            return g->sw == 1 ? channel_3x3_s1 : channel_3x3_s2;
        if (g->kh == 5)
            return g->sw == 1 ? channel_5x5_s1 : channel_5x5_s2;
        if (g->kh == 7 && g->sw == 1)
            return channel_7x7_s1;
    }
    return channel_any;
}

#endif

bd_status bd_conv_depthwise(const bd_conv_geom *g, const float *x, const float *w,
                            const bd_epilogue *ep, float *y)
{
    const int64_t total = g->n * g->c, ohw = bd_conv_cols(g), plane = g->h * g->w;
    int failed = 0;
#pragma omp parallel if (total * ohw > 4096)
    {
        float *buf = NULL;
#ifdef __AVX512F__
        const channel_fn fast = in_registers(g);
        const bordered b = bordered_size(g);
        if (fast && !(buf = aligned_alloc(64, (size_t)(b.rows * b.stride) * sizeof *buf))) {
#pragma omp atomic write
            failed = 1;
        }
#endif
#pragma omp for schedule(static)
        for (int64_t i = 0; i < total; i++) {
            const int64_t c = i % g->c;
            const float *xc = x + i * plane, *wc = w + c * g->kh * g->kw;
            const float *res = ep && ep->residual ? ep->residual + i * ohw : NULL;
            float *yc = y + i * ohw;
#ifdef __AVX512F__
            if (fast && buf) {
                border_copy(g, b, xc, buf);
                fast(g, b, buf, wc, ep, c, res, yc);
                bd_activation_apply(ep, yc, ohw);
                continue;
            }
            if (fast)
                continue; /* no buffer: failed is set */
#endif
            channel_by_taps(g, xc, wc, yc);
            bd_epilogue_apply(ep, c, yc, res, yc, ohw);
        }
        free(buf);
    }
    return failed ? bd_fail(BD_ENOMEM, "out of memory for a depthwise conv's bordered planes")
                  : BD_OK;
}
