#include "bitprune.h"

#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cpu/conv.h"
#include "dist.h"
#include "exec.h"
#include "int_fit.h"
#include "pq.h"
#include "size.h"

static const char *const cost_words[] = {"memory", "ops", NULL};
static const char *const grain_words[] = {"layer", "channel", NULL};

#define OFF(f) offsetof(bd_bitprune_options, f)
const bd_opt bd_bitprune_opts[] = {
    {"target_bits", BD_OPT_FLOAT, OFF(target_bits), 0, 16, NULL, 0, NULL, "B",
     "mean bits per weight to reach (over all quantized weights; 0: no such target)"},
    {"target_mb", BD_OPT_FLOAT, OFF(target_mb), 0, 1e6, NULL, 0, NULL, "S",
     "compressed size to reach, in MiB (0: no such target)"},
    {"lambda", BD_OPT_FLOAT, OFF(lambda), 0, 1e6, NULL, 0, NULL, "L",
     "a fixed weight of the bits' penalty, instead of a target (-1: none)"},
    {"cost", BD_OPT_WORD, OFF(cost), 0, 0, cost_words, 0, NULL, "memory|ops",
     "what the penalty weighs: each tensor's weights or its multiply-accumulates"},
    {"granularity", BD_OPT_WORD, OFF(granularity), 0, 0, grain_words, 0, NULL, "layer|channel",
     "a bit length per layer or per output channel"},
    {"min_bits", BD_OPT_INT, OFF(min_bits), 1, 16, NULL, 0, NULL, "N",
     "the fewest bits a tensor may learn"},
    {"max_bits", BD_OPT_INT, OFF(max_bits), 1, 16, NULL, 0, NULL, "N",
     "the most bits a tensor may learn"},
    {"init_bits", BD_OPT_FLOAT, OFF(init_bits), 1, 16, NULL, 0, NULL, "X",
     "where the bit lengths start (0: max_bits)"},
    {"bits_lr", BD_OPT_FLOAT, OFF(bits_lr), 0, 100, NULL, 0, NULL, "X",
     "learning rate of the bit lengths, following lr's schedule"},
    {"ramp", BD_OPT_FLOAT, OFF(ramp), 0.001, 1, NULL, 0, NULL, "X",
     "with a target: share of the learning steps over which the mean goes to it"},
    {"track", BD_OPT_FLOAT, OFF(track), 0.001, 1, NULL, 0, NULL, "X",
     "with a target: share of the gap to the mean's path closed per step"},
    {"finetune_epochs", BD_OPT_INT, OFF(finetune_epochs), 0, 100000, NULL, 0, NULL, "N",
     "epochs of fine-tuning at the rounded bits"},
    {"finetune_lr", BD_OPT_FLOAT, OFF(finetune_lr), 0, 1e3, NULL, 0, NULL, "X",
     "learning rate of the fine-tuning (0: lr/10)"},
    {"activations", BD_OPT_FLAG, OFF(activations), 0, 1, NULL, 0, NULL, NULL,
     "also learn a bit length for every quantized layer's input (its activations)"},
    {"act_min_bits", BD_OPT_INT, OFF(act_min_bits), 1, 16, NULL, 0, NULL, "N",
     "with activations: the fewest bits an input may learn (0: min_bits, at least 2)"},
    {"act_max_bits", BD_OPT_INT, OFF(act_max_bits), 1, 16, NULL, 0, NULL, "N",
     "with activations: the most bits an input may learn (0: max_bits)"},
    {"act_percentile", BD_OPT_FLOAT, OFF(act_percentile), 50, 100, NULL, 0, NULL, "P",
     "with activations: each input's range, this percentile of its first values (0: 99.99)"},
    {NULL, 0, 0, 0, 0, NULL, 0, NULL, NULL, NULL}};
#undef OFF

void bd_bitprune_options_init(bd_bitprune_options *o)
{
    *o = (bd_bitprune_options){.lambda = -1, .min_bits = BD_INT_MIN_BITS, .max_bits = 8,
                               .bits_lr = 0.01f, .ramp = 0.5f, .track = 0.2f,
                               .finetune_epochs = 1};
    bd_training_options_init(&o->train);
    o->train.lr = 0.01f; /* the model is trained already: training's 0.1 would undo it */
}

static void init_op(void *opts) { bd_bitprune_options_init(opts); }

const bd_opt_op bd_bitprune_op = {"bitprune",
                                  {bd_bitprune_opts, bd_training_opts},
                                  {0, offsetof(bd_bitprune_options, train)},
                                  sizeof(bd_bitprune_options),
                                  init_op};

void bd_bitprune_report_free(bd_bitprune_report *r)
{
    bd_training_report_free(&r->learn);
    bd_training_report_free(&r->tune);
    free(r->layers);
    free(r->mean_per_epoch);
    memset(r, 0, sizeof *r);
}

/* ---- the quantizer ------------------------------------------------------------ */

/* The two integer bit lengths around n and n's weight on the upper one. */
static void bracket(float n, int max_bits, int *lo, float *t)
{
    int b = (int)floorf(n);
    if (b >= max_bits)
        b = max_bits - 1;
    if (b < BD_INT_MIN_BITS) /* a range of one value: n is that value */
        b = BD_INT_MIN_BITS;
    *lo = b;
    *t = n - (float)b;
    if (*t < 0)
        *t = 0;
}

/* A quantizer at integer bit lengths: rows x L values x, row r at bits[r],
 * into out. */
typedef bd_status (*grid_fn)(const void *ctx, const float *x, int64_t rows, int64_t L,
                             const int32_t *bits, float *out);

/* The weights': the int codec's weight fit (per channel, asymmetric),
 * decoded. */
static bd_status int_grid(const void *ctx, const float *w, int64_t rows, int64_t L,
                          const int32_t *bits, float *out)
{
    (void)ctx;
    const bd_feedback_layer fl = {.w = w, .rows = rows, .L = L, .groups = 1};
    const bd_int_spec spec = {.bits = bits[0], .per_channel = 1};
    bd_qlayer q;
    bd_status s = bd_int_fit(&fl, &spec, bits, BD_OBJ_WEIGHT, NULL, &q, out);
    bd_qlayer_free(&q);
    return s;
}

/* The activations': ctx holds the grid of every bit length. */
static bd_status act_grid(const void *ctx, const float *x, int64_t rows, int64_t L,
                          const int32_t *bits, float *out)
{
    const bd_act_grid *grids = ctx;
    for (int64_t r = 0; r < rows; r++)
        bd_act_grid_apply(&grids[bits[r]], x + r * L, L, out + r * L);
    return BD_OK;
}

/* Q_n of rows x L values, n per row, from a quantizer at integers. */
static bd_status interpolate(grid_fn grid, const void *ctx, const float *w, int64_t rows,
                             int64_t L, const float *bits, int max_bits, float *out, float *dq)
{
    int32_t *lo = calloc((size_t)rows, sizeof *lo), *hi = calloc((size_t)rows, sizeof *hi);
    float *t = malloc((size_t)rows * sizeof *t), *up = malloc((size_t)(rows * L) * sizeof *up);
    bd_status s = lo && hi && t && up
                      ? BD_OK
                      : bd_fail(BD_ENOMEM, "out of memory for the bit lengths' quantizer");
    int upper = dq != NULL; /* Q_{b+1} is needed: for n's gradient, or a row between two */
    for (int64_t r = 0; s == BD_OK && r < rows; r++) {
        bracket(bits[r], max_bits, &lo[r], &t[r]);
        hi[r] = lo[r] < BD_INT_MAX_BITS ? lo[r] + 1 : lo[r]; /* at the codec's top: no step */
        upper |= t[r] > 0;
    }
    if (s == BD_OK)
        s = grid(ctx, w, rows, L, lo, out);
    if (s == BD_OK && upper)
        s = grid(ctx, w, rows, L, hi, up);
    for (int64_t r = 0; s == BD_OK && upper && r < rows; r++) {
        const float tr = t[r];
#pragma omp parallel for schedule(static) if (L > 65536)
        for (int64_t j = r * L; j < (r + 1) * L; j++) {
            const float d = up[j] - out[j];
            if (dq)
                dq[j] = d;
            /* n = b + 1 exactly is Q_{b+1} itself, not a sum rounded near it */
            out[j] = tr >= 1 ? up[j] : out[j] + tr * d;
        }
    }
    free(lo);
    free(hi);
    free(t);
    free(up);
    return s;
}

bd_status bd_bitprune_quantize(const float *w, int64_t rows, int64_t L, const float *bits,
                               int max_bits, float *out, float *dq)
{
    return interpolate(int_grid, NULL, w, rows, L, bits, max_bits, out, dq);
}

bd_status bd_bitprune_act_quantize(const float *x, int64_t count, float bits, int max_bits,
                                   const bd_act_grid *grids, float *out, float *dq)
{
    return interpolate(act_grid, grids, x, 1, count, &bits, max_bits, out, dq);
}

bd_status bd_bitprune_act_backward(const float *x, const float *dy, int64_t count, float bits,
                                   int max_bits, const bd_act_grid *grids, float *dx, double *dn)
{
    int c;
    float t;
    bracket(bits, max_bits, &c, &t);
    float lo[2], hi[2];
    bd_act_grid_range(&grids[c], &lo[0], &hi[0]);
    bd_act_grid_range(&grids[c < BD_INT_MAX_BITS ? c + 1 : c], &lo[1], &hi[1]);
    const float w[2] = {t < 1 ? 1 - t : 0, t < 1 ? t : 1};
#pragma omp parallel for schedule(static) if (count > 65536)
    for (int64_t i = 0; i < count; i++) {
        const float in = (x[i] >= lo[0] && x[i] <= hi[0] ? w[0] : 0) +
                         (x[i] >= lo[1] && x[i] <= hi[1] ? w[1] : 0);
        dx[i] = dy[i] * in;
    }
    if (!dn)
        return BD_OK;
    float *q = malloc((size_t)count * sizeof *q + 1), *dq = malloc((size_t)count * sizeof *dq + 1);
    bd_status s = q && dq ? bd_bitprune_act_quantize(x, count, bits, max_bits, grids, q, dq)
                          : bd_fail(BD_ENOMEM, "out of memory for an activation's bit length");
    double sum = 0;
    for (int64_t i = 0; s == BD_OK && i < count; i++)
        sum += (double)dy[i] * (double)dq[i];
    *dn = sum;
    free(q);
    free(dq);
    return s;
}

/* ---- multiply-accumulates ------------------------------------------------------ */

typedef struct macs_ctx {
    const bd_layer *layers;
    int n;
    int64_t *macs;
} macs_ctx;

static bd_status count_macs(void *user, const bd_graph *g, int node, bd_tensor *const *in)
{
    macs_ctx *c = user;
    for (int i = 0; i < c->n; i++) {
        const bd_layer *l = &c->layers[i];
        if (l->node != node)
            continue;
        if (!strcmp(l->op, "Conv")) {
            bd_conv_geom geom;
            BD_TRY(bd_conv_geom_from_node(&g->nodes[node], in[0], in[1], &geom));
            c->macs[i] = geom.m * geom.oh * geom.ow * bd_conv_rows(&geom);
        } else /* one row_len-long dot product per output value */
            c->macs[i] = bd_tensor_count(in[0]) / l->row_len * l->rows * l->row_len;
    }
    return BD_OK;
}

bd_status bd_bitprune_macs(const bd_graph *g, const bd_layer *layers, int nlayers,
                           const bd_tensor *input, int64_t *macs)
{
    int last = 0;
    for (int i = 0; i < nlayers; i++) {
        macs[i] = 0;
        last = layers[i].node > last ? layers[i].node : last;
    }
    bd_exec *ex;
    BD_TRY(bd_exec_new(&ex, g, 0));
    macs_ctx c = {layers, nlayers, macs};
    bd_exec_set_hook(ex, count_macs, &c);
    bd_tensor *in = (bd_tensor *)input;
    bd_status s = bd_exec_run_until(ex, &in, last);
    bd_exec_free(ex);
    return s;
}

/* ---- the learned bit lengths: training's hook -------------------------------------- */

typedef struct bp_layer {
    int layer;         /* in bd_layers_find's order */
    int weight;        /* its value id */
    bd_pq_layout lay;  /* d = 1: rows x row_len */
    int first;         /* its first tensor in the run's n[] */
    int ntens;         /* 1 or rows */
    float *master;     /* the weight as stored, while the quantized one is in g */
    float *sub, *q, *dq, *rowbits;
    /* activations=1: its node, its input's range, that input's values per
     * image */
    int node;
    float alo, ahi;
    bd_act_grid agrid[BD_INT_MAX_BITS + 1]; /* clipped for each bit length */
    float *sample;  /* while the ranges are measured: some of its values */
    int64_t nsample;
    int64_t avalues;
} bp_layer;

typedef struct bitprune {
    const bd_bitprune_options *o;
    const bd_bitprune_io *io;
    const bd_layer *layers;
    int nlayers;
    bp_layer *bl;
    int nbl;
    int nt;          /* tensors (layers or channels) */
    double *n;       /* each one's bit length */
    double *grad;    /* the loss's gradient with respect to it, this step */
    uint8_t *held;   /* held at a bound this step (solving for lambda) */
    double *count;   /* its weights */
    double *share;   /* its share of the cost: weights or MACs */
    double *pshare;  /* its share of the weights */
    double *mshare;  /* its share of the MACs */
    int64_t total_weights;
    int64_t fixed_bytes; /* the compressed model but its codes */
    double lambda, target;
    double start;    /* the cost's mean where n starts */
    int frozen;      /* at the rounded bits: n is not learned */
    int phase;
    int64_t steps;   /* of the phase */
    double *live;    /* per layer, for on_bits: weights' n, then inputs' n */
    int64_t *macs;   /* per layer, of one image */
    double *per_epoch; /* the learning's mean n at each epoch's end */
    /* activations=1: per quantized layer (bl's order), its input's bit
     * length, the loss's gradient with respect to it this step and its
     * share of the cost; the transform the trainer applies */
    int acts;
    int act_min, act_max;
    double *na, *agrad, *ashare;
    double *calib; /* while the ranges are measured: per layer, lo's and hi's sums */
    int64_t calib_batches;
    bd_input_transform tf;
    bd_status failed; /* a failure in the hook's restore, which cannot return one */
    /* at the rounded bits: what the learning phase ended with, for the
     * report and for a checkpoint of the fine-tuning */
    double *learned, *act_learned; /* n and the inputs' n before rounding */
    bd_training_report *learn;
} bitprune;

static void bp_free(bitprune *b)
{
    for (int i = 0; i < b->nbl; i++) {
        bp_layer *l = &b->bl[i];
        free(l->master);
        free(l->sub);
        free(l->q);
        free(l->dq);
        free(l->rowbits);
        free(l->sample);
    }
    free(b->bl);
    free(b->n);
    free(b->grad);
    free(b->held);
    free(b->count);
    free(b->share);
    free(b->pshare);
    free(b->mshare);
    free(b->live);
    free(b->macs);
    free(b->per_epoch);
    free(b->na);
    free(b->agrad);
    free(b->ashare);
    free(b->learned);
    free(b->act_learned);
}

/* sum share[t] r[t]: a mean of bit lengths weighted by shares summing to 1 */
static double mean_of(const double *r, const double *share, int nt)
{
    double mean = 0;
    for (int t = 0; t < nt; t++)
        mean += share[t] * r[t];
    return mean;
}

/* The compressed size with every tensor at its bits rounded to nearest. */
static int64_t rounded_bytes(const bitprune *b)
{
    double bits = 0;
    for (int t = 0; t < b->nt; t++)
        bits += b->count[t] * floor(b->n[t] + 0.5);
    return b->fixed_bytes + (int64_t)ceil(bits / 8);
}

static void report_live(bitprune *b, int64_t step)
{
    if (!b->io->on_bits)
        return;
    double *acts = b->live + b->nlayers;
    for (int l = 0; l < 2 * b->nlayers; l++)
        b->live[l] = 0;
    for (int i = 0; i < b->nbl; i++) {
        const bp_layer *l = &b->bl[i];
        double sum = 0;
        for (int t = l->first; t < l->first + l->ntens; t++)
            sum += b->n[t];
        b->live[l->layer] = sum / l->ntens;
        if (b->acts)
            acts[l->layer] = b->na[i];
    }
    const bd_bitprune_live live = {.nlayers = b->nlayers, .bits = b->live,
                                   .act_bits = b->acts ? acts : NULL,
                                   .mean_bits = mean_of(b->n, b->pshare, b->nt),
                                   .ops_bits = mean_of(b->n, b->mshare, b->nt),
                                   .lambda = b->lambda, .bytes = rounded_bytes(b),
                                   .step = step, .steps = b->steps, .phase = b->phase};
    b->io->on_bits(b->io->user, &live);
}

static bd_status hook_apply(void *ctx, bd_graph *g, int64_t step)
{
    bitprune *b = ctx;
    for (int i = 0; i < b->nbl; i++) {
        bp_layer *l = &b->bl[i];
        float *w = g->values[l->weight].init->data;
        const int64_t count = l->lay.n;
        memcpy(l->master, w, (size_t)count * sizeof *w);
        bd_pq_gather(&l->lay, w, l->sub);
        for (int64_t r = 0; r < l->lay.rows; r++)
            l->rowbits[r] = (float)b->n[l->first + (l->ntens > 1 ? r : 0)];
        const int learn = !b->frozen && step >= 0;
        bd_status s = bd_bitprune_quantize(l->sub, l->lay.rows, l->lay.row_len, l->rowbits,
                                           b->o->max_bits, l->q, learn ? l->dq : NULL);
        if (s != BD_OK) {
            for (int j = 0; j < i; j++) /* the masters back, as restore would */
                memcpy(g->values[b->bl[j].weight].init->data, b->bl[j].master,
                       (size_t)b->bl[j].lay.n * sizeof(float));
            return s;
        }
        bd_pq_scatter(&l->lay, l->q, w);
    }
    for (int i = 0; b->acts && step >= 0 && i < b->nbl; i++)
        b->agrad[i] = 0; /* the backward's transform adds this step's */
    return BD_OK;
}

/* ---- the activations' bit lengths: the trainer's transform ------------------------ */

static int act_index(const bitprune *b, int node)
{
    for (int i = 0; b->acts && i < b->nbl; i++)
        if (b->bl[i].node == node)
            return i;
    return -1;
}

static int act_applies(void *ctx, int node) { return act_index(ctx, node) >= 0; }

static bd_status act_input(const bitprune *b, int i, const bd_tensor *x)
{
    if (x->dtype != BD_F32)
        return bd_fail(BD_EUNSUPPORTED, "bitprune: layer '%s' reads %s activations; only "
                                        "float32 ones are quantized",
                       b->layers[b->bl[i].layer].name, bd_dtype_name(x->dtype));
    return BD_OK;
}

static bd_status act_forward(void *ctx, int node, const bd_tensor *x, bd_tensor **y)
{
    bitprune *b = ctx;
    const int i = act_index(b, node);
    BD_TRY(act_input(b, i, x));
    BD_TRY(bd_tensor_new_raw(y, BD_F32, x->ndim, x->dims, "quantized activations"));
    const bp_layer *l = &b->bl[i];
    bd_status s = bd_bitprune_act_quantize(x->data, bd_tensor_count(x), (float)b->na[i],
                                           b->act_max, l->agrid, (*y)->data, NULL);
    if (s != BD_OK) {
        bd_tensor_free(*y);
        *y = NULL;
    }
    return s;
}

static bd_status act_backward(void *ctx, int node, const bd_tensor *x, const bd_tensor *dy,
                              bd_tensor **dx)
{
    bitprune *b = ctx;
    const int i = act_index(b, node);
    BD_TRY(act_input(b, i, x));
    BD_TRY(bd_tensor_new_raw(dx, BD_F32, x->ndim, x->dims, "activations' gradient"));
    const bp_layer *l = &b->bl[i];
    double dn = 0;
    bd_status s = bd_bitprune_act_backward(x->data, dy->data, bd_tensor_count(x),
                                           (float)b->na[i], b->act_max, l->agrid,
                                           (*dx)->data, b->frozen ? NULL : &dn);
    b->agrad[i] += dn;
    if (s != BD_OK) {
        bd_tensor_free(*dx);
        *dx = NULL;
    }
    return s;
}

/* The cost's derivative by every bit length at the current ones: fixed
 * shares, but for the ops cost of learned activations, a product of the
 * two (bitprune.h). */
static void cost_shares(bitprune *b)
{
    for (int i = 0; b->acts && i < b->nbl; i++) {
        const bp_layer *l = &b->bl[i];
        double ops = 0;
        for (int t = l->first; t < l->first + l->ntens; t++) {
            ops += b->mshare[t] * b->n[t];
            b->share[t] = b->o->cost == BD_BITS_OPS ? b->mshare[t] * b->na[i] : b->pshare[t];
        }
        b->ashare[i] = b->o->cost == BD_BITS_OPS ? ops
                                                 : (double)l->avalues / (double)b->total_weights;
    }
}

/* n's step at `step` of the phase: the loss's pull and lambda's, at the
 * schedule's share of the learning rate; with a target, lambda solved for
 * (bitprune.h). */
static void learn_bits(bitprune *b, int64_t step, float lr)
{
    const double rate = (double)b->o->bits_lr * (double)lr / (double)b->o->train.lr;
    cost_shares(b);
    if (b->target > 0 && rate > 0) {
        const double ramp = (double)b->o->ramp * (double)b->steps;
        const double along = ramp > 0 && step + 1 < ramp ? (double)(step + 1) / ramp : 1;
        const double path = b->start + (b->target - b->start) * along;
        const double gap = mean_of(b->n, b->pshare, b->nt) - path;
        /* tensors held at a bound this step do not move the mean: solved
         * again without them until none is left to hold */
        for (int t = 0; t < b->nt; t++)
            b->held[t] = 0;
        for (int again = 1; again;) {
            double sg = 0, ss = 0;
            for (int t = 0; t < b->nt; t++)
                if (!b->held[t]) {
                    sg += b->pshare[t] * b->grad[t];
                    ss += b->pshare[t] * b->share[t];
                }
            if (ss <= 0)
                break;
            b->lambda = ((double)b->o->track * gap / rate - sg) / ss;
            again = 0;
            for (int t = 0; t < b->nt; t++) {
                const double to = b->n[t] - rate * (b->grad[t] + b->lambda * b->share[t]);
                if (!b->held[t] && ((b->n[t] <= b->o->min_bits && to < b->o->min_bits) ||
                                    (b->n[t] >= b->o->max_bits && to > b->o->max_bits)))
                    again = b->held[t] = 1;
            }
        }
    }
    for (int t = 0; t < b->nt; t++) {
        double n = b->n[t] - rate * (b->grad[t] + b->lambda * b->share[t]);
        n = n < b->o->min_bits ? b->o->min_bits : n > b->o->max_bits ? b->o->max_bits : n;
        b->n[t] = n;
    }
    for (int i = 0; b->acts && i < b->nbl; i++) {
        double m = b->na[i] - rate * (b->agrad[i] + b->lambda * b->ashare[i]);
        m = m < b->act_min ? b->act_min : m > b->act_max ? b->act_max : m;
        b->na[i] = m;
    }
}

/* n's gradient from the transformed weights' (theirs passes straight
 * through): along the step between the two quantizers, summed per tensor. */
static void bits_gradient(bitprune *b, bd_tensor *const *grads)
{
    for (int t = 0; t < b->nt; t++)
        b->grad[t] = 0;
    for (int i = 0; i < b->nbl; i++) {
        bp_layer *l = &b->bl[i];
        if (!grads[l->layer])
            continue;
        bd_pq_gather(&l->lay, grads[l->layer]->data, l->sub);
        const int64_t L = l->lay.row_len;
        for (int64_t r = 0; r < l->lay.rows; r++) {
            double dot = 0;
            for (int64_t j = r * L; j < (r + 1) * L; j++)
                dot += (double)l->sub[j] * (double)l->dq[j];
            b->grad[l->first + (l->ntens > 1 ? r : 0)] += dot;
        }
    }
}

static void hook_restore(void *ctx, bd_graph *g, bd_tensor *const *grads, int64_t step, float lr)
{
    bitprune *b = ctx;
    for (int i = 0; i < b->nbl; i++) {
        bp_layer *l = &b->bl[i];
        memcpy(g->values[l->weight].init->data, l->master, (size_t)l->lay.n * sizeof(float));
    }
    if (step < 0) /* an evaluation */
        return;
    if (grads && !b->frozen) {
        bits_gradient(b, grads);
        /* every rank's share of the batch: the weights' gradients were
         * summed before they came here, the inputs' are the hook's own */
        bd_status s = b->acts ? bd_dist_sum_f64(b->agrad, b->nbl) : BD_OK;
        if (s != BD_OK && b->failed == BD_OK)
            b->failed = s;
        if (s == BD_OK)
            learn_bits(b, step, lr);
    }
    const int64_t every = b->steps / 50 > 1 ? b->steps / 50 : 1;
    if ((step + 1) % every == 0)
        report_live(b, step + 1);
}

/* ---- setting up -------------------------------------------------------------------- */

void bd_bitprune_act_bits(const bd_bitprune_options *o, int *lo, int *hi)
{
    *hi = o->act_max_bits ? o->act_max_bits : o->max_bits;
    *lo = o->act_min_bits ? o->act_min_bits : o->min_bits > 2 ? o->min_bits : 2;
    if (!o->act_min_bits && *lo > *hi)
        *lo = *hi;
}

static bd_status check(const bd_bitprune_options *o)
{
    const int given = (o->target_bits > 0) + (o->target_mb > 0) + (o->lambda >= 0);
    if (given != 1)
        return bd_fail(BD_EINVAL, "bitprune: give exactly one of target_bits, target_mb and "
                                  "lambda (%d given)", given);
    if (o->min_bits < BD_INT_MIN_BITS || o->max_bits > BD_INT_MAX_BITS || o->min_bits > o->max_bits)
        return bd_fail(BD_EINVAL, "bitprune: the bit range %d..%d is not within %d..%d",
                       o->min_bits, o->max_bits, BD_INT_MIN_BITS, BD_INT_MAX_BITS);
    if (o->init_bits > 0 && (o->init_bits < o->min_bits || o->init_bits > o->max_bits))
        return bd_fail(BD_EINVAL, "bitprune: init_bits %g lies outside the range %d..%d",
                       (double)o->init_bits, o->min_bits, o->max_bits);
    if (o->target_bits > 0 && (o->target_bits < o->min_bits || o->target_bits > o->max_bits))
        return bd_fail(BD_EINVAL,
                       "bitprune: a mean of %g bits cannot be met with bit lengths in %d..%d",
                       (double)o->target_bits, o->min_bits, o->max_bits);
    if (o->train.noise.kind != BD_NOISE_NONE)
        return bd_fail(BD_EINVAL, "bitprune: quant_noise and the learned bit lengths would "
                                  "both rewrite the weights: leave quant_noise out");
    if (!o->activations && (o->act_min_bits || o->act_max_bits || o->act_percentile != 0))
        return bd_fail(BD_EINVAL, "bitprune: act_min_bits, act_max_bits and act_percentile set "
                                  "the activations' bit lengths: give activations=1 too");
    int lo, hi;
    bd_bitprune_act_bits(o, &lo, &hi);
    if (o->activations && (lo < BD_INT_MIN_BITS || hi > BD_INT_MAX_BITS || lo > hi))
        return bd_fail(BD_EINVAL,
                       "bitprune: the activations' bit range %d..%d (act_min_bits, "
                       "act_max_bits) is not within %d..%d",
                       lo, hi, BD_INT_MIN_BITS, BD_INT_MAX_BITS);
    if (o->activations && o->act_percentile != 0 &&
        !(o->act_percentile >= 50 && o->act_percentile <= 100))
        return bd_fail(BD_EINVAL, "bitprune: act_percentile %g is not within 50..100",
                       (double)o->act_percentile);
    return BD_OK;
}

/* The compressed model's bytes but its codes: every quantized layer's
 * table (a per-channel asymmetric grid), the activations' quantizers and
 * every other parameter. */
static void fixed_bytes(bitprune *b, const bd_graph *g)
{
    bd_qlayer *q = calloc((size_t)b->nlayers + 1, sizeof *q);
    const bd_qlayer **qp = calloc((size_t)b->nlayers + 1, sizeof *qp);
    if (!q || !qp) {
        b->fixed_bytes = 0;
        free(q);
        free(qp);
        return;
    }
    bd_model_size size;
    for (int i = 0; i < b->nbl; i++) {
        const bd_layer *l = &b->layers[b->bl[i].layer];
        bd_qlayer *x = &q[b->bl[i].layer];
        /* a stand-in of the same table: sizes only, nothing to decode */
        *x = (bd_qlayer){.format = BD_FMT_INT, .d = 1, .k = 2, .n = bd_layer_params(l),
                         .nscales = l->rows, .ints = {.bits = 1, .per_channel = 1}};
        qp[b->bl[i].layer] = x;
    }
    bd_model_size_compute(g, b->layers, b->nlayers, qp, &size);
    /* the activations' quantizers: a scale and two bounds each, fp32 */
    b->fixed_bytes = size.compressed_bytes - size.code_bytes +
                     (b->acts ? 3 * (int64_t)sizeof(float) * b->nbl : 0);
    free(q);
    free(qp);
}

static bd_status setup(bitprune *b, const bd_graph *g, const bd_bitprune_options *o,
                       const bd_bitprune_io *io, const bd_layer *layers, int nlayers)
{
    *b = (bitprune){.o = o, .io = io, .layers = layers, .nlayers = nlayers};
    b->bl = calloc((size_t)nlayers + 1, sizeof *b->bl);
    int64_t *macs = b->macs = calloc((size_t)nlayers + 1, sizeof *macs);
    b->live = calloc(2 * (size_t)nlayers + 1, sizeof *b->live);
    if (!b->bl || !macs || !b->live)
        return bd_fail(BD_ENOMEM, "out of memory");
    for (int l = 0; l < nlayers; l++) {
        const bd_value *v = &g->values[layers[l].weight];
        if ((io->skip && io->skip[l]) || !v->init || v->init->dtype != BD_F32)
            continue;
        bd_act_grid had;
        if (o->activations && bd_act_quant_find(g, layers[l].node, &had))
            return bd_fail(BD_EINVAL,
                           "bitprune: layer '%s' reads an activation quantizer already (%d bits, "
                           "from an earlier run or the file): activations=1 would quantize its "
                           "input twice",
                           layers[l].name, had.bits);
        bp_layer *x = &b->bl[b->nbl++];
        *x = (bp_layer){.layer = l, .weight = layers[l].weight, .first = b->nt,
                        .ntens = o->granularity == BD_BITS_CHANNEL ? (int)layers[l].rows : 1,
                        .node = layers[l].node};
        BD_TRY(bd_pq_layout_init(&layers[l], 1, &x->lay));
        const size_t count = (size_t)x->lay.n;
        x->master = malloc(count * sizeof(float));
        x->sub = malloc(count * sizeof(float));
        x->q = malloc(count * sizeof(float));
        x->dq = malloc(count * sizeof(float));
        x->rowbits = malloc((size_t)x->lay.rows * sizeof(float));
        if (!x->master || !x->sub || !x->q || !x->dq || !x->rowbits)
            return bd_fail(BD_ENOMEM, "out of memory for layer '%s'", layers[l].name);
        b->nt += x->ntens;
    }
    if (b->nbl == 0)
        return bd_fail(BD_EINVAL, "bitprune: the model has no quantizable layer (Conv, Gemm or "
                                  "MatMul with a float weight) to learn bit lengths for");
    if (o->activations && g->opset < 11)
        return bd_fail(BD_EUNSUPPORTED,
                       "bitprune: the model's opset %lld has no Round (opset 11), which the "
                       "activations' quantizers in the saved file need",
                       (long long)g->opset);
    if (o->activations) {
        b->acts = 1;
        bd_bitprune_act_bits(o, &b->act_min, &b->act_max);
        b->na = malloc((size_t)b->nbl * sizeof *b->na);
        b->agrad = calloc((size_t)b->nbl, sizeof *b->agrad);
        b->ashare = calloc((size_t)b->nbl, sizeof *b->ashare);
        if (!b->na || !b->agrad || !b->ashare)
            return bd_fail(BD_ENOMEM, "out of memory");
        for (int i = 0; i < b->nbl; i++)
            b->na[i] = b->act_max;
        b->tf = (bd_input_transform){.ctx = b, .applies = act_applies, .forward = act_forward,
                                     .backward = act_backward};
    }
    bd_tensor *x = NULL;
    int label;
    bd_status s = bd_dataset_get(io->train, 0, &x, &label);
    if (s == BD_OK)
        s = bd_bitprune_macs(g, layers, nlayers, x, macs);
    bd_tensor_free(x);
    const size_t nt = (size_t)b->nt + 1;
    b->n = malloc(nt * sizeof *b->n);
    b->grad = calloc(nt, sizeof *b->grad);
    b->held = calloc(nt, sizeof *b->held);
    b->count = malloc(nt * sizeof *b->count);
    b->share = malloc(nt * sizeof *b->share);
    b->pshare = malloc(nt * sizeof *b->pshare);
    b->mshare = malloc(nt * sizeof *b->mshare);
    if (s == BD_OK && !(b->n && b->grad && b->held && b->count && b->share && b->pshare && b->mshare))
        s = bd_fail(BD_ENOMEM, "out of memory");
    double all_macs = 0;
    for (int i = 0; s == BD_OK && i < b->nbl; i++) {
        const bp_layer *l = &b->bl[i];
        b->total_weights += l->lay.n;
        all_macs += (double)macs[l->layer];
    }
    for (int i = 0; s == BD_OK && i < b->nbl; i++) {
        const bp_layer *l = &b->bl[i];
        for (int t = l->first; t < l->first + l->ntens; t++) {
            b->count[t] = (double)l->lay.n / l->ntens;
            b->n[t] = o->init_bits > 0 ? o->init_bits : o->max_bits;
            b->pshare[t] = b->count[t] / (double)b->total_weights;
            b->mshare[t] = all_macs > 0 ? (double)macs[l->layer] / l->ntens / all_macs : 0;
            b->share[t] = o->cost == BD_BITS_OPS ? b->mshare[t] : b->pshare[t];
        }
    }
    if (s == BD_OK)
        fixed_bytes(b, g);
    return s;
}

/* The activations' ranges (bitprune.h): the percentiles of every quantized
 * layer's input on the first ACT_CALIB_IMAGES training images, in batches
 * of the run's, as the model is before learning (float inputs all the way),
 * averaged over the batches and over the ranks of a job, so that every rank
 * has the same; then for each bit length the clipping of that range with
 * the least squared error on ACT_SAMPLE of those values, evenly strided
 * (the errors summed over the ranks too). */
enum { ACT_CALIB_IMAGES = 512, ACT_SAMPLE = 1 << 15 };

static bd_status act_observe(void *user, const bd_graph *g, int node, bd_tensor *const *in)
{
    (void)g;
    bitprune *b = user;
    const int i = act_index(b, node);
    if (i < 0)
        return BD_OK;
    BD_TRY(act_input(b, i, in[0]));
    const double p = b->o->act_percentile > 0 ? b->o->act_percentile : 99.99;
    float lo, hi;
    BD_TRY(bd_act_range(in[0]->data, bd_tensor_count(in[0]), p, &lo, &hi));
    b->calib[2 * i] += lo;
    b->calib[2 * i + 1] += hi;
    bp_layer *l = &b->bl[i];
    const int64_t count = bd_tensor_count(in[0]), want = ACT_SAMPLE / b->calib_batches;
    const int64_t take = count < want ? count : want;
    const float *x = in[0]->data;
    for (int64_t j = 0; j < take && l->nsample < ACT_SAMPLE; j++)
        l->sample[l->nsample++] = x[j * (count / take)];
    l->avalues = count / (in[0]->ndim > 0 ? in[0]->dims[0] : 1);
    return BD_OK;
}

/* Each layer's grid of every bit length in act_min..act_max (the only
 * ones Q_m reads): its range clipped by the ratio with the least error on
 * the sample; the others are left unclipped. */
static bd_status act_clipping(bitprune *b)
{
    const int lo = b->act_min, nb = b->act_max - lo + 1, per = nb * BD_INT_CLIP_STEPS;
    double *err = calloc((size_t)(b->nbl * per) + 1, sizeof *err);
    if (!err)
        return bd_fail(BD_ENOMEM, "out of memory for the activations' clipping");
    for (int i = 0; i < b->nbl; i++)
        for (int bits = lo; bits <= b->act_max; bits++)
            bd_act_clip_errors(b->bl[i].sample, b->bl[i].nsample, b->bl[i].alo, b->bl[i].ahi,
                               bits, err + i * per + (bits - lo) * BD_INT_CLIP_STEPS);
    bd_status s = bd_dist_sum_f64(err, b->nbl * per);
    for (int i = 0; s == BD_OK && i < b->nbl; i++) {
        bp_layer *l = &b->bl[i];
        for (int bits = 1; bits <= BD_INT_MAX_BITS; bits++) {
            const int learned = bits >= lo && bits <= b->act_max;
            const double *e = err + i * per + (learned ? bits - lo : 0) * BD_INT_CLIP_STEPS;
            int best = 0;
            for (int r = 1; learned && r < BD_INT_CLIP_STEPS; r++)
                best = e[r] < e[best] ? r : best;
            const double ratio = bd_int_clip_ratio(best);
            bd_act_grid_fit((float)(ratio * l->alo), (float)(ratio * l->ahi), bits,
                            &l->agrid[bits]);
        }
    }
    free(err);
    return s;
}

static bd_status act_ranges(bitprune *b, const bd_graph *g)
{
    const int64_t count = bd_dataset_count(b->io->train);
    const int64_t images = count < ACT_CALIB_IMAGES ? count : ACT_CALIB_IMAGES;
    const int64_t batch = b->o->train.batch < images ? b->o->train.batch : images;
    int64_t *idx = malloc((size_t)batch * sizeof *idx);
    int *labels = malloc((size_t)batch * sizeof *labels);
    double *sums = calloc((size_t)b->nbl * 2 + 1, sizeof *sums);
    bd_exec *ex = NULL;
    bd_status s = idx && labels && sums ? bd_exec_new(&ex, g, BD_EXEC_FUSE)
                                        : bd_fail(BD_ENOMEM, "out of memory");
    int last = 0;
    for (int i = 0; i < b->nbl; i++)
        last = b->bl[i].node > last ? b->bl[i].node : last;
    b->calib = sums;
    const int64_t batches = images / batch;
    b->calib_batches = batches;
    for (int i = 0; s == BD_OK && i < b->nbl; i++)
        if (!(b->bl[i].sample = malloc(ACT_SAMPLE * sizeof *b->bl[i].sample)))
            s = bd_fail(BD_ENOMEM, "out of memory for the activations' samples");
    if (s == BD_OK)
        bd_exec_set_hook(ex, act_observe, b);
    for (int64_t k = 0; s == BD_OK && k < batches; k++) {
        for (int64_t j = 0; j < batch; j++)
            idx[j] = k * batch + j;
        bd_tensor *x = NULL;
        s = bd_dataset_batch(b->io->train, idx, (int)batch, &x, labels);
        if (s == BD_OK)
            s = bd_exec_run_until(ex, &x, last);
        bd_tensor_free(x);
    }
    b->calib = NULL;
    for (int i = 0; s == BD_OK && i < 2 * b->nbl; i++)
        sums[i] /= (double)batches * bd_dist_size();
    if (s == BD_OK)
        s = bd_dist_sum_f64(sums, 2 * b->nbl);
    for (int i = 0; s == BD_OK && i < b->nbl; i++) {
        b->bl[i].alo = (float)sums[2 * i];
        b->bl[i].ahi = (float)sums[2 * i + 1];
    }
    if (s == BD_OK)
        s = act_clipping(b);
    for (int i = 0; i < b->nbl; i++) {
        free(b->bl[i].sample);
        b->bl[i].sample = NULL;
    }
    bd_exec_free(ex);
    free(idx);
    free(labels);
    free(sums);
    return s;
}

/* What target_mb leaves the codes, in memory-weighted mean bits. */
static bd_status size_target(bitprune *b)
{
    const double bytes = (double)b->o->target_mb * (1 << 20);
    const double bits = (bytes - (double)b->fixed_bytes) * 8 / (double)b->total_weights;
    if (bits < b->o->min_bits)
        return bd_fail(BD_EINVAL,
                       "bitprune: %g MiB cannot be met: at %d bits per weight the model takes "
                       "%.4f MiB",
                       (double)b->o->target_mb, b->o->min_bits,
                       bd_mb(b->fixed_bytes +
                             (int64_t)ceil((double)b->total_weights * b->o->min_bits / 8)));
    b->target = bits < b->o->max_bits ? bits : b->o->max_bits;
    return BD_OK;
}

void bd_bitprune_round(const double *n, const double *share, int nt, double target, int min_bits,
                       double *r)
{
    for (int t = 0; t < nt; t++)
        r[t] = floor(n[t] + 0.5);
    if (!(target > 0))
        return;
    for (;;) { /* down to the target */
        if (mean_of(r, share, nt) <= target + 1e-9)
            break;
        int best = -1;
        for (int t = 0; t < nt; t++) {
            if (r[t] <= min_bits)
                continue;
            const double up = r[t] - n[t], best_up = best >= 0 ? r[best] - n[best] : 0;
            if (best < 0 || up > best_up + 1e-12 ||
                (fabs(up - best_up) <= 1e-12 && share[t] > share[best]))
                best = t;
        }
        if (best < 0)
            return;
        r[best] -= 1;
    }
    for (;;) { /* the budget left back to those rounded down the most */
        const double mean = mean_of(r, share, nt);
        int best = -1;
        for (int t = 0; t < nt; t++) {
            if (!(r[t] < n[t]) || mean + share[t] > target + 1e-9)
                continue;
            const double down = n[t] - r[t], best_down = best >= 0 ? n[best] - r[best] : 0;
            if (best < 0 || down > best_down + 1e-12 ||
                (fabs(down - best_down) <= 1e-12 && share[t] < share[best]))
                best = t;
        }
        if (best < 0)
            return;
        r[best] += 1;
    }
}

/* The saved codec of each layer: the grids the hook applied, at the
 * rounded bits (a bit length per row with channel granularity, when the
 * rows differ), and its decoded weight in g. */
static bd_status final_codecs(bitprune *b, bd_graph *g, bd_qlayer *out)
{
    bd_status s = BD_OK;
    for (int i = 0; s == BD_OK && i < b->nbl; i++) {
        bp_layer *l = &b->bl[i];
        const int64_t rows = l->lay.rows;
        int32_t *rb = malloc((size_t)rows * sizeof *rb);
        if (!rb)
            return bd_fail(BD_ENOMEM, "out of memory");
        int uniform = 1;
        for (int64_t r = 0; r < rows; r++) {
            rb[r] = (int32_t)b->n[l->first + (l->ntens > 1 ? r : 0)];
            uniform &= rb[r] == rb[0];
        }
        bd_pq_gather(&l->lay, g->values[l->weight].init->data, l->sub);
        const bd_feedback_layer fl = {.w = l->sub, .rows = rows, .L = l->lay.row_len,
                                      .groups = 1};
        const bd_int_spec spec = {.bits = rb[0], .per_channel = 1};
        s = bd_int_fit(&fl, &spec, uniform ? NULL : rb, BD_OBJ_WEIGHT, NULL, &out[l->layer], l->q);
        free(rb);
        if (s != BD_OK) {
            char why[512];
            snprintf(why, sizeof why, "%s", bd_error_message());
            return bd_fail(s, "bitprune: layer '%s': %s", b->layers[l->layer].name, why);
        }
        bd_pq_scatter(&l->lay, l->q, g->values[l->weight].init->data);
    }
    return s;
}

/* The learning's mean n at each epoch's end, then the caller's callback. */
static void on_epoch(void *user, const bd_training_epoch *e, int epochs)
{
    bitprune *b = user;
    if (b->phase == 0 && b->per_epoch && e->epoch >= 1 && e->epoch <= epochs)
        b->per_epoch[e->epoch - 1] = mean_of(b->n, b->pshare, b->nt);
    /* the bits as the epoch ended, and so its phase, reach the front-end
     * before the epoch does: a resumed run's first epoch may be either
     * phase's */
    report_live(b, epochs > 0 ? b->steps / epochs * e->epoch : b->steps);
    if (b->io->on_epoch)
        b->io->on_epoch(b->io->user, e, epochs);
}

/* ---- checkpoints ------------------------------------------------------------------
 * A checkpoint (training.h) holds the weights, their momentum and the
 * epochs; the run's own state follows it: the phase, the bit lengths (in
 * the fine-tuning, the learned ones before rounding, which rounding turns
 * into the frozen ones again), lambda, the learning's mean per epoch, and
 * in the fine-tuning the learning's epochs for the report. */

static const char state_magic[8] = {'B', 'D', 'B', 'I', 'T', 'P', 'R', '1'};

typedef struct state_head {
    char magic[8];
    int64_t phase, nt, nbl, acts, epochs, learned_epochs;
    double lambda;
} state_head;

static size_t state_bytes(const bitprune *b, int64_t learned_epochs)
{
    return sizeof(state_head) +
           ((size_t)b->nt + (size_t)b->nbl + (size_t)b->o->train.epochs) * sizeof(double) +
           (size_t)learned_epochs * sizeof(bd_training_epoch) + sizeof(double);
}

static void put_bytes(unsigned char *p, size_t *at, const void *src, size_t n)
{
    if (n > 0)
        memcpy(p + *at, src, n);
    *at += n;
}

static bd_status state_save(void *ctx, int done, void **data, size_t *len)
{
    bitprune *b = ctx;
    const int tuning = b->phase == 1;
    if (!tuning && done >= 1 && done <= b->o->train.epochs) /* on_epoch sets it after this */
        b->per_epoch[done - 1] = mean_of(b->n, b->pshare, b->nt);
    const int64_t learned_epochs = tuning ? b->learn->epochs : 0;
    const size_t bytes = state_bytes(b, learned_epochs);
    unsigned char *p = malloc(bytes);
    if (!p)
        return bd_fail(BD_ENOMEM, "out of memory for the checkpoint");
    state_head h = {.phase = b->phase, .nt = b->nt, .nbl = b->nbl, .acts = b->acts,
                    .epochs = b->o->train.epochs, .learned_epochs = learned_epochs,
                    .lambda = b->lambda};
    memcpy(h.magic, state_magic, sizeof h.magic);
    size_t at = 0;
    put_bytes(p, &at, &h, sizeof h);
    put_bytes(p, &at, tuning ? b->learned : b->n, (size_t)b->nt * sizeof(double));
    for (int i = 0; i < b->nbl; i++) {
        const double m = !b->acts ? 0 : tuning ? b->act_learned[i] : b->na[i];
        put_bytes(p, &at, &m, sizeof m);
    }
    put_bytes(p, &at, b->per_epoch, (size_t)b->o->train.epochs * sizeof(double));
    if (tuning) {
        put_bytes(p, &at, b->learn->per_epoch, (size_t)learned_epochs * sizeof(bd_training_epoch));
        put_bytes(p, &at, &b->learn->images_per_second, sizeof(double));
    } else {
        const double none = 0;
        put_bytes(p, &at, &none, sizeof none);
    }
    *data = p;
    *len = at;
    return BD_OK;
}

/* Checks the state against the run (apply 0) or puts it back: in the
 * learning, n and the inputs' n; in the fine-tuning, what the learning
 * ended with (bd_bitprune_run rounds it again). */
static bd_status state_load(void *ctx, const void *data, size_t len, int apply)
{
    bitprune *b = ctx;
    state_head h;
    if (len < sizeof h)
        return bd_fail(BD_EFORMAT, "not a bitprune run's checkpoint");
    memcpy(&h, data, sizeof h);
    if (memcmp(h.magic, state_magic, sizeof h.magic))
        return bd_fail(BD_EFORMAT, "not a bitprune run's checkpoint");
    if (h.phase != b->phase)
        return bd_fail(BD_EINVAL, "written in the %s phase, not the %s",
                       h.phase ? "fine-tuning" : "learning", b->phase ? "fine-tuning" : "learning");
    if (h.nt != b->nt || h.nbl != b->nbl || h.acts != b->acts || h.epochs != b->o->train.epochs)
        return bd_fail(BD_EINVAL,
                       "written by a run with %lld bit lengths over %lld layers (activations %s) "
                       "learned in %lld epochs; this one has %d over %d (activations %s) in %d: "
                       "resume with the same model, granularity, activations and epochs",
                       (long long)h.nt, (long long)h.nbl, h.acts ? "on" : "off",
                       (long long)h.epochs, b->nt, b->nbl, b->acts ? "on" : "off",
                       b->o->train.epochs);
    if (h.learned_epochs < 0 || h.learned_epochs > h.epochs ||
        len != state_bytes(b, h.learned_epochs))
        return bd_fail(BD_EFORMAT, "a bitprune state of %zu bytes that do not add up", len);
    if (!apply)
        return BD_OK;
    const unsigned char *p = (const unsigned char *)data + sizeof h;
    const int tuning = b->phase == 1;
    bd_training_epoch *rec = NULL;
    if (tuning && !(rec = calloc((size_t)h.learned_epochs + 1, sizeof *rec)))
        return bd_fail(BD_ENOMEM, "out of memory");
    b->lambda = h.lambda;
    memcpy(tuning ? b->learned : b->n, p, (size_t)b->nt * sizeof(double));
    p += (size_t)b->nt * sizeof(double);
    for (int i = 0; i < b->nbl; i++, p += sizeof(double))
        if (b->acts)
            memcpy(tuning ? &b->act_learned[i] : &b->na[i], p, sizeof(double));
    memcpy(b->per_epoch, p, (size_t)b->o->train.epochs * sizeof(double));
    p += (size_t)b->o->train.epochs * sizeof(double);
    if (tuning) {
        bd_training_report_free(b->learn);
        memcpy(rec, p, (size_t)h.learned_epochs * sizeof *rec);
        p += (size_t)h.learned_epochs * sizeof *rec;
        b->learn->per_epoch = rec;
        b->learn->epochs = (int)h.learned_epochs;
        b->learn->first = (int)h.learned_epochs + 1; /* none in this call */
        memcpy(&b->learn->images_per_second, p, sizeof(double));
    }
    return BD_OK;
}

/* Where the checkpoint at path left the run: its phase, after checking it
 * is this run's (the rest is checked when the phase resumes). */
static bd_status resumed_phase(bitprune *b, const char *path, int *phase)
{
    void *data;
    size_t len;
    BD_TRY(bd_training_checkpoint_hook_state(path, &data, &len));
    state_head h;
    bd_status s = BD_OK;
    *phase = 0;
    if (len < sizeof h || (memcpy(&h, data, sizeof h), memcmp(h.magic, state_magic, 8)) ||
        (h.phase != 0 && h.phase != 1)) {
        s = bd_fail(BD_EINVAL, "%s is not a bitprune run's checkpoint", path);
    } else if (h.phase == 1) { /* the learning's end back now: the fine-tuning resumes */
        b->phase = 1;
        if ((s = state_load(b, data, len, 0)) == BD_OK)
            s = state_load(b, data, len, 1);
        b->phase = 0;
        if (s != BD_OK)
            s = bd_error_context(s, "%s", path);
    }
    if (s == BD_OK)
        *phase = (int)h.phase;
    free(data);
    return s;
}

static bd_status run_phase(bitprune *b, bd_graph *g, const bd_training_options *to, int resume,
                           bd_training_report *rep)
{
    const bd_training_hook hook = {.ctx = b, .apply = hook_apply, .restore = hook_restore,
                                   .acts = b->acts ? &b->tf : NULL, .save = state_save,
                                   .load = state_load};
    const bd_training_io tio = {.train = b->io->train, .eval = b->io->eval, .pp = b->io->pp,
                                .teacher = b->io->teacher, .hook = &hook,
                                .checkpoint = b->io->checkpoint, .resume = resume,
                                .progress = b->io->progress, .on_epoch = on_epoch,
                                .user = b};
    const int64_t count = bd_dataset_count(b->io->train);
    const int64_t batch = to->batch < count ? to->batch : count;
    b->steps = (to->steps > 0 ? to->steps : count / batch) * to->epochs;
    bd_status s = bd_training_run(g, to, &tio, rep);
    if (s == BD_OK)
        s = b->failed;
    if (s == BD_OK)
        report_live(b, b->steps);
    return s;
}

bd_status bd_bitprune_run(bd_graph *g, const bd_bitprune_options *opt, const bd_bitprune_io *io,
                          bd_qlayer *q, bd_bitprune_report *report)
{
    memset(report, 0, sizeof *report);
    bd_bitprune_options o = *opt;
    BD_TRY(check(&o));
    if (!io->train || bd_dataset_count(io->train) < 1)
        return bd_fail(BD_EINVAL, "bitprune: no training data");
    bd_layer *layers;
    int nlayers;
    BD_TRY(bd_layers_find(g, &layers, &nlayers));
    bitprune b;
    bd_status s = setup(&b, g, &o, io, layers, nlayers);
    if (s == BD_OK && o.target_mb > 0)
        s = size_target(&b);
    else if (s == BD_OK && o.target_bits > 0)
        b.target = o.target_bits;
    b.lambda = o.lambda >= 0 ? o.lambda : 0;
    if (s == BD_OK && b.acts)
        s = act_ranges(&b, g);
    if (s == BD_OK)
        b.start = mean_of(b.n, b.pshare, b.nt);
    if (s == BD_OK && (!(b.per_epoch = calloc((size_t)o.train.epochs + 1, sizeof *b.per_epoch)) ||
                       !(b.learned = calloc((size_t)b.nt + 1, sizeof *b.learned)) ||
                       !(b.act_learned = calloc((size_t)b.nbl + 1, sizeof *b.act_learned))))
        s = bd_fail(BD_ENOMEM, "out of memory");
    b.learn = &report->learn;
    int phase = 0; /* where a resumed run stood */
    if (s == BD_OK && io->resume)
        s = io->checkpoint ? resumed_phase(&b, io->checkpoint, &phase)
                           : bd_fail(BD_EINVAL, "bitprune: resuming needs a checkpoint file");
    if (s == BD_OK && phase == 0) {
        s = run_phase(&b, g, &o.train, io->resume, &report->learn);
        memcpy(b.learned, b.n, (size_t)b.nt * sizeof *b.n);
        if (b.acts)
            memcpy(b.act_learned, b.na, (size_t)b.nbl * sizeof *b.na);
    } else if (s == BD_OK) { /* the learning's end, from the checkpoint */
        memcpy(b.n, b.learned, (size_t)b.nt * sizeof *b.n);
        if (b.acts)
            memcpy(b.na, b.act_learned, (size_t)b.nbl * sizeof *b.na);
    }
    double learned_mean = 0;
    double *per_layer = calloc((size_t)nlayers + 1, sizeof *per_layer);
    if (s == BD_OK && !per_layer)
        s = bd_fail(BD_ENOMEM, "out of memory");
    if (s == BD_OK) {
        learned_mean = mean_of(b.n, b.pshare, b.nt);
        for (int i = 0; i < b.nbl; i++) {
            double sum = 0;
            for (int t = b.bl[i].first; t < b.bl[i].first + b.bl[i].ntens; t++)
                sum += b.n[t];
            per_layer[i] = sum / b.bl[i].ntens;
            if (b.acts) /* to nearest: the target is the weights' */
                b.na[i] = floor(b.na[i] + 0.5);
        }
        bd_bitprune_round(b.n, b.pshare, b.nt, b.target, o.min_bits, b.grad);
        memcpy(b.n, b.grad, (size_t)b.nt * sizeof *b.n);
        b.frozen = 1;
        b.phase = 1;
    }
    if (s == BD_OK && o.finetune_epochs > 0) {
        bd_training_options ft = o.train;
        ft.epochs = o.finetune_epochs;
        ft.lr = o.finetune_lr > 0 ? o.finetune_lr : o.train.lr / 10;
        ft.init = 0;
        ft.seed = o.train.seed + 1; /* another order of the images than the learning's */
        s = run_phase(&b, g, &ft, phase == 1, &report->tune);
    }
    bd_qlayer *fresh = calloc((size_t)nlayers + 1, sizeof *fresh);
    if (s == BD_OK && !fresh)
        s = bd_fail(BD_ENOMEM, "out of memory");
    if (s == BD_OK)
        s = final_codecs(&b, g, fresh);
    if (s == BD_OK) {
        report->nlayers = b.nbl;
        report->layers = calloc((size_t)b.nbl + 1, sizeof *report->layers);
        report->mean_per_epoch = b.per_epoch;
        b.per_epoch = NULL;
        if (!report->layers)
            s = bd_fail(BD_ENOMEM, "out of memory");
    }
    if (s == BD_OK) {
        double unweighted = 0;
        for (int i = 0; i < b.nbl; i++) {
            const bp_layer *l = &b.bl[i];
            bd_bitprune_layer *r = &report->layers[i];
            double sum = 0;
            int lo = 99, hi = 0;
            for (int t = l->first; t < l->first + l->ntens; t++) {
                sum += b.n[t];
                lo = (int)b.n[t] < lo ? (int)b.n[t] : lo;
                hi = (int)b.n[t] > hi ? (int)b.n[t] : hi;
            }
            *r = (bd_bitprune_layer){.layer = l->layer, .learned = per_layer[i],
                                     .bits = sum / l->ntens, .min_bits = lo, .max_bits = hi,
                                     .params = l->lay.n,
                                     .macs = b.macs[l->layer]};
            unweighted += r->bits;
            if (b.acts) {
                r->act_learned = b.act_learned[i];
                r->act_lo = l->alo;
                r->act_hi = l->ahi;
                r->act_values = l->avalues;
                memcpy(r->act_grids, l->agrid, sizeof r->act_grids);
                r->act = l->agrid[(int)b.na[i]];
                report->act_mean += b.na[i] / b.nbl;
                for (int t = l->first; t < l->first + l->ntens; t++)
                    report->bitops += b.mshare[t] * b.n[t] * b.na[i];
            }
        }
        report->mean_bits = mean_of(b.n, b.pshare, b.nt);
        report->ops_bits = mean_of(b.n, b.mshare, b.nt);
        report->mean_bits_layers = unweighted / b.nbl;
        report->lambda = b.lambda;
        report->learned_mean = learned_mean;
        for (int l = 0; l < nlayers; l++) {
            bd_qlayer_free(&q[l]);
            q[l] = fresh[l];
        }
        free(fresh);
        fresh = NULL;
    }
    if (fresh)
        for (int l = 0; l < nlayers; l++)
            bd_qlayer_free(&fresh[l]);
    free(fresh);
    free(per_layer);
    if (s != BD_OK)
        bd_bitprune_report_free(report);
    bp_free(&b);
    free(layers);
    return s;
}

bd_status bd_bitprune_act_insert(bd_graph *g, const bd_bitprune_report *r)
{
    bd_layer *layers;
    int n;
    BD_TRY(bd_layers_find(g, &layers, &n));
    bd_status s = BD_OK;
    /* the last layer first: a quantizer goes before its layer, so the
     * earlier layers keep their places */
    for (int j = r->nlayers - 1; s == BD_OK && j >= 0; j--) {
        const bd_bitprune_layer *l = &r->layers[j];
        if (l->act.bits == 0)
            continue;
        if (l->layer >= n)
            s = bd_fail(BD_EINVAL, "bitprune: the model has %d layers, not the run's %d", n,
                        l->layer + 1);
        else
            s = bd_act_quant_insert(g, layers[l->layer].node, &l->act, layers[l->layer].name);
    }
    free(layers);
    return s;
}
