#include "gemm_rows.h"

#include <cblas.h>
#include <string.h>

#include "fused.h"
#include "kernel_util.h"

/* Row i of the product as the epilogue leaves it, from its sum. */
static void epilogue_row(const bd_gemm_epilogue *ep, float *y, int64_t n)
{
    if (ep->bias)
        for (int64_t j = 0; j < n; j++)
            y[j] += ep->bias[j];
    if (ep->gelu)
        bd_gelu_span(y, n, ep->k[0], ep->k[1], ep->k[2], y);
}

#ifdef __AVX512F__

#include <immintrin.h>

#include "avx512.h"

/* Floats per vector; vectors of columns per panel; most rows per tile (8
 * x 3 accumulators, 3 vectors of B and a broadcast of A in the 32
 * registers); the depth of a panel's slice of B that row tiles share
 * (256 x 48 floats: 48 KB, in L2 while every row tile reads it); most rows
 * per block; the steps of the sum ahead that a tile asks for B's rows.
 * ConvNeXt-T's MatMuls at batch 1, one thread, against OpenBLAS:
 * 75 -> 97 GFLOP/s at 49 rows, 99 -> 112 at 196; level at 784 and 3136,
 * where the epilogue in the tiles then saves a pass. */
enum { VL = 16, NV = 3, MR = 8, KC = 256, RB = 256, AHEAD = 4 };

static int available(void) { return __builtin_cpu_supports("avx512f"); }

/* mr rows times nv vectors of columns of y, over kc steps of the sum, the
 * last vector's lanes `last`; first: y starts at 0 instead of its value;
 * bias (NULL: none) added at the end of the sum. The loops unroll
 * completely (mr and nv are constants in each instance), so the
 * accumulators live in registers. */
static inline __attribute__((always_inline)) void
tile_body(const float *a, int64_t lda, const float *b, int64_t ldb, float *y, int64_t ldy,
          int64_t kc, int first, const float *bias, __mmask16 last, const int mr, const int nv)
{
    __m512 acc[MR][NV];
#pragma GCC unroll 8
    for (int i = 0; i < mr; i++)
#pragma GCC unroll 3
        for (int v = 0; v < nv; v++)
            acc[i][v] = first ? _mm512_setzero_ps()
                              : _mm512_maskz_loadu_ps(v == nv - 1 ? last : 0xffff,
                                                      y + i * ldy + v * VL);
    for (int64_t p = 0; p < kc; p++) {
        const float *bp = b + p * ldb;
        /* B's rows are ldb floats apart, a stride the hardware prefetchers
         * do not follow: each tile asks for its rows AHEAD steps early
         * (ConvNeXt-T's 768 -> 3072 MatMul at 7x7, one thread on the Xeon:
         * 2.03 -> 1.82 ms; its 36 MatMuls 78.3 -> 75.6 ms; 8 steps ahead
         * gained less, 16 lost) */
#pragma GCC unroll 3
        for (int v = 0; v < nv; v++)
            __builtin_prefetch(bp + AHEAD * ldb + v * VL, 0, 3);
        __m512 w[NV];
#pragma GCC unroll 3
        for (int v = 0; v < nv; v++)
            w[v] = _mm512_maskz_loadu_ps(v == nv - 1 ? last : 0xffff, bp + v * VL);
#pragma GCC unroll 8
        for (int i = 0; i < mr; i++) {
            const __m512 av = _mm512_set1_ps(a[i * lda + p]);
#pragma GCC unroll 3
            for (int v = 0; v < nv; v++)
                acc[i][v] = _mm512_fmadd_ps(av, w[v], acc[i][v]);
        }
    }
#pragma GCC unroll 3
    for (int v = 0; bias && v < nv; v++) {
        const __m512 bv = _mm512_maskz_loadu_ps(v == nv - 1 ? last : 0xffff, bias + v * VL);
#pragma GCC unroll 8
        for (int i = 0; i < mr; i++)
            acc[i][v] = _mm512_add_ps(acc[i][v], bv);
    }
#pragma GCC unroll 8
    for (int i = 0; i < mr; i++)
#pragma GCC unroll 3
        for (int v = 0; v < nv; v++)
            _mm512_mask_storeu_ps(y + i * ldy + v * VL, v == nv - 1 ? last : 0xffff, acc[i][v]);
}

typedef void (*tile_fn)(const float *a, int64_t lda, const float *b, int64_t ldb, float *y,
                        int64_t ldy, int64_t kc, int first, const float *bias, __mmask16 last);

#define TILE(MRI, NVI)                                                                           \
    static void tile_##MRI##_##NVI(const float *a, int64_t lda, const float *b, int64_t ldb,    \
                                   float *y, int64_t ldy, int64_t kc, int first,                 \
                                   const float *bias, __mmask16 last)                            \
    {                                                                                            \
        tile_body(a, lda, b, ldb, y, ldy, kc, first, bias, last, MRI, NVI);                      \
    }
#define TILES(MRI) TILE(MRI, 1) TILE(MRI, 2) TILE(MRI, 3)
TILES(1) TILES(2) TILES(3) TILES(4) TILES(5) TILES(6) TILES(7) TILES(8)
#define ROW(MRI) {tile_##MRI##_1, tile_##MRI##_2, tile_##MRI##_3}

/* [mr - 1][nv - 1] */
static const tile_fn tiles[MR][NV] = {ROW(1), ROW(2), ROW(3), ROW(4),
                                      ROW(5), ROW(6), ROW(7), ROW(8)};

/* Rows [0, m) of a (and y) times column panel jp of b: row tiles of as
 * equal a size as MR allows (49 rows are 7 tiles of 7, not 6 of 8 and one
 * of 1, which would read the panel for one row), each over the panel's
 * slices of the sum in turn. The epilogue's bias is added in registers,
 * its GELU on each finished tile while it is in L1. */
static void panel(int64_t m, int64_t n, int64_t k, const float *a, const float *b,
                  const bd_gemm_epilogue *ep, float *y, int64_t jp)
{
    const int64_t ntiles = (m + MR - 1) / MR, base = m / ntiles, extra = m % ntiles;
    const int64_t j0 = jp * NV * VL, cols = n - j0 < NV * VL ? n - j0 : NV * VL;
    const int nv = (int)((cols + VL - 1) / VL);
    const __mmask16 last = bd_lanes(0, cols - (nv - 1) * VL);
    for (int64_t p0 = 0; p0 < k; p0 += KC) {
        const int64_t kc = k - p0 < KC ? k - p0 : KC;
        const int end = p0 + kc == k;
        const float *bias = end && ep && ep->bias ? ep->bias + j0 : NULL;
        for (int64_t t = 0, r0 = 0; t < ntiles; r0 += base + (t < extra), t++) {
            const int64_t mr = base + (t < extra);
            float *yt = y + r0 * n + j0;
            tiles[mr - 1][nv - 1](a + r0 * k + p0, k, b + p0 * n + j0, n, yt, n, kc, p0 == 0,
                                  bias, last);
            for (int64_t i = 0; end && ep && ep->gelu && i < mr; i++)
                bd_gelu_span(yt + i * n, cols, ep->k[0], ep->k[1], ep->k[2], yt + i * n);
        }
    }
}

/* Blocks of at most RB rows (as equal as they can be), so that a block's
 * rows of a stay in L2 while its panels pass; threads split the blocks'
 * panels. */
static void blocked(int64_t m, int64_t n, int64_t k, const float *a, const float *b,
                    const bd_gemm_epilogue *ep, float *y)
{
    const int64_t panels = (n + NV * VL - 1) / (NV * VL), blocks = (m + RB - 1) / RB;
#pragma omp parallel for schedule(static) if (m * n * k > 1 << 18)
    for (int64_t w = 0; w < blocks * panels; w++) {
        const int64_t bk = w / panels, r0 = bk * m / blocks, r1 = (bk + 1) * m / blocks;
        panel(r1 - r0, n, k, a + r0 * k, b, ep, y + r0 * n, w % panels);
    }
}

#else

static int available(void) { return 0; }

static void blocked(int64_t m, int64_t n, int64_t k, const float *a, const float *b,
                    const bd_gemm_epilogue *ep, float *y)
{
    (void)m, (void)n, (void)k, (void)a, (void)b, (void)ep, (void)y;
}

#endif

void bd_gemm_rows(int64_t m, int64_t n, int64_t k, const float *a, const float *b,
                  const bd_gemm_epilogue *ep, float *y)
{
    if (m == 0 || n == 0)
        return;
    if (k > 0 && available()) {
        blocked(m, n, k, a, b, ep, y);
        return;
    }
    if (k > 0)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)m, (int)n, (int)k, 1.0f, a,
                    (int)k, b, (int)n, 0.0f, y, (int)n);
    else
        memset(y, 0, (size_t)(m * n) * sizeof *y);
#pragma omp parallel for schedule(static) if (ep && m * n >= BD_PARALLEL_MIN)
    for (int64_t i = 0; i < (ep ? m : 0); i++)
        epilogue_row(ep, y + i * n, n);
}
