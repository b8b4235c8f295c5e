/* Training and fine-tuning: the trainer's parameter gradients against
 * finite differences of the real loss on a real model, the centroid
 * gradient as the mean of its members' weight gradients, and tuning that
 * lowers the distillation loss and stays within the codebook. */
#include "bd_test.h"
#include "bd_test_ws.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "finetune.h"
#include "grad.h"
#include "model_meta.h"
#include "onnx_io.h"
#include "train.h"
#include "workspace.h"

static bd_graph *load(const char *name)
{
    bd_graph *g;
    char path[256];
    snprintf(path, sizeof path, "examples/fmnist/%s.onnx", name);
    if (bd_onnx_load(bd_test_path(path), &g) != BD_OK)
        fail_msg("%s", bd_error_message());
    return g;
}

static bd_tensor *images(const bd_graph *g, int n)
{
    bd_preprocess pp;
    bd_dataset *d;
    assert_int_equal(bd_model_preprocess(g, &pp), BD_OK);
    assert_int_equal(bd_dataset_open(&d, "fmnist:test", &pp), BD_OK);
    int64_t idx[16];
    int labels[16];
    for (int i = 0; i < n; i++)
        idx[i] = i * 7;
    bd_tensor *x;
    assert_int_equal(bd_dataset_batch(d, idx, n, &x, labels), BD_OK);
    bd_dataset_free(d);
    return x;
}

/* KL(teacher || student) of the graph on x against fixed teacher logits. */
static double kl_of(bd_graph *g, const bd_tensor *x, const bd_tensor *teacher)
{
    bd_exec *ex;
    bd_tensor *y, *dl;
    double loss;
    assert_int_equal(bd_exec_new(&ex, g, 0), BD_OK);
    assert_int_equal(bd_exec_run1(ex, x, &y), BD_OK);
    assert_int_equal(bd_loss_kl(y, teacher, &loss, &dl), BD_OK);
    bd_tensor_free(y);
    bd_tensor_free(dl);
    bd_exec_free(ex);
    return loss;
}

/* The trainer's gradient of a conv weight deep in the network (BatchNorm
 * frozen) against central differences of the loss. */
static void test_trainer_gradient_matches_finite_differences(void **state)
{
    (void)state;
    bd_graph *g = load("resnet_bn");
    bd_tensor *x = images(g, 6);
    /* a teacher target: the model's own logits, perturbed */
    bd_exec *ex;
    bd_tensor *t;
    assert_int_equal(bd_exec_new(&ex, g, 0), BD_OK);
    assert_int_equal(bd_exec_run1(ex, x, &t), BD_OK);
    bd_exec_free(ex);
    bd_test_fill_random(t->data, (size_t)bd_tensor_count(t), 5, -3, 3);
    int w = bd_graph_find(g, "layer2.0.conv2.weight");
    assert_true(w >= 0);
    bd_train *tr;
    bd_train_options to = {0};
    assert_int_equal(bd_train_new(&tr, g, &w, 1, &to), BD_OK);
    /* backward stops at the layer: the first node it reaches reads the weight */
    const bd_node *first = &g->nodes[bd_train_first_node(tr)];
    assert_string_equal(first->op, "Conv");
    assert_int_equal(first->inputs[1], w);
    bd_tensor *y, *dl, *grad;
    double loss;
    assert_int_equal(bd_train_forward(tr, x, &y), BD_OK);
    assert_int_equal(bd_loss_kl(y, t, &loss, &dl), BD_OK);
    assert_true(fabs(loss - kl_of(g, x, t)) < 1e-5 * (1 + loss)); /* same forward */
    assert_int_equal(bd_train_backward(tr, dl, &grad), BD_OK);
    float *wd = g->values[w].init->data;
    const float *gd = grad->data;
    double worst = 0, scale = 0;
    for (int j = 0; j < 24; j++) {
        int64_t i = (j * 977) % bd_tensor_count(grad);
        float keep = wd[i], h = 1e-3f;
        wd[i] = keep + h;
        double up = kl_of(g, x, t);
        wd[i] = keep - h;
        double down = kl_of(g, x, t);
        wd[i] = keep;
        double numeric = (up - down) / (2 * h);
        worst = fmax(worst, fabs(numeric - gd[i]));
        scale = fmax(scale, fabs(numeric));
    }
    print_message("worst |analytic - numeric| %.3g, scale %.3g\n", worst, scale);
    assert_true(scale > 0);
    assert_true(worst <= 2e-2 * scale + 1e-6);
    bd_tensor_free(y);
    bd_tensor_free(dl);
    bd_tensor_free(grad);
    bd_tensor_free(t);
    bd_tensor_free(x);
    bd_train_free(tr);
    bd_graph_free(g);
}

/* A 3x3 conv layer of `rows` output channels and rows of `row_len`. */
static bd_layer conv3x3(int64_t rows, int64_t row_len)
{
    bd_layer l;
    memset(&l, 0, sizeof l);
    snprintf(l.op, sizeof l.op, "Conv");
    l.rows = rows;
    l.row_len = row_len;
    l.kh = l.kw = 3;
    l.groups = 1;
    return l;
}

/* A PQ layer's tuned-value gradient: the centroid gradient, the mean of the
 * weight gradients of its members. */
static void test_centroid_gradient_is_member_mean(void **state)
{
    (void)state;
    const bd_layer l = conv3x3(4, 18);
    bd_qlayer q = {.d = 9, .k = 3, .n = 8};
    int32_t codes[8] = {0, 2, 2, 1, 0, 2, 1, 2};
    float cent[27] = {0};
    q.codes = codes;
    q.centroids = cent;
    float wg[72], grad[27];
    bd_test_fill_random(wg, 72, 11, -1, 1);
    bd_qlayer_tuned_gradient(&l, &q, wg, grad);
    for (int c = 0; c < 3; c++)
        for (int t = 0; t < 9; t++) {
            double sum = 0;
            int count = 0;
            for (int i = 0; i < 8; i++)
                if (codes[i] == c) {
                    sum += wg[i * 9 + t]; /* row r, subvector j: i = 2r + j */
                    count++;
                }
            assert_true(fabs(grad[c * 9 + t] - sum / count) < 1e-6);
        }
}

/* An int layer's: per row, the weight gradient projected on the scale's
 * direction (u - z) and on the zero point's (-s), brute force. */
static void test_int_gradient_is_projection(void **state)
{
    (void)state;
    const bd_layer l = conv3x3(3, 9);
    int32_t codes[27];
    for (int i = 0; i < 27; i++)
        codes[i] = (i * 7 + 3) % 16;
    float scales[3] = {0.5f, 0.25f, 2.0f}, zeros[3] = {7.5f, 8.0f, 3.0f};
    bd_qlayer q = {.format = BD_FMT_INT, .d = 1, .k = 16, .n = 27, .nscales = 3,
                   .scales = scales, .zeros = zeros, .codes = codes};
    q.ints.bits = 4;
    assert_int_equal(bd_qlayer_tuned_count(&q), 6);
    float wg[27], grad[6];
    bd_test_fill_random(wg, 27, 5, -1, 1);
    bd_qlayer_tuned_gradient(&l, &q, wg, grad);
    for (int r = 0; r < 3; r++) {
        double gs = 0, ss = 0, gz = 0;
        for (int j = 0; j < 9; j++) {
            const double a = codes[r * 9 + j] - zeros[r];
            gs += wg[r * 9 + j] * a;
            ss += a * a;
            gz += wg[r * 9 + j];
        }
        assert_true(fabs(grad[r] - gs / ss) < 1e-6);
        assert_true(fabs(grad[3 + r] - (-scales[r] * gz) / (9.0 * scales[r] * scales[r])) < 1e-5);
    }
    /* the values in and out, rounded to fp16 as stored */
    float v[6] = {0.3f, 0.2f, 1.1f, 6.0f, 7.0f, 2.5f};
    bd_qlayer_tuned_set(&q, v);
    float back[6];
    bd_qlayer_tuned_get(&q, back);
    for (int i = 0; i < 6; i++)
        assert_true(back[i] == bd_f16_to_f32(bd_f32_to_f16(v[i])));
}

/* The example's layers quantized with the regime (NULL: the default plan)
 * on 256 calibration images. */
static bd_workspace *quantized(const char *regime)
{
    bd_workspace *ws;
    assert_int_equal(bd_ws_new(&ws), BD_OK);
    assert_int_equal(bd_ws_load(ws, bd_test_path("examples/fmnist/resnet_bn.onnx")), BD_OK);
    assert_int_equal(bd_ws_data(ws, BD_DATA_CALIB, "fmnist:train", 256), BD_OK);
    if (regime)
        assert_int_equal(bd_ws_regime(ws, regime, 0), BD_OK);
    assert_int_equal(bd_ws_quantize(ws, "layer*", 10), BD_OK);
    return ws;
}

/* 40 steps of global tuning of every quantized layer. */
static bd_finetune_report tune_all(bd_workspace *ws)
{
    bd_finetune_options o = {.global = 1, .iters = 40, .batch = 32, .lr = 0.01f, .momentum = -1,
                             .wd = -1};
    bd_finetune_report r;
    if (bd_ws_finetune(ws, "all", &o, &r) != BD_OK)
        fail_msg("%s", bd_error_message());
    return r;
}

/* Fine-tuning an int layer moves its scales and zero points, never its
 * codes, and lowers the loss. */
static void test_finetune_int_scales(void **state)
{
    (void)state;
    bd_workspace *ws = quantized("int2");
    const bd_ws_layer *l = bd_ws_layer_at(ws, bd_ws_layer_index(ws, "layer3.0.conv2"));
    assert_int_equal(l->q.format, BD_FMT_INT);
    const int64_t nv = bd_qlayer_tuned_count(&l->q);
    float *before = malloc((size_t)nv * sizeof *before);
    int32_t *codes = malloc((size_t)l->q.n * sizeof *codes);
    bd_qlayer_tuned_get(&l->q, before);
    memcpy(codes, l->q.codes, (size_t)l->q.n * sizeof *codes);
    bd_finetune_report r = tune_all(ws);
    print_message("int2: loss %.4f -> %.4f in %d steps\n", r.first_loss, r.last_loss, r.steps);
    assert_true(r.last_loss < r.first_loss);
    assert_int_equal(l->state, BD_STATE_TUNED);
    assert_memory_equal(codes, l->q.codes, (size_t)l->q.n * sizeof *codes);
    float *after = malloc((size_t)nv * sizeof *after);
    bd_qlayer_tuned_get(&l->q, after);
    int moved = 0;
    for (int64_t j = 0; j < nv; j++)
        moved += after[j] != before[j];
    assert_true(moved > nv / 2);
    free(before);
    free(after);
    free(codes);
    bd_ws_free(ws);
}

static void test_finetune_lowers_the_loss(void **state)
{
    (void)state;
    bd_workspace *ws = quantized(NULL);
    const bd_ws_layer *l = bd_ws_layer_at(ws, bd_ws_layer_index(ws, "layer3.0.conv2"));
    int32_t *codes = malloc((size_t)l->q.n * sizeof *codes);
    memcpy(codes, l->q.codes, (size_t)l->q.n * sizeof *codes);
    bd_finetune_report r = tune_all(ws);
    print_message("loss %.4f -> %.4f in %d steps, %.0f images/s\n", r.first_loss, r.last_loss,
                  r.steps, r.images_per_second);
    assert_int_equal(r.steps, 40);
    assert_true(r.last_loss < r.first_loss);
    assert_int_equal(l->state, BD_STATE_TUNED);
    assert_memory_equal(codes, l->q.codes, (size_t)l->q.n * sizeof *codes); /* codes unchanged */
    for (int64_t j = 0; j < (int64_t)l->q.k * l->q.d; j++) /* what a save writes */
        assert_true(l->q.centroids[j] == bd_f16_to_f32(bd_f32_to_f16(l->q.centroids[j])));
    /* undo brings the untuned codebook back */
    char what[160];
    assert_int_equal(bd_ws_undo(ws, what, sizeof what), BD_OK);
    assert_int_equal(l->state, BD_STATE_QUANTIZED);
    free(codes);
    bd_ws_free(ws);
}

/* Each layer's error after fine-tuning is measured again on the rows
 * quantizing measured it on: a step too small to move an fp16 centroid
 * gives every layer the same error (but for the order of float sums), real
 * tuning new ones, which the saved file carries; undo brings the old
 * numbers back. */
static void test_finetune_measures_errors_again(void **state)
{
    (void)state;
    bd_workspace *ws = quantized(NULL);
    const int n = bd_ws_nlayers(ws);
    double before[16];
    assert_true(n <= 16);
    for (int i = 0; i < n; i++)
        before[i] = bd_ws_layer_at(ws, i)->q.rel_error;
    bd_finetune_options still = {
        .global = 1, .iters = 1, .batch = 8, .lr = 1e-9f, .momentum = -1, .wd = -1};
    bd_finetune_report r;
    assert_int_equal(bd_ws_finetune(ws, "all", &still, &r), BD_OK);
    for (int i = 0; i < n; i++) {
        const bd_ws_layer *l = bd_ws_layer_at(ws, i);
        if (l->state != BD_STATE_FLOAT)
            assert_true(l->state == BD_STATE_TUNED &&
                        fabs(l->q.rel_error - before[i]) < 1e-8 * before[i]);
    }
    char what[160];
    assert_int_equal(bd_ws_undo(ws, what, sizeof what), BD_OK);

    tune_all(ws);
    int tuned = 0, moved = 0;
    for (int i = 0; i < n; i++) {
        const bd_ws_layer *l = bd_ws_layer_at(ws, i);
        if (l->state == BD_STATE_FLOAT)
            continue;
        tuned++;
        assert_true(l->q.rel_error > 0 && l->q.rel_error < 1);
        moved += fabs(l->q.rel_error - before[i]) > 1e-4;
    }
    assert_int_equal(tuned, 8); /* layer*: all but conv1 and fc */
    assert_true(moved > tuned / 2);
    char path[600];
    bd_workspace *again = bd_test_reload(ws, "tuned_errors.onnx", path, sizeof path);
    for (int i = 0; i < n; i++)
        if (bd_ws_layer_at(ws, i)->state != BD_STATE_FLOAT)
            assert_true(fabs(bd_ws_layer_at(again, i)->q.rel_error -
                             bd_ws_layer_at(ws, i)->q.rel_error) < 1e-4); /* four decimals */
    bd_ws_free(again);
    assert_int_equal(bd_ws_undo(ws, what, sizeof what), BD_OK);
    for (int i = 0; i < n; i++)
        assert_true(bd_ws_layer_at(ws, i)->q.rel_error == before[i] ||
                    bd_ws_layer_at(ws, i)->state == BD_STATE_FLOAT);
    bd_ws_free(ws);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_trainer_gradient_matches_finite_differences),
        cmocka_unit_test(test_centroid_gradient_is_member_mean),
        cmocka_unit_test(test_int_gradient_is_projection),
        cmocka_unit_test(test_finetune_int_scales),
        cmocka_unit_test(test_finetune_lowers_the_loss),
        cmocka_unit_test(test_finetune_measures_errors_again),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
