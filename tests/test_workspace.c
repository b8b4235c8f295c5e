/* The workspace: plan changes refused as a whole, quantize with rollback on
 * cancel, undo, reset, trial fits that change nothing, evaluation, and
 * saving then loading a compressed file that resumes the work. */
#include "bd_test.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "workspace.h"

static bd_workspace *open_ws(void)
{
    bd_workspace *ws;
    assert_int_equal(bd_ws_new(&ws), BD_OK);
    if (bd_ws_load(ws, bd_test_path("examples/fmnist/resnet_bn.onnx")) != BD_OK)
        fail_msg("%s", bd_error_message());
    assert_int_equal(bd_ws_data(ws, BD_DATA_CALIB, "fmnist:train", 128), BD_OK);
    return ws;
}

/* A hash of the student's parameters, each with the op and input slot that
 * read it (in any order), to see that nothing changed. Names are not part
 * of it: a compressed file shortens the names of everything but the
 * layers' weights (docs/format.md). */
static uint64_t student_hash(const bd_workspace *ws)
{
    const bd_graph *g = bd_ws_student(ws);
    uint64_t total = 0;
    for (int i = 0; i < g->nnodes; i++)
        for (int k = 0; k < g->nodes[i].ninputs; k++) {
            int v = g->nodes[i].inputs[k];
            const bd_tensor *t = v >= 0 ? g->values[v].init : NULL;
            if (!t)
                continue;
            uint64_t h = (1469598103934665603ull ^ (uint64_t)k) * 1099511628211ull;
            for (const char *c = g->nodes[i].op; *c; c++)
                h = (h ^ (unsigned char)*c) * 1099511628211ull;
            const unsigned char *p = t->data;
            for (size_t j = 0; j < bd_tensor_nbytes(t); j++)
                h = (h ^ p[j]) * 1099511628211ull;
            total += h;
        }
    return total;
}

static void test_plan_and_select(void **state)
{
    (void)state;
    bd_workspace *ws = open_ws();
    assert_int_equal(bd_ws_nlayers(ws), 10);
    const bd_ws_layer *first = bd_ws_layer_at(ws, 0);
    assert_string_equal(first->layer.name, "conv1");
    assert_false(first->quantize); /* the first conv stays fp32 */
    int l = bd_ws_layer_index(ws, "layer1.0.conv1");
    assert_int_equal(bd_ws_layer_at(ws, l)->d, 9);
    assert_int_equal(bd_ws_layer_at(ws, l)->k, 32); /* clamped */
    int *idx, n;
    assert_int_equal(bd_ws_select(ws, "layer3.*", &idx, &n), BD_OK);
    assert_int_equal(n, 3);
    free(idx);
    assert_int_equal(bd_ws_select(ws, NULL, &idx, &n), BD_OK);
    assert_int_equal(n, 9); /* "all" is the plan's */
    free(idx);
    assert_int_not_equal(bd_ws_select(ws, "nothing*", &idx, &n), BD_OK);
    assert_non_null(strstr(bd_error_message(), "no layer matches 'nothing*'"));

    /* a change that one layer cannot take changes none */
    bd_ws_change c = BD_PLAN_CHANGE_NONE;
    c.d = 18;
    assert_int_not_equal(bd_ws_set(ws, "layer3.*", &c), BD_OK); /* 1x1 downsample: row 32 */
    assert_non_null(strstr(bd_error_message(), "layer3.0.downsample.0"));
    assert_int_equal(bd_ws_layer_at(ws, bd_ws_layer_index(ws, "layer3.0.conv2"))->d, 9);
    bd_ws_change big = BD_PLAN_CHANGE_NONE;
    big.k = 512;
    assert_int_not_equal(bd_ws_set(ws, "layer1.0.conv1", &big), BD_OK);
    assert_non_null(strstr(bd_error_message(), "at most 32"));
    assert_null(bd_ws_undo_label(ws));
    /* a d change clamps the kept k and says so; undo restores */
    assert_int_equal(bd_ws_set(ws, "layer3.0.conv*", &c), BD_OK);
    const bd_ws_layer *c2 = bd_ws_layer_at(ws, bd_ws_layer_index(ws, "layer3.0.conv2"));
    assert_int_equal(c2->d, 18);
    assert_int_equal(c2->k, 256);
    char what[160];
    assert_int_equal(bd_ws_undo(ws, what, sizeof what), BD_OK);
    assert_string_equal(what, "set layer3.0.conv*");
    assert_int_equal(c2->d, 9);
    bd_ws_free(ws);
}

static void cancel_on_second(void *user, const char *stage, int64_t done, int64_t total,
                             const char *message, double metric)
{
    (void)total;
    (void)message;
    (void)metric;
    if (strcmp(stage, "quantize") == 0 && done == 1)
        bd_ws_cancel(user);
}

static void test_quantize_cancel_undo_reset(void **state)
{
    (void)state;
    bd_workspace *ws = open_ws();
    uint64_t before = student_hash(ws);
    bd_ws_on_progress(ws, cancel_on_second, ws);
    assert_int_equal(bd_ws_quantize(ws, "layer1.*", 5), BD_ECANCELED);
    assert_int_equal(student_hash(ws), before); /* the first layer rolled back */
    for (int i = 0; i < bd_ws_nlayers(ws); i++)
        assert_int_equal(bd_ws_layer_at(ws, i)->state, BD_STATE_FLOAT);
    assert_null(bd_ws_undo_label(ws));

    bd_ws_on_progress(ws, NULL, NULL);
    assert_int_equal(bd_ws_quantize(ws, "layer1.*", 5), BD_OK);
    const bd_ws_layer *l = bd_ws_layer_at(ws, bd_ws_layer_index(ws, "layer1.0.conv2"));
    assert_int_equal(l->state, BD_STATE_QUANTIZED);
    assert_true(l->q.rel_error > 0 && l->q.rel_error < 1);
    uint64_t quantized = student_hash(ws);
    assert_true(quantized != before);
    bd_model_size size;
    bd_ws_size(ws, &size);
    assert_true(size.code_bytes > 0 && size.ratio > 1);

    assert_int_equal(bd_ws_reset(ws, "layer1.0.conv2"), BD_OK);
    assert_int_equal(l->state, BD_STATE_FLOAT);
    char what[160];
    assert_int_equal(bd_ws_undo(ws, what, sizeof what), BD_OK); /* the reset */
    assert_int_equal(l->state, BD_STATE_QUANTIZED);
    assert_int_equal(student_hash(ws), quantized);
    assert_int_equal(bd_ws_undo(ws, what, sizeof what), BD_OK); /* the quantize */
    assert_string_equal(what, "quantize layer1.*");
    assert_int_equal(student_hash(ws), before);
    assert_int_not_equal(bd_ws_undo(ws, what, sizeof what), BD_OK);
    bd_ws_free(ws);
}

static void test_trial_changes_nothing(void **state)
{
    (void)state;
    bd_workspace *ws = open_ws();
    uint64_t before = student_hash(ws);
    int i = bd_ws_layer_index(ws, "layer3.0.conv2");
    int ks[3] = {16, 64, 256};
    double err[3];
    int64_t bytes[3];
    assert_int_equal(bd_ws_trial(ws, i, BD_FMT_PQ, 9, ks, 3, 10, err, bytes), BD_OK);
    assert_true(err[0] > err[1] && err[1] > err[2]); /* more centroids, less error */
    assert_true(bytes[0] < bytes[1] && bytes[1] < bytes[2]);
    assert_int_equal(student_hash(ws), before);
    assert_int_equal(bd_ws_layer_at(ws, i)->state, BD_STATE_FLOAT);
    int bad = 4096;
    assert_int_not_equal(bd_ws_trial(ws, i, BD_FMT_PQ, 9, &bad, 1, 10, err, NULL), BD_OK);
    /* int: more bits, less error, and the bytes the codec counts */
    int bits[3] = {2, 4, 8};
    assert_int_equal(bd_ws_trial(ws, i, BD_FMT_INT, 0, bits, 3, 0, err, bytes), BD_OK);
    assert_true(err[0] > err[1] && err[1] > err[2] && err[2] < 0.01);
    for (int j = 0; j < 3; j++)
        assert_int_equal(bytes[j], 64 * 576 * bits[j] / 8 + 64 * 2 * 2);
    assert_int_equal(student_hash(ws), before);
    bad = 9;
    assert_int_not_equal(bd_ws_trial(ws, i, BD_FMT_INT, 0, &bad, 1, 0, err, NULL), BD_OK);
    bd_ws_free(ws);
}

static void test_eval_predict_save_resume(void **state)
{
    (void)state;
    bd_workspace *ws = open_ws();
    bd_accuracy t, s;
    assert_int_equal(bd_ws_eval(ws, 300, &t, &s), BD_OK);
    assert_int_equal(t.n, 300);
    assert_true(t.top1 == s.top1); /* nothing quantized yet */
    assert_true(t.top1 > 85);
    assert_int_equal(bd_ws_quantize(ws, "layer2.*", 5), BD_OK);
    bd_accuracy last_t, last_s;
    bd_ws_last_eval(ws, &last_t, &last_s);
    assert_true(last_t.valid);
    assert_false(last_s.valid); /* the student changed */
    bd_prediction pt, ps;
    assert_int_equal(bd_ws_predict(ws, bd_test_path("examples/images/fmnist_test_0000_ankle_boot.png"),
                                   &pt, &ps),
                     BD_OK);
    assert_string_equal(bd_ws_class_name(ws, pt.cls[0]), "Ankle boot");

    char path[600];
    snprintf(path, sizeof path, "%s/ws.onnx", bd_test_tmpdir());
    assert_int_equal(bd_ws_save(ws, path, 0), BD_OK);
    bd_workspace *again;
    assert_int_equal(bd_ws_new(&again), BD_OK);
    assert_int_equal(bd_ws_load(again, path), BD_OK);
    assert_int_equal(student_hash(again), student_hash(ws));
    for (int i = 0; i < bd_ws_nlayers(ws); i++) {
        const bd_ws_layer *a = bd_ws_layer_at(ws, i), *b = bd_ws_layer_at(again, i);
        assert_int_equal(a->state, b->state);
        if (a->state == BD_STATE_FLOAT)
            continue;
        assert_int_equal(a->q.k, b->q.k);
        assert_memory_equal(a->q.codes, b->q.codes, (size_t)a->q.n * sizeof *a->q.codes);
    }
    /* the resumed workspace has the real teacher: resetting gives its weights */
    assert_int_equal(bd_ws_reset(again, "all"), BD_OK);
    bd_workspace *plain;
    assert_int_equal(bd_ws_new(&plain), BD_OK);
    assert_int_equal(bd_ws_load(plain, bd_test_path("examples/fmnist/resnet_bn.onnx")), BD_OK);
    assert_int_equal(student_hash(again), student_hash(plain));
    /* a failed load leaves the workspace as it was */
    assert_int_not_equal(bd_ws_load(again, "/nonexistent.onnx"), BD_OK);
    assert_int_equal(bd_ws_nlayers(again), 10);
    bd_ws_free(plain);
    bd_ws_free(again);
    bd_ws_free(ws);
}

static void test_settings(void **state)
{
    (void)state;
    bd_workspace *ws = open_ws();
    char desc[192];
    if (bd_ws_device(ws, "cuda") == BD_OK) { /* a GPU: test_cuda checks what runs on it */
        assert_string_equal(bd_ws_device_name(ws), "cuda");
        assert_non_null(strstr(bd_ws_device_describe(ws, desc, sizeof desc), "cuda "));
        assert_int_equal(bd_ws_device(ws, "cpu"), BD_OK);
    } else {
        assert_non_null(strstr(bd_error_message(), "device cuda: "));
        assert_non_null(strstr(bd_error_message(), "staying on the CPU"));
    }
    assert_string_equal(bd_ws_device_name(ws), "cpu");
    assert_int_not_equal(bd_ws_device(ws, "tpu"), BD_OK);
    assert_int_equal(bd_ws_threads(ws, 1), BD_OK);
    assert_int_equal(bd_ws_get_threads(ws), 1);
    assert_string_equal(bd_ws_device_describe(ws, desc, sizeof desc), "cpu 1 threads");
    assert_int_not_equal(bd_ws_threads(ws, 0), BD_OK);
    bd_ws_seed(ws, 7);
    assert_int_equal(bd_ws_get_seed(ws), 7);
    assert_int_not_equal(bd_ws_data(ws, BD_DATA_EVAL, "nope:x", 0), BD_OK);
    assert_string_equal(bd_ws_data_spec(ws, BD_DATA_EVAL), "fmnist:test");
    bd_ws_free(ws);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_plan_and_select),
        cmocka_unit_test(test_quantize_cancel_undo_reset),
        cmocka_unit_test(test_trial_changes_nothing),
        cmocka_unit_test(test_eval_predict_save_resume),
        cmocka_unit_test(test_settings),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
