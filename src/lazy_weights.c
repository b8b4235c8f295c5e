#include "lazy_weights.h"

#include <stdlib.h>
#include <string.h>

typedef struct lazy_layer {
    bd_layer layer;
    bd_qlayer q;     /* the table; q.codes is NULL */
    uint8_t *packed; /* the codes as stored */
    int64_t bytes;
} lazy_layer;

struct bd_lazy_weights {
    bd_graph *g;
    lazy_layer *layers;
    int n;
    int *of_value;        /* value id -> its lazy layer, or -1 */
    bd_tensor *scratch;   /* as large as the largest quantized weight */
    int decoded;          /* the layer the scratch holds, or -1 */
};

void bd_lazy_weights_free(bd_lazy_weights *lw)
{
    if (!lw)
        return;
    for (int i = 0; i < lw->n; i++) {
        bd_qlayer_free(&lw->layers[i].q);
        free(lw->layers[i].packed);
    }
    free(lw->layers);
    free(lw->of_value);
    bd_tensor_free(lw->scratch);
    free(lw);
}

bd_status bd_lazy_weights_new(bd_graph *g, const bd_layer *layers, bd_qlayer *q, int n,
                              bd_lazy_weights **out)
{
    *out = NULL;
    int nq = 0;
    int64_t most = 1;
    for (int i = 0; i < n; i++)
        if (q[i].k > 0) {
            nq++;
            const bd_tensor *w = g->values[layers[i].weight].init;
            if (!w || w->dtype != BD_F32)
                return bd_fail(BD_EINVAL, "layer '%s': its weight is not a float32 initializer",
                               layers[i].name);
            most = bd_tensor_count(w) > most ? bd_tensor_count(w) : most;
        }
    bd_lazy_weights *lw = calloc(1, sizeof *lw);
    bd_status s = lw ? BD_OK : bd_fail(BD_ENOMEM, "out of memory");
    if (s == BD_OK) {
        lw->g = g;
        lw->decoded = -1;
        lw->layers = calloc((size_t)nq + 1, sizeof *lw->layers);
        lw->of_value = malloc(((size_t)g->nvalues + 1) * sizeof *lw->of_value);
        s = lw->layers && lw->of_value ? bd_tensor_new_raw(&lw->scratch, BD_F32, 1, &most,
                                                           "the weight scratch")
                                       : bd_fail(BD_ENOMEM, "out of memory");
    }
    /* everything that can fail first, so that g and q change only below */
    bd_tensor **views = s == BD_OK ? calloc((size_t)nq + 1, sizeof *views) : NULL;
    if (s == BD_OK && !views)
        s = bd_fail(BD_ENOMEM, "out of memory");
    for (int i = 0, j = 0; s == BD_OK && i < n; i++) {
        if (q[i].k <= 0)
            continue;
        lazy_layer *ll = &lw->layers[j];
        const bd_tensor *w = g->values[layers[i].weight].init;
        ll->bytes = bd_qlayer_code_bytes(&q[i]);
        ll->packed = q[i].packed ? NULL : malloc((size_t)ll->bytes + 1); /* NULL: q's, below */
        s = ll->packed || q[i].packed
                ? bd_tensor_view_head(&views[j], lw->scratch, w->ndim, w->dims)
                : bd_fail(BD_ENOMEM, "out of memory packing layer '%s'", layers[i].name);
        if (s == BD_OK && ll->packed)
            bd_qlayer_pack(&q[i], ll->packed);
        j++;
    }
    if (s != BD_OK) {
        for (int j = 0; views && j < nq; j++)
            bd_tensor_free(views[j]);
        free(views);
        bd_lazy_weights_free(lw);
        return s;
    }
    for (int v = 0; v < g->nvalues; v++)
        lw->of_value[v] = -1;
    for (int i = 0; i < n; i++) {
        if (q[i].k <= 0)
            continue;
        lazy_layer *ll = &lw->layers[lw->n];
        ll->layer = layers[i];
        ll->q = q[i];
        if (!ll->packed) /* a lazy load's, packed already */
            ll->packed = ll->q.packed;
        ll->q.packed = NULL;
        free(ll->q.codes);
        ll->q.codes = NULL;
        memset(&q[i], 0, sizeof q[i]);
        bd_tensor_free(g->values[layers[i].weight].init);
        g->values[layers[i].weight].init = views[lw->n];
        lw->of_value[layers[i].weight] = lw->n;
        lw->n++;
    }
    free(views);
    *out = lw;
    return BD_OK;
}

static bd_status decode_inputs(void *user, const bd_graph *g, int node, bd_tensor *const *inputs)
{
    (void)inputs;
    bd_lazy_weights *lw = user;
    const bd_node *n = &g->nodes[node];
    for (int k = 0; k < n->ninputs; k++) {
        int v = n->inputs[k], i = v >= 0 ? lw->of_value[v] : -1;
        if (i < 0 || i == lw->decoded)
            continue;
        const lazy_layer *ll = &lw->layers[i];
        lw->decoded = -1; /* a failed decode leaves no layer in the scratch */
        BD_TRY(bd_qlayer_decode_packed(&ll->q, ll->packed, &ll->layer, lw->scratch->data));
        lw->decoded = i;
    }
    return BD_OK;
}

void bd_lazy_weights_attach(bd_lazy_weights *lw, bd_exec *ex)
{
    bd_exec_set_hook(ex, decode_inputs, lw);
}

size_t bd_lazy_weights_bytes(const bd_lazy_weights *lw)
{
    size_t total = bd_tensor_nbytes(lw->scratch);
    for (int i = 0; i < lw->n; i++)
        total += (size_t)lw->layers[i].bytes + (size_t)bd_qlayer_table_bytes(&lw->layers[i].q) * 2;
    return total;
}
