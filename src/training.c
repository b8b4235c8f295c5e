#include "training.h"

#include <inttypes.h>
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "eval.h"
#include "fileio.h"
#include "grad.h"
#include "layers.h"
#include "pq.h"
#include "rng.h"
#include "train.h"

static const char *const schedule_words[] = {"constant", "step", "cosine", "onecycle", NULL};
static const char *const loss_words[] = {"kl", "ce", NULL};
static const char *const bn_words[] = {"train", "frozen", NULL};
static const char *const init_words[] = {"keep", "scratch", NULL};

static bd_status parse_augment(const char *where, const char *v, void *field)
{
    return bd_augment_parse(where, v, field);
}

static bd_status parse_noise(const char *where, const char *v, void *field)
{
    return bd_noise_parse(where, v, field);
}

#define OFF(f) offsetof(bd_training_options, f)
const bd_opt bd_training_opts[] = {
    {"epochs", BD_OPT_INT, OFF(epochs), 1, 100000, NULL, 0, NULL, "N", "passes over the data (default 1)"},
    {"steps", BD_OPT_INT64, OFF(steps), 0, 1e12, NULL, 0, NULL, "N",
     "steps per epoch (default 0: one pass over the data)"},
    {"batch", BD_OPT_INT, OFF(batch), 1, 65536, NULL, 0, NULL, "B", "images per step (default 128)"},
    {"lr", BD_OPT_FLOAT, OFF(lr), 1e-12, 1e3, NULL, 0, NULL, "X",
     "learning rate, the peak for onecycle (default 0.1)"},
    {"momentum", BD_OPT_FLOAT, OFF(momentum), 0, 0.999, NULL, 0, NULL, "X",
     "SGD momentum (default 0.9; onecycle cycles it +-0.05)"},
    {"nesterov", BD_OPT_FLAG, OFF(nesterov), 0, 1, NULL, 0, NULL, NULL, "Nesterov momentum"},
    {"wd", BD_OPT_FLOAT, OFF(wd), 0, 1, NULL, 0, NULL, "X",
     "weight decay on weights, not biases or BatchNorm (default 5e-4)"},
    {"schedule", BD_OPT_WORD, OFF(schedule), 0, 0, schedule_words, 0, NULL,
     "constant|step|cosine|onecycle", "learning rate schedule (default cosine)"},
    {"step", BD_OPT_INT, OFF(step), 1, 100000, NULL, 0, NULL, "N",
     "step schedule: epochs between decays (default 30)"},
    {"gamma", BD_OPT_FLOAT, OFF(gamma), 1e-6, 1, NULL, 0, NULL, "X",
     "step schedule: the decay (default 0.1)"},
    {"warmup", BD_OPT_FLOAT, OFF(warmup), 0.001, 0.999, NULL, 0, NULL, "X",
     "onecycle: share of the steps spent rising (default 0.25)"},
    {"div", BD_OPT_FLOAT, OFF(div), 1, 1e6, NULL, 0, NULL, "X",
     "onecycle: the first lr is lr/div (default 10)"},
    {"final_div", BD_OPT_FLOAT, OFF(final_div), 1, 1e9, NULL, 0, NULL, "X",
     "onecycle: the last lr is lr/(div*final_div) (default 100)"},
    {"smoothing", BD_OPT_FLOAT, OFF(smoothing), 0, 0.999, NULL, 0, NULL, "X",
     "label smoothing (default 0)"},
    {"loss", BD_OPT_WORD, OFF(loss), 0, 0, loss_words, 0, NULL, "ce|kl",
     "labels' cross-entropy, or distillation from the teacher (default ce)"},
    {"bn", BD_OPT_WORD, OFF(bn), 0, 0, bn_words, 0, NULL, "train|frozen",
     "BatchNorm on batch statistics, running ones updated (default train)"},
    {"bn_momentum", BD_OPT_FLOAT, OFF(bn_momentum), 1e-6, 1, NULL, 0, NULL, "X",
     "BatchNorm running statistics' momentum (default 0.1)"},
    {"augment", BD_OPT_PARSE, OFF(augment), 0, 0, NULL, 0, parse_augment, "LIST",
     "none, or crop=P,rrc,flip (default: crop=2,flip for IDX data, rrc,flip for images)"},
    {"init", BD_OPT_WORD, OFF(init), 0, 0, init_words, 0, NULL, "keep|scratch",
     "start from the loaded weights or from a seeded re-initialisation (default keep)"},
    {"seed", BD_OPT_INT64, OFF(seed), 0, 9007199254740992.0, NULL, 0, NULL, "S",
     "order of the images, augmentation, noise, initialisation (default 0)"},
    {"quant_noise", BD_OPT_PARSE, OFF(noise), 0, 0, NULL, 0, parse_noise, "KIND:p=P",
     "Quant-Noise: pq, pq-centroid or intB, e.g. pq:p=0.1,regime=small (default none)"},
    {"eval_quantized", BD_OPT_FLAG, OFF(eval_quantized), 0, 1, NULL, 0, NULL, NULL,
     "also evaluate quant_noise's fully quantized model every epoch"},
    {"eval_n", BD_OPT_INT64, OFF(eval_n), 0, 1e12, NULL, 0, NULL, "N",
     "evaluate on the first N images only (default 0: all)"},
    {NULL, 0, 0, 0, 0, NULL, 0, NULL, NULL, NULL}};
#undef OFF

void bd_training_options_init(bd_training_options *o)
{
    *o = (bd_training_options){.epochs = 1, .batch = 128, .lr = 0.1f, .momentum = 0.9f,
                               .wd = 5e-4f, .schedule = BD_SCHED_COSINE, .step = 30,
                               .gamma = 0.1f, .warmup = 0.25f, .div = 10, .final_div = 100,
                               .loss = BD_LOSS_CE, .bn_momentum = 0.1f};
}

void bd_training_report_free(bd_training_report *r)
{
    free(r->per_epoch);
    memset(r, 0, sizeof *r);
}

/* ---- the parameters --------------------------------------------------------- */

static int float_init(const bd_graph *g, int v)
{
    return v >= 0 && g->values[v].init && g->values[v].init->dtype == BD_F32;
}

/* Which inputs of a node are trained parameters (a bit per input index). */
static unsigned trained_inputs(const bd_graph *g, const bd_node *n)
{
    const char *op = n->op;
    if (!strcmp(op, "Conv") || !strcmp(op, "Gemm") || !strcmp(op, "ConvTranspose"))
        return 0x6; /* weight, bias */
    if (!strcmp(op, "MatMul"))
        return 0x3;
    if (!strcmp(op, "BatchNormalization") || !strcmp(op, "LayerNormalization") ||
        !strcmp(op, "InstanceNormalization"))
        return 0x6; /* scale, shift; never the running statistics */
    if (!strcmp(op, "PRelu"))
        return 0x2;
    if (!strcmp(op, "Add") || !strcmp(op, "Mul")) {
        unsigned m = 0;
        for (int k = 0; k < 2 && k < n->ninputs; k++)
            if (float_init(g, n->inputs[k]) && bd_tensor_count(g->values[n->inputs[k]].init) > 1)
                m |= 1u << k;
        return m;
    }
    return 0;
}

bd_status bd_training_params(const bd_graph *g, int **ids, int *n)
{
    *ids = malloc(((size_t)g->nvalues + 1) * sizeof **ids);
    unsigned char *seen = calloc((size_t)g->nvalues + 1, 1);
    if (!*ids || !seen) {
        free(*ids);
        free(seen);
        return bd_fail(BD_ENOMEM, "out of memory");
    }
    *n = 0;
    for (int i = 0; i < g->nnodes; i++) {
        const bd_node *nd = &g->nodes[i];
        unsigned m = trained_inputs(g, nd);
        for (int k = 0; k < nd->ninputs && k < 8; k++) {
            int v = nd->inputs[k];
            if ((m >> k & 1) && float_init(g, v) && !seen[v]) {
                seen[v] = 1;
                (*ids)[(*n)++] = v;
            }
        }
    }
    free(seen);
    return BD_OK;
}

bd_status bd_training_reinit(bd_graph *g, uint64_t seed)
{
    for (int i = 0; i < g->nnodes; i++) {
        const bd_node *nd = &g->nodes[i];
        const int lin = !strcmp(nd->op, "Conv") || !strcmp(nd->op, "Gemm");
        const int bn = !strcmp(nd->op, "BatchNormalization");
        if (lin && nd->ninputs > 1 && float_init(g, nd->inputs[1])) {
            const bd_tensor *w = g->values[nd->inputs[1]].init;
            /* fan_in: Conv [Cout, Cin/g, kh, kw]; Gemm B [N, K] with transB,
             * else [K, N] */
            int64_t fan_in = bd_tensor_count(w) / w->dims[0];
            if (!strcmp(nd->op, "Gemm") && !bd_attr_int(nd, "transB", 0))
                fan_in = w->dims[0];
            const double bound = 1.0 / sqrt((double)(fan_in > 0 ? fan_in : 1));
            for (int k = 1; k <= 2 && k < nd->ninputs; k++) {
                if (!float_init(g, nd->inputs[k]))
                    continue;
                bd_tensor *t = g->values[nd->inputs[k]].init;
                uint64_t rng = bd_rng_stream(seed, 0x1417, (uint64_t)nd->inputs[k], 0);
                float *p = t->data;
                for (int64_t j = 0; j < bd_tensor_count(t); j++)
                    p[j] = (float)((2 * bd_rng_uniform(&rng) - 1) * bound);
            }
        }
        for (int k = 1; bn && k <= 4 && k < nd->ninputs; k++) {
            if (!float_init(g, nd->inputs[k]))
                continue;
            bd_tensor *t = g->values[nd->inputs[k]].init;
            float *p = t->data;
            const float v = k == 1 || k == 4 ? 1.0f : 0.0f; /* scale, var: 1; shift, mean: 0 */
            for (int64_t j = 0; j < bd_tensor_count(t); j++)
                p[j] = v;
        }
    }
    return BD_OK;
}

/* ---- the schedule ------------------------------------------------------------ */

static double anneal(double from, double to, double pct)
{
    return to + (from - to) / 2 * (cos(M_PI * pct) + 1);
}

void bd_training_schedule(const bd_training_options *o, int64_t t, int64_t T,
                          int64_t steps_per_epoch, float *lr, float *momentum)
{
    double r = o->lr, m = o->momentum;
    switch (o->schedule) {
    case BD_SCHED_STEP:
        r *= pow(o->gamma, (double)(t / (steps_per_epoch * (o->step > 0 ? o->step : 1))));
        break;
    case BD_SCHED_COSINE:
        r = anneal(o->lr, 0, T > 1 ? (double)t / (double)T : 0);
        break;
    case BD_SCHED_ONECYCLE: {
        /* PyTorch's OneCycleLR (two phases, cosine annealing) */
        const double first = o->lr / o->div, last = first / o->final_div;
        const double up = (double)o->warmup * (double)T - 1, end = (double)T - 1;
        const double hi = fmin(m + 0.05, 0.999), lo = fmax(m - 0.05, 0);
        if ((double)t <= up) {
            const double pct = up > 0 ? (double)t / up : 1;
            r = anneal(first, o->lr, pct);
            m = anneal(hi, lo, pct);
        } else {
            const double pct = end > up ? ((double)t - up) / (end - up) : 1;
            r = anneal(o->lr, last, pct);
            m = anneal(lo, hi, pct);
        }
        break;
    }
    default:
        break;
    }
    *lr = (float)r;
    *momentum = (float)m;
}

/* ---- a run ------------------------------------------------------------------- */

/* A quantized PQ layer whose centroids train. */
typedef struct codebook {
    int layer;     /* index in run.layers */
    int param;     /* its weight's index in run.params (the backward's gradient) */
    float *master; /* k x d, float32 while training */
    float *moment;
    float *grad;
} codebook;

typedef struct run {
    bd_graph *g;
    const bd_training_options *o;
    const bd_training_io *io;
    int nparams;
    int *params;
    float **moment;      /* per parameter */
    int *decay;          /* per parameter: weight decay applies (ndim > 1) */
    bd_layer *layers;
    int nlayers;
    bd_tensor **lgrads;  /* per layer: its weight's gradient this step (or NULL) */
    int *layer_param;    /* per layer: index into params, or -1 */
    bd_noise *noise;
    bd_layer_plan *plan; /* the noise's layout, quantized layers left out */
    codebook *cb;
    int ncb;
    int *is_layer_param; /* per parameter: its update is a codebook's (1) or none (2) */
    bd_train *tr;
    int64_t count, steps, total;
    int64_t *idx;
    int *labels;
} run;

static void run_free(run *r)
{
    for (int i = 0; r->moment && i < r->nparams; i++)
        free(r->moment[i]);
    free(r->moment);
    free(r->decay);
    free(r->params);
    free(r->layers);
    free(r->lgrads);
    free(r->layer_param);
    bd_noise_free(r->noise);
    for (int i = 0; r->cb && i < r->ncb; i++) {
        free(r->cb[i].master);
        free(r->cb[i].moment);
        free(r->cb[i].grad);
    }
    free(r->cb);
    free(r->plan);
    free(r->is_layer_param);
    bd_train_free(r->tr);
    free(r->idx);
    free(r->labels);
}

static bd_status check_options(const bd_training_options *o, const bd_training_io *io)
{
    if (!io->train)
        return bd_fail(BD_EINVAL, "train: no training data");
    if (bd_dataset_count(io->train) < 1)
        return bd_fail(BD_EINVAL, "train: %s has no images", bd_dataset_spec(io->train));
    if (o->loss == BD_LOSS_CE && bd_dataset_classes(io->train) < 1)
        return bd_fail(BD_EINVAL, "train: %s has no labels for the ce loss",
                       bd_dataset_spec(io->train));
    if (o->loss == BD_LOSS_KL && !io->teacher)
        return bd_fail(BD_EINVAL, "train: loss=kl distils from a teacher, and none was given");
    if (o->epochs < 1 || o->batch < 1 || !(o->lr > 0))
        return bd_fail(BD_EINVAL, "train: epochs, batch and lr must be positive");
    if (!(o->noise.p >= 0 && o->noise.p <= 1))
        return bd_fail(BD_EINVAL, "train: quant-noise p must lie in [0, 1], not %g", o->noise.p);
    if (o->eval_quantized && o->noise.kind == BD_NOISE_NONE)
        return bd_fail(BD_EINVAL,
                       "train: eval_quantized evaluates the noise's quantizer: set quant_noise too");
    return BD_OK;
}

static int is_quantized(const run *r, int l) { return r->io->q && r->io->q[l].k > 0; }

/* The noise's plan without the quantized layers, and a codebook to train
 * for every quantized PQ layer; an int layer's weight is no parameter. */
static bd_status quantized_layers(run *r)
{
    const int n = r->nlayers;
    r->plan = calloc((size_t)n + 1, sizeof *r->plan);
    r->cb = calloc((size_t)n + 1, sizeof *r->cb);
    r->is_layer_param = calloc((size_t)r->nparams + 1, sizeof *r->is_layer_param);
    if (!r->plan || !r->cb || !r->is_layer_param)
        return bd_fail(BD_ENOMEM, "out of memory");
    if (r->io->plan)
        memcpy(r->plan, r->io->plan, (size_t)n * sizeof *r->plan);
    else if (r->o->noise.kind != BD_NOISE_NONE)
        BD_TRY(bd_plan_regime(r->layers, n, r->o->noise.regime, 0, r->plan));
    for (int l = 0; l < n; l++) {
        if (!is_quantized(r, l))
            continue;
        r->plan[l].quantize = 0;
        const bd_qlayer *q = &r->io->q[l];
        const int pi = r->layer_param[l];
        if (pi < 0)
            continue;
        if (q->format != BD_FMT_PQ) {
            r->is_layer_param[pi] = 2;
            continue;
        }
        codebook *c = &r->cb[r->ncb++];
        const size_t count = (size_t)q->k * (size_t)q->d;
        c->layer = l;
        c->param = pi;
        c->master = malloc(count * sizeof *c->master);
        c->moment = calloc(count, sizeof *c->moment);
        c->grad = malloc(count * sizeof *c->grad);
        if (!c->master || !c->moment || !c->grad)
            return bd_fail(BD_ENOMEM, "out of memory for the codebook of '%s'", r->layers[l].name);
        memcpy(c->master, q->centroids, count * sizeof *c->master);
        r->is_layer_param[pi] = 1;
    }
    return BD_OK;
}

static bd_status run_init(run *r, bd_graph *g, const bd_training_options *o,
                          const bd_training_io *io)
{
    memset(r, 0, sizeof *r);
    r->g = g;
    r->o = o;
    r->io = io;
    BD_TRY(bd_training_params(g, &r->params, &r->nparams));
    if (r->nparams == 0)
        return bd_fail(BD_EINVAL, "train: the model has no float parameters to train");
    BD_TRY(bd_layers_find(g, &r->layers, &r->nlayers));
    r->moment = calloc((size_t)r->nparams + 1, sizeof *r->moment);
    r->decay = calloc((size_t)r->nparams + 1, sizeof *r->decay);
    r->lgrads = calloc((size_t)r->nlayers + 1, sizeof *r->lgrads);
    r->layer_param = malloc(((size_t)r->nlayers + 1) * sizeof *r->layer_param);
    if (!r->moment || !r->decay || !r->lgrads || !r->layer_param)
        return bd_fail(BD_ENOMEM, "out of memory");
    for (int l = 0; l < r->nlayers; l++) {
        r->layer_param[l] = -1;
        for (int i = 0; i < r->nparams; i++)
            if (r->params[i] == r->layers[l].weight)
                r->layer_param[l] = i;
    }
    BD_TRY(quantized_layers(r));
    for (int i = 0; i < r->nparams; i++) {
        const bd_tensor *t = g->values[r->params[i]].init;
        r->decay[i] = t->ndim > 1;
        if (!r->is_layer_param[i] &&
            !(r->moment[i] = calloc((size_t)bd_tensor_count(t) + 1, sizeof(float))))
            return bd_fail(BD_ENOMEM, "out of memory for the optimiser's momentum");
    }
    if (o->noise.kind != BD_NOISE_NONE)
        BD_TRY(bd_noise_new(&r->noise, g, r->layers, r->nlayers, r->plan, &o->noise));
    r->count = bd_dataset_count(io->train);
    const int batch = o->batch < r->count ? o->batch : (int)r->count;
    r->steps = o->steps > 0 ? o->steps : r->count / batch;
    r->total = r->steps * o->epochs;
    r->idx = malloc((size_t)batch * sizeof *r->idx);
    r->labels = malloc((size_t)batch * sizeof *r->labels);
    if (!r->idx || !r->labels)
        return bd_fail(BD_ENOMEM, "out of memory");
    bd_train_options to = {.bn_train = o->bn == 0, .bn_momentum = o->bn_momentum};
    return bd_train_new(&r->tr, g, r->params, r->nparams, &to);
}

/* PyTorch's SGD: g += wd p; v = m v + g; p -= lr (nesterov ? g + m v : v). */
static void sgd(float *p, float *v, const float *grad, int64_t count, float lr, float m, float wd,
                int nesterov)
{
    for (int64_t i = 0; i < count; i++) {
        const float g = grad[i] + wd * p[i];
        v[i] = m * v[i] + g;
        p[i] -= lr * (nesterov ? g + m * v[i] : v[i]);
    }
}

static int64_t argmax_hits(const bd_tensor *logits, const int *labels)
{
    const int64_t n = logits->dims[0], c = logits->dims[1];
    const float *x = logits->data;
    int64_t hits = 0;
    for (int64_t i = 0; i < n; i++) {
        int64_t best = 0;
        for (int64_t j = 1; j < c; j++)
            if (x[i * c + j] > x[i * c + best])
                best = j;
        hits += best == labels[i];
    }
    return hits;
}

/* Writes layer c's weight decoded from centroids. */
static bd_status decode_codebook(run *r, const codebook *c, float *centroids)
{
    bd_qlayer view = r->io->q[c->layer];
    view.centroids = centroids;
    return bd_qlayer_decode(&view, &r->layers[c->layer],
                            r->g->values[r->layers[c->layer].weight].init->data);
}

/* One step on batch x: noise in, forward, loss, backward, noise out, SGD. */
static bd_status step(run *r, const bd_tensor *x, int64_t t, float lr, float m, double *loss,
                      int64_t *hits)
{
    const bd_training_options *o = r->o;
    bd_tensor *logits = NULL, *target = NULL, *dlogits = NULL;
    bd_tensor **grads = calloc((size_t)r->nparams + 1, sizeof *grads);
    if (!grads)
        return bd_fail(BD_ENOMEM, "out of memory");
    bd_status s = r->noise ? bd_noise_apply(r->noise, r->g, o->seed, t) : BD_OK;
    if (s == BD_OK)
        s = bd_train_forward(r->tr, x, &logits);
    if (s == BD_OK && o->loss == BD_LOSS_KL)
        s = bd_exec_run1(r->io->teacher, x, &target);
    if (s == BD_OK)
        s = o->loss == BD_LOSS_KL
                ? bd_loss_kl(logits, target, loss, &dlogits)
                : bd_loss_ce_smooth(logits, r->labels, o->smoothing, loss, &dlogits);
    if (s == BD_OK)
        s = bd_train_backward(r->tr, dlogits, grads);
    if (r->noise) {
        for (int l = 0; l < r->nlayers; l++)
            r->lgrads[l] = s == BD_OK && r->layer_param[l] >= 0 ? grads[r->layer_param[l]] : NULL;
        bd_noise_restore(r->noise, r->g, r->lgrads);
    }
    for (int i = 0; s == BD_OK && i < r->nparams; i++) {
        bd_tensor *p = r->g->values[r->params[i]].init;
        if (!r->is_layer_param[i])
            sgd(p->data, r->moment[i], grads[i]->data, bd_tensor_count(p), lr, m,
                r->decay[i] ? o->wd : 0, o->nesterov);
    }
    for (int i = 0; s == BD_OK && i < r->ncb; i++) {
        codebook *c = &r->cb[i];
        const bd_layer *l = &r->layers[c->layer];
        const bd_qlayer *q = &r->io->q[c->layer];
        bd_centroid_gradient(l, q, grads[c->param]->data, c->grad);
        sgd(c->master, c->moment, c->grad, (int64_t)q->k * q->d, lr, m, o->wd, o->nesterov);
        s = decode_codebook(r, c, c->master);
    }
    *hits = s == BD_OK ? argmax_hits(logits, r->labels) : 0;
    for (int i = 0; i < r->nparams; i++)
        bd_tensor_free(grads[i]);
    free(grads);
    bd_tensor_free(logits);
    bd_tensor_free(target);
    bd_tensor_free(dlogits);
    return s;
}

/* ---- checkpoints ------------------------------------------------------------
 * A checkpoint holds every float initializer of the model by name (weights,
 * biases, BatchNorm parameters and running statistics), the momentum of
 * every trained one, the epochs done with their results, and what the
 * stream of random choices depends on (seed, steps per epoch), checked on
 * resume. Everything else a run does is a function of those. */

static const char magic[8] = {'B', 'D', 'T', 'R', 'A', 'I', 'N', '1'};

typedef struct buf {
    unsigned char *p;
    size_t len, cap;
    int failed;
} buf;

static void put(buf *b, const void *v, size_t n)
{
    if (b->failed)
        return;
    if (b->len + n > b->cap) {
        size_t cap = (b->cap ? b->cap * 2 : 4096) + n;
        unsigned char *p = realloc(b->p, cap);
        if (!p) {
            b->failed = 1;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, v, n);
    b->len += n;
}

static void put_i64(buf *b, int64_t v) { put(b, &v, sizeof v); }

static int param_index(const run *r, int v)
{
    for (int i = 0; i < r->nparams; i++)
        if (r->params[i] == v)
            return i;
    return -1;
}

static bd_status checkpoint_write(const run *r, const char *path, const bd_training_epoch *rec,
                                  int done)
{
    buf b = {0};
    put(&b, magic, sizeof magic);
    put_i64(&b, done);
    put_i64(&b, r->steps);
    put_i64(&b, (int64_t)r->o->seed);
    for (int e = 0; e < done; e++)
        put(&b, &rec[e], sizeof rec[e]);
    int64_t nv = 0;
    for (int v = 0; v < r->g->nvalues; v++)
        nv += float_init(r->g, v);
    put_i64(&b, nv);
    for (int v = 0; v < r->g->nvalues; v++) {
        if (!float_init(r->g, v))
            continue;
        const bd_tensor *t = r->g->values[v].init;
        const int64_t len = (int64_t)strlen(r->g->values[v].name), count = bd_tensor_count(t);
        const int pi = param_index(r, v);
        put_i64(&b, len);
        put(&b, r->g->values[v].name, (size_t)len);
        put_i64(&b, count);
        put(&b, t->data, (size_t)count * sizeof(float));
        put_i64(&b, pi >= 0 && r->moment[pi]);
        if (pi >= 0 && r->moment[pi])
            put(&b, r->moment[pi], (size_t)count * sizeof(float));
    }
    put_i64(&b, r->ncb);
    for (int i = 0; i < r->ncb; i++) {
        const codebook *c = &r->cb[i];
        const char *name = r->layers[c->layer].name;
        const int64_t count = (int64_t)r->io->q[c->layer].k * r->io->q[c->layer].d;
        put_i64(&b, (int64_t)strlen(name));
        put(&b, name, strlen(name));
        put_i64(&b, count);
        put(&b, c->master, (size_t)count * sizeof(float));
        put(&b, c->moment, (size_t)count * sizeof(float));
    }
    bd_status s = b.failed ? bd_fail(BD_ENOMEM, "out of memory for the checkpoint %s", path)
                           : BD_OK;
    if (s == BD_OK) {
        const void *chunk = b.p;
        s = bd_write_file_atomic(path, 1, &chunk, &b.len);
    }
    free(b.p);
    return s;
}

typedef struct reader {
    const unsigned char *p;
    size_t len, at;
} reader;

static int take(reader *rd, void *out, size_t n)
{
    if (rd->len - rd->at < n)
        return 0;
    memcpy(out, rd->p + rd->at, n);
    rd->at += n;
    return 1;
}

/* The codebooks' records: every quantized layer's, by name, in order. */
static bd_status read_codebooks(run *r, reader *rd, const char *path, int copy)
{
    int64_t n = -1;
    if (!take(rd, &n, 8) || n != r->ncb)
        return bd_fail(BD_EINVAL, "%s holds %" PRId64 " codebooks; the model has %d quantized "
                       "pq layers", path, n, r->ncb);
    for (int i = 0; i < r->ncb; i++) {
        const codebook *c = &r->cb[i];
        const char *name = r->layers[c->layer].name;
        const int64_t want = (int64_t)r->io->q[c->layer].k * r->io->q[c->layer].d;
        int64_t len = 0, count = 0;
        char got[BD_LAYER_NAME_MAX];
        if (!take(rd, &len, 8) || len < 0 || len >= (int64_t)sizeof got ||
            !take(rd, got, (size_t)len))
            return bd_fail(BD_EFORMAT, "%s: truncated", path);
        got[len] = '\0';
        const size_t bytes = (size_t)want * sizeof(float);
        if (strcmp(got, name) || !take(rd, &count, 8) || count != want ||
            rd->len - rd->at < 2 * bytes)
            return bd_fail(BD_EINVAL, "%s: the codebook of '%s' does not match this model's",
                           path, name);
        if (copy) {
            memcpy(c->master, rd->p + rd->at, bytes);
            memcpy(c->moment, rd->p + rd->at + bytes, bytes);
        }
        rd->at += 2 * bytes;
    }
    return BD_OK;
}

/* Reads the checkpoint into the model and optimiser, all or nothing:
 * every record is checked against the model before anything is copied. */
static bd_status checkpoint_read(run *r, const char *path, bd_training_epoch **rec, int *done)
{
    void *data;
    size_t len;
    BD_TRY(bd_read_file(path, (size_t)1 << 40, &data, &len));
    reader rd = {data, len, 0};
    char m[8];
    int64_t ndone = 0, steps = 0, seed = 0, nv = 0;
    bd_status s = BD_OK;
    if (!take(&rd, m, sizeof m) || memcmp(m, magic, sizeof m) || !take(&rd, &ndone, 8) ||
        !take(&rd, &steps, 8) || !take(&rd, &seed, 8) || ndone < 0 || ndone > 1000000)
        s = bd_fail(BD_EFORMAT, "%s is not a bitdown training checkpoint", path);
    else if (steps != r->steps || (uint64_t)seed != r->o->seed)
        s = bd_fail(BD_EINVAL,
                    "%s was written by a run with seed %" PRId64 " and %" PRId64
                    " steps per epoch; this one has seed %" PRIu64 " and %" PRId64
                    ": resume with the same seed, data, batch and steps",
                    path, seed, steps, r->o->seed, r->steps);
    else if (ndone > r->o->epochs)
        s = bd_fail(BD_EINVAL, "%s has %" PRId64 " epochs done, more than the %d asked", path,
                    ndone, r->o->epochs);
    bd_training_epoch *e = s == BD_OK ? calloc((size_t)r->o->epochs + 1, sizeof *e) : NULL;
    if (s == BD_OK && !e)
        s = bd_fail(BD_ENOMEM, "out of memory");
    for (int64_t i = 0; s == BD_OK && i < ndone; i++)
        if (!take(&rd, &e[i], sizeof e[i]))
            s = bd_fail(BD_EFORMAT, "%s: truncated", path);
    /* two passes: check, then copy */
    for (int pass = 0; s == BD_OK && pass < 2; pass++) {
        size_t start = rd.at;
        if (!take(&rd, &nv, 8) || nv < 0) {
            s = bd_fail(BD_EFORMAT, "%s: truncated", path);
            break;
        }
        for (int64_t i = 0; s == BD_OK && i < nv; i++) {
            int64_t nlen, count, has;
            char name[1024];
            if (!take(&rd, &nlen, 8) || nlen < 0 || nlen >= (int64_t)sizeof name ||
                !take(&rd, name, (size_t)nlen)) {
                s = bd_fail(BD_EFORMAT, "%s: truncated", path);
                break;
            }
            name[nlen] = '\0';
            int v = bd_graph_find(r->g, name);
            if (v < 0 || !float_init(r->g, v) ||
                !take(&rd, &count, 8) || count != bd_tensor_count(r->g->values[v].init)) {
                s = bd_fail(BD_EINVAL, "%s: tensor '%s' is not in the model, or has another size",
                            path, name);
                break;
            }
            const size_t bytes = (size_t)count * sizeof(float);
            if (rd.len - rd.at < bytes) {
                s = bd_fail(BD_EFORMAT, "%s: truncated at '%s'", path, name);
                break;
            }
            if (pass)
                memcpy(r->g->values[v].init->data, rd.p + rd.at, bytes);
            rd.at += bytes;
            const int pi = param_index(r, v);
            if (!take(&rd, &has, 8) || (has && rd.len - rd.at < bytes)) {
                s = bd_fail(BD_EFORMAT, "%s: truncated at '%s'", path, name);
                break;
            }
            if (has && pass && pi >= 0 && r->moment[pi])
                memcpy(r->moment[pi], rd.p + rd.at, bytes);
            rd.at += has ? bytes : 0;
        }
        if (s == BD_OK)
            s = read_codebooks(r, &rd, path, pass);
        if (!pass)
            rd.at = start;
    }
    free(data);
    if (s != BD_OK) {
        free(e);
        return s;
    }
    *rec = e;
    *done = (int)ndone;
    return BD_OK;
}

/* ---- evaluation ------------------------------------------------------------- */

static bd_status evaluate(bd_graph *g, const bd_training_io *io, int64_t limit, double *top1,
                          double *top5)
{
    bd_exec *ex;
    BD_TRY(bd_exec_new(&ex, g, BD_EXEC_FUSE));
    bd_eval_options eo = {.limit = limit};
    bd_eval_result res = {0};
    bd_status s = bd_evaluate(ex, io->eval, &eo, io->progress, &res);
    if (s == BD_OK && res.n > 0) {
        *top1 = 100.0 * (double)res.top1 / (double)res.n;
        *top5 = 100.0 * (double)res.top5 / (double)res.n;
    }
    bd_eval_result_free(&res);
    bd_exec_free(ex);
    return s;
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static bd_status epoch(run *r, int e, bd_training_epoch *out, double *images, double *busy)
{
    const bd_training_options *o = r->o;
    const int batch = o->batch < r->count ? o->batch : (int)r->count;
    int64_t *perm = NULL, pos = r->count;
    uint64_t round = 0;
    double loss_sum = 0, t0 = now();
    int64_t hits = 0, seen = 0;
    bd_status s = BD_OK;
    float lr = o->lr, m = o->momentum;
    if (r->noise)
        bd_noise_refit_next(r->noise);
    for (int64_t k = 0; s == BD_OK && k < r->steps; k++) {
        const int64_t t = (int64_t)e * r->steps + k;
        if (pos + batch > r->count) { /* the next pass over the data, in a new order */
            free(perm);
            perm = NULL;
            s = bd_permutation(r->count, bd_rng_stream(o->seed, 0x0D, (uint64_t)e, round++), &perm);
            pos = 0;
            if (s != BD_OK)
                break;
        }
        memcpy(r->idx, perm + pos, (size_t)batch * sizeof *r->idx);
        pos += batch;
        bd_tensor *x = NULL;
        double loss = 0;
        int64_t h = 0;
        bd_training_schedule(o, t, r->total, r->steps, &lr, &m);
        s = bd_dataset_batch(r->io->train, r->idx, batch, &x, r->labels);
        if (s == BD_OK)
            s = bd_augment_batch(&o->augment, r->io->pp, x, o->seed, t * batch);
        if (s == BD_OK)
            s = step(r, x, t, lr, m, &loss, &h);
        bd_tensor_free(x);
        if (s != BD_OK)
            break;
        loss_sum += loss;
        hits += h;
        seen += batch;
        char msg[160];
        snprintf(msg, sizeof msg, "epoch %d/%d, step %" PRId64 "/%" PRId64 ": loss %.4f, lr %.4g",
                 e + 1, o->epochs, k + 1, r->steps, loss, lr);
        s = bd_progress_report(r->io->progress, "train", t + 1, r->total, msg, loss);
    }
    free(perm);
    *busy += now() - t0;
    *images += (double)seen;
    *out = (bd_training_epoch){.epoch = e + 1, .loss = loss_sum / (double)(r->steps ? r->steps : 1),
                               .train_top1 = seen ? 100.0 * (double)hits / (double)seen : 0,
                               .top1 = -1, .top5 = -1, .quant_top1 = -1, .lr = lr};
    if (s == BD_OK && r->io->eval)
        s = evaluate(r->g, r->io, o->eval_n, &out->top1, &out->top5);
    if (s == BD_OK && r->io->eval && o->eval_quantized) {
        double q5;
        if ((s = bd_noise_apply_all(r->noise, r->g)) == BD_OK) {
            s = evaluate(r->g, r->io, o->eval_n, &out->quant_top1, &q5);
            bd_noise_restore(r->noise, r->g, NULL);
        }
    }
    out->seconds = now() - t0;
    return s;
}

bd_status bd_training_run(bd_graph *g, const bd_training_options *options,
                          const bd_training_io *io, bd_training_report *report)
{
    memset(report, 0, sizeof *report);
    bd_training_options o = *options;
    if (!o.augment.is_set)
        bd_augment_default(io->train ? bd_dataset_spec(io->train) : "", &o.augment);
    BD_TRY(check_options(&o, io));
    if (io->resume && !io->checkpoint)
        return bd_fail(BD_EINVAL, "train: resuming needs a checkpoint file");
    run r;
    bd_status s = run_init(&r, g, &o, io);
    bd_training_epoch *rec = NULL;
    int done = 0;
    if (s == BD_OK && io->resume)
        s = checkpoint_read(&r, io->checkpoint, &rec, &done);
    else if (s == BD_OK && !(rec = calloc((size_t)o.epochs + 1, sizeof *rec)))
        s = bd_fail(BD_ENOMEM, "out of memory");
    if (s == BD_OK && !io->resume && o.init)
        s = bd_training_reinit(g, o.seed);
    double images = 0, busy = 0;
    report->first = done + 1;
    for (int e = done; s == BD_OK && e < o.epochs; e++) {
        if ((s = epoch(&r, e, &rec[e], &images, &busy)) != BD_OK)
            break;
        if (io->checkpoint && (s = checkpoint_write(&r, io->checkpoint, rec, e + 1)) != BD_OK)
            break;
        report->epochs = e + 1;
        if (io->on_epoch)
            io->on_epoch(io->user, &rec[e], o.epochs);
    }
    for (int i = 0; s == BD_OK && i < r.ncb; i++) { /* what a save writes: fp16 centroids */
        const codebook *c = &r.cb[i];
        bd_qlayer *q = &io->q[c->layer];
        memcpy(q->centroids, c->master, (size_t)q->k * (size_t)q->d * sizeof(float));
        bd_pq_round_fp16(q->centroids, (int64_t)q->k * q->d);
        s = decode_codebook(&r, c, q->centroids);
    }
    if (s == BD_OK) {
        report->epochs = o.epochs;
        report->per_epoch = rec;
        report->images_per_second = busy > 0 ? images / busy : 0;
    } else {
        free(rec);
        report->epochs = 0;
    }
    run_free(&r);
    return s;
}
