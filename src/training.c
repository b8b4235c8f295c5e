#include "training.h"

#include <inttypes.h>
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "dist.h"
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

/* An augmentation nobody set has no text: what it becomes depends on the
 * data (bd_augment_default). */
static void show_augment(const void *field, char *buf, size_t cap)
{
    const bd_augment *a = field;
    if (a->is_set)
        bd_augment_describe(a, buf, cap);
    else if (cap)
        buf[0] = '\0';
}

static bd_status parse_noise(const char *where, const char *v, void *field)
{
    return bd_noise_parse(where, v, field);
}

static void show_noise(const void *field, char *buf, size_t cap)
{
    bd_noise_describe(field, buf, cap);
}

static const bd_opt_codec augment_codec = {parse_augment, show_augment};
static const bd_opt_codec noise_codec = {parse_noise, show_noise};

#define OFF(f) offsetof(bd_training_options, f)
const bd_opt bd_training_opts[] = {
    {"epochs", BD_OPT_INT, OFF(epochs), 1, 100000, NULL, 0, NULL, "N", "passes over the data"},
    {"steps", BD_OPT_INT64, OFF(steps), 0, 1e12, NULL, 0, NULL, "N",
     "steps per epoch (0: one pass over the data)"},
    {"batch", BD_OPT_INT, OFF(batch), 1, 65536, NULL, 0, NULL, "B", "images per step"},
    {"lr", BD_OPT_FLOAT, OFF(lr), 1e-12, 1e3, NULL, 0, NULL, "X",
     "learning rate, the peak for onecycle"},
    {"momentum", BD_OPT_FLOAT, OFF(momentum), 0, 0.999, NULL, 0, NULL, "X",
     "SGD momentum (onecycle cycles it +-0.05)"},
    {"nesterov", BD_OPT_FLAG, OFF(nesterov), 0, 1, NULL, 0, NULL, NULL, "Nesterov momentum"},
    {"wd", BD_OPT_FLOAT, OFF(wd), 0, 1, NULL, 0, NULL, "X",
     "weight decay on weights, not biases or BatchNorm"},
    {"schedule", BD_OPT_WORD, OFF(schedule), 0, 0, schedule_words, 0, NULL,
     "constant|step|cosine|onecycle", "learning rate schedule"},
    {"step", BD_OPT_INT, OFF(step), 1, 100000, NULL, 0, NULL, "N",
     "step schedule: epochs between decays"},
    {"gamma", BD_OPT_FLOAT, OFF(gamma), 1e-6, 1, NULL, 0, NULL, "X", "step schedule: the decay"},
    {"warmup", BD_OPT_FLOAT, OFF(warmup), 0.001, 0.999, NULL, 0, NULL, "X",
     "onecycle: share of the steps spent rising"},
    {"div", BD_OPT_FLOAT, OFF(div), 1, 1e6, NULL, 0, NULL, "X",
     "onecycle: the first lr is lr/div"},
    {"final_div", BD_OPT_FLOAT, OFF(final_div), 1, 1e9, NULL, 0, NULL, "X",
     "onecycle: the last lr is lr/(div*final_div)"},
    {"smoothing", BD_OPT_FLOAT, OFF(smoothing), 0, 0.999, NULL, 0, NULL, "X", "label smoothing"},
    {"loss", BD_OPT_WORD, OFF(loss), 0, 0, loss_words, 0, NULL, "ce|kl",
     "labels' cross-entropy, or distillation from the teacher"},
    {"bn", BD_OPT_WORD, OFF(bn), 0, 0, bn_words, 0, NULL, "train|frozen",
     "BatchNorm on batch statistics, running ones updated, or on the running ones"},
    {"bn_local", BD_OPT_FLAG, OFF(bn_local), 0, 1, NULL, 0, NULL, NULL,
     "several ranks (mpirun): BatchNorm's batch statistics per rank, not over the global batch"},
    {"bn_momentum", BD_OPT_FLOAT, OFF(bn_momentum), 1e-6, 1, NULL, 0, NULL, "X",
     "BatchNorm running statistics' momentum"},
    {"augment", BD_OPT_PARSE, OFF(augment), 0, 0, NULL, 0, &augment_codec, "LIST",
     "none, or crop=P,rrc,flip (default: crop=2,flip for IDX data, rrc,flip for images)"},
    {"init", BD_OPT_WORD, OFF(init), 0, 0, init_words, 0, NULL, "keep|scratch",
     "start from the loaded weights or from a seeded re-initialisation"},
    {"seed", BD_OPT_INT64, OFF(seed), 0, 9007199254740992.0, NULL, 0, NULL, "S",
     "order of the images, augmentation, noise, initialisation"},
    {"quant_noise", BD_OPT_PARSE, OFF(noise), 0, 0, NULL, 0, &noise_codec, "KIND:p=P",
     "Quant-Noise: pq, pq-centroid or intB, e.g. pq:p=0.1,regime=small"},
    {"eval_quantized", BD_OPT_FLAG, OFF(eval_quantized), 0, 1, NULL, 0, NULL, NULL,
     "also evaluate quant_noise's fully quantized model every epoch"},
    {"eval_n", BD_OPT_INT64, OFF(eval_n), 0, 1e12, NULL, 0, NULL, "N",
     "evaluate on the first N images only (0: all)"},
    {NULL, 0, 0, 0, 0, NULL, 0, NULL, NULL, NULL}};
#undef OFF

void bd_training_options_init(bd_training_options *o)
{
    *o = (bd_training_options){.epochs = 1, .batch = 128, .lr = 0.1f, .momentum = 0.9f,
                               .wd = 5e-4f, .schedule = BD_SCHED_COSINE, .step = 30,
                               .gamma = 0.1f, .warmup = 0.25f, .div = 10, .final_div = 100,
                               .loss = BD_LOSS_CE, .bn_momentum = 0.1f};
}

static void init_op(void *opts) { bd_training_options_init(opts); }

const bd_opt_op bd_training_op = {"train", {bd_training_opts, NULL}, {0, 0},
                                  sizeof(bd_training_options), init_op};

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

/* ---- the state of a run ------------------------------------------------------ */

static void state_free(bd_training_state *st)
{
    for (int i = 0; st->moment && i < st->nparams; i++)
        free(st->moment[i]);
    for (int i = 0; st->cb && i < st->ncb; i++) {
        free(st->cb[i].master);
        free(st->cb[i].moment);
    }
    free(st->moment);
    free(st->kind);
    free(st->decay);
    free(st->params);
    free(st->layers);
    free(st->layer_param);
    free(st->plan);
    free(st->cb);
    memset(st, 0, sizeof *st);
}

static int is_quantized(const bd_training_state *st, int l)
{
    return st->io->q && st->io->q[l].k > 0;
}

/* The noise's plan without the quantized layers, and a codebook to train
 * for every quantized PQ layer; an int layer's weight is frozen. */
static bd_status quantized_layers(bd_training_state *st)
{
    const int n = st->nlayers;
    if (st->io->plan)
        memcpy(st->plan, st->io->plan, (size_t)n * sizeof *st->plan);
    else if (st->o->noise.kind != BD_NOISE_NONE)
        BD_TRY(bd_plan_regime(st->layers, n, st->o->noise.regime, 0, st->plan));
    for (int l = 0; l < n; l++) {
        if (!is_quantized(st, l))
            continue;
        st->plan[l].quantize = 0;
        const bd_qlayer *q = &st->io->q[l];
        const int pi = st->layer_param[l];
        if (pi < 0)
            continue;
        st->kind[pi] = q->format == BD_FMT_PQ ? BD_PARAM_CODEBOOK : BD_PARAM_FROZEN;
        if (q->format != BD_FMT_PQ)
            continue;
        bd_training_codebook *c = &st->cb[st->ncb++];
        const size_t count = (size_t)q->k * (size_t)q->d;
        *c = (bd_training_codebook){.layer = l, .param = pi};
        c->master = malloc(count * sizeof *c->master);
        c->moment = calloc(count, sizeof *c->moment);
        if (!c->master || !c->moment)
            return bd_fail(BD_ENOMEM, "out of memory for the codebook of '%s'",
                           st->layers[l].name);
        memcpy(c->master, q->centroids, count * sizeof *c->master);
    }
    return BD_OK;
}

static bd_status state_init(bd_training_state *st, bd_graph *g, const bd_training_options *o,
                            const bd_training_io *io)
{
    memset(st, 0, sizeof *st);
    *st = (bd_training_state){.g = g, .o = o, .io = io};
    BD_TRY(bd_training_params(g, &st->params, &st->nparams));
    if (st->nparams == 0)
        return bd_fail(BD_EINVAL, "train: the model has no float parameters to train");
    BD_TRY(bd_layers_find(g, &st->layers, &st->nlayers));
    const size_t np = (size_t)st->nparams + 1, nl = (size_t)st->nlayers + 1;
    st->moment = calloc(np, sizeof *st->moment);
    st->kind = calloc(np, sizeof *st->kind);
    st->decay = calloc(np, sizeof *st->decay);
    st->layer_param = malloc(nl * sizeof *st->layer_param);
    st->plan = calloc(nl, sizeof *st->plan);
    st->cb = calloc(nl, sizeof *st->cb);
    if (!st->moment || !st->kind || !st->decay || !st->layer_param || !st->plan || !st->cb)
        return bd_fail(BD_ENOMEM, "out of memory");
    for (int l = 0; l < st->nlayers; l++) {
        st->layer_param[l] = -1;
        for (int i = 0; i < st->nparams; i++)
            if (st->params[i] == st->layers[l].weight)
                st->layer_param[l] = i;
    }
    BD_TRY(quantized_layers(st));
    for (int i = 0; i < st->nparams; i++) {
        const bd_tensor *t = g->values[st->params[i]].init;
        st->decay[i] = t->ndim > 1;
        if (st->kind[i] == BD_PARAM_SGD &&
            !(st->moment[i] = calloc((size_t)bd_tensor_count(t) + 1, sizeof(float))))
            return bd_fail(BD_ENOMEM, "out of memory for the optimiser's momentum");
    }
    const int64_t count = bd_dataset_count(io->train);
    const int batch = o->batch < count ? o->batch : (int)count;
    st->batch = batch;
    st->steps = o->steps > 0 ? o->steps : count / batch;
    st->total = st->steps * o->epochs;
    return BD_OK;
}

void bd_training_sgd(float *p, float *v, const float *grad, int64_t n, float lr, float m,
                     float wd, int nesterov)
{
    for (int64_t i = 0; i < n; i++) {
        const float g = grad[i] + wd * p[i];
        v[i] = m * v[i] + g;
        p[i] -= lr * (nesterov ? g + m * v[i] : v[i]);
    }
}

bd_status bd_training_decode(const bd_training_state *st, int i, const float *centroids)
{
    const bd_training_codebook *c = &st->cb[i];
    bd_qlayer view = st->io->q[c->layer];
    view.centroids = (float *)centroids;
    return bd_qlayer_decode(&view, &st->layers[c->layer],
                            st->g->values[st->layers[c->layer].weight].init->data);
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
    if (io->hook && o->noise.kind != BD_NOISE_NONE)
        return bd_fail(BD_EINVAL, "train: a weight hook takes no noise");
    if (io->hook && io->checkpoint && !(io->hook->save && io->hook->load))
        return bd_fail(BD_EINVAL, "train: this weight hook cannot save its state in a checkpoint");
    if (io->resume && !io->checkpoint)
        return bd_fail(BD_EINVAL, "train: resuming needs a checkpoint file");
    const int64_t count = bd_dataset_count(io->train);
    if ((o->batch < count ? o->batch : count) < bd_dist_size())
        return bd_fail(BD_EINVAL, "train: a global batch of %lld images cannot be shared by %d ranks",
                       (long long)(o->batch < count ? o->batch : count), bd_dist_size());
    return BD_OK;
}

/* ---- evaluation ------------------------------------------------------------- */

/* The model the steps train: with a hook, its transformed weights. */
static bd_status evaluate(bd_graph *g, const bd_training_io *io, int64_t limit, double *top1,
                          double *top5)
{
    const bd_training_hook *h = io->hook;
    if (h)
        BD_TRY(h->apply(h->ctx, g, -1));
    bd_exec *ex;
    bd_status s = bd_exec_new(&ex, g, BD_EXEC_FUSE);
    if (s != BD_OK) {
        if (h)
            h->restore(h->ctx, g, NULL, -1, 0);
        return s;
    }
    if (h)
        bd_exec_set_transform(ex, h->acts);
    bd_eval_options eo = {.limit = limit, .who = "trained model"};
    bd_eval_result res = {0};
    s = bd_evaluate(ex, io->eval, &eo, io->progress, &res);
    if (s == BD_OK && res.n > 0) {
        *top1 = 100.0 * (double)res.top1 / (double)res.n;
        *top5 = 100.0 * (double)res.top5 / (double)res.n;
    }
    bd_eval_result_free(&res);
    bd_exec_free(ex);
    if (h)
        h->restore(h->ctx, g, NULL, -1, 0);
    return s;
}

/* The fully quantized model of the noise's quantizer, evaluated: the
 * noise of the state's plan, applied with p = 1 and taken back. */
static bd_status evaluate_quantized(bd_training_state *st, double *top1)
{
    bd_noise *nz;
    double top5;
    BD_TRY(bd_noise_new(&nz, st->g, st->layers, st->nlayers, st->plan, &st->o->noise));
    bd_status s = bd_noise_apply_all(nz, st->g);
    if (s == BD_OK) {
        s = evaluate(st->g, st->io, st->o->eval_n, top1, &top5);
        bd_noise_restore(nz, st->g, NULL);
    }
    bd_noise_free(nz);
    return s;
}

/* ---- the loop ------------------------------------------------------------------ */

typedef struct loop {
    bd_training_state *st;
    bd_training_engine *eng;
    int64_t count;
    int batch;
    int64_t *idx;
    int *labels;
} loop;

static bd_status epoch(loop *lp, int e, bd_training_epoch *out, double *images, double *busy)
{
    bd_training_state *st = lp->st;
    const bd_training_options *o = st->o;
    const int batch = lp->batch;
    int64_t *perm = NULL, pos = lp->count;
    uint64_t round = 0;
    double loss_sum = 0, t0 = bd_now();
    int64_t hits = 0, seen = 0;
    bd_status s = BD_OK;
    float lr = o->lr, m = o->momentum;
    int64_t first, mine; /* this rank's share of every batch */
    bd_dist_share(batch, &first, &mine);
    for (int64_t k = 0; s == BD_OK && k < st->steps; k++) {
        const int64_t t = (int64_t)e * st->steps + k;
        if (pos + batch > lp->count) { /* the next pass over the data, in a new order */
            free(perm);
            perm = NULL;
            s = bd_permutation(lp->count, bd_rng_stream(o->seed, 0x0D, (uint64_t)e, round++),
                               &perm);
            pos = 0;
            if (s != BD_OK)
                break;
        }
        memcpy(lp->idx, perm + pos + first, (size_t)mine * sizeof *lp->idx);
        pos += batch;
        bd_tensor *x = NULL;
        double sums[2] = {0, 0}; /* loss, hits: this rank's, then every rank's */
        int64_t h = 0;
        bd_training_schedule(o, t, st->total, st->steps, &lr, &m);
        s = bd_dataset_batch(st->io->train, lp->idx, (int)mine, &x, lp->labels);
        if (s == BD_OK)
            s = bd_augment_batch(&o->augment, st->io->pp, x, o->seed, t * batch + first);
        if (s == BD_OK)
            s = lp->eng->step(lp->eng->ctx, x, lp->labels, t, lr, m, &sums[0], &h);
        bd_tensor_free(x);
        sums[1] = (double)h;
        if (s != BD_OK || (s = bd_dist_sum_f64(sums, 2)) != BD_OK)
            break;
        const double loss = sums[0];
        loss_sum += loss;
        hits += (int64_t)sums[1];
        seen += batch;
        char msg[160];
        snprintf(msg, sizeof msg, "epoch %d/%d, step %" PRId64 "/%" PRId64 ": loss %.4f, lr %.4g",
                 e + 1, o->epochs, k + 1, st->steps, loss, lr);
        s = bd_progress_report(st->io->progress, "train", t + 1, st->total, msg, loss);
    }
    free(perm);
    *busy += bd_now() - t0;
    *images += (double)seen;
    *out = (bd_training_epoch){.epoch = e + 1,
                               .loss = loss_sum / (double)(st->steps ? st->steps : 1),
                               .train_top1 = seen ? 100.0 * (double)hits / (double)seen : 0,
                               .top1 = -1, .top5 = -1, .quant_top1 = -1, .lr = lr};
    if (s == BD_OK && lp->eng->store)
        s = lp->eng->store(lp->eng->ctx);
    if (s == BD_OK && st->io->eval)
        s = evaluate(st->g, st->io, o->eval_n, &out->top1, &out->top5);
    if (s == BD_OK && st->io->eval && o->eval_quantized)
        s = evaluate_quantized(st, &out->quant_top1);
    out->seconds = bd_now() - t0;
    return s;
}

static bd_status train_epochs(bd_training_state *st, bd_training_engine *eng,
                              bd_training_report *report)
{
    const bd_training_io *io = st->io;
    const bd_training_options *o = st->o;
    loop lp = {.st = st, .eng = eng, .count = bd_dataset_count(io->train)};
    lp.batch = o->batch < lp.count ? o->batch : (int)lp.count;
    lp.idx = malloc((size_t)lp.batch * sizeof *lp.idx);
    lp.labels = malloc((size_t)lp.batch * sizeof *lp.labels);
    bd_training_epoch *rec = NULL;
    int done = 0;
    bd_status s = lp.idx && lp.labels ? BD_OK : bd_fail(BD_ENOMEM, "out of memory");
    if (s == BD_OK && io->resume) {
        if ((s = bd_training_checkpoint_read(st, io->checkpoint, &rec, &done)) == BD_OK &&
            eng->load)
            s = eng->load(eng->ctx);
    } else if (s == BD_OK && !(rec = calloc((size_t)o->epochs + 1, sizeof *rec)))
        s = bd_fail(BD_ENOMEM, "out of memory");
    double images = 0, busy = 0;
    report->first = done + 1;
    for (int e = done; s == BD_OK && e < o->epochs; e++) {
        if ((s = epoch(&lp, e, &rec[e], &images, &busy)) != BD_OK)
            break;
        if (io->checkpoint && bd_dist_rank() == 0 &&
            (s = bd_training_checkpoint_write(st, io->checkpoint, rec, e + 1)) != BD_OK)
            break;
        if (io->on_epoch)
            io->on_epoch(io->user, &rec[e], o->epochs);
    }
    if (s == BD_ECANCELED && eng->store) /* the last finished step, as the contract says */
        eng->store(eng->ctx);
    for (int i = 0; s == BD_OK && i < st->ncb; i++) { /* what a save writes: fp16 centroids */
        bd_qlayer *q = &io->q[st->cb[i].layer];
        memcpy(q->centroids, st->cb[i].master, (size_t)q->k * (size_t)q->d * sizeof(float));
        bd_pq_round_fp16(q->centroids, (int64_t)q->k * q->d);
        s = bd_training_decode(st, i, q->centroids);
    }
    if (s == BD_OK) {
        report->epochs = o->epochs;
        report->per_epoch = rec;
        report->images_per_second = busy > 0 ? images / busy : 0;
    } else
        free(rec);
    free(lp.idx);
    free(lp.labels);
    return s;
}

bd_status bd_training_run_with(bd_training_start_fn start, void *arg, bd_graph *g,
                               const bd_training_options *options, const bd_training_io *io,
                               bd_training_report *report)
{
    memset(report, 0, sizeof *report);
    bd_training_options o = *options;
    if (!o.augment.is_set)
        bd_augment_default(io->train ? bd_dataset_spec(io->train) : "", &o.augment);
    BD_TRY(check_options(&o, io));
    bd_training_state st;
    bd_status s = state_init(&st, g, &o, io);
    for (int l = 0; s == BD_OK && o.init && l < st.nlayers; l++)
        if (is_quantized(&st, l))
            s = bd_fail(BD_EINVAL, "train: init=scratch would forget the codes of quantized "
                                   "layer '%s': reset it first", st.layers[l].name);
    if (s == BD_OK && !io->resume && o.init)
        s = bd_training_reinit(g, o.seed);
    bd_training_engine eng = {0};
    if (s == BD_OK && (s = start(arg, &st, &eng)) == BD_OK) {
        s = train_epochs(&st, &eng, report);
        eng.free(eng.ctx);
    }
    state_free(&st);
    return s;
}
