/* Error feedback across blocks (feedback.h): on inputs whose correlations
 * cross block boundaries it must lower the output error below the block
 * objective's fit; with a diagonal H whose blocks are alike it has nothing
 * to add and must equal it; the block Gram it derives is pq.h's; bad
 * layers are refused with the limit named. */
#include "bd_test.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "feedback.h"
#include "pq.h"
#include "quantize.h"

/* H = X^T X of `n` rows of length L. */
static void gram_of(const float *x, int64_t n, int64_t L, bd_gram *h)
{
    assert_int_equal(bd_gram_init(h, L), BD_OK);
    bd_gram_add_rows(h, x, n, L);
    bd_gram_finish(h);
}

/* Rows of length L in which each value is the one before it times a plus
 * b times noise: the smooth neighbourhoods of an image, correlated across
 * any block boundary. */
static float *correlated_rows(int64_t n, int64_t L, float a, float b, uint64_t seed)
{
    float *x = malloc((size_t)(n * L) * sizeof *x);
    bd_test_fill_random(x, n * L, seed, -1, 1);
    for (int64_t i = 0; i < n; i++)
        for (int64_t c = 1; c < L; c++)
            x[i * L + c] = a * x[i * L + c - 1] + b * x[i * L + c];
    return x;
}

typedef struct fitted {
    bd_pq_result res;
    float *w_hat;
    double block_err, feedback_err;
} fitted;

/* The block fit of w under G derived from h, then feedback; both errors
 * measured on the rows x. */
static void fit_both(const float *x, int64_t n, const float *w, int64_t rows, int64_t L, int d,
                     int k, const bd_gram *h, fitted *f)
{
    bd_feedback_layer fl = {w, rows, L, 1, h};
    bd_gram g;
    assert_int_equal(bd_feedback_block_gram(&fl, d, &g), BD_OK);
    bd_pq_options opt = {.k = k, .iters = 100, .seed = 3, .restarts = 2, .tol = 1e-7};
    assert_int_equal(bd_pq_fit(w, rows * L / d, &g, &opt, NULL, &f->res), BD_OK);
    f->w_hat = malloc((size_t)(rows * L) * sizeof *f->w_hat);
    bd_pq_decode(f->res.centroids, d, f->res.assign, rows * L / d, f->w_hat);
    f->block_err = bd_test_output_error(x, n, w, f->w_hat, rows, L);
    double before, after;
    assert_int_equal(bd_feedback_pq(&fl, d, f->res.k, f->res.centroids, f->res.assign,
                                    BD_FEEDBACK_PASSES, NULL, &before, &after),
                     BD_OK);
    assert_true(after <= before);
    /* the objective it reports is the output error itself */
    assert_true(fabs(before - f->block_err) <= 1e-3 * f->block_err);
    bd_pq_decode(f->res.centroids, d, f->res.assign, rows * L / d, f->w_hat);
    f->feedback_err = bd_test_output_error(x, n, w, f->w_hat, rows, L);
    assert_true(fabs(after - f->feedback_err) <= 1e-3 * f->feedback_err);
    bd_gram_free(&g);
}

static void fitted_free(fitted *f)
{
    bd_pq_result_free(&f->res);
    free(f->w_hat);
}

/* Inputs built so the feedback must win: each input value is the one
 * before it plus a little noise (the smooth neighbourhoods of an image), so
 * an error in one block is undone almost exactly by the next block's
 * first value, which the block objective cannot see. */
static void test_feedback_wins_on_correlated_inputs(void **state)
{
    (void)state;
    enum { N = 600, ROWS = 48, L = 36, D = 4, K = 16 };
    float *x = correlated_rows(N, L, 0.95f, 0.3f, 51), *w = malloc(ROWS * L * sizeof *w);
    bd_test_fill_random(w, ROWS * L, 52, -1, 1);
    bd_gram h;
    gram_of(x, N, L, &h);
    fitted f;
    fit_both(x, N, w, ROWS, L, D, K, &h, &f);
    if (!(f.feedback_err < 0.8 * f.block_err))
        fail_msg("feedback %.6g vs block %.6g: not 20%% lower", f.feedback_err, f.block_err);
    fitted_free(&f);
    bd_gram_free(&h);
    free(x);
    free(w);
}

/* A diagonal H with the same diagonal in every block: no correlation to
 * feed back (U is diagonal, nothing moves), each block's metric is the
 * block Gram up to a factor, and the refit's minimiser is the mean, so the
 * converged block fit is already optimal and must come back unchanged. */
static void test_feedback_equals_block_when_h_is_diagonal(void **state)
{
    (void)state;
    enum { ROWS = 40, L = 24, D = 6, K = 8 };
    float *w = malloc(ROWS * L * sizeof *w);
    bd_test_fill_random(w, ROWS * L, 61, -1, 1);
    /* X = diag(sqrt(v)) repeated: rows of x are scaled unit vectors */
    const float v[D] = {4.0f, 0.25f, 1.0f, 9.0f, 0.5f, 2.0f};
    float *x = calloc(L * L, sizeof *x);
    for (int c = 0; c < L; c++)
        x[c * L + c] = sqrtf(v[c % D]);
    bd_gram h;
    gram_of(x, L, L, &h);
    fitted f;
    fit_both(x, L, w, ROWS, L, D, K, &h, &f);
    assert_true(fabs(f.feedback_err - f.block_err) <= 1e-6 * f.block_err);
    fitted_free(&f);
    bd_gram_free(&h);
    free(x);
    free(w);
}

/* The derived block Gram equals pq.h's accumulation of the same rows. */
static void test_block_gram_matches_pq(void **state)
{
    (void)state;
    enum { N = 50, L = 12, D = 3 };
    float x[N * L];
    bd_test_fill_random(x, N * L, 71, -1, 1);
    bd_gram h, direct, derived;
    gram_of(x, N, L, &h);
    assert_int_equal(bd_gram_init(&direct, D), BD_OK);
    bd_gram_add_rows(&direct, x, N, L);
    bd_gram_finish(&direct);
    bd_feedback_layer fl = {NULL, 1, L, 1, &h};
    assert_int_equal(bd_feedback_block_gram(&fl, D, &derived), BD_OK);
    assert_int_equal(derived.blocks, direct.blocks);
    assert_int_equal(derived.rows, direct.rows);
    for (int i = 0; i < D * D; i++)
        assert_true(fabs(derived.g[i] - direct.g[i]) <= 1e-5 * (fabs(direct.g[i]) + 1));
    bd_gram_free(&h);
    bd_gram_free(&direct);
    bd_gram_free(&derived);
}

static void test_feedback_refuses_long_rows(void **state)
{
    (void)state;
    bd_gram h = {.d = BD_FEEDBACK_MAX_LEN + 4};
    float w[4] = {0};
    bd_feedback_layer fl = {w, 1, BD_FEEDBACK_MAX_LEN + 4, 1, &h};
    int32_t assign[1] = {0};
    assert_int_equal(bd_feedback_pq(&fl, 4, 1, w, assign, 1, NULL, NULL, NULL), BD_EINVAL);
    assert_non_null(strstr(bd_error_message(), "8192"));
}

/* The pass with a scalar quantizer (round to a grid, d = 1) is GPTQ: on
 * the correlated inputs it must beat rounding every weight to nearest. */
typedef struct grid {
    float step;
    float *out; /* rows x L, what the pass chose */
    int64_t L;
} grid;

static bd_status round_to_grid(void *ctx, int64_t group, int64_t block, const float *wb,
                               int64_t rows, int d, const double *metric, float *qb)
{
    (void)group;
    (void)metric;
    grid *g = ctx;
    for (int64_t r = 0; r < rows * d; r++) {
        qb[r] = g->step * roundf(wb[r] / g->step);
        g->out[(r / d) * g->L + block * d + r % d] = qb[r];
    }
    return BD_OK;
}

static void test_scalar_feedback_beats_rounding(void **state)
{
    (void)state;
    enum { N = 500, ROWS = 16, L = 32 };
    float *x = correlated_rows(N, L, 0.9f, 0.4f, 91), *w = malloc(ROWS * L * sizeof *w);
    float *rtn = malloc(ROWS * L * sizeof *rtn), *fed = malloc(ROWS * L * sizeof *fed);
    bd_test_fill_random(w, ROWS * L, 92, -1, 1);
    bd_gram h;
    gram_of(x, N, L, &h);
    const float step = 0.25f;
    for (int i = 0; i < ROWS * L; i++)
        rtn[i] = step * roundf(w[i] / step);
    grid g = {step, fed, L};
    bd_feedback_layer fl = {w, ROWS, L, 1, &h};
    assert_int_equal(bd_feedback_pass(&fl, 1, round_to_grid, &g, NULL), BD_OK);
    for (int i = 0; i < ROWS * L; i++) /* every value on the grid */
        assert_true(fabsf(fed[i] / step - roundf(fed[i] / step)) < 1e-4f);
    double e_rtn = bd_test_output_error(x, N, w, rtn, ROWS, L);
    double e_fed = bd_test_output_error(x, N, w, fed, ROWS, L);
    if (!(e_fed < 0.8 * e_rtn))
        fail_msg("feedback %.6g vs round-to-nearest %.6g: not 20%% lower", e_fed, e_rtn);
    bd_gram_free(&h);
    free(x), free(w), free(rtn), free(fed);
}

/* The plan's check: a layer whose rows are too long for feedback is named,
 * with the limit; the other objectives take it. */
static void test_objective_check_names_layer(void **state)
{
    (void)state;
    bd_layer l;
    memset(&l, 0, sizeof l);
    snprintf(l.name, sizeof l.name, "layer9.wide");
    l.rows = 4;
    l.row_len = BD_FEEDBACK_MAX_LEN + 9;
    assert_int_equal(bd_objective_check(&l, BD_OBJ_FEEDBACK), BD_EINVAL);
    assert_non_null(strstr(bd_error_message(), "layer9.wide"));
    assert_non_null(strstr(bd_error_message(), "8192"));
    assert_int_equal(bd_objective_check(&l, BD_OBJ_ACT), BD_OK);
    l.row_len = BD_FEEDBACK_MAX_LEN;
    assert_int_equal(bd_objective_check(&l, BD_OBJ_FEEDBACK), BD_OK);
    bd_objective o;
    assert_int_equal(bd_objective_parse("gptvq", &o), BD_OK);
    assert_int_equal(o, BD_OBJ_FEEDBACK);
    assert_int_equal(bd_objective_parse("both", &o), BD_EINVAL);
    assert_non_null(strstr(bd_error_message(), "act|weight|feedback"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_feedback_wins_on_correlated_inputs),
        cmocka_unit_test(test_feedback_equals_block_when_h_is_diagonal),
        cmocka_unit_test(test_block_gram_matches_pq),
        cmocka_unit_test(test_feedback_refuses_long_rows),
        cmocka_unit_test(test_objective_check_names_layer),
        cmocka_unit_test(test_scalar_feedback_beats_rounding),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
