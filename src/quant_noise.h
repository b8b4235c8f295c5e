/* Quant-Noise (docs/method.md, "Quant-Noise"): during a training forward
 * pass a random subset of each quantizable weight's blocks, rate p, is
 * distorted the way quantization will distort it, and the rest pass
 * unchanged.
 *
 *   pq           block drop: a hit block is zeroed and the kept ones are
 *                scaled by 1/(1-p) (the proxy the paper's code uses);
 *   pq-centroid  a hit block becomes the centroid it is assigned to (the
 *                paper's exact noise); codebooks are refitted by weight
 *                k-means every `refresh` steps;
 *   intB         a hit weight becomes its B-bit fake-quantized value on the
 *                layer's grid (per output channel, asymmetric, min/max),
 *                refreshed every `refresh` steps; p = 1 is plain QAT.
 *
 * Blocks are the PQ stage's own: subvectors of d values along a row in
 * pq.h's layout, d from the layer's plan; an int "block" is one weight.
 *
 * The noisy weight is a temporary: bd_noise_apply writes it into the graph
 * for one forward and backward, bd_noise_restore puts the master weight
 * back and turns the gradient of the noisy weight into the master's:
 * kept values by the chain rule (the 1/(1-p) of block drop), hit values
 * straight through (their distortion has no useful derivative). The
 * optimiser then updates the master with that full gradient; the noisy
 * copy never replaces it. */
#ifndef BD_QUANT_NOISE_H
#define BD_QUANT_NOISE_H

#include <stdint.h>

#include "graph.h"
#include "layers.h"
#include "codec.h"
#include "plan.h"
#include "pq.h"
#include "tensor.h"

typedef enum bd_noise_kind {
    BD_NOISE_NONE = 0,
    BD_NOISE_PQ,          /* block drop */
    BD_NOISE_PQ_CENTROID, /* assigned centroid */
    BD_NOISE_INT          /* fake-quantized to `bits` */
} bd_noise_kind;

typedef struct bd_noise_spec {
    bd_noise_kind kind;
    double p;        /* the rate, in [0, 1] */
    int bits;        /* BD_NOISE_INT: 1..16 */
    char regime[16]; /* the blocks' layout: "small" or "large" (pq), "intB" */
    int refresh;     /* steps between codebook refits / grid refreshes (0: default) */
} bd_noise_spec;

enum { BD_NOISE_REFRESH_PQ = 100, BD_NOISE_REFRESH_INT = 1 };

/* "none", or "KIND:p=P[,regime=small|large][,refresh=N]" with KIND pq,
 * pq-centroid, int8, int4 (any intB, B = 1..16). p outside [0, 1], an
 * unknown kind or key fail, naming `where`. */
bd_status bd_noise_parse(const char *where, const char *text, bd_noise_spec *s);

/* "pq:p=0.1,regime=small" (or "none"). */
void bd_noise_describe(const bd_noise_spec *s, char *buf, size_t cap);

typedef struct bd_noise bd_noise;

/* Noise for layers[0..n) of g as plan says (plan NULL: the plan of the
 * spec's regime). Layers the plan leaves in fp32 get none; a layer whose
 * format does not match the kind (pq noise on an int layer, or int noise
 * of other bits) fails, naming it. */
bd_status bd_noise_new(bd_noise **out, const bd_graph *g, const bd_layer *layers, int n,
                       const bd_layer_plan *plan, const bd_noise_spec *spec);
void bd_noise_free(bd_noise *nz);

/* How many layers get noise, and each one's block size (1 for int). */
int bd_noise_layer_count(const bd_noise *nz);
int bd_noise_block(const bd_noise *nz, int i); /* i indexes layers[]; 0: no noise */

/* The hit mask of layer i at a step: mask[b] = 1 for every hit block b (in
 * pq.h's subvector order), from the stream (seed, step, i). */
void bd_noise_mask(const bd_noise *nz, int i, uint64_t seed, int64_t step, uint8_t *mask);
int64_t bd_noise_blocks(const bd_noise *nz, int i);

/* Writes the noisy weights of `step` into g (keeping the masters); refits
 * codebooks or grids first when the step is due for it. */
bd_status bd_noise_apply(bd_noise *nz, bd_graph *g, uint64_t seed, int64_t step);

/* The next bd_noise_apply refits every codebook and grid, due or not. The
 * trainer calls it at every epoch's start, so a run resumed from an epoch's
 * checkpoint refits exactly where an uninterrupted one does. */
void bd_noise_refit_next(bd_noise *nz);

/* For an engine that applies the noise itself (a GPU's, device.h) with
 * bd_noise_mask's masks and the CPU's quantizers: whether bd_noise_apply
 * at `step` would refit the codebooks or grids (their first use, after
 * bd_noise_refit_next, and every `refresh` steps), and the refit itself, of
 * the master weights in g, as bd_noise_apply would do it. */
int bd_noise_refit_due(const bd_noise *nz, int64_t step);
bd_status bd_noise_refit(bd_noise *nz, const bd_graph *g, uint64_t seed, int64_t step);
/* Layer i's current quantizer, once fitted: pq-centroid's codebook (k x d,
 * as weight k-means left it), or int's grid (scales and zeros per row of
 * the layout); NULL otherwise. */
const bd_pq_result *bd_noise_codebook(const bd_noise *nz, int i);
const bd_qlayer *bd_noise_grid(const bd_noise *nz, int i);

/* Puts the master weights back into g; grads[i] (the gradient of layer i's
 * noisy weight, shaped like it; NULL to skip) becomes the master's. */
void bd_noise_restore(bd_noise *nz, bd_graph *g, bd_tensor *const *grads);

/* The fully quantized model of the noise's quantizer, for evaluation: every
 * noised layer's weight quantized as if p were 1, without block drop's
 * zeros (pq kinds: the current codebooks; int: the current grid). Written
 * into g; bd_noise_restore undoes it. */
bd_status bd_noise_apply_all(bd_noise *nz, bd_graph *g);

#endif
