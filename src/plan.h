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

/* A layer's plan keeps both codecs' settings, so switching its format
 * back and forth loses neither. */
typedef struct bd_layer_plan {
    int quantize;
    bd_format format;
    int d, k;          /* pq */
    bd_int_spec ints;  /* int */
    bd_objective objective;
    char note[160]; /* what was adjusted, for the user */
} bd_layer_plan;

/* "d=9 k=256 objective=feedback" or "int=4 per=channel sym=0
 * objective=feedback" ("skip" when not quantized), in the set syntax. */
void bd_plan_describe(const bd_layer_plan *p, char *buf, size_t cap);
/* The code bits per weight the plan would store, counted as
 * bd_qlayer_bits_per_weight counts them (whether or not it quantizes). */
double bd_plan_bits_per_weight(const bd_layer_plan *p);

/* The int regimes' grid for b bits: per output channel, asymmetric. */
bd_int_spec bd_plan_int_default(int bits);

/* Fills plan[0..n) for a regime: "small" or "large" (PQ), or "int8",
 * "int4" (any "intB", B = 1..16). Every regime leaves the first conv in
 * fp32 unless quantize_first. */
bd_status bd_plan_regime(const bd_layer *layers, int n, const char *regime, int quantize_first,
                         bd_layer_plan *plan);

/* A change to some layers' plans; each field 0 or -1 leaves it as it is. */
typedef struct bd_plan_change {
    int d, k;        /* 0: unchanged; either makes the layer pq */
    int objective;   /* -1, else bd_objective */
    int quantize;    /* -1, 0 skip, 1 include */
    int format;      /* -1, else bd_format (int=B and d=/k= set it too) */
    int bits;        /* 0, else the layer becomes int with these bits */
    int per_channel; /* -1, else int's granularity */
    int symmetric;   /* -1, else int's symmetry */
    int clamp;       /* 1: a k= larger than a layer allows becomes its largest k
                      * (one change for layers of different sizes); 0: refused */
} bd_plan_change;

#define BD_PLAN_CHANGE_NONE                                                                    \
    ((bd_plan_change){.objective = -1, .quantize = -1, .format = -1, .per_channel = -1,       \
                      .symmetric = -1})

/* Applies c to layer l's plan p. Checked first: on failure (a k the layer
 * cannot take and no clamp, bits outside 1..16 (2..16 symmetric), k= with int=, ...) p is unchanged and the
 * message names the layer. */
bd_status bd_plan_apply(const bd_layer *l, const bd_plan_change *c, bd_layer_plan *p);

/* Reads one "key=value" setting of a change (d, k, objective, int, per,
 * sym, format, clamp; "skip", "include" and "clamp" alone); `where` (may be NULL) names
 * the spec in messages. */
bd_status bd_plan_parse_setting(const char *where, const char *key, const char *value,
                                bd_plan_change *c);

/* Parses "GLOB:d=D,k=K[,objective=...]", "GLOB:int=B[,per=channel|tensor]
 * [,sym=0|1]" or "GLOB:skip" (the --set syntax): glob into glob[cap]. */
bd_status bd_plan_parse_set(const char *spec, char *glob, size_t cap, bd_plan_change *c);

/* Checks one layer's d and k; the message names the layer. */
bd_status bd_plan_check(const bd_layer *l, int d, int k);

/* The divisor of n nearest to want (the smaller one on a tie). */
int64_t bd_nearest_divisor(int64_t n, int64_t want);

#endif
