/* bitdown bench MODEL: forward throughput on synthetic input. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli.h"
#include "exec.h"
#include "finetune.h"
#include "grad.h"
#include "layers.h"
#include "train.h"
#include "threads.h"

static const char help[] =
    "usage: bitdown bench MODEL [--batch B] [--threads T] [--iters N] [--size HxW] [--train]\n"
    "                           [--profile]\n\n"
    "Measures forward throughput on random input of the model's input shape (batch\n"
    "B, default 1), after two warm-up passes, and prints images per second and\n"
    "milliseconds per batch (median and best of N passes, default 10).\n\n"
    "  --size HxW        spatial size where the model leaves it open\n"
    "  --train           training throughput instead: forward and backward with\n"
    "                    BatchNorm in train mode, gradients of every weight, bias and\n"
    "                    BatchNorm parameter, cross-entropy on made-up labels\n"
    "  --profile         also where a forward pass spends its time: per op type, and\n"
    "                    the slowest nodes with their input shapes (a Conv counts the\n"
    "                    BatchNorm, residual Add and Relu/Clip fused into it)\n";

static int compare_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* The input shape with batch and any open spatial dims filled in. */
static int input_shape(const bd_graph *g, long batch, long h, long w, bd_tensor **x)
{
    if (g->ninputs != 1)
        return cli_report(bd_fail(BD_EUNSUPPORTED, "bench needs a model with one input (it has %d)",
                                  g->ninputs));
    const bd_value *v = &g->values[g->inputs[0]];
    if (v->ndim < 1)
        return cli_report(bd_fail(BD_EFORMAT, "input '%s' declares no shape", v->name));
    int64_t dims[BD_MAX_DIMS];
    for (int d = 0; d < v->ndim; d++) {
        dims[d] = v->dims[d];
        if (d == 0)
            dims[d] = batch;
        else if (dims[d] < 0 && d >= v->ndim - 2 && (d == v->ndim - 2 ? h : w) > 0)
            dims[d] = d == v->ndim - 2 ? h : w;
        if (dims[d] < 0)
            return cli_usage_error("bench", "input '%s' leaves dimension %d open: give --size",
                                   v->name, d);
    }
    bd_status s = bd_tensor_new_raw(x, BD_F32, v->ndim, dims, v->name);
    if (s != BD_OK)
        return cli_report(s);
    float *p = (*x)->data;
    uint64_t r = 88172645463325252ull;
    for (int64_t i = 0; i < bd_tensor_count(*x); i++) {
        r ^= r << 13, r ^= r >> 7, r ^= r << 17;
        p[i] = (float)((double)(r >> 11) / 9007199254740992.0) * 2.0f - 1.0f;
    }
    return CLI_OK;
}

/* Per node: seconds summed over the timed passes, and the shapes it read
 * (recorded by a hook on the first pass). */
typedef struct profile {
    double *seconds;
    char (*shapes)[96];
} profile;

static bd_status record_shapes(void *user, const bd_graph *g, int node, bd_tensor *const *in)
{
    profile *pr = user;
    const bd_node *n = &g->nodes[node];
    char *at = pr->shapes[node];
    if (*at)
        return BD_OK;
    size_t cap = sizeof pr->shapes[node], used = 0;
    for (int k = 0; k < n->ninputs && k < 2 && used + 1 < cap; k++) {
        if (!in[k])
            continue;
        char dims[64];
        used += (size_t)snprintf(at + used, cap - used, "%s%s", k ? " * " : "",
                                 bd_shape_str(in[k]->ndim, in[k]->dims, dims, sizeof dims));
    }
    if (strcmp(n->op, "Conv") == 0 && used + 1 < cap) {
        int64_t group = bd_attr_int(n, "group", 1);
        if (group > 1)
            used += (size_t)snprintf(at + used, cap - used, " group %lld", (long long)group);
        const int64_t *strides;
        if (bd_attr_ints(n, "strides", &strides) > 0 && strides[0] > 1 && used + 1 < cap)
            snprintf(at + used, cap - used, " stride %lld", (long long)strides[0]);
    }
    return BD_OK;
}

/* An op type's time and how many nodes ran it, or one node's time. */
typedef struct op_time {
    const char *op;
    double seconds;
    int n; /* the op's nodes run by themselves; for a node's entry, its index */
} op_time;

static int by_time(const void *a, const void *b)
{
    double x = ((const op_time *)a)->seconds, y = ((const op_time *)b)->seconds;
    return x > y ? -1 : x < y;
}

/* Nodes shown by themselves, slowest first. */
enum { TOP_NODES = 15 };

static void print_profile(const bd_graph *g, const bd_exec *ex, const profile *pr, long iters)
{
    op_time *ops = calloc((size_t)g->nnodes + 1, sizeof *ops), *nodes =
        calloc((size_t)g->nnodes + 1, sizeof *nodes);
    if (!ops || !nodes) {
        free(ops);
        free(nodes);
        fputs("bench: out of memory for the profile\n", stderr);
        return;
    }
    int nops = 0;
    double total = 0;
    for (int i = 0; i < g->nnodes; i++) {
        const double t = pr->seconds[i] / (double)iters;
        total += t;
        const char *op = bd_exec_step_op(ex, i);
        nodes[i] = (op_time){op, t, i};
        int j = 0;
        while (j < nops && strcmp(ops[j].op, op) != 0)
            j++;
        if (j == nops)
            ops[nops++] = (op_time){op, 0, 0};
        ops[j].seconds += t;
        ops[j].n += *pr->shapes[i] != 0;
    }
    qsort(ops, (size_t)nops, sizeof *ops, by_time);
    qsort(nodes, (size_t)g->nnodes, sizeof *nodes, by_time);
    printf("\nper pass, by op (%.2f ms in kernels):\n", 1e3 * total);
    for (int j = 0; j < nops && ops[j].seconds > 0; j++)
        printf("  %-22s %8.3f ms %5.1f%%  %d nodes\n", ops[j].op, 1e3 * ops[j].seconds,
               100 * ops[j].seconds / total, ops[j].n);
    printf("\nslowest nodes:\n");
    for (int j = 0; j < TOP_NODES && j < g->nnodes && nodes[j].seconds > 0; j++) {
        const int i = nodes[j].n;
        printf("  %8.3f ms %5.1f%%  %-14s %s  %s\n", 1e3 * nodes[j].seconds,
               100 * nodes[j].seconds / total, nodes[j].op, g->nodes[i].name, pr->shapes[i]);
    }
    free(ops);
    free(nodes);
}

/* What one timed pass runs. */
typedef struct pass {
    bd_graph *g;
    bd_exec *ex;   /* forward */
    bd_train *tr;  /* training */
    int *params, nparams;
} pass;

static bd_status infer_pass(pass *p, const bd_tensor *x)
{
    bd_tensor *y;
    BD_TRY(bd_exec_run1(p->ex, x, &y));
    bd_tensor_free(y);
    return BD_OK;
}

/* Every layer weight, bias and BatchNorm parameter trains. */
static bd_status train_setup(pass *p)
{
    bd_layer *layers;
    int n, nextra = 0, *extra = NULL;
    BD_TRY(bd_layers_find(p->g, &layers, &n));
    bd_status s = bd_finetune_extra_params(p->g, layers, n, &extra, &nextra);
    if (s == BD_OK && !(p->params = malloc((size_t)(n + nextra) * sizeof *p->params + 1)))
        s = bd_fail(BD_ENOMEM, "out of memory");
    for (int i = 0; s == BD_OK && i < n + nextra; i++)
        p->params[p->nparams++] = i < n ? layers[i].weight : extra[i - n];
    bd_train_options o = {.bn_train = 1};
    if (s == BD_OK)
        s = bd_train_new(&p->tr, p->g, p->params, p->nparams, &o);
    free(layers);
    free(extra);
    return s;
}

static bd_status train_pass(pass *p, const bd_tensor *x)
{
    bd_tensor *y = NULL, *dy = NULL;
    bd_tensor **grads = calloc((size_t)p->nparams + 1, sizeof *grads);
    int *labels = malloc((size_t)x->dims[0] * sizeof *labels);
    double loss;
    bd_status s = grads && labels ? bd_train_forward(p->tr, x, &y)
                                  : bd_fail(BD_ENOMEM, "out of memory");
    for (int64_t i = 0; s == BD_OK && i < x->dims[0]; i++)
        labels[i] = (int)(i % y->dims[1]);
    if (s == BD_OK)
        s = bd_loss_ce(y, labels, &loss, &dy);
    if (s == BD_OK)
        s = bd_train_backward(p->tr, dy, grads);
    for (int i = 0; grads && i < p->nparams; i++)
        bd_tensor_free(grads[i]);
    free(grads);
    free(labels);
    bd_tensor_free(y);
    bd_tensor_free(dy);
    return s;
}

int cli_bench(int argc, char **argv)
{
    static const struct option opts[] = {
        {"help", no_argument, 0, 'h'},          {"batch", required_argument, 0, 'b'},
        {"threads", required_argument, 0, 't'}, {"iters", required_argument, 0, 'n'},
        {"size", required_argument, 0, 's'},    {"train", no_argument, 0, 'T'},
        {"profile", no_argument, 0, 'P'},       {0, 0, 0, 0}};
    long batch = 1, threads = 0, iters = 10, h = 0, w = 0;
    int c, training = 0, profiling = 0;
    optind = 1;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 'h': fputs(help, stdout); return CLI_OK;
        case 'T': training = 1; break;
        case 'P': profiling = 1; break;
        case 'b':
            if (cli_parse_int("bench", "--batch", optarg, 1, 1 << 16, &batch))
                return CLI_USAGE;
            break;
        case 't':
            if (cli_parse_int("bench", "--threads", optarg, 1, 1024, &threads))
                return CLI_USAGE;
            break;
        case 'n':
            if (cli_parse_int("bench", "--iters", optarg, 1, 1 << 20, &iters))
                return CLI_USAGE;
            break;
        case 's':
            if (sscanf(optarg, "%ldx%ld", &h, &w) != 2 || h < 1 || w < 1)
                return cli_usage_error("bench", "--size wants HxW, e.g. 224x224, not '%s'",
                                       optarg);
            break;
        default: return cli_bad_option("bench", argv);
        }
    }
    if (optind != argc - 1)
        return cli_usage_error("bench", "expects one MODEL");
    if (profiling && training)
        return cli_usage_error("bench", "--profile times forward passes: it does not go with "
                                        "--train");
    if (threads)
        bd_threads_set((int)threads);
    bd_graph *g;
    bd_status s = cli_load_model(argv[optind], &g, 0, NULL);
    if (s != BD_OK)
        return cli_report(s);
    bd_tensor *x = NULL;
    pass p = {.g = g};
    double *times = calloc((size_t)iters, sizeof *times);
    profile pr = {0};
    int rc = input_shape(g, batch, h, w, &x);
    if (rc == CLI_OK && (s = training ? train_setup(&p) : bd_exec_new(&p.ex, g, BD_EXEC_FUSE | BD_EXEC_FROZEN)) != BD_OK)
        rc = cli_report(s);
    if (rc == CLI_OK && profiling &&
        (!(pr.seconds = calloc((size_t)g->nnodes + 1, sizeof *pr.seconds)) ||
         !(pr.shapes = calloc((size_t)g->nnodes + 1, sizeof *pr.shapes))))
        rc = cli_report(bd_fail(BD_ENOMEM, "out of memory for the profile"));
    if (rc == CLI_OK && profiling)
        bd_exec_set_hook(p.ex, record_shapes, &pr);
    for (long i = -2; rc == CLI_OK && i < iters; i++) {
        if (i == 0 && profiling)
            bd_exec_set_profile(p.ex, pr.seconds);
        double t0 = bd_now();
        if ((s = training ? train_pass(&p, x) : infer_pass(&p, x)) != BD_OK) {
            rc = cli_report(s);
            break;
        }
        if (i >= 0)
            times[i] = bd_now() - t0;
    }
    if (rc == CLI_OK) {
        qsort(times, (size_t)iters, sizeof *times, compare_double);
        double median = times[iters / 2];
        printf("%s: batch %ld, %d threads, %ld %s passes: %.1f images/s (median %.2f ms, best "
               "%.2f ms per batch)\n",
               argv[optind], batch, bd_threads_get(), iters, training ? "training" : "forward",
               (double)batch / median, 1e3 * median, 1e3 * times[0]);
        if (profiling)
            print_profile(g, p.ex, &pr, iters);
    }
    free(pr.seconds);
    free(pr.shapes);
    free(times);
    bd_tensor_free(x);
    bd_exec_free(p.ex);
    bd_train_free(p.tr);
    free(p.params);
    bd_graph_free(g);
    return rc;
}
