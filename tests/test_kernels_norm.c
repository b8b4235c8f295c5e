/* BatchNormalization, Softmax, LogSoftmax and ReduceMean against naive
 * reference loops, for the opset-dependent forms too. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bd_test_node.h"
#include "graph.h"
#include "ops.h"

#define TOL 1e-5
#define DIMS BD_TEST_DIMS

static int64_t count_of(int ndim, const int64_t *dims)
{
    int64_t c = 1;
    for (int d = 0; d < ndim; d++)
        c *= dims[d];
    return c;
}

/* ---- BatchNormalization ---- */

static void check_batchnorm(int ndim, const int64_t *dims, int set_eps, float eps, uint64_t seed)
{
    bd_graph *g;
    bd_node *n = bd_test_node(&g, 15, "BatchNormalization", 5, 1);
    if (set_eps)
        bd_test_attr_float(n, "epsilon", eps);
    else
        eps = 1e-5f;
    int64_t c = dims[1];
    bd_tensor *in[5] = {bd_test_rand_f32(ndim, dims, seed, -3, 3),
                        bd_test_rand_f32(1, &c, seed + 1, 0.5f, 2),
                        bd_test_rand_f32(1, &c, seed + 2, -1, 1),
                        bd_test_rand_f32(1, &c, seed + 3, -1, 1),
                        bd_test_rand_f32(1, &c, seed + 4, 0.01f, 2)};
    bd_tensor *out[1];
    assert_int_equal(bd_op_run(g, n, in, out), BD_OK);
    int64_t count = bd_tensor_count(in[0]), size = count / (dims[0] * c);
    float *ref = malloc((size_t)count * sizeof *ref);
    const float *x = in[0]->data, *scale = in[1]->data, *b = in[2]->data, *mean = in[3]->data,
                *var = in[4]->data;
    for (int64_t i = 0; i < count; i++) {
        int64_t ch = i / size % c;
        ref[i] = (float)((x[i] - mean[ch]) / sqrt((double)var[ch] + eps) * scale[ch] + b[ch]);
    }
    assert_int_equal(out[0]->ndim, ndim);
    bd_test_assert_close(out[0], ref, TOL, "BatchNormalization");
    free(ref);
    bd_tensor_free(out[0]);
    for (int k = 0; k < 5; k++)
        bd_tensor_free(in[k]);
    bd_graph_free(g);
}

static void test_batchnorm(void **state)
{
    (void)state;
    check_batchnorm(DIMS(3, 5, 7, 9), 0, 0, 1);
    check_batchnorm(DIMS(3, 5, 7, 9), 1, 0.1f, 2);
    check_batchnorm(DIMS(3, 5), 0, 0, 3);
    check_batchnorm(DIMS(3, 5, 11), 1, 1e-3f, 4);
    check_batchnorm(DIMS(3, 5, 4, 3, 7), 0, 0, 5);
    check_batchnorm(DIMS(3, 5, 67, 101), 0, 0, 6);
}

static void test_batchnorm_errors(void **state)
{
    (void)state;
    bd_graph *g;
    bd_node *n = bd_test_node(&g, 15, "BatchNormalization", 5, 1);
    int64_t c = 5, c4 = 4;
    bd_tensor *x = bd_test_rand_f32(DIMS(3, 5, 7, 9), 1, -1, 1);
    bd_tensor *v = bd_test_rand_f32(1, &c, 2, 0.1f, 1), *v4 = bd_test_rand_f32(1, &c4, 3, 0.1f, 1);
    bd_tensor *ix = bd_test_tensor(BD_I64, DIMS(3, 5, 7, 9));
    bd_test_assert_fails(g, n, (bd_tensor *[]){x, v, v, v, v4});
    assert_non_null(strstr(bd_error_message(), "input_var"));
    bd_test_assert_fails(g, n, (bd_tensor *[]){ix, v, v, v, v});
    assert_non_null(strstr(bd_error_message(), "int64"));
    bd_tensor *flat = bd_test_rand_f32(DIMS(5), 4, 0, 1);
    bd_test_assert_fails(g, n, (bd_tensor *[]){flat, v, v, v, v});
    bd_graph_free(g);
    n = bd_test_node(&g, 15, "BatchNormalization", 5, 3); /* training outputs */
    bd_test_assert_fails(g, n, (bd_tensor *[]){x, v, v, v, v});
    bd_graph_free(g);
    bd_tensor_free(flat);
    bd_tensor_free(x);
    bd_tensor_free(v);
    bd_tensor_free(v4);
    bd_tensor_free(ix);
}

/* ---- Softmax / LogSoftmax ---- */

/* Reference softmax over rows: opset >= 13 reduces `axis` alone, so a row
 * is the len elements inner apart that differ only in that index; before
 * 13 the tensor is flattened to 2-D at axis and the whole trailing block of
 * len * inner elements is one row. */
static void ref_softmax(const float *x, int ndim, const int64_t *dims, int axis, int coerce,
                        int log_form, float *y)
{
    int64_t count = count_of(ndim, dims), len = dims[axis], inner = 1;
    for (int d = axis + 1; d < ndim; d++)
        inner *= dims[d];
    int64_t n = coerce ? len * inner : len, step = coerce ? 1 : inner;
    for (int64_t first = 0; first < count; first++) {
        if (coerce ? first % n != 0 : first / inner % len != 0)
            continue; /* not the first element of a row */
        double max = -INFINITY, sum = 0;
        for (int64_t j = 0; j < n; j++)
            max = fmax(max, x[first + j * step]);
        for (int64_t j = 0; j < n; j++)
            sum += exp(x[first + j * step] - max);
        for (int64_t j = 0; j < n; j++) {
            double v = x[first + j * step];
            y[first + j * step] = (float)(log_form ? v - max - log(sum) : exp(v - max) / sum);
        }
    }
}

static void check_softmax(const char *op, int64_t opset, int set_axis, int64_t axis, int ndim,
                          const int64_t *dims, uint64_t seed)
{
    bd_graph *g;
    bd_node *n = bd_test_node(&g, opset, op, 1, 1);
    if (set_axis)
        bd_test_attr_int(n, "axis", axis);
    else
        axis = opset < 13 ? 1 : -1;
    bd_tensor *x = bd_test_rand_f32(ndim, dims, seed, -6, 6), *out[1];
    assert_int_equal(bd_op_run(g, n, &x, out), BD_OK);
    int64_t count = bd_tensor_count(x);
    float *ref = malloc((size_t)count * sizeof *ref);
    ref_softmax(x->data, ndim, dims, (int)(axis < 0 ? axis + ndim : axis), opset < 13,
                strcmp(op, "LogSoftmax") == 0, ref);
    char what[96];
    snprintf(what, sizeof what, "%s opset %d axis %d", op, (int)opset, (int)axis);
    bd_test_assert_close(out[0], ref, TOL, what);
    free(ref);
    bd_tensor_free(out[0]);
    bd_tensor_free(x);
    bd_graph_free(g);
}

static void test_softmax(void **state)
{
    (void)state;
    static const char *const ops[] = {"Softmax", "LogSoftmax"};
    for (int k = 0; k < 2; k++) {
        for (int64_t opset = 11; opset <= 13; opset += 2) {
            check_softmax(ops[k], opset, 0, 0, DIMS(3, 5, 7, 9), 1);
            for (int64_t axis = -4; axis < 4; axis++)
                check_softmax(ops[k], opset, 1, axis, DIMS(3, 5, 7, 9), 2 + (uint64_t)axis);
            check_softmax(ops[k], opset, 0, 0, DIMS(3, 11), 3);
            check_softmax(ops[k], opset, 1, 1, DIMS(3, 5, 67, 101), 4);
        }
        check_softmax(ops[k], 13, 0, 0, DIMS(3, 5, 67, 101), 5);
        check_softmax(ops[k], 18, 1, 0, DIMS(11), 6);
    }
}

static void test_softmax_errors(void **state)
{
    (void)state;
    static const char *const ops[] = {"Softmax", "LogSoftmax"};
    bd_tensor *x = bd_test_rand_f32(DIMS(3, 5, 7, 9), 1, -1, 1);
    bd_tensor *ix = bd_test_tensor(BD_I64, DIMS(3, 5));
    for (int k = 0; k < 2; k++) {
        bd_graph *g;
        bd_node *n = bd_test_node(&g, 13, ops[k], 1, 1);
        bd_test_attr_int(n, "axis", 4);
        bd_test_assert_fails(g, n, &x);
        assert_non_null(strstr(bd_error_message(), "axis"));
        bd_graph_free(g);
        n = bd_test_node(&g, 11, ops[k], 1, 1);
        bd_test_attr_int(n, "axis", -5);
        bd_test_assert_fails(g, n, &x);
        bd_graph_free(g);
        n = bd_test_node(&g, 13, ops[k], 1, 1);
        bd_test_assert_fails(g, n, &ix);
        assert_non_null(strstr(bd_error_message(), "int64"));
        bd_graph_free(g);
    }
    bd_tensor_free(x);
    bd_tensor_free(ix);
}

/* ---- ReduceMean ---- */

/* axes: count -1 for "not given". Reference: every input element adds into
 * the output element it reduces to. */
static void check_reduce_mean(int64_t opset, int naxes, const int64_t *axes, int keepdims,
                              int ndim, const int64_t *dims, uint64_t seed)
{
    bd_graph *g;
    bd_tensor *axes_t = NULL;
    int as_input = opset >= 18 && naxes >= 0;
    bd_node *n = bd_test_node(&g, opset, "ReduceMean", as_input ? 2 : 1, 1);
    if (naxes >= 0 && as_input)
        axes_t = bd_test_ints(naxes, axes);
    else if (naxes >= 0)
        bd_test_attr_ints(n, "axes", naxes, axes);
    if (keepdims >= 0)
        bd_test_attr_int(n, "keepdims", keepdims);
    bd_tensor *x = bd_test_rand_f32(ndim, dims, seed, -3, 3), *out[1];
    assert_int_equal(bd_op_run(g, n, (bd_tensor *[]){x, axes_t}, out), BD_OK);
    int reduced[BD_MAX_DIMS] = {0};
    for (int d = 0; d < ndim; d++)
        reduced[d] = naxes <= 0;
    for (int i = 0; i < naxes; i++)
        reduced[axes[i] < 0 ? axes[i] + ndim : axes[i]] = 1;
    int64_t odims[BD_MAX_DIMS], ond = 0, per = 1;
    for (int d = 0; d < ndim; d++) {
        if (reduced[d])
            per *= dims[d];
        if (!reduced[d] || keepdims != 0)
            odims[ond++] = reduced[d] ? 1 : dims[d];
    }
    bd_test_assert_shape(out[0], (int)ond, odims, "ReduceMean");
    int64_t count = bd_tensor_count(x), ocount = count_of((int)ond, odims);
    double *acc = calloc((size_t)ocount, sizeof *acc);
    const float *xd = x->data;
    for (int64_t i = 0; i < count; i++) {
        int64_t rest = i, o = 0, scale = 1;
        for (int d = ndim - 1; d >= 0; d--) {
            int64_t idx = rest % dims[d];
            rest /= dims[d];
            if (!reduced[d]) {
                o += idx * scale;
                scale *= dims[d];
            }
        }
        acc[o] += xd[i];
    }
    float *ref = malloc((size_t)ocount * sizeof *ref);
    for (int64_t o = 0; o < ocount; o++)
        ref[o] = (float)(acc[o] / (double)per);
    bd_test_assert_close(out[0], ref, TOL, "ReduceMean");
    free(ref);
    free(acc);
    bd_tensor_free(out[0]);
    bd_tensor_free(x);
    bd_tensor_free(axes_t);
    bd_graph_free(g);
}

static void test_reduce_mean(void **state)
{
    (void)state;
    static const struct {
        int n;
        int64_t axes[4];
    } sets[] = {{-1, {0}}, {1, {1}}, {2, {2, 3}}, {1, {-1}}, {2, {0, 2}},
                {2, {-1, 1}}, {3, {0, 1, 3}}, {4, {3, 2, 1, 0}}, {1, {0}}};
    for (int64_t opset = 13; opset <= 18; opset += 5)
        for (size_t s = 0; s < sizeof sets / sizeof sets[0]; s++)
            for (int keep = -1; keep <= 1; keep++)
                check_reduce_mean(opset, sets[s].n, sets[s].axes, keep, DIMS(3, 5, 7, 9),
                                  10 * s + (uint64_t)keep);
    check_reduce_mean(18, 2, (int64_t[]){2, 3}, 1, DIMS(3, 5, 67, 101), 1);
    check_reduce_mean(13, 1, (int64_t[]){1}, 0, DIMS(3, 5, 67, 101), 2);
    check_reduce_mean(13, 2, (int64_t[]){1, 3}, 1, DIMS(3, 5, 1, 9, 2), 3);
    /* an empty axes input reduces everything unless noop_with_empty_axes */
    check_reduce_mean(18, 0, NULL, 1, DIMS(3, 5, 7), 4);
}

static void test_reduce_mean_noop(void **state)
{
    (void)state;
    bd_graph *g;
    bd_node *n = bd_test_node(&g, 18, "ReduceMean", 1, 1);
    bd_test_attr_int(n, "noop_with_empty_axes", 1);
    bd_tensor *x = bd_test_rand_f32(DIMS(3, 5, 7), 1, -1, 1), *out[1];
    assert_int_equal(bd_op_run(g, n, &x, out), BD_OK);
    assert_int_equal(out[0]->ndim, 3);
    assert_memory_equal(out[0]->data, x->data, bd_tensor_nbytes(x));
    bd_tensor_free(out[0]);
    bd_tensor_free(x);
    bd_graph_free(g);
}

static void test_reduce_mean_errors(void **state)
{
    (void)state;
    bd_tensor *x = bd_test_rand_f32(DIMS(3, 5, 7, 9), 1, -1, 1);
    bd_tensor *ix = bd_test_tensor(BD_I64, DIMS(3, 5));
    bd_graph *g;
    bd_node *n = bd_test_node(&g, 13, "ReduceMean", 1, 1);
    bd_test_attr_ints(n, "axes", 1, (int64_t[]){4});
    bd_test_assert_fails(g, n, &x);
    assert_non_null(strstr(bd_error_message(), "axis 4"));
    bd_graph_free(g);
    n = bd_test_node(&g, 13, "ReduceMean", 1, 1);
    bd_test_attr_ints(n, "axes", 2, (int64_t[]){1, -3});
    bd_test_assert_fails(g, n, &x);
    assert_non_null(strstr(bd_error_message(), "twice"));
    bd_test_assert_fails(g, n, &ix);
    assert_non_null(strstr(bd_error_message(), "int64"));
    bd_graph_free(g);
    /* at opset 18 the axes attribute is no longer read; the input is */
    n = bd_test_node(&g, 18, "ReduceMean", 2, 1);
    bd_tensor *bad = bd_test_ints(1, (int64_t[]){-5});
    bd_test_assert_fails(g, n, (bd_tensor *[]){x, bad});
    bd_tensor *f = bd_test_rand_f32(DIMS(1), 2, 0, 1);
    bd_test_assert_fails(g, n, (bd_tensor *[]){x, f});
    bd_graph_free(g);
    bd_tensor_free(f);
    bd_tensor_free(bad);
    bd_tensor_free(x);
    bd_tensor_free(ix);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_batchnorm),       cmocka_unit_test(test_batchnorm_errors),
        cmocka_unit_test(test_softmax),         cmocka_unit_test(test_softmax_errors),
        cmocka_unit_test(test_reduce_mean),     cmocka_unit_test(test_reduce_mean_noop),
        cmocka_unit_test(test_reduce_mean_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
