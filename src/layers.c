#include "layers.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int generated_name(const char *s)
{
    return strncmp(s, "onnx::", 6) == 0 || strchr(s, ':') != NULL || s[0] == '\0';
}

/* "/layer3/layer3.2/conv2/Conv" -> "layer3.2.conv2". PyTorch names a scope
 * by its module's local name, prefixed with its container's when it is an
 * element of one ("layer3.2" is element 2 of layer3, "downsample.0" element
 * 0 of downsample): such a scope replaces its container's component, any
 * other adds one. */
static int path_name(const char *node, char *out, size_t cap)
{
    if (node[0] != '/')
        return 0;
    const char *last = strrchr(node, '/');
    size_t len = 0, comp = 0; /* comp: where the last component starts in out */
    out[0] = '\0';
    for (const char *p = node + 1; p < last;) {
        const char *e = strchr(p, '/');
        size_t n = (size_t)(e - p), prev = len - comp;
        if (n > 0) {
            if (len && n > prev && strncmp(p, out + comp, prev) == 0 && p[prev] == '.') {
                len = comp; /* an element of the last component: it takes its place */
            } else if (len && len + 1 < cap) {
                out[len++] = '.';
                comp = len;
            }
            if (len + n >= cap)
                return 0;
            memcpy(out + len, p, n);
            len += n;
            out[len] = '\0';
        }
        p = e + 1;
    }
    return len > 0;
}

static void layer_name(const bd_graph *g, const bd_node *n, int weight, int index, char *out,
                       size_t cap)
{
    const char *w = g->values[weight].name;
    if (!generated_name(w)) {
        size_t len = strlen(w);
        if (len > 7 && strcmp(w + len - 7, ".weight") == 0)
            len -= 7;
        if (len >= cap)
            len = cap - 1;
        memcpy(out, w, len);
        out[len] = '\0';
        return;
    }
    if (path_name(n->name, out, cap))
        return;
    if (n->name[0])
        snprintf(out, cap, "%s", n->name);
    else
        snprintf(out, cap, "op_%d", index);
}

static int layer_of(const bd_graph *g, int index, bd_layer *l)
{
    const bd_node *n = &g->nodes[index];
    const bd_tensor *w = bd_node_const_input(g, n, 1);
    if (!w || w->dtype != BD_F32)
        return 0;
    memset(l, 0, sizeof *l);
    l->node = index;
    snprintf(l->op, sizeof l->op, "%s", n->op);
    l->weight = n->inputs[1];
    l->bias = -1;
    l->kh = l->kw = 1;
    l->groups = 1;
    if (strcmp(n->op, "Conv") == 0) {
        if (w->ndim < 3 || w->ndim > 4)
            return 0;
        l->rows = w->dims[0];
        l->row_len = w->dims[1];
        for (int d = 2; d < w->ndim; d++)
            l->row_len *= w->dims[d];
        l->kh = w->ndim == 4 ? w->dims[2] : 1;
        l->kw = w->dims[w->ndim - 1];
        l->groups = bd_attr_int(n, "group", 1);
        if (n->ninputs > 2 && bd_node_const_input(g, n, 2))
            l->bias = n->inputs[2];
    } else if (strcmp(n->op, "Gemm") == 0 || strcmp(n->op, "MatMul") == 0) {
        if (w->ndim != 2)
            return 0;
        int tb = strcmp(n->op, "Gemm") == 0 && bd_attr_int(n, "transB", 0) != 0;
        l->transposed = !tb;
        l->rows = tb ? w->dims[0] : w->dims[1];
        l->row_len = tb ? w->dims[1] : w->dims[0];
        if (strcmp(n->op, "Gemm") == 0 && n->ninputs > 2 && bd_node_const_input(g, n, 2))
            l->bias = n->inputs[2];
    } else {
        return 0;
    }
    return l->rows > 0 && l->row_len > 0;
}

bd_status bd_layers_find(const bd_graph *g, bd_layer **layers, int *count)
{
    bd_layer *out = calloc((size_t)g->nnodes + 1, sizeof *out);
    if (!out)
        return bd_fail(BD_ENOMEM, "out of memory");
    int n = 0;
    for (int i = 0; i < g->nnodes; i++) {
        if (!layer_of(g, i, &out[n]))
            continue;
        char base[BD_LAYER_NAME_MAX - 8];
        layer_name(g, &g->nodes[i], out[n].weight, i, base, sizeof base);
        snprintf(out[n].name, sizeof out[n].name, "%s", base);
        for (int dup = 2;; dup++) {
            int clash = 0;
            for (int j = 0; j < n && !clash; j++)
                clash = strcmp(out[j].name, out[n].name) == 0;
            if (!clash)
                break;
            snprintf(out[n].name, sizeof out[n].name, "%s#%d", base, dup);
        }
        n++;
    }
    *layers = out;
    *count = n;
    return BD_OK;
}

int64_t bd_layer_params(const bd_layer *l) { return l->rows * l->row_len; }

const char *bd_layer_kind(const bd_layer *l, char *buf, size_t cap)
{
    if (strcmp(l->op, "Conv") != 0)
        snprintf(buf, cap, "fc");
    else
        snprintf(buf, cap, "%s %lldx%lld",
                 l->groups == 1 ? "conv" : l->row_len == l->kh * l->kw ? "dw" : "gconv",
                 (long long)l->kh, (long long)l->kw);
    return buf;
}
