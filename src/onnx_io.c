#include "onnx_io.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fileio.h"
#include "onnx.pb-c.h"
#include "ops.h"

/* protobuf-c parses the whole message into memory, so the file itself must
 * fit comfortably; the per-tensor limit applies on top. */
static size_t file_limit(void) { return bd_tensor_limit(); }

static int supported_dtype(int32_t t)
{
    switch (t) {
    case BD_F32: case BD_U8: case BD_I8: case BD_U16: case BD_I16: case BD_I32:
    case BD_I64: case BD_BOOL: case BD_F16: case BD_F64:
        return 1;
    default:
        return 0;
    }
}

/* ---- external data ---------------------------------------------------- */

static bd_status external_path(const char *dir, const char *loc, const char *what, char *out,
                               size_t cap)
{
    if (!dir)
        return bd_fail(BD_EUNSUPPORTED, "tensor '%s': external data needs a model file", what);
    if (!loc || !loc[0])
        return bd_fail(BD_EFORMAT, "tensor '%s': external data has no location", what);
    if (loc[0] == '/')
        return bd_fail(BD_EFORMAT,
                       "tensor '%s': external data path '%s' is absolute; it must lie inside "
                       "the model's folder",
                       what, loc);
    for (const char *p = loc; *p;) {
        const char *e = strchr(p, '/');
        size_t n = e ? (size_t)(e - p) : strlen(p);
        if (n == 2 && p[0] == '.' && p[1] == '.')
            return bd_fail(BD_EFORMAT,
                           "tensor '%s': external data path '%s' leaves the model's folder", what,
                           loc);
        p += n + (e ? 1 : 0);
    }
    char joined[PATH_MAX], real_dir[PATH_MAX];
    if (snprintf(joined, sizeof joined, "%s/%s", dir, loc) >= (int)sizeof joined)
        return bd_fail(BD_EFORMAT, "tensor '%s': external data path too long", what);
    if (!realpath(dir, real_dir))
        return bd_fail(BD_EIO, "%s: %s", dir, strerror(errno));
    if (!realpath(joined, out) || strlen(out) >= cap)
        return bd_fail(BD_EIO, "tensor '%s': external data file %s: %s", what, joined,
                       strerror(errno));
    size_t dl = strlen(real_dir);
    /* a symbolic link may still point outside */
    if (strncmp(out, real_dir, dl) != 0 || (out[dl] != '/' && strcmp(real_dir, "/") != 0))
        return bd_fail(BD_EFORMAT, "tensor '%s': external data file '%s' lies outside %s", what,
                       loc, real_dir);
    return BD_OK;
}

static bd_status read_external(const Onnx__TensorProto *tp, const char *dir, const char *what,
                               bd_tensor *t)
{
    const char *loc = NULL;
    long long offset = 0, length = -1;
    for (size_t i = 0; i < tp->n_external_data; i++) {
        const Onnx__StringStringEntryProto *kv = tp->external_data[i];
        if (!kv->key || !kv->value)
            continue;
        char *end;
        if (strcmp(kv->key, "location") == 0) {
            loc = kv->value;
        } else if (strcmp(kv->key, "offset") == 0 || strcmp(kv->key, "length") == 0) {
            errno = 0;
            long long v = strtoll(kv->value, &end, 10);
            if (errno || *end || v < 0)
                return bd_fail(BD_EFORMAT, "tensor '%s': external data %s '%s' is not a size",
                               what, kv->key, kv->value);
            if (kv->key[0] == 'o')
                offset = v;
            else
                length = v;
        }
    }
    char path[PATH_MAX];
    BD_TRY(external_path(dir, loc, what, path, sizeof path));
    size_t need = bd_tensor_nbytes(t);
    if (length >= 0 && (size_t)length != need)
        return bd_fail(BD_EFORMAT, "tensor '%s': external data length %lld, expected %zu bytes",
                       what, length, need);
    int fd = open(path, O_RDONLY);
    if (fd < 0)
        return bd_fail(BD_EIO, "tensor '%s': %s: %s", what, path, strerror(errno));
    struct stat st;
    bd_status s = BD_OK;
    if (fstat(fd, &st) != 0 || (unsigned long long)st.st_size < (unsigned long long)offset ||
        (unsigned long long)st.st_size - (unsigned long long)offset < need) {
        s = bd_fail(BD_EFORMAT, "tensor '%s': %s is too short for %zu bytes at offset %lld",
                    what, path, need, offset);
    } else {
        size_t got = 0;
        while (got < need) {
            ssize_t r = pread(fd, (char *)t->data + got, need - got, (off_t)offset + (off_t)got);
            if (r < 0 && errno == EINTR)
                continue;
            if (r <= 0) {
                s = bd_fail(BD_EIO, "tensor '%s': reading %s failed", what, path);
                break;
            }
            got += (size_t)r;
        }
    }
    close(fd);
    return s;
}

/* ---- tensors ------------------------------------------------------------ */

static bd_status typed_count(const char *what, size_t have, int64_t want, const char *field)
{
    if ((int64_t)have != want)
        return bd_fail(BD_EFORMAT, "tensor '%s': %s holds %zu values, its shape needs %lld",
                       what, field, have, (long long)want);
    return BD_OK;
}

static bd_status fill_typed(const Onnx__TensorProto *tp, const char *what, bd_tensor *t)
{
    int64_t n = bd_tensor_count(t);
    switch (t->dtype) {
    case BD_F32:
        BD_TRY(typed_count(what, tp->n_float_data, n, "float_data"));
        if (n) /* an empty field's array is NULL, which memcpy must not see */
            memcpy(t->data, tp->float_data, (size_t)n * 4);
        return BD_OK;
    case BD_F64:
        BD_TRY(typed_count(what, tp->n_double_data, n, "double_data"));
        if (n)
            memcpy(t->data, tp->double_data, (size_t)n * 8);
        return BD_OK;
    case BD_I64:
        BD_TRY(typed_count(what, tp->n_int64_data, n, "int64_data"));
        if (n)
            memcpy(t->data, tp->int64_data, (size_t)n * 8);
        return BD_OK;
    default:
        break;
    }
    /* the narrower types (and float16's bits) travel in int32_data */
    BD_TRY(typed_count(what, tp->n_int32_data, n, "int32_data"));
    for (int64_t i = 0; i < n; i++) {
        int32_t v = tp->int32_data[i];
        switch (t->dtype) {
        case BD_I32: ((int32_t *)t->data)[i] = v; break;
        case BD_I16: ((int16_t *)t->data)[i] = (int16_t)v; break;
        case BD_I8: ((int8_t *)t->data)[i] = (int8_t)v; break;
        case BD_U16: case BD_F16: ((uint16_t *)t->data)[i] = (uint16_t)v; break;
        case BD_U8: ((uint8_t *)t->data)[i] = (uint8_t)v; break;
        case BD_BOOL: ((uint8_t *)t->data)[i] = v != 0; break;
        default: break;
        }
    }
    return BD_OK;
}

static bd_status load_tensor(const Onnx__TensorProto *tp, const char *what, const char *dir,
                             bd_tensor **out)
{
    if (!supported_dtype(tp->data_type))
        return bd_fail(BD_EUNSUPPORTED, "tensor '%s': data type %d is not supported", what,
                       (int)tp->data_type);
    if (tp->n_dims > BD_MAX_DIMS)
        return bd_fail(BD_EUNSUPPORTED, "tensor '%s': %zu dimensions (at most %d)", what,
                       tp->n_dims, BD_MAX_DIMS);
    if (tp->segment)
        return bd_fail(BD_EUNSUPPORTED, "tensor '%s': segmented tensors are not supported", what);
    bd_tensor *t;
    BD_TRY(bd_tensor_new(&t, (bd_dtype)tp->data_type, (int)tp->n_dims, tp->dims, what));
    bd_status s = BD_OK;
    size_t need = bd_tensor_nbytes(t);
    if (tp->has_data_location && tp->data_location == ONNX__TENSOR_PROTO__DATA_LOCATION__EXTERNAL) {
        s = read_external(tp, dir, what, t);
    } else if (tp->has_raw_data) {
        if (tp->raw_data.len != need)
            s = bd_fail(BD_EFORMAT, "tensor '%s': raw_data has %zu bytes, its shape needs %zu",
                        what, tp->raw_data.len, need);
        else if (need)
            memcpy(t->data, tp->raw_data.data, need);
    } else {
        s = fill_typed(tp, what, t);
    }
    if (s != BD_OK) {
        bd_tensor_free(t);
        return s;
    }
    *out = t;
    return BD_OK;
}

/* ---- declared types ----------------------------------------------------- */

static bd_status load_value_info(bd_graph *g, const Onnx__ValueInfoProto *vi, int *id)
{
    if (!vi->name || !vi->name[0])
        return bd_fail(BD_EFORMAT, "a graph input or output has no name");
    BD_TRY(bd_graph_value(g, vi->name, id));
    bd_value *v = &g->values[*id];
    if (!vi->type || vi->type->value_case != ONNX__TYPE_PROTO__VALUE_TENSOR_TYPE)
        return BD_OK;
    const Onnx__TypeProto__Tensor *tt = vi->type->tensor_type;
    if (tt->has_elem_type && tt->elem_type != 0) {
        if (!supported_dtype(tt->elem_type))
            return bd_fail(BD_EUNSUPPORTED, "value '%s': data type %d is not supported",
                           vi->name, (int)tt->elem_type);
        v->dtype = (bd_dtype)tt->elem_type;
    }
    if (!tt->shape)
        return BD_OK;
    if (tt->shape->n_dim > BD_MAX_DIMS)
        return bd_fail(BD_EUNSUPPORTED, "value '%s': %zu dimensions (at most %d)", vi->name,
                       tt->shape->n_dim, BD_MAX_DIMS);
    v->ndim = (int)tt->shape->n_dim;
    for (int i = 0; i < v->ndim; i++) {
        const Onnx__TensorShapeProto__Dimension *d = tt->shape->dim[i];
        v->dims[i] = -1;
        free(v->dim_param[i]);
        v->dim_param[i] = NULL;
        if (d->value_case == ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_VALUE) {
            if (d->dim_value < 0)
                return bd_fail(BD_EFORMAT, "value '%s': dimension %d is negative", vi->name, i);
            v->dims[i] = d->dim_value;
        } else if (d->value_case == ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_PARAM &&
                   d->dim_param && !(v->dim_param[i] = bd_strdup(d->dim_param))) {
            return bd_fail(BD_ENOMEM, "out of memory");
        }
    }
    return BD_OK;
}

/* ---- nodes -------------------------------------------------------------- */

static bd_status load_attr(const Onnx__AttributeProto *ap, const char *node, bd_attr *a)
{
    memset(a, 0, sizeof *a);
    a->name = ap->name;
    int type = ap->has_type ? (int)ap->type : 0;
    if (!type) { /* files from old writers leave the type out */
        if (ap->n_ints) type = BD_ATTR_INTS;
        else if (ap->n_floats) type = BD_ATTR_FLOATS;
        else if (ap->n_strings) type = BD_ATTR_STRINGS;
        else if (ap->t) type = BD_ATTR_TENSOR;
        else if (ap->has_s) type = BD_ATTR_STRING;
        else if (ap->has_f) type = BD_ATTR_FLOAT;
        else type = BD_ATTR_INT;
    }
    a->type = (bd_attr_type)type;
    switch (type) {
    case BD_ATTR_FLOAT: a->f = ap->f; return BD_OK;
    case BD_ATTR_INT: a->i = ap->i; return BD_OK;
    case BD_ATTR_STRING: return BD_OK; /* filled by the caller, which owns the copy */
    case BD_ATTR_TENSOR:
        if (!ap->t)
            return bd_fail(BD_EFORMAT, "node '%s': attribute '%s' has no tensor", node, ap->name);
        return load_tensor(ap->t, ap->name, NULL, &a->t);
    case BD_ATTR_FLOATS: a->n = (int)ap->n_floats; a->floats = ap->floats; return BD_OK;
    case BD_ATTR_INTS: a->n = (int)ap->n_ints; a->ints = ap->ints; return BD_OK;
    case BD_ATTR_STRINGS: return BD_OK;
    default:
        return bd_fail(BD_EUNSUPPORTED, "node '%s': attribute '%s' has type %d (graphs, sparse "
                       "tensors and type protos are not supported)", node, ap->name, type);
    }
}

static char *binary_string(ProtobufCBinaryData b)
{
    char *s = malloc(b.len + 1);
    if (s) {
        if (b.len)
            memcpy(s, b.data, b.len);
        s[b.len] = '\0';
    }
    return s;
}

static bd_status add_node(bd_graph *g, const Onnx__NodeProto *np, int index)
{
    char fallback[32];
    const char *name = np->name && np->name[0] ? np->name : NULL;
    if (!name) {
        snprintf(fallback, sizeof fallback, "%s_%d", np->op_type ? np->op_type : "node", index);
        name = fallback;
    }
    if (!np->op_type || !np->op_type[0])
        return bd_fail(BD_EFORMAT, "node '%s' has no op type", name);
    bd_node *n;
    BD_TRY(bd_graph_add_node(g, name, np->op_type, np->domain, (int)np->n_input,
                             (const char *const *)np->input, (int)np->n_output,
                             (const char *const *)np->output, &n));
    for (size_t i = 0; i < np->n_attribute; i++) {
        const Onnx__AttributeProto *ap = np->attribute[i];
        if (!ap->name)
            return bd_fail(BD_EFORMAT, "node '%s': an attribute has no name", name);
        bd_attr a;
        BD_TRY(load_attr(ap, name, &a));
        /* strings are copied here so load_attr never owns anything but t */
        bd_status s = BD_OK;
        char **strings = NULL;
        if (a.type == BD_ATTR_STRING && !(a.s = binary_string(ap->s)))
            s = bd_fail(BD_ENOMEM, "out of memory");
        if (s == BD_OK && a.type == BD_ATTR_STRINGS) {
            strings = calloc(ap->n_strings + 1, sizeof *strings);
            a.n = (int)ap->n_strings;
            a.strings = strings;
            for (size_t k = 0; strings && k < ap->n_strings; k++)
                if (!(strings[k] = binary_string(ap->strings[k])))
                    s = bd_fail(BD_ENOMEM, "out of memory");
            if (!strings)
                s = bd_fail(BD_ENOMEM, "out of memory");
        }
        if (s == BD_OK)
            s = bd_node_add_attr(&g->nodes[g->nnodes - 1], &a);
        free(a.s);
        bd_tensor_free(a.t);
        for (int k = 0; strings && k < a.n; k++)
            free(strings[k]);
        free(strings);
        if (s != BD_OK)
            return s;
    }
    (void)n;
    return BD_OK;
}

/* A Constant node is an initializer written another way; turning it into one
 * means every later stage (layer discovery, folding) sees one kind of constant. */
static bd_status constant_tensor(const bd_node *n, bd_tensor **out)
{
    const bd_attr *a;
    if ((a = bd_node_attr(n, "value")) && a->t)
        return bd_tensor_clone(out, a->t);
    int64_t len;
    if ((a = bd_node_attr(n, "value_float")) || (a = bd_node_attr(n, "value_int"))) {
        int isf = a->type == BD_ATTR_FLOAT;
        BD_TRY(bd_tensor_new(out, isf ? BD_F32 : BD_I64, 0, NULL, n->name));
        if (isf)
            *(float *)(*out)->data = a->f;
        else
            *(int64_t *)(*out)->data = a->i;
        return BD_OK;
    }
    if ((a = bd_node_attr(n, "value_floats")) || (a = bd_node_attr(n, "value_ints"))) {
        int isf = a->type == BD_ATTR_FLOATS;
        len = a->n;
        BD_TRY(bd_tensor_new(out, isf ? BD_F32 : BD_I64, 1, &len, n->name));
        if (len)
            memcpy((*out)->data, isf ? (const void *)a->floats : (const void *)a->ints,
                   (size_t)len * (isf ? 4 : 8));
        return BD_OK;
    }
    return bd_node_fail(n, BD_EUNSUPPORTED,
                        "only value, value_float(s) and value_int(s) constants are supported");
}

static int is_default_op(const bd_node *n, const char *op)
{
    return strcmp(n->op, op) == 0 && (!n->domain[0] || strcmp(n->domain, "ai.onnx") == 0);
}

/* An Identity of an initializer is that initializer under another name
 * (exporters wrap weights and biases this way); as a constant, it lets the
 * executor fuse what reads it. The view shares the initializer's storage;
 * an initializer nothing else reads then goes. */
static bd_status identity_constant(bd_graph *g, const bd_node *n, bd_tensor **out)
{
    int in = n->inputs[0];
    const bd_tensor *t = g->values[in].init;
    BD_TRY(bd_tensor_view(out, t, t->ndim, t->dims));
    int readers = bd_graph_use_count(g, in);
    for (int i = 0; i < g->noutputs; i++)
        readers += g->outputs[i] == in;
    if (readers == 1)
        bd_graph_set_init(g, in, NULL);
    return BD_OK;
}

/* Constant nodes, and Identity nodes of initializers, become initializers,
 * so every later stage (layer discovery, fusion, folding) sees one kind of
 * constant. */
static bd_status constants_to_initializers(bd_graph *g)
{
    unsigned char *drop = calloc((size_t)g->nnodes + 1, 1);
    if (!drop)
        return bd_fail(BD_ENOMEM, "out of memory");
    bd_status s = BD_OK;
    for (int i = 0; i < g->nnodes && s == BD_OK; i++) {
        bd_node *n = &g->nodes[i];
        int constant = is_default_op(n, "Constant");
        int alias = is_default_op(n, "Identity") && n->ninputs == 1 && n->inputs[0] >= 0 &&
                    g->values[n->inputs[0]].init;
        if (!constant && !alias)
            continue;
        if (n->noutputs != 1 || n->outputs[0] < 0) {
            s = bd_node_fail(n, BD_EFORMAT, "needs exactly one output");
            break;
        }
        if (g->values[n->outputs[0]].init) {
            s = bd_node_fail(n, BD_EFORMAT, "output '%s' is also an initializer",
                             g->values[n->outputs[0]].name);
            break;
        }
        bd_tensor *t;
        s = constant ? constant_tensor(n, &t) : identity_constant(g, n, &t);
        if (s == BD_OK) {
            bd_graph_set_init(g, n->outputs[0], t);
            drop[i] = 1;
        }
    }
    if (s == BD_OK)
        bd_graph_remove_nodes(g, drop);
    free(drop);
    return s;
}

/* ---- model -------------------------------------------------------------- */

static bd_status opset_of(const Onnx__ModelProto *m, int64_t *opset)
{
    *opset = -1;
    for (size_t i = 0; i < m->n_opset_import; i++) {
        const Onnx__OperatorSetIdProto *o = m->opset_import[i];
        if (!o->domain || !o->domain[0] || strcmp(o->domain, "ai.onnx") == 0)
            *opset = o->version;
    }
    if (*opset < 0)
        return bd_fail(BD_EFORMAT, "the model imports no version of the default ONNX opset");
    if (*opset < BD_OPSET_MIN || *opset > BD_OPSET_MAX)
        return bd_fail(BD_EUNSUPPORTED, "opset %lld is not supported (bitdown reads opsets %d to %d)",
                       (long long)*opset, BD_OPSET_MIN, BD_OPSET_MAX);
    return BD_OK;
}

static bd_status copy_str(char **dst, const char *src)
{
    if (!src)
        return BD_OK;
    *dst = bd_strdup(src);
    return *dst ? BD_OK : bd_fail(BD_ENOMEM, "out of memory");
}

static bd_status build_graph(const Onnx__ModelProto *m, const char *dir, bd_graph *g)
{
    const Onnx__GraphProto *gp = m->graph;
    if (!gp)
        return bd_fail(BD_EFORMAT, "the model has no graph");
    BD_TRY(opset_of(m, &g->opset));
    g->ir_version = m->has_ir_version ? m->ir_version : 8;
    BD_TRY(copy_str(&g->name, gp->name));
    BD_TRY(copy_str(&g->producer_name, m->producer_name));
    BD_TRY(copy_str(&g->producer_version, m->producer_version));
    if (gp->n_sparse_initializer)
        return bd_fail(BD_EUNSUPPORTED, "sparse initializers are not supported");
    for (size_t i = 0; i < gp->n_initializer; i++) {
        const Onnx__TensorProto *tp = gp->initializer[i];
        if (!tp->name || !tp->name[0])
            return bd_fail(BD_EFORMAT, "initializer %zu has no name", i);
        int id;
        BD_TRY(bd_graph_value(g, tp->name, &id));
        if (g->values[id].init)
            return bd_fail(BD_EFORMAT, "initializer '%s' appears twice", tp->name);
        bd_tensor *t;
        BD_TRY(load_tensor(tp, tp->name, dir, &t));
        bd_graph_set_init(g, id, t);
    }
    g->inputs = malloc((gp->n_input + 1) * sizeof *g->inputs);
    g->outputs = malloc((gp->n_output + 1) * sizeof *g->outputs);
    if (!g->inputs || !g->outputs)
        return bd_fail(BD_ENOMEM, "out of memory");
    for (size_t i = 0; i < gp->n_input; i++) {
        int id;
        BD_TRY(load_value_info(g, gp->input[i], &id));
        if (g->values[id].init) /* old exporters list initializers as inputs too */
            continue;
        for (int j = 0; j < g->ninputs; j++)
            if (g->inputs[j] == id)
                return bd_fail(BD_EFORMAT, "graph input '%s' is listed twice", gp->input[i]->name);
        g->inputs[g->ninputs++] = id;
    }
    for (size_t i = 0; i < gp->n_output; i++)
        BD_TRY(load_value_info(g, gp->output[i], &g->outputs[g->noutputs++]));
    if (g->noutputs == 0)
        return bd_fail(BD_EFORMAT, "the graph has no outputs");
    for (size_t i = 0; i < gp->n_value_info; i++) {
        int id;
        BD_TRY(load_value_info(g, gp->value_info[i], &id));
    }
    for (size_t i = 0; i < gp->n_node; i++)
        BD_TRY(add_node(g, gp->node[i], (int)i));
    for (size_t i = 0; i < m->n_metadata_props; i++) {
        const Onnx__StringStringEntryProto *kv = m->metadata_props[i];
        if (kv->key && kv->value)
            BD_TRY(bd_graph_set_meta(g, kv->key, kv->value));
    }
    BD_TRY(constants_to_initializers(g));
    BD_TRY(bd_graph_sort(g));
    for (int i = 0; i < g->nnodes; i++) {
        const bd_op *op;
        BD_TRY(bd_op_check(g, &g->nodes[i], &op));
    }
    return BD_OK;
}

bd_status bd_onnx_load_buffer(const void *data, size_t len, const char *name, const char *dir,
                              bd_graph **out)
{
    Onnx__ModelProto *m = onnx__model_proto__unpack(NULL, len, data);
    if (!m)
        return bd_fail(BD_EFORMAT, "%s: not an ONNX model (protobuf parse failed)", name);
    bd_graph *g;
    bd_status s = bd_graph_new(&g);
    if (s == BD_OK) {
        s = build_graph(m, dir, g);
        if (s != BD_OK) {
            bd_error_context(s, "%s", name);
            bd_graph_free(g);
        } else {
            *out = g;
        }
    }
    onnx__model_proto__free_unpacked(m, NULL);
    return s;
}

bd_status bd_onnx_load(const char *path, bd_graph **out)
{
    void *data;
    size_t len;
    BD_TRY(bd_read_file(path, file_limit(), &data, &len));
    char dir[PATH_MAX];
    bd_dirname(path, dir, sizeof dir);
    bd_status s = bd_onnx_load_buffer(data, len, path, dir, out);
    free(data);
    return s;
}

/* ---- saving ------------------------------------------------------------- */

/* Everything a ModelProto points to while it is packed; freed in one go. */
typedef struct arena {
    void **ptrs;
    size_t n, cap;
    int oom;
} arena;

static void *arena_alloc(arena *a, size_t size)
{
    if (a->n == a->cap) {
        size_t cap = a->cap ? a->cap * 2 : 256;
        void **p = realloc(a->ptrs, cap * sizeof *p);
        if (!p) {
            a->oom = 1;
            return NULL;
        }
        a->ptrs = p;
        a->cap = cap;
    }
    void *m = calloc(1, size ? size : 1);
    if (!m) {
        a->oom = 1;
        return NULL;
    }
    a->ptrs[a->n++] = m;
    return m;
}

static void arena_free(arena *a)
{
    for (size_t i = 0; i < a->n; i++)
        free(a->ptrs[i]);
    free(a->ptrs);
}

static Onnx__TensorProto *tensor_proto(arena *ar, const char *name, const bd_tensor *t)
{
    Onnx__TensorProto *tp = arena_alloc(ar, sizeof *tp);
    int64_t *dims = arena_alloc(ar, (size_t)t->ndim * sizeof *dims);
    if (!tp || !dims)
        return NULL;
    onnx__tensor_proto__init(tp);
    tp->name = (char *)name;
    tp->n_dims = (size_t)t->ndim;
    memcpy(dims, t->dims, (size_t)t->ndim * sizeof *dims);
    tp->dims = dims;
    tp->has_data_type = 1;
    tp->data_type = (int32_t)t->dtype;
    tp->has_raw_data = 1;
    tp->raw_data.len = bd_tensor_nbytes(t);
    tp->raw_data.data = t->data;
    return tp;
}

static Onnx__ValueInfoProto *value_info(arena *ar, const bd_value *v)
{
    Onnx__ValueInfoProto *vi = arena_alloc(ar, sizeof *vi);
    Onnx__TypeProto *tp = arena_alloc(ar, sizeof *tp);
    Onnx__TypeProto__Tensor *tt = arena_alloc(ar, sizeof *tt);
    if (!vi || !tp || !tt)
        return NULL;
    onnx__value_info_proto__init(vi);
    onnx__type_proto__init(tp);
    onnx__type_proto__tensor__init(tt);
    vi->name = v->name;
    vi->type = tp;
    tp->value_case = ONNX__TYPE_PROTO__VALUE_TENSOR_TYPE;
    tp->tensor_type = tt;
    tt->has_elem_type = 1;
    tt->elem_type = v->dtype ? (int32_t)v->dtype : BD_F32;
    if (v->ndim < 0)
        return vi;
    Onnx__TensorShapeProto *sp = arena_alloc(ar, sizeof *sp);
    Onnx__TensorShapeProto__Dimension **dims = arena_alloc(ar, (size_t)v->ndim * sizeof *dims);
    if (!sp || !dims)
        return NULL;
    onnx__tensor_shape_proto__init(sp);
    sp->n_dim = (size_t)v->ndim;
    sp->dim = dims;
    for (int i = 0; i < v->ndim; i++) {
        Onnx__TensorShapeProto__Dimension *d = arena_alloc(ar, sizeof *d);
        if (!d)
            return NULL;
        onnx__tensor_shape_proto__dimension__init(d);
        if (v->dim_param[i]) {
            d->value_case = ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_PARAM;
            d->dim_param = v->dim_param[i];
        } else if (v->dims[i] >= 0) {
            d->value_case = ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_VALUE;
            d->dim_value = v->dims[i];
        }
        dims[i] = d;
    }
    tt->shape = sp;
    return vi;
}

static Onnx__AttributeProto *attr_proto(arena *ar, const bd_attr *a)
{
    Onnx__AttributeProto *ap = arena_alloc(ar, sizeof *ap);
    if (!ap)
        return NULL;
    onnx__attribute_proto__init(ap);
    ap->name = a->name;
    ap->has_type = 1;
    ap->type = (Onnx__AttributeProto__AttributeType)a->type;
    switch (a->type) {
    case BD_ATTR_FLOAT: ap->has_f = 1; ap->f = a->f; break;
    case BD_ATTR_INT: ap->has_i = 1; ap->i = a->i; break;
    case BD_ATTR_STRING:
        ap->has_s = 1;
        ap->s.data = (uint8_t *)a->s;
        ap->s.len = strlen(a->s);
        break;
    case BD_ATTR_TENSOR:
        if (!(ap->t = tensor_proto(ar, a->name, a->t)))
            return NULL;
        break;
    case BD_ATTR_FLOATS: ap->n_floats = (size_t)a->n; ap->floats = a->floats; break;
    case BD_ATTR_INTS: ap->n_ints = (size_t)a->n; ap->ints = a->ints; break;
    case BD_ATTR_STRINGS: {
        ProtobufCBinaryData *s = arena_alloc(ar, (size_t)a->n * sizeof *s);
        if (!s)
            return NULL;
        for (int i = 0; i < a->n; i++) {
            s[i].data = (uint8_t *)a->strings[i];
            s[i].len = strlen(a->strings[i]);
        }
        ap->n_strings = (size_t)a->n;
        ap->strings = s;
        break;
    }
    }
    return ap;
}

static Onnx__NodeProto *node_proto(arena *ar, const bd_graph *g, const bd_node *n)
{
    Onnx__NodeProto *np = arena_alloc(ar, sizeof *np);
    char **in = arena_alloc(ar, (size_t)n->ninputs * sizeof *in);
    char **outp = arena_alloc(ar, (size_t)n->noutputs * sizeof *outp);
    Onnx__AttributeProto **attrs = arena_alloc(ar, (size_t)n->nattrs * sizeof *attrs);
    if (!np || !in || !outp || !attrs)
        return NULL;
    onnx__node_proto__init(np);
    static char empty[] = "";
    for (int i = 0; i < n->ninputs; i++)
        in[i] = n->inputs[i] >= 0 ? g->values[n->inputs[i]].name : empty;
    for (int i = 0; i < n->noutputs; i++)
        outp[i] = n->outputs[i] >= 0 ? g->values[n->outputs[i]].name : empty;
    for (int i = 0; i < n->nattrs; i++)
        if (!(attrs[i] = attr_proto(ar, &n->attrs[i])))
            return NULL;
    /* An absent field is ONNX's empty string, in no bytes at all. */
    np->name = n->name[0] ? n->name : NULL;
    np->op_type = n->op;
    np->domain = n->domain[0] ? n->domain : NULL;
    np->n_input = (size_t)n->ninputs;
    np->input = in;
    np->n_output = (size_t)n->noutputs;
    np->output = outp;
    np->n_attribute = (size_t)n->nattrs;
    np->attribute = attrs;
    return np;
}

static bd_status build_model(arena *ar, const bd_graph *g, Onnx__ModelProto *m)
{
    static char producer[] = "bitdown", version[] = "0.1.0", empty[] = "";
    Onnx__GraphProto *gp = arena_alloc(ar, sizeof *gp);
    Onnx__OperatorSetIdProto *op = arena_alloc(ar, sizeof *op);
    Onnx__OperatorSetIdProto **ops = arena_alloc(ar, sizeof *ops);
    Onnx__NodeProto **nodes = arena_alloc(ar, (size_t)g->nnodes * sizeof *nodes);
    Onnx__TensorProto **inits = arena_alloc(ar, (size_t)g->nvalues * sizeof *inits);
    Onnx__ValueInfoProto **ins = arena_alloc(ar, (size_t)g->ninputs * sizeof *ins);
    Onnx__ValueInfoProto **outs = arena_alloc(ar, (size_t)g->noutputs * sizeof *outs);
    Onnx__StringStringEntryProto **meta = arena_alloc(ar, (size_t)g->nmeta * sizeof *meta);
    if (ar->oom)
        return bd_fail(BD_ENOMEM, "out of memory while serialising");
    onnx__model_proto__init(m);
    onnx__graph_proto__init(gp);
    onnx__operator_set_id_proto__init(op);
    op->domain = empty;
    op->has_version = 1;
    op->version = g->opset;
    ops[0] = op;
    m->has_ir_version = 1;
    m->ir_version = g->ir_version;
    m->n_opset_import = 1;
    m->opset_import = ops;
    m->producer_name = producer;
    m->producer_version = version;
    m->graph = gp;
    gp->name = g->name ? g->name : producer;
    for (int i = 0; i < g->nnodes; i++)
        if (!(nodes[i] = node_proto(ar, g, &g->nodes[i])))
            return bd_fail(BD_ENOMEM, "out of memory while serialising");
    gp->n_node = (size_t)g->nnodes;
    gp->node = nodes;
    size_t ninit = 0;
    for (int v = 0; v < g->nvalues; v++)
        if (g->values[v].init && !(inits[ninit++] = tensor_proto(ar, g->values[v].name,
                                                                 g->values[v].init)))
            return bd_fail(BD_ENOMEM, "out of memory while serialising");
    gp->n_initializer = ninit;
    gp->initializer = inits;
    for (int i = 0; i < g->ninputs; i++)
        if (!(ins[i] = value_info(ar, &g->values[g->inputs[i]])))
            return bd_fail(BD_ENOMEM, "out of memory while serialising");
    for (int i = 0; i < g->noutputs; i++)
        if (!(outs[i] = value_info(ar, &g->values[g->outputs[i]])))
            return bd_fail(BD_ENOMEM, "out of memory while serialising");
    gp->n_input = (size_t)g->ninputs;
    gp->input = ins;
    gp->n_output = (size_t)g->noutputs;
    gp->output = outs;
    for (int i = 0; i < g->nmeta; i++) {
        Onnx__StringStringEntryProto *kv = arena_alloc(ar, sizeof *kv);
        if (!kv)
            return bd_fail(BD_ENOMEM, "out of memory while serialising");
        onnx__string_string_entry_proto__init(kv);
        kv->key = g->meta[i].key;
        kv->value = g->meta[i].value;
        meta[i] = kv;
    }
    m->n_metadata_props = (size_t)g->nmeta;
    m->metadata_props = meta;
    return BD_OK;
}

bd_status bd_onnx_serialize(const bd_graph *g, void **data, size_t *len)
{
    arena ar = {0};
    Onnx__ModelProto m;
    bd_status s = build_model(&ar, g, &m);
    if (s == BD_OK) {
        size_t n = onnx__model_proto__get_packed_size(&m);
        uint8_t *buf = malloc(n ? n : 1);
        if (!buf) {
            s = bd_fail(BD_ENOMEM, "out of memory for a %zu-byte model", n);
        } else {
            onnx__model_proto__pack(&m, buf);
            *data = buf;
            *len = n;
        }
    }
    arena_free(&ar);
    return s;
}

bd_status bd_onnx_save(const bd_graph *g, const char *path)
{
    void *data;
    size_t len;
    BD_TRY(bd_onnx_serialize(g, &data, &len));
    const void *chunks[1] = {data};
    bd_status s = bd_write_file_atomic(path, 1, chunks, &len);
    free(data);
    return s;
}
