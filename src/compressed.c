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
#define FORMAT_VERSION "packed/2"
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
 * the UI switched to for ncurses. The EM history per iteration is not
 * written: it made the metadata a large part of a small model's file. */
static bd_status set_layer_meta(bd_graph *g, const bd_layer *l, const bd_qlayer *q)
{
    bd_c_numeric loc;
    BD_TRY(bd_c_numeric_enter(&loc));
    bd_strbuf b = {0};
    if (q->format == BD_FMT_INT)
        bd_strbuf_add(&b, "f=int;b=%d;ch=%d;sym=%d", q->ints.bits, q->nscales > 1,
                      q->zeros == NULL);
    else
        bd_strbuf_add(&b, "f=pq;d=%d;k=%d", q->d, q->k);
    bd_strbuf_add(&b, ";o=%s", bd_objective_name(q->objective));
    if (q->rel_error >= 0)
        bd_strbuf_add(&b, ";e=%.6g", q->rel_error);
    bd_strbuf_add(&b, ";i=%d;t=%.6g", q->iters, q->seconds);
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

/* Whether the item's name [p, eq) is the short or (format 1) long one. */
static int item_is(const char *p, const char *eq, const char *brief, const char *full)
{
    return span_is(p, eq, brief) || span_is(p, eq, full);
}

/* "f=pq;d=9;k=256;o=act;e=0.01;i=37;t=1.25" (format 1 spelled objective,
 * rel_error, iterations, seconds and added history=...). f, d, k, b, ch and
 * sym are there for people reading the file; the expression itself is what
 * counts. Unknown items are skipped, so later versions may add some. */
static bd_status parse_layer_meta(const bd_meta *kv, layer_meta *m)
{
    memset(m, 0, sizeof *m);
    m->name = kv->key + strlen(BD_META_LAYER_PREFIX);
    m->rel_error = -1;
    int iters = -1, history = 0, informative;
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
        } else if (span_is(p, eq, "b") || span_is(p, eq, "ch") || span_is(p, eq, "sym")) {
            if (!parse_count(v, end, 0, 16, &informative))
                return bad_meta(kv, "b, ch and sym must be whole numbers from 0 to 16");
        } else if (span_is(p, eq, "f")) {
            if (!span_is(v, end, "pq") && !span_is(v, end, "int"))
                return bad_meta(kv, "the format f is neither pq nor int");
        } else if (item_is(p, eq, "o", "objective")) {
            BD_TRY(parse_objective(kv, v, end, &m->objective));
        } else if (item_is(p, eq, "e", "rel_error") || item_is(p, eq, "t", "seconds")) {
            double x;
            if (!parse_number(v, end, &x))
                return bad_meta(kv, "rel_error (e) and seconds (t) must be numbers");
            *(item_is(p, eq, "t", "seconds") ? &m->seconds : &m->rel_error) = x;
        } else if (item_is(p, eq, "i", "iterations")) {
            if (!parse_count(v, end, 0, 1e6, &iters))
                return bad_meta(kv, "iterations (i) must be a whole number from 0 to 1000000");
        } else if (span_is(p, eq, "history")) {
            free(m->history);
            BD_TRY(parse_history(kv, v, end, m));
            history = 1;
        }
        p = *end ? end + 1 : end;
    }
    if (history && iters >= 0 && iters != m->iters)
        return bad_meta(kv, "the history does not have one value per iteration");
    if (!history)
        m->iters = iters > 0 ? iters : 0;
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
    if (format && strcmp(format, FORMAT_VERSION) != 0 && strcmp(format, FORMAT_V1) != 0)
        return bd_fail(BD_EUNSUPPORTED,
                       "model metadata %s = '%s': this bitdown reads formats " FORMAT_VERSION
                       " and " FORMAT_V1, BD_META_FORMAT, format);
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

static int code_bits(const bd_qlayer *q)
{
    return q->format == BD_FMT_INT ? q->ints.bits : bd_code_bits(q->k);
}

/* What export adds to the graph: values under temporary names (the file's
 * names are given at the end), small constants once each. */
typedef struct exporter {
    bd_graph *g;
    int next;          /* temporary names */
    int *consts, nconsts;
} exporter;

enum { NAME_CAP = 24 };

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

/* The codes of every layer of `bits` bits, packed into one byte string in
 * layer order, and the expression unpacking them (docs/format.md): code i
 * is bits [i*b, i*b + b) of the little-endian 24-bit word of bytes
 * i*b/8 .. i*b/8 + 2, so 2 zero bytes pad the string. Its Split gives each
 * layer's codes, int64, under codes[layer]. */
static bd_status export_codes(exporter *x, const bd_qlayer *const *q, int nlayers, int bits, char (*codes)[NAME_CAP])
{
    int64_t total = 0, nsplit = 0, *sizes = malloc((size_t)nlayers * sizeof *sizes + 1);
    if (!sizes)
        return bd_fail(BD_ENOMEM, "out of memory");
    for (int i = 0; i < nlayers; i++)
        if (q[i] && code_bits(q[i]) == bits) {
            total += q[i]->n;
            sizes[nsplit++] = q[i]->n;
        }
    int64_t len = bd_packed_bytes(total, bits) + 2;
    int32_t *all = malloc((size_t)total * sizeof *all + 1);
    bd_tensor *packed = NULL;
    bd_status st = all ? bd_tensor_new(&packed, BD_U8, 1, &len, "packed codes")
                       : bd_fail(BD_ENOMEM, "out of memory");
    if (st == BD_OK) {
        int64_t at = 0;
        for (int i = 0; i < nlayers; i++)
            if (q[i] && code_bits(q[i]) == bits) {
                memcpy(all + at, q[i]->codes, (size_t)q[i]->n * sizeof *all);
                at += q[i]->n;
            }
        bd_pack_bits(all, total, bits, packed->data);
    }
    free(all);
    static const int64_t pow2[8] = {1, 2, 4, 8, 16, 32, 64, 128};
    char p[NAME_CAP], c0[NAME_CAP], c1[NAME_CAP], c2[NAME_CAP], c8[NAME_CAP], c256[NAME_CAP],
        c65536[NAME_CAP], n[NAME_CAP], b[NAME_CAP], m[NAME_CAP], shifts[NAME_CAP],
        split[NAME_CAP];
    char v[16][NAME_CAP] = {{0}};
    bd_attr to_i64 = int_attr("to", BD_I64);
    if (st == BD_OK)
        st = add_init(x, packed, p);
    if (st == BD_OK)
        st = scalar(x, 0, c0);
    if (st == BD_OK)
        st = scalar(x, 1, c1);
    if (st == BD_OK)
        st = scalar(x, 2, c2);
    if (st == BD_OK)
        st = scalar(x, 8, c8);
    if (st == BD_OK)
        st = scalar(x, 256, c256);
    if (st == BD_OK)
        st = scalar(x, 65536, c65536);
    if (st == BD_OK)
        st = scalar(x, total, n);
    if (st == BD_OK)
        st = scalar(x, bits, b);
    if (st == BD_OK)
        st = scalar(x, (int64_t)1 << bits, m);
    if (st == BD_OK)
        st = int_list(x, 8, pow2, shifts);
    if (st == BD_OK)
        st = int_list(x, (int)nsplit, sizes, split);
    free(sizes);
    enum { BYTES, I, BIT, BYTE, SH, B0, Y1, B1, Y2, B2, M1, M2, W1, W, SCALE, Q };
    if (st == BD_OK)
        st = STEP(x, "Cast", v[BYTES], &to_i64, p);
    if (st == BD_OK)
        st = STEP(x, "Range", v[I], NULL, c0, n, c1);
    if (st == BD_OK)
        st = STEP(x, "Mul", v[BIT], NULL, v[I], b);
    if (st == BD_OK)
        st = STEP(x, "Div", v[BYTE], NULL, v[BIT], c8);
    if (st == BD_OK)
        st = STEP(x, "Mod", v[SH], NULL, v[BIT], c8);
    if (st == BD_OK)
        st = STEP(x, "Gather", v[B0], NULL, v[BYTES], v[BYTE]);
    if (st == BD_OK)
        st = STEP(x, "Add", v[Y1], NULL, v[BYTE], c1);
    if (st == BD_OK)
        st = STEP(x, "Gather", v[B1], NULL, v[BYTES], v[Y1]);
    if (st == BD_OK)
        st = STEP(x, "Add", v[Y2], NULL, v[BYTE], c2);
    if (st == BD_OK)
        st = STEP(x, "Gather", v[B2], NULL, v[BYTES], v[Y2]);
    if (st == BD_OK)
        st = STEP(x, "Mul", v[M1], NULL, v[B1], c256);
    if (st == BD_OK)
        st = STEP(x, "Mul", v[M2], NULL, v[B2], c65536);
    if (st == BD_OK)
        st = STEP(x, "Add", v[W1], NULL, v[B0], v[M1]);
    if (st == BD_OK)
        st = STEP(x, "Add", v[W], NULL, v[W1], v[M2]);
    if (st == BD_OK)
        st = STEP(x, "Gather", v[SCALE], NULL, shifts, v[SH]);
    if (st == BD_OK)
        st = STEP(x, "Div", v[Q], NULL, v[W], v[SCALE]);
    char u[NAME_CAP] = "";
    if (st == BD_OK)
        st = STEP(x, "Mod", u, NULL, v[Q], m);
    const char **outs = malloc((size_t)nsplit * sizeof *outs + 1);
    if (st == BD_OK && !outs)
        st = bd_fail(BD_ENOMEM, "out of memory");
    for (int i = 0, j = 0; st == BD_OK && i < nlayers; i++)
        if (q[i] && code_bits(q[i]) == bits) {
            fresh_name(x, codes[i]);
            outs[j++] = codes[i];
        }
    bd_node *node;
    if (st == BD_OK)
        st = bd_graph_add_node(x->g, "", "Split", "", 2, (const char *[]){u, split},
                               (int)nsplit, outs, &node);
    free(outs);
    return st;
}

/* A float16 table of n values as [rows, cols]. */
static bd_status fp16_table(exporter *x, const float *v, int64_t rows, int64_t cols, char *name)
{
    bd_tensor *t;
    int64_t dims[2] = {rows, cols};
    BD_TRY(bd_tensor_new_raw(&t, BD_F16, 2, dims, "a float16 table"));
    for (int64_t i = 0; i < rows * cols; i++)
        ((uint16_t *)t->data)[i] = bd_f32_to_f16(v[i]);
    return add_init(x, t, name);
}

/* The layer's weight from its codes: pq gathers centroids; int computes
 * (u - z) * s on [rows, row_len]. Either ends in the weight's shape, by a
 * Reshape or, when it is stored transposed, a Transpose. */
static bd_status export_weight(exporter *x, const bd_layer *l, const bd_qlayer *q,
                               const char *codes)
{
    const bd_tensor *w = x->g->values[l->weight].init;
    const int64_t rows[2] = {l->rows, l->row_len};
    int64_t dims[BD_MAX_DIMS];
    const int ndim = w->ndim;
    memcpy(dims, w->dims, sizeof dims);
    bd_attr to_f32 = int_attr("to", BD_F32);
    char t[NAME_CAP], cur[NAME_CAP] = "", shape[NAME_CAP], wname[BD_LAYER_NAME_MAX + 64];
    snprintf(wname, sizeof wname, "%s", x->g->values[l->weight].name);
    if (q->format == BD_FMT_INT) {
        char rshape[NAME_CAP], f[NAME_CAP] = "", z[NAME_CAP] = "", s[NAME_CAP] = "",
                               sub[NAME_CAP] = "";
        BD_TRY(STEP(x, "Cast", f, &to_f32, codes));
        BD_TRY(int_list(x, 2, rows, rshape));
        BD_TRY(STEP(x, "Reshape", cur, NULL, f, rshape));
        if (q->zeros) {
            BD_TRY(fp16_table(x, q->zeros, q->nscales, 1, t));
            BD_TRY(STEP(x, "Cast", z, &to_f32, t));
        } else {
            float zero = (float)(1 << (q->ints.bits - 1));
            BD_TRY(constant(x, BD_F32, 0, NULL, &zero, z));
        }
        BD_TRY(STEP(x, "Sub", sub, NULL, cur, z));
        BD_TRY(fp16_table(x, q->scales, q->nscales, 1, t));
        BD_TRY(STEP(x, "Cast", s, &to_f32, t));
        cur[0] = '\0';
        BD_TRY(STEP(x, "Mul", cur, NULL, sub, s));
    } else {
        char gathered[NAME_CAP] = "", f[NAME_CAP] = "";
        BD_TRY(fp16_table(x, q->centroids, q->k, q->d, t));
        BD_TRY(STEP(x, "Gather", gathered, NULL, t, codes));
        BD_TRY(STEP(x, "Cast", f, &to_f32, gathered));
        if (l->transposed) {
            BD_TRY(int_list(x, 2, rows, shape));
            BD_TRY(STEP(x, "Reshape", cur, NULL, f, shape));
        } else {
            snprintf(cur, sizeof cur, "%s", f);
        }
    }
    bd_graph_set_init(x->g, l->weight, NULL);
    if (l->transposed) {
        bd_attr perm = {.name = (char *)"perm", .type = BD_ATTR_INTS, .n = 2,
                        .ints = (int64_t[]){1, 0}};
        return STEP(x, "Transpose", wname, &perm, cur);
    }
    BD_TRY(int_list(x, ndim, dims, shape));
    return STEP(x, "Reshape", wname, NULL, cur, shape);
}

static int is_io(const bd_graph *g, int id)
{
    return in_list(g->inputs, g->ninputs, id) || in_list(g->outputs, g->noutputs, id);
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
    int next = 0;
    for (int v = 0; v < g->nvalues && st == BD_OK; v++) {
        const bd_value *val = &g->values[v];
        if (keep[v] || is_io(g, v) || (!val->init && val->producer < 0))
            continue;
        char name[16];
        do {
            int k = next++, len = 0;
            char rev[16];
            do
                rev[len++] = "0123456789abcdefghijklmnopqrstuvwxyz"[k % 36];
            while ((k /= 36) > 0);
            for (int j = 0; j < len; j++)
                name[j] = rev[len - 1 - j];
            name[len] = '\0';
        } while (bd_graph_find(g, name) >= 0);
        st = bd_graph_rename(g, v, name);
    }
    free(keep);
    return st;
}

bd_status bd_compressed_export(const bd_graph *student, const bd_layer *layers, int nlayers,
                               const bd_qlayer *const *q, bd_graph **out)
{
    exporter x = {0};
    char (*codes)[NAME_CAP] = calloc((size_t)nlayers + 1, sizeof *codes);
    if (!codes)
        return bd_fail(BD_ENOMEM, "out of memory");
    bd_status st = bd_graph_clone(&x.g, student);
    if (st != BD_OK) {
        free(codes);
        return st;
    }
    drop_pq_meta(x.g);
    st = bd_graph_set_meta(x.g, BD_META_FORMAT, FORMAT_VERSION);
    /* The clone adds values and nodes in the student's order, so the layers'
     * value and node ids are valid in it; new nodes are only appended. */
    unsigned used_bits = 0;
    for (int i = 0; i < nlayers && st == BD_OK; i++) {
        if (!q[i])
            continue;
        if (layers[i].weight < 0 || layers[i].weight >= x.g->nvalues)
            st = bd_fail(BD_EINVAL, "layer '%s' is not a layer of this graph", layers[i].name);
        else
            st = check_exportable(x.g, &layers[i], q[i]);
        if (st == BD_OK)
            used_bits |= 1u << code_bits(q[i]);
    }
    for (int b = 0; b <= 16 && st == BD_OK; b++)
        if (used_bits >> b & 1)
            st = export_codes(&x, q, nlayers, b, codes);
    for (int i = 0; i < nlayers && st == BD_OK; i++)
        if (q[i]) {
            st = export_weight(&x, &layers[i], q[i], codes[i]);
            if (st == BD_OK)
                st = set_layer_meta(x.g, &layers[i], q[i]);
        }
    if (st == BD_OK)
        st = bd_graph_sort(x.g);
    if (st == BD_OK)
        st = shorten_names(x.g, layers, nlayers);
    free(codes);
    free(x.consts);
    if (st != BD_OK) {
        bd_graph_free(x.g);
        return st;
    }
    *out = x.g;
    return BD_OK;
}

/* ---- import ------------------------------------------------------------------- */

/* Unpacked codes: a Split of the unpacking expression of one byte string. */
typedef struct group {
    int split;          /* the Split node */
    int packed;         /* the uint8 initializer */
    int bits;
    int32_t *codes;     /* bd_unpack_bits of all of it */
    int64_t *offset;    /* where output j's codes start */
} group;

/* One decoding expression found in a graph. */
typedef struct chain {
    int weight;         /* the value it computes */
    int source;         /* the tensor its codes are read from, for messages */
    bd_qlayer q;        /* its codes and codebook or grid */
} chain;

typedef struct found {
    group *groups;
    int ngroups;
    chain *chains;
    int nchains;
    unsigned char *mark; /* per node: part of an expression */
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

/* Structure only: whether Split node si splits, along axis 0 into constant
 * sizes, the codes Mod(x, 2^b) computes from constants alone, one of them a
 * uint8 string, the values in between read by nothing else. Marks those
 * nodes in cone. */
static int match_group(const bd_graph *g, int si, unsigned char *cone, group *gr)
{
    const bd_node *split = &g->nodes[si];
    if (strcmp(split->op, "Split") != 0 || split->ninputs != 2 || split->domain[0] ||
        bd_attr_int(split, "axis", 0) != 0)
        return 0;
    const bd_tensor *sizes = bd_node_const_input(g, split, 1);
    const bd_node *mod = producer(g, split->inputs[0]);
    if (!sizes || sizes->dtype != BD_I64 || bd_tensor_count(sizes) != split->noutputs || !mod ||
        !is_node(mod, "Mod", 2) || sole_reader(g, split->inputs[0]) != si)
        return 0;
    const bd_tensor *m = bd_node_const_input(g, mod, 1);
    int bits = m && m->dtype == BD_I64 && bd_tensor_count(m) == 1
                   ? log2_exact(bd_tensor_get_i64(m, 0)) : -1;
    if (bits < 0)
        return 0;
    /* the cone of Mod: walk producers back to the constants */
    memset(cone, 0, (size_t)g->nnodes);
    int *stack = malloc((size_t)g->nnodes * sizeof *stack + 1), top = 0, packed = -1, ok = 1;
    if (!stack)
        return 0;
    stack[top++] = g->values[split->inputs[0]].producer;
    cone[stack[0]] = 1;
    while (top > 0 && ok) {
        const bd_node *n = &g->nodes[stack[--top]];
        ok = !n->domain[0] && n->noutputs == 1 && bd_op_lookup("", n->op);
        for (int k = 0; k < n->ninputs && ok; k++) {
            int v = n->inputs[k];
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
    /* nothing outside reads what the cone computes, but the Split its codes */
    for (int i = 0; i < g->nnodes && ok; i++)
        for (int k = 0; k < g->nodes[i].ninputs && ok; k++) {
            int v = g->nodes[i].inputs[k], p = v >= 0 ? g->values[v].producer : -1;
            if (p >= 0 && cone[p] && !cone[i] && i != si)
                ok = 0;
        }
    for (int i = 0; i < g->nnodes && ok; i++)
        if (cone[i])
            ok = !read_outside_nodes(g, g->nodes[i].outputs[0]);
    if (!ok || packed < 0)
        return 0;
    memset(gr, 0, sizeof *gr);
    gr->split = si;
    gr->packed = packed;
    gr->bits = bits;
    return 1;
}

/* The group's codes, read back with bd_unpack_bits; the byte string must be
 * exactly as long as its codes need (and the 2 bytes of padding). */
static bd_status unpack_group(const bd_graph *g, group *gr)
{
    const bd_node *split = &g->nodes[gr->split];
    const bd_tensor *sizes = bd_node_const_input(g, split, 1);
    const bd_value *p = &g->values[gr->packed];
    int64_t total = 0;
    gr->offset = malloc((size_t)(split->noutputs + 1) * sizeof *gr->offset);
    if (!gr->offset)
        return bd_fail(BD_ENOMEM, "out of memory");
    for (int j = 0; j < split->noutputs; j++) {
        int64_t s = bd_tensor_get_i64(sizes, j);
        if (s < 0 || s > ((int64_t)1 << 40))
            return bd_fail(BD_EFORMAT, "tensor '%s': split size %lld of the codes of '%s' is "
                           "not a count", g->values[split->inputs[1]].name, (long long)s,
                           p->name);
        gr->offset[j] = total;
        total += s;
    }
    gr->offset[split->noutputs] = total;
    int64_t want = bd_packed_bytes(total, gr->bits) + 2;
    if (bd_tensor_count(p->init) != want)
        return bd_fail(BD_EFORMAT, "tensor '%s': %lld bytes for %lld codes of %d bits (%lld "
                       "expected, with 2 bytes of padding)", p->name,
                       (long long)bd_tensor_count(p->init), (long long)total, gr->bits,
                       (long long)want);
    gr->codes = malloc((size_t)total * sizeof *gr->codes + 1);
    if (!gr->codes)
        return bd_fail(BD_ENOMEM, "out of memory reading '%s'", p->name);
    bd_unpack_bits(p->init->data, total, gr->bits, gr->codes);
    return BD_OK;
}

/* Where value v's codes come from: output j of a group, returned as group
 * index and *j, or -1. */
static int group_output(const bd_graph *g, const found *f, int v, int *j)
{
    int p = v >= 0 ? g->values[v].producer : -1;
    for (int i = 0; p >= 0 && i < f->ngroups; i++)
        if (f->groups[i].split == p)
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

/* A Cast(to float) of a float16 initializer read by node `reader` alone: the
 * initializer's value id, or -1. */
static int fp16_cast(const bd_graph *g, int v, int reader, int *cast)
{
    const bd_node *c = producer(g, v);
    *cast = v >= 0 ? g->values[v].producer : -1;
    if (!c || !is_node(c, "Cast", 1) || bd_attr_int(c, "to", 0) != BD_F32 ||
        sole_reader(g, v) != reader)
        return -1;
    const bd_tensor *t = bd_node_const_input(g, c, 0);
    return t && t->dtype == BD_F16 ? c->inputs[0] : -1;
}

static void floats_of_fp16(const bd_tensor *t, float *out)
{
    for (int64_t i = 0; i < bd_tensor_count(t); i++)
        out[i] = bd_f16_to_f32(((const uint16_t *)t->data)[i]);
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

/* A grid: Cast(float)(codes) -> Reshape([rows, row_len]) -> Sub(z) ->
 * Mul(Cast(scales)) -> Reshape | Transpose, z a float32 scalar 2^(b-1) or
 * Cast(zeros). Returns the nodes in nodes[], their count, or 0. */
static int match_int(const bd_graph *g, int ci, int bits, int *nodes, int *scales, int *zeros)
{
    const bd_node *cast = &g->nodes[ci];
    if (bits < BD_INT_MIN_BITS || bits > BD_INT_MAX_BITS || bd_attr_int(cast, "to", 0) != BD_F32)
        return 0;
    int nn = 0, v;
    nodes[nn++] = ci;
    int r = next_node(g, cast->outputs[0], "Reshape", 2, 0);
    const bd_tensor *shape = r >= 0 ? bd_node_const_input(g, &g->nodes[r], 1) : NULL;
    if (!shape || bd_tensor_count(shape) != 2)
        return 0;
    nodes[nn++] = r;
    int sub = next_node(g, g->nodes[r].outputs[0], "Sub", 2, 0);
    if (sub < 0)
        return 0;
    nodes[nn++] = sub;
    int zv = g->nodes[sub].inputs[1], zcast;
    const bd_tensor *z = g->values[zv].init;
    *zeros = -1;
    if (z) {
        if (z->dtype != BD_F32 || bd_tensor_count(z) != 1 ||
            ((const float *)z->data)[0] != (float)(1 << (bits - 1)))
            return 0;
    } else if ((*zeros = fp16_cast(g, zv, sub, &zcast)) >= 0) {
        nodes[nn++] = zcast;
    } else {
        return 0;
    }
    int mul = next_node(g, g->nodes[sub].outputs[0], "Mul", 2, 0), scast;
    if (mul < 0 || (*scales = fp16_cast(g, g->nodes[mul].inputs[1], mul, &scast)) < 0)
        return 0;
    nodes[nn++] = scast;
    nodes[nn++] = mul;
    int last = final_step(g, g->nodes[mul].outputs[0], &v);
    if (last < 0)
        return 0;
    nodes[nn++] = last;
    return nn;
}

/* A codebook: Gather(float16 [k, d], codes) -> Cast(float) -> Reshape
 * [-> Transpose]. Returns the node count, or 0. */
static int match_pq(const bd_graph *g, int gi, int *nodes)
{
    const bd_node *gather = &g->nodes[gi];
    const bd_tensor *table = bd_node_const_input(g, gather, 0);
    if (bd_attr_int(gather, "axis", 0) != 0 || !table || table->dtype != BD_F16 ||
        table->ndim != 2 || table->dims[0] < 1 || table->dims[0] > 65536 || table->dims[1] < 1)
        return 0;
    int nn = 0;
    nodes[nn++] = gi;
    int cast = sole_reader(g, gather->outputs[0]);
    if (cast < 0 || !is_node(&g->nodes[cast], "Cast", 1) ||
        bd_attr_int(&g->nodes[cast], "to", 0) != BD_F32)
        return 0;
    nodes[nn++] = cast;
    int r = next_node(g, g->nodes[cast].outputs[0], "Reshape", 2, 0);
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
        q->n = gr->offset[j + 1] - gr->offset[j];
        q->codes = malloc((size_t)q->n * sizeof *q->codes + 1);
        if (!q->codes)
            return bd_fail(BD_ENOMEM, "out of memory");
        memcpy(q->codes, gr->codes + gr->offset[j], (size_t)q->n * sizeof *q->codes);
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

static bd_status add_chain(const bd_graph *g, found *f, int start, chain *ch)
{
    const bd_node *n = &g->nodes[start];
    int nodes[8], nn = 0, scales = -1, zeros = -1, cast = -1, j;
    memset(ch, 0, sizeof *ch);
    ch->weight = -1;
    ch->q.rel_error = ch->q.other_error = -1;
    if (is_node(n, "Gather", 2)) {
        if (!(nn = match_pq(g, start, nodes)))
            return BD_OK;
        BD_TRY(chain_codes(g, f, n->inputs[1], start, ch, &cast));
    } else if (is_node(n, "Cast", 1)) {
        int gi = group_output(g, f, n->inputs[0], &j);
        if (gi < 0 || sole_reader(g, n->inputs[0]) != start ||
            !(nn = match_int(g, start, f->groups[gi].bits, nodes, &scales, &zeros)))
            return BD_OK;
        BD_TRY(chain_codes(g, f, n->inputs[0], start, ch, &cast));
    }
    bd_qlayer *q = &ch->q;
    if (!q->codes)
        return BD_OK;
    const bd_value *src = &g->values[ch->source];
    const char *w = g->values[g->nodes[nodes[nn - 1]].outputs[0]].name;
    if (scales >= 0) {
        const bd_value *s = &g->values[scales], *z = zeros >= 0 ? &g->values[zeros] : NULL;
        int64_t rows = bd_tensor_get_i64(bd_node_const_input(g, &g->nodes[nodes[1]], 1), 0);
        q->format = BD_FMT_INT;
        q->ints.bits = f->groups[group_output(g, f, n->inputs[0], &j)].bits;
        q->k = 1 << q->ints.bits;
        q->d = 1;
        q->nscales = bd_tensor_count(s->init);
        q->ints.per_channel = q->nscales > 1;
        q->ints.symmetric = z == NULL;
        if ((q->nscales != 1 && q->nscales != rows) ||
            (z && bd_tensor_count(z->init) != q->nscales))
            return bd_fail(BD_EFORMAT, "tensor '%s': %lld scales and %lld zero points for the "
                           "%lld rows of '%s' (1 or %lld of each expected)", s->name, (long long)q->nscales,
                           (long long)(z ? bd_tensor_count(z->init) : 0), (long long)rows,
                           w, (long long)rows);
        q->scales = malloc((size_t)q->nscales * sizeof *q->scales);
        q->zeros = z ? malloc((size_t)q->nscales * sizeof *q->zeros) : NULL;
        if (!q->scales || (z && !q->zeros))
            return bd_fail(BD_ENOMEM, "out of memory reading '%s'", s->name);
        floats_of_fp16(s->init, q->scales);
        if (z)
            floats_of_fp16(z->init, q->zeros);
    } else {
        const bd_value *tv = &g->values[n->inputs[0]];
        q->k = (int)tv->init->dims[0];
        q->d = (int)tv->init->dims[1];
        int gi = group_output(g, f, n->inputs[1], &j);
        if (gi >= 0 && f->groups[gi].bits != bd_code_bits(q->k))
            return bd_fail(BD_EFORMAT, "tensor '%s': codes of %d bits for the %d centroids of "
                           "'%s' (%d bits expected) of '%s'", src->name, f->groups[gi].bits,
                           q->k, tv->name, bd_code_bits(q->k), w);
        for (int64_t i = 0; i < q->n; i++)
            if (q->codes[i] >= q->k)
                return bd_fail(BD_EFORMAT, "tensor '%s': code %d at index %lld of '%s' is out "
                               "of range for the %d centroids of '%s'", src->name,
                               (int)q->codes[i], (long long)i, w, q->k, tv->name);
        q->centroids = malloc((size_t)q->k * q->d * sizeof *q->centroids);
        if (!q->centroids)
            return bd_fail(BD_ENOMEM, "out of memory reading the codebook '%s'", tv->name);
        floats_of_fp16(tv->init, q->centroids);
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

static bd_status find_all(const bd_graph *g, found *f)
{
    memset(f, 0, sizeof *f);
    f->groups = calloc((size_t)g->nnodes + 1, sizeof *f->groups);
    f->chains = calloc((size_t)g->nnodes + 1, sizeof *f->chains);
    f->mark = calloc((size_t)g->nnodes + 1, 1);
    f->owner = calloc((size_t)g->nnodes + 1, sizeof *f->owner);
    unsigned char *cone = malloc((size_t)g->nnodes + 1);
    bd_status st = f->groups && f->chains && f->mark && f->owner && cone
                       ? BD_OK : bd_fail(BD_ENOMEM, "out of memory");
    for (int i = 0; i < g->nnodes && st == BD_OK; i++) {
        group *gr = &f->groups[f->ngroups];
        if (!match_group(g, i, cone, gr))
            continue;
        f->ngroups++;
        st = unpack_group(g, gr);
        for (int k = 0; k < g->nnodes; k++)
            if (cone[k] || k == i) {
                f->mark[k] = 1;
                f->owner[k] = gr->packed;
            }
    }
    free(cone);
    for (int i = 0; i < g->nnodes && st == BD_OK; i++) {
        chain *ch = &f->chains[f->nchains];
        st = add_chain(g, f, i, ch);
        if (ch->weight >= 0)
            f->nchains++;
        else
            bd_qlayer_free(&ch->q);
    }
    return st;
}

/* Runs the marked nodes (in the graph's order, which is topological) with
 * bitdown's ops, so every weight is what any ONNX runtime computes from
 * the file. vals[v] gets the values that unmarked nodes or the graph's
 * outputs read; the others are freed as soon as their readers ran. */
static bd_status run_marked(const bd_graph *g, const found *f, bd_tensor **vals)
{
    int *left = calloc((size_t)g->nvalues + 1, sizeof *left);
    unsigned char *kept = calloc((size_t)g->nvalues + 1, 1);
    bd_status st = left && kept ? BD_OK : bd_fail(BD_ENOMEM, "out of memory");
    for (int i = 0; i < g->nnodes && st == BD_OK; i++)
        for (int k = 0; k < g->nodes[i].ninputs; k++) {
            int v = g->nodes[i].inputs[k];
            if (v >= 0 && f->mark[i])
                left[v]++;
            else if (v >= 0)
                kept[v] = 1;
        }
    for (int i = 0; st == BD_OK && i < g->noutputs; i++)
        kept[g->outputs[i]] = 1;
    for (int i = 0; i < g->nnodes && st == BD_OK; i++) {
        if (!f->mark[i])
            continue;
        const bd_node *n = &g->nodes[i];
        bd_tensor **in = malloc((size_t)(n->ninputs + n->noutputs) * sizeof *in + 1);
        if (!in) {
            st = bd_fail(BD_ENOMEM, "out of memory");
            break;
        }
        for (int k = 0; k < n->ninputs; k++)
            in[k] = n->inputs[k] < 0 ? NULL : g->values[n->inputs[k]].init
                                                  ? g->values[n->inputs[k]].init
                                                  : vals[n->inputs[k]];
        st = bd_op_run(g, n, in, in + n->ninputs);
        if (st != BD_OK)
            st = bd_error_context(st, "the decoding expression of '%s'",
                                  g->values[f->owner[i]].name);
        for (int k = 0; st == BD_OK && k < n->noutputs; k++)
            if (n->outputs[k] >= 0)
                vals[n->outputs[k]] = in[n->ninputs + k];
        for (int k = 0; k < n->ninputs; k++) {
            int v = n->inputs[k];
            if (v >= 0 && !g->values[v].init && --left[v] == 0 && !kept[v]) {
                bd_tensor_free(vals[v]);
                vals[v] = NULL;
            }
        }
        free(in);
    }
    free(left);
    free(kept);
    return st;
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
    int nm;
    found f;
    bd_tensor **vals = NULL;
    BD_TRY(parse_pq_meta(g, &m, &nm));
    bd_status st = find_all(g, &f);
    if (st == BD_OK && !(vals = calloc((size_t)g->nvalues + 1, sizeof *vals)))
        st = bd_fail(BD_ENOMEM, "out of memory");
    if (st == BD_OK)
        st = run_marked(g, &f, vals);
    if (st == BD_OK) {
        replace_marked(g, &f, vals);
        st = layer_qlayers(g, f.chains, f.nchains, m, nm, q, nlayers);
    }
    if (st == BD_OK)
        drop_pq_meta(g);
    for (int v = 0; vals && v < g->nvalues; v++)
        bd_tensor_free(vals[v]);
    free(vals);
    found_free(&f);
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
