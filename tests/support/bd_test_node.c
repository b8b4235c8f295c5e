#include "bd_test_node.h"

#include <stdio.h>
#include <string.h>

#include "ops.h"

bd_node *bd_test_node_inputs(bd_graph **g, int64_t opset, const char *op, int nin,
                             const char *const *ins, int nout)
{
    static const char *const xs[BD_TEST_MAX_IO] = {"x0", "x1", "x2", "x3", "x4", "x5", "x6", "x7"};
    static const char *const ys[BD_TEST_MAX_IO] = {"y0", "y1", "y2", "y3", "y4", "y5", "y6", "y7"};
    assert_in_range(nin, 0, BD_TEST_MAX_IO);
    assert_in_range(nout, 0, BD_TEST_MAX_IO);
    bd_node *n;
    assert_int_equal(bd_graph_new(g), BD_OK);
    (*g)->opset = opset;
    assert_int_equal(bd_graph_add_node(*g, BD_TEST_NODE_NAME, op, "", nin, ins ? ins : xs, nout,
                                       ys, &n),
                     BD_OK);
    return n;
}

bd_node *bd_test_node(bd_graph **g, int64_t opset, const char *op, int nin, int nout)
{
    return bd_test_node_inputs(g, opset, op, nin, NULL, nout);
}

static void add_attr(bd_node *n, const bd_attr *a)
{
    if (bd_node_add_attr(n, a) != BD_OK)
        fail_msg("cannot add attribute '%s': %s", a->name, bd_error_message());
}

void bd_test_attr_int(bd_node *n, const char *name, int64_t v)
{
    add_attr(n, &(bd_attr){.name = (char *)name, .type = BD_ATTR_INT, .i = v});
}

void bd_test_attr_float(bd_node *n, const char *name, float v)
{
    add_attr(n, &(bd_attr){.name = (char *)name, .type = BD_ATTR_FLOAT, .f = v});
}

void bd_test_attr_ints(bd_node *n, const char *name, int count, const int64_t *v)
{
    add_attr(n, &(bd_attr){
                    .name = (char *)name, .type = BD_ATTR_INTS, .n = count, .ints = (int64_t *)v});
}

void bd_test_attr_str(bd_node *n, const char *name, const char *v)
{
    add_attr(n, &(bd_attr){.name = (char *)name, .type = BD_ATTR_STRING, .s = (char *)v});
}

void bd_test_attr_tensor(bd_node *n, const char *name, const bd_tensor *t)
{
    add_attr(n, &(bd_attr){.name = (char *)name, .type = BD_ATTR_TENSOR, .t = (bd_tensor *)t});
}

bd_tensor *bd_test_tensor(bd_dtype dt, int ndim, const int64_t *dims)
{
    bd_tensor *t;
    assert_int_equal(bd_tensor_new(&t, dt, ndim, dims, "test"), BD_OK);
    return t;
}

bd_tensor *bd_test_rand_f32(int ndim, const int64_t *dims, uint64_t seed, float lo, float hi)
{
    bd_tensor *t = bd_test_tensor(BD_F32, ndim, dims);
    bd_test_fill_random(t->data, (size_t)bd_tensor_count(t), seed, lo, hi);
    return t;
}

bd_tensor *bd_test_ints(int count, const int64_t *v)
{
    bd_tensor *t = bd_test_tensor(BD_I64, 1, (int64_t[]){count});
    if (count)
        memcpy(t->data, v, (size_t)count * sizeof *v);
    return t;
}

bd_tensor *bd_test_run(const bd_graph *g, const bd_node *n, bd_tensor *const *in)
{
    bd_tensor *out[BD_TEST_MAX_IO] = {NULL};
    assert_in_range(n->noutputs, 0, BD_TEST_MAX_IO);
    if (bd_op_run(g, n, in, out) != BD_OK)
        fail_msg("%s", bd_error_message());
    for (int k = 1; k < BD_TEST_MAX_IO; k++)
        assert_null(out[k]);
    return out[0];
}

void bd_test_assert_fails(const bd_graph *g, const bd_node *n, bd_tensor *const *in)
{
    bd_tensor *out[BD_TEST_MAX_IO] = {NULL};
    assert_in_range(n->noutputs, 0, BD_TEST_MAX_IO);
    assert_int_not_equal(bd_op_run(g, n, in, out), BD_OK);
    for (int k = 0; k < BD_TEST_MAX_IO; k++)
        assert_null(out[k]);
    char quoted[256];
    snprintf(quoted, sizeof quoted, "'%s'", n->name);
    if (!strstr(bd_error_message(), quoted))
        fail_msg("message does not name the node: %s", bd_error_message());
}

void bd_test_assert_shape(const bd_tensor *t, int ndim, const int64_t *dims, const char *what)
{
    what = what ? what : "output";
    if (t->ndim != ndim)
        fail_msg("%s: rank %d, expected %d", what, t->ndim, ndim);
    for (int d = 0; d < ndim; d++)
        if (t->dims[d] != dims[d])
            fail_msg("%s: dim %d is %lld, expected %lld", what, d, (long long)t->dims[d],
                     (long long)dims[d]);
}

void bd_test_assert_close(const bd_tensor *got, const float *ref, double tol, const char *what)
{
    what = what ? what : "output";
    if (got->dtype != BD_F32)
        fail_msg("%s: dtype %s, expected float32", what, bd_dtype_name(got->dtype));
    double err = bd_test_rel_error(got->data, ref, (size_t)bd_tensor_count(got));
    if (!(err < tol))
        fail_msg("%s: relative error %g", what, err);
}

void bd_test_unravel(int64_t i, int ndim, const int64_t *dims, int64_t *idx)
{
    for (int d = ndim - 1; d >= 0; d--) {
        idx[d] = i % dims[d];
        i /= dims[d];
    }
}

int64_t bd_test_bcast_offset(int ndim, const int64_t *dims, int out_ndim, const int64_t *idx)
{
    int64_t off = 0;
    for (int d = 0; d < ndim; d++)
        off = off * dims[d] + (dims[d] == 1 ? 0 : idx[d + out_ndim - ndim]);
    return off;
}
