#include "feedback.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cpu/kernel_util.h"

/* LAPACK's Cholesky routines, from the OpenBLAS that provides cblas (it
 * ships no lapacke.h here); column-major, so a symmetric matrix passes as
 * it is and a factor comes back transposed. In float, as GPTQ factors: the
 * damping bounds the condition number, the updates are float GEMMs anyway,
 * and double took 4 of ResNet-50's 57 s. */
void spotrf_(const char *uplo, const int *n, float *a, const int *lda, int *info);
void strtri_(const char *uplo, const char *diag, const int *n, float *a, const int *lda,
             int *info);

/* Relative damping of H's diagonal (GPTQ damps by 1% of its mean; relative
 * damping keeps a diagonal H's metric proportional to H itself), and a floor
 * for inputs that never fire. */
#define DAMP 0.01
#define FLOOR 1e-8

static bd_status check_layer(const bd_feedback_layer *fl, int d)
{
    if (fl->L > BD_FEEDBACK_MAX_LEN)
        return bd_fail(BD_EINVAL,
                       "rows of %lld values are longer than error feedback takes (at most %d)",
                       (long long)fl->L, BD_FEEDBACK_MAX_LEN);
    if (d < 1 || d > 64 || fl->L % d || fl->groups < 1 || fl->rows % fl->groups)
        return bd_fail(BD_EINVAL, "error feedback: d=%d, %lld rows of %lld in %lld groups", d,
                       (long long)fl->rows, (long long)fl->L, (long long)fl->groups);
    return BD_OK;
}

/* U with (H + damping)^-1 = U^T U, U upper triangular, row-major in u.
 * With J the reversal, Cholesky of J H J = M M^T gives H = (J M J)(J M J)^T
 * with J M J upper, so U = (J M J)^-1 = J M^-1 J: one factorisation and one
 * triangular inverse (2/3 L^3), where inverting H and factoring the
 * inverse would take twice that. */
static bd_status inverse_factor(const bd_gram *h, float *u)
{
    const int L = (int)h->d;
    const int64_t LL = (int64_t)L * L;
    double mean = 0;
    for (int i = 0; i < L; i++)
        mean += h->g[(int64_t)i * L + i];
    mean /= L;
    const double floor = FLOOR * (mean > 0 ? mean : 1);
    /* J H J is H read backwards (H is symmetric, so either major order) */
    for (int64_t x = 0; x < LL; x++)
        u[x] = (float)h->g[LL - 1 - x];
    for (int i = 0; i < L; i++) {
        const double v = h->g[(int64_t)(L - 1 - i) * L + (L - 1 - i)];
        u[(int64_t)i * L + i] = (float)(v + DAMP * v + floor);
    }
    int info = 0;
    spotrf_("L", &L, u, &L, &info);
    if (info == 0)
        strtri_("L", "N", &L, u, &L, &info);
    if (info != 0)
        return bd_fail(BD_EINVAL, "error feedback: the damped input Gram is not positive "
                                  "definite (LAPACK info %d)",
                       info);
    /* M^-1 (p, q), p >= q, is at u[p + q*L] (column-major); U(i, j) =
     * M^-1(L-1-i, L-1-j) belongs at row-major i*L + j = LL-1 - (p*L + q):
     * transpose, then reverse */
    for (int p = 0; p < L; p++)
        for (int q = 0; q < p; q++) {
            float t = u[(int64_t)p + (int64_t)q * L];
            u[(int64_t)p + (int64_t)q * L] = u[(int64_t)q + (int64_t)p * L];
            u[(int64_t)q + (int64_t)p * L] = t;
        }
    for (int64_t x = 0; x < LL / 2; x++) {
        float t = u[x];
        u[x] = u[LL - 1 - x];
        u[LL - 1 - x] = t;
    }
    for (int i = 0; i < L; i++)
        for (int j = 0; j < i; j++)
            u[(int64_t)i * L + j] = 0;
    return BD_OK;
}

/* inv = the inverse of the upper triangular d x d block of u at (c0, c0). */
static void block_inverse(const float *u, int64_t L, int64_t c0, int d, double *inv)
{
    memset(inv, 0, (size_t)d * (size_t)d * sizeof *inv);
    for (int j = 0; j < d; j++) {
        /* column j of inv solves U_bb x = e_j, bottom to top */
        for (int i = j; i >= 0; i--) {
            double v = i == j ? 1.0 : 0.0;
            for (int t = i + 1; t <= j; t++)
                v -= u[(c0 + i) * L + c0 + t] * inv[t * d + j];
            inv[i * d + j] = v / u[(c0 + i) * L + c0 + i];
        }
    }
}

/* Every group's U, groups x L x L, computed once for all passes. */
static bd_status inverse_factors(const bd_feedback_layer *fl, float **out)
{
    const int64_t LL = fl->L * fl->L;
    float *u = malloc((size_t)(fl->groups * LL) * sizeof *u);
    if (!u)
        return bd_fail(BD_ENOMEM, "out of memory for error feedback on rows of %lld",
                       (long long)fl->L);
    for (int64_t gi = 0; gi < fl->groups; gi++) {
        bd_status s = inverse_factor(&fl->h[gi], u + gi * LL);
        if (s != BD_OK) {
            free(u);
            return s;
        }
    }
    *out = u;
    return BD_OK;
}

/* Columns of a panel: a block's error reaches the columns left in its panel
 * at once and the rest of the row when the panel ends, as one GEMM of inner
 * dimension PANEL (GPTQ's lazy batch update). A GEMM per block, of inner
 * dimension d, moved the whole rest of the row through memory for 9 multiply-
 * adds per value: half a second per pass on ResNet-50's 3x3 layers of
 * layer4. */
enum { PANEL = 128 };

static bd_status pass_with(const bd_feedback_layer *fl, const float *factors, int d,
                           bd_feedback_quantizer quantize, void *ctx, const bd_progress *progress)
{
    const int64_t L = fl->L, mg = fl->rows / fl->groups, m = L / d;
    const int64_t per = PANEL / d > 0 ? PANEL / d : 1, pw = per * d; /* blocks, columns */
    float *w = malloc((size_t)(mg * L) * sizeof *w);
    float *wb = malloc((size_t)(mg * d) * sizeof *wb), *qb = malloc((size_t)(mg * d) * sizeof *qb);
    float *f = malloc((size_t)(mg * pw) * sizeof *f); /* the panel's errors times U_bb^-1 */
    double inv[64 * 64], metric[64 * 64];
    bd_status s = w && wb && qb && f ? BD_OK
                                           : bd_fail(BD_ENOMEM, "out of memory for error "
                                                                "feedback on rows of %lld",
                                                     (long long)L);
    for (int64_t gi = 0; s == BD_OK && gi < fl->groups; gi++) {
        const float *u = factors + gi * L * L;
        memcpy(w, fl->w + gi * mg * L, (size_t)(mg * L) * sizeof *w);
        for (int64_t b0 = 0; s == BD_OK && b0 < m; b0 += per) {
            /* panel [lo, hi) of columns */
            const int64_t lo = b0 * d, hi = (b0 + per < m ? b0 + per : m) * d;
            for (int64_t c0 = lo; c0 < hi; c0 += d) {
                block_inverse(u, L, c0, d, inv);
                for (int i = 0; i < d; i++)
                    for (int j = 0; j < d; j++) {
                        double v = 0;
                        for (int t = (i > j ? i : j); t < d; t++)
                            v += inv[i * d + t] * inv[j * d + t];
                        metric[i * d + j] = v;
                    }
                for (int64_t r = 0; r < mg; r++)
                    memcpy(wb + r * d, w + r * L + c0, (size_t)d * sizeof *wb);
                if ((s = quantize(ctx, gi, c0 / d, wb, mg, d, metric, qb)) != BD_OK)
                    break;
                /* F = (wb - qb) U_bb^-1, then W[:, c0+d..hi) -= F U_b,(c0+d..hi) */
                for (int64_t r = 0; r < mg; r++)
                    for (int t = 0; t < d; t++) {
                        double v = 0;
                        for (int i = 0; i <= t; i++)
                            v += ((double)wb[r * d + i] - qb[r * d + i]) * inv[i * d + t];
                        f[r * pw + (c0 - lo) + t] = (float)v;
                    }
                if (c0 + d < hi)
                    bd_sgemm_panels((int)mg, (int)(hi - c0 - d), d, -1.0f, f + (c0 - lo), (int)pw,
                                    u + c0 * L + c0 + d, (int)L, 1.0f,
                                    w + c0 + d, (int)L);
            }
            if (s == BD_OK && hi < L)
                bd_sgemm_panels((int)mg, (int)(L - hi), (int)(hi - lo), -1.0f, f, (int)pw,
                                u + lo * L + hi, (int)L, 1.0f, w + hi, (int)L);
        }
        if (s == BD_OK && fl->groups > 1) {
            char msg[96];
            snprintf(msg, sizeof msg, "error feedback: group %lld of %lld", (long long)gi + 1,
                     (long long)fl->groups);
            s = bd_progress_report(progress, "feedback", gi + 1, fl->groups, msg, 0);
        }
    }
    free(w);
    free(wb);
    free(qb);
    free(f);
    return s;
}

bd_status bd_feedback_pass(const bd_feedback_layer *fl, int d, bd_feedback_quantizer quantize,
                           void *ctx, const bd_progress *progress)
{
    BD_TRY(check_layer(fl, d));
    float *u;
    BD_TRY(inverse_factors(fl, &u));
    bd_status s = pass_with(fl, u, d, quantize, ctx, progress);
    free(u);
    return s;
}

/* Each group's H in float for the GEMMs of the objective and its
 * gradient, which cancellation does not threaten: they are sums of
 * products of residuals, not differences of large sums. */
static float *float_grams(const bd_feedback_layer *fl)
{
    const int64_t LL = fl->L * fl->L;
    float *hf = malloc((size_t)(fl->groups * LL) * sizeof *hf);
    if (hf)
        for (int64_t gi = 0; gi < fl->groups; gi++)
            for (int64_t i = 0; i < LL; i++)
                hf[gi * LL + i] = (float)fl->h[gi].g[i];
    return hf;
}

/* out = X H per group (rows x L), X rows x L. */
static void times_h(const bd_feedback_layer *fl, const float *hf, const float *x, float *out)
{
    const int64_t L = fl->L, mg = fl->rows / fl->groups;
    for (int64_t gi = 0; gi < fl->groups; gi++)
        bd_sgemm_panels((int)mg, (int)L, (int)L, 1.0f, x + gi * mg * L, (int)L, hf + gi * L * L,
                        (int)L, 0.0f, out + gi * mg * L, (int)L);
}

static double objective_with(const bd_feedback_layer *fl, const float *hf, const float *w_hat,
                             float *diff, float *dh, double *per_row)
{
    const int64_t count = fl->rows * fl->L;
    for (int64_t i = 0; i < count; i++)
        diff[i] = fl->w[i] - w_hat[i];
    times_h(fl, hf, diff, dh);
    double f = 0;
    for (int64_t r = 0; r < fl->rows; r++) {
        double fr = 0;
        for (int64_t i = r * fl->L; i < (r + 1) * fl->L; i++)
            fr += (double)diff[i] * (double)dh[i];
        if (per_row)
            per_row[r] = fr;
        f += fr;
    }
    return f;
}

bd_status bd_feedback_row_errors(const bd_feedback_layer *fl, const float *w_hat, double *err)
{
    const int64_t count = fl->rows * fl->L;
    float *hf = float_grams(fl);
    float *diff = malloc((size_t)count * sizeof *diff), *dh = malloc((size_t)count * sizeof *dh);
    bd_status s = hf && diff && dh ? BD_OK
                                   : bd_fail(BD_ENOMEM, "out of memory for the output error of "
                                                        "rows of %lld", (long long)fl->L);
    if (s == BD_OK)
        objective_with(fl, hf, w_hat, diff, dh, err);
    free(hf);
    free(diff);
    free(dh);
    return s;
}

double bd_feedback_objective(const bd_feedback_layer *fl, const float *w_hat)
{
    const int64_t count = fl->rows * fl->L;
    float *hf = float_grams(fl);
    float *diff = malloc((size_t)count * sizeof *diff), *dh = malloc((size_t)count * sizeof *dh);
    double f = hf && diff && dh ? objective_with(fl, hf, w_hat, diff, dh, NULL) : NAN;
    free(hf);
    free(diff);
    free(dh);
    return f;
}

bd_status bd_feedback_block_gram(const bd_feedback_layer *fl, int d, bd_gram *out)
{
    BD_TRY(check_layer(fl, d));
    BD_TRY(bd_gram_init(out, d));
    const int64_t L = fl->L, m = L / d;
    for (int64_t gi = 0; gi < fl->groups; gi++) {
        for (int64_t b = 0; b < m; b++)
            for (int i = 0; i < d; i++)
                for (int j = 0; j < d; j++)
                    out->g[i * d + j] += fl->h[gi].g[(b * d + i) * L + b * d + j];
        out->rows += fl->h[gi].rows;
        out->blocks += fl->h[gi].rows * m;
    }
    return BD_OK;
}

/* ---- PQ ---------------------------------------------------------------------- */

typedef struct pq_ctx {
    const float *centroids;
    int k;
    int64_t mg, m;
    int32_t *assign; /* rows * m */
} pq_ctx;

static bd_status pq_quantize(void *ctx, int64_t group, int64_t block, const float *wb,
                             int64_t rows, int d, const double *metric, float *qb)
{
    pq_ctx *c = ctx;
    int32_t *codes = malloc((size_t)rows * sizeof *codes);
    if (!codes)
        return bd_fail(BD_ENOMEM, "out of memory");
    bd_gram g = {.d = d, .g = (double *)metric, .rows = 1, .blocks = 1};
    bd_status s = bd_pq_assign(wb, rows, &g, c->centroids, c->k, codes, NULL);
    for (int64_t r = 0; s == BD_OK && r < rows; r++) {
        c->assign[(group * c->mg + r) * c->m + block] = codes[r];
        memcpy(qb + r * d, c->centroids + (int64_t)codes[r] * d, (size_t)d * sizeof *qb);
    }
    free(codes);
    return s;
}

/* The refit of the codebook to fixed codes: minimise
 * f(C) = sum_r (w_r - w^_r(C))^T H (w_r - w^_r(C)), a quadratic in C whose
 * normal equations A(C) = b have A(C) = S(decode(C) H), b = S(W H), S the
 * sum of a row's blocks into their centroids. Conjugate gradients from the
 * current codebook, preconditioned by each centroid's own d x d block of A
 * (the sum of H's diagonal blocks over its members), never raise f. */
enum { CG_ITERS = 4 };

typedef struct refit {
    const bd_feedback_layer *fl;
    const float *hf;
    int d, k;
    const int32_t *assign;
    float *x, *xh; /* rows x L scratch */
    double *prec;  /* k x d x d: the inverse of each centroid's block (Cholesky-solved) */
} refit;

static void scatter(const refit *r, const float *xh, double *out)
{
    const int d = r->d;
    const int64_t n = r->fl->rows * r->fl->L / d;
    memset(out, 0, (size_t)r->k * (size_t)d * sizeof *out);
    for (int64_t i = 0; i < n; i++)
        for (int t = 0; t < d; t++)
            out[(int64_t)r->assign[i] * d + t] += xh[i * d + t];
}

static void apply_a(const refit *r, const double *c, double *out)
{
    const int d = r->d;
    const int64_t n = r->fl->rows * r->fl->L / d;
    for (int64_t i = 0; i < n; i++)
        for (int t = 0; t < d; t++)
            r->x[i * d + t] = (float)c[(int64_t)r->assign[i] * d + t];
    times_h(r->fl, r->hf, r->x, r->xh);
    scatter(r, r->xh, out);
}

static void precondition(const refit *r, const double *in, double *out)
{
    const int d = r->d;
    for (int c = 0; c < r->k; c++) {
        const double *p = r->prec + (int64_t)c * d * d;
        for (int i = 0; i < d; i++) {
            double v = 0;
            for (int j = 0; j < d; j++)
                v += p[i * d + j] * in[(int64_t)c * d + j];
            out[(int64_t)c * d + i] = v;
        }
    }
}

/* prec[c] = (sum of H's diagonal blocks over c's members)^-1, by a small
 * Gauss-Jordan with a ridge; an unused centroid gets the identity. */
static void build_preconditioner(refit *r)
{
    const int d = r->d;
    const int64_t L = r->fl->L, m = L / d, mg = r->fl->rows / r->fl->groups;
    const int64_t n = r->fl->rows * m;
    double *blk = calloc((size_t)r->k * (size_t)d * (size_t)d, sizeof *blk);
    if (!blk) {
        for (int c = 0; c < r->k; c++)
            for (int i = 0; i < d * d; i++)
                r->prec[(int64_t)c * d * d + i] = i % (d + 1) == 0;
        return;
    }
    for (int64_t i = 0; i < n; i++) {
        int64_t gi = (i / m) / mg, b = i % m;
        double *a = blk + (int64_t)r->assign[i] * d * d;
        const double *h = r->fl->h[gi].g;
        for (int s = 0; s < d; s++)
            for (int t = 0; t < d; t++)
                a[s * d + t] += h[(b * d + s) * L + b * d + t];
    }
    for (int c = 0; c < r->k; c++) {
        double a[64 * 128];
        const double *src = blk + (int64_t)c * d * d;
        double tr = 0;
        for (int i = 0; i < d; i++)
            tr += src[i * d + i];
        for (int i = 0; i < d; i++)
            for (int j = 0; j < 2 * d; j++)
                a[i * 2 * d + j] = j < d ? src[i * d + j] + (i == j ? 1e-6 * tr / d + 1e-30 : 0)
                                         : (j - d == i);
        for (int col = 0; col < d; col++) {
            double piv = a[col * 2 * d + col];
            for (int j = 0; j < 2 * d; j++)
                a[col * 2 * d + j] /= piv;
            for (int i = 0; i < d; i++)
                if (i != col) {
                    double f = a[i * 2 * d + col];
                    for (int j = 0; j < 2 * d; j++)
                        a[i * 2 * d + j] -= f * a[col * 2 * d + j];
                }
        }
        for (int i = 0; i < d; i++)
            for (int j = 0; j < d; j++)
                r->prec[(int64_t)c * d * d + i * d + j] = a[i * 2 * d + d + j];
    }
    free(blk);
}

static double dot(const double *a, const double *b, int64_t n)
{
    double s = 0;
    for (int64_t i = 0; i < n; i++)
        s += a[i] * b[i];
    return s;
}

/* The objective after the refit comes with it: at the start it is
 * sum x^T (x H) over the residual x = W - decode(c) whose product res needs
 * anyway, and a CG step of length alpha along p lowers the quadratic by
 * alpha (2 p^T res - alpha p^T A p) = alpha r^T z, since p^T res = r^T z
 * and alpha p^T A p = r^T z; so no product with H is spent on it. */
static bd_status refit_codebook(refit *r, float *centroids, double *objective)
{
    const int64_t kd = (int64_t)r->k * r->d, count = r->fl->rows * r->fl->L;
    double *c = malloc((size_t)kd * sizeof *c), *res = malloc((size_t)kd * sizeof *res);
    double *z = malloc((size_t)kd * sizeof *z), *p = malloc((size_t)kd * sizeof *p);
    double *ap = malloc((size_t)kd * sizeof *ap);
    if (!c || !res || !z || !p || !ap) {
        free(c), free(res), free(z), free(p), free(ap);
        return bd_fail(BD_ENOMEM, "out of memory refitting a codebook");
    }
    for (int64_t i = 0; i < kd; i++)
        c[i] = centroids[i];
    build_preconditioner(r);
    /* res = b - A(c) = S((W - decode(c)) H) */
    for (int64_t i = 0; i < count; i++)
        r->x[i] = r->fl->w[i] - centroids[(int64_t)r->assign[i / r->d] * r->d + i % r->d];
    times_h(r->fl, r->hf, r->x, r->xh);
    double f = 0;
    for (int64_t i = 0; i < count; i++)
        f += (double)r->x[i] * (double)r->xh[i];
    scatter(r, r->xh, res);
    precondition(r, res, z);
    memcpy(p, z, (size_t)kd * sizeof *p);
    double rz = dot(res, z, kd);
    for (int it = 0; it < CG_ITERS && rz > 0; it++) {
        apply_a(r, p, ap);
        double pap = dot(p, ap, kd);
        if (!(pap > 0))
            break;
        double alpha = rz / pap;
        f -= alpha * rz;
        for (int64_t i = 0; i < kd; i++) {
            c[i] += alpha * p[i];
            res[i] -= alpha * ap[i];
        }
        precondition(r, res, z);
        double rz_next = dot(res, z, kd);
        for (int64_t i = 0; i < kd; i++)
            p[i] = z[i] + rz_next / rz * p[i];
        rz = rz_next;
    }
    for (int64_t i = 0; i < kd; i++)
        centroids[i] = (float)c[i];
    *objective = f > 0 ? f : 0;
    free(c), free(res), free(z), free(p), free(ap);
    return BD_OK;
}

bd_status bd_feedback_pq(const bd_feedback_layer *fl, int d, int k, float *centroids,
                         int32_t *assign, int passes, const bd_progress *progress,
                         double *before, double *after)
{
    BD_TRY(check_layer(fl, d));
    const int64_t count = fl->rows * fl->L, n = count / d, kd = (int64_t)k * d;
    float *hf = float_grams(fl);
    float *x = malloc((size_t)count * sizeof *x), *xh = malloc((size_t)count * sizeof *xh);
    float *w_hat = malloc((size_t)count * sizeof *w_hat);
    float *cand = malloc((size_t)kd * sizeof *cand);
    int32_t *codes = malloc((size_t)n * sizeof *codes);
    double *prec = malloc((size_t)kd * (size_t)d * sizeof *prec);
    bd_status s = hf && x && xh && w_hat && cand && codes && prec
                      ? BD_OK
                      : bd_fail(BD_ENOMEM, "out of memory for error feedback on %lld weights",
                                (long long)count);
    float *u = NULL;
    if (s == BD_OK)
        s = inverse_factors(fl, &u);
    double best = INFINITY;
    if (s == BD_OK) {
        bd_pq_decode(centroids, d, assign, n, w_hat);
        best = objective_with(fl, hf, w_hat, x, xh, NULL);
        if (before)
            *before = best;
        memcpy(cand, centroids, (size_t)kd * sizeof *cand);
    }
    for (int p = 0; s == BD_OK && p < passes; p++) {
        pq_ctx pc = {cand, k, fl->rows / fl->groups, fl->L / d, codes};
        if ((s = pass_with(fl, u, d, pq_quantize, &pc, progress)) != BD_OK)
            break;
        refit r = {fl, hf, d, k, codes, x, xh, prec};
        double f = INFINITY;
        if ((s = refit_codebook(&r, cand, &f)) != BD_OK)
            break;
        if (f < best) {
            best = f;
            memcpy(centroids, cand, (size_t)kd * sizeof *cand);
            memcpy(assign, codes, (size_t)n * sizeof *codes);
        }
        char msg[96];
        snprintf(msg, sizeof msg, "error feedback pass %d of %d: objective %.6g", p + 1, passes, f);
        s = bd_progress_report(progress, "feedback", p + 1, passes, msg, f);
    }
    if (after)
        *after = best;
    free(hf);
    free(x);
    free(xh);
    free(w_hat);
    free(cand);
    free(codes);
    free(prec);
    free(u);
    return s;
}
