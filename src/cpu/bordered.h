/* Zero-bordered copies of input planes, for the kernels that keep 16
 * neighbouring output pixels in a vector (conv_depthwise.c, conv_planes.c):
 * every tap of such a block reads 16 neighbouring floats, with no bounds
 * check and no gather. Only where __AVX512F__ is defined. */
#ifndef BD_CPU_BORDERED_H
#define BD_CPU_BORDERED_H

#include "conv.h"

/* The bordered copy of one plane: each padded row split by column phase
 * (column % sw) into sw runs of wq floats, so the inputs one tap reads for
 * 16 neighbouring outputs are neighbours at stride 1 or 2 alike; wide
 * enough that the last block of 16 outputs reads whole vectors (its extra
 * lanes are never stored), and wq a whole number of vectors. Strides 1 and
 * 2 across only. */
typedef struct bd_bordered {
    int64_t rows, wq, stride; /* rows, floats per phase, floats per row */
} bd_bordered;

bd_bordered bd_bordered_size(const bd_conv_geom *g);

/* Plane x ([h][w]) into buf (rows * stride floats, 64-byte aligned). */
void bd_border_copy(const bd_conv_geom *g, bd_bordered b, const float *x, float *buf);

/* The floats from a block's first output pixel, in a bordered plane, to
 * what tap (ki, kj) reads for it. */
static inline int64_t bd_bordered_tap(const bd_conv_geom *g, bd_bordered b, int64_t ki,
                                      int64_t kj)
{
    const int64_t col = kj * g->dw;
    return ki * g->dh * b.stride + col % g->sw * b.wq + col / g->sw;
}

#endif
