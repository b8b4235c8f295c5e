/* The geometry of a windowed pool (MaxPool, AveragePool), shared by the
 * CPU's kernels and the GPU's (cuda/), so both read kernel_shape, strides,
 * dilations, pads, auto_pad and ceil_mode the same way. */
#ifndef BD_CPU_POOL_H
#define BD_CPU_POOL_H

#include <stdint.h>

#include "graph.h"
#include "tensor.h"

/* Three spatial dims always: an input with fewer has trivial ones (size
 * 1, kernel 1) in front. */
enum { BD_POOL_SPATIAL = 3 };

typedef struct bd_pool_geom {
    int64_t in[BD_POOL_SPATIAL], out[BD_POOL_SPATIAL], kernel[BD_POOL_SPATIAL];
    int64_t stride[BD_POOL_SPATIAL], dilation[BD_POOL_SPATIAL];
    int64_t pad_begin[BD_POOL_SPATIAL], pad_end[BD_POOL_SPATIAL];
} bd_pool_geom;

/* Reads kernel_shape, strides, dilations, pads, auto_pad and ceil_mode of
 * pool node n for an input x of shape [N, C, spatial...] (only x's shape
 * is read); fails naming the node. */
bd_status bd_pool_geometry(const bd_node *n, const bd_tensor *x, bd_pool_geom *pg);

/* AveragePool node n, which has no padding or dilation of its own, over x
 * padded with zeros (begin[d] before and end[d] after spatial dim d, none
 * negative): the pool over an explicitly padded x (Pad, then the pool: how
 * exporters spell a pool that counts its padding), without the padded
 * copy. The zeros count in every window's size, as they did there. */
bd_status bd_avgpool_padded(const bd_node *n, const bd_tensor *x, const int64_t *begin,
                            const int64_t *end, bd_tensor **out);

#endif
