/* Stored size, as the paper counts it: codes bit-packed at log2(k) or b
 * bits, fp16 codebooks or scales (codec.h), and fp32 for everything else (biases, BatchNorm,
 * layers left unquantized). Only floating-point initializers count as
 * parameters; integer constants (shapes) are not model weights. */
#ifndef BD_SIZE_H
#define BD_SIZE_H

#include <stdint.h>

#include "graph.h"
#include "layers.h"
#include "codec.h"

typedef struct bd_model_size {
    int64_t fp32_bytes;     /* the uncompressed model: every parameter in fp32 */
    int64_t code_bytes;     /* codes of the quantized layers */
    int64_t codebook_bytes; /* their fp16 codebooks, scales and zero points */
    int64_t other_bytes;    /* fp32 for every other parameter */
    int64_t compressed_bytes;
    double ratio;           /* fp32_bytes / compressed_bytes */
} bd_model_size;

/* q[i] for layers[i]; NULL or k == 0 means not quantized. */
void bd_model_size_compute(const bd_graph *g, const bd_layer *layers, int nlayers,
                           const bd_qlayer *const *q, bd_model_size *out);

static inline double bd_mb(int64_t bytes) { return (double)bytes / (1 << 20); }

#endif
