/* Backward of the shape ops: the reshapes hand dy back as a view in the
 * input's shape; Transpose and Concat move it back with the strided copy
 * their forwards use (kernel_util.h); Pad and Slice scatter it back
 * through the forward's own index maps. */
#include <stdlib.h>

#include "grad_kernels.h"

/* Reshape, Flatten, Squeeze, Unsqueeze, Identity and Dropout (which drops
 * nothing yet) keep every element in place; Round passes its gradient
 * straight through (grad.c). */
BD_GRAD(bd_g_reshape)
{
    const bd_tensor *x = a->in[0];
    return bd_k_view(a->n, &din[0], a->dy, x->ndim, x->dims);
}

/* y's dim d is x's dim perm[d], so dx walks dy with dy's stride of d
 * along dim perm[d]. */
BD_GRAD(bd_g_transpose)
{
    const bd_tensor *x = a->in[0];
    int64_t perm[BD_MAX_DIMS], ys[BD_MAX_DIMS], strides[BD_MAX_DIMS];
    int np;
    BD_TRY(bd_k_int_list(a->n, 0, NULL, "perm", perm, BD_MAX_DIMS, &np));
    if (np < 0) {
        for (int d = 0; d < x->ndim; d++)
            perm[d] = x->ndim - 1 - d;
    } else if (np != x->ndim) {
        return bd_node_fail(a->n, BD_EINVAL, "perm has %d entries for rank %d", np, x->ndim);
    } else {
        BD_TRY(bd_k_axes(a->n, perm, np, x->ndim));
    }
    bd_k_strides(a->dy->ndim, a->dy->dims, ys);
    for (int d = 0; d < x->ndim; d++)
        strides[perm[d]] = ys[d];
    BD_TRY(bd_k_output(a->n, &din[0], BD_F32, x->ndim, x->dims, 0));
    bd_k_strided_copy(din[0], a->dy->data, 0, strides);
    return BD_OK;
}

/* Input k's gradient is its slab of dy along the axis. */
BD_GRAD(bd_g_concat)
{
    const bd_node *n = a->n;
    int axis;
    BD_TRY(bd_k_axis(n, bd_attr_int(n, "axis", 0), a->dy->ndim, &axis));
    int64_t strides[BD_MAX_DIMS], start = 0;
    bd_k_strides(a->dy->ndim, a->dy->dims, strides);
    for (int k = 0; k < n->ninputs; k++) {
        const bd_tensor *x = a->in[k];
        if (!x)
            return bd_node_fail(n, BD_EINVAL, "input %d is missing", k);
        if (a->want[k]) {
            BD_TRY(bd_k_output(n, &din[k], BD_F32, x->ndim, x->dims, 0));
            bd_k_strided_copy(din[k], a->dy->data, start * strides[axis], strides);
        }
        start += x->dims[axis];
    }
    return BD_OK;
}


/* Every input element the output read gets the sum of what it received:
 * one for the constant mode, several at reflected or repeated edges. Serial,
 * since those sums would race. */
BD_GRAD(bd_g_pad)
{
    const bd_tensor *x = a->in[0];
    int64_t dims[BD_MAX_DIMS], begin[BD_MAX_DIMS], xs[BD_MAX_DIMS], *map[BD_MAX_DIMS], *maps;
    if (x->ndim == 0)
        return bd_k_view(a->n, &din[0], a->dy, 0, x->dims);
    BD_TRY(bd_k_pad_maps(a->g, a->n, a->in, dims, begin, map, &maps));
    bd_status st = bd_k_output(a->n, &din[0], BD_F32, x->ndim, x->dims, 1);
    if (st != BD_OK || !maps) {
        free(maps);
        return st;
    }
    bd_k_strides(x->ndim, x->dims, xs);
    const int rank = x->ndim;
    const int64_t len = dims[rank - 1], rows = bd_tensor_count(a->dy) / len;
    const float *dy = a->dy->data;
    float *dx = din[0]->data;
    for (int64_t r = 0; r < rows; r++) {
        int64_t off = 0, rest = r;
        for (int d = rank - 2; d >= 0 && off >= 0; d--) {
            int64_t m = map[d][rest % dims[d]];
            off = m < 0 ? -1 : off + m * xs[d];
            rest /= dims[d];
        }
        for (int64_t j = 0; off >= 0 && j < len; j++)
            if (map[rank - 1][j] >= 0)
                dx[off + map[rank - 1][j]] += dy[r * len + j];
    }
    free(maps);
    return BD_OK;
}

/* dy goes back where the forward read it; the rest of dx is zero. Slices
 * never read an element twice, so rows scatter in parallel. */
BD_GRAD(bd_g_slice)
{
    const bd_tensor *x = a->in[0], *dy = a->dy;
    int64_t dims[BD_MAX_DIMS], strides[BD_MAX_DIMS], offset;
    BD_TRY(bd_k_slice_layout(a->g, a->n, a->in, dims, strides, &offset));
    if (x->ndim == 0) /* no axes to slice */
        return bd_k_view(a->n, &din[0], dy, 0, x->dims);
    BD_TRY(bd_k_output(a->n, &din[0], BD_F32, x->ndim, x->dims, 1));
    const int64_t count = bd_tensor_count(dy);
    if (count == 0)
        return BD_OK;
    const int rank = x->ndim;
    const int64_t len = dims[rank - 1], step = strides[rank - 1], rows = count / len;
    const float *dv = dy->data;
    float *dx = din[0]->data;
#pragma omp parallel for if (count >= BD_PARALLEL_MIN) schedule(static)
    for (int64_t r = 0; r < rows; r++) {
        float *o = dx + offset + bd_k_offset_of(r, rank - 1, dims, strides);
        for (int64_t j = 0; j < len; j++)
            o[j * step] = dv[r * len + j];
    }
    return BD_OK;
}
