/* The four Fashion-MNIST example models against what PyTorch recorded when it
 * exported them (examples/fmnist/fixtures): logits of the first 256 test
 * images and the predicted class of all 10 000. */
#include "bd_test.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "data.h"
#include "eval.h"
#include "exec.h"
#include "model_meta.h"
#include "onnx_io.h"

static const char *const models[] = {"resnet_bn", "resnet", "mobilenet_bn", "mobilenet"};

typedef struct loaded {
    bd_graph *g;
    bd_exec *ex;
    bd_dataset *d;
} loaded;

static void load(const char *name, int flags, loaded *l)
{
    char path[256];
    snprintf(path, sizeof path, "examples/fmnist/%s.onnx", name);
    if (bd_onnx_load(bd_test_path(path), &l->g) != BD_OK)
        fail_msg("%s", bd_error_message());
    bd_preprocess pp;
    assert_int_equal(bd_model_preprocess(l->g, &pp), BD_OK);
    if (bd_dataset_open(&l->d, "fmnist:test", &pp) != BD_OK)
        fail_msg("%s", bd_error_message());
    assert_int_equal(bd_exec_new(&l->ex, l->g, flags), BD_OK);
}

static void unload(loaded *l)
{
    bd_exec_free(l->ex);
    bd_dataset_free(l->d);
    bd_graph_free(l->g);
}

/* Worst row of max|ours - torch| / max|torch|. */
static double worst_row_error(const float *ours, const float *torch, int rows, int classes)
{
    double worst = 0;
    for (int r = 0; r < rows; r++) {
        double e = bd_test_rel_error(ours + r * classes, torch + r * classes, (size_t)classes);
        if (e > worst)
            worst = e;
    }
    return worst;
}

static void check_logits(int flags)
{
    for (size_t m = 0; m < sizeof models / sizeof *models; m++) {
        loaded l;
        load(models[m], flags, &l);
        char path[256];
        snprintf(path, sizeof path, "examples/fmnist/fixtures/%s.logits256.f32", models[m]);
        size_t len;
        float *torch = bd_test_read_file(bd_test_path(path), &len);
        assert_non_null(torch);
        assert_int_equal(len, 256 * 10 * sizeof(float));
        int64_t idx[256];
        int labels[256];
        for (int i = 0; i < 256; i++)
            idx[i] = i;
        bd_tensor *x, *y;
        assert_int_equal(bd_dataset_batch(l.d, idx, 256, &x, labels), BD_OK);
        if (bd_exec_run1(l.ex, x, &y) != BD_OK)
            fail_msg("%s: %s", models[m], bd_error_message());
        assert_int_equal(y->dims[0], 256);
        assert_int_equal(y->dims[1], 10);
        double err = worst_row_error(y->data, torch, 256, 10);
        print_message("%-13s flags %d: worst relative logit error %.2e\n", models[m], flags, err);
        assert_true(err < 1e-4);
        bd_tensor_free(x);
        bd_tensor_free(y);
        free(torch);
        unload(&l);
    }
}

static void test_logits_fused(void **state)
{
    (void)state;
    check_logits(BD_EXEC_FUSE);
}

static void test_logits_unfused(void **state)
{
    (void)state;
    check_logits(0);
}

/* Small batches against one large one: batching must not change results. */
static void test_batch_invariance(void **state)
{
    (void)state;
    loaded l;
    load("mobilenet_bn", BD_EXEC_FUSE, &l);
    int64_t idx[7] = {0, 1, 2, 3, 4, 5, 6};
    int labels[7];
    bd_tensor *x, *y, *one, *y1;
    assert_int_equal(bd_dataset_batch(l.d, idx, 7, &x, labels), BD_OK);
    assert_int_equal(bd_exec_run1(l.ex, x, &y), BD_OK);
    for (int i = 0; i < 7; i++) {
        assert_int_equal(bd_dataset_get(l.d, i, &one, &labels[0]), BD_OK);
        assert_int_equal(bd_exec_run1(l.ex, one, &y1), BD_OK);
        assert_true(bd_test_rel_error(y1->data, (float *)y->data + i * 10, 10) < 1e-5);
        bd_tensor_free(one);
        bd_tensor_free(y1);
    }
    bd_tensor_free(x);
    bd_tensor_free(y);
    unload(&l);
}

/* eval over the test set gives PyTorch's predictions (a few near-ties may
 * flip from float rounding) and its accuracy. Under the sanitizers, which
 * slow everything down tenfold, the first 2000 images. */
static void test_eval_matches_torch(void **state)
{
    (void)state;
    int64_t n = getenv("BD_SANITIZED") ? 2000 : 10000;
    for (size_t m = 0; m < sizeof models / sizeof *models; m++) {
        loaded l;
        load(models[m], BD_EXEC_FUSE, &l);
        char path[256];
        snprintf(path, sizeof path, "examples/fmnist/fixtures/%s.pred10k.u8", models[m]);
        size_t len;
        uint8_t *pred = bd_test_read_file(bd_test_path(path), &len);
        assert_non_null(pred);
        assert_int_equal(len, 10000);
        bd_eval_options opt = {.limit = n, .batch = 250, .keep_logits = 1};
        bd_eval_result r;
        if (bd_evaluate(l.ex, l.d, &opt, NULL, &r) != BD_OK)
            fail_msg("%s", bd_error_message());
        assert_int_equal(r.n, n);
        int differ = 0;
        int64_t torch_top1 = 0;
        for (int64_t i = 0; i < n; i++) {
            int top;
            bd_topk(r.logits + i * 10, 10, 1, &top);
            differ += top != pred[i];
        }
        for (int64_t i = 0; i < n; i++)
            torch_top1 += pred[i] == r.labels[i];
        print_message("%-13s %lld images: top1 %.2f%% (torch %.2f%%), %d predictions differ\n",
                      models[m], (long long)n, 100.0 * (double)r.top1 / (double)n,
                      100.0 * (double)torch_top1 / (double)n, differ);
        assert_true(differ <= 2);
        assert_true(llabs(r.top1 - torch_top1) <= differ);
        bd_eval_result_free(&r);
        free(pred);
        unload(&l);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_logits_fused),
        cmocka_unit_test(test_logits_unfused),
        cmocka_unit_test(test_batch_invariance),
        cmocka_unit_test(test_eval_matches_torch),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
