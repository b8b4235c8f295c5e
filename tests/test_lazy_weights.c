/* Inference from the stored form (lazy_weights.h): a compressed model run
 * with its weights decoded one layer at a time gives exactly the logits of
 * the same model decoded in place, for PQ and int layers alike; it holds
 * far fewer bytes than the dense weights; and decoding from packed codes
 * equals decoding from unpacked ones. */
#include "bd_test.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "compressed.h"
#include "exec.h"
#include "lazy_weights.h"
#include "workspace.h"

/* The example ResNet with layer2.* int4, layer3.* int3 per tensor, the rest
 * PQ small, saved to path. */
static void make_compressed(const char *path)
{
    bd_workspace *ws;
    assert_int_equal(bd_ws_new(&ws), BD_OK);
    if (bd_ws_load(ws, bd_test_path("examples/fmnist/resnet_bn.onnx")) != BD_OK)
        fail_msg("%s", bd_error_message());
    assert_int_equal(bd_ws_data(ws, BD_DATA_CALIB, "fmnist:train", 64), BD_OK);
    bd_ws_change c = BD_PLAN_CHANGE_NONE;
    c.bits = 4;
    assert_int_equal(bd_ws_set(ws, "layer2.*", &c), BD_OK);
    c.bits = 3;
    c.per_channel = 0;
    assert_int_equal(bd_ws_set(ws, "layer3.*", &c), BD_OK);
    if (bd_ws_quantize(ws, NULL, 5) != BD_OK || bd_ws_save(ws, path, 0) != BD_OK)
        fail_msg("%s", bd_error_message());
    bd_ws_free(ws);
}

/* Logits of the model at path on a seeded batch, run lazily or not. */
static bd_tensor *logits_of(const char *path, int lazy, size_t *held)
{
    bd_graph *g;
    bd_qlayer *q;
    int n;
    assert_int_equal(bd_model_load(path, &g, &q, &n), BD_OK);
    bd_lazy_weights *lw = NULL;
    size_t dense = 0, largest = 0;
    if (lazy) {
        bd_layer *layers;
        int nl;
        assert_int_equal(bd_layers_find(g, &layers, &nl), BD_OK);
        assert_int_equal(nl, n);
        for (int i = 0; i < n; i++)
            if (q[i].k > 0) {
                size_t b = bd_tensor_nbytes(g->values[layers[i].weight].init);
                dense += b;
                largest = b > largest ? b : largest;
            }
        assert_int_equal(bd_lazy_weights_new(g, layers, q, n, &lw), BD_OK);
        for (int i = 0; i < n; i++)
            assert_int_equal(q[i].k, 0); /* moved into the set */
        *held = bd_lazy_weights_bytes(lw);
        /* one layer's scratch, and the packed codes and tables: a few bits
         * a weight where the dense ones take 32 */
        if (!(*held >= largest && *held - largest < dense / 4))
            fail_msg("%zu bytes held for %zu dense (largest layer %zu)", *held, dense, largest);
        free(layers);
    }
    for (int i = 0; i < n; i++)
        bd_qlayer_free(&q[i]);
    free(q);
    bd_exec *ex;
    assert_int_equal(bd_exec_new(&ex, g, BD_EXEC_FUSE), BD_OK);
    if (lw)
        bd_lazy_weights_attach(lw, ex);
    int64_t dims[4] = {8, 1, 28, 28};
    bd_tensor *x, *y;
    assert_int_equal(bd_tensor_new(&x, BD_F32, 4, dims, "x"), BD_OK);
    bd_test_fill_random(x->data, 8 * 784, 21, -1, 2);
    assert_int_equal(bd_exec_run1(ex, x, &y), BD_OK);
    bd_tensor_free(x);
    bd_exec_free(ex);
    bd_graph_free(g);
    bd_lazy_weights_free(lw);
    return y;
}

static void test_lazy_equals_decoded(void **state)
{
    (void)state;
    char path[512];
    snprintf(path, sizeof path, "%s/mixed.onnx", bd_test_tmpdir());
    make_compressed(path);
    size_t held = 0;
    bd_tensor *a = logits_of(path, 0, NULL), *b = logits_of(path, 1, &held);
    assert_int_equal(bd_tensor_count(a), 80);
    assert_memory_equal(a->data, b->data, bd_tensor_nbytes(a));
    bd_tensor_free(a);
    bd_tensor_free(b);
}

static void test_packed_decode(void **state)
{
    (void)state;
    bd_layer l;
    memset(&l, 0, sizeof l);
    snprintf(l.name, sizeof l.name, "fc");
    snprintf(l.op, sizeof l.op, "Gemm");
    l.rows = 6;
    l.row_len = 10;
    l.groups = 1;
    for (int transposed = 0; transposed < 2; transposed++) {
        l.transposed = transposed;
        float centroids[5 * 2] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10}, scales[6] = {1, 2, 3, 4, 5, 6};
        int32_t codes[60];
        for (int i = 0; i < 60; i++)
            codes[i] = (i * 7) % 5;
        bd_qlayer pq = {.format = BD_FMT_PQ, .d = 2, .k = 5, .n = 30, .centroids = centroids,
                        .codes = codes};
        bd_qlayer in = {.format = BD_FMT_INT, .d = 1, .k = 8, .ints = {3, 1, 1}, .n = 60,
                        .nscales = 6, .scales = scales, .codes = codes};
        const bd_qlayer *qs[2] = {&pq, &in};
        for (int f = 0; f < 2; f++) {
            const int bits = f ? 3 : bd_code_bits(5);
            uint8_t packed[64];
            bd_pack_bits(codes, qs[f]->n, bits, packed);
            float a[60], b[60];
            assert_int_equal(bd_qlayer_decode(qs[f], &l, a), BD_OK);
            assert_int_equal(bd_qlayer_decode_packed(qs[f], packed, &l, b), BD_OK);
            assert_memory_equal(a, b, sizeof a);
            /* and by hand: row 1's first value */
            float want = f ? scales[1] * (float)(codes[10] - 4) : centroids[codes[5] * 2];
            assert_true(a[transposed ? 1 : 10] == want);
        }
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_packed_decode),
        cmocka_unit_test(test_lazy_equals_decoded),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
