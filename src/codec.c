#include "codec.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "feedback.h"
#include "pq.h"

static const char *const objective_names[BD_OBJ_COUNT] = {"act", "weight", "feedback"};

const char *bd_objective_name(bd_objective o)
{
    return (int)o >= 0 && (int)o < BD_OBJ_COUNT ? objective_names[o] : "act";
}

const char *bd_objective_names(void) { return "act|weight|feedback"; }

bd_status bd_objective_parse(const char *name, bd_objective *out)
{
    for (int o = 0; o < BD_OBJ_COUNT; o++)
        if (strcmp(name, objective_names[o]) == 0) {
            *out = (bd_objective)o;
            return BD_OK;
        }
    if (strcmp(name, "gptvq") == 0) {
        *out = BD_OBJ_FEEDBACK;
        return BD_OK;
    }
    return bd_fail(BD_EINVAL, "objective is %s (or gptvq, the same as feedback), not '%s'",
                   bd_objective_names(), name);
}

bd_status bd_objective_check(const bd_layer *l, bd_objective o)
{
    if (o == BD_OBJ_FEEDBACK && l->row_len > BD_FEEDBACK_MAX_LEN)
        return bd_fail(BD_EINVAL,
                       "layer '%s': rows of %lld values are too long for objective=feedback "
                       "(at most %d: its %lldx%lld Gram would not fit); use objective=act",
                       l->name, (long long)l->row_len, BD_FEEDBACK_MAX_LEN, (long long)l->row_len,
                       (long long)l->row_len);
    return BD_OK;
}

const char *bd_format_name(bd_format f) { return f == BD_FMT_INT ? "int" : "pq"; }

bd_status bd_int_spec_check(const bd_layer *l, const bd_int_spec *s)
{
    if (s->bits < BD_INT_MIN_BITS || s->bits > BD_INT_MAX_BITS)
        return bd_fail(BD_EINVAL, "layer '%s': int=%d is not allowed; bits are %d to %d", l->name,
                       s->bits, BD_INT_MIN_BITS, BD_INT_MAX_BITS);
    if (s->symmetric && s->bits < 2)
        return bd_fail(BD_EINVAL, "layer '%s': a symmetric grid of %d bit has the levels -s "
                       "and 0 only; use sym=0 or 2 bits at least", l->name, s->bits);
    return BD_OK;
}

void bd_qlayer_free(bd_qlayer *q)
{
    if (!q)
        return;
    free(q->centroids);
    free(q->scales);
    free(q->zeros);
    free(q->codes);
    free(q->packed);
    free(q->row_bits);
    free(q->history);
    memset(q, 0, sizeof *q);
}

/* A copy of n items of `size` bytes at src, NULL for none (or out of
 * memory: *ok becomes 0). */
static void *dup_array(const void *src, int64_t n, size_t size, int *ok)
{
    if (!src || n <= 0)
        return NULL;
    void *copy = malloc((size_t)n * size);
    if (copy)
        memcpy(copy, src, (size_t)n * size);
    *ok &= copy != NULL;
    return copy;
}

bd_status bd_qlayer_copy(bd_qlayer *dst, const bd_qlayer *src)
{
    int ok = 1;
    *dst = *src;
    dst->centroids =
        dup_array(src->centroids, (int64_t)src->k * src->d, sizeof *src->centroids, &ok);
    dst->scales = dup_array(src->scales, src->nscales, sizeof *src->scales, &ok);
    dst->zeros = dup_array(src->zeros, src->nscales, sizeof *src->zeros, &ok);
    dst->codes = dup_array(src->codes, src->n, sizeof *src->codes, &ok);
    dst->packed = src->packed ? dup_array(src->packed, bd_qlayer_code_bytes(src), 1, &ok) : NULL;
    dst->row_bits = dup_array(src->row_bits, src->nscales, sizeof *src->row_bits, &ok);
    dst->history = dup_array(src->history, src->iters, sizeof *src->history, &ok);
    if (!ok) {
        bd_qlayer_free(dst);
        return bd_fail(BD_ENOMEM, "out of memory copying a quantized layer");
    }
    return BD_OK;
}

int bd_code_bits(int k)
{
    int b = 0;
    while (b < 31 && (1 << b) < k)
        b++;
    return b;
}

int64_t bd_packed_bytes(int64_t n, int bits) { return (n * bits + 7) / 8; }

void bd_pack_bits(const int32_t *codes, int64_t n, int bits, uint8_t *out)
{
    memset(out, 0, (size_t)bd_packed_bytes(n, bits));
    bd_pack_bits_at(codes, n, bits, out, 0);
}

void bd_unpack_bits_at(const uint8_t *in, int64_t bit0, int64_t n, int bits, int32_t *codes)
{
    const uint64_t mask = ((uint64_t)1 << bits) - 1;
    int64_t o = bit0 / 8;
    int skip = (int)(bit0 % 8), held = 0;
    uint64_t acc = 0;
    for (int64_t i = 0; i < n; i++) {
        while (held < bits + skip) {
            acc |= (uint64_t)in[o++] << held;
            held += 8;
        }
        acc >>= skip;
        held -= skip;
        skip = 0;
        codes[i] = (int32_t)(acc & mask);
        acc >>= bits;
        held -= bits;
    }
}

void bd_unpack_bits_from(const uint8_t *in, int64_t first, int64_t n, int bits, int32_t *codes)
{
    bd_unpack_bits_at(in, first * bits, n, bits, codes);
}

void bd_unpack_bits(const uint8_t *in, int64_t n, int bits, int32_t *codes)
{
    bd_unpack_bits_from(in, 0, n, bits, codes);
}

int bd_int_order_bits(int64_t rows)
{
    int b = 1;
    while (b < 62 && ((int64_t)1 << b) < rows)
        b++;
    return b;
}

/* The code bits of every code: the int bits or pq's index; -1 when rows
 * differ (row_bits). */
static int uniform_bits(const bd_qlayer *q)
{
    return q->format == BD_FMT_PQ ? bd_code_bits(q->k) : q->row_bits ? -1 : q->ints.bits;
}

/* The packed bits of q's codes. */
static int64_t code_bits_total(const bd_qlayer *q)
{
    if (uniform_bits(q) >= 0)
        return q->n * uniform_bits(q);
    int64_t bits = 0;
    for (int64_t r = 0; r < q->nscales; r++)
        bits += q->row_bits[r];
    return bits * (q->n / q->nscales);
}

int64_t bd_qlayer_code_bytes(const bd_qlayer *q) { return (code_bits_total(q) + 7) / 8; }

int64_t bd_qlayer_table_bytes(const bd_qlayer *q)
{
    if (q->format == BD_FMT_PQ)
        return bd_pq_codebook_bytes(q->k, q->d);
    const int64_t grid = 2 * q->nscales * (q->ints.symmetric ? 1 : 2);
    return q->row_bits ? grid + bd_packed_bytes(q->nscales, bd_int_order_bits(q->nscales)) : grid;
}

int64_t bd_qlayer_bytes(const bd_qlayer *q)
{
    return q->k > 0 ? bd_qlayer_code_bytes(q) + bd_qlayer_table_bytes(q) : 0;
}

double bd_qlayer_bits_per_weight(const bd_qlayer *q)
{
    if (q->format == BD_FMT_PQ)
        return bd_pq_bits_per_weight(q->k, q->d);
    return q->n > 0 ? (double)code_bits_total(q) / (double)q->n : q->ints.bits;
}

const char *bd_bits_str(double bits, char *buf, size_t cap)
{
    snprintf(buf, cap, "%.3f", bits);
    return buf;
}

/* The int bits as "8", or the rows' range as "2<sep>6". */
static void int_bits_text(const bd_qlayer *q, const char *sep, char *buf, size_t cap)
{
    int lo = q->ints.bits;
    for (int64_t r = 0; q->row_bits && r < q->nscales; r++)
        lo = q->row_bits[r] < lo ? q->row_bits[r] : lo;
    if (lo < q->ints.bits)
        snprintf(buf, cap, "%d%s%d", lo, sep, q->ints.bits);
    else
        snprintf(buf, cap, "%d", q->ints.bits);
}

void bd_qlayer_describe(const bd_qlayer *q, char *buf, size_t cap)
{
    char bits[32];
    int_bits_text(q, "..", bits, sizeof bits);
    if (q->format == BD_FMT_INT)
        snprintf(buf, cap, "int=%s per=%s sym=%d", bits,
                 q->ints.per_channel ? "channel" : "tensor", q->ints.symmetric);
    else
        snprintf(buf, cap, "d=%d k=%d", q->d, q->k);
}

void bd_qlayer_dk(const bd_qlayer *q, char d[8], char k[8])
{
    if (q->format == BD_FMT_INT) {
        char bits[32];
        int_bits_text(q, "-", bits, sizeof bits);
        snprintf(d, 8, "-");
        /* the column is 7 wide: "int2-6", "i10-16" */
        char col[40];
        snprintf(col, sizeof col, "%s%s", strlen(bits) <= 4 ? "int" : "i", bits);
        memcpy(k, col, 8);
        k[7] = '\0';
    } else {
        snprintf(d, 8, "%d", q->d);
        snprintf(k, 8, "%d", q->k);
    }
}

/* The layout q decodes into for layer l, checked against q's sizes. */
static bd_status decode_layout(const bd_qlayer *q, const bd_layer *l, bd_pq_layout *lay)
{
    BD_TRY(bd_pq_layout_init(l, q->format == BD_FMT_INT ? 1 : q->d, lay));
    if (lay->n != q->n)
        return bd_fail(BD_EINVAL, "layer '%s': %lld codes for %lld %s", l->name,
                       (long long)q->n, (long long)lay->n,
                       q->format == BD_FMT_INT ? "weights" : "subvectors");
    if (q->format == BD_FMT_INT && q->nscales != 1 && q->nscales != lay->rows)
        return bd_fail(BD_EINVAL, "layer '%s': %lld scales for %lld rows", l->name,
                       (long long)q->nscales, (long long)lay->rows);
    if (q->row_bits && (q->format != BD_FMT_INT || q->nscales != lay->rows))
        return bd_fail(BD_EINVAL, "layer '%s': a bit length per row needs an int grid per row",
                       l->name);
    for (int64_t r = 0; q->row_bits && r < lay->rows; r++)
        if (q->row_bits[r] < (q->ints.symmetric ? 2 : BD_INT_MIN_BITS) ||
            q->row_bits[r] > q->ints.bits)
            return bd_fail(BD_EINVAL, "layer '%s': row %lld has %d bits, outside %d..%d", l->name,
                           (long long)r, (int)q->row_bits[r],
                           q->ints.symmetric ? 2 : BD_INT_MIN_BITS, q->ints.bits);
    return BD_OK;
}

/* Codes first..first+count of q (in `codes`) decoded into their places in
 * the weight as stored: code i is row i / m's block i % m, whose values go
 * to columns (i % m) * d.. of that row. */
static void decode_codes(const bd_qlayer *q, const bd_pq_layout *lay, const int32_t *codes,
                         int64_t first, int64_t count, float *w)
{
    for (int64_t c = 0; c < count; c++) {
        const int64_t i = first + c, r = i / lay->m, j0 = (i % lay->m) * lay->d;
        const float *v = q->format == BD_FMT_PQ ? q->centroids + (int64_t)codes[c] * q->d : NULL;
        const float s = v ? 0 : bd_int_scale(q, r), z = v ? 0 : bd_int_zero(q, r);
        for (int64_t t = 0; t < lay->d; t++) {
            const int64_t j = j0 + t;
            w[lay->transposed ? j * lay->rows + r : r * lay->row_len + j] =
                v ? v[t] : s * ((float)codes[c] - z);
        }
    }
}

bd_status bd_qlayer_decode(const bd_qlayer *q, const bd_layer *l, float *w)
{
    bd_pq_layout lay;
    BD_TRY(decode_layout(q, l, &lay));
    decode_codes(q, &lay, q->codes, 0, q->n, w);
    return BD_OK;
}

int64_t bd_qlayer_tuned_count(const bd_qlayer *q)
{
    if (q->format == BD_FMT_PQ)
        return (int64_t)q->k * q->d;
    return q->nscales * (q->zeros ? 2 : 1);
}

/* The tuned values' places in q: PQ's centroids, or int's scales and zero
 * points. */
static void tuned_parts(const bd_qlayer *q, float **a, int64_t *na, float **b)
{
    *a = q->format == BD_FMT_PQ ? q->centroids : q->scales;
    *na = q->format == BD_FMT_PQ ? (int64_t)q->k * q->d : q->nscales;
    *b = q->format == BD_FMT_PQ ? NULL : q->zeros;
}

void bd_qlayer_tuned_get(const bd_qlayer *q, float *v)
{
    float *a, *b;
    int64_t na;
    tuned_parts(q, &a, &na, &b);
    memcpy(v, a, (size_t)na * sizeof *v);
    if (b)
        memcpy(v + na, b, (size_t)na * sizeof *v);
}

void bd_qlayer_tuned_set(bd_qlayer *q, const float *v)
{
    float *a, *b;
    int64_t na;
    tuned_parts(q, &a, &na, &b);
    memcpy(a, v, (size_t)na * sizeof *v);
    bd_pq_round_fp16(a, na);
    if (b) {
        memcpy(b, v + na, (size_t)na * sizeof *v);
        bd_pq_round_fp16(b, na);
    }
}

/* q with its tuned values read from v (a view: nothing copied). */
static bd_qlayer tuned_view(const bd_qlayer *q, const float *v)
{
    bd_qlayer view = *q;
    if (q->format == BD_FMT_PQ) {
        view.centroids = (float *)v;
    } else {
        view.scales = (float *)v;
        view.zeros = q->zeros ? (float *)v + q->nscales : NULL;
    }
    return view;
}

bd_status bd_qlayer_decode_tuned(const bd_qlayer *q, const float *v, const bd_layer *l, float *w)
{
    bd_qlayer view = tuned_view(q, v);
    return bd_qlayer_decode(&view, l, w);
}

/* Per value, the sums of g_i a_i and of a_i^2 over its weights (double),
 * then their ratio. */
void bd_qlayer_tuned_gradient(const bd_layer *l, const bd_qlayer *q, const float *weight_grad,
                              float *grad)
{
    const int64_t count = bd_qlayer_tuned_count(q);
    memset(grad, 0, (size_t)count * sizeof *grad);
    bd_pq_layout lay;
    if (decode_layout(q, l, &lay) != BD_OK)
        return;
    const int d = (int)lay.d;
    float *sub = malloc((size_t)(lay.n * d) * sizeof *sub);
    double *ga = calloc((size_t)count, sizeof *ga), *aa = calloc((size_t)count, sizeof *aa);
    if (sub && ga && aa) {
        bd_pq_gather(&lay, weight_grad, sub); /* code i's d gradients at sub + i d */
        for (int64_t i = 0; i < lay.n; i++) {
            const float *g = sub + i * d;
            if (q->format == BD_FMT_PQ) {
                const int64_t c = (int64_t)q->codes[i] * d;
                for (int t = 0; t < d; t++) {
                    ga[c + t] += g[t];
                    aa[c + t] += 1;
                }
                continue;
            }
            const int64_t r = i / lay.m, at = q->nscales > 1 ? r : 0;
            const double s = bd_int_scale(q, r), u = (double)q->codes[i] - bd_int_zero(q, r);
            ga[at] += g[0] * u;
            aa[at] += u * u;
            if (q->zeros) {
                ga[q->nscales + at] -= g[0] * s;
                aa[q->nscales + at] += s * s;
            }
        }
        for (int64_t v = 0; v < count; v++)
            grad[v] = aa[v] > 0 ? (float)(ga[v] / aa[v]) : 0;
    }
    free(sub);
    free(ga);
    free(aa);
}

/* Runs of at most `most` codes of q from code `first` on, none across
 * rows of different bits: the run's length, and its code bits. */
static int64_t next_run(const bd_qlayer *q, int64_t first, int64_t most, int *bits)
{
    int64_t count = q->n - first < most ? q->n - first : most;
    *bits = uniform_bits(q);
    if (*bits < 0) {
        const int64_t len = q->n / q->nscales, r = first / len;
        *bits = q->row_bits[r];
        count = (r + 1) * len - first < count ? (r + 1) * len - first : count;
    }
    return count;
}

bd_status bd_qlayer_decode_packed(const bd_qlayer *q, const uint8_t *packed, const bd_layer *l,
                                  float *w)
{
    enum { CHUNK = 1024 };
    bd_pq_layout lay;
    BD_TRY(decode_layout(q, l, &lay));
    int32_t codes[CHUNK];
    int bits;
    for (int64_t first = 0, at = 0, count; first < q->n; first += count, at += count * bits) {
        count = next_run(q, first, CHUNK, &bits);
        bd_unpack_bits_at(packed, at, count, bits, codes);
        decode_codes(q, &lay, codes, first, count, w);
    }
    return BD_OK;
}

void bd_qlayer_pack(const bd_qlayer *q, uint8_t *out)
{
    memset(out, 0, (size_t)bd_qlayer_code_bytes(q));
    int bits;
    for (int64_t first = 0, at = 0, count; first < q->n; first += count, at += count * bits) {
        count = next_run(q, first, q->n, &bits);
        bd_pack_bits_at(q->codes + first, count, bits, out, at);
    }
}

void bd_pack_bits_at(const int32_t *codes, int64_t n, int bits, uint8_t *out, int64_t at)
{
    /* bits not yet written, low first; those below `held` at the start are
     * the string's own, which OR keeps */
    uint64_t acc = 0;
    int held = (int)(at & 7);
    int64_t o = at >> 3;
    for (int64_t i = 0; i < n; i++) {
        acc |= (uint64_t)(uint32_t)codes[i] << held;
        held += bits;
        while (held >= 8) {
            out[o++] |= (uint8_t)acc;
            acc >>= 8;
            held -= 8;
        }
    }
    if (held > 0)
        out[o] |= (uint8_t)acc;
}
