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

/* A written model file's size on disk beside the original model file's:
 * what a user compares, where bd_model_size counts the parameters alone
 * (the payload; a file adds the graph, names and metadata). */
typedef struct bd_disk_size {
    int64_t bytes;          /* the file's; -1 when it cannot be read */
    int64_t original_bytes; /* the original's; -1 when unknown or not there */
    double ratio;           /* original_bytes / bytes; 0 when either is unknown */
} bd_disk_size;

/* original may be NULL (unknown). */
void bd_disk_size_of(const char *path, const char *original, bd_disk_size *out);
/* "0.2815 MB on disk, ratio 1.05x to the original file (0.2958 MB)", or
 * without the original "0.2815 MB on disk"; with the payload (may be NULL:
 * a decoded file's is its fp32 size) "...; payload 0.2792 MB, ratio
 * 1.06x" after it. */
const char *bd_disk_size_str(const bd_disk_size *d, const bd_model_size *payload, char *buf,
                             size_t cap);

#endif
