/* The training pass (grad.h): every input gradient of every backward
 * kernel against central finite differences, on small odd shapes with the
 * attribute variety of the forward tests; BatchNormalization's training
 * forward against its formula; the losses against direct formulas and
 * finite differences; and the errors a caller can provoke.
 *
 * A finite-difference check runs the float32 training forward on inputs
 * perturbed by +-h (h = 1e-3 relative) at SAMPLES elements of each input,
 * differentiating L = sum(dout * y) in double for a random dout. It passes
 * when max |analytic - numeric| <= 1e-2 max |numeric| + 1e-4, and every
 * check also asserts that a gradient 10% off would fail it, so the
 * tolerance is known to be tight enough to catch a real bug. */
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bd_test_node.h"
#include "grad.h"
#include "graph.h"
#include "ops.h"

#define DIMS BD_TEST_DIMS
#define MAX_IO BD_TEST_MAX_IO

enum { SAMPLES = 30 };

static const bd_grad_ctx frozen = {.bn_train = 0}, train = {.bn_train = 1};

static uint64_t next_random(uint64_t *s)
{
    *s = *s * 6364136223846793005ULL + 1442695040888963407ULL;
    return *s >> 33;
}

static void free_tensors(bd_tensor **t, int count)
{
    for (int i = 0; i < count; i++) {
        bd_tensor_free(t[i]);
        t[i] = NULL;
    }
}

static void forward(const bd_graph *g, const bd_node *n, bd_tensor *const *in, bd_tensor **out,
                    bd_saved *saved, const bd_grad_ctx *ctx)
{
    if (bd_grad_forward(g, n, in, out, saved, ctx) != BD_OK)
        fail_msg("training forward: %s", bd_error_message());
}

/* L = sum(dout * y0) of the training forward, in double. */
static double loss_of(const bd_graph *g, const bd_node *n, bd_tensor *const *in,
                      const bd_tensor *dout, const bd_grad_ctx *ctx)
{
    bd_tensor *out[MAX_IO] = {NULL};
    bd_saved saved;
    forward(g, n, in, out, &saved, ctx);
    const float *y = out[0]->data, *d = dout->data;
    double l = 0;
    for (int64_t i = 0; i < bd_tensor_count(out[0]); i++)
        l += (double)d[i] * y[i];
    free_tensors(out, n->noutputs);
    bd_saved_free(&saved);
    return l;
}

/* Checks the gradient of the input held in *x (an element of in) against
 * central differences of loss(). */
typedef double (*loss_fn)(const void *ctx);

static void fd_compare(const char *what, int input, bd_tensor *x, const float *analytic,
                       loss_fn loss, const void *ctx, uint64_t seed)
{
    float *xv = x->data;
    const int64_t count = bd_tensor_count(x);
    double err = 0, scale = 0, wrong = 0;
    for (int64_t s = 0; s < (count < SAMPLES ? count : SAMPLES); s++) {
        /* the first and last elements, where edge cases gather, then at random */
        int64_t i = count <= SAMPLES ? s
                    : s < 2      ? s * (count - 1)
                                 : (int64_t)(next_random(&seed) % (uint64_t)count);
        const float orig = xv[i], h = 1e-3f * fmaxf(1.0f, fabsf(orig));
        xv[i] = orig + h;
        const double up = loss(ctx), xu = xv[i];
        xv[i] = orig - h;
        const double down = loss(ctx), xd = xv[i];
        xv[i] = orig;
        const double num = (up - down) / (xu - xd);
        err = fmax(err, fabs(analytic[i] - num));
        wrong = fmax(wrong, fabs(1.1 * analytic[i] - num));
        scale = fmax(scale, fabs(num));
    }
    const double tol = 1e-2 * scale + 1e-4;
    if (!(err <= tol))
        fail_msg("%s: gradient of input %d off by %g (numeric gradients up to %g)", what, input,
                 err, scale);
    if (!(wrong > tol))
        fail_msg("%s: input %d: a gradient 10%% off would pass (error %g, tolerance %g)", what,
                 input, wrong, tol);
}

typedef struct node_loss {
    const bd_graph *g;
    const bd_node *n;
    bd_tensor *const *in;
    const bd_tensor *dout;
    const bd_grad_ctx *ctx;
} node_loss;

static double node_loss_of(const void *p)
{
    const node_loss *l = p;
    return loss_of(l->g, l->n, l->in, l->dout, l->ctx);
}

/* Forward and backward of n on in, then the gradient of every input whose
 * bit is set in check against finite differences. */
static void grad_check(const char *what, const bd_graph *g, const bd_node *n,
                       bd_tensor *const *in, unsigned check, const bd_grad_ctx *ctx,
                       uint64_t seed)
{
    bd_tensor *out[MAX_IO] = {NULL}, *din[MAX_IO] = {NULL};
    bd_saved saved;
    forward(g, n, in, out, &saved, ctx);
    bd_tensor *dout[MAX_IO] = {bd_test_rand_f32(out[0]->ndim, out[0]->dims, seed, -1, 1)};
    unsigned char want[MAX_IO] = {0};
    for (int i = 0; i < n->ninputs; i++)
        want[i] = check >> i & 1;
    if (bd_grad_backward(g, n, in, out, &saved, dout, want, din, ctx) != BD_OK)
        fail_msg("%s: backward: %s", what, bd_error_message());
    node_loss l = {g, n, in, dout[0], ctx};
    for (int i = 0; i < n->ninputs; i++) {
        if (!want[i]) {
            assert_null(din[i]);
            continue;
        }
        assert_non_null(din[i]);
        char label[160];
        snprintf(label, sizeof label, "%s: gradient of input %d", what, i);
        bd_test_assert_shape(din[i], in[i]->ndim, in[i]->dims, label);
        assert_int_equal(din[i]->dtype, BD_F32);
        fd_compare(what, i, in[i], din[i]->data, node_loss_of, &l, seed + 100 + (uint64_t)i);
    }
    free_tensors(din, n->ninputs);
    free_tensors(out, n->noutputs);
    bd_tensor_free(dout[0]);
    bd_saved_free(&saved);
}

/* Moves values within gap of `at` to at +- gap, away from a kink. */
static void keep_away(bd_tensor *t, float at, float gap)
{
    float *v = t->data;
    for (int64_t i = 0; i < bd_tensor_count(t); i++)
        if (fabsf(v[i] - at) < gap)
            v[i] = v[i] < at ? at - gap : at + gap;
}

/* Distinct values step apart in random order: no near ties for a max, so
 * no perturbation moves an argmax. */
static void distinct(bd_tensor *t, float step, uint64_t seed)
{
    float *v = t->data;
    const int64_t count = bd_tensor_count(t);
    for (int64_t i = 0; i < count; i++)
        v[i] = (float)(i - count / 2) * step;
    for (int64_t i = count - 1; i > 0; i--) {
        int64_t j = (int64_t)(next_random(&seed) % (uint64_t)(i + 1));
        float s = v[i];
        v[i] = v[j];
        v[j] = s;
    }
}

/* ---- Conv ---- */

typedef struct conv_case {
    const char *what;
    int64_t n, c, h, w, m, group, kh, kw; /* h == 0: 1-D, [N, C, W] */
    int64_t strides[2], dilations[2], pads[4]; /* all zero: attribute absent */
    const char *auto_pad;
    int bias;
} conv_case;

static int any(const int64_t *v, int count)
{
    for (int i = 0; i < count; i++)
        if (v[i])
            return 1;
    return 0;
}

static void check_conv(const conv_case *cc, uint64_t seed)
{
    bd_graph *g;
    bd_node *n = bd_test_node(&g, 13, "Conv", cc->bias ? 3 : 2, 1);
    const int s = cc->h ? 2 : 1, first = 2 - s; /* 1-D takes the W half of each pair */
    if (cc->group != 1)
        bd_test_attr_int(n, "group", cc->group);
    if (any(cc->strides, 2))
        bd_test_attr_ints(n, "strides", s, cc->strides + first);
    if (any(cc->dilations, 2))
        bd_test_attr_ints(n, "dilations", s, cc->dilations + first);
    if (any(cc->pads, 4))
        bd_test_attr_ints(n, "pads", 2 * s,
                          s == 2 ? cc->pads : (int64_t[]){cc->pads[1], cc->pads[3]});
    if (cc->auto_pad)
        bd_test_attr_str(n, "auto_pad", cc->auto_pad);
    int64_t xd[4] = {cc->n, cc->c, cc->h, cc->w};
    int64_t wd[4] = {cc->m, cc->c / cc->group, cc->kh, cc->kw};
    if (s == 1) {
        xd[2] = cc->w;
        wd[2] = cc->kw;
    }
    bd_tensor *in[3] = {bd_test_rand_f32(2 + s, xd, seed, -1, 1),
                        bd_test_rand_f32(2 + s, wd, seed + 1, -1, 1),
                        cc->bias ? bd_test_rand_f32(1, &cc->m, seed + 2, -1, 1) : NULL};
    grad_check(cc->what, g, n, in, cc->bias ? 7 : 3, &frozen, seed + 3);
    free_tensors(in, 3);
    bd_graph_free(g);
}

static const conv_case conv_cases[] = {
    {"plain 3x3", 3, 5, 7, 5, 6, 1, 3, 3, {0}, {0}, {0}, NULL, 1},
    {"group 2 asymmetric", 3, 6, 7, 5, 4, 2, 3, 3, {2, 1}, {1, 2}, {1, 2, 0, 1}, NULL, 1},
    /* stride 1, where dX is a conv of dY: uneven pads, then one beyond the
     * kernel's reach (which that form cannot take) */
    {"asymmetric stride 1", 3, 5, 7, 5, 6, 1, 3, 3, {0}, {0}, {0, 2, 1, 1}, NULL, 1},
    {"padded beyond the kernel", 3, 5, 7, 5, 6, 1, 3, 3, {0}, {0}, {3, 0, 0, 1}, NULL, 0},
    {"depthwise", 3, 5, 7, 5, 5, 5, 3, 3, {2, 2}, {0}, {1, 1, 1, 1}, NULL, 1},
    {"depthwise x2", 3, 5, 7, 5, 10, 5, 3, 3, {0}, {0}, {1, 1, 1, 1}, NULL, 0},
    {"depthwise dilated", 3, 5, 7, 5, 5, 5, 3, 3, {1, 2}, {2, 2}, {2, 1, 0, 2}, NULL, 0},
    {"SAME_UPPER", 3, 5, 7, 5, 7, 1, 4, 2, {2, 2}, {0}, {0}, "SAME_UPPER", 1},
    {"SAME_LOWER group", 3, 6, 7, 5, 4, 2, 3, 2, {1, 1}, {2, 3}, {0}, "SAME_LOWER", 0},
    {"VALID strided", 3, 5, 9, 7, 6, 1, 3, 3, {2, 2}, {0}, {0}, "VALID", 1},
    {"pointwise", 3, 5, 7, 5, 7, 1, 1, 1, {0}, {0}, {0}, NULL, 1},
    {"pointwise group", 3, 6, 7, 5, 9, 3, 1, 1, {0}, {0}, {0}, NULL, 0},
    {"pointwise strided", 3, 6, 7, 5, 4, 1, 1, 1, {2, 2}, {0}, {0}, NULL, 0},
    {"1-D", 3, 4, 0, 11, 6, 2, 1, 3, {0, 2}, {0}, {0, 1, 0, 2}, NULL, 1},
    {"1-D dilated", 3, 4, 0, 11, 6, 1, 1, 3, {0}, {0, 2}, {0}, "SAME_UPPER", 0},
    {"batch 1", 1, 6, 9, 7, 8, 1, 3, 3, {0}, {0}, {1, 1, 1, 1}, NULL, 1},
    /* images wide enough for tiles of two images, then of one */
    {"two-image tiles", 3, 4, 35, 33, 5, 1, 3, 3, {0}, {0}, {1, 1, 1, 1}, NULL, 1},
    {"one-image tiles", 3, 4, 47, 45, 6, 2, 3, 3, {0}, {0}, {1, 1, 1, 1}, NULL, 1},
    {"one-image tiles pointwise", 3, 4, 47, 45, 5, 1, 1, 1, {0}, {0}, {0}, NULL, 0},
    {"large depthwise", 3, 8, 33, 31, 8, 8, 3, 3, {2, 1}, {0}, {1, 1, 1, 1}, NULL, 1},
};

/* Every case on one thread (tiles in turn), and on two and three, where
 * threads take whole tiles wherever there are enough (partial last tiles
 * included). */
static void test_conv(void **state)
{
    (void)state;
    const int threads = omp_get_max_threads();
    for (int t = 1; t <= 3; t++) {
        omp_set_num_threads(t);
        for (size_t c = 0; c < sizeof conv_cases / sizeof conv_cases[0]; c++)
            check_conv(&conv_cases[c], 10 * c + 1);
    }
    omp_set_num_threads(threads);
}

/* ---- Gemm and MatMul ---- */

static void check_gemm(int ta, int tb, float alpha, float beta, int nc, const int64_t *cdims,
                       uint64_t seed)
{
    const int64_t m = 5, k = 7, nn = 3;
    bd_graph *g;
    bd_node *n = bd_test_node(&g, 13, "Gemm", nc >= 0 ? 3 : 2, 1);
    bd_test_attr_int(n, "transA", ta);
    bd_test_attr_int(n, "transB", tb);
    bd_test_attr_float(n, "alpha", alpha);
    bd_test_attr_float(n, "beta", beta);
    int64_t ad[2] = {ta ? k : m, ta ? m : k}, bd[2] = {tb ? nn : k, tb ? k : nn};
    bd_tensor *in[3] = {bd_test_rand_f32(2, ad, seed, -1, 1),
                        bd_test_rand_f32(2, bd, seed + 1, -1, 1),
                        nc >= 0 ? bd_test_rand_f32(nc, cdims, seed + 2, -1, 1) : NULL};
    char what[96];
    snprintf(what, sizeof what, "Gemm tA=%d tB=%d alpha=%g beta=%g C rank %d", ta, tb, alpha,
             beta, nc);
    grad_check(what, g, n, in, nc >= 0 ? 7 : 3, &frozen, seed + 3);
    free_tensors(in, 3);
    bd_graph_free(g);
}

static void test_gemm(void **state)
{
    (void)state;
    static const struct {
        int n;
        int64_t dims[2];
    } cs[] = {{-1, {0}}, {0, {0}}, {1, {1}}, {1, {3}}, {2, {1, 3}}, {2, {5, 1}}, {2, {5, 3}}};
    uint64_t seed = 1;
    for (int ta = 0; ta < 2; ta++)
        for (int tb = 0; tb < 2; tb++)
            for (size_t c = 0; c < sizeof cs / sizeof cs[0]; c++) {
                check_gemm(ta, tb, 1.0f, 1.0f, cs[c].n, cs[c].dims, seed);
                check_gemm(ta, tb, 0.7f, -1.3f, cs[c].n, cs[c].dims, seed + 5);
                seed += 10;
            }
}

static void check_matmul(int na, const int64_t *ad, int nb, const int64_t *bdims, uint64_t seed)
{
    bd_graph *g;
    bd_node *n = bd_test_node(&g, 13, "MatMul", 2, 1);
    bd_tensor *in[2] = {bd_test_rand_f32(na, ad, seed, -1, 1),
                        bd_test_rand_f32(nb, bdims, seed + 1, -1, 1)};
    char what[96], sa[64], sb[64];
    snprintf(what, sizeof what, "MatMul %s x %s", bd_shape_str(na, ad, sa, sizeof sa),
             bd_shape_str(nb, bdims, sb, sizeof sb));
    grad_check(what, g, n, in, 3, &frozen, seed + 2);
    free_tensors(in, 2);
    bd_graph_free(g);
}

static void test_matmul(void **state)
{
    (void)state;
    check_matmul(DIMS(5, 7), DIMS(7, 3), 1);
    check_matmul(DIMS(3, 5, 7), DIMS(3, 7, 3), 11);
    check_matmul(DIMS(3, 5, 7), DIMS(7, 3), 21);
    check_matmul(DIMS(5, 7), DIMS(3, 7, 3), 31);
    check_matmul(DIMS(2, 1, 5, 7), DIMS(3, 7, 3), 41);
    check_matmul(DIMS(3, 1, 5, 7), DIMS(1, 3, 7, 3), 51);
    check_matmul(DIMS(7), DIMS(3, 7, 3), 61);
    check_matmul(DIMS(3, 5, 7), DIMS(7), 71);
    check_matmul(DIMS(7), DIMS(7), 81);
}

/* ---- elementwise ---- */

static void check_binary(const char *op, int na, const int64_t *ad, int nb, const int64_t *bdims,
                         uint64_t seed)
{
    bd_graph *g;
    bd_node *n = bd_test_node(&g, 13, op, 2, 1);
    bd_tensor *in[2] = {bd_test_rand_f32(na, ad, seed, -1, 1),
                        bd_test_rand_f32(nb, bdims, seed + 1, -1, 1)};
    if (strcmp(op, "Div") == 0) /* a divisor near 0 would swamp the differences */
        keep_away(in[1], 0, 0.5f);
    char what[128], sa[64], sb[64];
    snprintf(what, sizeof what, "%s %s, %s", op, bd_shape_str(na, ad, sa, sizeof sa),
             bd_shape_str(nb, bdims, sb, sizeof sb));
    grad_check(what, g, n, in, 3, &frozen, seed + 2);
    free_tensors(in, 2);
    bd_graph_free(g);
}

static void test_binary(void **state)
{
    (void)state;
    static const char *const ops[] = {"Add", "Sub", "Mul", "Div"};
    for (int o = 0; o < 4; o++) {
        uint64_t s = 100 * (uint64_t)o;
        check_binary(ops[o], DIMS(3, 5, 7, 5), DIMS(3, 5, 7, 5), s + 1);
        check_binary(ops[o], DIMS(3, 5, 7, 5), DIMS(1, 5, 1, 1), s + 11);
        check_binary(ops[o], DIMS(3, 5, 7, 5), DIMS(5, 1, 1), s + 21);
        check_binary(ops[o], DIMS(3, 5, 7, 5), BD_TEST_SCALAR, s + 31);
        check_binary(ops[o], DIMS(3, 5, 7, 5), DIMS(5), s + 41);
        check_binary(ops[o], DIMS(3, 1, 5), DIMS(1, 4, 1), s + 51);
        check_binary(ops[o], DIMS(5), DIMS(3, 5), s + 61);
        check_binary(ops[o], DIMS(1, 5, 1, 1), DIMS(3, 5, 7, 5), s + 71);
    }
}

static void test_relu(void **state)
{
    (void)state;
    bd_graph *g;
    bd_node *n = bd_test_node(&g, 13, "Relu", 1, 1);
    bd_tensor *x = bd_test_rand_f32(DIMS(3, 5, 7, 5), 1, -1, 1);
    keep_away(x, 0, 0.01f);
    grad_check("Relu", g, n, &x, 1, &frozen, 2);
    bd_tensor_free(x);
    bd_graph_free(g);
}

static void test_clip(void **state)
{
    (void)state;
    bd_graph *g;
    bd_tensor *x = bd_test_rand_f32(DIMS(3, 5, 7, 5), 1, -1, 1);
    keep_away(x, -0.5f, 0.01f);
    keep_away(x, 0.6f, 0.01f);
    bd_tensor *lo = bd_test_tensor(BD_F32, BD_TEST_SCALAR);
    bd_tensor *hi = bd_test_tensor(BD_F32, BD_TEST_SCALAR);
    *(float *)lo->data = -0.5f;
    *(float *)hi->data = 0.6f;
    bd_node *n = bd_test_node(&g, 13, "Clip", 3, 1);
    grad_check("Clip, bounds as inputs", g, n, (bd_tensor *[]){x, lo, hi}, 1, &frozen, 2);
    bd_graph_free(g);
    static const char *const max_only[] = {"x0", "", "x2"};
    n = bd_test_node_inputs(&g, 13, "Clip", 3, max_only, 1);
    grad_check("Clip, max only", g, n, (bd_tensor *[]){x, NULL, hi}, 1, &frozen, 3);
    bd_graph_free(g);
    n = bd_test_node(&g, 6, "Clip", 1, 1);
    bd_test_attr_float(n, "min", -0.5f);
    bd_test_attr_float(n, "max", 0.6f);
    grad_check("Clip, bounds as attributes", g, n, &x, 1, &frozen, 4);
    bd_graph_free(g);
    bd_tensor_free(x);
    bd_tensor_free(lo);
    bd_tensor_free(hi);
}

/* The pointwise activations, on inputs kept off their kinks. */
typedef struct unary_case {
    const char *op;
    float lo, hi, kinks[2];
    int nkinks;
    float alpha, beta; /* attributes, when alpha is nonzero */
} unary_case;

static const unary_case unary_cases[] = {
    {"Sigmoid", -4, 4, {0}, 0, 0, 0},
    {"HardSigmoid", -4, 4, {-2.5f, 2.5f}, 2, 0, 0},
    {"HardSigmoid", -4, 4, {-3.0f, 2.0f}, 2, 0.2f, 0.6f},
    {"HardSwish", -5, 5, {-3, 3}, 2, 0, 0},
    {"LeakyRelu", -1, 1, {0}, 1, 0.1f, 0},
    {"Tanh", -2, 2, {0}, 0, 0, 0},
    {"Exp", -2, 2, {0}, 0, 0, 0},
    {"Sqrt", 0.5f, 3, {0}, 0, 0, 0},
    {"Neg", -1, 1, {0}, 0, 0, 0},
    {"Erf", -2, 2, {0}, 0, 0, 0},
};

static void test_activations(void **state)
{
    (void)state;
    for (size_t c = 0; c < sizeof unary_cases / sizeof unary_cases[0]; c++) {
        const unary_case *uc = &unary_cases[c];
        bd_graph *g;
        bd_node *n = bd_test_node(&g, 14, uc->op, 1, 1);
        if (uc->alpha != 0)
            bd_test_attr_float(n, "alpha", uc->alpha);
        if (uc->beta != 0)
            bd_test_attr_float(n, "beta", uc->beta);
        bd_tensor *x = bd_test_rand_f32(DIMS(3, 5, 7, 5), 10 + c, uc->lo, uc->hi);
        for (int k = 0; k < uc->nkinks; k++)
            keep_away(x, uc->kinks[k], 0.01f);
        grad_check(uc->op, g, n, &x, 1, &frozen, 20 + c);
        bd_tensor_free(x);
        bd_graph_free(g);
    }
}

static void check_pow(float lo, float hi, float e, int ne, const int64_t *edims, uint64_t seed)
{
    bd_graph *g;
    bd_node *n = bd_test_node(&g, 15, "Pow", 2, 1);
    bd_tensor *in[2] = {bd_test_rand_f32(DIMS(3, 5, 7, 5), seed, lo, hi),
                        bd_test_rand_f32(ne, edims, seed + 1, e, e)};
    char what[64];
    snprintf(what, sizeof what, "Pow, exponent %g", e);
    grad_check(what, g, n, in, 1, &frozen, seed + 2);
    free_tensors(in, 2);
    bd_graph_free(g);
}

static void test_pow(void **state)
{
    (void)state;
    check_pow(0.5f, 2, 2, BD_TEST_SCALAR, 1);
    check_pow(0.5f, 2, 0.5f, BD_TEST_SCALAR, 11);
    check_pow(-2, 2, 3, DIMS(5, 1, 1), 21); /* broadcast per channel, negative bases */
    check_pow(0.5f, 2, -1, DIMS(1), 31);
}

static void check_reduce_mean(int64_t opset, int ndim, const int64_t *dims, int naxes,
                              const int64_t *axes, int keepdims, uint64_t seed)
{
    bd_graph *g;
    int axes_input = opset >= 18 && naxes > 0;
    bd_node *n = bd_test_node(&g, opset, "ReduceMean", axes_input ? 2 : 1, 1);
    if (naxes > 0 && !axes_input)
        bd_test_attr_ints(n, "axes", naxes, axes);
    if (keepdims >= 0)
        bd_test_attr_int(n, "keepdims", keepdims);
    bd_tensor *in[2] = {bd_test_rand_f32(ndim, dims, seed, -1, 1),
                        axes_input ? bd_test_ints(naxes, axes) : NULL};
    char what[96];
    snprintf(what, sizeof what, "ReduceMean opset %d, %d axes, keepdims %d", (int)opset, naxes,
             keepdims);
    grad_check(what, g, n, in, 1, &frozen, seed + 1);
    free_tensors(in, 2);
    bd_graph_free(g);
}

static void test_reduce_mean(void **state)
{
    (void)state;
    /* a mean of many has gradients too small to tell 10% apart: the
     * all-axes cases take few elements */
    check_reduce_mean(13, DIMS(3, 5, 7, 5), 2, (int64_t[]){2, 3}, -1, 1);
    check_reduce_mean(13, DIMS(3, 5, 7, 5), 2, (int64_t[]){-1, -2}, 0, 11);
    check_reduce_mean(13, DIMS(3, 5, 7, 5), 1, (int64_t[]){1}, 0, 21);
    check_reduce_mean(13, DIMS(3, 5), 0, NULL, 0, 31);
    check_reduce_mean(18, DIMS(3, 5, 7, 5), 2, (int64_t[]){0, 2}, 1, 41);
    check_reduce_mean(18, DIMS(3, 1, 5), 0, NULL, 1, 51);
}

static void check_pad(const char *mode, const int64_t *pads, uint64_t seed)
{
    bd_graph *g;
    bd_node *n = bd_test_node(&g, 13, "Pad", 2, 1);
    if (mode)
        bd_test_attr_str(n, "mode", mode);
    bd_tensor *in[2] = {bd_test_rand_f32(DIMS(2, 3, 4, 5), seed, -1, 1), bd_test_ints(8, pads)};
    char what[64];
    snprintf(what, sizeof what, "Pad %s, seed %d", mode ? mode : "default", (int)seed);
    grad_check(what, g, n, in, 1, &frozen, seed + 1);
    free_tensors(in, 2);
    bd_graph_free(g);
}

static void test_pad(void **state)
{
    (void)state;
    static const int64_t pads[][8] = {
        {0, 0, 1, 2, 0, 1, 2, 1},
        {0, 0, 3, 4, 0, 0, 2, 1},  /* wider than reflect's period on H */
        {0, 0, -1, 1, 0, 0, 1, -2}, /* crops too */
    };
    static const char *const modes[] = {NULL, "constant", "reflect", "edge"};
    for (int m = 0; m < 4; m++)
        for (int p = 0; p < 3; p++)
            check_pad(modes[m], pads[p], 10 * (uint64_t)m + (uint64_t)p + 1);
}

static void test_slice(void **state)
{
    (void)state;
    bd_graph *g;
    bd_tensor *x = bd_test_rand_f32(DIMS(3, 5, 7, 5), 1, -1, 1);
    bd_node *n = bd_test_node(&g, 13, "Slice", 5, 1);
    bd_tensor *strided[5] = {x, BD_TEST_INTS(1, 6), BD_TEST_INTS(5, 0), BD_TEST_INTS(1, 2),
                             BD_TEST_INTS(2, -2)};
    grad_check("Slice, steps 2 and -2", g, n, strided, 1, &frozen, 2);
    bd_graph_free(g);
    n = bd_test_node(&g, 13, "Slice", 3, 1);
    bd_tensor *plain[3] = {x, BD_TEST_INTS(0, -4), BD_TEST_INTS(2, 100)};
    grad_check("Slice, leading axes", g, n, plain, 1, &frozen, 3);
    bd_graph_free(g);
    free_tensors(strided + 1, 4);
    free_tensors(plain, 3);
}

/* ---- BatchNormalization ---- */

static bd_tensor **bn_inputs(bd_tensor **in, int ndim, const int64_t *dims, uint64_t seed)
{
    int64_t c = dims[1];
    in[0] = bd_test_rand_f32(ndim, dims, seed, -2, 3);
    in[1] = bd_test_rand_f32(1, &c, seed + 1, 0.5f, 2);
    in[2] = bd_test_rand_f32(1, &c, seed + 2, -1, 1);
    in[3] = bd_test_rand_f32(1, &c, seed + 3, -1, 1);
    in[4] = bd_test_rand_f32(1, &c, seed + 4, 0.5f, 1.5f);
    return in;
}

static void check_batchnorm(int ndim, const int64_t *dims, const bd_grad_ctx *ctx, uint64_t seed)
{
    bd_graph *g;
    bd_node *n = bd_test_node(&g, 15, "BatchNormalization", 5, 1);
    bd_test_attr_float(n, "epsilon", 1e-3f);
    bd_tensor *in[5];
    char what[96], sx[64];
    snprintf(what, sizeof what, "BatchNormalization %s %s", ctx->bn_train ? "train" : "frozen",
             bd_shape_str(ndim, dims, sx, sizeof sx));
    grad_check(what, g, n, bn_inputs(in, ndim, dims, seed), 7, ctx, seed + 5);
    free_tensors(in, 5);
    bd_graph_free(g);
}

static void test_batchnorm(void **state)
{
    (void)state;
    for (int t = 0; t < 2; t++) {
        const bd_grad_ctx *ctx = t ? &train : &frozen;
        check_batchnorm(DIMS(3, 5, 7, 5), ctx, 1);
        check_batchnorm(DIMS(7, 5), ctx, 11);
        check_batchnorm(DIMS(3, 5, 9), ctx, 21);
        check_batchnorm(DIMS(3, 6, 33, 31), ctx, 31);
    }
}

/* The training forward normalises with the batch's mean and biased
 * variance over N and the spatial dims, and saves them. */
static void test_batchnorm_train_forward(void **state)
{
    (void)state;
    bd_graph *g;
    bd_node *n = bd_test_node(&g, 15, "BatchNormalization", 5, 1);
    const float eps = 1e-3f;
    bd_test_attr_float(n, "epsilon", eps);
    const int64_t dims[4] = {3, 5, 7, 5}, c = 5, s = 35, count = 3 * 5 * 35;
    bd_tensor *in[5], *out[1] = {NULL};
    bn_inputs(in, 4, dims, 7);
    bd_saved saved;
    forward(g, n, in, out, &saved, &train);
    assert_non_null(saved.t[0]);
    assert_non_null(saved.t[1]);
    assert_null(saved.t[2]);
    const float *x = in[0]->data, *scale = in[1]->data, *b = in[2]->data;
    float mean[5], var[5], *ref = malloc((size_t)count * sizeof *ref);
    for (int64_t ch = 0; ch < c; ch++) {
        double sum = 0, sq = 0;
        for (int64_t i = 0; i < 3; i++)
            for (int64_t j = 0; j < s; j++)
                sum += x[(i * c + ch) * s + j];
        double mu = sum / (3 * s);
        for (int64_t i = 0; i < 3; i++)
            for (int64_t j = 0; j < s; j++)
                sq += pow(x[(i * c + ch) * s + j] - mu, 2);
        mean[ch] = (float)mu;
        var[ch] = (float)(sq / (3 * s));
        for (int64_t i = 0; i < 3; i++)
            for (int64_t j = 0; j < s; j++) {
                int64_t at = (i * c + ch) * s + j;
                ref[at] = (float)((x[at] - mu) / sqrt(var[ch] + eps) * scale[ch] + b[ch]);
            }
    }
    bd_test_assert_shape(saved.t[0], 1, &c, "batch mean");
    bd_test_assert_shape(saved.t[1], 1, &c, "batch variance");
    bd_test_assert_close(saved.t[0], mean, 1e-5, "batch mean");
    bd_test_assert_close(saved.t[1], var, 1e-5, "batch variance");
    bd_test_assert_close(out[0], ref, 1e-5, "train-mode output");
    bd_tensor_free(out[0]);
    bd_saved_free(&saved);
    /* frozen: the inference kernel, nothing saved */
    forward(g, n, in, out, &saved, &frozen);
    for (int k = 0; k < BD_SAVED_MAX; k++)
        assert_null(saved.t[k]);
    bd_tensor *inference = bd_test_run(g, n, in);
    bd_test_assert_close(out[0], inference->data, 1e-7, "frozen output");
    bd_tensor_free(inference);
    bd_tensor_free(out[0]);
    free(ref);
    free_tensors(in, 5);
    bd_graph_free(g);
}

/* ---- Softmax and LogSoftmax ---- */

static void check_softmax(const char *op, int64_t opset, int axis_set, int64_t axis, int ndim,
                          const int64_t *dims, uint64_t seed)
{
    bd_graph *g;
    bd_node *n = bd_test_node(&g, opset, op, 1, 1);
    if (axis_set)
        bd_test_attr_int(n, "axis", axis);
    bd_tensor *x = bd_test_rand_f32(ndim, dims, seed, -2, 2);
    char what[96];
    snprintf(what, sizeof what, "%s opset %d axis %d%s", op, (int)opset, (int)axis,
             axis_set ? "" : " (default)");
    grad_check(what, g, n, &x, 1, &frozen, seed + 1);
    bd_tensor_free(x);
    bd_graph_free(g);
}

static void test_softmax(void **state)
{
    (void)state;
    static const char *const ops[] = {"Softmax", "LogSoftmax"};
    for (int o = 0; o < 2; o++) {
        uint64_t s = 100 * (uint64_t)o;
        check_softmax(ops[o], 13, 1, 0, DIMS(3, 5, 7), s + 1);
        check_softmax(ops[o], 13, 1, 1, DIMS(3, 5, 7), s + 11);
        check_softmax(ops[o], 13, 1, -1, DIMS(3, 5, 7), s + 21);
        check_softmax(ops[o], 13, 0, -1, DIMS(3, 5, 7, 3), s + 31);
        check_softmax(ops[o], 11, 1, 1, DIMS(3, 4, 5), s + 41);
        check_softmax(ops[o], 11, 0, 1, DIMS(3, 5), s + 51);
        check_softmax(ops[o], 11, 1, 2, DIMS(3, 4, 5, 3), s + 61);
    }
}

/* ---- pools ---- */

typedef struct pool_case {
    const char *what, *op;
    int ndim;
    int64_t dims[4];
    int s; /* spatial rank of the attributes */
    int64_t kernel[2], strides[2], dilations[2], pads[4];
    const char *auto_pad;
    int ceil_mode, count_include_pad;
} pool_case;

static void check_pool(const pool_case *pc, uint64_t seed)
{
    bd_graph *g;
    bd_node *n = bd_test_node(&g, 19, pc->op, 1, 1);
    if (pc->kernel[0])
        bd_test_attr_ints(n, "kernel_shape", pc->s, pc->kernel);
    if (any(pc->strides, 2))
        bd_test_attr_ints(n, "strides", pc->s, pc->strides);
    if (any(pc->dilations, 2))
        bd_test_attr_ints(n, "dilations", pc->s, pc->dilations);
    if (any(pc->pads, 4))
        bd_test_attr_ints(n, "pads", 2 * pc->s, pc->pads);
    if (pc->auto_pad)
        bd_test_attr_str(n, "auto_pad", pc->auto_pad);
    if (pc->ceil_mode)
        bd_test_attr_int(n, "ceil_mode", 1);
    if (pc->count_include_pad)
        bd_test_attr_int(n, "count_include_pad", 1);
    bd_tensor *x = bd_test_rand_f32(pc->ndim, pc->dims, seed, -1, 1);
    if (strstr(pc->op, "Max"))
        distinct(x, 0.02f, seed);
    grad_check(pc->what, g, n, &x, 1, &frozen, seed + 1);
    bd_tensor_free(x);
    bd_graph_free(g);
}

static const pool_case pool_cases[] = {
    {"MaxPool 3x3/2 pad 1", "MaxPool", 4, {3, 5, 9, 7}, 2, {3, 3}, {2, 2}, {0}, {1, 1, 1, 1},
     NULL, 0, 0},
    {"MaxPool ceil_mode", "MaxPool", 4, {3, 5, 7, 5}, 2, {2, 2}, {2, 2}, {0}, {0}, NULL, 1, 0},
    {"MaxPool dilated asymmetric", "MaxPool", 4, {3, 5, 7, 5}, 2, {2, 3}, {1, 2}, {2, 1},
     {0, 1, 1, 0}, NULL, 0, 0},
    {"MaxPool SAME_UPPER", "MaxPool", 4, {3, 5, 7, 5}, 2, {3, 2}, {2, 2}, {0}, {0},
     "SAME_UPPER", 0, 0},
    {"MaxPool 1-D", "MaxPool", 3, {3, 4, 11}, 1, {3}, {2}, {0}, {1, 1}, NULL, 0, 0},
    {"AveragePool", "AveragePool", 4, {3, 5, 9, 7}, 2, {3, 3}, {2, 2}, {0}, {1, 1, 1, 1}, NULL,
     0, 0},
    {"AveragePool count_include_pad", "AveragePool", 4, {3, 5, 9, 7}, 2, {3, 3}, {2, 2}, {0},
     {1, 0, 2, 1}, NULL, 0, 1},
    {"AveragePool ceil_mode", "AveragePool", 4, {3, 5, 7, 5}, 2, {3, 2}, {2, 2}, {0}, {0}, NULL,
     1, 0},
    /* the last windows run past the end padding, which they count */
    {"AveragePool ceil_mode count_include_pad", "AveragePool", 4, {3, 5, 7, 5}, 2, {3, 3},
     {2, 2}, {0}, {0, 1, 1, 0}, NULL, 1, 1},
    {"AveragePool SAME_LOWER", "AveragePool", 4, {3, 5, 7, 5}, 2, {2, 3}, {1, 2}, {0}, {0},
     "SAME_LOWER", 0, 0},
    {"AveragePool 1-D", "AveragePool", 3, {3, 4, 11}, 1, {3}, {2}, {0}, {0}, NULL, 0, 0},
    {"GlobalAveragePool", "GlobalAveragePool", 4, {3, 5, 7, 5}, 0, {0}, {0}, {0}, {0}, NULL, 0,
     0},
    {"GlobalAveragePool 1-D", "GlobalAveragePool", 3, {3, 5, 7}, 0, {0}, {0}, {0}, {0}, NULL, 0,
     0},
    {"GlobalMaxPool", "GlobalMaxPool", 4, {3, 5, 7, 5}, 0, {0}, {0}, {0}, {0}, NULL, 0, 0},
};

static void test_pool(void **state)
{
    (void)state;
    for (size_t c = 0; c < sizeof pool_cases / sizeof pool_cases[0]; c++)
        check_pool(&pool_cases[c], 10 * c + 1);
}

/* ---- shape ops ---- */

static void test_shape_ops(void **state)
{
    (void)state;
    bd_graph *g;
    bd_tensor *x = bd_test_rand_f32(DIMS(3, 5, 7, 5), 1, -1, 1);
    static const char *const views[] = {"Identity", "Dropout", "Flatten"};
    for (int v = 0; v < 3; v++) {
        bd_node *n = bd_test_node(&g, 13, views[v], 1, 1);
        if (v == 2)
            bd_test_attr_int(n, "axis", 2);
        grad_check(views[v], g, n, &x, 1, &frozen, 10 + (uint64_t)v);
        bd_graph_free(g);
    }
    bd_tensor *shape = BD_TEST_INTS(15, -1), *axes = BD_TEST_INTS(1, 3);
    bd_node *n = bd_test_node(&g, 13, "Reshape", 2, 1);
    grad_check("Reshape", g, n, (bd_tensor *[]){x, shape}, 1, &frozen, 20);
    bd_graph_free(g);
    n = bd_test_node(&g, 13, "Unsqueeze", 2, 1);
    grad_check("Unsqueeze", g, n, (bd_tensor *[]){x, axes}, 1, &frozen, 21);
    bd_graph_free(g);
    bd_tensor *x1 = bd_test_rand_f32(DIMS(3, 1, 7, 1), 2, -1, 1);
    n = bd_test_node(&g, 13, "Squeeze", 2, 1);
    grad_check("Squeeze", g, n, (bd_tensor *[]){x1, axes}, 1, &frozen, 22);
    bd_graph_free(g);
    n = bd_test_node(&g, 13, "Transpose", 1, 1);
    bd_test_attr_ints(n, "perm", 4, (int64_t[]){0, 2, 3, 1});
    grad_check("Transpose", g, n, &x, 1, &frozen, 23);
    bd_graph_free(g);
    n = bd_test_node(&g, 13, "Transpose", 1, 1);
    grad_check("Transpose, reversed", g, n, &x, 1, &frozen, 24);
    bd_graph_free(g);
    bd_tensor *parts[3] = {x, bd_test_rand_f32(DIMS(3, 2, 7, 5), 3, -1, 1),
                           bd_test_rand_f32(DIMS(3, 1, 7, 5), 4, -1, 1)};
    n = bd_test_node(&g, 13, "Concat", 3, 1);
    bd_test_attr_int(n, "axis", 1);
    grad_check("Concat axis 1", g, n, parts, 7, &frozen, 25);
    grad_check("Concat axis 1, middle only", g, n, parts, 2, &frozen, 26);
    bd_graph_free(g);
    bd_tensor *last[2] = {x, bd_test_rand_f32(DIMS(3, 5, 7, 3), 5, -1, 1)};
    n = bd_test_node(&g, 13, "Concat", 2, 1);
    bd_test_attr_int(n, "axis", -1);
    grad_check("Concat axis -1", g, n, last, 3, &frozen, 27);
    bd_graph_free(g);
    bd_tensor *list[] = {x, x1, shape, axes, parts[1], parts[2], last[1]};
    free_tensors(list, sizeof list / sizeof list[0]);
}

/* A gradient that is dout reshaped may be a view of it, but one backward
 * returns at most one such view (grad.h): Add's second is a copy. */
static void test_views(void **state)
{
    (void)state;
    bd_graph *g;
    bd_tensor *x = bd_test_rand_f32(DIMS(3, 5, 7, 5), 1, -1, 1), *out[MAX_IO] = {NULL};
    bd_tensor *din[MAX_IO] = {NULL}, *dout[MAX_IO] = {bd_test_rand_f32(DIMS(3, 5, 7, 5), 2, -1, 1)};
    bd_saved saved;
    bd_node *n = bd_test_node(&g, 13, "Add", 2, 1);
    forward(g, n, (bd_tensor *[]){x, x}, out, &saved, NULL);
    assert_int_equal(bd_grad_backward(g, n, (bd_tensor *[]){x, x}, out, &saved, dout,
                                      (unsigned char[]){1, 1}, din, NULL),
                     BD_OK);
    assert_ptr_not_equal(din[0]->storage, din[1]->storage);
    for (int i = 0; i < 2; i++)
        bd_test_assert_close(din[i], dout[0]->data, 1e-7, "Add gradient");
    free_tensors(din, 2);
    bd_tensor_free(out[0]);
    bd_graph_free(g);
    n = bd_test_node(&g, 13, "Flatten", 1, 1);
    forward(g, n, &x, out, &saved, NULL);
    bd_tensor *flat[MAX_IO] = {bd_test_rand_f32(DIMS(3, 175), 3, -1, 1)};
    assert_int_equal(bd_grad_backward(g, n, &x, out, &saved, flat, (unsigned char[]){1}, din,
                                      NULL),
                     BD_OK);
    bd_test_assert_shape(din[0], 4, x->dims, "Flatten gradient");
    assert_ptr_equal(din[0]->data, flat[0]->data);
    bd_tensor_free(din[0]);
    bd_tensor_free(out[0]);
    bd_graph_free(g);
    /* Round: straight through, dy itself (its true derivative is 0) */
    n = bd_test_node(&g, 13, "Round", 1, 1);
    forward(g, n, &x, out, &saved, NULL);
    assert_int_equal(bd_grad_backward(g, n, &x, out, &saved, dout, (unsigned char[]){1}, din,
                                      NULL),
                     BD_OK);
    bd_test_assert_shape(din[0], 4, x->dims, "Round gradient");
    assert_ptr_equal(din[0]->data, dout[0]->data);
    bd_tensor_free(din[0]);
    bd_tensor_free(out[0]);
    bd_graph_free(g);
    bd_tensor *list[] = {x, dout[0], flat[0]};
    free_tensors(list, 3);
}

/* ---- losses ---- */

static void reference_log_softmax(const float *x, int64_t c, double *out)
{
    double max = x[0], sum = 0;
    for (int64_t j = 1; j < c; j++)
        max = fmax(max, x[j]);
    for (int64_t j = 0; j < c; j++)
        sum += exp(x[j] - max);
    for (int64_t j = 0; j < c; j++)
        out[j] = x[j] - max - log(sum);
}

typedef struct loss_args {
    const bd_tensor *student, *teacher;
    const int *labels;
} loss_args;

static double kl_of(const void *p)
{
    const loss_args *l = p;
    double loss;
    if (bd_loss_kl(l->student, l->teacher, &loss, NULL) != BD_OK)
        fail_msg("%s", bd_error_message());
    return loss;
}

static double ce_of(const void *p)
{
    const loss_args *l = p;
    double loss;
    if (bd_loss_ce(l->student, l->labels, &loss, NULL) != BD_OK)
        fail_msg("%s", bd_error_message());
    return loss;
}

static void test_losses(void **state)
{
    (void)state;
    enum { N = 5, C = 7 };
    bd_tensor *s = bd_test_rand_f32(DIMS(N, C), 1, -3, 3);
    bd_tensor *t = bd_test_rand_f32(DIMS(N, C), 2, -3, 3);
    /* large logits: a naive exp would overflow */
    ((float *)s->data)[3] = 120.0f;
    ((float *)t->data)[C + 2] = -150.0f;
    const int labels[N] = {0, 6, 3, 3, 1};
    double ref_kl = 0, ref_ce = 0, ls[C], lt[C];
    float grad_kl[N * C], grad_ce[N * C];
    const float *sv = s->data, *tv = t->data;
    for (int i = 0; i < N; i++) {
        reference_log_softmax(sv + i * C, C, ls);
        reference_log_softmax(tv + i * C, C, lt);
        for (int j = 0; j < C; j++) {
            ref_kl += exp(lt[j]) * (lt[j] - ls[j]) / N;
            grad_kl[i * C + j] = (float)((exp(ls[j]) - exp(lt[j])) / N);
            grad_ce[i * C + j] = (float)((exp(ls[j]) - (j == labels[i])) / N);
        }
        ref_ce -= ls[labels[i]] / N;
    }
    double loss;
    bd_tensor *d;
    assert_int_equal(bd_loss_kl(s, t, &loss, &d), BD_OK);
    assert_true(fabs(loss - ref_kl) <= 1e-9 * fmax(1, fabs(ref_kl)));
    bd_test_assert_shape(d, 2, (int64_t[]){N, C}, "KL gradient");
    bd_test_assert_close(d, grad_kl, 1e-6, "KL gradient");
    loss_args l = {s, t, labels};
    fd_compare("KL", 0, s, d->data, kl_of, &l, 3);
    bd_tensor_free(d);
    assert_int_equal(bd_loss_ce(s, labels, &loss, &d), BD_OK);
    assert_true(fabs(loss - ref_ce) <= 1e-9 * fmax(1, fabs(ref_ce)));
    bd_test_assert_close(d, grad_ce, 1e-6, "cross-entropy gradient");
    fd_compare("cross-entropy", 0, s, d->data, ce_of, &l, 4);
    bd_tensor_free(d);
    /* a distribution against itself */
    assert_int_equal(bd_loss_kl(t, t, &loss, &d), BD_OK);
    assert_true(fabs(loss) < 1e-12);
    for (int i = 0; i < N * C; i++)
        assert_true(((float *)d->data)[i] == 0.0f);
    bd_tensor_free(d);
    bd_tensor_free(s);
    bd_tensor_free(t);
}

static void test_loss_errors(void **state)
{
    (void)state;
    bd_tensor *s = bd_test_rand_f32(DIMS(5, 7), 1, -1, 1);
    bd_tensor *t = bd_test_rand_f32(DIMS(5, 6), 2, -1, 1);
    bd_tensor *x3 = bd_test_rand_f32(DIMS(5, 7, 1), 3, -1, 1), *d = NULL;
    double loss;
    assert_int_not_equal(bd_loss_kl(s, t, &loss, &d), BD_OK);
    assert_non_null(strstr(bd_error_message(), "[5, 6]"));
    assert_null(d);
    assert_int_not_equal(bd_loss_kl(x3, x3, &loss, &d), BD_OK);
    assert_non_null(strstr(bd_error_message(), "[N, C]"));
    const int bad[5] = {0, 1, 7, 2, 3};
    assert_int_not_equal(bd_loss_ce(s, bad, &loss, &d), BD_OK);
    assert_non_null(strstr(bd_error_message(), "label 7"));
    assert_null(d);
    assert_int_not_equal(bd_loss_ce(s, NULL, &loss, &d), BD_OK);
    bd_tensor_free(s);
    bd_tensor_free(t);
    bd_tensor_free(x3);
}

/* ---- the contract's edges ---- */

/* Runs the backward expecting a failure that names the node and says
 * `needle`, with every din slot left NULL. */
static void expect_backward_fails(const bd_graph *g, const bd_node *n, bd_tensor *const *in,
                                  bd_tensor *const *out, const bd_saved *saved,
                                  bd_tensor *const *dout, const unsigned char *want,
                                  const bd_grad_ctx *ctx, const char *needle)
{
    bd_tensor *din[MAX_IO];
    for (int i = 0; i < MAX_IO; i++)
        din[i] = (bd_tensor *)1; /* must be overwritten */
    assert_int_not_equal(bd_grad_backward(g, n, in, out, saved, dout, want, din, ctx), BD_OK);
    for (int i = 0; i < n->ninputs; i++)
        assert_null(din[i]);
    const char *msg = bd_error_message();
    if (!strstr(msg, "'" BD_TEST_NODE_NAME "'") || !strstr(msg, needle))
        fail_msg("expected a message naming the node and saying '%s', got: %s", needle, msg);
}

static void test_errors(void **state)
{
    (void)state;
    bd_graph *g;
    bd_tensor *x = bd_test_rand_f32(DIMS(3, 5, 7, 5), 1, -1, 1), *shape = BD_TEST_INTS(15, -1);
    bd_tensor *out[MAX_IO] = {NULL}, *din[MAX_IO] = {NULL};
    bd_saved saved;
    /* a gradient for Reshape's shape */
    bd_node *n = bd_test_node(&g, 13, "Reshape", 2, 1);
    forward(g, n, (bd_tensor *[]){x, shape}, out, &saved, NULL);
    bd_tensor *dout[MAX_IO] = {bd_test_rand_f32(DIMS(15, 35), 2, -1, 1)};
    expect_backward_fails(g, n, (bd_tensor *[]){x, shape}, out, &saved, dout,
                          (unsigned char[]){1, 1}, NULL, "input 1 ('x1') has no gradient");
    /* a dout of the wrong shape */
    bd_tensor *wrong[MAX_IO] = {bd_test_rand_f32(DIMS(35, 15), 3, -1, 1)};
    expect_backward_fails(g, n, (bd_tensor *[]){x, shape}, out, &saved, wrong,
                          (unsigned char[]){1, 0}, NULL, "[35, 15]");
    bd_tensor_free(out[0]);
    bd_graph_free(g);
    /* a missing input */
    n = bd_test_node(&g, 13, "Conv", 2, 1);
    bd_tensor *w = bd_test_rand_f32(DIMS(4, 5, 3, 3), 4, -1, 1);
    forward(g, n, (bd_tensor *[]){x, w}, out, &saved, NULL);
    bd_tensor *dy[MAX_IO] = {bd_test_rand_f32(out[0]->ndim, out[0]->dims, 5, -1, 1)};
    expect_backward_fails(g, n, (bd_tensor *[]){x, NULL}, out, &saved, dy,
                          (unsigned char[]){1, 0}, NULL, "input 1 ('x1') is missing");
    /* no dout: zero gradients; nothing wanted: nothing computed */
    assert_int_equal(bd_grad_backward(g, n, (bd_tensor *[]){x, w}, out, &saved, NULL,
                                      (unsigned char[]){1, 1}, din, NULL),
                     BD_OK);
    bd_test_assert_shape(din[1], 4, w->dims, "zero gradient");
    for (int64_t i = 0; i < bd_tensor_count(din[0]); i++)
        assert_true(((float *)din[0]->data)[i] == 0.0f);
    free_tensors(din, 2);
    assert_int_equal(bd_grad_backward(g, n, (bd_tensor *[]){x, w}, out, &saved, dy,
                                      (unsigned char[]){0, 0}, din, NULL),
                     BD_OK);
    assert_null(din[0]);
    assert_null(din[1]);
    bd_tensor_free(out[0]);
    bd_graph_free(g);
    /* an op without a backward still runs forward */
    assert_false(bd_grad_supported("Shape"));
    assert_true(bd_grad_supported("Conv"));
    n = bd_test_node(&g, 13, "Shape", 1, 1);
    forward(g, n, &x, out, &saved, NULL);
    expect_backward_fails(g, n, &x, out, &saved, NULL, (unsigned char[]){1}, NULL,
                          "no backward");
    bd_tensor_free(out[0]);
    bd_graph_free(g);
    /* BatchNormalization: the running statistics have no gradient, and the
     * train-mode backward needs the saved batch statistics */
    n = bd_test_node(&g, 15, "BatchNormalization", 5, 1);
    bd_tensor *bn[5];
    bn_inputs(bn, 4, x->dims, 6);
    forward(g, n, bn, out, &saved, &train);
    bd_tensor *dbn[MAX_IO] = {bd_test_rand_f32(4, x->dims, 7, -1, 1)};
    expect_backward_fails(g, n, bn, out, &saved, dbn, (unsigned char[]){0, 0, 0, 1, 0}, &train,
                          "input 3 ('x3') has no gradient");
    bd_saved empty = {{NULL}, 0};
    expect_backward_fails(g, n, bn, out, &empty, dbn, (unsigned char[]){1, 0, 0, 0, 0}, &train,
                          "batch statistics");
    bd_tensor_free(out[0]);
    bd_saved_free(&saved);
    bd_graph_free(g);
    /* MaxPool: its Indices output has no gradient */
    n = bd_test_node(&g, 13, "MaxPool", 1, 2);
    bd_test_attr_ints(n, "kernel_shape", 2, (int64_t[]){2, 2});
    bd_tensor *pooled[MAX_IO] = {bd_test_rand_f32(DIMS(3, 5, 6, 4), 8, -1, 1)};
    bd_tensor *two[MAX_IO] = {pooled[0], pooled[0]};
    expect_backward_fails(g, n, &x, pooled, &empty, two, (unsigned char[]){1}, NULL,
                          "output 1 has no gradient");
    bd_graph_free(g);
    bd_tensor *list[] = {x, shape, w, dout[0], wrong[0], dy[0], dbn[0], pooled[0]};
    free_tensors(list, sizeof list / sizeof list[0]);
    free_tensors(bn, 5);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_conv),
        cmocka_unit_test(test_gemm),
        cmocka_unit_test(test_matmul),
        cmocka_unit_test(test_binary),
        cmocka_unit_test(test_relu),
        cmocka_unit_test(test_clip),
        cmocka_unit_test(test_activations),
        cmocka_unit_test(test_pow),
        cmocka_unit_test(test_reduce_mean),
        cmocka_unit_test(test_pad),
        cmocka_unit_test(test_slice),
        cmocka_unit_test(test_batchnorm),
        cmocka_unit_test(test_batchnorm_train_forward),
        cmocka_unit_test(test_softmax),
        cmocka_unit_test(test_pool),
        cmocka_unit_test(test_shape_ops),
        cmocka_unit_test(test_views),
        cmocka_unit_test(test_losses),
        cmocka_unit_test(test_loss_errors),
        cmocka_unit_test(test_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
