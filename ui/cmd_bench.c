/* bitdown bench MODEL: forward throughput on synthetic input. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli.h"
#include "exec.h"
#include "threads.h"

static const char help[] =
    "usage: bitdown bench MODEL [--batch B] [--threads T] [--iters N] [--size HxW]\n\n"
    "Measures forward throughput on random input of the model's input shape (batch\n"
    "B, default 1), after two warm-up passes, and prints images per second and\n"
    "milliseconds per batch (median and best of N passes, default 10).\n\n"
    "  --size HxW        spatial size where the model leaves it open\n";

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

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

int cli_bench(int argc, char **argv)
{
    static const struct option opts[] = {
        {"help", no_argument, 0, 'h'},          {"batch", required_argument, 0, 'b'},
        {"threads", required_argument, 0, 't'}, {"iters", required_argument, 0, 'n'},
        {"size", required_argument, 0, 's'},    {0, 0, 0, 0}};
    long batch = 1, threads = 0, iters = 10, h = 0, w = 0;
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 'h': fputs(help, stdout); return CLI_OK;
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
        default: return cli_usage_error("bench", "unknown option");
        }
    }
    if (optind != argc - 1)
        return cli_usage_error("bench", "expects one MODEL");
    if (threads)
        bd_threads_set((int)threads);
    bd_graph *g;
    bd_status s = cli_load_model(argv[optind], &g, 0);
    if (s != BD_OK)
        return cli_report(s);
    bd_tensor *x = NULL;
    bd_exec *ex = NULL;
    double *times = calloc((size_t)iters, sizeof *times);
    int rc = input_shape(g, batch, h, w, &x);
    if (rc == CLI_OK && (s = bd_exec_new(&ex, g, BD_EXEC_FUSE)) != BD_OK)
        rc = cli_report(s);
    for (long i = -2; rc == CLI_OK && i < iters; i++) {
        bd_tensor *y;
        double t0 = now();
        if ((s = bd_exec_run1(ex, x, &y)) != BD_OK) {
            rc = cli_report(s);
            break;
        }
        if (i >= 0)
            times[i] = now() - t0;
        bd_tensor_free(y);
    }
    if (rc == CLI_OK) {
        qsort(times, (size_t)iters, sizeof *times, compare_double);
        double median = times[iters / 2];
        printf("%s: batch %ld, %d threads, %ld passes: %.1f images/s (median %.2f ms, best "
               "%.2f ms per batch)\n",
               argv[optind], batch, bd_threads_get(), iters, (double)batch / median,
               1e3 * median, 1e3 * times[0]);
    }
    free(times);
    bd_tensor_free(x);
    bd_exec_free(ex);
    bd_graph_free(g);
    return rc;
}
