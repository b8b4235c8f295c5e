/* Helpers shared by the CPU kernels: argument checks that name the node,
 * reading small int lists from inputs or attributes, the two data-movement
 * engines (broadcasting map, strided copy) that the elementwise and shape
 * kernels are built on, and a GEMM whose bits do not depend on the thread
 * count. */
#ifndef BD_KERNEL_UTIL_H
#define BD_KERNEL_UTIL_H

#include "ops.h"

/* Loops over fewer elements than this stay serial: starting the thread team
 * costs more than the work. */
enum { BD_PARALLEL_MIN = 1 << 15 };

/* x[0], x[stride], ... x[(n-1) stride] summed in double, in an order fixed
 * by n and stride alone: ReduceMean's sum, and the fused LayerNorm's
 * (fused.h), which must give its bits. */
double bd_k_sum(const float *x, int64_t n, int64_t stride);

/* C = alpha A B + beta C (row-major, no transposes) with C's columns in
 * fixed panels, one single-threaded GEMM each. OpenBLAS's own threads
 * split a GEMM by their count, and its result then differs in the last
 * bits from one count to another; a fit built on this one gives the same
 * bits on any thread count, in one process as on every rank of a job. */
void bd_sgemm_panels(int m, int n, int k, float alpha, const float *a, int lda, const float *b,
                     int ldb, float beta, float *c, int ldc);

/* Prefixes the node's label to the message of a failing st from a lower
 * layer (tensor allocation, views, casts); returns st. */
bd_status bd_k_in_node(const bd_node *n, bd_status st);

/* Optional input i, or NULL when the node omits it or has fewer inputs. */
const bd_tensor *bd_k_opt(const bd_node *n, bd_tensor *const *in, int i);

/* Fails unless t is float32; what names the input ("input X"). */
bd_status bd_k_want_f32(const bd_node *n, const bd_tensor *t, const char *what);

/* Normalises axis (negative counts from the back) into [0, rank). */
bd_status bd_k_axis(const bd_node *n, int64_t axis, int rank, int *out);

/* Normalises count axes in place against rank and fails on duplicates. */
bd_status bd_k_axes(const bd_node *n, int64_t *axes, int count, int rank);

/* Allocates an output; zero selects bd_tensor_new over bd_tensor_new_raw.
 * Failures carry the node's label. */
bd_status bd_k_output(const bd_node *n, bd_tensor **out, bd_dtype dtype, int ndim,
                      const int64_t *dims, int zero);

/* A zero-copy output sharing src's storage. */
bd_status bd_k_view(const bd_node *n, bd_tensor **out, const bd_tensor *src, int ndim,
                    const int64_t *dims);

/* Reads an int list that ONNX moved from an attribute to an input at some
 * opset: from the 1-D integer tensor t when from_input, else from attribute
 * `name`. *count is -1 when the list is absent (t NULL or no attribute). */
bd_status bd_k_int_list(const bd_node *n, int from_input, const bd_tensor *t, const char *name,
                        int64_t *vals, int cap, int *count);

/* Clip's bounds (attributes before opset 11, optional scalar inputs
 * since; -inf and inf where absent). in[1] and in[2] are read only. */
bd_status bd_k_clip_bounds(const bd_graph *g, const bd_node *n, bd_tensor *const *in, float *lo,
                           float *hi);

/* HardSigmoid's alpha and beta (0.2 and 0.5 where absent). */
void bd_k_hard_sigmoid_params(const bd_node *n, float *alpha, float *beta);

/* Which dims of in[0] a Reduce* node n reduces (axes from the attribute
 * before opset 18, the optional input since; all of them when absent),
 * or *none: the node passes its input through (noop_with_empty_axes). */
bd_status bd_k_reduce_axes(const bd_graph *g, const bd_node *n, bd_tensor *const *in,
                           int *reduced, int *none);

/* Pad node n's padding of a tensor of the given rank: before and after
 * each dim. */
bd_status bd_k_pad_amounts(const bd_graph *g, const bd_node *n, bd_tensor *const *in, int rank,
                           int64_t *begin, int64_t *end);
/* Pad node n's padding value for data x, as one element of its type (8
 * bytes of room). */
bd_status bd_k_pad_value(const bd_graph *g, const bd_node *n, bd_tensor *const *in,
                         const bd_tensor *x, unsigned char *value);

/* Pad node n on in[0]: the output dims, the padding before each dim, and
 * map[d][o], the input index that output index o along dim d reads (-1:
 * the constant), in one block *maps that the caller frees (NULL when the
 * output is empty or the rank 0, which pads nothing). */
bd_status bd_k_pad_maps(const bd_graph *g, const bd_node *n, bd_tensor *const *in, int64_t *dims,
                        int64_t *begin, int64_t **map, int64_t **maps);

/* Slice node n on in[0]: the output dims, and where output element
 * (i0, i1, ...) lies in the input, offset + sum(ik * strides[k]). */
bd_status bd_k_slice_layout(const bd_graph *g, const bd_node *n, bd_tensor *const *in,
                            int64_t *dims, int64_t *strides, int64_t *offset);

/* The numpy broadcast of two shapes; fails naming both shapes. */
bd_status bd_k_broadcast_shape(const bd_node *n, int na, const int64_t *a, int nb,
                               const int64_t *b, int *nout, int64_t *out);

/* Element strides of t read as a tensor of rank ndim that t broadcasts to
 * (t's shape right-aligned; stride 0 where t has size 1 or no dim). */
void bd_k_broadcast_strides(const bd_tensor *t, int ndim, int64_t *strides);

/* Contiguous element strides of a shape. */
void bd_k_strides(int ndim, const int64_t *dims, int64_t *strides);

/* One contiguous run of a broadcast map: count output elements at out, input
 * k at in[k], which advances by step[k] elements (1) or stays put (0). */
typedef void (*bd_k_run)(const void *ctx, void *out, const void *const *in, const int *step,
                         int64_t count);

/* Fills out from nin (1 or 2) inputs that broadcast to out's shape, calling
 * run on the longest runs the layouts allow: one run per chunk when shapes
 * match, a fixed operand for a scalar, a fixed operand per plane for a
 * per-channel [1, C, 1, 1] operand. Large outputs run in parallel. */
void bd_k_broadcast_map(bd_tensor *out, int nin, const bd_tensor *const *in, bd_k_run run,
                        const void *ctx);

/* Fills out (any dtype) with out[i0, i1, ...] = src[offset + sum(ik * strides[k])]:
 * strides in elements, negative or zero allowed. Transpose, Slice, Expand
 * and ConstantOfShape are all this copy. */
/* Element offset of flat index i of dims[0..nd-1] laid out with strides:
 * with nd one less than a layout's rank, the start of row i. */
int64_t bd_k_offset_of(int64_t i, int nd, const int64_t *dims, const int64_t *strides);

void bd_k_strided_copy(bd_tensor *out, const void *src, int64_t offset, const int64_t *strides);

#endif
