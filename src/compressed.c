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

/* Files of format 1 (byte-aligned codes, one expression per layer) still load. */
#define FORMAT_VERSION "packed/3"
#define FORMAT_V2 "packed/2"
#define FORMAT_V1 "pq/1"

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

/* ---- metadata ----------------------------------------------------------------- */

static int is_pq_key(const char *key)
{
    return strcmp(key, BD_META_FORMAT) == 0 || strcmp(key, BD_META_LAYERS) == 0 ||
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

/* One line of "bitdown.layers": what the expression cannot say, for the
 * layer at index i in layer order (its weight's name names it already; the
 * index only when it does not follow the line before's), the objective and
 * iterations only where they differ from the line before (prev, at index
 * prev_i), the error to 4 decimals (as tables show it) and the seconds to
 * 2 significant digits. d, k
 * and the int grid are the
 * expression's; the EM history per iteration is not written. All of it
 * made the metadata a large part of a small model's file. The numbers
 * always have a decimal point, whatever locale the UI switched to for
 * ncurses. */
static void describe_layer(bd_strbuf *b, int i, const bd_qlayer *q, const bd_qlayer *prev,
                           int prev_i)
{
    if (!prev || i != prev_i + 1)
        bd_strbuf_add(b, "%d ", i);
    if (!prev || prev->objective != q->objective)
        bd_strbuf_add(b, "o=%s;", bd_objective_name(q->objective));
    if (!prev || prev->iters != q->iters)
        bd_strbuf_add(b, "i=%d;", q->iters);
    if (q->rel_error >= 0)
        bd_strbuf_add(b, "e=%.4f;", q->rel_error);
    bd_strbuf_add(b, "t=%.2g\n", q->seconds);
}

static bd_status set_layers_meta(bd_graph *g, int nlayers, const bd_qlayer *const *q)
{
    bd_c_numeric loc;
    BD_TRY(bd_c_numeric_enter(&loc));
    bd_strbuf b = {0};
    const bd_qlayer *prev = NULL;
    for (int i = 0, prev_i = -1; i < nlayers; i++)
        if (q[i]) {
            describe_layer(&b, i, q[i], prev, prev_i);
            prev = q[i];
            prev_i = i;
        }
    bd_c_numeric_leave(&loc);
    bd_status st = b.oom ? bd_fail(BD_ENOMEM, "out of memory describing the layers")
                         : b.s ? bd_graph_set_meta(g, BD_META_LAYERS, b.s) : BD_OK;
    bd_strbuf_free(&b);
    return st;
}

/* What the metadata says about one layer. */
typedef struct layer_meta {
    char name[BD_LAYER_NAME_MAX]; /* before packed/3 */
    int index;                    /* packed/3: in layer order; -1 before */
    bd_objective objective;
    double rel_error, seconds;
    int iters;
    double *history;
} layer_meta;

/* Where a layer's description is, for messages: the key and the text. */
typedef struct meta_src {
    const char *key, *text, *end;
} meta_src;

static bd_status bad_meta(const meta_src *src, const char *why)
{
    return bd_fail(BD_EFORMAT, "model metadata %s = '%.*s': %s", src->key,
                   (int)(src->end - src->text), src->text, why);
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

static bd_status parse_history(const meta_src *src, const char *s, const char *end,
                               layer_meta *m)
{
    int count = s < end;
    for (const char *p = s; p < end; p++)
        count += *p == ',';
    m->history = malloc((size_t)count * sizeof *m->history + 1);
    if (!m->history)
        return bd_fail(BD_ENOMEM, "out of memory reading %s", src->key);
    for (int i = 0; i < count; i++) {
        const char *comma = memchr(s, ',', (size_t)(end - s));
        const char *stop = comma ? comma : end;
        if (!parse_number(s, stop, &m->history[i]))
            return bad_meta(src, "history is not a comma-separated list of numbers");
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

static bd_status parse_objective(const meta_src *src, const char *s, const char *end,
                                 bd_objective *out)
{
    for (int o = 0; o < BD_OBJ_COUNT; o++)
        if (span_is(s, end, bd_objective_name((bd_objective)o))) {
            *out = (bd_objective)o;
            return BD_OK;
        }
    return bad_meta(src, "the objective is neither act nor weight");
}

/* Whether the item's name [p, eq) is the short or (format 1) long one. */
static int item_is(const char *p, const char *eq, const char *brief, const char *full)
{
    return span_is(p, eq, brief) || span_is(p, eq, full);
}

/* The items [s, end) of a layer's description: "o=act;e=0.01;i=37;t=1.25"
 * (format 1 spelled objective, rel_error, iterations, seconds and added
 * history=...; packed/2 added f, d, k, b, ch and sym, which only informed).
 * The objective and iterations m holds stand when absent. Unknown items
 * are skipped, so later versions may add some. */
static bd_status parse_layer_meta(const meta_src *src, const char *s, const char *end,
                                  layer_meta *m)
{
    m->rel_error = -1;
    int iters = -1, history = 0, informative;
    for (const char *p = s; p < end;) {
        const char *stop = memchr(p, ';', (size_t)(end - p));
        if (!stop)
            stop = end;
        const char *eq = memchr(p, '=', (size_t)(stop - p));
        if (!eq)
            return bad_meta(src, "an item is not name=value");
        const char *v = eq + 1;
        if (span_is(p, eq, "d") || span_is(p, eq, "k")) {
            if (!parse_count(v, stop, 1, 65536, &informative))
                return bad_meta(src, "d and k must be whole numbers from 1 to 65536");
        } else if (span_is(p, eq, "b") || span_is(p, eq, "ch") || span_is(p, eq, "sym")) {
            if (!parse_count(v, stop, 0, 16, &informative))
                return bad_meta(src, "b, ch and sym must be whole numbers from 0 to 16");
        } else if (span_is(p, eq, "f")) {
            if (!span_is(v, stop, "pq") && !span_is(v, stop, "int"))
                return bad_meta(src, "the format f is neither pq nor int");
        } else if (item_is(p, eq, "o", "objective")) {
            BD_TRY(parse_objective(src, v, stop, &m->objective));
        } else if (item_is(p, eq, "e", "rel_error") || item_is(p, eq, "t", "seconds")) {
            double x;
            if (!parse_number(v, stop, &x))
                return bad_meta(src, "rel_error (e) and seconds (t) must be numbers");
            *(item_is(p, eq, "t", "seconds") ? &m->seconds : &m->rel_error) = x;
        } else if (item_is(p, eq, "i", "iterations")) {
            if (!parse_count(v, stop, 0, 1e6, &iters))
                return bad_meta(src, "iterations (i) must be a whole number from 0 to 1000000");
        } else if (span_is(p, eq, "history")) {
            free(m->history);
            BD_TRY(parse_history(src, v, stop, m));
            history = 1;
        }
        p = stop < end ? stop + 1 : end;
    }
    if (history && iters >= 0 && iters != m->iters)
        return bad_meta(src, "the history does not have one value per iteration");
    if (!history && iters >= 0)
        m->iters = iters;
    return BD_OK;
}

static void free_layer_metas(layer_meta *m, int n)
{
    for (int i = 0; m && i < n; i++)
        free(m[i].history);
    free(m);
}

/* "bitdown.layers" holds a line "[INDEX ]ITEMS" per quantized layer, its
 * index one past the line before's and its objective and iterations those
 * of the line before unless given; files before packed/3 had a key
 * "bitdown.layer.NAME" = ITEMS per layer. */
static bd_status parse_meta_entry(const bd_meta *kv, layer_meta *out, int *n)
{
    const char *v = kv->value, *vend = v + strlen(v);
    if (strcmp(kv->key, BD_META_LAYERS) != 0) {
        meta_src src = {kv->key, v, vend};
        layer_meta *m = &out[(*n)++];
        memset(m, 0, sizeof *m);
        m->index = -1;
        snprintf(m->name, sizeof m->name, "%s", kv->key + strlen(BD_META_LAYER_PREFIX));
        return parse_layer_meta(&src, v, vend, m);
    }
    for (const char *line = v; line < vend;) {
        const char *nl = memchr(line, '\n', (size_t)(vend - line)), *end = nl ? nl : vend;
        meta_src src = {kv->key, line, end};
        const char *sp = memchr(line, ' ', (size_t)(end - line)), *items = line;
        layer_meta *m = &out[(*n)++];
        memset(m, 0, sizeof *m);
        if (line > v) {
            m->index = m[-1].index + 1;
            m->objective = m[-1].objective;
            m->iters = m[-1].iters;
        }
        if (sp) {
            if (!parse_count(line, sp, 0, 1e6, &m->index))
                return bad_meta(&src, "a line is not '[INDEX ]ITEMS', INDEX a layer's place");
            items = sp + 1;
        } else if (line == v) {
            return bad_meta(&src, "the first line does not give its layer's INDEX");
        }
        BD_TRY(parse_layer_meta(&src, items, end, m));
        line = end < vend ? end + 1 : vend;
    }
    return BD_OK;
}

static bd_status parse_pq_meta(const bd_graph *g, layer_meta **out, int *n)
{
    const char *format = bd_graph_meta(g, BD_META_FORMAT);
    if (format && strcmp(format, FORMAT_VERSION) != 0 && strcmp(format, FORMAT_V2) != 0 &&
        strcmp(format, FORMAT_V1) != 0)
        return bd_fail(BD_EUNSUPPORTED,
                       "model metadata %s = '%s': this bitdown reads formats " FORMAT_VERSION
                       ", " FORMAT_V2 " and " FORMAT_V1, BD_META_FORMAT, format);
    /* at most a layer per key or per line */
    size_t cap = (size_t)g->nmeta + 1;
    for (int i = 0; i < g->nmeta; i++)
        if (strcmp(g->meta[i].key, BD_META_LAYERS) == 0)
            for (const char *c = g->meta[i].value; *c; c++)
                cap += *c == '\n';
    *n = 0;
    *out = calloc(cap, sizeof **out);
    if (!*out)
        return bd_fail(BD_ENOMEM, "out of memory");
    bd_c_numeric loc;
    bd_status st = bd_c_numeric_enter(&loc);
    if (st == BD_OK) {
        for (int i = 0; i < g->nmeta && st == BD_OK; i++)
            if (is_pq_key(g->meta[i].key) && strcmp(g->meta[i].key, BD_META_FORMAT) != 0)
                st = parse_meta_entry(&g->meta[i], *out, n);
        bd_c_numeric_leave(&loc);
    }
    if (st != BD_OK) {
        free_layer_metas(*out, *n);
        *out = NULL;
    }
    return st;
}

/* ---- export ------------------------------------------------------------------- */

/* Whether every value of a is a float16 value. */
static int all_fp16(const float *a, int64_t n)
{
    for (int64_t i = 0; a && i < n; i++) {
        float c = a[i], r = bd_f16_to_f32(bd_f32_to_f16(c));
        if (memcmp(&c, &r, sizeof c) != 0)
            return 0;
    }
    return 1;
}

/* The codec's own fields, as the file can hold them. */
static bd_status check_codec(const bd_layer *l, const bd_qlayer *q)
{
    if (q->format == BD_FMT_INT) {
        BD_TRY(bd_int_spec_check(l, &q->ints));
        if (q->k != 1 << q->ints.bits || q->d != 1 || !q->codes || !q->scales ||
            (q->nscales != 1 && q->nscales != l->rows) || !q->zeros != !!q->ints.symmetric)
            return bd_fail(BD_EINVAL, "layer '%s': an int layer needs k = 2^bits, d = 1, and "
                           "1 or %lld scales (and zero points unless symmetric)", l->name,
                           (long long)l->rows);
        if (!all_fp16(q->scales, q->nscales) || !all_fp16(q->zeros, q->nscales))
            return bd_fail(BD_EINVAL, "layer '%s': a scale or zero point is not a float16 "
                           "value, so the file would not hold this model", l->name);
        if (q->row_bits && bd_int_order_bits(l->rows) > 16)
            return bd_fail(BD_EINVAL, "layer '%s': %lld rows are too many for a bit length per "
                           "row (the file's row order takes 16 bits a row at most)", l->name,
                           (long long)l->rows);
        return BD_OK;
    }
    if (q->k < 1 || q->k > 65536 || q->d < 1 || !q->codes || !q->centroids)
        return bd_fail(BD_EINVAL, "layer '%s': a codebook needs 1 to 65536 centroids (k=%d, d=%d)",
                       l->name, q->k, q->d);
    if (!all_fp16(q->centroids, (int64_t)q->k * q->d))
        return bd_fail(BD_EINVAL, "layer '%s': a centroid value is not a float16 value, so "
                       "the file would not hold this model (bd_pq_round_fp16)", l->name);
    return BD_OK;
}

/* The student must hold exactly what the file will: a weight nothing else
 * reads, valid codes, fp16 tables, and W = decode(q) bit for bit. */
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
    BD_TRY(check_codec(l, q));
    for (int64_t i = 0; i < q->n; i++)
        if (q->codes[i] < 0 || q->codes[i] >= q->k)
            return bd_fail(BD_EINVAL, "layer '%s': code %d at index %lld is outside 0..%d",
                           l->name, (int)q->codes[i], (long long)i, q->k - 1);
    float *decoded = malloc(bd_tensor_nbytes(w) + 1);
    if (!decoded)
        return bd_fail(BD_ENOMEM, "out of memory checking layer '%s'", l->name);
    bd_status st = bd_qlayer_decode(q, l, decoded);
    if (st == BD_OK && memcmp(decoded, w->data, bd_tensor_nbytes(w)) != 0)
        st = bd_fail(BD_EINVAL, "layer '%s': weight '%s' is not what its codes decode to "
                     "(was it changed after quantization?)", l->name, wname);
    free(decoded);
    return st;
}

static int is_io(const bd_graph *g, int id)
{
    return in_list(g->inputs, g->ninputs, id) || in_list(g->outputs, g->noutputs, id);
}

/* What export adds to the graph: values under temporary names (the file's
 * names are given at the end), small constants once each. */
enum { NAME_CAP = 24 };

/* Float16 tables of one shape but the first dimension (pq codebooks of one
 * d, int scales and zero points of one rank), stored as one: a Cast and a
 * Split cost less than an initializer and a Cast each. */
typedef struct pool {
    int ndim;
    int64_t tail[BD_MAX_DIMS]; /* dims[1..ndim) */
    int64_t rows, row_len;
    uint16_t *data;
    int n;                     /* pieces */
    int64_t *sizes;            /* their rows */
    char (*names)[NAME_CAP];   /* the values they become */
} pool;

typedef struct exporter {
    bd_graph *g;
    int next;          /* temporary names */
    int *consts, nconsts;
    pool *pools;
    int npools;
} exporter;

static void fresh_name(exporter *x, char *name)
{
    do
        snprintf(name, NAME_CAP, "~%d", x->next++);
    while (bd_graph_find(x->g, name) >= 0);
}

/* A new initializer holding t (taken), under a fresh name. */
static bd_status add_init(exporter *x, bd_tensor *t, char *name)
{
    int id;
    fresh_name(x, name);
    bd_status st = bd_graph_value(x->g, name, &id);
    if (st == BD_OK)
        bd_graph_set_init(x->g, id, t);
    else
        bd_tensor_free(t);
    return st;
}

/* A small constant, stored once however many expressions read it. */
static bd_status constant(exporter *x, bd_dtype dtype, int ndim, const int64_t *dims,
                          const void *v, char *name)
{
    bd_tensor *t;
    BD_TRY(bd_tensor_new_raw(&t, dtype, ndim, dims, "a constant"));
    memcpy(t->data, v, bd_tensor_nbytes(t));
    for (int i = 0; i < x->nconsts; i++) {
        const bd_value *c = &x->g->values[x->consts[i]];
        if (c->init->dtype == dtype && bd_tensor_same_shape(c->init, t) &&
            memcmp(c->init->data, t->data, bd_tensor_nbytes(t)) == 0) {
            bd_tensor_free(t);
            snprintf(name, NAME_CAP, "%s", c->name);
            return BD_OK;
        }
    }
    int *grown = realloc(x->consts, (size_t)(x->nconsts + 1) * sizeof *grown);
    if (!grown) {
        bd_tensor_free(t);
        return bd_fail(BD_ENOMEM, "out of memory");
    }
    x->consts = grown;
    BD_TRY(add_init(x, t, name));
    x->consts[x->nconsts++] = bd_graph_find(x->g, name);
    return BD_OK;
}

/* Whether a's n values are all v. */
static int all_are(const bd_attr *a, int64_t v)
{
    for (int i = 0; i < a->n; i++)
        if (a->ints[i] != v)
            return 0;
    return 1;
}

/* An attribute of Conv, Gemm, Flatten or BatchNormalization at its ONNX
 * default, or Conv's kernel_shape, which its weight's shape gives: the file
 * need not say it. Every reader, bitdown's trainer included, takes the
 * default when it is absent. */
static int says_nothing(const bd_node *n, const bd_attr *a)
{
    const char *op = n->op, *name = a->name;
    if (n->domain[0])
        return 0;
    if (strcmp(op, "Conv") == 0 && a->type == BD_ATTR_INTS)
        return strcmp(name, "kernel_shape") == 0 ||
               ((strcmp(name, "strides") == 0 || strcmp(name, "dilations") == 0) &&
                all_are(a, 1)) ||
               (strcmp(name, "pads") == 0 && all_are(a, 0));
    if (strcmp(op, "Conv") == 0)
        return (a->type == BD_ATTR_INT && strcmp(name, "group") == 0 && a->i == 1) ||
               (a->type == BD_ATTR_STRING && strcmp(name, "auto_pad") == 0 &&
                strcmp(a->s, "NOTSET") == 0);
    if (strcmp(op, "Gemm") == 0)
        return (a->type == BD_ATTR_FLOAT && a->f == 1.0f &&
                (strcmp(name, "alpha") == 0 || strcmp(name, "beta") == 0)) ||
               (a->type == BD_ATTR_INT && a->i == 0 &&
                (strcmp(name, "transA") == 0 || strcmp(name, "transB") == 0));
    if (strcmp(op, "BatchNormalization") == 0)
        return a->type == BD_ATTR_FLOAT && ((strcmp(name, "epsilon") == 0 && a->f == 1e-5f) ||
                                            (strcmp(name, "momentum") == 0 && a->f == 0.9f));
    return strcmp(op, "Flatten") == 0 && a->type == BD_ATTR_INT && a->i == 1 &&
           strcmp(name, "axis") == 0;
}

static void drop_default_attrs(bd_graph *g)
{
    for (int i = 0; i < g->nnodes; i++)
        for (int k = g->nodes[i].nattrs - 1; k >= 0; k--)
            if (says_nothing(&g->nodes[i], &g->nodes[i].attrs[k]))
                bd_node_del_attr(&g->nodes[i], k);
}

/* The model's own small constants (scalars, short int64 lists: exporters
 * repeat Clip's 0 and 6 once per node) are stored once, and the ones
 * export adds reuse them, under a temporary name when theirs would not fit
 * export's names (the file's names are given at the end anyway). None is a
 * parameter that training changes. */
static bd_status share_constants(exporter *x)
{
    bd_graph *g = x->g;
    for (int v = 0; v < g->nvalues; v++) {
        const bd_tensor *t = g->values[v].init;
        if (!t || is_io(g, v) || !(t->ndim == 0 || (t->dtype == BD_I64 && bd_tensor_count(t) <= 8)))
            continue;
        int same = -1;
        for (int i = 0; i < x->nconsts && same < 0; i++) {
            const bd_tensor *c = g->values[x->consts[i]].init;
            if (c->dtype == t->dtype && bd_tensor_same_shape(c, t) &&
                memcmp(c->data, t->data, bd_tensor_nbytes(t)) == 0)
                same = x->consts[i];
        }
        if (same >= 0) {
            for (int i = 0; i < g->nnodes; i++)
                for (int k = 0; k < g->nodes[i].ninputs; k++)
                    if (g->nodes[i].inputs[k] == v)
                        g->nodes[i].inputs[k] = same;
            bd_graph_set_init(g, v, NULL);
            continue;
        }
        int *grown = realloc(x->consts, (size_t)(x->nconsts + 1) * sizeof *grown);
        if (!grown)
            return bd_fail(BD_ENOMEM, "out of memory");
        x->consts = grown;
        x->consts[x->nconsts++] = v;
        if (strlen(g->values[v].name) >= NAME_CAP) {
            char name[NAME_CAP];
            fresh_name(x, name);
            BD_TRY(bd_graph_rename(g, v, name));
        }
    }
    return BD_OK;
}

static bd_status scalar(exporter *x, int64_t v, char *name)
{
    return constant(x, BD_I64, 0, NULL, &v, name);
}

static bd_status int_list(exporter *x, int n, const int64_t *v, char *name)
{
    int64_t dims[1] = {n};
    return constant(x, BD_I64, 1, dims, v, name);
}

/* One node, unnamed; out is a fresh name unless given. */
static bd_status step(exporter *x, const char *op, int nin, const char *const *in, char *out,
                      const bd_attr *attr)
{
    bd_node *n;
    if (!out[0])
        fresh_name(x, out);
    const char *outs[1] = {out};
    BD_TRY(bd_graph_add_node(x->g, "", op, "", nin, in, 1, outs, &n));
    return attr ? bd_node_add_attr(n, attr) : BD_OK;
}

#define STEP(x, op, out, attr, ...)                                                  \
    step(x, op, (int)(sizeof((const char *[]){__VA_ARGS__}) / sizeof(const char *)), \
         (const char *[]){__VA_ARGS__}, out, attr)

static bd_attr int_attr(const char *name, int64_t v)
{
    return (bd_attr){.name = (char *)name, .type = BD_ATTR_INT, .i = v};
}

/* The width a code takes in the file: a zero-width code (one centroid)
 * takes one bit, as no Reshape can cut bits into rows of zero. */
static int file_bits(int bits)
{
    return bits > 0 ? bits : 1;
}

/* About what a code width costs in the file besides its codes (its
 * Reshape, MatMul and Split, their constants, names and framing), as
 * measured on the Fashion-MNIST examples. */
enum { WIDTH_BYTES = 160 };

/* A run of codes the bit string holds: a layer's, or (a layer with a bit
 * length per row) the codes of its rows of one width, or its row order. */
typedef struct item {
    const int32_t *codes;
    int64_t n;
    int bits;             /* the codes' own */
    int fixed;            /* int codes: their width is how the file gives their bits */
    int width;            /* in the file (choose_widths) */
    int32_t *own;         /* codes gathered for the item, freed with it */
    char name[NAME_CAP];  /* the int64 codes the file unpacks */
} item;

/* The width each item takes in the file. A width whose pq codes (or row
 * orders) would take fewer extra bytes in the next wider width than the
 * width itself costs moves up: an index fits in any width at least its
 * own. Int codes keep theirs. */
static void choose_widths(item *it, int nitems)
{
    int64_t count[17] = {0};
    int fixed[17] = {0};
    for (int i = 0; i < nitems; i++) {
        it[i].width = file_bits(it[i].bits);
        count[it[i].width] += it[i].n;
        fixed[it[i].width] |= it[i].fixed;
    }
    for (int b = 1; b < 16; b++) {
        int up = b + 1;
        while (up < 16 && !count[up])
            up++;
        if (!count[b] || fixed[b] || !count[up] || count[b] * (up - b) / 8 >= WIDTH_BYTES)
            continue;
        count[up] += count[b];
        count[b] = 0;
        for (int i = 0; i < nitems; i++)
            it[i].width = it[i].width == b ? up : it[i].width;
    }
}

/* A Split of `from` along axis 0 into the given sizes, under the given
 * output names (fresh ones where empty). */
static bd_status split(exporter *x, const char *from, int n, const int64_t *sizes,
                       char (*outs)[NAME_CAP])
{
    char s[NAME_CAP];
    const char **names = malloc((size_t)n * sizeof *names + 1);
    if (!names)
        return bd_fail(BD_ENOMEM, "out of memory");
    bd_status st = int_list(x, n, sizes, s);
    for (int j = 0; j < n && st == BD_OK; j++) {
        if (!outs[j][0])
            fresh_name(x, outs[j]);
        names[j] = outs[j];
    }
    bd_node *node;
    if (st == BD_OK)
        st = bd_graph_add_node(x->g, "", "Split", "", 2, (const char *[]){from, s}, n, names,
                               &node);
    free(names);
    return st;
}

/* The codes of all items as one bit string, and the expression unpacking
 * them (docs/format.md): one uint8 [L, 1] initializer whose bits (least
 * significant first) hold the codes of each width (choose_widths) in turn,
 * narrowest first, item by item. Its bytes become bits once (Div by the powers of two, Mod
 * 2); a Split cuts the bits of each width, a MatMul by [1, 2, ..., 2^(b-1)]
 * sums each code's b bits, and a Split per width gives each item its
 * codes, int64, under its name. A part with a single piece needs no
 * Split. A few nodes for the whole model, where one expression per width
 * took 19. */
static bd_status export_codes(exporter *x, item *it, int nitems)
{
    int64_t count[17] = {0}, bits_total = 0;
    choose_widths(it, nitems);
    for (int i = 0; i < nitems; i++) {
        count[it[i].width] += it[i].n;
        bits_total += it[i].n * it[i].width;
    }
    int64_t dims[2] = {(bits_total + 7) / 8, 1}, pad = 8 * dims[0] - bits_total;
    bd_tensor *packed;
    BD_TRY(bd_tensor_new(&packed, BD_U8, 2, dims, "packed codes"));
    int64_t at = 0;
    for (int b = 1; b <= 16; b++)
        for (int i = 0; i < nitems; i++)
            if (it[i].width == b) {
                bd_pack_bits_at(it[i].codes, it[i].n, b, packed->data, at);
                at += it[i].n * b;
            }
    static const int64_t pow2[16] = {1,    2,    4,    8,    16,   32,    64,    128,
                                     256,  512,  1024, 2048, 4096, 8192, 16384, 32768};
    char p[NAME_CAP], shifts[NAME_CAP], two[NAME_CAP], flat[NAME_CAP], v[3][NAME_CAP] = {{0}};
    char bits[NAME_CAP] = "", (*part)[NAME_CAP] = calloc(18, sizeof *part);
    int64_t sizes[18], nparts = 0;
    bd_attr to_i64 = int_attr("to", BD_I64);
    bd_status st = part ? add_init(x, packed, p) : bd_fail(BD_ENOMEM, "out of memory");
    if (!part)
        bd_tensor_free(packed);
    if (st == BD_OK)
        st = int_list(x, 8, pow2, shifts);
    if (st == BD_OK)
        st = scalar(x, 2, two);
    if (st == BD_OK)
        st = int_list(x, 1, (const int64_t[]){-1}, flat);
    if (st == BD_OK)
        st = STEP(x, "Cast", v[0], &to_i64, p);
    if (st == BD_OK)
        st = STEP(x, "Div", v[1], NULL, v[0], shifts);
    if (st == BD_OK)
        st = STEP(x, "Mod", v[2], NULL, v[1], two);
    if (st == BD_OK)
        st = STEP(x, "Reshape", bits, NULL, v[2], flat);
    for (int b = 1; b <= 16; b++)
        if (count[b])
            sizes[nparts++] = count[b] * b;
    if (pad)
        sizes[nparts++] = pad;
    if (st == BD_OK && nparts > 1)
        st = split(x, bits, (int)nparts, sizes, part);
    else if (st == BD_OK)
        snprintf(part[0], NAME_CAP, "%s", bits);
    int64_t *nper = malloc((size_t)nitems * sizeof *nper + 1);
    char(*outs)[NAME_CAP] = calloc((size_t)nitems + 1, sizeof *outs);
    if (st == BD_OK && (!nper || !outs))
        st = bd_fail(BD_ENOMEM, "out of memory");
    for (int b = 1, k = 0; b <= 16 && st == BD_OK; b++) {
        if (!count[b])
            continue;
        char shape[NAME_CAP], powers[NAME_CAP], rows[NAME_CAP] = "", sum[NAME_CAP] = "";
        st = int_list(x, 2, (const int64_t[]){-1, b}, shape);
        if (st == BD_OK)
            st = int_list(x, b, pow2, powers);
        if (st == BD_OK)
            st = STEP(x, "Reshape", rows, NULL, part[k++], shape);
        if (st == BD_OK)
            st = STEP(x, "MatMul", sum, NULL, rows, powers);
        int n = 0;
        for (int i = 0; i < nitems && st == BD_OK; i++)
            if (it[i].width == b)
                nper[n++] = it[i].n;
        if (st == BD_OK && n > 1)
            st = split(x, sum, n, nper, outs);
        for (int i = 0, j = 0; i < nitems && st == BD_OK; i++)
            if (it[i].width == b)
                snprintf(it[i].name, NAME_CAP, "%s", n > 1 ? outs[j++] : sum);
        memset(outs, 0, (size_t)n * sizeof *outs);
    }
    free(nper);
    free(outs);
    free(part);
    return st;
}

/* A float16 table of the given shape, as float32 under a fresh name: a
 * piece of its pool, which flush_pools stores. */
static bd_status fp16_table(exporter *x, const float *v, int ndim, const int64_t *dims,
                            char *name)
{
    pool *p = NULL;
    int64_t row_len = 1;
    for (int i = 1; i < ndim; i++)
        row_len *= dims[i];
    for (int i = 0; i < x->npools && !p; i++)
        if (x->pools[i].ndim == ndim &&
            memcmp(x->pools[i].tail, dims + 1, (size_t)(ndim - 1) * sizeof *dims) == 0)
            p = &x->pools[i];
    if (!p) {
        pool *grown = realloc(x->pools, (size_t)(x->npools + 1) * sizeof *grown);
        if (!grown)
            return bd_fail(BD_ENOMEM, "out of memory");
        x->pools = grown;
        p = &x->pools[x->npools++];
        memset(p, 0, sizeof *p);
        p->ndim = ndim;
        memcpy(p->tail, dims + 1, (size_t)(ndim - 1) * sizeof *dims);
        p->row_len = row_len;
    }
    uint16_t *data = realloc(p->data, (size_t)((p->rows + dims[0]) * row_len) * sizeof *data + 1);
    if (data)
        p->data = data;
    int64_t *sizes = realloc(p->sizes, (size_t)(p->n + 1) * sizeof *sizes);
    if (sizes)
        p->sizes = sizes;
    char(*names)[NAME_CAP] = realloc(p->names, (size_t)(p->n + 1) * sizeof *names);
    if (names)
        p->names = names;
    if (!data || !sizes || !names)
        return bd_fail(BD_ENOMEM, "out of memory");
    for (int64_t i = 0; i < dims[0] * row_len; i++)
        p->data[p->rows * row_len + i] = bd_f32_to_f16(v[i]);
    p->rows += dims[0];
    p->sizes[p->n] = dims[0];
    fresh_name(x, name);
    snprintf(p->names[p->n++], NAME_CAP, "%s", name);
    return BD_OK;
}

static bd_status split(exporter *x, const char *from, int n, const int64_t *sizes,
                       char (*outs)[NAME_CAP]);

/* Each pool as one float16 initializer, Cast to float and (with more than
 * one piece) Split into its pieces. */
static bd_status flush_pools(exporter *x)
{
    bd_attr to_f32 = int_attr("to", BD_F32);
    for (int i = 0; i < x->npools; i++) {
        pool *p = &x->pools[i];
        int64_t dims[BD_MAX_DIMS] = {p->rows};
        memcpy(dims + 1, p->tail, (size_t)(p->ndim - 1) * sizeof *dims);
        bd_tensor *t;
        char name[NAME_CAP], f[NAME_CAP] = "";
        BD_TRY(bd_tensor_new_raw(&t, BD_F16, p->ndim, dims, "a float16 table"));
        memcpy(t->data, p->data, bd_tensor_nbytes(t));
        BD_TRY(add_init(x, t, name));
        if (p->n == 1)
            snprintf(f, sizeof f, "%s", p->names[0]);
        BD_TRY(STEP(x, "Cast", f, &to_f32, name));
        if (p->n > 1)
            BD_TRY(split(x, f, p->n, p->sizes, p->names));
    }
    return BD_OK;
}

static void free_pools(exporter *x)
{
    for (int i = 0; i < x->npools; i++) {
        free(x->pools[i].data);
        free(x->pools[i].sizes);
        free(x->pools[i].names);
    }
    free(x->pools);
}

/* The items of layer q (room for 18 at it): its codes, or with a bit
 * length per row the codes of its rows of each width, narrowest first
 * (rows in row order), then its row order: row r's place among the rows
 * sorted so. */
static bd_status layer_items(const bd_qlayer *q, item *it, int *nitems)
{
    *nitems = 1;
    memset(it, 0, sizeof *it);
    if (!q->row_bits) {
        int fixed = q->format == BD_FMT_INT;
        const int bits = fixed ? q->ints.bits : bd_code_bits(q->k);
        it[0] = (item){q->codes, q->n, bits, fixed, 0, NULL, ""};
        return BD_OK;
    }
    const int64_t rows = q->nscales, len = q->n / rows;
    int32_t *place = malloc((size_t)rows * sizeof *place);
    if (!place)
        return bd_fail(BD_ENOMEM, "out of memory");
    int n = 0;
    int64_t next = 0;
    for (int b = 1; b <= 16; b++) {
        int64_t m = 0;
        for (int64_t r = 0; r < rows; r++)
            m += q->row_bits[r] == b;
        if (!m)
            continue;
        int32_t *own = malloc((size_t)(m * len) * sizeof *own);
        if (!own) {
            for (int i = 0; i < n; i++)
                free(it[i].own);
            free(place);
            return bd_fail(BD_ENOMEM, "out of memory");
        }
        for (int64_t r = 0, j = 0; r < rows; r++)
            if (q->row_bits[r] == b) {
                memcpy(own + j++ * len, q->codes + r * len, (size_t)len * sizeof *own);
                place[r] = (int32_t)next++;
            }
        it[n++] = (item){own, m * len, b, 1, 0, own, ""};
    }
    it[n++] = (item){place, rows, bd_int_order_bits(rows), 0, 0, place, ""};
    *nitems = n;
    return BD_OK;
}

/* An int grid's weight from `codes` of `bits` bits: Cast -> Reshape(shape)
 * -> Sub(z) -> Mul(s), z and s nscales fp16 values, one per row or one in
 * all, broadcast along the rows; z the float scalar 2^(bits-1) for a
 * symmetric grid (zeros NULL). */
static bd_status int_grid(exporter *x, const char *codes, const char *shape, int ndim,
                          int64_t nscales, const float *scales, const float *zeros, int bits,
                          char *out)
{
    bd_attr to_f32 = int_attr("to", BD_F32);
    char f[NAME_CAP] = "", u[NAME_CAP] = "", z[NAME_CAP] = "", s[NAME_CAP] = "",
         sub[NAME_CAP] = "";
    int64_t per[BD_MAX_DIMS];
    for (int i = 0; i < ndim; i++)
        per[i] = i == 0 ? nscales : 1;
    BD_TRY(STEP(x, "Cast", f, &to_f32, codes));
    BD_TRY(STEP(x, "Reshape", u, NULL, f, shape));
    if (zeros) {
        BD_TRY(fp16_table(x, zeros, ndim, per, z));
    } else {
        float zero = (float)(1 << (bits - 1));
        BD_TRY(constant(x, BD_F32, 0, NULL, &zero, z));
    }
    BD_TRY(STEP(x, "Sub", sub, NULL, u, z));
    BD_TRY(fp16_table(x, scales, ndim, per, s));
    return STEP(x, "Mul", out, NULL, sub, s);
}

/* A layer with a bit length per row, from its items (layer_items): the
 * rows of each width decode as an int layer of that width, their scales
 * and zero points taken in row order; the parts are Concat'ed (narrowest
 * first) and a Gather by the row order puts each row back in its place. */
static bd_status rows_weight(exporter *x, const bd_qlayer *q, const item *it, int nitems,
                             const char *shape, int ndim, char *out)
{
    const int nparts = nitems - 1;
    float *s = malloc((size_t)q->nscales * 2 * sizeof *s);
    char(*parts)[NAME_CAP] = calloc((size_t)nparts, sizeof *parts);
    const char **in = malloc((size_t)nparts * sizeof *in);
    char all[NAME_CAP] = "";
    bd_status st = s && parts && in ? BD_OK : bd_fail(BD_ENOMEM, "out of memory");
    for (int k = 0; k < nparts && st == BD_OK; k++) {
        float *z = q->zeros ? s + q->nscales : NULL;
        int64_t m = 0;
        for (int64_t r = 0; r < q->nscales; r++)
            if (q->row_bits[r] == it[k].bits) {
                s[m] = q->scales[r];
                if (z)
                    z[m] = q->zeros[r];
                m++;
            }
        st = int_grid(x, it[k].name, shape, ndim, m, s, z, it[k].bits, parts[k]);
        in[k] = parts[k];
    }
    bd_attr axis = int_attr("axis", 0);
    bd_node *n;
    if (st == BD_OK && nparts > 1) {
        fresh_name(x, all);
        st = bd_graph_add_node(x->g, "", "Concat", "", nparts, in, 1, (const char *[]){all}, &n);
        if (st == BD_OK)
            st = bd_node_add_attr(n, &axis);
    } else if (st == BD_OK) {
        snprintf(all, sizeof all, "%s", parts[0]);
    }
    if (st == BD_OK)
        st = STEP(x, "Gather", out, NULL, all, it[nparts].name);
    free(s);
    free(parts);
    free(in);
    return st;
}

/* The layer's weight from its codes (its items, layer_items): pq gathers
 * centroids; int computes (u - z) * s (int_grid, or rows_weight with a bit
 * length per row). Both work on the weight's shape, or on [rows, row_len]
 * then a Transpose when the weight is stored transposed. Shapes begin with
 * -1 (Reshape works out the rows), so layers that agree in their other
 * dimensions share one. */
static bd_status export_weight(exporter *x, const bd_layer *l, const bd_qlayer *q,
                               const item *it, int nitems)
{
    const bd_tensor *w = x->g->values[l->weight].init;
    int64_t dims[BD_MAX_DIMS] = {-1, l->row_len};
    int ndim = 2;
    if (!l->transposed) {
        memcpy(dims, w->dims, sizeof dims);
        ndim = w->ndim;
        dims[0] = -1;
    }
    char t[NAME_CAP], shape[NAME_CAP], f[NAME_CAP] = "", out[BD_LAYER_NAME_MAX + 64] = "";
    if (!l->transposed)
        snprintf(out, sizeof out, "%s", x->g->values[l->weight].name);
    BD_TRY(int_list(x, ndim, dims, shape));
    if (q->row_bits) {
        BD_TRY(rows_weight(x, q, it, nitems, shape, ndim, out));
    } else if (q->format == BD_FMT_INT) {
        BD_TRY(int_grid(x, it[0].name, shape, ndim, q->nscales, q->scales, q->zeros,
                        q->ints.bits, out));
    } else {
        BD_TRY(fp16_table(x, q->centroids, 2, (const int64_t[]){q->k, q->d}, t));
        BD_TRY(STEP(x, "Gather", f, NULL, t, it[0].name));
        BD_TRY(STEP(x, "Reshape", out, NULL, f, shape));
    }
    bd_graph_set_init(x->g, l->weight, NULL);
    if (!l->transposed)
        return BD_OK;
    char wname[BD_LAYER_NAME_MAX + 64];
    snprintf(wname, sizeof wname, "%s", x->g->values[l->weight].name);
    bd_attr perm = {.name = (char *)"perm", .type = BD_ATTR_INTS, .n = 2,
                    .ints = (int64_t[]){1, 0}};
    return STEP(x, "Transpose", wname, &perm, out);
}

/* Names are a noticeable part of a small model's file (a BatchNormalization
 * names four tensors, an exporter's constants carry the node path): nodes
 * go unnamed and every value but the graph's inputs and outputs and the
 * layers' weights gets a short name. The weights keep theirs because they
 * name the layers (bd_layers_find) and tie a loaded file to its original
 * model (workspace.c); nothing else is found by name. A weight named by
 * the runtime ("onnx::Conv_12"), whose layer took its node's name, gets
 * that name instead, so the layer keeps it without its node's. */
static bd_status shorten_names(bd_graph *g, const bd_layer *layers, int nlayers)
{
    for (int i = 0; i < g->nnodes; i++)
        g->nodes[i].name[0] = '\0';
    unsigned char *keep = calloc((size_t)g->nvalues + 1, 1);
    if (!keep)
        return bd_fail(BD_ENOMEM, "out of memory");
    bd_status st = BD_OK;
    for (int i = 0; i < nlayers && st == BD_OK; i++) {
        const char *w = g->values[layers[i].weight].name;
        char own[BD_LAYER_NAME_MAX + 8];
        snprintf(own, sizeof own, "%s.weight", layers[i].name);
        keep[layers[i].weight] = 1;
        if (strcmp(w, own) != 0 && strcmp(w, layers[i].name) != 0 && bd_graph_find(g, own) < 0)
            st = bd_graph_rename(g, layers[i].weight, own);
    }
    /* the values named most often get the shortest names */
    int *uses = calloc((size_t)g->nvalues + 1, sizeof *uses), most = 0, next = 0;
    if (!uses)
        st = bd_fail(BD_ENOMEM, "out of memory");
    for (int i = 0; i < g->nnodes && uses; i++) {
        for (int k = 0; k < g->nodes[i].ninputs; k++)
            uses[g->nodes[i].inputs[k] >= 0 ? g->nodes[i].inputs[k] : g->nvalues]++;
        for (int k = 0; k < g->nodes[i].noutputs; k++)
            uses[g->nodes[i].outputs[k] >= 0 ? g->nodes[i].outputs[k] : g->nvalues]++;
    }
    for (int v = 0; v < g->nvalues && uses; v++) {
        uses[v] += g->values[v].init != NULL;
        most = uses[v] > most ? uses[v] : most;
    }
    for (int u = most, v = 0; u > 0 && st == BD_OK; v = v + 1 < g->nvalues ? v + 1 : (u--, 0)) {
        const bd_value *val = &g->values[v];
        if (uses[v] != u || keep[v] || is_io(g, v) || (!val->init && val->producer < 0))
            continue;
        static const char digits[] =
            "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
        char name[16];
        do {
            int k = next++, len = 0;
            char rev[16];
            do
                rev[len++] = digits[k % 62];
            while ((k /= 62) > 0);
            for (int j = 0; j < len; j++)
                name[j] = rev[len - 1 - j];
            name[len] = '\0';
        } while (bd_graph_find(g, name) >= 0);
        st = bd_graph_rename(g, v, name);
    }
    free(uses);
    free(keep);
    return st;
}

bd_status bd_compressed_export(const bd_graph *student, const bd_layer *layers, int nlayers,
                               const bd_qlayer *const *q, bd_graph **out)
{
    enum { MOST = 18 }; /* items of a layer: 16 widths and its row order */
    exporter x = {0};
    item *items = calloc((size_t)nlayers * MOST + 1, sizeof *items);
    int *first = calloc((size_t)nlayers + 1, sizeof *first), nitems = 0;
    if (!items || !first) {
        free(items);
        free(first);
        return bd_fail(BD_ENOMEM, "out of memory");
    }
    bd_status st = bd_graph_clone(&x.g, student);
    drop_pq_meta(x.g);
    st = bd_graph_set_meta(x.g, BD_META_FORMAT, FORMAT_VERSION);
    /* The clone adds values and nodes in the student's order, so the layers'
     * value and node ids are valid in it; new nodes are only appended. */
    if (st == BD_OK)
        st = share_constants(&x);
    drop_default_attrs(x.g);
    int quantized = 0;
    for (int i = 0; i < nlayers && st == BD_OK; i++) {
        if (!q[i])
            continue;
        if (layers[i].weight < 0 || layers[i].weight >= x.g->nvalues)
            st = bd_fail(BD_EINVAL, "layer '%s' is not a layer of this graph", layers[i].name);
        else
            st = check_exportable(x.g, &layers[i], q[i]);
        quantized = 1;
    }
    for (int i = 0; i < nlayers && st == BD_OK; i++) {
        int n = 0;
        first[i] = nitems;
        if (q[i])
            st = layer_items(q[i], items + nitems, &n);
        nitems += n;
    }
    if (st == BD_OK && quantized)
        st = export_codes(&x, items, nitems);
    for (int i = 0; i < nlayers && st == BD_OK; i++)
        if (q[i])
            st = export_weight(&x, &layers[i], q[i], items + first[i],
                               (i + 1 < nlayers ? first[i + 1] : nitems) - first[i]);
    if (st == BD_OK)
        st = set_layers_meta(x.g, nlayers, q);
    if (st == BD_OK)
        st = flush_pools(&x);
    if (st == BD_OK)
        st = bd_graph_sort(x.g);
    if (st == BD_OK)
        st = shorten_names(x.g, layers, nlayers);
    for (int i = 0; i < nitems; i++)
        free(items[i].own);
    free(items);
    free(first);
    free(x.consts);
    free_pools(&x);
    if (st != BD_OK) {
        bd_graph_free(x.g);
        return st;
    }
    *out = x.g;
    return BD_OK;
}

/* ---- import ------------------------------------------------------------------- */

/* Codes of one width, unpacked from a byte string: the outputs of a Split,
 * or the unpacking node's own when it gives one layer's codes. */
typedef struct group {
    int node;           /* the Split, or the unpacking node */
    int packed;         /* the uint8 initializer */
    int bits;
    int32_t *codes;     /* all of them, as the expression computes them; NULL when direct */
    int64_t *offset;    /* where output j's codes start */
    int direct;         /* read straight from the string, the cone not run */
    int64_t bit0;       /* direct: where the codes start in the string */
} group;

/* One decoding expression found in a graph. */
typedef struct chain {
    int weight;         /* the value it computes */
    int source;         /* the tensor its codes are read from, for messages */
    int codes;          /* the group output it reads its codes from, or -1 */
    bd_qlayer q;        /* its codes and codebook or grid */
} chain;

typedef struct found {
    group *groups;
    int ngroups;
    chain *chains;
    int nchains;
    unsigned char *mark; /* per node: part of an expression */
    unsigned char *skip; /* per node: its result read from the string instead */
    int *owner;          /* per node: the value named when it fails to run */
} found;

static void found_free(found *f)
{
    for (int i = 0; f->groups && i < f->ngroups; i++) {
        free(f->groups[i].codes);
        free(f->groups[i].offset);
    }
    for (int i = 0; f->chains && i < f->nchains; i++)
        bd_qlayer_free(&f->chains[i].q);
    free(f->groups);
    free(f->chains);
    free(f->mark);
    free(f->skip);
    free(f->owner);
}

static const bd_node *producer(const bd_graph *g, int v)
{
    return v >= 0 && g->values[v].producer >= 0 ? &g->nodes[g->values[v].producer] : NULL;
}

/* The power of two v is (1 << bits, bits <= 16), or -1. */
static int log2_exact(int64_t v)
{
    for (int b = 0; b <= 16; b++)
        if (v == (int64_t)1 << b)
            return b;
    return -1;
}

/* The code width b that node n unpacks, or -1: Mod(x, 2^b) (format
 * packed/2) or MatMul(x, [1, 2, ..., 2^(b-1)]) (packed/3), int64. */
static int unpacked_bits(const bd_graph *g, const bd_node *n)
{
    const bd_tensor *c = n->ninputs == 2 ? bd_node_const_input(g, n, 1) : NULL;
    if (!c || c->dtype != BD_I64)
        return -1;
    if (is_node(n, "Mod", 2))
        return bd_tensor_count(c) == 1 ? log2_exact(bd_tensor_get_i64(c, 0)) : -1;
    if (!is_node(n, "MatMul", 2) || c->ndim != 1 || c->dims[0] < 1 || c->dims[0] > 16)
        return -1;
    for (int k = 0; k < c->dims[0]; k++)
        if (bd_tensor_get_i64(c, k) != (int64_t)1 << k)
            return -1;
    return (int)c->dims[0];
}

/* Structure only: whether node i gives codes, either as a Split (along axis
 * 0, into constant sizes) of what an unpacking node computes, or as an
 * unpacking node whose output a pq or int chain reads (a Gather as indices,
 * a Cast); and whether that node is computed from constants alone, one of
 * them a uint8 string, by ops bitdown runs. Marks the unpacking node and
 * what it is computed from in cone. Other nodes may read values of the cone
 * (packed/3's bits serve every width): import keeps what they read. */
static int match_group(const bd_graph *g, int i, unsigned char *cone, group *gr)
{
    const bd_node *n = &g->nodes[i], *unpack = n;
    if (strcmp(n->op, "Split") == 0 && n->ninputs == 2 && !n->domain[0] &&
        bd_attr_int(n, "axis", 0) == 0) {
        const bd_tensor *sizes = bd_node_const_input(g, n, 1);
        unpack = producer(g, n->inputs[0]);
        if (!sizes || sizes->dtype != BD_I64 || bd_tensor_count(sizes) != n->noutputs ||
            !unpack || sole_reader(g, n->inputs[0]) != i)
            return 0;
    } else {
        int r = n->noutputs == 1 ? sole_reader(g, n->outputs[0]) : -1;
        if (r < 0 || !((is_node(&g->nodes[r], "Gather", 2) && g->nodes[r].inputs[1] == n->outputs[0]) ||
                       is_node(&g->nodes[r], "Cast", 1)))
            return 0;
    }
    int bits = unpacked_bits(g, unpack);
    if (bits < 0)
        return 0;
    /* the cone of the unpacking node: walk producers back to the constants */
    memset(cone, 0, (size_t)g->nnodes);
    int *stack = malloc((size_t)g->nnodes * sizeof *stack + 1), top = 0, packed = -1, ok = 1;
    if (!stack)
        return 0;
    stack[top++] = (int)(unpack - g->nodes);
    cone[stack[0]] = 1;
    while (top > 0 && ok) {
        const bd_node *c = &g->nodes[stack[--top]];
        ok = !c->domain[0] && bd_op_lookup("", c->op) && !read_outside_nodes(g, c->outputs[0]);
        for (int k = 0; k < c->ninputs && ok; k++) {
            int v = c->inputs[k];
            const bd_value *val = v >= 0 ? &g->values[v] : NULL;
            if (val && val->init) {
                if (val->init->dtype == BD_U8 && packed != v)
                    ok = packed < 0, packed = v;
            } else if (val && val->producer >= 0) {
                if (!cone[val->producer]) {
                    cone[val->producer] = 1;
                    stack[top++] = val->producer;
                }
            } else {
                ok = 0;
            }
        }
    }
    free(stack);
    if (!ok || packed < 0)
        return 0;
    memset(gr, 0, sizeof *gr);
    gr->node = i;
    gr->packed = packed;
    gr->bits = bits;
    return 1;
}

/* The group's codes, from vals, where its cone's run left them. A
 * packed/2 string must be exactly as long as its codes need (and the 2
 * bytes of padding); a packed/3 string that is too short fails to unpack. */
static bd_status unpack_group(const bd_graph *g, bd_tensor *const *vals, group *gr)
{
    const bd_node *n = &g->nodes[gr->node];
    const bd_value *p = &g->values[gr->packed];
    int is_split = strcmp(n->op, "Split") == 0, from = is_split ? n->inputs[0] : n->outputs[0];
    int64_t total = 0;
    gr->offset = malloc((size_t)(n->noutputs + 1) * sizeof *gr->offset);
    if (!gr->offset)
        return bd_fail(BD_ENOMEM, "out of memory");
    gr->offset[0] = 0;
    for (int j = 0; j < n->noutputs && is_split; j++) {
        int64_t s = bd_tensor_get_i64(bd_node_const_input(g, n, 1), j);
        if (s < 0 || s > ((int64_t)1 << 40))
            return bd_fail(BD_EFORMAT, "tensor '%s': split size %lld of the codes of '%s' is "
                           "not a count", g->values[n->inputs[1]].name, (long long)s, p->name);
        gr->offset[j] = total;
        total += s;
    }
    int64_t want = bd_packed_bytes(total, gr->bits) + 2;
    if (is_split && is_node(producer(g, from), "Mod", 2) && bd_tensor_count(p->init) != want)
        return bd_fail(BD_EFORMAT, "tensor '%s': %lld bytes for %lld codes of %d bits (%lld "
                       "expected, with 2 bytes of padding)", p->name,
                       (long long)bd_tensor_count(p->init), (long long)total, gr->bits,
                       (long long)want);
    const bd_tensor *t = vals[from];
    bd_status st = BD_OK;
    if (!t || t->dtype != BD_I64 || t->ndim != 1 || (is_split && t->dims[0] != total))
        st = bd_fail(BD_EFORMAT, "tensor '%s': it unpacks to %lld values, not the %lld int64 "
                     "codes its split names", p->name, t ? (long long)bd_tensor_count(t) : 0,
                     (long long)total);
    if (st == BD_OK) {
        total = t->dims[0];
        gr->offset[n->noutputs] = total;
        gr->codes = malloc((size_t)total * sizeof *gr->codes + 1);
        if (!gr->codes)
            st = bd_fail(BD_ENOMEM, "out of memory reading '%s'", p->name);
    }
    for (int64_t i = 0; st == BD_OK && i < total; i++) {
        int64_t c = ((const int64_t *)t->data)[i];
        if (c < 0 || c >= (int64_t)1 << gr->bits)
            st = bd_fail(BD_EFORMAT, "tensor '%s': code %lld at index %lld is not a %d-bit code",
                         p->name, (long long)c, (long long)i, gr->bits);
        else
            gr->codes[i] = (int32_t)c;
    }
    return st;
}

/* The node producing v if it is `op` with nin inputs, else NULL. */
static const bd_node *made_by(const bd_graph *g, int v, const char *op, int nin)
{
    const bd_node *n = producer(g, v);
    return n && is_node(n, op, nin) ? n : NULL;
}

/* Whether constant input k of n holds exactly the int64 values want[0..n). */
static int const_is(const bd_graph *g, const bd_node *n, int k, const int64_t *want, int count)
{
    const bd_tensor *t = bd_node_const_input(g, n, k);
    if (!t || t->dtype != BD_I64 || bd_tensor_count(t) != count)
        return 0;
    for (int i = 0; i < count; i++)
        if (bd_tensor_get_i64(t, i) != want[i])
            return 0;
    return 1;
}

/* packed/3's unpacking of group gr, recognised node by node: the bits of
 * the uint8 string (Cast, Div by [1, 2, ..., 128], Mod 2, Reshape [-1]),
 * maybe a Split of them by width, Reshape [-1, b] and the MatMul. Then the
 * codes are read from the string at their bit offset, which spares running
 * the cone: its int64 bits take 64 times the string's bytes. */
static int direct_group(const bd_graph *g, group *gr)
{
    static const int64_t shifts[8] = {1, 2, 4, 8, 16, 32, 64, 128}, two = 2, flat = -1;
    const bd_node *n = &g->nodes[gr->node];
    const bd_node *mm = strcmp(n->op, "Split") == 0 ? producer(g, n->inputs[0]) : n;
    if (!mm || !is_node(mm, "MatMul", 2))
        return 0;
    const bd_node *rows = made_by(g, mm->inputs[0], "Reshape", 2);
    if (!rows || !const_is(g, rows, 1, (const int64_t[]){-1, gr->bits}, 2))
        return 0;
    int x = rows->inputs[0];
    int64_t bit0 = 0, nbits = -1;
    const bd_node *cut = producer(g, x); /* a Split by width, when several */
    if (cut && strcmp(cut->op, "Split") == 0 && cut->ninputs == 2 && !cut->domain[0] &&
        bd_attr_int(cut, "axis", 0) == 0) {
        const bd_tensor *sizes = bd_node_const_input(g, cut, 1);
        if (!sizes || sizes->dtype != BD_I64 || bd_tensor_count(sizes) != cut->noutputs)
            return 0;
        const int64_t most = 8 * bd_tensor_count(g->values[gr->packed].init);
        for (int j = 0; j < cut->noutputs && nbits < 0; j++) {
            int64_t c = bd_tensor_get_i64(sizes, j);
            if (c < 0 || c > most || bit0 > most)
                return 0;
            if (cut->outputs[j] == x)
                nbits = c;
            else
                bit0 += c;
        }
        x = cut->inputs[0];
    }
    const bd_node *fl = made_by(g, x, "Reshape", 2);
    const bd_node *mod = fl ? made_by(g, fl->inputs[0], "Mod", 2) : NULL;
    const bd_node *div = mod ? made_by(g, mod->inputs[0], "Div", 2) : NULL;
    const bd_node *cast = div ? made_by(g, div->inputs[0], "Cast", 1) : NULL;
    if (!cast || !const_is(g, fl, 1, &flat, 1) || !const_is(g, mod, 1, &two, 1) ||
        !const_is(g, div, 1, shifts, 8) || cast->inputs[0] != gr->packed ||
        bd_attr_int(mod, "fmod", 0) != 0)
        return 0;
    const bd_tensor *p = g->values[gr->packed].init;
    if (nbits < 0)
        nbits = 8 * bd_tensor_count(p);
    if (bit0 < 0 || nbits < 0 || nbits % gr->bits || bit0 + nbits > 8 * bd_tensor_count(p))
        return 0;
    const int64_t total = nbits / gr->bits;
    int64_t sum = 0;
    if (strcmp(n->op, "Split") == 0) {
        const bd_tensor *sizes = bd_node_const_input(g, n, 1);
        for (int j = 0; j < n->noutputs; j++) {
            int64_t c = bd_tensor_get_i64(sizes, j);
            if (c < 0 || c > total)
                return 0;
            sum += c;
        }
        if (sum != total)
            return 0;
    }
    gr->offset = malloc((size_t)(n->noutputs + 1) * sizeof *gr->offset);
    if (!gr->offset)
        return 0;
    gr->offset[0] = 0;
    for (int j = 0; strcmp(n->op, "Split") == 0 && j < n->noutputs; j++)
        gr->offset[j + 1] = gr->offset[j] + bd_tensor_get_i64(bd_node_const_input(g, n, 1), j);
    gr->offset[n->noutputs] = total;
    gr->bit0 = bit0;
    gr->direct = 1;
    return 1;
}

/* Codes first..first+n-1 of group gr into out. A direct group's are read
 * from the string each time rather than kept unpacked: an int layer has a
 * code per weight, so unpacked codes of every layer would take as much
 * memory as the dense model. */
static void group_read(const bd_graph *g, const group *gr, int64_t first, int64_t n,
                       int32_t *out)
{
    if (gr->codes)
        memcpy(out, gr->codes + first, (size_t)n * sizeof *out);
    else
        bd_unpack_bits_at(g->values[gr->packed].init->data, gr->bit0 + first * gr->bits, n,
                          gr->bits, out);
}

static int32_t group_code(const bd_graph *g, const group *gr, int64_t i)
{
    int32_t c;
    group_read(g, gr, i, 1, &c);
    return c;
}

/* Where value v's codes come from: output j of a group, returned as group
 * index and *j, or -1. */
static int group_output(const bd_graph *g, const found *f, int v, int *j)
{
    int p = v >= 0 ? g->values[v].producer : -1;
    for (int i = 0; p >= 0 && i < f->ngroups; i++)
        if (f->groups[i].node == p)
            for (*j = 0; *j < g->nodes[p].noutputs; (*j)++)
                if (g->nodes[p].outputs[*j] == v)
                    return i;
    return -1;
}

/* The node that alone reads v, if it is op with nin inputs (and reads v as
 * input `slot`, -1 for any), or -1. */
static int next_node(const bd_graph *g, int v, const char *op, int nin, int slot)
{
    int r = sole_reader(g, v);
    if (r < 0 || !is_node(&g->nodes[r], op, nin) || (slot >= 0 && g->nodes[r].inputs[slot] != v))
        return -1;
    return r;
}

/* Rows [first, first + rows) of a float16 initializer, as float. */
typedef struct piece {
    int table; /* the initializer; -1: none */
    int64_t first, rows;
} piece;

/* Whether float value v, read by node `reader` alone, is a piece of a
 * float16 table: Cast(float) of the initializer, or (packed/3, which stores
 * the tables of one shape as one) output j of a Split along axis 0 into
 * constant sizes of that Cast, read by the Split alone. Adds the nodes to
 * nodes[*nn]. */
static int fp16_piece(const bd_graph *g, int v, int reader, piece *p, int *nodes, int *nn)
{
    const bd_node *n = producer(g, v);
    int split = -1;
    if (!n || sole_reader(g, v) != reader)
        return 0;
    p->first = 0;
    p->rows = -1;
    if (strcmp(n->op, "Split") == 0 && n->ninputs == 2 && !n->domain[0] &&
        bd_attr_int(n, "axis", 0) == 0) {
        const bd_tensor *sizes = bd_node_const_input(g, n, 1);
        if (!sizes || sizes->dtype != BD_I64 || bd_tensor_count(sizes) != n->noutputs)
            return 0;
        for (int j = 0; j < n->noutputs && p->rows < 0; j++) {
            int64_t size = bd_tensor_get_i64(sizes, j);
            if (size < 0)
                return 0;
            if (n->outputs[j] == v)
                p->rows = size;
            else
                p->first += size;
        }
        split = g->values[v].producer;
        v = n->inputs[0];
        n = producer(g, v);
        if (!n || sole_reader(g, v) != split)
            return 0;
    }
    const bd_tensor *t = is_node(n, "Cast", 1) && bd_attr_int(n, "to", 0) == BD_F32
                             ? bd_node_const_input(g, n, 0) : NULL;
    if (!t || t->dtype != BD_F16 || t->ndim < 1 || t->dims[0] < 1)
        return 0;
    if (split < 0)
        p->rows = t->dims[0];
    if (p->first + p->rows > t->dims[0])
        return 0;
    if (split >= 0)
        nodes[(*nn)++] = split;
    nodes[(*nn)++] = g->values[v].producer;
    p->table = n->inputs[0];
    return 1;
}

static int64_t piece_count(const bd_graph *g, const piece *p)
{
    const bd_tensor *t = g->values[p->table].init;
    return p->rows * (bd_tensor_count(t) / t->dims[0]);
}

static void piece_floats(const bd_graph *g, const piece *p, float *out)
{
    const bd_tensor *t = g->values[p->table].init;
    const uint16_t *v = (const uint16_t *)t->data + p->first * (bd_tensor_count(t) / t->dims[0]);
    for (int64_t i = 0; i < piece_count(g, p); i++)
        out[i] = bd_f16_to_f32(v[i]);
}

/* The final step: a Reshape to a constant shape, or a Transpose. Returns
 * the node, or -1. */
static int final_step(const bd_graph *g, int v, int *out)
{
    int r = sole_reader(g, v);
    const bd_node *n = r >= 0 ? &g->nodes[r] : NULL;
    if (!n || !((is_node(n, "Reshape", 2) && n->inputs[0] == v && bd_node_const_input(g, n, 1)) ||
                is_node(n, "Transpose", 1)))
        return -1;
    *out = n->outputs[0];
    return r;
}

/* A grid: Cast(float)(codes) -> Reshape -> Sub(z) -> Mul(Cast(scales))
 * [-> Reshape | Transpose], z a float32 scalar 2^(b-1) or Cast(zeros).
 * Returns the nodes in nodes[], their count, or 0. */
static int match_int(const bd_graph *g, int ci, int bits, int *nodes, piece *scales,
                     piece *zeros)
{
    const bd_node *cast = &g->nodes[ci];
    if (bits < BD_INT_MIN_BITS || bits > BD_INT_MAX_BITS || bd_attr_int(cast, "to", 0) != BD_F32)
        return 0;
    int nn = 0, v;
    nodes[nn++] = ci;
    int r = next_node(g, cast->outputs[0], "Reshape", 2, 0);
    if (r < 0 || !bd_node_const_input(g, &g->nodes[r], 1))
        return 0;
    nodes[nn++] = r;
    int sub = next_node(g, g->nodes[r].outputs[0], "Sub", 2, 0);
    if (sub < 0)
        return 0;
    nodes[nn++] = sub;
    int zv = g->nodes[sub].inputs[1];
    const bd_tensor *z = g->values[zv].init;
    zeros->table = -1;
    if (z) {
        if (z->dtype != BD_F32 || bd_tensor_count(z) != 1 ||
            ((const float *)z->data)[0] != (float)(1 << (bits - 1)))
            return 0;
    } else if (!fp16_piece(g, zv, sub, zeros, nodes, &nn)) {
        return 0;
    }
    int mul = next_node(g, g->nodes[sub].outputs[0], "Mul", 2, 0);
    if (mul < 0 || !fp16_piece(g, g->nodes[mul].inputs[1], mul, scales, nodes, &nn))
        return 0;
    nodes[nn++] = mul;
    /* packed/3 computes the weight's shape before Sub, so the Mul gives the
     * weight unless it is stored transposed; packed/2 reshaped after it */
    int last = final_step(g, g->nodes[mul].outputs[0], &v);
    if (last >= 0)
        nodes[nn++] = last;
    return nn;
}

/* A codebook: Gather(a piece of a float16 [K, d] table, codes) ->
 * Reshape, or (before packed/3) Gather(float16 [k, d], codes) ->
 * Cast(float) -> Reshape; either [-> Transpose]. Returns the node count, or
 * 0. */
static int match_pq(const bd_graph *g, int gi, int *nodes, piece *table)
{
    const bd_node *gather = &g->nodes[gi];
    const bd_tensor *t = bd_node_const_input(g, gather, 0);
    int nn = 0, after = gather->outputs[0];
    if (bd_attr_int(gather, "axis", 0) != 0)
        return 0;
    nodes[nn++] = gi;
    if (t) {
        int cast = sole_reader(g, after);
        if (t->dtype != BD_F16 || t->ndim < 1 || cast < 0 || !is_node(&g->nodes[cast], "Cast", 1) ||
            bd_attr_int(&g->nodes[cast], "to", 0) != BD_F32)
            return 0;
        *table = (piece){gather->inputs[0], 0, t->dims[0]};
        nodes[nn++] = cast;
        after = g->nodes[cast].outputs[0];
    } else if (!fp16_piece(g, gather->inputs[0], gi, table, nodes, &nn)) {
        return 0;
    }
    t = g->values[table->table].init;
    if (t->ndim != 2 || table->rows < 1 || table->rows > 65536 || t->dims[1] < 1)
        return 0;
    int r = next_node(g, after, "Reshape", 2, 0);
    if (r < 0 || !bd_node_const_input(g, &g->nodes[r], 1))
        return 0;
    nodes[nn++] = r;
    /* Whatever it permutes, a transpose of a decoded table is still part of
     * the weight: the layer check decides whether it is bitdown's layout. */
    int tr = sole_reader(g, g->nodes[r].outputs[0]);
    if (tr >= 0 && is_node(&g->nodes[tr], "Transpose", 1))
        nodes[nn++] = tr;
    return nn;
}

/* The codes a chain reads, from a group or (format 1) a uint8/uint16
 * initializer through a Cast. */
static bd_status chain_codes(const bd_graph *g, const found *f, int v, int reader, chain *ch,
                             int *cast_node)
{
    int j, gi = group_output(g, f, v, &j);
    bd_qlayer *q = &ch->q;
    *cast_node = -1;
    if (gi >= 0) {
        const group *gr = &f->groups[gi];
        ch->source = gr->packed;
        ch->codes = v;
        q->n = gr->offset[j + 1] - gr->offset[j];
        q->codes = malloc((size_t)q->n * sizeof *q->codes + 1);
        if (!q->codes)
            return bd_fail(BD_ENOMEM, "out of memory");
        group_read(g, gr, gr->offset[j], q->n, q->codes);
        return BD_OK;
    }
    const bd_node *c = producer(g, v);
    const bd_tensor *codes = c && is_node(c, "Cast", 1) ? bd_node_const_input(g, c, 0) : NULL;
    int64_t to = c ? bd_attr_int(c, "to", 0) : 0;
    if (!codes || (codes->dtype != BD_U8 && codes->dtype != BD_U16) ||
        (to != BD_I64 && to != BD_I32) || sole_reader(g, v) != reader)
        return BD_OK; /* not codes: q->codes stays NULL */
    *cast_node = g->values[v].producer;
    ch->source = c->inputs[0];
    q->n = bd_tensor_count(codes);
    q->codes = malloc((size_t)q->n * sizeof *q->codes + 1);
    if (!q->codes)
        return bd_fail(BD_ENOMEM, "out of memory");
    for (int64_t i = 0; i < q->n; i++)
        q->codes[i] = (int32_t)bd_tensor_get_i64(codes, i);
    return BD_OK;
}

/* Whether value v, the Mul that ends an int grid, is a part of a layer
 * with a bit length per row: read by a Concat, or as data by a Gather. */
static int is_rows_part(const bd_graph *g, int v)
{
    int r = sole_reader(g, v);
    const bd_node *n = r >= 0 ? &g->nodes[r] : NULL;
    return n && (strcmp(n->op, "Concat") == 0 || (is_node(n, "Gather", 2) && n->inputs[0] == v));
}

/* One part of a layer with a bit length per row. */
typedef struct rows_part {
    int bits;
    const group *codes; /* from its code first on */
    int64_t first, n, rows;
    piece scales, zeros;
} rows_part;

/* The int grid (match_int) ending in the Mul that gives v, its codes
 * given by a group, added to nodes[*nn]: its part, or 0. */
static int match_rows_part(const bd_graph *g, const found *f, int v, int *nodes, int *nn,
                           rows_part *p)
{
    const bd_node *mul = made_by(g, v, "Mul", 2);
    const bd_node *sub = mul ? made_by(g, mul->inputs[0], "Sub", 2) : NULL;
    const bd_node *rs = sub ? made_by(g, sub->inputs[0], "Reshape", 2) : NULL;
    const bd_node *cast = rs ? made_by(g, rs->inputs[0], "Cast", 1) : NULL;
    int j, gi = cast ? group_output(g, f, cast->inputs[0], &j) : -1;
    const int ci = cast ? (int)(cast - g->nodes) : -1;
    if (gi < 0 || sole_reader(g, cast->inputs[0]) != ci)
        return 0;
    const group *gr = &f->groups[gi];
    int k = match_int(g, ci, gr->bits, nodes + *nn, &p->scales, &p->zeros);
    if (!k || nodes[*nn + k - 1] != (int)(mul - g->nodes))
        return 0;
    *nn += k;
    p->bits = gr->bits;
    p->codes = gr;
    p->first = gr->offset[j];
    p->n = gr->offset[j + 1] - gr->offset[j];
    p->rows = piece_count(g, &p->scales);
    return p->rows > 0 && p->n % p->rows == 0 &&
           (p->zeros.table < 0 || piece_count(g, &p->zeros) == p->rows);
}

/* A layer with a bit length per row (docs/format.md): Gather(axis 0) of
 * its parts' rows (one part, or their Concat along axis 0) by its row
 * order [-> Transpose], each part an int grid of its width, the codes and
 * the row order given by groups. Gives the layer back as it was stored:
 * row r's bits, codes, scale and zero point those of its place in the
 * parts. Anything else is not this layout: ch stays empty. */
static bd_status rows_chain(const bd_graph *g, found *f, int start, chain *ch)
{
    const bd_node *gather = &g->nodes[start];
    int j, pg = group_output(g, f, gather->inputs[1], &j);
    if (bd_attr_int(gather, "axis", 0) != 0 || pg < 0 ||
        sole_reader(g, gather->inputs[1]) != start || sole_reader(g, gather->inputs[0]) != start)
        return BD_OK;
    const bd_node *cat = producer(g, gather->inputs[0]);
    const int *parts = &gather->inputs[0];
    int nparts = 1;
    if (cat && strcmp(cat->op, "Concat") == 0 && !cat->domain[0] && cat->noutputs == 1 &&
        bd_attr_int(cat, "axis", 0) == 0) {
        parts = cat->inputs;
        nparts = cat->ninputs;
    } else {
        cat = NULL;
    }
    const group *pos = &f->groups[pg];
    const int64_t rows = pos->offset[j + 1] - pos->offset[j];
    int *nodes = malloc((size_t)(nparts * 12 + 3) * sizeof *nodes), nn = 0;
    rows_part *part = calloc((size_t)nparts, sizeof *part);
    unsigned char *seen = calloc((size_t)rows + 1, 1);
    if (!nodes || !part || !seen) {
        free(nodes);
        free(part);
        free(seen);
        return bd_fail(BD_ENOMEM, "out of memory");
    }
    int ok = nparts >= 1 && nparts <= 16;
    int64_t total = 0, len = -1;
    for (int k = 0; k < nparts && ok; k++) {
        rows_part *p = &part[k];
        ok = parts[k] >= 0 && match_rows_part(g, f, parts[k], nodes, &nn, p) && p->rows > 0 &&
             (p->zeros.table < 0) == (part[0].zeros.table < 0) &&
             (len < 0 || p->n / p->rows == len);
        if (!ok) /* a part that is not one: nothing of it to count */
            break;
        len = p->n / p->rows;
        total += p->rows;
    }
    ok = ok && total == rows;
    for (int64_t r = 0; ok && r < rows; r++) {
        int32_t at = group_code(g, pos, pos->offset[j] + r);
        ok = at >= 0 && at < rows && !seen[at];
        if (ok)
            seen[at] = 1;
    }
    free(seen);
    bd_qlayer *q = &ch->q;
    bd_status st = BD_OK;
    if (ok) {
        q->format = BD_FMT_INT;
        q->d = 1;
        q->n = rows * len;
        q->nscales = rows;
        q->ints.per_channel = 1;
        q->ints.symmetric = part[0].zeros.table < 0;
        q->codes = malloc((size_t)q->n * sizeof *q->codes + 1);
        q->row_bits = malloc((size_t)rows * sizeof *q->row_bits);
        q->scales = malloc((size_t)rows * sizeof *q->scales);
        q->zeros = q->ints.symmetric ? NULL : malloc((size_t)rows * sizeof *q->zeros);
        /* the parts' scales and zero points, in the sorted order */
        float *s = malloc((size_t)rows * 2 * sizeof *s), *z = s ? s + rows : NULL;
        if (!q->codes || !q->row_bits || !q->scales || !s || (!q->ints.symmetric && !q->zeros))
            st = bd_fail(BD_ENOMEM, "out of memory reading '%s'",
                         g->values[pos->packed].name);
        int64_t at = 0;
        for (int k = 0; st == BD_OK && k < nparts; at += part[k++].rows) {
            piece_floats(g, &part[k].scales, s + at);
            if (q->zeros)
                piece_floats(g, &part[k].zeros, z + at);
        }
        for (int64_t r = 0; st == BD_OK && r < rows; r++) {
            const int64_t place = group_code(g, pos, pos->offset[j] + r);
            int64_t at = place;
            int k = 0;
            for (; at >= part[k].rows; k++)
                at -= part[k].rows;
            q->row_bits[r] = part[k].bits;
            q->ints.bits = part[k].bits > q->ints.bits ? part[k].bits : q->ints.bits;
            group_read(g, part[k].codes, part[k].first + at * len, len, q->codes + r * len);
            q->scales[r] = s[place];
            if (q->zeros)
                q->zeros[r] = z[place];
        }
        free(s);
        q->k = 1 << q->ints.bits;
        ch->source = pos->packed;
        if (cat)
            nodes[nn++] = (int)(cat - g->nodes);
        nodes[nn++] = start;
        int tr = sole_reader(g, gather->outputs[0]);
        if (tr >= 0 && is_node(&g->nodes[tr], "Transpose", 1))
            nodes[nn++] = tr;
        ch->weight = g->nodes[nodes[nn - 1]].outputs[0];
    }
    for (int i = 0; st == BD_OK && ok && i < nn; i++) {
        f->mark[nodes[i]] = 1;
        f->owner[nodes[i]] = ch->weight;
    }
    if (st != BD_OK)
        ch->weight = -1;
    free(nodes);
    free(part);
    return st;
}

static bd_status add_chain(const bd_graph *g, found *f, int start, chain *ch)
{
    const bd_node *n = &g->nodes[start];
    int nodes[12], nn = 0, cast = -1, j;
    piece scales = {-1, 0, 0}, zeros = {-1, 0, 0}, table = {-1, 0, 0};
    memset(ch, 0, sizeof *ch);
    ch->weight = ch->codes = -1;
    ch->q.rel_error = ch->q.other_error = -1;
    if (is_node(n, "Gather", 2)) {
        if (!(nn = match_pq(g, start, nodes, &table)))
            return rows_chain(g, f, start, ch);
        BD_TRY(chain_codes(g, f, n->inputs[1], start, ch, &cast));
    } else if (is_node(n, "Cast", 1)) {
        int gi = group_output(g, f, n->inputs[0], &j);
        if (gi < 0 || sole_reader(g, n->inputs[0]) != start ||
            !(nn = match_int(g, start, f->groups[gi].bits, nodes, &scales, &zeros)) ||
            is_rows_part(g, g->nodes[nodes[nn - 1]].outputs[0]))
            return BD_OK;
        BD_TRY(chain_codes(g, f, n->inputs[0], start, ch, &cast));
    }
    bd_qlayer *q = &ch->q;
    if (!q->codes)
        return BD_OK;
    const bd_value *src = &g->values[ch->source];
    const char *w = g->values[g->nodes[nodes[nn - 1]].outputs[0]].name;
    if (scales.table >= 0) {
        const bd_value *s = &g->values[scales.table];
        int64_t rows = bd_tensor_get_i64(bd_node_const_input(g, &g->nodes[nodes[1]], 1), 0);
        int64_t nz = zeros.table >= 0 ? piece_count(g, &zeros) : 0;
        q->format = BD_FMT_INT;
        q->ints.bits = f->groups[group_output(g, f, n->inputs[0], &j)].bits;
        q->k = 1 << q->ints.bits;
        q->d = 1;
        q->nscales = piece_count(g, &scales);
        q->ints.per_channel = q->nscales > 1;
        q->ints.symmetric = zeros.table < 0;
        /* packed/2 names the rows; packed/3's -1 leaves them to the layer */
        if ((q->nscales != 1 && rows > 0 && q->nscales != rows) ||
            (zeros.table >= 0 && nz != q->nscales))
            return bd_fail(BD_EFORMAT, "tensor '%s': %lld scales and %lld zero points for '%s' "
                           "(1 or one per row of each expected)", s->name,
                           (long long)q->nscales, (long long)nz, w);
        q->scales = malloc((size_t)q->nscales * sizeof *q->scales + 1);
        q->zeros = nz ? malloc((size_t)nz * sizeof *q->zeros) : NULL;
        if (!q->scales || (nz && !q->zeros))
            return bd_fail(BD_ENOMEM, "out of memory reading '%s'", s->name);
        piece_floats(g, &scales, q->scales);
        if (nz)
            piece_floats(g, &zeros, q->zeros);
    } else {
        const bd_value *tv = &g->values[table.table];
        q->k = (int)table.rows;
        q->d = (int)tv->init->dims[1];
        int gi = group_output(g, f, n->inputs[1], &j);
        /* packed/3 may store codes wider than they need, never narrower */
        if (gi >= 0 && f->groups[gi].bits < bd_code_bits(q->k))
            return bd_fail(BD_EFORMAT, "tensor '%s': codes of %d bits for the %d centroids of "
                           "'%s' (%d bits at least) of '%s'", src->name, f->groups[gi].bits,
                           q->k, tv->name, bd_code_bits(q->k), w);
        for (int64_t i = 0; i < q->n; i++)
            if (q->codes[i] >= q->k)
                return bd_fail(BD_EFORMAT, "tensor '%s': code %d at index %lld of '%s' is out "
                               "of range for the %d centroids of '%s'", src->name,
                               (int)q->codes[i], (long long)i, w, q->k, tv->name);
        q->centroids = malloc((size_t)q->k * q->d * sizeof *q->centroids);
        if (!q->centroids)
            return bd_fail(BD_ENOMEM, "out of memory reading the codebook '%s'", tv->name);
        piece_floats(g, &table, q->centroids);
    }
    ch->weight = g->nodes[nodes[nn - 1]].outputs[0];
    if (cast >= 0)
        nodes[nn++] = cast;
    for (int i = 0; i < nn; i++) {
        f->mark[nodes[i]] = 1;
        f->owner[nodes[i]] = ch->weight;
    }
    return BD_OK;
}

/* Runs the marked nodes (in the graph's order, which is topological) with
 * bitdown's ops, so every weight is what any ONNX runtime computes from
 * the file. vals[v] gets the values that unmarked nodes or the graph's
 * outputs read; the others are freed as soon as their readers ran. A node
 * that fails names the value owner[node]. */
/* What an import's second run does beyond running nodes: it makes the
 * codes of direct groups as their readers need them (not all at once), and
 * in a lazy import it keeps of each layer's weight only a fingerprint and
 * its shape: a view of the largest weight seen so far, contents undefined. */
typedef struct run_ctx {
    const found *f;
    int lazy;
    uint64_t *print;    /* per value: the fingerprint of a lazy weight */
    bd_tensor *scratch; /* what the views share */
} run_ctx;

static uint64_t fingerprint(const void *data, size_t n)
{
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++)
        h = (h ^ ((const unsigned char *)data)[i]) * 1099511628211ull;
    return h;
}

static int is_chain_weight(const found *f, int v)
{
    for (int c = 0; c < f->nchains; c++)
        if (f->chains[c].weight == v)
            return 1;
    return 0;
}

/* The chain whose codes are group output v and are kept packed (a lazy
 * import's), or NULL. */
static const chain *packed_chain(const found *f, int v)
{
    for (int c = 0; c < f->nchains; c++)
        if (f->chains[c].codes == v && f->chains[c].q.packed)
            return &f->chains[c];
    return NULL;
}

/* *out, named `name`: the codes of value v, which a direct group's node
 * gives, as dtype (int64, or float for the Cast that alone reads them); NULL
 * for any other value. A chain that keeps its codes packed gives them, so
 * its string may be gone (drop_strings). */
static bd_status seed(const bd_graph *g, const found *f, int v, bd_dtype dtype, const char *name,
                      bd_tensor **out)
{
    int j, gi = group_output(g, f, v, &j);
    *out = NULL;
    if (gi < 0 || !f->groups[gi].direct)
        return BD_OK;
    const group *gr = &f->groups[gi];
    const chain *ch = packed_chain(f, v);
    int64_t count = gr->offset[j + 1] - gr->offset[j];
    bd_tensor *t;
    BD_TRY(bd_tensor_new_raw(&t, dtype, 1, &count, name));
    int32_t chunk[4096];
    for (int64_t c = 0; c < count; c += 4096) {
        int64_t m = count - c < 4096 ? count - c : 4096;
        if (ch)
            bd_unpack_bits_at(ch->q.packed, c * bd_code_bits(ch->q.k), m, bd_code_bits(ch->q.k),
                              chunk);
        else
            group_read(g, gr, gr->offset[j] + c, m, chunk);
        for (int64_t i = 0; i < m; i++)
            if (dtype == BD_F32)
                ((float *)t->data)[c + i] = (float)chunk[i];
            else
                ((int64_t *)t->data)[c + i] = chunk[i];
    }
    *out = t;
    return BD_OK;
}

/* A Cast to float that alone reads a direct group's codes gets them as
 * floats from the string (*done): run, it would hold them as int64 as well,
 * three times the layer's weight. */
static bd_status seed_cast(const bd_graph *g, const found *f, int i, bd_tensor **vals,
                           bd_tensor **out, int *done)
{
    const bd_node *n = &g->nodes[i];
    int v = n->inputs[0];
    *done = 0;
    if (!is_node(n, "Cast", 1) || bd_attr_int(n, "to", 0) != BD_F32 || n->outputs[0] < 0 ||
        v < 0 || g->values[v].init || vals[v] || sole_reader(g, v) != i)
        return BD_OK;
    BD_TRY(seed(g, f, v, BD_F32, g->values[n->outputs[0]].name, out));
    *done = *out != NULL;
    return BD_OK;
}

/* A lazy import's weight: its fingerprint kept, the tensor a view of a
 * buffer nothing writes, whose pages are never made resident (the largest
 * weight so far's, a fresh one for a larger weight). */
static bd_status shape_only(run_ctx *rc, int v, bd_tensor **vals)
{
    bd_tensor *t = vals[v], *view;
    rc->print[v] = fingerprint(t->data, bd_tensor_nbytes(t));
    if (!rc->scratch || bd_tensor_count(t) > bd_tensor_count(rc->scratch)) {
        int64_t count = bd_tensor_count(t);
        bd_tensor_free(rc->scratch);
        rc->scratch = NULL;
        BD_TRY(bd_tensor_new_raw(&rc->scratch, t->dtype, 1, &count, "a lazy weight"));
    }
    BD_TRY(bd_tensor_view_head(&view, rc->scratch, t->ndim, t->dims));
    bd_tensor_free(t);
    vals[v] = view;
    return BD_OK;
}

/* Appends node i to order after the marked nodes it reads from, each once
 * (done). The recursion is as deep as one decoding expression is long. */
static void after_inputs(const bd_graph *g, const unsigned char *mark, int i, unsigned char *done,
                         int *order, int *n)
{
    done[i] = 1;
    for (int k = 0; k < g->nodes[i].ninputs; k++) {
        int v = g->nodes[i].inputs[k], p = v >= 0 ? g->values[v].producer : -1;
        if (p >= 0 && mark[p] && !done[p])
            after_inputs(g, mark, p, done, order, n);
    }
    order[(*n)++] = i;
}

/* The marked nodes in an order that finishes one expression before the
 * next begins: each kept value's nodes just before it, in graph order of
 * the kept values. A file lists every layer's Cast, then every Reshape, ...
 * (any topological order is valid), and run in that order every layer's
 * intermediates would be alive at once. */
static int *expression_order(const bd_graph *g, const unsigned char *mark,
                             const unsigned char *kept, int *n)
{
    int *order = malloc((size_t)g->nnodes * sizeof *order + 1);
    unsigned char *done = calloc((size_t)g->nnodes + 1, 1);
    *n = 0;
    for (int pass = 0; order && done && pass < 2; pass++)
        for (int i = 0; i < g->nnodes; i++) {
            int ends = pass; /* the second pass takes what no kept value needs */
            for (int k = 0; !ends && k < g->nodes[i].noutputs; k++)
                ends = g->nodes[i].outputs[k] >= 0 && kept[g->nodes[i].outputs[k]];
            if (mark[i] && !done[i] && ends)
                after_inputs(g, mark, i, done, order, n);
        }
    free(done);
    return order;
}

static bd_status run_nodes(const bd_graph *g, const unsigned char *mark, const int *owner,
                           run_ctx *rc, bd_tensor **vals)
{
    int *left = calloc((size_t)g->nvalues + 1, sizeof *left), *order = NULL, norder = 0;
    unsigned char *kept = calloc((size_t)g->nvalues + 1, 1);
    bd_status st = left && kept ? BD_OK : bd_fail(BD_ENOMEM, "out of memory");
    for (int i = 0; i < g->nnodes && st == BD_OK; i++)
        for (int k = 0; k < g->nodes[i].ninputs; k++) {
            int v = g->nodes[i].inputs[k];
            if (v >= 0 && mark[i])
                left[v]++;
            else if (v >= 0)
                kept[v] = 1;
        }
    for (int i = 0; st == BD_OK && i < g->noutputs; i++)
        kept[g->outputs[i]] = 1;
    if (st == BD_OK && !(order = expression_order(g, mark, kept, &norder)))
        st = bd_fail(BD_ENOMEM, "out of memory");
    for (int j = 0; j < norder && st == BD_OK; j++) {
        const int i = order[j];
        const bd_node *n = &g->nodes[i];
        bd_tensor **in = malloc((size_t)(n->ninputs + n->noutputs) * sizeof *in + 1);
        if (!in) {
            st = bd_fail(BD_ENOMEM, "out of memory");
            break;
        }
        int done = 0;
        if (rc)
            st = seed_cast(g, rc->f, i, vals, in + n->ninputs, &done);
        for (int k = 0; rc && !done && k < n->ninputs && st == BD_OK; k++) {
            int v = n->inputs[k];
            if (v >= 0 && !g->values[v].init && !vals[v])
                st = seed(g, rc->f, v, BD_I64, g->values[v].name, &vals[v]);
        }
        for (int k = 0; k < n->ninputs; k++)
            in[k] = n->inputs[k] < 0 ? NULL : g->values[n->inputs[k]].init
                                                  ? g->values[n->inputs[k]].init
                                                  : vals[n->inputs[k]];
        if (st == BD_OK && !done)
            st = bd_op_run(g, n, in, in + n->ninputs);
        if (st != BD_OK)
            st = bd_error_context(st, "the decoding expression of '%s'",
                                  g->values[owner[i]].name);
        for (int k = 0; st == BD_OK && k < n->noutputs; k++) {
            int v = n->outputs[k];
            if (v < 0)
                continue;
            vals[v] = in[n->ninputs + k];
            if (rc && rc->lazy && kept[v] && vals[v] && vals[v]->dtype == BD_F32 &&
                is_chain_weight(rc->f, v))
                st = shape_only(rc, v, vals);
        }
        for (int k = 0; k < n->ninputs; k++) {
            int v = n->inputs[k];
            if (v >= 0 && !g->values[v].init && --left[v] == 0 && !kept[v]) {
                bd_tensor_free(vals[v]);
                vals[v] = NULL;
            }
        }
        free(in);
    }
    free(order);
    free(left);
    free(kept);
    return st;
}

/* A lazy import keeps a chain's codes as stored from the moment it has
 * them, so that the load never holds every layer's at 4 bytes a code. */
static bd_status pack_codes(bd_qlayer *q)
{
    q->packed = malloc((size_t)bd_qlayer_code_bytes(q) + 1);
    if (!q->packed)
        return bd_fail(BD_ENOMEM, "out of memory packing codes");
    bd_qlayer_pack(q, q->packed);
    free(q->codes);
    q->codes = NULL;
    return BD_OK;
}

static bd_status find_all(const bd_graph *g, int lazy, found *f)
{
    memset(f, 0, sizeof *f);
    f->groups = calloc((size_t)g->nnodes + 1, sizeof *f->groups);
    f->chains = calloc((size_t)g->nnodes + 1, sizeof *f->chains);
    f->mark = calloc((size_t)g->nnodes + 1, 1);
    f->skip = calloc((size_t)g->nnodes + 1, 1);
    f->owner = calloc((size_t)g->nnodes + 1, sizeof *f->owner);
    unsigned char *cone = malloc((size_t)g->nnodes + 1), *cones = calloc((size_t)g->nnodes + 1, 1);
    bd_tensor **vals = calloc((size_t)g->nvalues + 1, sizeof *vals);
    bd_status st = f->groups && f->chains && f->mark && f->skip && f->owner && cone && cones &&
                           vals
                       ? BD_OK
                       : bd_fail(BD_ENOMEM, "out of memory");
    int run = 0;
    for (int i = 0; i < g->nnodes && st == BD_OK; i++) {
        group *gr = &f->groups[f->ngroups];
        if (!match_group(g, i, cone, gr))
            continue;
        f->ngroups++;
        int direct = direct_group(g, gr);
        run |= !direct;
        for (int k = 0; k < g->nnodes; k++)
            if (cone[k] || k == i) {
                f->mark[k] = 1;
                f->skip[k] |= direct;
                cones[k] |= cone[k] && !direct;
                f->owner[k] = gr->packed;
            }
    }
    /* once for all groups: packed/3's widths share their bits */
    if (st == BD_OK && run)
        st = run_nodes(g, cones, f->owner, NULL, vals);
    for (int i = 0; i < f->ngroups && st == BD_OK; i++)
        if (!f->groups[i].direct)
            st = unpack_group(g, vals, &f->groups[i]);
    for (int v = 0; vals && v < g->nvalues; v++)
        bd_tensor_free(vals[v]);
    free(vals);
    free(cones);
    free(cone);
    for (int i = 0; i < g->nnodes && st == BD_OK; i++) {
        chain *ch = &f->chains[f->nchains];
        st = add_chain(g, f, i, ch);
        if (st == BD_OK && ch->weight >= 0 && lazy)
            st = pack_codes(&ch->q);
        if (ch->weight >= 0)
            f->nchains++;
        else
            bd_qlayer_free(&ch->q);
    }
    return st;
}

/* Whether every output of group gr's node is the codes of a chain that
 * keeps them packed. */
static int read_by_chains(const bd_graph *g, const found *f, const group *gr)
{
    const bd_node *n = &g->nodes[gr->node];
    for (int k = 0; k < n->noutputs; k++)
        if (n->outputs[k] >= 0 && !packed_chain(f, n->outputs[k]))
            return 0;
    return gr->direct;
}

/* A lazy import, once every chain has packed its codes, drops each string
 * that only such chains read (seed reads their copies), so the load does
 * not hold every code twice. The graph is the import's own (model_load
 * frees it on failure), so it need not stay as it was. */
static void drop_strings(bd_graph *g, const found *f)
{
    for (int i = 0; i < f->ngroups; i++) {
        int all = 1;
        for (int k = 0; all && k < f->ngroups; k++)
            all = f->groups[k].packed != f->groups[i].packed || read_by_chains(g, f, &f->groups[k]);
        if (all && g->values[f->groups[i].packed].init)
            bd_graph_set_init(g, f->groups[i].packed, NULL);
    }
}

/* Every expression becomes the constants it computes. Nothing here can
 * fail, so g changes completely or not at all. */
static void replace_marked(bd_graph *g, const found *f, bd_tensor **vals)
{
    unsigned char *leaf = calloc((size_t)g->nvalues + 1, 1);
    for (int i = 0; i < g->nnodes; i++)
        for (int k = 0; f->mark[i] && k < g->nodes[i].ninputs; k++)
            if (leaf && g->nodes[i].inputs[k] >= 0 && g->values[g->nodes[i].inputs[k]].init)
                leaf[g->nodes[i].inputs[k]] = 1;
    for (int v = 0; v < g->nvalues; v++)
        if (vals[v]) {
            bd_graph_set_init(g, v, vals[v]);
            vals[v] = NULL;
        }
    /* removing nodes keeps a topological order, and recomputes producers */
    bd_graph_remove_nodes(g, f->mark);
    for (int v = 0; leaf && v < g->nvalues; v++)
        if (leaf[v] && bd_graph_use_count(g, v) == 0 && !read_outside_nodes(g, v))
            bd_graph_set_init(g, v, NULL);
    free(leaf);
}

/* Whether the codes of ch, laid out as layer l's weight, are the dense
 * weight: a foreign expression may cut rows another way. */
static bd_status same_layout(const bd_graph *g, const bd_layer *l, const chain *ch,
                             const run_ctx *rc, int *same)
{
    *same = 0;
    if (bd_graph_use_count(g, l->weight) != 1)
        return BD_OK;
    const bd_tensor *w = g->values[l->weight].init;
    float *decoded = malloc(bd_tensor_nbytes(w) + 1);
    if (!decoded)
        return bd_fail(BD_ENOMEM, "out of memory checking layer '%s'", l->name);
    bd_status st = ch->q.packed ? bd_qlayer_decode_packed(&ch->q, ch->q.packed, l, decoded)
                                : bd_qlayer_decode(&ch->q, l, decoded);
    /* a lazy import kept the weight's fingerprint, not the weight */
    *same = st == BD_OK && (rc->lazy ? fingerprint(decoded, bd_tensor_nbytes(w)) ==
                                           rc->print[l->weight]
                                     : memcmp(decoded, w->data, bd_tensor_nbytes(w)) == 0);
    free(decoded);
    if (st == BD_ENOMEM)
        return st;
    bd_error_clear();
    return BD_OK;
}

/* Moves what the metadata says about layer `index`, called name, into q. */
static void apply_meta(layer_meta *m, int nm, int index, const char *name, bd_qlayer *q)
{
    for (int i = 0; i < nm; i++)
        if (m[i].index >= 0 ? m[i].index == index : strcmp(m[i].name, name) == 0) {
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
                               const run_ctx *rc, bd_qlayer **q, int *nlayers)
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
            st = same_layout(g, &layers[i], &ch[c], rc, &same);
            if (st != BD_OK || !same)
                continue;
            out[i] = ch[c].q;
            memset(&ch[c].q, 0, sizeof ch[c].q);
            apply_meta(m, nm, i, layers[i].name, &out[i]);
        }
    free(layers);
    /* a lazy import has no dense weight to fall back on */
    for (int c = 0; rc->lazy && st == BD_OK && c < nch; c++)
        if (ch[c].q.k > 0)
            st = bd_fail(BD_EUNSUPPORTED, "weight '%s' is not in bitdown's layout: it loads "
                         "decoded only", g->values[ch[c].weight].name);
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

static bd_status import(bd_graph *g, int lazy, bd_qlayer **q, int *nlayers)
{
    *q = NULL;
    *nlayers = 0;
    layer_meta *m;
    int nm;
    found f;
    bd_tensor **vals = NULL;
    run_ctx rc = {.f = &f, .lazy = lazy};
    BD_TRY(parse_pq_meta(g, &m, &nm));
    bd_status st = find_all(g, lazy, &f);
    if (st == BD_OK && lazy)
        drop_strings(g, &f);
    if (st == BD_OK && (!(vals = calloc((size_t)g->nvalues + 1, sizeof *vals)) ||
                        !(rc.print = calloc((size_t)g->nvalues + 1, sizeof *rc.print))))
        st = bd_fail(BD_ENOMEM, "out of memory");
    for (int i = 0; st == BD_OK && i < g->nnodes; i++)
        f.skip[i] = f.mark[i] && !f.skip[i]; /* now: the nodes left to run */
    if (st == BD_OK)
        st = run_nodes(g, f.skip, f.owner, &rc, vals);
    /* codes that a node outside every expression reads (a chain bitdown
     * does not take) stay, as constants */
    for (int i = 0; st == BD_OK && i < g->nnodes; i++)
        for (int k = 0; !f.mark[i] && k < g->nodes[i].ninputs && st == BD_OK; k++) {
            int v = g->nodes[i].inputs[k];
            if (v >= 0 && !g->values[v].init && !vals[v])
                st = seed(g, &f, v, BD_I64, g->values[v].name, &vals[v]);
        }
    if (st == BD_OK) {
        replace_marked(g, &f, vals);
        st = layer_qlayers(g, f.chains, f.nchains, m, nm, &rc, q, nlayers);
    }
    if (st == BD_OK)
        drop_pq_meta(g);
    for (int v = 0; vals && v < g->nvalues; v++)
        bd_tensor_free(vals[v]);
    free(vals);
    free(rc.print);
    bd_tensor_free(rc.scratch);
    found_free(&f);
    free_layer_metas(m, nm);
    return st;
}

bd_status bd_compressed_import(bd_graph *g, bd_qlayer **q, int *nlayers)
{
    return import(g, 0, q, nlayers);
}

static bd_status model_load(const char *path, int lazy, bd_graph **g, bd_qlayer **q,
                            int *nlayers)
{
    *g = NULL;
    *q = NULL;
    *nlayers = 0;
    bd_graph *loaded;
    BD_TRY(bd_onnx_load(path, &loaded));
    bd_status st = import(loaded, lazy, q, nlayers);
    if (st != BD_OK) {
        bd_graph_free(loaded);
        return bd_error_context(st, "%s", path);
    }
    *g = loaded;
    return BD_OK;
}

bd_status bd_model_load(const char *path, bd_graph **g, bd_qlayer **q, int *nlayers)
{
    return model_load(path, 0, g, q, nlayers);
}

bd_status bd_model_load_lazy(const char *path, bd_graph **g, bd_qlayer **q, int *nlayers)
{
    return model_load(path, 1, g, q, nlayers);
}
