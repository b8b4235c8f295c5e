/* Depthwise 2-D convolution (one input and one output channel per group):
 * kh*kw multiply-adds per output, so a GEMM per channel would be all
 * overhead, and the MobileNets, EfficientNets, MNASNet and ConvNeXt spend
 * much of their time here. With AVX-512 each channel plane is copied once
 * into a zero-bordered buffer (split by column phase at stride 2), and
 * blocks of 16 outputs are summed over every tap in registers, four blocks
 * at a time, the epilogue applied before the store; otherwise, and for
 * strides above 2, the row is summed tap by tap. */
#ifndef BD_CPU_CONV_DEPTHWISE_H
#define BD_CPU_CONV_DEPTHWISE_H

#include "conv.h"

/* Whether g is depthwise: as many groups as input channels, one output
 * channel each. */
int bd_conv_is_depthwise(const bd_conv_geom *g);

/* y[N][C][OH][OW] = conv(x, w) with the epilogue applied, as bd_conv2d,
 * for a depthwise g. Fails only for want of memory. */
bd_status bd_conv_depthwise(const bd_conv_geom *g, const float *x, const float *w,
                            const bd_epilogue *ep, float *y);

/* Whether bd_conv_depthwise may be given y == x for g: its output has the
 * input's shape and every channel's input is copied whole (bordered, or 16
 * channels transposed) before that channel's output is written. */
int bd_conv_depthwise_in_place(const bd_conv_geom *g);

#endif
