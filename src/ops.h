/* The op table: every ONNX op bitdown can run, with its forward kernel.
 *
 * A kernel reads its inputs (never writes them: tensors may share storage),
 * allocates its outputs and returns a status whose message names the node.
 * in[i] is NULL for an omitted optional input. Kernels for the CPU live in
 * src/cpu/, one file per family of ops. */
#ifndef BD_OPS_H
#define BD_OPS_H

#include "graph.h"
#include "tensor.h"

typedef bd_status (*bd_forward_fn)(const bd_graph *g, const bd_node *n, bd_tensor *const *in,
                                   bd_tensor **out);

typedef struct bd_op {
    const char *name;
    int min_inputs, max_inputs;
    int min_outputs, max_outputs;
    bd_forward_fn forward;
} bd_op;

/* The op for a node's (domain, type), or NULL. */
const bd_op *bd_op_lookup(const char *domain, const char *name);

/* Checks the node against its op (known op, input/output counts) and fails
 * with a message that names the node and the op. */
bd_status bd_op_check(const bd_graph *g, const bd_node *n, const bd_op **op);

/* Runs one node by itself on the given inputs (used by tests and by
 * constant folding). */
bd_status bd_op_run(const bd_graph *g, const bd_node *n, bd_tensor *const *in, bd_tensor **out);

/* Fails with "node 'x' (Op): <message>". */
bd_status bd_node_fail(const bd_node *n, bd_status code, const char *fmt, ...) BD_PRINTF(3, 4);

/* Kernels, by family (src/cpu/<family>.c). */
#define BD_KERNEL(fn) \
    bd_status fn(const bd_graph *g, const bd_node *n, bd_tensor *const *in, bd_tensor **out)
BD_KERNEL(bd_k_conv);
BD_KERNEL(bd_k_gemm);
BD_KERNEL(bd_k_matmul);
BD_KERNEL(bd_k_add);
BD_KERNEL(bd_k_sub);
BD_KERNEL(bd_k_mul);
BD_KERNEL(bd_k_div);
BD_KERNEL(bd_k_mod);
BD_KERNEL(bd_k_pow);
BD_KERNEL(bd_k_relu);
BD_KERNEL(bd_k_leaky_relu);
BD_KERNEL(bd_k_clip);
BD_KERNEL(bd_k_sigmoid);
BD_KERNEL(bd_k_hard_sigmoid);
BD_KERNEL(bd_k_hard_swish);
BD_KERNEL(bd_k_tanh);
BD_KERNEL(bd_k_exp);
BD_KERNEL(bd_k_sqrt);
BD_KERNEL(bd_k_neg);
BD_KERNEL(bd_k_erf);
BD_KERNEL(bd_k_round);
BD_KERNEL(bd_k_batchnorm);
BD_KERNEL(bd_k_softmax);
BD_KERNEL(bd_k_log_softmax);
BD_KERNEL(bd_k_maxpool);
BD_KERNEL(bd_k_averagepool);
BD_KERNEL(bd_k_global_averagepool);
BD_KERNEL(bd_k_global_maxpool);
BD_KERNEL(bd_k_flatten);
BD_KERNEL(bd_k_reshape);
BD_KERNEL(bd_k_transpose);
BD_KERNEL(bd_k_concat);
BD_KERNEL(bd_k_split);
BD_KERNEL(bd_k_range);
BD_KERNEL(bd_k_identity);
BD_KERNEL(bd_k_dropout);
BD_KERNEL(bd_k_constant);
BD_KERNEL(bd_k_cast);
BD_KERNEL(bd_k_gather);
BD_KERNEL(bd_k_shape);
BD_KERNEL(bd_k_unsqueeze);
BD_KERNEL(bd_k_squeeze);
BD_KERNEL(bd_k_slice);
BD_KERNEL(bd_k_constant_of_shape);
BD_KERNEL(bd_k_expand);
BD_KERNEL(bd_k_pad);
BD_KERNEL(bd_k_reduce_mean);

#endif
