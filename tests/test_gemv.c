/* bd_gemv against the product in double, both ways round, on shapes that
 * cut its groups of rows (1 to 8 and counts no group divides), its vector
 * tails (every width), and its runs of columns per thread (past one run,
 * shared by up to three threads); with a zero beta over a y of NaNs, and
 * the same bits on 1, 2 and 3 threads. */
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "bd_test.h"
#include "cpu/gemv.h"

typedef struct {
    int64_t rows, cols;
} shape;

static const shape shapes[] = {
    {1, 1},    {1, 16},   {2, 17},   {3, 31},   {4, 33},    {5, 100},  {6, 7},
    {7, 255},  {8, 256},  {9, 257},  {17, 47},  {70, 600},  {300, 70}, {1000, 40},
    {9, 4200}, {5, 7000}, {0, 5},    {4, 0},
};

/* y as bd_gemv should leave it, from y0 (its value before) */
static void reference(int trans, const shape *s, float alpha, const float *w, const float *x,
                      float beta, const float *y0, float *want)
{
    const int64_t ny = trans ? s->cols : s->rows, nx = trans ? s->rows : s->cols;
    for (int64_t i = 0; i < ny; i++) {
        double v = 0;
        for (int64_t j = 0; j < nx; j++)
            v += (double)(trans ? w[j * s->cols + i] : w[i * s->cols + j]) * x[j];
        want[i] = (float)(alpha * v + (beta == 0.0f ? 0.0 : (double)beta * y0[i]));
    }
}

/* bd_gemv on s with each thread count, against the reference, and each
 * count's bits against one thread's. */
static void check(int trans, const shape *s, float alpha, float beta, uint64_t seed)
{
    const int64_t ny = trans ? s->cols : s->rows, nx = trans ? s->rows : s->cols;
    float *w = malloc((size_t)(s->rows * s->cols + 1) * sizeof *w);
    float *x = malloc((size_t)(nx + 1) * sizeof *x);
    float *y0 = malloc((size_t)(ny + 1) * sizeof *y0);
    float *y = malloc((size_t)(ny + 1) * sizeof *y), *y1 = malloc((size_t)(ny + 1) * sizeof *y1);
    float *want = malloc((size_t)(ny + 1) * sizeof *want);
    assert_true(w && x && y0 && y && y1 && want);
    bd_test_fill_random(w, (size_t)(s->rows * s->cols), seed, -1, 1);
    bd_test_fill_random(x, (size_t)nx, seed + 1, -1, 1);
    if (beta == 0.0f)
        for (int64_t i = 0; i < ny; i++)
            y0[i] = NAN;
    else
        bd_test_fill_random(y0, (size_t)ny, seed + 2, -1, 1);
    reference(trans, s, alpha, w, x, beta, y0, want);
    const int threads = omp_get_max_threads();
    for (int t = 1; t <= 3; t++) {
        omp_set_num_threads(t);
        memcpy(y, y0, (size_t)ny * sizeof *y);
        bd_gemv(trans, s->rows, s->cols, alpha, w, x, beta, y);
        const double err = bd_test_rel_error(y, want, (size_t)ny);
        if (!(err < 1e-5))
            fail_msg("%s %lld x %lld, alpha %g beta %g, %d threads: relative error %g",
                     trans ? "W^T x" : "W x", (long long)s->rows, (long long)s->cols, alpha,
                     beta, t, err);
        if (t == 1)
            memcpy(y1, y, (size_t)ny * sizeof *y);
        else if (ny && memcmp(y, y1, (size_t)ny * sizeof *y) != 0)
            fail_msg("%s %lld x %lld: %d threads differ from one", trans ? "W^T x" : "W x",
                     (long long)s->rows, (long long)s->cols, t);
    }
    omp_set_num_threads(threads);
    free(w);
    free(x);
    free(y0);
    free(y);
    free(y1);
    free(want);
}

static void check_all(int trans)
{
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) {
        check(trans, &shapes[i], 1.0f, 0.0f, 10 * i);
        check(trans, &shapes[i], -0.7f, 1.3f, 10 * i + 5);
    }
}

static void test_rows(void **state)
{
    (void)state;
    check_all(0);
}

static void test_transposed(void **state)
{
    (void)state;
    check_all(1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rows),
        cmocka_unit_test(test_transposed),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
