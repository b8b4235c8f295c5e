/* Weight training and Quant-Noise, against truths computed here: a step of
 * a tiny linear model worked out by hand in double (the noisy weight, the
 * straight-through and chain-rule gradients, SGD), finite differences of
 * the loss for the kept blocks' 1/(1-p), QAT by hand for p = 1, the mask's
 * rate and block layout, PyTorch's recorded schedule and label-smoothed
 * loss; p = 0 equals plain training bit for bit, and a run resumed from a
 * checkpoint ends bit-identical to an uninterrupted one. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bd_test.h"
#include "grad.h"
#include "int_fit.h"
#include "onnx_io.h"
#include "pq.h"
#include "training.h"

enum { N = 8, ROWS = 3, COLS = 8, D = 2 }; /* 8 images of 2 x 4 pixels, 3 classes */

/* ---- a tiny model and its data -------------------------------------------- */

static int add_value(bd_graph *g, const char *name)
{
    int id;
    assert_int_equal(bd_graph_value(g, name, &id), BD_OK);
    return id;
}

/* x [n, 1, 2, 4] -> Flatten -> Gemm(W [3, 8], b [3], transB) -> logits */
static bd_graph *tiny_model(void)
{
    bd_graph *g;
    assert_int_equal(bd_graph_new(&g), BD_OK);
    g->opset = 13;
    int x = add_value(g, "x");
    g->values[x].dtype = BD_F32;
    g->values[x].ndim = 4;
    memcpy(g->values[x].dims, (int64_t[]){-1, 1, 2, 4}, 4 * sizeof(int64_t));
    g->inputs = malloc(sizeof *g->inputs);
    g->inputs[0] = x;
    g->ninputs = 1;
    bd_tensor *w, *b;
    assert_int_equal(bd_tensor_new(&w, BD_F32, 2, (int64_t[]){ROWS, COLS}, "W"), BD_OK);
    assert_int_equal(bd_tensor_new(&b, BD_F32, 1, (int64_t[]){ROWS}, "b"), BD_OK);
    bd_test_fill_random(w->data, ROWS * COLS, 11, -1, 1);
    bd_test_fill_random(b->data, ROWS, 12, -0.5f, 0.5f);
    bd_graph_set_init(g, add_value(g, "fc.weight"), w);
    bd_graph_set_init(g, add_value(g, "fc.bias"), b);
    bd_node *n;
    const char *fin[] = {"x"}, *fout[] = {"flat"};
    assert_int_equal(bd_graph_add_node(g, "flatten", "Flatten", "", 1, fin, 1, fout, &n), BD_OK);
    const char *gin[] = {"flat", "fc.weight", "fc.bias"}, *gout[] = {"logits"};
    assert_int_equal(bd_graph_add_node(g, "fc", "Gemm", "", 3, gin, 1, gout, &n), BD_OK);
    bd_attr a = {.name = "transB", .type = BD_ATTR_INT, .i = 1};
    assert_int_equal(bd_node_add_attr(n, &a), BD_OK);
    g->outputs = malloc(sizeof *g->outputs);
    g->outputs[0] = bd_graph_find(g, "logits");
    g->noutputs = 1;
    return g;
}

static unsigned char pixels[N][2][4];
static int labels[N];

/* IDX files of the N images and labels, opened as a dataset. */
static bd_dataset *tiny_data(void)
{
    char img[512], lab[512], spec[1100];
    snprintf(img, sizeof img, "%s/img.idx", bd_test_tmpdir());
    snprintf(lab, sizeof lab, "%s/lab.idx", bd_test_tmpdir());
    unsigned char lb[N];
    for (int i = 0; i < N; i++) {
        labels[i] = (i * 7 + 1) % ROWS;
        lb[i] = (unsigned char)labels[i];
        for (int j = 0; j < 8; j++)
            pixels[i][j / 4][j % 4] = (unsigned char)((i * 37 + j * 91 + i * j * 13) % 256);
    }
    assert_int_equal(bd_test_write_idx(img, lab, N, 2, 4, &pixels[0][0][0], lb), 0);
    snprintf(spec, sizeof spec, "idx:%s,%s", img, lab);
    bd_preprocess pp;
    bd_preprocess_default(&pp);
    bd_dataset *d;
    assert_int_equal(bd_dataset_open(&d, spec, &pp), BD_OK);
    return d;
}

static double input(int i, int j) { return pixels[i][j / 4][j % 4] / 255.0; }

/* The tiny model's plan: pq d = 2, k = 4 (or int8). */
static bd_layer_plan tiny_plan(int int_bits)
{
    bd_layer_plan p = {.quantize = 1, .format = BD_FMT_PQ, .d = D, .k = 4};
    if (int_bits) {
        p.format = BD_FMT_INT;
        p.ints = bd_plan_int_default(int_bits);
    }
    return p;
}

/* One plain SGD step over the whole batch: no momentum, decay, schedule or
 * augmentation, so the step is lr times the gradient. */
static bd_training_options one_step(void)
{
    bd_training_options o;
    bd_training_options_init(&o);
    o.steps = 1;
    o.batch = N;
    o.lr = 0.5f;
    o.momentum = 0;
    o.wd = 0;
    o.schedule = BD_SCHED_CONSTANT;
    o.seed = 7;
    assert_int_equal(bd_augment_parse("test", "none", &o.augment), BD_OK);
    return o;
}

static float *weights(bd_graph *g) { return g->values[bd_graph_find(g, "fc.weight")].init->data; }
static float *bias(bd_graph *g) { return g->values[bd_graph_find(g, "fc.bias")].init->data; }

/* The loss of the tiny model with weight wt (double, ROWS x COLS) on all N
 * images, and its gradient with respect to wt and b. */
static double loss_of(const double *wt, const float *b, double *dw, double *db)
{
    double loss = 0;
    if (dw)
        memset(dw, 0, ROWS * COLS * sizeof *dw);
    if (db)
        memset(db, 0, ROWS * sizeof *db);
    for (int i = 0; i < N; i++) {
        double z[ROWS], mx = -INFINITY, sum = 0;
        for (int r = 0; r < ROWS; r++) {
            z[r] = b[r];
            for (int j = 0; j < COLS; j++)
                z[r] += wt[r * COLS + j] * input(i, j);
            mx = fmax(mx, z[r]);
        }
        for (int r = 0; r < ROWS; r++)
            sum += exp(z[r] - mx);
        loss += (log(sum) + mx - z[labels[i]]) / N;
        for (int r = 0; dw && r < ROWS; r++) {
            const double dz = (exp(z[r] - mx) / sum - (r == labels[i])) / N;
            db[r] += dz;
            for (int j = 0; j < COLS; j++)
                dw[r * COLS + j] += dz * input(i, j);
        }
    }
    return loss;
}

/* The hit mask of the tiny model's layer at step 0 (seed 7). */
static void tiny_mask(const bd_graph *g, const bd_layer_plan *plan, const bd_noise_spec *spec,
                      uint8_t *mask)
{
    bd_layer *layers;
    int nl;
    bd_noise *nz;
    assert_int_equal(bd_layers_find(g, &layers, &nl), BD_OK);
    assert_int_equal(nl, 1);
    assert_int_equal(bd_noise_new(&nz, g, layers, nl, plan, spec), BD_OK);
    assert_int_equal(bd_noise_block(nz, 0), spec->kind == BD_NOISE_INT ? 1 : D);
    bd_noise_mask(nz, 0, 7, 0, mask);
    bd_noise_free(nz);
    free(layers);
}

static bd_training_io tiny_io(const bd_dataset *d, const bd_layer_plan *plan)
{
    static bd_preprocess pp;
    bd_preprocess_default(&pp);
    return (bd_training_io){.train = d, .pp = &pp, .plan = plan};
}

/* ---- the tests ----------------------------------------------------------------- */

/* Block drop, p = 0.5: the step the trainer took is the step worked out
 * here: hit blocks zeroed and kept ones doubled in the forward; the
 * master weight gets the kept blocks' gradient doubled (chain rule) and the
 * hit blocks' gradient straight through, and is never zeroed itself. */
static void test_block_drop_step_by_hand(void **state)
{
    (void)state;
    bd_graph *g = tiny_model();
    bd_dataset *d = tiny_data();
    bd_layer_plan plan = tiny_plan(0);
    bd_training_options o = one_step();
    assert_int_equal(bd_noise_parse("test", "pq:p=0.5", &o.noise), BD_OK);
    uint8_t mask[ROWS * COLS / D];
    tiny_mask(g, &plan, &o.noise, mask);
    int hits = 0;
    for (int i = 0; i < ROWS * COLS / D; i++)
        hits += mask[i];
    assert_true(hits > 0 && hits < ROWS * COLS / D); /* both paths are exercised */

    float w0[ROWS * COLS], b0[ROWS];
    memcpy(w0, weights(g), sizeof w0);
    memcpy(b0, bias(g), sizeof b0);
    double wt[ROWS * COLS], dw[ROWS * COLS], db[ROWS];
    for (int r = 0; r < ROWS; r++)
        for (int j = 0; j < COLS; j++)
            wt[r * COLS + j] = mask[r * (COLS / D) + j / D] ? 0 : 2.0 * w0[r * COLS + j];
    loss_of(wt, b0, dw, db);

    bd_training_io io = tiny_io(d, &plan);
    bd_training_report rep;
    assert_int_equal(bd_training_run(g, &o, &io, &rep), BD_OK);
    const float *w1 = weights(g), *b1 = bias(g);
    for (int r = 0; r < ROWS; r++)
        for (int j = 0; j < COLS; j++) {
            const int hit = mask[r * (COLS / D) + j / D];
            const double grad = (hit ? 1.0 : 2.0) * dw[r * COLS + j];
            assert_float_equal(w1[r * COLS + j], w0[r * COLS + j] - 0.5 * grad, 2e-6);
            if (hit) /* the noise was transient: the master moved from its own value */
                assert_true(w1[r * COLS + j] != 0.0f || w0[r * COLS + j] - 0.5 * grad == 0);
        }
    for (int r = 0; r < ROWS; r++)
        assert_float_equal(b1[r], b0[r] - 0.5 * db[r], 2e-6);
    assert_int_equal(rep.epochs, 1);
    bd_training_report_free(&rep);
    bd_dataset_free(d);
    bd_graph_free(g);
}

/* The gradient the trainer applied to the master weight, checked by finite
 * differences of the loss as a function of the master (kept entries: the
 * mask fixed, the weight scaled by 1/(1-p)) or of the noisy weight (hit
 * entries: straight through). A tolerance of 1e-4 is tight: leaving out the
 * 1/(1-p) = 1.25 at p = 0.2 moves kept entries by 25 %. */
static void test_noise_gradient_finite_differences(void **state)
{
    (void)state;
    bd_graph *g = tiny_model();
    bd_dataset *d = tiny_data();
    bd_layer_plan plan = tiny_plan(0);
    bd_training_options o = one_step();
    o.lr = 1e-3f;
    assert_int_equal(bd_noise_parse("test", "pq:p=0.2", &o.noise), BD_OK);
    uint8_t mask[ROWS * COLS / D];
    tiny_mask(g, &plan, &o.noise, mask);
    float w0[ROWS * COLS], b0[ROWS];
    memcpy(w0, weights(g), sizeof w0);
    memcpy(b0, bias(g), sizeof b0);
    bd_training_io io = tiny_io(d, &plan);
    bd_training_report rep;
    assert_int_equal(bd_training_run(g, &o, &io, &rep), BD_OK);
    bd_training_report_free(&rep);
    const double keep = 1.0 / 0.8, h = 1e-4;
    int checked_kept = 0, checked_hit = 0;
    for (int e = 0; e < ROWS * COLS; e++) {
        const int hit = mask[(e / COLS) * (COLS / D) + (e % COLS) / D];
        const double applied = (w0[e] - weights(g)[e]) / 1e-3;
        double wp[ROWS * COLS], wm[ROWS * COLS];
        for (int k = 0; k < ROWS * COLS; k++) {
            const int hk = mask[(k / COLS) * (COLS / D) + (k % COLS) / D];
            wp[k] = wm[k] = hk ? 0 : keep * w0[k];
        }
        /* d/dw of L(noise(w)): kept entries through the scale; hit entries
         * straight through, i.e. d/dw~ */
        const double step = hit ? h : keep * h;
        wp[e] += step;
        wm[e] -= step;
        const double fd = (loss_of(wp, b0, NULL, NULL) - loss_of(wm, b0, NULL, NULL)) / (2 * h);
        assert_true(fabs(fd - applied) <= 1e-4 * fmax(1, fabs(fd)) + 2e-3 * fabs(fd));
        checked_kept += !hit;
        checked_hit += hit;
    }
    assert_true(checked_kept > 0 && checked_hit > 0);
    bd_dataset_free(d);
    bd_graph_free(g);
}

/* p = 1 with int8 noise is QAT: the forward on the fake-quantized weight
 * (the layer's per-channel min/max grid), the gradient straight through to
 * the master. */
static void test_int8_p1_is_qat(void **state)
{
    (void)state;
    bd_graph *g = tiny_model();
    bd_dataset *d = tiny_data();
    bd_layer_plan plan = tiny_plan(8);
    bd_training_options o = one_step();
    assert_int_equal(bd_noise_parse("test", "int8:p=1", &o.noise), BD_OK);
    float w0[ROWS * COLS], b0[ROWS], w_hat[ROWS * COLS];
    memcpy(w0, weights(g), sizeof w0);
    memcpy(b0, bias(g), sizeof b0);
    bd_feedback_layer fl = {.w = w0, .rows = ROWS, .L = COLS, .groups = 1};
    bd_qlayer q = {0};
    bd_int_spec spec = bd_plan_int_default(8);
    assert_int_equal(bd_int_fit(&fl, &spec, NULL, BD_OBJ_WEIGHT, NULL, &q, w_hat), BD_OK);
    double wt[ROWS * COLS], dw[ROWS * COLS], db[ROWS];
    int differs = 0;
    for (int k = 0; k < ROWS * COLS; k++) {
        wt[k] = w_hat[k];
        differs += w_hat[k] != w0[k];
    }
    assert_true(differs > 0);
    loss_of(wt, b0, dw, db);
    bd_training_io io = tiny_io(d, &plan);
    bd_training_report rep;
    assert_int_equal(bd_training_run(g, &o, &io, &rep), BD_OK);
    for (int k = 0; k < ROWS * COLS; k++)
        assert_float_equal(weights(g)[k], w0[k] - 0.5 * dw[k], 2e-6);
    bd_training_report_free(&rep);
    bd_qlayer_free(&q);
    bd_dataset_free(d);
    bd_graph_free(g);
}

/* With p = 0 the noise changes nothing: bit for bit the plain run, with
 * momentum, Nesterov, decay, a schedule and augmentation on. */
static void test_p0_is_plain_training(void **state)
{
    (void)state;
    bd_graph *a = tiny_model(), *b = tiny_model();
    bd_dataset *d = tiny_data();
    bd_layer_plan plan = tiny_plan(0);
    bd_training_options o;
    bd_training_options_init(&o);
    o.epochs = 2;
    o.steps = 3;
    o.batch = 4;
    o.nesterov = 1;
    o.schedule = BD_SCHED_ONECYCLE;
    assert_int_equal(bd_augment_parse("test", "crop=1,flip", &o.augment), BD_OK);
    bd_training_io io = tiny_io(d, &plan);
    bd_training_report ra, rb;
    float w0[ROWS * COLS];
    memcpy(w0, weights(a), sizeof w0);
    assert_int_equal(bd_training_run(a, &o, &io, &ra), BD_OK);
    assert_int_equal(bd_noise_parse("test", "pq:p=0", &o.noise), BD_OK);
    assert_int_equal(bd_training_run(b, &o, &io, &rb), BD_OK);
    assert_memory_not_equal(w0, weights(a), sizeof w0); /* it trained */
    bd_test_assert_same_floats(a, b);
    bd_training_report_free(&ra);
    bd_training_report_free(&rb);
    bd_dataset_free(d);
    bd_graph_free(a);
    bd_graph_free(b);
}

/* The mask's rate is p within 5 standard deviations over 100 steps of a
 * 64 x 64 x 3 x 3 conv, and block drop zeroes exactly whole d = 9 blocks
 * along the rows (pq.h's layout), scales the rest by 1/(1-p), and restores
 * the master bit for bit. */
static void test_mask_rate_and_layout(void **state)
{
    (void)state;
    bd_graph *g;
    assert_int_equal(bd_graph_new(&g), BD_OK);
    bd_tensor *w;
    assert_int_equal(bd_tensor_new(&w, BD_F32, 4, (int64_t[]){64, 64, 3, 3}, "w"), BD_OK);
    bd_test_fill_random(w->data, (size_t)bd_tensor_count(w), 5, -1, 1);
    int wid = add_value(g, "conv.weight");
    bd_graph_set_init(g, wid, w);
    bd_node *n;
    const char *in[] = {"x", "conv.weight"}, *out[] = {"y"};
    assert_int_equal(bd_graph_add_node(g, "conv", "Conv", "", 2, in, 1, out, &n), BD_OK);
    bd_layer *layers;
    int nl;
    assert_int_equal(bd_layers_find(g, &layers, &nl), BD_OK);
    assert_int_equal(nl, 1);
    bd_layer_plan plan = {.quantize = 1, .format = BD_FMT_PQ, .d = 9, .k = 256};
    bd_noise_spec spec;
    assert_int_equal(bd_noise_parse("test", "pq:p=0.1", &spec), BD_OK);
    bd_noise *nz;
    assert_int_equal(bd_noise_new(&nz, g, layers, nl, &plan, &spec), BD_OK);
    const int64_t blocks = bd_noise_blocks(nz, 0);
    assert_int_equal(blocks, 64 * 64);
    uint8_t *mask = malloc((size_t)blocks);
    float *orig = malloc(64 * 576 * sizeof *orig);
    memcpy(orig, w->data, 64 * 576 * sizeof *orig);
    int64_t hits = 0;
    const int steps = 100;
    for (int t = 0; t < steps; t++) {
        bd_noise_mask(nz, 0, 3, t, mask);
        for (int64_t b = 0; b < blocks; b++)
            hits += mask[b];
    }
    const double total = (double)blocks * steps, sd = sqrt(total * 0.1 * 0.9);
    assert_true(fabs((double)hits - 0.1 * total) < 5 * sd);
    /* two steps differ; the same step repeats */
    uint8_t *again = malloc((size_t)blocks);
    bd_noise_mask(nz, 0, 3, 1, again);
    bd_noise_mask(nz, 0, 3, 0, mask);
    assert_memory_not_equal(mask, again, (size_t)blocks);
    bd_noise_mask(nz, 0, 3, 0, again);
    assert_memory_equal(mask, again, (size_t)blocks);

    assert_int_equal(bd_noise_apply(nz, g, 3, 0), BD_OK);
    const float *noisy = g->values[wid].init->data;
    const float keep = (float)(1.0 / 0.9);
    for (int64_t r = 0; r < 64; r++)
        for (int64_t j = 0; j < 576; j++) {
            const int64_t e = r * 576 + j;
            if (mask[r * 64 + j / 9])
                assert_true(noisy[e] == 0.0f);
            else
                assert_true(noisy[e] == keep * orig[e]);
        }
    bd_noise_restore(nz, g, NULL);
    assert_memory_equal(g->values[wid].init->data, orig, 64 * 576 * sizeof *orig);
    free(again);
    free(mask);
    free(orig);
    bd_noise_free(nz);
    free(layers);
    bd_graph_free(g);
}

/* A quantized layer trains its centroids (iterative PQ between stages):
 * the step on each centroid is lr times the mean of its members' weight
 * gradients, worked out by hand, the weight is decoded from the centroids,
 * rounded to fp16 at the end; an int layer stays exactly as it was. */
static void test_quantized_layer_trains_centroids(void **state)
{
    (void)state;
    bd_graph *g = tiny_model();
    bd_dataset *d = tiny_data();
    bd_layer *layers;
    int nl;
    assert_int_equal(bd_layers_find(g, &layers, &nl), BD_OK);
    bd_pq_layout lay;
    assert_int_equal(bd_pq_layout_init(&layers[0], D, &lay), BD_OK);
    float sub[ROWS * COLS];
    bd_pq_gather(&lay, weights(g), sub);
    bd_gram id;
    assert_int_equal(bd_gram_identity(&id, D), BD_OK);
    bd_pq_options po = {.k = 4, .iters = 20, .seed = 1, .restarts = 1};
    bd_pq_result res = {0};
    assert_int_equal(bd_pq_fit(sub, lay.n, &id, &po, NULL, &res), BD_OK);
    bd_gram_free(&id);
    bd_pq_round_fp16(res.centroids, 4 * D);
    bd_qlayer q = {.format = BD_FMT_PQ, .d = D, .k = 4, .n = lay.n, .centroids = res.centroids,
                   .codes = res.assign};
    assert_int_equal(bd_qlayer_decode(&q, &layers[0], weights(g)), BD_OK);
    float c0[4 * D], b0[ROWS];
    memcpy(c0, res.centroids, sizeof c0);
    memcpy(b0, bias(g), sizeof b0);
    double wt[ROWS * COLS], dw[ROWS * COLS], db[ROWS];
    for (int k = 0; k < ROWS * COLS; k++)
        wt[k] = weights(g)[k];
    loss_of(wt, b0, dw, db);
    double cg[4 * D] = {0};
    int members[4] = {0};
    for (int64_t b = 0; b < lay.n; b++) {
        const int c = q.codes[b];
        members[c]++;
        for (int t = 0; t < D; t++) /* block b of row r: columns (b % 4) * 2 + t */
            cg[c * D + t] += dw[(b / (COLS / D)) * COLS + (b % (COLS / D)) * D + t];
    }
    bd_training_options o = one_step();
    bd_training_io io = tiny_io(d, NULL);
    io.q = &q;
    bd_training_report rep;
    assert_int_equal(bd_training_run(g, &o, &io, &rep), BD_OK);
    bd_training_report_free(&rep);
    int moved = 0;
    for (int c = 0; c < 4; c++)
        for (int t = 0; t < D; t++) {
            const double want = c0[c * D + t] - 0.5 * (members[c] ? cg[c * D + t] / members[c] : 0);
            assert_float_equal(q.centroids[c * D + t], want, 1e-3 * fabs(want) + 1e-6);
            moved += q.centroids[c * D + t] != c0[c * D + t];
        }
    assert_true(moved > 0);
    float decoded[ROWS * COLS];
    assert_int_equal(bd_qlayer_decode(&q, &layers[0], decoded), BD_OK);
    assert_memory_equal(decoded, weights(g), sizeof decoded);
    for (int r = 0; r < ROWS; r++)
        assert_float_equal(bias(g)[r], b0[r] - 0.5 * db[r], 2e-6);

    /* an int layer: its weight is no parameter */
    float w1[ROWS * COLS];
    memcpy(w1, weights(g), sizeof w1);
    bd_qlayer qi = {.format = BD_FMT_INT, .d = 1, .k = 256};
    io.q = &qi;
    assert_int_equal(bd_training_run(g, &o, &io, &rep), BD_OK);
    bd_training_report_free(&rep);
    assert_memory_equal(w1, weights(g), sizeof w1);
    bd_pq_result_free(&res);
    free(layers);
    bd_dataset_free(d);
    bd_graph_free(g);
}

static atomic_int cancel_flag;

static void stop_at_step_3(void *user, const char *stage, int64_t done, int64_t total,
                           const char *message, double metric)
{
    (void)user, (void)total, (void)message, (void)metric;
    if (strcmp(stage, "train") == 0 && done == 3)
        atomic_store(&cancel_flag, 1);
}

/* A run resumed from its first epoch's checkpoint ends bit-identical to an
 * uninterrupted one: a BatchNorm ResNet (running statistics), momentum,
 * one-cycle, augmentation and the exact PQ noise with its codebooks. */
static void test_resume_is_bit_identical(void **state)
{
    (void)state;
    bd_graph *a, *b;
    if (bd_onnx_load(bd_test_path("examples/fmnist/resnet_bn.onnx"), &a) != BD_OK)
        BD_TEST_SKIP("examples/fmnist/resnet_bn.onnx: %s", bd_error_message());
    assert_int_equal(bd_onnx_load(bd_test_path("examples/fmnist/resnet_bn.onnx"), &b), BD_OK);
    bd_preprocess pp = {.channels = 1, .mean = {0.2860f}, .std = {0.3530f}};
    bd_dataset *d;
    if (bd_dataset_open(&d, "fmnist:test", &pp) != BD_OK)
        BD_TEST_SKIP("Fashion-MNIST: %s", bd_error_message());
    bd_training_options o;
    bd_training_options_init(&o);
    o.epochs = 2;
    o.steps = 2;
    o.batch = 4;
    o.nesterov = 1;
    o.schedule = BD_SCHED_ONECYCLE;
    o.seed = 99;
    assert_int_equal(bd_noise_parse("test", "pq-centroid:p=0.3,refresh=1", &o.noise), BD_OK);
    char ca[600], cb[600];
    snprintf(ca, sizeof ca, "%s/a.ckpt", bd_test_tmpdir());
    snprintf(cb, sizeof cb, "%s/b.ckpt", bd_test_tmpdir());
    bd_training_io io = {.train = d, .pp = &pp, .checkpoint = ca};
    bd_training_report r;
    assert_int_equal(bd_training_run(a, &o, &io, &r), BD_OK);
    bd_training_report_free(&r);

    /* the second run is stopped one step into its second epoch, as a kill
     * would stop it: its checkpoint is the first epoch's */
    io.checkpoint = cb;
    io.progress = &(bd_progress){stop_at_step_3, NULL, &cancel_flag};
    atomic_store(&cancel_flag, 0);
    assert_int_equal(bd_training_run(b, &o, &io, &r), BD_ECANCELED);
    io.progress = NULL;
    bd_graph *c;
    assert_int_equal(bd_onnx_load(bd_test_path("examples/fmnist/resnet_bn.onnx"), &c), BD_OK);
    io.resume = 1;
    assert_int_equal(bd_training_run(c, &o, &io, &r), BD_OK);
    assert_int_equal(r.first, 2);
    assert_int_equal(r.epochs, 2);
    bd_training_report_free(&r);
    bd_test_assert_same_floats(a, c);

    /* another seed is refused, naming the checkpoint, and changes nothing */
    o.seed = 100;
    bd_graph *e;
    assert_int_equal(bd_graph_clone(&e, c), BD_OK);
    assert_int_equal(bd_training_run(c, &o, &io, &r), BD_EINVAL);
    assert_non_null(strstr(bd_error_message(), "b.ckpt"));
    bd_test_assert_same_floats(e, c);
    bd_graph_free(e);
    bd_graph_free(c);
    bd_dataset_free(d);
    bd_graph_free(a);
    bd_graph_free(b);
}

/* The one-cycle and cosine schedules against PyTorch's OneCycleLR(max_lr
 * 0.2, 100 steps, pct_start 0.25, div 10, final_div 100) and
 * CosineAnnealingLR(T_max 100), values recorded from torch 1.13. */
static void test_schedules_match_pytorch(void **state)
{
    (void)state;
    bd_training_options o;
    bd_training_options_init(&o);
    o.lr = 0.2f;
    o.schedule = BD_SCHED_ONECYCLE;
    const struct {
        int t;
        double lr, m;
    } oc[] = {{0, 0.02, 0.95},
              {10, 0.08670628594077313, 0.912940952255126},
              {24, 0.2, 0.85},
              {25, 0.19991237072687595, 0.850043858495057},
              {50, 0.14638327390847422, 0.8768351982440069},
              {99, 0.0002, 0.95}};
    for (size_t i = 0; i < sizeof oc / sizeof oc[0]; i++) {
        float lr, m;
        bd_training_schedule(&o, oc[i].t, 100, 10, &lr, &m);
        assert_float_equal(lr, oc[i].lr, 1e-6 * oc[i].lr + 1e-9);
        assert_float_equal(m, oc[i].m, 1e-6);
    }
    o.lr = 0.1f;
    o.schedule = BD_SCHED_COSINE;
    const double cs[][2] = {{0, 0.1}, {30, 0.0793892626146237}, {99, 2.4671981713420017e-05}};
    for (int i = 0; i < 3; i++) {
        float lr, m;
        bd_training_schedule(&o, (int64_t)cs[i][0], 100, 10, &lr, &m);
        assert_float_equal(lr, cs[i][1], 1e-6 * cs[i][1]);
    }
    o.schedule = BD_SCHED_STEP;
    o.step = 3;
    float lr, m;
    bd_training_schedule(&o, 29, 100, 10, &lr, &m); /* epoch 2: not yet */
    assert_float_equal(lr, 0.1, 1e-7);
    bd_training_schedule(&o, 30, 100, 10, &lr, &m); /* epoch 3 */
    assert_float_equal(lr, 0.01, 1e-8);
}

/* Label smoothing 0.2 against PyTorch's cross_entropy(label_smoothing=0.2). */
static void test_label_smoothing_matches_pytorch(void **state)
{
    (void)state;
    bd_tensor *x, *dx = NULL;
    assert_int_equal(bd_tensor_new(&x, BD_F32, 2, (int64_t[]){2, 3}, "x"), BD_OK);
    const float v[] = {1.0f, -2.0f, 0.5f, 0.1f, 0.2f, 3.0f};
    memcpy(x->data, v, sizeof v);
    const int y[] = {2, 0};
    double loss;
    assert_int_equal(bd_loss_ce_smooth(x, y, 0.2, &loss, &dx), BD_OK);
    assert_float_equal(loss, 1.9737658500671387, 1e-6);
    const double g[] = {0.2685411274433136,  -0.018303891643881798, -0.25023722648620605,
                        -0.4086776673793793, -0.006084613502025604, 0.4147622883319855};
    for (int i = 0; i < 6; i++)
        assert_float_equal(((float *)dx->data)[i], g[i], 1e-6);
    bd_tensor_free(dx);
    assert_int_equal(bd_loss_ce_smooth(x, y, 1.0, &loss, NULL), BD_EINVAL);
    bd_tensor_free(x);
}

/* Bad input: a clear message, and the model exactly as it was. */
static void test_bad_input_changes_nothing(void **state)
{
    (void)state;
    bd_noise_spec s;
    assert_int_equal(bd_noise_parse("t", "pq:p=1.5", &s), BD_EINVAL);
    assert_non_null(strstr(bd_error_message(), "[0, 1]"));
    assert_int_equal(bd_noise_parse("t", "pq", &s), BD_EINVAL);
    assert_non_null(strstr(bd_error_message(), "p="));
    assert_int_equal(bd_noise_parse("t", "int17:p=0.1", &s), BD_EINVAL);
    assert_int_equal(bd_noise_parse("t", "gauss:p=0.1", &s), BD_EINVAL);
    assert_non_null(strstr(bd_error_message(), "gauss"));
    assert_int_equal(bd_noise_parse("t", "int4:p=0.1,regime=small", &s), BD_EINVAL);

    bd_training_options o, before;
    bd_training_options_init(&o);
    before = o;
    assert_int_equal(bd_opt_set(bd_training_opts, &o, "train", "lr", "-1"), BD_EINVAL);
    assert_non_null(strstr(bd_error_message(), "lr"));
    assert_int_equal(bd_opt_set(bd_training_opts, &o, "train", "bogus", "1"), BD_EINVAL);
    assert_non_null(strstr(bd_error_message(), "bogus"));
    assert_int_equal(bd_opt_set(bd_training_opts, &o, "train", "schedule", "linear"), BD_EINVAL);
    assert_int_equal(bd_opt_set(bd_training_opts, &o, "train", "quant_noise", "pq:p=2"), BD_EINVAL);
    assert_memory_equal(&o, &before, sizeof o);
    assert_int_equal(bd_opt_set(bd_training_opts, &o, "train", "schedule", "onecycle"), BD_OK);
    assert_int_equal(o.schedule, BD_SCHED_ONECYCLE);

    /* int8 noise on a layer planned as pq */
    bd_graph *g = tiny_model();
    bd_dataset *d = tiny_data();
    bd_layer_plan plan = tiny_plan(0);
    o = one_step();
    assert_int_equal(bd_noise_parse("test", "int8:p=0.1", &o.noise), BD_OK);
    float w0[ROWS * COLS];
    memcpy(w0, weights(g), sizeof w0);
    bd_training_io io = tiny_io(d, &plan);
    bd_training_report rep;
    assert_int_equal(bd_training_run(g, &o, &io, &rep), BD_EINVAL);
    assert_non_null(strstr(bd_error_message(), "fc"));
    assert_memory_equal(w0, weights(g), sizeof w0);
    /* distillation without a teacher */
    o.noise.kind = BD_NOISE_NONE;
    o.loss = BD_LOSS_KL;
    assert_int_equal(bd_training_run(g, &o, &io, &rep), BD_EINVAL);
    assert_non_null(strstr(bd_error_message(), "teacher"));
    assert_memory_equal(w0, weights(g), sizeof w0);
    bd_dataset_free(d);
    bd_graph_free(g);
}

/* Flip twice with the same stream is the identity; crop pads with the
 * preprocessed value of black; re-initialisation follows PyTorch's bounds. */
static void test_augment_and_reinit(void **state)
{
    (void)state;
    bd_tensor *x;
    assert_int_equal(bd_tensor_new(&x, BD_F32, 4, (int64_t[]){16, 1, 5, 5}, "x"), BD_OK);
    bd_test_fill_random(x->data, 16 * 25, 3, 0, 1);
    float orig[16 * 25];
    memcpy(orig, x->data, sizeof orig);
    bd_augment flip, crop;
    assert_int_equal(bd_augment_parse("t", "flip", &flip), BD_OK);
    assert_int_equal(bd_augment_batch(&flip, NULL, x, 1, 0), BD_OK);
    int flipped = 0;
    for (int i = 0; i < 16; i++)
        flipped += memcmp(orig + i * 25, (float *)x->data + i * 25, 25 * sizeof(float)) != 0;
    assert_true(flipped > 0 && flipped < 16);
    assert_int_equal(bd_augment_batch(&flip, NULL, x, 1, 0), BD_OK);
    assert_memory_equal(orig, x->data, sizeof orig);

    bd_preprocess pp = {.channels = 1, .mean = {0.5f}, .std = {0.25f}};
    assert_int_equal(bd_augment_parse("t", "crop=2", &crop), BD_OK);
    assert_int_equal(bd_augment_batch(&crop, &pp, x, 9, 0), BD_OK);
    int black = 0;
    for (int i = 0; i < 16 * 25; i++)
        black += ((float *)x->data)[i] == -2.0f;
    assert_true(black > 0);
    assert_int_equal(bd_augment_parse("t", "crop=2,rrc", &crop), BD_EINVAL);
    bd_tensor_free(x);

    bd_graph *g = tiny_model();
    assert_int_equal(bd_training_reinit(g, 4), BD_OK);
    const double bound = 1 / sqrt((double)COLS);
    double most = 0;
    for (int k = 0; k < ROWS * COLS; k++)
        most = fmax(most, fabs(weights(g)[k]));
    assert_true(most <= bound && most > 0.5 * bound);
    float w4[ROWS * COLS];
    memcpy(w4, weights(g), sizeof w4);
    assert_int_equal(bd_training_reinit(g, 4), BD_OK);
    assert_memory_equal(w4, weights(g), sizeof w4);
    bd_graph_free(g);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_block_drop_step_by_hand),
        cmocka_unit_test(test_noise_gradient_finite_differences),
        cmocka_unit_test(test_int8_p1_is_qat),
        cmocka_unit_test(test_p0_is_plain_training),
        cmocka_unit_test(test_quantized_layer_trains_centroids),
        cmocka_unit_test(test_mask_rate_and_layout),
        cmocka_unit_test(test_resume_is_bit_identical),
        cmocka_unit_test(test_schedules_match_pytorch),
        cmocka_unit_test(test_label_smoothing_matches_pytorch),
        cmocka_unit_test(test_bad_input_changes_nothing),
        cmocka_unit_test(test_augment_and_reinit),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
