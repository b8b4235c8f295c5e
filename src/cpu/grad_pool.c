/* Backward of the pools. MaxPool's gradient goes to each window's first
 * maximum, found again from the input (the order the forward scans in);
 * AveragePool spreads it evenly over the taps the forward counted. */
#include "conv.h"
#include "grad_kernels.h"

/* A pooling window is a conv's receptive field: conv.h's geometry reads
 * the same kernel_shape, strides, pads, dilations and auto_pad. The output
 * size is the forward's, which ceil_mode may have made one larger (its last
 * windows are cut short by the input's end like any other). */
static bd_status pool_geom(const bd_node *n, const bd_tensor *x, const bd_tensor *y,
                           bd_conv_geom *g)
{
    char sx[96];
    if (x->ndim != 3 && x->ndim != 4)
        return bd_node_fail(n, BD_EUNSUPPORTED,
                            "input %s: the backward handles 1-D and 2-D pools only",
                            bd_shape_str(x->ndim, x->dims, sx, sizeof sx));
    const int64_t *ks;
    if (bd_attr_ints(n, "kernel_shape", &ks) != x->ndim - 2)
        return bd_node_fail(n, BD_EINVAL, "kernel_shape must have %d values", x->ndim - 2);
    /* the weight such a conv would have: [1, C, kernel...] */
    bd_tensor w = {.dtype = BD_F32, .ndim = x->ndim, .dims = {1, x->dims[1]}};
    for (int i = 2; i < x->ndim; i++)
        w.dims[i] = ks[i - 2];
    BD_TRY(bd_conv_geom_from_node(n, x, &w, g));
    g->oh = y->ndim == 4 ? y->dims[2] : 1;
    g->ow = y->dims[y->ndim - 1];
    return BD_OK;
}

static int inside(int64_t v, int64_t lo, int64_t hi) { return v >= lo && v < hi; }

typedef enum pool_kind { POOL_MAX, POOL_AVG, POOL_AVG_PADDED } pool_kind;

/* Output (oy, ox)'s gradient into dx, one plane. */
static void window_backward(const bd_conv_geom *g, pool_kind kind, const float *x, float grad,
                            int64_t oy, int64_t ox, float *dx)
{
    const int64_t y0 = oy * g->sh - g->pad_t, x0 = ox * g->sw - g->pad_l;
    int64_t at = -1, count = 0;
    float best = 0.0f;
    for (int64_t ki = 0; ki < g->kh; ki++)
        for (int64_t kj = 0; kj < g->kw; kj++) {
            int64_t iy = y0 + ki * g->dh, ix = x0 + kj * g->dw;
            if (kind == POOL_AVG_PADDED)
                count += inside(iy, -g->pad_t, g->h + g->pad_b) &&
                         inside(ix, -g->pad_l, g->w + g->pad_r);
            if (!inside(iy, 0, g->h) || !inside(ix, 0, g->w))
                continue;
            count += kind == POOL_AVG;
            if (kind == POOL_MAX && (at < 0 || x[iy * g->w + ix] > best)) {
                at = iy * g->w + ix;
                best = x[at];
            }
        }
    if (kind == POOL_MAX) {
        if (at >= 0)
            dx[at] += grad;
        return;
    }
    if (count == 0)
        return;
    const float share = grad / (float)count;
    for (int64_t ki = 0; ki < g->kh; ki++)
        for (int64_t kj = 0; kj < g->kw; kj++) {
            int64_t iy = y0 + ki * g->dh, ix = x0 + kj * g->dw;
            if (inside(iy, 0, g->h) && inside(ix, 0, g->w))
                dx[iy * g->w + ix] += share;
        }
}

static bd_status pool_backward(const bd_grad_args *a, bd_tensor **din, pool_kind kind)
{
    const bd_tensor *x = a->in[0];
    bd_conv_geom g;
    BD_TRY(pool_geom(a->n, x, a->out[0], &g));
    BD_TRY(bd_k_output(a->n, &din[0], BD_F32, x->ndim, x->dims, 1));
    const int64_t planes = g.n * g.c, plane = g.h * g.w, ohw = g.oh * g.ow;
    const float *xv = x->data, *dy = a->dy->data;
    float *dx = din[0]->data;
    /* plane by plane: overlapping windows add into the same pixels */
#pragma omp parallel for schedule(static) if (planes * ohw * g.kh * g.kw >= BD_PARALLEL_MIN)
    for (int64_t p = 0; p < planes; p++)
        for (int64_t o = 0; o < ohw; o++)
            window_backward(&g, kind, xv + p * plane, dy[p * ohw + o], o / g.ow, o % g.ow,
                            dx + p * plane);
    return BD_OK;
}

BD_GRAD(bd_g_maxpool) { return pool_backward(a, din, POOL_MAX); }

BD_GRAD(bd_g_averagepool)
{
    int padded = bd_attr_int(a->n, "count_include_pad", 0) != 0;
    return pool_backward(a, din, padded ? POOL_AVG_PADDED : POOL_AVG);
}

/* The global pools: one window per [N, C] plane, of any rank. */
static bd_status global_backward(const bd_grad_args *a, bd_tensor **din, pool_kind kind)
{
    const bd_tensor *x = a->in[0];
    if (x->ndim < 2)
        return bd_node_fail(a->n, BD_EINVAL, "input has rank %d; [N, C, ...] expected", x->ndim);
    BD_TRY(bd_k_output(a->n, &din[0], BD_F32, x->ndim, x->dims, kind == POOL_MAX));
    const int64_t planes = x->dims[0] * x->dims[1];
    const int64_t size = planes ? bd_tensor_count(x) / planes : 0;
    const float *xv = x->data, *dy = a->dy->data;
    float *dx = din[0]->data;
#pragma omp parallel for schedule(static) if (planes * size >= BD_PARALLEL_MIN)
    for (int64_t p = 0; p < planes; p++) {
        const float *xp = xv + p * size;
        float *dxp = dx + p * size;
        if (kind == POOL_MAX) {
            int64_t at = 0;
            for (int64_t i = 1; i < size; i++)
                if (xp[i] > xp[at])
                    at = i;
            if (size)
                dxp[at] = dy[p];
        } else {
            const float share = dy[p] / (float)size;
            for (int64_t i = 0; i < size; i++)
                dxp[i] = share;
        }
    }
    return BD_OK;
}

BD_GRAD(bd_g_global_averagepool) { return global_backward(a, din, POOL_AVG); }
BD_GRAD(bd_g_global_maxpool) { return global_backward(a, din, POOL_MAX); }
