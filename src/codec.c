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
    free(q->history);
    memset(q, 0, sizeof *q);
}

/* A copy of n floats of src into *dst (NULL for none). */
static int dup_floats(float **dst, const float *src, int64_t n)
{
    *dst = NULL;
    if (!src || n <= 0)
        return 1;
    *dst = malloc((size_t)n * sizeof **dst);
    if (*dst)
        memcpy(*dst, src, (size_t)n * sizeof **dst);
    return *dst != NULL;
}

bd_status bd_qlayer_copy(bd_qlayer *dst, const bd_qlayer *src)
{
    *dst = *src;
    dst->codes = NULL;
    dst->history = NULL;
    int ok = dup_floats(&dst->centroids, src->centroids, (int64_t)src->k * src->d) &&
             dup_floats(&dst->scales, src->scales, src->nscales) &&
             dup_floats(&dst->zeros, src->zeros, src->nscales);
    if (ok && src->codes && src->n > 0) {
        dst->codes = malloc((size_t)src->n * sizeof *dst->codes);
        ok = dst->codes != NULL;
        if (ok)
            memcpy(dst->codes, src->codes, (size_t)src->n * sizeof *dst->codes);
    }
    if (ok && src->history && src->iters > 0) {
        dst->history = malloc((size_t)src->iters * sizeof *dst->history);
        ok = dst->history != NULL;
        if (ok)
            memcpy(dst->history, src->history, (size_t)src->iters * sizeof *dst->history);
    }
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

int64_t bd_qlayer_code_bytes(const bd_qlayer *q)
{
    return bd_packed_bytes(q->n, q->format == BD_FMT_INT ? q->ints.bits : bd_code_bits(q->k));
}

int64_t bd_qlayer_table_bytes(const bd_qlayer *q)
{
    if (q->format == BD_FMT_INT)
        return 2 * q->nscales * (q->ints.symmetric ? 1 : 2);
    return bd_pq_codebook_bytes(q->k, q->d);
}

int64_t bd_qlayer_bytes(const bd_qlayer *q)
{
    return q->k > 0 ? bd_qlayer_code_bytes(q) + bd_qlayer_table_bytes(q) : 0;
}

double bd_qlayer_bits_per_weight(const bd_qlayer *q)
{
    return q->format == BD_FMT_INT ? (double)q->ints.bits : bd_pq_bits_per_weight(q->k, q->d);
}

void bd_qlayer_describe(const bd_qlayer *q, char *buf, size_t cap)
{
    if (q->format == BD_FMT_INT)
        snprintf(buf, cap, "int=%d per=%s sym=%d", q->ints.bits,
                 q->ints.per_channel ? "channel" : "tensor", q->ints.symmetric);
    else
        snprintf(buf, cap, "d=%d k=%d", q->d, q->k);
}

void bd_qlayer_dk(const bd_qlayer *q, char d[8], char k[8])
{
    if (q->format == BD_FMT_INT) {
        snprintf(d, 8, "-");
        snprintf(k, 8, "int%d", q->ints.bits);
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

bd_status bd_qlayer_decode_packed(const bd_qlayer *q, const uint8_t *packed, const bd_layer *l,
                                  float *w)
{
    enum { CHUNK = 1024 };
    bd_pq_layout lay;
    BD_TRY(decode_layout(q, l, &lay));
    const int bits = q->format == BD_FMT_INT ? q->ints.bits : bd_code_bits(q->k);
    int32_t codes[CHUNK];
    for (int64_t first = 0; first < q->n; first += CHUNK) {
        const int64_t count = q->n - first < CHUNK ? q->n - first : CHUNK;
        bd_unpack_bits_from(packed, first, count, bits, codes);
        decode_codes(q, &lay, codes, first, count, w);
    }
    return BD_OK;
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
