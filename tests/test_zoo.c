/* A small model of every torchvision CNN family (tests/zoo, made by
 * tests/zoo/make_fixtures.py) against what PyTorch computed for one batch:
 * the logits in eval mode (the inference executor, fused and not), the
 * logits in training mode (BatchNorm on the batch's statistics) and the
 * gradient of sum(r * logits) with respect to every parameter (the
 * trainer, the backward pass that fine-tuning, training, Quant-Noise and
 * BitPruning use). r is the loss's gradient with respect to the logits by
 * construction, so no loss function stands between the two sides. */
#include "bd_test.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "exec.h"
#include "onnx_io.h"
#include "train.h"

static const char *const families[] = {
    "alexnet",      "vgg11_bn",         "squeezenet1_1", "googlenet",     "inception_v3",
    "densenet121",  "resnets",          "mobilenet_v2",  "mobilenet_v3_small",
    "mnasnet0_5",   "shufflenet_v2",    "efficientnet_b0", "efficientnet_v2_s",
    "regnet_y_400mf", "convnext_tiny"};

enum { MAX_PARAMS = 256 };

/* One fixture: the model, the batch and PyTorch's arrays. */
typedef struct fixture {
    bd_graph *g;
    bd_tensor *x;
    const float *eval, *train, *r; /* logits, N x K */
    int64_t n, k;
    int nparams;
    int param[MAX_PARAMS];  /* value ids of the initializers */
    const float *grad[MAX_PARAMS];
    char name[MAX_PARAMS][128];
    void *ref;
    float *values; /* the arrays, aligned (the text header before them is not a multiple of 4) */
} fixture;

static void load(const char *family, fixture *f)
{
    memset(f, 0, sizeof *f);
    char rel[128];
    snprintf(rel, sizeof rel, "tests/zoo/%s.onnx", family);
    if (bd_onnx_load(bd_test_path(rel), &f->g) != BD_OK)
        fail_msg("%s", bd_error_message());
    size_t len;
    float *x = bd_test_read_file(bd_test_path("tests/zoo/x.f32"), &len);
    assert_non_null(x);
    snprintf(rel, sizeof rel, "tests/zoo/%s.ref", family);
    f->ref = bd_test_read_file(bd_test_path(rel), &len);
    assert_non_null(f->ref);
    /* the header, then the arrays (make_fixtures.py) */
    char *text = f->ref, *end = strstr(text, "\nend\n");
    assert_non_null(end);
    const size_t header = (size_t)(end + 5 - text);
    *end = 0;
    f->values = malloc(len - header + sizeof(float));
    assert_non_null(f->values);
    memcpy(f->values, end + 5, len - header);
    int64_t xd[4];
    assert_int_equal(sscanf(text, "x %ld %ld %ld %ld", &xd[0], &xd[1], &xd[2], &xd[3]), 4);
    assert_int_equal(bd_tensor_new(&f->x, BD_F32, 4, xd, "x"), BD_OK);
    memcpy(f->x->data, x, (size_t)bd_tensor_count(f->x) * sizeof(float));
    free(x);
    size_t at = 0;
    for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) {
        int64_t a, b;
        char name[128];
        const float *here = f->values + at / sizeof(float);
        if (sscanf(line, "eval %ld %ld", &a, &b) == 2) {
            f->eval = here, f->n = a, f->k = b;
            at += (size_t)(a * b) * sizeof(float);
        } else if (sscanf(line, "train %ld %ld", &a, &b) == 2) {
            f->train = here;
            at += (size_t)(a * b) * sizeof(float);
        } else if (sscanf(line, "r %ld %ld", &a, &b) == 2) {
            f->r = here;
            at += (size_t)(a * b) * sizeof(float);
        } else if (sscanf(line, "grad %127s %ld", name, &a) == 2) {
            assert_true(f->nparams < MAX_PARAMS);
            const int id = bd_graph_find(f->g, name);
            if (id < 0 || !f->g->values[id].init)
                fail_msg("%s: parameter %s is not an initializer", family, name);
            assert_int_equal(bd_tensor_count(f->g->values[id].init), a);
            f->param[f->nparams] = id;
            f->grad[f->nparams] = here;
            snprintf(f->name[f->nparams], sizeof f->name[0], "%s", name);
            f->nparams++;
            at += (size_t)a * sizeof(float);
        }
    }
    assert_int_equal(header + at, len);
    assert_true(f->eval && f->train && f->r && f->nparams > 0);
}

static void unload(fixture *f)
{
    bd_tensor_free(f->x);
    bd_graph_free(f->g);
    free(f->ref);
    free(f->values);
}

/* The inference executor, with and without its fusions, in eval mode. */
static void test_forward_matches_pytorch(void **state)
{
    (void)state;
    for (size_t m = 0; m < sizeof families / sizeof *families; m++) {
        fixture f;
        load(families[m], &f);
        for (int fuse = 0; fuse < 2; fuse++) {
            bd_exec *ex;
            assert_int_equal(bd_exec_new(&ex, f.g, fuse ? BD_EXEC_FUSE : 0), BD_OK);
            bd_tensor *y = NULL;
            if (bd_exec_run1(ex, f.x, &y) != BD_OK)
                fail_msg("%s: %s", families[m], bd_error_message());
            assert_int_equal(bd_tensor_count(y), f.n * f.k);
            const double e = bd_test_rel_error(y->data, f.eval, (size_t)(f.n * f.k));
            print_message("%-20s forward%s  %.2e\n", families[m], fuse ? " fused" : "      ", e);
            if (!(e < 1e-5))
                fail_msg("%s: eval logits off by %.3g (relative)", families[m], e);
            bd_tensor_free(y);
            /* the first image alone: at batch 1 the fused executor writes
             * convs' outputs straight into the Concats that read them */
            int64_t dims[BD_MAX_DIMS];
            memcpy(dims, f.x->dims, sizeof dims);
            dims[0] = 1;
            bd_tensor *x1 = NULL;
            assert_int_equal(bd_tensor_view_head(&x1, f.x, f.x->ndim, dims), BD_OK);
            if (bd_exec_run1(ex, x1, &y) != BD_OK)
                fail_msg("%s: %s", families[m], bd_error_message());
            const double e1 = bd_test_rel_error(y->data, f.eval, (size_t)f.k);
            if (!(e1 < 1e-5))
                fail_msg("%s: eval logits of one image off by %.3g (relative)", families[m], e1);
            bd_tensor_free(y);
            bd_tensor_free(x1);
            bd_exec_free(ex);
        }
        unload(&f);
    }
}

/* The trainer: logits on the batch's statistics, and every parameter's
 * gradient. Float32 sums in another order than PyTorch's differ by about
 * 1e-6 of the largest term; through a BatchNorm on the batch's statistics
 * (which divides by a standard deviation of a few values where a map is
 * small) and a backward pass of tens of layers that grows to 1e-4 of a
 * tensor's largest gradient. A broken backward is off by its whole size. */
static void test_training_gradients_match_pytorch(void **state)
{
    (void)state;
    for (size_t m = 0; m < sizeof families / sizeof *families; m++) {
        fixture f;
        load(families[m], &f);
        const bd_train_options opt = {.bn_train = 1, .bn_momentum = 0.1f};
        bd_train *t;
        if (bd_train_new(&t, f.g, f.param, f.nparams, &opt) != BD_OK)
            fail_msg("%s: %s", families[m], bd_error_message());
        bd_tensor *y = NULL, *dy = NULL, *grads[MAX_PARAMS] = {NULL};
        if (bd_train_forward(t, f.x, &y) != BD_OK)
            fail_msg("%s: %s", families[m], bd_error_message());
        const double ey = bd_test_rel_error(y->data, f.train, (size_t)(f.n * f.k));
        if (!(ey < 1e-5))
            fail_msg("%s: training-mode logits off by %.3g (relative)", families[m], ey);
        assert_int_equal(bd_tensor_new(&dy, BD_F32, y->ndim, y->dims, "dy"), BD_OK);
        memcpy(dy->data, f.r, (size_t)(f.n * f.k) * sizeof(float));
        if (bd_train_backward(t, dy, grads) != BD_OK)
            fail_msg("%s: %s", families[m], bd_error_message());
        /* against the tensor's largest gradient, or 1e-3 of the model's
         * where that is smaller: a conv's bias before a BatchNorm on batch
         * statistics has a gradient of exactly 0, which both sides compute
         * as rounding noise */
        double scale = 0, worst = 0;
        int at = 0;
        for (int i = 0; i < f.nparams; i++)
            for (int64_t j = 0; j < bd_tensor_count(grads[i]); j++)
                scale = fmax(scale, fabs(f.grad[i][j]));
        for (int i = 0; i < f.nparams; i++) {
            double diff = 0, top = 1e-3 * scale;
            for (int64_t j = 0; j < bd_tensor_count(grads[i]); j++) {
                diff = fmax(diff, fabs(((const float *)grads[i]->data)[j] - f.grad[i][j]));
                top = fmax(top, fabs(f.grad[i][j]));
            }
            if (!(diff / top <= worst))
                worst = diff / top, at = i;
            bd_tensor_free(grads[i]);
        }
        print_message("%-20s train logits %.2e, %3d gradients, worst %.2e (%s)\n", families[m],
                      ey, f.nparams, worst, f.name[at]);
        if (!(worst < 1e-3))
            fail_msg("%s: the gradient of %s is off by %.3g (relative)", families[m],
                     f.name[at], worst);
        bd_tensor_free(y);
        bd_tensor_free(dy);
        bd_train_free(t);
        unload(&f);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_forward_matches_pytorch),
        cmocka_unit_test(test_training_gradients_match_pytorch),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
