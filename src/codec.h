/* How a quantized layer is stored: its codec (docs/format.md).
 *
 * Two codecs share one record, bd_qlayer, so the workspace, undo,
 * checkpoints, reports and files hold either without knowing which:
 *   pq:  n = rows * row_len / d codes of log2(k) bits into one fp16
 *        codebook of k centroids of d values (pq.h);
 *   int: n = rows * row_len codes of b bits (1..16; 2..16 symmetric), each weight
 *        s * (u - z) with u its code, s and z fp16 per output row
 *        (per_channel) or one for the tensor; symmetric fixes z = 2^(b-1),
 *        so the grid is -2^(b-1) .. 2^(b-1) - 1 steps of s around 0.
 * An int layer is also "k = 2^b levels of d = 1 value", so everything that
 * only asks whether a layer is quantized (k > 0), how many codes it has or
 * of how many bits, reads the same fields for both.
 *
 * An int layer may give each output row its own bit length (row_bits, what
 * BitPruning learns per channel): row r's codes are then of row_bits[r]
 * bits, its grid is per row (per_channel), a symmetric one centred on
 * 2^(row_bits[r]-1), and ints.bits and k are those of the widest row.
 * Compressed files keep each row's codes at its own bits, the rows grouped
 * by bit length, plus the row order that puts them back (docs/format.md),
 * which bd_qlayer_table_bytes counts.
 *
 * Codes are stored bit-packed, least significant bit first: code i takes
 * bits [i*b, (i+1)*b) of the byte string, bit j being bit (j mod 8) of
 * byte j / 8. With row_bits, the rows follow each other in row order, each
 * code of row r in row_bits[r] bits (bd_qlayer_pack). */
#ifndef BD_CODEC_H
#define BD_CODEC_H

#include <stddef.h>
#include <stdint.h>

#include "layers.h"
#include "status.h"

typedef enum bd_format { BD_FMT_PQ = 0, BD_FMT_INT = 1 } bd_format;

enum { BD_INT_MIN_BITS = 1, BD_INT_MAX_BITS = 16 };

/* act: ||X(W - W^)||^2 through the layer's input Gram (the paper's);
 * weight: ||W - W^||^2 (plain k-means, or round-to-nearest on min/max for
 * int); feedback: act, then error feedback across each row (feedback.h). */
typedef enum bd_objective { BD_OBJ_ACT = 0, BD_OBJ_WEIGHT = 1, BD_OBJ_FEEDBACK = 2 } bd_objective;
enum { BD_OBJ_COUNT = 3 };

const char *bd_objective_name(bd_objective o);
/* The objective called `name` ("gptvq" also names feedback); fails with a
 * message listing the names. */
bd_status bd_objective_parse(const char *name, bd_objective *out);
/* "act|weight|feedback", for usage lines. */
const char *bd_objective_names(void);
/* Whether layer l can be fitted with objective o: feedback needs rows of at
 * most BD_FEEDBACK_MAX_LEN values; fails with a message naming the layer
 * and the limit. */
bd_status bd_objective_check(const bd_layer *l, bd_objective o);

const char *bd_format_name(bd_format f);

/* An int layer's grid. */
typedef struct bd_int_spec {
    int bits;        /* BD_INT_MIN_BITS .. BD_INT_MAX_BITS (2 .. when symmetric) */
    int per_channel; /* one scale per output row, else one per tensor */
    int symmetric;   /* z fixed at 2^(bits-1), not stored */
} bd_int_spec;

/* Fails, naming the layer, when bits are outside 1..16, or below 2 for a
 * symmetric grid: its one bit would give the levels -s and 0 only. */
bd_status bd_int_spec_check(const bd_layer *l, const bd_int_spec *s);

/* A quantized layer: its codes, codebook or scales, and what was measured. */
typedef struct bd_qlayer {
    bd_format format;
    int d, k;           /* pq: block size and centroids; int: 1 and 2^bits */
    bd_int_spec ints;   /* int only */
    bd_objective objective;
    int64_t n;          /* codes */
    float *centroids;   /* pq: k x d, each value exactly representable in fp16 */
    int64_t nscales;    /* int: rows (per_channel) or 1 */
    float *scales;      /* int: nscales, fp16 values */
    float *zeros;       /* int: nscales fp16 values, NULL when symmetric */
    int32_t *codes;     /* n, each in [0, k) (in [0, 2^row_bits[r]) in row r) */
    /* The codes as stored (bd_qlayer_pack's layout) in place of codes, which
     * is then NULL: only what bd_model_load_lazy returns (compressed.h), for
     * bd_lazy_weights_new, so a load never holds 4 bytes per code. */
    uint8_t *packed;
    int32_t *row_bits;  /* int: nscales = rows bit lengths; NULL: every row has ints.bits */
    double rel_error;   /* ||X(W - W^)|| / ||XW|| on held-out rows; < 0 unknown */
    /* The same for the other objective fitted on the same inputs (with
     * compare_objectives), so the user sees what the activations buy. */
    double other_error;
    double *history;    /* the normalised EM objective per iteration, kept fit */
    int iters;
    int restarts, best_restart; /* EM fits run, and the one kept */
    int exact;          /* every subvector is a centroid (k may be below the plan's) */
    int64_t fit_rows;   /* calibration input rows in the Gram matrices */
    int64_t held_rows;  /* held-out rows the error was measured on */
    double seconds;
    int empty_repaired;
} bd_qlayer;

void bd_qlayer_free(bd_qlayer *q);
bd_status bd_qlayer_copy(bd_qlayer *dst, const bd_qlayer *src);

/* Bits of one code: ceil(log2(k)), 0 for k = 1. */
int bd_code_bits(int k);
/* Bytes of n codes of `bits` bits, packed. */
int64_t bd_packed_bytes(int64_t n, int bits);
/* Packs n codes (each below 2^bits) into bd_packed_bytes(n, bits) bytes. */
void bd_pack_bits(const int32_t *codes, int64_t n, int bits, uint8_t *out);
/* The inverse. */
void bd_unpack_bits(const uint8_t *in, int64_t n, int bits, int32_t *codes);
/* Codes first..first+n-1 of a packed string. */
void bd_unpack_bits_from(const uint8_t *in, int64_t first, int64_t n, int bits, int32_t *codes);
/* n codes of `bits` bits starting at bit bit0 of a string. */
void bd_unpack_bits_at(const uint8_t *in, int64_t bit0, int64_t n, int bits, int32_t *codes);

/* The bits of a row's place in a row order of `rows` rows, at least 1: a
 * layer with row_bits is stored with its rows sorted by bit length
 * (docs/format.md) and these places put them back. */
int bd_int_order_bits(int64_t rows);

/* Bytes as stored: packed codes + the fp16 codebook, or scales and zeros
 * (and a per-row-bits layer's row order). */
int64_t bd_qlayer_code_bytes(const bd_qlayer *q);
int64_t bd_qlayer_table_bytes(const bd_qlayer *q);
int64_t bd_qlayer_bytes(const bd_qlayer *q);
/* Code bits per weight: log2(k) / d for pq (as the paper counts), bits for
 * int (their mean over the rows with row_bits). */
double bd_qlayer_bits_per_weight(const bd_qlayer *q);
/* What a layer left in fp32 stores per weight. */
enum { BD_FLOAT_BITS = 32 };
/* Bits per weight as every front-end prints them, three decimals:
 * "32.000", "0.556". */
const char *bd_bits_str(double bits, char *buf, size_t cap);

/* "d=9 k=256" for pq, "int=8 per=channel sym=0" for int (the set syntax;
 * "int=2..6" for rows of 2 to 6 bits). */
void bd_qlayer_describe(const bd_qlayer *q, char *buf, size_t cap);

/* What the tables print in their d and k columns: "9" and "256" for pq,
 * "-" and "int8" for int ("int2-6" for rows of 2 to 6 bits). */
void bd_qlayer_dk(const bd_qlayer *q, char d[8], char k[8]);

/* Writes W^ = decode(q) into the weight tensor w (as stored) of layer l;
 * fails, naming the layer, when q's sizes do not fit it. */
bd_status bd_qlayer_decode(const bd_qlayer *q, const bd_layer *l, float *w);

/* The same from q's table and its codes packed (bd_qlayer_pack), q->codes
 * unused: no unpacked copy of the codes is made. */
bd_status bd_qlayer_decode_packed(const bd_qlayer *q, const uint8_t *packed, const bd_layer *l,
                                  float *w);

/* ---- the values fine-tuning moves (finetune.h) ----
 * The codes stay; what moves is PQ's centroids (k x d), or int's scales
 * then, when asymmetric, zero points (nscales each). */
int64_t bd_qlayer_tuned_count(const bd_qlayer *q);
/* q's tuned values into v (bd_qlayer_tuned_count of them). */
void bd_qlayer_tuned_get(const bd_qlayer *q, float *v);
/* v into q, rounded to fp16 as the file stores them. */
void bd_qlayer_tuned_set(bd_qlayer *q, const float *v);
/* W^ decoded with the values v in place of q's, into w (as stored). */
bd_status bd_qlayer_decode_tuned(const bd_qlayer *q, const float *v, const bd_layer *l, float *w);
/* The gradient SGD moves the values by, from the gradient g of the layer's
 * weight (as stored), into grad: g projected on each value's own direction
 * in weight space, (sum_i g_i a_i) / (sum_i a_i^2) with a_i = dw_i/dvalue
 * over the weights the value decodes into. For a centroid that is the mean of its members'
 * gradients (the reference's CentroidSGD; zero without members); for a
 * scale, a_i = u_i - z; for a zero point, a_i = -s. So a value moves as
 * its weights would under plain SGD, whatever its units. */
void bd_qlayer_tuned_gradient(const bd_layer *l, const bd_qlayer *q, const float *weight_grad,
                              float *grad);

/* q's codes packed into bd_qlayer_code_bytes(q) bytes: at bd_code_bits(k)
 * for pq, the int bits, or each row at its own bits. */
void bd_qlayer_pack(const bd_qlayer *q, uint8_t *out);

/* The code bits of int row r. */
static inline int bd_int_row_bits(const bd_qlayer *q, int64_t r)
{
    return q->row_bits ? q->row_bits[r] : q->ints.bits;
}

/* The int grid of row r (scale, zero point). */
static inline float bd_int_zero(const bd_qlayer *q, int64_t r)
{
    int64_t i = q->nscales > 1 ? r : 0;
    return q->zeros ? q->zeros[i] : (float)(1 << (bd_int_row_bits(q, i) - 1));
}
static inline float bd_int_scale(const bd_qlayer *q, int64_t r)
{
    return q->scales[q->nscales > 1 ? r : 0];
}

/* bd_pack_bits from bit `at` of out on (bit j being bit j % 8 of byte j / 8),
 * OR-ing into out, which starts zeroed: compressed files put the codes of
 * every layer, of several widths, into one bit string. */
void bd_pack_bits_at(const int32_t *codes, int64_t n, int bits, uint8_t *out, int64_t at);

#endif
