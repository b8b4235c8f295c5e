#include "train.h"

#include <cblas.h>
#include <stdlib.h>
#include <string.h>

#include "ops.h"

struct bd_train {
    bd_graph *g;
    int *params;
    int nparams;
    bd_train_options opt;
    bd_train_plan plan;
    bd_exec *prefix;      /* runs nodes before `first` (BatchNorm frozen only) */
    /* what the last forward left for the backward */
    bd_tensor **vals;
    unsigned char *owned;
    bd_saved *saved; /* per node */
    bd_tensor **tin; /* per node: its transformed first input (opt.transform) */
    int ready;
    /* the plan's fold values, computed by the first forward on an input
     * of shape fold_dims (fold_ndim -1: none yet) and reused while the
     * input keeps it */
    bd_tensor **folded;
    int fold_ndim;
    int64_t fold_dims[BD_MAX_DIMS];
};

static int is_bn(const bd_node *n) { return strcmp(n->op, "BatchNormalization") == 0; }

void bd_train_plan_free(bd_train_plan *p)
{
    free(p->req);
    free(p->keep);
    free(p->last_read);
    free(p->fold);
    memset(p, 0, sizeof *p);
}

/* A node whose outputs depend on shapes alone: Shape, or a node reading a
 * shape and otherwise only constants that training leaves alone. */
static int folds(const bd_graph *g, const bd_node *n, const bd_train_plan *p)
{
    if (strcmp(n->op, "Shape") == 0)
        return 1;
    int from_shape = 0;
    for (int k = 0; k < n->ninputs; k++) {
        int v = n->inputs[k];
        if (v < 0)
            continue;
        if (p->fold[v])
            from_shape = 1;
        else if (!g->values[v].init || p->req[v])
            return 0;
    }
    return from_shape;
}

bd_status bd_train_plan_new(const bd_graph *g, const int *params, int n,
                            int (*supported)(const char *op), bd_train_plan *p)
{
    size_t nv = (size_t)g->nvalues + 1;
    memset(p, 0, sizeof *p);
    p->req = calloc(nv, 1);
    p->keep = calloc(nv, 1);
    p->last_read = malloc(nv * sizeof *p->last_read);
    p->fold = calloc(nv, 1);
    if (!p->req || !p->keep || !p->last_read || !p->fold) {
        bd_train_plan_free(p);
        return bd_fail(BD_ENOMEM, "out of memory");
    }
    for (int v = 0; v < g->nvalues; v++)
        p->last_read[v] = -1;
    bd_status s = BD_OK;
    for (int i = 0; s == BD_OK && i < n; i++) {
        int v = params[i];
        if (v < 0 || v >= g->nvalues || !g->values[v].init)
            s = bd_fail(BD_EINVAL, "parameter %d is not an initializer of the graph", v);
        else
            p->req[v] = 1;
    }
    p->first = -1;
    for (int i = 0; s == BD_OK && i < g->nnodes; i++) {
        const bd_node *nd = &g->nodes[i];
        int any = 0;
        for (int k = 0; k < nd->ninputs; k++)
            any |= nd->inputs[k] >= 0 && p->req[nd->inputs[k]];
        for (int k = 0; k < nd->ninputs; k++)
            if (nd->inputs[k] >= 0)
                p->last_read[nd->inputs[k]] = i;
        if (folds(g, nd, p)) {
            for (int k = 0; k < nd->noutputs; k++)
                if (nd->outputs[k] >= 0)
                    p->fold[nd->outputs[k]] = 1;
            continue;
        }
        if (!any)
            continue;
        if (p->first < 0)
            p->first = i;
        if (!supported(nd->op)) {
            s = bd_node_fail(nd, BD_EUNSUPPORTED, "op '%s' has no backward pass", nd->op);
            break;
        }
        for (int k = 0; k < nd->noutputs; k++)
            if (nd->outputs[k] >= 0)
                p->req[nd->outputs[k]] = 1;
    }
    if (s == BD_OK && p->first < 0)
        s = bd_fail(BD_EINVAL, "no node reads the parameters to train");
    if (s == BD_OK && (g->noutputs != 1 || !p->req[g->outputs[0]]))
        s = bd_fail(BD_EINVAL, "the parameters to train do not reach the model's output");
    /* the backward reads the inputs and outputs of every node it visits */
    for (int i = p->first; s == BD_OK && i < g->nnodes; i++) {
        const bd_node *nd = &g->nodes[i];
        for (int k = 0; k < nd->ninputs; k++)
            if (nd->inputs[k] >= 0)
                p->keep[nd->inputs[k]] = 1;
        for (int k = 0; k < nd->noutputs; k++)
            if (nd->outputs[k] >= 0)
                p->keep[nd->outputs[k]] = 1;
    }
    if (s != BD_OK)
        bd_train_plan_free(p);
    return s;
}

bd_status bd_train_new(bd_train **out, bd_graph *g, const int *params, int n,
                       const bd_train_options *opt)
{
    bd_train *t = calloc(1, sizeof *t);
    if (!t)
        return bd_fail(BD_ENOMEM, "out of memory");
    t->g = g;
    t->nparams = n;
    t->opt = *opt;
    if (t->opt.bn_momentum <= 0)
        t->opt.bn_momentum = 0.1f;
    size_t nv = (size_t)g->nvalues + 1;
    t->params = malloc((size_t)n * sizeof *t->params + 1);
    t->vals = calloc(nv, sizeof *t->vals);
    t->owned = calloc(nv, 1);
    t->saved = calloc((size_t)g->nnodes + 1, sizeof *t->saved);
    t->tin = calloc((size_t)g->nnodes + 1, sizeof *t->tin);
    t->folded = calloc(nv, sizeof *t->folded);
    t->fold_ndim = -1;
    bd_status s = BD_OK;
    if (!t->params || !t->vals || !t->owned || !t->saved || !t->tin || !t->folded)
        s = bd_fail(BD_ENOMEM, "out of memory");
    if (s == BD_OK) {
        memcpy(t->params, params, (size_t)n * sizeof *params);
        s = bd_train_plan_new(g, params, n, bd_grad_supported, &t->plan);
    }
    /* Unfused: a fused step may reach past `first` (a residual Add placed
     * after it), leaving values the training pass needs uncomputed. */
    if (s == BD_OK && !t->opt.bn_train && t->plan.first > 0)
        s = bd_exec_new(&t->prefix, g, 0);
    if (s == BD_OK && t->prefix)
        bd_exec_set_transform(t->prefix, t->opt.transform);
    if (s != BD_OK) {
        bd_train_free(t);
        return s;
    }
    *out = t;
    return BD_OK;
}

static void drop_state(bd_train *t)
{
    for (int v = 0; v < t->g->nvalues; v++) {
        if (t->owned[v])
            bd_tensor_free(t->vals[v]);
        t->vals[v] = NULL;
        t->owned[v] = 0;
    }
    for (int i = 0; i < t->g->nnodes; i++) {
        bd_saved_free(&t->saved[i]);
        bd_tensor_free(t->tin[i]);
        t->tin[i] = NULL;
    }
    t->ready = 0;
}

void bd_train_free(bd_train *t)
{
    if (!t)
        return;
    if (t->vals && t->owned && t->saved && t->tin)
        drop_state(t);
    for (int v = 0; t->folded && v < t->g->nvalues; v++)
        bd_tensor_free(t->folded[v]);
    free(t->folded);
    bd_exec_free(t->prefix);
    bd_train_plan_free(&t->plan);
    free(t->params);
    free(t->vals);
    free(t->owned);
    free(t->saved);
    free(t->tin);
    free(t);
}

int bd_train_first_node(const bd_train *t) { return t->plan.first; }

static bd_status set_value(bd_train *t, int v, const bd_tensor *src)
{
    bd_tensor *view;
    BD_TRY(bd_tensor_view(&view, src, src->ndim, src->dims));
    if (t->owned[v])
        bd_tensor_free(t->vals[v]);
    t->vals[v] = view;
    t->owned[v] = 1;
    return BD_OK;
}

/* Folds a batch's statistics into a BatchNormalization's running ones, as
 * PyTorch does in train mode (the running variance is the unbiased one). */
static void update_running(bd_train *t, const bd_node *n, const bd_saved *s, int64_t count)
{
    bd_tensor *rm = n->ninputs > 3 && n->inputs[3] >= 0 ? t->g->values[n->inputs[3]].init : NULL;
    bd_tensor *rv = n->ninputs > 4 && n->inputs[4] >= 0 ? t->g->values[n->inputs[4]].init : NULL;
    if (!rm || !rv || !s->t[0] || !s->t[1])
        return;
    const float m = t->opt.bn_momentum, *mean = s->t[0]->data, *var = s->t[1]->data;
    const double unbias = count > 1 ? (double)count / (double)(count - 1) : 1.0;
    float *pm = rm->data, *pv = rv->data;
    for (int64_t c = 0; c < bd_tensor_count(rm); c++) {
        pm[c] = (1 - m) * pm[c] + m * mean[c];
        pv[c] = (1 - m) * pv[c] + m * (float)(var[c] * unbias);
    }
}

/* Runs node i in training mode on the values at hand. */
static bd_status forward_node(bd_train *t, int i, const bd_grad_ctx *ctx, bd_tensor **ins,
                              bd_tensor **outs)
{
    const bd_node *n = &t->g->nodes[i];
    for (int k = 0; k < n->ninputs; k++) {
        int v = n->inputs[k];
        ins[k] = v < 0 ? NULL : t->g->values[v].init ? t->g->values[v].init : t->vals[v];
        if (v >= 0 && !ins[k])
            return bd_node_fail(n, BD_EINVAL, "input '%s' was not computed", t->g->values[v].name);
    }
    for (int k = 0; k < n->noutputs; k++)
        outs[k] = NULL;
    const bd_input_transform *tf = t->opt.transform;
    if (tf && n->ninputs > 0 && ins[0] && tf->applies(tf->ctx, i)) {
        BD_TRY(tf->forward(tf->ctx, i, ins[0], &t->tin[i]));
        ins[0] = t->tin[i];
    }
    BD_TRY(bd_grad_forward(t->g, n, ins, outs, &t->saved[i], ctx));
    if (is_bn(n) && ctx->bn_train && ins[0]->ndim >= 2)
        update_running(t, n, &t->saved[i], t->saved[i].count);
    if (i < t->plan.first)
        bd_saved_free(&t->saved[i]);
    for (int k = 0; k < n->noutputs; k++) {
        int v = n->outputs[k];
        if (v >= 0 && outs[k]) {
            t->vals[v] = outs[k];
            t->owned[v] = 1;
        } else {
            bd_tensor_free(outs[k]);
        }
    }
    /* values the backward will not read go as soon as the forward is done */
    for (int k = 0; k < n->ninputs; k++) {
        int v = n->inputs[k];
        if (v >= 0 && t->owned[v] && !t->plan.keep[v] && t->plan.last_read[v] == i) {
            bd_tensor_free(t->vals[v]);
            t->vals[v] = NULL;
            t->owned[v] = 0;
        }
    }
    return BD_OK;
}

static int is_fold(const bd_train *t, const bd_node *n)
{
    return n->noutputs > 0 && n->outputs[0] >= 0 && t->plan.fold[n->outputs[0]];
}

/* Puts the folded values of an input shaped like x in place, or, for a new
 * shape, forgets them for the forward to compute again. 1 if they are. */
static int use_folded(bd_train *t, const bd_tensor *x)
{
    if (t->fold_ndim == x->ndim &&
        memcmp(t->fold_dims, x->dims, (size_t)x->ndim * sizeof *x->dims) == 0) {
        for (int v = 0; v < t->g->nvalues; v++)
            if (t->folded[v])
                t->vals[v] = t->folded[v]; /* not owned: the cache keeps it */
        return 1;
    }
    for (int v = 0; v < t->g->nvalues; v++) {
        bd_tensor_free(t->folded[v]);
        t->folded[v] = NULL;
    }
    t->fold_ndim = x->ndim;
    memcpy(t->fold_dims, x->dims, (size_t)x->ndim * sizeof *x->dims);
    return 0;
}

/* Moves fold node n's fresh outputs into the cache. */
static void keep_folded(bd_train *t, const bd_node *n)
{
    for (int k = 0; k < n->noutputs; k++) {
        int v = n->outputs[k];
        if (v >= 0 && t->owned[v]) {
            t->folded[v] = t->vals[v];
            t->owned[v] = 0;
        }
    }
}

static int max_io(const bd_graph *g)
{
    int m = 1;
    for (int i = 0; i < g->nnodes; i++) {
        if (g->nodes[i].ninputs > m)
            m = g->nodes[i].ninputs;
        if (g->nodes[i].noutputs > m)
            m = g->nodes[i].noutputs;
    }
    return m;
}

bd_status bd_train_forward(bd_train *t, const bd_tensor *x, bd_tensor **logits)
{
    bd_graph *g = t->g;
    drop_state(t);
    if (g->ninputs != 1)
        return bd_fail(BD_EINVAL, "training needs a model with one input (it has %d)",
                       g->ninputs);
    bd_status s = BD_OK;
    int start = 0;
    if (t->prefix) { /* frozen layers first, fused, keeping what is alive at `first` */
        bd_exec_state *st;
        BD_TRY(bd_exec_state_new(t->prefix, (bd_tensor *const *)&x, &st));
        s = bd_exec_advance(t->prefix, st, t->plan.first);
        for (int v = 0; s == BD_OK && v < g->nvalues; v++) {
            const bd_tensor *val = g->values[v].init ? NULL : bd_exec_state_value(st, v);
            if (val)
                s = set_value(t, v, val);
        }
        bd_exec_state_free(t->prefix, st);
        start = t->plan.first;
    } else {
        s = set_value(t, g->inputs[0], x);
    }
    int io = max_io(g);
    bd_tensor **ins = calloc((size_t)io, sizeof *ins), **outs = calloc((size_t)io, sizeof *outs);
    if (!ins || !outs)
        s = bd_fail(BD_ENOMEM, "out of memory");
    bd_grad_ctx ctx = {.bn_train = t->opt.bn_train, .bn_sync = t->opt.bn_sync};
    const int folded = s == BD_OK && use_folded(t, x);
    for (int i = start; s == BD_OK && i < g->nnodes; i++) {
        const bd_node *n = &g->nodes[i];
        if (is_fold(t, n) && folded)
            continue;
        s = forward_node(t, i, &ctx, ins, outs);
        if (s == BD_OK && is_fold(t, n))
            keep_folded(t, n);
    }
    free(ins);
    free(outs);
    const bd_tensor *y = s == BD_OK ? t->vals[g->outputs[0]] : NULL;
    if (s == BD_OK && !y)
        s = bd_fail(BD_EINVAL, "the model's output was not computed");
    if (s == BD_OK)
        s = bd_tensor_view(logits, y, y->ndim, y->dims);
    if (s != BD_OK) {
        drop_state(t);
        t->fold_ndim = -1; /* the cache may lack some */
        return s;
    }
    t->ready = 1;
    return BD_OK;
}

/* dst += src, shapes equal. */
static bd_status accumulate(const bd_node *n, bd_tensor **dst, bd_tensor *src)
{
    if (!*dst) {
        *dst = src;
        return BD_OK;
    }
    if (bd_tensor_count(*dst) != bd_tensor_count(src) || src->dtype != BD_F32) {
        bd_tensor_free(src);
        return bd_node_fail(n, BD_EINVAL, "a gradient does not match its value's shape");
    }
    cblas_saxpy((int)bd_tensor_count(src), 1.0f, src->data, 1, (*dst)->data, 1);
    bd_tensor_free(src);
    return BD_OK;
}

/* dx for the gradient *dy of node i's transformed input, in its place;
 * NULL when x itself needs none (the transform still saw dy). */
static bd_status untransform(bd_train *t, int i, const bd_tensor *x, bd_tensor **dy)
{
    const bd_input_transform *tf = t->opt.transform;
    bd_tensor *dx = NULL;
    bd_status s = tf->backward(tf->ctx, i, x, *dy, &dx);
    bd_tensor_free(*dy);
    *dy = NULL;
    if (s == BD_OK && t->plan.req[t->g->nodes[i].inputs[0]])
        *dy = dx;
    else
        bd_tensor_free(dx);
    return s;
}

bd_status bd_train_backward(bd_train *t, const bd_tensor *dlogits, bd_tensor **grads)
{
    bd_graph *g = t->g;
    for (int i = 0; i < t->nparams; i++)
        grads[i] = NULL;
    if (!t->ready)
        return bd_fail(BD_EINVAL, "backward without a forward");
    bd_tensor **dval = calloc((size_t)g->nvalues + 1, sizeof *dval);
    int io = max_io(g);
    bd_tensor **ins = calloc((size_t)io, sizeof *ins), **outs = calloc((size_t)io, sizeof *outs);
    bd_tensor **dout = calloc((size_t)io, sizeof *dout), **din = calloc((size_t)io, sizeof *din);
    unsigned char *want = calloc((size_t)io, 1);
    bd_status s = dval && ins && outs && dout && din && want ? BD_OK
                                                            : bd_fail(BD_ENOMEM, "out of memory");
    if (s == BD_OK)
        s = bd_tensor_clone(&dval[g->outputs[0]], dlogits);
    bd_grad_ctx ctx = {.bn_train = t->opt.bn_train, .bn_sync = t->opt.bn_sync};
    for (int i = g->nnodes - 1; s == BD_OK && i >= t->plan.first; i--) {
        const bd_node *n = &g->nodes[i];
        int any_out = 0, any_in = 0;
        for (int k = 0; k < n->noutputs; k++) {
            int v = n->outputs[k];
            dout[k] = v >= 0 ? dval[v] : NULL;
            outs[k] = v >= 0 ? t->vals[v] : NULL;
            any_out |= dout[k] != NULL;
        }
        for (int k = 0; k < n->ninputs; k++) {
            int v = n->inputs[k];
            want[k] = v >= 0 && (t->plan.req[v] || (k == 0 && t->tin[i]));
            any_in |= want[k];
            ins[k] = v < 0 ? NULL : g->values[v].init ? g->values[v].init : t->vals[v];
            din[k] = NULL;
        }
        const bd_tensor *x = ins[0];
        if (t->tin[i])
            ins[0] = t->tin[i];
        if (any_out && any_in)
            s = bd_grad_backward(g, n, ins, outs, &t->saved[i], dout, want, din, &ctx);
        if (s == BD_OK && t->tin[i] && din[0]) /* through the transform, back to x */
            s = untransform(t, i, x, &din[0]);
        /* every reader of these outputs has been visited: their gradients are spent */
        for (int k = 0; k < n->noutputs; k++)
            if (n->outputs[k] >= 0) {
                bd_tensor_free(dval[n->outputs[k]]);
                dval[n->outputs[k]] = NULL;
            }
        for (int k = 0; k < n->ninputs; k++)
            if (din[k]) {
                if (s == BD_OK)
                    s = accumulate(n, &dval[n->inputs[k]], din[k]);
                else
                    bd_tensor_free(din[k]);
            }
    }
    for (int i = 0; s == BD_OK && i < t->nparams; i++) {
        int v = t->params[i];
        if (dval[v]) {
            grads[i] = dval[v];
            dval[v] = NULL;
        } else { /* a parameter that does not reach the output */
            const bd_tensor *p = g->values[v].init;
            s = bd_tensor_new(&grads[i], BD_F32, p->ndim, p->dims, g->values[v].name);
        }
    }
    if (s != BD_OK)
        for (int i = 0; i < t->nparams; i++) {
            bd_tensor_free(grads[i]);
            grads[i] = NULL;
        }
    for (int v = 0; dval && v < g->nvalues; v++)
        bd_tensor_free(dval[v]);
    free(dval);
    free(ins);
    free(outs);
    free(dout);
    free(din);
    free(want);
    drop_state(t);
    return s;
}
