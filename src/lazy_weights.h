/* Quantized weights kept as stored while a graph runs (docs/format.md,
 * "Inference"): every quantized layer keeps its packed codes and its
 * codebook or scales, and its weight tensor is a view of one shared scratch
 * buffer, decoded by an executor hook just before the node that reads it.
 * An inference then holds the compressed model, one dense layer and the
 * activations instead of every dense weight.
 *
 * The graph is borrowed and must outlive the set; once attached, the
 * executor must run one node at a time on this graph (no other executor,
 * no concurrent runs), since every quantized weight shares the scratch.
 * It must not be BD_EXEC_FROZEN, which would keep a re-laid copy of each
 * layer's decoding: every dense weight again. */
#ifndef BD_LAZY_WEIGHTS_H
#define BD_LAZY_WEIGHTS_H

#include "codec.h"
#include "exec.h"
#include "graph.h"
#include "layers.h"

typedef struct bd_lazy_weights bd_lazy_weights;

/* Takes the quantized layers (q[i].k > 0) of layers[0..n) of g: packs their
 * codes (or takes q[i].packed), moves their tables out of q[i] (which is
 * left empty) and replaces
 * each one's weight initializer by a view of the scratch, freeing the dense
 * data. On failure g and q are as they were. */
bd_status bd_lazy_weights_new(bd_graph *g, const bd_layer *layers, bd_qlayer *q, int n,
                              bd_lazy_weights **out);
/* Decodes the weights nodes read, on ex's runs. */
void bd_lazy_weights_attach(bd_lazy_weights *lw, bd_exec *ex);
/* Bytes it holds: packed codes, tables and the scratch. */
size_t bd_lazy_weights_bytes(const bd_lazy_weights *lw);
void bd_lazy_weights_free(bd_lazy_weights *lw);

#endif
