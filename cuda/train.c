/* The trainer on the GPU: train.h's contract, with train.c's plan
 * (bd_train_plan_new: which values carry the gradient, which the backward
 * reads, where it stops) and every value, saved statistic and gradient in
 * GPU memory. The trained parameters are the trainer's own GPU copies: the
 * caller updates them in place between steps (fine-tuning's SGD, tune.c),
 * and the host's graph is not touched. */
#include <stdlib.h>
#include <string.h>

#include "dev.h"
#include "ops.h"

struct bd_dtrain {
    bd_device *dev;
    bd_graph *g;
    bd_train_options opt;
    int *params;
    int nparams;
    int maxio;
    bd_train_plan plan;
    bd_dparams store; /* the initializers, trained ones included */
    /* what the last forward left for the backward */
    bd_dt **vals;
    bd_dt *(*saved)[BD_DSAVED]; /* per node */
    int ready;
};

static void drop_state(bd_dtrain *t)
{
    for (int v = 0; v < t->g->nvalues; v++) {
        bd_dt_free(t->vals[v]);
        t->vals[v] = NULL;
    }
    for (int i = 0; i < t->g->nnodes; i++)
        for (int k = 0; k < BD_DSAVED; k++) {
            bd_dt_free(t->saved[i][k]);
            t->saved[i][k] = NULL;
        }
    t->ready = 0;
}

void bd_dtrain_free(bd_dtrain *t)
{
    if (!t)
        return;
    bd_dev_enter(t->dev);
    if (t->vals && t->saved)
        drop_state(t);
    bd_dparams_free(&t->store);
    bd_train_plan_free(&t->plan);
    free(t->params);
    free(t->vals);
    free(t->saved);
    free(t);
}

bd_status bd_dtrain_new(bd_device *dev, bd_graph *g, const int *params, int n,
                        const bd_train_options *opt, bd_dtrain **out)
{
    *out = NULL;
    BD_TRY(bd_dev_enter(dev));
    for (int i = 0; i < g->nnodes; i++)
        BD_TRY(bd_dop_check(g, &g->nodes[i]));
    bd_dtrain *t = calloc(1, sizeof *t);
    if (!t)
        return bd_fail(BD_ENOMEM, "out of memory");
    t->dev = dev;
    t->g = g;
    t->opt = *opt;
    if (t->opt.bn_momentum <= 0)
        t->opt.bn_momentum = 0.1f;
    t->nparams = n;
    t->params = malloc((size_t)n * sizeof *t->params + 1);
    t->vals = calloc((size_t)g->nvalues + 1, sizeof *t->vals);
    t->saved = calloc((size_t)g->nnodes + 1, sizeof *t->saved);
    bd_status s = t->params && t->vals && t->saved ? BD_OK : bd_fail(BD_ENOMEM, "out of memory");
    if (s == BD_OK) {
        memcpy(t->params, params, (size_t)n * sizeof *params);
        s = bd_train_plan_new(g, params, n, bd_dop_supported, &t->plan);
    }
    t->maxio = 1;
    for (int i = 0; i < g->nnodes; i++)
        if (g->nodes[i].ninputs > t->maxio)
            t->maxio = g->nodes[i].ninputs;
    if (s == BD_OK)
        s = bd_dparams_init(&t->store, dev, g, 0);
    for (int i = 0; s == BD_OK && i < n; i++)
        if (!t->store.dev_copy[params[i]])
            s = bd_fail(BD_EINVAL, "parameter '%s' is not a float32 tensor a node reads",
                        g->values[params[i]].name);
    if (s != BD_OK) {
        bd_dtrain_free(t);
        return s;
    }
    *out = t;
    return BD_OK;
}

bd_dt *bd_dtrain_param(bd_dtrain *t, int v)
{
    return v >= 0 && v < t->g->nvalues ? t->store.dev_copy[v] : NULL;
}

/* The inputs of node i as the GPU holds them. */
static bd_status inputs_of(const bd_dtrain *t, const bd_node *n, bd_dt **ins)
{
    for (int k = 0; k < n->ninputs; k++) {
        int v = n->inputs[k];
        ins[k] = v < 0 ? NULL : t->g->values[v].init ? t->store.dev_copy[v] : t->vals[v];
        if (v >= 0 && !t->g->values[v].init && !ins[k])
            return bd_node_fail(n, BD_EINVAL, "input '%s' was not computed",
                                t->g->values[v].name);
    }
    return BD_OK;
}

/* What an op of node n gets in training mode. */
static bd_dop_args args_of(const bd_dtrain *t, const bd_node *n, bd_dt *const *ins)
{
    return (bd_dop_args){t->dev, t->g, n, ins, t->opt.bn_train, t->opt.bn_momentum,
                         t->opt.bn_sync};
}

/* Node i in training mode, as train.c's forward_node: BatchNorm's batch
 * statistics folded into the running ones (in the trainer's copies, by
 * the op: the count they are over is the job's, in GPU memory), what the
 * backward will not read freed as soon as the forward is done with it. */
static bd_status forward_node(bd_dtrain *t, int i, bd_dt **ins)
{
    const bd_node *n = &t->g->nodes[i];
    BD_TRY(inputs_of(t, n, ins));
    bd_dop_args a = args_of(t, n, ins);
    bd_dt *out = NULL;
    BD_TRY(bd_dop_forward(&a, &out, t->saved[i]));
    bd_dt **saved = t->saved[i];
    if (i < t->plan.first)
        for (int k = 0; k < BD_DSAVED; k++) {
            bd_dt_free(saved[k]);
            saved[k] = NULL;
        }
    bd_dt_free(t->vals[n->outputs[0]]);
    t->vals[n->outputs[0]] = out;
    for (int k = 0; k < n->ninputs; k++) {
        int v = n->inputs[k];
        if (v >= 0 && t->vals[v] && !t->plan.keep[v] && t->plan.last_read[v] == i) {
            bd_dt_free(t->vals[v]);
            t->vals[v] = NULL;
        }
    }
    return BD_OK;
}

bd_status bd_dtrain_forward(bd_dtrain *t, const bd_dt *x, const bd_dt **logits)
{
    *logits = NULL;
    const bd_graph *g = t->g;
    BD_TRY(bd_dev_enter(t->dev));
    drop_state(t);
    if (g->ninputs != 1)
        return bd_fail(BD_EINVAL, "training needs a model with one input (it has %d)",
                       g->ninputs);
    bd_dt **ins = calloc((size_t)t->maxio, sizeof *ins);
    bd_status s = ins ? bd_dt_view(x, x->ndim, x->dims, &t->vals[g->inputs[0]])
                      : bd_fail(BD_ENOMEM, "out of memory");
    for (int i = 0; s == BD_OK && i < g->nnodes; i++)
        s = forward_node(t, i, ins);
    free(ins);
    if (s == BD_OK && !t->vals[g->outputs[0]])
        s = bd_fail(BD_EINVAL, "the model's output was not computed");
    if (s != BD_OK) {
        drop_state(t);
        return s;
    }
    *logits = t->vals[g->outputs[0]];
    t->ready = 1;
    return BD_OK;
}

/* dst += src (taking src when dst is empty); frees src. */
static bd_status accumulate(const bd_node *n, bd_dt **dst, bd_dt *src)
{
    if (!*dst) {
        *dst = src;
        return BD_OK;
    }
    bd_status s = bd_dt_count(*dst) == bd_dt_count(src)
                      ? bd_cu_axpy(bd_dt_count(src), 1.0f, src->data, (*dst)->data)
                      : bd_node_fail(n, BD_EINVAL, "a gradient does not match its value's shape");
    bd_dt_free(src);
    return s;
}

bd_status bd_dtrain_backward(bd_dtrain *t, const bd_dt *dlogits, bd_dt **grads)
{
    const bd_graph *g = t->g;
    for (int i = 0; i < t->nparams; i++)
        grads[i] = NULL;
    if (!t->ready)
        return bd_fail(BD_EINVAL, "backward without a forward");
    BD_TRY(bd_dev_enter(t->dev));
    bd_dt **dval = calloc((size_t)g->nvalues + 1, sizeof *dval);
    bd_dt **ins = calloc((size_t)t->maxio, sizeof *ins), **din = calloc((size_t)t->maxio, sizeof *din);
    unsigned char *want = calloc((size_t)t->maxio, 1);
    bd_status s = dval && ins && din && want ? BD_OK : bd_fail(BD_ENOMEM, "out of memory");
    if (s == BD_OK)
        s = bd_dt_clone(dlogits, &dval[g->outputs[0]]);
    for (int i = g->nnodes - 1; s == BD_OK && i >= t->plan.first; i--) {
        const bd_node *n = &g->nodes[i];
        const bd_dt *dy = dval[n->outputs[0]];
        int any = 0;
        for (int k = 0; k < n->ninputs; k++) {
            int v = n->inputs[k];
            want[k] = v >= 0 && t->plan.req[v];
            any |= want[k];
            din[k] = NULL;
        }
        if (dy && any && (s = inputs_of(t, n, ins)) == BD_OK) {
            bd_dop_args a = args_of(t, n, ins);
            s = bd_dop_backward(&a, t->vals[n->outputs[0]], t->saved[i], dy, want, din);
        }
        /* every reader of these outputs has been visited: their gradients are spent */
        for (int k = 0; k < n->noutputs; k++)
            if (n->outputs[k] >= 0) {
                bd_dt_free(dval[n->outputs[k]]);
                dval[n->outputs[k]] = NULL;
            }
        for (int k = 0; k < n->ninputs; k++)
            if (din[k]) {
                if (s == BD_OK)
                    s = accumulate(n, &dval[n->inputs[k]], din[k]);
                else
                    bd_dt_free(din[k]);
            }
    }
    for (int i = 0; s == BD_OK && i < t->nparams; i++) {
        int v = t->params[i];
        if (dval[v]) {
            grads[i] = dval[v];
            dval[v] = NULL;
        } else { /* a parameter that does not reach the output */
            const bd_dt *p = t->store.dev_copy[v];
            s = bd_dt_zeros(t->dev, p->ndim, p->dims, &grads[i]);
        }
    }
    if (s != BD_OK)
        for (int i = 0; i < t->nparams; i++) {
            bd_dt_free(grads[i]);
            grads[i] = NULL;
        }
    for (int v = 0; dval && v < g->nvalues; v++)
        bd_dt_free(dval[v]);
    free(dval);
    free(ins);
    free(din);
    free(want);
    drop_state(t);
    return s;
}
