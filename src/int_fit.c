#include "int_fit.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "pq.h"

/* The range of grid i's values (row i, or the tensor's), widened to hold
 * 0 so that a zero weight stays representable. */
static void range_of(const bd_feedback_layer *fl, int64_t nscales, int64_t i, float *lo, float *hi)
{
    const int64_t count = nscales > 1 ? fl->L : fl->rows * fl->L;
    const float *v = fl->w + (nscales > 1 ? i * fl->L : 0);
    *lo = *hi = 0;
    for (int64_t j = 0; j < count; j++) {
        *lo = v[j] < *lo ? v[j] : *lo;
        *hi = v[j] > *hi ? v[j] : *hi;
    }
}

/* The grid of `bits` bits from lo * a to hi * b (symmetric: +-max(|lo|,
 * hi) * a), in fp16 as the file stores it. */
static void grid_for(float lo, float hi, int bits, int symmetric, double a, double b,
                     float *scale, float *zero)
{
    const int levels = 1 << bits;
    double s, z;
    if (symmetric) {
        s = a * fmax(-lo, hi) / (levels / 2 - 1);
        z = levels / 2;
    } else {
        s = (b * hi - a * lo) / (levels - 1);
        z = s > 0 ? -a * lo / s : 0;
    }
    if (!(s > 0)) /* an all-zero row: any scale decodes it exactly */
        s = 1;
    *scale = (float)s;
    *zero = (float)z;
    bd_pq_round_fp16(scale, 1);
    if (*scale == 0) /* below fp16's smallest subnormal: that subnormal, 2^-24 */
        *scale = ldexpf(1.0f, -24);
    /* a row of negative weights at 16 bits puts z near 2^16 - 1, past
     * fp16's largest finite value: the grid then barely clips its end */
    if (!symmetric && *zero > 65504.0f)
        *zero = 65504.0f;
    if (!symmetric)
        bd_pq_round_fp16(zero, 1);
}

static int32_t code_of(float w, float s, float z, int levels)
{
    float u = rintf(w / s + z);
    return u < 0 ? 0 : u > (float)(levels - 1) ? levels - 1 : (int32_t)u;
}

void bd_int_round(const bd_qlayer *q, int64_t rows, int64_t L, const float *w, int32_t *codes,
                  float *w_hat)
{
    for (int64_t r = 0; r < rows; r++) {
        const float s = bd_int_scale(q, r), z = bd_int_zero(q, r);
        const int levels = 1 << bd_int_row_bits(q, r);
        for (int64_t j = r * L; j < (r + 1) * L; j++) {
            const int32_t c = code_of(w[j], s, z, levels);
            if (codes)
                codes[j] = c;
            w_hat[j] = s * ((float)c - z);
        }
    }
}

/* Every weight rounded to its grid: q's codes, decoded into w_hat. */
static void round_rows(const bd_feedback_layer *fl, bd_qlayer *q, float *w_hat)
{
    bd_int_round(q, fl->rows, fl->L, fl->w, q->codes, w_hat);
}

double bd_int_clip_ratio(int i) { return 1.0 - 0.95 * i / (BD_INT_CLIP_STEPS - 1); }

static void set_grid(const bd_feedback_layer *fl, bd_qlayer *q, int64_t i, double a, double b)
{
    float lo, hi, zero;
    range_of(fl, q->nscales, i, &lo, &hi);
    grid_for(lo, hi, bd_int_row_bits(q, i), q->ints.symmetric, a, b, &q->scales[i], &zero);
    if (q->zeros)
        q->zeros[i] = zero;
}

enum { KEEP = 4 }; /* candidates per grid the full Gram decides between */

typedef struct candidate {
    double err;
    float scale, zero;
} candidate;

/* Inserts c into best[0..KEEP) (sorted, lowest error first). */
static void keep_best(candidate *best, candidate c)
{
    if (!(c.err < best[KEEP - 1].err))
        return;
    int j = KEEP - 1;
    for (; j > 0 && c.err < best[j - 1].err; j--)
        best[j] = best[j - 1];
    best[j] = c;
}

/* Stage one, for grid i: every pair of clipping ratios (one ratio for a
 * symmetric grid), weighed by the diagonal of H, the error of each weight
 * on its own; the KEEP best go to stage two. */
static void diagonal_search(const bd_feedback_layer *fl, const bd_qlayer *q, int64_t i,
                            candidate *best)
{
    const int64_t L = fl->L, mg = fl->rows / fl->groups;
    const int64_t r0 = q->nscales > 1 ? i : 0, r1 = q->nscales > 1 ? i + 1 : fl->rows;
    float lo, hi;
    range_of(fl, q->nscales, i, &lo, &hi);
    for (int j = 0; j < KEEP; j++)
        best[j].err = INFINITY;
    const int nb = q->ints.symmetric ? 1 : BD_INT_CLIP_STEPS, bits = bd_int_row_bits(q, i);
    for (int ia = 0; ia < BD_INT_CLIP_STEPS; ia++)
        for (int ib = 0; ib < nb; ib++) {
            candidate c = {0, 0, 0};
            grid_for(lo, hi, bits, q->ints.symmetric, bd_int_clip_ratio(ia),
                     bd_int_clip_ratio(ib), &c.scale, &c.zero);
            for (int64_t r = r0; r < r1; r++) {
                const double *g = fl->h[r / mg].g;
                for (int64_t j = 0; j < L; j++) {
                    const float w = fl->w[r * L + j];
                    const float e =
                        w - c.scale * ((float)code_of(w, c.scale, c.zero, 1 << bits) - c.zero);
                    c.err += g[j * L + j] * (double)e * (double)e;
                }
            }
            keep_best(best, c);
        }
}

/* For every grid, the clipping with the lowest output error: the diagonal
 * of H narrows the pairs of ratios to a few, the whole H (which sees how
 * the errors of a row's weights add up at the output) picks among them. */
static bd_status search_clipping(const bd_feedback_layer *fl, bd_qlayer *q, float *w_hat,
                                 const bd_progress *progress)
{
    const int64_t rows = fl->rows;
    candidate *best = malloc((size_t)(q->nscales * KEEP) * sizeof *best);
    double *err = malloc((size_t)rows * sizeof *err);
    double *chosen = malloc((size_t)q->nscales * sizeof *chosen);
    int *pick = calloc((size_t)q->nscales, sizeof *pick);
    bd_status s = best && err && chosen && pick
                      ? BD_OK
                      : bd_fail(BD_ENOMEM, "out of memory for the int fit");
    for (int64_t i = 0; s == BD_OK && i < q->nscales; i++) {
        diagonal_search(fl, q, i, best + i * KEEP);
        if (i % 64 == 63 || i == q->nscales - 1)
            s = bd_progress_report(progress, "int", i + 1, q->nscales, "clipping search", 0);
    }
    for (int t = 0; s == BD_OK && t < KEEP; t++) {
        for (int64_t i = 0; i < q->nscales; i++) {
            const candidate *c = &best[i * KEEP + (isfinite(best[i * KEEP + t].err) ? t : 0)];
            q->scales[i] = c->scale;
            if (q->zeros)
                q->zeros[i] = c->zero;
        }
        round_rows(fl, q, w_hat);
        if ((s = bd_feedback_row_errors(fl, w_hat, err)) != BD_OK)
            break;
        if (q->nscales == 1)
            for (int64_t r = 1; r < rows; r++)
                err[0] += err[r];
        for (int64_t i = 0; i < q->nscales; i++)
            if (t == 0 || err[i] < chosen[i]) {
                chosen[i] = err[i];
                pick[i] = t;
            }
    }
    for (int64_t i = 0; s == BD_OK && i < q->nscales; i++) {
        const candidate *c = &best[i * KEEP + (isfinite(best[i * KEEP + pick[i]].err) ? pick[i] : 0)];
        q->scales[i] = c->scale;
        if (q->zeros)
            q->zeros[i] = c->zero;
    }
    free(best);
    free(err);
    free(chosen);
    free(pick);
    return s;
}

typedef struct feed_ctx {
    const bd_feedback_layer *fl;
    const bd_qlayer *q;
    int32_t *codes; /* rows x L, what the pass chose */
} feed_ctx;

static bd_status feed_round(void *ctx, int64_t group, int64_t block, const float *wb,
                            int64_t rows, int d, const double *metric, float *qb)
{
    (void)d;
    (void)metric;
    const feed_ctx *c = ctx;
    const int64_t L = c->fl->L;
    for (int64_t i = 0; i < rows; i++) {
        const int64_t r = group * rows + i;
        const float s = bd_int_scale(c->q, r), z = bd_int_zero(c->q, r);
        int32_t u = code_of(wb[i], s, z, 1 << bd_int_row_bits(c->q, r));
        c->codes[r * L + block] = u;
        qb[i] = s * ((float)u - z);
    }
    return BD_OK;
}

/* The feedback pass on q's grids; its codes replace q's where the whole
 * layer's output error is lower. */
static bd_status feed_back(const bd_feedback_layer *fl, bd_qlayer *q, float *w_hat,
                           const bd_progress *progress)
{
    const int64_t count = fl->rows * fl->L;
    int32_t *codes = malloc((size_t)count * sizeof *codes);
    float *fed = malloc((size_t)count * sizeof *fed);
    bd_status s = codes && fed ? BD_OK : bd_fail(BD_ENOMEM, "out of memory for the int fit");
    feed_ctx c = {fl, q, codes};
    if (s == BD_OK)
        s = bd_feedback_pass(fl, 1, feed_round, &c, progress);
    if (s == BD_OK) {
        for (int64_t r = 0; r < fl->rows; r++) {
            const float sc = bd_int_scale(q, r), z = bd_int_zero(q, r);
            for (int64_t j = r * fl->L; j < (r + 1) * fl->L; j++)
                fed[j] = sc * ((float)codes[j] - z);
        }
        if (bd_feedback_objective(fl, fed) < bd_feedback_objective(fl, w_hat)) {
            memcpy(q->codes, codes, (size_t)count * sizeof *codes);
            memcpy(w_hat, fed, (size_t)count * sizeof *fed);
        }
    }
    free(codes);
    free(fed);
    return s;
}

bd_status bd_int_fit(const bd_feedback_layer *fl, const bd_int_spec *spec,
                     const int32_t *row_bits, bd_objective objective,
                     const bd_progress *progress, bd_qlayer *q, float *w_hat)
{
    memset(q, 0, sizeof *q);
    if (objective != BD_OBJ_WEIGHT && !fl->h)
        return bd_fail(BD_EINVAL, "the %s objective of an int fit needs the rows' input Gram",
                       bd_objective_name(objective));
    if (row_bits && !spec->per_channel)
        return bd_fail(BD_EINVAL, "a bit length per row needs a grid per row (per=channel)");
    int widest = spec->bits;
    for (int64_t r = 0; row_bits && r < fl->rows; r++) {
        if (row_bits[r] < (spec->symmetric ? 2 : BD_INT_MIN_BITS) ||
            row_bits[r] > BD_INT_MAX_BITS)
            return bd_fail(BD_EINVAL, "row %lld: int=%d is not allowed; bits are %d to %d",
                           (long long)r, (int)row_bits[r], spec->symmetric ? 2 : BD_INT_MIN_BITS,
                           BD_INT_MAX_BITS);
        widest = r == 0 || row_bits[r] > widest ? row_bits[r] : widest;
    }
    q->format = BD_FMT_INT;
    q->ints = *spec;
    q->ints.bits = widest;
    q->objective = objective;
    q->d = 1;
    q->k = 1 << widest;
    q->n = fl->rows * fl->L;
    q->nscales = spec->per_channel ? fl->rows : 1;
    q->scales = malloc((size_t)q->nscales * sizeof *q->scales);
    q->zeros = spec->symmetric ? NULL : malloc((size_t)q->nscales * sizeof *q->zeros);
    q->codes = malloc((size_t)q->n * sizeof *q->codes);
    q->row_bits = row_bits ? malloc((size_t)fl->rows * sizeof *q->row_bits) : NULL;
    q->rel_error = -1;
    q->other_error = -1;
    bd_status s = q->scales && q->codes && (spec->symmetric || q->zeros) &&
                          (!row_bits || q->row_bits)
                      ? BD_OK
                      : bd_fail(BD_ENOMEM, "out of memory for the int fit");
    if (s == BD_OK && row_bits)
        memcpy(q->row_bits, row_bits, (size_t)fl->rows * sizeof *q->row_bits);
    for (int64_t i = 0; s == BD_OK && objective == BD_OBJ_WEIGHT && i < q->nscales; i++)
        set_grid(fl, q, i, 1, 1);
    if (s == BD_OK && objective != BD_OBJ_WEIGHT)
        s = search_clipping(fl, q, w_hat, progress);
    if (s == BD_OK)
        round_rows(fl, q, w_hat);
    if (s == BD_OK && objective == BD_OBJ_FEEDBACK)
        s = feed_back(fl, q, w_hat, progress);
    if (s != BD_OK)
        bd_qlayer_free(q);
    return s;
}
