#include "exec.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cpu/conv.h"
#include "cpu/fused.h"
#include "cpu/gemm_rows.h"
#include "cpu/kernel_util.h"
#include "cpu/pool.h"
#include "ops.h"
#include "progress.h"

/* What a step runs: its node alone, or a chain of nodes from it fused into
 * one kernel (BD_EXEC_FUSE). */
enum { STEP_NODE, STEP_CONV, STEP_BN, STEP_GELU, STEP_LAYER_NORM, STEP_MATMUL, STEP_PAD_POOL };

typedef struct step {
    int node;
    int kind;
    const bd_op *op;
    int bn;       /* fused BatchNormalization node, or -1 */
    int add;      /* fused Add of a residual, or -1 */
    int residual; /* the value that Add adds, or -1 */
    int act;      /* fused activation node (Relu, Clip, Sigmoid, HardSigmoid,
                   * HardSwish), or -1 */
    int gate;     /* the Mul that makes the fused Sigmoid or HardSigmoid a gate of
                   * its own input (x Sigmoid(x), SiLU; x HardSigmoid(x), as
                   * exporters spell HardSwish before opset 14), or -1 */
    int gelu;     /* MatMul: the Div that starts its fused GELU, or -1 */
    int pool;     /* Pad: the AveragePool that reads it, fused, or -1 */
    int out;      /* the value the whole step produces, when fused */
    /* GELU (alone or after a MatMul): the divisor, the addend, the factor;
     * LayerNorm: epsilon, and its scale and shift (NULL: none); MatMul:
     * the bias as shift */
    float k[3];
    const bd_tensor *scale, *shift;
    /* Conv under BD_EXEC_FROZEN, its weight an initializer: that weight kept
     * re-laid for its kernel (NULL until the first run keeps it) */
    int keep;
    bd_conv_cache *cache;
    /* and its epilogue, the folded scale and shift in ep_buf (NULL until
     * the first run makes them) */
    bd_epilogue ep;
    float *ep_buf;
    /* Mul under BD_EXEC_FROZEN: may scale channels over its input
     * (scale_in_place) */
    int scales;
    /* A conv whose output only a Concat along the channels reads: at batch
     * 1 it writes straight into its slice of the Concat's output, which
     * then copies nothing. concat is that Concat's node (-1: none), at the
     * channels before the slice, channels the Concat's in all. On the
     * Concat's own step, concat is its node when all its inputs are such
     * slices. */
    int concat;
    int64_t at, channels;
} step;

struct bd_exec {
    const bd_graph *g;
    int maxio; /* most inputs or outputs of any node */
    int nsteps;
    step *steps;
    int *uses; /* reads of each computed value, over all steps */
    unsigned char *is_output;
    bd_exec_hook hook;
    void *user;
    const bd_input_transform *tf;
    double *profile; /* seconds per node, summed over runs (borrowed), or NULL */
};

/* The node that reads `value`, if exactly one does, once, and it is not a
 * graph output; *slot gets the input position. */
static int only_reader(const bd_graph *g, const unsigned char *is_output, int value, int *node,
                       int *slot)
{
    if (is_output[value])
        return 0;
    int found = -1;
    for (int i = 0; i < g->nnodes; i++)
        for (int k = 0; k < g->nodes[i].ninputs; k++)
            if (g->nodes[i].inputs[k] == value) {
                if (found >= 0)
                    return 0;
                found = i;
                *slot = k;
            }
    *node = found;
    return found >= 0;
}

static int all_const_after_first(const bd_graph *g, const bd_node *n)
{
    for (int k = 1; k < n->ninputs; k++)
        if (n->inputs[k] >= 0 && !g->values[n->inputs[k]].init)
            return 0;
    return 1;
}

static int is_op(const bd_node *n, const char *op) { return strcmp(n->op, op) == 0; }

/* The two nodes that read value v, if exactly two reads do and v is not a
 * graph output; slot[j] gets reader j's input position. */
static int two_readers(const bd_graph *g, const unsigned char *is_output, int v, int *readers,
                       int *slot)
{
    int n = 0;
    if (is_output[v])
        return 0;
    for (int i = 0; i < g->nnodes; i++)
        for (int k = 0; k < g->nodes[i].ninputs; k++)
            if (g->nodes[i].inputs[k] == v) {
                if (n == 2)
                    return 0;
                readers[n] = i;
                slot[n++] = k;
            }
    return n == 2;
}

/* The Mul that reads value v and f(v), f Sigmoid or HardSigmoid, where
 * those two nodes are v's only readers and the Mul f's: *sig gets f's node. */
static int gate_of(const bd_graph *g, const unsigned char *is_output, int v, int *sig, int *mul)
{
    int readers[2], at[2];
    if (!two_readers(g, is_output, v, readers, at))
        return 0;
    for (int j = 0; j < 2; j++) {
        const bd_node *s = &g->nodes[readers[j]], *m = &g->nodes[readers[1 - j]];
        int next, slot;
        if ((is_op(s, "Sigmoid") || is_op(s, "HardSigmoid")) && s->noutputs == 1 &&
            is_op(m, "Mul") && m->ninputs == 2 &&
            m->noutputs == 1 && only_reader(g, is_output, s->outputs[0], &next, &slot) &&
            next == readers[1 - j]) {
            *sig = readers[j];
            *mul = readers[1 - j];
            return 1;
        }
    }
    return 0;
}

static int is_activation(const bd_node *n)
{
    static const char *const ops[] = {"Relu", "Clip", "Sigmoid", "HardSigmoid", "HardSwish"};
    for (size_t k = 0; k < sizeof ops / sizeof ops[0]; k++)
        if (is_op(n, ops[k]))
            return 1;
    return 0;
}

/* The activation (is_activation's, or a gate: gate_of) that alone reads v,
 * taken into step s, which then ends in its output. */
static void plan_activation(const bd_graph *g, const unsigned char *is_output, step *s, int v,
                            unsigned char *absorbed)
{
    int next, slot, sig, mul;
    if (only_reader(g, is_output, v, &next, &slot) && slot == 0 &&
        is_activation(&g->nodes[next]) && g->nodes[next].noutputs == 1 &&
        all_const_after_first(g, &g->nodes[next])) {
        s->act = next;
        absorbed[next] = 1;
        v = g->nodes[next].outputs[0];
    } else if (gate_of(g, is_output, v, &sig, &mul)) {
        s->act = sig;
        s->gate = mul;
        absorbed[sig] = absorbed[mul] = 1;
        v = g->nodes[mul].outputs[0];
    }
    s->out = v;
}

/* An inference BatchNormalization with constant parameters. */
static int is_inference_bn(const bd_graph *g, const bd_node *n)
{
    return is_op(n, "BatchNormalization") && n->noutputs == 1 && all_const_after_first(g, n) &&
           bd_attr_int(n, "training_mode", 0) == 0;
}

/* Conv [-> BatchNormalization] [-> Add(residual)] [-> activation], each
 * link the sole reader of the previous one's output; the activation is one
 * of is_activation's, or a gate (gate_of). BatchNorm and Clip need
 * constant parameters; the residual must be computed before the conv runs,
 * since the fused step runs where the conv does. */
static void plan_fusion(const bd_graph *g, const unsigned char *is_output, step *s,
                        unsigned char *absorbed)
{
    const bd_node *conv = &g->nodes[s->node];
    if (!is_op(conv, "Conv") || conv->noutputs != 1 || !all_const_after_first(g, conv))
        return;
    int v = conv->outputs[0], next, slot;
    if (only_reader(g, is_output, v, &next, &slot) && slot == 0 &&
        is_inference_bn(g, &g->nodes[next])) {
        s->bn = next;
        absorbed[next] = 1;
        v = g->nodes[next].outputs[0];
    }
    if (only_reader(g, is_output, v, &next, &slot) && is_op(&g->nodes[next], "Add") &&
        g->nodes[next].ninputs == 2 && g->nodes[next].noutputs == 1) {
        int other = g->nodes[next].inputs[1 - slot];
        const bd_value *ov = other >= 0 ? &g->values[other] : NULL;
        if (ov && !ov->init && ov->producer < s->node && other != v) {
            s->add = next;
            s->residual = other;
            absorbed[next] = 1;
            v = g->nodes[next].outputs[0];
        }
    }
    plan_activation(g, is_output, s, v, absorbed);
}

/* BatchNormalization -> activation where no conv precedes the
 * BatchNormalization (DenseNet's, before each conv): one pass of the
 * conv's epilogue instead of two. */
static void plan_bn(const bd_graph *g, const unsigned char *is_output, step *s,
                    unsigned char *absorbed)
{
    if (!is_inference_bn(g, &g->nodes[s->node]))
        return;
    plan_activation(g, is_output, s, g->nodes[s->node].outputs[0], absorbed);
    if (s->act >= 0) {
        s->kind = STEP_BN;
        s->bn = s->node;
    }
}

/* A Pad with constant pads whose output only an AveragePool reads: the
 * pool runs over the unpadded input with the padding as its own, counted
 * in every window (run_pad_pool). Inception-v3 exports its branch pools
 * so: 9 Pads, as long as the pools themselves. */
static void plan_pad_pool(const bd_graph *g, const unsigned char *is_output, step *s,
                          unsigned char *absorbed)
{
    const bd_node *pad = &g->nodes[s->node];
    int reader, slot;
    if (!is_op(pad, "Pad") || strcmp(bd_attr_string(pad, "mode", "constant"), "constant") != 0 ||
        (g->opset >= 11 && !bd_node_const_input(g, pad, 1)) ||
        (pad->ninputs > 2 && pad->inputs[2] >= 0 && !bd_node_const_input(g, pad, 2)) ||
        !only_reader(g, is_output, pad->outputs[0], &reader, &slot) ||
        !is_op(&g->nodes[reader], "AveragePool") || slot != 0)
        return;
    s->kind = STEP_PAD_POOL;
    s->pool = reader;
    s->out = g->nodes[reader].outputs[0];
    absorbed[reader] = 1;
}

/* The value of a one-element float32 initializer input, if it is one. */
static int scalar_input(const bd_graph *g, const bd_node *n, int k, float *v)
{
    const bd_tensor *t = k < n->ninputs ? bd_node_const_input(g, n, k) : NULL;
    if (!t || t->dtype != BD_F32 || bd_tensor_count(t) != 1)
        return 0;
    *v = *(const float *)t->data;
    return 1;
}

/* The two-input node that is the sole reader of `v`: *other gets its other
 * input's position. */
static int binary_reader(const bd_graph *g, const unsigned char *is_output, int v, const char *op,
                         int *node, int *other)
{
    int slot;
    if (!only_reader(g, is_output, v, node, &slot) || !is_op(&g->nodes[*node], op) ||
        g->nodes[*node].ninputs != 2 || g->nodes[*node].noutputs != 1)
        return 0;
    *other = 1 - slot;
    return 1;
}

static int unary_reader(const bd_graph *g, const unsigned char *is_output, int v, const char *op,
                        int *node)
{
    int slot;
    return only_reader(g, is_output, v, node, &slot) && is_op(&g->nodes[*node], op) &&
           g->nodes[*node].noutputs == 1;
}

/* GELU as exporters write it: Div(x, c) -> Erf -> Add(1) -> Mul(x, .) ->
 * Mul(0.5), any constants, either operand order; each link the sole reader
 * of the one before, the Div (node d) starting from x. Gives the chain's
 * last value, its constants in s->k and its nodes after the Div absorbed;
 * or -1, nothing changed. */
static int gelu_chain(const bd_graph *g, const unsigned char *is_output, int d, step *s,
                      unsigned char *absorbed)
{
    const bd_node *div = &g->nodes[d];
    int erf, add, mul, half, other, o2;
    float k[3];
    if (!is_op(div, "Div") || div->ninputs != 2 || div->noutputs != 1 || div->inputs[0] < 0 ||
        !scalar_input(g, div, 1, &k[0]) ||
        !unary_reader(g, is_output, div->outputs[0], "Erf", &erf) ||
        !binary_reader(g, is_output, g->nodes[erf].outputs[0], "Add", &add, &other) ||
        !scalar_input(g, &g->nodes[add], other, &k[1]) ||
        !binary_reader(g, is_output, g->nodes[add].outputs[0], "Mul", &mul, &other) ||
        g->nodes[mul].inputs[other] != div->inputs[0] ||
        !binary_reader(g, is_output, g->nodes[mul].outputs[0], "Mul", &half, &o2) ||
        !scalar_input(g, &g->nodes[half], o2, &k[2]))
        return -1;
    memcpy(s->k, k, sizeof k);
    absorbed[erf] = absorbed[add] = absorbed[mul] = absorbed[half] = 1;
    return g->nodes[half].outputs[0];
}

static void plan_gelu(const bd_graph *g, const unsigned char *is_output, step *s,
                      unsigned char *absorbed)
{
    const int out = gelu_chain(g, is_output, s->node, s, absorbed);
    if (out < 0)
        return;
    s->kind = STEP_GELU;
    s->out = out;
}

/* MatMul(x, B) -> Add(bias) [-> GELU], B a 2-D float32 initializer, the
 * bias a 1-D one of B's columns; each link the sole reader of the one
 * before, but the GELU's x, read by its Div and its Mul alone. */
static void plan_matmul(const bd_graph *g, const unsigned char *is_output, step *s,
                        unsigned char *absorbed)
{
    const bd_node *mm = &g->nodes[s->node];
    const bd_tensor *b = mm->ninputs == 2 ? bd_node_const_input(g, mm, 1) : NULL;
    int add, other, readers[2], slots[2];
    if (!is_op(mm, "MatMul") || mm->noutputs != 1 || !b || b->dtype != BD_F32 || b->ndim != 2 ||
        !binary_reader(g, is_output, mm->outputs[0], "Add", &add, &other))
        return;
    const bd_tensor *bias = bd_node_const_input(g, &g->nodes[add], other);
    if (!bias || bias->dtype != BD_F32 || bias->ndim != 1 || bias->dims[0] != b->dims[1])
        return;
    s->kind = STEP_MATMUL;
    s->add = add;
    s->shift = bias;
    absorbed[add] = 1;
    s->out = g->nodes[add].outputs[0];
    if (!two_readers(g, is_output, s->out, readers, slots))
        return;
    const int d = is_op(&g->nodes[readers[0]], "Div") ? readers[0] : readers[1];
    const int out = gelu_chain(g, is_output, d, s, absorbed);
    if (out >= 0) {
        s->gelu = d;
        absorbed[d] = 1;
        s->out = out;
    }
}

/* A ReduceMean over the last axis alone, keeping it. */
static int last_axis_mean(const bd_graph *g, const bd_node *n)
{
    if (!is_op(n, "ReduceMean") || n->noutputs != 1 || bd_attr_int(n, "keepdims", 1) != 1)
        return 0;
    int64_t axes[2];
    int count = 0;
    const bd_tensor *t = n->ninputs > 1 ? bd_node_const_input(g, n, 1) : NULL;
    if ((g->opset >= 18 && n->ninputs > 1 && !t) ||
        bd_k_int_list(n, g->opset >= 18, t, "axes", axes, 2, &count) != BD_OK)
        return 0;
    return count == 1 && axes[0] == -1;
}

/* A one-dimensional float32 initializer input (LayerNorm's scale or shift). */
static const bd_tensor *vector_input(const bd_graph *g, const bd_node *n, int k)
{
    const bd_tensor *t = bd_node_const_input(g, n, k);
    return t && t->dtype == BD_F32 && t->ndim <= 1 ? t : NULL;
}

/* LayerNorm over the last axis as exporters write it: m = ReduceMean(x),
 * d = Sub(x, m), ReduceMean(Pow(d, 2)) -> Add(eps) -> Sqrt, Div(d, that),
 * then optionally Mul(scale) and Add(shift); each value the sole input of
 * the next but d, read by the Pow and the Div. */
static void plan_layer_norm(const bd_graph *g, const unsigned char *is_output, step *s,
                            unsigned char *absorbed)
{
    const bd_node *m = &g->nodes[s->node];
    const int x = m->ninputs > 0 ? m->inputs[0] : -1;
    int sub, slot, pow, var, add, sqrt_, div, reader, other, readers[2], slots[2];
    float two, eps;
    if (x < 0 || !last_axis_mean(g, m) ||
        !binary_reader(g, is_output, m->outputs[0], "Sub", &sub, &other) || other != 0 ||
        g->nodes[sub].inputs[0] != x)
        return;
    /* d's readers: a Pow by 2 and the Div, each reading it first */
    if (!two_readers(g, is_output, g->nodes[sub].outputs[0], readers, slots) || slots[0] ||
        slots[1])
        return;
    const int pow_first = is_op(&g->nodes[readers[0]], "Pow");
    pow = readers[pow_first ? 0 : 1];
    div = readers[pow_first ? 1 : 0];
    if (!is_op(&g->nodes[pow], "Pow") || !is_op(&g->nodes[div], "Div") ||
        !scalar_input(g, &g->nodes[pow], 1, &two) ||
        two != 2.0f || !only_reader(g, is_output, g->nodes[pow].outputs[0], &var, &slot) ||
        !last_axis_mean(g, &g->nodes[var]) ||
        !binary_reader(g, is_output, g->nodes[var].outputs[0], "Add", &add, &other) ||
        !scalar_input(g, &g->nodes[add], other, &eps) ||
        !unary_reader(g, is_output, g->nodes[add].outputs[0], "Sqrt", &sqrt_) ||
        !only_reader(g, is_output, g->nodes[sqrt_].outputs[0], &reader, &slot) ||
        reader != div || slot != 1 || g->nodes[div].ninputs != 2 || g->nodes[div].noutputs != 1)
        return;
    s->kind = STEP_LAYER_NORM;
    s->k[0] = eps;
    absorbed[sub] = absorbed[pow] = absorbed[var] = absorbed[add] = absorbed[sqrt_] =
        absorbed[div] = 1;
    s->out = g->nodes[div].outputs[0];
    int mul, shift;
    if (binary_reader(g, is_output, s->out, "Mul", &mul, &other) &&
        (s->scale = vector_input(g, &g->nodes[mul], other))) {
        absorbed[mul] = 1;
        s->out = g->nodes[mul].outputs[0];
        if (binary_reader(g, is_output, s->out, "Add", &shift, &other) &&
            (s->shift = vector_input(g, &g->nodes[shift], other))) {
            absorbed[shift] = 1;
            s->out = g->nodes[shift].outputs[0];
        }
    }
}

/* The step that produces value v as its output, or NULL. */
static step *producer(bd_exec *ex, int v)
{
    for (int i = 0; i < ex->nsteps; i++)
        if (ex->steps[i].out == v)
            return &ex->steps[i];
    return NULL;
}

/* Marks the Concats along axis 1 whose every input is a conv's output that
 * nothing else reads, with a constant weight that gives its channels: those
 * convs write into their slices of the Concat (run_fused_conv), which is
 * then a view of what they wrote (concat_in_place). */
static void plan_concats(bd_exec *ex)
{
    const bd_graph *g = ex->g;
    for (int i = 0; i < ex->nsteps; i++) {
        step *c = &ex->steps[i];
        const bd_node *n = &g->nodes[c->node];
        if (c->kind != STEP_NODE || !is_op(n, "Concat") || bd_attr_int(n, "axis", 0) != 1 ||
            n->ninputs < 2)
            continue;
        int64_t channels = 0;
        int k = 0;
        for (; k < n->ninputs; k++) {
            const int v = n->inputs[k];
            step *p = v >= 0 && ex->uses[v] == 1 && !ex->is_output[v] ? producer(ex, v) : NULL;
            const bd_node *conv = p ? &g->nodes[p->node] : NULL;
            const bd_tensor *w = conv && is_op(conv, "Conv") ? bd_node_const_input(g, conv, 1)
                                                             : NULL;
            if (!w || w->ndim != 4 || p->concat >= 0)
                break;
            channels += w->dims[0];
        }
        if (k < n->ninputs)
            continue;
        int64_t at = 0;
        for (k = 0; k < n->ninputs; k++) {
            step *p = producer(ex, n->inputs[k]);
            p->kind = STEP_CONV; /* a plain conv too, for its output's place */
            p->concat = c->node;
            p->at = at;
            p->channels = channels;
            at += bd_node_const_input(g, &g->nodes[p->node], 1)->dims[0];
        }
        c->concat = c->node;
    }
}

bd_status bd_exec_new(bd_exec **out, const bd_graph *g, int flags)
{
    bd_exec *ex = calloc(1, sizeof *ex);
    unsigned char *absorbed = calloc((size_t)g->nnodes + 1, 1);
    if (ex) {
        ex->steps = calloc((size_t)g->nnodes + 1, sizeof *ex->steps);
        ex->uses = calloc((size_t)g->nvalues + 1, sizeof *ex->uses);
        ex->is_output = calloc((size_t)g->nvalues + 1, 1);
    }
    if (!ex || !absorbed || !ex->steps || !ex->uses || !ex->is_output) {
        free(absorbed);
        bd_exec_free(ex);
        return bd_fail(BD_ENOMEM, "out of memory planning the graph");
    }
    ex->g = g;
    ex->maxio = 1;
    for (int i = 0; i < g->nnodes; i++) {
        if (g->nodes[i].ninputs > ex->maxio)
            ex->maxio = g->nodes[i].ninputs;
        if (g->nodes[i].noutputs > ex->maxio)
            ex->maxio = g->nodes[i].noutputs;
    }
    for (int i = 0; i < g->noutputs; i++)
        ex->is_output[g->outputs[i]] = 1;
    for (int i = 0; i < g->nnodes; i++) {
        if (absorbed[i])
            continue;
        step *s = &ex->steps[ex->nsteps];
        s->node = i;
        s->kind = STEP_NODE;
        s->bn = s->act = s->gate = s->add = s->residual = s->gelu = s->concat = s->pool = -1;
        s->out = g->nodes[i].outputs[0];
        bd_status st = bd_op_check(g, &g->nodes[i], &s->op);
        if (st != BD_OK) {
            free(absorbed);
            bd_exec_free(ex);
            return st;
        }
        if (flags & BD_EXEC_FUSE) {
            plan_fusion(g, ex->is_output, s, absorbed);
            if (s->bn >= 0 || s->add >= 0 || s->act >= 0)
                s->kind = STEP_CONV;
            else
                plan_gelu(g, ex->is_output, s, absorbed);
            if (s->kind == STEP_NODE)
                plan_layer_norm(g, ex->is_output, s, absorbed);
            if (s->kind == STEP_NODE)
                plan_matmul(g, ex->is_output, s, absorbed);
            if (s->kind == STEP_NODE)
                plan_bn(g, ex->is_output, s, absorbed);
            if (s->kind == STEP_NODE)
                plan_pad_pool(g, ex->is_output, s, absorbed);
        }
        if ((flags & BD_EXEC_FROZEN) && is_op(&g->nodes[i], "Conv") &&
            bd_node_const_input(g, &g->nodes[i], 1)) {
            s->keep = 1;
            s->kind = STEP_CONV; /* with no more than its bias in the epilogue */
        }
        s->scales = (flags & BD_EXEC_FROZEN) && s->kind == STEP_NODE && is_op(&g->nodes[i], "Mul");
        ex->nsteps++;
        const bd_node *n = &g->nodes[i];
        for (int k = 0; k < n->ninputs; k++)
            if (n->inputs[k] >= 0)
                ex->uses[n->inputs[k]]++;
        if (s->residual >= 0) /* the fused step reads it in the Add's place */
            ex->uses[s->residual]++;
    }
    free(absorbed);
    if (flags & BD_EXEC_FUSE)
        plan_concats(ex);
    *out = ex;
    return BD_OK;
}

const bd_graph *bd_exec_graph(const bd_exec *ex) { return ex->g; }

void bd_exec_free(bd_exec *ex)
{
    if (!ex)
        return;
    for (int i = 0; ex->steps && i < ex->nsteps; i++) {
        bd_conv_cache_free(ex->steps[i].cache);
        free(ex->steps[i].ep_buf);
    }
    free(ex->steps);
    free(ex->uses);
    free(ex->is_output);
    free(ex);
}

void bd_exec_set_hook(bd_exec *ex, bd_exec_hook hook, void *user)
{
    ex->hook = hook;
    ex->user = user;
}

void bd_exec_set_transform(bd_exec *ex, const bd_input_transform *tf) { ex->tf = tf; }

void bd_exec_set_profile(bd_exec *ex, double *seconds) { ex->profile = seconds; }

const char *bd_exec_step_op(const bd_exec *ex, int node)
{
    for (int i = 0; i < ex->nsteps; i++)
        if (ex->steps[i].node == node)
            return ex->steps[i].kind == STEP_GELU         ? "GELU"
                   : ex->steps[i].kind == STEP_LAYER_NORM ? "LayerNorm"
                   : ex->steps[i].kind == STEP_MATMUL     ? ex->steps[i].gelu >= 0
                                                                ? "MatMul+bias+GELU"
                                                                : "MatMul+bias"
                   : ex->steps[i].kind == STEP_PAD_POOL ? "Pad+AveragePool"
                                                        : ex->g->nodes[node].op;
    return ex->g->nodes[node].op;
}

/* Per-channel scale and shift of a bias (NULL: none) and an inference
 * BatchNormalization (the shift (bias - mean) a + B, a = scale / sqrt(var
 * + eps): without a bias, the op's own B - mean a, bit for bit), then the
 * activation. */
static bd_status fused_epilogue(const bd_graph *g, const step *s, int64_t m,
                                const bd_tensor *bias, float **buf, bd_epilogue *ep)
{
    if (bias && (bias->dtype != BD_F32 || bd_tensor_count(bias) != m))
        return bd_node_fail(&g->nodes[s->node], BD_EFORMAT,
                            "bias has %lld values, expected %lld float32",
                            (long long)bd_tensor_count(bias), (long long)m);
    memset(ep, 0, sizeof *ep);
    *buf = malloc(2 * (size_t)m * sizeof **buf + 1);
    if (!*buf)
        return bd_fail(BD_ENOMEM, "out of memory");
    float *scale = *buf, *shift = *buf + m;
    for (int64_t c = 0; c < m; c++) {
        scale[c] = 1.0f;
        shift[c] = bias ? ((const float *)bias->data)[c] : 0.0f;
    }
    if (s->bn >= 0) {
        const bd_node *bn = &g->nodes[s->bn];
        const float *p[4];
        for (int k = 0; k < 4; k++) {
            const bd_tensor *t = bd_node_const_input(g, bn, k + 1);
            if (!t || t->dtype != BD_F32 || bd_tensor_count(t) != m)
                return bd_node_fail(bn, BD_EFORMAT, "parameter %d must hold %lld float32 values",
                                    k + 1, (long long)m);
            p[k] = t->data;
        }
        float eps = bd_attr_float(bn, "epsilon", 1e-5f);
        for (int64_t c = 0; c < m; c++) {
            float a = p[0][c] / sqrtf(p[3][c] + eps);
            scale[c] = a;
            shift[c] = (shift[c] - p[2][c]) * a + p[1][c];
        }
    }
    ep->scale = scale;
    ep->shift = shift;
    if (s->act < 0)
        return BD_OK;
    const bd_node *act = &g->nodes[s->act];
    if (is_op(act, "Relu")) {
        ep->act = BD_ACT_RELU;
    } else if (is_op(act, "Clip")) {
        /* the op's own reading of its bounds (attributes before opset 11) */
        bd_tensor *ins[3] = {NULL, NULL, NULL};
        for (int k = 1; k < act->ninputs && k < 3; k++)
            ins[k] = act->inputs[k] >= 0 ? g->values[act->inputs[k]].init : NULL;
        ep->act = BD_ACT_CLIP;
        return bd_k_clip_bounds(g, act, ins, &ep->lo, &ep->hi);
    } else if (is_op(act, "HardSigmoid")) {
        ep->act = s->gate >= 0 ? BD_ACT_X_HARD_SIGMOID : BD_ACT_HARD_SIGMOID;
        bd_k_hard_sigmoid_params(act, &ep->alpha, &ep->beta);
    } else {
        ep->act = is_op(act, "HardSwish") ? BD_ACT_HARD_SWISH
                  : s->gate >= 0          ? BD_ACT_SILU
                                          : BD_ACT_SIGMOID;
    }
    return BD_OK;
}

/* fused_epilogue, made once for a step that keeps its weight: under
 * BD_EXEC_FROZEN its bias and BatchNormalization hold still too, and
 * folding them again each pass was a serial stretch (a square root and a
 * division a channel) that a second thread waited through. *buf gets
 * what the caller frees: NULL for the kept one. */
static bd_status step_epilogue(const bd_graph *g, step *s, int64_t m, const bd_tensor *bias,
                               float **buf, bd_epilogue *ep)
{
    if (!s->keep)
        return fused_epilogue(g, s, m, bias, buf, ep);
    if (!s->ep_buf) {
        float *made = NULL;
        bd_status st = fused_epilogue(g, s, m, bias, &made, &s->ep);
        if (st != BD_OK) {
            free(made);
            return st;
        }
        s->ep_buf = made;
    }
    *buf = NULL;
    *ep = s->ep;
    return BD_OK;
}

/* Runs an absorbed node by itself on (first, the node's other inputs). */
static bd_status run_absorbed(const bd_graph *g, const bd_node *n, int slot, bd_tensor *first,
                             bd_tensor *other, bd_tensor **out)
{
    bd_tensor *ins[3] = {NULL, NULL, NULL};
    for (int k = 0; k < n->ninputs && k < 3; k++)
        ins[k] = n->inputs[k] >= 0 ? g->values[n->inputs[k]].init : NULL;
    ins[slot] = first;
    if (other)
        ins[1 - slot] = other;
    return bd_op_run(g, n, ins, out);
}

/* The conv's output: its slice of *slab, the output of the Concat it
 * feeds (made by the first of its inputs to run), at batch 1 where the
 * slab's grid is its own; else a tensor of its own. */
static bd_status conv_output(const bd_graph *g, const step *s, int ndim, const int64_t *dims,
                             bd_tensor **slab, bd_tensor **out)
{
    const bd_node *conv = &g->nodes[s->node];
    if (!slab || ndim != 4 || dims[0] != 1)
        return bd_tensor_new_raw(out, BD_F32, ndim, dims, conv->name);
    if (!*slab) {
        const int64_t all[4] = {1, s->channels, dims[2], dims[3]};
        BD_TRY(bd_tensor_new_raw(slab, BD_F32, 4, all, g->nodes[s->concat].name));
    }
    if ((*slab)->dims[2] != dims[2] || (*slab)->dims[3] != dims[3] ||
        s->at + dims[1] > s->channels)
        return bd_tensor_new_raw(out, BD_F32, ndim, dims, conv->name);
    return bd_tensor_view_at(out, *slab, s->at * dims[2] * dims[3], ndim, dims);
}

/* reuse: in[0] where the run may write over it (in_place says when), else
 * NULL. */
static bd_status run_fused_conv(const bd_graph *g, step *s, bd_tensor *const *in,
                                bd_tensor *residual, bd_tensor **slab, bd_tensor *reuse,
                                bd_tensor **out)
{
    const bd_node *conv = &g->nodes[s->node];
    bd_conv_geom geom;
    BD_TRY(bd_conv_geom_from_node(conv, in[0], in[1], &geom));
    float *buf = NULL;
    bd_epilogue ep;
    int64_t dims[4] = {geom.n, geom.m, geom.oh, geom.ow};
    if (in[0]->ndim == 3)
        dims[2] = geom.ow;
    bd_status st = step_epilogue(g, s, geom.m, bd_node_const_input(g, conv, 2), &buf, &ep);
    /* A residual of another shape (broadcasting) cannot ride along: then
     * the Add and the activation run as their own kernels after the conv. */
    int apart = residual && (residual->dtype != BD_F32 || residual->ndim != in[0]->ndim ||
                             memcmp(residual->dims, dims, (size_t)in[0]->ndim * sizeof *dims));
    bd_activation act = ep.act;
    if (residual && !apart)
        ep.residual = residual->data;
    if (apart)
        ep.act = BD_ACT_NONE;
    /* over its input, where the kernel allows (bd_conv2d_in_place) */
    const int over = reuse && reuse->dtype == BD_F32 && bd_conv2d_in_place(&geom) &&
                     reuse->ndim == in[0]->ndim &&
                     !memcmp(reuse->dims, dims, (size_t)reuse->ndim * sizeof *dims) &&
                     !(residual && residual->storage == reuse->storage);
    if (st == BD_OK)
        st = over ? bd_tensor_view(out, reuse, reuse->ndim, reuse->dims)
                  : conv_output(g, s, in[0]->ndim, dims, slab, out);
    /* the initializer itself, not a tensor a transform made in its place */
    const int keep = s->keep && in[1] == bd_node_const_input(g, conv, 1);
    if (st == BD_OK &&
        (st = keep ? bd_conv2d_cached(&geom, in[0]->data, in[1]->data, &ep, (*out)->data,
                                      &s->cache)
                   : bd_conv2d(&geom, in[0]->data, in[1]->data, &ep, (*out)->data)) != BD_OK)
        bd_error_context(st, "node '%s' (Conv)", conv->name);
    if (st == BD_OK && apart) {
        const bd_node *add = &g->nodes[s->add];
        bd_tensor *sum = NULL, *y = NULL;
        st = run_absorbed(g, add, add->inputs[0] == s->residual ? 1 : 0, *out, residual, &sum);
        bd_tensor_free(*out);
        if (st == BD_OK && act != BD_ACT_NONE) {
            st = run_absorbed(g, &g->nodes[s->act], 0, sum, NULL, &y);
            if (st == BD_OK && s->gate >= 0) {
                const bd_node *mul = &g->nodes[s->gate];
                bd_tensor *prod = NULL;
                st = run_absorbed(g, mul, mul->inputs[0] == add->outputs[0] ? 0 : 1, sum, y,
                                  &prod);
                bd_tensor_free(y);
                y = prod;
            }
            bd_tensor_free(sum);
            sum = y;
        }
        *out = sum;
    }
    if (st != BD_OK && *out) {
        bd_tensor_free(*out);
        *out = NULL;
    }
    free(buf);
    return st;
}

/* Pad -> AveragePool as the pool alone, with zeros that pad only the
 * spatial dims, of float data, and a pool without padding of its own; any
 * other case runs the two ops. */
static bd_status run_pad_pool(const bd_graph *g, const step *s, bd_tensor *const *in,
                              bd_tensor **out)
{
    const bd_node *pad = &g->nodes[s->node], *pool = &g->nodes[s->pool];
    const bd_tensor *x = in[0];
    int64_t begin[BD_MAX_DIMS], end[BD_MAX_DIMS];
    unsigned char value[8];
    int plain = x->dtype == BD_F32 && x->ndim >= 3 && x->ndim <= 5 &&
                bd_k_pad_amounts(g, pad, in, x->ndim, begin, end) == BD_OK &&
                bd_k_pad_value(g, pad, in, x, value) == BD_OK && !memcmp(value, "\0\0\0\0", 4) &&
                !begin[0] && !end[0] && !begin[1] && !end[1];
    for (int d = 2; plain && d < x->ndim; d++)
        plain = begin[d] >= 0 && end[d] >= 0;
    if (plain && bd_avgpool_padded(pool, x, begin + 2, end + 2, out) == BD_OK)
        return BD_OK;
    bd_error_clear();
    bd_tensor *padded = NULL;
    BD_TRY(bd_op_run(g, pad, in, &padded));
    bd_status st = run_absorbed(g, pool, 0, padded, NULL, out);
    bd_tensor_free(padded);
    return st;
}

/* BatchNormalization -> activation as the conv epilogue's one pass over
 * each plane. */
static bd_status run_fused_bn(const bd_graph *g, const step *s, bd_tensor *const *in,
                             bd_tensor **out)
{
    const bd_node *bn = &g->nodes[s->node];
    const bd_tensor *x = in[0];
    BD_TRY(bd_k_want_f32(bn, x, "input X"));
    if (x->ndim < 2)
        return bd_node_fail(bn, BD_EINVAL, "input has rank %d; [N, C, ...] expected", x->ndim);
    const int64_t c = x->dims[1], planes = x->dims[0] * c;
    const int64_t len = planes ? bd_tensor_count(x) / planes : 0;
    float *buf = NULL;
    bd_epilogue ep;
    bd_status st = fused_epilogue(g, s, c, NULL, &buf, &ep);
    if (st == BD_OK)
        st = bd_tensor_new_raw(out, BD_F32, x->ndim, x->dims, g->values[s->out].name);
    if (st == BD_OK) {
        const float *xd = x->data;
        float *yd = (*out)->data;
#pragma omp parallel for schedule(static) if (planes * len >= BD_PARALLEL_MIN)
        for (int64_t p = 0; p < planes; p++)
            bd_epilogue_apply(&ep, p % c, xd + p * len, NULL, yd + p * len, len);
    }
    free(buf);
    return st;
}

static bd_status run_fused_gelu(const bd_graph *g, const step *s, bd_tensor *const *in,
                                bd_tensor **out)
{
    const bd_tensor *x = in[0];
    BD_TRY(bd_k_want_f32(&g->nodes[s->node], x, "input"));
    BD_TRY(bd_tensor_new_raw(out, BD_F32, x->ndim, x->dims, g->values[s->out].name));
    bd_fused_gelu(x->data, bd_tensor_count(x), s->k[0], s->k[1], s->k[2], (*out)->data);
    return BD_OK;
}

static bd_status run_fused_layer_norm(const bd_graph *g, const step *s, bd_tensor *const *in,
                                      bd_tensor **out)
{
    const bd_node *n = &g->nodes[s->node];
    const bd_tensor *x = in[0];
    BD_TRY(bd_k_want_f32(n, x, "input"));
    const int64_t c = x->ndim > 0 ? x->dims[x->ndim - 1] : 1;
    const int64_t ns = s->scale ? bd_tensor_count(s->scale) : 0;
    const int64_t nb = s->shift ? bd_tensor_count(s->shift) : 0;
    if ((ns > 1 && ns != c) || (nb > 1 && nb != c))
        return bd_node_fail(n, BD_EFORMAT, "LayerNorm of rows of %lld: its scale has %lld values "
                                           "and its shift %lld",
                            (long long)c, (long long)ns, (long long)nb);
    BD_TRY(bd_tensor_new_raw(out, BD_F32, x->ndim, x->dims, g->values[s->out].name));
    if (c > 0)
        bd_fused_layer_norm(x->data, bd_tensor_count(x) / c, c, s->k[0],
                            s->scale ? s->scale->data : NULL, ns,
                            s->shift ? s->shift->data : NULL, nb, (*out)->data);
    return BD_OK;
}

/* MatMul -> Add(bias) [-> GELU] as one product whose epilogue adds the
 * bias and applies the GELU (bd_gemm_rows), A's leading dimensions its
 * rows as the op takes them with one B. A product the fused step does not
 * take (A of one dimension, not float32, or not agreeing with B) runs as
 * its ops, which report what is wrong. */
static bd_status run_fused_matmul(const bd_graph *g, const step *s, bd_tensor *const *in,
                                  bd_tensor **out)
{
    const bd_node *mm = &g->nodes[s->node], *add = &g->nodes[s->add];
    const bd_tensor *a = in[0], *b = in[1];
    const int64_t k = b->dims[0], n = b->dims[1];
    if (a->dtype != BD_F32 || a->ndim < 2 || a->dims[a->ndim - 1] != k) {
        bd_tensor *prod = NULL;
        BD_TRY(bd_op_run(g, mm, in, &prod));
        bd_status st = run_absorbed(g, add, add->inputs[0] == mm->outputs[0] ? 0 : 1, prod, NULL,
                                    out);
        bd_tensor_free(prod);
        if (st == BD_OK && s->gelu >= 0)
            bd_fused_gelu((*out)->data, bd_tensor_count(*out), s->k[0], s->k[1], s->k[2],
                          (*out)->data);
        return st;
    }
    int64_t dims[BD_MAX_DIMS], m = 1;
    memcpy(dims, a->dims, sizeof dims);
    dims[a->ndim - 1] = n;
    for (int d = 0; d < a->ndim - 1; d++)
        m *= a->dims[d];
    BD_TRY(bd_tensor_new_raw(out, BD_F32, a->ndim, dims, g->values[s->out].name));
    const bd_gemm_epilogue ep = {.bias = s->shift->data, .gelu = s->gelu >= 0,
                                 .k = {s->k[0], s->k[1], s->k[2]}};
    bd_gemm_rows(m, n, k, a->data, b->data, &ep, (*out)->data);
    return BD_OK;
}

static bd_status check_input(const bd_graph *g, int i, const bd_tensor *t)
{
    const bd_value *v = &g->values[g->inputs[i]];
    char got[96], want[96];
    if (!t)
        return bd_fail(BD_EINVAL, "input '%s' was not given", v->name);
    if (v->dtype && v->dtype != t->dtype)
        return bd_fail(BD_EINVAL, "input '%s' must be %s, got %s", v->name,
                       bd_dtype_name(v->dtype), bd_dtype_name(t->dtype));
    int bad = v->ndim >= 0 && v->ndim != t->ndim;
    for (int d = 0; !bad && v->ndim >= 0 && d < v->ndim; d++)
        bad = v->dims[d] >= 0 && v->dims[d] != t->dims[d];
    if (bad) {
        bd_value_shape_str(v, want, sizeof want);
        return bd_fail(BD_EINVAL, "input '%s' must have shape %s, got %s", v->name, want,
                       bd_shape_str(t->ndim, t->dims, got, sizeof got));
    }
    return BD_OK;
}

/* The values alive at one point of a run, for one batch: running a graph
 * is advancing a state from the first step to the last. A caller that keeps
 * a state can stop before a node, change that node's weight and carry on
 * from there (the quantizer's calibration cache). */
struct bd_exec_state {
    bd_tensor **vals;
    unsigned char *owned;
    int *left;          /* reads still to come */
    bd_tensor **slabs;  /* per Concat node planned in place: its output while
                         * its inputs are being written into it */
    int step;           /* next step to run */
};

static void release(bd_exec_state *r, int v)
{
    if (r->owned[v]) {
        bd_tensor_free(r->vals[v]);
        r->owned[v] = 0;
    }
    r->vals[v] = NULL;
}

void bd_exec_state_free(const bd_exec *ex, bd_exec_state *r)
{
    if (!r)
        return;
    if (r->vals && r->owned)
        for (int v = 0; v < ex->g->nvalues; v++)
            release(r, v);
    for (int i = 0; r->slabs && i < ex->g->nnodes; i++)
        bd_tensor_free(r->slabs[i]);
    free(r->slabs);
    free(r->vals);
    free(r->owned);
    free(r->left);
    free(r);
}

bd_status bd_exec_state_new(const bd_exec *ex, bd_tensor *const *inputs, bd_exec_state **out)
{
    const bd_graph *g = ex->g;
    bd_exec_state *r = calloc(1, sizeof *r);
    if (r) {
        r->vals = calloc((size_t)g->nvalues + 1, sizeof *r->vals);
        r->owned = calloc((size_t)g->nvalues + 1, 1);
        r->left = malloc(((size_t)g->nvalues + 1) * sizeof *r->left);
        r->slabs = calloc((size_t)g->nnodes + 1, sizeof *r->slabs);
    }
    if (!r || !r->vals || !r->owned || !r->left || !r->slabs) {
        bd_exec_state_free(ex, r);
        return bd_fail(BD_ENOMEM, "out of memory");
    }
    memcpy(r->left, ex->uses, (size_t)g->nvalues * sizeof *r->left);
    for (int v = 0; v < g->nvalues; v++)
        r->vals[v] = g->values[v].init;
    for (int i = 0; i < g->ninputs; i++) {
        bd_status st = check_input(g, i, inputs[i]);
        if (st != BD_OK) {
            bd_exec_state_free(ex, r);
            return st;
        }
        /* the caller's tensor, shared: it may be freed once the state holds it */
        st = bd_tensor_view(&r->vals[g->inputs[i]], inputs[i], inputs[i]->ndim, inputs[i]->dims);
        if (st != BD_OK) {
            bd_exec_state_free(ex, r);
            return st;
        }
        r->owned[g->inputs[i]] = 1;
    }
    *out = r;
    return BD_OK;
}

int bd_exec_state_node(const bd_exec *ex, const bd_exec_state *r)
{
    return r->step < ex->nsteps ? ex->steps[r->step].node : ex->g->nnodes;
}

const bd_tensor *bd_exec_state_value(const bd_exec_state *r, int value)
{
    return r->vals[value];
}

size_t bd_exec_state_bytes(const bd_exec *ex, const bd_exec_state *r)
{
    size_t total = 0;
    for (int v = 0; v < ex->g->nvalues; v++)
        if (r->owned[v])
            total += bd_tensor_nbytes(r->vals[v]);
    return total;
}

/* Gathers the next step's inputs and shows them to the hook. */
static bd_status hook_next(bd_exec *ex, bd_exec_state *r, bd_tensor **ins)
{
    const bd_node *n = &ex->g->nodes[ex->steps[r->step].node];
    for (int k = 0; k < n->ninputs; k++)
        ins[k] = n->inputs[k] >= 0 ? r->vals[n->inputs[k]] : NULL;
    return ex->hook ? ex->hook(ex->user, ex->g, ex->steps[r->step].node, ins) : BD_OK;
}

/* Whether the Concat's inputs are its slices of slab, in order, each where
 * its conv was to write it (a transform or a fall-back may have put another
 * tensor in a slice's place): then *out is the slab itself, nothing copied. */
static int concat_in_place(const bd_node *n, bd_tensor *slab, bd_tensor *const *ins,
                           bd_tensor **out)
{
    if (!slab)
        return 0;
    const int64_t plane = slab->dims[2] * slab->dims[3];
    const char *at = slab->data;
    for (int k = 0; k < n->ninputs; k++) {
        if (!ins[k] || ins[k]->storage != slab->storage || ins[k]->data != at ||
            ins[k]->dtype != BD_F32 || ins[k]->ndim != 4)
            return 0;
        at += (size_t)(ins[k]->dims[1] * plane) * sizeof(float);
    }
    return at == (const char *)slab->data + bd_tensor_nbytes(slab) &&
           bd_tensor_view(out, slab, 4, slab->dims) == BD_OK;
}

/* Input k of a step of a frozen run (inference: its values read by nobody
 * but the steps), if the step may write its output over it: this is its
 * last read, the run owns it, it is no graph output, no view shares its
 * storage, and no hook or transform sees the run. */
static bd_tensor *over_input(const bd_exec *ex, const bd_exec_state *r, const step *s,
                             bd_tensor *const *ins, int k)
{
    const int v = ex->g->nodes[s->node].inputs[k];
    bd_tensor *x = ins[k];
    return !ex->hook && !ex->tf && v >= 0 && x && r->left[v] == 1 && r->owned[v] &&
                   !ex->is_output[v] && x == r->vals[v] && x->storage->refs == 1 &&
                   x->data == x->storage->data
               ? x
               : NULL;
}

/* The conv's input, if it may write its output over it. */
static bd_tensor *in_place(const bd_exec *ex, const bd_exec_state *r, const step *s,
                           bd_tensor *const *ins)
{
    return s->kind == STEP_CONV && s->keep && s->concat < 0 ? over_input(ex, r, s, ins, 0) : NULL;
}

/* A Mul of a [N, C, ...] tensor by one factor a channel ([N or 1, C, 1,
 * ...]: a squeeze-and-excitation block's gate), written over the tensor
 * where over_input allows: the Mul op's products, bit for bit, without a
 * buffer of their own to take over (see bd_conv2d_in_place). Whether it
 * ran; *out is then a view of the tensor. */
static int scale_in_place(const bd_exec *ex, const bd_exec_state *r, const step *s,
                          bd_tensor *const *ins, bd_tensor **out)
{
    for (int k = 0; k < 2; k++) {
        bd_tensor *x = over_input(ex, r, s, ins, k), *f = ins[1 - k];
        if (!x || !f || x->dtype != BD_F32 || f->dtype != BD_F32 || x->ndim < 2 ||
            f->ndim != x->ndim || f->storage == x->storage ||
            (f->dims[0] != 1 && f->dims[0] != x->dims[0]) || f->dims[1] != x->dims[1])
            continue;
        int per_channel = 1;
        for (int d = 2; d < x->ndim; d++)
            per_channel &= f->dims[d] == 1;
        if (!per_channel || bd_tensor_view(out, x, x->ndim, x->dims) != BD_OK)
            continue;
        const int64_t c = x->dims[1], planes = x->dims[0] * c;
        const int64_t len = planes ? bd_tensor_count(x) / planes : 0;
        const int64_t step = f->dims[0] == 1 ? 0 : c;
        float *xd = x->data;
        const float *fd = f->data;
#pragma omp parallel for schedule(static) if (planes * len >= BD_PARALLEL_MIN)
        for (int64_t p = 0; p < planes; p++) {
            const float a = fd[p / c * step + p % c];
            float *plane = xd + p * len;
#pragma omp simd
            for (int64_t i = 0; i < len; i++)
                plane[i] *= a;
        }
        return 1;
    }
    return 0;
}

/* Runs one step: its hook, its kernel, then frees what it read last. */
static bd_status run_step(bd_exec *ex, bd_exec_state *r, bd_tensor **ins, bd_tensor **outs)
{
    const bd_graph *g = ex->g;
    step *s = &ex->steps[r->step];
    const bd_node *n = &g->nodes[s->node];
    bd_status st = hook_next(ex, r, ins);
    if (st != BD_OK)
        return st;
    bd_tensor *transformed = NULL;
    if (ex->tf && n->ninputs > 0 && ins[0] && ex->tf->applies(ex->tf->ctx, s->node)) {
        BD_TRY(ex->tf->forward(ex->tf->ctx, s->node, ins[0], &transformed));
        ins[0] = transformed;
    }
    for (int k = 0; k < n->noutputs; k++)
        outs[k] = NULL;
    const double t0 = ex->profile ? bd_now() : 0;
    if (s->kind != STEP_NODE) {
        st = s->kind == STEP_CONV ? run_fused_conv(g, s, ins,
                                                   s->residual >= 0 ? r->vals[s->residual] : NULL,
                                                   s->concat >= 0 ? &r->slabs[s->concat] : NULL,
                                                   in_place(ex, r, s, ins), &outs[0])
             : s->kind == STEP_BN     ? run_fused_bn(g, s, ins, &outs[0])
             : s->kind == STEP_GELU   ? run_fused_gelu(g, s, ins, &outs[0])
             : s->kind == STEP_MATMUL ? run_fused_matmul(g, s, ins, &outs[0])
             : s->kind == STEP_PAD_POOL ? run_pad_pool(g, s, ins, &outs[0])
                                      : run_fused_layer_norm(g, s, ins, &outs[0]);
        if (st == BD_OK) {
            r->vals[s->out] = outs[0];
            r->owned[s->out] = 1;
        }
    } else {
        st = (s->concat >= 0 && concat_in_place(n, r->slabs[s->node], ins, &outs[0])) ||
                     (s->scales && scale_in_place(ex, r, s, ins, &outs[0]))
                 ? BD_OK
                 : s->op->forward(g, n, ins, outs);
        if (s->concat >= 0) { /* the slab lives on in the Concat's output, if anywhere */
            bd_tensor_free(r->slabs[s->node]);
            r->slabs[s->node] = NULL;
        }
        for (int k = 0; k < n->noutputs; k++) {
            int v = n->outputs[k];
            if (st != BD_OK || v < 0 || (ex->uses[v] == 0 && !ex->is_output[v])) {
                bd_tensor_free(outs[k]); /* failed, unnamed or never read */
                continue;
            }
            if (!outs[k]) {
                st = bd_node_fail(n, BD_EINVAL, "output %d was not computed", k);
                continue;
            }
            r->vals[v] = outs[k];
            r->owned[v] = 1;
        }
    }
    if (ex->profile)
        ex->profile[s->node] += bd_now() - t0;
    bd_tensor_free(transformed);
    if (st != BD_OK)
        return st;
    for (int k = 0; k <= n->ninputs; k++) {
        int v = k < n->ninputs ? n->inputs[k] : s->residual;
        if (v >= 0 && --r->left[v] == 0 && !ex->is_output[v])
            release(r, v);
    }
    r->step++;
    return BD_OK;
}

/* Advances to `node`; with `hook_at`, also shows that node's inputs to the
 * hook without running it. */
static bd_status advance(bd_exec *ex, bd_exec_state *r, int node, int hook_at)
{
    bd_tensor **ins = calloc((size_t)ex->maxio, sizeof *ins);
    bd_tensor **outs = calloc((size_t)ex->maxio, sizeof *outs);
    bd_status st = ins && outs ? BD_OK : bd_fail(BD_ENOMEM, "out of memory");
    while (st == BD_OK && r->step < ex->nsteps && ex->steps[r->step].node < node)
        st = run_step(ex, r, ins, outs);
    if (st == BD_OK && hook_at && r->step < ex->nsteps && ex->steps[r->step].node == node)
        st = hook_next(ex, r, ins);
    free(ins);
    free(outs);
    return st;
}

bd_status bd_exec_advance(bd_exec *ex, bd_exec_state *r, int node)
{
    return advance(ex, r, node, 0);
}

static bd_status run(bd_exec *ex, bd_tensor *const *inputs, int last, bd_tensor **outputs)
{
    const bd_graph *g = ex->g;
    bd_exec_state *r;
    BD_TRY(bd_exec_state_new(ex, inputs, &r));
    /* with `last`, its hook sees its inputs but its kernel does not run */
    bd_status st = advance(ex, r, last >= 0 ? last : g->nnodes, last >= 0);
    if (st == BD_OK && outputs) {
        for (int i = 0; i < g->noutputs && st == BD_OK; i++) {
            int v = g->outputs[i];
            const bd_tensor *t = r->vals[v];
            if (!t) {
                st = bd_fail(BD_EINVAL, "output '%s' was not computed", g->values[v].name);
                break;
            }
            st = bd_tensor_view(&outputs[i], t, t->ndim, t->dims);
        }
        if (st != BD_OK)
            for (int i = 0; i < g->noutputs; i++) {
                bd_tensor_free(outputs[i]);
                outputs[i] = NULL;
            }
    }
    bd_exec_state_free(ex, r);
    return st;
}

bd_status bd_exec_run(bd_exec *ex, bd_tensor *const *inputs, bd_tensor **outputs)
{
    for (int i = 0; i < ex->g->noutputs; i++)
        outputs[i] = NULL;
    return run(ex, inputs, -1, outputs);
}

bd_status bd_exec_run_until(bd_exec *ex, bd_tensor *const *inputs, int last)
{
    return run(ex, inputs, last, NULL);
}

bd_status bd_exec_run1(bd_exec *ex, const bd_tensor *input, bd_tensor **output)
{
    if (ex->g->ninputs != 1 || ex->g->noutputs != 1)
        return bd_fail(BD_EINVAL, "the model has %d inputs and %d outputs, expected one each",
                       ex->g->ninputs, ex->g->noutputs);
    bd_tensor *in[1] = {(bd_tensor *)input};
    return bd_exec_run(ex, in, output);
}
