/* The layer plan: which layers to quantize, with which d and k.
 *
 * The paper's regimes as a starting point (docs/method.md, "Order and calibration"):
 *   small: d = 9 for 3x3 convs, 4 for 1x1 convs and fully-connected layers;
 *   large: d = 18 for 3x3, 8 for 1x1, 4 for fully-connected;
 * k = 256, 2048 for fully-connected (the classifier); the first conv stays
 * fp32 unless asked. Where d does not divide a layer's row length the
 * nearest divisor is used, and where k exceeds the reference's clamp
 * (bd_pq_max_k) it is clamped; both are said in the layer's note. */
#ifndef BD_PLAN_H
#define BD_PLAN_H

#include "layers.h"
#include "codec.h"

typedef struct bd_layer_plan {
    int quantize;
    int d, k;
    bd_objective objective;
    char note[160]; /* what was adjusted, for the user */
} bd_layer_plan;

/* Fills plan[0..n) for a regime ("small" or "large"). */
bd_status bd_plan_regime(const bd_layer *layers, int n, const char *regime, int quantize_first,
                         bd_layer_plan *plan);

/* Parses "GLOB:d=D,k=K[,objective=act|weight]" or "GLOB:skip" (the
 * --set syntax): glob into glob[cap]; d, k 0 and objective -1 when not
 * given; *skip 1 for skip. */
bd_status bd_plan_parse_set(const char *spec, char *glob, size_t cap, int *d, int *k,
                            int *objective, int *skip);

/* Checks one layer's d and k; the message names the layer. */
bd_status bd_plan_check(const bd_layer *l, int d, int k);

/* The divisor of n nearest to want (the smaller one on a tie). */
int64_t bd_nearest_divisor(int64_t n, int64_t want);

#endif
