/* Fine-tuning the codebooks (docs/method.md, "Fine-tuning"): the centroids of
 * a PQ layer, the scales and zero points of an int layer, are the
 * parameters; the codes stay. A centroid's gradient is the mean of the
 * gradients of the weights that point to it (the reference's CentroidSGD),
 * a scale's or zero point's the weight gradient projected on its direction
 * the same way (bd_qlayer_tuned_gradient); SGD with momentum, weight decay
 * (on centroids) and a step schedule updates them, and the layer's weight
 * is decoded again. Optionally biases and BatchNorm scales and shifts are
 * tuned too, by plain SGD.
 *
 * Layer-wise: right after a layer is quantized, its centroids are tuned so
 * the student's softmax output matches the teacher's, KL(teacher||student),
 * on unlabelled calibration images. Global: all quantized layers together,
 * by distillation or by cross-entropy with labels, BatchNorm frozen or in
 * train mode. The values are tuned in float32 and rounded to float16 at the
 * end, so the model in memory is the model a save writes.
 *
 * In a job of several ranks (dist.h) `batch` is the global batch: each rank
 * takes its share, the gradients are summed before every update (and
 * BatchNorm's batch statistics, in train mode, are the global batch's), so
 * every rank ends with the codebooks one process would have, up to the
 * order of summation. */
#ifndef BD_FINETUNE_H
#define BD_FINETUNE_H

#include <stdint.h>

#include "data.h"
#include "exec.h"
#include "graph.h"
#include "layers.h"
#include "options.h"
#include "progress.h"
#include "codec.h"

typedef enum bd_loss_kind { BD_LOSS_KL = 0, BD_LOSS_CE = 1 } bd_loss_kind;

typedef struct bd_finetune_options {
    int global;       /* the workspace's: all layers together (1) or one at a time (0) */
    int iters;        /* SGD steps (per layer, one at a time) */
    int batch;        /* images per step */
    float lr;
    float momentum;   /* negative: the default (0 is none) */
    float wd;         /* weight decay; negative: the default (0 is none) */
    int step_every;   /* multiply lr by gamma every step_every steps (0: never) */
    float gamma;
    int loss;         /* bd_loss_kind */
    int bn_train;     /* BatchNorm in train mode (running statistics updated) */
    int tune_bias;    /* also biases and BatchNorm scale/shift */
    uint64_t seed;    /* which images, in which order (the workspace's: 0 takes its seed) */
} bd_finetune_options;

/* The defaults, every field: the one place they come from (global, 200
 * steps of 64 images, lr 0.01, momentum 0.9, wd 1e-4, gamma 0.1, distilled,
 * BatchNorm frozen). */
void bd_finetune_options_init(bd_finetune_options *o);

/* The table every front-end reads (options.h): its keys are mode, iters,
 * batch, lr, momentum, wd, step, gamma, loss, bn, bias and seed; the
 * operation is the table with bd_finetune_options_init's defaults. */
extern const bd_opt bd_finetune_opts[];
extern const bd_opt_op bd_finetune_op;

/* Fills in the defaults of bd_finetune_options_init for fields that are
 * zero, or negative for momentum and wd (where zero is a choice): for
 * callers that set only some fields. */
void bd_finetune_defaults(bd_finetune_options *o);

typedef struct bd_finetune_report {
    double first_loss, last_loss; /* mean loss over the first and last tenth of the steps */
    int steps;
    double seconds;
    double images_per_second;
} bd_finetune_report;

/* Tunes the codebooks q[i] of layers[i] (i < n; every q[i].k > 0) of the
 * student, in place: the centroids change, the codes do not, and each
 * layer's student weight is decoded from the tuned codebook. teacher runs
 * the original model (for the distillation targets; unused with
 * BD_LOSS_CE). Images come from data (labels used with BD_LOSS_CE). On
 * failure or cancellation the caller restores what it saved: the student's
 * weights, biases and BatchNorm statistics may be half-tuned. */
bd_status bd_finetune(bd_graph *student, bd_exec *teacher, const bd_layer *layers, bd_qlayer *q,
                      int n, const bd_dataset *data, const bd_finetune_options *opt,
                      const bd_progress *progress, bd_finetune_report *report);

/* Where the SGD steps run: on the CPU (bd_finetune) or on a GPU
 * (device.h). The loop around them (batches in seeded epochs, the learning
 * rate schedule, progress, the report, and the fp16 rounding and decoding
 * at the end) is bd_finetune_with's, the same for both. */
typedef struct bd_tune_engine {
    void *ctx;
    /* One SGD step on batch x (labels: its labels, read with BD_LOSS_CE)
     * at learning rate lr; *loss gets the batch's loss. */
    bd_status (*step)(void *ctx, const bd_tensor *x, const int *labels, float lr, double *loss);
    /* After the last step, when the engine keeps tuned values of its own
     * (a GPU's copies of biases, BatchNorm parameters and statistics):
     * writes them into the student graph. NULL: nothing to write. */
    bd_status (*finish)(void *ctx);
    /* After the last step: the tuned float32 values of layer i
     * (bd_qlayer_tuned_count of them: a GPU engine tunes PQ layers only). */
    bd_status (*values)(void *ctx, int i, float *out);
    void (*free)(void *ctx);
} bd_tune_engine;

/* Sets up an engine for tuning layers[0..n) of student with q (options
 * with their defaults, batch clamped to the data); returns with eng->ctx
 * set, or fails having left nothing to free. */
typedef bd_status (*bd_tune_start_fn)(void *arg, bd_graph *student, const bd_layer *layers,
                                      const bd_qlayer *q, int n, const bd_finetune_options *opt,
                                      bd_tune_engine *eng);

/* bd_finetune with the steps on the engine that start sets up. */
bd_status bd_finetune_with(bd_tune_start_fn start, void *arg, bd_graph *student,
                           const bd_layer *layers, bd_qlayer *q, int n, const bd_dataset *data,
                           const bd_finetune_options *opt, const bd_progress *progress,
                           bd_finetune_report *report);

/* The value ids that tune_bias adds: every float initializer that is not a
 * layer weight and is read by a Conv/Gemm (bias) or a BatchNormalization
 * (scale, shift); *ids is malloc'ed. */
bd_status bd_finetune_extra_params(const bd_graph *g, const bd_layer *layers, int nlayers,
                                   int **ids, int *n);

#endif
