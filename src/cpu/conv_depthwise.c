#include "conv_depthwise.h"

#include <stdlib.h>
#include <string.h>

#ifdef __AVX512F__
#include <immintrin.h>

#include "bordered.h"
#include "avx512.h"
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

/* Blocks of 16 outputs summed side by side, taken in row order across rows:
 * one block alone is a chain of kh*kw dependent multiply-adds, and a plane
 * of a late layer is rows of one block each. */
enum { NB = 4 };

/* The 16 floats s (0..6) on from the start of cur, of cur and next after
 * it: one shuffle instead of a load across two cache lines. */
static inline __attribute__((always_inline)) __m512 shifted(__m512 cur, __m512 next, int s)
{
    const __m512i c = _mm512_castps_si512(cur), n = _mm512_castps_si512(next);
    switch (s) {
    case 1: return _mm512_castsi512_ps(_mm512_alignr_epi32(n, c, 1));
    case 2: return _mm512_castsi512_ps(_mm512_alignr_epi32(n, c, 2));
    case 3: return _mm512_castsi512_ps(_mm512_alignr_epi32(n, c, 3));
    case 4: return _mm512_castsi512_ps(_mm512_alignr_epi32(n, c, 4));
    case 5: return _mm512_castsi512_ps(_mm512_alignr_epi32(n, c, 5));
    case 6: return _mm512_castsi512_ps(_mm512_alignr_epi32(n, c, 6));
    default: return cur;
    }
}

/* Channel c's epilogue, every lane the same: scale, shift and clamp. */
typedef struct channel_epilogue {
    __m512 a, sh, lo, hi;
} channel_epilogue;

static inline __attribute__((always_inline)) channel_epilogue
channel_epilogue_of(const bd_epilogue *ep, int64_t c)
{
    float lo, hi;
    bd_epilogue_clamp(ep, &lo, &hi);
    return (channel_epilogue){.a = _mm512_set1_ps(ep && ep->scale ? ep->scale[c] : 1.0f),
                              .sh = _mm512_set1_ps(ep && ep->shift ? ep->shift[c] : 0.0f),
                              .lo = _mm512_set1_ps(lo),
                              .hi = _mm512_set1_ps(hi)};
}

/* acc through ep and the residual at res (lanes mk), stored at y. */
static inline __attribute__((always_inline)) void
store_channel(const bd_epilogue *ep, const channel_epilogue *e, __m512 acc, const float *res,
              __mmask16 mk, float *y)
{
    _mm512_mask_storeu_ps(y, mk, bd_activation_vec(ep, bd_epilogue_vec(acc, e->a, e->sh, res, mk,
                                                                      e->lo, e->hi)));
}

/* One channel from its bordered plane. Taps are summed in channel_by_taps's
 * order (a padded tap adds w * 0) by fused multiply-adds: one rounding per
 * tap where it has two, so the two paths agree to a float's rounding, not
 * bit for bit. KH, KW, DW and SW are constants in the common instances, so
 * the tap loop unrolls and the weights stay in registers; there (SHIFTS)
 * each tap row is loaded aligned once and shifted for its taps. */
static inline __attribute__((always_inline)) void
channel_body(const bd_conv_geom *g, bd_bordered b, const float *buf, const float *w,
             const bd_epilogue *ep, int64_t c, const float *res, float *y, const int KH,
             const int KW, const int DW, const int SW, const int SHIFTS)
{
    const channel_epilogue e = channel_epilogue_of(ep, c);
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
    const __mmask16 tail = bd_lanes(0, g->ow - (nblk - 1) * VL);
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
        if (SHIFTS) {
            /* every block starts a whole vector into its bordered row, so a
             * tap row's vectors load aligned and its taps are shifts of
             * them (constants here: KW <= 7, DW 1) */
#pragma GCC unroll 7
            for (int ki = 0; ki < KH && ki < 7; ki++) {
                __m512 cur[NB][2], next[NB][2];
#pragma GCC unroll 4
                for (int k = 0; k < NB; k++)
#pragma GCC unroll 2
                    for (int ph = 0; ph < SW && ph < 2; ph++) {
                        const float *at = buf + in[k] + ki * g->dh * b.stride + ph * b.wq;
                        cur[k][ph] = _mm512_load_ps(at);
                        next[k][ph] = _mm512_load_ps(at + VL);
                    }
#pragma GCC unroll 7
                for (int kj = 0; kj < KW && kj < 7; kj++)
#pragma GCC unroll 4
                    for (int k = 0; k < NB; k++)
                        acc[k] = _mm512_fmadd_ps(wv[ki * KW + kj],
                                                 shifted(cur[k][kj % SW % 2], next[k][kj % SW % 2],
                                                         kj / SW),
                                                 acc[k]);
            }
        } else {
#pragma GCC unroll 49
            for (int t = 0; t < taps; t++)
#pragma GCC unroll 4
                for (int k = 0; k < NB; k++)
                    acc[k] = _mm512_fmadd_ps(wv[t], _mm512_loadu_ps(buf + in[k] + tap[t]),
                                             acc[k]);
        }
#pragma GCC unroll 4
        for (int k = 0; k < NB; k++)
            store_channel(ep, &e, acc[k], res ? res + out[k] : NULL, mk[k], y + out[k]);
    }
}

typedef void (*channel_fn)(const bd_conv_geom *g, bd_bordered b, const float *buf, const float *w,
                           const bd_epilogue *ep, int64_t c, const float *res, float *y);

/* A 3x3 kernel's weights, each in every lane. */
static inline __attribute__((always_inline)) void broadcast_3x3(const float *w, __m512 *wv)
{
#pragma GCC unroll 9
    for (int t = 0; t < 9; t++)
        wv[t] = _mm512_set1_ps(w[t]);
}

/* Output rows summed together by rows_3x3_s1. */
enum { ROWS = 4 };

/* A 3x3 kernel at stride 1 both ways (dilation 1) over planes at least ROWS tall:
 * ROWS output rows of one block at a time, so each bordered input row is
 * loaded and shifted once for the three output rows that read it, where
 * channel_body loads and shifts it for each (a 144-channel 56x56 layer:
 * 223 -> 186 us, 28x28 and 112x112 ones a fifth faster too). Each output
 * sums its taps in channel_body's order, so the bits are the same. Larger
 * kernels measured slower this way (5x5) or no faster (7x7): their 25 or
 * 49 weights no longer fit in registers beside the sums and shifts. */
static void rows_3x3_s1(const bd_conv_geom *g, bd_bordered b, const float *buf, const float *w,
                        const bd_epilogue *ep, int64_t c, const float *res, float *y)
{
    const channel_epilogue e = channel_epilogue_of(ep, c);
    __m512 wv[9];
    broadcast_3x3(w, wv);
    const int64_t nblk = (g->ow + VL - 1) / VL;
    const __mmask16 tail = bd_lanes(0, g->ow - (nblk - 1) * VL);
    for (int64_t oy0 = 0; oy0 < g->oh; oy0 += ROWS) {
        /* the last rows may overlap the ones before: the same values again */
        const int64_t oy = oy0 + ROWS <= g->oh ? oy0 : g->oh - ROWS;
        for (int64_t bk = 0; bk < nblk; bk++) {
            __m512 acc[ROWS];
#pragma GCC unroll 4
            for (int r = 0; r < ROWS; r++)
                acc[r] = _mm512_setzero_ps();
            /* input row oy + i feeds output row oy + r through kernel row i - r */
#pragma GCC unroll 6
            for (int i = 0; i < ROWS + 2; i++) {
                const float *at = buf + (oy + i) * b.stride + bk * VL;
                const __m512 cur = _mm512_load_ps(at), next = _mm512_load_ps(at + VL);
                const __m512 sv[3] = {cur, shifted(cur, next, 1), shifted(cur, next, 2)};
#pragma GCC unroll 4
                for (int r = 0; r < ROWS; r++)
                    if (i - r >= 0 && i - r < 3)
#pragma GCC unroll 3
                        for (int kj = 0; kj < 3; kj++)
                            acc[r] = _mm512_fmadd_ps(wv[(i - r) * 3 + kj], sv[kj], acc[r]);
            }
            const __mmask16 mk = bk == nblk - 1 ? tail : (__mmask16)0xffff;
#pragma GCC unroll 4
            for (int r = 0; r < ROWS; r++) {
                const int64_t out = (oy + r) * g->ow + bk * VL;
                store_channel(ep, &e, acc[r], res ? res + out : NULL, mk, y + out);
            }
        }
    }
}

/* A 3x3 kernel at stride 2 both ways (dilation 1), read from the plane as
 * it lies, without a bordered copy: NB blocks of 16 outputs of a row side
 * by side, each kernel row's 33 input columns loaded once (lanes outside
 * the plane masked to zero) and split into the even and odd ones, the
 * third tap the even ones shifted by one. The copy had been a pass of its
 * own over a plane that comes from L3 or memory at this size, which the
 * arithmetic could not overlap (one thread on the Xeon: 96 channels at
 * 112x112 0.423 -> 0.259 ms, 144 at 56x56 0.111 -> 0.096, 240 at 56x56
 * 0.202 -> 0.155). Rows outside the plane are zero vectors, not loaded,
 * so the multiply-adds are channel_body's, in its order: the same bits. */
static void rows_3x3_s2(const bd_conv_geom *g, const float *x, const float *w,
                        const bd_epilogue *ep, int64_t c, const float *res, float *y)
{
    const channel_epilogue e = channel_epilogue_of(ep, c);
    __m512 wv[9];
    broadcast_3x3(w, wv);
    const __m512i even = _mm512_set_epi32(30, 28, 26, 24, 22, 20, 18, 16, 14, 12, 10, 8, 6, 4,
                                          2, 0);
    const __m512i odd = _mm512_add_epi32(even, _mm512_set1_epi32(1));
    const __m512i width = _mm512_set1_epi32((int)g->w);
    const int64_t nblk = (g->ow + VL - 1) / VL, items = g->oh * nblk;
    const __mmask16 tail = bd_lanes(0, g->ow - (nblk - 1) * VL);
    /* blocks in row order across rows, as channel_body takes them */
    for (int64_t j = 0; j < items; j += NB) {
        __m512 acc[NB];
        __mmask16 m[NB][3];
        int64_t col[NB], out[NB], iy0[NB];
        __mmask16 keep[NB];
#pragma GCC unroll 4
        for (int k = 0; k < NB; k++) {
            acc[k] = _mm512_setzero_ps();
            /* past the last block: masked off, nothing loaded or stored */
            const int64_t at = j + k < items ? j + k : items - 1, oy = at / nblk, bk = at % nblk;
            col[k] = 2 * bk * VL - g->pad_l;
            iy0[k] = oy * 2 - g->pad_t;
            out[k] = oy * g->ow + bk * VL;
            keep[k] = j + k >= items ? 0 : bk == nblk - 1 ? tail : (__mmask16)0xffff;
            const __m512i cols = _mm512_add_epi32(bd_iota(), _mm512_set1_epi32((int)col[k]));
            const __mmask16 live = j + k < items ? 0xffff : 0;
            m[k][0] = live & bd_lanes_within(cols, width);
            m[k][1] = live & bd_lanes_within(_mm512_add_epi32(cols, _mm512_set1_epi32(VL)), width);
            m[k][2] = live & 1 &
                      bd_lanes_within(_mm512_add_epi32(cols, _mm512_set1_epi32(2 * VL)), width);
        }
#pragma GCC unroll 3
        for (int ki = 0; ki < 3; ki++)
#pragma GCC unroll 4
            for (int k = 0; k < NB; k++) {
                const int64_t iy = iy0[k] + ki;
                const __mmask16 inside = iy >= 0 && iy < g->h ? 0xffff : 0;
                const float *at = x + (inside ? iy : 0) * g->w + col[k];
                const __m512 v0 = _mm512_maskz_loadu_ps(inside & m[k][0], at);
                const __m512 v1 = _mm512_maskz_loadu_ps(inside & m[k][1], at + VL);
                const __m512 v2 = _mm512_maskz_loadu_ps(inside & m[k][2], at + 2 * VL);
                const __m512 ev = _mm512_permutex2var_ps(v0, even, v1);
                const __m512 od = _mm512_permutex2var_ps(v0, odd, v1);
                acc[k] = _mm512_fmadd_ps(wv[ki * 3], ev, acc[k]);
                acc[k] = _mm512_fmadd_ps(wv[ki * 3 + 1], od, acc[k]);
                acc[k] = _mm512_fmadd_ps(wv[ki * 3 + 2], shifted(ev, v2, 1), acc[k]);
            }
#pragma GCC unroll 4
        for (int k = 0; k < NB; k++)
            store_channel(ep, &e, acc[k], res ? res + out[k] : NULL, keep[k], y + out[k]);
    }
}

#define CHANNEL(KH, KW, SW)                                                                      \
    static void channel_##KH##x##KW##_s##SW(const bd_conv_geom *g, bd_bordered b, const float *buf, \
                                           const float *w, const bd_epilogue *ep, int64_t c,     \
                                           const float *res, float *y)                           \
    {                                                                                            \
        channel_body(g, b, buf, w, ep, c, res, y, KH, KW, 1, SW, 1);                             \
    }
CHANNEL(3, 3, 1) CHANNEL(3, 3, 2) CHANNEL(5, 5, 1) CHANNEL(5, 5, 2) CHANNEL(7, 7, 1)

/* Any kernel of up to 49 taps, any dilation, stride 1 or 2 across. */
static void channel_any(const bd_conv_geom *g, bd_bordered b, const float *buf, const float *w,
                        const bd_epilogue *ep, int64_t c, const float *res, float *y)
{
    channel_body(g, b, buf, w, ep, c, res, y, (int)g->kh, (int)g->kw, (int)g->dw, (int)g->sw, 0);
}

static channel_fn in_registers(const bd_conv_geom *g)
{
    if (!__builtin_cpu_supports("avx512f") || (g->sw != 1 && g->sw != 2) || g->kh * g->kw > 49)
        return NULL;
    if (g->dh == 1 && g->dw == 1 && g->kh == g->kw) {
        if (g->kh == 3)
            return g->sw == 2 ? channel_3x3_s2
                   : g->sh == 1 && g->oh >= ROWS ? rows_3x3_s1 : channel_3x3_s1;
        if (g->kh == 5)
            return g->sw == 1 ? channel_5x5_s1 : channel_5x5_s2;
        if (g->kh == 7 && g->sw == 1)
            return channel_7x7_s1;
    }
    return channel_any;
}

/* Small planes (a late layer's 7x7 or 14x14) waste most lanes of a row's
 * vectors, so there 16 channels share each vector instead, in the layout of
 * NCHWc kernels: each image's 16-channel block is transposed into a
 * zero-bordered [hp][wp][16] buffer, every output pixel sums its taps with
 * the 16 channels' weights, and the results are transposed back. Taps go
 * in the plane path's order by the same multiply-adds, so both give the
 * same bits. Rows at most this wide take it, and so do 5 and 7 wide
 * kernels at stride 1 across on any plane (dense_row): the plane path
 * keeps their 25 or 49 weights in registers beside its sums and shifts,
 * more than there are, and spilled them (one thread on the Xeon: 96
 * channels 7x7 at 56x56 0.476 -> 0.339 ms, 192 at 28x28 0.241 -> 0.166,
 * 240 channels 5x5 at 28x28 0.174 -> 0.135; 3x3 kernels stay, 28x28 0.066
 * there against 0.085 here). */
enum { NARROW = 16 };

/* Output pixels of a row summed side by side. */
enum { PX = 8 };

typedef struct blocked {
    int64_t hp, wp;       /* bordered rows and columns */
    size_t in, out, taps; /* floats of the bordered block, of its outputs, of its weights */
} blocked;

static blocked blocked_size(const bd_conv_geom *g)
{
    blocked b = {.hp = g->h + g->pad_t + g->pad_b, .wp = g->w + g->pad_l + g->pad_r};
    /* a row's last group of PX outputs reads up to PX - 1 pixels past it */
    b.in = (size_t)((b.hp * b.wp + PX * g->sw) * VL);
    b.out = (size_t)(g->oh * g->ow * VL);
    b.taps = (size_t)(g->kh * g->kw * VL);
    return b;
}

/* (a residual would have to be transposed in too: those take the plane path) */
static int use_blocked(const bd_conv_geom *g, const bd_epilogue *ep)
{
    const int wide_kernel = g->sw == 1 && g->dw == 1 && (g->kw == 5 || g->kw == 7);
    return __builtin_cpu_supports("avx512f") && (g->ow <= NARROW || wide_kernel) &&
           !(ep && ep->residual);
}

/* v[r] = lanes mk of the 16 floats at base + r * stride for the first
 * rows, zero for the rest, then transposed: lane r of v[j] is float j of
 * row r. Whole aligned rows (ALIGNED) load without a mask. */
static inline __attribute__((always_inline)) void
rows_transposed(__m512 *v, const float *base, int64_t stride, int64_t rows, __mmask16 mk,
                const int ALIGNED)
{
#pragma GCC unroll 16
    for (int r = 0; r < VL; r++)
        v[r] = r >= rows  ? _mm512_setzero_ps()
               : ALIGNED ? _mm512_load_ps(base + r * stride)
                         : _mm512_maskz_loadu_ps(mk, base + r * stride);
    bd_transpose16(v);
}

/* One kernel row's KW taps (stride and dilation 1 across) for PX
 * neighbouring outputs: the PX + KW - 1 pixels under them are loaded once
 * and each tap is a shift of them, where loading them tap by tap made
 * nine loads for eight multiply-adds (one thread on the Xeon: 96 channels
 * 7x7 at 56x56 0.402 -> 0.339 ms, 384 at 14x14 0.107 -> 0.088, 480
 * channels 5x5 at 14x14 0.087 -> 0.073). The same multiply-adds in the
 * same order. */
static inline __attribute__((always_inline)) void dense_row(const float *row, const float *wrow,
                                                            __m512 *acc, const int KW)
{
    __m512 in[PX + 6];
#pragma GCC unroll 14
    for (int j = 0; j < PX + KW - 1; j++)
        in[j] = _mm512_load_ps(row + j * VL);
#pragma GCC unroll 7
    for (int kj = 0; kj < KW; kj++) {
        const __m512 wv = _mm512_load_ps(wrow + kj * VL);
#pragma GCC unroll 8
        for (int p = 0; p < PX; p++)
            acc[p] = _mm512_fmadd_ps(wv, in[p + kj], acc[p]);
    }
}

/* Channels [c0, c0 + nch) of image i, nch <= 16; buf, out and wt have
 * blocked_size's room, and buf's border is zero: only its interior is
 * written here, so a thread zeroes its buffer once, not once a block.
 * The loops over a transposed block's vectors unroll with constant
 * indices and test the count, so the vectors stay in registers: loops to
 * the count had spilled all 16 to the stack and copied them there
 * (576-channel 14x14 3x3 layer, one thread: 83 -> 68 us; 960-channel 7x7
 * 45 -> 33 us). */
static void block_of_16(const bd_conv_geom *g, blocked b, const float *x, const float *w,
                        const bd_epilogue *ep, int64_t i, int64_t c0, float *buf, float *out,
                        float *wt, float *y)
{
    const int64_t nch = g->c - c0 < VL ? g->c - c0 : VL, hw = g->h * g->w;
    const int64_t taps = g->kh * g->kw, ohw = g->oh * g->ow;
    const __mmask16 chans = bd_lanes(0, nch);
    const __m512 zero = _mm512_setzero_ps();
    const float *xi = x + (i * g->c + c0) * hw;
    for (int64_t iy = 0; iy < g->h; iy++)
        for (int64_t ix = 0; ix < g->w; ix += VL) {
            const int64_t n = g->w - ix < VL ? g->w - ix : VL;
            __m512 v[VL];
            rows_transposed(v, xi + iy * g->w + ix, hw, nch, bd_lanes(0, n), 0);
            float *row = buf + ((iy + g->pad_t) * b.wp + g->pad_l + ix) * VL;
#pragma GCC unroll 16
            for (int k = 0; k < VL; k++)
                if (k < n)
                    _mm512_store_ps(row + k * VL, v[k]);
        }
    /* the weights as 16 channels a tap: 16 taps of each channel at a time,
     * transposed in registers */
    for (int64_t t0 = 0; t0 < taps; t0 += VL) {
        const int64_t nt = taps - t0 < VL ? taps - t0 : VL;
        __m512 v[VL];
        rows_transposed(v, w + c0 * taps + t0, taps, nch, bd_lanes(0, nt), 0);
#pragma GCC unroll 16
        for (int k = 0; k < VL; k++)
            if (k < nt)
                _mm512_store_ps(wt + (t0 + k) * VL, v[k]);
    }
    const __m512 a = ep && ep->scale ? _mm512_maskz_loadu_ps(chans, ep->scale + c0)
                                     : _mm512_set1_ps(1);
    const __m512 sh = ep && ep->shift ? _mm512_maskz_loadu_ps(chans, ep->shift + c0) : zero;
    float lof, hif;
    bd_epilogue_clamp(ep, &lof, &hif);
    const __m512 lo = _mm512_set1_ps(lof), hi = _mm512_set1_ps(hif);
    const int dense = g->sw == 1 && g->dw == 1 && g->kw <= 7 && g->kw % 2 ? (int)g->kw : 0;
    for (int64_t oy = 0; oy < g->oh; oy++)
        for (int64_t ox = 0; ox < g->ow; ox += PX) {
            __m512 acc[PX];
#pragma GCC unroll 8
            for (int p = 0; p < PX; p++)
                acc[p] = zero;
            for (int64_t ki = 0; ki < g->kh; ki++) {
                const float *row = buf + ((oy * g->sh + ki * g->dh) * b.wp + ox * g->sw) * VL;
                const float *wrow = wt + ki * g->kw * VL;
                switch (dense) {
                case 3: dense_row(row, wrow, acc, 3); break;
                case 5: dense_row(row, wrow, acc, 5); break;
                case 7: dense_row(row, wrow, acc, 7); break;
                default:
                    for (int64_t kj = 0; kj < g->kw; kj++) {
                        const __m512 wv = _mm512_load_ps(wrow + kj * VL);
                        const float *at = row + kj * g->dw * VL;
#pragma GCC unroll 8
                        for (int p = 0; p < PX; p++)
                            acc[p] = _mm512_fmadd_ps(wv, _mm512_load_ps(at + p * g->sw * VL),
                                                     acc[p]);
                    }
                }
            }
            const int64_t n = g->ow - ox < PX ? g->ow - ox : PX;
#pragma GCC unroll 8
            for (int p = 0; p < PX; p++)
                if (p < n)
                    _mm512_store_ps(out + (oy * g->ow + ox + p) * VL,
                                    bd_activation_vec(ep, bd_epilogue_vec(acc[p], a, sh, NULL, 0,
                                                                          lo, hi)));
        }
    float *yi = y + (i * g->c + c0) * ohw;
    for (int64_t p0 = 0; p0 < ohw; p0 += VL) {
        const int64_t n = ohw - p0 < VL ? ohw - p0 : VL;
        const __mmask16 mk = bd_lanes(0, n);
        __m512 v[VL];
        rows_transposed(v, out + p0 * VL, VL, n, 0xffff, 1);
#pragma GCC unroll 16
        for (int ch = 0; ch < VL; ch++)
            if (ch < nch)
                _mm512_mask_storeu_ps(yi + ch * ohw + p0, mk, v[ch]);
    }
}

static bd_status depthwise_blocked(const bd_conv_geom *g, const float *x, const float *w,
                                   const bd_epilogue *ep, float *y)
{
    const blocked b = blocked_size(g);
    const int64_t nblk = (g->c + VL - 1) / VL, items = g->n * nblk;
    int failed = 0;
#pragma omp parallel if (items > 1 && items * g->oh * g->ow * VL > 4096)
    {
        float *mem = aligned_alloc(64, (b.in + b.out + b.taps) * sizeof *mem);
        if (!mem) {
#pragma omp atomic write
            failed = 1;
        } else {
            memset(mem, 0, b.in * sizeof *mem);
        }
#pragma omp for schedule(static)
        for (int64_t it = 0; it < items; it++)
            if (mem)
                block_of_16(g, b, x, w, ep, it / nblk, it % nblk * VL, mem, mem + b.in,
                            mem + b.in + b.out, y);
        free(mem);
    }
    return failed ? bd_fail(BD_ENOMEM, "out of memory for a depthwise conv's channel blocks")
                  : BD_OK;
}

#endif

int bd_conv_depthwise_in_place(const bd_conv_geom *g)
{
#ifdef __AVX512F__
    /* the channel-block path always copies its 16 channels first; the
     * plane path (a residual, or rows wider than NARROW) copies a plane
     * first only with a kernel in_registers gives */
    return bd_conv_is_depthwise(g) && g->oh == g->h && g->ow == g->w && in_registers(g);
#else
    (void)g;
    return 0;
#endif
}

bd_status bd_conv_depthwise(const bd_conv_geom *g, const float *x, const float *w,
                            const bd_epilogue *ep, float *y)
{
    const int64_t total = g->n * g->c, ohw = bd_conv_cols(g), plane = g->h * g->w;
#ifdef __AVX512F__
    if (use_blocked(g, ep))
        return depthwise_blocked(g, x, w, ep, y);
#endif
    int failed = 0;
#ifdef __AVX512F__
    const int unbordered = __builtin_cpu_supports("avx512f") && g->kh == 3 && g->kw == 3 &&
                           g->sh == 2 && g->sw == 2 && g->dh == 1 && g->dw == 1;
#endif
#pragma omp parallel if (total * ohw > 4096)
    {
        float *buf = NULL;
#ifdef __AVX512F__
        const channel_fn fast = unbordered ? NULL : in_registers(g);
        const bd_bordered b = bd_bordered_size(g);
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
            if (unbordered) {
                rows_3x3_s2(g, xc, wc, ep, c, res, yc);
                continue;
            }
            if (fast && buf) {
                bd_border_copy(g, b, xc, buf);
                fast(g, b, buf, wc, ep, c, res, yc);
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
