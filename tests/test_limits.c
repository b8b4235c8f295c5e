/* What a file may claim: every limit bitdown enforces on untrusted input,
 * each tested with a crafted file that must be refused with a message naming
 * the problem, before any large allocation. tests/test_onnx.c has the first
 * cases of several (a negative dimension, a string initializer, a
 * self-loop, a dangling node input, ../, absolute and symlinked external
 * data); these are the rest: sizes beyond the limit or past int64, absurd
 * ranks, other graph shapes, other ways out of the model's folder, data
 * types where an op or an input needs another, lying IDX headers, and
 * images that claim absurd sizes. The last tests replay inputs the fuzzers
 * found (fuzz/regressions). */
#include "bd_test.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

/* jpeglib.h uses FILE and size_t without including their headers. */
#include <jpeglib.h>

#include "data.h"
#include "exec.h"
#include "graph.h"
#include "onnx.pb-c.h"
#include "onnx_io.h"

enum { MIB = 1 << 20, LIMIT = 64 * MIB };

/* Every test but the first runs with this limit (or lowers it). */
static int set_limit(void **state)
{
    (void)state;
    bd_tensor_set_limit(LIMIT);
    return 0;
}

/* The message must name the problem: every needle must be in it. */
#define expect_message(...) expect_message_((const char *[]){__VA_ARGS__, NULL})
static void expect_message_(const char **needles)
{
    for (; *needles; needles++)
        if (!strstr(bd_error_message(), *needles))
            fail_msg("message '%s' does not mention '%s'", bd_error_message(), *needles);
}

/* ---- building models with protobuf-c --------------------------------------- */

enum { MAX_NODES = 4, MAX_INITS = 4, MAX_IO = 2, IN_DIMS = BD_MAX_DIMS + 2 };

typedef struct node {
    Onnx__NodeProto p;
    char *in[MAX_IO], *out[MAX_IO];
    Onnx__AttributeProto attr;
    Onnx__AttributeProto *attrs[1];
} node;

typedef struct init {
    Onnx__TensorProto p;
    int64_t dims[IN_DIMS];
    Onnx__StringStringEntryProto ext[3];
    Onnx__StringStringEntryProto *exts[3];
} init;

typedef struct value {
    Onnx__ValueInfoProto p;
    Onnx__TypeProto type;
    Onnx__TypeProto__Tensor tt;
    Onnx__TensorShapeProto shape;
    Onnx__TensorShapeProto__Dimension dim[IN_DIMS];
    Onnx__TensorShapeProto__Dimension *dims[IN_DIMS];
} value;

typedef struct model {
    Onnx__ModelProto m;
    Onnx__GraphProto g;
    Onnx__OperatorSetIdProto opset;
    Onnx__OperatorSetIdProto *opsets[1];
    node nodes[MAX_NODES];
    Onnx__NodeProto *node_list[MAX_NODES];
    init inits[MAX_INITS];
    Onnx__TensorProto *init_list[MAX_INITS];
    value in, out[2];
    Onnx__ValueInfoProto *in_list[1], *out_list[2];
    float data[8]; /* raw data for float initializers */
} model;

static void value_init(value *v, const char *name, int dtype, int ndim, const int64_t *dims)
{
    memset(v, 0, sizeof *v);
    onnx__value_info_proto__init(&v->p);
    onnx__type_proto__init(&v->type);
    onnx__type_proto__tensor__init(&v->tt);
    onnx__tensor_shape_proto__init(&v->shape);
    v->p.name = (char *)name;
    v->p.type = &v->type;
    v->type.value_case = ONNX__TYPE_PROTO__VALUE_TENSOR_TYPE;
    v->type.tensor_type = &v->tt;
    v->tt.has_elem_type = 1;
    v->tt.elem_type = dtype;
    if (ndim < 0)
        return;
    for (int i = 0; i < ndim; i++) {
        onnx__tensor_shape_proto__dimension__init(&v->dim[i]);
        v->dim[i].value_case = ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_VALUE;
        v->dim[i].dim_value = dims[i];
        v->dims[i] = &v->dim[i];
    }
    v->shape.n_dim = (size_t)ndim;
    v->shape.dim = v->dims;
    v->tt.shape = &v->shape;
}

/* An empty graph: float input X [1, 2], float output Y, opset 13. */
static void model_init(model *md)
{
    memset(md, 0, sizeof *md);
    onnx__model_proto__init(&md->m);
    onnx__graph_proto__init(&md->g);
    onnx__operator_set_id_proto__init(&md->opset);
    md->opset.domain = "";
    md->opset.has_version = 1;
    md->opset.version = 13;
    md->opsets[0] = &md->opset;
    md->m.has_ir_version = 1;
    md->m.ir_version = 8;
    md->m.n_opset_import = 1;
    md->m.opset_import = md->opsets;
    md->m.graph = &md->g;
    md->g.node = md->node_list;
    md->g.initializer = md->init_list;
    value_init(&md->in, "X", BD_F32, 2, (int64_t[]){1, 2});
    value_init(&md->out[0], "Y", BD_F32, -1, NULL);
    md->in_list[0] = &md->in.p;
    md->out_list[0] = &md->out[0].p;
    md->g.n_input = 1;
    md->g.input = md->in_list;
    md->g.n_output = 1;
    md->g.output = md->out_list;
    for (int i = 0; i < 8; i++)
        md->data[i] = (float)i;
}

/* A node reading in0 (and in1 unless NULL) and writing out. */
static node *add_node(model *md, const char *name, const char *op, const char *in0,
                      const char *in1, const char *out)
{
    assert_true(md->g.n_node < MAX_NODES);
    node *n = &md->nodes[md->g.n_node];
    md->node_list[md->g.n_node++] = &n->p;
    onnx__node_proto__init(&n->p);
    n->p.name = (char *)name;
    n->p.op_type = (char *)op;
    n->in[0] = (char *)in0;
    n->in[1] = (char *)in1;
    n->out[0] = (char *)out;
    n->p.n_input = in1 ? 2 : 1;
    n->p.input = n->in;
    n->p.n_output = 1;
    n->p.output = n->out;
    return n;
}

/* A tensor attribute on n (a Constant's value). */
static Onnx__TensorProto *add_tensor_attr(node *n, const char *name, Onnx__TensorProto *t)
{
    onnx__attribute_proto__init(&n->attr);
    n->attr.name = (char *)name;
    n->attr.has_type = 1;
    n->attr.type = ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__TENSOR;
    n->attr.t = t;
    n->attrs[0] = &n->attr;
    n->p.n_attribute = 1;
    n->p.attribute = n->attrs;
    return t;
}

static void tensor_init(init *t, const char *name, int dtype, int ndim, const int64_t *dims,
                        const void *raw, size_t len)
{
    onnx__tensor_proto__init(&t->p);
    t->p.name = (char *)name;
    t->p.has_data_type = 1;
    t->p.data_type = dtype;
    memcpy(t->dims, dims, (size_t)ndim * sizeof *dims);
    t->p.n_dims = (size_t)ndim;
    t->p.dims = t->dims;
    t->p.has_raw_data = 1;
    t->p.raw_data.data = (uint8_t *)raw;
    t->p.raw_data.len = len;
}

static init *add_init(model *md, const char *name, int dtype, int ndim, const int64_t *dims,
                      const void *raw, size_t len)
{
    assert_true(md->g.n_initializer < MAX_INITS);
    init *t = &md->inits[md->g.n_initializer];
    md->init_list[md->g.n_initializer++] = &t->p;
    tensor_init(t, name, dtype, ndim, dims, raw, len);
    return t;
}

/* Moves t's data to a file: location, then offset "0". */
static void set_external(init *t, const char *location, const char *offset)
{
    const char *keys[2] = {"location", "offset"}, *vals[2] = {location, offset};
    for (int i = 0; i < 2; i++) {
        onnx__string_string_entry_proto__init(&t->ext[i]);
        t->ext[i].key = (char *)keys[i];
        t->ext[i].value = (char *)vals[i];
        t->exts[i] = &t->ext[i];
    }
    t->p.has_raw_data = 0;
    t->p.has_data_location = 1;
    t->p.data_location = ONNX__TENSOR_PROTO__DATA_LOCATION__EXTERNAL;
    t->p.n_external_data = 2;
    t->p.external_data = t->exts;
}

/* Y = MatMul(X, W) with W [2, 3] float. */
static void matmul_model(model *md)
{
    model_init(md);
    add_node(md, "mm", "MatMul", "X", "W", "Y");
    add_init(md, "W", BD_F32, 2, (int64_t[]){2, 3}, md->data, 6 * sizeof(float));
}

static bd_status model_load(model *md, const char *dir, bd_graph **g)
{
    size_t len = onnx__model_proto__get_packed_size(&md->m);
    uint8_t *buf = malloc(len);
    assert_non_null(buf);
    onnx__model_proto__pack(&md->m, buf);
    *g = NULL;
    bd_status s = bd_onnx_load_buffer(buf, len, "crafted.onnx", dir, g);
    free(buf);
    return s;
}

/* The model loads; g must be freed. */
static bd_graph *load_ok(model *md)
{
    bd_graph *g;
    if (model_load(md, NULL, &g) != BD_OK)
        fail_msg("%s", bd_error_message());
    return g;
}

#define expect_refused(md, dir, ...) expect_refused_(md, dir, (const char *[]){__VA_ARGS__, NULL})
static void expect_refused_(model *md, const char *dir, const char **needles)
{
    bd_graph *g;
    bd_status s = model_load(md, dir, &g);
    if (s == BD_OK) {
        bd_graph_free(g);
        fail_msg("the model loaded; expected a message with '%s'", needles[0]);
    }
    expect_message_(needles);
    assert_non_null(strstr(bd_error_message(), "crafted.onnx"));
}

/* Runs a one-input graph on x and expects a refusal naming the needles. */
#define expect_run_refused(g, x, ...) expect_run_refused_(g, x, (const char *[]){__VA_ARGS__, NULL})
static void expect_run_refused_(const bd_graph *g, const bd_tensor *x, const char **needles)
{
    bd_exec *ex;
    if (bd_exec_new(&ex, g, BD_EXEC_FUSE) != BD_OK)
        fail_msg("planning: %s", bd_error_message());
    bd_tensor *out[2] = {NULL, NULL};
    bd_status s = bd_exec_run(ex, (bd_tensor *const[]){(bd_tensor *)x}, out);
    bd_exec_free(ex);
    for (int i = 0; i < 2; i++)
        bd_tensor_free(out[i]);
    if (s == BD_OK)
        fail_msg("the run succeeded; expected a message with '%s'", needles[0]);
    expect_message_(needles);
}

static bd_tensor *input_f32(int ndim, const int64_t *dims)
{
    bd_tensor *t;
    assert_int_equal(bd_tensor_new(&t, BD_F32, ndim, dims, "x"), BD_OK);
    return t;
}

/* ---- sizes --------------------------------------------------------------------- */

/* Half the physical memory by default: a claim the machine cannot hold is
 * refused, not attempted. Runs first, before any test sets a limit. */
static void test_default_limit(void **state)
{
    (void)state;
    long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
    assert_true(pages > 0 && page > 0);
    size_t phys = (size_t)pages * (size_t)page;
    assert_true(bd_tensor_limit() <= phys / 2 + (size_t)page);
    assert_true(bd_tensor_limit() >= phys / 4);
    /* 4 TiB of float32: larger than any machine this runs on, and the
     * message is the limit's, so nothing was allocated first */
    model md;
    matmul_model(&md);
    md.inits[0].dims[0] = md.inits[0].dims[1] = 1 << 20;
    expect_refused(&md, NULL, "W", "[1048576, 1048576]", "limit");
}

static void test_beyond_limit(void **state)
{
    (void)state;
    bd_tensor_set_limit(1 * MIB);
    model md;
    matmul_model(&md);
    /* 2 MiB claimed by a file of a few bytes: refused by the limit before
     * any buffer of that size exists (a size check after allocating would
     * report the raw_data length instead) */
    md.inits[0].dims[0] = 512;
    md.inits[0].dims[1] = 1024;
    expect_refused(&md, NULL, "W", "[512, 1024]", "1 MiB limit");
    /* the same claim in a Constant node's tensor */
    model_init(&md);
    node *n = add_node(&md, "c", "Constant", NULL, NULL, "Y");
    n->p.n_input = 0;
    init t;
    tensor_init(&t, "value", BD_F32, 2, (int64_t[]){512, 1024}, md.data, 8);
    add_tensor_attr(n, "value", &t.p);
    expect_refused(&md, NULL, "value", "[512, 1024]", "1 MiB limit");
    /* external data: the limit speaks before the file is even looked for */
    matmul_model(&md);
    md.inits[0].dims[0] = 512;
    md.inits[0].dims[1] = 1024;
    set_external(&md.inits[0], "nowhere.bin", "0");
    expect_refused(&md, bd_test_tmpdir(), "W", "1 MiB limit");
    /* the file as a whole: a model larger than the limit is not read */
    char path[600];
    snprintf(path, sizeof path, "%s/big.onnx", bd_test_tmpdir());
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(ftruncate(fileno(f), 2 * MIB), 0);
    fclose(f);
    bd_graph *g;
    assert_int_not_equal(bd_onnx_load(path, &g), BD_OK);
    expect_message("big.onnx", "2097152 bytes", "1 MiB limit");
}

static void test_overflow(void **state)
{
    (void)state;
    model md;
    /* 2^21 * 2^21 * 2^21 = 2^63: one past INT64_MAX */
    matmul_model(&md);
    md.inits[0].p.n_dims = 3;
    for (int i = 0; i < 3; i++)
        md.inits[0].dims[i] = 1 << 21;
    expect_refused(&md, NULL, "W", "element count overflows");
    /* the product would wrap to a small number in 64-bit arithmetic */
    md.inits[0].p.n_dims = 2;
    md.inits[0].dims[0] = INT64_C(1) << 62;
    md.inits[0].dims[1] = 4;
    expect_refused(&md, NULL, "W", "element count overflows");
    /* a zero anywhere makes an empty tensor, whatever else is claimed */
    md.inits[0].p.n_dims = 3;
    md.inits[0].dims[0] = INT64_MAX;
    md.inits[0].dims[1] = 0;
    md.inits[0].dims[2] = INT64_MAX;
    md.inits[0].p.raw_data.len = 0;
    bd_graph *g = load_ok(&md);
    assert_int_equal(bd_tensor_count(g->values[bd_graph_find(g, "W")].init), 0);
    bd_graph_free(g);
}

static void test_negative_and_absurd_dims(void **state)
{
    (void)state;
    model md;
    matmul_model(&md);
    md.inits[0].dims[1] = INT64_MIN;
    expect_refused(&md, NULL, "W", "dimension 1 is negative");
    /* a declared shape is checked as well, though nothing is allocated */
    matmul_model(&md);
    md.in.dim[1].dim_value = -1;
    expect_refused(&md, NULL, "'X'", "dimension 1 is negative");
    /* rank: at most BD_MAX_DIMS, in a tensor and in a declared shape */
    matmul_model(&md);
    md.inits[0].p.n_dims = BD_MAX_DIMS + 1;
    for (int i = 0; i < BD_MAX_DIMS + 1; i++)
        md.inits[0].dims[i] = 1;
    expect_refused(&md, NULL, "W", "9 dimensions", "at most 8");
    matmul_model(&md);
    value_init(&md.in, "X", BD_F32, BD_MAX_DIMS + 2, (int64_t[IN_DIMS]){1});
    expect_refused(&md, NULL, "'X'", "10 dimensions", "at most 8");
}

/* ConstantOfShape and Expand build tensors of a size a file states: the
 * limit holds at run time too. */
static void test_run_time_sizes(void **state)
{
    (void)state;
    model md;
    model_init(&md);
    add_node(&md, "fill", "ConstantOfShape", "shape", NULL, "Y");
    int64_t huge[2] = {1 << 20, 1 << 20};
    add_init(&md, "shape", BD_I64, 1, (int64_t[]){2}, huge, sizeof huge);
    md.g.n_input = 0;
    bd_graph *g = load_ok(&md);
    bd_exec *ex;
    assert_int_equal(bd_exec_new(&ex, g, BD_EXEC_FUSE), BD_OK);
    bd_tensor *out = NULL;
    assert_int_not_equal(bd_exec_run(ex, NULL, &out), BD_OK);
    assert_null(out);
    expect_message("fill", "limit");
    bd_exec_free(ex);
    bd_graph_free(g);

    model_init(&md);
    add_node(&md, "grow", "Expand", "X", "shape", "Y");
    int64_t wide[2] = {1 << 30, 2};
    add_init(&md, "shape", BD_I64, 1, (int64_t[]){2}, wide, sizeof wide);
    g = load_ok(&md);
    bd_tensor *x = input_f32(2, (int64_t[]){1, 2});
    expect_run_refused(g, x, "grow", "limit");
    bd_tensor_free(x);
    bd_graph_free(g);
}

/* ---- graph shape ---------------------------------------------------------------- */

static void test_graph_structure(void **state)
{
    (void)state;
    model md;
    /* a cycle through two nodes (test_onnx has a node reading its own output) */
    model_init(&md);
    add_node(&md, "a", "Relu", "b_out", NULL, "a_out");
    add_node(&md, "b", "Relu", "a_out", NULL, "b_out");
    add_node(&md, "c", "Relu", "X", NULL, "Y");
    expect_refused(&md, NULL, "cycle", "Relu");
    /* a graph output nothing computes */
    model_init(&md);
    add_node(&md, "r", "Relu", "X", NULL, "Y");
    value_init(&md.out[1], "Z", BD_F32, -1, NULL);
    md.out_list[1] = &md.out[1].p;
    md.g.n_output = 2;
    expect_refused(&md, NULL, "graph output 'Z'", "not computed");
    /* an output produced twice, by two nodes */
    model_init(&md);
    add_node(&md, "first", "Relu", "X", NULL, "Y");
    add_node(&md, "second", "Sigmoid", "X", NULL, "Y");
    expect_refused(&md, NULL, "'second'", "output 'Y'", "already defined");
    /* by a node and an initializer, and by a node and a graph input */
    matmul_model(&md);
    md.nodes[0].out[0] = "W";
    expect_refused(&md, NULL, "'mm'", "output 'W'", "already defined");
    matmul_model(&md);
    md.nodes[0].out[0] = "X";
    expect_refused(&md, NULL, "'mm'", "output 'X'", "already defined");
    /* a dangling input of the second node, past a valid first one */
    model_init(&md);
    add_node(&md, "ok", "Relu", "X", NULL, "h");
    add_node(&md, "bad", "Add", "h", "missing", "Y");
    expect_refused(&md, NULL, "'bad'", "input 'missing'");
}

/* ---- external data ----------------------------------------------------------------- */

static void test_external_paths(void **state)
{
    (void)state;
    const char *tmp = bd_test_tmpdir();
    char dir[600], path[700];
    snprintf(dir, sizeof dir, "%s/ext", tmp);
    mkdir(dir, 0755);
    snprintf(path, sizeof path, "%s/w.bin", dir);
    float w[6] = {1, 2, 3, 4, 5, 6};
    assert_int_equal(bd_test_write_file(path, w, sizeof w), 0);
    snprintf(path, sizeof path, "%s/outside.bin", tmp);
    assert_int_equal(bd_test_write_file(path, w, sizeof w), 0);
    /* a folder inside that is a link to the folder above */
    snprintf(path, sizeof path, "%s/up", dir);
    assert_int_equal(symlink("..", path), 0);
    model md;
    matmul_model(&md);
    set_external(&md.inits[0], "w.bin", "0");
    bd_graph *g;
    assert_int_equal(model_load(&md, dir, &g), BD_OK);
    bd_graph_free(g);
    /* '..' in the middle of the path */
    md.inits[0].ext[0].value = "sub/../../outside.bin";
    expect_refused(&md, dir, "'W'", "leaves the model's folder");
    md.inits[0].ext[0].value = "..";
    expect_refused(&md, dir, "'W'", "leaves the model's folder");
    /* through a linked folder */
    md.inits[0].ext[0].value = "up/outside.bin";
    expect_refused(&md, dir, "'W'", "lies outside");
    /* absolute, even when it names the model's own file */
    snprintf(path, sizeof path, "%s/w.bin", dir);
    md.inits[0].ext[0].value = path;
    expect_refused(&md, dir, "'W'", "is absolute");
    /* offsets that are not sizes, or that point past any file */
    md.inits[0].ext[0].value = "w.bin";
    md.inits[0].ext[1].value = "-8";
    expect_refused(&md, dir, "'W'", "offset '-8' is not a size");
    md.inits[0].ext[1].value = "99999999999999999999";
    expect_refused(&md, dir, "'W'", "is not a size");
    md.inits[0].ext[1].value = "9223372036854775807";
    expect_refused(&md, dir, "'W'", "too short");
    /* no location at all */
    md.inits[0].ext[0].key = "place";
    md.inits[0].ext[1].value = "0";
    expect_refused(&md, dir, "'W'", "no location");
}

/* ---- data types ----------------------------------------------------------------------- */

static void test_data_types(void **state)
{
    (void)state;
    model md;
    /* a string tensor in a Constant (test_onnx has one as an initializer) */
    model_init(&md);
    node *n = add_node(&md, "c", "Constant", NULL, NULL, "Y");
    n->p.n_input = 0;
    init t;
    tensor_init(&t, "value", 8 /* STRING */, 1, (int64_t[]){1}, "x", 1);
    add_tensor_attr(n, "value", &t.p);
    expect_refused(&md, NULL, "value", "data type 8");
    /* undefined and bfloat16 initializers */
    matmul_model(&md);
    md.inits[0].p.data_type = 0;
    expect_refused(&md, NULL, "'W'", "data type 0");
    md.inits[0].p.data_type = 16;
    expect_refused(&md, NULL, "'W'", "data type 16");

    /* a Conv weight of int64: refused when the Conv runs, before its output */
    model_init(&md);
    value_init(&md.in, "X", BD_F32, 4, (int64_t[]){1, 1, 3, 3});
    add_node(&md, "conv", "Conv", "X", "W", "Y");
    int64_t k[9] = {0};
    add_init(&md, "W", BD_I64, 4, (int64_t[]){1, 1, 3, 3}, k, sizeof k);
    bd_graph *g = load_ok(&md);
    bd_tensor *x = input_f32(4, (int64_t[]){1, 1, 3, 3});
    expect_run_refused(g, x, "'conv'", "int64");
    bd_tensor_free(x);
    bd_graph_free(g);

    /* a Gather index of float */
    model_init(&md);
    add_node(&md, "pick", "Gather", "X", "idx", "Y");
    add_init(&md, "idx", BD_F32, 1, (int64_t[]){1}, md.data, sizeof(float));
    g = load_ok(&md);
    x = input_f32(2, (int64_t[]){1, 2});
    expect_run_refused(g, x, "'pick'", "float32");
    bd_tensor_free(x);
    bd_graph_free(g);

    /* a graph input declared float, fed int64 */
    matmul_model(&md);
    g = load_ok(&md);
    bd_tensor *xi;
    assert_int_equal(bd_tensor_new(&xi, BD_I64, 2, (int64_t[]){1, 2}, "x"), BD_OK);
    expect_run_refused(g, xi, "input 'X'", "float32", "int64");
    bd_tensor_free(xi);
    bd_graph_free(g);
}

/* A graph input or output declared with a type bitdown has no tensors of
 * (a string, say) is refused when the model loads, naming it. */
static void test_declared_types(void **state)
{
    (void)state;
    model md;
    matmul_model(&md);
    md.in.tt.elem_type = 8; /* STRING */
    expect_refused(&md, NULL, "'X'", "data type 8");
    matmul_model(&md);
    md.out[0].tt.elem_type = 12345;
    expect_refused(&md, NULL, "'Y'", "data type 12345");
}

/* ---- IDX ------------------------------------------------------------------------------ */

/* An IDX header for uint8 data of these dims. */
static size_t idx_header(unsigned char *h, int ndim, const uint32_t *dims)
{
    h[0] = h[1] = 0;
    h[2] = 8;
    h[3] = (unsigned char)ndim;
    for (int i = 0; i < ndim; i++)
        for (int b = 0; b < 4; b++)
            h[4 + 4 * i + b] = (unsigned char)(dims[i] >> (24 - 8 * b));
    return 4 + 4 * (size_t)ndim;
}

static void tmp_file(char *path, size_t cap, const char *name)
{
    snprintf(path, cap, "%s/%s", bd_test_tmpdir(), name);
}

static void write_gz(const char *path, const void *data, size_t len)
{
    gzFile f = gzopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(gzwrite(f, data, (unsigned)len), (int)len);
    assert_int_equal(gzclose(f), Z_OK);
}

static void test_idx_claims(void **state)
{
    (void)state;
    unsigned char buf[16 + 784];
    memset(buf, 7, sizeof buf);
    bd_tensor *t;
    /* 2^31 images of 28 x 28 in a file of one image: plain and gzipped */
    size_t h = idx_header(buf, 3, (uint32_t[]){1u << 31, 28, 28});
    char plain[600], gz[600];
    tmp_file(plain, sizeof plain, "lie.idx");
    tmp_file(gz, sizeof gz, "lie.idx.gz");
    assert_int_equal(bd_test_write_file(plain, buf, h + 784), 0);
    assert_int_not_equal(bd_idx_read(plain, 3, &t), BD_OK);
    expect_message("lie.idx", "[2147483648, 28, 28]", "holds 784 bytes");
    write_gz(gz, buf, h + 784);
    assert_int_not_equal(bd_idx_read(gz, 3, &t), BD_OK);
    expect_message("lie.idx.gz", "[2147483648, 28, 28]", "bytes of gzip can hold");
    /* dimensions whose product passes int64 */
    h = idx_header(buf, 3, (uint32_t[]){0xFFFFFFFFu, 0xFFFFFFFFu, 0xFFFFFFFFu});
    assert_int_equal(bd_test_write_file(plain, buf, h), 0);
    assert_int_not_equal(bd_idx_read(plain, 3, &t), BD_OK);
    expect_message("lie.idx", "element count overflows");
    /* a claim gzip could hold but the limit does not: refused before the
     * tensor exists, with part of the data still unread */
    bd_tensor_set_limit(1 * MIB);
    enum { BODY = 64 << 10 };
    unsigned char *big = malloc(16 + BODY);
    assert_non_null(big);
    h = idx_header(big, 3, (uint32_t[]){4, 512, 1024});
    bd_test_fill_random((float *)(big + 16), BODY / sizeof(float), 3, -1e30f, 1e30f);
    write_gz(gz, big, 16 + BODY);
    free(big);
    assert_int_not_equal(bd_idx_read(gz, 3, &t), BD_OK);
    expect_message("lie.idx.gz", "[4, 512, 1024]", "1 MiB limit");
}

/* ---- images ---------------------------------------------------------------------------- */

static size_t png_chunk(unsigned char *p, const char *kind, const void *body, uint32_t len)
{
    for (int b = 0; b < 4; b++)
        p[b] = (unsigned char)(len >> (24 - 8 * b));
    memcpy(p + 4, kind, 4);
    if (len)
        memcpy(p + 8, body, len);
    uint32_t crc = (uint32_t)crc32(0, p + 4, 4 + len);
    for (int b = 0; b < 4; b++)
        p[8 + len + b] = (unsigned char)(crc >> (24 - 8 * b));
    return 12 + len;
}

/* A gray PNG that claims w x h pixels and holds a few rows of zeros. */
static size_t png_claiming(unsigned char *out, uint32_t w, uint32_t h)
{
    static const unsigned char sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    unsigned char ihdr[13] = {0};
    for (int b = 0; b < 4; b++) {
        ihdr[b] = (unsigned char)(w >> (24 - 8 * b));
        ihdr[4 + b] = (unsigned char)(h >> (24 - 8 * b));
    }
    ihdr[8] = 8; /* bit depth; colour type 0 (gray), no interlace */
    unsigned char raw[256] = {0}, packed[300];
    uLongf plen = sizeof packed;
    assert_int_equal(compress(packed, &plen, raw, sizeof raw), Z_OK);
    size_t n = 8;
    memcpy(out, sig, 8);
    n += png_chunk(out + n, "IHDR", ihdr, 13);
    n += png_chunk(out + n, "IDAT", packed, (uint32_t)plen);
    n += png_chunk(out + n, "IEND", NULL, 0);
    return n;
}

/* A small gray JPEG made with libjpeg, its frame header then rewritten to
 * claim w x h. */
static unsigned char *jpeg_claiming(unsigned w, unsigned h, size_t *len)
{
    struct jpeg_compress_struct c;
    struct jpeg_error_mgr err;
    c.err = jpeg_std_error(&err);
    jpeg_create_compress(&c);
    unsigned char *out = NULL;
    unsigned long out_len = 0;
    jpeg_mem_dest(&c, &out, &out_len);
    c.image_width = 16;
    c.image_height = 16;
    c.input_components = 1;
    c.in_color_space = JCS_GRAYSCALE;
    jpeg_set_defaults(&c);
    jpeg_start_compress(&c, TRUE);
    unsigned char row[16] = {0};
    while (c.next_scanline < c.image_height) {
        JSAMPROW r = row;
        jpeg_write_scanlines(&c, &r, 1);
    }
    jpeg_finish_compress(&c);
    jpeg_destroy_compress(&c);
    /* SOF0: FF C0, length (2), precision (1), height (2), width (2) */
    for (unsigned long i = 0; i + 9 < out_len; i++)
        if (out[i] == 0xFF && out[i + 1] == 0xC0) {
            out[i + 5] = (unsigned char)(h >> 8);
            out[i + 6] = (unsigned char)h;
            out[i + 7] = (unsigned char)(w >> 8);
            out[i + 8] = (unsigned char)w;
            break;
        }
    *len = out_len;
    return out;
}

static void test_image_claims(void **state)
{
    (void)state;
    bd_image img;
    unsigned char png[512];
    size_t n = png_claiming(png, 100000, 100000);
    assert_int_not_equal(bd_image_decode(png, n, "huge.png", &img), BD_OK);
    expect_message("huge.png", "100000 x 100000", "64 MiB limit");
    assert_null(img.pixels);
    /* beyond what libpng itself allows */
    n = png_claiming(png, 0x7FFFFFFF, 1);
    assert_int_not_equal(bd_image_decode(png, n, "wide.png", &img), BD_OK);
    expect_message("wide.png", "IHDR");
    n = png_claiming(png, 0, 1);
    assert_int_not_equal(bd_image_decode(png, n, "empty.png", &img), BD_OK);
    expect_message("empty.png");

    size_t len;
    unsigned char *jpg = jpeg_claiming(65000, 65000, &len);
    assert_int_not_equal(bd_image_decode(jpg, len, "huge.jpg", &img), BD_OK);
    expect_message("huge.jpg", "65000 x 65000", "64 MiB limit");
    assert_null(img.pixels);
    free(jpg);
    jpg = jpeg_claiming(16, 0, &len);
    assert_int_not_equal(bd_image_decode(jpg, len, "flat.jpg", &img), BD_OK);
    expect_message("flat.jpg");
    free(jpg);
    /* the sanity of the crafting: unchanged, the same JPEG decodes */
    jpg = jpeg_claiming(16, 16, &len);
    assert_int_equal(bd_image_decode(jpg, len, "ok.jpg", &img), BD_OK);
    bd_image_free(&img);
    free(jpg);
}

/* Preprocessing can ask for far more than the image holds: a 1 x 2000
 * image resized so its shorter side is 1000 would be 1000 x 2000000. */
static void test_preprocess_blowup(void **state)
{
    (void)state;
    bd_image img;
    assert_int_equal(bd_image_alloc(&img, 1, 2000, 1, "thin"), BD_OK);
    memset(img.pixels, 9, 2000);
    bd_preprocess pp;
    bd_preprocess_default(&pp);
    pp.resize = 1000;
    int w, h;
    bd_preprocess_size(&pp, 1, 2000, &w, &h);
    assert_int_equal(w, 1000);
    assert_int_equal(h, 2000000);
    float out[1];
    assert_int_not_equal(bd_image_preprocess(&img, &pp, out), BD_OK);
    expect_message("1000 x 2000", "64 MiB limit");
    bd_image_free(&img);
}

/* ---- what the fuzzers found ---------------------------------------------------------- */

/* An initializer of no elements whose typed field is absent: nothing to
 * copy, and nothing may be read from the absent field (UBSan reports a
 * memcpy from NULL even of 0 bytes). */
static void test_regress_empty_typed(void **state)
{
    (void)state;
    model md;
    for (int dt = 0; dt < 3; dt++) {
        matmul_model(&md);
        md.inits[0].dims[0] = 0;
        md.inits[0].p.has_raw_data = 0;
        md.inits[0].p.data_type = (int[]){BD_F32, BD_F64, BD_I64}[dt];
        md.nodes[0].p.op_type = "Shape"; /* any type, any shape */
        md.nodes[0].p.n_input = 1;
        md.nodes[0].in[0] = "W";
        bd_graph *g = load_ok(&md);
        assert_int_equal(g->values[bd_graph_find(g, "W")].init->dims[0], 0);
        bd_graph_free(g);
    }
}

/* A graph input listed twice (ONNX's checker refuses duplicate names): the
 * executor made two views of the one input and leaked the first on every
 * run (fuzz/regressions/onnx/leak-duplicate-graph-input). */
static void test_regress_duplicate_input(void **state)
{
    (void)state;
    model md;
    model_init(&md);
    add_node(&md, "r", "Relu", "X", NULL, "Y");
    Onnx__ValueInfoProto *twice[2] = {&md.in.p, &md.in.p};
    md.g.n_input = 2;
    md.g.input = twice;
    expect_refused(&md, NULL, "graph input 'X'", "twice");
}

/* Pads near INT64_MAX: the padded size overflowed int64 (UBSan: signed
 * overflow in bd_k_pad; fuzz/regressions/onnx/ubsan-pad-overflow). */
static void test_regress_pad_overflow(void **state)
{
    (void)state;
    model md;
    model_init(&md);
    add_node(&md, "pad", "Pad", "X", "pads", "Y");
    int64_t pads[4] = {0, INT64_MAX, 0, 1};
    add_init(&md, "pads", BD_I64, 1, (int64_t[]){4}, pads, sizeof pads);
    bd_graph *g = load_ok(&md);
    bd_tensor *x = input_f32(2, (int64_t[]){1, 2});
    expect_run_refused(g, x, "'pad'");
    pads[1] = INT64_MIN;
    pads[3] = -1;
    bd_graph_free(g);
    g = load_ok(&md);
    expect_run_refused(g, x, "'pad'");
    bd_tensor_free(x);
    bd_graph_free(g);
}

/* Pooling an empty tensor into rows of 2^40 outputs: the output holds
 * nothing, but the per-row window table (three int64 per output column) was
 * allocated at that size, past any limit
 * (fuzz/regressions/onnx/oom-pool-empty-output-huge-row). */
static void test_regress_pool_empty_huge_row(void **state)
{
    (void)state;
    model md;
    model_init(&md);
    value_init(&md.in, "X", BD_F32, 4, (int64_t[]){1, 0, 1, 1});
    node *n = add_node(&md, "pool", "MaxPool", "X", NULL, "Y");
    int64_t kernel[2] = {1, 1}, pads[4] = {0, 0, 0, INT64_C(1) << 40};
    Onnx__AttributeProto attr[2], *attrs[2];
    const char *names[2] = {"kernel_shape", "pads"};
    for (int i = 0; i < 2; i++) {
        onnx__attribute_proto__init(&attr[i]);
        attr[i].name = (char *)names[i];
        attr[i].has_type = 1;
        attr[i].type = ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INTS;
        attrs[i] = &attr[i];
    }
    attr[0].n_ints = 2;
    attr[0].ints = kernel;
    attr[1].n_ints = 4;
    attr[1].ints = pads;
    n->p.n_attribute = 2;
    n->p.attribute = attrs;
    bd_graph *g = load_ok(&md);
    bd_tensor *x = input_f32(4, (int64_t[]){1, 0, 1, 1});
    bd_exec *ex;
    assert_int_equal(bd_exec_new(&ex, g, 0), BD_OK);
    bd_tensor *out = NULL;
    /* an empty result, or a refusal by the limit: not an attempt at 24 TiB */
    if (bd_exec_run(ex, (bd_tensor *const[]){x}, &out) == BD_OK)
        assert_int_equal(bd_tensor_count(out), 0);
    else
        expect_message("'pool'", "limit");
    bd_tensor_free(out);
    bd_exec_free(ex);
    bd_tensor_free(x);
    bd_graph_free(g);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_default_limit),
        cmocka_unit_test_setup(test_beyond_limit, set_limit),
        cmocka_unit_test_setup(test_overflow, set_limit),
        cmocka_unit_test_setup(test_negative_and_absurd_dims, set_limit),
        cmocka_unit_test_setup(test_run_time_sizes, set_limit),
        cmocka_unit_test_setup(test_graph_structure, set_limit),
        cmocka_unit_test_setup(test_external_paths, set_limit),
        cmocka_unit_test_setup(test_data_types, set_limit),
        cmocka_unit_test_setup(test_declared_types, set_limit),
        cmocka_unit_test_setup(test_idx_claims, set_limit),
        cmocka_unit_test_setup(test_image_claims, set_limit),
        cmocka_unit_test_setup(test_preprocess_blowup, set_limit),
        cmocka_unit_test_setup(test_regress_empty_typed, set_limit),
        cmocka_unit_test_setup(test_regress_duplicate_input, set_limit),
        cmocka_unit_test_setup(test_regress_pad_overflow, set_limit),
        cmocka_unit_test_setup(test_regress_pool_empty_huge_row, set_limit),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
