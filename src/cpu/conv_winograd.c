#include "conv_winograd.h"

#ifdef __AVX512F__

#include <immintrin.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "avx512.h"

/* Floats per vector; transformed positions of a tile (4x4); output
 * channels and tile vectors of a register tile of the products: 8 x 3
 * accumulators, 3 tile vectors and a broadcast weight fill 28 of the 32
 * registers, and each input channel costs 11 loads for 24 multiply-adds. */
enum { VL = 16, XI = 16, MR = 8, NR = 3 };
/* Input channels times tiles of a block at most: its 16 transformed
 * copies (1 MB) stay in L2 while every output channel's products read
 * them. */
enum { BLOCK_FLOATS = 16384 };
/* Input channels whose patches are transformed together, run by run: the
 * lines of the block they write (16 a channel and vector) are written
 * whole before they leave L1, where a run at a time over every channel
 * had written each line from several runs, far apart. */
enum { KC = 8 };
/* Floats of weights a product asks for ahead of its reads (4 KB): a layer
 * of few tiles (7x7 at batch 1) streams its weights from memory once, at
 * a line every few multiply-adds, and the hardware's prefetchers fell
 * behind. */
enum { AHEAD = 1024 };

int bd_conv_winograd_supported(const bd_conv_geom *g)
{
    return __builtin_cpu_supports("avx512f") && g->group == 1 && g->kh == 3 && g->kw == 3 &&
           g->sh == 1 && g->sw == 1 && g->dh == 1 && g->dw == 1;
}

size_t bd_conv_winograd_packed_floats(const bd_conv_geom *g)
{
    return (size_t)(XI * ((g->m + MR - 1) / MR * MR) * g->c);
}

/* G (a, b, c)^T into d[0], d[s], d[2s], d[3s], G = [1 0 0; .5 .5 .5;
 * .5 -.5 .5; 0 0 1]; a filter a lane. */
static inline void times_g(__m512 a, __m512 b, __m512 c, __m512 *d, int s)
{
    const __m512 half = _mm512_set1_ps(0.5f);
    d[0] = a;
    d[s] = _mm512_mul_ps(half, _mm512_add_ps(_mm512_add_ps(a, b), c));
    d[2 * s] = _mm512_mul_ps(half, _mm512_add_ps(_mm512_sub_ps(a, b), c));
    d[3 * s] = c;
}

/* u[4i + j] = (G f G^T)(i, j) for 16 3x3 filters f[9], a filter a lane:
 * G times each column of f, then each row of that times G^T. */
static inline void filter_transform(const __m512 *f, __m512 *u)
{
    __m512 t[4][3];
#pragma GCC unroll 3
    for (int j = 0; j < 3; j++)
        times_g(f[j], f[3 + j], f[6 + j], &t[0][j], 3);
#pragma GCC unroll 4
    for (int i = 0; i < 4; i++)
        times_g(t[i][0], t[i][1], t[i][2], u + 4 * i, 1);
}

/* dst[m / MR][xi][c][m % MR]: a register tile's MR weights of one input
 * channel side by side, output channels past M zero, and a block of MR
 * output channels one stretch of memory, read from end to end. Two input channels'
 * MR filters at a time fill a vector whose transformed values are whole
 * rows of dst; their taps come by gathers. Scalar code storing a float at
 * a time to 16 places took 140 cycles a filter, more than a 56x56 layer's
 * transforms of its patches. */
void bd_conv_winograd_pack(const bd_conv_geom *g, const float *w, float *dst)
{
    const int64_t c = g->c, mb = (g->m + MR - 1) / MR, s = c * MR;
    const __m512i lane = bd_iota();
    /* lane = kk * MR + i: filter (m0 + i, k + kk) */
    const __m512i first = _mm512_add_epi32(
        _mm512_mullo_epi32(_mm512_and_si512(lane, _mm512_set1_epi32(MR - 1)),
                           _mm512_set1_epi32((int)(c * 9))),
        _mm512_mullo_epi32(_mm512_srli_epi32(lane, 3), _mm512_set1_epi32(9)));
    const int64_t pairs = (c + 1) / 2;
#pragma omp parallel for schedule(static) if (g->m * c > 4096)
    for (int64_t it = 0; it < mb * pairs; it++) {
        const int64_t b = it / pairs, k = it % pairs * 2;
        const int64_t rows = g->m - b * MR < MR ? g->m - b * MR : MR;
        const __mmask16 one = (__mmask16)((1u << rows) - 1);
        const __mmask16 mask = k + 1 < c ? (__mmask16)(one | one << MR) : one;
        const float *base = w + (b * MR * c + k) * 9;
        __m512 f[9], u[XI];
#pragma GCC unroll 9
        for (int t = 0; t < 9; t++)
            f[t] = _mm512_mask_i32gather_ps(_mm512_setzero_ps(), mask,
                                            _mm512_add_epi32(first, _mm512_set1_epi32(t)), base,
                                            4);
        filter_transform(f, u);
        const __mmask16 keep = k + 1 < c ? (__mmask16)0xffff : (__mmask16)((1u << MR) - 1);
        float *d = dst + (b * XI * c + k) * MR;
#pragma GCC unroll 16
        for (int xi = 0; xi < XI; xi++)
            _mm512_mask_storeu_ps(d + xi * s, keep, u[xi]);
    }
}

typedef struct plan {
    const bd_conv_geom *g;
    const bd_epilogue *ep;
    int64_t th, tw;  /* tile rows and columns of an image */
    int64_t tb, tbp; /* tiles of a block, and that rounded up to whole vectors */
    /* floats from one transformed position's input rows to the next': a
     * cache line past a whole number of rows, so that the 16 stores of a
     * patch do not all fall in one set of L1 (C * tbp is often a multiple
     * of 4 KB) */
    int64_t vs;
    int64_t mb;      /* output channel blocks of MR */
    float lo, hi;    /* the activation's clamp */
} plan;

/* The tiles [t, t + n) of one tile row that fall in one vector of the
 * block: a block's tiles go row by row, cut where a row or a vector ends.
 * A run's tiles keep their lanes (lane + j = their offset in the block),
 * so that a run's stores and loads of the block are whole aligned vectors:
 * runs packed from lane 0 had split most of them over two cache lines,
 * and moved the patches of a 7x7 layer at a tenth of the speed of its
 * arithmetic. */
typedef struct run {
    int64_t ty, tx, n; /* tile row and column, tiles */
    int64_t j, lane;   /* the block's vector (offset of its lane 0), the first tile's lane */
} run;

static int next_run(const plan *p, int64_t t0, int64_t nt, int64_t *t, run *r)
{
    if (*t >= t0 + nt)
        return 0;
    r->ty = *t / p->tw;
    r->tx = *t % p->tw;
    r->lane = (*t - t0) % VL;
    r->j = *t - t0 - r->lane;
    r->n = p->tw - r->tx;
    if (r->n > VL - r->lane)
        r->n = VL - r->lane;
    if (r->n > t0 + nt - *t)
        r->n = t0 + nt - *t;
    *t += r->n;
    return 1;
}

/* v[xi][c][j] = (B^T d B)[xi] for the patches d of tiles [t0, t0 + nt) of
 * image x, B^T = [1 0 -1 0; 0 1 1 0; 0 -1 1 0; 0 1 0 -1]; lanes past nt up
 * to the block's whole vectors are zero. A lane is a tile: the patches of
 * 16 neighbouring tiles span 34 columns of a row, loaded as three vectors
 * (masked at the plane's edges, so padding reads nothing) and split into
 * the four columns of each patch by lane permutes; KC input channels at a
 * time, run by run. */
static void transform_input(const plan *p, const float *x, int64_t t0, int64_t nt, float *v)
{
    const bd_conv_geom *g = p->g;
    const int64_t c = g->c, cs = p->vs, plane = g->h * g->w;
    const __m512i even = _mm512_set_epi32(30, 28, 26, 24, 22, 20, 18, 16, 14, 12, 10, 8, 6, 4,
                                          2, 0);
    const __m512i odd = _mm512_add_epi32(even, _mm512_set1_epi32(1));
    /* lanes 1..15 of the first vector, then lane 0 or 1 of the second */
    const __m512i next0 = _mm512_set_epi32(16, 15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1);
    const __m512i next1 = _mm512_set_epi32(17, 15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1);
    const __m512i width = _mm512_set1_epi32((int)g->w);
    run r;
    for (int64_t k0 = 0; k0 < c; k0 += KC) {
        for (int64_t t = t0; next_run(p, t0, nt, &t, &r);) {
            const int64_t col = 2 * (r.tx - r.lane) - g->pad_l, row0 = 2 * r.ty - g->pad_t;
            const __m512i cols = _mm512_add_epi32(bd_iota(), _mm512_set1_epi32((int)col));
            __mmask16 mk[3];
            for (int q = 0; q < 3; q++)
                mk[q] = bd_lanes_within(_mm512_add_epi32(cols, _mm512_set1_epi32(q * VL)), width);
            mk[2] &= 3;
            int64_t off[4];
            __mmask16 live[4];
            for (int i = 0; i < 4; i++) {
                const int64_t iy = row0 + i;
                live[i] = iy >= 0 && iy < g->h ? 0xffff : 0;
                off[i] = (live[i] ? iy : 0) * g->w + col;
            }
            const __mmask16 keep = bd_lanes(r.lane, r.lane + r.n);
            float *out = v + r.j + k0 * p->tbp;
            for (int64_t k = k0; k < c && k < k0 + KC; k++, out += p->tbp) {
                const float *xk = x + k * plane;
                __m512 e[4][4];
#pragma GCC unroll 4
                for (int i = 0; i < 4; i++) {
                    const float *at = xk + off[i];
                    const __m512 a = _mm512_maskz_loadu_ps(live[i] & mk[0], at);
                    const __m512 b = _mm512_maskz_loadu_ps(live[i] & mk[1], at + VL);
                    const __m512 cc = _mm512_maskz_loadu_ps(live[i] & mk[2], at + 2 * VL);
                    const __m512 d0 = _mm512_permutex2var_ps(a, even, b);
                    const __m512 d1 = _mm512_permutex2var_ps(a, odd, b);
                    const __m512 d2 = _mm512_permutex2var_ps(d0, next0, cc);
                    const __m512 d3 = _mm512_permutex2var_ps(d1, next1, cc);
                    e[i][0] = _mm512_sub_ps(d0, d2);
                    e[i][1] = _mm512_add_ps(d1, d2);
                    e[i][2] = _mm512_sub_ps(d2, d1);
                    e[i][3] = _mm512_sub_ps(d1, d3);
                }
#pragma GCC unroll 4
                for (int j = 0; j < 4; j++) {
                    const __m512 r0 = e[0][j], r1 = e[1][j], r2 = e[2][j], r3 = e[3][j];
                    _mm512_mask_storeu_ps(out + j * cs, keep, _mm512_sub_ps(r0, r2));
                    _mm512_mask_storeu_ps(out + (4 + j) * cs, keep, _mm512_add_ps(r1, r2));
                    _mm512_mask_storeu_ps(out + (8 + j) * cs, keep, _mm512_sub_ps(r2, r1));
                    _mm512_mask_storeu_ps(out + (12 + j) * cs, keep, _mm512_sub_ps(r1, r3));
                }
            }
        }
    }
    if (nt < p->tbp)
        for (int xi = 0; xi < XI; xi++)
            for (int64_t k = 0; k < c; k++)
                memset(v + xi * cs + k * p->tbp + nt, 0, (size_t)(p->tbp - nt) * sizeof *v);
}

/* o[i][t..] = sum over c of u[c][i] v[c][t..] for the MR output channels
 * of u and nr vectors of tiles from t: one transformed position's product.
 * Each input channel's nr vectors are loaded once and meet MR broadcast
 * weights. */
static inline __attribute__((always_inline)) void
product_body(const float *u, const float *v, int64_t c, int64_t tbp, float *o, const int nr)
{
    __m512 acc[MR][NR];
#pragma GCC unroll 8
    for (int i = 0; i < MR; i++)
#pragma GCC unroll 3
        for (int j = 0; j < nr; j++)
            acc[i][j] = _mm512_setzero_ps();
    for (int64_t k = 0; k < c; k++, u += MR, v += tbp) {
        if (!(k & 1))
            __builtin_prefetch(u + AHEAD, 0, 2);
        __m512 xv[NR];
#pragma GCC unroll 3
        for (int j = 0; j < nr; j++)
            xv[j] = _mm512_loadu_ps(v + j * VL);
#pragma GCC unroll 8
        for (int i = 0; i < MR; i++) {
            const __m512 wv = _mm512_set1_ps(u[i]);
#pragma GCC unroll 3
            for (int j = 0; j < nr; j++)
                acc[i][j] = _mm512_fmadd_ps(wv, xv[j], acc[i][j]);
        }
    }
#pragma GCC unroll 8
    for (int i = 0; i < MR; i++)
#pragma GCC unroll 3
        for (int j = 0; j < nr; j++)
            _mm512_storeu_ps(o + i * tbp + j * VL, acc[i][j]);
}

typedef void (*product_fn)(const float *u, const float *v, int64_t c, int64_t tbp, float *o);

#define PRODUCT(NRI)                                                                             \
    static void product_##NRI(const float *u, const float *v, int64_t c, int64_t tbp, float *o)  \
    {                                                                                            \
        product_body(u, v, c, tbp, o, NRI);                                                      \
    }
PRODUCT(1) PRODUCT(2) PRODUCT(3)

/* [nr - 1] */
static const product_fn products[NR] = {product_1, product_2, product_3};

/* Lane i of a: (i even) lane i / 2 of lo, (i odd) of hi; b: the same from
 * lane 8 on. */
static inline void interleave(__m512 lo, __m512 hi, __m512 *a, __m512 *b)
{
    const __m512i first = _mm512_set_epi32(23, 7, 22, 6, 21, 5, 20, 4, 19, 3, 18, 2, 17, 1, 16, 0);
    const __m512i second = _mm512_add_epi32(first, _mm512_set1_epi32(8));
    *a = _mm512_permutex2var_ps(lo, first, hi);
    *b = _mm512_permutex2var_ps(lo, second, hi);
}

/* Output row oy of run r's tiles, their left columns in lo and right ones
 * in hi (a tile a lane, lanes as in the block), through the epilogue
 * (channel m's a and b) into channel plane yc (residual plane rc, or
 * NULL): lanes before the run's and columns past the plane are not
 * stored. */
static inline __attribute__((always_inline)) void
store_row(const plan *p, __m512 lo, __m512 hi, const run *r, int64_t oy, __m512 a, __m512 b,
          const float *rc, float *yc)
{
    const bd_conv_geom *g = p->g;
    /* lane 0's column, and the run's columns after it */
    const int64_t ox = 2 * (r->tx - r->lane), at = oy * g->ow + ox;
    const int64_t end = 2 * (r->lane + r->n) < g->ow - ox ? 2 * (r->lane + r->n) : g->ow - ox;
    const __m512 vlo = _mm512_set1_ps(p->lo), vhi = _mm512_set1_ps(p->hi);
    __m512 v[2];
    interleave(lo, hi, &v[0], &v[1]);
#pragma GCC unroll 2
    for (int h = 0; h < 2; h++) {
        const __mmask16 mk = bd_lanes(2 * r->lane - h * VL, end - h * VL);
        if (!mk)
            continue;
        const __m512 out = bd_activation_vec(
            p->ep, bd_epilogue_vec(v[h], a, b, rc ? rc + at + h * VL : NULL, mk, vlo, vhi));
        _mm512_mask_storeu_ps(yc + at + h * VL, mk, out);
    }
}

/* Output channels mb * MR.. of tiles [t0, t0 + nt) of image img from their
 * transformed products o[xi][i][j]: Y = A^T O A, A^T = [1 1 1 0; 0 1 -1 -1],
 * a tile a lane, through the epilogue into y. Each vector of the block is
 * transformed once and stored run by run (a 7x7 map's vector holds the
 * tiles of 4 tile rows). */
static void transform_output(const plan *p, const float *o, int64_t mb, int64_t img, int64_t t0,
                             int64_t nt, float *y)
{
    const bd_conv_geom *g = p->g;
    const bd_epilogue *ep = p->ep;
    const int64_t ohw = g->oh * g->ow, m0 = mb * MR;
    const int mr = g->m - m0 < MR ? (int)(g->m - m0) : MR;
    run rs[VL]; /* a vector's runs, a tile each at least */
    for (int64_t t = t0; t < t0 + nt;) {
        int nrun = 0;
        while (next_run(p, t0, nt, &t, &rs[nrun])) {
            const run *r = &rs[nrun++];
            if (r->lane + r->n == VL)
                break;
        }
        for (int i = 0; i < mr; i++) {
            const int64_t m = m0 + i;
            const float *oi = o + i * p->tbp + rs[0].j;
            __m512 q[XI];
#pragma GCC unroll 16
            for (int xi = 0; xi < XI; xi++)
                q[xi] = _mm512_loadu_ps(oi + xi * MR * p->tbp);
            __m512 s[2][4];
#pragma GCC unroll 4
            for (int j = 0; j < 4; j++) {
                s[0][j] = _mm512_add_ps(_mm512_add_ps(q[j], q[4 + j]), q[8 + j]);
                s[1][j] = _mm512_sub_ps(_mm512_sub_ps(q[4 + j], q[8 + j]), q[12 + j]);
            }
            __m512 lo[2], hi[2];
#pragma GCC unroll 2
            for (int h = 0; h < 2; h++) {
                lo[h] = _mm512_add_ps(_mm512_add_ps(s[h][0], s[h][1]), s[h][2]);
                hi[h] = _mm512_sub_ps(_mm512_sub_ps(s[h][1], s[h][2]), s[h][3]);
            }
            const __m512 a = _mm512_set1_ps(ep && ep->scale ? ep->scale[m] : 1.0f);
            const __m512 b = _mm512_set1_ps(ep && ep->shift ? ep->shift[m] : 0.0f);
            const int64_t at = (img * g->m + m) * ohw;
            const float *rc = ep && ep->residual ? ep->residual + at : NULL;
            for (int k = 0; k < nrun; k++)
#pragma GCC unroll 2
                for (int h = 0; h < 2; h++)
                    if (2 * rs[k].ty + h < g->oh)
                        store_row(p, lo[h], hi[h], &rs[k], 2 * rs[k].ty + h, a, b, rc, y + at);
        }
    }
}

bd_status bd_conv_winograd(const bd_conv_geom *g, const float *x, const float *w,
                           const float *packed, const bd_epilogue *ep, float *y)
{
    if (!bd_conv_winograd_supported(g))
        return bd_fail(BD_EUNSUPPORTED, "the Winograd convolution needs AVX-512 and a 3x3 "
                                        "kernel at stride 1 and dilation 1 in one group");
    if (g->n == 0 || g->m == 0 || g->oh == 0 || g->ow == 0)
        return BD_OK;
    plan p = {.g = g, .ep = ep, .th = (g->oh + 1) / 2, .tw = (g->ow + 1) / 2,
              .mb = (g->m + MR - 1) / MR};
    bd_epilogue_clamp(ep, &p.lo, &p.hi);
    const int64_t tiles = p.th * p.tw;
    int64_t cap = BLOCK_FLOATS / g->c / VL * VL;
    cap = cap < VL ? VL : cap;
    /* Items: an image's block of tiles times a run of output channel
     * blocks. Blocks are shared out first: a run per block reads all the
     * weights but transforms the block's input once. Where blocks are too
     * few for the threads (a deep layer of few tiles, whose weights are
     * most of its traffic), each block is cut into runs of output channels
     * that read a share of the weights each, in order of the runs so that
     * each thread takes its own share. A few blocks are made a multiple of
     * the threads: 5 blocks of a 56x56 layer had gone 3 to one thread and
     * 2 to the other. */
    const int threads = omp_get_max_threads();
    int64_t nblk = (tiles + cap - 1) / cap, split = 1;
    if (g->n * nblk < threads) {
        split = (threads + g->n * nblk - 1) / (g->n * nblk);
        split = split > p.mb ? p.mb : split;
    } else if (g->n * nblk < 8 * threads) {
        while ((g->n * nblk) % threads && nblk < tiles)
            nblk++;
    }
    p.tb = (tiles + nblk - 1) / nblk;
    p.tbp = (p.tb + VL - 1) / VL * VL;
    p.vs = g->c * p.tbp + VL;
    float *own = NULL;
    if (!packed) {
        own = aligned_alloc(64, (bd_conv_winograd_packed_floats(g) * sizeof *own + 63) / 64 * 64);
        if (!own)
            return bd_fail(BD_ENOMEM, "out of memory for a Winograd conv's weights");
        bd_conv_winograd_pack(g, w, own);
        packed = own;
    }
    const int64_t blocks = g->n * nblk, items = blocks * split;
    const size_t vfloats = (size_t)(XI * p.vs), ofloats = (size_t)(XI * MR * p.tbp);
    int failed = 0;
#pragma omp parallel if (threads > 1 && items > 1)
    {
        float *v = aligned_alloc(64, vfloats * sizeof *v);
        float *o = aligned_alloc(64, (ofloats * sizeof *o + 63) / 64 * 64);
        if (!v || !o) {
#pragma omp atomic write
            failed = 1;
        }
#pragma omp for schedule(static)
        for (int64_t it = 0; it < items; it++) {
            if (!v || !o)
                continue;
            const int64_t b = it % blocks, run = it / blocks, img = b / nblk;
            const int64_t t0 = b % nblk * p.tb;
            const int64_t nt = tiles - t0 < p.tb ? tiles - t0 : p.tb;
            const int64_t mb0 = run * p.mb / split, mb1 = (run + 1) * p.mb / split;
            if (mb0 >= mb1 || nt <= 0)
                continue;
            transform_input(&p, x + img * g->c * g->h * g->w, t0, nt, v);
            for (int64_t mb = mb0; mb < mb1; mb++) {
                for (int xi = 0; xi < XI; xi++) {
                    const float *u = packed + (mb * XI + xi) * g->c * MR;
                    const float *vx = v + xi * p.vs;
                    for (int64_t t = 0; t < p.tbp;) {
                        /* vectors 3 at a time, a last 4 as 2 and 2 */
                        const int64_t left = (p.tbp - t) / VL;
                        const int nr = left == 4 ? 2 : left < NR ? (int)left : NR;
                        products[nr - 1](u, vx + t, g->c, p.tbp, o + xi * MR * p.tbp + t);
                        t += nr * VL;
                    }
                }
                transform_output(&p, o, mb, img, t0, nt, y);
            }
        }
        free(v);
        free(o);
    }
    free(own);
    return failed ? bd_fail(BD_ENOMEM, "out of memory for a Winograd conv's transformed tiles")
                  : BD_OK;
}

/* Against the direct kernel, in its multiply-adds: 9 on each output pixel.
 * Winograd spends 16 on each tile of 4, but every lane of an image's last
 * vector of tiles counts, and the transforms and the products' loads add
 * about a quarter (fitted on the zoo's 3x3 layers, one thread on the Xeon:
 * 5x5 maps, 9 tiles in a vector of 16, ran at 0.82 of the direct kernel's
 * speed, 7x7 maps at 1.26-1.41, larger ones at 1.2-1.8). The choice
 * depends on the shape alone, not the batch or whether the weights are
 * kept transformed, so that an image gets the same bits in any batch and
 * from any caller; transforming the weights in the call costs about 5
 * cycles a filter, a few percent but at batch 1 on 7x7 maps. Layers of
 * fewer than 16 channels go to the kernels that fill their vectors. */
int bd_conv_winograd_preferred(const bd_conv_geom *g)
{
    if (!bd_conv_winograd_supported(g) || g->c < 16 || g->m < 16)
        return 0;
    const int64_t tiles = (g->oh + 1) / 2 * ((g->ow + 1) / 2);
    return 16 * ((tiles + VL - 1) / VL * VL) * 5 / 4 < 9 * g->oh * g->ow;
}

#else

int bd_conv_winograd_supported(const bd_conv_geom *g)
{
    (void)g;
    return 0;
}

int bd_conv_winograd_preferred(const bd_conv_geom *g)
{
    (void)g;
    return 0;
}

size_t bd_conv_winograd_packed_floats(const bd_conv_geom *g)
{
    (void)g;
    return 0;
}

void bd_conv_winograd_pack(const bd_conv_geom *g, const float *w, float *dst)
{
    (void)g, (void)w, (void)dst;
}

bd_status bd_conv_winograd(const bd_conv_geom *g, const float *x, const float *w,
                           const float *packed, const bd_epilogue *ep, float *y)
{
    (void)g, (void)x, (void)w, (void)packed, (void)ep, (void)y;
    return bd_fail(BD_EUNSUPPORTED, "the Winograd convolution needs AVX-512 in the build");
}

#endif
