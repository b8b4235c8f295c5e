/* The int codec's fit (int_fit.h) and plans (plan.h): round to nearest
 * stays within half a step of every weight; the activation-aware clipping
 * beats it where an outlier weight meets inputs that barely use it; error
 * feedback beats rounding on correlated inputs and is never worse than the
 * grid it starts from; the grids are what the spec says (per channel or
 * tensor, symmetric); decode gives back what the fit reported; bad specs
 * and changes are refused, naming the layer. */
#include "bd_test.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec.h"
#include "int_fit.h"
#include "plan.h"
#include "tensor.h"

/* The last error names `what`. */
static void expect_error(const char *what)
{
    if (!strstr(bd_error_message(), what))
        fail_msg("'%s' does not name '%s'", bd_error_message(), what);
}

enum { ROWS = 24, L = 36, N = 512 };

static void gram_of(const float *x, int64_t n, bd_gram *h)
{
    assert_int_equal(bd_gram_init(h, L), BD_OK);
    bd_gram_add_rows(h, x, n, L);
    bd_gram_finish(h);
}

/* The layer the fits see: ROWS rows of L, one group. */
static bd_layer layer(void)
{
    bd_layer l;
    memset(&l, 0, sizeof l);
    snprintf(l.name, sizeof l.name, "conv7");
    snprintf(l.op, sizeof l.op, "Conv");
    l.rows = ROWS;
    l.row_len = L;
    l.groups = 1;
    l.kh = l.kw = 3;
    return l;
}

static void test_round_to_nearest_within_half_a_step(void **state)
{
    (void)state;
    float *w = malloc(ROWS * L * sizeof *w), *w_hat = malloc(ROWS * L * sizeof *w_hat);
    bd_test_fill_random(w, ROWS * L, 3, -2, 1);
    for (int r = 0; r < ROWS; r++) /* rows of very different ranges */
        for (int c = 0; c < L; c++)
            w[r * L + c] *= (float)(r + 1) / 4;
    bd_feedback_layer fl = {w, ROWS, L, 1, NULL};
    for (int sym = 0; sym < 2; sym++)
        for (int bits = sym ? 2 : BD_INT_MIN_BITS; bits <= BD_INT_MAX_BITS; bits++) {
            bd_int_spec spec = {bits, 1, sym};
            bd_qlayer q;
            assert_int_equal(bd_int_fit(&fl, &spec, NULL, BD_OBJ_WEIGHT, NULL, &q, w_hat), BD_OK);
            assert_int_equal(q.format, BD_FMT_INT);
            assert_int_equal(q.k, 1 << bits);
            assert_int_equal(q.nscales, ROWS);
            assert_true(sym ? q.zeros == NULL : q.zeros != NULL);
            for (int r = 0; r < ROWS; r++) {
                const float s = bd_int_scale(&q, r);
                /* fp16 scales and zero points move the grid's ends by a
                 * part in 2^11 of the range: 4 % of a step at 8 bits, many
                 * steps of the finer grids (a part in 2^10 of the range) */
                float lo = 0, hi = 0;
                for (int c = 0; c < L; c++) {
                    lo = fminf(lo, w[r * L + c]);
                    hi = fmaxf(hi, w[r * L + c]);
                }
                const float slack = 0.55f * s + (bits > 8 ? (hi - lo) / 1024 : 0);
                for (int c = 0; c < L; c++) {
                    const int i = r * L + c;
                    assert_true(q.codes[i] >= 0 && q.codes[i] < q.k);
                    if (!(fabsf(w[i] - w_hat[i]) <= slack))
                        fail_msg("bits %d sym %d row %d: |%g - %g| above half the step %g", bits,
                                 sym, r, w[i], w_hat[i], s);
                }
            }
            /* the record decodes to what the fit reported */
            bd_layer l = layer();
            float *dec = malloc(ROWS * L * sizeof *dec);
            assert_int_equal(bd_qlayer_decode(&q, &l, dec), BD_OK);
            assert_memory_equal(dec, w_hat, ROWS * L * sizeof *dec);
            assert_int_equal(bd_qlayer_bytes(&q),
                             bd_packed_bytes(ROWS * L, bits) + 2 * ROWS * (sym ? 1 : 2));
            free(dec);
            bd_qlayer_free(&q);
        }
    free(w);
    free(w_hat);
}

static void test_per_tensor_one_grid(void **state)
{
    (void)state;
    float *w = malloc(ROWS * L * sizeof *w), *w_hat = malloc(ROWS * L * sizeof *w_hat);
    bd_test_fill_random(w, ROWS * L, 5, -1, 1);
    bd_feedback_layer fl = {w, ROWS, L, 1, NULL};
    bd_int_spec spec = {4, 0, 1};
    bd_qlayer q;
    assert_int_equal(bd_int_fit(&fl, &spec, NULL, BD_OBJ_WEIGHT, NULL, &q, w_hat), BD_OK);
    assert_int_equal(q.nscales, 1);
    /* symmetric: zero decodes to exactly zero and the grid is s * (u - 8) */
    assert_true(bd_int_zero(&q, 0) == 8.0f);
    for (int i = 0; i < ROWS * L; i++)
        assert_true(w_hat[i] == bd_int_scale(&q, 0) * ((float)q.codes[i] - 8.0f));
    bd_qlayer_free(&q);
    free(w);
    free(w_hat);
}

/* Column 0 holds an outlier weight in every row, and the inputs barely
 * touch it: stretching the grid to the outlier wastes the grid, clipping
 * it costs almost nothing at the output. */
static void test_activation_aware_beats_rounding(void **state)
{
    (void)state;
    float *w = malloc(ROWS * L * sizeof *w), *x = malloc(N * L * sizeof *x);
    float *rtn = malloc(ROWS * L * sizeof *rtn), *act = malloc(ROWS * L * sizeof *act);
    bd_test_fill_random(w, ROWS * L, 7, -1, 1);
    bd_test_fill_random(x, N * L, 8, -1, 1);
    for (int r = 0; r < ROWS; r++)
        w[r * L] = 12;
    for (int i = 0; i < N; i++)
        x[i * L] *= 0.01f;
    bd_gram h;
    gram_of(x, N, &h);
    bd_feedback_layer fl = {w, ROWS, L, 1, &h};
    bd_int_spec spec = {4, 1, 0};
    bd_qlayer a, b;
    assert_int_equal(bd_int_fit(&fl, &spec, NULL, BD_OBJ_WEIGHT, NULL, &a, rtn), BD_OK);
    assert_int_equal(bd_int_fit(&fl, &spec, NULL, BD_OBJ_ACT, NULL, &b, act), BD_OK);
    double e_rtn = bd_test_output_error(x, N, w, rtn, ROWS, L);
    double e_act = bd_test_output_error(x, N, w, act, ROWS, L);
    if (!(e_act < 0.5 * e_rtn))
        fail_msg("activation-aware %.6g vs round to nearest %.6g: not half", e_act, e_rtn);
    /* the objective the fit reports agrees with the rows' error */
    assert_true(fabs(bd_feedback_objective(&fl, act) - e_act) <= 1e-3 * e_act);
    bd_qlayer_free(&a);
    bd_qlayer_free(&b);
    bd_gram_free(&h);
    free(w), free(x), free(rtn), free(act);
}

/* Inputs correlated along the row: feeding each column's error onward
 * lowers the output error well below rounding each weight on the same
 * grids, and never above. */
static void test_feedback_beats_rounding(void **state)
{
    (void)state;
    float *w = malloc(ROWS * L * sizeof *w), *x = malloc(N * L * sizeof *x);
    float *act = malloc(ROWS * L * sizeof *act), *fed = malloc(ROWS * L * sizeof *fed);
    bd_test_fill_random(w, ROWS * L, 11, -1, 1);
    bd_test_fill_random(x, N * L, 12, -1, 1);
    for (int i = 0; i < N; i++)
        for (int c = 1; c < L; c++)
            x[i * L + c] = 0.9f * x[i * L + c - 1] + 0.3f * x[i * L + c];
    bd_gram h;
    gram_of(x, N, &h);
    bd_feedback_layer fl = {w, ROWS, L, 1, &h};
    for (int bits = 2; bits <= 4; bits++) {
        bd_int_spec spec = {bits, 1, 0};
        bd_qlayer a, f;
        assert_int_equal(bd_int_fit(&fl, &spec, NULL, BD_OBJ_ACT, NULL, &a, act), BD_OK);
        assert_int_equal(bd_int_fit(&fl, &spec, NULL, BD_OBJ_FEEDBACK, NULL, &f, fed), BD_OK);
        /* the same grids: feedback only chooses other codes on them */
        assert_memory_equal(a.scales, f.scales, ROWS * sizeof *a.scales);
        double e_act = bd_test_output_error(x, N, w, act, ROWS, L);
        double e_fed = bd_test_output_error(x, N, w, fed, ROWS, L);
        if (!(e_fed < 0.8 * e_act))
            fail_msg("%d bits: feedback %.6g vs rounding on the same grid %.6g", bits, e_fed,
                     e_act);
        bd_qlayer_free(&a);
        bd_qlayer_free(&f);
    }
    bd_gram_free(&h);
    free(w), free(x), free(act), free(fed);
}

/* Rows whose range needs a step below fp16's smallest subnormal (the
 * paper's ResNet-18 has first-conv rows of +-1e-7, and all-zero ones) get
 * a scale and zero point that fp16 holds exactly: the file stores them so. */
static void test_tiny_rows_fp16_tables(void **state)
{
    (void)state;
    float w[ROWS * L], w_hat[ROWS * L];
    bd_test_fill_random(w, ROWS * L, 5, -1, 1);
    for (int i = 0; i < ROWS * L; i++)
        w[i] *= i < L ? 0.0f : i < 4 * L ? 2e-7f : 1e-3f;
    bd_feedback_layer fl = {w, ROWS, L, 1, NULL};
    for (int sym = 0; sym < 2; sym++)
        for (int bits = sym ? 2 : BD_INT_MIN_BITS; bits <= 8; bits++) {
            bd_int_spec spec = {bits, 1, sym};
            bd_qlayer q;
            assert_int_equal(bd_int_fit(&fl, &spec, NULL, BD_OBJ_WEIGHT, NULL, &q, w_hat), BD_OK);
            for (int r = 0; r < ROWS; r++) {
                const float s = q.scales[r], z = q.zeros ? q.zeros[r] : 0;
                if (!(s > 0 && bd_f16_to_f32(bd_f32_to_f16(s)) == s &&
                      bd_f16_to_f32(bd_f32_to_f16(z)) == z))
                    fail_msg("bits %d sym %d row %d: scale %g or zero %g is not an fp16 value",
                             bits, sym, r, s, z);
            }
            for (int i = 0; i < L; i++) /* the all-zero row decodes exactly */
                assert_true(w_hat[i] == 0);
            bd_qlayer_free(&q);
        }
}

static void test_refusals(void **state)
{
    (void)state;
    float w[ROWS * L] = {0}, w_hat[ROWS * L];
    bd_feedback_layer fl = {w, ROWS, L, 1, NULL};
    bd_int_spec spec = {4, 1, 0};
    bd_qlayer q;
    /* the activation-aware fits need the Gram */
    assert_int_equal(bd_int_fit(&fl, &spec, NULL, BD_OBJ_ACT, NULL, &q, w_hat), BD_EINVAL);
    /* an all-zero layer decodes exactly */
    assert_int_equal(bd_int_fit(&fl, &spec, NULL, BD_OBJ_WEIGHT, NULL, &q, w_hat), BD_OK);
    for (int i = 0; i < ROWS * L; i++)
        assert_true(w_hat[i] == 0);
    bd_qlayer_free(&q);

    bd_layer l = layer();
    bd_int_spec wide = {17, 1, 0};
    assert_int_equal(bd_int_spec_check(&l, &wide), BD_EINVAL);
    expect_error("conv7");
    expect_error("1 to 16");
    bd_int_spec sym1 = {1, 1, 1}, asym1 = {1, 1, 0};
    assert_int_equal(bd_int_spec_check(&l, &sym1), BD_EINVAL);
    expect_error("conv7");
    expect_error("sym=0");
    assert_int_equal(bd_int_spec_check(&l, &asym1), BD_OK);

    bd_layer_plan p;
    assert_int_equal(bd_plan_regime(&l, 1, "small", 1, &p), BD_OK);
    bd_layer_plan before = p;
    bd_plan_change c = BD_PLAN_CHANGE_NONE;
    c.bits = 4;
    c.k = 16;
    assert_int_equal(bd_plan_apply(&l, &c, &p), BD_EINVAL);
    expect_error("conv7");
    c = BD_PLAN_CHANGE_NONE;
    c.symmetric = 1; /* on a pq layer */
    assert_int_equal(bd_plan_apply(&l, &c, &p), BD_EINVAL);
    expect_error("int layers only");
    c = BD_PLAN_CHANGE_NONE;
    c.bits = 1;
    c.symmetric = 1;
    assert_int_equal(bd_plan_apply(&l, &c, &p), BD_EINVAL);
    c.symmetric = -1;
    assert_memory_equal(&p, &before, sizeof p);
    /* and what is allowed: int, then back to pq with the plan's d and k */
    c.bits = 3;
    c.per_channel = 0;
    assert_int_equal(bd_plan_apply(&l, &c, &p), BD_OK);
    assert_int_equal(p.format, BD_FMT_INT);
    assert_int_equal(p.ints.bits, 3);
    assert_int_equal(p.ints.per_channel, 0);
    c = BD_PLAN_CHANGE_NONE;
    c.format = BD_FMT_PQ;
    assert_int_equal(bd_plan_apply(&l, &c, &p), BD_OK);
    assert_int_equal(p.format, BD_FMT_PQ);
    assert_int_equal(p.d, before.d);
    assert_int_equal(p.k, before.k);
}

static void test_int_regimes(void **state)
{
    (void)state;
    bd_layer ls[2] = {layer(), layer()};
    bd_layer_plan p[2];
    assert_int_equal(bd_plan_regime(ls, 2, "int4", 0, p), BD_OK);
    assert_int_equal(p[0].quantize, 0); /* the first conv stays fp32 */
    assert_int_equal(p[1].quantize, 1);
    assert_int_equal(p[1].format, BD_FMT_INT);
    assert_int_equal(p[1].ints.bits, 4);
    assert_int_equal(p[1].ints.per_channel, 1);
    assert_int_equal(p[1].objective, BD_OBJ_FEEDBACK);
    assert_int_equal(bd_plan_regime(ls, 2, "int17", 0, p), BD_EINVAL);
    expect_error("int17");
    assert_int_equal(bd_plan_regime(ls, 2, "int16", 0, p), BD_OK);
    assert_int_equal(p[1].ints.bits, 16);
    assert_int_equal(bd_plan_regime(ls, 2, "int1", 0, p), BD_OK);
    assert_int_equal(p[1].ints.bits, 1);
    bd_plan_change c;
    char glob[64];
    assert_int_equal(bd_plan_parse_set("layer*:int=3,per=tensor,sym=1", glob, sizeof glob, &c),
                     BD_OK);
    assert_string_equal(glob, "layer*");
    assert_int_equal(c.bits, 3);
    assert_int_equal(c.per_channel, 0);
    assert_int_equal(c.symmetric, 1);
    assert_int_equal(bd_plan_parse_set("x:per=row", glob, sizeof glob, &c), BD_EINVAL);
    expect_error("channel or tensor");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_to_nearest_within_half_a_step),
        cmocka_unit_test(test_per_tensor_one_grid),
        cmocka_unit_test(test_activation_aware_beats_rounding),
        cmocka_unit_test(test_feedback_beats_rounding),
        cmocka_unit_test(test_tiny_rows_fp16_tables),
        cmocka_unit_test(test_refusals),
        cmocka_unit_test(test_int_regimes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
