/* Training every float parameter of a model (docs/method.md, "Training"):
 * conv and linear weights, biases, BatchNorm scales and shifts (and the
 * running statistics, in train mode), from the loaded weights or from a
 * seeded re-initialisation; SGD with momentum (Nesterov optional), weight
 * decay on weights only (not on biases and BatchNorm, which decay would only
 * fight), a schedule, label smoothing, augmentation, the labels' loss or
 * distillation from a teacher, optionally with Quant-Noise
 * (quant_noise.h); an evaluation after every epoch and a checkpoint that
 * --resume continues bit-identically.
 *
 * Every random choice (the order of the images, augmentation, noise masks,
 * the re-initialisation) comes from a stream of (seed, epoch, step, ...),
 * so a run resumed from a checkpoint ends exactly where an uninterrupted
 * one does on the same thread count.
 *
 * In a job of several ranks (dist.h) each rank takes its share of every
 * global batch (`batch` is the global batch) and the gradients are summed
 * before every update, so every rank holds the same model, the one a single
 * process would train, up to the order of summation; each evaluates its
 * share of the evaluation images (eval.h); rank 0 alone writes the
 * checkpoint, which is the state of every rank and resumes a job of any
 * size. */
#ifndef BD_TRAINING_H
#define BD_TRAINING_H

#include <stdint.h>

#include "augment.h"
#include "data.h"
#include "exec.h"
#include "finetune.h"
#include "graph.h"
#include "options.h"
#include "plan.h"
#include "progress.h"
#include "quant_noise.h"

typedef enum bd_schedule {
    BD_SCHED_CONSTANT = 0,
    BD_SCHED_STEP,     /* lr * gamma^(epoch / step) */
    BD_SCHED_COSINE,   /* lr * (1 + cos(pi t / T)) / 2, per step */
    BD_SCHED_ONECYCLE  /* PyTorch's OneCycleLR: cosine warm-up from lr/div to lr
                          over `warmup` of the steps, then down to lr/(div*final),
                          momentum cycled between 0.85 and the set momentum
                          the other way */
} bd_schedule;

typedef struct bd_training_options {
    int epochs;            /* default 1 */
    int64_t steps;         /* steps per epoch (0: one pass over the data) */
    int batch;             /* default 128 */
    float lr;              /* default 0.1 */
    float momentum;        /* default 0.9 */
    int nesterov;
    float wd;              /* default 5e-4, on weights (ndim > 1) only */
    int schedule;          /* bd_schedule, default cosine */
    int step;              /* BD_SCHED_STEP: epochs between decays (default 30) */
    float gamma;           /* BD_SCHED_STEP: default 0.1 */
    float warmup;          /* BD_SCHED_ONECYCLE: share of the steps (default 0.25) */
    float div;             /* BD_SCHED_ONECYCLE: initial lr = lr / div (default 10) */
    float final_div;       /* BD_SCHED_ONECYCLE: final lr = lr / (div * final_div) (default 100) */
    float smoothing;       /* label smoothing, in [0, 1) */
    int loss;              /* bd_loss_kind: BD_LOSS_CE (default) or BD_LOSS_KL (from the teacher) */
    int bn;                /* 0: train mode (default), 1: frozen */
    float bn_momentum;     /* default 0.1 */
    int bn_local;          /* several ranks: BatchNorm's statistics per rank (default:
                              over the global batch, as one process has them) */
    bd_augment augment;    /* default: bd_augment_default of the data */
    int init;              /* 0: the loaded weights; 1: re-initialised (from scratch) */
    uint64_t seed;
    bd_noise_spec noise;   /* kind BD_NOISE_NONE: plain training */
    int eval_quantized;    /* also evaluate the noise's fully quantized model */
    int64_t eval_n;        /* evaluate the first N images only (0: all) */
} bd_training_options;

/* The table (options.h), and the operation every front-end reads: the
 * table with bd_training_options_init's defaults. */
extern const bd_opt bd_training_opts[];
extern const bd_opt_op bd_training_op;

/* Zero fields to their defaults (momentum, wd and smoothing keep an
 * explicit 0 only when given by bd_training_options_init's caller: start
 * from bd_training_options_init). */
void bd_training_options_init(bd_training_options *o);

/* One epoch, as the run reports it. */
typedef struct bd_training_epoch {
    int epoch;           /* 1-based */
    double loss;         /* mean training loss */
    double train_top1;   /* on the augmented (and noisy) training batches, % */
    double top1, top5;   /* float model on the evaluation data, %; < 0 when none */
    double quant_top1;   /* fully quantized model (eval_quantized), %; < 0 when not run */
    double lr;           /* at the epoch's last step */
    double seconds;
} bd_training_epoch;

typedef struct bd_training_report {
    int epochs;                 /* epochs in the run, with those resumed */
    int first;                  /* the first epoch this call ran (1-based) */
    bd_training_epoch *per_epoch; /* epochs entries (resumed ones from the checkpoint) */
    double images_per_second;
} bd_training_report;
void bd_training_report_free(bd_training_report *r);

/* Called after every epoch (after its evaluation and checkpoint), for
 * front-ends that draw curves. */
typedef void (*bd_epoch_fn)(void *user, const bd_training_epoch *e, int epochs);

/* A transform of the layer weights that every step and evaluation sees
 * (BitPruning's learned-bits quantizer, bitprune.h): apply writes the
 * transformed weights over the masters in g (step < 0: for an evaluation),
 * restore puts the masters back and, given the per-layer gradients of the
 * transformed weights (grads[l] for layer l of bd_layers_find, NULL where
 * none; grads NULL after an evaluation or a failure), turns them into the
 * masters' and updates the hook's own parameters at this learning rate.
 * acts (NULL: none), a transform of some nodes' inputs (exec.h: BitPruning's
 * activation quantizer), runs in every step's forward and backward, between
 * apply and restore, and in every evaluation. Runs on the CPU's engine
 * only.
 *
 * A hook whose own parameters a checkpoint must hold gives save and load
 * (else a run with it takes no checkpoint): save, after `done` epochs, the
 * bytes load takes back (malloc'ed, the caller frees them); load checks
 * them against the run (apply 0: nothing changes) or puts them back
 * (apply 1, after every check passed). */
typedef struct bd_training_hook {
    void *ctx;
    bd_status (*apply)(void *ctx, bd_graph *g, int64_t step);
    void (*restore)(void *ctx, bd_graph *g, bd_tensor *const *grads, int64_t step, float lr);
    const bd_input_transform *acts;
    bd_status (*save)(void *ctx, int done, void **data, size_t *len);
    bd_status (*load)(void *ctx, const void *data, size_t len, int apply);
} bd_training_hook;

typedef struct bd_training_io {
    const bd_dataset *train;   /* images with labels */
    const bd_dataset *eval;    /* may be NULL: no evaluation */
    const bd_preprocess *pp;   /* how train's images were preprocessed (augmentation's padding) */
    bd_exec *teacher;          /* BD_LOSS_KL's targets; may be NULL otherwise */
    const bd_layer_plan *plan; /* the noise's layout (NULL: the spec's regime) */
    /* Per layer of bd_layers_find(g) (NULL: none is quantized): a layer
     * whose q has k > 0 is quantized. A PQ layer trains its centroids
     * instead of its weight (finetune.h's centroid gradient: iterative PQ's
     * training between stages) and gets no noise; an int layer stays as it
     * is. On success the tuned centroids, rounded to fp16, are in q and the
     * weights decoded from them. */
    bd_qlayer *q;
    const bd_training_hook *hook; /* NULL: the weights as they are */
    const char *checkpoint;    /* written after every epoch (NULL: none; with a hook, only
                                * one that saves its own state) */
    int resume;                /* continue from checkpoint */
    const bd_progress *progress;
    bd_epoch_fn on_epoch;
    void *user;
} bd_training_io;

/* ---- where the steps run ------------------------------------------------
 * The loop (the data's order, augmentation, the schedule, progress,
 * evaluation, checkpoints, the report) is bd_training_run_with's, the same
 * for every engine; an engine takes the steps: the CPU's (bd_training_run)
 * or a GPU's (device.h). */

/* How a parameter is updated. */
enum {
    BD_PARAM_SGD = 0,      /* itself, by SGD */
    BD_PARAM_CODEBOOK = 1, /* a quantized PQ layer's weight: its codebook trains */
    BD_PARAM_FROZEN = 2    /* a quantized int layer's weight: not at all */
};

/* A quantized PQ layer whose centroids train. */
typedef struct bd_training_codebook {
    int layer;     /* index in layers */
    int param;     /* its weight's index in params (the backward's gradient) */
    float *master; /* k x d, float32 while training */
    float *moment; /* k x d */
} bd_training_codebook;

/* What a run trains, worked out once; the host's copy of the truth, which
 * evaluation and checkpoints read between epochs. */
typedef struct bd_training_state {
    bd_graph *g;
    const bd_training_options *o; /* defaults filled in */
    const bd_training_io *io;
    int nparams;
    int *params;          /* value ids (bd_training_params) */
    int *kind;            /* per parameter: BD_PARAM_* */
    int *decay;           /* per parameter: weight decay applies (rank > 1) */
    float **moment;       /* per BD_PARAM_SGD parameter: its momentum; else NULL */
    bd_layer *layers;     /* bd_layers_find(g) */
    int nlayers;
    int *layer_param;     /* per layer: its weight's index in params, or -1 */
    bd_layer_plan *plan;  /* the noise's layout, quantized layers left out */
    int ncb;
    bd_training_codebook *cb;
    int64_t steps, total; /* per epoch, in the run */
    int batch;            /* the global batch: the option, at most the data */
} bd_training_state;

typedef struct bd_training_engine {
    void *ctx;
    /* Step t (0-based over the run) on batch x with its labels at this
     * learning rate and momentum: the noise of step t, forward, loss,
     * backward, the update; *loss gets the batch's loss, *hits how many
     * images the (noisy) model got right. In a job of several ranks x is
     * this rank's share of the global batch, the gradients it sums are
     * scaled by its share of the global batch's mean (bd_dist_share_loss),
     * and so is *loss. */
    bd_status (*step)(void *ctx, const bd_tensor *x, const int *labels, int64_t t, float lr,
                      float momentum, double *loss, int64_t *hits);
    /* Copies the engine's own values (parameters, running statistics,
     * momentum, codebooks) into the state; NULL when the state is the
     * engine's own. Called before evaluation and checkpoints. */
    bd_status (*store)(void *ctx);
    /* The reverse, after a resume filled the state; NULL likewise. */
    bd_status (*load)(void *ctx);
    void (*free)(void *ctx);
} bd_training_engine;

typedef bd_status (*bd_training_start_fn)(void *arg, const bd_training_state *st,
                                          bd_training_engine *eng);

/* bd_training_run with the steps on the engine start sets up. */
bd_status bd_training_run_with(bd_training_start_fn start, void *arg, bd_graph *g,
                               const bd_training_options *opt, const bd_training_io *io,
                               bd_training_report *report);

/* PyTorch's SGD on n values: g += wd p; v = m v + g; p -= lr (nesterov ?
 * g + m v : v). */
void bd_training_sgd(float *p, float *v, const float *grad, int64_t n, float lr, float m,
                     float wd, int nesterov);

/* Writes codebook i's layer weight, decoded from centroids, into st->g. */
bd_status bd_training_decode(const bd_training_state *st, int i, const float *centroids);

/* The checkpoint after `done` epochs (rec[0..done)), written atomically:
 * every float initializer by name, the momentum of the trained ones, the
 * codebooks, the hook's state (its save), and what the stream of random
 * choices depends on (seed, steps per epoch), which reading checks.
 * Reading is all or nothing: every record, the hook's by its load, is
 * checked against the model before anything is copied; *rec gets room for
 * all the run's epochs. */
bd_status bd_training_checkpoint_write(const bd_training_state *st, const char *path,
                                       const bd_training_epoch *rec, int done);
bd_status bd_training_checkpoint_read(bd_training_state *st, const char *path,
                                      bd_training_epoch **rec, int *done);
/* The hook's state in the checkpoint at path (*len 0: none), malloc'ed: for
 * a caller that must know where a run stood before it resumes it. */
bd_status bd_training_checkpoint_hook_state(const char *path, void **data, size_t *len);

/* Trains g in place. Checked before anything changes: options in range,
 * labels for a label loss, a teacher for distillation, the noise against
 * the layers, the checkpoint against the model when resuming. After a
 * cancellation g holds the last finished step's weights; after a failure
 * once training began, weights that may be half-updated: either way the
 * caller keeps a copy to restore. */
bd_status bd_training_run(bd_graph *g, const bd_training_options *opt, const bd_training_io *io,
                          bd_training_report *report);

/* The learning rate and momentum at step t of T (0-based), for tests and
 * for front-ends that plot the schedule. */
void bd_training_schedule(const bd_training_options *o, int64_t t, int64_t T,
                          int64_t steps_per_epoch, float *lr, float *momentum);

/* The value ids training updates: every float initializer a Conv, Gemm or
 * MatMul reads as weight or bias, a BatchNormalization (or
 * LayerNormalization, InstanceNormalization) as scale or shift, a PRelu as
 * slope, and tensors (not scalars) an Add or Mul applies. *ids is
 * malloc'ed. */
bd_status bd_training_params(const bd_graph *g, int **ids, int *n);

/* Re-initialises g's parameters from seed as PyTorch's layers do by
 * default: weights and biases uniform in +-1/sqrt(fan_in) (kaiming_uniform
 * with a = sqrt(5)), normalisation scales 1 and shifts 0, running means 0
 * and variances 1. */
bd_status bd_training_reinit(bd_graph *g, uint64_t seed);

#endif
