/* The PQ math against brute force on small random cases. */
#include "bd_test.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec.h"
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

/* (w - c)^T G (w - c), in double. */
static double gram_dist(const double *g, int d, const float *w, const float *c)
{
    double total = 0;
    for (int i = 0; i < d; i++)
        for (int j = 0; j < d; j++)
            total += ((double)w[i] - c[i]) * g[i * d + j] * ((double)w[j] - c[j]);
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
    enum { N = 300, D = 4, KMAX = 37, ROWS = 60 };
    /* k below, at and past the scan's 16 centroids a block; the last
     * centroid a copy of the first, which the lower index must win */
    static const int ks[] = {5, 16, 37};
    for (uint64_t seed = 1; seed <= 6; seed++) {
        const int K = ks[seed % 3];
        float sub[N * D], x[ROWS * D], cent[KMAX * D];
        bd_test_fill_random(sub, N * D, seed, -1, 1);
        bd_test_fill_random(x, ROWS * D, seed + 100, -1, 1);
        /* anisotropic activations: the metric differs from Euclidean */
        for (int r = 0; r < ROWS; r++)
            x[r * D] *= 5.0f;
        bd_test_fill_random(cent, K * D, seed + 200, -1, 1);
        memcpy(cent + (K - 1) * D, cent, D * sizeof *cent);
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

/* The engine's later E-steps skip subvectors and groups of centroids by
 * bounds carried from the step before; after moves of every size (most
 * centroids a little, a few across the space, as Lloyd's and the empty-
 * cluster repair move them) they must still land where brute force does.
 * k spans one to sixteen groups of the scan, one of them partly padding,
 * and the last centroid is a copy of the first, which the lower index
 * must win. */
static void test_bounded_esteps_match_brute_force(void **state)
{
    (void)state;
    enum { N = 1500, D = 4, ROWS = 40, STEPS = 8 };
    static const int ks[] = {60, 300, 1100, 2048};
    for (int t = 0; t < 4; t++) {
        const int K = ks[t];
        float *sub = malloc(N * D * sizeof *sub), *cent = malloc((size_t)K * D * sizeof *cent);
        float *noise = malloc((size_t)K * D * sizeof *noise), x[ROWS * D];
        int32_t *assign = malloc(N * sizeof *assign);
        bd_test_fill_random(sub, N * D, 40 + t, -1, 1);
        bd_test_fill_random(x, ROWS * D, 50 + t, -1, 1);
        for (int r = 0; r < ROWS; r++)
            x[r * D + 1] *= 4.0f;
        bd_test_fill_random(cent, K * D, 60 + t, -1, 1);
        bd_gram gr;
        gram_from_rows(&gr, x, ROWS, D);
        bd_pq_engine eng;
        assert_int_equal(bd_pq_cpu_engine_new(sub, N, &gr, &eng), BD_OK);
        for (int i = 0; i < N; i++)
            assign[i] = -1;
        int64_t changed_total = 0;
        for (int step = 0; step < STEPS; step++) {
            if (step > 0) {
                bd_test_fill_random(noise, K * D, 70 + 10 * t + step, -0.02f, 0.02f);
                for (int i = 0; i < K * D; i++)
                    cent[i] += noise[i];
                for (int c = step; c < K; c += 97) /* a few jump across */
                    for (int s = 0; s < D; s++)
                        cent[c * D + s] = noise[(c * D + s + 1) % (K * D)] * 40.0f;
            }
            memcpy(cent + (K - 1) * D, cent, D * sizeof *cent);
            int64_t changed;
            assert_int_equal(eng.assign(eng.ctx, cent, K, assign, &changed), BD_OK);
            if (step > 0)
                changed_total += changed;
            for (int i = 0; i < N; i++) {
                int best = 0;
                double bv = INFINITY;
                for (int c = 0; c < K; c++) {
                    double v = gram_dist(gr.g, D, sub + i * D, cent + c * D);
                    if (v < bv) {
                        bv = v;
                        best = c;
                    }
                }
                assert_int_not_equal(assign[i], K - 1);
                if (assign[i] != best) { /* only a tie within float rounding */
                    double got = gram_dist(gr.g, D, sub + i * D, cent + assign[i] * D);
                    assert_true(got <= bv * (1 + 1e-5));
                }
            }
        }
        assert_true(changed_total > 0); /* the moves did reassign */
        bd_pq_cpu_engine_free(&eng);
        bd_gram_free(&gr);
        free(sub);
        free(cent);
        free(noise);
        free(assign);
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
    assert_int_equal(bd_packed_bytes(100, bd_code_bits(256)), 100);
    assert_int_equal(bd_packed_bytes(100, bd_code_bits(257)), 113);
    assert_int_equal(bd_packed_bytes(3, bd_code_bits(32)), 2);
    assert_int_equal(bd_code_bits(1), 0);
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

/* Subvectors that are exactly K distinct vectors, each repeated: seeding
 * must draw every one of them (a duplicate drawn would leave one out and
 * the error above 0), so the fit is exact from its first iteration; with
 * more centroids asked than distinct vectors, k shrinks to what exists. */
static void test_seeding_draws_distinct_subvectors(void **state)
{
    (void)state;
    enum { D = 9, DISTINCT = 12, COPIES = 40, N = DISTINCT * COPIES };
    float base[DISTINCT * D], *sub = malloc(N * D * sizeof *sub);
    bd_test_fill_random(base, DISTINCT * D, 21, -1, 1);
    for (int i = 0; i < N; i++) /* interleaved, so no slice holds one vector */
        memcpy(sub + i * D, base + ((i * 7) % DISTINCT) * D, D * sizeof *sub);
    float *x = malloc(300 * D * sizeof *x);
    bd_test_fill_random(x, 300 * D, 22, 0, 1);
    bd_gram gr;
    gram_from_rows(&gr, x, 300, D);
    for (uint64_t seed = 0; seed < 10; seed++) {
        for (int k = DISTINCT; k <= 2 * DISTINCT; k += DISTINCT) {
            bd_pq_options opt = {.k = k, .iters = 20, .seed = seed, .restarts = 1};
            bd_pq_result res;
            assert_int_equal(bd_pq_fit(sub, N, &gr, &opt, NULL, &res), BD_OK);
            assert_int_equal(res.k, DISTINCT);
            assert_true(res.exact);
            assert_true(res.objective[0] < 1e-6);
            assert_true(bd_pq_objective(sub, N, &gr, res.centroids, res.assign) < 1e-6);
            /* the centroids are the distinct vectors, each once */
            for (int c = 0; c < res.k; c++)
                for (int e = 0; e < c; e++)
                    assert_memory_not_equal(res.centroids + c * D, res.centroids + e * D,
                                            D * sizeof(float));
            bd_pq_result_free(&res);
        }
    }
    bd_gram_free(&gr);
    free(sub);
    free(x);
}

/* n random subvectors of d in [-1, 1], and in *gr the Gram of `rows` random
 * input rows in [0, 1] (so correlated inputs), from seed and seed + 1. */
static float *random_layer(int n, int d, int rows, uint64_t seed, bd_gram *gr)
{
    float *sub = malloc((size_t)n * (size_t)d * sizeof *sub);
    float *x = malloc((size_t)rows * (size_t)d * sizeof *x);
    bd_test_fill_random(sub, (size_t)n * (size_t)d, seed, -1, 1);
    bd_test_fill_random(x, (size_t)rows * (size_t)d, seed + 1, 0, 1);
    gram_from_rows(gr, x, rows, d);
    free(x);
    return sub;
}

/* Over seeds 0..5, one fit of sub[n] against `restarts` from the same seed:
 * the best is never higher, every code is a centroid, and its last
 * objective is the exact one. *lower counts the seeds where the restarts
 * ended lower, *other those that kept a restart after the first. */
static void restarts_against_one(const float *sub, int n, int k, int restarts, const bd_gram *gr,
                                 int *lower, int *other)
{
    *lower = *other = 0;
    for (uint64_t seed = 0; seed < 6; seed++) {
        bd_pq_options one = {.k = k, .iters = 100, .seed = seed, .restarts = 1, .tol = 1e-5};
        bd_pq_options many = one;
        many.restarts = restarts;
        bd_pq_result a, b;
        assert_int_equal(bd_pq_fit(sub, n, gr, &one, NULL, &a), BD_OK);
        assert_int_equal(bd_pq_fit(sub, n, gr, &many, NULL, &b), BD_OK);
        for (int i = 0; i < n; i++)
            assert_true(b.assign[i] >= 0 && b.assign[i] < b.k);
        double fa = bd_pq_objective(sub, n, gr, a.centroids, a.assign);
        double fb = bd_pq_objective(sub, n, gr, b.centroids, b.assign);
        assert_true(fb <= fa);
        assert_int_equal(b.restarts, restarts);
        double exact = sqrt(fb / ((double)gr->blocks * n));
        assert_true(fabs(exact - b.objective[b.iters - 1]) <= 1e-9 * exact);
        *lower += fb < fa * (1 - 1e-6);
        *other += b.best_restart > 0;
        bd_pq_result_free(&a);
        bd_pq_result_free(&b);
    }
}

/* Restart 0 is the plain run from the same seed, and the best is kept: more
 * restarts never end higher. They do end lower somewhere, or they would be
 * pointless on these clustered-but-overlapping data. */
static void test_restarts_never_worse(void **state)
{
    (void)state;
    enum { N = 3000, D = 4, K = 32 };
    bd_gram gr;
    float *sub = random_layer(N, D, 400, 31, &gr);
    int lower, other;
    restarts_against_one(sub, N, K, 5, &gr, &lower, &other);
    assert_true(lower > 0);
    bd_gram_free(&gr);
    free(sub);
}

/* With many subvectors per centroid the trials run on samples: a trial kept
 * must still be a whole fit over every subvector (its last objective the
 * exact one over all of them, every code a centroid), never worse than the
 * plain run; and a layer whose samples are nearly all one value (a few rare
 * subvectors the evenly spread samples miss) still gets its rare values
 * fitted, the trials falling back to every subvector. */
static void test_restarts_sampled(void **state)
{
    (void)state;
    enum { N = 20000, D = 3, K = 16 };
    bd_gram gr;
    float *sub = random_layer(N, D, 300, 91, &gr);
    int lower, other;
    restarts_against_one(sub, N, K, 6, &gr, &lower, &other);
    assert_true(other > 0); /* a sampled trial did win somewhere */
    /* one value everywhere but at 7 rare places, 6 of them distinct */
    for (int i = 0; i < N; i++)
        for (int t = 0; t < D; t++)
            sub[i * D + t] = 0.5f;
    const int rare[7] = {1, 4999, 5001, 9997, 12345, 17777, 19999};
    for (int r = 0; r < 7; r++)
        for (int t = 0; t < D; t++)
            sub[rare[r] * D + t] = (float)(r % 6) - 2.5f + 0.25f * (float)t;
    bd_pq_options opt = {.k = 4, .iters = 100, .seed = 3, .restarts = 4, .tol = 1e-5};
    bd_pq_result res;
    assert_int_equal(bd_pq_fit(sub, N, &gr, &opt, NULL, &res), BD_OK);
    assert_int_equal(res.k, 4);
    double f = bd_pq_objective(sub, N, &gr, res.centroids, res.assign);
    assert_true(fabs(sqrt(f / ((double)gr.blocks * N)) - res.objective[res.iters - 1]) <=
                1e-9 * sqrt(f / ((double)gr.blocks * N)) + 1e-12);
    bd_pq_result_free(&res);
    bd_gram_free(&gr);
    free(sub);
}

/* Small layers converge inside the trial iterations of a restart: the fit
 * kept must still be a whole one, every code a centroid, its objective the
 * exact one. */
static void test_restarts_converged_in_trial(void **state)
{
    (void)state;
    enum { N = 240, D = 2, K = 12, BLOBS = 13 };
    /* 13 tight blobs for 12 centroids: fits converge in a few iterations,
     * to optima that differ by which two blobs share a centroid */
    float sub[N * D], centre[BLOBS * D];
    bd_test_fill_random(centre, BLOBS * D, 81, -4, 4);
    bd_test_fill_random(sub, N * D, 82, -0.05f, 0.05f);
    for (int i = 0; i < N; i++)
        for (int t = 0; t < D; t++)
            sub[i * D + t] += centre[(i % BLOBS) * D + t];
    bd_gram gr;
    assert_int_equal(bd_gram_identity(&gr, D), BD_OK);
    int other_kept = 0;
    for (uint64_t seed = 0; seed < 24; seed++) {
        bd_pq_options opt = {.k = K, .iters = 100, .seed = seed, .restarts = 8, .tol = 1e-3};
        bd_pq_result res;
        assert_int_equal(bd_pq_fit(sub, N, &gr, &opt, NULL, &res), BD_OK);
        for (int i = 0; i < N; i++)
            assert_true(res.assign[i] >= 0 && res.assign[i] < res.k);
        double exact = sqrt(bd_pq_objective(sub, N, &gr, res.centroids, res.assign) /
                            ((double)gr.blocks * N));
        assert_true(fabs(exact - res.objective[res.iters - 1]) <= 1e-9 * exact);
        other_kept += res.best_restart > 0 && res.iters < BD_PQ_TRIAL;
        bd_pq_result_free(&res);
    }
    assert_true(other_kept > 0); /* the case this test is for did happen */
    bd_gram_free(&gr);
}

/* Tolerance stopping ends a fit before the cap once it has converged, and
 * tol 0 runs to a fixed point; both agree on an objective no higher than
 * the stopped one allows. */
static void test_tolerance_stops(void **state)
{
    (void)state;
    enum { N = 4000, D = 4, K = 64 };
    float *sub = malloc(N * D * sizeof *sub);
    bd_test_fill_random(sub, N * D, 41, -1, 1);
    bd_gram gr;
    assert_int_equal(bd_gram_identity(&gr, D), BD_OK);
    bd_pq_options loose = {.k = K, .iters = 100, .seed = 1, .restarts = 1, .tol = 1e-2};
    bd_pq_options tight = loose;
    tight.tol = 0;
    bd_pq_result a, b;
    assert_int_equal(bd_pq_fit(sub, N, &gr, &loose, NULL, &a), BD_OK);
    assert_int_equal(bd_pq_fit(sub, N, &gr, &tight, NULL, &b), BD_OK);
    assert_true(a.iters < b.iters);
    assert_true(a.iters >= BD_PQ_PATIENCE + 1);
    assert_true(b.objective[b.iters - 1] <= a.objective[a.iters - 1]);
    bd_pq_result_free(&a);
    bd_pq_result_free(&b);
    bd_gram_free(&gr);
    free(sub);
}

static void test_search_refuses_bad_settings(void **state)
{
    (void)state;
    float sub[64 * 2];
    bd_test_fill_random(sub, 64 * 2, 5, -1, 1);
    bd_gram gr;
    assert_int_equal(bd_gram_identity(&gr, 2), BD_OK);
    bd_pq_result res;
    bd_pq_options bad_restarts = {.k = 4, .iters = 3, .restarts = BD_PQ_MAX_RESTARTS + 1};
    assert_int_equal(bd_pq_fit(sub, 64, &gr, &bad_restarts, NULL, &res), BD_EINVAL);
    assert_non_null(strstr(bd_error_message(), "restarts=65"));
    bd_pq_options bad_tol = {.k = 4, .iters = 3, .tol = 0.75};
    assert_int_equal(bd_pq_fit(sub, 64, &gr, &bad_tol, NULL, &res), BD_EINVAL);
    assert_non_null(strstr(bd_error_message(), "tol=0.75"));
    bd_pq_options neg_tol = {.k = 4, .iters = 3, .tol = -1};
    assert_int_equal(bd_pq_fit(sub, 64, &gr, &neg_tol, NULL, &res), BD_EINVAL);
    bd_gram_free(&gr);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_gram_paths_agree),
        cmocka_unit_test(test_estep_matches_brute_force),
        cmocka_unit_test(test_bounded_esteps_match_brute_force),
        cmocka_unit_test(test_em_objective_never_rises),
        cmocka_unit_test(test_empty_clusters_repaired),
        cmocka_unit_test(test_layouts_round_trip),
        cmocka_unit_test(test_layout_refuses_bad_d),
        cmocka_unit_test(test_k_clamp_like_the_reference),
        cmocka_unit_test(test_fit_refuses_bad_k),
        cmocka_unit_test(test_seeding_draws_distinct_subvectors),
        cmocka_unit_test(test_restarts_never_worse),
        cmocka_unit_test(test_restarts_converged_in_trial),
        cmocka_unit_test(test_restarts_sampled),
        cmocka_unit_test(test_tolerance_stops),
        cmocka_unit_test(test_search_refuses_bad_settings),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
