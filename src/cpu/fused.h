/* Op chains the executor runs as one step (exec.c, BD_EXEC_FUSE), as
 * exporters spell them out: each is one pass over its input instead of a
 * pass per op (ConvNeXt's LayerNorm is nine ops, its GELU five), with the
 * ops' own arithmetic in their order, so a fused run gives the same bits
 * as the ops one by one. */
#ifndef BD_CPU_FUSED_H
#define BD_CPU_FUSED_H

#include <stdint.h>

#include "fast_math.h"

/* GELU through Erf: y = x (erf(x / div) + add) mul, for x[n]; the
 * exporter's Div, Erf, Add, Mul, Mul (div sqrt 2, add 1, mul 0.5). */
void bd_fused_gelu(const float *x, int64_t n, float div, float add, float mul, float *y);

/* The same on one thread, for a caller that has its own (a product's
 * epilogue, tile by tile): the same arithmetic, so the same bits. */
static inline void bd_gelu_span(const float *x, int64_t n, float div, float add, float mul,
                                float *y)
{
    /* omp simd: -O2 alone vectorises only loops without a remainder */
#pragma omp simd
    for (int64_t j = 0; j < n; j++)
        y[j] = x[j] * (bd_erff(x[j] / div) + add) * mul;
}

/* LayerNorm over the last axis, rows of c values: with m the row's mean
 * (ReduceMean's, bd_k_sum) and d = x - m, v the mean of d d,
 * y = d / sqrt(v + eps) * scale + shift, scale and shift per position of
 * the row (nscale, nshift: c, or 1 for one value; NULL: none). The
 * exporter's ReduceMean, Sub, Pow(2), ReduceMean, Add, Sqrt, Div, Mul, Add. */
void bd_fused_layer_norm(const float *x, int64_t rows, int64_t c, float eps, const float *scale,
                         int64_t nscale, const float *shift, int64_t nshift, float *y);

#endif
