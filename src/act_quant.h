/* The activation quantizer (docs/method.md, "BitPruning"): a layer's input
 * fake-quantized to b bits on a fixed range, written the same way in
 * bitdown's arithmetic and in the standard ONNX nodes a file carries, so
 * that every runtime computes what training saw:
 *
 *     y = Clip(Round(x / s), qmin, qmax) * s
 *
 * Div -> Round -> Clip -> Mul in front of the layer, with s, qmin and qmax
 * scalar float initializers. The grid has 2^b levels qmin .. qmax
 * (qmax - qmin = 2^b - 1); qmin = -z for the zero point z, so 0 is a level
 * and a conv's zero padding stays on the grid; a range that starts at 0
 * (after a ReLU) has qmin = 0: unsigned. One expression for every b (ONNX's
 * QuantizeLinear/DequantizeLinear would only do 8 bits, and with the weights
 * decoded in float no runtime would run an int8 kernel on it anyway); Round
 * takes halves to even, as C's default rounding does. */
#ifndef BD_ACT_QUANT_H
#define BD_ACT_QUANT_H

#include <stdint.h>

#include "graph.h"

typedef struct bd_act_grid {
    int bits;          /* 1 .. 16 */
    float scale;       /* s > 0 */
    float qmin, qmax;  /* integers, qmin <= 0 <= qmax, qmax - qmin = 2^bits - 1 */
} bd_act_grid;

/* The b-bit grid over [lo, hi], widened to hold 0; an empty range (lo =
 * hi = 0) gets s = 1. */
void bd_act_grid_fit(float lo, float hi, int bits, bd_act_grid *grid);

/* y = Clip(Round(x / s), qmin, qmax) * s, in float as the nodes compute it. */
void bd_act_grid_apply(const bd_act_grid *grid, const float *x, int64_t n, float *y);

/* The values the grid does not clip: [qmin s, qmax s]. */
void bd_act_grid_range(const bd_act_grid *grid, float *lo, float *hi);

/* The clipping search: adds to err[i] (i < BD_INT_CLIP_STEPS, int_fit.h)
 * the squared error on n values x of the b-bit grid over [r lo, r hi], r
 * bd_int_clip_ratio(i). Few bits spread over the widest values put most of
 * them on one or two levels: at 2 bits a ReLU's output is best cut well
 * below its percentile, at 8 hardly at all. */
void bd_act_clip_errors(const float *x, int64_t n, float lo, float hi, int bits, double *err);

/* The range a quantizer of n values x takes: hi their `percentile`-th
 * percentile (0 < percentile <= 100), lo 0 when none is negative, else
 * their (100 - percentile)-th (at most 0). Fails only for want of memory. */
bd_status bd_act_range(const float *x, int64_t n, double percentile, float *lo, float *hi);

/* Puts grid's nodes before node's input 0 (that node's alone: other readers
 * of the value keep it float), named after `name` ("NAME.act_scale", ...),
 * right before the node, the other nodes in their order. Fails, changing
 * nothing, when the opset is below 11 (no Round), or when a value of those
 * names is in use. */
bd_status bd_act_quant_insert(bd_graph *g, int node, const bd_act_grid *grid, const char *name);

/* Takes away the quantizer bd_act_quant_find finds before *node (none:
 * nothing changes): the node reads the quantizer's input again, and *node
 * becomes its index after the removal. The quantizer's values stay in the
 * graph as names that are nothing (no initializer, no reader), so value
 * ids keep their meaning and an insert may take the names again. */
bd_status bd_act_quant_remove(bd_graph *g, int *node);

/* 1 if node's input 0 is such a quantizer's output (the nodes in that
 * order, s, qmin and qmax constant scalars, the levels a power of two, the
 * intermediate values read by nothing else), with *grid its grid; else 0. */
int bd_act_quant_find(const bd_graph *g, int node, bd_act_grid *grid);

#endif
