/* 2-D convolution on the CPU by im2col + GEMM, with a fused per-channel
 * epilogue. The geometry and im2col are shared with whoever needs a conv
 * layer's input rows (the quantizer's Gram matrix, the backward pass). */
#ifndef BD_CPU_CONV_H
#define BD_CPU_CONV_H

#include <stddef.h>
#include <stdint.h>

#include "graph.h"
#include "tensor.h"

typedef struct bd_conv_geom {
    int64_t n, c, h, w; /* input */
    int64_t m;          /* output channels */
    int64_t group;
    int64_t kh, kw, sh, sw, dh, dw;
    int64_t pad_t, pad_l, pad_b, pad_r;
    int64_t oh, ow;
} bd_conv_geom;

/* Rows of one group's im2col matrix: (C/group)*kh*kw. */
static inline int64_t bd_conv_rows(const bd_conv_geom *g) { return g->c / g->group * g->kh * g->kw; }
/* Its columns: one per output pixel. */
static inline int64_t bd_conv_cols(const bd_conv_geom *g) { return g->oh * g->ow; }

/* Geometry of Conv node n applied to input x with weight w (1-D or 2-D
 * spatial; 1-D is treated as H = 1). Checks every shape and attribute. */
bd_status bd_conv_geom_from_node(const bd_node *n, const bd_tensor *x, const bd_tensor *w,
                                 bd_conv_geom *geom);

/* cols[K][OH*OW] from one image's channels of one group, x = [C/group][H][W]. */
void bd_im2col(const bd_conv_geom *g, const float *x, float *cols);

/* The output columns ox in [0, OW) whose input column ox*sw + x_off lies
 * in [0, W): [*lo, *hi) (x_off: a tap's column offset, kj*dw - pad_l). */
static inline void bd_conv_valid_cols(const bd_conv_geom *g, int64_t x_off, int64_t *lo,
                                      int64_t *hi)
{
    int64_t l = x_off >= 0 ? 0 : (-x_off + g->sw - 1) / g->sw;
    int64_t h = g->w - x_off <= 0 ? 0 : (g->w - x_off + g->sw - 1) / g->sw;
    if (h > g->ow)
        h = g->ow;
    *lo = l < h ? l : h;
    *hi = h;
}

/* The im2col columns [c0, c0 + n) of the whole batch seen as one matrix of
 * N*OH*OW columns (column j is image j / (OH*OW)), for group gi; x is the
 * whole input [N][C][H][W], cols is [K][n]. */
void bd_im2col_range(const bd_conv_geom *g, const float *x, int64_t gi, int64_t c0, int64_t n,
                     float *cols);

/* A conv's activation: a clamp (Relu, Clip to [lo, hi]), or a function
 * after it (Sigmoid; SiLU, x Sigmoid(x); HardSigmoid with alpha and beta;
 * x HardSigmoid(x); HardSwish). The AVX-512 kernels apply both in
 * registers before the store (avx512.h, bd_activation_vec); the others
 * apply the function to outputs just stored, by bd_activation_apply. */
typedef enum bd_activation {
    BD_ACT_NONE,
    BD_ACT_RELU,
    BD_ACT_CLIP,
    BD_ACT_SIGMOID,
    BD_ACT_SILU,
    BD_ACT_HARD_SIGMOID,
    BD_ACT_X_HARD_SIGMOID,
    BD_ACT_HARD_SWISH
} bd_activation;

/* y = act(acc * scale[c] + shift[c] + residual); scale NULL means 1, shift
 * NULL means 0, residual NULL means none (else a tensor shaped like y). A
 * conv bias, an inference BatchNormalization, the Add of a residual
 * connection and a Relu or Clip that follow a conv all fold into the pass
 * that stores the conv's output. */
typedef struct bd_epilogue {
    const float *scale;
    const float *shift;
    const float *residual;
    bd_activation act;
    float lo, hi;      /* Clip's bounds */
    float alpha, beta; /* HardSigmoid's */
} bd_epilogue;

/* The clamp ep applies in registers: [0, inf] for Relu, Clip's bounds,
 * [-inf, inf] otherwise. */
void bd_epilogue_clamp(const bd_epilogue *ep, float *lo, float *hi);

/* Whether ep's activation is a function past the clamp. */
static inline int bd_epilogue_has_function(const bd_epilogue *ep)
{
    return ep && ep->act >= BD_ACT_SIGMOID;
}

/* y[i] = f(y[i]) for i < len, f ep's activation function (the same bits
 * as its ops run unfused); nothing for a clamp or none. */
void bd_activation_apply(const bd_epilogue *ep, float *y, int64_t len);

/* y[N][M][OH][OW] = conv(x, w) with the epilogue applied. */
bd_status bd_conv2d(const bd_conv_geom *g, const float *x, const float *w, const bd_epilogue *ep,
                    float *y);

/* Whether bd_conv2d (and bd_conv2d_cached) may be given y == x for g: a
 * depthwise conv whose kernel copies each channel's input before writing
 * its output (conv_depthwise.h). Writing over an input that nothing else
 * reads keeps the output in cache lines this core already owns: on two
 * threads a fresh buffer's lines were often another core's, and the
 * stores waited on taking them over (a MobileNet block's 14x14 depthwise
 * layer 50 -> 30 us). */
int bd_conv2d_in_place(const bd_conv_geom *g);

/* A kernel that may take its weights re-laid beforehand (the direct and
 * Winograd ones): the floats of the re-laid copy, the re-laying, and the
 * run, which reads packed (if not NULL) in place of w. */
typedef struct bd_conv_packed_kernel {
    size_t (*floats)(const bd_conv_geom *g);
    void (*pack)(const bd_conv_geom *g, const float *w, float *dst);
    bd_status (*run)(const bd_conv_geom *g, const float *x, const float *w, const float *packed,
                     const bd_epilogue *ep, float *y);
} bd_conv_packed_kernel;

/* The weights of one conv kept re-laid for its kernel from one call to the
 * next. Re-laying is a pass over every weight, which shows beside the
 * arithmetic on a deep layer of few pixels at batch 1 (an eighth of
 * ResNet-18's 7x7 layers' time). */
typedef struct bd_conv_cache bd_conv_cache;

/* bd_conv2d, keeping in *cache (NULL before the first call) what it
 * re-lays of w. The caller promises that w's contents do not change while
 * it keeps the cache; another w or geometry is re-laid afresh. Only a
 * layer whose re-laying shows beside its arithmetic keeps a copy (few
 * output pixels in the call), so large batches hold no second copy of the
 * weights. The cache may be used by one call at a time. */
bd_status bd_conv2d_cached(const bd_conv_geom *g, const float *x, const float *w,
                           const bd_epilogue *ep, float *y, bd_conv_cache **cache);
void bd_conv_cache_free(bd_conv_cache *c);

/* dst[i] = act(src[i] * scale[c] + shift[c] + res[i]) for i < len, for
 * channel c; res is the matching part of ep->residual (NULL if none).
 * src may be dst. */
void bd_epilogue_apply(const bd_epilogue *ep, int64_t c, const float *src, const float *res,
                       float *dst, int64_t len);

#endif
