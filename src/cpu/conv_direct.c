#include "conv_direct.h"

#ifdef __AVX512F__

#include <immintrin.h>
#include <omp.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <stdint.h>
#include <string.h>

#include "avx512.h"

/* Floats per vector register, and output channels per block. */
enum { VL = 16 };
/* Most accumulators a tile keeps in registers (of 32), leaving room for
 * the weight vectors and the broadcast input. */
enum { MAXACC = 28 };
/* Floats of packed weights a chunk of the sum reads at most (32 KB, in L1
 * beside the input rows), and the accumulator vectors a run of units keeps
 * between chunks at most (128 KB, in L2); conv_units. */
enum { CHUNK_W = 8192, RUN_ACC = 2048 };

int bd_conv_direct_available(void) { return __builtin_cpu_supports("avx512f"); }

int bd_conv_direct_supported(const bd_conv_geom *g)
{
    return bd_conv_direct_available() &&
           (g->group == 1 || (g->c / g->group % VL == 0 && g->m / g->group % VL == 0));
}

/* One register tile: bo output channel blocks times pw neighbouring output
 * pixels, summed over ntaps taps and their input channels. x points at the
 * tile's first pixel in the re-laid input, toff[t] is tap t's offset from
 * there; w is the tile's packed weights, read in order. acc gets [bo][pw]
 * vectors of 16 output channels; with more set, the sums continue from
 * the values acc holds (the taps before these), in the same order. */
typedef void (*tile_fn)(const float *x, const int64_t *toff, int64_t ntaps, const float *w,
                        __m512 *acc, int more);

/* Every loop over bo and pw unrolls completely (they are constants in each
 * instance), so the accumulators live in registers. ps, the floats between
 * neighbouring pixels, is a constant too: it makes the pw broadcasts
 * plain displacements off one pointer, and it is also the channels each
 * tap holds, one after another (16 blocked, 1 planar). A count known only
 * at run time there made GCC carry pixels from one channel to the next in
 * general registers and on the stack. */
static inline __attribute__((always_inline)) void
tile_body(const float *x, const int64_t *toff, int64_t ntaps, const float *w, __m512 *out,
          int more, const int ps, const int bo, const int pw)
{
    __m512 acc[MAXACC];
#pragma GCC unroll 28
    for (int i = 0; i < bo * pw; i++)
        acc[i] = more ? out[i] : _mm512_setzero_ps();
    for (int64_t t = 0; t < ntaps; t++) {
        const float *px = x + toff[t];
        for (int ci = 0; ci < ps; ci++, px++, w += bo * VL) {
            __m512 wv[4];
#pragma GCC unroll 4
            for (int b = 0; b < bo; b++)
                wv[b] = _mm512_load_ps(w + b * VL);
#pragma GCC unroll 16
            for (int q = 0; q < pw; q++) {
                __m512 xv = _mm512_set1_ps(px[q * ps]);
#pragma GCC unroll 4
                for (int b = 0; b < bo; b++)
                    acc[b * pw + q] = _mm512_fmadd_ps(wv[b], xv, acc[b * pw + q]);
            }
        }
    }
#pragma GCC unroll 28
    for (int i = 0; i < bo * pw; i++)
        out[i] = acc[i];
}

/* Instances for both input layouts: 16-channel blocks (ps 16) and planar
 * channels (ps 1, for fewer than 16 input channels). */
#define TILE(PS, BO, PW)                                                                         \
    static void tile_##PS##_##BO##_##PW(const float *x, const int64_t *toff, int64_t ntaps,     \
                                        const float *w, __m512 *acc, int more)                   \
    {                                                                                            \
        tile_body(x, toff, ntaps, w, acc, more, PS, BO, PW);                                     \
    }
#define TILES(BO, PW) TILE(16, BO, PW) TILE(1, BO, PW)
#define KERNEL(BO, PW) {BO, PW, {tile_16_##BO##_##PW, tile_1_##BO##_##PW}}

TILES(1, 16) TILES(1, 14) TILES(1, 8) TILES(1, 7) TILES(1, 6) TILES(1, 5) TILES(1, 4)
TILES(1, 2) TILES(1, 1)
TILES(2, 14) TILES(2, 8) TILES(2, 7) TILES(2, 6) TILES(2, 5) TILES(2, 4) TILES(2, 2) TILES(2, 1)
TILES(3, 8) TILES(3, 7) TILES(3, 6) TILES(3, 5) TILES(3, 4) TILES(3, 2) TILES(3, 1)
TILES(4, 7) TILES(4, 6) TILES(4, 5) TILES(4, 4) TILES(4, 2) TILES(4, 1)

typedef struct kernel {
    int bo, pw;
    tile_fn fn[2]; /* blocked, planar */
} kernel;

static const kernel kernels[] = {
    KERNEL(1, 16), KERNEL(1, 14), KERNEL(1, 8), KERNEL(1, 7), KERNEL(1, 6), KERNEL(1, 5),
    KERNEL(1, 4),  KERNEL(1, 2),  KERNEL(1, 1), KERNEL(2, 14), KERNEL(2, 8), KERNEL(2, 7),
    KERNEL(2, 6),  KERNEL(2, 5),  KERNEL(2, 4), KERNEL(2, 2),  KERNEL(2, 1), KERNEL(3, 8),
    KERNEL(3, 7),  KERNEL(3, 6),  KERNEL(3, 5), KERNEL(3, 4),  KERNEL(3, 2), KERNEL(3, 1),
    KERNEL(4, 7),  KERNEL(4, 6),  KERNEL(4, 5), KERNEL(4, 4),  KERNEL(4, 2), KERNEL(4, 1),
};

/* The re-laid input of one image, padding included, is [ncb][hp][sx][wq][16]
 * (blocked) or [C][hp][sx][wq] (planar): each padded row is split by column
 * phase (column % stride), so the pixels one tap reads for neighbouring
 * outputs are neighbours at any stride, and no tap ever needs a bounds
 * check. */
typedef struct plan {
    const bd_conv_geom *g;
    const bd_epilogue *ep;
    float *y;
    const kernel *k;
    /* The last group's, where k's blocks do not divide the output's: the
     * same tile width over the blocks left (10 blocks of 16 channels as 4,
     * 4 and 2; only widths that divided them, as 2 and 1 for 10 or 1 for
     * 13, had held Inception-v3's and GoogLeNet's convs to narrow tiles
     * that wait on their loads); NULL where they divide. */
    const kernel *tail;
    int blocked;
    int64_t cb, ncb;      /* input channels per block, blocks */
    /* The conv's groups: input channel blocks per group (all of them for
     * one group) and the output channel groups of k (below) per group.
     * A grouped conv's output group sums over its own input blocks only. */
    int64_t cbg, per_group;
    /* A kernel one tap tall (wide) reads only every stride-th input row
     * (column): those alone are packed, ry (rx) apart, and the kernel then
     * steps sy (sx) packed rows (columns) per output. */
    int64_t ry, rx, sy, sx;
    int64_t hp, wp, wq;   /* packed rows and columns read, columns per phase */
    int64_t ps, rs, cs;   /* floats between pixels, rows, channels of a block */
    int64_t bs, img;      /* floats per channel block, per image */
    /* The kernel's taps, each with ps channels: blocked, a tap per block
     * and kernel position; planar, one per channel and kernel position, so
     * few channels still make a long loop. */
    int64_t ntaps;
    int64_t *toff;        /* tap offsets from a tile's first pixel */
    int64_t *col;         /* [wp]: where each padded column goes in a row */
    /* Each image's outputs run in units: its rows, or for a 1x1 kernel,
     * whose packed input has the output's own grid, runs of span outputs
     * across rows (flat), so tiles need not fit a row. */
    int flat;
    int64_t units, span, uin; /* units per image, outputs and packed floats per unit */
    int64_t ngroups;      /* output channel groups of k->bo blocks (the last group may be
                           * tail's, the last block partial) */
    int64_t gsize;        /* floats of packed weights per group */
    int64_t kchunk;       /* taps a chunk of the sum takes */
    float lo, hi;         /* the activation's clamp */
} plan;

/* Asks for the cache lines of [a, a + n floats) before they are read:
 * tensors of a batch are far larger than the caches, and the 16 channel
 * rows a tile reads are too many streams, too short, for the hardware
 * prefetchers to follow. */
static void prefetch(const float *a, int64_t n)
{
    const uintptr_t end = (uintptr_t)(a + n);
    for (uintptr_t l = (uintptr_t)a & ~(uintptr_t)63; l < end; l += 64)
        __builtin_prefetch((const void *)l, 0, 3);
}

/* Input rows are fetched this many rows ahead of packing them, weights
 * this many floats. */
enum { AHEAD = 3, AHEAD_W = 8 * VL };

/* Row r of input channel block cbk into its re-laid place, zero outside
 * the input; 16 columns at a time through a register transpose. */
static void pack_blocked_row(const plan *p, const float *x, int64_t cbk, int64_t r, float *dst)
{
    const bd_conv_geom *g = p->g;
    const int64_t iy = r * p->ry - g->pad_t, rx = p->rx;
    if (iy < 0 || iy >= g->h) {
        memset(dst, 0, (size_t)p->rs * sizeof *dst);
        return;
    }
    /* packed columns [c0, c1) hold input columns c * rx - pad_l */
    int64_t c0 = (g->pad_l + rx - 1) / rx, c1 = (g->pad_l + g->w + rx - 1) / rx;
    c0 = c0 < p->wp ? c0 : p->wp;
    c1 = c1 < p->wp ? c1 : p->wp;
    const __m512 zero = _mm512_setzero_ps();
    for (int64_t c = 0; c < c0; c++)
        _mm512_store_ps(dst + p->col[c], zero);
    for (int64_t c = c1; c < p->wp; c++)
        _mm512_store_ps(dst + p->col[c], zero);
    const int64_t plane = g->h * g->w, nch = g->c - cbk * VL < VL ? g->c - cbk * VL : VL;
    const float *src = x + cbk * VL * plane + iy * g->w;
    if (iy + AHEAD * p->ry < g->h)
        for (int64_t ch = 0; ch < nch; ch++)
            prefetch(src + ch * plane + AHEAD * p->ry * g->w, g->w);
    const __m512i every = _mm512_mullo_epi32(
        _mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0),
        _mm512_set1_epi32((int)rx));
    for (int64_t c = c0; c < c1; c += VL) {
        const int64_t n = c1 - c < VL ? c1 - c : VL;
        const __mmask16 mask = (__mmask16)((1u << n) - 1);
        const float *at = src + c * rx - g->pad_l;
        __m512 v[VL];
#pragma GCC unroll 16
        for (int ch = 0; ch < VL; ch++)
            v[ch] = ch >= nch ? zero
                    : rx == 1 ? _mm512_maskz_loadu_ps(mask, at + ch * plane)
                              : _mm512_mask_i32gather_ps(zero, mask, every, at + ch * plane, 4);
        bd_transpose16(v);
        /* unrolled with constant indices, so that v stays in registers: a
         * loop to n spilled all 16 vectors to the stack and read them back
         * (here a few percent of a layer's time at most; in
         * conv_depthwise.c's channel blocks a fifth) */
#pragma GCC unroll 16
        for (int k = 0; k < VL; k++)
            if (k < n)
                _mm512_store_ps(dst + p->col[c + k], v[k]);
    }
}

/* Row r of every input channel (planar layout). */
static void pack_planar_row(const plan *p, const float *x, int64_t r, float *dst)
{
    const bd_conv_geom *g = p->g;
    const int64_t iy = r * p->ry - g->pad_t;
    for (int64_t ch = 0; ch < g->c; ch++) {
        float *out = dst + ch * p->cs;
        if (iy < 0 || iy >= g->h) {
            memset(out, 0, (size_t)p->rs * sizeof *out);
            continue;
        }
        const float *src = x + (ch * g->h + iy) * g->w;
        for (int64_t c = 0; c < p->wp; c++) {
            int64_t ix = c * p->rx - g->pad_l;
            out[p->col[c]] = ix >= 0 && ix < g->w ? src[ix] : 0.0f;
        }
    }
}

/* Row r of channel block cbk of image x into that image's buffer. */
static void pack_row(const plan *p, const float *x, int64_t cbk, int64_t r, float *buf)
{
    if (p->blocked)
        pack_blocked_row(p, x, cbk, r, buf + cbk * p->bs + r * p->rs);
    else
        pack_planar_row(p, x, r, buf + r * p->rs);
}

/* The kernel of output channel group gi. */
static const kernel *group_kernel(const plan *p, int64_t gi)
{
    return p->tail && gi == p->ngroups - 1 ? p->tail : p->k;
}

/* The first of a chunk of nimg images' (group, image, unit) items, in that
 * order, at or past `work` output blocks times units from the start: a
 * group's items weigh its blocks, so that the threads' shares of a layer
 * whose last group is narrower weigh the same (160 channels as groups of
 * 4, 4 and 2 blocks had gone 72 to 48 block-units of Inception-v3's 7x1
 * layers at 12x12 when shared by count). */
static int64_t item_at(const plan *p, int64_t nimg, int64_t work)
{
    const int64_t per = nimg * p->units;
    for (int64_t gi = 0; gi < p->ngroups; gi++) {
        const int64_t bo = group_kernel(p, gi)->bo;
        if (work < bo * per)
            return gi * per + (work + bo - 1) / bo;
        work -= bo * per;
    }
    return p->ngroups * per;
}

/* The weights [M][C][kh][kw] of group gi into dst as [cbk][kh][kw][cb][bo][16],
 * zero past the last input and output channel. Each output block's 16 rows
 * are read 16 floats at a time and transposed in registers, so one output
 * channel's weights, contiguous in the model's layout, become the lanes. */
static void pack_group(const plan *p, const float *w, int64_t gi, float *dst)
{
    const bd_conv_geom *g = p->g;
    const int64_t taps = g->kh * g->kw, bo = group_kernel(p, gi)->bo, cb = p->cb;
    const int64_t cpg = g->c / g->group, row = cpg * taps;
    const __m512 zero = _mm512_setzero_ps();
    for (int64_t b = 0; b < bo; b++) {
        const int64_t m0 = (gi * p->k->bo + b) * VL, rows = g->m - m0 < VL ? g->m - m0 : VL;
        for (int64_t cbk = 0; cbk < p->cbg; cbk++) {
            const float *src = w + m0 * row + cbk * cb * taps;
            float *blk = dst + cbk * taps * cb * bo * VL + b * VL;
            const int64_t nch = cpg - cbk * cb < cb ? cpg - cbk * cb : cb, len = nch * taps;
            for (int64_t k0 = 0; k0 < len; k0 += VL) {
                const int64_t n = len - k0 < VL ? len - k0 : VL;
                const __mmask16 mask = (__mmask16)((1u << n) - 1);
                const int ahead = cbk * cb * taps + k0 + AHEAD_W < row;
                __m512 v[VL];
#pragma GCC unroll 16
                for (int r = 0; r < VL; r++) {
                    if (r >= rows) {
                        v[r] = zero;
                        continue;
                    }
                    if (ahead)
                        __builtin_prefetch(src + r * row + k0 + AHEAD_W);
                    v[r] = _mm512_maskz_loadu_ps(mask, src + r * row + k0);
                }
                bd_transpose16(v);
                int64_t ci = k0 / taps, t = k0 % taps;
#pragma GCC unroll 16
                for (int j = 0; j < VL; j++) {
                    if (j >= n)
                        break;
                    _mm512_store_ps(blk + (t * cb + ci) * bo * VL, v[j]);
                    if (++t == taps) {
                        t = 0;
                        ci++;
                    }
                }
            }
            for (int64_t ci = nch; ci < cb; ci++)
                for (int64_t t = 0; t < taps; t++)
                    _mm512_store_ps(blk + (t * cb + ci) * bo * VL, zero);
        }
    }
}

/* acc[bo][pw], the tile whose first output is y[at], channel m0 (pw pixels
 * along a plane, bo blocks of 16 channels from there): scale and shift
 * while channels are the lanes, then a transpose makes each channel's
 * pixels one vector for the residual, the clamp and a masked store into
 * NCHW. An instance per tile width, and each optional step tested once a
 * block: a single body for every width, testing each step per vector,
 * took 11% of a 16 -> 64 3x3 layer's time at 55x55 under perf (one
 * thread, tiles of 28 sums over 144 steps); this one takes 9%, the rest
 * being the transposes. */
static inline __attribute__((always_inline)) void
store_body(const plan *p, int bo, int64_t m0, int64_t at, const __m512 *acc, const int pw)
{
    const bd_conv_geom *g = p->g;
    const bd_epilogue *ep = p->ep;
    const __mmask16 mask = (__mmask16)((1u << pw) - 1);
    const __m512 lo = _mm512_set1_ps(p->lo), hi = _mm512_set1_ps(p->hi);
    const int64_t ohw = g->oh * g->ow;
    const int scaled = ep && ep->scale, clamp_hi = p->hi < INFINITY;
    const float *res = ep ? ep->residual : NULL;
    for (int b = 0; b < bo; b++) {
        const int64_t m = m0 + b * VL, real = g->m - m < VL ? g->m - m : VL;
        if (real <= 0)
            break;
        const __mmask16 chans = bd_lanes(0, real);
        const __m512 sh = ep && ep->shift ? _mm512_maskz_loadu_ps(chans, ep->shift + m)
                                          : _mm512_setzero_ps();
        /* a product and a sum, each rounded, as bd_epilogue_apply and an
         * unfused BatchNormalization compute them: fused or not, a model
         * gives the same bits (a product by 1 changes none) */
        __m512 v[VL];
#pragma GCC unroll 16
        for (int q = 0; q < VL; q++)
            v[q] = q < pw ? acc[b * pw + q] : _mm512_setzero_ps();
        if (scaled) {
            const __m512 sc = _mm512_maskz_loadu_ps(chans, ep->scale + m);
#pragma GCC unroll 16
            for (int q = 0; q < pw; q++)
                v[q] = _mm512_mul_ps(v[q], sc);
        }
#pragma GCC unroll 16
        for (int q = 0; q < pw; q++)
            v[q] = _mm512_add_ps(v[q], sh);
        bd_transpose16(v);
        float *out = p->y + at + b * VL * ohw;
        if (res)
#pragma GCC unroll 16
            for (int c = 0; c < VL; c++)
                if (c < real)
                    v[c] = _mm512_add_ps(
                        v[c], _mm512_maskz_loadu_ps(mask, res + (out - p->y) + c * ohw));
        /* the result of max is never NaN, so a min with +inf changes nothing */
#pragma GCC unroll 16
        for (int c = 0; c < VL; c++)
            v[c] = _mm512_max_ps(v[c], lo);
        if (clamp_hi)
#pragma GCC unroll 16
            for (int c = 0; c < VL; c++)
                v[c] = _mm512_min_ps(v[c], hi);
        if (bd_epilogue_has_function(ep))
#pragma GCC unroll 16
            for (int c = 0; c < VL; c++)
                v[c] = bd_activation_vec(ep, v[c]);
        if (real == VL) {
#pragma GCC unroll 16
            for (int c = 0; c < VL; c++)
                _mm512_mask_storeu_ps(out + c * ohw, mask, v[c]);
        } else {
#pragma GCC unroll 16
            for (int c = 0; c < VL; c++)
                if (c < real)
                    _mm512_mask_storeu_ps(out + c * ohw, mask, v[c]);
        }
    }
}

typedef void (*store_fn)(const plan *p, int bo, int64_t m0, int64_t at, const __m512 *acc);

#define STORE(PW)                                                                                \
    static void store_##PW(const plan *p, int bo, int64_t m0, int64_t at, const __m512 *acc)   \
    {                                                                                            \
        store_body(p, bo, m0, at, acc, PW);                                                      \
    }
STORE(16) STORE(14) STORE(8) STORE(7) STORE(6) STORE(5) STORE(4) STORE(2) STORE(1)

/* The instance for kernel k's tile width. */
static store_fn store_of(const kernel *k)
{
    switch (k->pw) {
    case 16: return store_16;
    case 14: return store_14;
    case 8: return store_8;
    case 7: return store_7;
    case 6: return store_6;
    case 5: return store_5;
    case 4: return store_4;
    case 2: return store_2;
    default: return store_1;
    }
}

/* Taps [t0, t0 + n) of unit u (an output row, or a run of a flat image) of
 * group gi of image i, whose re-laid input is buf, with the group's packed
 * weights w: each tile's sums go to acc, step vectors further for each
 * tile (0: one place for all), continuing from those there unless t0 is
 * 0; the last taps store the tiles through the epilogue. The last tile of
 * a unit that pw does not divide is moved left to end at the unit's end,
 * recomputing a few pixels rather than needing another kernel; in a flat
 * image it may reach back into the unit before. */
static void conv_unit(const plan *p, const float *buf, const float *w, int64_t i, int64_t gi,
                      int64_t u, int64_t t0, int64_t n, __m512 *acc, int64_t step)
{
    const bd_conv_geom *g = p->g;
    const kernel *k = group_kernel(p, gi);
    const int64_t ohw = g->oh * g->ow, first = u * p->span, m0 = gi * p->k->bo * VL;
    const int64_t len = ohw - first < p->span ? ohw - first : p->span;
    const int64_t at = (i * g->m + m0) * ohw + first;
    const int64_t mine = g->m - m0, chans = mine < k->bo * VL ? mine : k->bo * VL;
    const int end = t0 + n == p->ntaps;
    /* the next unit's residual; asking for its output lines as well (for
     * writing) cost 3% of a 16 -> 64 3x3 layer at 55x55 and gained nothing
     * measurable on whole models at batch 1 or 16 (Xeon, 2026-12-06) */
    if (end && first + len < ohw && p->ep && p->ep->residual)
        for (int64_t c = 0; c < chans; c++)
            prefetch(p->ep->residual + at + len + c * ohw, p->span);
    const float *in = buf + gi / p->per_group * p->cbg * p->bs + u * p->uin;
    const float *wt = w + t0 * p->ps * k->bo * VL;
    const store_fn store = store_of(k);
    for (int64_t ox = 0; ox < len; ox += k->pw, acc += step) {
        const int64_t x0 = ox + k->pw <= len ? ox : len - k->pw;
        k->fn[!p->blocked](in + x0 * p->ps, p->toff + t0, n, wt, acc, t0 > 0);
        if (end)
            store(p, k->bo, m0, at + x0, acc);
    }
}

/* Units [u0, u1) of group gi of image i. Where a group's weights are
 * larger than a chunk (deep layers: 1.2 MB for ResNet-50's 512 -> 512 3x3
 * in 4-block groups), the sum goes a chunk of taps at a time over a run
 * of units, each tile's sums kept in accs between chunks, so that the
 * chunk's weights stay in L1 while every unit of the run reads them.
 * Read whole for each unit, they came from L2 or beyond. While a chunk
 * runs, the next one (the next group's first where next is not NULL) is
 * fetched into L2 a share per unit: in a whole model the weights of the
 * deep layers come from memory, and the first unit of each chunk had
 * waited on them (ResNet-18's 512 -> 512 3x3 layers at 7x7 2.33 -> 2.07
 * ms, its 256 -> 256 ones at 14x14 1.69 -> 1.58, one thread on the Xeon;
 * the same layer alone, its weights in L3, ran 1.63). */
static void conv_units(const plan *p, const float *buf, const float *w, const float *next,
                       int64_t i, int64_t gi, int64_t u0, int64_t u1, __m512 *accs)
{
    const kernel *k = group_kernel(p, gi);
    const int64_t tile = k->bo * k->pw, per_unit = (p->span + k->pw - 1) / k->pw * tile;
    /* a unit whose sums outgrow accs (rows over 500 wide) is summed whole */
    if (p->kchunk >= p->ntaps || u1 - u0 < 2 || per_unit > RUN_ACC) {
        __m512 acc[MAXACC];
        for (int64_t u = u0; u < u1; u++)
            conv_unit(p, buf, w, i, gi, u, 0, p->ntaps, acc, 0);
        return;
    }
    const int64_t run = RUN_ACC / per_unit, step = p->ps * k->bo * VL;
    for (int64_t ua = u0; ua < u1; ua += run) {
        const int64_t ub = u1 - ua < run ? u1 : ua + run;
        for (int64_t t0 = 0; t0 < p->ntaps; t0 += p->kchunk) {
            const int64_t n = p->ntaps - t0 < p->kchunk ? p->ntaps - t0 : p->kchunk;
            /* the next chunk of this group (perhaps a partial one), else at
             * most a chunk of the next group's */
            const int64_t t1 = t0 + n;
            const int64_t later = p->ntaps - t1 < p->kchunk ? p->ntaps - t1 : p->kchunk;
            const char *ahead = (const char *)(t1 < p->ntaps ? w + t1 * step : next);
            const int64_t floats = t1 < p->ntaps ? later * step : CHUNK_W;
            const int64_t lines = (floats * (int64_t)sizeof(float) + 63) / 64;
            for (int64_t u = ua; u < ub; u++) {
                if (ahead)
                    for (int64_t l = (u - ua) * lines / (ub - ua);
                         l < (u - ua + 1) * lines / (ub - ua); l++)
                        __builtin_prefetch(ahead + l * 64, 0, 2);
                conv_unit(p, buf, w, i, gi, u, t0, n, accs + (u - ua) * per_unit, tile);
            }
        }
    }
}

/* Estimated cost of a kernel on this layer, in cycles up to a constant: the
 * inner step takes bo*pw FMAs and bo + pw + 1 loads; on 16-channel blocks,
 * narrow tiles take longer than that, about 5 / pw cycles more a step.
 * Without that excess, 2x4 tiles had been picked for Inception-v3's 80 ->
 * 192 3x3 layer at 52x52 (4.9 ms; 3.7 with 2x14). A larger one (2 + 8 /
 * pw, from a 2x4 tile's 12 cycles a step for 8 FMAs) had kept tiles of
 * 14 on its 25x25 layers, whose rows 5 divides: 96 -> 96 3x3 1.02 ms with
 * 2x14, 0.93 with 3x5; 64 -> 96 0.69 and 0.63 (one thread, each kernel
 * forced in turn on 24 layer shapes of the zoo, the excess fitted to pick
 * the fastest). Planar first layers measured no such excess (AlexNet's
 * 11x11/4: 4x5 tiles 0.72 ms, 2x14 0.82). Every tile pays its epilogue,
 * and partial tiles pay for their overlap. */
static double kernel_cost(const bd_conv_geom *g, int flat, int blocked, int64_t taps,
                          const kernel *k)
{
    const int64_t tiles = flat ? (g->oh * g->ow + k->pw - 1) / k->pw
                               : g->oh * ((g->ow + k->pw - 1) / k->pw);
    const int64_t fma = k->bo * k->pw, loads = k->bo + k->pw + 1;
    const double step = (double)(fma > loads ? fma : loads) + (blocked ? 5.0 / k->pw : 0);
    return (double)tiles * (taps * step + 40.0 * k->bo);
}

/* The kernel of bo blocks and tile width pw; NULL if there is none. */
static const kernel *find_kernel(int bo, int pw)
{
    for (size_t j = 0; j < sizeof kernels / sizeof kernels[0]; j++)
        if (kernels[j].bo == bo && kernels[j].pw == pw)
            return &kernels[j];
    return NULL;
}

/* The cheapest kernel, with *tail the last group's (NULL: none). */
static const kernel *choose_kernel(const bd_conv_geom *g, int flat, int blocked, int64_t taps,
                                   const kernel **tail)
{
    const kernel *best = NULL;
    double best_cost = 0;
    const int64_t blocks = (g->m + VL - 1) / VL;
    /* a grouped conv's groups of output blocks may not straddle its groups */
    const int64_t per = g->group > 1 ? blocks / g->group : 0;
    for (size_t j = 0; j < sizeof kernels / sizeof kernels[0]; j++) {
        const kernel *k = &kernels[j];
        const kernel *t = blocks % k->bo ? find_kernel((int)(blocks % k->bo), k->pw) : NULL;
        if ((blocks % k->bo && !t) || (per && per % k->bo) ||
            k->pw > (flat ? g->oh * g->ow : g->ow))
            continue;
        double cost = (double)(blocks / k->bo) * kernel_cost(g, flat, blocked, taps, k);
        if (t)
            cost += kernel_cost(g, flat, blocked, taps, t);
        if (!best || cost < best_cost) {
            best = k;
            *tail = t;
            best_cost = cost;
        }
    }
    return best;
}

static void plan_init(plan *p, const bd_conv_geom *g, const bd_epilogue *ep, float *y)
{
    memset(p, 0, sizeof *p);
    p->g = g;
    p->ep = ep;
    p->y = y;
    p->blocked = g->c >= VL;
    p->cb = p->blocked ? VL : g->c;
    p->ncb = (g->c + p->cb - 1) / p->cb;
    p->ry = g->kh == 1 ? g->sh : 1;
    p->rx = g->kw == 1 ? g->sw : 1;
    p->sy = g->sh / p->ry;
    p->sx = g->sw / p->rx;
    p->hp = (g->oh - 1) * p->sy + (g->kh - 1) * g->dh + 1;
    p->wp = (g->ow - 1) * p->sx + (g->kw - 1) * g->dw + 1;
    p->wq = (p->wp + p->sx - 1) / p->sx;
    p->ps = p->blocked ? VL : 1;
    p->rs = p->sx * p->wq * p->ps;
    p->cs = p->blocked ? 1 : p->hp * p->rs;
    p->bs = p->blocked ? p->hp * p->rs : g->c * p->cs;
    p->img = p->ncb * p->bs;
    p->cbg = p->ncb / g->group;
    p->ntaps = p->cbg * g->kh * g->kw * (p->blocked ? 1 : g->c);
    p->flat = g->kh == 1 && g->kw == 1;
    p->k = choose_kernel(g, p->flat, p->blocked, p->ntaps * p->ps, &p->tail);
    if (p->flat) {
        /* units of about a row's worth of whole tiles */
        const int64_t pw = p->k->pw, tiles = (g->ow + pw / 2) / pw;
        p->span = pw * (tiles > 1 ? tiles : 1);
        p->uin = p->span * p->ps;
    } else {
        p->span = g->ow;
        p->uin = p->sy * p->rs;
    }
    p->units = (g->oh * g->ow + p->span - 1) / p->span;
    p->ngroups = ((g->m + VL - 1) / VL + p->k->bo - 1) / p->k->bo;
    p->per_group = p->ngroups / g->group;
    p->gsize = p->ntaps * p->ps * p->k->bo * VL;
    p->kchunk = CHUNK_W / (p->ps * p->k->bo * VL);
    p->kchunk = p->kchunk > 1 ? p->kchunk : 1;
    bd_epilogue_clamp(ep, &p->lo, &p->hi);
}

/* Tap offsets in the order pack_group lays the weights out: channel block,
 * kernel row, kernel column, then (planar) channel. */
static void plan_offsets(plan *p)
{
    const bd_conv_geom *g = p->g;
    const int64_t per = p->blocked ? 1 : g->c;
    for (int64_t cbk = 0, t = 0; cbk < p->cbg; cbk++)
        for (int64_t ki = 0; ki < g->kh; ki++)
            for (int64_t kj = 0; kj < g->kw; kj++) {
                const int64_t col = kj * g->dw;
                const int64_t at = cbk * p->bs + ki * g->dh * p->rs +
                                   (col % p->sx * p->wq + col / p->sx) * p->ps;
                for (int64_t ci = 0; ci < per; ci++)
                    p->toff[t++] = at + ci * p->cs;
            }
    for (int64_t c = 0; c < p->wp; c++)
        p->col[c] = (c % p->sx * p->wq + c / p->sx) * p->ps;
}

/* Scratch memory kept from one call to the next: allocations of a few
 * megabytes come fresh from mmap, and faulting their pages in again on
 * every call cost more than the convolution itself on small layers. One
 * call at a time holds it; a concurrent one allocates its own. */
static atomic_flag scratch_busy = ATOMIC_FLAG_INIT;
static void *scratch;
static size_t scratch_size;

static void *scratch_take(size_t bytes, int *kept)
{
    if (!atomic_flag_test_and_set_explicit(&scratch_busy, memory_order_acquire)) {
        if (scratch_size < bytes) {
            free(scratch);
            scratch = aligned_alloc(64, bytes);
            scratch_size = scratch ? bytes : 0;
        }
        if (scratch) {
            *kept = 1;
            return scratch;
        }
        atomic_flag_clear_explicit(&scratch_busy, memory_order_release);
    }
    *kept = 0;
    return aligned_alloc(64, bytes);
}

static void scratch_give(void *mem, int kept)
{
    if (kept)
        atomic_flag_clear_explicit(&scratch_busy, memory_order_release);
    else
        free(mem);
}

/* Bytes of n items of the given size, rounded up to whole cache lines. */
static size_t lines(int64_t n, size_t size) { return ((size_t)n * size + 63) / 64 * 64; }

/* Most bytes of re-laid input held at once when every thread works on
 * every image: larger batches go through in chunks of images. */
enum { CHUNK_BYTES = 8 << 20 };

size_t bd_conv_direct_packed_floats(const bd_conv_geom *g)
{
    if (!bd_conv_direct_supported(g))
        return 0;
    plan p;
    plan_init(&p, g, NULL, NULL);
    return (size_t)(p.ngroups * p.gsize);
}

void bd_conv_direct_pack(const bd_conv_geom *g, const float *w, float *dst)
{
    plan p;
    plan_init(&p, g, NULL, NULL);
#pragma omp parallel for schedule(static) if (p.ngroups * p.gsize > 65536)
    for (int64_t gi = 0; gi < p.ngroups; gi++)
        pack_group(&p, w, gi, dst + gi * p.gsize);
}

bd_status bd_conv_direct(const bd_conv_geom *g, const float *x, const float *w,
                         const float *packed, const bd_epilogue *ep, float *y)
{
    if (!bd_conv_direct_supported(g))
        return bd_fail(BD_EUNSUPPORTED,
                       "the direct convolution needs AVX-512, and one group or groups of "
                       "whole 16-channel blocks");
    if (g->n == 0)
        return BD_OK;
    plan p;
    plan_init(&p, g, ep, y);
    const int threads = omp_get_max_threads();
    const int64_t ngroups = p.ngroups, ncb = p.ncb, hp = p.hp;
    const int64_t rows = p.blocked ? ncb * hp : hp, chw = g->c * g->h * g->w;
    /* Two orders. Per image: each thread takes whole images, re-lays one
     * at a time in a buffer of its own and runs every group over it, from
     * weights all packed beforehand. Group-major: all the threads re-lay a
     * chunk of images together, then share its groups and units, each
     * packing the weights of the group at hand into a buffer of its own
     * that stays in its cache for every unit of the chunk, so that large
     * weights (deep layers) are read once and their packed copy never goes
     * out to memory. Per image where the images split evenly over the
     * threads, unless a group's weights outweigh an image's input;
     * group-major otherwise. (Running every group over one unit at a time
     * from weights all packed beforehand measured no faster than
     * group-major at batch 1, even where those weights fit in L2.) */
    const int per_image = g->n >= 2 * threads && (g->n % threads == 0 || g->n >= 8 * threads) &&
                          p.gsize <= p.img;
    int64_t chunk = CHUNK_BYTES / (p.img * (int64_t)sizeof(float));
    chunk = chunk < 1 ? 1 : chunk > g->n ? g->n : chunk;
    const size_t offs = lines(p.ntaps + p.wp, sizeof *p.toff);
    const size_t wbytes =
        packed ? 0 : lines((per_image ? ngroups : threads) * p.gsize, sizeof(float));
    const size_t xbytes = lines((per_image ? threads : chunk) * p.img, sizeof(float));
    const size_t abytes = p.kchunk < p.ntaps ? (size_t)threads * RUN_ACC * sizeof(__m512) : 0;
    int kept;
    char *mem = scratch_take(offs + wbytes + xbytes + abytes, &kept);
    if (!mem)
        return bd_fail(BD_ENOMEM, "out of memory for a direct convolution's buffers");
    p.toff = (int64_t *)mem;
    p.col = p.toff + p.ntaps;
    float *wt = (float *)(mem + offs), *xb = (float *)(mem + offs + wbytes);
    __m512 *accs = (__m512 *)(mem + offs + wbytes + xbytes);
    plan_offsets(&p);
#pragma omp parallel num_threads(threads)
    {
        const int me = omp_get_thread_num(), team = omp_get_num_threads();
        __m512 *mine_acc = abytes ? accs + (int64_t)me * RUN_ACC : NULL;
        if (per_image) {
            float *buf = xb + me * p.img;
            const float *all = packed ? packed : wt;
            if (!packed) {
#pragma omp for schedule(static)
                for (int64_t gi = 0; gi < ngroups; gi++)
                    pack_group(&p, w, gi, wt + gi * p.gsize);
            }
#pragma omp for schedule(dynamic)
            for (int64_t i = 0; i < g->n; i++) {
                for (int64_t r = 0; r < rows; r++)
                    pack_row(&p, x + i * chw, r / hp, r % hp, buf);
                for (int64_t gi = 0; gi < ngroups; gi++)
                    conv_units(&p, buf, all + gi * p.gsize,
                               gi + 1 < ngroups ? all + (gi + 1) * p.gsize : NULL, i, gi, 0,
                               p.units, mine_acc);
            }
        } else {
            float *mine = wt + me * p.gsize;
            int64_t have = -1;
            for (int64_t i0 = 0; i0 < g->n; i0 += chunk) {
                const int64_t nimg = g->n - i0 < chunk ? g->n - i0 : chunk;
#pragma omp for schedule(static)
                for (int64_t j = 0; j < nimg * rows; j++)
                    pack_row(&p, x + (i0 + j / rows) * chw, j % rows / hp, j % hp,
                             xb + j / rows * p.img);
                /* each thread an even share of the chunk's (group, image,
                 * unit) items, in that order, as runs of units */
                const int64_t work = (g->m + VL - 1) / VL * nimg * p.units;
                for (int64_t j = item_at(&p, nimg, me * work / team),
                             j1 = item_at(&p, nimg, (me + 1) * work / team);
                     j < j1;) {
                    const int64_t gi = j / (nimg * p.units), i = j / p.units % nimg;
                    const int64_t u = j % p.units, ue = p.units - u < j1 - j ? p.units : u + j1 - j;
                    if (!packed && gi != have)
                        pack_group(&p, w, have = gi, mine);
                    conv_units(&p, xb + i * p.img, packed ? packed + gi * p.gsize : mine,
                               packed && gi + 1 < ngroups ? packed + (gi + 1) * p.gsize : NULL,
                               i0 + i, gi, u, ue, mine_acc);
                    j += ue - u;
                }
#pragma omp barrier
            }
        }
    }
    scratch_give(mem, kept);
    return BD_OK;
}

/* Measured against bd_conv2d's GEMM lowerings (OpenBLAS 0.3.21 with its
 * AVX-512 kernels), 2 threads on a Zen 5, every conv shape of ResNet-18,
 * ResNet-50 and MobileNetV2 at 224x224 batch 1 and of the Fashion-MNIST
 * ResNet at batch 256: the direct kernel was faster on all of them but a
 * few pointwise layers where it tied within 10%; 3x3 layers 1.4 to 3
 * times, 7x7 and few-channel first layers 1.5 to 14 times. So every shape
 * it supports takes it, where bd_conv2d does not pick a kernel written for
 * the shape (conv_pointwise.h, conv_planes.h) first. */
int bd_conv_direct_preferred(const bd_conv_geom *g) { return bd_conv_direct_supported(g); }

#else

int bd_conv_direct_available(void) { return 0; }

int bd_conv_direct_supported(const bd_conv_geom *g)
{
    (void)g;
    return 0;
}

int bd_conv_direct_preferred(const bd_conv_geom *g)
{
    (void)g;
    return 0;
}

size_t bd_conv_direct_packed_floats(const bd_conv_geom *g)
{
    (void)g;
    return 0;
}

void bd_conv_direct_pack(const bd_conv_geom *g, const float *w, float *dst)
{
    (void)g;
    (void)w;
    (void)dst;
}

bd_status bd_conv_direct(const bd_conv_geom *g, const float *x, const float *w,
                         const float *packed, const bd_epilogue *ep, float *y)
{
    (void)g;
    (void)x;
    (void)w;
    (void)packed;
    (void)ep;
    (void)y;
    return bd_fail(BD_EUNSUPPORTED, "the direct convolution is not available: built without "
                                    "AVX-512");
}

#endif
