/* Shape and data-movement kernels against naive reference loops: views that
 * must share storage, copies for every element width, and the per-opset
 * forms of the attribute-or-input arguments. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "bd_test_node.h"
#include "graph.h"
#include "ops.h"

#define DIMS BD_TEST_DIMS
#define INTS BD_TEST_INTS
#define SCALAR BD_TEST_SCALAR

/* Element i is i + 1 (as the dtype holds it), so every position is
 * distinguishable; floats get a fraction too. */
static bd_tensor *iota(bd_dtype dt, int ndim, const int64_t *dims)
{
    bd_tensor *t = bd_test_tensor(dt, ndim, dims);
    int64_t n = bd_tensor_count(t);
    for (int64_t i = 0; i < n; i++) {
        switch (dt) {
        case BD_F32: ((float *)t->data)[i] = (float)i + 0.25f; break;
        case BD_I64: ((int64_t *)t->data)[i] = i + 1; break;
        case BD_F16: ((uint16_t *)t->data)[i] = bd_f32_to_f16((float)(i % 1000)); break;
        default: ((uint8_t *)t->data)[i] = (uint8_t)(i * 7 + 1); break;
        }
    }
    return t;
}

/* Element i of t and element j of u are equal, whatever the width. */
static void assert_elem_equal(const bd_tensor *t, int64_t i, const bd_tensor *u, int64_t j)
{
    size_t es = bd_dtype_size(t->dtype);
    assert_int_equal(t->dtype, u->dtype);
    assert_memory_equal((const char *)t->data + (size_t)i * es,
                        (const char *)u->data + (size_t)j * es, es);
}

static int64_t ravel(int ndim, const int64_t *dims, const int64_t *idx)
{
    int64_t off = 0;
    for (int d = 0; d < ndim; d++)
        off = off * dims[d] + idx[d];
    return off;
}

/* ---- views ---- */

/* y must be a view of x (same storage, same bytes) with the given shape. */
static void assert_view(const bd_tensor *y, const bd_tensor *x, int ndim, const int64_t *dims)
{
    bd_test_assert_shape(y, ndim, dims, NULL);
    assert_ptr_equal(y->storage, x->storage);
    assert_ptr_equal(y->data, x->data);
    assert_int_equal(y->dtype, x->dtype);
}

static void test_flatten(void **state)
{
    (void)state;
    bd_tensor *x = iota(BD_F32, DIMS(3, 5, 7, 9));
    static const struct {
        int64_t axis, rows;
    } cases[] = {{0, 1}, {1, 3}, {2, 15}, {3, 105}, {4, 945}, {-1, 105}, {-4, 1}};
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        bd_graph *g;
        bd_node *n = bd_test_node(&g, 13, "Flatten", 1, 1);
        bd_test_attr_int(n, "axis", cases[c].axis);
        bd_tensor *y = bd_test_run(g, n, &x);
        assert_view(y, x, 2, (int64_t[]){cases[c].rows, 945 / cases[c].rows});
        bd_tensor_free(y);
        bd_graph_free(g);
    }
    bd_graph *g;
    bd_node *n = bd_test_node(&g, 13, "Flatten", 1, 1); /* default axis 1 */
    bd_tensor *y = bd_test_run(g, n, &x);
    assert_view(y, x, 2, (int64_t[]){3, 315});
    bd_tensor_free(y);
    bd_graph_free(g);
    n = bd_test_node(&g, 13, "Flatten", 1, 1);
    bd_test_attr_int(n, "axis", 5);
    bd_test_assert_fails(g, n, &x);
    assert_non_null(strstr(bd_error_message(), "axis 5"));
    bd_graph_free(g);
    bd_tensor_free(x);
}

static void test_reshape(void **state)
{
    (void)state;
    bd_tensor *x = iota(BD_F32, DIMS(3, 5, 7, 9));
    static const struct {
        int64_t opset, allowzero;
        int n;
        int64_t shape[5];
        int nout;
        int64_t out[5];
    } cases[] = {
        {13, 0, 2, {15, 63}, 2, {15, 63}},
        {13, 0, 3, {0, -1, 9}, 3, {3, 35, 9}},     /* 0 copies dim 0 */
        {13, 0, 4, {0, 0, -1, 3}, 4, {3, 5, 21, 3}},
        {13, 0, 1, {-1}, 1, {945}},
        {14, 0, 5, {0, 0, 7, 9, -1}, 5, {3, 5, 7, 9, 1}},
        {14, 1, 2, {945, 1}, 2, {945, 1}},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        bd_graph *g;
        bd_node *n = bd_test_node(&g, cases[c].opset, "Reshape", 2, 1);
        if (cases[c].allowzero)
            bd_test_attr_int(n, "allowzero", 1);
        bd_tensor *shape = bd_test_ints(cases[c].n, cases[c].shape);
        bd_tensor *y = bd_test_run(g, n, (bd_tensor *[]){x, shape});
        assert_view(y, x, cases[c].nout, cases[c].out);
        bd_tensor_free(y);
        bd_tensor_free(shape);
        bd_graph_free(g);
    }
    /* allowzero keeps a 0 literally: an empty tensor reshapes to [0, 4] */
    bd_tensor *empty = bd_test_tensor(BD_F32, DIMS(3, 0, 4)), *shape = INTS(0, 4), *y;
    bd_graph *g;
    bd_node *n = bd_test_node(&g, 14, "Reshape", 2, 1);
    bd_test_attr_int(n, "allowzero", 1);
    y = bd_test_run(g, n, (bd_tensor *[]){empty, shape});
    bd_test_assert_shape(y, 2, (int64_t[]){0, 4}, NULL);
    bd_tensor_free(y);
    bd_tensor_free(shape);
    bd_graph_free(g);
    n = bd_test_node(&g, 14, "Reshape", 2, 1);
    /* errors: two -1, a count mismatch, a 0 past the input's rank, -2 */
    static const struct {
        int n;
        int64_t shape[5];
        const char *msg;
    } bad[] = {{3, {-1, -1, 9}, "second"}, {2, {4, -1}, "cannot reshape"},
               {2, {10, 10}, "cannot reshape"}, {5, {3, 5, 7, 9, 0}, "rank 4"},
               {2, {-2, 9}, "-2"}};
    for (size_t c = 0; c < sizeof bad / sizeof bad[0]; c++) {
        shape = bd_test_ints(bad[c].n, bad[c].shape);
        bd_test_assert_fails(g, n, (bd_tensor *[]){x, shape});
        if (!strstr(bd_error_message(), bad[c].msg))
            fail_msg("expected '%s' in: %s", bad[c].msg, bd_error_message());
        bd_tensor_free(shape);
    }
    bd_graph_free(g);
    bd_tensor_free(empty);
    bd_tensor_free(x);
}

static void test_identity_dropout(void **state)
{
    (void)state;
    bd_tensor *x = iota(BD_F32, DIMS(3, 5, 7)), *out[2];
    bd_graph *g;
    bd_node *n = bd_test_node(&g, 13, "Identity", 1, 1);
    bd_tensor *y = bd_test_run(g, n, &x);
    assert_view(y, x, 3, x->dims);
    bd_tensor_free(y);
    bd_graph_free(g);

    n = bd_test_node(&g, 13, "Dropout", 1, 1);
    y = bd_test_run(g, n, &x);
    assert_view(y, x, 3, x->dims);
    bd_tensor_free(y);
    bd_graph_free(g);

    n = bd_test_node(&g, 13, "Dropout", 3, 2); /* ratio, training_mode, and the mask */
    bd_tensor *ratio = bd_test_tensor(BD_F32, SCALAR), *training = bd_test_tensor(BD_BOOL, SCALAR);
    *(float *)ratio->data = 0.5f;
    assert_int_equal(bd_op_run(g, n, (bd_tensor *[]){x, ratio, training}, out), BD_OK);
    assert_view(out[0], x, 3, x->dims);
    assert_int_equal(out[1]->dtype, BD_BOOL);
    bd_test_assert_shape(out[1], 3, x->dims, NULL);
    for (int64_t i = 0; i < bd_tensor_count(x); i++)
        assert_int_equal(((uint8_t *)out[1]->data)[i], 1);
    bd_tensor_free(out[0]);
    bd_tensor_free(out[1]);
    *(uint8_t *)training->data = 1;
    bd_test_assert_fails(g, n, (bd_tensor *[]){x, ratio, training});
    assert_non_null(strstr(bd_error_message(), "training"));
    bd_graph_free(g);
    bd_tensor_free(ratio);
    bd_tensor_free(training);
    bd_tensor_free(x);
}

static void test_unsqueeze_squeeze(void **state)
{
    (void)state;
    bd_tensor *x = iota(BD_F32, DIMS(3, 5, 7)), *y;
    static const struct {
        int n;
        int64_t axes[3];
        int nout;
        int64_t out[6];
    } un[] = {{1, {0}, 4, {1, 3, 5, 7}},
              {2, {0, -1}, 5, {1, 3, 5, 7, 1}},
              {2, {1, 3}, 5, {3, 1, 5, 1, 7}},
              {3, {4, 0, -3}, 6, {1, 3, 5, 1, 1, 7}}};
    for (int64_t opset = 11; opset <= 13; opset += 2)
        for (size_t c = 0; c < sizeof un / sizeof un[0]; c++) {
            bd_graph *g;
            bd_tensor *axes = NULL;
            bd_node *n = bd_test_node(&g, opset, "Unsqueeze", opset >= 13 ? 2 : 1, 1);
            if (opset >= 13)
                axes = bd_test_ints(un[c].n, un[c].axes);
            else
                bd_test_attr_ints(n, "axes", un[c].n, un[c].axes);
            y = bd_test_run(g, n, (bd_tensor *[]){x, axes});
            assert_view(y, x, un[c].nout, un[c].out);

            /* Squeeze the same axes back (normalised against y's rank) */
            bd_graph *g2;
            bd_tensor *axes2 = NULL;
            bd_node *n2 = bd_test_node(&g2, opset, "Squeeze", opset >= 13 ? 2 : 1, 1);
            if (opset >= 13)
                axes2 = bd_test_ints(un[c].n, un[c].axes);
            else
                bd_test_attr_ints(n2, "axes", un[c].n, un[c].axes);
            bd_tensor *z = bd_test_run(g2, n2, (bd_tensor *[]){y, axes2});
            assert_view(z, x, 3, x->dims);
            bd_tensor_free(z);
            bd_tensor_free(axes2);
            bd_graph_free(g2);
            bd_tensor_free(y);
            bd_tensor_free(axes);
            bd_graph_free(g);
        }
    /* Squeeze without axes drops every 1 */
    bd_tensor *ones = iota(BD_I64, DIMS(1, 3, 1, 7, 1));
    bd_graph *g;
    bd_node *n = bd_test_node(&g, 13, "Squeeze", 1, 1);
    y = bd_test_run(g, n, &ones);
    assert_view(y, ones, 2, (int64_t[]){3, 7});
    bd_tensor_free(y);
    bd_graph_free(g);
    /* errors: squeezing a dim that is not 1, a duplicate, an axis out of range */
    n = bd_test_node(&g, 13, "Squeeze", 2, 1);
    bd_tensor *axes = INTS(1);
    bd_test_assert_fails(g, n, (bd_tensor *[]){ones, axes});
    assert_non_null(strstr(bd_error_message(), "size 3"));
    bd_tensor_free(axes);
    axes = INTS(5);
    bd_test_assert_fails(g, n, (bd_tensor *[]){ones, axes});
    bd_tensor_free(axes);
    bd_graph_free(g);
    n = bd_test_node(&g, 13, "Unsqueeze", 2, 1);
    axes = INTS(1, -4);
    bd_test_assert_fails(g, n, (bd_tensor *[]){x, axes});
    assert_non_null(strstr(bd_error_message(), "twice"));
    bd_tensor_free(axes);
    axes = INTS(5);
    bd_test_assert_fails(g, n, (bd_tensor *[]){x, axes});
    bd_tensor_free(axes);
    bd_test_assert_fails(g, n, (bd_tensor *[]){x, NULL});
    bd_graph_free(g);
    bd_tensor_free(ones);
    bd_tensor_free(x);
}

/* ---- copies ---- */

static const bd_dtype widths[] = {BD_F32, BD_I64, BD_F16, BD_U8};

static void check_transpose(bd_dtype dt, int np, const int64_t *perm)
{
    bd_tensor *x = iota(dt, DIMS(3, 5, 7, 9));
    bd_graph *g;
    bd_node *n = bd_test_node(&g, 13, "Transpose", 1, 1);
    int64_t p[4] = {3, 2, 1, 0}, dims[4];
    if (np) {
        bd_test_attr_ints(n, "perm", np, perm);
        memcpy(p, perm, sizeof p);
    }
    for (int d = 0; d < 4; d++)
        dims[d] = x->dims[p[d]];
    bd_tensor *y = bd_test_run(g, n, &x);
    bd_test_assert_shape(y, 4, dims, NULL);
    for (int64_t i = 0; i < bd_tensor_count(y); i++) {
        int64_t oi[4], xi[4];
        bd_test_unravel(i, 4, dims, oi);
        for (int d = 0; d < 4; d++)
            xi[p[d]] = oi[d];
        assert_elem_equal(y, i, x, ravel(4, x->dims, xi));
    }
    bd_tensor_free(y);
    bd_tensor_free(x);
    bd_graph_free(g);
}

/* Transpose of a rank-3 x by perm, every element checked. */
static void check_transpose3(bd_tensor *x, const int64_t *perm)
{
    bd_graph *g;
    bd_node *n = bd_test_node(&g, 13, "Transpose", 1, 1);
    bd_test_attr_ints(n, "perm", 3, perm);
    bd_tensor *y = bd_test_run(g, n, &x);
    for (int64_t i = 0; i < bd_tensor_count(y); i++) {
        int64_t oi[3], xi[3];
        bd_test_unravel(i, 3, y->dims, oi);
        for (int d = 0; d < 3; d++)
            xi[perm[d]] = oi[d];
        assert_elem_equal(y, i, x, ravel(3, x->dims, xi));
    }
    bd_tensor_free(y);
    bd_graph_free(g);
}

static void test_transpose(void **state)
{
    (void)state;
    static const int64_t perms[][4] = {{0, 2, 3, 1}, {2, 0, 3, 1}, {0, 1, 3, 2}, {1, 0, 2, 3},
                                       {0, 1, 2, 3}, {3, 1, 2, 0}};
    for (size_t w = 0; w < sizeof widths / sizeof widths[0]; w++) {
        check_transpose(widths[w], 0, NULL);
        for (size_t p = 0; p < sizeof perms / sizeof perms[0]; p++)
            check_transpose(widths[w], 4, perms[p]);
    }
    /* large enough for the parallel path: [64, 48, 33] -> [33, 64, 48] */
    bd_tensor *x = iota(BD_F32, DIMS(64, 48, 33));
    check_transpose3(x, (int64_t[]){2, 0, 1});
    /* a transpose in the last two dims cut in 16x16 blocks, each dim ending
     * in a partial block, twice over: [2, 37, 21] -> [2, 21, 37] */
    bd_tensor *t = iota(BD_F32, DIMS(2, 37, 21));
    check_transpose3(t, (int64_t[]){0, 2, 1});
    bd_tensor_free(t);
    bd_graph *g;
    bd_node *n = bd_test_node(&g, 13, "Transpose", 1, 1);
    bd_test_attr_ints(n, "perm", 3, (int64_t[]){0, 0, 1});
    bd_test_assert_fails(g, n, &x);
    bd_graph_free(g);
    n = bd_test_node(&g, 13, "Transpose", 1, 1);
    bd_test_attr_ints(n, "perm", 2, (int64_t[]){1, 0});
    bd_test_assert_fails(g, n, &x);
    bd_graph_free(g);
    bd_tensor_free(x);
}

static void check_concat(bd_dtype dt, int64_t axis)
{
    /* three inputs of [3, 5, 7, 9] with the concat axis resized to 2, 1, 4 */
    static const int64_t sizes[3] = {2, 1, 4};
    int a = (int)(axis < 0 ? axis + 4 : axis);
    bd_tensor *in[3];
    for (int k = 0; k < 3; k++) {
        int64_t dims[4] = {3, 5, 7, 9};
        dims[a] = sizes[k];
        in[k] = iota(dt, 4, dims);
    }
    bd_graph *g;
    bd_node *n = bd_test_node(&g, 13, "Concat", 3, 1);
    bd_test_attr_int(n, "axis", axis);
    bd_tensor *y = bd_test_run(g, n, in);
    int64_t dims[4] = {3, 5, 7, 9};
    dims[a] = 7;
    bd_test_assert_shape(y, 4, dims, NULL);
    for (int64_t i = 0; i < bd_tensor_count(y); i++) {
        int64_t idx[4];
        bd_test_unravel(i, 4, dims, idx);
        int k = 0;
        while (idx[a] >= sizes[k])
            idx[a] -= sizes[k++];
        assert_elem_equal(y, i, in[k], ravel(4, in[k]->dims, idx));
    }
    bd_tensor_free(y);
    for (int k = 0; k < 3; k++)
        bd_tensor_free(in[k]);
    bd_graph_free(g);
}

static void test_concat(void **state)
{
    (void)state;
    for (size_t w = 0; w < sizeof widths / sizeof widths[0]; w++)
        for (int64_t axis = -4; axis < 4; axis++)
            check_concat(widths[w], axis);
    bd_tensor *a = iota(BD_F32, DIMS(3, 5)), *b = iota(BD_F32, DIMS(3, 6));
    bd_tensor *c = iota(BD_I64, DIMS(3, 5)), *big = iota(BD_F32, DIMS(3, 5, 67, 101));
    bd_graph *g;
    bd_node *n = bd_test_node(&g, 13, "Concat", 2, 1);
    bd_test_attr_int(n, "axis", 0);
    bd_test_assert_fails(g, n, (bd_tensor *[]){a, b});
    assert_non_null(strstr(bd_error_message(), "[3, 6]"));
    bd_test_assert_fails(g, n, (bd_tensor *[]){a, c});
    assert_non_null(strstr(bd_error_message(), "int64"));
    bd_tensor *y = bd_test_run(g, n, (bd_tensor *[]){big, big});
    assert_memory_equal(y->data, big->data, bd_tensor_nbytes(big));
    assert_memory_equal((char *)y->data + bd_tensor_nbytes(big), big->data,
                        bd_tensor_nbytes(big));
    bd_tensor_free(y);
    bd_graph_free(g);
    /* along the channels of several images, each block in pieces shared by
     * the threads, the last piece of each part way */
    bd_tensor *small = iota(BD_F32, DIMS(3, 2, 67, 101));
    n = bd_test_node(&g, 13, "Concat", 2, 1);
    bd_test_attr_int(n, "axis", 1);
    y = bd_test_run(g, n, (bd_tensor *[]){big, small});
    const size_t bb = bd_tensor_nbytes(big) / 3, sb = bd_tensor_nbytes(small) / 3;
    for (int i = 0; i < 3; i++) {
        assert_memory_equal((char *)y->data + i * (bb + sb), (char *)big->data + i * bb, bb);
        assert_memory_equal((char *)y->data + i * (bb + sb) + bb, (char *)small->data + i * sb,
                            sb);
    }
    bd_tensor_free(y);
    bd_tensor_free(small);
    bd_graph_free(g);
    n = bd_test_node(&g, 13, "Concat", 2, 1);
    bd_test_attr_int(n, "axis", 2);
    bd_test_assert_fails(g, n, (bd_tensor *[]){a, a});
    assert_non_null(strstr(bd_error_message(), "axis 2"));
    bd_graph_free(g);
    n = bd_test_node(&g, 13, "Concat", 2, 1); /* axis is required */
    bd_test_assert_fails(g, n, (bd_tensor *[]){a, a});
    bd_graph_free(g);
    bd_tensor_free(a);
    bd_tensor_free(b);
    bd_tensor_free(c);
    bd_tensor_free(big);
}

static void test_constant(void **state)
{
    (void)state;
    bd_graph *g;
    bd_tensor *v = iota(BD_I64, DIMS(3, 5)), *y;
    bd_node *n = bd_test_node(&g, 13, "Constant", 0, 1);
    bd_test_attr_tensor(n, "value", v);
    y = bd_test_run(g, n, NULL);
    bd_test_assert_shape(y, 2, v->dims, NULL);
    assert_int_equal(y->dtype, BD_I64);
    assert_memory_equal(y->data, v->data, bd_tensor_nbytes(v));
    bd_tensor_free(y);
    bd_graph_free(g);

    n = bd_test_node(&g, 13, "Constant", 0, 1);
    bd_test_attr_float(n, "value_float", 2.5f);
    y = bd_test_run(g, n, NULL);
    assert_int_equal(y->ndim, 0);
    assert_int_equal(y->dtype, BD_F32);
    assert_true(*(float *)y->data == 2.5f);
    bd_tensor_free(y);
    bd_graph_free(g);

    n = bd_test_node(&g, 13, "Constant", 0, 1);
    float fv[3] = {1.5f, -2, 3};
    bd_attr fs = {.name = "value_floats", .type = BD_ATTR_FLOATS, .n = 3, .floats = fv};
    assert_int_equal(bd_node_add_attr(n, &fs), BD_OK);
    y = bd_test_run(g, n, NULL);
    bd_test_assert_shape(y, 1, (int64_t[]){3}, NULL);
    assert_memory_equal(y->data, fv, sizeof fv);
    bd_tensor_free(y);
    bd_graph_free(g);

    n = bd_test_node(&g, 13, "Constant", 0, 1);
    bd_test_attr_int(n, "value_int", -7);
    y = bd_test_run(g, n, NULL);
    assert_int_equal(y->ndim, 0);
    assert_int_equal(*(int64_t *)y->data, -7);
    bd_tensor_free(y);
    bd_graph_free(g);

    n = bd_test_node(&g, 13, "Constant", 0, 1);
    bd_test_attr_ints(n, "value_ints", 4, (int64_t[]){1, -2, 3, 0});
    y = bd_test_run(g, n, NULL);
    bd_test_assert_shape(y, 1, (int64_t[]){4}, NULL);
    assert_int_equal(((int64_t *)y->data)[1], -2);
    assert_int_equal(((int64_t *)y->data)[3], 0);
    bd_tensor_free(y);
    bd_graph_free(g);

    n = bd_test_node(&g, 13, "Constant", 0, 1);
    bd_test_attr_str(n, "value_string", "hello");
    bd_test_assert_fails(g, n, NULL);
    assert_non_null(strstr(bd_error_message(), "value_string"));
    bd_graph_free(g);
    n = bd_test_node(&g, 13, "Constant", 0, 1);
    bd_test_assert_fails(g, n, NULL);
    bd_graph_free(g);
    bd_tensor_free(v);
}

static void test_cast(void **state)
{
    (void)state;
    bd_tensor *x = bd_test_tensor(BD_F32, DIMS(3, 5, 7));
    float *xd = x->data;
    for (int64_t i = 0; i < bd_tensor_count(x); i++)
        xd[i] = (float)(i % 11) * 0.75f - 3.6f + (i % 4 == 0 ? 0 : 0.001f * (float)i);
    xd[0] = 0;
    bd_graph *g;
    bd_node *n = bd_test_node(&g, 13, "Cast", 1, 1);
    bd_test_attr_int(n, "to", BD_I64);
    bd_tensor *y = bd_test_run(g, n, &x);
    assert_int_equal(y->dtype, BD_I64);
    for (int64_t i = 0; i < bd_tensor_count(x); i++)
        assert_int_equal(((int64_t *)y->data)[i], (int64_t)truncf(xd[i]));
    bd_graph_free(g);

    n = bd_test_node(&g, 13, "Cast", 1, 1); /* back to float */
    bd_test_attr_int(n, "to", BD_F32);
    bd_tensor *z = bd_test_run(g, n, &y);
    for (int64_t i = 0; i < bd_tensor_count(x); i++)
        assert_true(((float *)z->data)[i] == truncf(xd[i]));
    bd_tensor_free(z);
    bd_tensor_free(y);
    bd_graph_free(g);

    static const bd_dtype to[] = {BD_F16, BD_F64, BD_BOOL, BD_I8, BD_U8, BD_I32, BD_I16};
    for (size_t t = 0; t < sizeof to / sizeof to[0]; t++) {
        n = bd_test_node(&g, 13, "Cast", 1, 1);
        bd_test_attr_int(n, "to", to[t]);
        y = bd_test_run(g, n, &x);
        assert_int_equal(y->dtype, to[t]);
        bd_test_assert_shape(y, 3, x->dims, NULL);
        for (int64_t i = 0; i < bd_tensor_count(x); i++) {
            double v = bd_tensor_get_f64(y, i), want = xd[i];
            if (to[t] == BD_BOOL)
                want = xd[i] != 0;
            else if (to[t] == BD_U8)
                want = xd[i] < 0 ? 0 : trunc(xd[i]);
            else if (to[t] != BD_F16 && to[t] != BD_F64)
                want = trunc(xd[i]);
            if (fabs(v - want) > (to[t] == BD_F16 ? 4e-3 : 0))
                fail_msg("cast to %s: element %lld is %g, expected %g", bd_dtype_name(to[t]),
                         (long long)i, v, want);
        }
        bd_tensor_free(y);
        bd_graph_free(g);
    }
    n = bd_test_node(&g, 13, "Cast", 1, 1);
    bd_test_attr_int(n, "to", 8); /* string */
    bd_test_assert_fails(g, n, &x);
    assert_non_null(strstr(bd_error_message(), "8"));
    bd_graph_free(g);
    bd_tensor_free(x);
}

static void check_gather(bd_dtype dt, bd_dtype index_dt, int64_t axis)
{
    bd_tensor *x = iota(dt, DIMS(3, 5, 7)), *idx = bd_test_tensor(index_dt, DIMS(2, 3));
    int a = (int)(axis < 0 ? axis + 3 : axis);
    int64_t size = x->dims[a];
    int64_t vals[6] = {0, size - 1, -1, -size, 1, 2};
    for (int i = 0; i < 6; i++) {
        if (index_dt == BD_I64)
            ((int64_t *)idx->data)[i] = vals[i];
        else
            ((int32_t *)idx->data)[i] = (int32_t)vals[i];
    }
    bd_graph *g;
    bd_node *n = bd_test_node(&g, 13, "Gather", 2, 1);
    bd_test_attr_int(n, "axis", axis);
    bd_tensor *y = bd_test_run(g, n, (bd_tensor *[]){x, idx});
    int64_t dims[4];
    for (int d = 0, k = 0; d < 3; d++) {
        if (d == a) {
            dims[k++] = 2;
            dims[k++] = 3;
        } else {
            dims[k++] = x->dims[d];
        }
    }
    bd_test_assert_shape(y, 4, dims, NULL);
    for (int64_t i = 0; i < bd_tensor_count(y); i++) {
        int64_t oi[4], xi[3];
        bd_test_unravel(i, 4, dims, oi);
        for (int d = 0, k = 0; d < 3; d++) {
            if (d == a) {
                int64_t v = vals[oi[k] * 3 + oi[k + 1]];
                xi[d] = v < 0 ? v + size : v;
                k += 2;
            } else {
                xi[d] = oi[k++];
            }
        }
        assert_elem_equal(y, i, x, ravel(3, x->dims, xi));
    }
    bd_tensor_free(y);
    bd_tensor_free(x);
    bd_tensor_free(idx);
    bd_graph_free(g);
}

static void test_gather(void **state)
{
    (void)state;
    for (size_t w = 0; w < sizeof widths / sizeof widths[0]; w++)
        for (int64_t axis = -3; axis < 3; axis++) {
            check_gather(widths[w], BD_I64, axis);
            check_gather(widths[w], BD_I32, axis);
        }
    /* a scalar index drops the axis */
    bd_tensor *x = iota(BD_F32, DIMS(3, 5, 7)), *idx = bd_test_tensor(BD_I64, SCALAR);
    *(int64_t *)idx->data = -2;
    bd_graph *g;
    bd_node *n = bd_test_node(&g, 13, "Gather", 2, 1);
    bd_test_attr_int(n, "axis", 1);
    bd_tensor *y = bd_test_run(g, n, (bd_tensor *[]){x, idx});
    bd_test_assert_shape(y, 2, (int64_t[]){3, 7}, NULL);
    assert_elem_equal(y, 7 + 4, x, (1 * 5 + 3) * 7 + 4);
    bd_tensor_free(y);
    *(int64_t *)idx->data = 5;
    bd_test_assert_fails(g, n, (bd_tensor *[]){x, idx});
    assert_non_null(strstr(bd_error_message(), "index 5"));
    *(int64_t *)idx->data = -6;
    bd_test_assert_fails(g, n, (bd_tensor *[]){x, idx});
    bd_tensor *fidx = bd_test_tensor(BD_F32, DIMS(2));
    bd_test_assert_fails(g, n, (bd_tensor *[]){x, fidx});
    bd_graph_free(g);
    n = bd_test_node(&g, 13, "Gather", 2, 1);
    bd_test_attr_int(n, "axis", 3);
    *(int64_t *)idx->data = 0;
    bd_test_assert_fails(g, n, (bd_tensor *[]){x, idx});
    bd_graph_free(g);
    bd_tensor_free(fidx);
    bd_tensor_free(idx);
    bd_tensor_free(x);
}

static void test_shape(void **state)
{
    (void)state;
    static const struct {
        int set_start, set_end;
        int64_t start, end, first, len;
    } cases[] = {{0, 0, 0, 0, 0, 4},  {1, 0, 1, 0, 1, 3},   {0, 1, 0, -1, 0, 3},
                 {1, 1, -2, 4, 2, 2}, {1, 1, -10, 10, 0, 4}, {1, 1, 3, 1, 0, 0}};
    bd_tensor *x = iota(BD_U8, DIMS(3, 5, 7, 9));
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        bd_graph *g;
        bd_node *n = bd_test_node(&g, 15, "Shape", 1, 1);
        if (cases[c].set_start)
            bd_test_attr_int(n, "start", cases[c].start);
        if (cases[c].set_end)
            bd_test_attr_int(n, "end", cases[c].end);
        bd_tensor *y = bd_test_run(g, n, &x);
        assert_int_equal(y->dtype, BD_I64);
        bd_test_assert_shape(y, 1, &cases[c].len, NULL);
        for (int64_t i = 0; i < cases[c].len; i++)
            assert_int_equal(((int64_t *)y->data)[i], x->dims[cases[c].first + i]);
        bd_tensor_free(y);
        bd_graph_free(g);
    }
    bd_tensor_free(x);
}

static int64_t clamp(int64_t v, int64_t lo, int64_t hi) { return v < lo ? lo : v > hi ? hi : v; }

/* The ONNX Slice rule for one axis, spelled as a loop over the selected
 * indices. Returns how many; idx gets them. */
static int64_t ref_slice_axis(int64_t size, int64_t start, int64_t end, int64_t step,
                              int64_t *idx)
{
    if (start < 0)
        start += size;
    if (end < 0)
        end += size;
    if (step > 0) {
        start = clamp(start, 0, size);
        end = clamp(end, 0, size);
    } else {
        start = clamp(start, 0, size - 1);
        end = clamp(end, -1, size - 1);
    }
    int64_t n = 0;
    for (int64_t i = start; step > 0 ? i < end : i > end; i += step) {
        idx[n++] = i;
        if (step > 0 ? i > INT64_MAX - step : i < INT64_MIN - step)
            break; /* the next index is past any end */
    }
    return n;
}

typedef struct {
    int n;
    int64_t starts[4], ends[4], axes[4], steps[4];
    int has_axes, has_steps;
} slice_case;

static void check_slice(bd_dtype dt, int64_t opset, const slice_case *sc)
{
    bd_tensor *x = iota(dt, DIMS(3, 5, 7, 9));
    bd_graph *g;
    bd_tensor *args[5] = {x, NULL, NULL, NULL, NULL};
    int nin = opset >= 10 ? 3 + sc->has_axes + sc->has_steps : 1;
    if (opset >= 10 && sc->has_steps && !sc->has_axes)
        nin = 5;
    bd_node *n = bd_test_node(&g, opset, "Slice", nin, 1);
    if (opset >= 10) {
        args[1] = bd_test_ints(sc->n, sc->starts);
        args[2] = bd_test_ints(sc->n, sc->ends);
        if (sc->has_axes)
            args[3] = bd_test_ints(sc->n, sc->axes);
        if (sc->has_steps)
            args[4] = bd_test_ints(sc->n, sc->steps);
    } else {
        bd_test_attr_ints(n, "starts", sc->n, sc->starts);
        bd_test_attr_ints(n, "ends", sc->n, sc->ends);
        if (sc->has_axes)
            bd_test_attr_ints(n, "axes", sc->n, sc->axes);
    }
    int64_t sel[4][9], dims[4];
    for (int d = 0; d < 4; d++) {
        dims[d] = x->dims[d];
        for (int64_t i = 0; i < dims[d]; i++)
            sel[d][i] = i;
    }
    for (int k = 0; k < sc->n; k++) {
        int a = (int)(sc->has_axes ? (sc->axes[k] < 0 ? sc->axes[k] + 4 : sc->axes[k]) : k);
        dims[a] = ref_slice_axis(x->dims[a], sc->starts[k], sc->ends[k],
                                 sc->has_steps ? sc->steps[k] : 1, sel[a]);
    }
    bd_tensor *y = bd_test_run(g, n, args);
    bd_test_assert_shape(y, 4, dims, NULL);
    for (int64_t i = 0; i < bd_tensor_count(y); i++) {
        int64_t oi[4], xi[4];
        bd_test_unravel(i, 4, dims, oi);
        for (int d = 0; d < 4; d++)
            xi[d] = sel[d][oi[d]];
        assert_elem_equal(y, i, x, ravel(4, x->dims, xi));
    }
    bd_tensor_free(y);
    for (int k = 0; k < 5; k++)
        bd_tensor_free(args[k]);
    bd_graph_free(g);
}

static void test_slice(void **state)
{
    (void)state;
    static const slice_case cases[] = {
        {1, {1}, {3}, {0}, {0}, 0, 0},
        {2, {0, 2}, {-1, 100}, {2, -1}, {0}, 1, 0},
        {2, {-100, 1}, {INT64_MAX, -2}, {1, 3}, {2, 3}, 1, 1},
        {1, {-1}, {INT64_MIN}, {-1}, {-1}, 1, 1},              /* reverse the last axis */
        {2, {6, 100}, {-100, 0}, {2, 0}, {-2, -1}, 1, 1},       /* negative, clamped */
        {1, {2}, {2}, {1}, {1}, 1, 1},                          /* empty */
        {1, {0}, {9}, {3}, {INT64_MAX}, 1, 1},                  /* one element */
        {1, {8}, {0}, {-1}, {INT64_MIN}, 1, 1},
        {1, {-100}, {INT64_MIN}, {3}, {-1}, 1, 1},              /* start clamps to 0 */
        {4, {0, 4, -3, 1}, {3, 0, -8, 9}, {0, 1, 2, 3}, {2, -1, -1, 3}, 1, 1},
        {3, {1, 1, 1}, {3, 4, 6}, {0}, {1, 2, 3}, 0, 1},       /* steps without axes */
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++)
        for (size_t w = 0; w < sizeof widths / sizeof widths[0]; w++)
            check_slice(widths[w], 13, &cases[c]);
    check_slice(BD_F32, 9, &cases[0]); /* attribute form */
    check_slice(BD_F32, 9, &cases[1]);
    bd_tensor *x = iota(BD_F32, DIMS(3, 5)), *s = INTS(0), *e = INTS(2), *ax = INTS(2);
    bd_tensor *zero = INTS(0), *two = INTS(0, 1);
    bd_graph *g;
    bd_node *n = bd_test_node(&g, 13, "Slice", 5, 1);
    bd_test_assert_fails(g, n, (bd_tensor *[]){x, s, e, ax, NULL});
    assert_non_null(strstr(bd_error_message(), "axis 2"));
    bd_test_assert_fails(g, n, (bd_tensor *[]){x, s, e, NULL, zero});
    assert_non_null(strstr(bd_error_message(), "step"));
    bd_test_assert_fails(g, n, (bd_tensor *[]){x, s, two, NULL, NULL});
    bd_test_assert_fails(g, n, (bd_tensor *[]){x, NULL, e, NULL, NULL});
    bd_graph_free(g);
    bd_tensor *list[] = {x, s, e, ax, zero, two};
    for (size_t k = 0; k < sizeof list / sizeof list[0]; k++)
        bd_tensor_free(list[k]);
}

static void test_constant_of_shape(void **state)
{
    (void)state;
    bd_tensor *shape = INTS(3, 5, 7), *empty = bd_test_tensor(BD_I64, DIMS(0));
    bd_graph *g;
    bd_node *n = bd_test_node(&g, 13, "ConstantOfShape", 1, 1);
    bd_tensor *y = bd_test_run(g, n, &shape);
    assert_int_equal(y->dtype, BD_F32);
    bd_test_assert_shape(y, 3, (int64_t[]){3, 5, 7}, NULL);
    for (int64_t i = 0; i < 105; i++)
        assert_true(((float *)y->data)[i] == 0);
    bd_tensor_free(y);
    bd_graph_free(g);

    bd_tensor *v = bd_test_tensor(BD_I64, DIMS(1));
    *(int64_t *)v->data = -9;
    n = bd_test_node(&g, 13, "ConstantOfShape", 1, 1);
    bd_test_attr_tensor(n, "value", v);
    y = bd_test_run(g, n, &shape);
    assert_int_equal(y->dtype, BD_I64);
    for (int64_t i = 0; i < 105; i++)
        assert_int_equal(((int64_t *)y->data)[i], -9);
    bd_tensor_free(y);
    y = bd_test_run(g, n, &empty); /* an empty shape gives a scalar */
    assert_int_equal(y->ndim, 0);
    assert_int_equal(*(int64_t *)y->data, -9);
    bd_tensor_free(y);
    bd_graph_free(g);

    bd_tensor *f = bd_test_tensor(BD_F16, DIMS(1)), *big = INTS(3, 5, 67, 101);
    *(uint16_t *)f->data = bd_f32_to_f16(2.5f);
    n = bd_test_node(&g, 13, "ConstantOfShape", 1, 1);
    bd_test_attr_tensor(n, "value", f);
    y = bd_test_run(g, n, &big);
    assert_int_equal(y->dtype, BD_F16);
    for (int64_t i = 0; i < bd_tensor_count(y); i++)
        assert_int_equal(((uint16_t *)y->data)[i], *(uint16_t *)f->data);
    bd_tensor_free(y);
    bd_graph_free(g);

    bd_tensor *two = bd_test_tensor(BD_F32, DIMS(2)), *neg = INTS(3, -1);
    n = bd_test_node(&g, 13, "ConstantOfShape", 1, 1);
    bd_test_attr_tensor(n, "value", two);
    bd_test_assert_fails(g, n, &shape);
    bd_graph_free(g);
    n = bd_test_node(&g, 13, "ConstantOfShape", 1, 1);
    bd_test_assert_fails(g, n, &neg);
    bd_graph_free(g);
    bd_tensor *list[] = {shape, empty, v, f, big, two, neg};
    for (size_t k = 0; k < sizeof list / sizeof list[0]; k++)
        bd_tensor_free(list[k]);
}

static void check_expand(bd_dtype dt, int nx, const int64_t *xdims, bd_tensor *shape, int nout,
                         const int64_t *out)
{
    bd_tensor *x = iota(dt, nx, xdims);
    bd_graph *g;
    bd_node *n = bd_test_node(&g, 13, "Expand", 2, 1);
    bd_tensor *y = bd_test_run(g, n, (bd_tensor *[]){x, shape});
    bd_test_assert_shape(y, nout, out, NULL);
    for (int64_t i = 0; i < bd_tensor_count(y); i++) {
        int64_t oi[BD_MAX_DIMS];
        bd_test_unravel(i, nout, out, oi);
        assert_elem_equal(y, i, x, bd_test_bcast_offset(nx, xdims, nout, oi));
    }
    bd_tensor_free(y);
    bd_tensor_free(x);
    bd_tensor_free(shape);
    bd_graph_free(g);
}

static void test_expand(void **state)
{
    (void)state;
    for (size_t w = 0; w < sizeof widths / sizeof widths[0]; w++) {
        check_expand(widths[w], DIMS(5, 1, 1), INTS(3, 5, 7, 9), DIMS(3, 5, 7, 9));
        check_expand(widths[w], DIMS(3, 1, 7, 1), INTS(5, 1, 9), DIMS(3, 5, 7, 9));
        check_expand(widths[w], DIMS(3, 5, 7, 9), INTS(1, 1), DIMS(3, 5, 7, 9));
        check_expand(widths[w], DIMS(9), INTS(3, 1, 7, 1), DIMS(3, 1, 7, 9));
        check_expand(widths[w], SCALAR, INTS(3, 5), DIMS(3, 5));
        check_expand(widths[w], DIMS(1, 5, 1, 1), INTS(3, 5, 67, 101), DIMS(3, 5, 67, 101));
    }
    bd_tensor *x = iota(BD_F32, DIMS(3, 5)), *shape = INTS(4, 5);
    bd_graph *g;
    bd_node *n = bd_test_node(&g, 13, "Expand", 2, 1);
    bd_test_assert_fails(g, n, (bd_tensor *[]){x, shape});
    assert_non_null(strstr(bd_error_message(), "[4, 5]"));
    bd_graph_free(g);
    bd_tensor_free(shape);
    bd_tensor_free(x);
}

/* Reflection by repeated mirroring, as numpy.pad does; edge by clamping. */
static int64_t ref_pad_index(int64_t i, int64_t size, const char *mode)
{
    if (i >= 0 && i < size)
        return i;
    if (strcmp(mode, "constant") == 0)
        return -1;
    if (strcmp(mode, "edge") == 0 || size == 1)
        return i < 0 ? 0 : size - 1;
    while (i < 0 || i >= size) {
        if (i < 0)
            i = -i;
        if (i >= size)
            i = 2 * (size - 1) - i;
    }
    return i;
}

/* pads: 2 * (naxes or 4) values; axes NULL for all. */
static void check_pad(bd_dtype dt, int64_t opset, const char *mode, int naxes,
                      const int64_t *axes, const int64_t *pads, int with_value)
{
    bd_tensor *x = iota(dt, DIMS(3, 5, 7, 9));
    int np = 2 * (axes ? naxes : 4);
    bd_tensor *args[4] = {x, NULL, NULL, NULL};
    bd_graph *g;
    bd_node *n = bd_test_node(&g, opset, "Pad", opset >= 11 ? 4 : 1, 1);
    if (strcmp(mode, "constant") != 0 || opset < 11)
        bd_test_attr_str(n, "mode", mode);
    unsigned char value[8] = {0};
    if (opset >= 11) {
        args[1] = bd_test_ints(np, pads);
        if (axes)
            args[3] = bd_test_ints(naxes, axes);
        if (with_value) {
            args[2] = iota(dt, SCALAR); /* element 0 of iota */
            memcpy(value, args[2]->data, bd_dtype_size(dt));
        }
    } else {
        bd_test_attr_ints(n, "pads", np, pads);
        float v = 0.25f;
        bd_test_attr_float(n, "value", v);
        memcpy(value, &v, sizeof v);
    }
    int64_t begin[4] = {0}, end[4] = {0}, dims[4];
    for (int i = 0; i < np / 2; i++) {
        int a = axes ? (int)(axes[i] < 0 ? axes[i] + 4 : axes[i]) : i;
        begin[a] = pads[i];
        end[a] = pads[i + np / 2];
    }
    for (int d = 0; d < 4; d++)
        dims[d] = x->dims[d] + begin[d] + end[d];
    bd_tensor *y = bd_test_run(g, n, args);
    bd_test_assert_shape(y, 4, dims, NULL);
    size_t es = bd_dtype_size(dt);
    for (int64_t i = 0; i < bd_tensor_count(y); i++) {
        int64_t oi[4], xi[4];
        int constant = 0;
        bd_test_unravel(i, 4, dims, oi);
        for (int d = 0; d < 4; d++) {
            xi[d] = ref_pad_index(oi[d] - begin[d], x->dims[d], mode);
            constant |= xi[d] < 0;
        }
        if (constant)
            assert_memory_equal((char *)y->data + (size_t)i * es, value, es);
        else
            assert_elem_equal(y, i, x, ravel(4, x->dims, xi));
    }
    bd_tensor_free(y);
    for (int k = 0; k < 4; k++)
        bd_tensor_free(args[k]);
    bd_graph_free(g);
}

static void test_pad(void **state)
{
    (void)state;
    static const char *const modes[] = {"constant", "reflect", "edge"};
    static const int64_t p1[8] = {0, 1, 2, 3, 1, 0, 3, 2};
    static const int64_t crop[8] = {1, -1, 0, 2, 0, 2, -3, -4};   /* negative pads crop */
    static const int64_t wide[8] = {0, 0, 9, 13, 0, 0, 11, 20};   /* wider than the dims */
    for (int m = 0; m < 3; m++)
        for (size_t w = 0; w < sizeof widths / sizeof widths[0]; w++) {
            check_pad(widths[w], 13, modes[m], 0, NULL, p1, 0);
            check_pad(widths[w], 13, modes[m], 0, NULL, crop, 0);
            check_pad(widths[w], 13, modes[m], 0, NULL, wide, 0);
            check_pad(widths[w], 18, modes[m], 2, (int64_t[]){-1, 2}, (int64_t[]){3, 1, 2, 4}, 0);
        }
    for (size_t w = 0; w < sizeof widths / sizeof widths[0]; w++)
        check_pad(widths[w], 13, "constant", 0, NULL, p1, 1);
    check_pad(BD_F32, 2, "constant", 0, NULL, p1, 0); /* attribute form */
    check_pad(BD_F32, 2, "reflect", 0, NULL, p1, 0);
    bd_tensor *big = iota(BD_F32, DIMS(3, 5, 67, 101)), *pads = INTS(0, 0, 2, 3, 0, 0, 1, 2);
    bd_graph *g;
    bd_node *n = bd_test_node(&g, 13, "Pad", 2, 1);
    bd_test_attr_str(n, "mode", "reflect");
    bd_tensor *y = bd_test_run(g, n, (bd_tensor *[]){big, pads});
    bd_test_assert_shape(y, 4, (int64_t[]){3, 5, 70, 106}, NULL);
    assert_elem_equal(y, 0, big, 2 * 101 + 3); /* [0, 0, -2, -3] reflects to [0, 0, 2, 3] */
    bd_tensor_free(y);
    bd_graph_free(g);
    /* errors: the pads count, an unknown mode, a value of another dtype */
    bd_tensor *x = iota(BD_F32, DIMS(3, 5)), *short_pads = INTS(1, 1, 1);
    bd_tensor *ivalue = iota(BD_I64, SCALAR), *p4 = INTS(1, 1, 1, 1), *deep = INTS(0, -4, 0, -2);
    n = bd_test_node(&g, 13, "Pad", 3, 1);
    bd_test_assert_fails(g, n, (bd_tensor *[]){x, short_pads, NULL});
    assert_non_null(strstr(bd_error_message(), "pads"));
    bd_test_assert_fails(g, n, (bd_tensor *[]){x, p4, ivalue});
    bd_test_assert_fails(g, n, (bd_tensor *[]){x, deep, NULL});
    bd_graph_free(g);
    n = bd_test_node(&g, 19, "Pad", 2, 1);
    bd_test_attr_str(n, "mode", "wrap");
    bd_test_assert_fails(g, n, (bd_tensor *[]){x, p4});
    assert_non_null(strstr(bd_error_message(), "wrap"));
    bd_graph_free(g);
    bd_tensor *list[] = {big, pads, x, short_pads, ivalue, p4, deep};
    for (size_t k = 0; k < sizeof list / sizeof list[0]; k++)
        bd_tensor_free(list[k]);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_flatten),       cmocka_unit_test(test_reshape),
        cmocka_unit_test(test_identity_dropout), cmocka_unit_test(test_unsqueeze_squeeze),
        cmocka_unit_test(test_transpose),     cmocka_unit_test(test_concat),
        cmocka_unit_test(test_constant),      cmocka_unit_test(test_cast),
        cmocka_unit_test(test_gather),        cmocka_unit_test(test_shape),
        cmocka_unit_test(test_slice),         cmocka_unit_test(test_constant_of_shape),
        cmocka_unit_test(test_expand),        cmocka_unit_test(test_pad),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
