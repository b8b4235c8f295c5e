/* The PQ math against brute force on small random cases. */
#include "bd_test.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pq.h"

/* G = sum over rows x of x x^T, the way the reference stacks activations. */
static void brute_gram(const float *x, int rows, int d, double *g)
{
    memset(g, 0, (size_t)(d * d) * sizeof *g);
    for (int r = 0; r < rows; r++)
        for (int i = 0; i < d; i++)
            for (int j = 0; j < d; j++)
                g[i * d + j] += (double)x[r * d + i] * x[r * d + j];
}

/* ||X (w - c)||^2 computed row by row, as the reference does. */
static double brute_dist(const float *x, int rows, int d, const float *w, const float *c)
{
    double total = 0;
    for (int r = 0; r < rows; r++) {
        double dot = 0;
        for (int t = 0; t < d; t++)
            dot += (double)x[r * d + t] * ((double)w[t] - (double)c[t]);
        total += dot * dot;
    }
    return total;
}

static void gram_from_rows(bd_gram *gr, const float *x, int rows, int d)
{
    assert_int_equal(bd_gram_init(gr, d), BD_OK);
    bd_gram_add_rows(gr, x, rows, d);
    bd_gram_finish(gr);
}

static void test_gram_paths_agree(void **state)
{
    (void)state;
    enum { R = 37, D = 3, M = 4, L = D * M };
    float x[R * L], cols[L * R];
    bd_test_fill_random(x, R * L, 1, -1, 1);
    for (int r = 0; r < R; r++)
        for (int c = 0; c < L; c++)
            cols[c * R + r] = x[r * L + c];
    bd_gram a, b;
    assert_int_equal(bd_gram_init(&a, D), BD_OK);
    assert_int_equal(bd_gram_init(&b, D), BD_OK);
    bd_gram_add_rows(&a, x, R, L);
    bd_gram_add_cols(&b, cols, L, R);
    bd_gram_finish(&a);
    bd_gram_finish(&b);
    double g[D * D];
    brute_gram(x, R * M, D, g); /* each row is M blocks of D */
    for (int i = 0; i < D * D; i++) {
        assert_true(fabs(a.g[i] - g[i]) < 1e-4 * (1 + fabs(g[i])));
        assert_true(fabs(b.g[i] - g[i]) < 1e-4 * (1 + fabs(g[i])));
    }
    assert_int_equal(a.blocks, R * M);
    assert_int_equal(b.blocks, R * M);
    bd_gram_free(&a);
    bd_gram_free(&b);
}

/* The E-step's assignments are those of brute force for every pair, and the
 * objective matches it to 1e-5. */
static void test_estep_matches_brute_force(void **state)
{
    (void)state;
    enum { N = 300, D = 4, K = 16, ROWS = 60 };
    for (uint64_t seed = 1; seed <= 5; seed++) {
        float sub[N * D], x[ROWS * D], cent[K * D];
        bd_test_fill_random(sub, N * D, seed, -1, 1);
        bd_test_fill_random(x, ROWS * D, seed + 100, -1, 1);
        /* anisotropic activations: the metric differs from Euclidean */
        for (int r = 0; r < ROWS; r++)
            x[r * D] *= 5.0f;
        bd_test_fill_random(cent, K * D, seed + 200, -1, 1);
        bd_gram gr;
        gram_from_rows(&gr, x, ROWS, D);
        int32_t assign[N];
        double dist[N];
        assert_int_equal(bd_pq_assign(sub, N, &gr, cent, K, assign, dist), BD_OK);
        double brute_obj = 0;
        int euclid_differs = 0;
        for (int i = 0; i < N; i++) {
            int best = 0, ebest = 0;
            double bv = INFINITY, ev = INFINITY;
            for (int c = 0; c < K; c++) {
                double v = brute_dist(x, ROWS, D, sub + i * D, cent + c * D);
                if (v < bv) {
                    bv = v;
                    best = c;
                }
                double e = 0;
                for (int t = 0; t < D; t++)
                    e += pow(sub[i * D + t] - cent[c * D + t], 2);
                if (e < ev) {
                    ev = e;
                    ebest = c;
                }
            }
            assert_int_equal(assign[i], best);
            assert_true(fabs(dist[i] - bv) <= 1e-5 * (1 + bv));
            brute_obj += bv;
            euclid_differs += ebest != best;
        }
        assert_true(euclid_differs > 0); /* the test would not see a Euclidean E-step */
        double obj = bd_pq_objective(sub, N, &gr, cent, assign);
        assert_true(fabs(obj - brute_obj) <= 1e-5 * brute_obj);
        bd_gram_free(&gr);
    }
}

static void test_em_objective_never_rises(void **state)
{
    (void)state;
    enum { N = 2000, D = 9, ROWS = 500 };
    float *sub = malloc(N * D * sizeof *sub), *x = malloc(ROWS * D * sizeof *x);
    bd_test_fill_random(sub, N * D, 7, -1, 1);
    bd_test_fill_random(x, ROWS * D, 8, 0, 1); /* ReLU-like, correlated */
    bd_gram gr;
    gram_from_rows(&gr, x, ROWS, D);
    bd_pq_options opt = {.k = 64, .iters = 30, .seed = 3};
    bd_pq_result res;
    assert_int_equal(bd_pq_fit(sub, N, &gr, &opt, NULL, &res), BD_OK);
    assert_true(res.iters >= 2 && res.iters <= 30);
    for (int i = 1; i < res.iters; i++)
        assert_true(res.objective[i] <= res.objective[i - 1] * (1 + 1e-6));
    assert_true(res.objective[res.iters - 1] < res.objective[0]);
    /* the reported objective is the normalised exact one */
    double exact = bd_pq_objective(sub, N, &gr, res.centroids, res.assign);
    double norm = sqrt(exact / ((double)gr.blocks * N));
    assert_true(fabs(norm - res.objective[res.iters - 1]) <= 1e-9 * norm);
    /* the same seed gives the same codebook */
    bd_pq_result again;
    assert_int_equal(bd_pq_fit(sub, N, &gr, &opt, NULL, &again), BD_OK);
    assert_memory_equal(res.assign, again.assign, N * sizeof *res.assign);
    assert_memory_equal(res.centroids, again.centroids, 64 * D * sizeof(float));
    bd_pq_result_free(&res);
    bd_pq_result_free(&again);
    bd_gram_free(&gr);
    free(sub);
    free(x);
}

/* Duplicate subvectors: seeding never draws a duplicate, and the repair
 * splits the most populated cluster should one empty, so every centroid
 * ends with members. */
static void test_empty_clusters_repaired(void **state)
{
    (void)state;
    enum { N = 96, D = 2, K = 16 };
    float sub[N * D];
    bd_test_fill_random(sub, N * D, 11, -1, 1);
    for (int i = 0; i < 40; i++) { /* 40 copies of one point, 8 of another */
        sub[i * D] = 0.5f;
        sub[i * D + 1] = 0.25f;
    }
    for (int i = 40; i < 48; i++) {
        sub[i * D] = -0.75f;
        sub[i * D + 1] = 0.125f;
    }
    bd_gram gr;
    assert_int_equal(bd_gram_identity(&gr, D), BD_OK);
    for (uint64_t seed = 0; seed < 20; seed++) {
        bd_pq_options opt = {.k = K, .iters = 10, .seed = seed};
        bd_pq_result res;
        assert_int_equal(bd_pq_fit(sub, N, &gr, &opt, NULL, &res), BD_OK);
        int used[K] = {0};
        for (int i = 0; i < N; i++)
            used[res.assign[i]]++;
        for (int c = 0; c < K; c++)
            if (!used[c])
                fail_msg("seed %llu: cluster %d is empty", (unsigned long long)seed, c);
        assert_int_equal(res.empty_left, 0);
        bd_pq_result_free(&res);
    }
    bd_gram_free(&gr);
}

static bd_layer make_layer(const char *op, int64_t rows, int64_t row_len, int64_t kh, int64_t kw,
                           int64_t groups, int transposed)
{
    bd_layer l;
    memset(&l, 0, sizeof l);
    snprintf(l.name, sizeof l.name, "%s_%lld", op, (long long)rows);
    snprintf(l.op, sizeof l.op, "%s", op);
    l.rows = rows;
    l.row_len = row_len;
    l.kh = kh;
    l.kw = kw;
    l.groups = groups;
    l.transposed = transposed;
    return l;
}

/* Every layout: subvector j of row r is W_r[j*d .. j*d+d), and a weight
 * whose subvectors are codebook entries comes back exactly. */
static void test_layouts_round_trip(void **state)
{
    (void)state;
    bd_layer cases[] = {
        make_layer("Conv", 16, 8 * 9, 3, 3, 1, 0),  /* 3x3, d = 9 */
        make_layer("Conv", 24, 16, 1, 1, 1, 0),     /* 1x1, d = 4 */
        make_layer("Conv", 32, 9, 3, 3, 32, 0),     /* depthwise */
        make_layer("Conv", 12, 3 * 9, 3, 3, 4, 0),  /* grouped */
        make_layer("Gemm", 10, 64, 1, 1, 1, 0),     /* fc, transB = 1: [10][64] */
        make_layer("Gemm", 10, 64, 1, 1, 1, 1),     /* fc, transB = 0: [64][10] */
        make_layer("MatMul", 7, 12, 1, 1, 1, 1),    /* [12][7] */
    };
    int ds[] = {9, 4, 9, 9, 4, 8, 3};
    for (size_t t = 0; t < sizeof cases / sizeof *cases; t++) {
        const bd_layer *l = &cases[t];
        bd_pq_layout lay;
        assert_int_equal(bd_pq_layout_init(l, ds[t], &lay), BD_OK);
        const int k = 5, d = ds[t];
        float cent[5 * 9];
        bd_test_fill_random(cent, (size_t)(k * d), t + 1, -1, 1);
        int32_t *codes = malloc((size_t)lay.n * sizeof *codes);
        for (int64_t i = 0; i < lay.n; i++)
            codes[i] = (int32_t)((i * 7 + t) % k);
        size_t count = (size_t)(l->rows * l->row_len);
        float *sub = malloc(count * sizeof *sub), *w = malloc(count * sizeof *w);
        float *back = malloc(count * sizeof *back);
        bd_pq_decode(cent, d, codes, lay.n, sub);
        bd_pq_scatter(&lay, sub, w);
        /* the definition, element by element */
        for (int64_t r = 0; r < l->rows; r++)
            for (int64_t c = 0; c < l->row_len; c++) {
                float v = l->transposed ? w[c * l->rows + r] : w[r * l->row_len + c];
                int64_t j = c / d;
                assert_true(v == cent[codes[r * lay.m + j] * d + c % d]);
            }
        bd_pq_gather(&lay, w, back);
        assert_memory_equal(back, sub, count * sizeof *sub);
        /* encode (E-step under any G) then decode gives W exactly */
        bd_gram gr;
        assert_int_equal(bd_gram_identity(&gr, d), BD_OK);
        int32_t *again = malloc((size_t)lay.n * sizeof *again);
        assert_int_equal(bd_pq_assign(back, lay.n, &gr, cent, k, again, NULL), BD_OK);
        assert_memory_equal(again, codes, (size_t)lay.n * sizeof *codes);
        bd_pq_decode(cent, d, again, lay.n, sub);
        bd_pq_scatter(&lay, sub, back);
        assert_memory_equal(back, w, count * sizeof *w);
        bd_gram_free(&gr);
        free(codes);
        free(again);
        free(sub);
        free(w);
        free(back);
    }
}

static void test_layout_refuses_bad_d(void **state)
{
    (void)state;
    bd_layer l = make_layer("Conv", 16, 27, 3, 3, 1, 0);
    bd_pq_layout lay;
    assert_int_equal(bd_pq_layout_init(&l, 4, &lay), BD_EINVAL);
    assert_non_null(strstr(bd_error_message(), "d=4 does not divide its row length 27"));
    assert_non_null(strstr(bd_error_message(), "1, 3, 9, 27"));
}

static void test_k_clamp_like_the_reference(void **state)
{
    (void)state;
    assert_int_equal(bd_pq_max_k(256), 32); /* a 16->16 3x3 conv with d = 9 */
    assert_int_equal(bd_pq_max_k(257), 64);
    assert_int_equal(bd_pq_max_k(262144), 32768);
    assert_int_equal(bd_pq_max_k(4), 1);
    assert_int_equal(bd_pq_max_k(1LL << 40), 65536);
    assert_int_equal(bd_pq_code_bytes(100, 256), 100);
    assert_int_equal(bd_pq_code_bytes(100, 257), 200);
    assert_int_equal(bd_pq_codebook_bytes(256, 9), 256 * 9 * 2);
    assert_true(fabs(bd_pq_bits_per_weight(256, 9) - 8.0 / 9) < 1e-12);
}

static void test_fit_refuses_bad_k(void **state)
{
    (void)state;
    float sub[8 * 2] = {0};
    bd_gram gr;
    assert_int_equal(bd_gram_identity(&gr, 2), BD_OK);
    bd_pq_options opt = {.k = 9, .iters = 3};
    bd_pq_result res;
    assert_int_equal(bd_pq_fit(sub, 8, &gr, &opt, NULL, &res), BD_EINVAL);
    assert_non_null(strstr(bd_error_message(), "k=9"));
    bd_gram_free(&gr);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_gram_paths_agree),
        cmocka_unit_test(test_estep_matches_brute_force),
        cmocka_unit_test(test_em_objective_never_rises),
        cmocka_unit_test(test_empty_clusters_repaired),
        cmocka_unit_test(test_layouts_round_trip),
        cmocka_unit_test(test_layout_refuses_bad_d),
        cmocka_unit_test(test_k_clamp_like_the_reference),
        cmocka_unit_test(test_fit_refuses_bad_k),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
