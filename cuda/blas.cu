/* cuBLAS, seen row-major as cblas is: cuBLAS is column-major, and a
 * row-major matrix is its column-major transpose, so C = op(A) op(B)
 * row-major is C^T = op(B)^T op(A)^T column-major: the operands swap. */
#include <limits.h>
#include <stdlib.h>

#include <cublas_v2.h>

#include "common.cuh"

struct bd_cu_blas {
    cublasHandle_t h;
};

static const char *blas_reason(cublasStatus_t s)
{
    switch (s) {
    case CUBLAS_STATUS_NOT_INITIALIZED: return "not initialized";
    case CUBLAS_STATUS_ALLOC_FAILED: return "out of GPU memory";
    case CUBLAS_STATUS_INVALID_VALUE: return "invalid value";
    case CUBLAS_STATUS_ARCH_MISMATCH: return "not supported by this GPU";
    case CUBLAS_STATUS_MAPPING_ERROR: return "mapping error";
    case CUBLAS_STATUS_EXECUTION_FAILED: return "execution failed";
    case CUBLAS_STATUS_INTERNAL_ERROR: return "internal error";
    case CUBLAS_STATUS_NOT_SUPPORTED: return "not supported";
    default: return "error";
    }
}

static bd_status blas_check(cublasStatus_t s, const char *what)
{
    if (s == CUBLAS_STATUS_SUCCESS)
        return BD_OK;
    return bd_fail(s == CUBLAS_STATUS_ALLOC_FAILED ? BD_ENOMEM : BD_EIO, "cuBLAS: %s: %s (%d)",
                   what, blas_reason(s), (int)s);
}

/* cuBLAS takes int sizes: larger ones are refused, not cut. */
static bd_status fits_int(const char *what, int64_t v)
{
    if (v < 0 || v > INT_MAX)
        return bd_fail(BD_EUNSUPPORTED, "cuBLAS: %s %lld does not fit an int", what,
                       (long long)v);
    return BD_OK;
}

extern "C" bd_status bd_cu_blas_new(bd_cu_blas **out)
{
    *out = (bd_cu_blas *)calloc(1, sizeof **out);
    if (!*out)
        return bd_fail(BD_ENOMEM, "out of memory");
    bd_status s = blas_check(cublasCreate(&(*out)->h), "cublasCreate");
    /* exact float32 products, as OpenBLAS computes them (no TF32) */
    if (s == BD_OK)
        s = blas_check(cublasSetMathMode((*out)->h, CUBLAS_DEFAULT_MATH), "cublasSetMathMode");
    if (s != BD_OK) {
        if ((*out)->h)
            cublasDestroy((*out)->h);
        free(*out);
        *out = NULL;
    }
    return s;
}

extern "C" void bd_cu_blas_free(bd_cu_blas *h)
{
    if (!h)
        return;
    cublasDestroy(h->h);
    free(h);
}

extern "C" bd_status bd_cu_gemm(bd_cu_blas *h, int ta, int tb, int64_t m, int64_t n, int64_t k,
                                float alpha, const float *a, int64_t lda, int64_t stride_a,
                                const float *b, int64_t ldb, int64_t stride_b, float beta, float *c,
                                int64_t ldc, int64_t stride_c, int64_t count)
{
    if (m == 0 || n == 0 || count == 0)
        return BD_OK;
    BD_TRY(fits_int("m", m));
    BD_TRY(fits_int("n", n));
    BD_TRY(fits_int("k", k));
    BD_TRY(fits_int("lda", lda));
    BD_TRY(fits_int("ldb", ldb));
    BD_TRY(fits_int("ldc", ldc));
    BD_TRY(fits_int("batch", count));
    cublasOperation_t oa = ta ? CUBLAS_OP_T : CUBLAS_OP_N, ob = tb ? CUBLAS_OP_T : CUBLAS_OP_N;
    if (count == 1)
        return blas_check(cublasSgemm(h->h, ob, oa, (int)n, (int)m, (int)k, &alpha, b, (int)ldb, a,
                                      (int)lda, &beta, c, (int)ldc),
                          "cublasSgemm");
    return blas_check(cublasSgemmStridedBatched(h->h, ob, oa, (int)n, (int)m, (int)k, &alpha, b,
                                                (int)ldb, stride_b, a, (int)lda, stride_a, &beta,
                                                c, (int)ldc, stride_c, (int)count),
                      "cublasSgemmStridedBatched");
}

/* A d x d result (d is 4 to 16 here) leaves cuBLAS's SYRK little to spread
 * over the GPU: with the 10^5 to 10^6 columns of a calibration chunk it
 * took a second on a Fashion-MNIST layer on an H100, 16 times the CPU's
 * time, growing with the columns. So split-K: each block's columns go in slices, every (block, slice)
 * product is one small GEMM of a strided batch, and a GEMV with a vector
 * of ones sums the products. */
static const int64_t SLICE_MIN = 1024;

extern "C" bd_status bd_cu_gram_blocks(bd_cu_blas *h, const float *cols, int64_t d, int64_t m,
                                       int64_t ncols, float *parts, const float *ones,
                                       int64_t max_parts, float *acc)
{
    const int64_t dd = d * d;
    if (max_parts < 1)
        return bd_fail(BD_EINVAL, "no room for the Gram matrix's partial products");
    if (m <= 0 || ncols <= 0)
        return bd_cu_zero(acc, (size_t)dd * sizeof *acc);
    /* at least ncols / max_parts wide, so one block's slices fit in parts */
    int64_t slice = (ncols * m + max_parts - 1) / max_parts;
    slice = slice < SLICE_MIN ? SLICE_MIN : slice;
    const int64_t full = ncols / slice, rest = ncols - full * slice;
    const int64_t per_block = full + (rest > 0), group = max_parts / per_block;
    bd_status s = BD_OK;
    for (int64_t b0 = 0; s == BD_OK && b0 < m; b0 += group) {
        const int64_t nb = m - b0 < group ? m - b0 : group;
        for (int64_t b = 0; s == BD_OK && b < nb; b++) {
            const float *blk = cols + (b0 + b) * d * ncols, *tail = blk + full * slice;
            float *out = parts + b * per_block * dd;
            s = bd_cu_gemm(h, 0, 1, d, d, slice, 1.0f, blk, ncols, slice, blk, ncols, slice, 0.0f,
                           out, d, dd, full);
            if (s == BD_OK && rest > 0)
                s = bd_cu_gemm(h, 0, 1, d, d, rest, 1.0f, tail, ncols, 0, tail, ncols, 0, 0.0f,
                               out + full * dd, d, 0, 1);
        }
        /* acc [1][dd] (+)= ones [1][products] parts [products][dd] */
        if (s == BD_OK)
            s = bd_cu_gemm(h, 0, 0, 1, dd, nb * per_block, 1.0f, ones, nb * per_block, 0, parts,
                           dd, 0, b0 ? 1.0f : 0.0f, acc, dd, 0, 1);
    }
    return s;
}
