/* The op table of the training pass: which ops have a backward, which of
 * their inputs get a gradient, and the few whose training forward is not
 * the inference kernel. The checks every backward kernel relies on are made
 * here once (cpu/grad_kernels.h lists them). */
#include "grad.h"

#include <limits.h>
#include <string.h>

#include "cpu/grad_kernels.h"
#include "ops.h"

typedef struct grad_op {
    const char *name;
    bd_grad_forward_fn forward; /* NULL: the inference kernel */
    bd_grad_fn backward;
    /* Inputs [0, ndiff) are differentiable; the rest (shapes, axes, bounds,
     * running statistics) are not. */
    int ndiff;
} grad_op;

static const grad_op grad_ops[] = {
    {"Conv", NULL, bd_g_conv, 3},
    {"Gemm", NULL, bd_g_gemm, 3},
    {"MatMul", NULL, bd_g_matmul, 2},
    {"Add", NULL, bd_g_add, 2},
    {"Sub", NULL, bd_g_sub, 2},
    {"Mul", NULL, bd_g_mul, 2},
    {"Div", NULL, bd_g_div, 2},
    {"Pow", NULL, bd_g_pow, 1},
    {"Relu", NULL, bd_g_relu, 1},
    {"LeakyRelu", NULL, bd_g_leaky_relu, 1},
    {"Clip", NULL, bd_g_clip, 1},
    {"Sigmoid", NULL, bd_g_sigmoid, 1},
    {"HardSigmoid", NULL, bd_g_hard_sigmoid, 1},
    {"HardSwish", NULL, bd_g_hard_swish, 1},
    {"Tanh", NULL, bd_g_tanh, 1},
    {"Exp", NULL, bd_g_exp, 1},
    {"Sqrt", NULL, bd_g_sqrt, 1},
    {"Neg", NULL, bd_g_neg, 1},
    {"Erf", NULL, bd_g_erf, 1},
    {"ReduceMean", NULL, bd_g_reduce_mean, 1},
    {"BatchNormalization", bd_gf_batchnorm, bd_g_batchnorm, 3},
    {"Softmax", NULL, bd_g_softmax, 1},
    {"LogSoftmax", NULL, bd_g_log_softmax, 1},
    {"MaxPool", NULL, bd_g_maxpool, 1},
    {"AveragePool", NULL, bd_g_averagepool, 1},
    {"GlobalAveragePool", NULL, bd_g_global_averagepool, 1},
    {"GlobalMaxPool", NULL, bd_g_global_maxpool, 1},
    {"Flatten", NULL, bd_g_reshape, 1},
    {"Reshape", NULL, bd_g_reshape, 1},
    {"Squeeze", NULL, bd_g_reshape, 1},
    {"Unsqueeze", NULL, bd_g_reshape, 1},
    {"Identity", NULL, bd_g_reshape, 1},
    /* straight through, as quantization-aware training takes it: Round's
     * derivative is 0 almost everywhere, which would stop every gradient
     * behind a fake-quantized activation (docs/method.md, "BitPruning") */
    {"Round", NULL, bd_g_reshape, 1},
    /* identity while training too, for now: nothing is dropped */
    {"Dropout", NULL, bd_g_reshape, 1},
    {"Transpose", NULL, bd_g_transpose, 1},
    {"Concat", NULL, bd_g_concat, INT_MAX},
    {"Pad", NULL, bd_g_pad, 1},
    {"Slice", NULL, bd_g_slice, 1},
};

static const grad_op *grad_lookup(const bd_node *n)
{
    /* the same domains the inference table accepts */
    if (!bd_op_lookup(n->domain, n->op))
        return NULL;
    for (size_t i = 0; i < sizeof grad_ops / sizeof grad_ops[0]; i++)
        if (strcmp(grad_ops[i].name, n->op) == 0)
            return &grad_ops[i];
    return NULL;
}

void bd_saved_free(bd_saved *s)
{
    for (int i = 0; i < BD_SAVED_MAX; i++) {
        bd_tensor_free(s->t[i]);
        s->t[i] = NULL;
    }
}

int bd_grad_supported(const char *op)
{
    for (size_t i = 0; i < sizeof grad_ops / sizeof grad_ops[0]; i++)
        if (strcmp(grad_ops[i].name, op) == 0)
            return 1;
    return 0;
}

static void free_all(bd_tensor **t, int count)
{
    for (int i = 0; i < count; i++) {
        bd_tensor_free(t[i]);
        t[i] = NULL;
    }
}

/* A NULL context means the defaults: frozen statistics. */
static const bd_grad_ctx *ctx_or_default(const bd_grad_ctx *ctx)
{
    static const bd_grad_ctx defaults;
    return ctx ? ctx : &defaults;
}

bd_status bd_grad_forward(const bd_graph *g, const bd_node *n, bd_tensor *const *in,
                          bd_tensor **out, bd_saved *saved, const bd_grad_ctx *ctx)
{
    memset(saved, 0, sizeof *saved);
    const grad_op *op = grad_lookup(n);
    if (!op || !op->forward)
        return bd_op_run(g, n, in, out);
    const bd_op *fwd;
    BD_TRY(bd_op_check(g, n, &fwd));
    for (int i = 0; i < n->noutputs; i++)
        out[i] = NULL;
    bd_status st = op->forward(g, n, in, out, saved, ctx_or_default(ctx));
    if (st != BD_OK) {
        free_all(out, n->noutputs);
        bd_saved_free(saved);
    }
    return st;
}

static const char *input_name(const bd_graph *g, const bd_node *n, int i)
{
    int id = n->inputs[i];
    return id >= 0 && id < g->nvalues ? g->values[id].name : "";
}

/* Everything the kernels take for granted (grad_kernels.h). */
static bd_status check_backward(const bd_graph *g, const bd_node *n, const grad_op *op,
                                bd_tensor *const *in, bd_tensor *const *out,
                                bd_tensor *const *dout, const unsigned char *want)
{
    const bd_op *fwd;
    BD_TRY(bd_op_check(g, n, &fwd));
    for (int i = 0; i < n->ninputs; i++) {
        if (i < fwd->min_inputs && !in[i])
            return bd_node_fail(n, BD_EINVAL, "input %d ('%s') is missing", i,
                                input_name(g, n, i));
        if (!want[i])
            continue;
        if (i >= op->ndiff)
            return bd_node_fail(n, BD_EINVAL, "input %d ('%s') has no gradient", i,
                                input_name(g, n, i));
        if (n->inputs[i] < 0 || !in[i])
            return bd_node_fail(n, BD_EINVAL,
                                "a gradient is wanted for input %d, which is missing", i);
        if (in[i]->dtype != BD_F32)
            return bd_node_fail(n, BD_EUNSUPPORTED,
                                "input %d ('%s') is %s; gradients are float32 only", i,
                                input_name(g, n, i), bd_dtype_name(in[i]->dtype));
    }
    if (!out[0])
        return bd_node_fail(n, BD_EINVAL, "the forward's output 0 is missing");
    for (int j = 1; dout && j < n->noutputs; j++)
        if (dout[j])
            return bd_node_fail(n, BD_EINVAL, "output %d has no gradient", j);
    const bd_tensor *dy = dout ? dout[0] : NULL;
    if (dy && (dy->dtype != BD_F32 || !bd_tensor_same_shape(dy, out[0]))) {
        char sd[160], so[160];
        return bd_node_fail(n, BD_EINVAL, "the gradient of output 0 is %s %s, the output %s %s",
                            bd_dtype_name(dy->dtype),
                            bd_shape_str(dy->ndim, dy->dims, sd, sizeof sd),
                            bd_dtype_name(out[0]->dtype),
                            bd_shape_str(out[0]->ndim, out[0]->dims, so, sizeof so));
    }
    return BD_OK;
}

bd_status bd_grad_backward(const bd_graph *g, const bd_node *n, bd_tensor *const *in,
                           bd_tensor *const *out, const bd_saved *saved, bd_tensor *const *dout,
                           const unsigned char *want, bd_tensor **din, const bd_grad_ctx *ctx)
{
    for (int i = 0; i < n->ninputs; i++)
        din[i] = NULL;
    const grad_op *op = grad_lookup(n);
    if (!op)
        return bd_node_fail(n, BD_EUNSUPPORTED, "has no backward kernel");
    BD_TRY(check_backward(g, n, op, in, out, dout, want));
    int wanted = 0;
    for (int i = 0; i < n->ninputs; i++)
        wanted |= want[i];
    if (!wanted)
        return BD_OK;
    const bd_tensor *dy = dout ? dout[0] : NULL;
    bd_status st = BD_OK;
    if (dy) {
        bd_grad_args a = {.g = g, .n = n, .in = in, .out = out, .saved = saved, .dy = dy,
                          .want = want, .ctx = ctx_or_default(ctx)};
        st = op->backward(&a, din);
    } else {
        for (int i = 0; i < n->ninputs && st == BD_OK; i++)
            if (want[i])
                st = bd_k_output(n, &din[i], BD_F32, in[i]->ndim, in[i]->dims, 1);
    }
    if (st != BD_OK)
        free_all(din, n->ninputs);
    return st;
}
