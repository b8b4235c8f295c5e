/* Training-time kernels: the forward pass in training mode where it
 * differs from inference (BatchNormalization on batch statistics; MaxPool's
 * backward finds its maxima again in the input), the backward pass of
 * every op the example models and torchvision's ResNet-18/50 and
 * MobileNetV2 use, and the losses. The trainer (train.h) strings them together.
 *
 * Backward kernels follow the forward ones (ops.h): they never write their
 * inputs, allocate what they return, and name the node in their messages.
 * Where a gradient is dout[0] itself, reshaped, it is a view sharing
 * dout[0]'s storage (Add, the reshapes); one backward returns at most one
 * such view, so once dout[0] is freed the caller may add into it in place.
 * Conv and Gemm go through im2col + GEMM like the forward; a stride-1
 * conv's input gradient, itself a conv, through the forward's kernels. */
#ifndef BD_GRAD_H
#define BD_GRAD_H

#include "graph.h"
#include "tensor.h"

typedef struct bd_grad_ctx {
    /* BatchNormalization normalises with the batch's statistics (and its
     * backward goes through them); otherwise with the running ones, frozen. */
    int bn_train;
    /* With bn_train, the statistics (and the backward's sums through them)
     * are over the global batch, every rank's share of it (dist.h). */
    int bn_sync;
} bd_grad_ctx;

/* What a node's training forward keeps for its backward. For a
 * BatchNormalization in train mode: t[0] the batch mean [C] and t[1] the
 * batch variance [C] (biased, as used to normalise), which the trainer
 * also folds into the running statistics. */
enum { BD_SAVED_MAX = 4 };
typedef struct bd_saved {
    bd_tensor *t[BD_SAVED_MAX];
    int64_t count; /* BatchNorm in train mode: the values per channel t[] are over */
} bd_saved;

void bd_saved_free(bd_saved *s);

/* 1 if the op has a backward kernel. */
int bd_grad_supported(const char *op);

/* The training forward of node n: outputs as the inference kernel would
 * give them (or with batch statistics, for BatchNormalization under
 * ctx->bn_train), plus what the backward needs in *saved (overwritten;
 * free it with bd_saved_free). Any op runs; a NULL ctx means frozen
 * statistics, here and in the backward. */
bd_status bd_grad_forward(const bd_graph *g, const bd_node *n, bd_tensor *const *in,
                          bd_tensor **out, bd_saved *saved, const bd_grad_ctx *ctx);

/* The backward of node n: given its forward inputs, outputs and saved
 * state, and dout[j], the gradient of the loss with respect to output j
 * (NULL: zero), sets din[i] to the gradient with respect to input i for
 * every i with want[i] (the others stay NULL). Gradients of broadcast
 * inputs are reduced to the input's shape. */
bd_status bd_grad_backward(const bd_graph *g, const bd_node *n, bd_tensor *const *in,
                           bd_tensor *const *out, const bd_saved *saved, bd_tensor *const *dout,
                           const unsigned char *want, bd_tensor **din, const bd_grad_ctx *ctx);

/* Losses on logits [N, C], averaged over the batch; *dlogits gets the
 * gradient with respect to the logits (a NULL dlogits: the loss only).
 * KL(teacher || student) on softmax outputs, as the paper distils:
 *   sum_n sum_c p_t log(p_t / p_s) / N,  gradient (p_s - p_t) / N. */
bd_status bd_loss_kl(const bd_tensor *student, const bd_tensor *teacher, double *loss,
                     bd_tensor **dlogits);
/* Cross-entropy with labels: -sum_n log p_s[label_n] / N. */
bd_status bd_loss_ce(const bd_tensor *logits, const int *labels, double *loss,
                     bd_tensor **dlogits);
/* Cross-entropy against labels smoothed by s in [0, 1): the target is
 * (1 - s) one-hot + s / classes. s = 0 is bd_loss_ce. */
bd_status bd_loss_ce_smooth(const bd_tensor *logits, const int *labels, double s, double *loss,
                            bd_tensor **dlogits);
/* Fails unless labels[0..n) are all classes of c (what bd_loss_ce checks
 * first; the GPU's loss checks the same). */
bd_status bd_loss_check_labels(const int *labels, int64_t n, int64_t c);

#endif
