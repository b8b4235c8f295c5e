#include "graph.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

char *bd_strdup(const char *s)
{
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    if (d)
        memcpy(d, s, n);
    return d;
}

/* The array with room for one more element (doubling), or NULL when out
 * of memory (the array is then unchanged). */
static void *grow(void *array, int *cap, int count, size_t elem)
{
    if (count < *cap)
        return array;
    int n = *cap ? *cap * 2 : 64;
    void *p = realloc(array, (size_t)n * elem);
    if (p)
        *cap = n;
    return p;
}

static uint32_t hash_name(const char *s)
{
    uint32_t h = 2166136261u;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 16777619u;
    return h;
}

static void index_insert(int *index, int cap, const char *name, int id)
{
    uint32_t m = (uint32_t)cap - 1;
    uint32_t i = hash_name(name) & m;
    while (index[i])
        i = (i + 1) & m;
    index[i] = id + 1;
}

static bd_status index_build(bd_graph *g, int cap)
{
    int *index = calloc((size_t)cap, sizeof *index);
    if (!index)
        return bd_fail(BD_ENOMEM, "out of memory");
    for (int v = 0; v < g->nvalues; v++)
        index_insert(index, cap, g->values[v].name, v);
    free(g->index);
    g->index = index;
    g->index_cap = cap;
    return BD_OK;
}

static bd_status index_grow(bd_graph *g) { return index_build(g, g->index_cap ? g->index_cap * 2 : 64); }

bd_status bd_graph_new(bd_graph **out)
{
    bd_graph *g = calloc(1, sizeof *g);
    if (!g)
        return bd_fail(BD_ENOMEM, "out of memory");
    g->ir_version = 8;
    g->opset = 13;
    *out = g;
    return BD_OK;
}

static void attr_clear(bd_attr *a)
{
    free(a->name);
    free(a->s);
    bd_tensor_free(a->t);
    free(a->floats);
    free(a->ints);
    for (int i = 0; a->strings && i < a->n; i++)
        free(a->strings[i]);
    free(a->strings);
}

static void node_clear(bd_node *n)
{
    free(n->name);
    free(n->op);
    free(n->domain);
    free(n->inputs);
    free(n->outputs);
    for (int i = 0; i < n->nattrs; i++)
        attr_clear(&n->attrs[i]);
    free(n->attrs);
}

static void value_clear(bd_value *v)
{
    free(v->name);
    bd_tensor_free(v->init);
    for (int i = 0; i < BD_MAX_DIMS; i++)
        free(v->dim_param[i]);
}

void bd_graph_free(bd_graph *g)
{
    if (!g)
        return;
    for (int i = 0; i < g->nvalues; i++)
        value_clear(&g->values[i]);
    for (int i = 0; i < g->nnodes; i++)
        node_clear(&g->nodes[i]);
    for (int i = 0; i < g->nmeta; i++) {
        free(g->meta[i].key);
        free(g->meta[i].value);
    }
    free(g->values);
    free(g->nodes);
    free(g->inputs);
    free(g->outputs);
    free(g->meta);
    free(g->name);
    free(g->producer_name);
    free(g->producer_version);
    free(g->index);
    free(g);
}

int bd_graph_find(const bd_graph *g, const char *name)
{
    if (!g->index_cap)
        return -1;
    uint32_t m = (uint32_t)g->index_cap - 1;
    for (uint32_t i = hash_name(name) & m; g->index[i]; i = (i + 1) & m) {
        int id = g->index[i] - 1;
        if (strcmp(g->values[id].name, name) == 0)
            return id;
    }
    return -1;
}

bd_status bd_graph_value(bd_graph *g, const char *name, int *id)
{
    int found = bd_graph_find(g, name);
    if (found >= 0) {
        *id = found;
        return BD_OK;
    }
    if ((g->nvalues + 1) * 2 > g->index_cap)
        BD_TRY(index_grow(g));
    bd_value *values = grow(g->values, &g->values_cap, g->nvalues, sizeof *g->values);
    if (!values)
        return bd_fail(BD_ENOMEM, "out of memory");
    g->values = values;
    bd_value *v = &g->values[g->nvalues];
    memset(v, 0, sizeof *v);
    v->name = bd_strdup(name);
    if (!v->name)
        return bd_fail(BD_ENOMEM, "out of memory");
    v->producer = -1;
    v->ndim = -1;
    index_insert(g->index, g->index_cap, name, g->nvalues);
    *id = g->nvalues++;
    return BD_OK;
}

bd_status bd_graph_rename(bd_graph *g, int id, const char *name)
{
    int other = bd_graph_find(g, name);
    if (other >= 0 && other != id)
        return bd_fail(BD_EINVAL, "value '%s' cannot be called '%s': another value is",
                       g->values[id].name, name);
    char *copy = bd_strdup(name);
    if (!copy)
        return bd_fail(BD_ENOMEM, "out of memory");
    free(g->values[id].name);
    g->values[id].name = copy;
    /* open addressing has no deletion: the index is rebuilt */
    return index_build(g, g->index_cap);
}

void bd_graph_set_init(bd_graph *g, int id, bd_tensor *t)
{
    bd_value *v = &g->values[id];
    bd_tensor_free(v->init);
    v->init = t;
    if (t) {
        v->dtype = t->dtype;
        v->ndim = t->ndim;
        memcpy(v->dims, t->dims, sizeof v->dims);
    }
}

static bd_status copy_attr(bd_attr *d, const bd_attr *a)
{
    memset(d, 0, sizeof *d);
    d->type = a->type;
    d->f = a->f;
    d->i = a->i;
    d->n = a->n;
    d->name = bd_strdup(a->name);
    if (!d->name)
        goto oom;
    if (a->s && !(d->s = bd_strdup(a->s)))
        goto oom;
    if (a->t && bd_tensor_clone(&d->t, a->t) != BD_OK)
        goto oom;
    if (a->floats) {
        d->floats = malloc((size_t)a->n * sizeof *d->floats + 1);
        if (!d->floats)
            goto oom;
        memcpy(d->floats, a->floats, (size_t)a->n * sizeof *d->floats);
    }
    if (a->ints) {
        d->ints = malloc((size_t)a->n * sizeof *d->ints + 1);
        if (!d->ints)
            goto oom;
        memcpy(d->ints, a->ints, (size_t)a->n * sizeof *d->ints);
    }
    if (a->strings) {
        d->strings = calloc((size_t)a->n + 1, sizeof *d->strings);
        if (!d->strings)
            goto oom;
        for (int i = 0; i < a->n; i++)
            if (!(d->strings[i] = bd_strdup(a->strings[i])))
                goto oom;
    }
    return BD_OK;
oom:
    attr_clear(d);
    memset(d, 0, sizeof *d);
    return bd_fail(BD_ENOMEM, "out of memory copying attribute '%s'", a->name);
}

bd_status bd_node_add_attr(bd_node *n, const bd_attr *a)
{
    bd_attr *attrs = realloc(n->attrs, (size_t)(n->nattrs + 1) * sizeof *attrs);
    if (!attrs)
        return bd_fail(BD_ENOMEM, "out of memory");
    n->attrs = attrs;
    BD_TRY(copy_attr(&n->attrs[n->nattrs], a));
    n->nattrs++;
    return BD_OK;
}

static bd_status name_ids(bd_graph *g, int count, const char *const *names, int **ids)
{
    *ids = malloc((size_t)(count + 1) * sizeof **ids);
    if (!*ids)
        return bd_fail(BD_ENOMEM, "out of memory");
    for (int i = 0; i < count; i++) {
        (*ids)[i] = -1;
        if (names[i] && names[i][0])
            BD_TRY(bd_graph_value(g, names[i], &(*ids)[i]));
    }
    return BD_OK;
}

bd_status bd_graph_add_node(bd_graph *g, const char *name, const char *op, const char *domain,
                            int ninputs, const char *const *inputs, int noutputs,
                            const char *const *outputs, bd_node **node)
{
    bd_node *nodes = grow(g->nodes, &g->nodes_cap, g->nnodes, sizeof *g->nodes);
    if (!nodes)
        return bd_fail(BD_ENOMEM, "out of memory");
    g->nodes = nodes;
    bd_node *n = &g->nodes[g->nnodes];
    memset(n, 0, sizeof *n);
    n->name = bd_strdup(name ? name : "");
    n->op = bd_strdup(op);
    n->domain = bd_strdup(domain ? domain : "");
    if (!n->name || !n->op || !n->domain) {
        node_clear(n);
        return bd_fail(BD_ENOMEM, "out of memory");
    }
    bd_status s = name_ids(g, ninputs, inputs, &n->inputs);
    if (s == BD_OK)
        s = name_ids(g, noutputs, outputs, &n->outputs);
    if (s != BD_OK) {
        node_clear(n);
        return s;
    }
    n->ninputs = ninputs;
    n->noutputs = noutputs;
    g->nnodes++;
    if (node)
        *node = n;
    return BD_OK;
}

static void set_producers(bd_graph *g)
{
    for (int v = 0; v < g->nvalues; v++)
        g->values[v].producer = -1;
    for (int i = 0; i < g->nnodes; i++)
        for (int o = 0; o < g->nodes[i].noutputs; o++)
            if (g->nodes[i].outputs[o] >= 0)
                g->values[g->nodes[i].outputs[o]].producer = i;
}

void bd_graph_remove_nodes(bd_graph *g, const unsigned char *drop)
{
    int k = 0;
    for (int i = 0; i < g->nnodes; i++) {
        if (drop[i])
            node_clear(&g->nodes[i]);
        else
            g->nodes[k++] = g->nodes[i];
    }
    g->nnodes = k;
    set_producers(g);
}

void bd_graph_move_last(bd_graph *g, int count, int before)
{
    if (count <= 0 || before < 0 || before >= g->nnodes - count)
        return;
    const int first = g->nnodes - count;
    for (int k = 0; k < count; k++) { /* one at a time: no scratch to fail for */
        const bd_node moved = g->nodes[first + k];
        memmove(&g->nodes[before + k + 1], &g->nodes[before + k],
                (size_t)(first - before) * sizeof *g->nodes);
        g->nodes[before + k] = moved;
    }
    set_producers(g);
}

const char *bd_value_shape_str(const bd_value *v, char *buf, size_t cap)
{
    if (v->ndim < 0) {
        snprintf(buf, cap, "?");
        return buf;
    }
    size_t used = (size_t)snprintf(buf, cap, "[");
    for (int d = 0; d < v->ndim && used < cap; d++) {
        const char *sep = d ? ", " : "";
        if (v->dim_param[d])
            used += (size_t)snprintf(buf + used, cap - used, "%s%s", sep, v->dim_param[d]);
        else if (v->dims[d] >= 0)
            used += (size_t)snprintf(buf + used, cap - used, "%s%lld", sep, (long long)v->dims[d]);
        else
            used += (size_t)snprintf(buf + used, cap - used, "%s?", sep);
    }
    if (used < cap)
        snprintf(buf + used, cap - used, "]");
    return buf;
}

const char *bd_node_label(const bd_node *n, char *buf, size_t cap)
{
    snprintf(buf, cap, "node '%s' (%s)", n->name[0] ? n->name : "<unnamed>", n->op);
    return buf;
}

static int is_graph_input(const bd_graph *g, int id)
{
    for (int i = 0; i < g->ninputs; i++)
        if (g->inputs[i] == id)
            return 1;
    return 0;
}

bd_status bd_graph_sort(bd_graph *g)
{
    char label[256];
    int *producer = malloc((size_t)(g->nvalues + 1) * sizeof *producer);
    int *pending = calloc((size_t)g->nnodes + 1, sizeof *pending);
    int *order = malloc((size_t)g->nnodes * sizeof *order + 1);
    int *ready = malloc((size_t)g->nnodes * sizeof *ready + 1);
    /* consumers as CSR: for each value, the nodes that read it */
    int *start = calloc((size_t)g->nvalues + 2, sizeof *start);
    int nedges = 0;
    for (int i = 0; i < g->nnodes; i++)
        nedges += g->nodes[i].ninputs;
    int *edge = malloc((size_t)nedges * sizeof *edge + 1);
    bd_status st = BD_OK;
    if (!producer || !pending || !order || !ready || !start || !edge) {
        st = bd_fail(BD_ENOMEM, "out of memory");
        goto done;
    }
    for (int v = 0; v < g->nvalues; v++)
        producer[v] = -1;
    for (int i = 0; i < g->nnodes; i++) {
        const bd_node *n = &g->nodes[i];
        for (int o = 0; o < n->noutputs; o++) {
            int v = n->outputs[o];
            if (v < 0)
                continue;
            if (producer[v] >= 0 || g->values[v].init || is_graph_input(g, v)) {
                st = bd_fail(BD_EFORMAT, "%s: output '%s' is already defined elsewhere",
                             bd_node_label(n, label, sizeof label), g->values[v].name);
                goto done;
            }
            producer[v] = i;
        }
    }
    for (int i = 0; i < g->nnodes; i++) {
        const bd_node *n = &g->nodes[i];
        for (int k = 0; k < n->ninputs; k++) {
            int v = n->inputs[k];
            if (v < 0)
                continue;
            if (producer[v] < 0 && !g->values[v].init && !is_graph_input(g, v)) {
                st = bd_fail(BD_EFORMAT,
                             "%s: input '%s' is not a graph input, an initializer, or the "
                             "output of any node",
                             bd_node_label(n, label, sizeof label), g->values[v].name);
                goto done;
            }
            if (producer[v] >= 0) {
                pending[i]++;
                start[v + 1]++;
            }
        }
    }
    for (int v = 0; v < g->nvalues; v++)
        start[v + 1] += start[v];
    {
        int *fill = calloc((size_t)g->nvalues + 1, sizeof *fill);
        if (!fill) {
            st = bd_fail(BD_ENOMEM, "out of memory");
            goto done;
        }
        for (int i = 0; i < g->nnodes; i++) {
            const bd_node *n = &g->nodes[i];
            for (int k = 0; k < n->ninputs; k++) {
                int v = n->inputs[k];
                if (v >= 0 && producer[v] >= 0)
                    edge[start[v] + fill[v]++] = i;
            }
        }
        free(fill);
    }
    /* Kahn's algorithm; a FIFO keeps the original order among ready nodes,
     * so a file that is already sorted stays exactly as it was. */
    int head = 0, tail = 0, done_count = 0;
    for (int i = 0; i < g->nnodes; i++)
        if (pending[i] == 0)
            ready[tail++] = i;
    while (head < tail) {
        int i = ready[head++];
        order[done_count++] = i;
        const bd_node *n = &g->nodes[i];
        for (int o = 0; o < n->noutputs; o++) {
            int v = n->outputs[o];
            if (v < 0)
                continue;
            for (int e = start[v]; e < start[v + 1]; e++)
                if (--pending[edge[e]] == 0)
                    ready[tail++] = edge[e];
        }
    }
    if (done_count < g->nnodes) {
        for (int i = 0; i < g->nnodes; i++)
            if (pending[i] > 0) {
                st = bd_fail(BD_EFORMAT, "the graph has a cycle through %s",
                             bd_node_label(&g->nodes[i], label, sizeof label));
                break;
            }
        goto done;
    }
    {
        bd_node *sorted = malloc((size_t)g->nodes_cap * sizeof *sorted + 1);
        if (!sorted) {
            st = bd_fail(BD_ENOMEM, "out of memory");
            goto done;
        }
        for (int i = 0; i < g->nnodes; i++)
            sorted[i] = g->nodes[order[i]];
        free(g->nodes);
        g->nodes = sorted;
    }
    set_producers(g);
    for (int i = 0; i < g->noutputs; i++) {
        int v = g->outputs[i];
        if (g->values[v].producer < 0 && !g->values[v].init && !is_graph_input(g, v)) {
            st = bd_fail(BD_EFORMAT, "graph output '%s' is not computed by any node",
                         g->values[v].name);
            goto done;
        }
    }
done:
    free(producer);
    free(pending);
    free(order);
    free(ready);
    free(start);
    free(edge);
    return st;
}

int bd_graph_use_count(const bd_graph *g, int id)
{
    int count = 0;
    for (int i = 0; i < g->nnodes; i++)
        for (int k = 0; k < g->nodes[i].ninputs; k++)
            count += g->nodes[i].inputs[k] == id;
    return count;
}

const char *bd_graph_meta(const bd_graph *g, const char *key)
{
    for (int i = 0; i < g->nmeta; i++)
        if (strcmp(g->meta[i].key, key) == 0)
            return g->meta[i].value;
    return NULL;
}

bd_status bd_graph_set_meta(bd_graph *g, const char *key, const char *value)
{
    char *v = bd_strdup(value);
    if (!v)
        return bd_fail(BD_ENOMEM, "out of memory");
    for (int i = 0; i < g->nmeta; i++)
        if (strcmp(g->meta[i].key, key) == 0) {
            free(g->meta[i].value);
            g->meta[i].value = v;
            return BD_OK;
        }
    bd_meta *m = realloc(g->meta, (size_t)(g->nmeta + 1) * sizeof *m);
    char *k = bd_strdup(key);
    if (!m || !k) {
        free(v);
        free(k);
        if (m)
            g->meta = m;
        return bd_fail(BD_ENOMEM, "out of memory");
    }
    g->meta = m;
    m[g->nmeta].key = k;
    m[g->nmeta].value = v;
    g->nmeta++;
    return BD_OK;
}

void bd_graph_del_meta(bd_graph *g, const char *key)
{
    for (int i = 0; i < g->nmeta; i++)
        if (strcmp(g->meta[i].key, key) == 0) {
            free(g->meta[i].key);
            free(g->meta[i].value);
            g->meta[i] = g->meta[--g->nmeta];
            return;
        }
}

void bd_node_del_attr(bd_node *n, int i)
{
    attr_clear(&n->attrs[i]);
    memmove(&n->attrs[i], &n->attrs[i + 1], (size_t)(n->nattrs - i - 1) * sizeof *n->attrs);
    n->nattrs--;
}

const bd_attr *bd_node_attr(const bd_node *n, const char *name)
{
    for (int i = 0; i < n->nattrs; i++)
        if (strcmp(n->attrs[i].name, name) == 0)
            return &n->attrs[i];
    return NULL;
}

int64_t bd_attr_int(const bd_node *n, const char *name, int64_t def)
{
    const bd_attr *a = bd_node_attr(n, name);
    return a && a->type == BD_ATTR_INT ? a->i : def;
}

float bd_attr_float(const bd_node *n, const char *name, float def)
{
    const bd_attr *a = bd_node_attr(n, name);
    return a && a->type == BD_ATTR_FLOAT ? a->f : def;
}

const char *bd_attr_string(const bd_node *n, const char *name, const char *def)
{
    const bd_attr *a = bd_node_attr(n, name);
    return a && a->type == BD_ATTR_STRING && a->s ? a->s : def;
}

int bd_attr_ints(const bd_node *n, const char *name, const int64_t **vals)
{
    const bd_attr *a = bd_node_attr(n, name);
    if (!a || a->type != BD_ATTR_INTS)
        return -1;
    *vals = a->ints;
    return a->n;
}

const bd_tensor *bd_node_const_input(const bd_graph *g, const bd_node *n, int i)
{
    if (i >= n->ninputs || n->inputs[i] < 0)
        return NULL;
    return g->values[n->inputs[i]].init;
}

bd_status bd_graph_clone(bd_graph **out, const bd_graph *g)
{
    bd_graph *c = NULL;
    BD_TRY(bd_graph_new(&c));
    bd_status st = BD_OK;
    c->ir_version = g->ir_version;
    c->opset = g->opset;
    if ((g->name && !(c->name = bd_strdup(g->name))) ||
        (g->producer_name && !(c->producer_name = bd_strdup(g->producer_name))) ||
        (g->producer_version && !(c->producer_version = bd_strdup(g->producer_version)))) {
        st = bd_fail(BD_ENOMEM, "out of memory");
        goto fail;
    }
    for (int v = 0; v < g->nvalues && st == BD_OK; v++) {
        int id;
        const bd_value *src = &g->values[v];
        if ((st = bd_graph_value(c, src->name, &id)) != BD_OK)
            break;
        bd_value *dst = &c->values[id];
        dst->dtype = src->dtype;
        dst->ndim = src->ndim;
        dst->producer = src->producer;
        memcpy(dst->dims, src->dims, sizeof dst->dims);
        for (int d = 0; d < BD_MAX_DIMS; d++)
            if (src->dim_param[d] && !(dst->dim_param[d] = bd_strdup(src->dim_param[d])))
                st = bd_fail(BD_ENOMEM, "out of memory");
        if (src->init && st == BD_OK)
            st = bd_tensor_clone(&dst->init, src->init);
    }
    for (int i = 0; i < g->nnodes && st == BD_OK; i++) {
        const bd_node *n = &g->nodes[i];
        const char *in[n->ninputs + 1], *outn[n->noutputs + 1];
        for (int k = 0; k < n->ninputs; k++)
            in[k] = n->inputs[k] >= 0 ? g->values[n->inputs[k]].name : "";
        for (int k = 0; k < n->noutputs; k++)
            outn[k] = n->outputs[k] >= 0 ? g->values[n->outputs[k]].name : "";
        bd_node *cn;
        st = bd_graph_add_node(c, n->name, n->op, n->domain, n->ninputs, in, n->noutputs, outn,
                               &cn);
        for (int a = 0; a < n->nattrs && st == BD_OK; a++)
            st = bd_node_add_attr(cn, &n->attrs[a]);
    }
    if (st == BD_OK) {
        c->inputs = malloc((size_t)g->ninputs * sizeof *c->inputs + 1);
        c->outputs = malloc((size_t)g->noutputs * sizeof *c->outputs + 1);
        if (!c->inputs || !c->outputs)
            st = bd_fail(BD_ENOMEM, "out of memory");
    }
    if (st == BD_OK) {
        memcpy(c->inputs, g->inputs, (size_t)g->ninputs * sizeof *c->inputs);
        memcpy(c->outputs, g->outputs, (size_t)g->noutputs * sizeof *c->outputs);
        c->ninputs = g->ninputs;
        c->noutputs = g->noutputs;
    }
    for (int i = 0; i < g->nmeta && st == BD_OK; i++)
        st = bd_graph_set_meta(c, g->meta[i].key, g->meta[i].value);
    if (st == BD_OK) {
        *out = c;
        return BD_OK;
    }
fail:
    bd_graph_free(c);
    return st;
}
