/* The executor: hooks see each node's real inputs, a run can stop early,
 * and bad inputs are refused with a message naming the input. */
#include "bd_test.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bd_test_node.h"
#include "cpu/conv_direct.h"
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

/* Runs x through both executors: their outputs agree, bit for bit when
 * exact, else within 1e-5 relative. */
static void assert_runs_agree(bd_exec *plain, bd_exec *fused, const bd_tensor *x, int exact)
{
    bd_tensor *a, *b;
    assert_int_equal(bd_exec_run1(plain, x, &a), BD_OK);
    assert_int_equal(bd_exec_run1(fused, x, &b), BD_OK);
    if (exact)
        assert_memory_equal(a->data, b->data, bd_tensor_nbytes(a));
    else
        assert_true(bd_test_rel_error(b->data, a->data, (size_t)bd_tensor_count(a)) < 1e-5);
    bd_tensor_free(a);
    bd_tensor_free(b);
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
    bd_tensor *x = random_input(3);
    assert_runs_agree(plain, fused, x, 0);
    assert_true(s.calls < g->nnodes); /* BN and Relu nodes folded away */
    bd_tensor_free(x);
    bd_exec_free(plain);
    bd_exec_free(fused);
    bd_graph_free(g);
}

/* A frozen executor keeps the deep convs' weights re-laid between runs,
 * and the convs' folded BatchNormalizations: its results are the fused
 * executor's, bit for bit, run after run, and a weight or a BatchNorm
 * shift then changed in place is not seen by it, as its contract says,
 * while an executor that is not frozen sees it. */
static void test_frozen(void **state)
{
    (void)state;
    bd_graph *g = load_resnet();
    bd_exec *fused, *frozen;
    assert_int_equal(bd_exec_new(&fused, g, BD_EXEC_FUSE), BD_OK);
    assert_int_equal(bd_exec_new(&frozen, g, BD_EXEC_FUSE | BD_EXEC_FROZEN), BD_OK);
    bd_tensor *x = random_input(1), *before, *after, *seen;
    for (int run = 0; run < 3; run++)
        assert_runs_agree(fused, frozen, x, 1);
    /* only the direct kernel (AVX-512) re-lays weights */
    if (!bd_conv_direct_available()) {
        bd_tensor_free(x);
        bd_exec_free(fused);
        bd_exec_free(frozen);
        bd_graph_free(g);
        BD_TEST_SKIP("the direct convolution needs AVX-512 in the build and the CPU");
    }
    assert_int_equal(bd_exec_run1(frozen, x, &before), BD_OK);
    int last_conv = -1;
    for (int i = 0; i < g->nnodes; i++)
        if (strcmp(g->nodes[i].op, "Conv") == 0)
            last_conv = i;
    assert_true(last_conv >= 0);
    bd_tensor *w = g->values[g->nodes[last_conv].inputs[1]].init;
    float *wd = w->data;
    for (int64_t k = 0; k < bd_tensor_count(w); k++)
        wd[k] = -wd[k];
    /* and its BatchNormalization's shift: the folded epilogue is kept too */
    int bn = -1;
    for (int i = 0; i < g->nnodes; i++)
        if (strcmp(g->nodes[i].op, "BatchNormalization") == 0 &&
            g->nodes[i].inputs[0] == g->nodes[last_conv].outputs[0])
            bn = i;
    assert_true(bn >= 0);
    bd_tensor *shift = g->values[g->nodes[bn].inputs[2]].init;
    float *sd = shift->data;
    for (int64_t k = 0; k < bd_tensor_count(shift); k++)
        sd[k] += 1.0f;
    assert_int_equal(bd_exec_run1(frozen, x, &after), BD_OK);
    assert_int_equal(bd_exec_run1(fused, x, &seen), BD_OK);
    assert_memory_equal(after->data, before->data, bd_tensor_nbytes(before));
    assert_memory_not_equal(seen->data, before->data, bd_tensor_nbytes(before));
    bd_tensor_free(before);
    bd_tensor_free(after);
    bd_tensor_free(seen);
    bd_tensor_free(x);
    bd_exec_free(fused);
    bd_exec_free(frozen);
    bd_graph_free(g);
}

static bd_status count_calls(void *user, const bd_graph *g, int node, bd_tensor *const *in)
{
    (void)g, (void)node, (void)in;
    ++*(int *)user;
    return BD_OK;
}

/* Counts the hook's calls at nodes of one op type (user: the op, then the
 * count). */
typedef struct op_calls {
    const char *op;
    int calls;
} op_calls;

static bd_status count_op(void *user, const bd_graph *g, int node, bd_tensor *const *in)
{
    (void)in;
    op_calls *c = user;
    c->calls += strcmp(g->nodes[node].op, c->op) == 0;
    return BD_OK;
}

/* plain and fused give the same bits on x, and each op in absorbed runs as
 * a node by itself in the plain run but not in the fused one. */
static void assert_absorbed(bd_exec *plain, bd_exec *fused, const bd_tensor *x,
                            const char *const *absorbed, int nabsorbed)
{
    for (int k = 0; k < nabsorbed; k++) {
        op_calls p = {absorbed[k], 0}, f = {absorbed[k], 0};
        bd_exec_set_hook(plain, count_op, &p);
        bd_exec_set_hook(fused, count_op, &f);
        assert_runs_agree(plain, fused, x, 1);
        assert_true(p.calls > 0);
        assert_int_equal(f.calls, 0);
    }
    bd_exec_set_hook(plain, NULL, NULL); /* the counts were this function's */
    bd_exec_set_hook(fused, NULL, NULL);
}

/* The zoo fixture `name` run plain and fused on a random input: the same
 * bits, and none of the ops `absorbed` runs as a node by itself when fused
 * (while each does in the plain run). */
static void assert_fuses(const char *name, const char *const *absorbed, int nabsorbed)
{
    char path[128];
    snprintf(path, sizeof path, "tests/zoo/%s.onnx", name);
    bd_graph *g;
    if (bd_onnx_load(bd_test_path(path), &g) != BD_OK)
        BD_TEST_SKIP("%s: %s", path, bd_error_message());
    const bd_value *in = &g->values[g->inputs[0]];
    int64_t dims[4];
    for (int d = 0; d < 4; d++)
        dims[d] = in->dims[d] > 0 ? in->dims[d] : 2;
    bd_tensor *x;
    assert_int_equal(bd_tensor_new(&x, BD_F32, 4, dims, "x"), BD_OK);
    bd_test_fill_random(x->data, (size_t)bd_tensor_count(x), 11, -2, 2);
    bd_exec *plain, *fused;
    assert_int_equal(bd_exec_new(&plain, g, 0), BD_OK);
    assert_int_equal(bd_exec_new(&fused, g, BD_EXEC_FUSE), BD_OK);
    assert_absorbed(plain, fused, x, absorbed, nabsorbed);
    bd_tensor_free(x);
    bd_exec_free(plain);
    bd_exec_free(fused);
    bd_graph_free(g);
}

/* ConvNeXt's LayerNorms (ReduceMean, Sub, Pow, ReduceMean, Add, Sqrt, Div,
 * Mul, Add) and GELUs (Div, Erf, Add, Mul, Mul), as the exporter spells
 * them, each run as one step when fused (no Sqrt or Erf node runs on its
 * own), with the same bits as the ops one by one. */
static void test_fused_chains(void **state)
{
    (void)state;
    const char *absorbed[] = {"Sqrt", "Erf", "Pow"};
    assert_fuses("convnext_tiny", absorbed, 3);
}

/* DenseNet's BatchNorm -> Relu before each conv, no conv before them,
 * runs as one pass of the conv epilogue's arithmetic: no Relu node runs by
 * itself, and the BatchNorm's own B - mean a gives the same bits. */
static void test_fused_batchnorm(void **state)
{
    (void)state;
    const char *absorbed[] = {"Relu"};
    assert_fuses("densenet121", absorbed, 1);
}

/* A node of a graph built by hand: up to three inputs (NULL ends them),
 * one output. */
typedef struct node_spec {
    const char *name, *op, *in[3], *out;
} node_spec;

/* A new graph of the given nodes, in order; made[i] gets node i. */
static bd_graph *graph_of(const node_spec *nodes, size_t count, bd_node **made)
{
    bd_graph *g;
    assert_int_equal(bd_graph_new(&g), BD_OK);
    g->opset = 13;
    for (size_t i = 0; i < count; i++) {
        int nin = 0;
        while (nin < 3 && nodes[i].in[nin])
            nin++;
        const char *out[] = {nodes[i].out};
        assert_int_equal(bd_graph_add_node(g, nodes[i].name, nodes[i].op, "", nin, nodes[i].in,
                                           1, out, &made[i]),
                         BD_OK);
    }
    return g;
}

/* Value `name` of g holds t (g takes it). */
static void set_init(bd_graph *g, const char *name, bd_tensor *t)
{
    int v;
    assert_int_equal(bd_graph_value(g, name, &v), BD_OK);
    bd_graph_set_init(g, v, t);
}

/* g's inputs (of any shape) and outputs, by name; then g is sorted. */
static void set_io(bd_graph *g, const char *const *inputs, int nin, const char *const *outputs,
                   int nout)
{
    g->inputs = malloc((size_t)nin * sizeof *g->inputs);
    g->outputs = malloc((size_t)nout * sizeof *g->outputs);
    assert_true(g->inputs && g->outputs);
    for (int i = 0; i < nin; i++) {
        assert_int_equal(bd_graph_value(g, inputs[i], &g->inputs[i]), BD_OK);
        g->values[g->inputs[i]].ndim = -1; /* any shape */
    }
    for (int i = 0; i < nout; i++)
        assert_int_equal(bd_graph_value(g, outputs[i], &g->outputs[i]), BD_OK);
    g->ninputs = nin;
    g->noutputs = nout;
    assert_int_equal(bd_graph_sort(g), BD_OK);
}

/* A ConvNeXt block's Linear layers as an exporter folds them: MatMul by a
 * [c, 4c] initializer -> Add(bias) -> GELU (Div, Erf, Add, Mul, Mul) ->
 * MatMul by [4c, c] -> Add(bias), on x [1, h, w, c]. */
static bd_graph *linear_gelu_linear(int64_t c)
{
    const node_spec nodes[] = {
        {"mm1", "MatMul", {"x", "w1"}, "p1"},  {"add1", "Add", {"b1", "p1"}, "h"},
        {"div", "Div", {"h", "sqrt2"}, "d"},   {"erf", "Erf", {"d"}, "e"},
        {"one", "Add", {"e", "one"}, "e1"},    {"gx", "Mul", {"h", "e1"}, "gx"},
        {"half", "Mul", {"gx", "half"}, "u"},  {"mm2", "MatMul", {"u", "w2"}, "p2"},
        {"add2", "Add", {"p2", "b2"}, "y"},
    };
    bd_node *made[sizeof nodes / sizeof nodes[0]];
    bd_graph *g = graph_of(nodes, sizeof nodes / sizeof nodes[0], made);
    set_init(g, "w1", bd_test_rand_f32(BD_TEST_DIMS(c, 4 * c), 21, -0.3f, 0.3f));
    set_init(g, "b1", bd_test_rand_f32(BD_TEST_DIMS(4 * c), 22, -0.5f, 0.5f));
    set_init(g, "w2", bd_test_rand_f32(BD_TEST_DIMS(4 * c, c), 23, -0.3f, 0.3f));
    set_init(g, "b2", bd_test_rand_f32(BD_TEST_DIMS(c), 24, -0.5f, 0.5f));
    set_init(g, "sqrt2", bd_test_rand_f32(BD_TEST_SCALAR, 0, 1.4142135f, 1.4142135f));
    set_init(g, "one", bd_test_rand_f32(BD_TEST_SCALAR, 0, 1.0f, 1.0f));
    set_init(g, "half", bd_test_rand_f32(BD_TEST_SCALAR, 0, 0.5f, 0.5f));
    set_io(g, (const char *[]){"x"}, 1, (const char *[]){"y"}, 1);
    return g;
}

/* Each MatMul takes its bias, the first also its GELU, into the product's
 * epilogue (no Add, Div or Erf node runs by itself), with the bits of the
 * ops one by one: at 7x7 tokens (one block of rows) and at 20x20 (two),
 * with channels that no vector or panel divides. */
static void test_fused_linear(void **state)
{
    (void)state;
    const int64_t c = 37;
    bd_graph *g = linear_gelu_linear(c);
    bd_exec *plain, *fused;
    assert_int_equal(bd_exec_new(&plain, g, 0), BD_OK);
    assert_int_equal(bd_exec_new(&fused, g, BD_EXEC_FUSE), BD_OK);
    assert_string_equal(bd_exec_step_op(fused, 0), "MatMul+bias+GELU");
    for (int i = 0; i < g->nnodes; i++)
        if (strcmp(g->nodes[i].name, "mm2") == 0)
            assert_string_equal(bd_exec_step_op(fused, i), "MatMul+bias");
    const int64_t sides[] = {7, 20};
    for (int t = 0; t < 2; t++) {
        bd_tensor *x = bd_test_rand_f32(BD_TEST_DIMS(1, sides[t], sides[t], c), 30 + t, -2, 2);
        const char *absorbed[] = {"Add", "Div", "Erf"};
        assert_absorbed(plain, fused, x, absorbed, 3);
        bd_tensor_free(x);
    }
    /* a 1-D input runs as the ops would run it; one whose rows do not
     * agree with B fails in both as the MatMul, naming it */
    bd_tensor *v = bd_test_rand_f32(BD_TEST_DIMS(c), 40, -2, 2);
    assert_runs_agree(plain, fused, v, 1);
    bd_tensor_free(v);
    bd_tensor *bad = bd_test_rand_f32(BD_TEST_DIMS(1, 3, 3, c + 1), 41, -2, 2), *y = NULL;
    for (int f = 0; f < 2; f++) {
        assert_int_not_equal(bd_exec_run1(f ? fused : plain, bad, &y), BD_OK);
        assert_null(y);
        if (!strstr(bd_error_message(), "mm1"))
            fail_msg("the message names no MatMul: %s", bd_error_message());
    }
    bd_tensor_free(bad);
    bd_exec_free(plain);
    bd_exec_free(fused);
    bd_graph_free(g);
}

/* Conv (k x k) -> Add(residual) -> an activation, with the residual of the
 * conv's shape (added in the conv's epilogue) or broadcast (the Add and
 * the activation then run as their own kernels after the conv). */
typedef struct act_case {
    const char *what;
    int64_t opset;
    const char *act; /* "SiLU": Sigmoid and Mul; "xHardSigmoid": HardSigmoid and Mul */
    int mul_first;   /* the gate spelled Mul(f(a), a) */
} act_case;

static bd_graph *conv_add_act(const act_case *ac, int64_t k)
{
    bd_graph *g;
    assert_int_equal(bd_graph_new(&g), BD_OK);
    g->opset = ac->opset;
    bd_node *n;
    const char *conv_in[] = {"x", "w"}, *add_in[] = {"c", "r"}, *act_in[] = {"a"};
    const char *c[] = {"c"}, *a[] = {"a"}, *y[] = {"y"}, *s[] = {"s"};
    assert_int_equal(bd_graph_add_node(g, "conv", "Conv", "", 2, conv_in, 1, c, &n), BD_OK);
    bd_test_attr_ints(n, "pads", 4, (int64_t[]){k / 2, k / 2, k / 2, k / 2});
    assert_int_equal(bd_graph_add_node(g, "add", "Add", "", 2, add_in, 1, a, &n), BD_OK);
    const int hard = strcmp(ac->act, "xHardSigmoid") == 0;
    if (strcmp(ac->act, "SiLU") == 0 || hard) {
        const char *mul_in[] = {ac->mul_first ? "s" : "a", ac->mul_first ? "a" : "s"};
        assert_int_equal(bd_graph_add_node(g, "gate", hard ? "HardSigmoid" : "Sigmoid", "", 1,
                                           act_in, 1, s, &n),
                         BD_OK);
        if (hard) { /* HardSwish before opset 14 */
            bd_test_attr_float(n, "alpha", 1.0f / 6);
            bd_test_attr_float(n, "beta", 0.5f);
        }
        assert_int_equal(bd_graph_add_node(g, "mul", "Mul", "", 2, mul_in, 1, y, &n), BD_OK);
    } else {
        assert_int_equal(bd_graph_add_node(g, "act", ac->act, "", 1, act_in, 1, y, &n), BD_OK);
        if (strcmp(ac->act, "HardSigmoid") == 0) {
            bd_test_attr_float(n, "alpha", 0.3f);
            bd_test_attr_float(n, "beta", 0.4f);
        }
        if (strcmp(ac->act, "Clip") == 0) { /* opset 10: bounds as attributes */
            bd_test_attr_float(n, "min", -0.2f);
            bd_test_attr_float(n, "max", 0.3f);
        }
    }
    set_init(g, "w", bd_test_rand_f32(BD_TEST_DIMS(4, 3, k, k), 5, -0.5f, 0.5f));
    set_io(g, (const char *[]){"x", "r"}, 2, (const char *[]){"y"}, 1);
    return g;
}

/* Each activation fuses into the conv (its nodes see no hook) and gives
 * what the nodes give one by one: the same functions on the same sums, 3x3
 * and 1x1 (a 5x11 map's last 7 pixels as dot products, their functions
 * applied together; a map of fewer than 48 pixels takes the direct
 * kernel). */
static void test_fused_activations(void **state)
{
    (void)state;
    static const act_case cases[] = {
        {"SiLU", 13, "SiLU", 0},          {"SiLU, Mul's operands swapped", 13, "SiLU", 1},
        {"Sigmoid", 13, "Sigmoid", 0},    {"HardSigmoid", 13, "HardSigmoid", 0},
        {"HardSwish", 14, "HardSwish", 0}, {"Clip at opset 10", 10, "Clip", 0},
        {"Relu", 13, "Relu", 0},          {"x HardSigmoid(x)", 13, "xHardSigmoid", 1},
    };
    const int64_t full[4] = {2, 4, 5, 11}, broadcast[4] = {1, 4, 1, 1};
    bd_tensor *x = bd_test_rand_f32(BD_TEST_DIMS(2, 3, 5, 11), 1, -2, 2);
    for (size_t k = 0; k < 2 * sizeof cases / sizeof cases[0]; k++)
        for (int apart = 0; apart < 2; apart++) {
            const int64_t *rd = apart ? broadcast : full;
            const size_t ncases = sizeof cases / sizeof cases[0];
            bd_graph *g = conv_add_act(&cases[k % ncases], k < ncases ? 3 : 1);
            bd_tensor *r = bd_test_rand_f32(4, rd, 2 + (uint64_t)apart, -1, 1);
            bd_tensor *ins[2] = {x, r}, *plain_y, *fused_y;
            bd_exec *plain, *fused;
            int calls = 0;
            assert_int_equal(bd_exec_new(&plain, g, 0), BD_OK);
            assert_int_equal(bd_exec_new(&fused, g, BD_EXEC_FUSE), BD_OK);
            bd_exec_set_hook(fused, count_calls, &calls);
            if (bd_exec_run(plain, ins, &plain_y) != BD_OK ||
                bd_exec_run(fused, ins, &fused_y) != BD_OK)
                fail_msg("%s: %s", cases[k % ncases].what, bd_error_message());
            if (calls != 1)
                fail_msg("%s: %d steps, expected the conv alone", cases[k % ncases].what, calls);
            const float *p = plain_y->data, *f = fused_y->data;
            for (int64_t i = 0; i < bd_tensor_count(plain_y); i++)
                if (!(p[i] == f[i]))
                    fail_msg("%s%s: output %lld is %.9g fused, %.9g unfused",
                             cases[k % ncases].what,
                             apart ? " (broadcast residual)" : "", (long long)i, f[i], p[i]);
            bd_tensor_free(plain_y);
            bd_tensor_free(fused_y);
            bd_tensor_free(r);
            bd_exec_free(plain);
            bd_exec_free(fused);
            bd_graph_free(g);
        }
    bd_tensor_free(x);
}

/* Both executors on x: their nout outputs (at most 4) agree bit for bit. */
static void assert_outputs_agree(bd_exec *a, bd_exec *b, bd_tensor *x, int nout)
{
    bd_tensor *ya[4], *yb[4];
    assert_true(nout <= 4);
    assert_int_equal(bd_exec_run(a, &x, ya), BD_OK);
    assert_int_equal(bd_exec_run(b, &x, yb), BD_OK);
    for (int k = 0; k < nout; k++) {
        assert_int_equal(bd_tensor_count(ya[k]), bd_tensor_count(yb[k]));
        assert_memory_equal(ya[k]->data, yb[k]->data, bd_tensor_nbytes(ya[k]));
        bd_tensor_free(ya[k]);
        bd_tensor_free(yb[k]);
    }
}

/* x -> conv a (3x3) -> Relu, conv b (1x1): Concat(a, b) is y1; conv d,
 * whose output a Relu also reads: Concat(d, Relu(d)) is y2. */
static bd_graph *convs_concat(void)
{
    const node_spec nodes[] = {
        {"a", "Conv", {"x", "wa"}, "ca"}, {"ra", "Relu", {"ca"}, "a"},
        {"b", "Conv", {"x", "wb"}, "b"},  {"cat", "Concat", {"a", "b"}, "y1"},
        {"d", "Conv", {"x", "wd"}, "d"},  {"rd", "Relu", {"d"}, "e"},
        {"cat2", "Concat", {"d", "e"}, "y2"},
    };
    bd_node *made[sizeof nodes / sizeof nodes[0]];
    bd_graph *g = graph_of(nodes, sizeof nodes / sizeof nodes[0], made);
    bd_test_attr_ints(made[0], "pads", 4, (int64_t[]){1, 1, 1, 1});
    bd_test_attr_int(made[3], "axis", 1);
    bd_test_attr_int(made[6], "axis", 1);
    set_init(g, "wa", bd_test_rand_f32(BD_TEST_DIMS(16, 16, 3, 3), 30, -0.3f, 0.3f));
    set_init(g, "wb", bd_test_rand_f32(BD_TEST_DIMS(5, 16, 1, 1), 31, -0.3f, 0.3f));
    set_init(g, "wd", bd_test_rand_f32(BD_TEST_DIMS(7, 16, 1, 1), 32, -0.3f, 0.3f));
    set_io(g, (const char *[]){"x"}, 1, (const char *[]){"y1", "y2"}, 2);
    return g;
}

/* For each Concat node the hook sees: whether its two inputs share storage
 * (slices of its own output, written there by their convs). */
typedef struct shared_inputs {
    int cat, cat2;
} shared_inputs;

static bd_status note_shared(void *user, const bd_graph *g, int node, bd_tensor *const *in)
{
    shared_inputs *s = user;
    if (strcmp(g->nodes[node].op, "Concat") == 0)
        *(strcmp(g->nodes[node].name, "cat") == 0 ? &s->cat : &s->cat2) =
            in[0]->storage == in[1]->storage;
    return BD_OK;
}

/* At batch 1 the convs that only a Concat reads write into its output, and
 * the results are the unfused executor's bits; a conv output something
 * else reads too, and any larger batch, take the copy. */
static void test_concat_in_place(void **state)
{
    (void)state;
    bd_graph *g = convs_concat();
    bd_exec *plain, *fused;
    assert_int_equal(bd_exec_new(&plain, g, 0), BD_OK);
    assert_int_equal(bd_exec_new(&fused, g, BD_EXEC_FUSE), BD_OK);
    shared_inputs seen = {-1, -1};
    bd_exec_set_hook(fused, note_shared, &seen);
    for (int64_t n = 1; n <= 2; n++) {
        bd_tensor *x = bd_test_rand_f32(BD_TEST_DIMS(n, 16, 6, 7), 40 + n, -1, 1);
        assert_outputs_agree(plain, fused, x, 2);
        assert_int_equal(seen.cat, n == 1);
        assert_int_equal(seen.cat2, 0);
        bd_tensor_free(x);
    }
    bd_exec_free(plain);
    bd_exec_free(fused);
    bd_graph_free(g);
}

/* x -> 1x1 conv -> Relu -> h -> 3x3 depthwise -> Relu -> 1x1 conv: y1 (h
 * read by the depthwise conv alone); x -> 3x3 depthwise: y2 (over a graph
 * input); x -> 1x1 conv -> fx -> 3x3 depthwise -> g3, times fx: y3 (fx
 * read again after the depthwise conv). */
static bd_graph *depthwise_blocks(void)
{
    const node_spec nodes[] = {
        {"e", "Conv", {"x", "we"}, "ce"},   {"re", "Relu", {"ce"}, "h"},
        {"d", "Conv", {"h", "wd"}, "cd"},   {"rd", "Relu", {"cd"}, "dd"},
        {"p", "Conv", {"dd", "wp"}, "y1"},  {"d2", "Conv", {"x", "w2"}, "y2"},
        {"f", "Conv", {"x", "wf"}, "fx"},   {"d3", "Conv", {"fx", "w3"}, "g3"},
        {"mul", "Mul", {"g3", "fx"}, "y3"},
    };
    bd_node *made[sizeof nodes / sizeof nodes[0]];
    bd_graph *g = graph_of(nodes, sizeof nodes / sizeof nodes[0], made);
    const int dw[] = {2, 5, 7};
    const int64_t groups[] = {32, 16, 16};
    for (int k = 0; k < 3; k++) {
        bd_test_attr_ints(made[dw[k]], "pads", 4, (int64_t[]){1, 1, 1, 1});
        bd_test_attr_int(made[dw[k]], "group", groups[k]);
    }
    set_init(g, "we", bd_test_rand_f32(BD_TEST_DIMS(32, 16, 1, 1), 50, -0.3f, 0.3f));
    set_init(g, "wd", bd_test_rand_f32(BD_TEST_DIMS(32, 1, 3, 3), 51, -0.3f, 0.3f));
    set_init(g, "wp", bd_test_rand_f32(BD_TEST_DIMS(16, 32, 1, 1), 52, -0.3f, 0.3f));
    set_init(g, "w2", bd_test_rand_f32(BD_TEST_DIMS(16, 1, 3, 3), 53, -0.3f, 0.3f));
    set_init(g, "wf", bd_test_rand_f32(BD_TEST_DIMS(16, 16, 1, 1), 54, -0.3f, 0.3f));
    set_init(g, "w3", bd_test_rand_f32(BD_TEST_DIMS(16, 1, 3, 3), 55, -0.3f, 0.3f));
    set_io(g, (const char *[]){"x"}, 1, (const char *[]){"y1", "y2", "y3"}, 3);
    return g;
}

static int value_of(const bd_graph *g, const char *name)
{
    for (int v = 0; v < g->nvalues; v++)
        if (strcmp(g->values[v].name, name) == 0)
            return v;
    fail_msg("no value '%s'", name);
    return -1;
}

/* (the graph keeps its nodes in an order of its own) */
static int node_of(const bd_graph *g, const char *name)
{
    for (int i = 0; i < g->nnodes; i++)
        if (strcmp(g->nodes[i].name, name) == 0)
            return i;
    fail_msg("no node '%s'", name);
    return -1;
}

/* A frozen run writes a depthwise conv's output over its input where
 * nothing else reads that input (the output's storage is the input's),
 * never over a graph input or a value read again later, and gives the
 * unfused executor's bits, at batch 1 and 2, rows narrow (16 channels to
 * a vector) and wide (a bordered plane each). */
static void test_depthwise_in_place(void **state)
{
    (void)state;
    bd_graph *g = depthwise_blocks();
    bd_exec *plain, *frozen;
    assert_int_equal(bd_exec_new(&plain, g, 0), BD_OK);
    assert_int_equal(bd_exec_new(&frozen, g, BD_EXEC_FUSE | BD_EXEC_FROZEN), BD_OK);
    const int64_t sizes[][3] = {{1, 7, 9}, {2, 7, 9}, {1, 11, 37}, {2, 11, 37}};
    for (int c = 0; c < 4; c++) {
        bd_tensor *x = bd_test_rand_f32(BD_TEST_DIMS(sizes[c][0], 16, sizes[c][1], sizes[c][2]),
                                        60 + c, -1, 1);
        assert_outputs_agree(plain, frozen, x, 3);
        bd_exec_state *st;
        assert_int_equal(bd_exec_state_new(frozen, &x, &st), BD_OK);
        assert_int_equal(bd_exec_advance(frozen, st, node_of(g, "mul")), BD_OK);
        assert_ptr_not_equal(bd_exec_state_value(st, value_of(g, "g3"))->storage,
                             bd_exec_state_value(st, value_of(g, "fx"))->storage);
        bd_exec_state_free(frozen, st);
        assert_int_equal(bd_exec_state_new(frozen, &x, &st), BD_OK);
        assert_int_equal(bd_exec_advance(frozen, st, node_of(g, "d")), BD_OK);
        const void *h = bd_exec_state_value(st, value_of(g, "h"))->data;
        assert_int_equal(bd_exec_advance(frozen, st, node_of(g, "p")), BD_OK);
        if (bd_conv_direct_available()) /* AVX-512: the kernels that allow it */
            assert_ptr_equal(bd_exec_state_value(st, value_of(g, "dd"))->data, h);
        bd_exec_state_free(frozen, st);
        bd_tensor_free(x);
    }
    bd_exec_free(plain);
    bd_exec_free(frozen);
    bd_graph_free(g);
}

/* Squeeze-and-excitation gates: x -> 1x1 conv -> h, h times
 * Sigmoid(GlobalAveragePool(h)): y1 (h read last by the Mul); x -> 1x1
 * conv -> k, the gate times k (the other order) plus k: y2 (k read again
 * after the Mul). */
static bd_graph *gated(void)
{
    const node_spec nodes[] = {
        {"c1", "Conv", {"x", "w1"}, "h"},      {"gp", "GlobalAveragePool", {"h"}, "gh"},
        {"sg", "Sigmoid", {"gh"}, "s1"},       {"mul", "Mul", {"h", "s1"}, "y1"},
        {"c2", "Conv", {"x", "w2"}, "k"},      {"gp2", "GlobalAveragePool", {"k"}, "gk"},
        {"sg2", "Sigmoid", {"gk"}, "s2"},      {"mul2", "Mul", {"s2", "k"}, "m2"},
        {"add", "Add", {"m2", "k"}, "y2"},
    };
    bd_node *made[sizeof nodes / sizeof nodes[0]];
    bd_graph *g = graph_of(nodes, sizeof nodes / sizeof nodes[0], made);
    set_init(g, "w1", bd_test_rand_f32(BD_TEST_DIMS(8, 8, 1, 1), 70, -0.5f, 0.5f));
    set_init(g, "w2", bd_test_rand_f32(BD_TEST_DIMS(8, 8, 1, 1), 71, -0.5f, 0.5f));
    set_io(g, (const char *[]){"x"}, 1, (const char *[]){"y1", "y2"}, 2);
    return g;
}

/* A frozen run scales a tensor's channels by a gate over the tensor where
 * the Mul reads it last (the product's storage is the tensor's), not where
 * it is read again, and gives the unfused bits, one gate per image. */
static void test_gate_in_place(void **state)
{
    (void)state;
    bd_graph *g = gated();
    bd_exec *plain, *frozen;
    assert_int_equal(bd_exec_new(&plain, g, 0), BD_OK);
    assert_int_equal(bd_exec_new(&frozen, g, BD_EXEC_FUSE | BD_EXEC_FROZEN), BD_OK);
    for (int64_t n = 1; n <= 2; n++) {
        bd_tensor *x = bd_test_rand_f32(BD_TEST_DIMS(n, 8, 5, 6), 72 + n, -1, 1);
        assert_outputs_agree(plain, frozen, x, 2);
        bd_exec_state *st;
        assert_int_equal(bd_exec_state_new(frozen, &x, &st), BD_OK);
        assert_int_equal(bd_exec_advance(frozen, st, node_of(g, "mul")), BD_OK);
        const void *h = bd_exec_state_value(st, value_of(g, "h"))->data;
        assert_int_equal(bd_exec_advance(frozen, st, g->nnodes), BD_OK);
        assert_ptr_equal(bd_exec_state_value(st, value_of(g, "y1"))->data, h);
        bd_exec_state_free(frozen, st);
        assert_int_equal(bd_exec_state_new(frozen, &x, &st), BD_OK);
        assert_int_equal(bd_exec_advance(frozen, st, node_of(g, "add")), BD_OK);
        assert_ptr_not_equal(bd_exec_state_value(st, value_of(g, "m2"))->storage,
                             bd_exec_state_value(st, value_of(g, "k"))->storage);
        bd_exec_state_free(frozen, st);
        bd_tensor_free(x);
    }
    bd_exec_free(plain);
    bd_exec_free(frozen);
    bd_graph_free(g);
}

/* x -> Pad(pads, value) -> AveragePool 3x3 (no pads of its own). */
static bd_graph *pad_pool(const int64_t *pads, float value)
{
    const node_spec nodes[] = {
        {"pad", "Pad", {"x", "pads", "value"}, "p"},
        {"pool", "AveragePool", {"p"}, "y"},
    };
    bd_node *made[2];
    bd_graph *g = graph_of(nodes, 2, made);
    bd_test_attr_ints(made[1], "kernel_shape", 2, (int64_t[]){3, 3});
    bd_tensor *pt = bd_test_tensor(BD_I64, BD_TEST_DIMS(8));
    memcpy(pt->data, pads, 8 * sizeof *pads);
    set_init(g, "pads", pt);
    set_init(g, "value", bd_test_rand_f32(BD_TEST_SCALAR, 0, value, value));
    set_io(g, (const char *[]){"x"}, 1, (const char *[]){"y"}, 1);
    return g;
}

/* A Pad of zeros before an AveragePool runs as the pool alone, with the
 * padding counted in its windows: Inception-v3's spelling (the zoo's
 * fixture), and uneven pads by hand, give the unfused bits; a nonzero
 * value or pads on the channels run both ops, with the same results. */
static void test_fused_pad_pool(void **state)
{
    (void)state;
    const char *absorbed[] = {"AveragePool"};
    assert_fuses("inception_v3", absorbed, 1);
    const struct {
        int64_t pads[8];
        float value;
    } cases[] = {
        {{0, 0, 1, 2, 0, 0, 2, 0}, 0.0f},
        {{0, 0, 1, 1, 0, 0, 1, 1}, 0.5f},
        {{0, 1, 1, 1, 0, 0, 1, 1}, 0.0f},
    };
    bd_tensor *x = bd_test_rand_f32(BD_TEST_DIMS(2, 3, 9, 11), 50, -1, 1);
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        bd_graph *g = pad_pool(cases[c].pads, cases[c].value);
        bd_exec *plain, *fused;
        assert_int_equal(bd_exec_new(&plain, g, 0), BD_OK);
        assert_int_equal(bd_exec_new(&fused, g, BD_EXEC_FUSE), BD_OK);
        assert_runs_agree(plain, fused, x, 1);
        assert_string_equal(bd_exec_step_op(fused, 0), "Pad+AveragePool");
        bd_exec_free(plain);
        bd_exec_free(fused);
        bd_graph_free(g);
    }
    bd_tensor_free(x);
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
        cmocka_unit_test(test_frozen),
        cmocka_unit_test(test_concat_in_place),
        cmocka_unit_test(test_depthwise_in_place),
        cmocka_unit_test(test_gate_in_place),
        cmocka_unit_test(test_fused_pad_pool),
        cmocka_unit_test(test_fused_activations),
        cmocka_unit_test(test_fused_chains),
        cmocka_unit_test(test_fused_batchnorm),
        cmocka_unit_test(test_fused_linear),
        cmocka_unit_test(test_bad_inputs),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
