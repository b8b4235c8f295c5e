/* The compressed file is ONNX (docs/format.md, format packed/3): all codes
 * are one bit-packed uint8 string that a few standard int64 operators
 * unpack (bits, a MatMul by powers of two per code width) and Split per
 * layer; each quantized weight is then Gather(fp16 centroids) -> Reshape
 * (pq) or (u - z) * s on fp16 scales (int), [Transpose for Gemm transB=0
 * and MatMul], the fp16 tables of one shape stored as one and Split, so any
 * ONNX runtime runs it and the file's tensors are the compressed size.
 * Per-layer choices go in metadata_props under "bitdown.layers".
 *
 * Export builds such a graph from a student whose quantized layers hold
 * decoded weights; import recognises the pattern (and those of formats
 * packed/2 and pq/1) in a loaded graph, replaces it by the dense decoded
 * weight (so the executor and every other stage see a plain initializer)
 * and gives the codes and codebooks or grids back. */
#ifndef BD_COMPRESSED_H
#define BD_COMPRESSED_H

#include "graph.h"
#include "layers.h"
#include "codec.h"

#define BD_META_FORMAT "bitdown.format"
/* A line "INDEX o=act;e=0.01;i=37;t=1.25" per quantized layer, INDEX its
 * place in layer order (bd_layers_find). */
#define BD_META_LAYERS "bitdown.layers"
/* Files before packed/3: a key per layer, "bitdown.layer.NAME". */
#define BD_META_LAYER_PREFIX "bitdown.layer."
/* The original model a compressed file was made from (its path), so that
 * loading the file resumes the work with the real teacher. */
#define BD_META_TEACHER "bitdown.teacher"

/* A new graph: a copy of `student` in which every layer i with q[i] != NULL
 * has its weight initializer replaced by the decoding expression of q[i],
 * and a "bitdown.layers" line describing it (other metadata is kept; stale
 * bitdown.layer* keys are not). layers[] must be those of student
 * (bd_layers_find). Fails, naming the layer, if a weight is shared by other
 * nodes, if a centroid is not a float16 value, or if the student's weight is
 * not decode(q[i]) bit for bit (it was changed after quantization). Nodes
 * come out unnamed, every value but the graph's inputs and outputs and the
 * layers' weights short-named, attributes at their defaults left out. */
bd_status bd_compressed_export(const bd_graph *student, const bd_layer *layers, int nlayers,
                               const bd_qlayer *const *q, bd_graph **out);

/* Recognises every decoding expression in g (packed codes unpacked and
 * split, or format 1's uint8/uint16 codes, then a Gather from a float16
 * table or a piece of one, or an int grid, intermediate values read by
 * nothing else), replaces it by the weight it computes, and returns for each layer
 * of the rewritten graph (in bd_layers_find order) its bd_qlayer, or an
 * all-zero one (k == 0) for a layer that is not quantized, including one
 * whose expression cuts rows another way than bitdown's layout. *q is an
 * array of *nlayers entries (bd_qlayer_free each, then free). d and k come
 * from the codebook; objective, rel_error (-1 when absent), history and
 * seconds from the metadata (history only from format 1 files), whose
 * bitdown.* keys are then removed. A
 * malformed expression (codes out of range, sizes that do not agree) or
 * metadata value fails with a message naming the tensor or key, leaving g
 * as it was (except when memory runs out after the rewrite, which leaves
 * the same model with plain weights). */
bd_status bd_compressed_import(bd_graph *g, bd_qlayer **q, int *nlayers);

/* Loads an ONNX file, plain or compressed: bd_onnx_load + import. */
bd_status bd_model_load(const char *path, bd_graph **g, bd_qlayer **q, int *nlayers);

/* The same without ever holding every dense weight: each quantized layer's
 * weight is computed once to check it against its codes, then kept as a
 * tensor of its shape whose contents are undefined, which bd_lazy_weights_new
 * (lazy_weights.h) must replace before the graph runs. The layers' codes
 * come packed (q[i].packed, q[i].codes NULL), for bd_lazy_weights_new only. Fails with
 * BD_EUNSUPPORTED where a weight would have to stay dense (an expression
 * not in bitdown's layout): load such a file with bd_model_load. */
bd_status bd_model_load_lazy(const char *path, bd_graph **g, bd_qlayer **q, int *nlayers);

#endif
