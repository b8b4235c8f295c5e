#include "gemv.h"

#include <cblas.h>
#include <string.h>

#include "kernel_util.h"

#ifdef __AVX512F__

#include <immintrin.h>
#include <omp.h>

#include "avx512.h"

/* Floats per vector; rows of W a dot-product step reads together (8
 * streams from memory and 8 sums in flight: 4 measured the same from
 * memory, slower from L2); rows a transposed step adds together; the most
 * columns of y a thread sums at a time, its sums in L1 (8 KB). */
enum { VL = 16, DR = 8, TR = 4, CW = 2048 };

static int available(void) { return __builtin_cpu_supports("avx512f"); }

static inline float combine(float alpha, float sum, float beta, const float *y)
{
    return beta == 0.0f ? alpha * sum : alpha * sum + beta * *y;
}

/* y[i0 .. i0 + nr) from rows i0.. of W, each the sum of its vectors in
 * order, then across the lanes. */
static inline __attribute__((always_inline)) void
dots_body(int64_t i0, int64_t cols, float alpha, const float *w, const float *x, float beta,
          float *y, const int nr)
{
    __m512 s[DR];
#pragma GCC unroll 8
    for (int r = 0; r < nr; r++)
        s[r] = _mm512_setzero_ps();
    const float *wi = w + i0 * cols;
    for (int64_t j = 0; j < cols; j += VL) {
        const __mmask16 mk = bd_lanes(0, cols - j);
        const __m512 xv = _mm512_maskz_loadu_ps(mk, x + j);
#pragma GCC unroll 8
        for (int r = 0; r < nr; r++)
            s[r] = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(mk, wi + r * cols + j), xv, s[r]);
    }
#pragma GCC unroll 8
    for (int r = 0; r < nr; r++)
        y[i0 + r] = combine(alpha, _mm512_reduce_add_ps(s[r]), beta, y + i0 + r);
}

typedef void (*dots_fn)(int64_t i0, int64_t cols, float alpha, const float *w, const float *x,
                        float beta, float *y);
#define DOTS(NR)                                                                                 \
    static void dots_##NR(int64_t i0, int64_t cols, float alpha, const float *w,                 \
                          const float *x, float beta, float *y)                                  \
    {                                                                                            \
        dots_body(i0, cols, alpha, w, x, beta, y, NR);                                           \
    }
DOTS(1) DOTS(2) DOTS(3) DOTS(4) DOTS(5) DOTS(6) DOTS(7) DOTS(8)
/* [nr - 1] */
static const dots_fn dots[DR] = {dots_1, dots_2, dots_3, dots_4, dots_5, dots_6, dots_7, dots_8};

static void gemv_rows(int64_t rows, int64_t cols, float alpha, const float *w, const float *x,
                      float beta, float *y)
{
    const int64_t groups = (rows + DR - 1) / DR;
#pragma omp parallel for schedule(static) if (rows * cols >= BD_PARALLEL_MIN)
    for (int64_t gi = 0; gi < groups; gi++) {
        const int64_t i0 = gi * DR, nr = rows - i0 < DR ? rows - i0 : DR;
        dots[nr - 1](i0, cols, alpha, w, x, beta, y);
    }
}

/* acc[0 .. n) += sum over rows i of x[i] W[i][j0 + ..], TR rows a pass
 * over the run, in row order. */
static void add_rows(int64_t rows, int64_t cols, const float *w, const float *x, int64_t j0,
                     int64_t n, float *acc)
{
    int64_t i = 0;
    for (; i + TR <= rows; i += TR) {
        __m512 xs[TR];
        const float *wi[TR];
#pragma GCC unroll 4
        for (int r = 0; r < TR; r++) {
            xs[r] = _mm512_set1_ps(x[i + r]);
            wi[r] = w + (i + r) * cols + j0;
        }
        for (int64_t j = 0; j < n; j += VL) {
            const __mmask16 mk = bd_lanes(0, n - j);
            __m512 a = _mm512_load_ps(acc + j);
#pragma GCC unroll 4
            for (int r = 0; r < TR; r++)
                a = _mm512_fmadd_ps(xs[r], _mm512_maskz_loadu_ps(mk, wi[r] + j), a);
            _mm512_store_ps(acc + j, a);
        }
    }
    for (; i < rows; i++) {
        const __m512 xv = _mm512_set1_ps(x[i]);
        const float *wi = w + i * cols + j0;
        for (int64_t j = 0; j < n; j += VL) {
            const __mmask16 mk = bd_lanes(0, n - j);
            _mm512_store_ps(acc + j, _mm512_fmadd_ps(xv, _mm512_maskz_loadu_ps(mk, wi + j),
                                                     _mm512_load_ps(acc + j)));
        }
    }
}

/* Each thread takes an even share of the column vectors and sums it CW
 * columns at a time, reading TR rows of W at once where they lie: a run of
 * a row is contiguous, where a thread's run of every row in turn would
 * start a new page at each row and lose the hardware prefetch. */
static void gemv_cols(int64_t rows, int64_t cols, float alpha, const float *w, const float *x,
                      float beta, float *y)
{
    const int64_t nv = (cols + VL - 1) / VL;
#pragma omp parallel if (rows * cols >= BD_PARALLEL_MIN)
    {
        const int64_t t = omp_get_thread_num(), nt = omp_get_num_threads();
        const int64_t j1 = (t + 1) * nv / nt * VL < cols ? (t + 1) * nv / nt * VL : cols;
        float acc[CW] __attribute__((aligned(64)));
        for (int64_t j0 = t * nv / nt * VL; j0 < j1; j0 += CW) {
            const int64_t n = j1 - j0 < CW ? j1 - j0 : CW;
            memset(acc, 0, (size_t)((n + VL - 1) / VL * VL) * sizeof *acc);
            add_rows(rows, cols, w, x, j0, n, acc);
            for (int64_t j = 0; j < n; j++)
                y[j0 + j] = combine(alpha, acc[j], beta, y + j0 + j);
        }
    }
}

#else

static int available(void) { return 0; }

static void gemv_rows(int64_t rows, int64_t cols, float alpha, const float *w, const float *x,
                      float beta, float *y)
{
    (void)rows, (void)cols, (void)alpha, (void)w, (void)x, (void)beta, (void)y;
}

static void gemv_cols(int64_t rows, int64_t cols, float alpha, const float *w, const float *x,
                      float beta, float *y)
{
    (void)rows, (void)cols, (void)alpha, (void)w, (void)x, (void)beta, (void)y;
}

#endif

void bd_gemv(int trans, int64_t rows, int64_t cols, float alpha, const float *w, const float *x,
             float beta, float *y)
{
    const int64_t ny = trans ? cols : rows;
    if (ny == 0)
        return;
    if (rows == 0 || cols == 0) {
        for (int64_t i = 0; i < ny; i++)
            y[i] = beta == 0.0f ? 0.0f : beta * y[i];
        return;
    }
    if (available()) {
        (trans ? gemv_cols : gemv_rows)(rows, cols, alpha, w, x, beta, y);
        return;
    }
    /* OpenBLAS may scale y by a zero beta, which keeps a NaN */
    if (beta == 0.0f)
        memset(y, 0, (size_t)ny * sizeof *y);
    cblas_sgemv(CblasRowMajor, trans ? CblasTrans : CblasNoTrans, (int)rows, (int)cols, alpha, w,
                (int)cols, x, 1, beta, y, 1);
}
