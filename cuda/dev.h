/* The CUDA backend's insides, shared by its C files (the device, the
 * executor and trainer, EM, fine-tuning), its .cu files (the kernels and
 * every CUDA and cuBLAS call) and tests/test_cuda.c. No CUDA header here:
 * GPU memory is plain pointers the host never dereferences.
 *
 * Conventions: every bd_cu_* call returns a bd_status, CUDA's or cuBLAS's
 * reason in the message; kernels run on the default stream in the order
 * they are called, and a copy to the host waits for them. Shapes are
 * int64_t; a dimension that does not fit what a library call takes (cuBLAS
 * takes int) is refused with a message rather than cut. */
#ifndef BD_CUDA_DEV_H
#define BD_CUDA_DEV_H

#include <stddef.h>
#include <stdint.h>

/* The core's headers are C: C linkage for what they declare. */
#ifdef __cplusplus
extern "C" {
#endif

#include "cpu/conv.h"
#include "cpu/pool.h"
#include "status.h"
#include "tensor.h"

/* ---- memory.cu: the runtime, memory and copies ----------------------------- */

/* GPUs the runtime sees; fails with CUDA's reason when it cannot say (no
 * driver, a driver older than the runtime). */
bd_status bd_cu_device_count(int *count);
/* Makes GPU `ordinal` the calling thread's. */
bd_status bd_cu_set_device(int ordinal);
/* Name, memory and compute capability of GPU `ordinal`. */
bd_status bd_cu_device_props(int ordinal, char *name, size_t cap, size_t *bytes, int *major,
                             int *minor);
/* Runs one kernel of this build and waits: fails when the GPU can run
 * neither the build's sm_90 code nor its PTX. */
bd_status bd_cu_probe(void);
bd_status bd_cu_malloc(void **p, size_t bytes);
void bd_cu_free(void *p);
bd_status bd_cu_upload(void *dst, const void *src, size_t bytes);
bd_status bd_cu_download(void *dst, const void *src, size_t bytes);
bd_status bd_cu_copy(void *dst, const void *src, size_t bytes); /* device to device */
bd_status bd_cu_zero(void *p, size_t bytes);

/* ---- blas.cu: cuBLAS, row-major like cblas --------------------------------- */

typedef struct bd_cu_blas bd_cu_blas;

bd_status bd_cu_blas_new(bd_cu_blas **out);
void bd_cu_blas_free(bd_cu_blas *h);
/* As cblas_sgemm(CblasRowMajor, ...): C[m][n] = alpha op(A) op(B) + beta C,
 * count times, the i-th product on A + i*stride_a, B + i*stride_b and
 * C + i*stride_c (a stride of 0 reads the same matrix every time; C's must
 * not be 0 when count > 1). ta, tb: 1 for the transpose. */
bd_status bd_cu_gemm(bd_cu_blas *h, int ta, int tb, int64_t m, int64_t n, int64_t k, float alpha,
                     const float *a, int64_t lda, int64_t stride_a, const float *b, int64_t ldb,
                     int64_t stride_b, float beta, float *c, int64_t ldc, int64_t stride_c,
                     int64_t count);
/* acc (d x d, row-major, both triangles) = the sum over blocks b < m of
 * B_b B_b^T, B_b the rows [b d, b d + d) of cols [m d][ncols]: the Gram
 * matrix of a layer's input blocks. parts holds max_parts d x d products
 * and ones max_parts ones (scratch the caller keeps across calls). */
bd_status bd_cu_gram_blocks(bd_cu_blas *h, const float *cols, int64_t d, int64_t m,
                            int64_t ncols, float *parts, const float *ones, int64_t max_parts,
                            float *acc);

/* ---- im2col.cu: convolution's data movement --------------------------------- */

/* The im2col matrix of group gi's channels of the images of x (the whole
 * [N][C][H][W] input): image i of the result is x's image images[i], or
 * img0 + i when images is NULL. Element (i, r, p), with r the row (channel
 * within the group, ki, kj) and p the output pixel, goes to
 * cols[i * image_stride + r * row_stride + p]; taps in the padding are 0.
 * [i][K][OH*OW] is image_stride K*OH*OW, row_stride OH*OW; one matrix of
 * all the images' columns [K][n*OH*OW] is image_stride OH*OW, row_stride
 * n*OH*OW. images is in GPU memory. */
bd_status bd_cu_im2col(const bd_conv_geom *g, const float *x, int64_t gi, const int32_t *images,
                       int64_t img0, int64_t nimages, float *cols, int64_t image_stride,
                       int64_t row_stride);
/* Its adjoint: group gi's channels of dx for images img0 .. img0+nimages-1
 * (each written, not added to) from cols laid out [i][K][OH*OW]. */
bd_status bd_cu_col2im(const bd_conv_geom *g, const float *cols, int64_t gi, int64_t img0,
                       int64_t nimages, float *dx);
/* Depthwise convolution (one input and one output channel per group):
 * y = conv(x, w), and the backward's dx and dw (each written). */
bd_status bd_cu_depthwise(const bd_conv_geom *g, const float *x, const float *w, float *y);
bd_status bd_cu_depthwise_dx(const bd_conv_geom *g, const float *w, const float *dy, float *dx);
bd_status bd_cu_depthwise_dw(const bd_conv_geom *g, const float *x, const float *dy, float *dw);

/* ---- pq.cu: EM's steps and the codebook's layout ---------------------------- */

/* cgc[c] = sum_t centroids[c][t] cg[c][t], summed in float in t's order (as
 * the CPU's E-step). */
bd_status bd_cu_center_terms(const float *centroids, const float *cg, int k, int d, float *cgc);
/* assign[i] = argmin_c scores[i][c] + cgc[c], the lowest c on ties. */
bd_status bd_cu_argmin(const float *scores, const float *cgc, int64_t rows, int k,
                       int32_t *assign);
/* sums[k][d] (double) and counts[k] of sub[n][d] by assign, zeroed first
 * (atomic adds: the order of a double sum may vary, its float mean not
 * beyond a last-bit difference). */
bd_status bd_cu_cluster_sums(const float *sub, const int32_t *assign, int64_t n, int d, int k,
                             double *sums, unsigned long long *counts);
/* out[c][t] = sums[c][t] / counts[c] in float, 0 where counts[c] is 0. */
bd_status bd_cu_cluster_means(const double *sums, const unsigned long long *counts, int k, int d,
                              float *out);
/* bd_pq_gather and the decoding bd_qlayer_decode does, on the GPU: sub[n][d]
 * from a weight as stored ([rows][row_len], or [row_len][rows] when
 * transposed), and a weight as stored from codes[rows * row_len / d] and
 * centroids[k][d]. */
bd_status bd_cu_pq_gather(const float *w, int64_t rows, int64_t row_len, int transposed,
                          float *sub);
bd_status bd_cu_pq_decode(const float *centroids, const int32_t *codes, int64_t rows,
                          int64_t row_len, int64_t d, int transposed, float *w);

/* ---- elementwise.cu ----------------------------------------------------------- */

/* A shape and the element strides an operand is read with along it (0
 * where the operand is broadcast). */
typedef struct bd_cu_strided {
    int ndim;
    int64_t dims[BD_MAX_DIMS];
    int64_t strides[BD_MAX_DIMS];
} bd_cu_strided;

/* out (shape a->dims, contiguous) = a + b, each read with its strides
 * (a->dims and b->dims must be equal: the broadcast shape). out may be
 * either operand when that one is read with contiguous strides. */
bd_status bd_cu_add(const bd_cu_strided *a, const float *x, const bd_cu_strided *b, const float *y,
                    float *out);
/* out (shape s->dims, contiguous) = scale * src read with s's strides. */
bd_status bd_cu_broadcast(const bd_cu_strided *s, const float *src, float scale, float *out);
/* dst = scale * src summed over the dims along which dst's shape (rank dn,
 * right-aligned against src's) has size 1 or no dim: the gradient of a
 * broadcast operand (bd_grad_sum_into). Sums in double. */
bd_status bd_cu_sum_to(int sn, const int64_t *sdims, const float *src, int dn,
                       const int64_t *ddims, float scale, float *dst);
bd_status bd_cu_relu(const float *x, int64_t n, float *y);
/* dx = y > 0 ? dy : 0 */
bd_status bd_cu_relu_backward(const float *y, const float *dy, int64_t n, float *dx);
/* y = min(max(x, lo), hi), NaN passing through, as the CPU's Clip. */
bd_status bd_cu_clip(const float *x, int64_t n, float lo, float hi, float *y);
/* dx = x == y ? dy : 0 (the gradient passes where x was not clipped) */
bd_status bd_cu_clip_backward(const float *x, const float *y, const float *dy, int64_t n,
                              float *dx);
/* y += a x */
bd_status bd_cu_axpy(int64_t n, float a, const float *x, float *y);
/* x = (float)(x w), the product in double (as bd_dist_share_loss). */
bd_status bd_cu_scale(float *x, int64_t n, double w);
/* SGD with momentum and weight decay, as finetune.c's:
 * v = momentum v + (g + wd p); p -= lr v. */
bd_status bd_cu_sgd(float *p, float *v, const float *g, int64_t n, float lr, float momentum,
                    float wd);

/* ---- training.cu: training's own steps (training.c on the GPU) ------------------ */

/* bd_training_sgd: g = grad + wd p; v = m v + g; p -= lr (nesterov ? g + m v : v),
 * each product rounded before its sum as on the CPU. */
bd_status bd_cu_training_sgd(float *p, float *v, const float *grad, int64_t n, float lr,
                             float m, float wd, int nesterov);
/* hit[i] = 1 if row i of logits [n][c] has its first maximum at labels[i]. */
bd_status bd_cu_hits(const float *logits, const int32_t *labels, int64_t n, int64_t c,
                     int32_t *hit);
/* Quant-Noise on a weight as stored (rows x row_len in pq.h's layout, blocks
 * of d along a row, mask[b] = 1 for a hit block b):
 *   drop:     hit blocks 0, kept ones times keep (block drop);
 *   keep:     kept blocks times keep (block drop's gradient);
 *   centroid: hit block b becomes centroids[assign[b]] (k x d);
 *   int:      hit weights fake-quantized on the grid of their row
 *             (scales, zeros per row, or one for all when nscales is 1;
 *             zeros NULL: zero point zero0), levels codes, as bd_int_round. */
typedef struct bd_cu_blocks {
    int64_t rows, row_len, d;
    int transposed;
} bd_cu_blocks;
bd_status bd_cu_noise_drop(const bd_cu_blocks *b, const uint8_t *mask, float keep, float *w);
bd_status bd_cu_noise_keep(const bd_cu_blocks *b, const uint8_t *mask, float keep, float *grad);
bd_status bd_cu_noise_centroid(const bd_cu_blocks *b, const uint8_t *mask,
                               const float *centroids, const int32_t *assign, float *w);
bd_status bd_cu_noise_int(const bd_cu_blocks *b, const uint8_t *mask, const float *scales,
                          const float *zeros, int64_t nscales, float zero0, int levels, float *w);

/* ---- pool.cu ------------------------------------------------------------------ */

typedef enum bd_cu_pool_kind {
    BD_CU_POOL_MAX,
    BD_CU_POOL_AVG,     /* divides by the taps inside the input */
    BD_CU_POOL_AVG_PAD  /* count_include_pad: by the taps inside the padded input */
} bd_cu_pool_kind;

/* A windowed pool over planes = N*C planes laid out as pg says. MaxPool of a
 * window with no tap inside is -FLT_MAX, AveragePool's 0, as on the CPU. */
bd_status bd_cu_pool(const bd_pool_geom *pg, int64_t planes, bd_cu_pool_kind kind, const float *x,
                     float *y);
/* Its backward: dx written (zeroed, then each window's gradient added:
 * MaxPool's to the window's first maximum in scan order, AveragePool's
 * spread over the taps it counted). */
bd_status bd_cu_pool_backward(const bd_pool_geom *pg, int64_t planes, bd_cu_pool_kind kind,
                              const float *x, const float *dy, float *dx);
/* GlobalAveragePool of planes of size values (summed in double), and its
 * backward. */
bd_status bd_cu_global_avg(int64_t planes, int64_t size, const float *x, float *y);
bd_status bd_cu_global_avg_backward(int64_t planes, int64_t size, const float *dy, float *dx);

/* ---- norm.cu: BatchNormalization over x read as [n][c][s] ---------------------- */

/* ab[c] = scale / sqrtf(var + eps), ab[c + C] = bias - mean ab[c]: the
 * frozen (inference) form, in float as the CPU's kernel. */
bd_status bd_cu_bn_frozen(int64_t c, const float *scale, const float *bias, const float *mean,
                          const float *var, float eps, float *ab);
/* The batch's statistics as the CPU's training forward takes them
 * (grad_norm.c: two passes in double, whose sums a job's ranks add up in
 * between). bd_cu_bn_sums: out[ch] the sum of channel ch's values, or with
 * center (a first call's out) the sum of their squared deviations from
 * center[ch] / center[c]; out[c] the count of values summed, so a sum of
 * outs over ranks holds the global count. bd_cu_bn_stats: from the two,
 * mean[c], var[c] (biased) and the same ab. */
bd_status bd_cu_bn_sums(const float *x, int64_t n, int64_t c, int64_t s, const double *center,
                        double *out);
bd_status bd_cu_bn_stats(const double *sums, const double *squares, int64_t c,
                         const float *scale, const float *bias, double eps, float *mean,
                         float *var, float *ab);
/* y = x ab[c] + ab[c + C] */
bd_status bd_cu_bn_apply(const float *x, int64_t n, int64_t c, int64_t s, const float *ab,
                         float *y);
/* The backward (grad_norm.c's formulas) in two steps. bd_cu_bn_grad_sums:
 * out[ch] = sum dy, out[c + ch] = sum dy (x - mean[ch]), out[2c] the
 * count. bd_cu_bn_backward: dscale and dbias from local (this rank's
 * sums), dx from global (the job's, or local again), each optional (NULL);
 * train: the statistics are the batch's (mean, var as saved), else the
 * running ones, frozen. */
bd_status bd_cu_bn_grad_sums(const float *x, const float *dy, int64_t n, int64_t c, int64_t s,
                             const float *mean, double *out);
bd_status bd_cu_bn_backward(const float *x, const float *dy, int64_t n, int64_t c, int64_t s,
                            const float *scale, const float *mean, const float *var, double eps,
                            int train, const double *local, const double *global, float *dx,
                            float *dscale, float *dbias);
/* Folds a batch's statistics into the running ones (PyTorch's rule, as the
 * CPU trainer): rm = (1 - m) rm + m mean; rv = (1 - m) rv + m var unbias,
 * unbias = count / (count - 1) (1 for a count of 1) from the count of
 * values the statistics are over (*count, in GPU memory: a sum's). */
bd_status bd_cu_bn_running(float *rm, float *rv, const float *mean, const float *var, int64_t c,
                           float momentum, const double *count);

/* ---- nccl.cu: sums across the ranks of a job (dist.c calls them) ---------------- */

/* Bytes of NCCL's communicator id (ncclUniqueId). */
enum { BD_CU_NCCL_ID = 128 };

/* Whether this build has NCCL; without it the others fail saying so. */
int bd_cu_nccl_built(void);
/* A new communicator id (on one rank; every rank inits with it). */
bd_status bd_cu_nccl_id(unsigned char *id);
/* The process's communicator, of size ranks, on the current GPU. */
bd_status bd_cu_nccl_init(const unsigned char *id, int size, int rank);
/* In-place sums over the ranks: count float arrays v[i] of n[i] values
 * (one group), or one double array. */
bd_status bd_cu_nccl_sum_f32(float *const *v, const int64_t *n, int count);
bd_status bd_cu_nccl_sum_f64(double *v, int64_t n);

/* ---- softmax.cu: Softmax, LogSoftmax and the losses ---------------------------- */

/* Over rows of len values, inner apart, outer * inner rows (bd_softmax_rows). */
bd_status bd_cu_softmax(const float *x, int64_t outer, int64_t len, int64_t inner, int log_form,
                        float *y);
bd_status bd_cu_softmax_backward(const float *y, const float *dy, int64_t outer, int64_t len,
                                 int64_t inner, int log_form, float *dx);
/* Per-sample losses on logits [n][c] into rows[n] (double) and the
 * gradient (already divided by n) into dlogits, as loss.c: KL(teacher ||
 * student) on softmax outputs, and cross-entropy with labels (in GPU
 * memory, checked by the caller) smoothed as bd_loss_ce_smooth's. */
bd_status bd_cu_loss_kl(const float *student, const float *teacher, int64_t n, int64_t c,
                        double *rows, float *dlogits);
bd_status bd_cu_loss_ce(const float *logits, const int32_t *labels, int64_t n, int64_t c,
                        double smoothing, double *rows, float *dlogits);

#ifdef __cplusplus
}
#endif

/* ---- the host side (C only) --------------------------------------------------- */
#ifndef __cplusplus

#include "device.h"
#include "graph.h"
#include "train.h"
#include "training.h"

/* A freed block kept for reuse: cudaFree waits for the whole GPU, and a
 * training step frees and allocates the same sizes again and again. */
typedef struct bd_dblock {
    void *ptr;
    size_t bytes;
} bd_dblock;

struct bd_device {
    int ordinal;
    char desc[192];
    bd_cu_blas *blas;
    bd_dblock *cache;
    int ncache, cache_cap;
};

/* device.h's entry points as the backend implements them. The core's
 * functions of device.h's names forward to these through the plugin's
 * table (cuda/plugin.c); their own names keep the two apart in a program
 * that links both, as tests/test_cuda.c does. */
bd_status bd_cuda_device_open(const char *name, bd_device **out);
void bd_cuda_device_close(bd_device *dev);
const char *bd_cuda_device_describe(const bd_device *dev);
bd_status bd_cuda_dexec_new(bd_device *dev, const bd_graph *g, bd_dexec **out);
void bd_cuda_dexec_free(bd_dexec *dx);
bd_status bd_cuda_dexec_sync(bd_dexec *dx);
bd_status bd_cuda_dexec_run1(bd_dexec *dx, const bd_tensor *x, bd_tensor **y);
bd_status bd_cuda_dexec_until(bd_dexec *dx, const bd_tensor *x, int node);
bd_status bd_cuda_dexec_gram(bd_dexec *dx, int node, const int64_t *images, int nimages,
                             bd_gram *gram);
bd_status bd_cuda_dexec_fetch(bd_dexec *dx, int value, const int64_t *images, int nimages,
                              bd_tensor **out);
bd_status bd_cuda_device_pq_fit(bd_device *dev, const float *sub, int64_t n, const bd_gram *gr,
                                const bd_pq_options *opt, const bd_progress *progress,
                                bd_pq_result *res);
bd_status bd_cuda_device_finetune(bd_device *dev, bd_graph *student, bd_dexec *teacher,
                                  const bd_layer *layers, bd_qlayer *q, int n,
                                  const bd_dataset *data, const bd_finetune_options *opt,
                                  const bd_progress *progress, bd_finetune_report *report);
bd_status bd_cuda_device_training_start(void *arg, const bd_training_state *st,
                                        bd_training_engine *eng);

/* Makes the device the calling thread's (every public entry point first). */
bd_status bd_dev_enter(bd_device *dev);
/* GPU memory from the cache (a freed block of the same rounded size) or
 * the runtime; on running out, the cache is given back and the
 * allocation tried again. */
bd_status bd_dev_alloc(bd_device *dev, size_t bytes, void **p);
void bd_dev_release(bd_device *dev, void *p, size_t bytes);

/* A reference-counted block of GPU memory. */
typedef struct bd_dbuf {
    int refs;
    size_t bytes;
    void *ptr;
    bd_device *dev;
} bd_dbuf;

/* A float32 tensor in GPU memory; views share a buffer. */
typedef struct bd_dt {
    int ndim;
    int64_t dims[BD_MAX_DIMS];
    bd_dbuf *buf;
    float *data;
} bd_dt;

bd_status bd_dt_new(bd_device *dev, int ndim, const int64_t *dims, bd_dt **out);
bd_status bd_dt_zeros(bd_device *dev, int ndim, const int64_t *dims, bd_dt **out);
/* A new header over src's buffer with another shape of the same count. */
bd_status bd_dt_view(const bd_dt *src, int ndim, const int64_t *dims, bd_dt **out);
bd_status bd_dt_clone(const bd_dt *src, bd_dt **out);
/* A float32 host tensor to the GPU and back. */
bd_status bd_dt_upload(bd_device *dev, const bd_tensor *t, bd_dt **out);
bd_status bd_dt_download(const bd_dt *t, bd_tensor **out);
void bd_dt_free(bd_dt *t);
int64_t bd_dt_count(const bd_dt *t);
bd_device *bd_dt_device(const bd_dt *t);
/* A host header with t's shape and no data (h->data is NULL; st stands in
 * for its storage): what the CPU's shape code reads (conv and pool
 * geometry, reshapes, broadcasting), so the GPU's shapes are the CPU's. */
void bd_dt_header(const bd_dt *t, bd_tensor *h, bd_storage *st);

/* Device copies of a graph's float initializers (those nodes read). */
typedef struct bd_dparams {
    bd_device *dev;
    const bd_graph *g;
    bd_dt **dev_copy;    /* per value, or NULL */
    void **uploaded;     /* per value: a host copy of what was uploaded (with track) */
} bd_dparams;

/* Uploads them; with track, keeps what was uploaded for bd_dparams_sync. */
bd_status bd_dparams_init(bd_dparams *p, bd_device *dev, const bd_graph *g, int track);
/* Uploads again those whose host contents differ from what was uploaded. */
bd_status bd_dparams_sync(bd_dparams *p);
void bd_dparams_free(bd_dparams *p);

/* ---- ops.c: the ops on the GPU, forward and backward -------------------------- */

/* What an op of node n gets: in[k] the GPU tensor of input k (a computed
 * value or a float initializer's copy), NULL where omitted; integer inputs
 * (shapes, axes) and Clip's bounds are read from the graph's initializers. */
typedef struct bd_dop_args {
    bd_device *dev;
    const bd_graph *g;
    const bd_node *n;
    bd_dt *const *in;
    int bn_train;      /* BatchNormalization on the batch's statistics */
    float bn_momentum; /* with bn_train, above 0: the running statistics (inputs 3 and 4)
                          move toward the batch's by this momentum (train.h's) */
    int bn_sync;       /* with bn_train: the statistics over a job's ranks (dist.c) */
} bd_dop_args;

/* BatchNormalization in train mode keeps the batch mean and variance. */
enum { BD_DSAVED = 2 };

/* Fails with BD_EUNSUPPORTED, naming the node, unless the GPU has n's op
 * with what it needs from the host (constant shapes and bounds) and no
 * output it does not compute. */
bd_status bd_dop_check(const bd_graph *g, const bd_node *n);
/* 1 if the GPU has op's backward (every op it runs forward). */
int bd_dop_supported(const char *op);
/* Output 0 of node n into *out; saved (BD_DSAVED, set to NULL first) gets
 * what the backward needs beyond the inputs and the output. */
bd_status bd_dop_forward(const bd_dop_args *a, bd_dt **out, bd_dt **saved);
/* din[i] for every wanted input i (the rest stay NULL), from the forward's
 * output y, saved state and dy, the gradient of output 0. At most one din
 * is a view of dy. */
bd_status bd_dop_backward(const bd_dop_args *a, const bd_dt *y, bd_dt *const *saved,
                          const bd_dt *dy, const unsigned char *want, bd_dt **din);

/* ---- dist.c: the GPU engines in a job of ranks (docs/distributed.md) ------------ */

/* Whether the engines sum across ranks: the process joined a job (of one
 * rank too, bd_dist_joined) and this build has NCCL. Otherwise the job
 * has one rank (the core refuses more) and the functions below return at
 * once, their input unchanged. */
int bd_dev_ranks(void);
/* In-place sums over the ranks of a double array in GPU memory; the first
 * sum of the process makes its communicator (every rank must make the same
 * calls in the same order, as dist.h's collectives). */
bd_status bd_dev_sum_f64(double *v, int64_t n);
/* The gradients g[0..n) (NULL ones skipped; the same shapes on every
 * rank), summed in one group. */
bd_status bd_dev_sum_grads(bd_dt *const *g, int n);
/* bd_dist_share_loss on the GPU: dlogits ([local, ...]) and *loss scaled
 * by this rank's share of the global batch. */
bd_status bd_dev_share_loss(bd_dt *dlogits, double *loss, int64_t global);

/* ---- exec.c, train.c: graphs on the GPU ---------------------------------------- */

/* Forward of a batch already on the GPU; *y (new) gets the output. */
bd_status bd_dexec_forward(bd_dexec *dx, const bd_dt *x, bd_dt **y);

typedef struct bd_dtrain bd_dtrain;

/* train.h's trainer on the GPU, planned by bd_train_plan_new: the trained
 * parameters are the trainer's own GPU copies, changed in place by the
 * caller between steps (bd_dtrain_param). */
bd_status bd_dtrain_new(bd_device *dev, bd_graph *g, const int *params, int n,
                        const bd_train_options *opt, bd_dtrain **out);
void bd_dtrain_free(bd_dtrain *t);
/* Forward on a batch on the GPU; *logits is the trainer's (valid until the
 * backward or the next forward). BatchNorm's running statistics (train
 * mode) are updated in the trainer's copies. */
bd_status bd_dtrain_forward(bd_dtrain *t, const bd_dt *x, const bd_dt **logits);
/* Backward from dlogits; grads[i] (new) gets params[i]'s gradient. */
bd_status bd_dtrain_backward(bd_dtrain *t, const bd_dt *dlogits, bd_dt **grads);
/* The trainer's GPU copy of initializer v (NULL if it has none). */
bd_dt *bd_dtrain_param(bd_dtrain *t, int v);

#endif /* !__cplusplus */

#endif
