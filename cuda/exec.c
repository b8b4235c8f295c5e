/* The executor on the GPU: a graph's forward pass with every value in GPU
 * memory, freed after its last read as the CPU's executor does (exec.c),
 * and the calibration capture's view of a run held before a layer: the
 * Gram matrix of its input blocks summed there, and the few held-out
 * images' inputs copied back. Nodes run one by one (no fusion: the GPU's
 * time goes to the GEMMs, not to the passes fusion saves). */
#include <stdlib.h>
#include <string.h>

#include "cpu/kernel_util.h"
#include "dev.h"
#include "ops.h"

struct bd_dexec {
    bd_device *dev;
    const bd_graph *g;
    bd_dparams params;
    int maxio;
    int *uses;                /* reads of each computed value over all nodes */
    unsigned char *is_output;
    /* the run in progress */
    bd_dt **vals;
    int *left; /* reads still to come */
    int next;  /* the next node to run */
};

static void drop_run(bd_dexec *dx)
{
    for (int v = 0; v < dx->g->nvalues; v++) {
        bd_dt_free(dx->vals[v]);
        dx->vals[v] = NULL;
    }
    dx->next = 0;
}

void bd_cuda_dexec_free(bd_dexec *dx)
{
    if (!dx)
        return;
    bd_dev_enter(dx->dev);
    if (dx->vals)
        drop_run(dx);
    bd_dparams_free(&dx->params);
    free(dx->uses);
    free(dx->is_output);
    free(dx->vals);
    free(dx->left);
    free(dx);
}

bd_status bd_cuda_dexec_new(bd_device *dev, const bd_graph *g, bd_dexec **out)
{
    *out = NULL;
    BD_TRY(bd_dev_enter(dev));
    for (int i = 0; i < g->nnodes; i++)
        BD_TRY(bd_dop_check(g, &g->nodes[i]));
    bd_dexec *dx = calloc(1, sizeof *dx);
    if (!dx)
        return bd_fail(BD_ENOMEM, "out of memory");
    dx->dev = dev;
    dx->g = g;
    size_t nv = (size_t)g->nvalues + 1;
    dx->uses = calloc(nv, sizeof *dx->uses);
    dx->is_output = calloc(nv, 1);
    dx->vals = calloc(nv, sizeof *dx->vals);
    dx->left = calloc(nv, sizeof *dx->left);
    if (!dx->uses || !dx->is_output || !dx->vals || !dx->left) {
        bd_cuda_dexec_free(dx);
        return bd_fail(BD_ENOMEM, "out of memory planning the graph for the GPU");
    }
    dx->maxio = 1;
    for (int i = 0; i < g->nnodes; i++) {
        const bd_node *n = &g->nodes[i];
        if (n->ninputs > dx->maxio)
            dx->maxio = n->ninputs;
        for (int k = 0; k < n->ninputs; k++)
            if (n->inputs[k] >= 0 && !g->values[n->inputs[k]].init)
                dx->uses[n->inputs[k]]++;
    }
    for (int i = 0; i < g->noutputs; i++)
        dx->is_output[g->outputs[i]] = 1;
    bd_status s = bd_dparams_init(&dx->params, dev, g, 1);
    if (s != BD_OK) {
        bd_cuda_dexec_free(dx);
        return s;
    }
    *out = dx;
    return BD_OK;
}

bd_status bd_cuda_dexec_sync(bd_dexec *dx)
{
    BD_TRY(bd_dev_enter(dx->dev));
    return bd_dparams_sync(&dx->params);
}

/* A new run on batch x (on the GPU; the run keeps a view of it). */
static bd_status start(bd_dexec *dx, const bd_dt *x)
{
    const bd_graph *g = dx->g;
    if (g->ninputs != 1)
        return bd_fail(BD_EINVAL, "the GPU runs models with one input (this one has %d)",
                       g->ninputs);
    drop_run(dx);
    memcpy(dx->left, dx->uses, (size_t)g->nvalues * sizeof *dx->left);
    return bd_dt_view(x, x->ndim, x->dims, &dx->vals[g->inputs[0]]);
}

/* Runs nodes up to (not including) stop, freeing each value after its
 * last read. */
static bd_status run_to(bd_dexec *dx, int stop)
{
    const bd_graph *g = dx->g;
    bd_dt **ins = calloc((size_t)dx->maxio, sizeof *ins);
    bd_status s = ins ? BD_OK : bd_fail(BD_ENOMEM, "out of memory");
    for (; s == BD_OK && dx->next < stop && dx->next < g->nnodes; dx->next++) {
        const bd_node *n = &g->nodes[dx->next];
        for (int k = 0; s == BD_OK && k < n->ninputs; k++) {
            int v = n->inputs[k];
            ins[k] = v < 0 ? NULL : g->values[v].init ? dx->params.dev_copy[v] : dx->vals[v];
            if (v >= 0 && !g->values[v].init && !ins[k])
                s = bd_node_fail(n, BD_EINVAL, "input '%s' was not computed", g->values[v].name);
        }
        bd_dt *out = NULL, *saved[BD_DSAVED];
        bd_dop_args a = {.dev = dx->dev, .g = g, .n = n, .in = ins};
        if (s == BD_OK)
            s = bd_dop_forward(&a, &out, saved);
        if (s != BD_OK)
            break;
        for (int i = 0; i < BD_DSAVED; i++)
            bd_dt_free(saved[i]);
        int v = n->outputs[0];
        if (dx->uses[v] == 0 && !dx->is_output[v]) {
            bd_dt_free(out); /* never read */
        } else {
            bd_dt_free(dx->vals[v]);
            dx->vals[v] = out;
        }
        for (int k = 0; k < n->ninputs; k++) {
            int u = n->inputs[k];
            if (u >= 0 && !g->values[u].init && --dx->left[u] == 0 && !dx->is_output[u]) {
                bd_dt_free(dx->vals[u]);
                dx->vals[u] = NULL;
            }
        }
    }
    free(ins);
    return s;
}

bd_status bd_dexec_forward(bd_dexec *dx, const bd_dt *x, bd_dt **y)
{
    *y = NULL;
    const bd_graph *g = dx->g;
    if (g->noutputs != 1)
        return bd_fail(BD_EINVAL, "the GPU runs models with one output (this one has %d)",
                       g->noutputs);
    bd_status s = start(dx, x);
    if (s == BD_OK)
        s = run_to(dx, g->nnodes);
    const bd_dt *out = s == BD_OK ? dx->vals[g->outputs[0]] : NULL;
    if (s == BD_OK && !out)
        s = bd_fail(BD_EINVAL, "output '%s' was not computed", g->values[g->outputs[0]].name);
    if (s == BD_OK)
        s = bd_dt_view(out, out->ndim, out->dims, y);
    drop_run(dx);
    return s;
}

bd_status bd_cuda_dexec_run1(bd_dexec *dx, const bd_tensor *x, bd_tensor **y)
{
    *y = NULL;
    BD_TRY(bd_dev_enter(dx->dev));
    bd_dt *xd = NULL, *yd = NULL;
    BD_TRY(bd_dt_upload(dx->dev, x, &xd));
    bd_status s = bd_dexec_forward(dx, xd, &yd);
    if (s == BD_OK)
        s = bd_dt_download(yd, y);
    bd_dt_free(xd);
    bd_dt_free(yd);
    return s;
}

bd_status bd_cuda_dexec_until(bd_dexec *dx, const bd_tensor *x, int node)
{
    BD_TRY(bd_dev_enter(dx->dev));
    bd_dt *xd = NULL;
    BD_TRY(bd_dt_upload(dx->dev, x, &xd));
    bd_status s = start(dx, xd);
    bd_dt_free(xd); /* the run holds its view */
    if (s == BD_OK)
        s = run_to(dx, node);
    if (s != BD_OK)
        drop_run(dx);
    return s;
}

/* Value v as the held run has it. */
static bd_status held(const bd_dexec *dx, int v, const bd_dt **t)
{
    *t = v >= 0 && v < dx->g->nvalues ? dx->vals[v] : NULL;
    if (!*t)
        return bd_fail(BD_EINVAL, "value %d is not held on the GPU (run up to its reader first)",
                       v);
    if ((*t)->ndim < 1)
        return bd_fail(BD_EINVAL, "'%s' has no batch dimension", dx->g->values[v].name);
    return BD_OK;
}

/* Columns per Gram chunk: at most 64 Mi floats (256 MiB) of im2col; the
 * (block, slice) products bd_cu_gram_blocks sums at once. */
enum { GRAM_BUDGET = 64 << 20, GRAM_PARTS = 4096 };

bd_status bd_cuda_dexec_gram(bd_dexec *dx, int node, const int64_t *images, int nimages,
                             bd_gram *gram)
{
    BD_TRY(bd_dev_enter(dx->dev));
    const bd_graph *g = dx->g;
    if (node < 0 || node >= g->nnodes || strcmp(g->nodes[node].op, "Conv") != 0)
        return bd_fail(BD_EINVAL, "node %d is not a Conv", node);
    const bd_node *n = &g->nodes[node];
    const bd_tensor *w = n->ninputs > 1 && n->inputs[1] >= 0 ? g->values[n->inputs[1]].init : NULL;
    const bd_dt *x;
    BD_TRY(held(dx, n->inputs[0], &x));
    if (!w)
        return bd_node_fail(n, BD_EINVAL, "its weight is not a constant");
    bd_tensor hx;
    bd_storage st;
    bd_dt_header(x, &hx, &st);
    bd_conv_geom cg;
    BD_TRY(bd_conv_geom_from_node(n, &hx, w, &cg));
    const int64_t K = bd_conv_rows(&cg), ohw = bd_conv_cols(&cg), d = gram->d;
    if (d < 1 || K % d)
        return bd_node_fail(n, BD_EINVAL, "block size %lld does not divide its rows of %lld",
                            (long long)d, (long long)K);
    if (nimages <= 0)
        return BD_OK;
    int32_t *list = malloc((size_t)nimages * sizeof *list);
    if (!list)
        return bd_fail(BD_ENOMEM, "out of memory");
    for (int i = 0; i < nimages; i++) {
        if (images[i] < 0 || images[i] >= cg.n) {
            free(list);
            return bd_fail(BD_EINVAL, "image %lld of a batch of %lld", (long long)images[i],
                           (long long)cg.n);
        }
        list[i] = (int32_t)images[i];
    }
    const int64_t m = K / d;
    int64_t chunk = K * ohw > 0 ? GRAM_BUDGET / (K * ohw) : nimages;
    chunk = chunk < 1 ? 1 : chunk > nimages ? nimages : chunk;
    int32_t *dlist = NULL;
    float *cols = NULL, *acc = NULL, *ones = NULL, *parts = NULL, *dones = NULL;
    const size_t pbytes = (size_t)GRAM_PARTS * (size_t)(d * d) * sizeof *parts;
    const size_t obytes = GRAM_PARTS * sizeof *ones;
    const size_t lbytes = (size_t)nimages * sizeof *dlist;
    const size_t cbytes = (size_t)(chunk * K * ohw) * sizeof *cols;
    const size_t abytes = (size_t)(d * d) * sizeof *acc;
    bd_status s = bd_dev_alloc(dx->dev, lbytes, (void **)&dlist);
    if (s == BD_OK)
        s = bd_dev_alloc(dx->dev, cbytes, (void **)&cols);
    if (s == BD_OK)
        s = bd_dev_alloc(dx->dev, abytes, (void **)&acc);
    if (s == BD_OK)
        s = bd_dev_alloc(dx->dev, pbytes, (void **)&parts);
    if (s == BD_OK)
        s = bd_dev_alloc(dx->dev, obytes, (void **)&dones);
    if (s == BD_OK && !(ones = malloc(obytes)))
        s = bd_fail(BD_ENOMEM, "out of memory");
    for (int i = 0; s == BD_OK && i < GRAM_PARTS; i++)
        ones[i] = 1.0f;
    if (s == BD_OK)
        s = bd_cu_upload(dones, ones, obytes);
    if (s == BD_OK)
        s = bd_cu_upload(dlist, list, lbytes);
    for (int64_t gi = 0; s == BD_OK && gi < cg.group; gi++)
        for (int64_t i0 = 0; s == BD_OK && i0 < nimages; i0 += chunk) {
            const int64_t ni = nimages - i0 < chunk ? nimages - i0 : chunk, ncols = ni * ohw;
            /* one matrix [K][ni * OH*OW]: block b is rows [b d, b d + d) */
            s = bd_cu_im2col(&cg, x->data, gi, dlist + i0, 0, ni, cols, ohw, ncols);
            if (s == BD_OK)
                s = bd_cu_gram_blocks(dx->dev->blas, cols, d, m, ncols, parts, dones, GRAM_PARTS,
                                      acc);
            if (s == BD_OK)
                s = bd_cu_download(gram->acc, acc, abytes);
            if (s == BD_OK)
                bd_gram_fold(gram, ncols, ncols * m);
        }
    bd_dev_release(dx->dev, dlist, lbytes);
    bd_dev_release(dx->dev, cols, cbytes);
    bd_dev_release(dx->dev, acc, abytes);
    bd_dev_release(dx->dev, parts, pbytes);
    bd_dev_release(dx->dev, dones, obytes);
    free(ones);
    free(list);
    return s == BD_OK ? s : bd_k_in_node(n, s);
}

bd_status bd_cuda_dexec_fetch(bd_dexec *dx, int value, const int64_t *images, int nimages,
                              bd_tensor **out)
{
    *out = NULL;
    BD_TRY(bd_dev_enter(dx->dev));
    const bd_dt *t;
    BD_TRY(held(dx, value, &t));
    if (!images)
        return bd_dt_download(t, out);
    const int64_t batch = t->dims[0], per = batch ? bd_dt_count(t) / batch : 0;
    int64_t dims[BD_MAX_DIMS];
    memcpy(dims, t->dims, sizeof dims);
    dims[0] = nimages;
    BD_TRY(bd_tensor_new_raw(out, BD_F32, t->ndim, dims, "images from the GPU"));
    bd_status s = BD_OK;
    for (int i = 0; s == BD_OK && i < nimages; i++) {
        if (images[i] < 0 || images[i] >= batch)
            s = bd_fail(BD_EINVAL, "image %lld of a batch of %lld", (long long)images[i],
                        (long long)batch);
        else
            s = bd_cu_download((float *)(*out)->data + i * per, t->data + images[i] * per,
                               (size_t)per * sizeof(float));
    }
    if (s != BD_OK) {
        bd_tensor_free(*out);
        *out = NULL;
    }
    return s;
}
