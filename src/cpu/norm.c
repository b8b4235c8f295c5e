/* Normalisation and reduction: BatchNormalization (inference), Softmax,
 * LogSoftmax and ReduceMean. */
#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kernel_util.h"

BD_KERNEL(bd_k_batchnorm)
{
    (void)g;
    const bd_tensor *x = in[0];
    static const char *const names[4] = {"scale", "B", "input_mean", "input_var"};
    BD_TRY(bd_k_want_f32(n, x, "input X"));
    if (x->ndim < 2)
        return bd_node_fail(n, BD_EINVAL, "input has rank %d; [N, C, ...] expected", x->ndim);
    if (bd_attr_int(n, "training_mode", 0))
        return bd_node_fail(n, BD_EUNSUPPORTED, "training mode is not supported");
    for (int k = 1; k < n->noutputs; k++)
        if (n->outputs[k] >= 0)
            return bd_node_fail(n, BD_EUNSUPPORTED,
                                "the running mean/var outputs exist only in training mode");
    int64_t channels = x->dims[1];
    for (int k = 0; k < 4; k++) {
        BD_TRY(bd_k_want_f32(n, in[k + 1], names[k]));
        if (bd_tensor_count(in[k + 1]) != channels)
            return bd_node_fail(n, BD_EINVAL, "'%s' has %" PRId64 " elements for %" PRId64
                                " channels", names[k], bd_tensor_count(in[k + 1]), channels);
    }
    float eps = bd_attr_float(n, "epsilon", 1e-5f);
    const float *scale = in[1]->data, *bias = in[2]->data, *mean = in[3]->data,
                *var = in[4]->data;
    /* y = x * a + b per channel: folding the four vectors once keeps the
     * inner loop to one multiply-add. */
    float *ab = malloc((size_t)(2 * channels + 1) * sizeof *ab);
    if (!ab)
        return bd_node_fail(n, BD_ENOMEM, "out of memory");
    for (int64_t c = 0; c < channels; c++) {
        ab[c] = scale[c] / sqrtf(var[c] + eps);
        ab[channels + c] = bias[c] - mean[c] * ab[c];
    }
    bd_status st = bd_k_output(n, out, BD_F32, x->ndim, x->dims, 0);
    if (st == BD_OK) {
        int64_t planes = x->dims[0] * channels;
        int64_t size = planes ? bd_tensor_count(x) / planes : 0;
        const float *xd = x->data;
        float *yd = out[0]->data;
#pragma omp parallel for if (planes * size >= BD_PARALLEL_MIN) schedule(static)
        for (int64_t p = 0; p < planes; p++) {
            float a = ab[p % channels], b = ab[channels + p % channels];
            for (int64_t i = 0; i < size; i++)
                yd[p * size + i] = xd[p * size + i] * a + b;
        }
    }
    free(ab);
    return st;
}

/* Softmax or its log over rows of len elements, inner apart: the layout both
 * the pre-13 (coerced to 2-D, inner 1) and the per-axis forms reduce to. */
static bd_status softmax(const bd_graph *g, const bd_node *n, const bd_tensor *x,
                         bd_tensor **out, int log_form)
{
    BD_TRY(bd_k_want_f32(n, x, "input"));
    int rank = x->ndim > 0 ? x->ndim : 1;
    int axis;
    BD_TRY(bd_k_axis(n, bd_attr_int(n, "axis", g->opset < 13 ? 1 : -1), rank, &axis));
    int64_t outer = 1, len = 1, inner = 1;
    for (int d = 0; d < x->ndim; d++) {
        if (d < axis)
            outer *= x->dims[d];
        else if (d == axis || g->opset < 13)
            len *= x->dims[d];
        else
            inner *= x->dims[d];
    }
    BD_TRY(bd_k_output(n, out, BD_F32, x->ndim, x->dims, 0));
    const float *xd = x->data;
    float *yd = out[0]->data;
    int64_t rows = outer * inner;
#pragma omp parallel for if (rows * len >= BD_PARALLEL_MIN) schedule(static)
    for (int64_t r = 0; r < rows; r++) {
        int64_t base = r / inner * len * inner + r % inner;
        const float *xr = xd + base;
        float *yr = yd + base;
        float max = -INFINITY;
        for (int64_t j = 0; j < len; j++)
            if (xr[j * inner] > max)
                max = xr[j * inner];
        double sum = 0;
        for (int64_t j = 0; j < len; j++) {
            float e = expf(xr[j * inner] - max);
            sum += e;
            if (!log_form)
                yr[j * inner] = e;
        }
        if (log_form) {
            float shift = max + (float)log(sum);
            for (int64_t j = 0; j < len; j++)
                yr[j * inner] = xr[j * inner] - shift;
        } else {
            float scale = (float)(1 / sum);
            for (int64_t j = 0; j < len; j++)
                yr[j * inner] *= scale;
        }
    }
    return BD_OK;
}

BD_KERNEL(bd_k_softmax) { return softmax(g, n, in[0], out, 0); }
BD_KERNEL(bd_k_log_softmax) { return softmax(g, n, in[0], out, 1); }

bd_status bd_k_reduce_axes(const bd_graph *g, const bd_node *n, bd_tensor *const *in,
                           int *reduced, int *none)
{
    const bd_tensor *x = in[0];
    int64_t axes[BD_MAX_DIMS];
    int naxes;
    /* Opset 18 moved axes from an attribute to an optional input. */
    BD_TRY(bd_k_int_list(n, g->opset >= 18, bd_k_opt(n, in, 1), "axes", axes, BD_MAX_DIMS,
                         &naxes));
    *none = naxes <= 0 && g->opset >= 18 && bd_attr_int(n, "noop_with_empty_axes", 0);
    if (*none)
        return BD_OK;
    BD_TRY(bd_k_axes(n, axes, naxes > 0 ? naxes : 0, x->ndim));
    for (int d = 0; d < x->ndim; d++)
        reduced[d] = naxes <= 0;
    for (int i = 0; i < naxes; i++)
        reduced[axes[i]] = 1;
    return BD_OK;
}

/* Eight sums side by side along a contiguous run: one chain of dependent
 * double adds waited 4 cycles a value (ConvNeXt's LayerNorms, two means a
 * row, were 3 % of its time). */
double bd_k_sum(const float *x, int64_t n, int64_t stride)
{
    double sum = 0;
    int64_t j = 0;
    if (stride == 1 && n >= 16) {
        double acc[8] = {0};
        for (; j + 8 <= n; j += 8) {
#pragma omp simd
            for (int u = 0; u < 8; u++)
                acc[u] += x[j + u];
        }
        sum = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
    }
    for (; j < n; j++)
        sum += x[j * stride];
    return sum;
}

BD_KERNEL(bd_k_reduce_mean)
{
    const bd_tensor *x = in[0];
    BD_TRY(bd_k_want_f32(n, x, "input"));
    int reduced[BD_MAX_DIMS], none;
    BD_TRY(bd_k_reduce_axes(g, n, in, reduced, &none));
    if (none)
        return bd_k_view(n, out, x, x->ndim, x->dims);
    int keepdims = bd_attr_int(n, "keepdims", 1) != 0;
    int64_t odims[BD_MAX_DIMS];
    int ond = 0;
    /* Kept and reduced dims, each as (size, input stride); adjacent dims of
     * the same kind merge, so a reduction over H, W is one contiguous run. */
    int64_t kdim[BD_MAX_DIMS], kstride[BD_MAX_DIMS], rdim[BD_MAX_DIMS], rstride[BD_MAX_DIMS];
    int nk = 0, nr = 0, last = -1;
    int64_t strides[BD_MAX_DIMS], rcount = 1;
    bd_k_strides(x->ndim, x->dims, strides);
    for (int d = 0; d < x->ndim; d++) {
        if (!reduced[d] || keepdims)
            odims[ond++] = reduced[d] ? 1 : x->dims[d];
        if (reduced[d])
            rcount *= x->dims[d];
        if (x->dims[d] == 1)
            continue;
        int64_t *dim = reduced[d] ? rdim : kdim, *stride = reduced[d] ? rstride : kstride;
        int *count = reduced[d] ? &nr : &nk;
        if (last == reduced[d]) {
            dim[*count - 1] *= x->dims[d];
            stride[*count - 1] = strides[d];
        } else {
            dim[*count] = x->dims[d];
            stride[*count] = strides[d];
            ++*count;
        }
        last = reduced[d];
    }
    BD_TRY(bd_k_output(n, out, BD_F32, ond, odims, 0));
    /* The innermost reduced group is walked as a strided run, the others by
     * an index over their product. */
    int64_t run = nr ? rdim[nr - 1] : 1, run_stride = nr ? rstride[nr - 1] : 0;
    int64_t outer_r = rcount / (run ? run : 1);
    int64_t total = bd_tensor_count(out[0]);
    const float *xd = x->data;
    float *yd = out[0]->data;
#pragma omp parallel for if (total * rcount >= BD_PARALLEL_MIN) schedule(static)
    for (int64_t o = 0; o < total; o++) {
        int64_t base = 0, rest = o;
        for (int k = nk - 1; k >= 0; k--) {
            base += rest % kdim[k] * kstride[k];
            rest /= kdim[k];
        }
        double sum = 0;
        for (int64_t r = 0; r < outer_r; r++) {
            int64_t off = base;
            rest = r;
            for (int k = nr - 2; k >= 0; k--) {
                off += rest % rdim[k] * rstride[k];
                rest /= rdim[k];
            }
            sum += bd_k_sum(xd + off, run, run_stride);
        }
        yd[o] = (float)(sum / (double)rcount);
    }
    return BD_OK;
}
