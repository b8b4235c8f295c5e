/* The ops on the GPU, forward and backward: the kernels in the .cu files
 * strung together per op. Shapes, attributes and their checks are the
 * CPU's own code run on shape-only headers (bd_dt_header): the conv and
 * pool geometry, broadcasting, softmax's rows, Clip's bounds, and the
 * reshapes, whose CPU kernels only make views; so a node the CPU refuses
 * the GPU refuses with the same message. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cpu/conv_depthwise.h"
#include "cpu/grad_kernels.h"
#include "dev.h"
#include "ops.h"

typedef enum op_kind {
    OP_CONV,
    OP_GEMM,
    OP_BN,
    OP_RELU,
    OP_CLIP,
    OP_ADD,
    OP_MAXPOOL,
    OP_AVGPOOL,
    OP_GAP,
    OP_SOFTMAX,
    OP_LOGSOFTMAX,
    OP_VIEW /* Flatten, Reshape, Squeeze, Unsqueeze, Identity, Dropout */
} op_kind;

typedef struct dop {
    const char *name;
    op_kind kind;
    int host_from; /* inputs from here on are read on the host: constants only */
    int ndiff;     /* inputs [0, ndiff) have gradients (grad.c's table) */
} dop;

static const dop dops[] = {
    {"Conv", OP_CONV, 3, 3},
    {"Gemm", OP_GEMM, 3, 3},
    {"BatchNormalization", OP_BN, 5, 3},
    {"Relu", OP_RELU, 1, 1},
    {"Clip", OP_CLIP, 1, 1},
    {"Add", OP_ADD, 2, 2},
    {"MaxPool", OP_MAXPOOL, 1, 1},
    {"AveragePool", OP_AVGPOOL, 1, 1},
    {"GlobalAveragePool", OP_GAP, 1, 1},
    {"Softmax", OP_SOFTMAX, 1, 1},
    {"LogSoftmax", OP_LOGSOFTMAX, 1, 1},
    {"Flatten", OP_VIEW, 1, 1},
    {"Reshape", OP_VIEW, 1, 1},
    {"Squeeze", OP_VIEW, 1, 1},
    {"Unsqueeze", OP_VIEW, 1, 1},
    {"Identity", OP_VIEW, 1, 1},
    {"Dropout", OP_VIEW, 1, 1},
};

static const dop *dop_of(const char *op)
{
    for (size_t i = 0; i < sizeof dops / sizeof dops[0]; i++)
        if (strcmp(dops[i].name, op) == 0)
            return &dops[i];
    return NULL;
}

int bd_dop_supported(const char *op) { return dop_of(op) != NULL; }

bd_status bd_dop_check(const bd_graph *g, const bd_node *n)
{
    const bd_op *cpu;
    BD_TRY(bd_op_check(g, n, &cpu));
    const dop *op = dop_of(n->op);
    if (!op)
        return bd_node_fail(n, BD_EUNSUPPORTED, "the CUDA backend has no kernel for op '%s'",
                            n->op);
    for (int k = op->host_from; k < n->ninputs; k++) {
        int v = n->inputs[k];
        if (v >= 0 && !g->values[v].init)
            return bd_node_fail(n, BD_EUNSUPPORTED,
                                "input %d ('%s') is computed; the CUDA backend needs it constant",
                                k, g->values[v].name);
    }
    for (int k = 0; k < op->host_from && k < n->ninputs; k++) {
        int v = n->inputs[k];
        const bd_tensor *t = v >= 0 ? g->values[v].init : NULL;
        if (t && t->dtype != BD_F32)
            return bd_node_fail(n, BD_EUNSUPPORTED, "input %d ('%s') is %s; the GPU takes float32",
                                k, g->values[v].name, bd_dtype_name(t->dtype));
    }
    for (int k = 1; k < n->noutputs; k++)
        if (n->outputs[k] >= 0)
            return bd_node_fail(n, BD_EUNSUPPORTED,
                                "output %d ('%s'): the CUDA backend computes output 0 only", k,
                                g->values[n->outputs[k]].name);
    return BD_OK;
}

/* ---- helpers --------------------------------------------------------------------- */

/* The most inputs an op of the table takes (BatchNormalization's 5). */
enum { MAX_INPUTS = 8 };

/* Shape-only host headers of the GPU inputs, and the host's own tensors
 * for the inputs read on the host (constants), as the CPU's code takes
 * them. */
typedef struct headers {
    bd_tensor t[MAX_INPUTS];
    bd_storage st[MAX_INPUTS];
    bd_tensor *in[MAX_INPUTS];
} headers;

static bd_status headers_of(const bd_dop_args *a, headers *h)
{
    const bd_node *n = a->n;
    if (n->ninputs > MAX_INPUTS)
        return bd_node_fail(n, BD_EUNSUPPORTED, "has %d inputs", n->ninputs);
    const dop *op = dop_of(n->op);
    for (int k = 0; k < n->ninputs; k++) {
        h->in[k] = NULL;
        if (n->inputs[k] < 0)
            continue;
        if (k >= op->host_from) {
            h->in[k] = a->g->values[n->inputs[k]].init;
        } else if (a->in[k]) {
            bd_dt_header(a->in[k], &h->t[k], &h->st[k]);
            h->in[k] = &h->t[k];
        } else {
            return bd_node_fail(n, BD_EINVAL, "input %d is not on the GPU", k);
        }
    }
    return BD_OK;
}

static bd_status out_like(const bd_dop_args *a, int ndim, const int64_t *dims, bd_dt **out)
{
    bd_status s = bd_dt_new(a->dev, ndim, dims, out);
    return s == BD_OK ? s : bd_k_in_node(a->n, s);
}

/* Scratch GPU memory for one op. */
static bd_status scratch(const bd_dop_args *a, size_t bytes, void **p)
{
    bd_status s = bd_dev_alloc(a->dev, bytes, p);
    return s == BD_OK ? s : bd_k_in_node(a->n, s);
}

/* Images per im2col chunk: at most 64 Mi floats (256 MiB) of columns. */
static int64_t chunk_images(const bd_conv_geom *g)
{
    const int64_t per = bd_conv_rows(g) * bd_conv_cols(g);
    const int64_t budget = (int64_t)64 << 20;
    int64_t c = per > 0 ? budget / per : g->n;
    if (c < 1)
        c = 1;
    return c < g->n ? c : g->n;
}

/* [N][C][spatial...] as n, c and the spatial size. */
static void ncs(const bd_dt *x, int64_t *n, int64_t *c, int64_t *s)
{
    *n = x->dims[0];
    *c = x->dims[1];
    *s = 1;
    for (int d = 2; d < x->ndim; d++)
        *s *= x->dims[d];
}

/* ---- forward ------------------------------------------------------------------------- */

static bd_status conv_forward(const bd_dop_args *a, headers *h, bd_dt **out)
{
    const bd_node *n = a->n;
    const bd_dt *x = a->in[0], *w = a->in[1], *b = n->ninputs > 2 ? a->in[2] : NULL;
    bd_conv_geom g;
    BD_TRY(bd_conv_geom_from_node(n, h->in[0], h->in[1], &g));
    if (b && bd_dt_count(b) != g.m)
        return bd_node_fail(n, BD_EFORMAT, "bias has %lld values, expected %lld",
                            (long long)bd_dt_count(b), (long long)g.m);
    int64_t dims[4] = {g.n, g.m, g.oh, g.ow};
    if (x->ndim == 3)
        dims[2] = g.ow;
    BD_TRY(out_like(a, x->ndim, dims, out));
    float *y = (*out)->data;
    const int64_t K = bd_conv_rows(&g), ohw = bd_conv_cols(&g), mg = g.m / g.group;
    bd_status s = BD_OK;
    if (bd_conv_is_depthwise(&g)) {
        s = bd_cu_depthwise(&g, x->data, w->data, y);
    } else {
        const int64_t chunk = chunk_images(&g);
        float *cols = NULL;
        size_t bytes = (size_t)(chunk * K * ohw) * sizeof(float);
        s = scratch(a, bytes, (void **)&cols);
        for (int64_t gi = 0; s == BD_OK && gi < g.group; gi++)
            for (int64_t i0 = 0; s == BD_OK && i0 < g.n; i0 += chunk) {
                const int64_t ni = g.n - i0 < chunk ? g.n - i0 : chunk;
                s = bd_cu_im2col(&g, x->data, gi, NULL, i0, ni, cols, K * ohw, ohw);
                /* Y[img][group's channels] = W_g cols[img], one product per image */
                if (s == BD_OK)
                    s = bd_cu_gemm(a->dev->blas, 0, 0, mg, ohw, K, 1.0f, w->data + gi * mg * K, K,
                                   0, cols, ohw, K * ohw, 0.0f, y + (i0 * g.m + gi * mg) * ohw,
                                   ohw, g.m * ohw, ni);
            }
        bd_dev_release(a->dev, cols, bytes);
    }
    if (s == BD_OK && b) { /* y += bias, per output channel */
        bd_cu_strided ys = {.ndim = 3, .dims = {g.n, g.m, ohw}, .strides = {g.m * ohw, ohw, 1}};
        bd_cu_strided bs = {.ndim = 3, .dims = {g.n, g.m, ohw}, .strides = {0, 1, 0}};
        s = bd_cu_add(&ys, y, &bs, b->data, y);
    }
    if (s != BD_OK) {
        bd_dt_free(*out);
        *out = NULL;
        return bd_error_context(s, "node '%s' (Conv)", n->name);
    }
    return BD_OK;
}

/* Gemm's operands: op(A) [m][k], op(B) [k][nn]. */
typedef struct gemm_shape {
    int ta, tb;
    float alpha, beta;
    int64_t m, k, nn, lda, ldb;
} gemm_shape;

static bd_status gemm_shape_of(const bd_node *n, const bd_dt *A, const bd_dt *B, gemm_shape *gs)
{
    if (A->ndim != 2 || B->ndim != 2)
        return bd_node_fail(n, BD_EFORMAT, "A and B must be 2-D");
    gs->ta = bd_attr_int(n, "transA", 0) != 0;
    gs->tb = bd_attr_int(n, "transB", 0) != 0;
    gs->alpha = bd_attr_float(n, "alpha", 1.0f);
    gs->beta = bd_attr_float(n, "beta", 1.0f);
    gs->m = gs->ta ? A->dims[1] : A->dims[0];
    gs->k = gs->ta ? A->dims[0] : A->dims[1];
    gs->nn = gs->tb ? B->dims[0] : B->dims[1];
    gs->lda = A->dims[1];
    gs->ldb = B->dims[1];
    if ((gs->tb ? B->dims[1] : B->dims[0]) != gs->k)
        return bd_node_fail(n, BD_EFORMAT, "A and B do not agree (transA=%d transB=%d)", gs->ta,
                            gs->tb);
    return BD_OK;
}

static bd_status gemm_forward(const bd_dop_args *a, headers *h, bd_dt **out)
{
    const bd_node *n = a->n;
    const bd_dt *A = a->in[0], *B = a->in[1], *C = n->ninputs > 2 ? a->in[2] : NULL;
    gemm_shape gs;
    BD_TRY(gemm_shape_of(n, A, B, &gs));
    int64_t dims[2] = {gs.m, gs.nn};
    BD_TRY(out_like(a, 2, dims, out));
    float *y = (*out)->data;
    float beta = 0.0f;
    bd_status s = BD_OK;
    if (C && gs.beta != 0.0f) { /* y = beta C, broadcast (unidirectionally) to [m, nn] */
        int nd;
        int64_t bdims[BD_MAX_DIMS];
        s = bd_k_broadcast_shape(n, h->in[2]->ndim, h->in[2]->dims, 2, dims, &nd, bdims);
        if (s == BD_OK && (nd != 2 || bdims[0] != gs.m || bdims[1] != gs.nn))
            s = bd_node_fail(n, BD_EFORMAT, "C cannot broadcast to [%lld, %lld]",
                             (long long)gs.m, (long long)gs.nn);
        bd_cu_strided cs = {.ndim = 2, .dims = {gs.m, gs.nn}};
        if (s == BD_OK) {
            bd_k_broadcast_strides(h->in[2], 2, cs.strides);
            s = bd_cu_broadcast(&cs, C->data, gs.beta, y);
        }
        beta = 1.0f;
    }
    if (s == BD_OK && gs.k == 0 && beta == 0.0f)
        s = bd_cu_zero(y, (size_t)(gs.m * gs.nn) * sizeof *y);
    if (s == BD_OK && gs.k > 0)
        s = bd_cu_gemm(a->dev->blas, gs.ta, gs.tb, gs.m, gs.nn, gs.k, gs.alpha, A->data, gs.lda, 0,
                       B->data, gs.ldb, 0, beta, y, gs.nn, 0, 1);
    if (s != BD_OK) {
        bd_dt_free(*out);
        *out = NULL;
        return bd_k_in_node(n, s);
    }
    return BD_OK;
}

static bd_status bn_check(const bd_dop_args *a)
{
    const bd_node *n = a->n;
    const bd_dt *x = a->in[0];
    if (x->ndim < 2)
        return bd_node_fail(n, BD_EINVAL, "input has rank %d; [N, C, ...] expected", x->ndim);
    for (int k = 1; k <= 4; k++)
        if (!a->in[k] || bd_dt_count(a->in[k]) != x->dims[1])
            return bd_node_fail(n, BD_EINVAL, "parameter %d must hold %lld values", k,
                                (long long)x->dims[1]);
    return BD_OK;
}

/* grad_norm.c's training forward: the batch's mean and variance (the
 * job's with bn_sync) into saved, ab as bd_cu_bn_frozen's, the running
 * statistics moved toward them. The caller names the node in a failure. */
static bd_status bn_batch(const bd_dop_args *a, int64_t bn, int64_t c, int64_t sp, double eps,
                          bd_dt **saved, float *ab)
{
    const bd_dt *x = a->in[0];
    double *sums = NULL, *squares;
    const size_t bytes = 2 * ((size_t)c + 1) * sizeof *sums;
    BD_TRY(bd_dev_alloc(a->dev, bytes, (void **)&sums));
    squares = sums + c + 1;
    bd_status s = bd_dt_new(a->dev, 1, &c, &saved[0]);
    if (s == BD_OK)
        s = bd_dt_new(a->dev, 1, &c, &saved[1]);
    /* the mean, then the squares about it: every rank shifts by the global mean */
    if (s == BD_OK)
        s = bd_cu_bn_sums(x->data, bn, c, sp, NULL, sums);
    if (s == BD_OK && a->bn_sync)
        s = bd_dev_sum_f64(sums, c + 1);
    if (s == BD_OK)
        s = bd_cu_bn_sums(x->data, bn, c, sp, sums, squares);
    if (s == BD_OK && a->bn_sync)
        s = bd_dev_sum_f64(squares, c + 1);
    if (s == BD_OK)
        s = bd_cu_bn_stats(sums, squares, c, a->in[1]->data, a->in[2]->data, eps,
                           saved[0]->data, saved[1]->data, ab);
    if (s == BD_OK && a->bn_momentum > 0)
        s = bd_cu_bn_running(a->in[3]->data, a->in[4]->data, saved[0]->data, saved[1]->data, c,
                             a->bn_momentum, sums + c);
    bd_dev_release(a->dev, sums, bytes);
    return s;
}

static bd_status bn_forward(const bd_dop_args *a, bd_dt **out, bd_dt **saved)
{
    const bd_node *n = a->n;
    const bd_dt *x = a->in[0];
    BD_TRY(bn_check(a));
    if (!a->bn_train && bd_attr_int(n, "training_mode", 0))
        return bd_node_fail(n, BD_EUNSUPPORTED, "training mode is not supported");
    int64_t bn, c, sp;
    ncs(x, &bn, &c, &sp);
    if (a->bn_train && bn * sp == 0)
        return bd_node_fail(n, BD_EINVAL, "an empty batch has no statistics");
    const float eps = bd_attr_float(n, "epsilon", 1e-5f);
    const float *scale = a->in[1]->data, *bias = a->in[2]->data;
    float *ab = NULL;
    size_t bytes = 2 * (size_t)c * sizeof *ab;
    bd_status s = scratch(a, bytes, (void **)&ab);
    if (s == BD_OK && a->bn_train) {
        s = bn_batch(a, bn, c, sp, (double)eps, saved, ab);
    } else if (s == BD_OK) {
        s = bd_cu_bn_frozen(c, scale, bias, a->in[3]->data, a->in[4]->data, eps, ab);
    }
    if (s == BD_OK)
        s = out_like(a, x->ndim, x->dims, out);
    if (s == BD_OK && (s = bd_cu_bn_apply(x->data, bn, c, sp, ab, (*out)->data)) != BD_OK) {
        bd_dt_free(*out);
        *out = NULL;
    }
    bd_dev_release(a->dev, ab, bytes);
    return s == BD_OK ? s : bd_k_in_node(n, s);
}

static bd_cu_pool_kind pool_kind_of(const bd_node *n, op_kind kind)
{
    return kind == OP_MAXPOOL                            ? BD_CU_POOL_MAX
           : bd_attr_int(n, "count_include_pad", 0) != 0 ? BD_CU_POOL_AVG_PAD
                                                         : BD_CU_POOL_AVG;
}

static bd_status pool_forward(const bd_dop_args *a, headers *h, op_kind kind, bd_dt **out)
{
    const bd_dt *x = a->in[0];
    bd_pool_geom pg;
    BD_TRY(bd_pool_geometry(a->n, h->in[0], &pg));
    int64_t dims[2 + BD_POOL_SPATIAL] = {x->dims[0], x->dims[1]};
    const int sp = x->ndim - 2;
    memcpy(dims + 2, pg.out + BD_POOL_SPATIAL - sp, (size_t)sp * sizeof *dims);
    BD_TRY(out_like(a, x->ndim, dims, out));
    bd_status s = bd_cu_pool(&pg, x->dims[0] * x->dims[1], pool_kind_of(a->n, kind), x->data,
                             (*out)->data);
    if (s != BD_OK) {
        bd_dt_free(*out);
        *out = NULL;
    }
    return bd_k_in_node(a->n, s);
}

static bd_status gap_forward(const bd_dop_args *a, bd_dt **out)
{
    const bd_dt *x = a->in[0];
    if (x->ndim < 2)
        return bd_node_fail(a->n, BD_EINVAL, "input has rank %d; [N, C, ...] expected", x->ndim);
    int64_t dims[BD_MAX_DIMS], n, c, sp;
    for (int d = 0; d < x->ndim; d++)
        dims[d] = d < 2 ? x->dims[d] : 1;
    ncs(x, &n, &c, &sp);
    BD_TRY(out_like(a, x->ndim, dims, out));
    bd_status s = bd_cu_global_avg(n * c, sp, x->data, (*out)->data);
    if (s != BD_OK) {
        bd_dt_free(*out);
        *out = NULL;
    }
    return bd_k_in_node(a->n, s);
}

static bd_status softmax_forward(const bd_dop_args *a, headers *h, int log_form, bd_dt **out)
{
    const bd_dt *x = a->in[0];
    int64_t outer, len, inner;
    BD_TRY(bd_softmax_rows(a->g, a->n, h->in[0], &outer, &len, &inner));
    BD_TRY(out_like(a, x->ndim, x->dims, out));
    bd_status s = bd_cu_softmax(x->data, outer, len, inner, log_form, (*out)->data);
    if (s != BD_OK) {
        bd_dt_free(*out);
        *out = NULL;
    }
    return bd_k_in_node(a->n, s);
}

/* The reshapes: the CPU kernel, run on the header, gives the shape. */
static bd_status view_forward(const bd_dop_args *a, headers *h, bd_dt **out)
{
    bd_tensor *hout[2] = {NULL, NULL};
    BD_TRY(bd_op_run(a->g, a->n, h->in, hout));
    bd_status s = bd_k_in_node(a->n, bd_dt_view(a->in[0], hout[0]->ndim, hout[0]->dims, out));
    bd_tensor_free(hout[0]);
    bd_tensor_free(hout[1]);
    return s;
}

static bd_status add_forward(const bd_dop_args *a, headers *h, bd_dt **out)
{
    bd_cu_strided sa = {0}, sb = {0};
    BD_TRY(bd_k_broadcast_shape(a->n, h->in[0]->ndim, h->in[0]->dims, h->in[1]->ndim,
                                h->in[1]->dims, &sa.ndim, sa.dims));
    sb.ndim = sa.ndim;
    memcpy(sb.dims, sa.dims, sizeof sb.dims);
    bd_k_broadcast_strides(h->in[0], sa.ndim, sa.strides);
    bd_k_broadcast_strides(h->in[1], sb.ndim, sb.strides);
    BD_TRY(out_like(a, sa.ndim, sa.dims, out));
    bd_status s = bd_cu_add(&sa, a->in[0]->data, &sb, a->in[1]->data, (*out)->data);
    if (s != BD_OK) {
        bd_dt_free(*out);
        *out = NULL;
    }
    return bd_k_in_node(a->n, s);
}

static bd_status unary_forward(const bd_dop_args *a, headers *h, op_kind kind, bd_dt **out)
{
    const bd_dt *x = a->in[0];
    float lo = 0, hi = 0;
    if (kind == OP_CLIP)
        BD_TRY(bd_k_clip_bounds(a->g, a->n, h->in, &lo, &hi));
    BD_TRY(out_like(a, x->ndim, x->dims, out));
    const int64_t count = bd_dt_count(x);
    bd_status s = kind == OP_RELU ? bd_cu_relu(x->data, count, (*out)->data)
                                  : bd_cu_clip(x->data, count, lo, hi, (*out)->data);
    if (s != BD_OK) {
        bd_dt_free(*out);
        *out = NULL;
    }
    return bd_k_in_node(a->n, s);
}

bd_status bd_dop_forward(const bd_dop_args *a, bd_dt **out, bd_dt **saved)
{
    *out = NULL;
    for (int i = 0; i < BD_DSAVED; i++)
        saved[i] = NULL;
    const dop *op = dop_of(a->n->op);
    if (!op)
        return bd_node_fail(a->n, BD_EUNSUPPORTED, "the CUDA backend has no kernel for op '%s'",
                            a->n->op);
    headers h;
    BD_TRY(headers_of(a, &h));
    bd_status s;
    switch (op->kind) {
    case OP_CONV: s = conv_forward(a, &h, out); break;
    case OP_GEMM: s = gemm_forward(a, &h, out); break;
    case OP_BN: s = bn_forward(a, out, saved); break;
    case OP_RELU:
    case OP_CLIP: s = unary_forward(a, &h, op->kind, out); break;
    case OP_ADD: s = add_forward(a, &h, out); break;
    case OP_MAXPOOL:
    case OP_AVGPOOL: s = pool_forward(a, &h, op->kind, out); break;
    case OP_GAP: s = gap_forward(a, out); break;
    case OP_SOFTMAX:
    case OP_LOGSOFTMAX: s = softmax_forward(a, &h, op->kind == OP_LOGSOFTMAX, out); break;
    default: s = view_forward(a, &h, out); break;
    }
    if (s != BD_OK)
        for (int i = 0; i < BD_DSAVED; i++) {
            bd_dt_free(saved[i]);
            saved[i] = NULL;
        }
    return s;
}

/* ---- backward ------------------------------------------------------------------------ */

static bd_status conv_backward(const bd_dop_args *a, headers *h, const bd_dt *dy,
                               const unsigned char *want, bd_dt **din)
{
    const bd_node *n = a->n;
    const bd_dt *x = a->in[0], *w = a->in[1];
    bd_conv_geom g;
    BD_TRY(bd_conv_geom_from_node(n, h->in[0], h->in[1], &g));
    const int64_t K = bd_conv_rows(&g), ohw = bd_conv_cols(&g), mg = g.m / g.group;
    bd_status s = BD_OK;
    if (n->ninputs > 2 && want[2]) { /* [M]: dy summed over N and the spatial dims */
        int64_t dims[BD_MAX_DIMS];
        for (int d = 0; d < dy->ndim - 1; d++)
            dims[d] = d ? 1 : g.m;
        s = out_like(a, 1, &g.m, &din[2]);
        if (s == BD_OK)
            s = bd_cu_sum_to(dy->ndim, dy->dims, dy->data, dy->ndim - 1, dims, 1.0f,
                             din[2]->data);
    }
    if (s == BD_OK && want[0])
        s = out_like(a, x->ndim, x->dims, &din[0]);
    if (s == BD_OK && want[1])
        s = bd_k_in_node(n, bd_dt_zeros(a->dev, w->ndim, w->dims, &din[1]));
    float *dx = din[0] ? din[0]->data : NULL, *dw = din[1] ? din[1]->data : NULL;
    if (s == BD_OK && bd_conv_is_depthwise(&g)) {
        if (dx)
            s = bd_cu_depthwise_dx(&g, w->data, dy->data, dx);
        if (s == BD_OK && dw)
            s = bd_cu_depthwise_dw(&g, x->data, dy->data, dw);
    } else if (s == BD_OK && (dx || dw)) {
        const int64_t chunk = chunk_images(&g);
        float *cols = NULL;
        size_t bytes = (size_t)(chunk * K * ohw) * sizeof(float);
        s = scratch(a, bytes, (void **)&cols);
        for (int64_t gi = 0; s == BD_OK && gi < g.group; gi++)
            for (int64_t i0 = 0; s == BD_OK && i0 < g.n; i0 += chunk) {
                const int64_t ni = g.n - i0 < chunk ? g.n - i0 : chunk;
                const float *dyg = dy->data + (i0 * g.m + gi * mg) * ohw;
                /* dW_g += dY_g[img] cols[img]^T, image by image */
                if (dw)
                    s = bd_cu_im2col(&g, x->data, gi, NULL, i0, ni, cols, K * ohw, ohw);
                for (int64_t i = 0; dw && s == BD_OK && i < ni; i++)
                    s = bd_cu_gemm(a->dev->blas, 0, 1, mg, K, ohw, 1.0f, dyg + i * g.m * ohw, ohw,
                                   0, cols + i * K * ohw, ohw, 0, 1.0f, dw + gi * mg * K, K, 0, 1);
                /* cols[img] = W_g^T dY_g[img], then col2im into dX */
                if (dx && s == BD_OK)
                    s = bd_cu_gemm(a->dev->blas, 1, 0, K, ohw, mg, 1.0f, w->data + gi * mg * K, K,
                                   0, dyg, ohw, g.m * ohw, 0.0f, cols, ohw, K * ohw, ni);
                if (dx && s == BD_OK)
                    s = bd_cu_col2im(&g, cols, gi, i0, ni, dx);
            }
        bd_dev_release(a->dev, cols, bytes);
    }
    return s == BD_OK ? s : bd_error_context(s, "node '%s' (Conv)", n->name);
}

/* The gradient of an operand of shape `like` broadcast to dy's: a view of
 * dy when nothing is summed or scaled (and may_view), else a sum. */
static bd_status sum_to(const bd_dop_args *a, const bd_dt *dy, const bd_dt *like, float scale,
                        int may_view, bd_dt **out)
{
    int same = like->ndim == dy->ndim &&
               memcmp(like->dims, dy->dims, (size_t)dy->ndim * sizeof *dy->dims) == 0;
    if (same && scale == 1.0f && may_view)
        return bd_k_in_node(a->n, bd_dt_view(dy, like->ndim, like->dims, out));
    BD_TRY(out_like(a, like->ndim, like->dims, out));
    bd_status s = same && scale == 1.0f
                      ? bd_cu_copy((*out)->data, dy->data, (size_t)bd_dt_count(dy) * sizeof(float))
                      : bd_cu_sum_to(dy->ndim, dy->dims, dy->data, like->ndim, like->dims, scale,
                                     (*out)->data);
    return bd_k_in_node(a->n, s);
}

/* grad_gemm.c's four products. */
static bd_status gemm_backward(const bd_dop_args *a, const bd_dt *dy, const unsigned char *want,
                               bd_dt **din)
{
    const bd_node *n = a->n;
    const bd_dt *A = a->in[0], *B = a->in[1];
    gemm_shape gs;
    BD_TRY(gemm_shape_of(n, A, B, &gs));
    bd_cu_blas *h = a->dev->blas;
    const int64_t m = gs.m, k = gs.k, nn = gs.nn;
    bd_status s = BD_OK;
    for (int i = 0; i < 2 && s == BD_OK; i++) {
        if (!want[i])
            continue;
        const bd_dt *x = a->in[i];
        s = bd_k_in_node(n, bd_dt_zeros(a->dev, x->ndim, x->dims, &din[i]));
        if (s != BD_OK || m == 0 || nn == 0 || k == 0)
            continue; /* an empty product: the gradient is zero */
        float *d = din[i]->data;
        if (i == 0 && !gs.ta) /* [m, k] = dY [m, nn] op(B)^T */
            s = bd_cu_gemm(h, 0, !gs.tb, m, k, nn, gs.alpha, dy->data, nn, 0, B->data, gs.ldb, 0,
                           0.0f, d, k, 0, 1);
        else if (i == 0) /* [k, m] = op(B) [k, nn] dY^T */
            s = bd_cu_gemm(h, gs.tb, 1, k, m, nn, gs.alpha, B->data, gs.ldb, 0, dy->data, nn, 0,
                           0.0f, d, m, 0, 1);
        else if (!gs.tb) /* [k, nn] = op(A)^T [k, m] dY */
            s = bd_cu_gemm(h, !gs.ta, 0, k, nn, m, gs.alpha, A->data, gs.lda, 0, dy->data, nn, 0,
                           0.0f, d, nn, 0, 1);
        else /* [nn, k] = dY^T [nn, m] op(A) */
            s = bd_cu_gemm(h, 1, gs.ta, nn, k, m, gs.alpha, dy->data, nn, 0, A->data, gs.lda, 0,
                           0.0f, d, k, 0, 1);
        s = bd_k_in_node(n, s);
    }
    if (s == BD_OK && n->ninputs > 2 && want[2])
        s = sum_to(a, dy, a->in[2], gs.beta, 1, &din[2]);
    return s;
}

static bd_status bn_backward(const bd_dop_args *a, bd_dt *const *saved, const bd_dt *dy,
                             const unsigned char *want, bd_dt **din)
{
    const bd_node *n = a->n;
    BD_TRY(bn_check(a));
    const bd_dt *x = a->in[0], *mean = a->in[3], *var = a->in[4];
    if (a->bn_train) {
        mean = saved[0];
        var = saved[1];
        if (!mean || !var)
            return bd_node_fail(n, BD_EINVAL,
                                "in train mode the backward needs the batch statistics its "
                                "training forward saved");
    }
    for (int i = 0; i < 3; i++)
        if (want[i])
            BD_TRY(out_like(a, a->in[i]->ndim, a->in[i]->dims, &din[i]));
    int64_t bn, c, sp;
    ncs(x, &bn, &c, &sp);
    const double eps = bd_attr_float(n, "epsilon", 1e-5f);
    /* this rank's sums for dscale and dbias (summed later with every other
     * gradient), the job's for dx, which depends on the whole batch */
    double *local = NULL, *global;
    const size_t bytes = 2 * (2 * (size_t)c + 1) * sizeof *local;
    BD_TRY(scratch(a, bytes, (void **)&local));
    global = local;
    bd_status s = bd_cu_bn_grad_sums(x->data, dy->data, bn, c, sp, mean->data, local);
    if (s == BD_OK && a->bn_train && a->bn_sync) {
        global = local + 2 * c + 1;
        s = bd_cu_copy(global, local, bytes / 2);
        if (s == BD_OK)
            s = bd_dev_sum_f64(global, 2 * c + 1);
    }
    if (s == BD_OK)
        s = bd_cu_bn_backward(x->data, dy->data, bn, c, sp, a->in[1]->data, mean->data,
                              var->data, eps, a->bn_train, local, global,
                              din[0] ? din[0]->data : NULL, din[1] ? din[1]->data : NULL,
                              din[2] ? din[2]->data : NULL);
    bd_dev_release(a->dev, local, bytes);
    return bd_k_in_node(n, s);
}

bd_status bd_dop_backward(const bd_dop_args *a, const bd_dt *y, bd_dt *const *saved,
                          const bd_dt *dy, const unsigned char *want, bd_dt **din)
{
    const bd_node *n = a->n;
    for (int k = 0; k < n->ninputs; k++)
        din[k] = NULL;
    const dop *op = dop_of(n->op);
    if (!op)
        return bd_node_fail(n, BD_EUNSUPPORTED, "the CUDA backend has no backward for op '%s'",
                            n->op);
    int wanted = 0;
    for (int k = 0; k < n->ninputs; k++) {
        if (want[k] && (k >= op->ndiff || !a->in[k]))
            return bd_node_fail(n, BD_EINVAL, "input %d has no gradient", k);
        wanted |= want[k];
    }
    if (!wanted)
        return BD_OK;
    headers h;
    BD_TRY(headers_of(a, &h));
    const bd_dt *x = a->in[0];
    const int64_t count = bd_dt_count(x);
    bd_status s = BD_OK;
    /* the single-input ops: input 0 is the one wanted */
    if (op->ndiff == 1 && op->kind != OP_VIEW)
        s = out_like(a, x->ndim, x->dims, &din[0]);
    if (s != BD_OK)
        return s;
    switch (op->kind) {
    case OP_CONV: s = conv_backward(a, &h, dy, want, din); break;
    case OP_GEMM: s = gemm_backward(a, dy, want, din); break;
    case OP_BN: s = bn_backward(a, saved, dy, want, din); break;
    case OP_RELU:
        s = bd_k_in_node(n, bd_cu_relu_backward(y->data, dy->data, count, din[0]->data));
        break;
    case OP_CLIP:
        s = bd_k_in_node(n, bd_cu_clip_backward(x->data, y->data, dy->data, count, din[0]->data));
        break;
    case OP_ADD: /* at most one view of dy (the trainer may add into it) */
        for (int i = 0, viewed = 0; i < 2 && s == BD_OK; i++)
            if (want[i]) {
                s = sum_to(a, dy, a->in[i], 1.0f, !viewed, &din[i]);
                viewed |= s == BD_OK && din[i]->buf == dy->buf;
            }
        break;
    case OP_MAXPOOL:
    case OP_AVGPOOL: {
        bd_pool_geom pg;
        s = bd_pool_geometry(n, h.in[0], &pg);
        if (s == BD_OK)
            s = bd_k_in_node(n, bd_cu_pool_backward(&pg, x->dims[0] * x->dims[1],
                                                    pool_kind_of(n, op->kind), x->data, dy->data,
                                                    din[0]->data));
        break;
    }
    case OP_GAP: {
        int64_t bn, c, sp;
        ncs(x, &bn, &c, &sp);
        s = bd_k_in_node(n, bd_cu_global_avg_backward(bn * c, sp, dy->data, din[0]->data));
        break;
    }
    case OP_SOFTMAX:
    case OP_LOGSOFTMAX: {
        int64_t outer, len, inner;
        s = bd_softmax_rows(a->g, n, h.in[0], &outer, &len, &inner);
        if (s == BD_OK)
            s = bd_k_in_node(n, bd_cu_softmax_backward(y->data, dy->data, outer, len, inner,
                                                       op->kind == OP_LOGSOFTMAX, din[0]->data));
        break;
    }
    default: /* the reshapes keep every element in place */
        if (want[0])
            s = bd_k_in_node(n, bd_dt_view(dy, x->ndim, x->dims, &din[0]));
        break;
    }
    if (s != BD_OK)
        for (int k = 0; k < n->ninputs; k++) {
            bd_dt_free(din[k]);
            din[k] = NULL;
        }
    return s;
}
