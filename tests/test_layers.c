/* Layer discovery and naming (docs/method.md, "Layout"): the weight's name without
 * ".weight"; for an exporter's generated weight name, the module path in the
 * node's name; failing both, the node name; names made unique. */
#include "bd_test.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bd_test_node.h"
#include "layers.h"

/* A graph of Convs named by (node name, weight name) pairs, all reading x. */
static bd_graph *convs(const char *const (*names)[2], int n)
{
    bd_graph *g;
    assert_int_equal(bd_graph_new(&g), BD_OK);
    for (int i = 0; i < n; i++) {
        const char *in[2] = {"x", names[i][1]};
        char out[32];
        snprintf(out, sizeof out, "y%d", i);
        const char *outs[1] = {out};
        assert_int_equal(bd_graph_add_node(g, names[i][0], "Conv", "", 2, in, 1, outs, NULL), BD_OK);
        int w;
        assert_int_equal(bd_graph_value(g, names[i][1], &w), BD_OK);
        bd_graph_set_init(g, w, bd_test_rand_f32(BD_TEST_DIMS(4, 2, 3, 3), (uint64_t)i, -1, 1));
    }
    return g;
}

static void test_names(void **state)
{
    (void)state;
    static const char *const names[][2] = {
        {"/layer3/layer3.2/conv2/Conv", "layer3.2.conv2.weight"}, /* the weight's name */
        {"/layer1/layer1.0/downsample/downsample.0/Conv", "onnx::Conv_206"},
        {"/features/features.3/conv/conv.1/conv.1.0/Conv", "onnx::Conv_17"},
        {"/conv1/Conv", "onnx::Conv_1"},
        {"custom_node", "onnx::Conv_2"},
        {"", "onnx::Conv_3"},
        {"/conv1/Conv", "onnx::Conv_4"}, /* a clash with the fourth */
    };
    bd_graph *g = convs(names, 7);
    bd_layer *l;
    int n;
    assert_int_equal(bd_layers_find(g, &l, &n), BD_OK);
    assert_int_equal(n, 7);
    assert_string_equal(l[0].name, "layer3.2.conv2");
    assert_string_equal(l[1].name, "layer1.0.downsample.0");
    assert_string_equal(l[2].name, "features.3.conv.1.0");
    assert_string_equal(l[3].name, "conv1");
    assert_string_equal(l[4].name, "custom_node");
    assert_string_equal(l[5].name, "op_5");
    assert_string_equal(l[6].name, "conv1#2");
    assert_int_equal(l[0].rows, 4);
    assert_int_equal(l[0].row_len, 18);
    free(l);
    bd_graph_free(g);
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_names)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
