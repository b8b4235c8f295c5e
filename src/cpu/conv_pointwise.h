/* Pointwise convolution (1x1 kernel, stride 1, no padding, one group) on
 * NCHW as it lies: each image is the product Y[M][HW] = W[M][C] X[C][HW],
 * with 16 neighbouring pixels per vector register. The input is not
 * re-laid (but for rows padded to whole vectors in deep layers whose
 * planes are not), the weights are broadcast from the model's own layout, and
 * outputs need no transpose, so the epilogue is a few instructions per
 * vector: where a pointwise layer has few input channels (MobileNets'
 * expansions) those re-layouts and transposes had cost as much as the
 * products. Without AVX-512 it is not available. */
#ifndef BD_CPU_CONV_POINTWISE_H
#define BD_CPU_CONV_POINTWISE_H

#include "conv.h"

/* Whether bd_conv_pointwise handles g: AVX-512 in the build and the CPU,
 * a 1x1 kernel at stride 1 without padding, one group. */
int bd_conv_pointwise_supported(const bd_conv_geom *g);

/* y[N][M][H][W] = conv(x, w) with the epilogue applied, as bd_conv2d;
 * BD_EUNSUPPORTED where bd_conv_pointwise_supported(g) is false. */
bd_status bd_conv_pointwise(const bd_conv_geom *g, const float *x, const float *w,
                            const bd_epilogue *ep, float *y);

#endif
