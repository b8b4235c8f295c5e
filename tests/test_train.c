/* The trainer on small graphs built here: shape computations (Shape ->
 * Gather -> Unsqueeze -> Concat -> Reshape) are folded out of the gradient's
 * path and give the forward they gave before; a squeeze-and-excitation
 * block (pool, 1x1 convs, a sigmoid gate, Mul by a [N, C, 1, 1] scale)
 * trains, its parameter gradients matching finite differences of the loss;
 * an op without a backward is named before any work. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bd_test_node.h"
#include "exec.h"
#include "grad.h"
#include "train.h"

/* An empty graph whose input "x" is float32 of these dims. */
static bd_graph *graph_with_input(int ndim, const int64_t *dims)
{
    bd_graph *g;
    int id;
    assert_int_equal(bd_graph_new(&g), BD_OK);
    g->opset = 13;
    assert_int_equal(bd_graph_value(g, "x", &id), BD_OK);
    bd_value *v = &g->values[id];
    v->dtype = BD_F32;
    v->ndim = ndim;
    memcpy(v->dims, dims, (size_t)ndim * sizeof *dims);
    g->inputs = malloc(sizeof *g->inputs);
    assert_non_null(g->inputs);
    g->inputs[0] = id;
    g->ninputs = 1;
    return g;
}

static bd_node *add(bd_graph *g, const char *op, int nin, const char *const *ins,
                    const char *out)
{
    bd_node *n;
    char name[64];
    snprintf(name, sizeof name, "%s_%d", op, g->nnodes);
    assert_int_equal(bd_graph_add_node(g, name, op, "", nin, ins, 1, &out, &n), BD_OK);
    return n;
}

static int init(bd_graph *g, const char *name, bd_tensor *t)
{
    int id;
    assert_int_equal(bd_graph_value(g, name, &id), BD_OK);
    bd_graph_set_init(g, id, t);
    return id;
}

static void finish(bd_graph *g, const char *out)
{
    g->outputs = malloc(sizeof *g->outputs);
    assert_non_null(g->outputs);
    g->outputs[0] = bd_graph_find(g, out);
    assert_true(g->outputs[0] >= 0);
    g->noutputs = 1;
    assert_int_equal(bd_graph_sort(g), BD_OK);
}

/* Conv -> Reshape to [N, -1] -> Gemm, the target either computed from the
 * conv's shape or a constant. */
static bd_graph *flatten_graph(int computed)
{
    bd_graph *g = graph_with_input(BD_TEST_DIMS(2, 3, 6, 6));
    init(g, "w", bd_test_rand_f32(BD_TEST_DIMS(4, 3, 3, 3), 1, -0.5f, 0.5f));
    init(g, "fc", bd_test_rand_f32(BD_TEST_DIMS(5, 144), 2, -0.2f, 0.2f));
    bd_node *n = add(g, "Conv", 2, (const char *[]){"x", "w"}, "c");
    bd_test_attr_ints(n, "pads", 4, (int64_t[]){1, 1, 1, 1});
    if (computed) {
        bd_tensor *zero = bd_test_tensor(BD_I64, BD_TEST_SCALAR);
        *(int64_t *)zero->data = 0;
        init(g, "zero", zero);
        init(g, "axes", BD_TEST_INTS(0));
        init(g, "rest", BD_TEST_INTS(-1));
        add(g, "Shape", 1, (const char *[]){"c"}, "s");
        add(g, "Gather", 2, (const char *[]){"s", "zero"}, "n0");
        add(g, "Unsqueeze", 2, (const char *[]){"n0", "axes"}, "n1");
        bd_test_attr_int(add(g, "Concat", 2, (const char *[]){"n1", "rest"}, "target"), "axis",
                         0);
    } else {
        init(g, "target", BD_TEST_INTS(2, -1));
    }
    add(g, "Reshape", 2, (const char *[]){"c", "target"}, "r");
    bd_test_attr_int(add(g, "Gemm", 2, (const char *[]){"r", "fc"}, "y"), "transB", 1);
    finish(g, "y");
    return g;
}

/* One training step's output and the gradients of params[0..2). */
static void step(bd_train *tr, const bd_tensor *x, const bd_tensor *dy, bd_tensor **y,
                 bd_tensor **grads)
{
    bd_tensor *view;
    if (bd_train_forward(tr, x, &view) != BD_OK)
        fail_msg("forward: %s", bd_error_message());
    assert_int_equal(bd_tensor_clone(y, view), BD_OK);
    bd_tensor_free(view);
    if (bd_train_backward(tr, dy, grads) != BD_OK)
        fail_msg("backward: %s", bd_error_message());
}

static void test_shape_computations_fold(void **state)
{
    (void)state;
    bd_graph *g = flatten_graph(1), *ref = flatten_graph(0);
    int params[2] = {bd_graph_find(g, "w"), bd_graph_find(g, "fc")};
    int rparams[2] = {bd_graph_find(ref, "w"), bd_graph_find(ref, "fc")};
    bd_train_plan plan;
    assert_int_equal(bd_train_plan_new(g, params, 2, bd_grad_supported, &plan), BD_OK);
    static const char *const folded[] = {"s", "n0", "n1", "target"};
    for (int i = 0; i < 4; i++) {
        int v = bd_graph_find(g, folded[i]);
        assert_true(plan.fold[v]);
        assert_false(plan.req[v]);
    }
    assert_false(plan.fold[bd_graph_find(g, "r")]);
    bd_train_plan_free(&plan);

    bd_tensor *x = bd_test_rand_f32(BD_TEST_DIMS(2, 3, 6, 6), 3, -1, 1);
    bd_tensor *dy = bd_test_rand_f32(BD_TEST_DIMS(2, 5), 4, -1, 1);
    bd_train *tr, *rtr;
    bd_train_options to = {0};
    assert_int_equal(bd_train_new(&tr, g, params, 2, &to), BD_OK);
    assert_int_equal(bd_train_new(&rtr, ref, rparams, 2, &to), BD_OK);
    bd_tensor *y[3], *grads[3][2];
    step(tr, x, dy, &y[0], grads[0]);
    step(tr, x, dy, &y[1], grads[1]); /* from the folded values */
    step(rtr, x, dy, &y[2], grads[2]);
    bd_exec *ex;
    bd_tensor *inference;
    assert_int_equal(bd_exec_new(&ex, g, 0), BD_OK);
    assert_int_equal(bd_exec_run1(ex, x, &inference), BD_OK);
    for (int k = 0; k < 3; k++) {
        bd_test_assert_shape(y[k], 2, (int64_t[]){2, 5}, "trained output");
        bd_test_assert_close(y[k], inference->data, 1e-6, "forward against inference");
        for (int p = 0; p < 2; p++)
            bd_test_assert_close(grads[k][p], grads[2][p]->data, 1e-6,
                                 "gradient against a constant target");
    }
    /* another batch size computes the shapes again */
    bd_tensor *x3 = bd_test_rand_f32(BD_TEST_DIMS(3, 3, 6, 6), 5, -1, 1), *y3;
    assert_int_equal(bd_train_forward(tr, x3, &y3), BD_OK);
    bd_test_assert_shape(y3, 2, (int64_t[]){3, 5}, "output of a batch of 3");
    bd_tensor_free(y3);
    bd_tensor_free(x3);
    for (int k = 0; k < 3; k++) {
        bd_tensor_free(y[k]);
        for (int p = 0; p < 2; p++)
            bd_tensor_free(grads[k][p]);
    }
    bd_tensor_free(inference);
    bd_exec_free(ex);
    bd_train_free(tr);
    bd_train_free(rtr);
    bd_tensor_free(x);
    bd_tensor_free(dy);
    bd_graph_free(g);
    bd_graph_free(ref);
}

/* Conv -> squeeze-and-excitation (pool, Conv, Relu, Conv, gate, Mul) ->
 * GlobalAveragePool -> Flatten: the shape of MobileNetV3's and
 * EfficientNet's blocks. */
static bd_graph *se_graph(const char *pool, const char *gate)
{
    bd_graph *g = graph_with_input(BD_TEST_DIMS(2, 4, 5, 5));
    init(g, "w1", bd_test_rand_f32(BD_TEST_DIMS(4, 4, 3, 3), 1, -0.5f, 0.5f));
    init(g, "w2", bd_test_rand_f32(BD_TEST_DIMS(2, 4, 1, 1), 2, -1, 1));
    init(g, "b2", bd_test_rand_f32(BD_TEST_DIMS(2), 3, -0.5f, 0.5f));
    init(g, "w3", bd_test_rand_f32(BD_TEST_DIMS(4, 2, 1, 1), 4, -1, 1));
    bd_node *n = add(g, "Conv", 2, (const char *[]){"x", "w1"}, "a");
    bd_test_attr_ints(n, "pads", 4, (int64_t[]){1, 1, 1, 1});
    n = add(g, pool, 1, (const char *[]){"a"}, "m");
    if (strcmp(pool, "ReduceMean") == 0)
        bd_test_attr_ints(n, "axes", 2, (int64_t[]){2, 3});
    add(g, "Conv", 3, (const char *[]){"m", "w2", "b2"}, "r1");
    add(g, "Relu", 1, (const char *[]){"r1"}, "r");
    add(g, "Conv", 2, (const char *[]){"r", "w3"}, "e");
    add(g, gate, 1, (const char *[]){"e"}, "s");
    add(g, "Mul", 2, (const char *[]){"a", "s"}, "o");
    add(g, "GlobalAveragePool", 1, (const char *[]){"o"}, "p");
    add(g, "Flatten", 1, (const char *[]){"p"}, "y");
    finish(g, "y");
    return g;
}

static double kl_of(bd_graph *g, const bd_tensor *x, const bd_tensor *teacher)
{
    bd_exec *ex;
    bd_tensor *y;
    double loss;
    assert_int_equal(bd_exec_new(&ex, g, 0), BD_OK);
    assert_int_equal(bd_exec_run1(ex, x, &y), BD_OK);
    assert_int_equal(bd_loss_kl(y, teacher, &loss, NULL), BD_OK);
    bd_tensor_free(y);
    bd_exec_free(ex);
    return loss;
}

static void check_se(const char *pool, const char *gate)
{
    bd_graph *g = se_graph(pool, gate);
    static const char *const names[] = {"w1", "w2", "b2", "w3"};
    int params[4];
    for (int i = 0; i < 4; i++)
        params[i] = bd_graph_find(g, names[i]);
    bd_tensor *x = bd_test_rand_f32(BD_TEST_DIMS(2, 4, 5, 5), 5, -2, 2);
    bd_tensor *teacher = bd_test_rand_f32(BD_TEST_DIMS(2, 4), 6, -3, 3), *y, *dl, *grads[4];
    bd_train *tr;
    bd_train_options to = {0};
    if (bd_train_new(&tr, g, params, 4, &to) != BD_OK)
        fail_msg("%s, %s: %s", pool, gate, bd_error_message());
    double loss;
    assert_int_equal(bd_train_forward(tr, x, &y), BD_OK);
    assert_int_equal(bd_loss_kl(y, teacher, &loss, &dl), BD_OK);
    assert_true(fabs(loss - kl_of(g, x, teacher)) < 1e-6 * (1 + loss));
    assert_int_equal(bd_train_backward(tr, dl, grads), BD_OK);
    for (int p = 0; p < 4; p++) {
        float *w = g->values[params[p]].init->data;
        const float *gd = grads[p]->data;
        double worst = 0, scale = 0, wrong = 0;
        for (int64_t i = 0; i < bd_tensor_count(grads[p]) && i < 24; i++) {
            const float keep = w[i], h = 1e-2f;
            w[i] = keep + h;
            const double up = kl_of(g, x, teacher);
            w[i] = keep - h;
            const double down = kl_of(g, x, teacher);
            w[i] = keep;
            const double numeric = (up - down) / (2 * h);
            worst = fmax(worst, fabs(numeric - gd[i]));
            wrong = fmax(wrong, fabs(numeric - 1.1 * gd[i]));
            scale = fmax(scale, fabs(numeric));
        }
        const double tol = 1e-2 * scale + 1e-5;
        if (!(worst <= tol) || !(wrong > tol))
            fail_msg("%s, %s: gradient of %s off by %g, 10%% off by %g (tolerance %g)", pool,
                     gate, names[p], worst, wrong, tol);
        bd_tensor_free(grads[p]);
    }
    bd_tensor_free(y);
    bd_tensor_free(dl);
    bd_tensor_free(teacher);
    bd_tensor_free(x);
    bd_train_free(tr);
    bd_graph_free(g);
}

static void test_squeeze_excitation_trains(void **state)
{
    (void)state;
    check_se("ReduceMean", "Sigmoid");
    check_se("GlobalAveragePool", "HardSigmoid");
}

/* An op without a backward on the gradient's path stops the plan before
 * any work, naming the node and the op. */
static void test_missing_backward_named(void **state)
{
    (void)state;
    bd_graph *g = graph_with_input(BD_TEST_DIMS(2, 3, 6, 6));
    int w = init(g, "w", bd_test_rand_f32(BD_TEST_DIMS(4, 3, 3, 3), 1, -0.5f, 0.5f));
    init(g, "shape", BD_TEST_INTS(2, 4, 4, 4));
    add(g, "Conv", 2, (const char *[]){"x", "w"}, "c");
    add(g, "Expand", 2, (const char *[]){"c", "shape"}, "y");
    finish(g, "y");
    bd_train *tr = NULL;
    bd_train_options to = {0};
    assert_int_equal(bd_train_new(&tr, g, &w, 1, &to), BD_EUNSUPPORTED);
    assert_null(tr);
    const char *msg = bd_error_message();
    if (!strstr(msg, "Expand_1") || !strstr(msg, "op 'Expand' has no backward pass"))
        fail_msg("unexpected message: %s", msg);
    bd_graph_free(g);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_shape_computations_fold),
        cmocka_unit_test(test_squeeze_excitation_trains),
        cmocka_unit_test(test_missing_backward_named),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
