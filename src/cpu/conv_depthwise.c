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

/* The zero-bordered copy of a plane: rows of `stride` floats, the input at
 * (pad_t, pad_l), wide enough that the last block of 16 outputs reads
 * whole vectors (its extra lanes are never stored). */
typedef struct bordered {
    int64_t rows, stride;
} bordered;

static bordered bordered_size(const bd_conv_geom *g)
{
    const int64_t blocks = (g->ow + VL - 1) / VL;
    const int64_t wide = g->w + g->pad_l + g->pad_r;
    const int64_t reach = (blocks * VL - 1) * g->sw + (g->kw - 1) * g->dw + 1 + VL;
    return (bordered){.rows = g->h + g->pad_t + g->pad_b, .stride = wide > reach ? wide : reach};
}

static void border_copy(const bd_conv_geom *g, bordered b, const float *x, float *buf)
{
    memset(buf, 0, (size_t)(g->pad_t * b.stride) * sizeof *buf);
    for (int64_t r = 0; r < g->h; r++) {
        float *row = buf + (r + g->pad_t) * b.stride;
        memset(row, 0, (size_t)g->pad_l * sizeof *row);
        memcpy(row + g->pad_l, x + r * g->w, (size_t)g->w * sizeof *row);
        memset(row + g->pad_l + g->w, 0, (size_t)(b.stride - g->pad_l - g->w) * sizeof *row);
    }
    memset(buf + (g->pad_t + g->h) * b.stride, 0, (size_t)(g->pad_b * b.stride) * sizeof *buf);
}

/* 16 outputs of row oy from column ox on, every tap summed in a register,
 * in channel_by_taps's order (a padded tap adds w * 0) but by fused
 * multiply-adds: one rounding per tap where it has two, so the two paths
 * agree to a float's rounding, not bit for bit. */
static inline __m512 block(const bd_conv_geom *g, bordered b, const float *buf, const float *w,
                           int64_t oy, int64_t ox)
{
    const __m512i even = _mm512_set_epi32(30, 28, 26, 24, 22, 20, 18, 16, 14, 12, 10, 8, 6, 4,
                                          2, 0);
    __m512 acc = _mm512_setzero_ps();
    for (int64_t ki = 0; ki < g->kh; ki++) {
        const float *row = buf + (oy * g->sh + ki * g->dh) * b.stride + ox * g->sw;
        for (int64_t kj = 0; kj < g->kw; kj++) {
            const float *p = row + kj * g->dw;
            const __m512 v = g->sw == 1 ? _mm512_loadu_ps(p)
                                        : _mm512_permutex2var_ps(_mm512_loadu_ps(p), even,
                                                                 _mm512_loadu_ps(p + VL));
            acc = _mm512_fmadd_ps(_mm512_set1_ps(w[ki * g->kw + kj]), v, acc);
        }
    }
    return acc;
}

static void channel_in_registers(const bd_conv_geom *g, bordered b, const float *buf,
                                 const float *w, float *y)
{
    for (int64_t oy = 0; oy < g->oh; oy++) {
        float *out = y + oy * g->ow;
        int64_t ox = 0;
        for (; ox + VL <= g->ow; ox += VL)
            _mm512_storeu_ps(out + ox, block(g, b, buf, w, oy, ox));
        if (ox < g->ow)
            _mm512_mask_storeu_ps(out + ox, (__mmask16)((1u << (g->ow - ox)) - 1),
                                  block(g, b, buf, w, oy, ox));
    }
}

static int in_registers(const bd_conv_geom *g)
{
    return __builtin_cpu_supports("avx512f") && (g->sw == 1 || g->sw == 2);
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
        const int fast = in_registers(g);
        const bordered b = bordered_size(g);
        if (fast && !(buf = malloc((size_t)(b.rows * b.stride) * sizeof *buf))) {
#pragma omp atomic write
            failed = 1;
        }
#endif
#pragma omp for schedule(static)
        for (int64_t i = 0; i < total; i++) {
            const int64_t c = i % g->c;
            const float *xc = x + i * plane, *wc = w + c * g->kh * g->kw;
            float *yc = y + i * ohw;
#ifdef __AVX512F__
            if (fast && buf) {
                border_copy(g, b, xc, buf);
                channel_in_registers(g, b, buf, wc, yc);
            } else if (!fast)
#endif
                channel_by_taps(g, xc, wc, yc);
            bd_epilogue_apply(ep, c, yc, ep && ep->residual ? ep->residual + i * ohw : NULL, yc,
                              ohw);
        }
        free(buf);
    }
    return failed ? bd_fail(BD_ENOMEM, "out of memory for a depthwise conv's bordered planes")
                  : BD_OK;
}
