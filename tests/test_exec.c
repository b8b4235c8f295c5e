/* The executor: hooks see each node's real inputs, a run can stop early,
 * and bad inputs are refused with a message naming the input. */
#include "bd_test.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "exec.h"
#include "onnx_io.h"

typedef struct seen {
    int calls;
    int last_node;
    int conv_calls;
    int64_t first_conv_channels;
    int stop_at; /* fail the run at this node, -1 never */
} seen;

static bd_status hook(void *user, const bd_graph *g, int node, bd_tensor *const *in)
{
    seen *s = user;
    s->calls++;
    s->last_node = node;
    if (strcmp(g->nodes[node].op, "Conv") == 0) {
        if (s->conv_calls++ == 0)
            s->first_conv_channels = in[0]->dims[1];
        /* the weight the hook sees is the graph's own initializer */
        assert_ptr_equal(in[1], g->values[g->nodes[node].inputs[1]].init);
    }
    if (node == s->stop_at)
        return bd_fail(BD_ECANCELED, "stopped by the hook");
    return BD_OK;
}

static bd_graph *load_resnet(void)
{
    bd_graph *g;
    if (bd_onnx_load(bd_test_path("examples/fmnist/resnet_bn.onnx"), &g) != BD_OK)
        fail_msg("%s", bd_error_message());
    return g;
}

static bd_tensor *random_input(int n)
{
    int64_t dims[4] = {n, 1, 28, 28};
    bd_tensor *x;
    assert_int_equal(bd_tensor_new(&x, BD_F32, 4, dims, "x"), BD_OK);
    bd_test_fill_random(x->data, (size_t)bd_tensor_count(x), 3, -1, 1);
    return x;
}

static void test_hooks(void **state)
{
    (void)state;
    bd_graph *g = load_resnet();
    bd_exec *ex;
    assert_int_equal(bd_exec_new(&ex, g, 0), BD_OK);
    seen s = {.stop_at = -1};
    bd_exec_set_hook(ex, hook, &s);
    bd_tensor *x = random_input(2), *y;
    assert_int_equal(bd_exec_run1(ex, x, &y), BD_OK);
    assert_int_equal(s.calls, g->nnodes); /* unfused: every node */
    assert_int_equal(s.first_conv_channels, 1);
    int convs = 0;
    for (int i = 0; i < g->nnodes; i++)
        convs += strcmp(g->nodes[i].op, "Conv") == 0;
    assert_int_equal(s.conv_calls, convs);
    bd_tensor_free(y);

    /* run_until stops right at the node, hook included */
    int third_conv = -1;
    for (int i = 0, k = 0; i < g->nnodes && third_conv < 0; i++)
        if (strcmp(g->nodes[i].op, "Conv") == 0 && ++k == 3)
            third_conv = i;
    memset(&s, 0, sizeof s);
    s.stop_at = -1;
    assert_int_equal(bd_exec_run_until(ex, &x, third_conv), BD_OK);
    assert_int_equal(s.last_node, third_conv);
    assert_int_equal(s.conv_calls, 3);

    /* a failing hook fails the run with its status and message */
    memset(&s, 0, sizeof s);
    s.stop_at = third_conv;
    assert_int_equal(bd_exec_run1(ex, x, &y), BD_ECANCELED);
    assert_non_null(strstr(bd_error_message(), "stopped by the hook"));
    assert_null(y);
    bd_tensor_free(x);
    bd_exec_free(ex);
    bd_graph_free(g);
}

static void test_fusion_skips_hooks_but_keeps_results(void **state)
{
    (void)state;
    bd_graph *g = load_resnet();
    bd_exec *plain, *fused;
    assert_int_equal(bd_exec_new(&plain, g, 0), BD_OK);
    assert_int_equal(bd_exec_new(&fused, g, BD_EXEC_FUSE), BD_OK);
    seen s = {.stop_at = -1};
    bd_exec_set_hook(fused, hook, &s);
    bd_tensor *x = random_input(3), *a, *b;
    assert_int_equal(bd_exec_run1(plain, x, &a), BD_OK);
    assert_int_equal(bd_exec_run1(fused, x, &b), BD_OK);
    assert_true(s.calls < g->nnodes); /* BN and Relu nodes folded away */
    assert_true(bd_test_rel_error(b->data, a->data, (size_t)bd_tensor_count(a)) < 1e-5);
    bd_tensor_free(a);
    bd_tensor_free(b);
    bd_tensor_free(x);
    bd_exec_free(plain);
    bd_exec_free(fused);
    bd_graph_free(g);
}

static void test_bad_inputs(void **state)
{
    (void)state;
    bd_graph *g = load_resnet();
    bd_exec *ex;
    assert_int_equal(bd_exec_new(&ex, g, BD_EXEC_FUSE), BD_OK);
    int64_t dims[4] = {2, 3, 28, 28};
    bd_tensor *x, *y;
    assert_int_equal(bd_tensor_new(&x, BD_F32, 4, dims, "x"), BD_OK);
    assert_int_not_equal(bd_exec_run1(ex, x, &y), BD_OK);
    assert_non_null(strstr(bd_error_message(), "input 'input' must have shape [batch, 1, 28, 28]"));
    bd_tensor_free(x);
    assert_int_equal(bd_tensor_new(&x, BD_I64, 4, dims, "x"), BD_OK);
    assert_int_not_equal(bd_exec_run1(ex, x, &y), BD_OK);
    assert_non_null(strstr(bd_error_message(), "must be float32"));
    bd_tensor_free(x);
    bd_exec_free(ex);
    bd_graph_free(g);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hooks),
        cmocka_unit_test(test_fusion_skips_hooks_but_keeps_results),
        cmocka_unit_test(test_bad_inputs),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
