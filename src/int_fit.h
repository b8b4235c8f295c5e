/* The int codec's fit (codec.h; docs/method.md, "Scalar formats"): a grid
 * per output row (or one for the tensor) and every weight's code on it.
 *
 *   weight:   round to nearest on the row's min/max (the usual baseline);
 *   act:      the grid's ends are clipped (each by its own ratio) to
 *             minimise the row's output error (w - w^)^T H (w - w^), H the
 *             layer's full-row input Gram: every pair of ratios is weighed
 *             by H's diagonal, the best few by the whole H;
 *   feedback: act's grids, then the codes chosen left to right with the
 *             error of each column fed onto the columns not yet quantized
 *             (feedback.h's pass, the same as PQ's, with d = 1: GPTQ);
 *             kept only where it lowers the output error. */
#ifndef BD_INT_FIT_H
#define BD_INT_FIT_H

#include "codec.h"
#include "feedback.h"
#include "progress.h"

/* Clipping ratios the act fit tries for each end: 1 down to 0.05. */
enum { BD_INT_CLIP_STEPS = 20 };

/* Ratio i (0 .. BD_INT_CLIP_STEPS - 1) of those, 1 first; the activation
 * quantizer's clipping search tries the same (act_quant.h). */
double bd_int_clip_ratio(int i);

/* Fits fl->w (rows x L, row-major as pq.h's layout with d = 1) with the
 * grid of `spec`, each row r at row_bits[r] bits when row_bits is given
 * (spec->per_channel then, spec->bits unused), else at spec->bits; fl->h
 * may be NULL for the weight objective and must be given for the others.
 * Every objective fits a row at b bits as it fits the rows of a layer of b
 * bits. Fills q (format, ints, k, d, n, nscales, scales, zeros, codes,
 * row_bits, objective) and the decoded rows into w_hat (rows x L). */
bd_status bd_int_fit(const bd_feedback_layer *fl, const bd_int_spec *spec,
                     const int32_t *row_bits, bd_objective objective,
                     const bd_progress *progress, bd_qlayer *q, float *w_hat);

/* Rounds rows x L weights w (same layout) to q's grid, each row at its own
 * bits: codes (may be NULL) and the decoded values into w_hat. Quant-Noise
 * fake-quantizes with it between refreshes of the grid. */
void bd_int_round(const bd_qlayer *q, int64_t rows, int64_t L, const float *w, int32_t *codes,
                  float *w_hat);

#endif
