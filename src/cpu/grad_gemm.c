/* Backward of Gemm and MatMul: two GEMMs each, through cblas_sgemm. */
#include <cblas.h>
#include <string.h>

#include "grad_kernels.h"

static CBLAS_TRANSPOSE trans(int t) { return t ? CblasTrans : CblasNoTrans; }

/* Y = alpha op(A) op(B) + beta C, with op(A) [m, k] and op(B) [k, nn]:
 * d op(A) = alpha dY op(B)^T and d op(B) = alpha op(A)^T dY, each
 * transposed back where the operand was stored transposed; dC is beta dY
 * summed back over C's broadcast dims. */
BD_GRAD(bd_g_gemm)
{
    const bd_node *n = a->n;
    const bd_tensor *A = a->in[0], *B = a->in[1], *C = bd_k_opt(n, a->in, 2);
    const int ta = bd_attr_int(n, "transA", 0) != 0, tb = bd_attr_int(n, "transB", 0) != 0;
    const float alpha = bd_attr_float(n, "alpha", 1.0f), beta = bd_attr_float(n, "beta", 1.0f);
    if (A->ndim != 2 || B->ndim != 2)
        return bd_node_fail(n, BD_EFORMAT, "A and B must be 2-D");
    const int m = (int)a->dy->dims[0], nn = (int)a->dy->dims[1];
    const int k = (int)(ta ? A->dims[0] : A->dims[1]);
    const int lda = (int)A->dims[1], ldb = (int)B->dims[1];
    const float *dy = a->dy->data;
    for (int i = 0; i < 2; i++) {
        if (!a->want[i])
            continue;
        const bd_tensor *x = a->in[i];
        BD_TRY(bd_k_output(n, &din[i], BD_F32, x->ndim, x->dims, 1));
        if (m == 0 || nn == 0 || k == 0)
            continue; /* an empty product: the gradient is zero */
        float *d = din[i]->data;
        if (i == 0 && !ta) /* [m, k] = dY [m, nn] op(B)^T */
            cblas_sgemm(CblasRowMajor, CblasNoTrans, trans(!tb), m, k, nn, alpha, dy, nn,
                        B->data, ldb, 0.0f, d, k);
        else if (i == 0) /* [k, m] = op(B) [k, nn] dY^T */
            cblas_sgemm(CblasRowMajor, trans(tb), CblasTrans, k, m, nn, alpha, B->data, ldb, dy,
                        nn, 0.0f, d, m);
        else if (!tb) /* [k, nn] = op(A)^T [k, m] dY */
            cblas_sgemm(CblasRowMajor, trans(!ta), CblasNoTrans, k, nn, m, alpha, A->data, lda,
                        dy, nn, 0.0f, d, nn);
        else /* [nn, k] = dY^T [nn, m] op(A) */
            cblas_sgemm(CblasRowMajor, CblasTrans, trans(ta), nn, k, m, alpha, dy, nn, A->data,
                        lda, 0.0f, d, k);
    }
    if (n->ninputs > 2 && a->want[2]) /* want has one entry per input */
        BD_TRY(bd_grad_sum_to(n, a->dy, C, beta, &din[2]));
    return BD_OK;
}

/* numpy matmul operands: batch dims, then [rows, cols] (a 1-D left operand
 * is one row, a 1-D right operand one column). */
typedef struct mm_operand {
    const bd_tensor *t;
    int nbatch;
    int64_t rows, cols;
} mm_operand;

static mm_operand mm_operand_of(const bd_tensor *t, int right)
{
    mm_operand o = {.t = t, .nbatch = t->ndim > 2 ? t->ndim - 2 : 0};
    if (t->ndim == 1) {
        o.rows = right ? t->dims[0] : 1;
        o.cols = right ? 1 : t->dims[0];
    } else {
        o.rows = t->dims[t->ndim - 2];
        o.cols = t->dims[t->ndim - 1];
    }
    return o;
}

/* Which matrix of o batch index t (of the broadcast batch dims bdims, rank
 * nb) reads: o's batch dims are right-aligned, size 1 broadcasts. */
static int64_t mm_matrix(const mm_operand *o, int64_t t, int nb, const int64_t *bdims)
{
    int64_t idx = 0, stride = 1;
    for (int i = nb - 1; i >= 0; i--) {
        int64_t at = t % bdims[i];
        t /= bdims[i];
        int oi = i - (nb - o->nbatch);
        if (oi < 0)
            break;
        if (o->t->dims[oi] != 1)
            idx += at * stride;
        stride *= o->t->dims[oi];
    }
    return idx;
}

/* dA[t] += dY[t] B[t]^T and dB[t] += A[t]^T dY[t] over the broadcast batch;
 * where an operand is broadcast, its gradient sums the batches that read it.
 * The batches run in order (several may add into one matrix), each GEMM on
 * BLAS's threads. */
BD_GRAD(bd_g_matmul)
{
    const bd_node *n = a->n;
    mm_operand op[2] = {mm_operand_of(a->in[0], 0), mm_operand_of(a->in[1], 1)};
    const int64_t k = op[0].cols, nn = op[1].cols;
    int64_t m = op[0].rows;
    int nb = op[0].nbatch > op[1].nbatch ? op[0].nbatch : op[1].nbatch;
    int64_t bdims[BD_MAX_DIMS], batches = 1;
    for (int i = 0; i < nb; i++) {
        bdims[i] = 1;
        for (int j = 0; j < 2; j++) {
            int oi = i - (nb - op[j].nbatch);
            if (oi >= 0 && op[j].t->dims[oi] != 1)
                bdims[i] = op[j].t->dims[oi];
        }
        batches *= bdims[i];
    }
    for (int i = 0; i < 2; i++)
        if (a->want[i])
            BD_TRY(bd_k_output(n, &din[i], BD_F32, op[i].t->ndim, op[i].t->dims, 1));
    if (m == 0 || k == 0 || nn == 0)
        return BD_OK;
    if (op[1].nbatch == 0 && op[0].t->ndim >= 2) {
        /* one B for every batch: one GEMM each over all of A's rows, as the
         * forward (gemm.c) */
        m *= batches;
        batches = 1;
    }
    const float *dy = a->dy->data, *av = op[0].t->data, *bv = op[1].t->data;
    for (int64_t t = 0; t < batches; t++) {
        const int64_t ia = mm_matrix(&op[0], t, nb, bdims), ib = mm_matrix(&op[1], t, nb, bdims);
        const float *dyt = dy + t * m * nn;
        if (a->want[0])
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)m, (int)k, (int)nn, 1.0f,
                        dyt, (int)nn, bv + ib * k * nn, (int)nn, 1.0f,
                        (float *)din[0]->data + ia * m * k, (int)k);
        if (a->want[1])
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)k, (int)nn, (int)m, 1.0f,
                        av + ia * m * k, (int)k, dyt, (int)nn, 1.0f,
                        (float *)din[1]->data + ib * k * nn, (int)nn);
    }
    return BD_OK;
}
