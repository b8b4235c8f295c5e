/* Pooling kernels (MaxPool, AveragePool, GlobalAveragePool, GlobalMaxPool)
 * against a naive reference on odd shapes and many attribute combinations. */
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bd_test_node.h"
#include "graph.h"
#include "ops.h"

#define TOL 1e-5
#define DIMS BD_TEST_DIMS

/* One pooling configuration. Zero-length lists are left unset on the node
 * (the defaults); expect is the output spatial shape worked out by hand. */
typedef struct {
    int s; /* spatial rank */
    int64_t in[3], kernel[3], strides[3], dilations[3], pads[6];
    int has_strides, has_dilations, has_pads;
    const char *auto_pad;
    int ceil_mode, include_pad;
    int64_t expect[3];
} pool_case;

/* The window geometry the reference walks, derived from the ONNX formulas
 * (and PyTorch's rule that a ceil-mode window may not start in the end
 * padding); cross-checked against the hand-worked expect. */
static void ref_geometry(const pool_case *pc, int64_t *out, int64_t *pb, int64_t *pe)
{
    for (int d = 0; d < pc->s; d++) {
        int64_t k = pc->kernel[d], st = pc->has_strides ? pc->strides[d] : 1;
        int64_t dil = pc->has_dilations ? pc->dilations[d] : 1;
        int64_t span = (k - 1) * dil + 1, in = pc->in[d];
        pb[d] = pc->has_pads ? pc->pads[d] : 0;
        pe[d] = pc->has_pads ? pc->pads[d + pc->s] : 0;
        if (pc->auto_pad && strncmp(pc->auto_pad, "SAME", 4) == 0) {
            out[d] = (int64_t)ceil((double)in / (double)st);
            int64_t total = (out[d] - 1) * st + span - in;
            total = total > 0 ? total : 0;
            int upper = strcmp(pc->auto_pad, "SAME_UPPER") == 0;
            pb[d] = upper ? total / 2 : (total + 1) / 2;
            pe[d] = total - pb[d];
        } else if (pc->auto_pad && strcmp(pc->auto_pad, "VALID") == 0) {
            pb[d] = pe[d] = 0;
            out[d] = (int64_t)ceil((double)(in - span + 1) / (double)st);
        } else {
            double q = (double)(in + pb[d] + pe[d] - span) / (double)st;
            out[d] = (int64_t)(pc->ceil_mode ? ceil(q) : floor(q)) + 1;
            if (pc->ceil_mode && (out[d] - 1) * st >= in + pb[d])
                out[d]--;
        }
        assert_int_equal(out[d], pc->expect[d]);
    }
}

/* Naive pooling: every output position visits every kernel tap. */
static void ref_pool(const pool_case *pc, const float *x, int64_t planes, int is_max, float *y)
{
    int64_t out[3], pb[3], pe[3], in_plane = 1, out_plane = 1, taps = 1;
    ref_geometry(pc, out, pb, pe);
    for (int d = 0; d < pc->s; d++) {
        in_plane *= pc->in[d];
        out_plane *= out[d];
        taps *= pc->kernel[d];
    }
    for (int64_t p = 0; p < planes; p++)
        for (int64_t o = 0; o < out_plane; o++) {
            int64_t oi[3];
            bd_test_unravel(o, pc->s, out, oi);
            double max = -FLT_MAX, sum = 0;
            int64_t count = 0, padded = 0;
            for (int64_t t = 0; t < taps; t++) {
                int64_t ki[3], off = 0;
                int inside = 1, in_padded = 1;
                bd_test_unravel(t, pc->s, pc->kernel, ki);
                for (int d = 0; d < pc->s; d++) {
                    int64_t st = pc->has_strides ? pc->strides[d] : 1;
                    int64_t dil = pc->has_dilations ? pc->dilations[d] : 1;
                    int64_t i = oi[d] * st - pb[d] + ki[d] * dil;
                    inside &= i >= 0 && i < pc->in[d];
                    in_padded &= i >= -pb[d] && i < pc->in[d] + pe[d];
                    off = off * pc->in[d] + i;
                }
                padded += in_padded;
                if (!inside)
                    continue;
                double v = x[p * in_plane + off];
                max = v > max ? v : max;
                sum += v;
                count++;
            }
            int64_t div = pc->include_pad ? padded : count;
            y[p * out_plane + o] = (float)(is_max ? max : div ? sum / (double)div : 0);
        }
}

/* nans: every nans-th input is NaN (0: none), which a max skips. */
static void run_case(const pool_case *pc, const char *op, uint64_t seed, int nans)
{
    int is_max = strcmp(op, "MaxPool") == 0;
    bd_graph *g;
    bd_node *n = bd_test_node(&g, 13, op, 1, 1);
    bd_test_attr_ints(n, "kernel_shape", pc->s, pc->kernel);
    if (pc->has_strides)
        bd_test_attr_ints(n, "strides", pc->s, pc->strides);
    if (pc->has_dilations)
        bd_test_attr_ints(n, "dilations", pc->s, pc->dilations);
    if (pc->has_pads)
        bd_test_attr_ints(n, "pads", 2 * pc->s, pc->pads);
    if (pc->auto_pad)
        bd_test_attr_str(n, "auto_pad", pc->auto_pad);
    if (pc->ceil_mode)
        bd_test_attr_int(n, "ceil_mode", 1);
    if (pc->include_pad)
        bd_test_attr_int(n, "count_include_pad", 1);
    int64_t dims[5] = {3, 5}, odims[5] = {3, 5}, planes = 15;
    memcpy(dims + 2, pc->in, (size_t)pc->s * sizeof *dims);
    memcpy(odims + 2, pc->expect, (size_t)pc->s * sizeof *odims);
    char what[96];
    snprintf(what, sizeof what, "%s case with kernel %lld", op, (long long)pc->kernel[0]);
    bd_tensor *x = bd_test_rand_f32(2 + pc->s, dims, seed, -3, 3);
    for (int64_t i = nans - 1; nans > 0 && i < bd_tensor_count(x); i += nans)
        ((float *)x->data)[i] = NAN;
    bd_tensor *y = bd_test_run(g, n, &x);
    bd_test_assert_shape(y, 2 + pc->s, odims, what);
    float *ref = malloc((size_t)bd_tensor_count(y) * sizeof *ref);
    ref_pool(pc, x->data, planes, is_max, ref);
    bd_test_assert_close(y, ref, TOL, what);
    free(ref);
    bd_tensor_free(y);
    bd_tensor_free(x);
    bd_graph_free(g);
}

/* 7 x 9 planes unless noted; each expect worked out by hand. */
static const pool_case cases[] = {
    /* 3x3, stride 1, no padding: 5 x 7 */
    {2, {7, 9}, {3, 3}, {0}, {0}, {0}, 0, 0, 0, NULL, 0, 0, {5, 7}},
    /* 3x2, strides 2x1, pads top 1, left 0, bottom 1, right 1: (7+2-3)/2+1, (9+1-2)+1 */
    {2, {7, 9}, {3, 2}, {2, 1}, {0}, {1, 0, 1, 1}, 1, 0, 1, NULL, 0, 0, {4, 9}},
    {2, {7, 9}, {3, 2}, {2, 1}, {0}, {1, 0, 1, 1}, 1, 0, 1, NULL, 0, 1, {4, 9}},
    /* dilation 2x1, pads 1: span 5 -> (7+2-5)/2+1 = 3, (9+2-3)/2+1 = 5 */
    {2, {7, 9}, {3, 3}, {2, 2}, {2, 1}, {1, 1, 1, 1}, 1, 1, 1, NULL, 0, 0, {3, 5}},
    /* ceil mode, 2x2 stride 2 pads 1: ceil(7/2)+1 = 5 and ceil(9/2)+1 = 6, each
     * minus the window that would start in the end padding */
    {2, {7, 9}, {2, 2}, {2, 2}, {0}, {1, 1, 1, 1}, 1, 0, 1, NULL, 1, 0, {4, 5}},
    {2, {7, 9}, {2, 2}, {2, 2}, {0}, {1, 1, 1, 1}, 1, 0, 1, NULL, 1, 1, {4, 5}},
    /* ceil mode, 3x3 stride 2, pads 1,2 / 2,1: (7+3-3)/2 -> 4 (ceil 5, last dropped);
     * (9+3-3)/2 -> ceil 4.5 + 1 = 6, the last window overhanging the padding */
    {2, {7, 9}, {3, 3}, {2, 2}, {0}, {1, 2, 2, 1}, 1, 0, 1, NULL, 1, 0, {4, 6}},
    {2, {7, 9}, {3, 3}, {2, 2}, {0}, {1, 2, 2, 1}, 1, 0, 1, NULL, 1, 1, {4, 6}},
    {2, {7, 9}, {3, 3}, {2, 2}, {0}, {1, 2, 2, 1}, 1, 0, 1, NULL, 0, 1, {4, 5}},
    /* SAME: ceil(7/2) = 4, ceil(9/2) = 5; 4x2 kernel pads 3 and 1 split by mode */
    {2, {7, 9}, {4, 2}, {2, 2}, {0}, {0}, 1, 0, 0, "SAME_UPPER", 0, 0, {4, 5}},
    {2, {7, 9}, {4, 2}, {2, 2}, {0}, {0}, 1, 0, 0, "SAME_LOWER", 0, 0, {4, 5}},
    {2, {7, 9}, {4, 2}, {2, 2}, {0}, {0}, 1, 0, 0, "SAME_UPPER", 0, 1, {4, 5}},
    {2, {7, 9}, {4, 2}, {2, 2}, {0}, {0}, 1, 0, 0, "SAME_LOWER", 0, 1, {4, 5}},
    {2, {7, 9}, {3, 3}, {1, 1}, {0}, {0}, 1, 0, 0, "SAME_UPPER", 0, 0, {7, 9}},
    /* VALID: ceil((7-3+1)/2) = 3, ceil((9-3+1)/2) = 4 */
    {2, {7, 9}, {3, 3}, {2, 2}, {0}, {0}, 1, 0, 0, "VALID", 0, 0, {3, 4}},
    {2, {7, 9}, {3, 3}, {2, 2}, {0}, {0}, 1, 0, 0, "NOTSET", 0, 0, {3, 4}},
    /* 1-D, length 11, kernel 3 stride 2 pads 1,2: (11+3-3)/2+1 = 6; with pads
     * 0,1 in ceil mode ceil(9/2)+1 = 6, the last window half in the padding */
    {1, {11}, {3}, {2}, {0}, {1, 2}, 1, 0, 1, NULL, 0, 0, {6}},
    {1, {11}, {3}, {2}, {0}, {0, 1}, 1, 0, 1, NULL, 1, 1, {6}},
    {1, {11}, {3}, {2}, {0}, {0, 1}, 1, 0, 1, NULL, 1, 0, {6}},
    /* 3-D: 5x6x7, kernel 2x3x2, strides 1x2x2, pads 0,1,1 / 1,0,1 */
    {3, {5, 6, 7}, {2, 3, 2}, {1, 2, 2}, {0}, {0, 1, 1, 1, 0, 1}, 1, 0, 1, NULL, 0, 0, {5, 3, 4}},
    /* stride 1, whole planes at once (plane_flat): as wide out as in, with
     * pads 1 all round, then 0,2 / 2,0 (7+2-3+1 = 7, 9+2-3+1 = 9); a 5x5
     * window on 4x4 (every row and column clipped); 1x3 rows; and no pads
     * across, as Inception-v3 exports its pools (29-3+1, 31-3+1) */
    {2, {7, 9}, {3, 3}, {1, 1}, {0}, {1, 1, 1, 1}, 1, 0, 1, NULL, 0, 1, {7, 9}},
    {2, {7, 9}, {3, 3}, {1, 1}, {0}, {0, 2, 2, 0}, 1, 0, 1, NULL, 0, 0, {7, 9}},
    {2, {4, 4}, {5, 5}, {1, 1}, {0}, {2, 2, 2, 2}, 1, 0, 1, NULL, 0, 1, {4, 4}},
    {2, {4, 4}, {5, 5}, {1, 1}, {0}, {2, 2, 2, 2}, 1, 0, 1, NULL, 0, 0, {4, 4}},
    {2, {6, 20}, {1, 3}, {1, 1}, {0}, {0, 1, 0, 1}, 1, 0, 1, NULL, 0, 0, {6, 20}},
    {2, {29, 31}, {3, 3}, {1, 1}, {0}, {0}, 1, 0, 0, NULL, 0, 1, {27, 29}},
    /* rows of more than 16 outputs (vectors of 16, the last partial): 3x3/2 pads 1,
     * (9+2-3)/2+1 = 5, (47+2-3)/2+1 = 24; 2x2/2 (10-2)/2+1 = 5, (41-2)/2+1 = 20; a
     * window 19 wide at stride 1, (40+18-19)+1 = 40 */
    {2, {9, 47}, {3, 3}, {2, 2}, {0}, {1, 1, 1, 1}, 1, 0, 1, NULL, 0, 0, {5, 24}},
    {2, {10, 41}, {2, 2}, {2, 2}, {0}, {0}, 1, 0, 0, NULL, 0, 0, {5, 20}},
    {2, {3, 40}, {1, 19}, {1, 1}, {0}, {0, 9, 0, 9}, 1, 0, 1, NULL, 0, 0, {3, 40}},
    /* large planes take the parallel path: (67+2-3)/2+1 = 34, (61+2-3)/2+1 = 31 */
    {2, {67, 61}, {3, 3}, {2, 2}, {0}, {1, 1, 1, 1}, 1, 0, 1, NULL, 0, 0, {34, 31}},
};

static void test_maxpool(void **state)
{
    (void)state;
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++)
        if (!cases[c].include_pad)
            run_case(&cases[c], "MaxPool", 100 + c, 0);
}

/* NaN inputs are skipped, as the reference's comparison skips them, on
 * every path (strided, whole planes, padded). */
static void test_maxpool_nan(void **state)
{
    (void)state;
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++)
        if (!cases[c].include_pad)
            run_case(&cases[c], "MaxPool", 400 + c, 7);
}

static void test_maxpool_dilations(void **state)
{
    (void)state;
    /* kernel 3x2 with dilations 2x3 spans 5 x 4: (7-5)/1+1 = 3, (9-4)/2+1 = 3;
     * pads 2,1 / 1,2 in ceil mode: 5/1+1 = 6, ceil(8/2)+1 = 5 */
    static const pool_case dilated[] = {
        {2, {7, 9}, {3, 2}, {1, 2}, {2, 3}, {0}, 1, 1, 0, NULL, 0, 0, {3, 3}},
        {2, {7, 9}, {3, 2}, {1, 2}, {2, 3}, {2, 1, 1, 2}, 1, 1, 1, NULL, 1, 0, {6, 5}},
        {2, {7, 9}, {3, 2}, {2, 2}, {2, 3}, {0}, 1, 1, 0, "SAME_UPPER", 0, 0, {4, 5}},
        {2, {7, 9}, {3, 2}, {2, 2}, {2, 3}, {0}, 1, 1, 0, "SAME_LOWER", 0, 0, {4, 5}},
    };
    for (size_t c = 0; c < sizeof dilated / sizeof dilated[0]; c++)
        run_case(&dilated[c], "MaxPool", 200 + c, 0);
}

static void test_averagepool(void **state)
{
    (void)state;
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++)
        if (!cases[c].has_dilations)
            run_case(&cases[c], "AveragePool", 300 + c, 0);
}

static void check_global(const char *op, int ndim, const int64_t *dims, uint64_t seed)
{
    int is_max = strcmp(op, "GlobalMaxPool") == 0;
    bd_graph *g;
    bd_node *n = bd_test_node(&g, 13, op, 1, 1);
    char what[96];
    snprintf(what, sizeof what, "%s on rank %d", op, ndim);
    int64_t odims[BD_MAX_DIMS];
    for (int d = 0; d < ndim; d++)
        odims[d] = d < 2 ? dims[d] : 1;
    bd_tensor *x = bd_test_rand_f32(ndim, dims, seed, -3, 3);
    bd_tensor *y = bd_test_run(g, n, &x);
    bd_test_assert_shape(y, ndim, odims, what);
    int64_t planes = dims[0] * dims[1], size = bd_tensor_count(x) / planes;
    float *ref = malloc((size_t)planes * sizeof *ref);
    const float *xd = x->data;
    for (int64_t p = 0; p < planes; p++) {
        double max = -INFINITY, sum = 0;
        for (int64_t i = 0; i < size; i++) {
            max = fmax(max, xd[p * size + i]);
            sum += xd[p * size + i];
        }
        ref[p] = (float)(is_max ? max : sum / (double)size);
    }
    bd_test_assert_close(y, ref, TOL, what);
    free(ref);
    bd_tensor_free(y);
    bd_tensor_free(x);
    bd_graph_free(g);
}

static void test_global_pools(void **state)
{
    (void)state;
    static const char *const ops[] = {"GlobalAveragePool", "GlobalMaxPool"};
    for (int k = 0; k < 2; k++) {
        check_global(ops[k], DIMS(3, 5, 7, 9), 1);
        check_global(ops[k], DIMS(3, 5, 11), 2);
        check_global(ops[k], DIMS(3, 5, 4, 3, 7), 3);
        check_global(ops[k], DIMS(3, 5), 4);
        check_global(ops[k], DIMS(3, 5, 67, 101), 5);
    }
}

static void test_errors(void **state)
{
    (void)state;
    static const char *const ops[] = {"MaxPool", "AveragePool"};
    bd_tensor *x = bd_test_rand_f32(DIMS(3, 5, 7, 9), 1, -3, 3);
    bd_tensor *flat = bd_test_rand_f32(DIMS(3, 5), 2, -3, 3);
    bd_tensor *ints = bd_test_tensor(BD_I64, DIMS(3, 5, 7, 9));
    for (int k = 0; k < 2; k++) {
        bd_graph *g;
        bd_node *n = bd_test_node(&g, 13, ops[k], 1, 1); /* no kernel_shape */
        bd_test_assert_fails(g, n, &x);
        assert_non_null(strstr(bd_error_message(), "kernel_shape"));
        bd_test_attr_ints(n, "kernel_shape", 2, (int64_t[]){3, 3});
        bd_test_assert_fails(g, n, &ints);
        assert_non_null(strstr(bd_error_message(), "int64"));
        bd_test_assert_fails(g, n, &flat);
        assert_non_null(strstr(bd_error_message(), "rank 2"));
        bd_graph_free(g);

        n = bd_test_node(&g, 13, ops[k], 1, 1);
        bd_test_attr_ints(n, "kernel_shape", 3, (int64_t[]){3, 3, 3});
        bd_test_assert_fails(g, n, &x);
        bd_graph_free(g);

        n = bd_test_node(&g, 13, ops[k], 1, 1);
        bd_test_attr_ints(n, "kernel_shape", 2, (int64_t[]){3, 3});
        bd_test_attr_ints(n, "strides", 2, (int64_t[]){0, 1});
        bd_test_assert_fails(g, n, &x);
        assert_non_null(strstr(bd_error_message(), "strides"));
        bd_graph_free(g);

        n = bd_test_node(&g, 13, ops[k], 1, 1);
        bd_test_attr_ints(n, "kernel_shape", 2, (int64_t[]){3, 3});
        bd_test_attr_str(n, "auto_pad", "SAME");
        bd_test_assert_fails(g, n, &x);
        assert_non_null(strstr(bd_error_message(), "SAME"));
        bd_graph_free(g);

        n = bd_test_node(&g, 13, ops[k], 1, 1); /* kernel larger than the padded input */
        bd_test_attr_ints(n, "kernel_shape", 2, (int64_t[]){9, 3});
        bd_test_assert_fails(g, n, &x);
        bd_graph_free(g);
    }
    bd_graph *g;
    bd_node *n = bd_test_node(&g, 13, "MaxPool", 1, 2); /* Indices */
    bd_test_attr_ints(n, "kernel_shape", 2, (int64_t[]){3, 3});
    bd_test_assert_fails(g, n, &x);
    assert_non_null(strstr(bd_error_message(), "Indices"));
    bd_graph_free(g);
    n = bd_test_node(&g, 13, "GlobalAveragePool", 1, 1);
    bd_test_assert_fails(g, n, &ints);
    bd_graph_free(g);
    n = bd_test_node(&g, 13, "GlobalMaxPool", 1, 1);
    bd_test_assert_fails(g, n, &ints);
    bd_graph_free(g);
    bd_tensor_free(x);
    bd_tensor_free(flat);
    bd_tensor_free(ints);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_maxpool),      cmocka_unit_test(test_maxpool_nan),
        cmocka_unit_test(test_maxpool_dilations),
        cmocka_unit_test(test_averagepool),  cmocka_unit_test(test_global_pools),
        cmocka_unit_test(test_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
