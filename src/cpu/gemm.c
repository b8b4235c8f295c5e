/* Gemm through cblas_sgemm (bd_gemv for one row), MatMul through bd_gemm_rows. */
#include <cblas.h>
#include <string.h>

#include "gemm_rows.h"
#include "gemv.h"
#include "ops.h"

/* Writes beta*C broadcast to [m][nn] into y; C may be a scalar, [nn],
 * [1,nn], [m,1] or [m,nn] (unidirectional broadcasting, as ONNX allows). */
static bd_status broadcast_bias(const bd_node *n, const bd_tensor *c, float beta, int64_t m,
                                int64_t nn, float *y)
{
    char sc[96];
    int64_t cm = 1, cn = 1;
    if (c->ndim == 1) {
        cn = c->dims[0];
    } else if (c->ndim == 2) {
        cm = c->dims[0];
        cn = c->dims[1];
    } else if (c->ndim != 0) {
        return bd_node_fail(n, BD_EFORMAT, "C of shape %s cannot broadcast to [%lld, %lld]",
                            bd_shape_str(c->ndim, c->dims, sc, sizeof sc), (long long)m,
                            (long long)nn);
    }
    if ((cm != 1 && cm != m) || (cn != 1 && cn != nn) || c->dtype != BD_F32)
        return bd_node_fail(n, BD_EFORMAT, "C of shape %s (%s) cannot broadcast to [%lld, %lld]",
                            bd_shape_str(c->ndim, c->dims, sc, sizeof sc),
                            bd_dtype_name(c->dtype), (long long)m, (long long)nn);
    const float *cv = c->data;
    for (int64_t i = 0; i < m; i++)
        for (int64_t j = 0; j < nn; j++)
            y[i * nn + j] = beta * cv[(cm == 1 ? 0 : i) * cn + (cn == 1 ? 0 : j)];
    return BD_OK;
}

bd_status bd_k_gemm(const bd_graph *g, const bd_node *n, bd_tensor *const *in, bd_tensor **out)
{
    (void)g;
    const bd_tensor *a = in[0], *b = in[1], *c = n->ninputs > 2 ? in[2] : NULL;
    char sa[96], sb[96];
    if (a->dtype != BD_F32 || b->dtype != BD_F32)
        return bd_node_fail(n, BD_EUNSUPPORTED, "needs float32 inputs (got %s, %s)",
                            bd_dtype_name(a->dtype), bd_dtype_name(b->dtype));
    if (a->ndim != 2 || b->ndim != 2)
        return bd_node_fail(n, BD_EFORMAT, "A %s and B %s must be 2-D",
                            bd_shape_str(a->ndim, a->dims, sa, sizeof sa),
                            bd_shape_str(b->ndim, b->dims, sb, sizeof sb));
    int ta = bd_attr_int(n, "transA", 0) != 0, tb = bd_attr_int(n, "transB", 0) != 0;
    float alpha = bd_attr_float(n, "alpha", 1.0f), beta = bd_attr_float(n, "beta", 1.0f);
    int64_t m = ta ? a->dims[1] : a->dims[0], k = ta ? a->dims[0] : a->dims[1];
    int64_t kb = tb ? b->dims[1] : b->dims[0], nn = tb ? b->dims[0] : b->dims[1];
    if (k != kb)
        return bd_node_fail(n, BD_EFORMAT, "A %s and B %s do not agree (transA=%d transB=%d)",
                            bd_shape_str(a->ndim, a->dims, sa, sizeof sa),
                            bd_shape_str(b->ndim, b->dims, sb, sizeof sb), ta, tb);
    int64_t dims[2] = {m, nn};
    BD_TRY(bd_tensor_new_raw(out, BD_F32, 2, dims, n->name));
    float *y = (*out)->data;
    float gemm_beta = 0.0f;
    if (c && beta != 0.0f) {
        bd_status st = broadcast_bias(n, c, beta, m, nn, y);
        if (st != BD_OK) {
            bd_tensor_free(*out);
            *out = NULL;
            return st;
        }
        gemm_beta = 1.0f;
    }
    if (m == 1 && nn > 0 && k > 0) {
        /* One row (a classifier at batch 1): OpenBLAS's sgemm would copy all
         * of B into its panels first, twice the memory traffic of reading
         * B once, which is all a matrix-vector product does (gemv.h). A's
         * one row is contiguous whether transposed or not. */
        bd_gemv(!tb, b->dims[0], b->dims[1], alpha, b->data, a->data, gemm_beta, y);
    } else if (m > 0 && nn > 0)
        cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans,
                    (int)m, (int)nn, (int)k, alpha, a->data, (int)a->dims[1], b->data,
                    (int)b->dims[1], gemm_beta, y, (int)nn);
    if (k == 0 && gemm_beta == 0.0f)
        memset(y, 0, (size_t)(m * nn) * sizeof *y);
    return BD_OK;
}

/* y[m, nn] = a[m, k] b[k, nn], wrapping on overflow as ONNX Runtime's does */
static void matmul_i64(const int64_t *a, const int64_t *b, int64_t m, int64_t k, int64_t nn,
                       int64_t *y)
{
    for (int64_t i = 0; i < m; i++)
        for (int64_t j = 0; j < nn; j++) {
            uint64_t acc = 0;
            for (int64_t p = 0; p < k; p++)
                acc += (uint64_t)a[i * k + p] * (uint64_t)b[p * nn + j];
            y[i * nn + j] = (int64_t)acc;
        }
}

bd_status bd_k_matmul(const bd_graph *g, const bd_node *n, bd_tensor *const *in, bd_tensor **out)
{
    (void)g;
    const bd_tensor *a = in[0], *b = in[1];
    char sa[96], sb[96];
    /* int64 too: a compressed file sums code bits against powers of two
     * (compressed.c), which must stay exact */
    if (a->dtype != b->dtype || (a->dtype != BD_F32 && a->dtype != BD_I64))
        return bd_node_fail(n, BD_EUNSUPPORTED,
                            "needs two float32 or two int64 inputs (got %s, %s)",
                            bd_dtype_name(a->dtype), bd_dtype_name(b->dtype));
    if (a->ndim < 1 || b->ndim < 1)
        return bd_node_fail(n, BD_EFORMAT, "inputs must have at least one dimension");
    /* numpy semantics: a 1-D operand gains a dimension that is dropped again */
    int64_t m = a->ndim == 1 ? 1 : a->dims[a->ndim - 2];
    int64_t k = a->dims[a->ndim - 1];
    int64_t kb = b->ndim == 1 ? b->dims[0] : b->dims[b->ndim - 2];
    int64_t nn = b->ndim == 1 ? 1 : b->dims[b->ndim - 1];
    if (k != kb)
        return bd_node_fail(n, BD_EFORMAT, "A %s and B %s do not agree",
                            bd_shape_str(a->ndim, a->dims, sa, sizeof sa),
                            bd_shape_str(b->ndim, b->dims, sb, sizeof sb));
    int ba = a->ndim > 2 ? a->ndim - 2 : 0, bb = b->ndim > 2 ? b->ndim - 2 : 0;
    int nb = ba > bb ? ba : bb;
    if (nb + 2 > BD_MAX_DIMS)
        return bd_node_fail(n, BD_EUNSUPPORTED, "too many dimensions");
    int64_t bdims[BD_MAX_DIMS];
    int64_t batches = 1;
    for (int i = 0; i < nb; i++) {
        int ia = i - (nb - ba), ib = i - (nb - bb);
        int64_t da = ia >= 0 ? a->dims[ia] : 1, db = ib >= 0 ? b->dims[ib] : 1;
        if (da != db && da != 1 && db != 1)
            return bd_node_fail(n, BD_EFORMAT, "batch dimensions of %s and %s do not broadcast",
                                bd_shape_str(a->ndim, a->dims, sa, sizeof sa),
                                bd_shape_str(b->ndim, b->dims, sb, sizeof sb));
        bdims[i] = da > db ? da : db;
        batches *= bdims[i];
    }
    int64_t dims[BD_MAX_DIMS];
    int nd = 0;
    for (int i = 0; i < nb; i++)
        dims[nd++] = bdims[i];
    if (a->ndim > 1)
        dims[nd++] = m;
    if (b->ndim > 1)
        dims[nd++] = nn;
    BD_TRY(bd_tensor_new_raw(out, a->dtype, nd, dims, n->name));
    if (k == 0)
        memset((*out)->data, 0, bd_tensor_nbytes(*out));
    if (bb == 0 && a->ndim >= 2) {
        /* One B for every batch (a Linear on [N, H, W, C], as ConvNeXt's
         * blocks apply it): A's batches are consecutive rows, so the whole
         * product is one GEMM of batches * m rows rather than one small
         * GEMM per row of pixels. */
        m *= batches;
        batches = 1;
    }
    for (int64_t t = 0; t < batches && k > 0; t++) {
        /* offsets of this batch index in a and b, honouring broadcast */
        int64_t rem = t, oa = 0, ob = 0, stride_a = 1, stride_b = 1;
        for (int i = nb - 1; i >= 0; i--) {
            int64_t idx = rem % bdims[i];
            rem /= bdims[i];
            int ia = i - (nb - ba), ib = i - (nb - bb);
            if (ia >= 0) {
                if (a->dims[ia] != 1)
                    oa += idx * stride_a;
                stride_a *= a->dims[ia];
            }
            if (ib >= 0) {
                if (b->dims[ib] != 1)
                    ob += idx * stride_b;
                stride_b *= b->dims[ib];
            }
        }
        if (a->dtype == BD_I64)
            matmul_i64((const int64_t *)a->data + oa * m * k,
                       (const int64_t *)b->data + ob * k * nn, m, k, nn,
                       (int64_t *)(*out)->data + t * m * nn);
        else
            bd_gemm_rows(m, nn, k, (const float *)a->data + oa * m * k,
                         (const float *)b->data + ob * k * nn, NULL,
                         (float *)(*out)->data + t * m * nn);
    }
    return BD_OK;
}
