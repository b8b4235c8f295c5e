/* bd_gemm_rows against the product and its epilogue in double, on shapes
 * that cut its row tiles (1 to 8 rows, and counts no tile size divides),
 * its blocks of rows (up to 256, and more), its column panels and vectors
 * (tails of every width), and its slices of the sum (depths below, at and
 * past one slice). */
#include <math.h>
#include <stdlib.h>

#include "bd_test.h"
#include "cpu/gemm_rows.h"

typedef struct {
    int64_t m, n, k;
} shape;

static void reference(const shape *s, const float *a, const float *b,
                      const bd_gemm_epilogue *ep, float *y)
{
    for (int64_t i = 0; i < s->m; i++)
        for (int64_t j = 0; j < s->n; j++) {
            double v = 0;
            for (int64_t p = 0; p < s->k; p++)
                v += (double)a[i * s->k + p] * b[p * s->n + j];
            if (ep && ep->bias)
                v += ep->bias[j];
            if (ep && ep->gelu)
                v = v * (erf(v / ep->k[0]) + ep->k[1]) * ep->k[2];
            y[i * s->n + j] = (float)v;
        }
}

static void check(const shape *s, const bd_gemm_epilogue *ep, uint64_t seed)
{
    float *a = malloc((size_t)(s->m * s->k + 1) * sizeof *a);
    float *b = malloc((size_t)(s->k * s->n + 1) * sizeof *b);
    float *y = malloc((size_t)(s->m * s->n + 1) * sizeof *y);
    float *want = malloc((size_t)(s->m * s->n + 1) * sizeof *want);
    assert_true(a && b && y && want);
    bd_test_fill_random(a, (size_t)(s->m * s->k), seed, -1, 1);
    bd_test_fill_random(b, (size_t)(s->k * s->n), seed + 1, -1, 1);
    bd_test_fill_random(y, (size_t)(s->m * s->n), seed + 2, -1e30f, 1e30f); /* overwritten */
    bd_gemm_rows(s->m, s->n, s->k, a, b, ep, y);
    reference(s, a, b, ep, want);
    const double err = bd_test_rel_error(y, want, (size_t)(s->m * s->n));
    if (!(err < 1e-5))
        fail_msg("m %lld n %lld k %lld%s%s: relative error %g", (long long)s->m, (long long)s->n,
                 (long long)s->k, ep && ep->bias ? " +bias" : "", ep && ep->gelu ? " +GELU" : "",
                 err);
    free(a);
    free(b);
    free(y);
    free(want);
}

static void test_products(void **state)
{
    (void)state;
    const shape shapes[] = {
        {1, 1, 1},    {1, 16, 3},   {2, 47, 255}, {3, 48, 256}, {5, 49, 257},  {7, 17, 600},
        {8, 96, 64},  {9, 130, 33}, {17, 33, 513}, {49, 100, 70}, {255, 20, 300}, {256, 31, 9},
        {257, 50, 40}, {300, 15, 5}, {4, 0, 5},    {0, 7, 5},
    };
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++)
        check(&shapes[i], NULL, 10 * i);
}

/* The epilogue in one block of rows and in several, and on a product with
 * no depth: y is then the bias alone, through the GELU. */
static void test_epilogue(void **state)
{
    (void)state;
    const shape shapes[] = {{7, 49, 300}, {49, 100, 70}, {257, 50, 40}, {6, 20, 0}};
    float bias[100];
    bd_test_fill_random(bias, 100, 99, -1, 1);
    const bd_gemm_epilogue ep[] = {{bias, 0, {0}}, {bias, 1, {1.4142135f, 1.0f, 0.5f}},
                                   {NULL, 1, {2.0f, 0.5f, 3.0f}}};
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++)
        for (size_t e = 0; e < sizeof ep / sizeof ep[0]; e++)
            check(&shapes[i], &ep[e], 100 + 10 * i + e);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_products),
        cmocka_unit_test(test_epilogue),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
