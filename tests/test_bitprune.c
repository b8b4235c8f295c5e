/* BitPruning's learned bit lengths against truths worked out here: the
 * interpolated quantizer is the int codec's grid at integer n and the
 * straight line between two grids in between; n's gradient equals central
 * finite differences of the training loss; lambda = 0 leaves n where it
 * starts and a large lambda drives every n to the minimum; the memory and
 * ops costs are hand counts on a tiny conv net; the rounding rule on cases
 * worked by hand; the saved codecs have exactly the rounded bits and
 * decode to the model's weights. The same for the activations' bit
 * lengths (activations=1): their quantizer is the nodes' grid at integers,
 * their gradients finite differences, lambda's pull, the ops cost of
 * w x a bits per MAC; the nodes a model gets compute what training saw and
 * survive a save and a load; bad settings are refused. */
#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "act_quant.h"
#include "bd_test.h"
#include "bitprune.h"
#include "compressed.h"
#include "int_fit.h"
#include "onnx_io.h"

enum { N = 8, CLASSES = 3 }; /* 8 images of 4 x 4 pixels */

static int add_value(bd_graph *g, const char *name)
{
    int id;
    assert_int_equal(bd_graph_value(g, name, &id), BD_OK);
    return id;
}

static void add_init(bd_graph *g, const char *name, int ndim, const int64_t *dims, uint64_t seed)
{
    bd_tensor *t;
    assert_int_equal(bd_tensor_new(&t, BD_F32, ndim, dims, name), BD_OK);
    bd_test_fill_random(t->data, (size_t)bd_tensor_count(t), seed, -1, 1);
    bd_graph_set_init(g, add_value(g, name), t);
}

/* x [n, 1, 4, 4] -> Conv(W [2, 1, 3, 3], no padding) -> Relu -> [n, 2, 2, 2]
 * -> Flatten -> Gemm(W [3, 8], transB) -> logits. One image: the conv
 * makes 2 x 2 x 2 outputs of 9 MACs (72), the Gemm 3 of 8 (24); their
 * weights are 18 and 24. */
static bd_graph *tiny_model(void)
{
    bd_graph *g;
    assert_int_equal(bd_graph_new(&g), BD_OK);
    g->opset = 13;
    int x = add_value(g, "x");
    g->values[x].dtype = BD_F32;
    g->values[x].ndim = 4;
    memcpy(g->values[x].dims, (int64_t[]){-1, 1, 4, 4}, 4 * sizeof(int64_t));
    g->inputs = malloc(sizeof *g->inputs);
    g->inputs[0] = x;
    g->ninputs = 1;
    add_init(g, "conv.weight", 4, (int64_t[]){2, 1, 3, 3}, 21);
    add_init(g, "conv.bias", 1, (int64_t[]){2}, 22);
    add_init(g, "fc.weight", 2, (int64_t[]){CLASSES, 8}, 23);
    add_init(g, "fc.bias", 1, (int64_t[]){CLASSES}, 24);
    bd_node *n;
    const char *cin[] = {"x", "conv.weight", "conv.bias"}, *cout[] = {"c"};
    assert_int_equal(bd_graph_add_node(g, "conv", "Conv", "", 3, cin, 1, cout, &n), BD_OK);
    const char *rin[] = {"c"}, *rout[] = {"r"};
    assert_int_equal(bd_graph_add_node(g, "relu", "Relu", "", 1, rin, 1, rout, &n), BD_OK);
    const char *fin[] = {"r"}, *fout[] = {"flat"};
    assert_int_equal(bd_graph_add_node(g, "flatten", "Flatten", "", 1, fin, 1, fout, &n), BD_OK);
    const char *gin[] = {"flat", "fc.weight", "fc.bias"}, *gout[] = {"logits"};
    assert_int_equal(bd_graph_add_node(g, "fc", "Gemm", "", 3, gin, 1, gout, &n), BD_OK);
    bd_attr a = {.name = "transB", .type = BD_ATTR_INT, .i = 1};
    assert_int_equal(bd_node_add_attr(n, &a), BD_OK);
    g->outputs = malloc(sizeof *g->outputs);
    g->outputs[0] = bd_graph_find(g, "logits");
    g->noutputs = 1;
    return g;
}

static bd_preprocess pp;

static bd_dataset *tiny_data(void)
{
    char img[512], lab[512], spec[1100];
    snprintf(img, sizeof img, "%s/bp_img.idx", bd_test_tmpdir());
    snprintf(lab, sizeof lab, "%s/bp_lab.idx", bd_test_tmpdir());
    unsigned char px[N * 16], lb[N];
    for (int i = 0; i < N; i++) {
        lb[i] = (unsigned char)((i * 7 + 1) % CLASSES);
        for (int j = 0; j < 16; j++)
            px[i * 16 + j] = (unsigned char)((i * 37 + j * 91 + i * j * 13) % 256);
    }
    assert_int_equal(bd_test_write_idx(img, lab, N, 4, 4, px, lb), 0);
    snprintf(spec, sizeof spec, "idx:%s,%s", img, lab);
    bd_preprocess_default(&pp);
    bd_dataset *d;
    assert_int_equal(bd_dataset_open(&d, spec, &pp), BD_OK);
    return d;
}

/* Whole-batch plain SGD steps: no momentum, decay, schedule or
 * augmentation; lr small, so the weights barely move. */
static bd_bitprune_options plain(int steps)
{
    bd_bitprune_options o;
    bd_bitprune_options_init(&o);
    o.train.steps = steps;
    o.train.batch = N;
    o.train.lr = 1e-3f;
    o.train.momentum = 0;
    o.train.wd = 0;
    o.train.schedule = BD_SCHED_CONSTANT;
    o.train.seed = 3;
    o.finetune_epochs = 0;
    assert_int_equal(bd_augment_parse("test", "none", &o.train.augment), BD_OK);
    return o;
}

typedef struct run {
    bd_graph *g;
    bd_dataset *d;
    bd_qlayer q[2];
    bd_bitprune_report r;
} run;

static void run_it(run *x, const bd_bitprune_options *o)
{
    memset(x, 0, sizeof *x);
    x->g = tiny_model();
    x->d = tiny_data();
    const bd_bitprune_io io = {.train = x->d, .pp = &pp};
    assert_int_equal(bd_bitprune_run(x->g, o, &io, x->q, &x->r), BD_OK);
    assert_int_equal(x->r.nlayers, 2);
}

static void run_free(run *x)
{
    for (int i = 0; i < 2; i++)
        bd_qlayer_free(&x->q[i]);
    bd_bitprune_report_free(&x->r);
    bd_dataset_free(x->d);
    bd_graph_free(x->g);
}

/* ---- the quantizer ------------------------------------------------------------- */

/* The int codec's weight fit of rows x L at b bits, decoded. */
static void codec_grid(const float *w, int64_t rows, int64_t L, int b, float *out)
{
    const bd_feedback_layer fl = {.w = w, .rows = rows, .L = L, .groups = 1};
    const bd_int_spec spec = {.bits = b, .per_channel = 1};
    bd_qlayer q;
    assert_int_equal(bd_int_fit(&fl, &spec, NULL, BD_OBJ_WEIGHT, NULL, &q, out), BD_OK);
    bd_qlayer_free(&q);
}

static void test_interpolation_is_the_grid_at_integers(void **state)
{
    (void)state;
    enum { R = 3, L = 37 };
    float w[R * L], out[R * L], dq[R * L], lo[R * L], hi[R * L], bits[R];
    bd_test_fill_random(w, R * L, 5, -2, 3);
    for (int b = BD_INT_MIN_BITS; b <= 8; b++) {
        for (int r = 0; r < R; r++)
            bits[r] = (float)b;
        assert_int_equal(bd_bitprune_quantize(w, R, L, bits, 8, out, NULL), BD_OK);
        codec_grid(w, R, L, b, lo);
        assert_memory_equal(out, lo, sizeof out);
    }
    /* in between: (b + 1 - n) Q_b + (n - b) Q_{b+1}, dq = Q_{b+1} - Q_b */
    const float n[R] = {3.25f, 5.5f, 7.75f};
    assert_int_equal(bd_bitprune_quantize(w, R, L, n, 8, out, dq), BD_OK);
    for (int r = 0; r < R; r++) {
        const int b = (int)n[r];
        codec_grid(w + r * L, 1, L, b, lo + r * L);
        codec_grid(w + r * L, 1, L, b + 1, hi + r * L);
        const float t = n[r] - (float)b;
        for (int j = r * L; j < (r + 1) * L; j++) {
            assert_float_equal(out[j], (1 - t) * lo[j] + t * hi[j], 1e-6);
            assert_float_equal(dq[j], hi[j] - lo[j], 1e-6);
        }
    }
    /* n at the top of the range: Q_max, the gradient's direction still the
     * step down to max - 1 */
    for (int r = 0; r < R; r++)
        bits[r] = 6;
    assert_int_equal(bd_bitprune_quantize(w, R, L, bits, 6, out, dq), BD_OK);
    codec_grid(w, R, L, 6, hi);
    codec_grid(w, R, L, 5, lo);
    for (int j = 0; j < R * L; j++) {
        assert_float_equal(out[j], hi[j], 1e-6);
        assert_float_equal(dq[j], hi[j] - lo[j], 1e-6);
    }
}

static double clip_d(double x, double lo, double hi) { return x < lo ? lo : x > hi ? hi : x; }

/* Activations quantized as a run does it, for the tests: layer l's input at
 * bits[l] on grids[l] (interpolated), or on the fixed grid[l]. With ste,
 * the fc's input is what the backward takes it for around x0, its value at
 * a base point (recorded by a run with record): Q(x0) + clip(x) - clip(x0),
 * the quantizer at x0, straight through inside the range of its grid at
 * ceil(bits) (the one Q_m weighs fully at an integer m). */
typedef struct act_spec {
    int node[2];
    float bits[2];
    const bd_act_grid *grids[2];
    const bd_act_grid *grid; /* NULL: bits and grids */
    int record, ste;
    float *x0;
} act_spec;

static int spec_layer(const act_spec *a, int node)
{
    return node == a->node[0] ? 0 : node == a->node[1] ? 1 : -1;
}

static int spec_applies(void *ctx, int node) { return spec_layer(ctx, node) >= 0; }

static bd_status spec_forward(void *ctx, int node, const bd_tensor *x, bd_tensor **y)
{
    act_spec *a = ctx;
    const int l = spec_layer(a, node);
    const int64_t n = bd_tensor_count(x);
    const float *xd = x->data;
    assert_int_equal(bd_tensor_new(y, BD_F32, x->ndim, x->dims, "y"), BD_OK);
    float *yd = (*y)->data;
    if (a->grid) {
        bd_act_grid_apply(&a->grid[l], xd, n, yd);
        return BD_OK;
    }
    if (l == 1 && a->record) {
        a->x0 = malloc((size_t)n * sizeof *a->x0);
        memcpy(a->x0, xd, (size_t)n * sizeof *xd);
    }
    if (l == 1 && a->ste) {
        float lo, hi;
        bd_act_grid_range(&a->grids[l][(int)ceilf(a->bits[l])], &lo, &hi);
        assert_int_equal(bd_bitprune_act_quantize(a->x0, n, a->bits[l], 8, a->grids[l], yd, NULL),
                         BD_OK);
        for (int64_t i = 0; i < n; i++)
            yd[i] = (float)((double)yd[i] + (clip_d(xd[i], lo, hi) - clip_d(a->x0[i], lo, hi)));
        return BD_OK;
    }
    return bd_bitprune_act_quantize(xd, n, a->bits[l], 8, a->grids[l], yd, NULL);
}

/* The logits of g on the whole batch, its activations quantized by a (NULL:
 * as the graph has them). */
static bd_tensor *logits_of(const bd_graph *g, const bd_dataset *d, act_spec *a)
{
    int64_t idx[N];
    int labels[N];
    for (int i = 0; i < N; i++)
        idx[i] = i;
    bd_tensor *x, *logits;
    assert_int_equal(bd_dataset_batch(d, idx, N, &x, labels), BD_OK);
    bd_exec *ex;
    assert_int_equal(bd_exec_new(&ex, g, 0), BD_OK);
    const bd_input_transform tf = {.ctx = a, .applies = spec_applies, .forward = spec_forward};
    if (a)
        bd_exec_set_transform(ex, &tf);
    assert_int_equal(bd_exec_run1(ex, x, &logits), BD_OK);
    bd_tensor_free(x);
    bd_exec_free(ex);
    return logits;
}

/* The training loss (mean cross-entropy of the batch) with every layer
 * quantized at bits[layer] and the activations by acts (NULL: float), in
 * double. */
static double loss_with(const bd_graph *g0, const bd_dataset *d, const float bits[2],
                        act_spec *acts)
{
    bd_graph *g;
    assert_int_equal(bd_graph_clone(&g, g0), BD_OK);
    bd_layer *layers;
    int n;
    assert_int_equal(bd_layers_find(g, &layers, &n), BD_OK);
    for (int l = 0; l < n; l++) {
        bd_tensor *w = g->values[layers[l].weight].init;
        float *out = malloc((size_t)bd_tensor_count(w) * sizeof *out);
        float *rb = malloc((size_t)layers[l].rows * sizeof *rb);
        for (int64_t r = 0; r < layers[l].rows; r++)
            rb[r] = bits[l];
        /* both layers store their rows contiguously: no gather needed */
        assert_int_equal(bd_bitprune_quantize(w->data, layers[l].rows, layers[l].row_len, rb, 8,
                                              out, NULL),
                         BD_OK);
        memcpy(w->data, out, (size_t)bd_tensor_count(w) * sizeof *out);
        free(out);
        free(rb);
    }
    int64_t idx[N];
    int labels[N];
    for (int i = 0; i < N; i++)
        idx[i] = i;
    bd_tensor *x;
    assert_int_equal(bd_dataset_batch(d, idx, N, &x, labels), BD_OK);
    bd_tensor *logits = logits_of(g, d, acts);
    double loss = 0;
    const float *z = logits->data;
    for (int i = 0; i < N; i++) {
        double m = z[i * CLASSES], s = 0;
        for (int c = 1; c < CLASSES; c++)
            m = fmax(m, z[i * CLASSES + c]);
        for (int c = 0; c < CLASSES; c++)
            s += exp(z[i * CLASSES + c] - m);
        loss += m + log(s) - z[i * CLASSES + labels[i]];
    }
    bd_tensor_free(x);
    bd_tensor_free(logits);
    free(layers);
    bd_graph_free(g);
    return loss / N;
}

static double loss_at(const bd_graph *g0, const bd_dataset *d, const float bits[2])
{
    return loss_with(g0, d, bits, NULL);
}

/* One step with lambda = 0 moves n by -bits_lr * dL/dn: that step, read
 * back from the report, against central differences of the loss. Between
 * two integers Q_n is linear in n, so the differences see the same
 * quantizers the gradient does. */
static void test_bits_gradient_finite_differences(void **state)
{
    (void)state;
    bd_bitprune_options o = plain(1);
    o.lambda = 0;
    o.init_bits = 3.4f;
    o.bits_lr = 1;
    run x;
    run_it(&x, &o);
    bd_graph *g0 = tiny_model();
    const double h = 1e-3;
    for (int l = 0; l < 2; l++) {
        float up[2] = {3.4f, 3.4f}, down[2] = {3.4f, 3.4f};
        up[l] += (float)h;
        down[l] -= (float)h;
        const double fd = (loss_at(g0, x.d, up) - loss_at(g0, x.d, down)) / ((double)up[l] - down[l]);
        const double analytic = -(x.r.layers[l].learned - (double)3.4f) / o.bits_lr;
        /* the tolerance: float32 logits' rounding over 2h, far below the
         * gradient itself (asserted non-trivial) */
        assert_true(fabs(fd) > 1e-3);
        assert_float_equal(analytic, fd, 1e-3 * fabs(fd) + 2e-5);
    }
    bd_graph_free(g0);
    run_free(&x);
}

/* ---- lambda --------------------------------------------------------------------- */

static void test_lambda_zero_keeps_bits_large_lambda_drives_to_min(void **state)
{
    (void)state;
    bd_bitprune_options o = plain(4);
    o.lambda = 0;
    o.init_bits = 5;
    run x;
    run_it(&x, &o);
    for (int l = 0; l < 2; l++) {
        assert_true(fabs(x.r.layers[l].learned - 5) < 0.05);
        assert_int_equal(x.q[l].ints.bits, 5);
    }
    run_free(&x);

    o.lambda = 1e4f;
    o.min_bits = 2;
    o.bits_lr = 1;
    run_it(&x, &o);
    for (int l = 0; l < 2; l++) {
        assert_float_equal(x.r.layers[l].learned, 2, 0);
        assert_int_equal(x.q[l].ints.bits, 2);
    }
    assert_float_equal(x.r.mean_bits, 2, 0);
    run_free(&x);
}

/* A target: the mean follows its path down and the rounded model meets it,
 * close below (the rule lowers one tensor at a time), not at the minimum. */
static void test_target_is_met(void **state)
{
    (void)state;
    /* with the ops cost the bits go elsewhere, the target is the same mean */
    for (int cost = BD_BITS_MEMORY; cost <= BD_BITS_OPS; cost++) {
        bd_bitprune_options o = plain(40);
        o.target_bits = 3.5f;
        o.min_bits = 2;
        o.bits_lr = 0.5f;
        o.cost = cost;
        run x;
        run_it(&x, &o);
        assert_float_equal(x.r.learned_mean, 3.5, 0.05);
        assert_true(x.r.mean_bits <= 3.5 + 1e-9);
        assert_true(x.r.mean_bits > 2.5);
        run_free(&x);
    }
}

/* ---- costs ------------------------------------------------------------------------ */

static void test_costs_are_hand_counts(void **state)
{
    (void)state;
    bd_bitprune_options o = plain(1);
    o.lambda = 1e4f;
    o.bits_lr = 1;
    o.min_bits = 3;
    o.max_bits = 3; /* every n pinned at 3 ... */
    run x;
    run_it(&x, &o);
    assert_int_equal(x.r.layers[0].params, 18);
    assert_int_equal(x.r.layers[1].params, 24);
    assert_int_equal(x.r.layers[0].macs, 72);
    assert_int_equal(x.r.layers[1].macs, 24);
    run_free(&x);

    /* ... and now apart: per channel the conv's 2 and the fc's 3 rows each
     * learn their own; the means weigh them by weights and by MACs */
    o = plain(3);
    o.lambda = 0;
    o.granularity = BD_BITS_CHANNEL;
    o.init_bits = 6;
    o.min_bits = 2;
    o.max_bits = 6;
    o.bits_lr = 50; /* the loss alone moves them apart */
    run_it(&x, &o);
    double pm = 0, mm = 0;
    for (int l = 0; l < 2; l++) {
        pm += (double)x.r.layers[l].params * x.r.layers[l].bits;
        mm += (double)x.r.layers[l].macs * x.r.layers[l].bits;
    }
    assert_float_equal(x.r.mean_bits, pm / 42, 1e-12);
    assert_float_equal(x.r.ops_bits, mm / 96, 1e-12);
    assert_float_equal(x.r.mean_bits_layers, (x.r.layers[0].bits + x.r.layers[1].bits) / 2, 1e-12);
    run_free(&x);
}

/* ---- rounding and the saved codecs ------------------------------------------------- */

static void test_rounding_rule(void **state)
{
    (void)state;
    const double n[4] = {3.4, 5.6, 2.5, 7.49};
    const double share[4] = {0.1, 0.2, 0.3, 0.4};
    double r[4];
    bd_bitprune_round(n, share, 4, 0, 1, r); /* no target: nearest, halves up */
    assert_memory_equal(r, ((double[]){3, 6, 3, 7}), sizeof r);
    /* 0.3 + 1.2 + 0.9 + 2.8 = 5.2 > 5: the one rounded up the most (2.5 -> 3,
     * by 0.5) goes down; 4.9 meets it; of those now below their n, 2.5 -> 2
     * (+0.3) and 7.49 -> 7 (+0.4) would pass 5, 3.4 -> 3 (+0.1) fits: 5.0 */
    bd_bitprune_round(n, share, 4, 5, 1, r);
    assert_memory_equal(r, ((double[]){4, 6, 2, 7}), sizeof r);
    /* 4.6: then 5.6 -> 6 (0.4 up) goes down too (4.7), then the one least
     * far below its value, 3.4 -> 3 (0.4 below; 7.49 -> 7 is 0.49): 4.6,
     * exactly the target, so nothing goes back up */
    bd_bitprune_round(n, share, 4, 4.6, 1, r);
    assert_memory_equal(r, ((double[]){2, 5, 2, 7}), sizeof r);
    /* never below the minimum */
    bd_bitprune_round(n, share, 4, 1, 2, r);
    assert_memory_equal(r, ((double[]){2, 2, 2, 2}), sizeof r);
}

static void test_codecs_have_the_rounded_bits(void **state)
{
    (void)state;
    bd_bitprune_options o = plain(2);
    o.lambda = 0;
    o.init_bits = 4.3f;
    o.finetune_epochs = 1;
    run x;
    run_it(&x, &o);
    bd_layer *layers;
    int n;
    assert_int_equal(bd_layers_find(x.g, &layers, &n), BD_OK);
    for (int l = 0; l < 2; l++) {
        assert_int_equal(x.q[l].format, BD_FMT_INT);
        assert_int_equal(x.q[l].ints.bits, (int)floor(x.r.layers[l].learned + 0.5));
        assert_float_equal(x.r.layers[l].bits, x.q[l].ints.bits, 0);
        /* the model's weight is the codec's decode */
        const bd_tensor *w = x.g->values[layers[l].weight].init;
        float *dec = malloc((size_t)bd_tensor_count(w) * sizeof *dec);
        assert_int_equal(bd_qlayer_decode(&x.q[l], &layers[l], dec), BD_OK);
        assert_memory_equal(dec, w->data, (size_t)bd_tensor_count(w) * sizeof *dec);
        free(dec);
    }
    assert_int_equal(x.r.tune.epochs, 1);
    run_free(&x);

    /* per channel: each row's codes at its own rounded bits */
    o.granularity = BD_BITS_CHANNEL;
    o.init_bits = 3.5f; /* the loss alone moves the rows to either side */
    o.bits_lr = 0.5f;
    o.min_bits = 2;
    run_it(&x, &o);
    int mixed = 0;
    for (int l = 0; l < 2; l++) {
        const bd_qlayer *q = &x.q[l];
        double sum = 0;
        for (int64_t r = 0; r < layers[l].rows; r++) {
            const int b = bd_int_row_bits(q, r);
            assert_in_range(b, 2, 8);
            mixed |= b != bd_int_row_bits(q, 0);
            sum += b;
        }
        assert_float_equal(x.r.layers[l].bits, sum / (double)layers[l].rows, 1e-12);
        assert_float_equal(bd_qlayer_bits_per_weight(q), x.r.layers[l].bits, 1e-12);
        const bd_tensor *w = x.g->values[layers[l].weight].init;
        float *dec = malloc((size_t)bd_tensor_count(w) * sizeof *dec);
        assert_int_equal(bd_qlayer_decode(q, &layers[l], dec), BD_OK);
        assert_memory_equal(dec, w->data, (size_t)bd_tensor_count(w) * sizeof *dec);
        free(dec);
    }
    assert_true(mixed); /* the case of the per-row codec, not one width */
    free(layers);
    run_free(&x);
}

/* ---- the activations' bit lengths ------------------------------------------------ */

/* x -> Identity -> y, with an activation quantizer put before the Identity */
static bd_graph *identity_model(int opset)
{
    bd_graph *g;
    assert_int_equal(bd_graph_new(&g), BD_OK);
    g->opset = opset;
    bd_node *n;
    const char *in[] = {"x"}, *out[] = {"y"};
    assert_int_equal(bd_graph_add_node(g, "id", "Identity", "", 1, in, 1, out, &n), BD_OK);
    g->inputs = malloc(sizeof *g->inputs);
    g->inputs[0] = bd_graph_find(g, "x");
    g->ninputs = 1;
    g->outputs = malloc(sizeof *g->outputs);
    g->outputs[0] = bd_graph_find(g, "y");
    g->noutputs = 1;
    return g;
}

/* A grid of every bit length over [lo, hi], the fewer bits the more
 * clipped, as a run's clipping search leaves them (each its own range). */
static void clipped_grids(float lo, float hi, bd_act_grid *grids)
{
    for (int b = 1; b <= BD_INT_MAX_BITS; b++) {
        const float r = b < 8 ? (float)b / 8 : 1;
        bd_act_grid_fit(r * lo, r * hi, b, &grids[b]);
    }
}

static void test_act_quantizer_is_the_nodes_grid_at_integers(void **state)
{
    (void)state;
    enum { C = 301 };
    float x[C], out[C], dq[C], lo[C], hi[C];
    bd_test_fill_random(x, C, 7, -1.5f, 4);
    x[0] = 0; /* zero stays zero: a conv's padding is on the grid */
    const float range[2][2] = {{-1.2f, 3.3f}, {0, 3.3f}}; /* signed, then after a ReLU */
    bd_act_grid grids[2][BD_INT_MAX_BITS + 1];
    for (int sign = 0; sign < 2; sign++) {
        clipped_grids(range[sign][0], range[sign][1], grids[sign]);
        for (int b = 1; b <= 8; b++) {
            const bd_act_grid grid = grids[sign][b];
            assert_float_equal(grid.qmax - grid.qmin, (1 << b) - 1, 0);
            assert_true(grid.qmin <= 0 && grid.qmax >= 0);
            if (sign == 1)
                assert_float_equal(grid.qmin, 0, 0); /* unsigned */
            assert_int_equal(bd_bitprune_act_quantize(x, C, (float)b, 8, grids[sign], out, NULL),
                             BD_OK);
            bd_act_grid_apply(&grid, x, C, lo);
            assert_memory_equal(out, lo, sizeof out);
            assert_float_equal(out[0], 0, 0);
            /* the nodes a file carries compute the same, bit for bit */
            bd_graph *g = identity_model(13);
            assert_int_equal(bd_act_quant_insert(g, 0, &grid, "layer"), BD_OK);
            assert_int_equal(g->nnodes, 5);
            assert_string_equal(g->nodes[4].op, "Identity");
            bd_act_grid found;
            assert_int_equal(bd_act_quant_find(g, 4, &found), 1);
            assert_memory_equal(&found, &grid, sizeof grid);
            bd_tensor *t, *y;
            assert_int_equal(bd_tensor_new(&t, BD_F32, 1, (int64_t[]){C}, "x"), BD_OK);
            memcpy(t->data, x, sizeof x);
            bd_exec *ex;
            assert_int_equal(bd_exec_new(&ex, g, 0), BD_OK);
            assert_int_equal(bd_exec_run1(ex, t, &y), BD_OK);
            assert_memory_equal(y->data, lo, sizeof lo);
            bd_tensor_free(t);
            bd_tensor_free(y);
            bd_exec_free(ex);
            bd_graph_free(g);
        }
    }
    /* in between: (c + 1 - m) Q_c + (m - c) Q_{c+1}, dq = Q_{c+1} - Q_c */
    assert_int_equal(bd_bitprune_act_quantize(x, C, 3.25f, 8, grids[0], out, dq), BD_OK);
    bd_act_grid_apply(&grids[0][3], x, C, lo);
    bd_act_grid_apply(&grids[0][4], x, C, hi);
    for (int j = 0; j < C; j++) {
        assert_float_equal(out[j], 0.75f * lo[j] + 0.25f * hi[j], 1e-6);
        assert_float_equal(dq[j], hi[j] - lo[j], 1e-6);
    }
}

/* sum dy Q_m(x) in double */
static double act_dot(const float *x, const float *dy, int n, double m, const bd_act_grid *grids)
{
    float *q = malloc((size_t)n * sizeof *q);
    assert_int_equal(bd_bitprune_act_quantize(x, n, (float)m, 8, grids, q, NULL), BD_OK);
    double sum = 0;
    for (int i = 0; i < n; i++)
        sum += (double)dy[i] * q[i];
    free(q);
    return sum;
}

/* m's gradient against central differences in m (Q_m is linear in m
 * between integers); x's, straight through where a grid does not clip and
 * 0 where it does, against central differences of the clips it stands for:
 * (c + 1 - m) clip_c(x) + (m - c) clip_{c+1}(x), each on its grid's range. */
static void test_act_gradients_finite_differences(void **state)
{
    (void)state;
    enum { C = 400 };
    float x[C], dy[C], dx[C];
    bd_test_fill_random(x, C, 11, -2, 5);
    bd_test_fill_random(dy, C, 12, -1, 1);
    bd_act_grid grids[BD_INT_MAX_BITS + 1];
    clipped_grids(-1, 3.5f, grids);
    const double m = 3.3, h = 1e-2;
    double dn;
    assert_int_equal(bd_bitprune_act_backward(x, dy, C, (float)m, 8, grids, dx, &dn), BD_OK);
    const double fd = (act_dot(x, dy, C, m + h, grids) - act_dot(x, dy, C, m - h, grids)) /
                      (2 * h);
    assert_true(fabs(fd) > 1e-2);
    assert_float_equal(dn, fd, 1e-4 * fabs(fd));
    float lo[2], hi[2];
    bd_act_grid_range(&grids[3], &lo[0], &hi[0]);
    bd_act_grid_range(&grids[4], &lo[1], &hi[1]);
    assert_true(hi[1] > hi[0] + 0.3f); /* their ranges differ */
    int counts[3] = {0}; /* derivative 1, 0.7 (only Q_3 clips), 0 */
    for (int i = 0; i < C; i++) {
        int near = 0;
        for (int k = 0; k < 2; k++)
            near |= fabs(x[i] - lo[k]) < 2 * h || fabs(x[i] - hi[k]) < 2 * h;
        if (near)
            continue;
        double d = 0;
        for (int k = 0; k < 2; k++)
            d += (k ? m - 3 : 4 - m) *
                 (clip_d(x[i] + h, lo[k], hi[k]) - clip_d(x[i] - h, lo[k], hi[k])) / (2 * h);
        assert_float_equal(dx[i], dy[i] * d, 1e-6);
        counts[d > 0.9 ? 0 : d > 0.1 ? 1 : 2]++;
    }
    assert_true(counts[0] > C / 8 && counts[1] > C / 40 && counts[2] > C / 4);
    /* frozen bits: Q_4's range alone, no gradient for m asked */
    float dx2[C];
    assert_int_equal(bd_bitprune_act_backward(x, dy, C, 4, 8, grids, dx2, NULL), BD_OK);
    for (int i = 0; i < C; i++)
        assert_float_equal(dx2[i], x[i] >= lo[1] && x[i] <= hi[1] ? dy[i] : 0, 0);
}

/* The clipping search's errors against a direct sum, and what it is for:
 * on a ReLU's output (most values small, a long tail) few bits cut the
 * range well short, 8 bits hardly at all. */
static void test_act_clipping_errors(void **state)
{
    (void)state;
    enum { C = 4000 };
    float x[C], q[C];
    for (int i = 0; i < C; i++) {
        const double u = (i + 0.5) / C;
        x[i] = u < 0.4 ? 0 : (float)-log((1 - u) / 0.6); /* half-exponential after a ReLU */
    }
    float lo, hi;
    assert_int_equal(bd_act_range(x, C, 99.99, &lo, &hi), BD_OK);
    int best[9];
    for (int b = 1; b <= 8; b++) {
        double err[BD_INT_CLIP_STEPS] = {0};
        bd_act_clip_errors(x, C, lo, hi, b, err);
        best[b] = 0;
        for (int i = 0; i < BD_INT_CLIP_STEPS; i++) {
            const double r = bd_int_clip_ratio(i);
            bd_act_grid g;
            bd_act_grid_fit((float)(r * lo), (float)(r * hi), b, &g);
            bd_act_grid_apply(&g, x, C, q);
            double sum = 0;
            for (int j = 0; j < C; j++)
                sum += ((double)q[j] - x[j]) * ((double)q[j] - x[j]);
            assert_float_equal(err[i], sum, 1e-9 * sum);
            best[b] = err[i] < err[best[b]] ? i : best[b];
        }
    }
    assert_true(bd_int_clip_ratio(best[2]) < 0.6);
    assert_true(bd_int_clip_ratio(best[8]) > 0.8);
    for (int b = 2; b <= 8; b++)
        assert_true(best[b] <= best[b - 1]); /* more bits, a wider grid */
}

/* One training step with a fixed lambda moves m by -bits_lr (dL/dm +
 * lambda A / sum P): dL/dm read back against central differences of the
 * loss, the activations' share of the memory cost a hand count (the conv
 * reads 16 values an image, the fc 8, over 42 weights). The conv's input
 * reaches the loss through the fc's quantizer, which the backward passes
 * straight through: its differences take that quantizer as the backward
 * does (act_spec's ste), so they check the straight-through gradient too. */
static void test_act_bits_gradient_in_training(void **state)
{
    (void)state;
    bd_bitprune_options o = plain(1);
    o.activations = 1;
    o.lambda = 1;
    o.init_bits = 3.4f;
    o.min_bits = 3; /* the weights' n move, but not past what the differences see */
    o.max_bits = 4;
    o.act_min_bits = 1;
    o.act_max_bits = 3; /* coarse: the loss feels a step of m */
    o.bits_lr = 1;
    run x;
    run_it(&x, &o);
    bd_graph *g0 = tiny_model();
    bd_layer *layers;
    int n;
    assert_int_equal(bd_layers_find(g0, &layers, &n), BD_OK);
    act_spec a = {.node = {layers[0].node, layers[1].node}, .bits = {3, 3}};
    const int64_t values[2] = {16, 8};
    for (int l = 0; l < 2; l++) {
        assert_int_equal(x.r.layers[l].act_values, values[l]);
        a.grids[l] = x.r.layers[l].act_grids;
        assert_true(x.r.layers[l].act_hi > x.r.layers[l].act_lo);
    }
    const float wbits[2] = {3.4f, 3.4f};
    a.record = 1;
    const double base = loss_with(g0, x.d, wbits, &a);
    a.record = 0;
    a.ste = 1;
    assert_float_equal(loss_with(g0, x.d, wbits, &a), base, 0); /* the same model at x0 */
    const double h = 1e-3;
    for (int l = 0; l < 2; l++) {
        /* at the top of the range Q_3 is the end of the line from Q_2: one side */
        act_spec down = a;
        down.bits[l] = (float)(3 - 2 * h);
        const double fd = (base - loss_with(g0, x.d, wbits, &down)) / (3.0 - down.bits[l]);
        const double analytic = (3 - x.r.layers[l].act_learned) - 1.0 * values[l] / 42.0;
        assert_true(fabs(fd) > 1e-4);
        assert_float_equal(analytic, fd, 2e-3 * fabs(fd) + 2e-5);
    }
    free(a.x0);
    free(layers);
    bd_graph_free(g0);
    run_free(&x);
}

static void test_act_lambda_zero_keeps_large_lambda_drives_to_min(void **state)
{
    (void)state;
    bd_bitprune_options o = plain(4);
    o.activations = 1;
    o.lambda = 0;
    o.act_max_bits = 6;
    run x;
    run_it(&x, &o);
    for (int l = 0; l < 2; l++) {
        assert_true(fabs(x.r.layers[l].act_learned - 6) < 0.05);
        assert_int_equal(x.r.layers[l].act.bits, 6);
    }
    run_free(&x);

    o.lambda = 1e4f;
    o.act_min_bits = 2;
    o.bits_lr = 1;
    run_it(&x, &o);
    for (int l = 0; l < 2; l++) {
        assert_float_equal(x.r.layers[l].act_learned, 2, 0);
        assert_int_equal(x.r.layers[l].act.bits, 2);
    }
    assert_float_equal(x.r.act_mean, 2, 0);
    run_free(&x);
}

/* cost=ops with the activations learned: w x a bits per MAC, by MACs of
 * one image (72 in the conv, 24 in the fc); the conv, three times the
 * fc's MACs, is pulled down three times as hard, weights and inputs. */
static void test_act_ops_cost_is_a_hand_count(void **state)
{
    (void)state;
    bd_bitprune_options o = plain(3);
    o.activations = 1;
    o.cost = BD_BITS_OPS;
    o.lambda = 0.05f;
    o.bits_lr = 1;
    o.min_bits = 2;
    run x;
    run_it(&x, &o);
    const bd_bitprune_layer *c = &x.r.layers[0], *f = &x.r.layers[1];
    assert_int_equal(c->macs, 72);
    assert_int_equal(f->macs, 24);
    assert_true(c->learned < f->learned && c->act_learned < f->act_learned);
    const double cw = c->bits * c->act.bits, fw = f->bits * f->act.bits;
    assert_true(cw != fw); /* the weighting shows */
    assert_float_equal(x.r.bitops, (72 * cw + 24 * fw) / 96, 1e-12);
    assert_float_equal(x.r.ops_bits, (72 * c->bits + 24 * f->bits) / 96, 1e-12);
    assert_float_equal(x.r.act_mean, (c->act.bits + f->act.bits) / 2.0, 1e-12);
    run_free(&x);
}

/* The run's grids as nodes in the model: found again, computing what the
 * run's own quantizer computes, and the same after a save and a load. */
static void test_act_nodes_carry_the_run(void **state)
{
    (void)state;
    bd_bitprune_options o = plain(2);
    o.activations = 1;
    o.lambda = 0.02f;
    o.bits_lr = 1;
    o.finetune_epochs = 1;
    run x;
    run_it(&x, &o);
    bd_layer *layers;
    int n;
    assert_int_equal(bd_layers_find(x.g, &layers, &n), BD_OK);
    const bd_act_grid grids[2] = {x.r.layers[0].act, x.r.layers[1].act};
    act_spec a = {.node = {layers[0].node, layers[1].node}, .grid = grids};
    bd_tensor *want = logits_of(x.g, x.d, &a);
    bd_graph *g;
    assert_int_equal(bd_graph_clone(&g, x.g), BD_OK);
    assert_int_equal(bd_bitprune_act_insert(g, &x.r), BD_OK);
    assert_int_equal(g->nnodes, x.g->nnodes + 8);
    char path[512];
    snprintf(path, sizeof path, "%s/bp_act.onnx", bd_test_tmpdir());
    assert_int_equal(bd_onnx_save(g, path), BD_OK);
    bd_graph *back;
    bd_qlayer *q;
    int nq;
    assert_int_equal(bd_model_load(path, &back, &q, &nq), BD_OK);
    const bd_graph *models[2] = {g, back};
    for (int k = 0; k < 2; k++) {
        bd_layer *ls;
        assert_int_equal(bd_layers_find(models[k], &ls, &n), BD_OK);
        assert_int_equal(n, 2);
        for (int l = 0; l < 2; l++) {
            bd_act_grid found;
            assert_int_equal(bd_act_quant_find(models[k], ls[l].node, &found), 1);
            assert_memory_equal(&found, &grids[l], sizeof found);
        }
        bd_tensor *got = logits_of(models[k], x.d, NULL);
        assert_memory_equal(got->data, want->data, bd_tensor_nbytes(want));
        bd_tensor_free(got);
        free(ls);
    }
    /* a second run would quantize the inputs twice */
    bd_qlayer q2[2] = {0};
    bd_bitprune_report r2;
    const bd_bitprune_io io = {.train = x.d, .pp = &pp};
    assert_int_equal(bd_bitprune_run(g, &o, &io, q2, &r2), BD_EINVAL);
    assert_non_null(strstr(bd_error_message(), "activation quantizer already"));
    /* taken away, the quantizers leave the float model's logits and the
     * layers' indices; their names serve again */
    bd_layer *ls;
    assert_int_equal(bd_layers_find(g, &ls, &n), BD_OK);
    for (int l = 0; l < 2; l++) {
        int node = ls[l].node;
        assert_int_equal(bd_act_quant_remove(g, &node), BD_OK);
        assert_int_equal(node, layers[l].node);
        assert_string_equal(g->nodes[node].op, layers[l].op);
        ls[1].node -= 4 * (l == 0); /* the first removal moved it */
    }
    assert_int_equal(g->nnodes, x.g->nnodes);
    bd_tensor *plain = logits_of(x.g, x.d, NULL), *removed = logits_of(g, x.d, NULL);
    assert_memory_equal(removed->data, plain->data, bd_tensor_nbytes(plain));
    assert_int_equal(bd_bitprune_act_insert(g, &x.r), BD_OK);
    bd_tensor *again = logits_of(g, x.d, NULL);
    assert_memory_equal(again->data, want->data, bd_tensor_nbytes(want));
    bd_tensor_free(plain);
    bd_tensor_free(removed);
    bd_tensor_free(again);
    free(ls);
    for (int i = 0; i < nq; i++)
        bd_qlayer_free(&q[i]);
    free(q);
    bd_graph_free(back);
    bd_graph_free(g);
    bd_tensor_free(want);
    free(layers);
    run_free(&x);
}

/* ---- checkpoints ------------------------------------------------------------- */

static atomic_int cancel_flag;
static int steps_seen, stop_at;

/* Cancels at the stop_at-th training step of the run, counted over both
 * phases. */
static void stop_at_step(void *user, const char *stage, int64_t done, int64_t total,
                         const char *message, double metric)
{
    (void)user, (void)done, (void)total, (void)message, (void)metric;
    if (strcmp(stage, "train") == 0 && ++steps_seen == stop_at)
        atomic_store(&cancel_flag, 1);
}

/* A run of two epochs of two steps each phase, with momentum, a schedule,
 * a target (lambda solved for at every step) and the inputs' bits. */
static bd_bitprune_options resumable(void)
{
    bd_bitprune_options o = plain(2);
    o.train.epochs = 2;
    o.train.batch = N / 2;
    o.train.momentum = 0.9f;
    o.train.nesterov = 1;
    o.train.schedule = BD_SCHED_COSINE;
    o.train.lr = 0.05f;
    o.target_bits = 3;
    o.bits_lr = 0.5f;
    o.activations = 1;
    o.finetune_epochs = 2;
    return o;
}

/* Runs o from a fresh model with a checkpoint; stopped at step stop (0:
 * never) or resumed from the checkpoint. */
static bd_status run_checkpointed(run *x, const bd_bitprune_options *o, const char *ckpt,
                                  int stop, int resume)
{
    memset(x, 0, sizeof *x);
    x->g = tiny_model();
    x->d = tiny_data();
    steps_seen = 0;
    stop_at = stop;
    atomic_store(&cancel_flag, 0);
    bd_progress progress = {stop_at_step, NULL, &cancel_flag};
    const bd_bitprune_io io = {.train = x->d, .pp = &pp, .checkpoint = ckpt, .resume = resume,
                               .progress = stop ? &progress : NULL};
    return bd_bitprune_run(x->g, o, &io, x->q, &x->r);
}

static void assert_same_run(const run *a, const run *b)
{
    bd_test_assert_same_floats(a->g, b->g);
    assert_int_equal(a->r.nlayers, b->r.nlayers);
    for (int l = 0; l < a->r.nlayers; l++) {
        assert_true(a->r.layers[l].learned == b->r.layers[l].learned);
        assert_true(a->r.layers[l].bits == b->r.layers[l].bits);
        assert_true(a->r.layers[l].act_learned == b->r.layers[l].act_learned);
        assert_int_equal(a->r.layers[l].act.bits, b->r.layers[l].act.bits);
        assert_int_equal(a->q[l].ints.bits, b->q[l].ints.bits);
        assert_memory_equal(a->q[l].codes, b->q[l].codes, (size_t)a->q[l].n * sizeof(int32_t));
    }
    assert_true(a->r.lambda == b->r.lambda);
    assert_true(a->r.learned_mean == b->r.learned_mean);
    assert_int_equal(a->r.learn.epochs, b->r.learn.epochs);
    for (int e = 0; e < a->r.learn.epochs; e++) {
        assert_true(a->r.mean_per_epoch[e] == b->r.mean_per_epoch[e]);
        assert_true(a->r.learn.per_epoch[e].loss == b->r.learn.per_epoch[e].loss);
    }
    assert_int_equal(a->r.tune.epochs, b->r.tune.epochs);
}

/* A run stopped in its learning phase, or in its fine-tuning, and resumed
 * from the checkpoint ends bit-identical to an uninterrupted one: the
 * weights, the bit lengths learned and rounded, the inputs' bits, lambda,
 * the per-epoch means and losses. A checkpoint of another kind of run, or
 * of other options, is refused naming it, before any work. */
static void test_resume_is_bit_identical(void **state)
{
    (void)state;
    const bd_bitprune_options o = resumable();
    char ca[600], cb[600];
    snprintf(ca, sizeof ca, "%s/bp_a.ckpt", bd_test_tmpdir());
    snprintf(cb, sizeof cb, "%s/bp_b.ckpt", bd_test_tmpdir());
    run a;
    assert_int_equal(run_checkpointed(&a, &o, ca, 0, 0), BD_OK);
    /* steps 1-4 learn, 5-8 tune: stopped one step into a phase's second
     * epoch, the checkpoint is its first epoch's */
    const int stops[2] = {3, 7};
    for (int k = 0; k < 2; k++) {
        run b, c;
        assert_int_equal(run_checkpointed(&b, &o, cb, stops[k], 0), BD_ECANCELED);
        assert_int_equal(run_checkpointed(&c, &o, cb, 0, 1), BD_OK);
        assert_int_equal(c.r.learn.first, k == 0 ? 2 : 3); /* 3: no learning epoch ran */
        assert_int_equal(c.r.tune.first, k == 0 ? 1 : 2);
        assert_same_run(&a, &c);
        run_free(&b);
        run_free(&c);
    }
    /* other options, and a plain training run's checkpoint */
    bd_bitprune_options other = o;
    other.granularity = BD_BITS_CHANNEL;
    run d;
    assert_int_equal(run_checkpointed(&d, &other, ca, 0, 1), BD_EINVAL);
    assert_non_null(strstr(bd_error_message(), "bp_a.ckpt"));
    assert_non_null(strstr(bd_error_message(), "granularity"));
    run_free(&d);
    bd_training_options to = o.train;
    char cp[600];
    snprintf(cp, sizeof cp, "%s/plain.ckpt", bd_test_tmpdir());
    run e = {.g = tiny_model(), .d = tiny_data()};
    const bd_training_io tio = {.train = e.d, .pp = &pp, .checkpoint = cp};
    bd_training_report tr;
    assert_int_equal(bd_training_run(e.g, &to, &tio, &tr), BD_OK);
    bd_training_report_free(&tr);
    run_free(&e);
    assert_int_equal(run_checkpointed(&e, &o, cp, 0, 1), BD_EINVAL);
    assert_non_null(strstr(bd_error_message(), "plain.ckpt"));
    bd_graph *untouched = tiny_model();
    bd_test_assert_same_floats(untouched, e.g);
    bd_graph_free(untouched);
    run_free(&e);
    /* and a bitprune checkpoint given to a plain run */
    e = (run){.g = tiny_model(), .d = tiny_data()};
    const bd_training_io rio = {.train = e.d, .pp = &pp, .checkpoint = ca, .resume = 1};
    assert_int_equal(bd_training_run(e.g, &to, &rio, &tr), BD_EINVAL);
    assert_non_null(strstr(bd_error_message(), "bitprune"));
    run_free(&e);
    run_free(&a);
}

/* ---- bad input ----------------------------------------------------------------------- */

static void test_bad_input_changes_nothing(void **state)
{
    (void)state;
    bd_graph *g = tiny_model(), *ref;
    assert_int_equal(bd_graph_clone(&ref, g), BD_OK);
    bd_dataset *d = tiny_data();
    const bd_bitprune_io io = {.train = d, .pp = &pp};
    bd_qlayer q[2] = {0};
    bd_bitprune_report r;
    bd_bitprune_options o = plain(1);
    assert_int_equal(bd_bitprune_run(g, &o, &io, q, &r), BD_EINVAL); /* no target nor lambda */
    o.lambda = 1;
    o.target_bits = 3;
    assert_int_equal(bd_bitprune_run(g, &o, &io, q, &r), BD_EINVAL); /* two of them */
    o.lambda = -1;
    o.target_bits = 1.5f;
    o.min_bits = 2;
    assert_int_equal(bd_bitprune_run(g, &o, &io, q, &r), BD_EINVAL); /* below the minimum */
    assert_non_null(strstr(bd_error_message(), "cannot be met"));
    o.target_bits = 0;
    o.target_mb = 1e-6f;
    assert_int_equal(bd_bitprune_run(g, &o, &io, q, &r), BD_EINVAL); /* a size too small */
    assert_non_null(strstr(bd_error_message(), "cannot be met"));
    /* a model with no Conv, Gemm or MatMul */
    bd_graph *bare;
    assert_int_equal(bd_graph_new(&bare), BD_OK);
    bare->opset = 13;
    int xin = add_value(bare, "x"), xout = add_value(bare, "y");
    bare->values[xin].dtype = BD_F32;
    bare->values[xin].ndim = 4;
    memcpy(bare->values[xin].dims, (int64_t[]){-1, 1, 4, 4}, 4 * sizeof(int64_t));
    bare->inputs = malloc(sizeof *bare->inputs);
    bare->inputs[0] = xin;
    bare->ninputs = 1;
    bd_node *node;
    const char *fin[] = {"x"}, *fout[] = {"y"};
    assert_int_equal(bd_graph_add_node(bare, "flatten", "Flatten", "", 1, fin, 1, fout, &node), BD_OK);
    bare->outputs = malloc(sizeof *bare->outputs);
    bare->outputs[0] = xout;
    bare->noutputs = 1;
    o.target_mb = 0;
    o.target_bits = 4;
    assert_int_equal(bd_bitprune_run(bare, &o, &io, q, &r), BD_EINVAL);
    assert_non_null(strstr(bd_error_message(), "no quantizable layer"));
    bd_graph_free(bare);
    bd_bitprune_options_init(&o);
    assert_int_equal(bd_opt_op_set(&bd_bitprune_op, &o, "t", "max_bits", "17"), BD_EINVAL);
    assert_int_equal(bd_opt_op_set(&bd_bitprune_op, &o, "t", "lambda", "-1"), BD_EINVAL);
    /* training's table */
    assert_int_equal(bd_opt_op_set(&bd_bitprune_op, &o, "t", "epochs", "3"), BD_OK);
    assert_int_equal(o.train.epochs, 3);
    /* the activations' range: within 1..16, and only with activations */
    assert_int_equal(bd_opt_op_set(&bd_bitprune_op, &o, "t", "act_max_bits", "17"), BD_EINVAL);
    assert_non_null(strstr(bd_error_message(), "act_max_bits"));
    assert_int_equal(bd_opt_op_set(&bd_bitprune_op, &o, "t", "act_min_bits", "0"), BD_EINVAL);
    assert_int_equal(bd_opt_op_set(&bd_bitprune_op, &o, "t", "activations", "1"), BD_OK);
    assert_int_equal(o.activations, 1);
    o = plain(1);
    o.lambda = 1;
    o.act_max_bits = 6; /* without activations=1 */
    assert_int_equal(bd_bitprune_run(g, &o, &io, q, &r), BD_EINVAL);
    assert_non_null(strstr(bd_error_message(), "activations=1"));
    o.activations = 1;
    o.act_max_bits = 17;
    assert_int_equal(bd_bitprune_run(g, &o, &io, q, &r), BD_EINVAL);
    assert_non_null(strstr(bd_error_message(), "activations' bit range 2..17"));
    o.act_min_bits = 5;
    o.act_max_bits = 3;
    assert_int_equal(bd_bitprune_run(g, &o, &io, q, &r), BD_EINVAL);
    assert_non_null(strstr(bd_error_message(), "activations' bit range 5..3"));
    /* the default range: the weights', at least 2 bits but within the top */
    const int ranges[][6] = {/* min, max, act_min, act_max -> lo, hi */
                             {1, 8, 0, 0, 2, 8}, {3, 8, 0, 0, 3, 8}, {1, 1, 0, 0, 1, 1},
                             {1, 8, 1, 0, 1, 8}, {1, 8, 0, 4, 2, 4}};
    for (size_t i = 0; i < sizeof ranges / sizeof *ranges; i++) {
        bd_bitprune_options d = plain(1);
        d.min_bits = ranges[i][0];
        d.max_bits = ranges[i][1];
        d.act_min_bits = ranges[i][2];
        d.act_max_bits = ranges[i][3];
        int lo, hi;
        bd_bitprune_act_bits(&d, &lo, &hi);
        assert_int_equal(lo, ranges[i][4]);
        assert_int_equal(hi, ranges[i][5]);
    }
    o.act_min_bits = 0;
    o.act_max_bits = 0;
    g->opset = 10; /* no Round for the saved file */
    assert_int_equal(bd_bitprune_run(g, &o, &io, q, &r), BD_EUNSUPPORTED);
    assert_non_null(strstr(bd_error_message(), "opset 10"));
    g->opset = 13;
    for (int i = 0; i < g->nvalues; i++)
        if (g->values[i].init && g->values[i].init->dtype == BD_F32)
            assert_memory_equal(g->values[i].init->data, ref->values[i].init->data,
                                (size_t)bd_tensor_count(g->values[i].init) * sizeof(float));
    assert_int_equal(q[0].k, 0);
    bd_dataset_free(d);
    bd_graph_free(g);
    bd_graph_free(ref);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_interpolation_is_the_grid_at_integers),
        cmocka_unit_test(test_bits_gradient_finite_differences),
        cmocka_unit_test(test_lambda_zero_keeps_bits_large_lambda_drives_to_min),
        cmocka_unit_test(test_target_is_met),
        cmocka_unit_test(test_costs_are_hand_counts),
        cmocka_unit_test(test_rounding_rule),
        cmocka_unit_test(test_codecs_have_the_rounded_bits),
        cmocka_unit_test(test_act_quantizer_is_the_nodes_grid_at_integers),
        cmocka_unit_test(test_act_gradients_finite_differences),
        cmocka_unit_test(test_act_clipping_errors),
        cmocka_unit_test(test_act_bits_gradient_in_training),
        cmocka_unit_test(test_act_lambda_zero_keeps_large_lambda_drives_to_min),
        cmocka_unit_test(test_act_ops_cost_is_a_hand_count),
        cmocka_unit_test(test_act_nodes_carry_the_run),
        cmocka_unit_test(test_resume_is_bit_identical),
        cmocka_unit_test(test_bad_input_changes_nothing),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
