/* Shape and data-movement ops, for any dtype. The reshapes (Flatten,
 * Reshape, Squeeze, Unsqueeze, Identity, Dropout) are views sharing the
 * input's storage; Transpose, Slice, Expand and ConstantOfShape are strided
 * copies (kernel_util.h). */
#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kernel_util.h"

static int64_t clamp64(int64_t v, int64_t lo, int64_t hi) { return v < lo ? lo : v > hi ? hi : v; }

BD_KERNEL(bd_k_identity)
{
    (void)g;
    return bd_k_view(n, out, in[0], in[0]->ndim, in[0]->dims);
}

BD_KERNEL(bd_k_dropout)
{
    (void)g;
    const bd_tensor *x = in[0], *training = bd_k_opt(n, in, 2);
    if (training && bd_tensor_count(training) > 0 && bd_tensor_get_f64(training, 0) != 0)
        return bd_node_fail(n, BD_EUNSUPPORTED, "training mode is not supported");
    BD_TRY(bd_k_view(n, &out[0], x, x->ndim, x->dims));
    if (n->noutputs > 1 && n->outputs[1] >= 0) {
        /* At inference nothing is dropped, so the mask keeps everything. */
        BD_TRY(bd_k_output(n, &out[1], BD_BOOL, x->ndim, x->dims, 0));
        memset(out[1]->data, 1, bd_tensor_nbytes(out[1]));
    }
    return BD_OK;
}

BD_KERNEL(bd_k_flatten)
{
    (void)g;
    const bd_tensor *x = in[0];
    int64_t axis = bd_attr_int(n, "axis", 1);
    if (axis < -x->ndim || axis > x->ndim)
        return bd_node_fail(n, BD_EINVAL, "axis %" PRId64 " is out of range for rank %d", axis,
                            x->ndim);
    if (axis < 0)
        axis += x->ndim;
    int64_t dims[2] = {1, 1};
    for (int d = 0; d < x->ndim; d++)
        dims[d >= axis] *= x->dims[d];
    return bd_k_view(n, out, x, 2, dims);
}

BD_KERNEL(bd_k_reshape)
{
    const bd_tensor *x = in[0];
    int64_t shape[BD_MAX_DIMS];
    int nd;
    BD_TRY(bd_k_int_list(n, 1, in[1], "shape", shape, BD_MAX_DIMS, &nd));
    int allowzero = g->opset >= 14 && bd_attr_int(n, "allowzero", 0);
    int infer = -1;
    int64_t known = 1, count = bd_tensor_count(x);
    for (int i = 0; i < nd; i++) {
        if (shape[i] == 0 && !allowzero) {
            if (i >= x->ndim)
                return bd_node_fail(n, BD_EINVAL, "shape[%d] is 0 (copy) but the input has rank %d",
                                    i, x->ndim);
            shape[i] = x->dims[i];
        }
        if (shape[i] == -1 && infer < 0) {
            infer = i;
            continue;
        }
        if (shape[i] < 0)
            return bd_node_fail(n, BD_EINVAL, "shape[%d] is %" PRId64 "%s", i, shape[i],
                                shape[i] == -1 ? " a second time" : "");
        if (shape[i] > 0 && known > INT64_MAX / shape[i])
            return bd_node_fail(n, BD_EINVAL, "the target shape's element count overflows");
        known *= shape[i];
    }
    int fits = infer >= 0 ? known > 0 && count % known == 0 : known == count;
    if (!fits) {
        char a[160], b[160];
        return bd_node_fail(n, BD_EINVAL, "cannot reshape %s to %s",
                            bd_shape_str(x->ndim, x->dims, a, sizeof a),
                            bd_shape_str(nd, shape, b, sizeof b));
    }
    if (infer >= 0)
        shape[infer] = count / known;
    return bd_k_view(n, out, x, nd, shape);
}

BD_KERNEL(bd_k_unsqueeze)
{
    const bd_tensor *x = in[0];
    int64_t axes[BD_MAX_DIMS];
    int na;
    /* Opset 13 moved axes from an attribute to an input. */
    BD_TRY(bd_k_int_list(n, g->opset >= 13, bd_k_opt(n, in, 1), "axes", axes, BD_MAX_DIMS, &na));
    if (na < 0)
        return bd_node_fail(n, BD_EINVAL, "axes are required");
    int rank = x->ndim + na;
    if (rank > BD_MAX_DIMS)
        return bd_node_fail(n, BD_EUNSUPPORTED, "the output would have %d dims (at most %d)",
                            rank, BD_MAX_DIMS);
    BD_TRY(bd_k_axes(n, axes, na, rank));
    int inserted[BD_MAX_DIMS] = {0};
    for (int i = 0; i < na; i++)
        inserted[axes[i]] = 1;
    int64_t dims[BD_MAX_DIMS];
    for (int d = 0, k = 0; d < rank; d++)
        dims[d] = inserted[d] ? 1 : x->dims[k++];
    return bd_k_view(n, out, x, rank, dims);
}

BD_KERNEL(bd_k_squeeze)
{
    const bd_tensor *x = in[0];
    int64_t axes[BD_MAX_DIMS];
    int na;
    BD_TRY(bd_k_int_list(n, g->opset >= 13, bd_k_opt(n, in, 1), "axes", axes, BD_MAX_DIMS, &na));
    int drop[BD_MAX_DIMS] = {0};
    if (na <= 0) {
        for (int d = 0; d < x->ndim; d++)
            drop[d] = x->dims[d] == 1;
    } else {
        BD_TRY(bd_k_axes(n, axes, na, x->ndim));
        for (int i = 0; i < na; i++) {
            if (x->dims[axes[i]] != 1)
                return bd_node_fail(n, BD_EINVAL, "cannot squeeze axis %d of size %" PRId64,
                                    (int)axes[i], x->dims[axes[i]]);
            drop[axes[i]] = 1;
        }
    }
    int64_t dims[BD_MAX_DIMS];
    int rank = 0;
    for (int d = 0; d < x->ndim; d++)
        if (!drop[d])
            dims[rank++] = x->dims[d];
    return bd_k_view(n, out, x, rank, dims);
}

BD_KERNEL(bd_k_transpose)
{
    (void)g;
    const bd_tensor *x = in[0];
    int64_t perm[BD_MAX_DIMS], xs[BD_MAX_DIMS], dims[BD_MAX_DIMS], strides[BD_MAX_DIMS];
    int np;
    BD_TRY(bd_k_int_list(n, 0, NULL, "perm", perm, BD_MAX_DIMS, &np));
    if (np < 0) {
        for (int d = 0; d < x->ndim; d++)
            perm[d] = x->ndim - 1 - d;
    } else if (np != x->ndim) {
        return bd_node_fail(n, BD_EINVAL, "perm has %d entries for rank %d", np, x->ndim);
    } else {
        BD_TRY(bd_k_axes(n, perm, np, x->ndim));
    }
    bd_k_strides(x->ndim, x->dims, xs);
    for (int d = 0; d < x->ndim; d++) {
        dims[d] = x->dims[perm[d]];
        strides[d] = xs[perm[d]];
    }
    BD_TRY(bd_k_output(n, out, x->dtype, x->ndim, dims, 0));
    bd_k_strided_copy(out[0], x->data, 0, strides);
    return BD_OK;
}

BD_KERNEL(bd_k_concat)
{
    (void)g;
    if (!bd_node_attr(n, "axis"))
        return bd_node_fail(n, BD_EINVAL, "attribute 'axis' is required");
    for (int k = 0; k < n->ninputs; k++)
        if (!in[k])
            return bd_node_fail(n, BD_EINVAL, "input %d is missing", k);
    const bd_tensor *first = in[0];
    int axis;
    BD_TRY(bd_k_axis(n, bd_attr_int(n, "axis", 0), first->ndim, &axis));
    int64_t dims[BD_MAX_DIMS];
    memcpy(dims, first->dims, sizeof dims);
    dims[axis] = 0;
    for (int k = 0; k < n->ninputs; k++) {
        const bd_tensor *t = in[k];
        int same = t->dtype == first->dtype && t->ndim == first->ndim;
        for (int d = 0; same && d < t->ndim; d++)
            same = d == axis || t->dims[d] == first->dims[d];
        if (!same) {
            char a[160], b[160];
            return bd_node_fail(n, BD_EINVAL, "input %d (%s %s) does not match input 0 (%s %s)",
                                k, bd_dtype_name(t->dtype),
                                bd_shape_str(t->ndim, t->dims, a, sizeof a),
                                bd_dtype_name(first->dtype),
                                bd_shape_str(first->ndim, first->dims, b, sizeof b));
        }
        dims[axis] += t->dims[axis];
    }
    BD_TRY(bd_k_output(n, out, first->dtype, first->ndim, dims, 0));
    size_t es = bd_dtype_size(first->dtype);
    int64_t outer = 1, inner = 1;
    for (int d = 0; d < first->ndim; d++)
        if (d < axis)
            outer *= dims[d];
        else if (d > axis)
            inner *= dims[d];
    const size_t row = (size_t)(dims[axis] * inner) * es;
    char *dst = out[0]->data;
    /* The copies go in pieces of at most PIECE bytes, shared by the
     * threads: at batch 1 along the channels there is one row (outer), and
     * one thread copying it while the others waited had been an eighth of
     * SqueezeNet's time. */
    enum { PIECE = 64 << 10 };
    int64_t pieces = 0; /* per row */
    for (int k = 0; k < n->ninputs; k++)
        pieces += ((int64_t)((size_t)(in[k]->dims[axis] * inner) * es) + PIECE - 1) / PIECE;
    const int ninputs = n->ninputs;
#pragma omp parallel for if (outer * pieces > 1 && bd_tensor_count(out[0]) >= BD_PARALLEL_MIN) \
    schedule(static)
    for (int64_t j = 0; j < outer * pieces; j++) {
        const int64_t o = j / pieces;
        int64_t left = j % pieces; /* the piece within the row */
        size_t at = 0;            /* where input k's block starts in the row */
        for (int k = 0; k < ninputs; k++) {
            const size_t block = (size_t)(in[k]->dims[axis] * inner) * es;
            const int64_t nk = ((int64_t)block + PIECE - 1) / PIECE;
            if (left < nk) {
                const size_t from = (size_t)left * PIECE;
                const size_t len = block - from < PIECE ? block - from : PIECE;
                memcpy(dst + (size_t)o * row + at + from,
                       (const char *)in[k]->data + (size_t)o * block + from, len);
                break;
            }
            left -= nk;
            at += block;
        }
    }
    return BD_OK;
}

BD_KERNEL(bd_k_constant)
{
    (void)g;
    (void)in;
    if (n->nattrs != 1)
        return bd_node_fail(n, BD_EFORMAT, "needs exactly one value attribute, has %d",
                            n->nattrs);
    const bd_attr *a = &n->attrs[0];
    const void *src;
    bd_dtype dtype;
    int ndim = 1;
    int64_t len = a->n;
    const int64_t *dims = &len;
    if (strcmp(a->name, "value") == 0 && a->type == BD_ATTR_TENSOR && a->t) {
        src = a->t->data;
        dtype = a->t->dtype;
        ndim = a->t->ndim;
        dims = a->t->dims;
    } else if (strcmp(a->name, "value_float") == 0 && a->type == BD_ATTR_FLOAT) {
        src = &a->f;
        dtype = BD_F32;
        ndim = 0;
    } else if (strcmp(a->name, "value_floats") == 0 && a->type == BD_ATTR_FLOATS) {
        src = a->floats;
        dtype = BD_F32;
    } else if (strcmp(a->name, "value_int") == 0 && a->type == BD_ATTR_INT) {
        src = &a->i;
        dtype = BD_I64;
        ndim = 0;
    } else if (strcmp(a->name, "value_ints") == 0 && a->type == BD_ATTR_INTS) {
        src = a->ints;
        dtype = BD_I64;
    } else {
        return bd_node_fail(n, BD_EUNSUPPORTED, "attribute '%s' (type %d) is not supported",
                            a->name, (int)a->type);
    }
    BD_TRY(bd_k_output(n, out, dtype, ndim, dims, 0));
    if (bd_tensor_nbytes(out[0]))
        memcpy(out[0]->data, src, bd_tensor_nbytes(out[0]));
    return BD_OK;
}

BD_KERNEL(bd_k_cast)
{
    (void)g;
    int64_t to = bd_attr_int(n, "to", 0);
    if (to < 0 || to > BD_F64 || bd_dtype_size((bd_dtype)to) == 0)
        return bd_node_fail(n, BD_EUNSUPPORTED, "cannot cast to data type %" PRId64, to);
    return bd_k_in_node(n, bd_tensor_cast(out, in[0], (bd_dtype)to));
}

BD_KERNEL(bd_k_gather)
{
    (void)g;
    const bd_tensor *data = in[0], *indices = in[1];
    if (indices->dtype != BD_I64 && indices->dtype != BD_I32)
        return bd_node_fail(n, BD_EINVAL, "indices are %s; int32 or int64 expected",
                            bd_dtype_name(indices->dtype));
    int axis;
    BD_TRY(bd_k_axis(n, bd_attr_int(n, "axis", 0), data->ndim, &axis));
    int rank = data->ndim - 1 + indices->ndim;
    if (rank > BD_MAX_DIMS)
        return bd_node_fail(n, BD_EUNSUPPORTED, "the output would have %d dims (at most %d)",
                            rank, BD_MAX_DIMS);
    int64_t dims[BD_MAX_DIMS];
    memcpy(dims, data->dims, (size_t)axis * sizeof *dims);
    memcpy(dims + axis, indices->dims, (size_t)indices->ndim * sizeof *dims);
    memcpy(dims + axis + indices->ndim, data->dims + axis + 1,
           (size_t)(data->ndim - axis - 1) * sizeof *dims);
    int64_t nidx = bd_tensor_count(indices), size = data->dims[axis];
    int64_t *idx = malloc((size_t)nidx * sizeof *idx + 1);
    if (!idx)
        return bd_node_fail(n, BD_ENOMEM, "out of memory");
    for (int64_t i = 0; i < nidx; i++) {
        int64_t v = bd_tensor_get_i64(indices, i);
        if (v < -size || v >= size) {
            free(idx);
            return bd_node_fail(n, BD_EINVAL,
                                "index %" PRId64 " is out of range for axis %d of size %" PRId64,
                                v, axis, size);
        }
        idx[i] = v < 0 ? v + size : v;
    }
    bd_status st = bd_k_output(n, out, data->dtype, rank, dims, 0);
    if (st == BD_OK) {
        int64_t outer = 1, inner = 1;
        for (int d = 0; d < data->ndim; d++)
            if (d < axis)
                outer *= data->dims[d];
            else if (d > axis)
                inner *= data->dims[d];
        size_t block = (size_t)inner * bd_dtype_size(data->dtype);
        const char *src = data->data;
        char *dst = out[0]->data;
#pragma omp parallel for if (outer * nidx * inner >= BD_PARALLEL_MIN) schedule(static)
        for (int64_t r = 0; r < outer * nidx; r++)
            memcpy(dst + (size_t)r * block,
                   src + (size_t)(r / nidx * size + idx[r % nidx]) * block, block);
    }
    free(idx);
    return st;
}

BD_KERNEL(bd_k_shape)
{
    (void)g;
    const bd_tensor *x = in[0];
    int64_t rank = x->ndim;
    int64_t start = bd_attr_int(n, "start", 0), end = bd_attr_int(n, "end", rank);
    start = clamp64(start < 0 ? start + rank : start, 0, rank);
    end = clamp64(end < 0 ? end + rank : end, 0, rank);
    int64_t len = end > start ? end - start : 0;
    BD_TRY(bd_k_output(n, out, BD_I64, 1, &len, 0));
    if (len)
        memcpy(out[0]->data, x->dims + start, (size_t)len * sizeof *x->dims);
    return BD_OK;
}

bd_status bd_k_slice_layout(const bd_graph *g, const bd_node *n, bd_tensor *const *in,
                            int64_t *dims, int64_t *strides, int64_t *offset_out)
{
    const bd_tensor *x = in[0];
    static const char *const names[4] = {"starts", "ends", "axes", "steps"};
    int64_t lists[4][BD_MAX_DIMS];
    int counts[4];
    /* Opset 10 moved starts/ends/axes to inputs and added steps. */
    int from_input = g->opset >= 10;
    for (int k = 0; k < 4; k++)
        BD_TRY(bd_k_int_list(n, from_input, from_input ? bd_k_opt(n, in, k + 1) : NULL,
                             names[k], lists[k], BD_MAX_DIMS, &counts[k]));
    int ns = counts[0];
    if (ns < 0 || counts[1] < 0)
        return bd_node_fail(n, BD_EINVAL, "starts and ends are required");
    for (int k = 1; k < 4; k++)
        if (counts[k] >= 0 && counts[k] != ns)
            return bd_node_fail(n, BD_EINVAL, "%s has %d values but starts has %d", names[k],
                                counts[k], ns);
    int64_t *axes = lists[2], *steps = lists[3];
    for (int i = 0; i < ns; i++) {
        if (counts[2] < 0)
            axes[i] = i;
        if (counts[3] < 0)
            steps[i] = 1;
    }
    BD_TRY(bd_k_axes(n, axes, ns, x->ndim));
    int64_t xs[BD_MAX_DIMS], offset = 0;
    bd_k_strides(x->ndim, x->dims, xs);
    memcpy(dims, x->dims, (size_t)x->ndim * sizeof *dims);
    memcpy(strides, xs, (size_t)x->ndim * sizeof *strides);
    for (int i = 0; i < ns; i++) {
        int a = (int)axes[i];
        int64_t size = x->dims[a], step = steps[i], len;
        int64_t start = lists[0][i], end = lists[1][i];
        if (step == 0)
            return bd_node_fail(n, BD_EINVAL, "step of axis %d is 0", a);
        start = start < 0 ? start + size : start;
        end = end < 0 ? end + size : end;
        if (size == 0) {
            start = 0;
            len = 0;
        } else if (step > 0) {
            start = clamp64(start, 0, size);
            end = clamp64(end, 0, size);
            len = end > start ? (end - start - 1) / step + 1 : 0;
        } else {
            /* -INT64_MIN overflows; any step that large takes one element. */
            int64_t mag = step == INT64_MIN ? INT64_MAX : -step;
            start = clamp64(start, 0, size - 1);
            end = clamp64(end, -1, size - 1);
            len = start > end ? (start - end - 1) / mag + 1 : 0;
        }
        dims[a] = len;
        /* With one element the stride is never used, and step may be huge. */
        strides[a] = len > 1 ? xs[a] * step : 0;
        offset += start * xs[a];
    }
    *offset_out = offset;
    return BD_OK;
}

BD_KERNEL(bd_k_slice)
{
    const bd_tensor *x = in[0];
    int64_t dims[BD_MAX_DIMS], strides[BD_MAX_DIMS], offset;
    BD_TRY(bd_k_slice_layout(g, n, in, dims, strides, &offset));
    BD_TRY(bd_k_output(n, out, x->dtype, x->ndim, dims, 0));
    bd_k_strided_copy(out[0], x->data, offset, strides);
    return BD_OK;
}

BD_KERNEL(bd_k_constant_of_shape)
{
    (void)g;
    int64_t dims[BD_MAX_DIMS], zeros[BD_MAX_DIMS] = {0};
    int nd;
    BD_TRY(bd_k_int_list(n, 1, in[0], "input", dims, BD_MAX_DIMS, &nd));
    const bd_attr *a = bd_node_attr(n, "value");
    if (!a) /* the default value is a float 0 */
        return bd_k_output(n, out, BD_F32, nd, dims, 1);
    if (a->type != BD_ATTR_TENSOR || !a->t || bd_tensor_count(a->t) != 1)
        return bd_node_fail(n, BD_EINVAL, "'value' must be a one-element tensor");
    BD_TRY(bd_k_output(n, out, a->t->dtype, nd, dims, 0));
    bd_k_strided_copy(out[0], a->t->data, 0, zeros);
    return BD_OK;
}

BD_KERNEL(bd_k_expand)
{
    (void)g;
    const bd_tensor *x = in[0];
    int64_t shape[BD_MAX_DIMS], dims[BD_MAX_DIMS], strides[BD_MAX_DIMS];
    int ns, nd;
    BD_TRY(bd_k_int_list(n, 1, in[1], "shape", shape, BD_MAX_DIMS, &ns));
    BD_TRY(bd_k_broadcast_shape(n, x->ndim, x->dims, ns, shape, &nd, dims));
    BD_TRY(bd_k_output(n, out, x->dtype, nd, dims, 0));
    bd_k_broadcast_strides(x, nd, strides);
    bd_k_strided_copy(out[0], x->data, 0, strides);
    return BD_OK;
}

typedef enum pad_mode { PAD_CONSTANT, PAD_REFLECT, PAD_EDGE } pad_mode;

/* The input index that output index i - pad_begin reads along a dim of
 * size, or -1 for the constant. Reflection repeats with period
 * 2 * (size - 1), as numpy.pad does for pads wider than the dim. */
static int64_t pad_source(int64_t i, int64_t size, pad_mode mode)
{
    if (i >= 0 && i < size)
        return i;
    if (mode == PAD_CONSTANT)
        return -1;
    if (mode == PAD_EDGE || size == 1)
        return i < 0 ? 0 : size - 1;
    int64_t period = 2 * (size - 1);
    i %= period;
    if (i < 0)
        i += period;
    return i < size ? i : period - i;
}

/* Reads pads (and the optional axes they apply to) into begin/end per dim. */
bd_status bd_k_pad_amounts(const bd_graph *g, const bd_node *n, bd_tensor *const *in, int rank,
                          int64_t *begin, int64_t *end)
{
    int64_t pads[2 * BD_MAX_DIMS], axes[BD_MAX_DIMS];
    int np, na = -1;
    /* Opset 11 moved pads to an input; opset 18 added axes. */
    BD_TRY(bd_k_int_list(n, g->opset >= 11, bd_k_opt(n, in, 1), "pads", pads, 2 * BD_MAX_DIMS,
                         &np));
    if (g->opset >= 18)
        BD_TRY(bd_k_int_list(n, 1, bd_k_opt(n, in, 3), "axes", axes, BD_MAX_DIMS, &na));
    if (np < 0)
        return bd_node_fail(n, BD_EINVAL, "pads are required");
    if (na < 0) {
        na = rank;
        for (int i = 0; i < rank; i++)
            axes[i] = i;
    }
    BD_TRY(bd_k_axes(n, axes, na, rank));
    if (np != 2 * na)
        return bd_node_fail(n, BD_EINVAL, "pads has %d values for %d axes", np, na);
    for (int d = 0; d < rank; d++)
        begin[d] = end[d] = 0;
    for (int i = 0; i < na; i++) {
        begin[axes[i]] = pads[i];
        end[axes[i]] = pads[na + i];
    }
    return BD_OK;
}

bd_status bd_k_pad_value(const bd_graph *g, const bd_node *n, bd_tensor *const *in,
                        const bd_tensor *x, unsigned char *value)
{
    memset(value, 0, 8);
    if (g->opset < 11) {
        float f = bd_attr_float(n, "value", 0);
        if (f != 0 && x->dtype != BD_F32)
            return bd_node_fail(n, BD_EUNSUPPORTED, "a nonzero value needs float32 data");
        memcpy(value, &f, sizeof f);
        return BD_OK;
    }
    const bd_tensor *v = bd_k_opt(n, in, 2);
    if (!v)
        return BD_OK;
    if (v->dtype != x->dtype || bd_tensor_count(v) != 1)
        return bd_node_fail(n, BD_EINVAL, "constant_value must be one %s element",
                            bd_dtype_name(x->dtype));
    memcpy(value, v->data, bd_dtype_size(v->dtype));
    return BD_OK;
}

/* Output elements [from, to) of a row whose outer indices read input
 * offset off, one by one through the last dim's map. */
static void pad_span(char *o, const char *src, int64_t off, const int64_t *map, int64_t from,
                     int64_t to, const unsigned char *value, size_t es)
{
    for (int64_t j = from; j < to; j++)
        memcpy(o + (size_t)j * es,
               map[j] < 0 ? (const char *)value : src + (size_t)(off + map[j]) * es, es);
}

bd_status bd_k_pad_maps(const bd_graph *g, const bd_node *n, bd_tensor *const *in, int64_t *dims,
                        int64_t *begin, int64_t **map, int64_t **maps)
{
    const bd_tensor *x = in[0];
    const char *mode_name = bd_attr_string(n, "mode", "constant");
    pad_mode mode = strcmp(mode_name, "reflect") == 0 ? PAD_REFLECT
                    : strcmp(mode_name, "edge") == 0  ? PAD_EDGE
                                                      : PAD_CONSTANT;
    if (mode == PAD_CONSTANT && strcmp(mode_name, "constant") != 0)
        return bd_node_fail(n, BD_EUNSUPPORTED, "mode '%s' is not supported", mode_name);
    int rank = x->ndim;
    int64_t end[BD_MAX_DIMS];
    *maps = NULL;
    BD_TRY(bd_k_pad_amounts(g, n, in, rank, begin, end));
    int64_t nmap = 0, total;
    for (int d = 0; d < rank; d++) {
        if (__builtin_add_overflow(x->dims[d], begin[d], &dims[d]) ||
            __builtin_add_overflow(dims[d], end[d], &dims[d]) ||
            __builtin_add_overflow(nmap, dims[d], &nmap))
            return bd_node_fail(n, BD_EINVAL, "pads of axis %d overflow its size", d);
        if (dims[d] < 0)
            return bd_node_fail(n, BD_EINVAL, "pads crop axis %d of size %" PRId64 " below 0", d,
                                x->dims[d]);
        if (mode != PAD_CONSTANT && x->dims[d] == 0 && dims[d] > 0)
            return bd_node_fail(n, BD_EINVAL, "cannot %s-pad the empty axis %d", mode_name, d);
    }
    if (rank == 0)
        return BD_OK;
    /* the output's size is checked before its maps are made: pads can ask
     * for more than any tensor may hold, or than int64 counts */
    BD_TRY(bd_k_in_node(n, bd_shape_count(rank, dims, &total, "output")));
    if (total == 0)
        return BD_OK;
    size_t es = bd_dtype_size(x->dtype) ? bd_dtype_size(x->dtype) : 1;
    if ((size_t)total > bd_tensor_limit() / es ||
        (size_t)nmap > bd_tensor_limit() / sizeof **maps)
        return bd_node_fail(n, BD_ENOMEM, "the padded output of %" PRId64 " elements is larger "
                                          "than a tensor may be (%zu bytes)",
                            total, bd_tensor_limit());
    *maps = malloc((size_t)nmap * sizeof **maps);
    if (!*maps)
        return bd_node_fail(n, BD_ENOMEM, "out of memory");
    int64_t at = 0;
    for (int d = 0; d < rank; at += dims[d], d++) {
        map[d] = *maps + at;
        for (int64_t o = 0; o < dims[d]; o++)
            map[d][o] = pad_source(o - begin[d], x->dims[d], mode);
    }
    return BD_OK;
}

BD_KERNEL(bd_k_pad)
{
    const bd_tensor *x = in[0];
    int rank = x->ndim;
    int64_t begin[BD_MAX_DIMS], dims[BD_MAX_DIMS], xs[BD_MAX_DIMS], *map[BD_MAX_DIMS], *maps;
    unsigned char value[8];
    BD_TRY(bd_k_pad_maps(g, n, in, dims, begin, map, &maps));
    bd_status st = bd_k_pad_value(g, n, in, x, value);
    if (st == BD_OK)
        st = rank == 0 ? bd_k_view(n, out, x, 0, x->dims)
                       : bd_k_output(n, out, x->dtype, rank, dims, 0);
    if (st != BD_OK || !maps) {
        free(maps);
        return st;
    }
    int64_t total = bd_tensor_count(out[0]);
    bd_k_strides(rank, x->dims, xs);
    size_t es = bd_dtype_size(x->dtype);
    int64_t len = dims[rank - 1], rows = total / len;
    const int64_t *last = map[rank - 1];
    /* Output [lo, hi) of every row reads the input row contiguously. */
    int64_t lo = clamp64(begin[rank - 1], 0, len);
    int64_t hi = clamp64(begin[rank - 1] + x->dims[rank - 1], lo, len);
    const char *src = x->data;
    char *dst = out[0]->data;
#pragma omp parallel for if (total >= BD_PARALLEL_MIN) schedule(static)
    for (int64_t r = 0; r < rows; r++) {
        char *o = dst + (size_t)(r * len) * es;
        int64_t off = 0, rest = r;
        for (int d = rank - 2; d >= 0 && off >= 0; d--) {
            int64_t m = map[d][rest % dims[d]];
            off = m < 0 ? -1 : off + m * xs[d];
            rest /= dims[d];
        }
        if (off < 0) { /* the whole row lies in constant padding */
            for (int64_t j = 0; j < len; j++)
                memcpy(o + (size_t)j * es, value, es);
            continue;
        }
        pad_span(o, src, off, last, 0, lo, value, es);
        if (hi > lo)
            memcpy(o + (size_t)lo * es, src + (size_t)(off + last[lo]) * es,
                   (size_t)(hi - lo) * es);
        pad_span(o, src, off, last, hi, len, value, es);
    }
    free(maps);
    return BD_OK;
}

/* Split along one axis into the sizes given (the 'split' input since opset
 * 13, the attribute before), or into equal parts. */
BD_KERNEL(bd_k_split)
{
    const bd_tensor *x = in[0];
    int axis, parts = n->noutputs;
    BD_TRY(bd_k_axis(n, bd_attr_int(n, "axis", 0), x->ndim, &axis));
    int64_t *sizes = malloc((size_t)parts * sizeof *sizes);
    if (!sizes)
        return bd_node_fail(n, BD_ENOMEM, "out of memory");
    const bd_tensor *given = g->opset >= 13 ? bd_k_opt(n, in, 1) : NULL;
    const int64_t *attr = NULL;
    int nattr = g->opset < 13 ? bd_attr_ints(n, "split", &attr) : -1;
    int64_t total = 0, len = x->dims[axis];
    bd_status st = BD_OK;
    if ((given && bd_tensor_count(given) != parts) || (attr && nattr != parts))
        st = bd_node_fail(n, BD_EINVAL, "'split' does not have one size per output (%d)", parts);
    for (int i = 0; st == BD_OK && i < parts; i++) {
        sizes[i] = given ? bd_tensor_get_i64(given, i) : attr ? attr[i] : len / parts;
        if (sizes[i] < 0)
            st = bd_node_fail(n, BD_EINVAL, "split size %d is negative", i);
        total += sizes[i];
    }
    if (st == BD_OK && (given || attr ? total != len : len % parts != 0))
        st = bd_node_fail(n, BD_EINVAL, "the sizes add up to %" PRId64 ", axis %d has %" PRId64,
                          given || attr ? total : len, axis, len);
    int64_t outer = 1, inner = 1;
    for (int d = 0; d < x->ndim; d++)
        if (d < axis)
            outer *= x->dims[d];
        else if (d > axis)
            inner *= x->dims[d];
    size_t es = bd_dtype_size(x->dtype);
    int64_t start = 0;
    for (int i = 0; st == BD_OK && i < parts; i++) {
        int64_t dims[BD_MAX_DIMS];
        memcpy(dims, x->dims, (size_t)x->ndim * sizeof *dims);
        dims[axis] = sizes[i];
        st = bd_k_output(n, &out[i], x->dtype, x->ndim, dims, 0);
        size_t block = (size_t)(sizes[i] * inner) * es;
        for (int64_t o = 0; st == BD_OK && o < outer && block; o++)
            memcpy((char *)out[i]->data + (size_t)o * block,
                   (const char *)x->data + ((size_t)(o * len + start) * (size_t)inner) * es,
                   block);
        start += sizes[i];
    }
    free(sizes);
    return st;
}

/* start, start + delta, ... short of limit, in the inputs' type (int64 or
 * float32). */
BD_KERNEL(bd_k_range)
{
    (void)g;
    for (int k = 0; k < 3; k++)
        if (bd_tensor_count(in[k]) != 1 || in[k]->dtype != in[0]->dtype)
            return bd_node_fail(n, BD_EINVAL, "inputs must be three scalars of one type");
    bd_dtype t = in[0]->dtype;
    if (t != BD_I64 && t != BD_F32)
        return bd_node_fail(n, BD_EUNSUPPORTED, "inputs are %s; only float32 and int64 are "
                            "supported", bd_dtype_name(t));
    double start = bd_tensor_get_f64(in[0], 0), limit = bd_tensor_get_f64(in[1], 0),
           delta = bd_tensor_get_f64(in[2], 0);
    if (delta == 0)
        return bd_node_fail(n, BD_EINVAL, "delta is 0");
    double steps = ceil((limit - start) / delta);
    int64_t count = steps > 0 ? (int64_t)steps : 0;
    BD_TRY(bd_k_output(n, out, t, 1, &count, 0));
    for (int64_t i = 0; i < count; i++) {
        if (t == BD_I64)
            ((int64_t *)out[0]->data)[i] =
                bd_tensor_get_i64(in[0], 0) + i * bd_tensor_get_i64(in[2], 0);
        else
            ((float *)out[0]->data)[i] = (float)(start + (double)i * delta);
    }
    return BD_OK;
}
