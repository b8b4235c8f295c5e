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

/* Row-major A [d][k] is column-major A^T [k][d]; A A^T is (A^T)^T (A^T),
 * cuBLAS's transposed SYRK. The column-major lower triangle (i >= j at
 * i + j*d) is the row-major upper one. */
extern "C" bd_status bd_cu_syrk(bd_cu_blas *h, int64_t d, int64_t k, float alpha, const float *a,
                                int64_t lda, float beta, float *c)
{
    if (d == 0)
        return BD_OK;
    BD_TRY(fits_int("d", d));
    BD_TRY(fits_int("k", k));
    BD_TRY(fits_int("lda", lda));
    return blas_check(cublasSsyrk(h->h, CUBLAS_FILL_MODE_LOWER, CUBLAS_OP_T, (int)d, (int)k,
                                  &alpha, a, (int)lda, &beta, c, (int)d),
                      "cublasSsyrk");
}
