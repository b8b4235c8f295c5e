/* The CPU's training steps (training.h's engine): Quant-Noise or the
 * weight hook written over the master weights (its activation transform
 * handed to the trainer), the trainer's forward and backward, the loss, the
 * noise taken back with its gradient mapped, the gradients summed over the
 * ranks of a job (dist.h), SGD on the parameters and the codebooks. The
 * state's arrays are this engine's own, so there is nothing to store or
 * load. */
#include <stdlib.h>
#include <string.h>

#include "dist.h"
#include "grad.h"
#include "train.h"
#include "training.h"

typedef struct cpu_engine {
    const bd_training_state *st;
    bd_noise *noise;
    bd_train *tr;
    bd_tensor **lgrads; /* per layer: its weight's gradient this step (or NULL) */
    float *cgrad;       /* the largest codebook's gradient */
} cpu_engine;

static void cpu_free(void *ctx)
{
    cpu_engine *c = ctx;
    bd_noise_free(c->noise);
    bd_train_free(c->tr);
    free(c->lgrads);
    free(c->cgrad);
    free(c);
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

/* The SGD of every parameter and codebook from this step's gradients. */
static bd_status update(cpu_engine *c, bd_tensor **grads, float lr, float m)
{
    const bd_training_state *st = c->st;
    const bd_training_options *o = st->o;
    for (int i = 0; i < st->nparams; i++) {
        bd_tensor *p = st->g->values[st->params[i]].init;
        if (st->kind[i] == BD_PARAM_SGD)
            bd_training_sgd(p->data, st->moment[i], grads[i]->data, bd_tensor_count(p), lr, m,
                            st->decay[i] ? o->wd : 0, o->nesterov);
    }
    for (int i = 0; i < st->ncb; i++) {
        const bd_training_codebook *cb = &st->cb[i];
        const bd_qlayer *q = &st->io->q[cb->layer];
        bd_qlayer_tuned_gradient(&st->layers[cb->layer], q, grads[cb->param]->data, c->cgrad);
        bd_training_sgd(cb->master, cb->moment, c->cgrad, (int64_t)q->k * q->d, lr, m, o->wd,
                        o->nesterov);
        BD_TRY(bd_training_decode(st, i, cb->master));
    }
    return BD_OK;
}

static bd_status cpu_step(void *ctx, const bd_tensor *x, const int *labels, int64_t t, float lr,
                          float m, double *loss, int64_t *hits)
{
    cpu_engine *c = ctx;
    const bd_training_state *st = c->st;
    const bd_training_options *o = st->o;
    bd_tensor *logits = NULL, *target = NULL, *dlogits = NULL;
    bd_tensor **grads = calloc((size_t)st->nparams + 1, sizeof *grads);
    if (!grads)
        return bd_fail(BD_ENOMEM, "out of memory");
    const bd_training_hook *hook = st->io->hook;
    bd_status s = c->noise ? bd_noise_apply(c->noise, st->g, o->seed, t) : BD_OK;
    if (s == BD_OK && hook && (s = hook->apply(hook->ctx, st->g, t)) != BD_OK)
        hook = NULL; /* it put the masters back itself */
    if (s == BD_OK)
        s = bd_train_forward(c->tr, x, &logits);
    if (s == BD_OK && o->loss == BD_LOSS_KL)
        s = bd_exec_run1(st->io->teacher, x, &target);
    if (s == BD_OK)
        s = o->loss == BD_LOSS_KL ? bd_loss_kl(logits, target, loss, &dlogits)
                                  : bd_loss_ce_smooth(logits, labels, o->smoothing, loss, &dlogits);
    if (s == BD_OK) {
        bd_dist_share_loss(dlogits, loss, st->batch);
        s = bd_train_backward(c->tr, dlogits, grads);
    }
    if (s == BD_OK)
        s = bd_dist_sum_tensors(grads, st->nparams);
    for (int l = 0; l < st->nlayers; l++)
        c->lgrads[l] = s == BD_OK && st->layer_param[l] >= 0 ? grads[st->layer_param[l]] : NULL;
    if (hook)
        hook->restore(hook->ctx, st->g, s == BD_OK ? c->lgrads : NULL, t, lr);
    if (c->noise) {
        bd_noise_restore(c->noise, st->g, c->lgrads);
        if (s == BD_OK && (t + 1) % st->steps == 0)
            bd_noise_refit_next(c->noise);
    }
    if (s == BD_OK)
        s = update(c, grads, lr, m);
    *hits = s == BD_OK ? argmax_hits(logits, labels) : 0;
    for (int i = 0; i < st->nparams; i++)
        bd_tensor_free(grads[i]);
    free(grads);
    bd_tensor_free(logits);
    bd_tensor_free(target);
    bd_tensor_free(dlogits);
    return s;
}

static bd_status cpu_start(void *arg, const bd_training_state *st, bd_training_engine *eng)
{
    (void)arg;
    cpu_engine *c = calloc(1, sizeof *c);
    if (!c)
        return bd_fail(BD_ENOMEM, "out of memory");
    c->st = st;
    int64_t most = 1;
    for (int i = 0; i < st->ncb; i++) {
        const bd_qlayer *q = &st->io->q[st->cb[i].layer];
        most = (int64_t)q->k * q->d > most ? (int64_t)q->k * q->d : most;
    }
    c->lgrads = calloc((size_t)st->nlayers + 1, sizeof *c->lgrads);
    c->cgrad = malloc((size_t)most * sizeof *c->cgrad);
    bd_status s = c->lgrads && c->cgrad ? BD_OK : bd_fail(BD_ENOMEM, "out of memory");
    if (s == BD_OK && st->o->noise.kind != BD_NOISE_NONE)
        s = bd_noise_new(&c->noise, st->g, st->layers, st->nlayers, st->plan, &st->o->noise);
    bd_train_options to = {.bn_train = st->o->bn == 0, .bn_momentum = st->o->bn_momentum,
                           .bn_sync = !st->o->bn_local,
                           .transform = st->io->hook ? st->io->hook->acts : NULL};
    if (s == BD_OK)
        s = bd_train_new(&c->tr, st->g, st->params, st->nparams, &to);
    if (s != BD_OK) {
        cpu_free(c);
        return s;
    }
    *eng = (bd_training_engine){.ctx = c, .step = cpu_step, .free = cpu_free};
    return BD_OK;
}

bd_status bd_training_run(bd_graph *g, const bd_training_options *opt, const bd_training_io *io,
                          bd_training_report *report)
{
    return bd_training_run_with(cpu_start, NULL, g, opt, io, report);
}
