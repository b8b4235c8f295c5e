#include "fused.h"

#include <math.h>
#include <stdlib.h>

#include "fast_math.h"
#include "kernel_util.h"

void bd_fused_gelu(const float *x, int64_t n, float div, float add, float mul, float *y)
{
#pragma omp parallel for schedule(static) if (n >= BD_PARALLEL_MIN)
    for (int64_t c0 = 0; c0 < n; c0 += 4096)
        bd_gelu_span(x + c0, n - c0 < 4096 ? n - c0 : 4096, div, add, mul, y + c0);
}

void bd_fused_layer_norm(const float *x, int64_t rows, int64_t c, float eps, const float *scale,
                         int64_t nscale, const float *shift, int64_t nshift, float *y)
{
    const int64_t ss = nscale > 1, bs = nshift > 1; /* steps along the row */
#pragma omp parallel for schedule(static) if (rows * c >= BD_PARALLEL_MIN)
    for (int64_t r = 0; r < rows; r++) {
        const float *xr = x + r * c;
        float *yr = y + r * c; /* the row's d d, then its result */
        const float mean = (float)(bd_k_sum(xr, c, 1) / (double)c);
#pragma omp simd
        for (int64_t j = 0; j < c; j++)
            yr[j] = (xr[j] - mean) * (xr[j] - mean);
        const float sd = sqrtf((float)(bd_k_sum(yr, c, 1) / (double)c) + eps);
        if (ss && bs) { /* the usual: a scale and a shift per position; their indices
                         * computed from a step were gathers, half the kernel's time */
#pragma omp simd
            for (int64_t j = 0; j < c; j++)
                yr[j] = (xr[j] - mean) / sd * scale[j] + shift[j];
            continue;
        }
#pragma omp simd
        for (int64_t j = 0; j < c; j++) {
            float v = (xr[j] - mean) / sd;
            if (scale)
                v = v * scale[j * ss];
            if (shift)
                v = v + shift[j * bs];
            yr[j] = v;
        }
    }
}
