/* BitPruning (docs/method.md, "BitPruning"): every quantizable layer's
 * weight (or each of its output channels) gets a continuous bit length n,
 * learned by training with a penalty on the bits; then the bit lengths are
 * rounded and frozen, the network fine-tuned at them, and every layer
 * stored as an int codec (codec.h) of its own bits.
 *
 * The quantizer. Q_b is the int codec's b-bit grid fitted by its weight
 * objective (int_fit.h: per output channel, asymmetric, on the row's
 * min/max), refreshed from the master weights at every step. The range is
 * set from statistics rather than learned because it is then exactly the
 * grid the saved file stores: what training saw at the end is what the
 * codec writes, with no second fit that could move it. For n between b and
 * b + 1 (b = floor(n), at most max - 1):
 *
 *     Q_n(w) = (b + 1 - n) Q_b(w) + (n - b) Q_{b+1}(w)
 *
 * which is Q_b at integer n. The weight gets the gradient straight through
 * (dQ_n/dw = 1: min/max never clips), n gets <dL/dQ_n, Q_{b+1}(w) - Q_b(w)>
 * summed over its weights, plus lambda times the cost's derivative.
 *
 * Activations (activations=1): every quantized layer's input also gets a
 * bit length m in [act_min_bits, act_max_bits], starting at the top, and is
 * fake-quantized (act_quant.h) on grids fixed before learning: the range is
 * the act_percentile-th percentile of its values on the first training
 * batches (the opposite one too when some are negative, else 0), and the
 * grid of each bit length clips it by the ratio with the least squared
 * error on those values (bd_act_clip_errors): a 2-bit grid over the whole
 * range of a ReLU's output would put nearly every value on 0 and the loss
 * would rise with m falling far more than a clipped grid lets it. Q_m
 * interpolates between the grids around m as the weights' does (one
 * implementation); the input's gradient passes straight through where a
 * grid does not clip and is 0 where it does, m's is
 * <dL/dQ_m, Q_{c+1}(x) - Q_c(x)> over the input's values (c = floor(m)).
 * Rounded to nearest, m stays at its bits while fine-tuning, and the model
 * carries it as Div, Round, Clip, Mul before the layer
 * (bd_bitprune_act_insert).
 *
 * The cost is the mean bit length weighted by what the user wants to save:
 *   memory: each tensor's share of the quantized weights (sum P n / sum P);
 *           with activations, plus the bits of one image's input to every
 *           quantized layer over the same weights (sum A m / sum P): the
 *           memory one inference reads and writes, weights and activations,
 *   ops:    each tensor's share of the multiply-accumulates (MACs of one
 *           image, from one forward pass; sum M n / sum M): bit-operations
 *           per MAC per activation bit when activations stay float; with
 *           activations learned, bit-operations per MAC, sum M n m / sum M.
 * lambda is fixed (lambda >= 0, the paper's), or, with target_bits (the
 * mean bits per weight, weighted by weights whatever the cost: what the
 * model stores, activations or not; target_mb: the size's target turned
 * into that mean), worked
 * out at every step as the multiplier that moves the mean a share `track`
 * of the way to its path: a line from where n starts to the target over the
 * first `ramp` of the learning steps, then the target. The step moves n by
 * -rate (g + lambda share), so the mean (weights' shares p) changes by
 * -rate (<p, g> + lambda <p, share>) and lambda follows in closed form
 * (solved again without the tensors a bound holds, which do not move); the
 * cost decides where the bits go, the target how many there are. The same
 * lambda weighs the activations' share of the cost (memory: A / sum P;
 * ops: sum M n / sum M over the layer's tensors), so with a target they go
 * down while the weights do and settle where the loss holds them. Solving rather than
 * adapting lambda makes it scale-free (the loss's pull on n differs by
 * orders of magnitude between models) and lets it turn negative when the
 * cost is below its path, so the target is reached, not overshot to the
 * minimum; the allocation between tensors stays the loss's. The gradual
 * path lets the weights follow the bits down, as gradual pruning does.
 *
 * Rounding: each n to its nearest integer (the quantizer the forward
 * weighted more); then, while a target is not met, the tensor rounded up the
 * most (n furthest below its rounded value, ties to the larger tensor) is
 * lowered by one bit: the smallest departure from what was learned that
 * meets the target; then what the target still allows is given back, a bit
 * at a time, to the tensor rounded down the most (never past the ceiling of
 * its n; ties to the smaller), so the model uses its budget: one large
 * layer's bit is often most of it. */
#ifndef BD_BITPRUNE_H
#define BD_BITPRUNE_H

#include <stdint.h>

#include "act_quant.h"
#include "codec.h"
#include "graph.h"
#include "layers.h"
#include "options.h"
#include "training.h"

typedef enum bd_bits_cost { BD_BITS_MEMORY = 0, BD_BITS_OPS = 1 } bd_bits_cost;
typedef enum bd_bits_grain { BD_BITS_LAYER = 0, BD_BITS_CHANNEL = 1 } bd_bits_grain;

typedef struct bd_bitprune_options {
    bd_training_options train; /* the learning phase: epochs, lr (default 0.01), seed, ... */
    float target_bits;   /* > 0: lambda is solved for until the mean bits per weight reach it */
    float target_mb;     /* > 0: ... until the compressed model is this many MiB */
    float lambda;        /* >= 0: fixed; < 0 (the default): not given */
    int cost;            /* bd_bits_cost (default memory) */
    int granularity;     /* bd_bits_grain (default layer) */
    int min_bits, max_bits; /* the range of n (default 1..8, within 1..16) */
    float init_bits;     /* where n starts (default max_bits) */
    float bits_lr;       /* learning rate of n, scaled by the schedule (default 0.01) */
    float ramp;          /* with a target: share of the learning steps to reach it (default 0.5) */
    float track;         /* with a target: share of the gap to the path closed per step (default 0.2) */
    int finetune_epochs; /* at the rounded bits, frozen (default 1; 0: none) */
    float finetune_lr;   /* default 0: train.lr / 10 */
    int activations;     /* also a bit length per quantized layer's input */
    int act_min_bits, act_max_bits; /* its range (0: bd_bitprune_act_bits) */
    float act_percentile; /* its value range's percentile (0: 99.99) */
} bd_bitprune_options;

/* BitPruning's own settings; training's are bd_training_opts' (applied to
 * .train). The operation, bd_bitprune_op, offers the two tables as one,
 * with bd_bitprune_options_init's defaults (training's lr 0.01). */
extern const bd_opt bd_bitprune_opts[];
extern const bd_opt_op bd_bitprune_op;

void bd_bitprune_options_init(bd_bitprune_options *o);

/* The activations' bit range o gives: act_min_bits and act_max_bits, or
 * where 0 the weights' range, but at least 2 bits at the bottom (within
 * the top): one bit leaves a ReLU's output a step at one threshold, which
 * straight-through training does not recover from (on the example
 * MobileNet, depthwise inputs learned down to 1 bit cost 2 points of top-1
 * more than at 2). A user who wants binary activations sets act_min_bits=1. */
void bd_bitprune_act_bits(const bd_bitprune_options *o, int *lo, int *hi);

/* What the run is doing, for front-ends that draw the bit lengths moving;
 * valid during the callback only. */
typedef struct bd_bitprune_live {
    int nlayers;
    const double *bits;   /* per layer (bd_layers_find's order): mean n of its tensors */
    const double *act_bits; /* per layer: its input's n (0: not learned); NULL without
                             * activations=1 */
    double mean_bits;     /* memory-weighted mean of n */
    double ops_bits;      /* MAC-weighted mean of n */
    double lambda;
    int64_t bytes;        /* the model's compressed size at the current n (rounded) */
    int64_t step, steps;  /* over the learning phase */
    int phase;            /* 0: learning, 1: fine-tuning at the rounded bits */
} bd_bitprune_live;

typedef void (*bd_bits_fn)(void *user, const bd_bitprune_live *live);

typedef struct bd_bitprune_io {
    const bd_dataset *train;
    const bd_dataset *eval;    /* may be NULL */
    const bd_preprocess *pp;
    bd_exec *teacher;          /* for train.loss = kl */
    const uint8_t *skip;       /* per layer: 1 leaves it float (NULL: quantize all) */
    const bd_progress *progress;
    bd_epoch_fn on_epoch;      /* both phases' epochs, in turn */
    bd_bits_fn on_bits;        /* every few steps, at every epoch's end (before on_epoch)
                                * and at every phase's end; may be NULL */
    void *user;
    /* Written after every epoch of either phase (NULL: none): training's
     * checkpoint with the run's own state (bit lengths, lambda, the phase).
     * With resume the run goes on from it, in whichever phase it was
     * written, and ends as an uninterrupted run with the same options
     * would: bit for bit, on the same threads. */
    const char *checkpoint;
    int resume;
} bd_bitprune_io;

/* Per quantized layer, what was learned and kept. */
typedef struct bd_bitprune_layer {
    int layer;           /* index in bd_layers_find's order */
    double learned;      /* mean n before rounding */
    double bits;         /* mean bits after rounding (per channel: the rows' mean) */
    int min_bits, max_bits; /* over its channels (equal for layer granularity) */
    int64_t params, macs;
    /* activations=1 (else act.bits = 0): its input's bit length before
     * rounding, the range (unclipped), the grid it has now and the one of
     * every bit length (act_grids[b]; [0] unused), its values per image */
    double act_learned;
    float act_lo, act_hi;
    bd_act_grid act;
    bd_act_grid act_grids[BD_INT_MAX_BITS + 1];
    int64_t act_values;
} bd_bitprune_layer;

typedef struct bd_bitprune_report {
    bd_training_report learn, tune;
    int nlayers;              /* quantized layers */
    bd_bitprune_layer *layers;
    double mean_bits;         /* memory-weighted mean weight bits, rounded */
    double mean_bits_layers;  /* unweighted mean over layers */
    double ops_bits;          /* MAC-weighted */
    double lambda;            /* the last */
    double learned_mean;      /* memory-weighted mean n before rounding */
    double *mean_per_epoch;   /* learn.epochs entries: mean n at each epoch's end */
    /* activations=1 (else 0): the mean of the layers' input bits, and the
     * bit-operations per MAC, sum M n m / sum M */
    double act_mean;
    double bitops;
} bd_bitprune_report;
void bd_bitprune_report_free(bd_bitprune_report *r);

/* Learns the bit lengths of g's layers (every layer bd_layers_find gives,
 * but those io->skip names), rounds them, fine-tunes, and leaves in q
 * (nlayers of bd_layers_find, skipped ones with k = 0) each quantized
 * layer's int codec (per-channel asymmetric grid, bits per layer or per
 * row), in g the decoded weights and trained float parameters, and with
 * activations each layer's input grid in the report (the caller puts it in
 * a graph with bd_bitprune_act_insert). Checked before anything changes:
 * the options (one of target_bits, target_mb, lambda; the ranges within
 * 1..16; a target the range can meet; activations' settings only with
 * activations), a model with a quantizable layer, none of them already
 * quantized, and with activations an opset with Round (11) and no layer
 * reading an activation quantizer already. On failure g may be
 * half-trained (the caller keeps a copy), q is untouched. */
bd_status bd_bitprune_run(bd_graph *g, const bd_bitprune_options *o, const bd_bitprune_io *io,
                          bd_qlayer *q, bd_bitprune_report *report);

/* ---- the pieces, for tests and engines ------------------------------------- */

/* Q_n of rows x L weights w (pq.h's layout with d = 1), n per row
 * (bits[r]), into out; with dq non-NULL also Q_{b+1} - Q_b per weight, the
 * direction n's gradient takes. */
bd_status bd_bitprune_quantize(const float *w, int64_t rows, int64_t L, const float *bits,
                               int max_bits, float *out, float *dq);

/* Q_m of count activations x (one tensor, m = bits) on grids[b], the grid
 * of b bits (b = 1 .. max_bits), interpolated as bd_bitprune_quantize's;
 * with dq non-NULL also Q_{c+1} - Q_c per value. */
bd_status bd_bitprune_act_quantize(const float *x, int64_t count, float bits, int max_bits,
                                   const bd_act_grid *grids, float *out, float *dq);

/* Its backward from dy, the gradient of Q_m(x): straight through where a
 * grid does not clip x, 0 where it does, each of Q_c and Q_{c+1} with its
 * weight in Q_m (their ranges differ: bd_act_clip_errors); with dn
 * non-NULL also m's gradient, sum dy (Q_{c+1}(x) - Q_c(x)). */
bd_status bd_bitprune_act_backward(const float *x, const float *dy, int64_t count, float bits,
                                   int max_bits, const bd_act_grid *grids, float *dx, double *dn);

/* Puts the activation quantizers of a run's report (its layers with
 * act.bits > 0) into g, a model with the run's layers (act_quant.h's
 * nodes, named after the layers). */
bd_status bd_bitprune_act_insert(bd_graph *g, const bd_bitprune_report *r);

/* The rounding rule on nt bit lengths n, each with its share of the
 * weights: nearest; then, with a target (> 0), while sum share * bits
 * exceeds it the one rounded up the most (ties: the larger share) goes down
 * a bit, never below min_bits, and while a bit more fits, the one rounded
 * down the most (ties: the smaller share) goes up one, never past ceil(n). */
void bd_bitprune_round(const double *n, const double *share, int nt, double target, int min_bits,
                       double *bits);

/* The multiply-accumulates of one image in each layer (macs[nlayers]), by
 * one forward pass on `input` (one image). */
bd_status bd_bitprune_macs(const bd_graph *g, const bd_layer *layers, int nlayers,
                           const bd_tensor *input, int64_t *macs);

#endif
