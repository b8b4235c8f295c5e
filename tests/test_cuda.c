/* The CUDA backend against the CPU: every kernel on small, odd shapes, and
 * end to end on the Fashion-MNIST ResNet (evaluation, the Gram matrix,
 * quantizing a layer, fine-tuning). The whole program skips (exit 77) when
 * the build has no CUDA backend or no GPU is visible, as on CI.
 *
 * Tolerances, and why:
 *  - copies (im2col, the codebook's gather and decode, the reshapes) and
 *    the E-step's argmin on well-separated data: exact.
 *  - GEMM, the Gram blocks, elementwise ops, pooling, BatchNorm, softmax and the
 *    losses: 1e-5 relative to the largest reference value. The GPU computes
 *    the same float products and sums as the CPU, in another order (and
 *    with fused multiply-adds); for the sums here, of at most a few hundred
 *    terms, that moves a result by some units in the last place, 1e-6 or
 *    less of the largest value.
 *  - the M-step's means: 1e-6 relative (sums in double, then one rounding
 *    to float).
 *  - the logits of the whole network: 1e-4 relative. The CPU folds
 *    BatchNorm into its convs' stores and sums its GEMMs in OpenBLAS's
 *    order; each of the network's 20-odd layers adds an error of about
 *    1e-6 relative, which stays well below 1e-4.
 *  - quantizing a layer: the two Gram matrices differ in their last bits
 *    (float chunk sums added in another order), so a subvector almost
 *    equidistant from two centroids may go either way and EM then follows
 *    a slightly different path: at most 1% of the codes may differ, and the
 *    layer's relative output error must agree within 1e-3 of itself.
 *  - fine-tuning: the losses of the first and last steps within 1e-3
 *    relative; ten SGD steps from the same codebook amplify the forward's
 *    1e-5 differences little.
 *  - training's SGD, hits and Quant-Noise's block drop and int8 noise on a
 *    weight: exact (the same float operations, products rounded first).
 *  - six training steps: the weights within 1e-4 to 1e-2 of the change
 *    training made (check_training says which and why); a resumed GPU run
 *    within 1e-4 of an uninterrupted one (identical on an H200). */
#include "bd_test.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifndef BD_HAVE_CUDA

int main(void)
{
    printf("SKIP: this build of bitdown has no CUDA backend (no CUDA device visible to it)\n");
    return 77;
}

#else

#include <cblas.h>
#include <math.h>
#include <stdatomic.h>

#include "bd_test_node.h"
#include "cpu/conv.h"
#include "cpu/grad_kernels.h"
#include "dev.h"
#include "device.h"
#include "exec.h"
#include "finetune.h"
#include "grad.h"
#include "model_meta.h"
#include "onnx_io.h"
#include "ops.h"
#include "pq.h"
#include "quant_noise.h"
#include "quantize.h"
#include "training.h"
#include "workspace.h"

static bd_device *dev;

static void ok(bd_status s)
{
    if (s != BD_OK)
        fail_msg("%s", bd_error_message());
}

/* ---- GPU memory helpers --------------------------------------------------------- */

static void *up(const void *host, size_t bytes)
{
    void *p;
    ok(bd_dev_alloc(dev, bytes, &p));
    ok(bd_cu_upload(p, host, bytes));
    return p;
}

static void *gpu(size_t bytes)
{
    void *p;
    ok(bd_dev_alloc(dev, bytes, &p));
    return p;
}

static void down(void *host, const void *p, size_t bytes) { ok(bd_cu_download(host, p, bytes)); }

static void release(void *p, size_t bytes) { bd_dev_release(dev, p, bytes); }

static float *rand_floats(size_t n, uint64_t seed, float lo, float hi)
{
    float *x = malloc(n * sizeof *x + 1);
    bd_test_fill_random(x, n, seed, lo, hi);
    return x;
}

static void assert_close(const float *got, const float *ref, size_t n, double tol, const char *what)
{
    double err = bd_test_rel_error(got, ref, n);
    if (!(err < tol))
        fail_msg("%s: relative error %g (tolerance %g)", what, err, tol);
}

/* ---- GEMM and SYRK ------------------------------------------------------------ */

static void test_gemm(void **state)
{
    (void)state;
    enum { M = 7, N = 5, K = 13, BATCH = 3 };
    float *a = rand_floats(BATCH * M * K, 1, -1, 1), *b = rand_floats(K * N, 2, -1, 1);
    float *c0 = rand_floats(BATCH * M * N, 3, -1, 1), ref[BATCH * M * N], got[BATCH * M * N];
    float *da = up(a, sizeof(float) * BATCH * M * K), *db = up(b, sizeof(float) * K * N);
    float *dc = gpu(sizeof got);
    for (int ta = 0; ta < 2; ta++)
        for (int tb = 0; tb < 2; tb++) {
            const int lda = ta ? M : K, ldb = tb ? K : N;
            memcpy(ref, c0, sizeof ref);
            for (int i = 0; i < BATCH; i++)
                cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans,
                            tb ? CblasTrans : CblasNoTrans, M, N, K, 0.5f, a + i * M * K, lda, b,
                            ldb, 0.25f, ref + i * M * N, N);
            ok(bd_cu_upload(dc, c0, sizeof got));
            /* B shared by the batch (stride 0), A and C strided */
            ok(bd_cu_gemm(dev->blas, ta, tb, M, N, K, 0.5f, da, lda, M * K, db, ldb, 0, 0.25f, dc, N,
                          M * N, BATCH));
            down(got, dc, sizeof got);
            assert_close(got, ref, BATCH * M * N, 1e-5, "gemm");
        }
    release(da, sizeof(float) * BATCH * M * K);
    release(db, sizeof(float) * K * N);
    release(dc, sizeof got);
    free(a);
    free(b);
    free(c0);
}

/* The Gram blocks against a double-precision sum: one slice, slices and
 * a remainder, and partial products that overflow the scratch, so that
 * several rounds add into acc. */
static void test_gram_blocks(void **state)
{
    (void)state;
    /* d, m, ncols, max_parts */
    static const int64_t cases[][4] = {
        {5, 3, 37, 4096}, {4, 2, 5000, 4096}, {3, 7, 3000, 4}, {3, 4, 9000, 10}};
    for (size_t t = 0; t < sizeof cases / sizeof cases[0]; t++) {
        const int64_t d = cases[t][0], m = cases[t][1], ncols = cases[t][2];
        const int64_t max_parts = cases[t][3], count = m * d * ncols;
        float *cols = rand_floats((size_t)count, 4 + t, -1, 1);
        float *ones = malloc((size_t)max_parts * sizeof *ones), got[16 * 16], ref[16 * 16];
        for (int64_t i = 0; i < max_parts; i++)
            ones[i] = 1.0f;
        for (int64_t i = 0; i < d; i++)
            for (int64_t j = 0; j < d; j++) {
                double sum = 0;
                for (int64_t b = 0; b < m; b++)
                    for (int64_t c = 0; c < ncols; c++)
                        sum += (double)cols[(b * d + i) * ncols + c] *
                               cols[(b * d + j) * ncols + c];
                ref[i * d + j] = (float)sum;
            }
        const size_t pbytes = (size_t)(max_parts * d * d) * sizeof(float);
        float *dcols = up(cols, (size_t)count * sizeof *cols), *dparts = gpu(pbytes);
        float *dones = up(ones, (size_t)max_parts * sizeof *ones);
        float *dacc = gpu((size_t)(d * d) * sizeof(float));
        ok(bd_cu_gram_blocks(dev->blas, dcols, d, m, ncols, dparts, dones, max_parts, dacc));
        down(got, dacc, (size_t)(d * d) * sizeof(float));
        assert_close(got, ref, (size_t)(d * d), 1e-5, "gram blocks");
        release(dcols, (size_t)count * sizeof *cols);
        release(dparts, pbytes);
        release(dones, (size_t)max_parts * sizeof *ones);
        release(dacc, (size_t)(d * d) * sizeof(float));
        free(cols);
        free(ones);
    }
}

/* ---- im2col, col2im ------------------------------------------------------------ */

/* An odd geometry: groups, a 3x2 kernel, strides, uneven pads, dilation. */
static bd_conv_geom odd_geom(void)
{
    bd_conv_geom g = {.n = 3, .c = 6, .h = 7, .w = 9, .m = 4, .group = 2, .kh = 3, .kw = 2,
                      .sh = 2, .sw = 1, .dh = 2, .dw = 1, .pad_t = 1, .pad_l = 0, .pad_b = 2,
                      .pad_r = 1};
    g.oh = (g.h + g.pad_t + g.pad_b - ((g.kh - 1) * g.dh + 1)) / g.sh + 1;
    g.ow = (g.w + g.pad_l + g.pad_r - ((g.kw - 1) * g.dw + 1)) / g.sw + 1;
    return g;
}

static void test_im2col(void **state)
{
    (void)state;
    const bd_conv_geom g = odd_geom();
    const int64_t cg = g.c / g.group, K = bd_conv_rows(&g), ohw = bd_conv_cols(&g);
    const size_t xn = (size_t)(g.n * g.c * g.h * g.w), cn = (size_t)(g.n * K * ohw);
    float *x = rand_floats(xn, 6, -2, 2), *ref = malloc(cn * sizeof *ref),
          *got = malloc(cn * sizeof *got);
    float *dx = up(x, xn * sizeof *x), *dcols = gpu(cn * sizeof(float));
    for (int64_t gi = 0; gi < g.group; gi++) {
        for (int64_t i = 0; i < g.n; i++)
            bd_im2col(&g, x + (i * g.c + gi * cg) * g.h * g.w, ref + i * K * ohw);
        /* [i][K][OH*OW], images img0 .. */
        ok(bd_cu_im2col(&g, dx, gi, NULL, 0, g.n, dcols, K * ohw, ohw));
        down(got, dcols, cn * sizeof *got);
        assert_memory_equal(got, ref, cn * sizeof *got);
        /* one matrix of a listed image's columns, images 2 and 0 */
        int32_t list[2] = {2, 0};
        int32_t *dlist = up(list, sizeof list);
        ok(bd_cu_im2col(&g, dx, gi, dlist, 0, 2, dcols, ohw, 2 * ohw));
        down(got, dcols, (size_t)(2 * K * ohw) * sizeof *got);
        for (int64_t r = 0; r < K; r++)
            for (int j = 0; j < 2; j++)
                assert_memory_equal(got + r * 2 * ohw + j * ohw, ref + (list[j] * K + r) * ohw,
                                    (size_t)ohw * sizeof *got);
        release(dlist, sizeof list);
    }
    release(dx, xn * sizeof *x);
    release(dcols, cn * sizeof(float));
    free(x);
    free(ref);
    free(got);
}

/* col2im is im2col's adjoint: <im2col(x), c> = <x, col2im(c)>, with the
 * CPU's im2col on the left. */
static void test_col2im(void **state)
{
    (void)state;
    const bd_conv_geom g = odd_geom();
    const int64_t cg = g.c / g.group, K = bd_conv_rows(&g), ohw = bd_conv_cols(&g);
    const size_t xn = (size_t)(g.n * g.c * g.h * g.w), cn = (size_t)(g.n * K * ohw);
    float *x = rand_floats(xn, 7, -1, 1), *c = rand_floats(cn, 8, -1, 1);
    float *cols = malloc(cn * sizeof *cols), *back = malloc(xn * sizeof *back);
    float *dc = up(c, cn * sizeof *c), *ddx = gpu(xn * sizeof(float));
    for (int64_t gi = 0; gi < g.group; gi++) {
        ok(bd_cu_col2im(&g, dc, gi, 0, g.n, ddx));
        for (int64_t i = 0; i < g.n; i++)
            bd_im2col(&g, x + (i * g.c + gi * cg) * g.h * g.w, cols + i * K * ohw);
    }
    down(back, ddx, xn * sizeof *back);
    /* each group's channels were written by its own col2im: the dots per group add up */
    double lhs = 0, rhs = 0;
    for (int64_t gi = 0; gi < g.group; gi++) {
        for (int64_t i = 0; i < g.n; i++)
            bd_im2col(&g, x + (i * g.c + gi * cg) * g.h * g.w, cols + i * K * ohw);
        for (size_t e = 0; e < cn; e++)
            lhs += (double)cols[e] * c[e];
        for (int64_t i = 0; i < g.n; i++)
            for (int64_t e = 0; e < cg * g.h * g.w; e++) {
                int64_t at = (i * g.c + gi * cg) * g.h * g.w + e;
                rhs += (double)x[at] * back[at];
            }
    }
    assert_true(fabs(lhs - rhs) <= 1e-5 * (fabs(lhs) + 1));
    release(dc, cn * sizeof *c);
    release(ddx, xn * sizeof(float));
    free(x);
    free(c);
    free(cols);
    free(back);
}

/* ---- EM ------------------------------------------------------------------------- */

/* n subvectors of d values around k well-separated centres, and a
 * well-conditioned G. */
static float *separated(int64_t n, int d, int k, uint64_t seed, bd_gram *gr)
{
    float *centres = rand_floats((size_t)k * d, seed, -10, 10);
    float *sub = rand_floats((size_t)n * d, seed + 1, -0.05f, 0.05f);
    for (int64_t i = 0; i < n; i++)
        for (int t = 0; t < d; t++)
            sub[i * d + t] += centres[(i % k) * d + t];
    float x[64 * 8];
    bd_test_fill_random(x, sizeof x / sizeof *x, seed + 2, -1, 1);
    ok(bd_gram_init(gr, d));
    bd_gram_add_rows(gr, x, (int64_t)(sizeof x / sizeof *x) / d, d);
    for (int t = 0; t < d; t++)
        gr->g[t * d + t] += 1.0; /* plus I: well conditioned */
    bd_gram_finish(gr);
    free(centres);
    return sub;
}

/* The E-step's pieces (em.c's gpu_assign, kernel by kernel) against
 * bd_pq_assign: identical assignments. */
static void test_estep_argmin(void **state)
{
    (void)state;
    enum { N = 999, D = 6, K = 37 };
    bd_gram gr;
    float *sub = separated(N, D, K, 11, &gr);
    float cent[K * D], gf[D * D];
    for (int c = 0; c < K; c++) /* centroids near each centre */
        memcpy(cent + c * D, sub + c * D, sizeof(float) * D);
    for (int i = 0; i < D * D; i++)
        gf[i] = (float)gr.g[i];
    int32_t ref[N], got[N];
    ok(bd_pq_assign(sub, N, &gr, cent, K, ref, NULL));
    float *dsub = up(sub, sizeof(float) * N * D), *dg = up(gf, sizeof gf), *dcent = up(cent, sizeof cent);
    float *dsg = gpu(sizeof(float) * N * D), *dcg = gpu(sizeof cent), *dcgc = gpu(sizeof(float) * K);
    float *dscores = gpu(sizeof(float) * N * K);
    int32_t *dassign = gpu(sizeof got);
    ok(bd_cu_gemm(dev->blas, 0, 0, N, D, D, 1.0f, dsub, D, 0, dg, D, 0, 0.0f, dsg, D, 0, 1));
    ok(bd_cu_gemm(dev->blas, 0, 0, K, D, D, 1.0f, dcent, D, 0, dg, D, 0, 0.0f, dcg, D, 0, 1));
    ok(bd_cu_center_terms(dcent, dcg, K, D, dcgc));
    ok(bd_cu_gemm(dev->blas, 0, 1, N, K, D, -2.0f, dsg, D, 0, dcent, D, 0, 0.0f, dscores, K, 0, 1));
    ok(bd_cu_argmin(dscores, dcgc, N, K, dassign));
    down(got, dassign, sizeof got);
    assert_memory_equal(got, ref, sizeof got);
    /* ties: the lowest index wins */
    float scores[3 * 4] = {1, 0, 0, 2, /* */ 5, 5, 5, 5, /* */ 3, 2, 1, 1};
    float zero[4] = {0};
    int32_t tied[3];
    float *ds = up(scores, sizeof scores), *dz = up(zero, sizeof zero);
    ok(bd_cu_argmin(ds, dz, 3, 4, dassign));
    down(tied, dassign, sizeof tied);
    assert_int_equal(tied[0], 1);
    assert_int_equal(tied[1], 0);
    assert_int_equal(tied[2], 2);
    release(ds, sizeof scores);
    release(dz, sizeof zero);
    release(dsub, sizeof(float) * N * D);
    release(dg, sizeof gf);
    release(dcent, sizeof cent);
    release(dsg, sizeof(float) * N * D);
    release(dcg, sizeof cent);
    release(dcgc, sizeof(float) * K);
    release(dscores, sizeof(float) * N * K);
    release(dassign, sizeof got);
    bd_gram_free(&gr);
    free(sub);
}

static void test_mstep_sums(void **state)
{
    (void)state;
    enum { N = 1001, D = 7, K = 13 };
    float *sub = rand_floats(N * D, 21, -3, 3);
    int32_t assign[N];
    for (int i = 0; i < N; i++)
        assign[i] = (int32_t)((i * 7919) % (K - 1)); /* cluster K-1 stays empty */
    double ref[K * D] = {0};
    int64_t count[K] = {0};
    for (int i = 0; i < N; i++) {
        for (int t = 0; t < D; t++)
            ref[assign[i] * D + t] += sub[i * D + t];
        count[assign[i]]++;
    }
    float *dsub = up(sub, sizeof(float) * N * D);
    int32_t *da = up(assign, sizeof assign);
    double *ds = gpu(sizeof(double) * K * D);
    unsigned long long *dn = gpu(sizeof(unsigned long long) * K), got_n[K];
    float *dm = gpu(sizeof(float) * K * D), means[K * D], ref_means[K * D];
    ok(bd_cu_cluster_sums(dsub, da, N, D, K, ds, dn));
    ok(bd_cu_cluster_means(ds, dn, K, D, dm));
    down(got_n, dn, sizeof got_n);
    down(means, dm, sizeof means);
    for (int c = 0; c < K; c++) {
        assert_int_equal((int64_t)got_n[c], count[c]);
        for (int t = 0; t < D; t++)
            ref_means[c * D + t] = count[c] ? (float)(ref[c * D + t] / (double)count[c]) : 0.0f;
    }
    assert_close(means, ref_means, K * D, 1e-6, "M-step means");
    release(dsub, sizeof(float) * N * D);
    release(da, sizeof assign);
    release(ds, sizeof(double) * K * D);
    release(dn, sizeof(unsigned long long) * K);
    release(dm, sizeof(float) * K * D);
    free(sub);
}

/* The whole fit: bd_device_pq_fit against bd_pq_fit, same seed. */
static void test_em_fit(void **state)
{
    (void)state;
    enum { N = 2000, D = 4, K = 16 };
    bd_gram gr;
    float *sub = separated(N, D, K, 31, &gr);
    bd_pq_options opt = {.k = K, .iters = 30, .seed = 5, .tol = 1e-5};
    bd_pq_result cpu, gpu_res;
    ok(bd_pq_fit(sub, N, &gr, &opt, NULL, &cpu));
    ok(bd_device_pq_fit(dev, sub, N, &gr, &opt, NULL, &gpu_res));
    assert_int_equal(gpu_res.iters, cpu.iters);
    assert_memory_equal(gpu_res.assign, cpu.assign, sizeof(int32_t) * N);
    assert_close(gpu_res.centroids, cpu.centroids, K * D, 1e-6, "EM centroids");
    for (int i = 0; i < cpu.iters; i++)
        assert_true(fabs(gpu_res.objective[i] - cpu.objective[i]) <= 1e-6 * cpu.objective[i] + 1e-12);
    bd_pq_result_free(&cpu);
    bd_pq_result_free(&gpu_res);
    bd_gram_free(&gr);
    free(sub);
}

/* Gather and decode against bd_pq_gather and bd_pq_scatter(bd_pq_decode). */
static void test_pq_layout(void **state)
{
    (void)state;
    enum { ROWS = 6, LEN = 12, D = 3, M = LEN / D, N = ROWS * M, K = 5 };
    float *w = rand_floats(ROWS * LEN, 41, -1, 1), *cent = rand_floats(K * D, 42, -1, 1);
    int32_t codes[N];
    for (int i = 0; i < N; i++)
        codes[i] = (i * 3) % K;
    float *dw = up(w, sizeof(float) * ROWS * LEN), *dc = up(cent, sizeof(float) * K * D);
    int32_t *dcodes = up(codes, sizeof codes);
    float *dout = gpu(sizeof(float) * ROWS * LEN), ref[ROWS * LEN], got[ROWS * LEN], sub[N * D];
    for (int transposed = 0; transposed < 2; transposed++) {
        bd_pq_layout lay = {ROWS, LEN, D, M, N, transposed};
        bd_pq_gather(&lay, w, ref);
        ok(bd_cu_pq_gather(dw, ROWS, LEN, transposed, dout));
        down(got, dout, sizeof got);
        assert_memory_equal(got, ref, sizeof got);
        bd_pq_decode(cent, D, codes, N, sub);
        bd_pq_scatter(&lay, sub, ref);
        ok(bd_cu_pq_decode(dc, dcodes, ROWS, LEN, D, transposed, dout));
        down(got, dout, sizeof got);
        assert_memory_equal(got, ref, sizeof got);
    }
    release(dw, sizeof(float) * ROWS * LEN);
    release(dc, sizeof(float) * K * D);
    release(dcodes, sizeof codes);
    release(dout, sizeof(float) * ROWS * LEN);
    free(w);
    free(cent);
}

/* ---- ops, forward and backward ---------------------------------------------------- */

/* Node n of g, run on the CPU (bd_grad_forward / bd_grad_backward) and on
 * the GPU (bd_dop_forward / bd_dop_backward) on the same inputs; the
 * output and the gradients of the inputs in want (NULL: none) agree within
 * tol. Inputs at or after host_from are the graph's initializers. */
static void check_op(bd_graph *g, bd_node *n, bd_tensor **in, const unsigned char *want,
                     int bn_train, double tol)
{
    const char *what = n->op;
    bd_grad_ctx ctx = {.bn_train = bn_train};
    bd_tensor *out[2] = {NULL, NULL};
    bd_saved saved;
    ok(bd_grad_forward(g, n, in, out, &saved, &ctx));
    bd_dt *din_gpu[BD_TEST_MAX_IO] = {NULL}, *dins[BD_TEST_MAX_IO] = {NULL}, *dout = NULL;
    bd_dt *dsaved[BD_DSAVED];
    for (int k = 0; k < n->ninputs; k++)
        if (in[k] && in[k]->dtype == BD_F32)
            ok(bd_dt_upload(dev, in[k], &dins[k]));
    bd_dop_args a = {.dev = dev, .g = g, .n = n, .in = dins, .bn_train = bn_train};
    ok(bd_dop_forward(&a, &dout, dsaved));
    bd_tensor *y;
    ok(bd_dt_download(dout, &y));
    assert_int_equal(y->ndim, out[0]->ndim);
    assert_memory_equal(y->dims, out[0]->dims, (size_t)y->ndim * sizeof *y->dims);
    bd_test_assert_close(y, out[0]->data, tol, what);
    if (want) {
        bd_tensor *dy = bd_test_rand_f32(out[0]->ndim, out[0]->dims, 77, -1, 1);
        bd_tensor *dout_cpu[1] = {dy}, *din_cpu[BD_TEST_MAX_IO] = {NULL};
        ok(bd_grad_backward(g, n, in, out, &saved, dout_cpu, want, din_cpu, &ctx));
        bd_dt *ddy;
        ok(bd_dt_upload(dev, dy, &ddy));
        ok(bd_dop_backward(&a, dout, dsaved, ddy, want, din_gpu));
        for (int k = 0; k < n->ninputs; k++) {
            if (!want[k])
                continue;
            bd_tensor *d;
            ok(bd_dt_download(din_gpu[k], &d));
            char label[64];
            snprintf(label, sizeof label, "%s: gradient of input %d", what, k);
            assert_int_equal(bd_tensor_count(d), bd_tensor_count(din_cpu[k]));
            bd_test_assert_close(d, din_cpu[k]->data, tol, label);
            bd_tensor_free(d);
            bd_tensor_free(din_cpu[k]);
            bd_dt_free(din_gpu[k]);
        }
        bd_dt_free(ddy);
        bd_tensor_free(dy);
    }
    bd_tensor_free(y);
    bd_dt_free(dout);
    for (int k = 0; k < BD_DSAVED; k++)
        bd_dt_free(dsaved[k]);
    for (int k = 0; k < n->ninputs; k++)
        bd_dt_free(dins[k]);
    bd_tensor_free(out[0]);
    bd_tensor_free(out[1]);
    bd_saved_free(&saved);
}

static void free_inputs(bd_tensor **in, int n)
{
    for (int k = 0; k < n; k++)
        bd_tensor_free(in[k]);
}

/* Sets input k of g's node to be the initializer t (the graph takes a copy). */
static void constant_input(bd_graph *g, const bd_node *n, int k, const bd_tensor *t)
{
    bd_tensor *copy;
    ok(bd_tensor_clone(&copy, t));
    bd_graph_set_init(g, n->inputs[k], copy);
}

static void check_conv(int64_t c, int64_t m, int64_t group, int64_t k, int64_t stride,
                       int64_t dil, const int64_t *pads, int bias)
{
    bd_graph *g;
    bd_node *n = bd_test_node(&g, 13, "Conv", bias ? 3 : 2, 1);
    bd_test_attr_int(n, "group", group);
    bd_test_attr_ints(n, "strides", 2, (int64_t[]){stride, stride});
    bd_test_attr_ints(n, "dilations", 2, (int64_t[]){dil, dil});
    bd_test_attr_ints(n, "pads", 4, pads);
    bd_tensor *in[3] = {bd_test_rand_f32(BD_TEST_DIMS(3, c, 9, 7), 1, -1, 1),
                        bd_test_rand_f32(BD_TEST_DIMS(m, c / group, k, k), 2, -1, 1),
                        bias ? bd_test_rand_f32(BD_TEST_DIMS(m), 3, -1, 1) : NULL};
    unsigned char want[3] = {1, 1, (unsigned char)bias};
    check_op(g, n, in, want, 0, 1e-5);
    free_inputs(in, 3);
    bd_graph_free(g);
}

static void test_conv(void **state)
{
    (void)state;
    check_conv(4, 6, 1, 3, 1, 1, (int64_t[]){1, 1, 1, 1}, 1);  /* plain 3x3, stride 1 */
    check_conv(6, 4, 2, 3, 2, 1, (int64_t[]){1, 0, 2, 1}, 0);  /* grouped, strided, uneven */
    check_conv(5, 5, 5, 3, 2, 2, (int64_t[]){2, 2, 2, 2}, 1);  /* depthwise, dilated */
    check_conv(8, 3, 1, 1, 1, 1, (int64_t[]){0, 0, 0, 0}, 1);  /* pointwise */
}

static void check_gemm(int ta, int tb, int cdims)
{
    bd_graph *g;
    bd_node *n = bd_test_node(&g, 13, "Gemm", 3, 1);
    bd_test_attr_int(n, "transA", ta);
    bd_test_attr_int(n, "transB", tb);
    bd_test_attr_float(n, "alpha", 0.75f);
    bd_test_attr_float(n, "beta", 0.5f);
    enum { M = 5, K = 11, N = 3 };
    bd_tensor *in[3] = {
        ta ? bd_test_rand_f32(BD_TEST_DIMS(K, M), 4, -1, 1)
           : bd_test_rand_f32(BD_TEST_DIMS(M, K), 4, -1, 1),
        tb ? bd_test_rand_f32(BD_TEST_DIMS(N, K), 5, -1, 1)
           : bd_test_rand_f32(BD_TEST_DIMS(K, N), 5, -1, 1),
        cdims == 1 ? bd_test_rand_f32(BD_TEST_DIMS(N), 6, -1, 1)
                   : bd_test_rand_f32(BD_TEST_DIMS(M, N), 6, -1, 1)};
    check_op(g, n, in, (unsigned char[]){1, 1, 1}, 0, 1e-5);
    free_inputs(in, 3);
    bd_graph_free(g);
}

static void test_gemm_op(void **state)
{
    (void)state;
    for (int ta = 0; ta < 2; ta++)
        for (int tb = 0; tb < 2; tb++)
            check_gemm(ta, tb, 1 + (ta ^ tb));
}

static void test_elementwise(void **state)
{
    (void)state;
    bd_graph *g;
    /* Add, broadcasting [3, 1, 1] against [2, 3, 4, 5] */
    bd_node *n = bd_test_node(&g, 13, "Add", 2, 1);
    bd_tensor *in[3] = {bd_test_rand_f32(BD_TEST_DIMS(2, 3, 4, 5), 1, -1, 1),
                        bd_test_rand_f32(BD_TEST_DIMS(3, 1, 1), 2, -1, 1), NULL};
    check_op(g, n, in, (unsigned char[]){1, 1}, 0, 1e-5);
    free_inputs(in, 2);
    bd_graph_free(g);
    /* Add of two same-shaped values (the residual) */
    n = bd_test_node(&g, 13, "Add", 2, 1);
    in[0] = bd_test_rand_f32(BD_TEST_DIMS(2, 3, 5), 3, -1, 1);
    in[1] = bd_test_rand_f32(BD_TEST_DIMS(2, 3, 5), 4, -1, 1);
    check_op(g, n, in, (unsigned char[]){1, 1}, 0, 1e-5);
    free_inputs(in, 2);
    bd_graph_free(g);
    /* Relu */
    n = bd_test_node(&g, 13, "Relu", 1, 1);
    in[0] = bd_test_rand_f32(BD_TEST_DIMS(3, 7, 11), 5, -1, 1);
    check_op(g, n, in, (unsigned char[]){1}, 0, 1e-5);
    free_inputs(in, 1);
    bd_graph_free(g);
    /* Clip with constant bounds (MobileNetV2's ReLU6) */
    n = bd_test_node(&g, 13, "Clip", 3, 1);
    in[0] = bd_test_rand_f32(BD_TEST_DIMS(3, 7, 11), 6, -8, 8);
    in[1] = bd_test_rand_f32(BD_TEST_SCALAR, 7, 0, 0);
    in[2] = bd_test_rand_f32(BD_TEST_SCALAR, 8, 6, 6);
    constant_input(g, n, 1, in[1]);
    constant_input(g, n, 2, in[2]);
    check_op(g, n, in, (unsigned char[]){1, 0, 0}, 0, 1e-5);
    free_inputs(in, 3);
    bd_graph_free(g);
}

static void test_sum_axpy_sgd(void **state)
{
    (void)state;
    /* the sum back to a broadcast shape, against bd_grad_sum_into */
    int64_t sdims[4] = {2, 3, 4, 5}, ddims[3] = {3, 1, 5};
    bd_tensor *src = bd_test_rand_f32(4, sdims, 9, -1, 1);
    float ref[15], got[15];
    bd_grad_sum_into(src, 3, ddims, 0.5f, ref);
    float *ds = up(src->data, bd_tensor_nbytes(src)), *dd = gpu(sizeof got);
    ok(bd_cu_sum_to(4, sdims, ds, 3, ddims, 0.5f, dd));
    down(got, dd, sizeof got);
    assert_close(got, ref, 15, 1e-5, "sum_to");
    /* axpy, SGD and the loss share's scale against their formulas */
    enum { N = 301 };
    float *p = rand_floats(N, 10, -1, 1), *v = rand_floats(N, 11, -1, 1),
          *gr = rand_floats(N, 12, -1, 1), pr[N], vr[N], pg[N], vg[N], sr[N], sg[N];
    float *dp = up(p, sizeof pr), *dv = up(v, sizeof vr), *dg = up(gr, sizeof vr);
    ok(bd_cu_sgd(dp, dv, dg, N, 0.1f, 0.9f, 1e-4f));
    ok(bd_cu_axpy(N, 2.0f, dg, dv));
    ok(bd_cu_scale(dg, N, 13.0 / 32.0));
    for (int i = 0; i < N; i++) {
        vr[i] = 0.9f * v[i] + gr[i] + 1e-4f * p[i];
        pr[i] = p[i] - 0.1f * vr[i];
        vr[i] += 2.0f * gr[i];
        sr[i] = (float)(gr[i] * (13.0 / 32.0));
    }
    down(pg, dp, sizeof pg);
    down(vg, dv, sizeof vg);
    down(sg, dg, sizeof sg);
    assert_close(pg, pr, N, 1e-6, "sgd");
    assert_close(vg, vr, N, 1e-6, "axpy");
    assert_close(sg, sr, N, 1e-7, "scale");
    release(ds, bd_tensor_nbytes(src));
    release(dd, sizeof got);
    release(dp, sizeof pr);
    release(dv, sizeof vr);
    release(dg, sizeof vr);
    bd_tensor_free(src);
    free(p);
    free(v);
    free(gr);
}

static void check_pool(const char *op, int64_t k, int64_t stride, const int64_t *pads, int ceil,
                       int include_pad)
{
    bd_graph *g;
    bd_node *n = bd_test_node(&g, 13, op, 1, 1);
    bd_test_attr_ints(n, "kernel_shape", 2, (int64_t[]){k, k});
    bd_test_attr_ints(n, "strides", 2, (int64_t[]){stride, stride});
    bd_test_attr_ints(n, "pads", 4, pads);
    bd_test_attr_int(n, "ceil_mode", ceil);
    if (include_pad)
        bd_test_attr_int(n, "count_include_pad", 1);
    bd_tensor *in[1] = {bd_test_rand_f32(BD_TEST_DIMS(2, 3, 9, 8), 13, -1, 1)};
    check_op(g, n, in, (unsigned char[]){1}, 0, 1e-5);
    free_inputs(in, 1);
    bd_graph_free(g);
}

static void test_pool(void **state)
{
    (void)state;
    check_pool("MaxPool", 3, 2, (int64_t[]){1, 1, 1, 1}, 0, 0); /* ResNet's stem pool */
    check_pool("MaxPool", 2, 2, (int64_t[]){0, 0, 0, 0}, 1, 0); /* ceil_mode */
    check_pool("AveragePool", 3, 2, (int64_t[]){1, 0, 1, 2}, 0, 0);
    check_pool("AveragePool", 3, 1, (int64_t[]){1, 1, 1, 1}, 0, 1);
    bd_graph *g;
    bd_node *n = bd_test_node(&g, 13, "GlobalAveragePool", 1, 1);
    bd_tensor *in[1] = {bd_test_rand_f32(BD_TEST_DIMS(2, 5, 7, 3), 14, -1, 1)};
    check_op(g, n, in, (unsigned char[]){1}, 0, 1e-5);
    free_inputs(in, 1);
    bd_graph_free(g);
}

static void test_batchnorm(void **state)
{
    (void)state;
    for (int train = 0; train < 2; train++) {
        bd_graph *g;
        bd_node *n = bd_test_node(&g, 15, "BatchNormalization", 5, 1);
        int64_t c = 5;
        bd_tensor *in[5] = {bd_test_rand_f32(BD_TEST_DIMS(3, 5, 4, 7), 15, -3, 3),
                            bd_test_rand_f32(1, &c, 16, 0.5f, 2),
                            bd_test_rand_f32(1, &c, 17, -1, 1),
                            bd_test_rand_f32(1, &c, 18, -1, 1),
                            bd_test_rand_f32(1, &c, 19, 0.1f, 2)};
        check_op(g, n, in, (unsigned char[]){1, 1, 1, 0, 0}, train, 1e-5);
        free_inputs(in, 5);
        bd_graph_free(g);
    }
    /* the running statistics' update against train.c's formula */
    enum { C = 9 };
    float *rm = rand_floats(C, 20, -1, 1), *rv = rand_floats(C, 21, 0.5f, 2);
    float *mean = rand_floats(C, 22, -1, 1), *var = rand_floats(C, 23, 0.5f, 2), rmr[C], rvr[C],
          got[C];
    float *drm = up(rm, sizeof rmr), *drv = up(rv, sizeof rvr), *dm = up(mean, sizeof rmr),
          *dv = up(var, sizeof rvr);
    const double count = 84, unbias = 84.0 / 83.0;
    double *dcount = up(&count, sizeof count);
    ok(bd_cu_bn_running(drm, drv, dm, dv, C, 0.1f, dcount));
    for (int i = 0; i < C; i++) {
        rmr[i] = 0.9f * rm[i] + 0.1f * mean[i];
        rvr[i] = 0.9f * rv[i] + 0.1f * (float)(var[i] * unbias);
    }
    down(got, drm, sizeof got);
    assert_close(got, rmr, C, 1e-6, "running mean");
    down(got, drv, sizeof got);
    assert_close(got, rvr, C, 1e-6, "running variance");
    release(drm, sizeof rmr);
    release(drv, sizeof rvr);
    release(dm, sizeof rmr);
    release(dv, sizeof rvr);
    release(dcount, sizeof count);
    free(rm);
    free(rv);
    free(mean);
    free(var);
}

static void test_softmax_losses(void **state)
{
    (void)state;
    const char *ops[2] = {"Softmax", "LogSoftmax"};
    for (int i = 0; i < 2; i++)
        for (int axis = 1; axis <= 2; axis++) {
            bd_graph *g;
            bd_node *n = bd_test_node(&g, 13, ops[i], 1, 1);
            bd_test_attr_int(n, "axis", axis);
            bd_tensor *in[1] = {bd_test_rand_f32(BD_TEST_DIMS(3, 7, 5), 24, -4, 4)};
            check_op(g, n, in, (unsigned char[]){1}, 0, 1e-5);
            free_inputs(in, 1);
            bd_graph_free(g);
        }
    /* the losses, per row in double as loss.c, their gradients */
    enum { N = 6, C = 11 };
    bd_tensor *s = bd_test_rand_f32(BD_TEST_DIMS(N, C), 25, -5, 5);
    bd_tensor *t = bd_test_rand_f32(BD_TEST_DIMS(N, C), 26, -5, 5);
    int labels[N];
    int32_t labels32[N];
    for (int i = 0; i < N; i++)
        labels[i] = labels32[i] = (i * 5) % C;
    float *ds = up(s->data, bd_tensor_nbytes(s)), *dt = up(t->data, bd_tensor_nbytes(t));
    float *dg = gpu(bd_tensor_nbytes(s)), got[N * C];
    int32_t *dl = up(labels32, sizeof labels32);
    double *drows = gpu(sizeof(double) * N), rows[N];
    for (int kind = 0; kind < 3; kind++) { /* KL, cross-entropy, and with label smoothing */
        double ref_loss, loss = 0;
        bd_tensor *ref_grad;
        if (kind == 0) {
            ok(bd_loss_kl(s, t, &ref_loss, &ref_grad));
            ok(bd_cu_loss_kl(ds, dt, N, C, drows, dg));
        } else {
            ok(bd_loss_ce_smooth(s, labels, kind == 2 ? 0.1 : 0, &ref_loss, &ref_grad));
            ok(bd_cu_loss_ce(ds, dl, N, C, kind == 2 ? 0.1 : 0, drows, dg));
        }
        down(rows, drows, sizeof rows);
        for (int i = 0; i < N; i++)
            loss += rows[i];
        loss /= N;
        assert_true(fabs(loss - ref_loss) <= 1e-9 * (fabs(ref_loss) + 1));
        down(got, dg, sizeof got);
        bd_test_assert_close(ref_grad, got, 1e-5, kind ? "cross-entropy gradient" : "KL gradient");
        bd_tensor_free(ref_grad);
    }
    release(ds, bd_tensor_nbytes(s));
    release(dt, bd_tensor_nbytes(t));
    release(dg, bd_tensor_nbytes(s));
    release(dl, sizeof labels32);
    release(drows, sizeof(double) * N);
    bd_tensor_free(s);
    bd_tensor_free(t);
}

static void test_reshapes(void **state)
{
    (void)state;
    bd_graph *g;
    bd_node *n = bd_test_node(&g, 13, "Flatten", 1, 1);
    bd_tensor *in[2] = {bd_test_rand_f32(BD_TEST_DIMS(2, 3, 1, 1), 27, -1, 1), NULL};
    check_op(g, n, in, (unsigned char[]){1}, 0, 1e-7);
    free_inputs(in, 1);
    bd_graph_free(g);
    n = bd_test_node(&g, 13, "Reshape", 2, 1);
    in[0] = bd_test_rand_f32(BD_TEST_DIMS(2, 3, 4), 28, -1, 1);
    in[1] = BD_TEST_INTS(0, -1);
    constant_input(g, n, 1, in[1]);
    check_op(g, n, in, (unsigned char[]){1, 0}, 0, 1e-7);
    free_inputs(in, 2);
    bd_graph_free(g);
}

/* ---- end to end on the Fashion-MNIST ResNet ---------------------------------------- */

static bd_tensor *fmnist_batch(const bd_graph *g, int n)
{
    bd_preprocess pp;
    bd_dataset *d;
    ok(bd_model_preprocess(g, &pp));
    ok(bd_dataset_open(&d, "fmnist:test", &pp));
    int64_t idx[64];
    int labels[64];
    for (int i = 0; i < n; i++)
        idx[i] = i * 13;
    bd_tensor *x;
    ok(bd_dataset_batch(d, idx, n, &x, labels));
    bd_dataset_free(d);
    return x;
}

static void test_e2e_logits(void **state)
{
    (void)state;
    bd_graph *g;
    ok(bd_onnx_load(bd_test_path("examples/fmnist/resnet_bn.onnx"), &g));
    bd_tensor *x = fmnist_batch(g, 32), *ref, *got;
    bd_exec *ex;
    bd_dexec *dx;
    ok(bd_exec_new(&ex, g, BD_EXEC_FUSE));
    ok(bd_dexec_new(dev, g, &dx));
    ok(bd_exec_run1(ex, x, &ref));
    ok(bd_dexec_run1(dx, x, &got));
    assert_int_equal(bd_tensor_count(got), bd_tensor_count(ref));
    bd_test_assert_close(got, ref->data, 1e-4, "resnet_bn logits");
    /* a weight changed on the host reaches the GPU after a sync */
    bd_tensor *w = g->values[bd_graph_find(g, "fc.weight")].init;
    ((float *)w->data)[0] += 1.0f;
    bd_tensor_free(ref);
    bd_tensor_free(got);
    ok(bd_exec_run1(ex, x, &ref));
    ok(bd_dexec_sync(dx));
    ok(bd_dexec_run1(dx, x, &got));
    bd_test_assert_close(got, ref->data, 1e-4, "logits after a change");
    bd_tensor_free(ref);
    bd_tensor_free(got);
    bd_dexec_free(dx);
    bd_exec_free(ex);
    bd_tensor_free(x);
    bd_graph_free(g);
}

/* Two workspaces on the same model, data and seed; the second on the GPU. */
static void workspaces(bd_workspace **cpu, bd_workspace **gpu_ws, int gpu_now)
{
    bd_workspace **ws[2] = {cpu, gpu_ws};
    for (int i = 0; i < 2; i++) {
        ok(bd_ws_new(ws[i]));
        ok(bd_ws_load(*ws[i], bd_test_path("examples/fmnist/resnet_bn.onnx")));
        ok(bd_ws_data(*ws[i], BD_DATA_CALIB, "fmnist:train", 256));
        bd_ws_seed(*ws[i], 3);
    }
    if (gpu_now)
        ok(bd_ws_device(*gpu_ws, "cuda"));
    char desc[192];
    if (gpu_now)
        assert_non_null(strstr(bd_ws_device_describe(*gpu_ws, desc, sizeof desc), "cuda"));
}

static void test_e2e_gram(void **state)
{
    (void)state;
    bd_graph *g;
    ok(bd_onnx_load(bd_test_path("examples/fmnist/resnet_bn.onnx"), &g));
    bd_layer *ls;
    int nl;
    ok(bd_layers_find(g, &ls, &nl));
    bd_preprocess pp;
    bd_dataset *d;
    ok(bd_model_preprocess(g, &pp));
    ok(bd_dataset_open(&d, "fmnist:train", &pp));
    /* 256 images hold out 32, whose rows fill the 4096 held-out rows
     * exactly: the same rows on both, whatever order threads add them in */
    bd_calib_options co = {.images = 256, .batch = 64, .seed = 1};
    bd_calib *cc, *gc;
    ok(bd_calib_new(&cc, g, d, &co));
    co.device = dev;
    ok(bd_calib_new(&gc, g, d, &co));
    for (int i = 0; i < nl; i++) { /* every layer: convs of every kind, and the fc */
        bd_capture a, b;
        int64_t dd = ls[i].kh * ls[i].kw > 1 ? ls[i].kh * ls[i].kw : 4;
        ok(bd_calib_capture(cc, &ls[i], dd, 0, NULL, &a));
        ok(bd_calib_capture(gc, &ls[i], dd, 0, NULL, &b));
        assert_int_equal(a.gram.rows, b.gram.rows);
        assert_int_equal(a.gram.blocks, b.gram.blocks);
        assert_int_equal(a.nheld, b.nheld);
        double scale = 0, err = 0;
        for (int64_t e = 0; e < dd * dd; e++) {
            scale = fmax(scale, fabs(a.gram.g[e]));
            err = fmax(err, fabs(a.gram.g[e] - b.gram.g[e]));
        }
        if (!(err <= 1e-4 * scale))
            fail_msg("layer %s: Gram matrices differ by %g of %g", ls[i].name, err, scale);
        /* the held-out rows, compared through the metric they feed (their
         * order depends on the CPU's threads): W against W perturbed */
        const bd_tensor *w = g->values[ls[i].weight].init;
        const size_t count = (size_t)bd_tensor_count(w);
        float *w_hat = rand_floats(count, 50 + (uint64_t)i, -0.1f, 0.1f);
        for (size_t e = 0; e < count; e++)
            w_hat[e] += ((const float *)w->data)[e];
        double ea = bd_relative_error(&a, &ls[i], w->data, w_hat),
               eb = bd_relative_error(&b, &ls[i], w->data, w_hat);
        if (!(fabs(ea - eb) <= 1e-4 * ea))
            fail_msg("layer %s: relative errors %g (CPU) and %g (GPU)", ls[i].name, ea, eb);
        free(w_hat);
        bd_capture_free(&a);
        bd_capture_free(&b);
    }
    bd_calib_free(cc);
    bd_calib_free(gc);
    bd_dataset_free(d);
    free(ls);
    bd_graph_free(g);
}

static void test_e2e_quantize(void **state)
{
    (void)state;
    bd_workspace *a, *b;
    workspaces(&a, &b, 1);
    int l = bd_ws_layer_index(a, "layer3.0.conv2");
    ok(bd_ws_quantize_at(a, l, 20, NULL));
    ok(bd_ws_quantize_at(b, l, 20, NULL));
    const bd_qlayer *qa = &bd_ws_layer_at(a, l)->q, *qb = &bd_ws_layer_at(b, l)->q;
    assert_int_equal(qa->n, qb->n);
    int64_t differ = 0;
    for (int64_t i = 0; i < qa->n; i++)
        differ += qa->codes[i] != qb->codes[i];
    if (differ * 100 > qa->n)
        fail_msg("%lld of %lld codes differ (more than 1%%)", (long long)differ,
                 (long long)qa->n);
    if (!(fabs(qa->rel_error - qb->rel_error) <= 1e-3 * qa->rel_error))
        fail_msg("relative errors %g (CPU) and %g (GPU)", qa->rel_error, qb->rel_error);
    /* and evaluation of the quantized students agrees */
    bd_accuracy ta, sa, tb, sb;
    ok(bd_ws_data(a, BD_DATA_EVAL, "fmnist:test", 512));
    ok(bd_ws_data(b, BD_DATA_EVAL, "fmnist:test", 512));
    ok(bd_ws_eval(a, 0, &ta, &sa));
    ok(bd_ws_eval(b, 0, &tb, &sb));
    assert_true(fabs(ta.top1 - tb.top1) <= 0.2 + 1e-9); /* one image of 512 may flip */
    bd_ws_free(a);
    bd_ws_free(b);
}

static void test_e2e_finetune(void **state)
{
    (void)state;
    bd_workspace *a, *b;
    workspaces(&a, &b, 0);
    /* the same codebook on both (quantized on the CPU), then tuned on each */
    int l = bd_ws_layer_index(a, "layer2.0.conv2");
    ok(bd_ws_quantize_at(a, l, 10, NULL));
    ok(bd_ws_quantize_at(b, l, 10, NULL));
    assert_memory_equal(bd_ws_layer_at(a, l)->q.codes, bd_ws_layer_at(b, l)->q.codes,
                        (size_t)bd_ws_layer_at(a, l)->q.n * sizeof(int32_t));
    ok(bd_ws_device(b, "cuda"));
    for (int bn_train = 0; bn_train < 2; bn_train++) {
        bd_finetune_options o = {.global = 1, .iters = 10, .batch = 32, .lr = 0.01f,
                                 .momentum = 0.9f, .wd = 1e-4f, .bn_train = bn_train,
                                 .tune_bias = bn_train};
        bd_finetune_report ra, rb;
        ok(bd_ws_finetune(a, "layer*", &o, &ra));
        ok(bd_ws_finetune(b, "layer*", &o, &rb));
        assert_int_equal(ra.steps, rb.steps);
        if (!(fabs(ra.first_loss - rb.first_loss) <= 1e-3 * ra.first_loss &&
              fabs(ra.last_loss - rb.last_loss) <= 1e-3 * ra.last_loss))
            fail_msg("losses: CPU %g .. %g, GPU %g .. %g", ra.first_loss, ra.last_loss,
                     rb.first_loss, rb.last_loss);
        const bd_qlayer *qa = &bd_ws_layer_at(a, l)->q, *qb = &bd_ws_layer_at(b, l)->q;
        assert_close(qb->centroids, qa->centroids, (size_t)qa->k * qa->d, 1e-3, "tuned centroids");
    }
    bd_ws_free(a);
    bd_ws_free(b);
}

/* ---- training ------------------------------------------------------------------------ */

/* Training's kernels against the CPU's code, to the bit: SGD (with and
 * without Nesterov) as bd_training_sgd, the hits, and Quant-Noise's block
 * drop and int8 fake quantization as bd_noise_apply writes them, on every
 * layer of the ResNet, from bd_noise_mask's masks and the CPU's grid. */
static void test_training_kernels(void **state)
{
    (void)state;
    enum { N = 301 };
    for (int nesterov = 0; nesterov < 2; nesterov++) {
        float *p = rand_floats(N, 40, -1, 1), *v = rand_floats(N, 41, -1, 1),
              *gr = rand_floats(N, 42, -1, 1), pg[N], vg[N];
        float *dp = up(p, sizeof pg), *dv = up(v, sizeof vg), *dg = up(gr, sizeof vg);
        ok(bd_cu_training_sgd(dp, dv, dg, N, 0.1f, 0.9f, 5e-4f, nesterov));
        bd_training_sgd(p, v, gr, N, 0.1f, 0.9f, 5e-4f, nesterov);
        down(pg, dp, sizeof pg);
        down(vg, dv, sizeof vg);
        assert_memory_equal(pg, p, sizeof pg);
        assert_memory_equal(vg, v, sizeof vg);
        release(dp, sizeof pg);
        release(dv, sizeof vg);
        release(dg, sizeof vg);
        free(p);
        free(v);
        free(gr);
    }
    const float logits[3][4] = {{1, 3, 3, 0}, {0, 0, 0, 0}, {2, 1, 0, 5}};
    const int32_t labels[3] = {1, 0, 2};
    int32_t hit[3];
    float *dx = up(logits, sizeof logits);
    int32_t *dl = up(labels, sizeof labels), *dh = gpu(sizeof hit);
    ok(bd_cu_hits(dx, dl, 3, 4, dh));
    down(hit, dh, sizeof hit);
    assert_true(hit[0] == 1 && hit[1] == 1 && hit[2] == 0); /* the first maximum counts */
    release(dx, sizeof logits);
    release(dl, sizeof labels);
    release(dh, sizeof hit);

    bd_graph *g;
    ok(bd_onnx_load(bd_test_path("examples/fmnist/resnet_bn.onnx"), &g));
    bd_layer *ls;
    int nl;
    ok(bd_layers_find(g, &ls, &nl));
    const char *specs[2] = {"pq:p=0.3", "int8:p=0.5"};
    for (int k = 0; k < 2; k++) {
        bd_noise_spec spec;
        bd_noise *nz;
        ok(bd_noise_parse("test", specs[k], &spec));
        ok(bd_noise_new(&nz, g, ls, nl, NULL, &spec));
        ok(bd_noise_refit(nz, g, 3, 5));
        float **got = calloc((size_t)nl, sizeof *got);
        int noised = 0;
        for (int l = 0; l < nl; l++) {
            if (!bd_noise_block(nz, l))
                continue;
            noised++;
            const bd_tensor *w = g->values[ls[l].weight].init;
            bd_pq_layout lay;
            ok(bd_pq_layout_init(&ls[l], bd_noise_block(nz, l), &lay));
            const bd_cu_blocks b = {lay.rows, lay.row_len, lay.d, lay.transposed};
            uint8_t *mask = malloc((size_t)lay.n);
            bd_noise_mask(nz, l, 3, 5, mask);
            float *dw = up(w->data, bd_tensor_nbytes(w));
            uint8_t *dm = up(mask, (size_t)lay.n);
            if (spec.kind == BD_NOISE_PQ) {
                ok(bd_cu_noise_drop(&b, dm, (float)(1.0 / (1.0 - spec.p)), dw));
            } else {
                const bd_qlayer *q = bd_noise_grid(nz, l);
                float *sc = up(q->scales, (size_t)q->nscales * sizeof(float));
                float *zs = q->zeros ? up(q->zeros, (size_t)q->nscales * sizeof(float)) : NULL;
                ok(bd_cu_noise_int(&b, dm, sc, zs, q->nscales, (float)(1 << (q->ints.bits - 1)),
                                   q->k, dw));
                release(sc, (size_t)q->nscales * sizeof(float));
                release(zs, (size_t)q->nscales * sizeof(float));
            }
            got[l] = malloc(bd_tensor_nbytes(w));
            down(got[l], dw, bd_tensor_nbytes(w));
            release(dw, bd_tensor_nbytes(w));
            release(dm, (size_t)lay.n);
            free(mask);
        }
        assert_true(noised > 5);
        ok(bd_noise_apply(nz, g, 3, 5));
        for (int l = 0; l < nl; l++)
            if (got[l]) {
                const bd_tensor *w = g->values[ls[l].weight].init;
                if (memcmp(got[l], w->data, bd_tensor_nbytes(w)) != 0)
                    fail_msg("%s: layer %s's noisy weight differs from the CPU's", specs[k],
                             ls[l].name);
                free(got[l]);
            }
        bd_noise_restore(nz, g, NULL);
        free(got);
        bd_noise_free(nz);
    }
    free(ls);
    bd_graph_free(g);
}

/* Quantizes layer `name` of g by weight k-means (k 16, d its kernel's
 * size) and decodes it into g: the same codebook from the same weights. */
static bd_qlayer *quantize_one(bd_graph *g, const char *name)
{
    bd_layer *ls;
    int nl, l = -1;
    ok(bd_layers_find(g, &ls, &nl));
    for (int i = 0; i < nl; i++)
        if (strcmp(ls[i].name, name) == 0)
            l = i;
    assert_true(l >= 0);
    bd_qlayer *q = calloc((size_t)nl, sizeof *q);
    bd_pq_layout lay;
    ok(bd_pq_layout_init(&ls[l], 9, &lay));
    float *sub = malloc((size_t)(lay.n * lay.d) * sizeof *sub);
    bd_pq_gather(&lay, g->values[ls[l].weight].init->data, sub);
    bd_gram id;
    ok(bd_gram_identity(&id, 9));
    bd_pq_options po = {.k = 16, .iters = 20, .seed = 1, .restarts = 1};
    bd_pq_result res = {0};
    ok(bd_pq_fit(sub, lay.n, &id, &po, NULL, &res));
    bd_pq_round_fp16(res.centroids, res.k * 9);
    q[l] = (bd_qlayer){.format = BD_FMT_PQ, .d = 9, .k = res.k, .n = lay.n,
                       .centroids = res.centroids, .codes = res.assign};
    res.centroids = NULL;
    res.assign = NULL;
    ok(bd_qlayer_decode(&q[l], &ls[l], g->values[ls[l].weight].init->data));
    bd_pq_result_free(&res);
    bd_gram_free(&id);
    free(sub);
    free(ls);
    return q;
}

/* A copy of q (per layer of g) for another run, whose codebooks it tunes. */
static bd_qlayer *copy_quantized(const bd_graph *g, const bd_qlayer *q)
{
    bd_layer *ls;
    int nl;
    ok(bd_layers_find(g, &ls, &nl));
    bd_qlayer *c = calloc((size_t)nl, sizeof *c);
    for (int i = 0; i < nl; i++)
        if (q[i].k > 0) {
            c[i] = q[i];
            const size_t kd = (size_t)q[i].k * (size_t)q[i].d * sizeof(float);
            const size_t codes = (size_t)q[i].n * sizeof(int32_t);
            c[i].centroids = malloc(kd);
            c[i].codes = malloc(codes);
            memcpy(c[i].centroids, q[i].centroids, kd);
            memcpy(c[i].codes, q[i].codes, codes);
        }
    free(ls);
    return c;
}

static void free_quantized(const bd_graph *g, bd_qlayer *q)
{
    bd_layer *ls;
    int nl;
    ok(bd_layers_find(g, &ls, &nl));
    for (int i = 0; q && i < nl; i++)
        bd_qlayer_free(&q[i]);
    free(q);
    free(ls);
}

/* How far b's float initializers are from a's, relative to how far a's
 * moved from w0's (the training's own steps): sqrt(|b - a|^2 / |a - w0|^2). */
static double trained_gap(const bd_graph *w0, const bd_graph *a, const bd_graph *b)
{
    double gap = 0, moved = 0;
    for (int v = 0; v < w0->nvalues; v++) {
        const bd_tensor *t0 = w0->values[v].init;
        if (!t0 || t0->dtype != BD_F32)
            continue;
        const float *x0 = t0->data, *xa = a->values[v].init->data, *xb = b->values[v].init->data;
        for (int64_t e = 0; e < bd_tensor_count(t0); e++) {
            gap += ((double)xb[e] - xa[e]) * ((double)xb[e] - xa[e]);
            moved += ((double)xa[e] - x0[e]) * ((double)xa[e] - x0[e]);
        }
    }
    assert_true(moved > 0);
    return sqrt(gap / moved);
}

static bd_dataset *fmnist_train(const bd_graph *g, bd_preprocess *pp)
{
    bd_dataset *d;
    ok(bd_model_preprocess(g, pp));
    ok(bd_dataset_open(&d, "fmnist:train", pp));
    return d;
}

static bd_training_options few_steps(const char *noise, int epochs)
{
    bd_training_options o;
    bd_training_options_init(&o);
    o.epochs = epochs;
    o.steps = 6 / epochs;
    o.batch = 32;
    o.lr = 0.05f;
    o.nesterov = 1;
    o.smoothing = 0.1f;
    o.seed = 11;
    ok(bd_noise_parse("test", noise, &o.noise));
    return o;
}

/* Six steps on the GPU against the same steps on the CPU: the same
 * options, seed, masks and data, in `epochs` epochs; quantized:
 * layer2.0.conv2 is a PQ layer training its centroids. The trained weights
 * (BatchNorm's running statistics with them) differ by at most tol of how
 * far training moved them, and each epoch's loss by tol of itself: the
 * forward's 1e-6 differences (summation order) carried through six steps.
 * On an H200 (2026-12-04): 8.9e-6 plain, 1.4e-4 with block drop (whose
 * 1/(1-p) and dropped blocks make the steps larger and less smooth),
 * 4.3e-6 int8, 2.7e-5 with the PQ layer. */
static void check_training(const char *noise, int epochs, int quantized, double tol)
{
    bd_graph *w0, *a, *b;
    ok(bd_onnx_load(bd_test_path("examples/fmnist/resnet_bn.onnx"), &w0));
    bd_qlayer *qa = quantized ? quantize_one(w0, "layer2.0.conv2") : NULL;
    bd_qlayer *qb = quantized ? copy_quantized(w0, qa) : NULL;
    ok(bd_graph_clone(&a, w0));
    ok(bd_graph_clone(&b, w0));
    bd_preprocess pp;
    bd_dataset *d = fmnist_train(w0, &pp);
    bd_training_options o = few_steps(noise, epochs);
    bd_training_io io = {.train = d, .pp = &pp, .q = qa};
    bd_training_report ra, rb;
    ok(bd_training_run(a, &o, &io, &ra));
    io.q = qb;
    ok(bd_training_run_with(bd_device_training_start, dev, b, &o, &io, &rb));
    const double gap = trained_gap(w0, a, b);
    print_message("%s%s: GPU - CPU = %.3g of the training's change; last loss %.6f (CPU), "
                  "%.6f (GPU)\n",
                  noise, quantized ? " with a PQ layer" : "", gap,
                  ra.per_epoch[epochs - 1].loss, rb.per_epoch[epochs - 1].loss);
    if (!(gap <= tol))
        fail_msg("%s: the GPU's weights differ from the CPU's by %g of the change (tolerance %g)",
                 noise, gap, tol);
    for (int e = 0; e < epochs; e++)
        if (!(fabs(ra.per_epoch[e].loss - rb.per_epoch[e].loss) <= tol * ra.per_epoch[e].loss))
            fail_msg("%s: epoch %d's loss %g (CPU), %g (GPU)", noise, e + 1, ra.per_epoch[e].loss,
                     rb.per_epoch[e].loss);
    if (quantized) {
        bd_layer *ls;
        int nl;
        ok(bd_layers_find(w0, &ls, &nl));
        for (int l = 0; l < nl; l++)
            if (qa[l].k > 0) {
                assert_int_equal(qa[l].k, qb[l].k);
                assert_close(qb[l].centroids, qa[l].centroids, (size_t)qa[l].k * qa[l].d, 1e-4,
                             "trained centroids");
            }
        free(ls);
    }
    bd_training_report_free(&ra);
    bd_training_report_free(&rb);
    free_quantized(w0, qa);
    free_quantized(w0, qb);
    bd_dataset_free(d);
    bd_graph_free(a);
    bd_graph_free(b);
    bd_graph_free(w0);
}

static void test_e2e_training(void **state)
{
    (void)state;
    check_training("none", 2, 0, 1e-4);
}

static void test_e2e_training_pq(void **state)
{
    (void)state;
    check_training("pq:p=0.2", 2, 0, 1e-3);
}

static void test_e2e_training_int8(void **state)
{
    (void)state;
    check_training("int8:p=0.5", 2, 0, 1e-4);
}

/* One epoch and one fit of the codebooks, at step 0 on the same weights:
 * weight k-means is not continuous in its input (its seeding and stopping
 * rule), and a refit on weights that differ in their last bits can give
 * another codebook, on the CPU alone too (a 1e-6 nudge of the weights moved
 * six steps with refresh=1 by a third of their change). The refits
 * themselves are the CPU's code; the resumed run below checks the GPU's
 * use of them. A block almost equidistant from two centroids may be
 * assigned either way, hence the looser bound. */
static void test_e2e_training_pq_centroid(void **state)
{
    (void)state;
    check_training("pq-centroid:p=0.3", 1, 0, 1e-2);
}

static void test_e2e_training_codebook(void **state)
{
    (void)state;
    check_training("none", 2, 1, 2e-4);
}

static atomic_int cancel_flag;

static void stop_at_step_4(void *user, const char *stage, int64_t done, int64_t total,
                           const char *message, double metric)
{
    (void)user, (void)total, (void)message, (void)metric;
    if (strcmp(stage, "train") == 0 && done == 4)
        atomic_store(&cancel_flag, 1);
}

/* store and load: a GPU run stopped in its second epoch and resumed from
 * the first epoch's checkpoint ends where an uninterrupted GPU run does
 * (the parameters, momentum, running statistics, a PQ layer's codebook
 * and its momentum, and the noise's refits at the epoch's start, every
 * step here), up to the GPU's own run-to-run differences (atomic adds in
 * MaxPool's backward and the centroid sums); identical on an H200. */
static void test_e2e_training_resume(void **state)
{
    (void)state;
    bd_graph *w0, *a, *b, *c;
    ok(bd_onnx_load(bd_test_path("examples/fmnist/resnet_bn.onnx"), &w0));
    bd_qlayer *qa = quantize_one(w0, "layer2.0.conv2"), *qb = copy_quantized(w0, qa),
              *qc = copy_quantized(w0, qa);
    ok(bd_graph_clone(&a, w0));
    ok(bd_graph_clone(&b, w0));
    ok(bd_graph_clone(&c, w0));
    bd_preprocess pp;
    bd_dataset *d = fmnist_train(w0, &pp);
    bd_training_options o = few_steps("pq-centroid:p=0.3,refresh=1", 2);
    char ca[600], cb[600];
    snprintf(ca, sizeof ca, "%s/gpu_a.ckpt", bd_test_tmpdir());
    snprintf(cb, sizeof cb, "%s/gpu_b.ckpt", bd_test_tmpdir());
    bd_training_io io = {.train = d, .pp = &pp, .q = qa, .checkpoint = ca};
    bd_training_report r;
    ok(bd_training_run_with(bd_device_training_start, dev, a, &o, &io, &r));
    bd_training_report_free(&r);
    io.q = qb;
    io.checkpoint = cb;
    io.progress = &(bd_progress){stop_at_step_4, NULL, &cancel_flag};
    atomic_store(&cancel_flag, 0);
    assert_int_equal(bd_training_run_with(bd_device_training_start, dev, b, &o, &io, &r),
                     BD_ECANCELED);
    io.progress = NULL;
    io.q = qc;
    io.resume = 1;
    ok(bd_training_run_with(bd_device_training_start, dev, c, &o, &io, &r));
    assert_int_equal(r.first, 2);
    bd_training_report_free(&r);
    const double gap = trained_gap(w0, a, c);
    print_message("resumed - uninterrupted (GPU) = %.3g of the training's change\n", gap);
    if (!(gap <= 1e-4))
        fail_msg("the resumed GPU run differs from the uninterrupted one by %g of the change",
                 gap);
    bd_layer *ls;
    int nl;
    ok(bd_layers_find(w0, &ls, &nl));
    for (int l = 0; l < nl; l++)
        if (qa[l].k > 0)
            assert_close(qc[l].centroids, qa[l].centroids, (size_t)qa[l].k * qa[l].d, 1e-4,
                         "resumed centroids");
    free(ls);
    free_quantized(w0, qa);
    free_quantized(w0, qb);
    free_quantized(w0, qc);
    bd_dataset_free(d);
    bd_graph_free(a);
    bd_graph_free(b);
    bd_graph_free(c);
    bd_graph_free(w0);
}

static int setup(void **state)
{
    (void)state;
    if (bd_device_open("cuda", &dev) != BD_OK) {
        print_error("a GPU is visible but cannot be opened: %s\n", bd_error_message());
        return -1;
    }
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    bd_device_close(dev);
    return 0;
}

int main(void)
{
    int count = 0;
    if (bd_cu_device_count(&count) != BD_OK || count < 1) {
        printf("SKIP: no CUDA device visible (%s)\n",
               count < 1 && bd_error_message()[0] ? bd_error_message() : "none found");
        return 77;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_gemm),
        cmocka_unit_test(test_gram_blocks),
        cmocka_unit_test(test_im2col),
        cmocka_unit_test(test_col2im),
        cmocka_unit_test(test_estep_argmin),
        cmocka_unit_test(test_mstep_sums),
        cmocka_unit_test(test_em_fit),
        cmocka_unit_test(test_pq_layout),
        cmocka_unit_test(test_conv),
        cmocka_unit_test(test_gemm_op),
        cmocka_unit_test(test_elementwise),
        cmocka_unit_test(test_sum_axpy_sgd),
        cmocka_unit_test(test_pool),
        cmocka_unit_test(test_batchnorm),
        cmocka_unit_test(test_softmax_losses),
        cmocka_unit_test(test_reshapes),
        cmocka_unit_test(test_e2e_logits),
        cmocka_unit_test(test_e2e_gram),
        cmocka_unit_test(test_e2e_quantize),
        cmocka_unit_test(test_e2e_finetune),
        cmocka_unit_test(test_training_kernels),
        cmocka_unit_test(test_e2e_training),
        cmocka_unit_test(test_e2e_training_pq),
        cmocka_unit_test(test_e2e_training_int8),
        cmocka_unit_test(test_e2e_training_pq_centroid),
        cmocka_unit_test(test_e2e_training_codebook),
        cmocka_unit_test(test_e2e_training_resume),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}

#endif
