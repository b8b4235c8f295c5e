#include "conv_planes.h"

#ifdef __AVX512F__

#include <immintrin.h>
#include <omp.h>
#include <stdlib.h>

#include "avx512.h"
#include "bordered.h"

/* Floats per vector; output channels and blocks of 16 pixels per tile (24
 * accumulators, 4 input vectors and a broadcast weight); most taps. */
enum { VL = 16, MR = 6, NB = 4, MAX_TAPS = 16 * 49 };

int bd_conv_planes_supported(const bd_conv_geom *g)
{
    return __builtin_cpu_supports("avx512f") && g->c / g->group * g->kh * g->kw <= MAX_TAPS &&
           (g->sw == 1 || g->sw == 2);
}

typedef struct plan {
    const bd_conv_geom *g;
    const bd_epilogue *ep;
    bd_bordered b;
    int64_t plane;         /* floats of one bordered plane */
    int64_t cg, mg;        /* input and output channels per group */
    int64_t taps;          /* a group's input channels times kernel positions */
    int64_t tap[MAX_TAPS]; /* each one's offset from a block's first pixel */
    int64_t nblk, blocks;  /* blocks of 16 outputs per row, per image */
    __mmask16 tail;        /* the lanes of a row's last block */
    float lo, hi;          /* the activation's clamp */
} plan;

/* A span of NB blocks from block j on: where each starts, in a bordered
 * plane and in an output plane, and which lanes it stores. Blocks run in
 * row order across rows (a 7-wide row is one block), and past the last one
 * the last is recomputed and nothing stored. */
typedef struct span {
    int64_t in[NB], out[NB];
    __mmask16 mask[NB];
} span;

/* (filled in place: a span returned by value was copied with one 64-byte
 * load from the scalar stores that had just made it, which the store
 * buffer cannot forward, a stall per tile) */
static void span_at(const plan *p, int64_t j, span *gr)
{
    const bd_conv_geom *g = p->g;
    for (int k = 0; k < NB; k++) {
        const int64_t at = j + k < p->blocks ? j + k : p->blocks - 1;
        const int64_t oy = at / p->nblk, bk = at % p->nblk;
        gr->in[k] = oy * g->sh * p->b.stride + bk * VL;
        gr->out[k] = oy * g->ow + bk * VL;
        gr->mask[k] = j + k >= p->blocks ? 0 : bk == p->nblk - 1 ? p->tail : (__mmask16)0xffff;
    }
}

/* Output channels m0.. (mr of them) of one span of one image: buf the
 * bordered planes of their group, y and res the image's output and residual
 * planes. The epilogue, activation function included, is in registers. */
static inline __attribute__((always_inline)) void
tile_body(const plan *p, const float *buf, const float *w, const span *gr, const float *res,
          float *y, int64_t m0, const int mr)
{
    const int64_t ohw = p->g->oh * p->g->ow;
    __m512 acc[MR][NB];
#pragma GCC unroll 6
    for (int i = 0; i < mr; i++)
#pragma GCC unroll 4
        for (int k = 0; k < NB; k++)
            acc[i][k] = _mm512_setzero_ps();
    const float *wm = w + m0 * p->taps;
    for (int64_t t = 0; t < p->taps; t++) {
        const float *at = buf + p->tap[t];
        __m512 xv[NB];
#pragma GCC unroll 4
        for (int k = 0; k < NB; k++)
            xv[k] = _mm512_loadu_ps(at + gr->in[k]);
#pragma GCC unroll 6
        for (int i = 0; i < mr; i++) {
            const __m512 wv = _mm512_set1_ps(wm[i * p->taps + t]);
#pragma GCC unroll 4
            for (int k = 0; k < NB; k++)
                acc[i][k] = _mm512_fmadd_ps(wv, xv[k], acc[i][k]);
        }
    }
    const bd_epilogue *ep = p->ep;
    const __m512 lo = _mm512_set1_ps(p->lo), hi = _mm512_set1_ps(p->hi);
#pragma GCC unroll 6
    for (int i = 0; i < mr; i++) {
        const int64_t m = m0 + i;
        const __m512 a = _mm512_set1_ps(ep && ep->scale ? ep->scale[m] : 1.0f);
        const __m512 b = _mm512_set1_ps(ep && ep->shift ? ep->shift[m] : 0.0f);
#pragma GCC unroll 4
        for (int k = 0; k < NB; k++)
            acc[i][k] = bd_activation_vec(
                ep, bd_epilogue_vec(acc[i][k], a, b, res ? res + m * ohw + gr->out[k] : NULL,
                                    gr->mask[k], lo, hi));
    }
#pragma GCC unroll 6
    for (int i = 0; i < mr; i++)
#pragma GCC unroll 4
        for (int k = 0; k < NB; k++)
            _mm512_mask_storeu_ps(y + (m0 + i) * ohw + gr->out[k], gr->mask[k], acc[i][k]);
}

typedef void (*tile_fn)(const plan *p, const float *buf, const float *w, const span *gr,
                        const float *res, float *y, int64_t m0);

#define TILE(MRI)                                                                                \
    static void tile_##MRI(const plan *p, const float *buf, const float *w, const span *gr,    \
                           const float *res, float *y, int64_t m0)                               \
    {                                                                                            \
        tile_body(p, buf, w, gr, res, y, m0, MRI);                                               \
    }
TILE(1) TILE(2) TILE(3) TILE(4) TILE(5) TILE(6)

/* [mr - 1] */
static const tile_fn tiles[MR] = {tile_1, tile_2, tile_3, tile_4, tile_5, tile_6};

static void plan_init(plan *p, const bd_conv_geom *g, const bd_epilogue *ep)
{
    p->g = g;
    p->ep = ep;
    p->b = bd_bordered_size(g);
    p->plane = p->b.rows * p->b.stride;
    p->cg = g->c / g->group;
    p->mg = g->m / g->group;
    p->taps = p->cg * g->kh * g->kw;
    for (int64_t c = 0, t = 0; c < p->cg; c++)
        for (int64_t ki = 0; ki < g->kh; ki++)
            for (int64_t kj = 0; kj < g->kw; kj++)
                p->tap[t++] = c * p->plane + bd_bordered_tap(g, p->b, ki, kj);
    p->nblk = (g->ow + VL - 1) / VL;
    p->blocks = g->oh * p->nblk;
    p->tail = bd_lanes(0, g->ow - (p->nblk - 1) * VL);
    bd_epilogue_clamp(ep, &p->lo, &p->hi);
}

bd_status bd_conv_planes(const bd_conv_geom *g, const float *x, const float *w,
                         const bd_epilogue *ep, float *y)
{
    if (!bd_conv_planes_supported(g))
        return bd_fail(BD_EUNSUPPORTED, "the planes convolution needs AVX-512, at most 784 "
                                        "taps per group and stride 1 or 2 across");
    if (g->n == 0 || g->oh * g->ow == 0 || g->m == 0)
        return BD_OK;
    /* (the plan holds every tap's offset: too large for the stack) */
    plan *p = malloc(sizeof *p);
    if (!p)
        return bd_fail(BD_ENOMEM, "out of memory for a convolution's plan");
    plan_init(p, g, ep);
    float *buf = aligned_alloc(64, (size_t)(g->c * p->plane) * sizeof *buf);
    if (!buf) {
        free(p);
        return bd_fail(BD_ENOMEM, "out of memory for a convolution's bordered planes");
    }
    /* channel tiles: each group's output channels in tiles of MR */
    const int64_t spans = (p->blocks + NB - 1) / NB, per = (p->mg + MR - 1) / MR;
    const int64_t mtiles = g->group * per;
    const int64_t ohw = g->oh * g->ow, hw = g->h * g->w;
#pragma omp parallel if (g->m * p->blocks * p->taps > (1 << 14))
    for (int64_t i = 0; i < g->n; i++) {
        const float *res = ep && ep->residual ? ep->residual + i * g->m * ohw : NULL;
        float *yi = y + i * g->m * ohw;
#pragma omp for schedule(static)
        for (int64_t c = 0; c < g->c; c++)
            bd_border_copy(g, p->b, x + (i * g->c + c) * hw, buf + c * p->plane);
        /* a thread's items are whole spans, every channel tile of each, so
         * a span's input vectors serve its group's tiles from L1 */
#pragma omp for schedule(static)
        for (int64_t it = 0; it < spans * mtiles; it++) {
            const int64_t gi = it % mtiles / per, m0 = gi * p->mg + it % per * MR;
            const int64_t mr = (gi + 1) * p->mg - m0 < MR ? (gi + 1) * p->mg - m0 : MR;
            span gr;
            span_at(p, it / mtiles * NB, &gr);
            tiles[mr - 1](p, buf + gi * p->cg * p->plane, w, &gr, res, yi, m0);
        }
    }
    free(buf);
    free(p);
    return BD_OK;
}

#else

int bd_conv_planes_supported(const bd_conv_geom *g)
{
    (void)g;
    return 0;
}

bd_status bd_conv_planes(const bd_conv_geom *g, const float *x, const float *w,
                         const bd_epilogue *ep, float *y)
{
    (void)g, (void)x, (void)w, (void)ep, (void)y;
    return bd_fail(BD_EUNSUPPORTED, "the planes convolution needs AVX-512 in the build");
}

#endif
