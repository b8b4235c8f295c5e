#include "finetune.h"

#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "dist.h"
#include "grad.h"
#include "pq.h"
#include "train.h"

void bd_finetune_options_init(bd_finetune_options *o)
{
    *o = (bd_finetune_options){.global = 1, .iters = 200, .batch = 64, .lr = 0.01f,
                               .momentum = 0.9f, .wd = 1e-4f, .gamma = 0.1f,
                               .loss = BD_LOSS_KL};
}

void bd_finetune_defaults(bd_finetune_options *o)
{
    bd_finetune_options d;
    bd_finetune_options_init(&d);
    if (o->batch <= 0)
        o->batch = d.batch;
    if (o->lr <= 0)
        o->lr = d.lr;
    if (o->momentum < 0)
        o->momentum = d.momentum;
    if (o->wd < 0)
        o->wd = d.wd;
    if (o->gamma <= 0)
        o->gamma = d.gamma;
}

static const char *const mode_words[] = {"layer", "global", NULL};
static const char *const loss_words[] = {"kl", "ce", NULL}; /* bd_loss_kind's order */
static const char *const bn_words[] = {"frozen", "train", NULL};

#define OFF(f) offsetof(bd_finetune_options, f)
const bd_opt bd_finetune_opts[] = {
    {"mode", BD_OPT_WORD, OFF(global), 0, 0, mode_words, 0, NULL, "layer|global",
     "one layer at a time, or all together"},
    {"iters", BD_OPT_INT, OFF(iters), 1, 1e8, NULL, 0, NULL, "N",
     "SGD steps (per layer with mode layer)"},
    {"batch", BD_OPT_INT, OFF(batch), 1, 65536, NULL, 0, NULL, "B", "images per step"},
    {"lr", BD_OPT_FLOAT, OFF(lr), 1e-12, 1e3, NULL, 0, NULL, "X", "learning rate"},
    {"momentum", BD_OPT_FLOAT, OFF(momentum), 0, 0.9999, NULL, 0, NULL, "X", "SGD momentum"},
    {"wd", BD_OPT_FLOAT, OFF(wd), 0, 1, NULL, 0, NULL, "X", "weight decay of the centroids"},
    {"step", BD_OPT_INT, OFF(step_every), 0, 1e8, NULL, 0, NULL, "N",
     "lr times gamma every N steps (0: never)"},
    {"gamma", BD_OPT_FLOAT, OFF(gamma), 1e-6, 1, NULL, 0, NULL, "X", "the step's factor"},
    {"loss", BD_OPT_WORD, OFF(loss), 0, 0, loss_words, 0, NULL, "kl|ce",
     "distil the teacher, or the labels' cross-entropy"},
    {"bn", BD_OPT_WORD, OFF(bn_train), 0, 0, bn_words, 0, NULL, "frozen|train",
     "BatchNorm on running or batch statistics"},
    {"bias", BD_OPT_FLAG, OFF(tune_bias), 0, 1, NULL, 0, NULL, NULL,
     "also tune biases and BatchNorm scales and shifts"},
    {"seed", BD_OPT_INT64, OFF(seed), 0, 9007199254740992.0, NULL, 0, NULL, "S",
     "order of the images (0 in a session: its seed)"},
    {NULL, 0, 0, 0, 0, NULL, 0, NULL, NULL, NULL}};
#undef OFF

static void init_op(void *opts) { bd_finetune_options_init(opts); }

const bd_opt_op bd_finetune_op = {"finetune", {bd_finetune_opts, NULL}, {0, 0},
                                  sizeof(bd_finetune_options), init_op};

static int is_layer_weight(const bd_layer *layers, int n, int v)
{
    for (int i = 0; i < n; i++)
        if (layers[i].weight == v)
            return 1;
    return 0;
}

bd_status bd_finetune_extra_params(const bd_graph *g, const bd_layer *layers, int nlayers,
                                   int **ids, int *n)
{
    *ids = malloc((size_t)g->nvalues * sizeof **ids + 1);
    if (!*ids)
        return bd_fail(BD_ENOMEM, "out of memory");
    unsigned char *seen = calloc((size_t)g->nvalues + 1, 1);
    if (!seen) {
        free(*ids);
        return bd_fail(BD_ENOMEM, "out of memory");
    }
    *n = 0;
    for (int i = 0; i < g->nnodes; i++) {
        const bd_node *nd = &g->nodes[i];
        int bn = strcmp(nd->op, "BatchNormalization") == 0;
        int lin = !strcmp(nd->op, "Conv") || !strcmp(nd->op, "Gemm");
        /* BatchNorm: scale (1) and shift (2); Conv/Gemm: bias (2) */
        for (int k = bn ? 1 : 2; (bn || lin) && k <= 2 && k < nd->ninputs; k++) {
            int v = nd->inputs[k];
            const bd_tensor *t = v >= 0 ? g->values[v].init : NULL;
            if (t && t->dtype == BD_F32 && !seen[v] && !is_layer_weight(layers, nlayers, v)) {
                seen[v] = 1;
                (*ids)[(*n)++] = v;
            }
        }
    }
    free(seen);
    return BD_OK;
}

/* v = momentum v + (g + wd p); p -= lr v, over count values. */
static void sgd(float *p, float *v, const float *g, int64_t count, float lr, float momentum,
                float wd)
{
    for (int64_t i = 0; i < count; i++) {
        v[i] = momentum * v[i] + g[i] + wd * p[i];
        p[i] -= lr * v[i];
    }
}

typedef struct tuning {
    int nlayers, nextra, nparams;
    int *params;     /* layer weights, then the extra parameters */
    float **master;  /* per layer: float32 values being tuned (bd_qlayer_tuned_count) */
    float **moment;  /* per parameter: momentum buffer (the values for layers) */
    float *cgrad;    /* scratch: a centroid gradient */
} tuning;

static void tuning_free(tuning *t)
{
    for (int i = 0; t->master && i < t->nlayers; i++)
        free(t->master[i]);
    for (int i = 0; t->moment && i < t->nparams; i++)
        free(t->moment[i]);
    free(t->master);
    free(t->moment);
    free(t->params);
    free(t->cgrad);
}

static bd_status tuning_init(tuning *t, const bd_graph *g, const bd_layer *layers,
                             const bd_qlayer *q, int n, int tune_bias)
{
    memset(t, 0, sizeof *t);
    int *extra = NULL;
    if (tune_bias)
        BD_TRY(bd_finetune_extra_params(g, layers, n, &extra, &t->nextra));
    t->nlayers = n;
    t->nparams = n + t->nextra;
    t->params = malloc((size_t)t->nparams * sizeof *t->params + 1);
    t->master = calloc((size_t)n + 1, sizeof *t->master);
    t->moment = calloc((size_t)t->nparams + 1, sizeof *t->moment);
    int64_t most = 1;
    for (int i = 0; i < n; i++)
        if (bd_qlayer_tuned_count(&q[i]) > most)
            most = bd_qlayer_tuned_count(&q[i]);
    t->cgrad = malloc((size_t)most * sizeof *t->cgrad);
    bd_status s = t->params && t->master && t->moment && t->cgrad
                      ? BD_OK
                      : bd_fail(BD_ENOMEM, "out of memory");
    for (int i = 0; s == BD_OK && i < t->nparams; i++) {
        t->params[i] = i < n ? layers[i].weight : extra[i - n];
        int64_t count = i < n ? bd_qlayer_tuned_count(&q[i])
                              : bd_tensor_count(g->values[t->params[i]].init);
        t->moment[i] = calloc((size_t)count + 1, sizeof(float));
        if (i < n && (t->master[i] = malloc((size_t)count * sizeof(float) + 1)))
            bd_qlayer_tuned_get(&q[i], t->master[i]);
        if (!t->moment[i] || (i < n && !t->master[i]))
            s = bd_fail(BD_ENOMEM, "out of memory for the optimiser state");
    }
    for (int i = 0; s == BD_OK && i < n; i++)
        if (q[i].k <= 0)
            s = bd_fail(BD_EINVAL, "layer '%s' is not quantized: nothing to tune", layers[i].name);
    free(extra);
    if (s != BD_OK)
        tuning_free(t);
    return s;
}

/* Writes the weight of layer l decoded with the tuned values v. */
static bd_status decode_into(bd_graph *g, const bd_layer *l, const bd_qlayer *q, const float *v)
{
    return bd_qlayer_decode_tuned(q, v, l, g->values[l->weight].init->data);
}

/* The CPU engine: the trainer, the teacher's executor and the optimiser
 * state, all on the host. */
typedef struct cpu_tuner {
    bd_graph *student;
    bd_exec *teacher;
    const bd_layer *layers;
    const bd_qlayer *q;
    bd_finetune_options opt;
    tuning t;
    bd_train *tr;
} cpu_tuner;

/* One SGD step on a batch; *loss gets its loss. */
static bd_status cpu_step(void *ctx, const bd_tensor *x, const int *labels, float lr,
                          double *loss)
{
    cpu_tuner *c = ctx;
    tuning *t = &c->t;
    const bd_finetune_options *opt = &c->opt;
    bd_tensor *logits = NULL, *target = NULL, *dlogits = NULL;
    bd_tensor **grads = calloc((size_t)t->nparams + 1, sizeof *grads);
    if (!grads)
        return bd_fail(BD_ENOMEM, "out of memory");
    bd_status s = bd_train_forward(c->tr, x, &logits);
    if (s == BD_OK && opt->loss == BD_LOSS_KL)
        s = bd_exec_run1(c->teacher, x, &target);
    if (s == BD_OK)
        s = opt->loss == BD_LOSS_KL ? bd_loss_kl(logits, target, loss, &dlogits)
                                    : bd_loss_ce(logits, labels, loss, &dlogits);
    if (s == BD_OK) {
        bd_dist_share_loss(dlogits, loss, opt->batch);
        s = bd_train_backward(c->tr, dlogits, grads);
    }
    if (s == BD_OK)
        s = bd_dist_sum_tensors(grads, t->nparams);
    for (int i = 0; s == BD_OK && i < t->nlayers; i++) {
        const bd_qlayer *q = &c->q[i];
        bd_qlayer_tuned_gradient(&c->layers[i], q, grads[i]->data, t->cgrad);
        /* decay pulls centroids, which are weights, toward 0; an int grid's
         * scale and zero point are its geometry, not weights */
        sgd(t->master[i], t->moment[i], t->cgrad, bd_qlayer_tuned_count(q), lr, opt->momentum,
            q->format == BD_FMT_PQ ? opt->wd : 0);
        s = decode_into(c->student, &c->layers[i], q, t->master[i]);
    }
    for (int i = t->nlayers; s == BD_OK && i < t->nparams; i++) {
        bd_tensor *p = c->student->values[t->params[i]].init;
        /* no weight decay on biases and BatchNorm affine parameters */
        sgd(p->data, t->moment[i], grads[i]->data, bd_tensor_count(p), lr, opt->momentum, 0);
    }
    for (int i = 0; i < t->nparams; i++)
        bd_tensor_free(grads[i]);
    free(grads);
    bd_tensor_free(logits);
    bd_tensor_free(target);
    bd_tensor_free(dlogits);
    return s;
}

static bd_status cpu_values(void *ctx, int i, float *out)
{
    const cpu_tuner *c = ctx;
    memcpy(out, c->t.master[i], (size_t)bd_qlayer_tuned_count(&c->q[i]) * sizeof *out);
    return BD_OK;
}

static void cpu_free(void *ctx)
{
    cpu_tuner *c = ctx;
    bd_train_free(c->tr);
    tuning_free(&c->t);
    free(c);
}

static bd_status cpu_start(void *arg, bd_graph *student, const bd_layer *layers,
                           const bd_qlayer *q, int n, const bd_finetune_options *opt,
                           bd_tune_engine *eng)
{
    cpu_tuner *c = calloc(1, sizeof *c);
    if (!c)
        return bd_fail(BD_ENOMEM, "out of memory");
    *c = (cpu_tuner){.student = student, .teacher = arg, .layers = layers, .q = q, .opt = *opt};
    bd_status s = tuning_init(&c->t, student, layers, q, n, opt->tune_bias);
    if (s != BD_OK) {
        free(c);
        return s;
    }
    bd_train_options to = {.bn_train = opt->bn_train, .bn_sync = 1};
    *eng = (bd_tune_engine){c, cpu_step, NULL, cpu_values, cpu_free};
    if ((s = bd_train_new(&c->tr, student, c->t.params, c->t.nparams, &to)) != BD_OK)
        cpu_free(c);
    return s;
}

bd_status bd_finetune(bd_graph *student, bd_exec *teacher, const bd_layer *layers, bd_qlayer *q,
                      int n, const bd_dataset *data, const bd_finetune_options *options,
                      const bd_progress *progress, bd_finetune_report *report)
{
    return bd_finetune_with(cpu_start, teacher, student, layers, q, n, data, options, progress,
                            report);
}

bd_status bd_finetune_with(bd_tune_start_fn start, void *arg, bd_graph *student,
                           const bd_layer *layers, bd_qlayer *q, int n, const bd_dataset *data,
                           const bd_finetune_options *options, const bd_progress *progress,
                           bd_finetune_report *report)
{
    bd_finetune_options opt = *options;
    bd_finetune_defaults(&opt);
    memset(report, 0, sizeof *report);
    if (opt.iters <= 0 || n <= 0)
        return BD_OK;
    int64_t count = bd_dataset_count(data);
    if (count < 1)
        return bd_fail(BD_EINVAL, "%s: no images to tune on", bd_dataset_spec(data));
    if (opt.batch > count)
        opt.batch = (int)count;
    if (opt.batch < bd_dist_size())
        return bd_fail(BD_EINVAL, "finetune: a global batch of %d images cannot be shared by %d ranks",
                       opt.batch, bd_dist_size());
    int64_t first, mine; /* this rank's share of every batch */
    bd_dist_share(opt.batch, &first, &mine);
    bd_tune_engine eng;
    BD_TRY(start(arg, student, layers, q, n, &opt, &eng));
    int64_t *perm = NULL, *idx = malloc((size_t)opt.batch * sizeof *idx);
    int *labels = malloc((size_t)opt.batch * sizeof *labels);
    bd_status s = idx && labels ? BD_OK : bd_fail(BD_ENOMEM, "out of memory");
    int64_t pos = count, epoch = 0;
    int tenth = opt.iters / 10 > 0 ? opt.iters / 10 : 1;
    double first_sum = 0, last_sum = 0, t0 = bd_now();
    for (int it = 0; s == BD_OK && it < opt.iters; it++) {
        if (pos + opt.batch > count) { /* a new epoch, in a new seeded order */
            free(perm);
            perm = NULL;
            if ((s = bd_permutation(count, opt.seed + (uint64_t)epoch++, &perm)) != BD_OK)
                break;
            pos = 0;
        }
        memcpy(idx, perm + pos + first, (size_t)mine * sizeof *idx);
        pos += opt.batch;
        bd_tensor *x = NULL;
        double loss = 0;
        float lr = opt.lr;
        if (opt.step_every > 0)
            lr *= powf(opt.gamma, (float)(it / opt.step_every));
        s = bd_dataset_batch(data, idx, (int)mine, &x, labels);
        if (s == BD_OK)
            s = eng.step(eng.ctx, x, labels, lr, &loss);
        bd_tensor_free(x);
        if (s != BD_OK || (s = bd_dist_sum_f64(&loss, 1)) != BD_OK)
            break;
        if (it < tenth)
            first_sum += loss;
        if (it >= opt.iters - tenth)
            last_sum += loss;
        char msg[96];
        snprintf(msg, sizeof msg, "step %d: loss %.5f, lr %.3g", it + 1, loss, lr);
        s = bd_progress_report(progress, "finetune", it + 1, opt.iters, msg, loss);
        report->steps = it + 1;
    }
    if (s == BD_OK && eng.finish)
        s = eng.finish(eng.ctx);
    /* what a save writes: the values in float16 */
    int64_t most = 1;
    for (int i = 0; i < n; i++)
        most = bd_qlayer_tuned_count(&q[i]) > most ? bd_qlayer_tuned_count(&q[i]) : most;
    float *v = s == BD_OK ? malloc((size_t)most * sizeof *v) : NULL;
    if (s == BD_OK && !v)
        s = bd_fail(BD_ENOMEM, "out of memory");
    for (int i = 0; s == BD_OK && i < n; i++) {
        if ((s = eng.values(eng.ctx, i, v)) != BD_OK)
            break;
        bd_qlayer_tuned_set(&q[i], v);
        s = bd_qlayer_decode(&q[i], &layers[i], student->values[layers[i].weight].init->data);
    }
    free(v);
    if (s == BD_OK) {
        report->first_loss = first_sum / tenth;
        report->last_loss = last_sum / tenth;
        report->seconds = bd_now() - t0;
        report->images_per_second =
            report->seconds > 0 ? (double)report->steps * opt.batch / report->seconds : 0;
    }
    eng.free(eng.ctx);
    free(perm);
    free(idx);
    free(labels);
    return s;
}
