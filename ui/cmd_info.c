/* bitdown info MODEL: the model's inputs, outputs and quantizable layers. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "compressed.h"
#include "layers.h"
#include "size.h"

static const char help[] =
    "usage: bitdown info MODEL\n\n"
    "Prints the model's inputs and outputs and, for every quantizable layer (Conv,\n"
    "Gemm, MatMul with a constant weight), its name, kind, weight shape, number of\n"
    "parameters and fp32 size; then the totals. For a compressed model (written by\n"
    "'bitdown quantize') also each layer's d, k, bits per weight, stored size and\n"
    "relative error, and the compression ratio, then the file's size on disk and\n"
    "its ratio to the original model's file (the one it names, when that is\n"
    "there). Sizes are in MB = 2^20 bytes.\n";

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
        return cli_bad_option("info", argv);
    }
    if (optind != argc - 1)
        return cli_usage_error("info", "expects one MODEL");
    const char *path = argv[optind];
    bd_graph *g;
    bd_qlayer *q = NULL;
    int nq = 0;
    bd_status s = bd_model_load(path, &g, &q, &nq);
    if (s != BD_OK)
        return cli_report(s);
    bd_layer *layers;
    int n;
    if ((s = bd_layers_find(g, &layers, &n)) != BD_OK) {
        bd_graph_free(g);
        return cli_report(s);
    }
    const bd_qlayer **qp = calloc((size_t)n + 1, sizeof *qp);
    int quantized = 0;
    for (int i = 0; qp && i < n && i < nq; i++)
        if (q[i].k > 0) {
            qp[i] = &q[i];
            quantized++;
        }
    printf("model   %s (opset %lld, %d nodes, producer %s)\n", path, (long long)g->opset,
           g->nnodes, g->producer_name ? g->producer_name : "?");
    for (int i = 0; i < g->ninputs; i++)
        print_value("input", &g->values[g->inputs[i]]);
    for (int i = 0; i < g->noutputs; i++)
        print_value("output", &g->values[g->outputs[i]]);
    printf("\n%-28s %-9s %-18s %10s %10s", "layer", "kind", "weight", "params", "fp32 MB");
    if (quantized)
        printf(" %5s %6s %7s %10s %9s", "d", "k", "bits/w", "stored MB", "rel err");
    printf("\n");
    int64_t layer_params = 0;
    for (int i = 0; i < n; i++) {
        const bd_tensor *w = g->values[layers[i].weight].init;
        char shape[64], kind[32];
        int64_t p = bd_layer_params(&layers[i]);
        layer_params += p;
        printf("%-28s %-9s %-18s %10lld %10.4f", layers[i].name,
               bd_layer_kind(&layers[i], kind, sizeof kind),
               bd_shape_str(w->ndim, w->dims, shape, sizeof shape), (long long)p, bd_mb(p * 4));
        char bits[32];
        if (qp && qp[i]) {
            char err[32] = "-";
            if (qp[i]->rel_error >= 0)
                snprintf(err, sizeof err, "%.4f", qp[i]->rel_error);
            char d[8], k[8];
            bd_qlayer_dk(qp[i], d, k);
            printf(" %5s %6s %7s %10.4f %9s", d, k,
                   bd_bits_str(bd_qlayer_bits_per_weight(qp[i]), bits, sizeof bits),
                   bd_mb(bd_qlayer_bytes(qp[i])), err);
        } else if (quantized) {
            printf(" %5s %6s %7s %10.4f %9s", "-", "-",
                   bd_bits_str(BD_FLOAT_BITS, bits, sizeof bits), bd_mb(p * 4), "-");
        }
        printf("\n");
    }
    bd_model_size size;
    bd_model_size_compute(g, layers, n, qp, &size);
    printf("\n%d quantizable layers, %lld parameters (%.4f MB fp32)\n", n, (long long)layer_params,
           bd_mb(layer_params * 4));
    printf("all parameters: %.4f MB fp32\n", bd_mb(size.fp32_bytes));
    if (quantized) {
        /* the file against the original it names (when that is still there) */
        bd_disk_size disk;
        char sizes[256];
        bd_disk_size_of(path, bd_graph_meta(g, BD_META_TEACHER), &disk);
        printf("compressed: %d layers quantized, %.4f MB (codes %.4f + codebooks %.4f + fp32 rest "
               "%.4f), ratio %.2fx; %s\n",
               quantized, bd_mb(size.compressed_bytes), bd_mb(size.code_bytes),
               bd_mb(size.codebook_bytes), bd_mb(size.other_bytes), size.ratio,
               bd_disk_size_str(&disk, NULL, sizes, sizeof sizes));
    }
    free(qp);
    for (int i = 0; i < nq; i++)
        bd_qlayer_free(&q[i]);
    free(q);
    free(layers);
    bd_graph_free(g);
    return CLI_OK;
}
