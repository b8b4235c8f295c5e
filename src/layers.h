/* The quantizable layers of a graph: every Conv, Gemm and MatMul whose
 * weight is a constant, named the way PyTorch users know them.
 *
 * Naming (docs/method.md, "Layout"): the weight initializer's name without ".weight"
 * ("layer3.2.conv2"); if the exporter generated that name ("onnx::Conv_206",
 * as after BatchNorm folding), the module path in the node's name
 * ("/layer3/layer3.2/conv2/Conv" -> "layer3.2.conv2"); failing both, the node
 * name, or "op_N". Names are made unique with a "#2"-style suffix.
 *
 * Layout: a weight is `rows` output rows of `row_len` values each. Conv
 * W[Cout][Cin/g][kh][kw] gives Cout rows of Cin/g*kh*kw contiguous values;
 * Gemm with transB=1 stores B as [N][K] (N rows of K, contiguous); Gemm with
 * transB=0 and MatMul store [K][N], so output row j is column j (stride N). */
#ifndef BD_LAYERS_H
#define BD_LAYERS_H

#include <stdint.h>

#include "graph.h"

enum { BD_LAYER_NAME_MAX = 128 };

typedef struct bd_layer {
    char name[BD_LAYER_NAME_MAX];
    char op[16]; /* Conv, Gemm or MatMul */
    int node;    /* index in g->nodes */
    int weight; /* value id of the weight initializer */
    int bias;   /* value id of the bias initializer, or -1 */
    int64_t rows, row_len;
    int64_t kh, kw; /* 1 x 1 for Gemm / MatMul */
    int64_t groups;
    int transposed; /* rows are columns of the stored matrix (stride rows) */
} bd_layer;

/* Fills a new array with every quantizable layer, in graph order. */
bd_status bd_layers_find(const bd_graph *g, bd_layer **layers, int *n);

int64_t bd_layer_params(const bd_layer *l);

/* "conv 3x3", "conv 1x1", "dw 3x3", "gconv 3x3" or "fc". */
const char *bd_layer_kind(const bd_layer *l, char *buf, size_t cap);

#endif
