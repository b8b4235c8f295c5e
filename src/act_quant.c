#include "act_quant.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "int_fit.h"

void bd_act_grid_fit(float lo, float hi, int bits, bd_act_grid *grid)
{
    lo = lo < 0 ? lo : 0;
    hi = hi > 0 ? hi : 0;
    const double levels = ldexp(1, bits) - 1;
    float s = (float)(((double)hi - (double)lo) / levels);
    if (!(s > 0))
        s = 1;
    double z = nearbyint(-(double)lo / (double)s);
    z = z < 0 ? 0 : z > levels ? levels : z;
    *grid = (bd_act_grid){.bits = bits, .scale = s, .qmin = (float)-z,
                          .qmax = (float)(levels - z)};
}

static inline float on_grid(float x, float s, float lo, float hi)
{
    /* Clip's order of tests: NaN passes as the node would pass it */
    float q = nearbyintf(x / s);
    q = q < lo ? lo : q;
    q = q > hi ? hi : q;
    return q * s;
}

void bd_act_grid_apply(const bd_act_grid *grid, const float *x, int64_t n, float *y)
{
    const float s = grid->scale, lo = grid->qmin, hi = grid->qmax;
#pragma omp parallel for schedule(static) if (n > 65536)
    for (int64_t i = 0; i < n; i++)
        y[i] = on_grid(x[i], s, lo, hi);
}

void bd_act_grid_range(const bd_act_grid *grid, float *lo, float *hi)
{
    *lo = grid->qmin * grid->scale;
    *hi = grid->qmax * grid->scale;
}

void bd_act_clip_errors(const float *x, int64_t n, float lo, float hi, int bits, double *err)
{
    for (int i = 0; i < BD_INT_CLIP_STEPS; i++) {
        const double r = bd_int_clip_ratio(i);
        bd_act_grid grid;
        bd_act_grid_fit((float)(r * lo), (float)(r * hi), bits, &grid);
        const float s = grid.scale, qlo = grid.qmin, qhi = grid.qmax;
        double sum = 0;
#pragma omp parallel for schedule(static) reduction(+ : sum) if (n > 65536)
        for (int64_t j = 0; j < n; j++) {
            const double d = (double)on_grid(x[j], s, qlo, qhi) - (double)x[j];
            sum += d * d;
        }
        err[i] += sum;
    }
}

/* The k-th smallest of v[0..n) (v is reordered): Hoare's selection. */
static float select_kth(float *v, int64_t n, int64_t k)
{
    int64_t lo = 0, hi = n - 1;
    while (lo < hi) {
        const float pivot = v[lo + (hi - lo) / 2];
        int64_t i = lo, j = hi;
        while (i <= j) {
            while (v[i] < pivot)
                i++;
            while (v[j] > pivot)
                j--;
            if (i <= j) {
                const float t = v[i];
                v[i++] = v[j];
                v[j--] = t;
            }
        }
        if (k <= j)
            hi = j;
        else if (k >= i)
            lo = i;
        else
            break;
    }
    return v[k];
}

bd_status bd_act_range(const float *x, int64_t n, double percentile, float *lo, float *hi)
{
    *lo = *hi = 0;
    if (n <= 0)
        return BD_OK;
    int negative = 0;
    for (int64_t i = 0; i < n && !negative; i++)
        negative = x[i] < 0;
    float *v = malloc((size_t)n * sizeof *v);
    if (!v)
        return bd_fail(BD_ENOMEM, "out of memory for an activation's range");
    memcpy(v, x, (size_t)n * sizeof *v);
    const int64_t k = (int64_t)llround(percentile / 100 * (double)(n - 1));
    *hi = select_kth(v, n, k);
    if (negative) {
        const float below = select_kth(v, n, n - 1 - k);
        *lo = below < 0 ? below : 0;
    }
    free(v);
    return BD_OK;
}

enum { SCALE, QMIN, QMAX, DIV, ROUND, CLIP, OUT, NNAMES };
static const char *const suffix[NNAMES] = {"act_scale", "act_qmin", "act_qmax", "act_div",
                                           "act_round", "act_clip", "act_q"};

static bd_status add_scalar(bd_graph *g, const char *name, float value)
{
    bd_tensor *t;
    int id;
    BD_TRY(bd_tensor_new(&t, BD_F32, 0, NULL, name));
    *(float *)t->data = value;
    bd_status s = bd_graph_value(g, name, &id);
    if (s != BD_OK) {
        bd_tensor_free(t);
        return s;
    }
    bd_graph_set_init(g, id, t);
    return BD_OK;
}

/* Whether value v (-1: none) is anything: an initializer, or read or
 * computed by a node, or the graph's input or output. A value a removed
 * quantizer left behind is nothing, and its name can serve again. */
static int in_use(const bd_graph *g, int v)
{
    if (v < 0)
        return 0;
    if (g->values[v].init || bd_graph_use_count(g, v) > 0)
        return 1;
    for (int i = 0; i < g->ninputs; i++)
        if (g->inputs[i] == v)
            return 1;
    for (int i = 0; i < g->noutputs; i++)
        if (g->outputs[i] == v)
            return 1;
    for (int i = 0; i < g->nnodes; i++)
        for (int k = 0; k < g->nodes[i].noutputs; k++)
            if (g->nodes[i].outputs[k] == v)
                return 1;
    return 0;
}

bd_status bd_act_quant_insert(bd_graph *g, int node, const bd_act_grid *grid, const char *name)
{
    if (g->opset < 11)
        return bd_fail(BD_EUNSUPPORTED,
                       "layer '%s': the model's opset %lld has no Round (opset 11), which its "
                       "activation quantizer needs",
                       name, (long long)g->opset);
    char names[NNAMES][256];
    for (int k = 0; k < NNAMES; k++) {
        snprintf(names[k], sizeof names[k], "%s.%s", name, suffix[k]);
        if (in_use(g, bd_graph_find(g, names[k])))
            return bd_fail(BD_EINVAL,
                           "layer '%s': the model has a value '%s' already (an activation "
                           "quantizer of an earlier run?)",
                           name, names[k]);
    }
    const char *x = g->values[g->nodes[node].inputs[0]].name;
    char xname[1024];
    snprintf(xname, sizeof xname, "%s", x); /* adding values may move the names' table */
    BD_TRY(add_scalar(g, names[SCALE], grid->scale));
    BD_TRY(add_scalar(g, names[QMIN], grid->qmin));
    BD_TRY(add_scalar(g, names[QMAX], grid->qmax));
    const char *in[4][3] = {{xname, names[SCALE]},
                            {names[DIV]},
                            {names[ROUND], names[QMIN], names[QMAX]},
                            {names[CLIP], names[SCALE]}};
    static const char *const ops[4] = {"Div", "Round", "Clip", "Mul"};
    static const int nin[4] = {2, 1, 3, 2};
    for (int k = 0; k < 4; k++) {
        char nname[300];
        snprintf(nname, sizeof nname, "%s.act_quant/%s", name, ops[k]);
        const char *out[1] = {names[DIV + k]};
        bd_node *n;
        BD_TRY(bd_graph_add_node(g, nname, ops[k], "", nin[k], in[k], 1, out, &n));
    }
    g->nodes[node].inputs[0] = bd_graph_find(g, names[OUT]);
    bd_graph_move_last(g, 4, node);
    return BD_OK;
}

/* The node computing value v if it is an `op`, else -1. */
static int made_by(const bd_graph *g, int v, const char *op)
{
    if (v < 0)
        return -1;
    for (int i = 0; i < g->nnodes; i++)
        for (int k = 0; k < g->nodes[i].noutputs; k++)
            if (g->nodes[i].outputs[k] == v)
                return strcmp(g->nodes[i].op, op) == 0 && !g->nodes[i].domain[0] ? i : -1;
    return -1;
}

static int scalar_of(const bd_graph *g, const bd_node *n, int k, float *out)
{
    if (k >= n->ninputs || n->inputs[k] < 0)
        return 0;
    const bd_tensor *t = g->values[n->inputs[k]].init;
    if (!t || t->dtype != BD_F32 || bd_tensor_count(t) != 1)
        return 0;
    *out = *(const float *)t->data;
    return 1;
}

static int only_read(const bd_graph *g, int v)
{
    for (int i = 0; i < g->noutputs; i++)
        if (g->outputs[i] == v)
            return 0;
    return bd_graph_use_count(g, v) == 1;
}

/* bd_act_quant_find, with the quantizer's nodes (Div, Round, Clip, Mul) in
 * at[] when it finds one. */
static int find_nodes(const bd_graph *g, int node, bd_act_grid *grid, int at[4])
{
    const bd_node *layer = &g->nodes[node];
    if (layer->ninputs < 1)
        return 0;
    const int mul = made_by(g, layer->inputs[0], "Mul");
    const bd_node *m = mul >= 0 ? &g->nodes[mul] : NULL;
    const int clip = m && m->ninputs == 2 ? made_by(g, m->inputs[0], "Clip") : -1;
    const bd_node *c = clip >= 0 ? &g->nodes[clip] : NULL;
    const int round = c && c->ninputs == 3 ? made_by(g, c->inputs[0], "Round") : -1;
    const int div = round >= 0 ? made_by(g, g->nodes[round].inputs[0], "Div") : -1;
    float s, s2, qmin, qmax;
    if (div < 0 || !scalar_of(g, m, 1, &s) || !scalar_of(g, &g->nodes[div], 1, &s2) || s != s2 ||
        !(s > 0) || !scalar_of(g, c, 1, &qmin) || !scalar_of(g, c, 2, &qmax) ||
        !only_read(g, m->inputs[0]) || !only_read(g, c->inputs[0]) ||
        !only_read(g, g->nodes[round].inputs[0]))
        return 0;
    if (qmin != floorf(qmin) || qmax != floorf(qmax) || qmin > 0 || qmax < 0)
        return 0;
    const double levels = (double)qmax - (double)qmin + 1;
    const int bits = (int)llround(log2(levels));
    if (bits < 1 || bits > 16 || ldexp(1, bits) != levels)
        return 0;
    *grid = (bd_act_grid){.bits = bits, .scale = s, .qmin = qmin, .qmax = qmax};
    at[0] = div;
    at[1] = round;
    at[2] = clip;
    at[3] = mul;
    return 1;
}

int bd_act_quant_find(const bd_graph *g, int node, bd_act_grid *grid)
{
    int at[4];
    return find_nodes(g, node, grid, at);
}

bd_status bd_act_quant_remove(bd_graph *g, int *node)
{
    bd_act_grid grid;
    int at[4];
    if (!find_nodes(g, *node, &grid, at))
        return BD_OK;
    unsigned char *drop = calloc((size_t)g->nnodes, 1);
    if (!drop)
        return bd_fail(BD_ENOMEM, "out of memory");
    const bd_node *div = &g->nodes[at[0]], *clip = &g->nodes[at[2]];
    const int constants[3] = {div->inputs[1], clip->inputs[1], clip->inputs[2]};
    g->nodes[*node].inputs[0] = div->inputs[0];
    int before = 0;
    for (int k = 0; k < 4; k++) {
        drop[at[k]] = 1;
        before += at[k] < *node;
    }
    bd_graph_remove_nodes(g, drop);
    free(drop);
    *node -= before;
    for (int k = 0; k < 3; k++)
        if (bd_graph_use_count(g, constants[k]) == 0)
            bd_graph_set_init(g, constants[k], NULL);
    return BD_OK;
}
