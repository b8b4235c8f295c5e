/* The ONNX loader and writer: real files, typed and external initializers,
 * and every kind of bad file the loader must refuse with a clear message. */
#include "bd_test.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "graph.h"
#include "onnx.pb-c.h"
#include "onnx_io.h"

/* ---- building small models with protobuf-c ------------------------------- */

typedef struct model {
    Onnx__ModelProto m;
    Onnx__GraphProto g;
    Onnx__OperatorSetIdProto opset;
    Onnx__OperatorSetIdProto *opsets[1];
    Onnx__NodeProto node;
    Onnx__NodeProto *nodes[1];
    char *node_in[2], *node_out[1];
    Onnx__TensorProto w, extra;
    Onnx__TensorProto *inits[2];
    int64_t wdims[2];
    Onnx__ValueInfoProto in, out;
    Onnx__ValueInfoProto *ins[1], *outs[1];
    Onnx__TypeProto in_type, out_type;
    Onnx__TypeProto__Tensor in_tt, out_tt;
    float wdata[6];
} model;

/* Y = MatMul(X[1,2], W[2,3]) with W in raw_data. */
static void model_init(model *md)
{
    memset(md, 0, sizeof *md);
    onnx__model_proto__init(&md->m);
    onnx__graph_proto__init(&md->g);
    onnx__operator_set_id_proto__init(&md->opset);
    onnx__node_proto__init(&md->node);
    onnx__tensor_proto__init(&md->w);
    onnx__tensor_proto__init(&md->extra);
    onnx__value_info_proto__init(&md->in);
    onnx__value_info_proto__init(&md->out);
    onnx__type_proto__init(&md->in_type);
    onnx__type_proto__init(&md->out_type);
    onnx__type_proto__tensor__init(&md->in_tt);
    onnx__type_proto__tensor__init(&md->out_tt);
    md->opset.domain = "";
    md->opset.has_version = 1;
    md->opset.version = 13;
    md->opsets[0] = &md->opset;
    md->m.has_ir_version = 1;
    md->m.ir_version = 8;
    md->m.n_opset_import = 1;
    md->m.opset_import = md->opsets;
    md->m.graph = &md->g;
    md->node_in[0] = "X";
    md->node_in[1] = "W";
    md->node_out[0] = "Y";
    md->node.op_type = "MatMul";
    md->node.name = "mm";
    md->node.n_input = 2;
    md->node.input = md->node_in;
    md->node.n_output = 1;
    md->node.output = md->node_out;
    md->nodes[0] = &md->node;
    md->g.n_node = 1;
    md->g.node = md->nodes;
    for (int i = 0; i < 6; i++)
        md->wdata[i] = (float)(i + 1);
    md->wdims[0] = 2;
    md->wdims[1] = 3;
    md->w.name = "W";
    md->w.n_dims = 2;
    md->w.dims = md->wdims;
    md->w.has_data_type = 1;
    md->w.data_type = 1;
    md->w.has_raw_data = 1;
    md->w.raw_data.data = (uint8_t *)md->wdata;
    md->w.raw_data.len = sizeof md->wdata;
    md->inits[0] = &md->w;
    md->g.n_initializer = 1;
    md->g.initializer = md->inits;
    md->in.name = "X";
    md->in.type = &md->in_type;
    md->in_type.value_case = ONNX__TYPE_PROTO__VALUE_TENSOR_TYPE;
    md->in_type.tensor_type = &md->in_tt;
    md->in_tt.has_elem_type = 1;
    md->in_tt.elem_type = 1;
    md->out.name = "Y";
    md->out.type = &md->out_type;
    md->out_type.value_case = ONNX__TYPE_PROTO__VALUE_TENSOR_TYPE;
    md->out_type.tensor_type = &md->out_tt;
    md->out_tt.has_elem_type = 1;
    md->out_tt.elem_type = 1;
    md->ins[0] = &md->in;
    md->outs[0] = &md->out;
    md->g.n_input = 1;
    md->g.input = md->ins;
    md->g.n_output = 1;
    md->g.output = md->outs;
}

static uint8_t *model_pack(model *md, size_t *len)
{
    *len = onnx__model_proto__get_packed_size(&md->m);
    uint8_t *buf = malloc(*len);
    onnx__model_proto__pack(&md->m, buf);
    return buf;
}

/* Loads md from memory; returns the status and leaves the message. */
static bd_status model_load(model *md, const char *dir, bd_graph **g)
{
    size_t len;
    uint8_t *buf = model_pack(md, &len);
    bd_status s = bd_onnx_load_buffer(buf, len, "test.onnx", dir, g);
    free(buf);
    return s;
}

static void expect_error(model *md, const char *dir, const char *needle)
{
    bd_graph *g = NULL;
    bd_status s = model_load(md, dir, &g);
    if (s == BD_OK)
        bd_graph_free(g);
    assert_int_not_equal(s, BD_OK);
    if (!strstr(bd_error_message(), needle))
        fail_msg("message '%s' does not mention '%s'", bd_error_message(), needle);
}

static const float *weight_of(const bd_graph *g)
{
    int w = bd_graph_find(g, "W");
    assert_true(w >= 0);
    assert_non_null(g->values[w].init);
    return g->values[w].init->data;
}

/* ---- tests ---------------------------------------------------------------- */

static void test_typed_fields(void **state)
{
    (void)state;
    model md;
    bd_graph *g;
    /* float_data */
    model_init(&md);
    md.w.has_raw_data = 0;
    md.w.n_float_data = 6;
    md.w.float_data = md.wdata;
    assert_int_equal(model_load(&md, NULL, &g), BD_OK);
    assert_memory_equal(weight_of(g), md.wdata, sizeof md.wdata);
    bd_graph_free(g);
    /* float16 bits in int32_data */
    int32_t half[6];
    for (int i = 0; i < 6; i++)
        half[i] = bd_f32_to_f16(md.wdata[i]);
    model_init(&md);
    md.w.has_raw_data = 0;
    md.w.data_type = BD_F16;
    md.w.n_int32_data = 6;
    md.w.int32_data = half;
    assert_int_equal(model_load(&md, NULL, &g), BD_OK);
    const bd_tensor *t = g->values[bd_graph_find(g, "W")].init;
    assert_int_equal(t->dtype, BD_F16);
    for (int i = 0; i < 6; i++)
        assert_true(bd_f16_to_f32(((uint16_t *)t->data)[i]) == md.wdata[i]);
    bd_graph_free(g);
    /* int64_data; uint8 and uint16 in int32_data (as an extra initializer) */
    int64_t i64[6] = {1, -2, 3, -4, 5, 1LL << 40};
    int32_t small[6] = {0, 1, 200, 255, 7, 9};
    int64_t dims[1] = {6};
    bd_dtype types[3] = {BD_I64, BD_U8, BD_U16};
    for (int k = 0; k < 3; k++) {
        model_init(&md);
        md.extra.name = "extra";
        md.extra.n_dims = 1;
        md.extra.dims = dims;
        md.extra.has_data_type = 1;
        md.extra.data_type = (int32_t)types[k];
        if (types[k] == BD_I64) {
            md.extra.n_int64_data = 6;
            md.extra.int64_data = i64;
        } else {
            md.extra.n_int32_data = 6;
            md.extra.int32_data = small;
        }
        md.inits[1] = &md.extra;
        md.g.n_initializer = 2;
        assert_int_equal(model_load(&md, NULL, &g), BD_OK);
        const bd_tensor *e = g->values[bd_graph_find(g, "extra")].init;
        assert_int_equal(e->dtype, types[k]);
        for (int i = 0; i < 6; i++)
            assert_true(bd_tensor_get_i64(e, i) == (types[k] == BD_I64 ? i64[i] : small[i]));
        bd_graph_free(g);
    }
}

static void test_bad_tensors(void **state)
{
    (void)state;
    model md;
    model_init(&md);
    md.w.raw_data.len = 20; /* shape needs 24 */
    expect_error(&md, NULL, "tensor 'W'");
    model_init(&md);
    md.w.data_type = 8; /* STRING */
    expect_error(&md, NULL, "tensor 'W': data type 8");
    model_init(&md);
    md.w.has_raw_data = 0;
    md.w.n_float_data = 5;
    md.w.float_data = md.wdata;
    expect_error(&md, NULL, "float_data holds 5 values");
    model_init(&md);
    md.wdims[0] = -2;
    expect_error(&md, NULL, "negative");
    model_init(&md);
    int64_t huge[2] = {1LL << 40, 1LL << 40};
    md.w.dims = huge;
    expect_error(&md, NULL, "W");
}

static void test_bad_graphs(void **state)
{
    (void)state;
    model md;
    model_init(&md);
    md.node.op_type = "FancyOp";
    expect_error(&md, NULL, "node 'mm' (FancyOp): op 'FancyOp' is not supported");
    model_init(&md);
    md.opset.version = 9;
    expect_error(&md, NULL, "opset 9 is not supported");
    model_init(&md);
    md.node_in[0] = "nowhere";
    expect_error(&md, NULL, "input 'nowhere'");
    model_init(&md);
    md.node_in[0] = "Y"; /* its own output: a cycle */
    expect_error(&md, NULL, "cycle");
    model_init(&md);
    md.node.n_input = 1;
    expect_error(&md, NULL, "has 1 inputs");
    model_init(&md);
    md.g.n_output = 0;
    expect_error(&md, NULL, "no outputs");
}

static void write_weights(const char *path, const float *w, size_t n, size_t skip)
{
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    for (size_t i = 0; i < skip; i++)
        fputc(0, f);
    assert_int_equal(fwrite(w, sizeof *w, n, f), n);
    fclose(f);
}

static void test_external_data(void **state)
{
    (void)state;
    const char *tmp = bd_test_tmpdir();
    char dir[512], path[600], outside[600];
    snprintf(dir, sizeof dir, "%s/model", tmp);
    mkdir(dir, 0755);
    snprintf(path, sizeof path, "%s/weights.bin", dir);
    snprintf(outside, sizeof outside, "%s/secret.bin", tmp);
    model md;
    model_init(&md);
    write_weights(path, md.wdata, 6, 8);
    write_weights(outside, md.wdata, 6, 0);
    Onnx__StringStringEntryProto kv[3], *kvs[3];
    const char *keys[3] = {"location", "offset", "length"};
    const char *vals[3] = {"weights.bin", "8", "24"};
    for (int i = 0; i < 3; i++) {
        onnx__string_string_entry_proto__init(&kv[i]);
        kv[i].key = (char *)keys[i];
        kv[i].value = (char *)vals[i];
        kvs[i] = &kv[i];
    }
    md.w.has_raw_data = 0;
    md.w.has_data_location = 1;
    md.w.data_location = ONNX__TENSOR_PROTO__DATA_LOCATION__EXTERNAL;
    md.w.n_external_data = 3;
    md.w.external_data = kvs;
    bd_graph *g;
    assert_int_equal(model_load(&md, dir, &g), BD_OK);
    assert_memory_equal(weight_of(g), md.wdata, sizeof md.wdata);
    bd_graph_free(g);

    kv[0].value = "../secret.bin";
    kv[1].value = "0";
    expect_error(&md, dir, "leaves the model's folder");
    kv[0].value = outside;
    expect_error(&md, dir, "is absolute");
    char link[600];
    snprintf(link, sizeof link, "%s/link.bin", dir);
    assert_int_equal(symlink(outside, link), 0);
    kv[0].value = "link.bin";
    expect_error(&md, dir, "lies outside");
    kv[0].value = "weights.bin";
    kv[1].value = "100";
    expect_error(&md, dir, "too short");
    kv[1].value = "8";
    kv[2].value = "20";
    expect_error(&md, dir, "length 20");
    kv[2].value = "24";
    expect_error(&md, NULL, "external data needs a model file");
}

/* A real file survives load -> save -> load unchanged. */
static void test_round_trip(void **state)
{
    (void)state;
    const char *files[] = {"examples/fmnist/resnet_bn.onnx", "examples/fmnist/mobilenet.onnx"};
    for (int f = 0; f < 2; f++) {
        bd_graph *a, *b;
        if (bd_onnx_load(bd_test_path(files[f]), &a) != BD_OK)
            fail_msg("%s", bd_error_message());
        char out[600];
        snprintf(out, sizeof out, "%s/round.onnx", bd_test_tmpdir());
        assert_int_equal(bd_onnx_save(a, out), BD_OK);
        assert_int_equal(bd_onnx_load(out, &b), BD_OK);
        assert_int_equal(a->nnodes, b->nnodes);
        assert_int_equal(a->opset, b->opset);
        assert_int_equal(a->nmeta, b->nmeta);
        for (int i = 0; i < a->nnodes; i++) {
            assert_string_equal(a->nodes[i].op, b->nodes[i].op);
            assert_int_equal(a->nodes[i].nattrs, b->nodes[i].nattrs);
        }
        int inits = 0;
        for (int v = 0; v < a->nvalues; v++) {
            if (!a->values[v].init)
                continue;
            inits++;
            int w = bd_graph_find(b, a->values[v].name);
            assert_true(w >= 0);
            assert_non_null(b->values[w].init);
            assert_true(bd_tensor_same_shape(a->values[v].init, b->values[w].init));
            assert_memory_equal(a->values[v].init->data, b->values[w].init->data,
                                bd_tensor_nbytes(a->values[v].init));
        }
        assert_true(inits > 10);
        assert_string_equal(bd_graph_meta(a, "bitdown.dataset"), bd_graph_meta(b, "bitdown.dataset"));
        bd_graph_free(a);
        bd_graph_free(b);
    }
}

/* Every prefix of a real file, and garbage, is refused without a crash. */
static void test_truncated_and_garbage(void **state)
{
    (void)state;
    size_t len;
    uint8_t *data = bd_test_read_file(bd_test_path("examples/fmnist/resnet.onnx"), &len);
    assert_non_null(data);
    size_t step = len / 97 + 1;
    int refused = 0, tried = 0;
    for (size_t cut = 0; cut < len; cut += step) {
        bd_graph *g = NULL;
        tried++;
        bd_status s = bd_onnx_load_buffer(data, cut, "cut.onnx", NULL, &g);
        if (s == BD_OK) {
            bd_graph_free(g);
            continue;
        }
        refused++;
        assert_non_null(strstr(bd_error_message(), "cut.onnx"));
    }
    /* a cut may land between whole fields and still parse: most must not */
    assert_true(refused > tried * 9 / 10);
    float noise[1000];
    bd_test_fill_random(noise, 1000, 7, -1e6f, 1e6f);
    bd_graph *g = NULL;
    assert_int_not_equal(bd_onnx_load_buffer(noise, sizeof noise, "noise.onnx", NULL, &g), BD_OK);
    assert_non_null(strstr(bd_error_message(), "noise.onnx"));
    assert_int_not_equal(bd_onnx_load("/nonexistent/model.onnx", &g), BD_OK);
    assert_non_null(strstr(bd_error_message(), "/nonexistent/model.onnx"));
    free(data);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_typed_fields),
        cmocka_unit_test(test_bad_tensors),
        cmocka_unit_test(test_bad_graphs),
        cmocka_unit_test(test_external_data),
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_truncated_and_garbage),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
