/* Conv, Gemm and MatMul against naive loops written from the ONNX
 * definitions: groups (depthwise too), asymmetric and automatic padding,
 * strides, dilations, bias; Gemm's transposes, scales and every broadcast
 * form of C; MatMul's batching and 1-D promotion. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bd_test_node.h"
#include "cpu/conv.h"
#include "graph.h"
#include "ops.h"

#define TOL 1e-5
#define DIMS BD_TEST_DIMS

/* Runs the node and compares with ref (shape ndim/dims). */
static void check_output(const bd_graph *g, const bd_node *n, bd_tensor *const *in, int ndim,
                         const int64_t *dims, const float *ref, const char *what)
{
    bd_tensor *y = bd_test_run(g, n, in);
    bd_test_assert_shape(y, ndim, dims, what);
    bd_test_assert_close(y, ref, TOL, what);
    bd_tensor_free(y);
}

/* ---- Conv ---- */

typedef struct {
    const char *what;
    int s; /* spatial rank: 1 ([N, C, W]) or 2 */
    int64_t c, h, w, m, group, kh, kw;
    int64_t strides[2], dilations[2], pads[4]; /* 2-D: top, left, bottom, right */
    int has_strides, has_dilations, has_pads;
    const char *auto_pad;
    int bias;
    int64_t oh, ow; /* worked out by hand */
} conv_case;

/* The padding the reference applies along one axis. */
static void ref_pads(const char *auto_pad, int64_t in, int64_t span, int64_t stride,
                     int64_t *begin, int64_t *end)
{
    if (!auto_pad || strcmp(auto_pad, "VALID") == 0)
        return;
    int64_t out = (in + stride - 1) / stride;
    int64_t total = (out - 1) * stride + span - in;
    total = total > 0 ? total : 0;
    *begin = strcmp(auto_pad, "SAME_UPPER") == 0 ? total / 2 : (total + 1) / 2;
    *end = total - *begin;
}

static void run_conv(const conv_case *cc, uint64_t seed)
{
    const int64_t n = 3, cg = cc->c / cc->group, mg = cc->m / cc->group;
    int64_t sh = cc->has_strides ? cc->strides[0] : 1, sw = cc->has_strides ? cc->strides[1] : 1;
    int64_t dh = cc->has_dilations ? cc->dilations[0] : 1;
    int64_t dw = cc->has_dilations ? cc->dilations[1] : 1;
    int64_t pt = 0, pl = 0, pb = 0, pr = 0;
    if (cc->has_pads) {
        pt = cc->pads[0];
        pl = cc->pads[1];
        pb = cc->pads[2];
        pr = cc->pads[3];
    }
    ref_pads(cc->auto_pad, cc->h, (cc->kh - 1) * dh + 1, sh, &pt, &pb);
    ref_pads(cc->auto_pad, cc->w, (cc->kw - 1) * dw + 1, sw, &pl, &pr);

    bd_graph *g;
    bd_node *node = bd_test_node(&g, 13, "Conv", cc->bias ? 3 : 2, 1);
    if (cc->group != 1)
        bd_test_attr_int(node, "group", cc->group);
    /* 1-D cases store the W values in slot 1 of each pair */
    int first = cc->s == 2 ? 0 : 1;
    if (cc->has_strides)
        bd_test_attr_ints(node, "strides", cc->s, cc->strides + first);
    if (cc->has_dilations)
        bd_test_attr_ints(node, "dilations", cc->s, cc->dilations + first);
    if (cc->has_pads) {
        int64_t p[4] = {cc->pads[0], cc->pads[1], cc->pads[2], cc->pads[3]};
        if (cc->s == 1) {
            p[0] = cc->pads[1];
            p[1] = cc->pads[3];
        }
        bd_test_attr_ints(node, "pads", 2 * cc->s, p);
    }
    if (cc->auto_pad)
        bd_test_attr_str(node, "auto_pad", cc->auto_pad);
    if (cc->s == 2)
        bd_test_attr_ints(node, "kernel_shape", 2, (int64_t[]){cc->kh, cc->kw});

    int64_t xd2[4] = {n, cc->c, cc->h, cc->w}, wd2[4] = {cc->m, cg, cc->kh, cc->kw};
    int64_t xd1[3] = {n, cc->c, cc->w}, wd1[3] = {cc->m, cg, cc->kw};
    bd_tensor *x = bd_test_rand_f32(2 + cc->s, cc->s == 2 ? xd2 : xd1, seed, -1, 1);
    bd_tensor *w = bd_test_rand_f32(2 + cc->s, cc->s == 2 ? wd2 : wd1, seed + 1, -1, 1);
    bd_tensor *b = cc->bias ? bd_test_rand_f32(1, &cc->m, seed + 2, -1, 1) : NULL;

    const int64_t oh = cc->oh, ow = cc->ow;
    float *ref = malloc((size_t)(n * cc->m * oh * ow) * sizeof *ref);
    const float *xv = x->data, *wv = w->data, *bv = b ? b->data : NULL;
    for (int64_t i = 0; i < n; i++)
        for (int64_t m = 0; m < cc->m; m++)
            for (int64_t oy = 0; oy < oh; oy++)
                for (int64_t ox = 0; ox < ow; ox++) {
                    double acc = bv ? bv[m] : 0;
                    int64_t grp = m / mg;
                    for (int64_t c = 0; c < cg; c++)
                        for (int64_t ky = 0; ky < cc->kh; ky++)
                            for (int64_t kx = 0; kx < cc->kw; kx++) {
                                int64_t iy = oy * sh - pt + ky * dh, ix = ox * sw - pl + kx * dw;
                                if (iy < 0 || iy >= cc->h || ix < 0 || ix >= cc->w)
                                    continue;
                                acc += (double)xv[((i * cc->c + grp * cg + c) * cc->h + iy) *
                                                      cc->w + ix] *
                                       wv[((m * cg + c) * cc->kh + ky) * cc->kw + kx];
                            }
                    ref[((i * cc->m + m) * oh + oy) * ow + ox] = (float)acc;
                }
    int64_t od2[4] = {n, cc->m, oh, ow}, od1[3] = {n, cc->m, ow};
    check_output(g, node, (bd_tensor *[]){x, w, b}, 2 + cc->s, cc->s == 2 ? od2 : od1, ref,
                 cc->what);
    free(ref);
    bd_tensor_free(x);
    bd_tensor_free(w);
    bd_tensor_free(b);
    bd_graph_free(g);
}

static const conv_case conv_cases[] = {
    /* (7-3)+1, (9-3)+1 */
    {"plain 3x3", 2, 6, 7, 9, 4, 1, 3, 3, {0}, {0}, {0}, 0, 0, 0, NULL, 0, 5, 7},
    /* group 2, pads t1 l2 b0 r1, strides 2x1, dilations 1x2:
     * (7+1-3)/2+1 = 3, (9+3-5)/1+1 = 8 */
    {"group 2 asymmetric", 2, 6, 7, 9, 4, 2, 3, 3, {2, 1}, {1, 2}, {1, 2, 0, 1}, 1, 1, 1, NULL,
     1, 3, 8},
    /* depthwise, pads 1, stride 2: (7+2-3)/2+1 = 4, (9+2-3)/2+1 = 5 */
    {"depthwise", 2, 5, 7, 9, 5, 5, 3, 3, {2, 2}, {0}, {1, 1, 1, 1}, 1, 0, 1, NULL, 1, 4, 5},
    {"depthwise x2", 2, 5, 7, 9, 10, 5, 3, 3, {0}, {0}, {1, 1, 1, 1}, 0, 0, 1, NULL, 1, 7, 9},
    /* depthwise, dilation 2, pads t2 l1 b0 r2, strides 1x2:
     * (7+2-5)/1+1 = 5, (9+3-5)/2+1 = 4 */
    {"depthwise dilated", 2, 5, 7, 9, 5, 5, 3, 3, {1, 2}, {2, 2}, {2, 1, 0, 2}, 1, 1, 1, NULL, 0,
     5, 4},
    /* depthwise rows of more than 16 outputs (whole register blocks and a
     * part): 5x5 stride 1 pads 2 keeps 9x37; 3x3 stride 2 pads 1:
     * (9+2-3)/2+1 = 5, (37+2-3)/2+1 = 19; stride 3 (tap by tap), pads t1 l0
     * b1 r0: (9+2-3)/3+1 = 3, (37-3)/3+1 = 12 */
    {"depthwise wide", 2, 8, 9, 37, 8, 8, 5, 5, {0}, {0}, {2, 2, 2, 2}, 0, 0, 1, NULL, 1, 9, 37},
    {"depthwise wide stride 2", 2, 8, 9, 37, 8, 8, 3, 3, {2, 2}, {0}, {1, 1, 1, 1}, 1, 0, 1, NULL,
     1, 5, 19},
    {"depthwise stride 3", 2, 8, 9, 37, 8, 8, 3, 3, {3, 3}, {0}, {1, 0, 1, 0}, 1, 0, 1, NULL, 0, 3,
     12},
    /* stride 2 down, 1 across: (9+2-3)/2+1 = 5 rows of 37 */
    {"depthwise wide stride 2x1", 2, 8, 9, 37, 8, 8, 3, 3, {2, 1}, {0}, {1, 1, 1, 1}, 1, 0, 1, NULL,
     1, 5, 37},
    /* SAME: ceil(7/2) = 4, ceil(9/2) = 5; 4x2 kernel pads 3 and 1 split by mode */
    {"SAME_UPPER", 2, 5, 7, 9, 7, 1, 4, 2, {2, 2}, {0}, {0}, 1, 0, 0, "SAME_UPPER", 1, 4, 5},
    {"SAME_LOWER", 2, 5, 7, 9, 7, 1, 4, 2, {2, 2}, {0}, {0}, 1, 0, 0, "SAME_LOWER", 1, 4, 5},
    {"SAME_LOWER group", 2, 6, 7, 9, 4, 2, 3, 2, {1, 1}, {2, 3}, {0}, 1, 1, 0, "SAME_LOWER", 0, 7,
     9},
    /* VALID: (7-3)/2+1 = 3, (9-3)/2+1 = 4 */
    {"VALID", 2, 5, 7, 9, 7, 1, 3, 3, {2, 2}, {0}, {0}, 1, 0, 0, "VALID", 1, 3, 4},
    {"pointwise", 2, 5, 7, 9, 7, 1, 1, 1, {0}, {0}, {0}, 0, 0, 0, NULL, 1, 7, 9},
    {"pointwise group", 2, 6, 7, 9, 9, 3, 1, 1, {0}, {0}, {0}, 0, 0, 0, NULL, 1, 7, 9},
    /* 1-D, W = 11, group 2, pads 1,2, stride 2: (11+3-3)/2+1 = 6 */
    {"1-D", 1, 4, 1, 11, 6, 2, 1, 3, {1, 2}, {0}, {0, 1, 0, 2}, 1, 0, 1, NULL, 1, 1, 6},
    {"1-D SAME_UPPER dilated", 1, 4, 1, 11, 6, 1, 1, 3, {1, 2}, {1, 2}, {0}, 1, 1, 0,
     "SAME_UPPER", 0, 1, 6},
    /* large enough for the parallel and im2col paths */
    {"large", 2, 16, 33, 31, 24, 1, 3, 3, {0}, {0}, {1, 1, 1, 1}, 0, 0, 1, NULL, 1, 33, 31},
    {"large strided", 2, 16, 33, 31, 24, 4, 5, 3, {2, 3}, {0}, {2, 1, 2, 1}, 1, 0, 1, NULL, 1, 17,
     11},
};

static void test_conv(void **state)
{
    (void)state;
    for (size_t c = 0; c < sizeof conv_cases / sizeof conv_cases[0]; c++)
        run_conv(&conv_cases[c], 10 * c + 1);
}

/* bd_im2col_range against its definition, on column ranges that start and
 * end inside an output row and inside an image (the convs themselves only
 * ask for whole images): pads on every side, strides, dilations, groups. */
static void test_im2col_range(void **state)
{
    (void)state;
    static const bd_conv_geom geoms[] = {
        /* n c h w m group kh kw sh sw dh dw pt pl pb pr oh ow */
        {3, 4, 7, 9, 4, 2, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 7, 9},
        {2, 3, 11, 8, 3, 1, 3, 2, 2, 3, 1, 2, 2, 0, 1, 3, 6, 3},
        {2, 2, 5, 6, 2, 1, 1, 3, 1, 1, 1, 1, 0, 4, 0, 0, 5, 8},
        {2, 2, 4, 4, 2, 1, 2, 2, 1, 1, 2, 2, 3, 3, 3, 3, 8, 8},
    };
    for (size_t t = 0; t < sizeof geoms / sizeof geoms[0]; t++) {
        const bd_conv_geom *g = &geoms[t];
        const int64_t cg = g->c / g->group, k = bd_conv_rows(g), ohw = g->oh * g->ow;
        const int64_t total = g->n * ohw;
        float *x = malloc((size_t)(g->n * g->c * g->h * g->w) * sizeof *x);
        float *cols = malloc((size_t)(k * total) * sizeof *cols);
        bd_test_fill_random(x, (size_t)(g->n * g->c * g->h * g->w), 7 + t, -1, 1);
        const int64_t ranges[][2] = {{0, total}, {1, total - 1}, {ohw - 2, 5}, {g->ow + 1, ohw}};
        for (int64_t gi = 0; gi < g->group; gi++)
            for (size_t q = 0; q < sizeof ranges / sizeof ranges[0]; q++) {
                const int64_t c0 = ranges[q][0], n = ranges[q][1];
                bd_im2col_range(g, x, gi, c0, n, cols);
                for (int64_t r = 0; r < k; r++)
                    for (int64_t j = 0; j < n; j++) {
                        const int64_t col = c0 + j, img = col / ohw;
                        const int64_t oy = col % ohw / g->ow, ox = col % g->ow;
                        const int64_t c = r / (g->kh * g->kw), ki = r / g->kw % g->kh;
                        const int64_t kj = r % g->kw;
                        const int64_t iy = oy * g->sh - g->pad_t + ki * g->dh;
                        const int64_t ix = ox * g->sw - g->pad_l + kj * g->dw;
                        const float want =
                            iy < 0 || iy >= g->h || ix < 0 || ix >= g->w
                                ? 0.0f
                                : x[((img * g->c + gi * cg + c) * g->h + iy) * g->w + ix];
                        if (cols[r * n + j] != want)
                            fail_msg("geometry %zu, group %lld, columns [%lld, +%lld): row %lld "
                                     "column %lld is %g, not %g",
                                     t, (long long)gi, (long long)c0, (long long)n, (long long)r,
                                     (long long)j, cols[r * n + j], want);
                    }
            }
        free(x);
        free(cols);
    }
}

static void test_conv_errors(void **state)
{
    (void)state;
    bd_graph *g;
    bd_node *n = bd_test_node(&g, 13, "Conv", 2, 1);
    bd_tensor *x = bd_test_rand_f32(DIMS(3, 6, 7, 9), 1, -1, 1);
    bd_tensor *w = bd_test_rand_f32(DIMS(4, 5, 3, 3), 2, -1, 1);
    bd_tensor *ix = bd_test_tensor(BD_I64, DIMS(3, 6, 7, 9));
    bd_test_assert_fails(g, n, (bd_tensor *[]){x, w}); /* 6 channels, weight expects 5 */
    bd_tensor *w6 = bd_test_rand_f32(DIMS(4, 6, 3, 3), 3, -1, 1);
    bd_test_assert_fails(g, n, (bd_tensor *[]){ix, w6});
    assert_non_null(strstr(bd_error_message(), "int64"));
    bd_tensor *big = bd_test_rand_f32(DIMS(4, 6, 9, 3), 4, -1, 1); /* taller than the input */
    bd_test_assert_fails(g, n, (bd_tensor *[]){x, big});
    bd_graph_free(g);
    n = bd_test_node(&g, 13, "Conv", 3, 1);
    bd_tensor *bias = bd_test_rand_f32(DIMS(5), 5, -1, 1);
    bd_test_assert_fails(g, n, (bd_tensor *[]){x, w6, bias});
    bd_graph_free(g);
    n = bd_test_node(&g, 13, "Conv", 2, 1);
    bd_test_attr_int(n, "group", 4);
    bd_test_assert_fails(g, n, (bd_tensor *[]){x, w6});
    bd_graph_free(g);
    bd_tensor *list[] = {x, w, ix, w6, big, bias};
    for (size_t k = 0; k < sizeof list / sizeof list[0]; k++)
        bd_tensor_free(list[k]);
}

/* ---- Gemm ---- */

static void run_gemm(int64_t m, int ta, int tb, int set_scales, float alpha, float beta, int nc,
                     const int64_t *cdims, uint64_t seed)
{
    const int64_t k = 5, nn = 9;
    bd_graph *g;
    bd_node *node = bd_test_node(&g, 13, "Gemm", nc >= 0 ? 3 : 2, 1);
    if (ta)
        bd_test_attr_int(node, "transA", 1);
    if (tb)
        bd_test_attr_int(node, "transB", 1);
    if (set_scales) {
        bd_test_attr_float(node, "alpha", alpha);
        bd_test_attr_float(node, "beta", beta);
    } else {
        alpha = beta = 1;
    }
    int64_t ad[2] = {ta ? k : m, ta ? m : k}, bdm[2] = {tb ? nn : k, tb ? k : nn};
    bd_tensor *a = bd_test_rand_f32(2, ad, seed, -1, 1);
    bd_tensor *b = bd_test_rand_f32(2, bdm, seed + 1, -1, 1);
    bd_tensor *c = nc >= 0 ? bd_test_rand_f32(nc, cdims, seed + 2, -1, 1) : NULL;
    const float *av = a->data, *bv = b->data;
    float *ref = malloc((size_t)(m * nn) * sizeof *ref);
    for (int64_t i = 0; i < m; i++)
        for (int64_t j = 0; j < nn; j++) {
            double acc = 0;
            for (int64_t p = 0; p < k; p++)
                acc += (double)(ta ? av[p * m + i] : av[i * k + p]) *
                       (tb ? bv[j * k + p] : bv[p * nn + j]);
            double cv = 0;
            if (c) { /* unidirectional broadcast of C to [m, nn] */
                int64_t ci = 0;
                if (nc == 1)
                    ci = cdims[0] == 1 ? 0 : j;
                else if (nc == 2)
                    ci = (cdims[0] == 1 ? 0 : i) * cdims[1] + (cdims[1] == 1 ? 0 : j);
                cv = ((const float *)c->data)[ci];
            }
            ref[i * nn + j] = (float)(alpha * acc + beta * cv);
        }
    char what[96];
    snprintf(what, sizeof what, "Gemm m=%lld tA=%d tB=%d C rank %d", (long long)m, ta, tb, nc);
    check_output(g, node, (bd_tensor *[]){a, b, c}, 2, (int64_t[]){m, nn}, ref, what);
    free(ref);
    bd_tensor_free(a);
    bd_tensor_free(b);
    bd_tensor_free(c);
    bd_graph_free(g);
}

static void test_gemm(void **state)
{
    (void)state;
    static const struct {
        int n;
        int64_t dims[2];
    } cs[] = {{-1, {0}}, {1, {9}}, {2, {1, 9}}, {2, {7, 1}}, {2, {7, 9}},
              {0, {0}},  {1, {1}}, {2, {1, 1}}};
    uint64_t seed = 1;
    /* m = 1 (batch 1) takes a matrix-vector product */
    for (int64_t m = 7; m >= 1; m -= 6)
        for (int ta = 0; ta < 2; ta++)
            for (int tb = 0; tb < 2; tb++)
                for (size_t c = 0; c < sizeof cs / sizeof cs[0]; c++) {
                    if (cs[c].n == 2 && cs[c].dims[0] == 7 && m != 7)
                        continue;
                    run_gemm(m, ta, tb, 0, 1, 1, cs[c].n, cs[c].dims, seed++);
                    run_gemm(m, ta, tb, 1, 0.7f, 1.3f, cs[c].n, cs[c].dims, seed++);
                    run_gemm(m, ta, tb, 1, -2.0f, 0.0f, cs[c].n, cs[c].dims, seed++);
                }
}

static void test_gemm_errors(void **state)
{
    (void)state;
    bd_graph *g;
    bd_node *n = bd_test_node(&g, 13, "Gemm", 3, 1);
    bd_tensor *a = bd_test_rand_f32(DIMS(7, 5), 1, -1, 1);
    bd_tensor *b = bd_test_rand_f32(DIMS(4, 9), 2, -1, 1);
    bd_tensor *b5 = bd_test_rand_f32(DIMS(5, 9), 3, -1, 1);
    bd_tensor *c = bd_test_rand_f32(DIMS(5), 4, -1, 1), *ia = bd_test_tensor(BD_I64, DIMS(7, 5));
    bd_test_assert_fails(g, n, (bd_tensor *[]){a, b, NULL});
    assert_non_null(strstr(bd_error_message(), "[4, 9]"));
    bd_test_assert_fails(g, n, (bd_tensor *[]){a, b5, c});
    bd_test_assert_fails(g, n, (bd_tensor *[]){ia, b5, NULL});
    assert_non_null(strstr(bd_error_message(), "int64"));
    /* two int64 operands too: only MatMul computes in int64 (BLAS would
     * read the integers as floats) */
    bd_tensor *ib = bd_test_tensor(BD_I64, DIMS(5, 9));
    bd_test_assert_fails(g, n, (bd_tensor *[]){ia, ib, NULL});
    assert_non_null(strstr(bd_error_message(), "float32"));
    bd_graph_free(g);
    bd_tensor *list[] = {a, b, b5, c, ia, ib};
    for (size_t k = 0; k < sizeof list / sizeof list[0]; k++)
        bd_tensor_free(list[k]);
}

/* ---- MatMul ---- */

/* numpy matmul: 1-D operands are promoted ([K] -> [1, K] on the left,
 * [K, 1] on the right) and the promoted dim dropped from the result; batch
 * dims broadcast. */
static void run_matmul(int na, const int64_t *ad, int nb, const int64_t *bdims, int nout,
                       const int64_t *out, uint64_t seed)
{
    bd_graph *g;
    bd_node *node = bd_test_node(&g, 13, "MatMul", 2, 1);
    bd_tensor *a = bd_test_rand_f32(na, ad, seed, -1, 1);
    bd_tensor *b = bd_test_rand_f32(nb, bdims, seed + 1, -1, 1);
    int64_t m = na == 1 ? 1 : ad[na - 2], k = ad[na - 1], nn = nb == 1 ? 1 : bdims[nb - 1];
    int ba = na > 2 ? na - 2 : 0, bb = nb > 2 ? nb - 2 : 0, nbatch = ba > bb ? ba : bb;
    int64_t batch[BD_MAX_DIMS], batches = 1;
    for (int i = 0; i < nbatch; i++) {
        int64_t da = i - (nbatch - ba) >= 0 ? ad[i - (nbatch - ba)] : 1;
        int64_t db = i - (nbatch - bb) >= 0 ? bdims[i - (nbatch - bb)] : 1;
        batch[i] = da > db ? da : db;
        batches *= batch[i];
    }
    float *ref = malloc((size_t)(batches * m * nn) * sizeof *ref + 1);
    const float *av = a->data, *bv = b->data;
    for (int64_t t = 0; t < batches; t++) {
        int64_t idx[BD_MAX_DIMS];
        bd_test_unravel(t, nbatch, batch, idx);
        int64_t oa = bd_test_bcast_offset(ba, ad, nbatch, idx);
        int64_t ob = bd_test_bcast_offset(bb, bdims, nbatch, idx);
        for (int64_t i = 0; i < m; i++)
            for (int64_t j = 0; j < nn; j++) {
                double acc = 0;
                for (int64_t p = 0; p < k; p++)
                    acc += (double)av[oa * m * k + i * k + p] * bv[ob * k * nn + p * nn + j];
                ref[(t * m + i) * nn + j] = (float)acc;
            }
    }
    check_output(g, node, (bd_tensor *[]){a, b}, nout, out, ref, "MatMul");
    free(ref);
    bd_tensor_free(a);
    bd_tensor_free(b);
    bd_graph_free(g);
}

static void test_matmul(void **state)
{
    (void)state;
    run_matmul(DIMS(7, 5), DIMS(5, 9), DIMS(7, 9), 1);
    run_matmul(DIMS(3, 7, 5), DIMS(3, 5, 9), DIMS(3, 7, 9), 2);
    run_matmul(DIMS(3, 7, 5), DIMS(5, 9), DIMS(3, 7, 9), 3);
    run_matmul(DIMS(7, 5), DIMS(3, 5, 9), DIMS(3, 7, 9), 4);
    run_matmul(DIMS(2, 1, 7, 5), DIMS(3, 5, 9), DIMS(2, 3, 7, 9), 5);
    run_matmul(DIMS(2, 3, 7, 5), DIMS(2, 1, 5, 9), DIMS(2, 3, 7, 9), 6);
    run_matmul(DIMS(3, 1, 7, 5), DIMS(1, 5, 5, 9), DIMS(3, 5, 7, 9), 7);
    run_matmul(DIMS(5), DIMS(3, 5, 9), DIMS(3, 9), 8);
    run_matmul(DIMS(3, 7, 5), DIMS(5), DIMS(3, 7), 9);
    run_matmul(DIMS(5), DIMS(5, 9), DIMS(9), 10);
    run_matmul(DIMS(7, 5), DIMS(5), DIMS(7), 11);
    run_matmul(DIMS(5), DIMS(5), 0, (int64_t[]){0}, 12);
    run_matmul(DIMS(65, 33), DIMS(33, 47), DIMS(65, 47), 13);
    /* a Linear on [N, H, W, C] (ConvNeXt): one GEMM over every batch's rows */
    run_matmul(DIMS(2, 4, 6, 5), DIMS(5, 9), DIMS(2, 4, 6, 9), 14);
}

/* int64, exactly: a [3, 7, 5] batch times a [5] vector of powers of two
 * (how a compressed file sums code bits), past where float32 is exact. */
static void test_matmul_i64(void **state)
{
    (void)state;
    bd_graph *g;
    bd_node *node = bd_test_node(&g, 13, "MatMul", 2, 1);
    bd_tensor *a = bd_test_tensor(BD_I64, DIMS(3, 7, 5));
    bd_tensor *b = bd_test_tensor(BD_I64, DIMS(5));
    int64_t *av = a->data, *bv = b->data;
    for (int p = 0; p < 5; p++)
        bv[p] = (int64_t)1 << (7 * p);
    for (int64_t i = 0; i < 3 * 7 * 5; i++)
        av[i] = (i * 37) % 101;
    bd_tensor *y = bd_test_run(g, node, (bd_tensor *[]){a, b});
    bd_test_assert_shape(y, DIMS(3, 7), "MatMul int64");
    assert_int_equal(y->dtype, BD_I64);
    for (int64_t r = 0; r < 3 * 7; r++) {
        int64_t want = 0;
        for (int p = 0; p < 5; p++)
            want += av[r * 5 + p] << (7 * p);
        assert_int_equal(((const int64_t *)y->data)[r], want);
    }
    bd_tensor_free(y);
    bd_tensor_free(a);
    bd_tensor_free(b);
    bd_graph_free(g);
}

static void test_matmul_errors(void **state)
{
    (void)state;
    bd_graph *g;
    bd_node *n = bd_test_node(&g, 13, "MatMul", 2, 1);
    bd_tensor *a = bd_test_rand_f32(DIMS(2, 7, 5), 1, -1, 1);
    bd_tensor *b = bd_test_rand_f32(DIMS(3, 5, 9), 2, -1, 1);
    bd_tensor *b4 = bd_test_rand_f32(DIMS(2, 4, 9), 3, -1, 1);
    bd_tensor *ia = bd_test_tensor(BD_I64, DIMS(2, 7, 5));
    bd_test_assert_fails(g, n, (bd_tensor *[]){a, b});
    bd_test_assert_fails(g, n, (bd_tensor *[]){a, b4});
    bd_test_assert_fails(g, n, (bd_tensor *[]){ia, b4});
    assert_non_null(strstr(bd_error_message(), "int64"));
    bd_graph_free(g);
    bd_tensor *list[] = {a, b, b4, ia};
    for (size_t k = 0; k < sizeof list / sizeof list[0]; k++)
        bd_tensor_free(list[k]);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_conv),   cmocka_unit_test(test_im2col_range),
        cmocka_unit_test(test_conv_errors),
        cmocka_unit_test(test_gemm),   cmocka_unit_test(test_gemm_errors),
        cmocka_unit_test(test_matmul), cmocka_unit_test(test_matmul_i64),
        cmocka_unit_test(test_matmul_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
