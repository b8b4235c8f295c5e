/* Elementwise kernels (binary ops with broadcasting, unary ops, Clip)
 * against naive reference loops on odd shapes. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "bd_test_node.h"
#include "cpu/fast_math.h"
#include "graph.h"
#include "ops.h"

#define TOL 1e-5
#define DIMS BD_TEST_DIMS

/* Integers in [-50, 50], never 0 when nonzero is set (for divisors). */
static bd_tensor *rand_i64(int ndim, const int64_t *dims, uint64_t seed, int nonzero)
{
    bd_tensor *t = bd_test_tensor(BD_I64, ndim, dims);
    int64_t n = bd_tensor_count(t), *d = t->data;
    float *f = malloc((size_t)n * sizeof *f + 1);
    bd_test_fill_random(f, (size_t)n, seed, -50, 51);
    for (int64_t i = 0; i < n; i++) {
        d[i] = (int64_t)floorf(f[i]);
        if (nonzero && d[i] == 0)
            d[i] = 3;
    }
    free(f);
    return t;
}

/* ---- binary ops ---- */

typedef enum { ADD, SUB, MUL, DIV, POW } binop;
static const char *const binop_names[] = {"Add", "Sub", "Mul", "Div", "Pow"};

static double ref_f(binop op, double x, double y)
{
    switch (op) {
    case ADD: return x + y;
    case SUB: return x - y;
    case MUL: return x * y;
    case DIV: return x / y;
    case POW: return pow(x, y);
    }
    return 0;
}

static int64_t ref_i(binop op, int64_t x, int64_t y)
{
    switch (op) {
    case ADD: return x + y;
    case SUB: return x - y;
    case MUL: return x * y;
    case DIV: { /* truncation toward zero, spelled out */
        int64_t q = llabs(x) / llabs(y);
        return (x < 0) != (y < 0) ? -q : q;
    }
    case POW: {
        int64_t r = 1;
        for (int64_t k = 0; k < y; k++)
            r *= x;
        return y < 0 ? (x == 1 ? 1 : x == -1 ? (llabs(y) % 2 ? -1 : 1) : 0) : r;
    }
    }
    return 0;
}

/* Runs op on a and b and checks every output element against ref_f/ref_i
 * evaluated at the broadcast positions; out_ndim/out_dims is the expected
 * result shape. */
static void check_binary(binop op, bd_tensor *a, bd_tensor *b, int out_ndim,
                         const int64_t *out_dims)
{
    bd_graph *g;
    bd_node *n = bd_test_node(&g, 13, binop_names[op], 2, 1);
    bd_tensor *in[2] = {a, b}, *out[1];
    bd_tensor *a_copy, *b_copy;
    assert_int_equal(bd_tensor_clone(&a_copy, a), BD_OK);
    assert_int_equal(bd_tensor_clone(&b_copy, b), BD_OK);
    assert_int_equal(bd_op_run(g, n, in, out), BD_OK);
    bd_test_assert_shape(out[0], out_ndim, out_dims, NULL);
    int64_t count = bd_tensor_count(out[0]), idx[BD_MAX_DIMS];
    if (a->dtype == BD_F32) {
        float *ref = malloc((size_t)count * sizeof *ref + 1);
        const float *ad = a->data, *bd = b->data;
        for (int64_t i = 0; i < count; i++) {
            bd_test_unravel(i, out_ndim, out_dims, idx);
            int64_t ia = bd_test_bcast_offset(a->ndim, a->dims, out_ndim, idx);
            int64_t ib = bd_test_bcast_offset(b->ndim, b->dims, out_ndim, idx);
            ref[i] = (float)ref_f(op, ad[ia], bd[ib]);
        }
        bd_test_assert_close(out[0], ref, TOL, NULL);
        free(ref);
    } else {
        const int64_t *ad = a->data, *bd = b->data, *y = out[0]->data;
        assert_int_equal(out[0]->dtype, BD_I64);
        for (int64_t i = 0; i < count; i++) {
            bd_test_unravel(i, out_ndim, out_dims, idx);
            int64_t ia = bd_test_bcast_offset(a->ndim, a->dims, out_ndim, idx);
            int64_t ib = bd_test_bcast_offset(b->ndim, b->dims, out_ndim, idx);
            assert_int_equal(y[i], ref_i(op, ad[ia], bd[ib]));
        }
    }
    /* kernels never write their inputs */
    assert_memory_equal(a->data, a_copy->data, bd_tensor_nbytes(a));
    assert_memory_equal(b->data, b_copy->data, bd_tensor_nbytes(b));
    bd_tensor_free(a_copy);
    bd_tensor_free(b_copy);
    bd_tensor_free(out[0]);
    bd_graph_free(g);
}

/* Shape pairs covering every broadcasting layout: same shape, scalar on
 * either side, per-channel, both sides broadcast, differing ranks, and a
 * large one that takes the parallel path. */
typedef struct {
    int na;
    int64_t a[5];
    int nb;
    int64_t b[5];
    int nout;
    int64_t out[5];
} shape_case;

static const shape_case shape_cases[] = {
    {4, {3, 5, 7, 9}, 4, {3, 5, 7, 9}, 4, {3, 5, 7, 9}},
    {4, {3, 5, 7, 9}, 0, {0}, 4, {3, 5, 7, 9}},
    {0, {0}, 4, {3, 5, 7, 9}, 4, {3, 5, 7, 9}},
    {4, {3, 5, 7, 9}, 1, {1}, 4, {3, 5, 7, 9}},
    {4, {3, 5, 7, 9}, 4, {1, 5, 1, 1}, 4, {3, 5, 7, 9}},
    {3, {5, 1, 1}, 4, {3, 5, 7, 9}, 4, {3, 5, 7, 9}},
    {4, {3, 1, 7, 1}, 4, {1, 5, 1, 9}, 4, {3, 5, 7, 9}},
    {2, {5, 1}, 3, {3, 1, 7}, 3, {3, 5, 7}},
    {2, {7, 9}, 4, {3, 5, 7, 9}, 4, {3, 5, 7, 9}},
    {1, {9}, 4, {3, 1, 7, 1}, 4, {3, 1, 7, 9}},
    {4, {3, 5, 7, 1}, 4, {3, 5, 1, 9}, 4, {3, 5, 7, 9}},
    {0, {0}, 0, {0}, 0, {0}},
    {4, {3, 5, 67, 101}, 4, {1, 5, 1, 1}, 4, {3, 5, 67, 101}},
    {4, {3, 5, 67, 101}, 4, {3, 5, 67, 101}, 4, {3, 5, 67, 101}},
    {4, {3, 1, 67, 101}, 4, {1, 5, 67, 1}, 4, {3, 5, 67, 101}},
};

static void test_binary_f32(void **state)
{
    (void)state;
    for (binop op = ADD; op <= POW; op++)
        for (size_t c = 0; c < sizeof shape_cases / sizeof shape_cases[0]; c++) {
            const shape_case *sc = &shape_cases[c];
            /* positive bases keep Pow real; divisors stay away from 0 */
            bd_tensor *a = bd_test_rand_f32(sc->na, sc->a, 10 + c, op == POW ? 0.25f : -2, 2);
            bd_tensor *b = bd_test_rand_f32(sc->nb, sc->b, 20 + c, op == POW ? -2 : 0.5f, 2);
            check_binary(op, a, b, sc->nout, sc->out);
            bd_tensor_free(a);
            bd_tensor_free(b);
        }
}

static void test_binary_i64(void **state)
{
    (void)state;
    for (binop op = ADD; op <= POW; op++)
        for (size_t c = 0; c < sizeof shape_cases / sizeof shape_cases[0]; c++) {
            const shape_case *sc = &shape_cases[c];
            bd_tensor *a = rand_i64(sc->na, sc->a, 30 + c, 0);
            bd_tensor *b = rand_i64(sc->nb, sc->b, 40 + c, op == DIV);
            if (op == POW) { /* small exponents, some negative, keep results exact */
                int64_t *e = b->data;
                for (int64_t i = 0; i < bd_tensor_count(b); i++)
                    e[i] = e[i] % 5 - 1;
            }
            check_binary(op, a, b, sc->nout, sc->out);
            bd_tensor_free(a);
            bd_tensor_free(b);
        }
}

static void test_int_div_truncates(void **state)
{
    (void)state;
    bd_graph *g;
    bd_node *n = bd_test_node(&g, 13, "Div", 2, 1);
    bd_tensor *a = bd_test_tensor(BD_I64, DIMS(4)), *b = bd_test_tensor(BD_I64, DIMS(4));
    int64_t av[4] = {-7, 7, -7, INT64_MIN}, bv[4] = {2, -2, -2, -1};
    memcpy(a->data, av, sizeof av);
    memcpy(b->data, bv, sizeof bv);
    bd_tensor *in[2] = {a, b}, *out[1];
    assert_int_equal(bd_op_run(g, n, in, out), BD_OK);
    const int64_t *y = out[0]->data;
    assert_int_equal(y[0], -3);
    assert_int_equal(y[1], -3);
    assert_int_equal(y[2], 3);
    assert_int_equal(y[3], INT64_MIN); /* wraps instead of trapping */
    bd_tensor_free(out[0]);
    ((int64_t *)b->data)[2] = 0;
    bd_test_assert_fails(g, n, in);
    assert_non_null(strstr(bd_error_message(), "division by zero"));
    bd_tensor_free(a);
    bd_tensor_free(b);
    bd_graph_free(g);
}

static void test_binary_errors(void **state)
{
    (void)state;
    for (binop op = ADD; op <= POW; op++) {
        bd_graph *g;
        bd_node *n = bd_test_node(&g, 13, binop_names[op], 2, 1);
        bd_tensor *f = bd_test_rand_f32(DIMS(3, 5), 1, -1, 1);
        bd_tensor *f2 = bd_test_rand_f32(DIMS(4, 5), 2, 1, 2);
        bd_tensor *f3 = bd_test_rand_f32(DIMS(3, 1, 5), 5, 1, 2);
        bd_tensor *f4 = bd_test_rand_f32(DIMS(2, 5, 1), 6, 1, 2);
        bd_tensor *i = rand_i64(DIMS(3, 5), 3, 1);
        bd_tensor *i32 = bd_test_tensor(BD_I32, DIMS(3, 5));
        bd_tensor *mixed[2] = {f, i}, *ints[2] = {i32, i32}, *shapes[2] = {f, f2};
        bd_tensor *shapes2[2] = {f3, f4};
        bd_test_assert_fails(g, n, mixed);
        assert_non_null(strstr(bd_error_message(), "int64"));
        bd_test_assert_fails(g, n, ints);
        assert_non_null(strstr(bd_error_message(), "int32"));
        bd_test_assert_fails(g, n, shapes);
        assert_non_null(strstr(bd_error_message(), "[3, 5]"));
        bd_test_assert_fails(g, n, shapes2);
        bd_tensor_free(f);
        bd_tensor_free(f2);
        bd_tensor_free(f3);
        bd_tensor_free(f4);
        bd_tensor_free(i);
        bd_tensor_free(i32);
        bd_graph_free(g);
    }
}

/* ---- unary ops ---- */

typedef struct {
    const char *op;
    float lo, hi;     /* input range */
    int nattr;        /* float attributes to set */
    const char *attr[2];
    float val[2];
    double (*ref)(double x, const float *p); /* p: attribute values or defaults */
    float def[2];
} unary_case;

static double r_relu(double x, const float *p) { (void)p; return x > 0 ? x : 0; }
static double r_leaky(double x, const float *p) { return x >= 0 ? x : p[0] * x; }
static double r_sigmoid(double x, const float *p) { (void)p; return 1 / (1 + exp(-x)); }
static double r_hsig(double x, const float *p) { return fmax(0, fmin(1, p[0] * x + p[1])); }
static double r_hswish(double x, const float *p)
{
    (void)p;
    return x * fmax(0, fmin(1, x / 6 + 0.5));
}
static double r_tanh(double x, const float *p) { (void)p; return tanh(x); }
static double r_exp(double x, const float *p) { (void)p; return exp(x); }
static double r_sqrt(double x, const float *p) { (void)p; return sqrt(x); }
static double r_neg(double x, const float *p) { (void)p; return -x; }
static double r_erf(double x, const float *p) { (void)p; return erf(x); }
static double r_round(double x, const float *p) { (void)p; return nearbyint(x); }

static const unary_case unary_cases[] = {
    {"Relu", -3, 3, 0, {0}, {0}, r_relu, {0}},
    {"LeakyRelu", -3, 3, 0, {0}, {0}, r_leaky, {0.01f}},
    {"LeakyRelu", -3, 3, 1, {"alpha"}, {0.3f}, r_leaky, {0}},
    {"Sigmoid", -8, 8, 0, {0}, {0}, r_sigmoid, {0}},
    {"HardSigmoid", -5, 5, 0, {0}, {0}, r_hsig, {0.2f, 0.5f}},
    {"HardSigmoid", -5, 5, 2, {"alpha", "beta"}, {0.4f, 0.3f}, r_hsig, {0}},
    {"HardSwish", -5, 5, 0, {0}, {0}, r_hswish, {0}},
    {"Tanh", -4, 4, 0, {0}, {0}, r_tanh, {0}},
    {"Exp", -4, 4, 0, {0}, {0}, r_exp, {0}},
    {"Sqrt", 0, 9, 0, {0}, {0}, r_sqrt, {0}},
    {"Neg", -3, 3, 0, {0}, {0}, r_neg, {0}},
    {"Erf", -3, 3, 0, {0}, {0}, r_erf, {0}},
    {"Round", -40, 40, 0, {0}, {0}, r_round, {0}},
};

/* The vectorisable exp, sigmoid and erf (cpu/fast_math.h) against double
 * precision at a million points over their whole finite range, and at the
 * special values; each bound is the one the header states, which a single
 * wrong polynomial coefficient exceeds by orders of magnitude. */
static void test_fast_math(void **state)
{
    (void)state;
    double worst_exp = 0, worst_sig = 0, worst_erf = 0, worst_erf_near = 0;
    for (int i = 0; i <= 1000000; i++) {
        const float x = -87.3f + (88.3f + 87.3f) * (float)i / 1e6f;
        worst_exp = fmax(worst_exp, fabs(bd_expf(x) / exp(x) - 1));
        const float s = -30 + 60 * (float)i / 1e6f, e = -6 + 12 * (float)i / 1e6f;
        worst_sig = fmax(worst_sig, fabs(bd_sigmoidf(s) * (1 + exp(-(double)s)) - 1));
        worst_erf = fmax(worst_erf, fabs(bd_erff(e) - erf(e)));
        const float z = ldexpf(1, -30) + 0.5f * (float)i / 1e6f; /* (0, 1/2] */
        worst_erf_near = fmax(worst_erf_near, fabs(bd_erff(z) / erf(z) - 1));
    }
    print_message("fast math: exp %.2e relative, sigmoid %.2e relative, erf %.2e absolute, "
                  "%.2e relative below 1/2\n",
                  worst_exp, worst_sig, worst_erf, worst_erf_near);
    assert_true(worst_exp < 2e-7 && worst_sig < 3e-7 && worst_erf < 4e-7 &&
                worst_erf_near < 4e-7);
    assert_true(isinf(bd_expf(89)) && bd_expf(89) > 0 && isinf(bd_expf(INFINITY)));
    assert_true(bd_expf(-88) == 0 && bd_expf(-INFINITY) == 0 && bd_expf(0) == 1);
    assert_true(isnan(bd_expf(NAN)) && isnan(bd_sigmoidf(NAN)) && isnan(bd_erff(NAN)));
    assert_true(bd_sigmoidf(-200) == 0 && bd_sigmoidf(200) == 1);
    assert_true(bd_erff(INFINITY) == 1 && bd_erff(-INFINITY) == -1 && bd_erff(0) == 0);
}

/* bd_sigmoid_run, what the Sigmoid op and the fused epilogues compute (16
 * lanes at a time with AVX-512), against double precision over the range
 * where sigmoid is not 0 or 1 in float, at lengths that leave every tail
 * of a vector, and at the special values; the gate is x times it. */
static void test_sigmoid_run(void **state)
{
    (void)state;
    enum { N = 1000003 };
    float *x = malloc(N * sizeof *x), *y = malloc(N * sizeof *y), *g = malloc(N * sizeof *g);
    for (int i = 0; i < N; i++)
        x[i] = -87 + 104 * (float)i / (float)N;
    bd_sigmoid_run(x, y, N, 0);
    bd_sigmoid_run(x, g, N, 1);
    double worst = 0;
    for (int i = 0; i < N; i++) {
        worst = fmax(worst, fabs(y[i] * (1 + exp(-(double)x[i])) - 1));
        assert_true(g[i] == x[i] * y[i]);
    }
    print_message("sigmoid run: %.2e relative\n", worst);
    assert_true(worst < 4e-7);
    const float special[7] = {NAN, -200, 200, -INFINITY, INFINITY, 0, -88.5f};
    for (int len = 1; len <= 7; len++) {
        float out[7];
        bd_sigmoid_run(special, out, len, 0);
        assert_true(isnan(out[0]));
        if (len > 4)
            assert_true(out[1] == 0 && out[2] == 1 && out[3] == 0 && out[4] == 1);
    }
    float out[7];
    bd_sigmoid_run(special, out, 7, 0);
    assert_true(out[5] == 0.5f && out[6] == 0);
    free(x);
    free(y);
    free(g);
}

static void test_unary(void **state)
{
    (void)state;
    static const int64_t small[4] = {3, 5, 7, 9}, large[4] = {3, 5, 67, 101};
    for (size_t c = 0; c < sizeof unary_cases / sizeof unary_cases[0]; c++) {
        const unary_case *uc = &unary_cases[c];
        for (int size = 0; size < 2; size++) {
            bd_graph *g;
            bd_node *n = bd_test_node(&g, 13, uc->op, 1, 1);
            for (int k = 0; k < uc->nattr; k++)
                bd_test_attr_float(n, uc->attr[k], uc->val[k]);
            const float *p = uc->nattr ? uc->val : uc->def;
            bd_tensor *x = bd_test_rand_f32(4, size ? large : small, 50 + c, uc->lo, uc->hi);
            bd_tensor *out[1];
            assert_int_equal(bd_op_run(g, n, &x, out), BD_OK);
            bd_test_assert_shape(out[0], 4, x->dims, NULL);
            int64_t count = bd_tensor_count(x);
            float *ref = malloc((size_t)count * sizeof *ref);
            const float *xd = x->data;
            for (int64_t i = 0; i < count; i++)
                ref[i] = (float)uc->ref(xd[i], p);
            bd_test_assert_close(out[0], ref, TOL, NULL);
            free(ref);
            bd_tensor_free(out[0]);
            bd_tensor_free(x);
            bd_graph_free(g);
        }
    }
}

static void test_neg_i64(void **state)
{
    (void)state;
    bd_graph *g;
    bd_node *n = bd_test_node(&g, 13, "Neg", 1, 1);
    bd_tensor *x = rand_i64(DIMS(3, 5, 7), 7, 0), *out[1];
    ((int64_t *)x->data)[0] = INT64_MIN;
    assert_int_equal(bd_op_run(g, n, &x, out), BD_OK);
    assert_int_equal(out[0]->dtype, BD_I64);
    const int64_t *xd = x->data, *y = out[0]->data;
    assert_int_equal(y[0], INT64_MIN);
    for (int64_t i = 1; i < bd_tensor_count(x); i++)
        assert_int_equal(y[i], -xd[i]);
    bd_tensor_free(out[0]);
    bd_tensor_free(x);
    bd_graph_free(g);
}

/* ONNX's Round takes halves to the even neighbour, not away from zero */
static void test_round_halves_to_even(void **state)
{
    (void)state;
    static const float x[] = {0.5f, 1.5f, 2.5f, -0.5f, -1.5f, -2.5f, 2.49999f, 3.50001f, -7.0f};
    static const float want[] = {0, 2, 2, -0.0f, -2, -2, 2, 4, -7};
    enum { COUNT = sizeof x / sizeof x[0] };
    bd_graph *g;
    bd_node *n = bd_test_node(&g, 13, "Round", 1, 1);
    bd_tensor *t = bd_test_tensor(BD_F32, DIMS(COUNT)), *out[1];
    memcpy(t->data, x, sizeof x);
    assert_int_equal(bd_op_run(g, n, &t, out), BD_OK);
    assert_memory_equal(out[0]->data, want, sizeof want);
    bd_tensor_free(out[0]);
    bd_tensor_free(t);
    bd_graph_free(g);
}

static void test_unary_errors(void **state)
{
    (void)state;
    bd_tensor *i64 = rand_i64(DIMS(3, 5), 1, 0), *i32 = bd_test_tensor(BD_I32, DIMS(3, 5));
    for (size_t c = 0; c < sizeof unary_cases / sizeof unary_cases[0]; c++) {
        bd_graph *g;
        bd_node *n = bd_test_node(&g, 13, unary_cases[c].op, 1, 1);
        bd_test_assert_fails(g, n, &i32);
        assert_non_null(strstr(bd_error_message(), "int32"));
        if (strcmp(unary_cases[c].op, "Neg") != 0) {
            bd_test_assert_fails(g, n, &i64);
            assert_non_null(strstr(bd_error_message(), "int64"));
        }
        bd_graph_free(g);
    }
    bd_tensor_free(i64);
    bd_tensor_free(i32);
}

/* ---- Clip ---- */

static bd_tensor *scalar_f32(float v)
{
    bd_tensor *t = bd_test_tensor(BD_F32, BD_TEST_SCALAR);
    *(float *)t->data = v;
    return t;
}

static void check_clip(const bd_graph *g, const bd_node *n, bd_tensor *const *in, float lo,
                       float hi)
{
    bd_tensor *out[1];
    assert_int_equal(bd_op_run(g, n, in, out), BD_OK);
    int64_t count = bd_tensor_count(in[0]);
    const float *x = in[0]->data;
    float *ref = malloc((size_t)count * sizeof *ref);
    for (int64_t i = 0; i < count; i++)
        ref[i] = lo > hi ? hi : x[i] < lo ? lo : x[i] > hi ? hi : x[i];
    bd_test_assert_close(out[0], ref, TOL, NULL);
    free(ref);
    bd_tensor_free(out[0]);
}

static void test_clip(void **state)
{
    (void)state;
    static const char *const max_only[] = {"x0", "", "x2"}; /* min omitted */
    bd_tensor *x = bd_test_rand_f32(DIMS(3, 5, 7, 9), 9, -4, 4);
    bd_tensor *lo = scalar_f32(-1.5f), *hi = scalar_f32(2.25f);
    bd_graph *g;
    bd_node *n = bd_test_node(&g, 13, "Clip", 3, 1);
    check_clip(g, n, (bd_tensor *[]){x, lo, hi}, -1.5f, 2.25f);
    check_clip(g, n, (bd_tensor *[]){x, hi, lo}, 2.25f, -1.5f); /* min > max: all max */
    bd_graph_free(g);
    n = bd_test_node_inputs(&g, 12, "Clip", 3, max_only, 1);
    check_clip(g, n, (bd_tensor *[]){x, NULL, hi}, -INFINITY, 2.25f);
    bd_graph_free(g);
    n = bd_test_node(&g, 11, "Clip", 2, 1);
    check_clip(g, n, (bd_tensor *[]){x, lo}, -1.5f, INFINITY);
    bd_graph_free(g);
    n = bd_test_node(&g, 13, "Clip", 1, 1);
    check_clip(g, n, &x, -INFINITY, INFINITY);
    bd_graph_free(g);
    /* before opset 11 the bounds are attributes */
    n = bd_test_node(&g, 6, "Clip", 1, 1);
    bd_test_attr_float(n, "min", 0);
    bd_test_attr_float(n, "max", 6);
    check_clip(g, n, &x, 0, 6);
    bd_graph_free(g);
    bd_tensor *big = bd_test_rand_f32(DIMS(3, 5, 67, 101), 10, -4, 4);
    n = bd_test_node(&g, 13, "Clip", 3, 1);
    check_clip(g, n, (bd_tensor *[]){big, lo, hi}, -1.5f, 2.25f);
    /* errors: a bound that is not a scalar, a non-float input */
    bd_tensor *two = bd_test_rand_f32(DIMS(2), 3, 0, 1), *i64 = rand_i64(DIMS(3, 5), 4, 0);
    bd_test_assert_fails(g, n, (bd_tensor *[]){x, two, hi});
    assert_non_null(strstr(bd_error_message(), "min"));
    bd_test_assert_fails(g, n, (bd_tensor *[]){i64, lo, hi});
    bd_graph_free(g);
    bd_tensor_free(two);
    bd_tensor_free(i64);
    bd_tensor_free(big);
    bd_tensor_free(x);
    bd_tensor_free(lo);
    bd_tensor_free(hi);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_binary_f32),    cmocka_unit_test(test_binary_i64),
        cmocka_unit_test(test_int_div_truncates), cmocka_unit_test(test_binary_errors),
        cmocka_unit_test(test_unary),         cmocka_unit_test(test_neg_i64),
        cmocka_unit_test(test_fast_math),
        cmocka_unit_test(test_sigmoid_run),
        cmocka_unit_test(test_round_halves_to_even),
        cmocka_unit_test(test_unary_errors),  cmocka_unit_test(test_clip),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
