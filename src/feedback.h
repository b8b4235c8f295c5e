/* Error feedback across a row's blocks (docs/method.md, "Error feedback").
 *
 * The d x d Gram of pq.h sees correlations inside one block only. With the
 * full row's Gram H = sum x x^T (L x L, L the row length; one per conv
 * group), a row's blocks are quantized left to right and, after each one,
 * its output error is pushed onto the blocks not yet quantized through the
 * damped inverse (the GPTQ update, done a block of d columns at a time as
 * GPTVQ does for vector quantization):
 *     W[:, rest] -= E * U_bb^-1 * U_b,rest,   H^-1 = U^T U (U upper),
 * and block b's values are quantized in the metric (U_bb^T U_bb)^-1, the
 * exact increase of the objective when the later blocks compensate.
 * The pass takes its quantizer as a callback, so a PQ codebook and a scalar
 * grid share it. */
#ifndef BD_FEEDBACK_H
#define BD_FEEDBACK_H

#include <stdint.h>

#include "pq.h"
#include "progress.h"
#include "status.h"

/* The longest row error feedback takes: its L x L matrices, in double, are
 * half a GiB there. Longer rows use the block objective (said so). */
enum { BD_FEEDBACK_MAX_LEN = 8192 };

/* Feedback passes (each followed by a refit of the codebook) after the
 * block fit: the second still gains on correlated inputs, a third rarely
 * (docs/benchmarks.md). */
enum { BD_FEEDBACK_PASSES = 2 };

/* The rows of one layer and their full-row Gram matrices: rows x L values
 * (row-major, as pq.h's subvectors are), rows split evenly into `groups`
 * groups, h[gi] the L x L Gram (finished, bd_gram with d = L) of group gi's
 * inputs. */
typedef struct bd_feedback_layer {
    const float *w;
    int64_t rows, L, groups;
    const bd_gram *h;
} bd_feedback_layer;

/* Quantizes one block column: wb holds `rows` vectors of d values (the
 * current, fed-back values), metric the d x d matrix whose quadratic form
 * measures a vector's error; writes the quantized vectors into qb and
 * remembers whatever codes it chose for block `block` of each row. */
typedef bd_status (*bd_feedback_quantizer)(void *ctx, int64_t group, int64_t block,
                                           const float *wb, int64_t rows, int d,
                                           const double *metric, float *qb);

/* One left-to-right pass over every group's blocks of size d. Fails with
 * BD_EINVAL when L is not a multiple of d or exceeds BD_FEEDBACK_MAX_LEN. */
bd_status bd_feedback_pass(const bd_feedback_layer *fl, int d, bd_feedback_quantizer quantize,
                           void *ctx, const bd_progress *progress);

/* sum_r (w_r - w^_r)^T H (w_r - w^_r) over every row, W^ given as rows x L. */
double bd_feedback_objective(const bd_feedback_layer *fl, const float *w_hat);

/* Its terms: err[r] for row r. */
bd_status bd_feedback_row_errors(const bd_feedback_layer *fl, const float *w_hat, double *err);

/* The d x d block Gram (pq.h's G = sum over blocks of the diagonal d x d
 * blocks of every group's H), so one capture of H serves both objectives. */
bd_status bd_feedback_block_gram(const bd_feedback_layer *fl, int d, bd_gram *out);

/* PQ with feedback: from a codebook and codes fitted by bd_pq_fit (in
 * centroids[k][d] and assign[rows * L / d]), `passes` rounds of a feedback
 * pass (new codes) and a refit of the codebook to those codes under the
 * full objective (preconditioned conjugate gradients on its normal
 * equations); the best of the start and every round is kept, by the full
 * objective, so the result is never worse than the start. *before and
 * *after (either may be NULL) get that objective. */
bd_status bd_feedback_pq(const bd_feedback_layer *fl, int d, int k, float *centroids,
                         int32_t *assign, int passes, const bd_progress *progress,
                         double *before, double *after);

#endif
