/* The CPU kernels behind grad.c's table, one file per family of ops
 * (src/cpu/grad_<family>.c), and the helpers they share.
 *
 * grad.c has already checked what every backward kernel relies on: the
 * wanted inputs are present, float32 and differentiable, dy is float32 and
 * shaped like output 0 (a NULL dout never reaches a kernel: every backward
 * is linear in dy, so grad.c answers it with zeros), at least one input is
 * wanted, and din is all NULL. */
#ifndef BD_CPU_GRAD_KERNELS_H
#define BD_CPU_GRAD_KERNELS_H

#include "grad.h"
#include "kernel_util.h"

typedef struct bd_grad_args {
    const bd_graph *g;
    const bd_node *n;
    bd_tensor *const *in;  /* the forward's inputs */
    bd_tensor *const *out; /* and outputs */
    const bd_saved *saved;
    const bd_tensor *dy; /* gradient of output 0 */
    const unsigned char *want;
    const bd_grad_ctx *ctx;
} bd_grad_args;

/* Sets din[i] for every i with a->want[i]. */
typedef bd_status (*bd_grad_fn)(const bd_grad_args *a, bd_tensor **din);
#define BD_GRAD(fn) bd_status fn(const bd_grad_args *a, bd_tensor **din)

/* A training forward that differs from the inference kernel. */
typedef bd_status (*bd_grad_forward_fn)(const bd_graph *g, const bd_node *n,
                                        bd_tensor *const *in, bd_tensor **out, bd_saved *saved,
                                        const bd_grad_ctx *ctx);

bd_status bd_gf_batchnorm(const bd_graph *g, const bd_node *n, bd_tensor *const *in,
                          bd_tensor **out, bd_saved *saved, const bd_grad_ctx *ctx);

BD_GRAD(bd_g_conv);
BD_GRAD(bd_g_gemm);
BD_GRAD(bd_g_matmul);
BD_GRAD(bd_g_add);
BD_GRAD(bd_g_sub);
BD_GRAD(bd_g_mul);
BD_GRAD(bd_g_div);
BD_GRAD(bd_g_pow); /* the base only */
BD_GRAD(bd_g_relu);
BD_GRAD(bd_g_leaky_relu);
BD_GRAD(bd_g_clip);
BD_GRAD(bd_g_sigmoid);
BD_GRAD(bd_g_hard_sigmoid);
BD_GRAD(bd_g_hard_swish);
BD_GRAD(bd_g_tanh);
BD_GRAD(bd_g_exp);
BD_GRAD(bd_g_sqrt);
BD_GRAD(bd_g_neg);
BD_GRAD(bd_g_erf);
BD_GRAD(bd_g_reduce_mean);
BD_GRAD(bd_g_batchnorm);
BD_GRAD(bd_g_softmax);
BD_GRAD(bd_g_log_softmax);
BD_GRAD(bd_g_maxpool);
BD_GRAD(bd_g_averagepool);
BD_GRAD(bd_g_global_averagepool);
BD_GRAD(bd_g_global_maxpool);
/* Reshape, Flatten, Squeeze, Unsqueeze, Identity, Dropout, Round (straight through) */
BD_GRAD(bd_g_reshape);
BD_GRAD(bd_g_transpose);
BD_GRAD(bd_g_concat);
BD_GRAD(bd_g_pad);
BD_GRAD(bd_g_slice);

/* Softmax (or LogSoftmax) node n on x works on rows of len elements,
 * inner apart, outer * inner of them: the layout of the opset >= 13
 * per-axis form, and of the older one, which coerces the input to 2-D at
 * the axis (inner is then 1). Only x's shape is read. */
bd_status bd_softmax_rows(const bd_graph *g, const bd_node *n, const bd_tensor *x,
                          int64_t *outer, int64_t *len, int64_t *inner);

/* dst = scale * src summed over the dims that shape (ndim, dims) is
 * broadcast along to reach src's shape (numpy rules: dims right-aligned,
 * a size-1 or absent dim is broadcast): the gradient of a broadcast
 * operand. dst has the shape's element count. */
void bd_grad_sum_into(const bd_tensor *src, int ndim, const int64_t *dims, float scale,
                      float *dst);

/* The same into a new tensor shaped like `like`; a view of src where
 * nothing is summed or scaled. */
bd_status bd_grad_sum_to(const bd_node *n, const bd_tensor *src, const bd_tensor *like,
                         float scale, bd_tensor **out);

#endif
