/* BatchNormalization's training forward (batch statistics, this rank's or
 * the global batch's) and its backward with batch or with frozen running
 * statistics; the backward of
 * Softmax and LogSoftmax. */
#include <inttypes.h>
#include <math.h>

#include <stdlib.h>
#include <string.h>

#include "dist.h"
#include "grad_kernels.h"

/* X read as [N][C][S], S the product of the spatial dims. */
typedef struct bn_shape {
    int64_t n, c, s;
} bn_shape;

static bd_status bn_shape_of(const bd_node *n, bd_tensor *const *in, bn_shape *sh)
{
    static const char *const names[4] = {"scale", "B", "input_mean", "input_var"};
    const bd_tensor *x = in[0];
    BD_TRY(bd_k_want_f32(n, x, "input X"));
    if (x->ndim < 2)
        return bd_node_fail(n, BD_EINVAL, "input has rank %d; [N, C, ...] expected", x->ndim);
    sh->n = x->dims[0];
    sh->c = x->dims[1];
    sh->s = 1;
    for (int d = 2; d < x->ndim; d++)
        sh->s *= x->dims[d];
    for (int k = 0; k < 4; k++) {
        BD_TRY(bd_k_want_f32(n, in[k + 1], names[k]));
        if (bd_tensor_count(in[k + 1]) != sh->c)
            return bd_node_fail(n, BD_EINVAL,
                                "'%s' has %" PRId64 " elements for %" PRId64 " channels",
                                names[k], bd_tensor_count(in[k + 1]), sh->c);
    }
    return BD_OK;
}

/* Per channel, the sum over the batch of f(x) = x - shift[c], or its
 * square with `square`, in double; over every rank's share with sync. */
static bd_status channel_sums(const bn_shape *sh, const float *xv, const double *shift,
                              int square, int sync, double *out)
{
#pragma omp parallel for schedule(static) if (sh->c * sh->n * sh->s >= BD_PARALLEL_MIN)
    for (int64_t c = 0; c < sh->c; c++) {
        const double m = shift ? shift[c] : 0;
        double sum = 0;
        for (int64_t i = 0; i < sh->n; i++) {
            const float *p = xv + (i * sh->c + c) * sh->s;
            /* `omp simd` lets the sum be split across vector lanes */
#pragma omp simd reduction(+ : sum)
            for (int64_t j = 0; j < sh->s; j++) {
                const double d = p[j] - m;
                sum += square ? d * d : d;
            }
        }
        out[c] = sum;
    }
    return sync ? bd_dist_sum_f64(out, sh->c + 1) : BD_OK;
}

bd_status bd_gf_batchnorm(const bd_graph *g, const bd_node *n, bd_tensor *const *in,
                          bd_tensor **out, bd_saved *saved, const bd_grad_ctx *ctx)
{
    if (!ctx->bn_train)
        return bd_k_batchnorm(g, n, in, out);
    for (int k = 1; k < n->noutputs; k++)
        if (n->outputs[k] >= 0)
            return bd_node_fail(n, BD_EUNSUPPORTED,
                                "the running mean/var outputs are not computed: the trainer "
                                "folds the saved batch statistics into them");
    bn_shape sh;
    BD_TRY(bn_shape_of(n, in, &sh));
    const int sync = ctx->bn_sync && bd_dist_size() > 1;
    const bd_tensor *x = in[0];
    BD_TRY(bd_k_output(n, &saved->t[0], BD_F32, 1, &sh.c, 0));
    BD_TRY(bd_k_output(n, &saved->t[1], BD_F32, 1, &sh.c, 0));
    BD_TRY(bd_k_output(n, &out[0], BD_F32, x->ndim, x->dims, 0));
    /* Two passes, the mean and then the squares about it: the variance
     * does not come out as the difference of two large, nearly equal sums,
     * and every rank shifts by the same, global, mean. The last entry
     * counts the values. */
    double *mu = malloc(2 * ((size_t)sh.c + 1) * sizeof *mu), *var = mu + sh.c + 1;
    if (!mu)
        return bd_fail(BD_ENOMEM, "out of memory");
    mu[sh.c] = var[sh.c] = (double)(sh.n * sh.s);
    bd_status st = channel_sums(&sh, x->data, NULL, 0, sync, mu);
    const double per = mu[sh.c];
    for (int64_t c = 0; st == BD_OK && c < sh.c; c++)
        mu[c] /= per > 0 ? per : 1;
    if (st == BD_OK)
        st = channel_sums(&sh, x->data, mu, 1, sync, var);
    if (st == BD_OK && per == 0)
        st = bd_node_fail(n, BD_EINVAL, "an empty batch has no statistics");
    if (st != BD_OK) {
        free(mu);
        return st;
    }
    saved->count = (int64_t)per;
    const double eps = bd_attr_float(n, "epsilon", 1e-5f);
    const float *xv = x->data, *scale = in[1]->data, *bias = in[2]->data;
    float *yv = out[0]->data, *mean = saved->t[0]->data, *vs = saved->t[1]->data;
#pragma omp parallel for schedule(static) if (sh.c * sh.n * sh.s >= BD_PARALLEL_MIN)
    for (int64_t c = 0; c < sh.c; c++) {
        const double v = var[c] / per, k = scale[c] / sqrt(v + eps);
        const float fa = (float)k, fb = (float)(bias[c] - mu[c] * k);
        mean[c] = (float)mu[c];
        vs[c] = (float)v;
        for (int64_t i = 0; i < sh.n; i++) {
            const int64_t at = (i * sh.c + c) * sh.s;
            for (int64_t j = 0; j < sh.s; j++)
                yv[at + j] = xv[at + j] * fa + fb;
        }
    }
    free(mu);
    return BD_OK;
}

/* With xhat = (x - mean) / sqrt(var + eps) and y = scale * xhat + B:
 *   dB = sum dy, dscale = sum dy * xhat (sums over N and the spatial dims);
 *   frozen statistics: dx = dy * scale / sqrt(var + eps);
 *   batch statistics, which depend on x too, over M = N * S values:
 *   dx = scale / sqrt(var + eps) * (dy - dB / M - xhat * dscale / M). */
BD_GRAD(bd_g_batchnorm)
{
    const bd_node *n = a->n;
    bn_shape sh;
    BD_TRY(bn_shape_of(n, a->in, &sh));
    const int train = a->ctx->bn_train;
    const bd_tensor *mt = a->in[3], *vt = a->in[4];
    if (train) {
        mt = a->saved ? a->saved->t[0] : NULL;
        vt = a->saved ? a->saved->t[1] : NULL;
        if (!mt || !vt || bd_tensor_count(mt) != sh.c || bd_tensor_count(vt) != sh.c)
            return bd_node_fail(n, BD_EINVAL,
                                "in train mode the backward needs the batch statistics its "
                                "training forward saved");
    }
    for (int i = 0; i < 3; i++)
        if (a->want[i])
            BD_TRY(bd_k_output(n, &din[i], BD_F32, a->in[i]->ndim, a->in[i]->dims, 0));
    const double eps = bd_attr_float(n, "epsilon", 1e-5f);
    const int sync = train && a->ctx->bn_sync && bd_dist_size() > 1;
    const double per = (double)(train && a->saved->count > 0 ? a->saved->count : sh.n * sh.s);
    const float *xv = a->in[0]->data, *scale = a->in[1]->data, *dy = a->dy->data;
    const float *mean = mt->data, *var = vt->data;
    float *dx = din[0] ? din[0]->data : NULL, *dscale = din[1] ? din[1]->data : NULL;
    float *dbias = din[2] ? din[2]->data : NULL;
    /* Per channel: the sum of dy, then of dy * (x - mean), this rank's for
     * the parameters' gradients (which are summed with every other
     * parameter's), and with sync the global batch's, which dx depends on. */
    double *sums = malloc(4 * (size_t)sh.c * sizeof *sums + 1), *global = sums;
    if (!sums)
        return bd_fail(BD_ENOMEM, "out of memory");
#pragma omp parallel for schedule(static) if (sh.c * sh.n * sh.s >= BD_PARALLEL_MIN)
    for (int64_t c = 0; c < sh.c; c++) {
        const double mu = mean[c];
        double sdy = 0, sdyx = 0;
        for (int64_t i = 0; i < sh.n; i++) {
            const int64_t at = (i * sh.c + c) * sh.s;
#pragma omp simd reduction(+ : sdy, sdyx)
            for (int64_t j = 0; j < sh.s; j++) {
                sdy += dy[at + j];
                sdyx += dy[at + j] * (xv[at + j] - mu);
            }
        }
        sums[c] = sdy;
        sums[sh.c + c] = sdyx;
    }
    if (sync) {
        global = sums + 2 * sh.c;
        memcpy(global, sums, 2 * (size_t)sh.c * sizeof *sums);
        bd_status st = bd_dist_sum_f64(global, 2 * sh.c);
        if (st != BD_OK) {
            free(sums);
            return st;
        }
    }
#pragma omp parallel for schedule(static) if (sh.c * sh.n * sh.s >= BD_PARALLEL_MIN)
    for (int64_t c = 0; c < sh.c; c++) {
        const double mu = mean[c], rstd = 1 / sqrt(var[c] + eps);
        if (dscale)
            dscale[c] = (float)(sums[sh.c + c] * rstd); /* sum dy * xhat */
        if (dbias)
            dbias[c] = (float)sums[c];
        if (!dx)
            continue;
        const double sdy = global[c], sdyx = global[sh.c + c] * rstd;
        /* dx = k dy + kx (x - mean) + k0, per channel */
        const double k = scale[c] * rstd;
        const double kx = train ? -k * rstd * sdyx / per : 0, k0 = train ? -k * sdy / per : 0;
        const float fk = (float)k, fkx = (float)kx, fk0 = (float)k0, fmu = (float)mu;
        for (int64_t i = 0; i < sh.n; i++) {
            const int64_t at = (i * sh.c + c) * sh.s;
            for (int64_t j = 0; j < sh.s; j++)
                dx[at + j] = fk * dy[at + j] + fkx * (xv[at + j] - fmu) + fk0;
        }
    }
    free(sums);
    return BD_OK;
}

bd_status bd_softmax_rows(const bd_graph *g, const bd_node *n, const bd_tensor *x,
                          int64_t *outer, int64_t *len, int64_t *inner)
{
    int rank = x->ndim > 0 ? x->ndim : 1, axis;
    BD_TRY(bd_k_axis(n, bd_attr_int(n, "axis", g->opset < 13 ? 1 : -1), rank, &axis));
    *outer = *len = *inner = 1;
    for (int d = 0; d < x->ndim; d++) {
        if (d < axis)
            *outer *= x->dims[d];
        else if (d == axis || g->opset < 13)
            *len *= x->dims[d];
        else
            *inner *= x->dims[d];
    }
    return BD_OK;
}

/* y = softmax(x): dx = y (dy - sum dy y). y = log softmax(x):
 * dx = dy - exp(y) sum dy. Sums along each row. */
static bd_status softmax_backward(const bd_grad_args *a, bd_tensor **din, int log_form)
{
    const bd_tensor *y = a->out[0];
    int64_t outer, len, inner;
    BD_TRY(bd_softmax_rows(a->g, a->n, y, &outer, &len, &inner));
    BD_TRY(bd_k_output(a->n, &din[0], BD_F32, y->ndim, y->dims, 0));
    const float *yv = y->data, *dyv = a->dy->data;
    float *dxv = din[0]->data;
    const int64_t rows = outer * inner;
#pragma omp parallel for schedule(static) if (rows * len >= BD_PARALLEL_MIN)
    for (int64_t r = 0; r < rows; r++) {
        const int64_t base = r / inner * len * inner + r % inner;
        const float *yr = yv + base, *dy = dyv + base;
        float *dx = dxv + base;
        double s = 0;
        for (int64_t j = 0; j < len; j++)
            s += log_form ? dy[j * inner] : (double)dy[j * inner] * yr[j * inner];
        for (int64_t j = 0; j < len; j++) {
            const int64_t at = j * inner;
            dx[at] = log_form ? (float)(dy[at] - exp(yr[at]) * s)
                              : (float)(yr[at] * (dy[at] - s));
        }
    }
    return BD_OK;
}

BD_GRAD(bd_g_softmax) { return softmax_backward(a, din, 0); }
BD_GRAD(bd_g_log_softmax) { return softmax_backward(a, din, 1); }

/* Every input element gets dy of its mean over the count averaged: dy
 * read with the reduced dims kept as 1, broadcast back to x's shape. */
BD_GRAD(bd_g_reduce_mean)
{
    const bd_tensor *x = a->in[0];
    int reduced[BD_MAX_DIMS], none;
    BD_TRY(bd_k_reduce_axes(a->g, a->n, a->in, reduced, &none));
    if (none)
        return bd_k_view(a->n, &din[0], a->dy, x->ndim, x->dims);
    int64_t kept[BD_MAX_DIMS], strides[BD_MAX_DIMS], mean_of = 1;
    for (int d = 0; d < x->ndim; d++) {
        kept[d] = reduced[d] ? 1 : x->dims[d];
        mean_of *= reduced[d] ? x->dims[d] : 1;
    }
    bd_tensor *dyk;
    BD_TRY(bd_k_view(a->n, &dyk, a->dy, x->ndim, kept));
    bd_k_broadcast_strides(dyk, x->ndim, strides);
    bd_status st = bd_k_output(a->n, &din[0], BD_F32, x->ndim, x->dims, 0);
    if (st == BD_OK) {
        bd_k_strided_copy(din[0], dyk->data, 0, strides);
        const int64_t count = bd_tensor_count(x);
        const float scale = mean_of ? 1.0f / (float)mean_of : 0.0f;
        float *dx = din[0]->data;
#pragma omp parallel for simd if (count >= BD_PARALLEL_MIN) schedule(static)
        for (int64_t i = 0; i < count; i++)
            dx[i] *= scale;
    }
    bd_tensor_free(dyk);
    return st;
}
