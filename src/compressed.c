/* Compressed models as standard ONNX (compressed.h): writing the decoding
 * expression of each quantized weight, and recognising it again on load. */
#include "compressed.h"

#include <errno.h>
#include <locale.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "onnx_io.h"
#include "ops.h"
#include "pq.h"
#include "text.h"

#define FORMAT_VERSION "pq/1"

/* ---- graph helpers ---------------------------------------------------------- */

/* An op of the default domain with nin inputs and one output. */
static int is_node(const bd_node *n, const char *op, int nin)
{
    return strcmp(n->op, op) == 0 && (!n->domain[0] || strcmp(n->domain, "ai.onnx") == 0) &&
           n->ninputs == nin && n->noutputs == 1;
}

static int in_list(const int *ids, int n, int id)
{
    for (int i = 0; i < n; i++)
        if (ids[i] == id)
            return 1;
    return 0;
}

/* A graph output is read outside the graph, so it never counts as private. */
static int read_outside_nodes(const bd_graph *g, int id)
{
    return in_list(g->outputs, g->noutputs, id);
}

/* The node that alone reads value v (once), or -1. */
static int sole_reader(const bd_graph *g, int v)
{
    if (v < 0 || read_outside_nodes(g, v))
        return -1;
    int reader = -1;
    for (int i = 0; i < g->nnodes; i++)
        for (int k = 0; k < g->nodes[i].ninputs; k++)
            if (g->nodes[i].inputs[k] == v) {
                if (reader >= 0)
                    return -1;
                reader = i;
            }
    return reader;
}

/* An import leaves the values of the expressions it removed in the table,
 * unused; their names may be taken again. */
static int value_in_use(const bd_graph *g, int id)
{
    const bd_value *v = &g->values[id];
    return v->init || v->producer >= 0 || bd_graph_use_count(g, id) > 0 ||
           in_list(g->inputs, g->ninputs, id) || read_outside_nodes(g, id);
}

/* ---- metadata ----------------------------------------------------------------- */

static int is_pq_key(const char *key)
{
    return strcmp(key, BD_META_FORMAT) == 0 ||
           strncmp(key, BD_META_LAYER_PREFIX, strlen(BD_META_LAYER_PREFIX)) == 0;
}

/* They describe codebooks, so they are rewritten from the codebooks on every
 * export: an entry never outlives its layer's quantization. */
static void drop_pq_meta(bd_graph *g)
{
    int kept = 0;
    for (int i = 0; i < g->nmeta; i++) {
        if (is_pq_key(g->meta[i].key)) {
            free(g->meta[i].key);
            free(g->meta[i].value);
        } else {
            g->meta[kept++] = g->meta[i];
        }
    }
    g->nmeta = kept;
}

/* The numbers in the metadata always have a decimal point, whatever locale
 * the UI switched to for ncurses. */
static bd_status set_layer_meta(bd_graph *g, const bd_layer *l, const bd_qlayer *q)
{
    bd_c_numeric loc;
    BD_TRY(bd_c_numeric_enter(&loc));
    bd_strbuf b = {0};
    bd_strbuf_add(&b, "d=%d;k=%d;objective=%s", q->d, q->k, bd_objective_name(q->objective));
    if (q->rel_error >= 0)
        bd_strbuf_add(&b, ";rel_error=%.6g", q->rel_error);
    bd_strbuf_add(&b, ";iterations=%d;seconds=%.6g;history=", q->iters, q->seconds);
    for (int i = 0; i < q->iters; i++)
        bd_strbuf_add(&b, "%s%.4g", i ? "," : "", q->history[i]);
    bd_c_numeric_leave(&loc);
    char key[sizeof BD_META_LAYER_PREFIX + BD_LAYER_NAME_MAX];
    snprintf(key, sizeof key, "%s%s", BD_META_LAYER_PREFIX, l->name);
    bd_status st = b.oom ? bd_fail(BD_ENOMEM, "out of memory describing layer '%s'", l->name)
                         : bd_graph_set_meta(g, key, b.s);
    bd_strbuf_free(&b);
    return st;
}

/* What "bitdown.layer.<name>" says. d and k are there for people reading the
 * file; the expression itself is what counts. */
typedef struct layer_meta {
    const char *name; /* inside the graph's metadata key */
    bd_objective objective;
    double rel_error, seconds;
    int iters;
    double *history;
} layer_meta;

static bd_status bad_meta(const bd_meta *kv, const char *why)
{
    return bd_fail(BD_EFORMAT, "model metadata %s = '%s': %s", kv->key, kv->value, why);
}

/* A number filling exactly [s, end). */
static int parse_number(const char *s, const char *end, double *v)
{
    char *stop;
    errno = 0;
    *v = strtod(s, &stop);
    return s < end && stop == end && errno == 0 && isfinite(*v);
}

static int parse_count(const char *s, const char *end, double lo, double hi, int *out)
{
    double v;
    if (!parse_number(s, end, &v) || v != floor(v) || v < lo || v > hi)
        return 0;
    *out = (int)v;
    return 1;
}

static bd_status parse_history(const bd_meta *kv, const char *s, const char *end, layer_meta *m)
{
    int count = s < end;
    for (const char *p = s; p < end; p++)
        count += *p == ',';
    m->history = malloc((size_t)count * sizeof *m->history + 1);
    if (!m->history)
        return bd_fail(BD_ENOMEM, "out of memory reading %s", kv->key);
    for (int i = 0; i < count; i++) {
        const char *comma = memchr(s, ',', (size_t)(end - s));
        const char *stop = comma ? comma : end;
        if (!parse_number(s, stop, &m->history[i]))
            return bad_meta(kv, "history is not a comma-separated list of numbers");
        s = stop + 1;
    }
    m->iters = count;
    return BD_OK;
}

/* Whether [s, end) is exactly word. */
static int span_is(const char *s, const char *end, const char *word)
{
    return strlen(word) == (size_t)(end - s) && strncmp(s, word, (size_t)(end - s)) == 0;
}

static bd_status parse_objective(const bd_meta *kv, const char *s, const char *end,
                                 bd_objective *out)
{
    for (int o = 0; o < BD_OBJ_COUNT; o++)
        if (span_is(s, end, bd_objective_name((bd_objective)o))) {
            *out = (bd_objective)o;
            return BD_OK;
        }
    return bad_meta(kv, "the objective is neither act nor weight");
}

/* "d=9;k=256;objective=act;rel_error=0.01;iterations=37;seconds=1.25;history=..."
 * Unknown items are skipped, so later versions may add some. */
static bd_status parse_layer_meta(const bd_meta *kv, layer_meta *m)
{
    memset(m, 0, sizeof *m);
    m->name = kv->key + strlen(BD_META_LAYER_PREFIX);
    m->rel_error = -1;
    int iters = -1, informative;
    for (const char *p = kv->value; *p;) {
        const char *end = strchr(p, ';');
        if (!end)
            end = p + strlen(p);
        const char *eq = memchr(p, '=', (size_t)(end - p));
        if (!eq)
            return bad_meta(kv, "an item is not name=value");
        const char *v = eq + 1;
        if (span_is(p, eq, "d") || span_is(p, eq, "k")) {
            if (!parse_count(v, end, 1, 65536, &informative))
                return bad_meta(kv, "d and k must be whole numbers from 1 to 65536");
        } else if (span_is(p, eq, "objective")) {
            BD_TRY(parse_objective(kv, v, end, &m->objective));
        } else if (span_is(p, eq, "rel_error") || span_is(p, eq, "seconds")) {
            double x;
            if (!parse_number(v, end, &x))
                return bad_meta(kv, "rel_error and seconds must be numbers");
            *(span_is(p, eq, "seconds") ? &m->seconds : &m->rel_error) = x;
        } else if (span_is(p, eq, "iterations")) {
            if (!parse_count(v, end, 0, 1e6, &iters))
                return bad_meta(kv, "iterations must be a whole number from 0 to 1000000");
        } else if (span_is(p, eq, "history")) {
            free(m->history);
            BD_TRY(parse_history(kv, v, end, m));
        }
        p = *end ? end + 1 : end;
    }
    if (iters >= 0 && iters != m->iters)
        return bad_meta(kv, "the history does not have one value per iteration");
    return BD_OK;
}

static void free_layer_metas(layer_meta *m, int n)
{
    for (int i = 0; m && i < n; i++)
        free(m[i].history);
    free(m);
}

static bd_status parse_pq_meta(const bd_graph *g, layer_meta **out, int *n)
{
    const char *format = bd_graph_meta(g, BD_META_FORMAT);
    if (format && strcmp(format, FORMAT_VERSION) != 0)
        return bd_fail(BD_EUNSUPPORTED,
                       "model metadata %s = '%s': this bitdown reads format " FORMAT_VERSION,
                       BD_META_FORMAT, format);
    *n = 0;
    *out = calloc((size_t)g->nmeta + 1, sizeof **out);
    if (!*out)
        return bd_fail(BD_ENOMEM, "out of memory");
    bd_c_numeric loc;
    bd_status st = bd_c_numeric_enter(&loc);
    if (st == BD_OK) {
        for (int i = 0; i < g->nmeta && st == BD_OK; i++)
            if (is_pq_key(g->meta[i].key) && strcmp(g->meta[i].key, BD_META_FORMAT) != 0)
                st = parse_layer_meta(&g->meta[i], &(*out)[(*n)++]);
        bd_c_numeric_leave(&loc);
    }
    if (st != BD_OK) {
        free_layer_metas(*out, *n);
        *out = NULL;
    }
    return st;
}

/* ---- export ------------------------------------------------------------------- */

/* The student must hold exactly what the file will: a weight nothing else
 * reads, valid codes, fp16 centroids, and W = decode(q) bit for bit. */
static bd_status check_exportable(const bd_graph *g, const bd_layer *l, const bd_qlayer *q)
{
    const char *wname = g->values[l->weight].name;
    const bd_tensor *w = g->values[l->weight].init;
    if (!w || w->dtype != BD_F32 || bd_tensor_count(w) != bd_layer_params(l))
        return bd_fail(BD_EINVAL, "layer '%s': weight '%s' is not the float32 initializer of "
                       "%lld values the layer list describes", l->name, wname,
                       (long long)bd_layer_params(l));
    int readers = bd_graph_use_count(g, l->weight);
    if (readers != 1 || read_outside_nodes(g, l->weight))
        return bd_fail(BD_EUNSUPPORTED, "layer '%s': weight '%s' is read by %d nodes%s; only a "
                       "weight that belongs to its layer alone can be stored as codes",
                       l->name, wname, readers,
                       read_outside_nodes(g, l->weight) ? " and is a graph output" : "");
    if (q->k < 1 || q->k > 65536 || q->d < 1 || !q->codes || !q->centroids)
        return bd_fail(BD_EINVAL, "layer '%s': a codebook needs 1 to 65536 centroids (k=%d, d=%d)",
                       l->name, q->k, q->d);
    for (int64_t i = 0; i < q->n; i++)
        if (q->codes[i] < 0 || q->codes[i] >= q->k)
            return bd_fail(BD_EINVAL, "layer '%s': code %d at index %lld is outside 0..%d",
                           l->name, (int)q->codes[i], (long long)i, q->k - 1);
    for (int64_t i = 0; i < (int64_t)q->k * q->d; i++) {
        float c = q->centroids[i], r = bd_f16_to_f32(bd_f32_to_f16(c));
        if (memcmp(&c, &r, sizeof c) != 0)
            return bd_fail(BD_EINVAL, "layer '%s': centroid value %g is not a float16 value, so "
                           "the file would not hold this model (bd_pq_round_fp16)",
                           l->name, (double)c);
    }
    float *decoded = malloc(bd_tensor_nbytes(w) + 1);
    if (!decoded)
        return bd_fail(BD_ENOMEM, "out of memory checking layer '%s'", l->name);
    bd_status st = bd_qlayer_decode(q, l, decoded);
    if (st == BD_OK && memcmp(decoded, w->data, bd_tensor_nbytes(w)) != 0)
        st = bd_fail(BD_EINVAL, "layer '%s': weight '%s' is not what its codebook decodes to "
                     "(was it changed after quantization?)", l->name, wname);
    free(decoded);
    return st;
}

/* Names of what one expression adds, all derived from the weight's name. */
enum {
    N_CODES, N_CENTROIDS, N_SHAPE,                   /* initializers */
    N_CODES_I64, N_GATHERED, N_DECODED, N_ROWS,      /* intermediate values */
    N_NAMES
};
/* Short, and the nodes go unnamed: on a small network names are a
 * noticeable part of the file, whose size should be the compressed size. */
static const char *const name_suffix[N_NAMES] = {".codes", ".centroids", ".shape",
                                                 "/i",     "/g",         "/f",     "/r"};

static bd_status expression_tensors(const bd_layer *l, const bd_qlayer *q, const bd_tensor *w,
                                    char *const *names, bd_tensor **t)
{
    int64_t n = q->n, table[2] = {q->k, q->d}, rows[2] = {l->rows, l->row_len};
    BD_TRY(bd_tensor_new_raw(&t[N_CODES], q->k <= 256 ? BD_U8 : BD_U16, 1, &n, names[N_CODES]));
    BD_TRY(bd_tensor_new_raw(&t[N_CENTROIDS], BD_F16, 2, table, names[N_CENTROIDS]));
    int ndim = l->transposed ? 2 : w->ndim;
    int64_t nd = ndim;
    BD_TRY(bd_tensor_new_raw(&t[N_SHAPE], BD_I64, 1, &nd, names[N_SHAPE]));
    for (int64_t i = 0; i < n; i++) {
        if (q->k <= 256)
            ((uint8_t *)t[N_CODES]->data)[i] = (uint8_t)q->codes[i];
        else
            ((uint16_t *)t[N_CODES]->data)[i] = (uint16_t)q->codes[i];
    }
    for (int64_t i = 0; i < table[0] * table[1]; i++)
        ((uint16_t *)t[N_CENTROIDS]->data)[i] = bd_f32_to_f16(q->centroids[i]);
    memcpy(t[N_SHAPE]->data, l->transposed ? rows : w->dims, (size_t)ndim * sizeof(int64_t));
    return BD_OK;
}

static bd_status add_step(bd_graph *g, const char *name, const char *op, int nin,
                          const char *in0, const char *in1, const char *out, const bd_attr *attr)
{
    const char *ins[2] = {in0, in1};
    bd_node *n;
    BD_TRY(bd_graph_add_node(g, name, op, "", nin, ins, 1, &out, &n));
    return attr ? bd_node_add_attr(n, attr) : BD_OK;
}

static bd_attr int_attr(const char *name, int64_t v)
{
    return (bd_attr){.name = (char *)name, .type = BD_ATTR_INT, .i = v};
}

static bd_status add_expression(bd_graph *g, const bd_layer *l, char *const *names,
                                bd_tensor **t)
{
    for (int i = N_CODES; i <= (l->transposed ? N_ROWS : N_DECODED); i++) {
        int id = bd_graph_find(g, names[i]);
        if (id >= 0 && value_in_use(g, id))
            return bd_fail(BD_EINVAL, "layer '%s': the graph already has a value named '%s'",
                           l->name, names[i]);
    }
    for (int i = N_CODES; i <= N_SHAPE; i++) {
        int id;
        BD_TRY(bd_graph_value(g, names[i], &id));
        bd_graph_set_init(g, id, t[i]);
        t[i] = NULL;
    }
    const char *w = g->values[l->weight].name;
    bd_attr to_i64 = int_attr("to", BD_I64), axis = int_attr("axis", 0),
            to_f32 = int_attr("to", BD_F32);
    bd_attr perm = {.name = (char *)"perm", .type = BD_ATTR_INTS, .n = 2,
                    .ints = (int64_t[]){1, 0}};
    BD_TRY(add_step(g, "", "Cast", 1, names[N_CODES], NULL, names[N_CODES_I64],
                    &to_i64));
    BD_TRY(add_step(g, "", "Gather", 2, names[N_CENTROIDS], names[N_CODES_I64],
                    names[N_GATHERED], &axis));
    BD_TRY(add_step(g, "", "Cast", 1, names[N_GATHERED], NULL, names[N_DECODED],
                    &to_f32));
    BD_TRY(add_step(g, "", "Reshape", 2, names[N_DECODED], names[N_SHAPE],
                    l->transposed ? names[N_ROWS] : w, NULL));
    if (l->transposed)
        BD_TRY(add_step(g, "", "Transpose", 1, names[N_ROWS], NULL, w, &perm));
    return BD_OK;
}

static bd_status export_layer(bd_graph *g, const bd_layer *l, const bd_qlayer *q)
{
    BD_TRY(check_exportable(g, l, q));
    const char *w = g->values[l->weight].name;
    size_t cap = strlen(w) + 32;
    char *block = malloc(cap * N_NAMES), *names[N_NAMES];
    bd_tensor *t[N_SHAPE + 1] = {NULL};
    if (!block)
        return bd_fail(BD_ENOMEM, "out of memory");
    for (int i = 0; i < N_NAMES; i++) {
        names[i] = block + cap * (size_t)i;
        snprintf(names[i], cap, "%s%s", w, name_suffix[i]);
    }
    bd_status st = expression_tensors(l, q, g->values[l->weight].init, names, t);
    if (st == BD_OK)
        st = add_expression(g, l, names, t);
    if (st == BD_OK) {
        bd_graph_set_init(g, l->weight, NULL);
        st = set_layer_meta(g, l, q);
    }
    for (int i = 0; i <= N_SHAPE; i++)
        bd_tensor_free(t[i]);
    free(block);
    return st;
}

bd_status bd_compressed_export(const bd_graph *student, const bd_layer *layers, int nlayers,
                               const bd_qlayer *const *q, bd_graph **out)
{
    bd_graph *g;
    BD_TRY(bd_graph_clone(&g, student));
    drop_pq_meta(g);
    bd_status st = bd_graph_set_meta(g, BD_META_FORMAT, FORMAT_VERSION);
    /* The clone adds values and nodes in the student's order, so the layers'
     * value and node ids are valid in it; new nodes are only appended. */
    for (int i = 0; i < nlayers && st == BD_OK; i++) {
        const bd_layer *l = &layers[i];
        if (!q[i])
            continue;
        if (l->weight < 0 || l->weight >= g->nvalues)
            st = bd_fail(BD_EINVAL, "layer '%s' is not a layer of this graph", l->name);
        else
            st = export_layer(g, l, q[i]);
    }
    if (st == BD_OK)
        st = bd_graph_sort(g);
    if (st != BD_OK) {
        bd_graph_free(g);
        return st;
    }
    *out = g;
    return BD_OK;
}

/* ---- import ------------------------------------------------------------------- */

/* One decoding expression found in a graph. */
typedef struct chain {
    int node[5], nnodes;   /* Cast(codes), Gather, Cast, Reshape [, Transpose] */
    int inits[3];          /* codes, centroids, shape */
    int weight;            /* the value it computes */
    bd_tensor *dense;      /* that value */
    bd_qlayer q;           /* its codes and centroids */
} chain;

/* Structure only: whether Gather node gi starts an expression whose
 * intermediate values nothing else reads. */
static int match_chain(const bd_graph *g, int gi, chain *ch)
{
    const bd_node *gather = &g->nodes[gi];
    if (!is_node(gather, "Gather", 2) || bd_attr_int(gather, "axis", 0) != 0)
        return 0;
    const bd_tensor *table = bd_node_const_input(g, gather, 0);
    if (!table || table->dtype != BD_F16 || table->ndim != 2 || table->dims[0] < 1 ||
        table->dims[0] > 65536 || table->dims[1] < 1)
        return 0;
    int idx = gather->inputs[1], ci = idx >= 0 ? g->values[idx].producer : -1;
    if (ci < 0 || sole_reader(g, idx) != gi || !is_node(&g->nodes[ci], "Cast", 1))
        return 0;
    const bd_node *cast_codes = &g->nodes[ci];
    const bd_tensor *codes = bd_node_const_input(g, cast_codes, 0);
    int64_t to = bd_attr_int(cast_codes, "to", 0);
    if (!codes || (codes->dtype != BD_U8 && codes->dtype != BD_U16) ||
        (to != BD_I64 && to != BD_I32))
        return 0;
    int cast = sole_reader(g, gather->outputs[0]);
    if (cast < 0 || !is_node(&g->nodes[cast], "Cast", 1) ||
        bd_attr_int(&g->nodes[cast], "to", 0) != BD_F32)
        return 0;
    int reshape = sole_reader(g, g->nodes[cast].outputs[0]);
    const bd_node *rn = reshape >= 0 ? &g->nodes[reshape] : NULL;
    if (!rn || !is_node(rn, "Reshape", 2) ||
        rn->inputs[0] != g->nodes[cast].outputs[0] || !bd_node_const_input(g, rn, 1))
        return 0;
    memset(ch, 0, sizeof *ch);
    ch->nnodes = 4;
    memcpy(ch->node, (int[]){ci, gi, cast, reshape}, 4 * sizeof(int));
    memcpy(ch->inits, (int[]){cast_codes->inputs[0], gather->inputs[0], rn->inputs[1]},
           sizeof ch->inits);
    ch->weight = rn->outputs[0];
    /* Whatever it permutes, a transpose of a decoded table is still part of
     * the weight: the layer check below decides whether it is a PQ layout. */
    int tr = sole_reader(g, ch->weight);
    if (tr >= 0 && is_node(&g->nodes[tr], "Transpose", 1)) {
        ch->node[ch->nnodes++] = tr;
        ch->weight = g->nodes[tr].outputs[0];
    }
    return ch->weight >= 0;
}

/* Runs the expression's own nodes, so the weight is what any ONNX runtime
 * computes from the file. */
static bd_status run_chain(const bd_graph *g, chain *ch)
{
    bd_tensor *prev = NULL;
    for (int s = 0; s < ch->nnodes; s++) {
        const bd_node *n = &g->nodes[ch->node[s]];
        bd_tensor *in[2], *out = NULL;
        for (int i = 0; i < n->ninputs; i++)
            in[i] = g->values[n->inputs[i]].init ? g->values[n->inputs[i]].init : prev;
        bd_status st = bd_op_run(g, n, in, &out);
        bd_tensor_free(prev);
        if (st != BD_OK)
            return bd_error_context(st, "the decoding expression of weight '%s'",
                                    g->values[ch->weight].name);
        prev = out;
    }
    ch->dense = prev;
    return BD_OK;
}

static bd_status decode_chain(const bd_graph *g, chain *ch)
{
    const bd_value *cv = &g->values[ch->inits[0]], *tv = &g->values[ch->inits[1]];
    bd_qlayer *q = &ch->q;
    q->k = (int)tv->init->dims[0];
    q->d = (int)tv->init->dims[1];
    q->n = bd_tensor_count(cv->init);
    q->rel_error = -1;
    q->other_error = -1;
    for (int64_t i = 0; i < q->n; i++) {
        int64_t c = bd_tensor_get_i64(cv->init, i);
        if (c >= q->k)
            return bd_fail(BD_EFORMAT, "tensor '%s': code %lld at index %lld is out of range "
                           "for the %d centroids of '%s'", cv->name, (long long)c, (long long)i,
                           q->k, tv->name);
    }
    BD_TRY(run_chain(g, ch));
    int64_t nc = (int64_t)q->k * q->d;
    q->codes = malloc((size_t)q->n * sizeof *q->codes + 1);
    q->centroids = malloc((size_t)nc * sizeof *q->centroids);
    if (!q->codes || !q->centroids)
        return bd_fail(BD_ENOMEM, "out of memory reading the codebook '%s'", tv->name);
    for (int64_t i = 0; i < q->n; i++)
        q->codes[i] = (int32_t)bd_tensor_get_i64(cv->init, i);
    for (int64_t i = 0; i < nc; i++)
        q->centroids[i] = bd_f16_to_f32(((const uint16_t *)tv->init->data)[i]);
    return BD_OK;
}

static void free_chains(chain *ch, int n)
{
    for (int i = 0; ch && i < n; i++) {
        bd_tensor_free(ch[i].dense);
        bd_qlayer_free(&ch[i].q);
    }
    free(ch);
}

static bd_status find_chains(const bd_graph *g, chain **out, int *n)
{
    *n = 0;
    *out = calloc((size_t)g->nnodes + 1, sizeof **out);
    if (!*out)
        return bd_fail(BD_ENOMEM, "out of memory");
    bd_status st = BD_OK;
    for (int i = 0; i < g->nnodes && st == BD_OK; i++)
        if (match_chain(g, i, &(*out)[*n]))
            st = decode_chain(g, &(*out)[(*n)++]);
    if (st != BD_OK) {
        free_chains(*out, *n);
        *out = NULL;
    }
    return st;
}

/* Every expression becomes its dense weight. Nothing here can fail, so g
 * changes completely or not at all. */
static void replace_chains(bd_graph *g, chain *ch, int n, unsigned char *drop)
{
    for (int c = 0; c < n; c++) {
        for (int s = 0; s < ch[c].nnodes; s++)
            drop[ch[c].node[s]] = 1;
        bd_graph_set_init(g, ch[c].weight, ch[c].dense);
        ch[c].dense = NULL;
    }
    /* removing nodes keeps a topological order, and recomputes producers */
    bd_graph_remove_nodes(g, drop);
    for (int c = 0; c < n; c++)
        for (int i = 0; i < 3; i++)
            if (bd_graph_use_count(g, ch[c].inits[i]) == 0 &&
                !read_outside_nodes(g, ch[c].inits[i]))
                bd_graph_set_init(g, ch[c].inits[i], NULL);
}

/* Whether the codebook of ch, laid out as layer l's weight, is the dense
 * weight: a foreign expression may cut rows another way. */
static bd_status same_layout(const bd_graph *g, const bd_layer *l, const chain *ch, int *same)
{
    *same = 0;
    if (bd_graph_use_count(g, l->weight) != 1)
        return BD_OK;
    const bd_tensor *w = g->values[l->weight].init;
    float *decoded = malloc(bd_tensor_nbytes(w) + 1);
    if (!decoded)
        return bd_fail(BD_ENOMEM, "out of memory checking layer '%s'", l->name);
    bd_status st = bd_qlayer_decode(&ch->q, l, decoded);
    *same = st == BD_OK && memcmp(decoded, w->data, bd_tensor_nbytes(w)) == 0;
    free(decoded);
    if (st == BD_ENOMEM)
        return st;
    bd_error_clear();
    return BD_OK;
}

/* Moves what the metadata says about layer `name` into q. */
static void apply_meta(layer_meta *m, int nm, const char *name, bd_qlayer *q)
{
    for (int i = 0; i < nm; i++)
        if (strcmp(m[i].name, name) == 0) {
            q->objective = m[i].objective;
            q->rel_error = m[i].rel_error;
            q->seconds = m[i].seconds;
            q->iters = m[i].iters;
            q->history = m[i].history;
            m[i].history = NULL;
            return;
        }
}

static bd_status layer_qlayers(const bd_graph *g, chain *ch, int nch, layer_meta *m, int nm,
                               bd_qlayer **q, int *nlayers)
{
    bd_layer *layers;
    int n;
    BD_TRY(bd_layers_find(g, &layers, &n));
    bd_qlayer *out = calloc((size_t)n + 1, sizeof *out);
    bd_status st = out ? BD_OK : bd_fail(BD_ENOMEM, "out of memory");
    for (int i = 0; i < n && st == BD_OK; i++)
        for (int c = 0; c < nch && st == BD_OK; c++) {
            int same;
            if (ch[c].weight != layers[i].weight || ch[c].q.k == 0)
                continue;
            st = same_layout(g, &layers[i], &ch[c], &same);
            if (st != BD_OK || !same)
                continue;
            out[i] = ch[c].q;
            memset(&ch[c].q, 0, sizeof ch[c].q);
            apply_meta(m, nm, layers[i].name, &out[i]);
        }
    free(layers);
    if (st != BD_OK) {
        for (int i = 0; out && i < n; i++)
            bd_qlayer_free(&out[i]);
        free(out);
        return st;
    }
    *q = out;
    *nlayers = n;
    return BD_OK;
}

bd_status bd_compressed_import(bd_graph *g, bd_qlayer **q, int *nlayers)
{
    *q = NULL;
    *nlayers = 0;
    layer_meta *m;
    int nm, nch = 0;
    chain *ch = NULL;
    unsigned char *drop = NULL;
    BD_TRY(parse_pq_meta(g, &m, &nm));
    bd_status st = find_chains(g, &ch, &nch);
    if (st == BD_OK && !(drop = calloc((size_t)g->nnodes + 1, 1)))
        st = bd_fail(BD_ENOMEM, "out of memory");
    if (st == BD_OK) {
        replace_chains(g, ch, nch, drop);
        st = layer_qlayers(g, ch, nch, m, nm, q, nlayers);
    }
    if (st == BD_OK)
        drop_pq_meta(g);
    free(drop);
    free_chains(ch, nch);
    free_layer_metas(m, nm);
    return st;
}

bd_status bd_model_load(const char *path, bd_graph **g, bd_qlayer **q, int *nlayers)
{
    *g = NULL;
    *q = NULL;
    *nlayers = 0;
    bd_graph *loaded;
    BD_TRY(bd_onnx_load(path, &loaded));
    bd_status st = bd_compressed_import(loaded, q, nlayers);
    if (st != BD_OK) {
        bd_graph_free(loaded);
        return bd_error_context(st, "%s", path);
    }
    *g = loaded;
    return BD_OK;
}
