/* Convolution on NCHW planes, 16 neighbouring output pixels per vector,
 * for any group count (RegNet's and ResNeXt's groups of 8 to 32 channels):
 * each input plane is copied once into a zero-bordered buffer (bordered.h),
 * and a register tile of 6 output channels by 4 blocks of 16 pixels sums
 * every input channel's taps, a broadcast weight and a plain load per step.
 * Where channels are few or not multiples of 16 (a first layer's 3 colour
 * planes, EfficientNetV2's 24) the direct kernel's 16-channel blocks
 * (conv_direct.h) would pad them, and for a short sum its transposes cost
 * as much as the products; here outputs land in NCHW as they are, and only
 * rows narrower than a vector leave lanes idle. Without AVX-512 it is not
 * available. */
#ifndef BD_CPU_CONV_PLANES_H
#define BD_CPU_CONV_PLANES_H

#include "conv.h"

/* Whether bd_conv_planes handles g: AVX-512 in the build and the CPU, at
 * most 784 taps per group (16 channels of 7x7), stride 1 or 2 across. */
int bd_conv_planes_supported(const bd_conv_geom *g);

/* y[N][M][OH][OW] = conv(x, w) with the epilogue applied, as bd_conv2d;
 * BD_EUNSUPPORTED where bd_conv_planes_supported(g) is false. */
bd_status bd_conv_planes(const bd_conv_geom *g, const float *x, const float *w,
                         const bd_epilogue *ep, float *y);

#endif
