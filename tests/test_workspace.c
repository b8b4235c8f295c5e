/* The workspace: plan changes refused as a whole, quantize with rollback on
 * cancel, undo, reset, trial fits that change nothing, evaluation, saving
 * then loading a compressed file that resumes the work, and training with
 * and without quantized layers, and BitPruning with its undo and refusals. */
#include "bd_test.h"
#include "bd_test_ws.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "act_quant.h"
#include "workspace.h"

#include <limits.h>

static bd_workspace *open_ws(void)
{
    bd_workspace *ws;
    assert_int_equal(bd_ws_new(&ws), BD_OK);
    if (bd_ws_load(ws, bd_test_path("examples/fmnist/resnet_bn.onnx")) != BD_OK)
        fail_msg("%s", bd_error_message());
    assert_int_equal(bd_ws_data(ws, BD_DATA_CALIB, "fmnist:train", 128), BD_OK);
    return ws;
}

/* A hash of a graph's parameters, each with the op and input slot that
 * read it (in any order), to see that nothing changed. Names are not part
 * of it: a compressed file shortens the names of everything but the
 * layers' weights (docs/format.md). */
static uint64_t graph_hash(const bd_graph *g)
{
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

static uint64_t student_hash(const bd_workspace *ws) { return graph_hash(bd_ws_student(ws)); }
static uint64_t teacher_hash(const bd_workspace *ws) { return graph_hash(bd_ws_teacher(ws)); }

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
    bad = 17;
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
    /* every evaluation is a point at the size the student had; undo keeps
     * them, a load clears them */
    bd_accuracy q_t, q_s;
    assert_int_equal(bd_ws_eval(ws, 300, &q_t, &q_s), BD_OK);
    bd_model_size z;
    bd_ws_size(ws, &z);
    int np;
    const bd_ws_point *pts = bd_ws_points(ws, &np);
    assert_int_equal(np, 2);
    assert_int_equal(pts[0].bytes, z.fp32_bytes);
    assert_string_equal(pts[0].label, "float");
    assert_true(pts[0].acc.top1 == s.top1 && pts[0].acc.n == 300);
    assert_int_equal(pts[1].bytes, z.compressed_bytes);
    assert_true(pts[1].bytes < pts[0].bytes);
    assert_string_equal(pts[1].label, bd_ws_undo_label(ws));
    assert_true(pts[1].acc.top1 == q_s.top1);
    bd_prediction pt, ps;
    assert_int_equal(bd_ws_predict(ws, bd_test_path("examples/images/fmnist_test_0000_ankle_boot.png"),
                                   &pt, &ps),
                     BD_OK);
    assert_string_equal(bd_ws_class_name(ws, pt.cls[0]), "Ankle boot");

    char path[600];
    bd_workspace *again = bd_test_reload(ws, "ws.onnx", path, sizeof path);
    assert_int_equal(student_hash(again), student_hash(ws));
    assert_int_equal(bd_ws_eval(again, 100, NULL, NULL), BD_OK);
    bd_ws_points(again, &np);
    assert_int_equal(np, 1);
    assert_int_equal(bd_ws_load(again, path), BD_OK);
    bd_ws_points(again, &np);
    assert_int_equal(np, 0);
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
    char what[256];
    assert_int_equal(bd_ws_undo(ws, what, sizeof what), BD_OK);
    bd_ws_points(ws, &np);
    assert_int_equal(np, 2);
    bd_ws_free(plain);
    bd_ws_free(again);
    bd_ws_free(ws);
}

static void cancel_in_training(void *user, const char *stage, int64_t done, int64_t total,
                               const char *message, double metric)
{
    (void)total;
    (void)message;
    (void)metric;
    if (strcmp(stage, "train") == 0 && done == 2)
        bd_ws_cancel(user);
}

typedef struct epochs_seen {
    int n;
    double loss[8];
} epochs_seen;

static void on_epoch(void *user, const bd_training_epoch *e, int epochs)
{
    epochs_seen *seen = user;
    assert_int_equal(e->epoch, seen->n + 1);
    assert_int_equal(epochs, 3);
    seen->loss[seen->n++] = e->loss;
}

/* The workspace as it was: both models bit for bit and the history. */
static void assert_unchanged(const bd_workspace *ws, uint64_t student, uint64_t teacher,
                             const char *undo)
{
    assert_int_equal(student_hash(ws), student);
    assert_int_equal(teacher_hash(ws), teacher);
    if (undo)
        assert_string_equal(bd_ws_undo_label(ws), undo);
    else
        assert_null(bd_ws_undo_label(ws));
}

static void test_train_undo_refusals(void **state)
{
    (void)state;
    bd_workspace *ws = open_ws();
    assert_int_equal(bd_ws_data(ws, BD_DATA_EVAL, "fmnist:test", 100), BD_OK);
    bd_accuracy t0, s0;
    assert_int_equal(bd_ws_eval(ws, 0, &t0, &s0), BD_OK);
    uint64_t student = student_hash(ws), teacher = teacher_hash(ws);
    assert_int_equal(student, teacher);

    /* from scratch, so that a few steps surely bring the loss down */
    bd_training_options o;
    bd_training_options_init(&o);
    assert_int_equal(bd_opt_set(bd_training_opts, &o, "t", "epochs", "3"), BD_OK);
    assert_int_equal(bd_opt_set(bd_training_opts, &o, "t", "steps", "4"), BD_OK);
    assert_int_equal(bd_opt_set(bd_training_opts, &o, "t", "batch", "32"), BD_OK);
    assert_int_equal(bd_opt_set(bd_training_opts, &o, "t", "lr", "0.05"), BD_OK);
    assert_int_equal(bd_opt_set(bd_training_opts, &o, "t", "init", "scratch"), BD_OK);

    /* refused before anything changes: a bad option */
    assert_int_not_equal(bd_opt_set(bd_training_opts, &o, "t", "lr", "-1"), BD_OK);
    assert_non_null(strstr(bd_error_message(), "lr"));
    bd_training_options bad = o;
    bad.lr = -1;
    assert_int_not_equal(bd_ws_train(ws, &bad, NULL, NULL, NULL), BD_OK);
    assert_non_null(strstr(bd_error_message(), "lr"));
    assert_unchanged(ws, student, teacher, NULL);

    /* cancelled during the run: as before */
    bd_ws_on_progress(ws, cancel_in_training, ws);
    assert_int_equal(bd_ws_train(ws, &o, NULL, NULL, NULL), BD_ECANCELED);
    bd_ws_on_progress(ws, NULL, NULL);
    assert_unchanged(ws, student, teacher, NULL);

    epochs_seen seen = {0};
    bd_training_report r;
    assert_int_equal(bd_ws_train(ws, &o, on_epoch, &seen, &r), BD_OK);
    assert_int_equal(seen.n, 3);
    assert_int_equal(r.epochs, 3);
    assert_true(r.per_epoch[2].loss < r.per_epoch[0].loss);
    assert_true(r.per_epoch[2].top1 >= 0 && r.per_epoch[2].top1 <= 100);
    bd_training_report_free(&r);
    /* what a display reads */
    bd_training_options ran;
    const bd_training_epoch *e;
    int n, running;
    assert_true(bd_ws_last_training(ws, &ran, &e, &n, &running));
    assert_int_equal(n, 3);
    assert_false(running);
    assert_true(e[2].loss == seen.loss[2]);
    assert_int_equal(ran.eval_n, 100); /* the evaluation data's n */
    /* the trained model is the teacher and the student; results are stale */
    uint64_t trained = student_hash(ws);
    assert_true(trained != student);
    assert_int_equal(teacher_hash(ws), trained);
    bd_accuracy t, s;
    bd_ws_last_eval(ws, &t, &s);
    assert_false(t.valid);
    assert_false(s.valid);
    assert_int_equal(bd_ws_eval(ws, 0, &t, &s), BD_OK);
    assert_true(t.top1 == s.top1);
    /* a file saved now does not name the untrained original as its teacher */
    char path[600];
    bd_workspace *again = bd_test_reload(ws, "trained.onnx", path, sizeof path);
    assert_null(bd_graph_meta(bd_ws_student(again), "bitdown.teacher"));
    assert_int_equal(teacher_hash(again), trained);
    bd_ws_free(again);
    /* quantizing works from the trained weights, and undo takes it all back */
    assert_int_equal(bd_ws_quantize(ws, "layer1.0.conv1", 2), BD_OK);
    /* a compressed file that names no teacher is not the teacher of a file
     * saved from it (no file holds the teacher) */
    char resaved[600];
    snprintf(resaved, sizeof resaved, "%s/trained-again.onnx", bd_test_tmpdir());
    assert_int_equal(bd_ws_save(ws, path, 0), BD_OK);
    assert_int_equal(bd_ws_new(&again), BD_OK);
    assert_int_equal(bd_ws_load(again, path), BD_OK);
    assert_int_equal(bd_ws_save(again, resaved, 0), BD_OK);
    assert_int_equal(bd_ws_load(again, resaved), BD_OK);
    assert_null(bd_graph_meta(bd_ws_student(again), "bitdown.teacher"));
    bd_ws_free(again);
    assert_int_equal(bd_ws_reset(ws, "layer1.0.conv1"), BD_OK);
    assert_int_equal(student_hash(ws), trained);
    assert_int_equal(bd_ws_undo(ws, NULL, 0), BD_OK);
    assert_int_equal(bd_ws_undo(ws, NULL, 0), BD_OK);
    char what[64];
    assert_int_equal(bd_ws_undo(ws, what, sizeof what), BD_OK);
    assert_string_equal(what, "train");
    assert_unchanged(ws, student, teacher, NULL);
    assert_int_equal(bd_ws_eval(ws, 0, &t, &s), BD_OK);
    assert_true(t.top1 == t0.top1 && s.top1 == s0.top1);
    bd_ws_free(ws);
}

static const bd_ws_layer *layer_named(const bd_workspace *ws, const char *name)
{
    const bd_ws_layer *l = bd_ws_layer_at(ws, bd_ws_layer_index(ws, name));
    assert_non_null(l);
    return l;
}

static const bd_tensor *weight_of(const bd_workspace *ws, const char *name)
{
    return bd_ws_student(ws)->values[layer_named(ws, name)->layer.weight].init;
}

/* A copy of a layer's weight in the student. */
static float *weight_copy(const bd_workspace *ws, const char *name)
{
    const bd_tensor *w = weight_of(ws, name);
    float *c = malloc(bd_tensor_nbytes(w));
    assert_non_null(c);
    memcpy(c, w->data, bd_tensor_nbytes(w));
    return c;
}

static void assert_weight(const bd_workspace *ws, const char *name, const float *want)
{
    const bd_tensor *w = weight_of(ws, name);
    assert_memory_equal(w->data, want, bd_tensor_nbytes(w));
}

static void assert_same_codebook(const bd_qlayer *a, const bd_qlayer *b)
{
    assert_int_equal(a->k, b->k);
    assert_int_equal(a->d, b->d);
    assert_int_equal(a->n, b->n);
    assert_int_equal(a->format, b->format);
    assert_memory_equal(a->codes, b->codes, (size_t)a->n * sizeof *a->codes);
    if (a->format == BD_FMT_PQ) {
        assert_memory_equal(a->centroids, b->centroids,
                            (size_t)a->k * (size_t)a->d * sizeof(float));
        return;
    }
    assert_int_equal(a->nscales, b->nscales);
    assert_memory_equal(a->scales, b->scales, (size_t)a->nscales * sizeof(float));
    assert_true(!a->zeros == !b->zeros);
    if (a->zeros)
        assert_memory_equal(a->zeros, b->zeros, (size_t)a->nscales * sizeof(float));
}

/* Quantizes a layer, keeps a copy of its codebook, and takes it back. */
static void quantize_probe(bd_workspace *ws, const char *name, bd_qlayer *q)
{
    assert_int_equal(bd_ws_quantize(ws, name, 2), BD_OK);
    assert_int_equal(bd_qlayer_copy(q, &layer_named(ws, name)->q), BD_OK);
    assert_int_equal(bd_ws_undo(ws, NULL, 0), BD_OK);
}

/* Training with layers quantized (iterative PQ's step between stages): PQ
 * codebooks train and become tuned, an int layer stays, float layers train
 * and their trained weights are what quantize and reset start from, the
 * teacher stays; cancel and undo leave everything bit for bit as it was,
 * and a saved file brings the trained float sources back. */
static void test_train_quantized(void **state)
{
    (void)state;
    const char *pq = "layer1.0.conv1", *in = "layer1.0.conv2", *fl = "layer2.0.conv1";
    bd_workspace *ws = open_ws();
    assert_int_equal(bd_ws_data(ws, BD_DATA_EVAL, "fmnist:test", 50), BD_OK);
    bd_ws_change c = BD_PLAN_CHANGE_NONE;
    c.bits = 8;
    assert_int_equal(bd_ws_set(ws, in, &c), BD_OK);
    assert_int_equal(bd_ws_quantize(ws, "layer1.*", 2), BD_OK);
    const uint64_t student = student_hash(ws), teacher = teacher_hash(ws);
    assert_true(student != teacher);
    bd_qlayer q0 = {0}, qi = {0}, before = {0};
    assert_int_equal(bd_qlayer_copy(&q0, &layer_named(ws, pq)->q), BD_OK);
    assert_int_equal(bd_qlayer_copy(&qi, &layer_named(ws, in)->q), BD_OK);
    float *w_int = weight_copy(ws, in), *w_teacher = weight_copy(ws, fl);
    quantize_probe(ws, fl, &before); /* from the teacher's weight */

    bd_training_options o;
    bd_training_options_init(&o);
    assert_int_equal(bd_opt_set(bd_training_opts, &o, "t", "steps", "3"), BD_OK);
    assert_int_equal(bd_opt_set(bd_training_opts, &o, "t", "batch", "32"), BD_OK);
    assert_int_equal(bd_opt_set(bd_training_opts, &o, "t", "lr", "0.05"), BD_OK);
    assert_int_equal(bd_opt_set(bd_training_opts, &o, "t", "loss", "kl"), BD_OK);
    assert_int_equal(bd_opt_set(bd_training_opts, &o, "t", "quant_noise", "pq:p=0.1"), BD_OK);

    /* cancelled: everything as it was */
    bd_ws_on_progress(ws, cancel_in_training, ws);
    assert_int_equal(bd_ws_train(ws, &o, NULL, NULL, NULL), BD_ECANCELED);
    bd_ws_on_progress(ws, NULL, NULL);
    assert_unchanged(ws, student, teacher, "quantize layer1.*");
    assert_int_equal(layer_named(ws, pq)->state, BD_STATE_QUANTIZED);
    assert_same_codebook(&layer_named(ws, pq)->q, &q0);

    assert_int_equal(bd_ws_train(ws, &o, NULL, NULL, NULL), BD_OK);
    assert_string_equal(bd_ws_undo_label(ws), "train");
    assert_int_equal(teacher_hash(ws), teacher); /* still the original */
    const uint64_t trained = student_hash(ws);
    assert_true(trained != student);
    /* the PQ layer's centroids trained (its assignment did not), and its
     * weight is their decoding */
    const bd_ws_layer *lp = layer_named(ws, pq);
    assert_int_equal(lp->state, BD_STATE_TUNED);
    assert_memory_equal(lp->q.codes, q0.codes, (size_t)q0.n * sizeof *q0.codes);
    assert_memory_not_equal(lp->q.centroids, q0.centroids,
                            (size_t)q0.k * (size_t)q0.d * sizeof(float));
    /* its error measured again with the trained centroids */
    assert_true(lp->q.rel_error > 0 && lp->q.rel_error < 1 && lp->q.rel_error != q0.rel_error);
    float *decoded = weight_copy(ws, pq);
    assert_int_equal(bd_qlayer_decode(&lp->q, &lp->layer, decoded), BD_OK);
    assert_weight(ws, pq, decoded);
    free(decoded);
    /* the int layer stayed */
    assert_int_equal(layer_named(ws, in)->state, BD_STATE_QUANTIZED);
    assert_same_codebook(&layer_named(ws, in)->q, &qi);
    assert_weight(ws, in, w_int);
    /* the float layer trained: its trained weight is its float source */
    assert_memory_not_equal(weight_of(ws, fl)->data, w_teacher, bd_tensor_nbytes(weight_of(ws, fl)));
    float *w_trained = weight_copy(ws, fl);
    assert_int_equal(bd_ws_reset(ws, fl), BD_OK);
    assert_int_equal(student_hash(ws), trained);
    assert_int_equal(bd_ws_undo(ws, NULL, 0), BD_OK);
    bd_qlayer after = {0};
    quantize_probe(ws, fl, &after);
    assert_int_equal(student_hash(ws), trained);
    assert_int_equal(bd_ws_quantize(ws, fl, 2), BD_OK);
    assert_int_equal(bd_ws_reset(ws, fl), BD_OK);
    assert_weight(ws, fl, w_trained);
    assert_int_equal(bd_ws_undo(ws, NULL, 0), BD_OK);
    assert_int_equal(bd_ws_undo(ws, NULL, 0), BD_OK);

    /* quantizing it there is quantizing the trained weight: a workspace on
     * the student as it stands, decoded, whose own weights are the sources */
    char path[600], dense[600], real[PATH_MAX];
    snprintf(dense, sizeof dense, "%s/ipq-dense.onnx", bd_test_tmpdir());
    assert_int_equal(bd_ws_save(ws, dense, 1), BD_OK);
    bd_workspace *plain;
    assert_int_equal(bd_ws_new(&plain), BD_OK);
    assert_int_equal(bd_ws_load(plain, dense), BD_OK);
    assert_int_equal(bd_ws_data(plain, BD_DATA_CALIB, "fmnist:train", 128), BD_OK);
    bd_qlayer direct = {0};
    quantize_probe(plain, fl, &direct);
    assert_same_codebook(&after, &direct);
    assert_memory_not_equal(after.centroids, before.centroids,
                            (size_t)after.k * (size_t)after.d * sizeof(float));
    bd_ws_free(plain);

    /* a saved file still names the original teacher, and loading it brings
     * the trained float source back */
    bd_workspace *again = bd_test_reload(ws, "ipq.onnx", path, sizeof path);
    assert_non_null(realpath(bd_test_path("examples/fmnist/resnet_bn.onnx"), real));
    assert_string_equal(bd_graph_meta(bd_ws_student(again), "bitdown.teacher"), real);
    assert_int_equal(teacher_hash(again), teacher);
    assert_int_equal(student_hash(again), trained);
    assert_int_equal(layer_named(again, pq)->state, BD_STATE_QUANTIZED);
    assert_int_equal(bd_ws_data(again, BD_DATA_CALIB, "fmnist:train", 128), BD_OK);
    assert_int_equal(bd_ws_quantize(again, fl, 2), BD_OK);
    assert_int_equal(bd_ws_reset(again, fl), BD_OK);
    assert_weight(again, fl, w_trained);
    bd_ws_free(again);

    /* one undo takes it all back: weights, statistics, codebooks, states,
     * float sources */
    char what[64];
    assert_int_equal(bd_ws_undo(ws, what, sizeof what), BD_OK);
    assert_string_equal(what, "train");
    assert_unchanged(ws, student, teacher, "quantize layer1.*");
    assert_int_equal(layer_named(ws, pq)->state, BD_STATE_QUANTIZED);
    assert_same_codebook(&layer_named(ws, pq)->q, &q0);
    assert_same_codebook(&layer_named(ws, in)->q, &qi);
    assert_true(layer_named(ws, pq)->q.rel_error == q0.rel_error);
    assert_true(layer_named(ws, in)->q.rel_error == qi.rel_error);
    bd_qlayer undone = {0};
    quantize_probe(ws, fl, &undone);
    assert_same_codebook(&undone, &before);
    assert_int_equal(bd_ws_quantize(ws, fl, 2), BD_OK);
    assert_int_equal(bd_ws_reset(ws, fl), BD_OK);
    assert_weight(ws, fl, w_teacher);
    assert_int_equal(student_hash(ws), student);

    bd_qlayer_free(&q0);
    bd_qlayer_free(&qi);
    bd_qlayer_free(&before);
    bd_qlayer_free(&after);
    bd_qlayer_free(&direct);
    bd_qlayer_free(&undone);
    free(w_int);
    free(w_teacher);
    free(w_trained);
    bd_ws_free(ws);
}

static void set_bitprune(bd_bitprune_options *o, const char *key, const char *value)
{
    if (bd_opt_op_set(&bd_bitprune_op, o, "t", key, value) != BD_OK)
        fail_msg("%s", bd_error_message());
}

static void count_epoch(void *user, const bd_training_epoch *e, int epochs)
{
    (void)e;
    (void)epochs;
    ++*(int *)user;
}

/* How many of the student's layers have an activation quantizer in front. */
static int act_quantizers(const bd_workspace *ws)
{
    int n = 0;
    bd_act_grid grid;
    for (int i = 0; i < bd_ws_nlayers(ws); i++)
        n += bd_act_quant_find(bd_ws_student(ws), bd_ws_layer_at(ws, i)->layer.node, &grid);
    return n;
}

static void test_bitprune(void **state)
{
    (void)state;
    bd_workspace *ws = open_ws();
    assert_int_equal(bd_ws_data(ws, BD_DATA_EVAL, "fmnist:test", 50), BD_OK);
    const uint64_t student = student_hash(ws), teacher = teacher_hash(ws);
    bd_bitprune_options o;
    bd_bitprune_options_init(&o);
    set_bitprune(&o, "target_bits", "4");
    set_bitprune(&o, "min_bits", "2");
    set_bitprune(&o, "steps", "5");
    set_bitprune(&o, "batch", "32");
    set_bitprune(&o, "finetune_epochs", "1");

    /* refused before anything changes: bad options, then a target the
     * range cannot meet, then a layer already quantized */
    bd_bitprune_options bad = o;
    assert_int_not_equal(bd_opt_op_set(&bd_bitprune_op, &bad, "t", "lambda", "-1"), BD_OK);
    assert_non_null(strstr(bd_error_message(), "lambda"));
    assert_int_not_equal(bd_opt_op_set(&bd_bitprune_op, &bad, "t", "max_bits", "17"), BD_OK);
    assert_non_null(strstr(bd_error_message(), "max_bits"));
    assert_memory_equal(&bad, &o, sizeof o);
    set_bitprune(&bad, "target_bits", "0.5");
    assert_int_not_equal(bd_ws_bitprune(ws, &bad, NULL, 0, NULL, NULL, NULL), BD_OK);
    assert_non_null(strstr(bd_error_message(), "0.5 bits cannot be met"));
    assert_unchanged(ws, student, teacher, NULL);
    assert_int_equal(bd_ws_quantize(ws, "layer1.0.conv1", 2), BD_OK);
    const uint64_t quantized = student_hash(ws);
    assert_int_not_equal(bd_ws_bitprune(ws, &o, NULL, 0, NULL, NULL, NULL), BD_OK);
    assert_non_null(strstr(bd_error_message(), "layer1.0.conv1"));
    assert_unchanged(ws, quantized, teacher, "quantize layer1.0.conv1");
    assert_int_equal(bd_ws_undo(ws, NULL, 0), BD_OK);
    /* cancelled during the learning: as before, and the record says it stopped */
    bd_ws_on_progress(ws, cancel_in_training, ws);
    assert_int_equal(bd_ws_bitprune(ws, &o, NULL, 0, NULL, NULL, NULL), BD_ECANCELED);
    bd_ws_on_progress(ws, NULL, NULL);
    assert_unchanged(ws, student, teacher, NULL);
    int stopped_at, still;
    assert_true(bd_ws_last_bitprune(ws, NULL, NULL, NULL, &stopped_at, &still));
    assert_int_equal(stopped_at, 0);
    assert_false(still);

    int seen = 0;
    bd_bitprune_report r;
    assert_int_equal(bd_ws_bitprune(ws, &o, NULL, 0, count_epoch, &seen, &r), BD_OK);
    assert_string_equal(bd_ws_undo_label(ws), "bitprune");
    assert_true(seen >= 1);
    assert_true(r.mean_bits <= 4 + 1e-9);
    assert_int_equal(teacher_hash(ws), teacher);
    int quantizable = 0;
    for (int i = 0; i < bd_ws_nlayers(ws); i++) {
        const bd_ws_layer *l = bd_ws_layer_at(ws, i);
        if (!l->quantize) {
            assert_int_equal(l->state, BD_STATE_FLOAT);
            continue;
        }
        quantizable++;
        assert_int_equal(l->state, BD_STATE_TUNED);
        assert_int_equal(l->q.format, BD_FMT_INT);
        assert_in_range(l->q.ints.bits, 2, 8);
        assert_true(l->q.rel_error > 0 && l->q.rel_error < 1); /* measured: not unknown */
        /* the plan says the codec, so the layer table shows its bits */
        assert_int_equal(l->format, BD_FMT_INT);
        assert_int_equal(l->ints.bits, l->q.ints.bits);
        /* the student's weight is the codec's decoding */
        float *decoded = weight_copy(ws, l->layer.name);
        assert_int_equal(bd_qlayer_decode(&l->q, &l->layer, decoded), BD_OK);
        assert_weight(ws, l->layer.name, decoded);
        free(decoded);
    }
    assert_int_equal(r.nlayers, quantizable);
    bd_bitprune_report_free(&r);
    /* what a display reads */
    bd_bitprune_options ran;
    bd_bitprune_live live;
    const bd_training_epoch *e;
    int n, running;
    bd_ws_lock(ws);
    assert_true(bd_ws_last_bitprune(ws, &ran, &live, &e, &n, &running));
    assert_int_equal(n, seen);
    assert_false(running);
    assert_int_equal(live.nlayers, bd_ws_nlayers(ws));
    assert_true(live.bits[1] >= 1 && live.bits[1] <= 8);
    assert_int_equal(ran.train.eval_n, 50);
    bd_ws_unlock(ws);
    /* undo takes back every weight, state and float source */
    assert_int_equal(bd_ws_undo(ws, NULL, 0), BD_OK);
    assert_unchanged(ws, student, teacher, NULL);
    for (int i = 0; i < bd_ws_nlayers(ws); i++) {
        assert_int_equal(bd_ws_layer_at(ws, i)->state, BD_STATE_FLOAT);
        assert_int_equal(bd_ws_layer_at(ws, i)->format, BD_FMT_PQ);
    }
    assert_int_equal(bd_ws_quantize(ws, "layer1.0.conv1", 2), BD_OK);
    assert_int_equal(bd_ws_reset(ws, "layer1.0.conv1"), BD_OK);
    assert_int_equal(student_hash(ws), student);
    assert_int_equal(bd_ws_undo(ws, NULL, 0), BD_OK);
    assert_int_equal(bd_ws_undo(ws, NULL, 0), BD_OK);

    /* learned activation bits: reset takes away the quantizers in front of
     * the layers it resets, the others stay; undo puts them back */
    const int nodes = bd_ws_student(ws)->nnodes;
    set_bitprune(&o, "activations", "1");
    assert_int_equal(bd_ws_bitprune(ws, &o, NULL, 0, NULL, NULL, NULL), BD_OK);
    assert_int_equal(act_quantizers(ws), quantizable);
    assert_int_equal(bd_ws_student(ws)->nnodes, nodes + 4 * quantizable);
    assert_int_equal(bd_ws_reset(ws, "layer3.*"), BD_OK);
    assert_int_equal(act_quantizers(ws), quantizable - 3);
    assert_string_equal(bd_ws_layer_at(ws, bd_ws_layer_index(ws, "layer3.0.conv1"))->layer.name,
                        "layer3.0.conv1");
    assert_int_equal(bd_ws_reset(ws, NULL), BD_OK);
    assert_int_equal(act_quantizers(ws), 0);
    assert_int_equal(bd_ws_student(ws)->nnodes, nodes);
    const uint64_t plain = student_hash(ws);
    assert_int_equal(bd_ws_undo(ws, NULL, 0), BD_OK);
    assert_int_equal(act_quantizers(ws), quantizable - 3);
    assert_int_equal(bd_ws_undo(ws, NULL, 0), BD_OK);
    assert_int_equal(act_quantizers(ws), quantizable);
    /* and a reset model learns its activation bits again (the names serve twice) */
    assert_int_equal(bd_ws_reset(ws, NULL), BD_OK);
    assert_int_equal(student_hash(ws), plain);
    assert_int_equal(bd_ws_bitprune(ws, &o, NULL, 0, NULL, NULL, NULL), BD_OK);
    assert_int_equal(act_quantizers(ws), quantizable);
    bd_ws_free(ws);
}

/* Cancels a sensitivity measure at its second layer. */
static void cancel_at_second_layer(void *user, const char *stage, int64_t done, int64_t total,
                                   const char *message, double metric)
{
    (void)total;
    (void)message;
    (void)metric;
    if (strcmp(stage, "sensitivity") == 0 && done == 2)
        bd_ws_cancel(user);
}

/* The sensitivity measure: a layer at k=2 loses more top-1 alone than one
 * at k=256, the workspace is as it was (plans, states, errors, the student,
 * the undo steps), a cancelled measure remembers nothing, and a plan
 * change or training makes a measure stale. */
static void test_sensitivity(void **state)
{
    (void)state;
    bd_workspace *ws = open_ws();
    assert_int_equal(bd_ws_data(ws, BD_DATA_EVAL, "fmnist:test", 0), BD_OK);
    assert_int_equal(bd_ws_quantize(ws, "fc", 5), BD_OK);
    bd_ws_change c = BD_PLAN_CHANGE_NONE;
    c.k = 2;
    assert_int_equal(bd_ws_set(ws, "layer2.0.conv1", &c), BD_OK);
    int coarse = bd_ws_layer_index(ws, "layer2.0.conv1");
    int fine = bd_ws_layer_index(ws, "layer3.0.conv1");
    assert_int_equal(bd_ws_layer_at(ws, fine)->k, 256);

    int n = bd_ws_nlayers(ws);
    bd_ws_layer before[16];
    assert_true(n <= 16);
    for (int i = 0; i < n; i++)
        before[i] = *bd_ws_layer_at(ws, i);
    uint64_t student = student_hash(ws);

    /* cancelled: nothing remembered, nothing changed */
    bd_sensitivity_report r;
    bd_ws_on_progress(ws, cancel_at_second_layer, ws);
    assert_int_equal(bd_ws_sensitivity(ws, "layer[23].0.conv1", 400, &r), BD_ECANCELED);
    bd_ws_on_progress(ws, NULL, NULL);
    assert_int_equal(r.n, 0);
    assert_false(bd_ws_last_sensitivity(ws, coarse, NULL, NULL));

    assert_int_equal(bd_ws_sensitivity(ws, "layer[23].0.conv1", 400, &r), BD_OK);
    assert_int_equal(r.n, 2);
    assert_int_equal(r.reference.n, 400);
    assert_int_equal(r.layers[0].layer, coarse); /* graph order */
    assert_int_equal(r.layers[1].layer, fine);
    for (int j = 0; j < 2; j++) {
        assert_true(r.layers[j].rel_error > 0 && r.layers[j].rel_error < 1);
        assert_true(fabs(r.reference.top1 - r.layers[j].top1 - r.layers[j].drop) < 1e-9);
    }
    if (!(r.layers[0].drop > r.layers[1].drop + 5))
        fail_msg("k=2 drops %.2f points, k=256 %.2f", r.layers[0].drop, r.layers[1].drop);
    assert_true(r.layers[1].drop < 2);

    /* the workspace is as it was */
    assert_int_equal(student_hash(ws), student);
    for (int i = 0; i < n; i++) {
        const bd_ws_layer *l = bd_ws_layer_at(ws, i);
        assert_int_equal(l->state, before[i].state);
        assert_int_equal(l->format, before[i].format);
        assert_int_equal(l->d, before[i].d);
        assert_int_equal(l->k, before[i].k);
        assert_int_equal(l->quantize, before[i].quantize);
        assert_true(l->q.rel_error == before[i].q.rel_error);
        assert_ptr_equal(l->q.codes, before[i].q.codes);
    }
    char what[160];
    assert_int_equal(bd_ws_undo(ws, what, sizeof what), BD_OK);
    assert_string_equal(what, "set layer2.0.conv1");
    assert_int_equal(bd_ws_undo(ws, what, sizeof what), BD_OK);
    assert_string_equal(what, "quantize fc");
    assert_int_not_equal(bd_ws_undo(ws, what, sizeof what), BD_OK);

    /* what a display reads: the undo put layer2.0.conv1's plan back to
     * k=64, so its measure is stale; layer3.0.conv1's holds; fc has none */
    bd_sensitivity m;
    int stale = -1;
    assert_true(bd_ws_last_sensitivity(ws, coarse, &m, &stale));
    assert_true(stale);
    assert_true(m.drop == r.layers[0].drop);
    assert_true(bd_ws_last_sensitivity(ws, fine, &m, &stale));
    assert_false(stale);
    assert_false(bd_ws_last_sensitivity(ws, bd_ws_layer_index(ws, "fc"), NULL, NULL));
    bd_sensitivity_report_free(&r);

    /* training changes the float model: every measure is stale */
    bd_training_options o;
    bd_training_options_init(&o);
    assert_int_equal(bd_opt_set(bd_training_opts, &o, "t", "steps", "1"), BD_OK);
    assert_int_equal(bd_opt_set(bd_training_opts, &o, "t", "batch", "8"), BD_OK);
    assert_int_equal(bd_opt_set(bd_training_opts, &o, "t", "eval_n", "8"), BD_OK);
    assert_int_equal(bd_ws_train(ws, &o, NULL, NULL, NULL), BD_OK);
    assert_true(bd_ws_last_sensitivity(ws, fine, NULL, &stale));
    assert_true(stale);
    /* a glob that matches nothing is refused */
    assert_int_not_equal(bd_ws_sensitivity(ws, "nothing*", 0, &r), BD_OK);
    assert_non_null(strstr(bd_error_message(), "no layer matches 'nothing*'"));
    bd_ws_free(ws);
}

/* What quitting would lose: codebooks not in the file last loaded or saved,
 * and trained weights; undoing back to the saved state loses nothing. */
static void test_unsaved(void **state)
{
    (void)state;
    bd_workspace *ws = open_ws();
    int trained = -1;
    assert_int_equal(bd_ws_unsaved(ws, &trained), 0);
    assert_false(trained);
    assert_int_equal(bd_ws_quantize(ws, "layer1.*", 2), BD_OK);
    assert_int_equal(bd_ws_unsaved(ws, &trained), 2);
    char path[600];
    snprintf(path, sizeof path, "%s/unsaved.onnx", bd_test_tmpdir());
    assert_int_equal(bd_ws_save(ws, path, 0), BD_OK);
    assert_int_equal(bd_ws_unsaved(ws, NULL), 0);
    bd_finetune_options o = {
        .global = 1, .iters = 1, .batch = 8, .lr = 0.01f, .momentum = -1, .wd = -1};
    bd_finetune_report r;
    assert_int_equal(bd_ws_finetune(ws, "layer1.0.conv1", &o, &r), BD_OK);
    assert_int_equal(bd_ws_unsaved(ws, &trained), 1); /* tuned: another codebook */
    assert_false(trained);
    assert_int_equal(bd_ws_undo(ws, NULL, 0), BD_OK);
    assert_int_equal(bd_ws_unsaved(ws, NULL), 0); /* back to what was saved */
    assert_int_equal(bd_ws_reset(ws, "layer1.*"), BD_OK);
    assert_int_equal(bd_ws_unsaved(ws, NULL), 0); /* a float layer loses nothing */
    assert_int_equal(bd_ws_undo(ws, NULL, 0), BD_OK);
    bd_training_options t;
    bd_training_options_init(&t);
    assert_int_equal(bd_opt_set(bd_training_opts, &t, "t", "steps", "1"), BD_OK);
    assert_int_equal(bd_opt_set(bd_training_opts, &t, "t", "batch", "8"), BD_OK);
    assert_int_equal(bd_ws_train(ws, &t, NULL, NULL, NULL), BD_OK);
    assert_int_equal(bd_ws_unsaved(ws, &trained), 2); /* PQ layers train their centroids */
    assert_true(trained);
    assert_int_equal(bd_ws_undo(ws, NULL, 0), BD_OK);
    assert_int_equal(bd_ws_unsaved(ws, &trained), 0);
    assert_false(trained);
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
        cmocka_unit_test(test_train_undo_refusals),
        cmocka_unit_test(test_train_quantized),
        cmocka_unit_test(test_bitprune),
        cmocka_unit_test(test_unsaved),
        cmocka_unit_test(test_settings),
        cmocka_unit_test(test_sensitivity),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
