#include "ops.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static const bd_op ops[] = {
    /* name, inputs min..max, outputs min..max, kernel */
    {"Conv", 2, 3, 1, 1, bd_k_conv},
    {"Gemm", 2, 3, 1, 1, bd_k_gemm},
    {"MatMul", 2, 2, 1, 1, bd_k_matmul},
    {"Add", 2, 2, 1, 1, bd_k_add},
    {"Sub", 2, 2, 1, 1, bd_k_sub},
    {"Mul", 2, 2, 1, 1, bd_k_mul},
    {"Div", 2, 2, 1, 1, bd_k_div},
    {"Mod", 2, 2, 1, 1, bd_k_mod},
    {"Pow", 2, 2, 1, 1, bd_k_pow},
    {"Relu", 1, 1, 1, 1, bd_k_relu},
    {"LeakyRelu", 1, 1, 1, 1, bd_k_leaky_relu},
    {"Clip", 1, 3, 1, 1, bd_k_clip},
    {"Sigmoid", 1, 1, 1, 1, bd_k_sigmoid},
    {"HardSigmoid", 1, 1, 1, 1, bd_k_hard_sigmoid},
    {"HardSwish", 1, 1, 1, 1, bd_k_hard_swish},
    {"Tanh", 1, 1, 1, 1, bd_k_tanh},
    {"Exp", 1, 1, 1, 1, bd_k_exp},
    {"Sqrt", 1, 1, 1, 1, bd_k_sqrt},
    {"Neg", 1, 1, 1, 1, bd_k_neg},
    {"Erf", 1, 1, 1, 1, bd_k_erf},
    {"Round", 1, 1, 1, 1, bd_k_round},
    {"BatchNormalization", 5, 5, 1, 3, bd_k_batchnorm},
    {"Softmax", 1, 1, 1, 1, bd_k_softmax},
    {"LogSoftmax", 1, 1, 1, 1, bd_k_log_softmax},
    {"MaxPool", 1, 1, 1, 2, bd_k_maxpool},
    {"AveragePool", 1, 1, 1, 1, bd_k_averagepool},
    {"GlobalAveragePool", 1, 1, 1, 1, bd_k_global_averagepool},
    {"GlobalMaxPool", 1, 1, 1, 1, bd_k_global_maxpool},
    {"Flatten", 1, 1, 1, 1, bd_k_flatten},
    {"Reshape", 2, 2, 1, 1, bd_k_reshape},
    {"Transpose", 1, 1, 1, 1, bd_k_transpose},
    {"Concat", 1, 1 << 20, 1, 1, bd_k_concat},
    {"Split", 1, 2, 1, 1 << 20, bd_k_split},
    {"Range", 3, 3, 1, 1, bd_k_range},
    {"Identity", 1, 1, 1, 1, bd_k_identity},
    {"Dropout", 1, 3, 1, 2, bd_k_dropout},
    {"Constant", 0, 0, 1, 1, bd_k_constant},
    {"Cast", 1, 1, 1, 1, bd_k_cast},
    {"Gather", 2, 2, 1, 1, bd_k_gather},
    {"Shape", 1, 1, 1, 1, bd_k_shape},
    {"Unsqueeze", 1, 2, 1, 1, bd_k_unsqueeze},
    {"Squeeze", 1, 2, 1, 1, bd_k_squeeze},
    {"Slice", 1, 5, 1, 1, bd_k_slice},
    {"ConstantOfShape", 1, 1, 1, 1, bd_k_constant_of_shape},
    {"Expand", 2, 2, 1, 1, bd_k_expand},
    {"Pad", 1, 4, 1, 1, bd_k_pad},
    {"ReduceMean", 1, 2, 1, 1, bd_k_reduce_mean},
};

const bd_op *bd_op_lookup(const char *domain, const char *name)
{
    if (domain && domain[0] && strcmp(domain, "ai.onnx") != 0)
        return NULL;
    for (size_t i = 0; i < sizeof ops / sizeof ops[0]; i++)
        if (strcmp(ops[i].name, name) == 0)
            return &ops[i];
    return NULL;
}

bd_status bd_node_fail(const bd_node *n, bd_status code, const char *fmt, ...)
{
    char msg[768];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return bd_fail(code, "node '%s' (%s): %s", n->name[0] ? n->name : "<unnamed>", n->op, msg);
}

bd_status bd_op_check(const bd_graph *g, const bd_node *n, const bd_op **op)
{
    (void)g;
    const bd_op *o = bd_op_lookup(n->domain, n->op);
    if (!o) {
        if (n->domain[0] && strcmp(n->domain, "ai.onnx") != 0)
            return bd_node_fail(n, BD_EUNSUPPORTED, "op '%s' of domain '%s' is not supported",
                                n->op, n->domain);
        return bd_node_fail(n, BD_EUNSUPPORTED, "op '%s' is not supported", n->op);
    }
    int nin = n->ninputs;
    while (nin > 0 && n->inputs[nin - 1] < 0)
        nin--; /* trailing omitted optionals do not count */
    if (nin < o->min_inputs || n->ninputs > o->max_inputs)
        return bd_node_fail(n, BD_EFORMAT, "has %d inputs, expected %d to %d", n->ninputs,
                            o->min_inputs, o->max_inputs);
    for (int i = 0; i < o->min_inputs; i++)
        if (n->inputs[i] < 0)
            return bd_node_fail(n, BD_EFORMAT, "required input %d is missing", i);
    if (n->noutputs < o->min_outputs || n->noutputs > o->max_outputs)
        return bd_node_fail(n, BD_EFORMAT, "has %d outputs, expected %d to %d", n->noutputs,
                            o->min_outputs, o->max_outputs);
    if (n->outputs[0] < 0)
        return bd_node_fail(n, BD_EFORMAT, "its first output has no name");
    *op = o;
    return BD_OK;
}

bd_status bd_op_run(const bd_graph *g, const bd_node *n, bd_tensor *const *in, bd_tensor **out)
{
    const bd_op *op;
    BD_TRY(bd_op_check(g, n, &op));
    for (int i = 0; i < n->noutputs; i++)
        out[i] = NULL;
    bd_status st = op->forward(g, n, in, out);
    if (st != BD_OK)
        for (int i = 0; i < n->noutputs; i++) {
            bd_tensor_free(out[i]);
            out[i] = NULL;
        }
    return st;
}
