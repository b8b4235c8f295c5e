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
    for (int64_t r = 0; r < b.rows; r++) {
        float *row = buf + r * b.stride;
        const int64_t iy = r - g->pad_t;
        if (iy < 0 || iy >= g->h) {
            for (int64_t c = 0; c < b.stride; c += VL)
                _mm512_store_ps(row + c, zero);
            continue;
        }
        const float *in = x + iy * g->w;
        if (g->sw == 1) {
            /* zeros, then the row over them: no lane masks to work out
             * but the last vector's */
            for (int64_t c = 0; c < b.stride; c += VL)
                _mm512_store_ps(row + c, zero);
            float *at = row + g->pad_l;
            int64_t c = 0;
            for (; c + VL <= g->w; c += VL)
                _mm512_storeu_ps(at + c, _mm512_loadu_ps(in + c));
            const __mmask16 last = bd_lanes(0, g->w - c);
            _mm512_mask_storeu_ps(at + c, last, _mm512_maskz_loadu_ps(last, in + c));
            continue;
        }
        for (int64_t ph = 0; ph < g->sw; ph++)
            for (int64_t q = 0; q < b.wq; q += VL) {
                /* lane i holds padded column sw * (q + i) + ph */
                const int64_t at = g->sw * q + ph - g->pad_l;
                __m512 v = _mm512_maskz_loadu_ps(bd_lanes(-at, g->w - at), in + at);
                if (g->sw == 2)
                    v = _mm512_permutex2var_ps(
                        v, even,
                        _mm512_maskz_loadu_ps(bd_lanes(-at - VL, g->w - at - VL), in + at + VL));
                _mm512_store_ps(row + ph * b.wq + q, v);
            }
    }
}

#endif
