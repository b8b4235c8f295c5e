#include "conv_pointwise.h"

#ifdef __AVX512F__

#include <immintrin.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "avx512.h"

/* Floats per vector; output channels and pixel vectors of a register tile:
 * 6 x 4 accumulators, 4 input vectors and a broadcast weight fill 29 of
 * the 32 registers, and each input channel costs 10 loads for 24
 * multiply-adds. */
enum { VL = 16, MR = 6, NR = 4 };
/* Most pixels past an image's last whole vector that go as dot products
 * (W's rows against their input columns, 16 channels per vector) rather
 * than as a vector of mostly idle lanes: a 7x7 plane is 3 vectors and 1
 * pixel, a squeeze-and-excitation layer's is 1 pixel, and a lane of a
 * vector costs as much as the whole vector. */
enum { DOTS = 8 };

int bd_conv_pointwise_supported(const bd_conv_geom *g)
{
    return __builtin_cpu_supports("avx512f") && g->group == 1 && g->kh == 1 && g->kw == 1 &&
           g->sh == 1 && g->sw == 1 && g->pad_t == 0 && g->pad_l == 0 && g->pad_b == 0 &&
           g->pad_r == 0;
}

typedef struct plan {
    const bd_conv_geom *g;
    const bd_epilogue *ep;
    int64_t hw, nv, npb; /* pixels, vectors and pixel blocks of an image */
    int64_t xs;          /* floats from one input channel's pixels to the next' */
    __mmask16 tail;      /* the lanes of an image's last vector */
    int64_t ndots;       /* pixels after the nv vectors, done as dot products */
    __mmask16 ctail;     /* the lanes of the last 16 input channels */
    float lo, hi;        /* the activation's clamp */
} plan;

/* Output channels m0.. (mr of them) at pixel vectors v0.. (nr of them) of
 * one image: x, y and res point at the image's pixel v0 * 16 (channel 0 of
 * x, channel m0 of y and res), w at row m0. Every input channel's nr
 * vectors are loaded once and meet mr broadcast weights; the epilogue is
 * in registers. */
static inline __attribute__((always_inline)) void
tile_body(const plan *p, const float *x, const float *w, const float *wnext, const float *res,
          float *y, int64_t m0, int last, const int mr, const int nr)
{
    const int64_t hw = p->hw, xs = p->xs, c = p->g->c;
    __mmask16 mk[NR];
#pragma GCC unroll 4
    for (int j = 0; j < nr; j++)
        mk[j] = j == nr - 1 && last ? p->tail : (__mmask16)0xffff;
    __m512 acc[MR][NR];
#pragma GCC unroll 6
    for (int i = 0; i < mr; i++)
#pragma GCC unroll 4
        for (int j = 0; j < nr; j++)
            acc[i][j] = _mm512_setzero_ps();
    for (int64_t k = 0; k < c; k++, x += xs) {
        if (wnext && k % VL == 0)
#pragma GCC unroll 6
            for (int i = 0; i < MR; i++)
                __builtin_prefetch(wnext + i * c + k, 0, 2);
        __m512 xv[NR];
#pragma GCC unroll 4
        for (int j = 0; j < nr; j++)
            xv[j] = _mm512_maskz_loadu_ps(mk[j], x + j * VL);
#pragma GCC unroll 6
        for (int i = 0; i < mr; i++) {
            const __m512 wv = _mm512_set1_ps(w[i * c + k]);
#pragma GCC unroll 4
            for (int j = 0; j < nr; j++)
                acc[i][j] = _mm512_fmadd_ps(wv, xv[j], acc[i][j]);
        }
    }
    const bd_epilogue *ep = p->ep;
    const __m512 lo = _mm512_set1_ps(p->lo), hi = _mm512_set1_ps(p->hi);
#pragma GCC unroll 6
    for (int i = 0; i < mr; i++) {
        const __m512 a = _mm512_set1_ps(ep && ep->scale ? ep->scale[m0 + i] : 1.0f);
        const __m512 b = _mm512_set1_ps(ep && ep->shift ? ep->shift[m0 + i] : 0.0f);
#pragma GCC unroll 4
        for (int j = 0; j < nr; j++)
            _mm512_mask_storeu_ps(
                y + i * hw + j * VL, mk[j],
                bd_activation_vec(ep, bd_epilogue_vec(acc[i][j], a, b,
                                                      res ? res + i * hw + j * VL : NULL, mk[j],
                                                      lo, hi)));
    }
}

typedef void (*tile_fn)(const plan *p, const float *x, const float *w, const float *wnext,
                        const float *res, float *y, int64_t m0, int last);

#define TILE(MRI, NRI)                                                                           \
    static void tile_##MRI##_##NRI(const plan *p, const float *x, const float *w,              \
                                   const float *wnext, const float *res, float *y, int64_t m0,  \
                                   int last)                                                     \
    {                                                                                            \
        tile_body(p, x, w, wnext, res, y, m0, last, MRI, NRI);                                   \
    }
#define TILES(MRI) TILE(MRI, 1) TILE(MRI, 2) TILE(MRI, 3) TILE(MRI, 4)
TILES(1) TILES(2) TILES(3) TILES(4) TILES(5) TILES(6)
#define ROW(MRI) {tile_##MRI##_1, tile_##MRI##_2, tile_##MRI##_3, tile_##MRI##_4}

/* [mr - 1][nr - 1] */
static const tile_fn tiles[MR][NR] = {ROW(1), ROW(2), ROW(3), ROW(4), ROW(5), ROW(6)};

/* The last np pixels of image i for output channels [m0, m1): col holds
 * their input columns one after another, and each row of W meets all of
 * them, 16 channels at a time; each channel's np sums then go through
 * bd_epilogue_apply, but an activation function goes over all the run's
 * sums at once, gathered after the columns in col (room for np (c + m)
 * floats): one channel's np values a vector had wasted most of its lanes,
 * on the sigmoid of every squeeze-and-excitation gate (the function of
 * each value alone, so the same bits). */
static inline __attribute__((always_inline)) void
dots_body(const plan *p, float *col, const float *w, float *y, int64_t i, int64_t m0,
          int64_t m1, const int np)
{
    const bd_conv_geom *g = p->g;
    const int64_t c = g->c, first = i * g->m * p->hw + p->hw - np;
    const bd_epilogue *ep = p->ep;
    bd_epilogue linear;
    if (bd_epilogue_has_function(ep)) {
        linear = *ep;
        linear.act = BD_ACT_NONE;
    }
    /* dm output channels at a time, so that at least four sums are in
     * flight: one pixel's single chain of multiply-adds waited on each
     * one's latency (7x7 layers on the Xeon, one thread: 992 -> 128 98 ->
     * 95 us, 160 -> 1280 146 -> 140 us) */
    const int dm = np >= 4 ? 1 : np >= 2 ? 2 : 4;
    for (int64_t m = m0; m < m1; m += dm) {
        const int rows = m1 - m < dm ? (int)(m1 - m) : dm;
        __m512 acc[4][DOTS];
#pragma GCC unroll 4
        for (int r = 0; r < dm; r++)
#pragma GCC unroll 8
            for (int q = 0; q < np; q++)
                acc[r][q] = _mm512_setzero_ps();
        for (int64_t k = 0; k < c; k += VL) {
            const __mmask16 mk = k + VL <= c ? (__mmask16)0xffff : p->ctail;
            __m512 xv[DOTS];
#pragma GCC unroll 8
            for (int q = 0; q < np; q++)
                xv[q] = _mm512_maskz_loadu_ps(mk, col + q * c + k);
#pragma GCC unroll 4
            for (int r = 0; r < dm; r++) {
                const __m512 wv = _mm512_maskz_loadu_ps(mk, w + (m + (r < rows ? r : 0)) * c + k);
#pragma GCC unroll 8
                for (int q = 0; q < np; q++)
                    acc[r][q] = _mm512_fmadd_ps(wv, xv[q], acc[r][q]);
            }
        }
        for (int r = 0; r < rows; r++) {
            float *out = y + first + (m + r) * p->hw;
#pragma GCC unroll 8
            for (int q = 0; q < np; q++)
                out[q] = _mm512_reduce_add_ps(acc[r][q]);
            bd_epilogue_apply(bd_epilogue_has_function(ep) ? &linear : ep, m + r, out,
                              ep && ep->residual ? ep->residual + (out - y) : NULL, out, np);
        }
    }
    if (!bd_epilogue_has_function(ep))
        return;
    float *sums = col + np * c;
    for (int64_t m = m0; m < m1; m++)
        for (int q = 0; q < np; q++)
            sums[(m - m0) * np + q] = y[first + m * p->hw + q];
    bd_activation_apply(ep, sums, (m1 - m0) * np);
    for (int64_t m = m0; m < m1; m++)
        for (int q = 0; q < np; q++)
            y[first + m * p->hw + q] = sums[(m - m0) * np + q];
}

typedef void (*dots_fn)(const plan *p, float *col, const float *w, float *y, int64_t i,
                        int64_t m0, int64_t m1);

#define DOTS_N(NP)                                                                               \
    static void dots_##NP(const plan *p, float *col, const float *w, float *y, int64_t i,       \
                          int64_t m0, int64_t m1)                                                \
    {                                                                                            \
        dots_body(p, col, w, y, i, m0, m1, NP);                                                  \
    }
DOTS_N(1) DOTS_N(2) DOTS_N(3) DOTS_N(4) DOTS_N(5) DOTS_N(6) DOTS_N(7) DOTS_N(8)

/* [np - 1] */
static const dots_fn dots[DOTS] = {dots_1, dots_2, dots_3, dots_4,
                                   dots_5, dots_6, dots_7, dots_8};

/* Pixel block pb of image i, output channels [m0, m1); the last block also
 * does the dot products (col: room for their input columns). */
static void run_block(const plan *p, const float *x, const float *w, float *y, int64_t i,
                      int64_t pb, int64_t m0, int64_t m1, float *col)
{
    const bd_conv_geom *g = p->g;
    if (pb == p->npb - 1 && p->ndots) {
        const int64_t first = p->hw - p->ndots;
        const float *xi = x + i * g->c * p->xs + first;
        for (int64_t q = 0; q < p->ndots; q++)
            for (int64_t k = 0; k < g->c; k++)
                col[q * g->c + k] = xi[k * p->xs + q];
        dots[p->ndots - 1](p, col, w, y, i, m0, m1);
    }
    /* the vectors spread evenly over the blocks (9 as 3, 3, 3, not 4, 4,
     * 1), so that the threads' shares of blocks weigh the same */
    const int64_t v0 = pb * p->nv / p->npb, nr = (pb + 1) * p->nv / p->npb - v0;
    if (nr <= 0)
        return;
    const int last = v0 + nr == p->nv;
    const int64_t px = v0 * VL, out = i * g->m * p->hw + px;
    const float *xi = x + i * g->c * p->xs + px;
    const float *res = p->ep ? p->ep->residual : NULL;
    for (int64_t m = m0; m < m1; m += MR) {
        const int64_t mr = m1 - m < MR ? m1 - m : MR;
        tiles[mr - 1][nr - 1](p, xi, w + m * g->c, m + 2 * MR <= m1 ? w + (m + MR) * g->c : NULL,
                              res ? res + out + m * p->hw : NULL, y + out + m * p->hw, m, last);
    }
}

/* Work items a thread should have at least, so that uneven items still
 * share out evenly. */
enum { ITEMS_PER_THREAD = 4 };
/* Input and output channels from which a layer's input is worth re-laying
 * in aligned rows: a tile's rows then pass L1 and come from L2, and each
 * is read by M / 6 tiles. */
enum { ALIGN_C = 256, ALIGN_M = 128 };

bd_status bd_conv_pointwise(const bd_conv_geom *g, const float *x, const float *w,
                            const bd_epilogue *ep, float *y)
{
    if (!bd_conv_pointwise_supported(g))
        return bd_fail(BD_EUNSUPPORTED, "the pointwise convolution needs AVX-512, a 1x1 "
                                        "kernel at stride 1 without padding and one group");
    plan p = {.g = g, .ep = ep, .hw = g->h * g->w, .xs = g->h * g->w};
    if (g->n == 0 || p.hw == 0 || g->m == 0)
        return BD_OK;
    const int64_t rem = p.hw % VL;
    p.ndots = rem <= DOTS ? rem : 0;
    p.nv = (p.hw - p.ndots + VL - 1) / VL;
    p.npb = p.nv ? (p.nv + NR - 1) / NR : 1;
    p.tail = bd_lanes(0, rem && !p.ndots ? rem : VL);
    p.ctail = bd_lanes(0, g->c % VL ? g->c % VL : VL);
    bd_epilogue_clamp(ep, &p.lo, &p.hi);
    /* Items: an image's pixel block times a run of output channels, split
     * finer only where images and pixel blocks are too few for the threads
     * (a 7x7 layer at batch 1 is one pixel block); in order of the runs, so
     * that a thread's share spans every block, the last (with the dot
     * products) included. */
    const int threads = omp_get_max_threads();
    /* Where an image's input outweighs the layer's weights (twice as many
     * pixels as output channels), the threads share pixel blocks, as many
     * to each (a multiple of the threads, the vectors spread evenly over
     * them), not runs of output channels: each then reads the part of the
     * input that the previous layer, shared the same way, left in its own
     * cache, where a run of channels reads every pixel, half of them from
     * the other core's. Two threads on the Xeon: MobileNetV2 4.07 -> 3.93
     * ms, ShuffleNetV2 1.41 -> 1.35, MobileNetV3-Small 1.25 -> 1.21; with
     * as many pixels as channels (Inception-v3's 768 -> 128 at 12x12) the
     * weights each thread then read whole cost more than that saved. */
    const int spatial = p.hw >= 2 * g->m && p.nv >= threads;
    if (spatial)
        while (g->n * p.npb % threads && g->n * p.npb < 16 * threads && p.npb < p.nv)
            p.npb++;
    const int64_t blocks = g->n * p.npb, mblocks = (g->m + MR - 1) / MR;
    int64_t split = spatial ? 1 : (threads * ITEMS_PER_THREAD + blocks - 1) / blocks;
    /* a multiple of the threads, so that each gets as many runs: 16 runs of
     * 6 channels by 3 pixel blocks had been cut in 3 runs, one thread
     * taking 30 of the 48 tiles */
    split = split <= 1 ? 1 : (split + threads - 1) / threads * threads;
    /* and where a few blocks do not share out evenly (13 blocks to 2
     * threads went 7 and 6), a run per thread */
    if (!spatial && split == 1 && blocks % threads && blocks < 16 * threads)
        split = threads;
    split = split > mblocks ? mblocks : split;
    const int64_t items = blocks * split;
    /* Rows of pixels that are not whole vectors start off the vector grid,
     * so every load of them spans two cache lines, and a tile streams its
     * rows from L2 at twice the lines: where many output channels read
     * them, they are copied once to rows padded to whole vectors. One
     * thread on the Xeon: ResNet-50's 1024 -> 256 at 14x14 1.13 -> 0.73
     * ms, SqueezeNet's 512 -> 1000 at 13x13 1.33 -> 1.17, Inception-v3's
     * 768 -> 192 at 17x17 0.63 -> 0.60. With fewer input channels the
     * rows stay in L1, and with fewer output channels the copy cost what
     * it saved (a MobileNetV2 block at 14x14, its 576 -> 96 copied: 2%
     * slower). */
    float *aligned = NULL;
    const int64_t xs = (p.hw + VL - 1) / VL * VL;
    if (p.hw % VL && p.nv >= 2 && g->c >= ALIGN_C && g->m >= ALIGN_M) {
        aligned = aligned_alloc(64, (size_t)(g->n * g->c * xs) * sizeof *aligned);
        if (!aligned)
            return bd_fail(BD_ENOMEM, "out of memory for a pointwise conv's aligned input");
        p.xs = xs;
    }
    const float *xin = aligned ? aligned : x;
    int failed = 0;
#pragma omp parallel if (threads > 1 && items > 1 && g->m * g->c * p.hw * g->n > (1 << 15))
    {
        if (aligned) {
#pragma omp for schedule(static)
            for (int64_t row = 0; row < g->n * g->c; row++)
                memcpy(aligned + row * xs, x + row * p.hw, (size_t)p.hw * sizeof *x);
        }
        float *col = p.ndots ? malloc((size_t)(p.ndots * (g->c + g->m)) * sizeof *col) : NULL;
        if (p.ndots && !col) {
#pragma omp atomic write
            failed = 1;
        }
#pragma omp for schedule(static)
        for (int64_t it = 0; it < items; it++) {
            /* run r: tiles r * mblocks / split on, spread evenly (27 tiles
             * in 8 runs as 3 or 4 each, not 4 and a last of 3 empty; 160
             * channels had gone 96 to one thread, 64 to the other) */
            const int64_t b = it % blocks, r = it / blocks;
            const int64_t m0 = r * mblocks / split * MR;
            const int64_t m1 = (r + 1) * mblocks / split * MR < g->m
                                   ? (r + 1) * mblocks / split * MR
                                   : g->m;
            if (m0 < m1 && (col || !p.ndots))
                run_block(&p, xin, w, y, b / p.npb, b % p.npb, m0, m1, col);
        }
        free(col);
    }
    free(aligned);
    return failed ? bd_fail(BD_ENOMEM, "out of memory for a pointwise conv's input columns")
                  : BD_OK;
}

#else

int bd_conv_pointwise_supported(const bd_conv_geom *g)
{
    (void)g;
    return 0;
}

bd_status bd_conv_pointwise(const bd_conv_geom *g, const float *x, const float *w,
                            const bd_epilogue *ep, float *y)
{
    (void)g, (void)x, (void)w, (void)ep, (void)y;
    return bd_fail(BD_EUNSUPPORTED, "the pointwise convolution needs AVX-512 in the build");
}

#endif
