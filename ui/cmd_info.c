/* bitdown info MODEL: the model's inputs, outputs and quantizable layers. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "layers.h"
#include "onnx_io.h"

static const char help[] =
    "usage: bitdown info MODEL\n\n"
    "Prints the model's inputs and outputs and, for every quantizable layer (Conv,\n"
    "Gemm, MatMul with a constant weight), its name, kind, weight shape, number of\n"
    "parameters and fp32 size; then the totals. Sizes are in MB = 2^20 bytes.\n";

static void print_value(const char *what, const bd_value *v)
{
    char shape[128];
    printf("%-7s %s %s %s\n", what, v->name, bd_dtype_name(v->dtype ? v->dtype : BD_F32),
           bd_value_shape_str(v, shape, sizeof shape));
}

int cli_info(int argc, char **argv)
{
    static const struct option opts[] = {{"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        if (c == 'h') {
            fputs(help, stdout);
            return CLI_OK;
        }
        return cli_usage_error("info", "unknown option");
    }
    if (optind != argc - 1)
        return cli_usage_error("info", "expects one MODEL");
    const char *path = argv[optind];
    bd_graph *g;
    bd_status s = bd_onnx_load(path, &g);
    if (s != BD_OK)
        return cli_report(s);
    bd_layer *layers;
    int n;
    if ((s = bd_layers_find(g, &layers, &n)) != BD_OK) {
        bd_graph_free(g);
        return cli_report(s);
    }
    printf("model   %s (opset %lld, %d nodes, producer %s)\n", path, (long long)g->opset,
           g->nnodes, g->producer_name ? g->producer_name : "?");
    for (int i = 0; i < g->ninputs; i++)
        print_value("input", &g->values[g->inputs[i]]);
    for (int i = 0; i < g->noutputs; i++)
        print_value("output", &g->values[g->outputs[i]]);
    printf("\n%-28s %-9s %-18s %10s %10s\n", "layer", "kind", "weight", "params", "fp32 MB");
    int64_t layer_params = 0;
    for (int i = 0; i < n; i++) {
        const bd_tensor *w = g->values[layers[i].weight].init;
        char shape[64], kind[32];
        int64_t p = bd_layer_params(&layers[i]);
        layer_params += p;
        printf("%-28s %-9s %-18s %10lld %10.4f\n", layers[i].name,
               bd_layer_kind(&layers[i], kind, sizeof kind),
               bd_shape_str(w->ndim, w->dims, shape, sizeof shape), (long long)p,
               (double)p * 4 / (1 << 20));
    }
    int64_t all = 0, bytes = 0;
    for (int v = 0; v < g->nvalues; v++)
        if (g->values[v].init) {
            all += bd_tensor_count(g->values[v].init);
            bytes += (int64_t)bd_tensor_nbytes(g->values[v].init);
        }
    printf("\n%d quantizable layers, %lld parameters (%.4f MB fp32)\n", n, (long long)layer_params,
           (double)layer_params * 4 / (1 << 20));
    printf("all initializers: %lld values, %.4f MB as stored\n", (long long)all,
           (double)bytes / (1 << 20));
    free(layers);
    bd_graph_free(g);
    return CLI_OK;
}
