/* 3x3 stride-1 convolution by Winograd's minimal filtering F(2x2, 3x3):
 * each 2x2 block of outputs comes from a 4x4 patch of input, and in the
 * transformed domain the patch and the filter meet in 16 products where
 * the direct sum takes 36, so the multiply-adds are 16/36 of a direct
 * kernel's. The sum over input channels becomes 16 matrix products (one
 * per transformed position) of output channels by input channels by
 * tiles; the transforms on either side are a few additions per value.
 * docs/architecture.md gives the algebra. Its error against a sum in
 * double measured below the direct kernel's; the larger F(4x4, 3x3) would
 * save more products but its transforms' larger coefficients cost about a
 * digit. Without AVX-512 it is not available. */
#ifndef BD_CPU_CONV_WINOGRAD_H
#define BD_CPU_CONV_WINOGRAD_H

#include <stddef.h>

#include "conv.h"

/* Whether bd_conv_winograd handles g: AVX-512 in the build and the CPU,
 * one group, a 3x3 kernel at stride 1 and dilation 1 (any padding). */
int bd_conv_winograd_supported(const bd_conv_geom *g);

/* Whether bd_conv2d should take this path for g: supported and, for that
 * class of shapes, measured faster than the direct kernel. It depends on
 * g's shape, not its batch. */
int bd_conv_winograd_preferred(const bd_conv_geom *g);

/* Floats of g's weights transformed and laid out for the kernel;
 * bd_conv_winograd_pack writes them. The layout depends on g's channels
 * alone. */
size_t bd_conv_winograd_packed_floats(const bd_conv_geom *g);
void bd_conv_winograd_pack(const bd_conv_geom *g, const float *w, float *dst);

/* y[N][M][OH][OW] = conv(x, w) with the epilogue applied, as bd_conv2d;
 * packed, if not NULL, is w as bd_conv_winograd_pack laid it out, and w
 * is not read. BD_EUNSUPPORTED where bd_conv_winograd_supported(g) is
 * false. */
bd_status bd_conv_winograd(const bd_conv_geom *g, const float *x, const float *w,
                           const float *packed, const bd_epilogue *ep, float *y);

#endif
