#include "conv.h"

#ifdef __AVX512F__

#include "avx512.h"
#include "bordered.h"

enum { VL = 16 };

bd_bordered bd_bordered_size(const bd_conv_geom *g)
{
    const int64_t blocks = (g->ow + VL - 1) / VL, sw = g->sw;
    const int64_t wide = (g->w + g->pad_l + g->pad_r + sw - 1) / sw;
    const int64_t reach = blocks * VL + ((g->kw - 1) * g->dw) / sw;
    const int64_t wq = ((wide > reach ? wide : reach) + VL - 1) / VL * VL;
    return (bd_bordered){.rows = g->h + g->pad_t + g->pad_b, .wq = wq, .stride = sw * wq};
}

/* A vector at a time, masked loads taking the zeros outside the row: a
 * plane of a late layer is a few rows of a few columns, and a library call
 * per row had cost more than the products. */
void bd_border_copy(const bd_conv_geom *g, bd_bordered b, const float *x, float *buf)
{
    const __m512 zero = _mm512_setzero_ps();
    const __m512i even = _mm512_set_epi32(30, 28, 26, 24, 22, 20, 18, 16, 14, 12, 10, 8, 6, 4,
                                          2, 0);
    const __m512i odd = _mm512_add_epi32(even, _mm512_set1_epi32(1));
    const __m512i width = _mm512_set1_epi32((int)g->w), step = _mm512_set1_epi32(VL);
    for (int64_t r = 0; r < b.rows; r++) {
        float *row = buf + r * b.stride;
        const int64_t iy = r - g->pad_t;
        if (iy < 0 || iy >= g->h) {
            for (int64_t c = 0; c < b.stride; c += VL)
                _mm512_store_ps(row + c, zero);
            continue;
        }
        const float *in = x + iy * g->w;
        __m512i col = _mm512_add_epi32(bd_iota(), _mm512_set1_epi32((int)-g->pad_l));
        if (g->sw == 1) {
            for (int64_t q = 0; q < b.stride; q += VL) {
                _mm512_store_ps(row + q, _mm512_maskz_loadu_ps(bd_lanes_within(col, width),
                                                               in + q - g->pad_l));
                col = _mm512_add_epi32(col, step);
            }
            continue;
        }
        /* stride 2: the 32 columns under a vector of each phase are loaded
         * once and split into even and odd */
        for (int64_t q = 0; q < b.wq; q += VL) {
            const float *at = in + 2 * q - g->pad_l; /* lane i: columns 2i, 2i + 1 from at */
            const __m512 v0 = _mm512_maskz_loadu_ps(bd_lanes_within(col, width), at);
            col = _mm512_add_epi32(col, step);
            const __m512 v1 = _mm512_maskz_loadu_ps(bd_lanes_within(col, width), at + VL);
            col = _mm512_add_epi32(col, step);
            _mm512_store_ps(row + q, _mm512_permutex2var_ps(v0, even, v1));
            _mm512_store_ps(row + b.wq + q, _mm512_permutex2var_ps(v0, odd, v1));
        }
    }
}

#endif
