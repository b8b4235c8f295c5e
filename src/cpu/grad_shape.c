/* Backward of the shape ops: the reshapes hand dy back as a view in the
 * input's shape; Transpose and Concat move it back with the strided copy
 * their forwards use (kernel_util.h). */
#include "grad_kernels.h"

/* Reshape, Flatten, Squeeze, Unsqueeze, Identity and Dropout (which drops
 * nothing yet) keep every element in place. */
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
