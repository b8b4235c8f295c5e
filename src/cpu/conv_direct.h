/* Direct 2-D convolution for x86-64 AVX-512 in the style of oneDNN's and
 * MLAS's NCHWc kernels: 16 output channels per vector register, a register
 * tile of output pixels times output channel blocks, weights and input
 * re-laid per call into channel-blocked layouts, the output stored in NCHW
 * through the same epilogue as bd_conv2d. Without AVX-512 (in the build or
 * the CPU) it is not available and bd_conv2d keeps its GEMM lowerings. */
#ifndef BD_CPU_CONV_DIRECT_H
#define BD_CPU_CONV_DIRECT_H

#include "conv.h"

/* Whether this build and this CPU can run the direct kernel at all. */
int bd_conv_direct_available(void);

/* Whether bd_conv_direct handles geometry g: available, and one group (any
 * channels, kernel, stride, dilation, padding and batch; a last block of
 * fewer than 16 output channels is computed whole and stored in part) or
 * groups of whole 16-channel blocks of input and output channels. */
int bd_conv_direct_supported(const bd_conv_geom *g);

/* Whether bd_conv2d should take the direct path for g: supported and, for
 * that class of shapes, measured faster than its GEMM lowerings. */
int bd_conv_direct_preferred(const bd_conv_geom *g);

/* Floats of g's weights re-laid for the kernel it picks for g (0 where g
 * is not supported); bd_conv_direct_pack writes them. The layout depends
 * on every field of g but the batch. */
size_t bd_conv_direct_packed_floats(const bd_conv_geom *g);
void bd_conv_direct_pack(const bd_conv_geom *g, const float *w, float *dst);

/* y[N][M][OH][OW] = conv(x, w) with the epilogue applied, as bd_conv2d;
 * packed, if not NULL, is w as bd_conv_direct_pack laid it out for a
 * geometry like g, and w is not read. BD_EUNSUPPORTED where
 * bd_conv_direct_supported(g) is false. */
bd_status bd_conv_direct(const bd_conv_geom *g, const float *x, const float *w,
                         const float *packed, const bd_epilogue *ep, float *y);

#endif
