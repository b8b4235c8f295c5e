#include "pq.h"

#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "data.h"
#include "tensor.h"

/* ---- layout ---------------------------------------------------------------- */

bd_status bd_pq_layout_init(const bd_layer *l, int64_t d, bd_pq_layout *lay)
{
    if (d < 1 || l->row_len % d != 0) {
        char divisors[256];
        size_t used = 0;
        divisors[0] = '\0';
        for (int64_t v = 1; v <= l->row_len && used + 24 < sizeof divisors; v++)
            if (l->row_len % v == 0)
                used += (size_t)snprintf(divisors + used, sizeof divisors - used, "%s%lld",
                                         used ? ", " : "", (long long)v);
        return bd_fail(BD_EINVAL,
                       "layer '%s': d=%lld does not divide its row length %lld (divisors: %s)",
                       l->name, (long long)d, (long long)l->row_len, divisors);
    }
    lay->rows = l->rows;
    lay->row_len = l->row_len;
    lay->d = d;
    lay->m = l->row_len / d;
    lay->n = l->rows * lay->m;
    lay->transposed = l->transposed;
    return BD_OK;
}

void bd_pq_gather(const bd_pq_layout *lay, const float *w, float *sub)
{
    if (!lay->transposed) { /* [rows][row_len] is already [n][d] */
        memcpy(sub, w, (size_t)(lay->n * lay->d) * sizeof *sub);
        return;
    }
    for (int64_t r = 0; r < lay->rows; r++)
        for (int64_t c = 0; c < lay->row_len; c++)
            sub[r * lay->row_len + c] = w[c * lay->rows + r];
}

void bd_pq_scatter(const bd_pq_layout *lay, const float *sub, float *w)
{
    if (!lay->transposed) {
        memcpy(w, sub, (size_t)(lay->n * lay->d) * sizeof *w);
        return;
    }
    for (int64_t r = 0; r < lay->rows; r++)
        for (int64_t c = 0; c < lay->row_len; c++)
            w[c * lay->rows + r] = sub[r * lay->row_len + c];
}

/* ---- Gram matrix ----------------------------------------------------------- */

bd_status bd_gram_init(bd_gram *gr, int64_t d)
{
    memset(gr, 0, sizeof *gr);
    gr->d = d;
    gr->g = calloc((size_t)(d * d), sizeof *gr->g);
    gr->acc = calloc((size_t)(d * d), sizeof *gr->acc);
    if (!gr->g || !gr->acc) {
        bd_gram_free(gr);
        return bd_fail(BD_ENOMEM, "out of memory for a %lldx%lld Gram matrix", (long long)d,
                       (long long)d);
    }
    return BD_OK;
}

void bd_gram_free(bd_gram *gr)
{
    free(gr->g);
    free(gr->acc);
    memset(gr, 0, sizeof *gr);
}

/* Each chunk's sum is formed in float by BLAS and added to the double total,
 * so millions of rows accumulate without float drift. */
void bd_gram_fold(bd_gram *gr, int64_t rows, int64_t blocks)
{
    for (int64_t i = 0; i < gr->d; i++)
        for (int64_t j = i; j < gr->d; j++)
            gr->g[i * gr->d + j] += gr->acc[i * gr->d + j];
    gr->rows += rows;
    gr->blocks += blocks;
}

void bd_gram_add_rows(bd_gram *gr, const float *x, int64_t r, int64_t row_len)
{
    const int64_t d = gr->d, m = row_len / d;
    if (r <= 0)
        return;
    /* r rows of m contiguous blocks are (r*m) rows of d: one SYRK */
    cblas_ssyrk(CblasRowMajor, CblasUpper, CblasTrans, (int)d, (int)(r * m), 1.0f, x, (int)d,
                0.0f, gr->acc, (int)d);
    bd_gram_fold(gr, r, r * m);
}

void bd_gram_add_cols(bd_gram *gr, const float *cols, int64_t row_len, int64_t ncols)
{
    const int64_t d = gr->d, m = row_len / d;
    if (ncols <= 0)
        return;
    for (int64_t b = 0; b < m; b++)
        cblas_ssyrk(CblasRowMajor, CblasUpper, CblasNoTrans, (int)d, (int)ncols, 1.0f,
                    cols + b * d * ncols, (int)ncols, b ? 1.0f : 0.0f, gr->acc, (int)d);
    bd_gram_fold(gr, ncols, ncols * m);
}

void bd_gram_finish(bd_gram *gr)
{
    for (int64_t i = 0; i < gr->d; i++)
        for (int64_t j = 0; j < i; j++)
            gr->g[i * gr->d + j] = gr->g[j * gr->d + i];
}

bd_status bd_gram_identity(bd_gram *gr, int64_t d)
{
    BD_TRY(bd_gram_init(gr, d));
    for (int64_t i = 0; i < d; i++)
        gr->g[i * d + i] = 1.0;
    gr->rows = 1;
    gr->blocks = 1;
    return BD_OK;
}

/* ---- EM -------------------------------------------------------------------- */

int bd_pq_max_k(int64_t n)
{
    double quarter = (double)n / 4.0;
    int k = 1;
    while ((double)k * 2 < quarter && k * 2 <= 65536)
        k *= 2;
    return k;
}

/* What one E-step needs besides the centroids: the subvectors times G
 * (fixed for the whole fit) and G in float for the centroid terms. */
typedef struct estep {
    const float *sub;
    int64_t n;
    int d;
    float *gf; /* d x d */
    float *sg; /* n x d: sub * G */
} estep;

static bd_status estep_init(estep *e, const float *sub, int64_t n, const bd_gram *gr)
{
    e->sub = sub;
    e->n = n;
    e->d = (int)gr->d;
    e->gf = malloc((size_t)(e->d * e->d) * sizeof *e->gf);
    e->sg = malloc((size_t)n * (size_t)e->d * sizeof *e->sg + 1);
    if (!e->gf || !e->sg) {
        free(e->gf);
        free(e->sg);
        return bd_fail(BD_ENOMEM, "out of memory for %lld subvectors", (long long)n);
    }
    for (int i = 0; i < e->d * e->d; i++)
        e->gf[i] = (float)gr->g[i];
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)n, e->d, e->d, 1.0f, sub, e->d,
                e->gf, e->d, 0.0f, e->sg, e->d);
    return BD_OK;
}

static void estep_free(estep *e)
{
    free(e->gf);
    free(e->sg);
}

/* argmin_c c^T G c - 2 (G w)^T c for every subvector, as GEMMs over chunks of
 * rows (each chunk's score block stays in cache) and a row argmin. Returns
 * the number of assignments that changed, or -1 when out of memory. */
static int64_t estep_run(const estep *e, const float *centroids, int k, int32_t *assign)
{
    const int d = e->d;
    float *cg = malloc((size_t)k * (size_t)d * sizeof *cg);
    float *cgc = malloc((size_t)k * sizeof *cgc);
    if (!cg || !cgc) {
        free(cg);
        free(cgc);
        return -1;
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, k, d, d, 1.0f, centroids, d, e->gf, d,
                0.0f, cg, d);
    for (int c = 0; c < k; c++) {
        float s = 0;
        for (int t = 0; t < d; t++)
            s += centroids[c * d + t] * cg[c * d + t];
        cgc[c] = s;
    }
    int64_t chunk = 32768 / k;
    if (chunk < 16)
        chunk = 16;
    if (chunk > 1024)
        chunk = 1024;
    const int64_t nchunks = (e->n + chunk - 1) / chunk;
    int64_t changed = 0;
    int failed = 0;
#pragma omp parallel reduction(+ : changed)
    {
        float *scores = malloc((size_t)chunk * (size_t)k * sizeof *scores);
        if (!scores) {
#pragma omp atomic write
            failed = 1;
        }
#pragma omp for schedule(dynamic)
        for (int64_t ci = 0; ci < nchunks; ci++) {
            if (!scores)
                continue;
            int64_t i0 = ci * chunk, rows = e->n - i0 < chunk ? e->n - i0 : chunk;
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)rows, k, d, -2.0f,
                        e->sg + i0 * d, d, centroids, d, 0.0f, scores, k);
            for (int64_t r = 0; r < rows; r++) {
                const float *s = scores + r * k;
                int best = 0;
                float bv = s[0] + cgc[0];
                for (int c = 1; c < k; c++) {
                    float v = s[c] + cgc[c];
                    if (v < bv) {
                        bv = v;
                        best = c;
                    }
                }
                if (assign[i0 + r] != best) {
                    assign[i0 + r] = best;
                    changed++;
                }
            }
        }
        free(scores);
    }
    free(cg);
    free(cgc);
    return failed ? -1 : changed;
}

/* (w - c)^T G (w - c) in double, where float cancellation would lose it. */
static double residual_energy(const float *w, const float *c, const double *g, int d)
{
    double r[64], e = 0;
    for (int t = 0; t < d; t++)
        r[t] = (double)w[t] - (double)c[t];
    for (int i = 0; i < d; i++) {
        double row = 0;
        for (int j = 0; j < d; j++)
            row += g[i * d + j] * r[j];
        e += r[i] * row;
    }
    return e;
}

/* d is at most 64 here: callers validate (bd_pq_fit). */
double bd_pq_objective(const float *sub, int64_t n, const bd_gram *gr, const float *centroids,
                       const int32_t *assign)
{
    const int d = (int)gr->d;
    double total = 0;
#pragma omp parallel for reduction(+ : total) schedule(static) if (n > 4096)
    for (int64_t i = 0; i < n; i++)
        total += residual_energy(sub + i * d, centroids + (int64_t)assign[i] * d, gr->g, d);
    return total;
}

static double normalised(double objective, const bd_gram *gr, int64_t n)
{
    double denom = (double)(gr->blocks > 0 ? gr->blocks : 1) * (double)n;
    return sqrt(objective > 0 ? objective / denom : 0);
}

static uint64_t splitmix(uint64_t *s)
{
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static void count_members(const int32_t *assign, int64_t n, int k, int64_t *counts)
{
    memset(counts, 0, (size_t)k * sizeof *counts);
    for (int64_t i = 0; i < n; i++)
        counts[assign[i]]++;
}

/* The CPU engine: estep_run and the sums in double, one thread. */
static bd_status cpu_assign(void *ctx, const float *centroids, int k, int32_t *assign,
                            int64_t *changed)
{
    *changed = estep_run(ctx, centroids, k, assign);
    return *changed < 0 ? bd_fail(BD_ENOMEM, "out of memory in the E-step") : BD_OK;
}

static bd_status cpu_sums(void *ctx, const int32_t *assign, int k, double *sums, int64_t *counts)
{
    const estep *e = ctx;
    const int d = e->d;
    memset(sums, 0, (size_t)k * (size_t)d * sizeof *sums);
    memset(counts, 0, (size_t)k * sizeof *counts);
    for (int64_t i = 0; i < e->n; i++) {
        double *s = sums + (int64_t)assign[i] * d;
        for (int t = 0; t < d; t++)
            s[t] += e->sub[i * d + t];
        counts[assign[i]]++;
    }
    return BD_OK;
}

/* Splits the most populated cluster into every empty one: a copy of its
 * centroid, both nudged apart, then a fresh E-step; repeated until no
 * cluster is empty. A cluster whose members are all the same vector cannot
 * be split, nor can one whose split sent every member one way: neither is
 * chosen again. When no cluster is left to split, the empties stay and are
 * reported in *left. */
static bd_status repair_empty(const bd_pq_engine *eng, const float *sub, int64_t n, int d,
                              float *centroids, int k, int32_t *assign, int64_t *counts,
                              uint64_t *rng, int *repaired, int *left)
{
    int64_t *first = malloc((size_t)k * sizeof *first);
    unsigned char *splittable = malloc((size_t)k), *distinct = malloc((size_t)k);
    int *split_now = malloc((size_t)k * sizeof *split_now);
    int empty_before = k + 1, nsplit = 0;
    bd_status st = BD_OK;
    if (!first || !splittable || !distinct || !split_now) {
        st = bd_fail(BD_ENOMEM, "out of memory in the E-step");
        goto done;
    }
    memset(splittable, 1, (size_t)k);
    for (;;) {
        count_members(assign, n, k, counts);
        int empty = 0;
        for (int c = 0; c < k; c++)
            empty += counts[c] == 0;
        if (empty == 0) {
            *left = 0;
            break;
        }
        if (empty >= empty_before) /* last round's splits did not take */
            for (int i = 0; i < nsplit; i++)
                splittable[split_now[i]] = 0;
        empty_before = empty;
        nsplit = 0;
        for (int c = 0; c < k; c++)
            first[c] = -1;
        memset(distinct, 0, (size_t)k);
        for (int64_t i = 0; i < n; i++) {
            int c = assign[i];
            if (first[c] < 0)
                first[c] = i;
            else if (!distinct[c] &&
                     memcmp(sub + i * d, sub + first[c] * d, (size_t)d * sizeof(float)))
                distinct[c] = 1;
        }
        for (int c = 0; c < k; c++)
            splittable[c] = splittable[c] && distinct[c];
        for (int c = 0; c < k; c++) {
            if (counts[c] != 0)
                continue;
            int big = -1;
            for (int j = 0; j < k; j++)
                if (splittable[j] && counts[j] >= 2 && (big < 0 || counts[j] > counts[big]))
                    big = j;
            if (big < 0)
                break;
            float scale = 0;
            for (int t = 0; t < d; t++)
                scale = fmaxf(scale, fabsf(centroids[big * d + t]));
            float eps = 1e-6f * scale + 1e-12f;
            for (int t = 0; t < d; t++) {
                float nudge = (splitmix(rng) & 1) ? eps : -eps;
                centroids[c * d + t] = centroids[big * d + t] + nudge;
                centroids[big * d + t] -= nudge;
            }
            /* assume an even split until the E-step says otherwise */
            counts[c] = counts[big] / 2;
            counts[big] -= counts[c];
            split_now[nsplit++] = big;
            (*repaired)++;
        }
        if (nsplit == 0) {
            *left = empty;
            break;
        }
        int64_t changed;
        if ((st = eng->assign(eng->ctx, centroids, k, assign, &changed)) != BD_OK)
            break;
    }
done:
    free(first);
    free(splittable);
    free(distinct);
    free(split_now);
    return st;
}

void bd_pq_result_free(bd_pq_result *res)
{
    free(res->centroids);
    free(res->assign);
    free(res->objective);
    memset(res, 0, sizeof *res);
}

bd_status bd_pq_check_search(int restarts, double tol)
{
    if (restarts < 0 || restarts > BD_PQ_MAX_RESTARTS)
        return bd_fail(BD_EINVAL, "restarts=%d is outside 1..%d", restarts, BD_PQ_MAX_RESTARTS);
    if (!(tol >= 0 && tol <= 0.5))
        return bd_fail(BD_EINVAL, "tol=%g is outside 0..0.5 (a relative improvement per iteration)",
                       tol);
    return BD_OK;
}

static bd_status check_fit(int64_t n, int d, const bd_pq_options *opt)
{
    if (d < 1 || d > 64)
        return bd_fail(BD_EINVAL, "block size d=%d is outside 1..64", d);
    if (opt->k < 1 || opt->k > 65536 || (int64_t)opt->k > n)
        return bd_fail(BD_EINVAL, "k=%d centroids for %lld subvectors (k must be 1..%lld)", opt->k,
                       (long long)n, (long long)(n < 65536 ? n : 65536));
    return bd_pq_check_search(opt->restarts, opt->tol);
}

/* ---- k-means++ seeding ---------------------------------------------------------- */

/* y[i] = L^T sub[i] with G + eps*I = L L^T, so that |y_i - y_j|^2 is the
 * metric (w_i - w_j)^T G (w_i - w_j). The ridge keeps a singular G (dead
 * input channels) factorable; it is far below anything the fit resolves. */
static float *whiten(const float *sub, int64_t n, const bd_gram *gr)
{
    const int d = (int)gr->d;
    double l[64 * 64] = {0}, trace = 0;
    for (int i = 0; i < d; i++)
        trace += gr->g[i * d + i];
    double eps = 1e-9 * (trace > 0 ? trace / d : 1) + 1e-30;
    for (int i = 0; i < d; i++)
        for (int j = 0; j <= i; j++) {
            double v = gr->g[i * d + j] + (i == j ? eps : 0);
            for (int t = 0; t < j; t++)
                v -= l[i * d + t] * l[j * d + t];
            l[i * d + j] = i == j ? sqrt(v > eps ? v : eps) : v / l[j * d + j];
        }
    float *y = malloc((size_t)n * (size_t)d * sizeof *y + 1);
    if (!y)
        return NULL;
#pragma omp parallel for schedule(static) if (n > 4096)
    for (int64_t i = 0; i < n; i++)
        for (int t = 0; t < d; t++) {
            double v = 0;
            for (int u = t; u < d; u++)
                v += l[u * d + t] * sub[i * d + u];
            y[i * d + t] = (float)v;
        }
    return y;
}

/* The D^2 sums are kept per fixed slice of the points, not per thread, so
 * the draw is the same whatever the thread count. */
enum { SLICES = 256 };

/* k-means++: the first centroid a uniform draw, each next one a draw with
 * probability proportional to its squared distance to the nearest centroid
 * chosen so far. Distances are differences, not expanded dot products, so a
 * duplicate of a chosen subvector has distance exactly 0 and is never drawn:
 * the centroids are distinct subvectors. Stops early, with *k_eff < k, when
 * every subvector coincides with a chosen one. */
static bd_status seed_kmeanspp(const float *sub, const float *y, int64_t n, int d, int k,
                               uint64_t seed, float *centroids, int *k_eff)
{
    double *dist = malloc((size_t)n * sizeof *dist);
    if (!dist)
        return bd_fail(BD_ENOMEM, "out of memory seeding %d centroids", k);
    double slice_sum[SLICES];
    const int64_t per = (n + SLICES - 1) / SLICES;
    uint64_t rng = seed ^ 0xA5A5A5A5DEADBEEFull;
    int64_t pick = (int64_t)(splitmix(&rng) % (uint64_t)n);
    int c = 0;
    for (;;) {
        memcpy(centroids + (int64_t)c * d, sub + pick * d, (size_t)d * sizeof *centroids);
        const float *z = y + pick * d;
        const int first = c == 0;
        c++;
        if (c == k)
            break;
#pragma omp parallel for schedule(static) if (n > 8192)
        for (int sl = 0; sl < SLICES; sl++) {
            double sum = 0;
            int64_t end = (sl + 1) * per < n ? (sl + 1) * per : n;
            for (int64_t i = sl * per; i < end; i++) {
                double e = 0;
                for (int t = 0; t < d; t++) {
                    double r = (double)y[i * d + t] - (double)z[t];
                    e += r * r;
                }
                if (first || e < dist[i])
                    dist[i] = e;
                sum += dist[i];
            }
            slice_sum[sl] = sum;
        }
        double total = 0;
        for (int sl = 0; sl < SLICES; sl++)
            total += slice_sum[sl];
        if (!(total > 0))
            break; /* every subvector is one of the chosen */
        double r = (double)(splitmix(&rng) >> 11) * 0x1.0p-53 * total;
        int sl = 0;
        while (sl < SLICES - 1 && (r >= slice_sum[sl] || slice_sum[sl] == 0)) {
            r -= slice_sum[sl];
            sl++;
        }
        int64_t end = (sl + 1) * per < n ? (sl + 1) * per : n;
        pick = -1;
        for (int64_t i = sl * per; i < end; i++) {
            if (dist[i] > 0)
                pick = i; /* rounding can leave r past the last positive one */
            if (dist[i] > 0 && r < dist[i])
                break;
            r -= dist[i];
        }
        if (pick < 0) /* a slice whose sum rounded up from zeros: any positive one */
            for (int64_t i = 0; i < n && pick < 0; i++)
                if (dist[i] > 0)
                    pick = i;
    }
    free(dist);
    *k_eff = c;
    return BD_OK;
}

/* ---- Lloyd iterations ------------------------------------------------------------ */

typedef struct fit_run {
    const bd_pq_engine *eng;
    const float *sub, *y;
    int64_t n;
    const bd_gram *gr;
    int iters;
    double tol;
    const bd_progress *progress;
    int restart, restarts;
} fit_run;

/* One fit from one seed into res (its arrays allocated by the caller for
 * k centroids, n assignments and iters objectives). */
static bd_status fit_once(const fit_run *f, int k, uint64_t seed, double *sums, int64_t *counts,
                          bd_pq_result *res)
{
    const int d = (int)f->gr->d;
    const int64_t n = f->n;
    BD_TRY(seed_kmeanspp(f->sub, f->y, n, d, k, seed, res->centroids, &res->k));
    res->exact = res->k < k;
    k = res->k;
    for (int64_t i = 0; i < n; i++)
        res->assign[i] = -1;
    res->iters = res->empty_repaired = res->empty_left = 0;
    uint64_t rng = seed ^ 0x5DEECE66Dull;
    int calm = 0;
    for (int it = 0; it < f->iters; it++) {
        int64_t changed;
        int repaired = res->empty_repaired;
        BD_TRY(f->eng->assign(f->eng->ctx, res->centroids, k, res->assign, &changed));
        BD_TRY(repair_empty(f->eng, f->sub, n, d, res->centroids, k, res->assign, counts, &rng,
                            &res->empty_repaired, &res->empty_left));
        BD_TRY(f->eng->sums(f->eng->ctx, res->assign, k, sums, counts));
        /* M-step: each centroid becomes the mean of its members */
        for (int c = 0; c < k; c++)
            if (counts[c])
                for (int t = 0; t < d; t++)
                    res->centroids[c * d + t] = (float)(sums[c * d + t] / (double)counts[c]);
        double obj =
            normalised(bd_pq_objective(f->sub, n, f->gr, res->centroids, res->assign), f->gr, n);
        res->objective[it] = obj;
        res->iters = it + 1;
        char msg[128];
        snprintf(msg, sizeof msg, "restart %d of %d, iteration %d: objective %.6g, %lld reassigned",
                 f->restart + 1, f->restarts, it + 1, obj, (long long)changed);
        BD_TRY(bd_progress_report(f->progress, "em", f->restart * f->iters + it + 1,
                                  f->restarts * f->iters, msg, obj));
        if (it > 0 && changed == 0 && res->empty_repaired == repaired)
            break; /* a fixed point: every later iteration would be this one */
        double prev = it > 0 ? res->objective[it - 1] : INFINITY;
        calm = prev - obj < f->tol * prev ? calm + 1 : 0;
        if (f->tol > 0 && calm >= BD_PQ_PATIENCE)
            break;
    }
    /* every subvector on its centroid: no restart or refinement can improve it */
    if (res->iters > 0 && res->objective[res->iters - 1] == 0)
        res->exact = 1;
    return BD_OK;
}

static bd_status result_alloc(bd_pq_result *r, int64_t n, int k, int d, int iters)
{
    memset(r, 0, sizeof *r);
    r->k = k;
    r->d = d;
    r->centroids = malloc((size_t)k * (size_t)d * sizeof *r->centroids);
    r->assign = malloc((size_t)n * sizeof *r->assign);
    r->objective = calloc((size_t)iters, sizeof *r->objective);
    if (r->centroids && r->assign && r->objective)
        return BD_OK;
    bd_pq_result_free(r);
    return bd_fail(BD_ENOMEM, "out of memory for EM with k=%d on %lld subvectors", k, (long long)n);
}

bd_status bd_pq_fit_on(const bd_pq_engine *eng, const float *sub, int64_t n, const bd_gram *gr,
                       const bd_pq_options *opt, const bd_progress *progress,
                       bd_pq_result *res)
{
    memset(res, 0, sizeof *res);
    const int d = (int)gr->d, k = opt->k;
    BD_TRY(check_fit(n, d, opt));
    fit_run f = {eng, sub, NULL, n, gr, opt->iters > 0 ? opt->iters : 100, opt->tol, progress,
                 0, opt->restarts > 0 ? opt->restarts : 1};
    bd_pq_result cur = {0};
    double *sums = malloc((size_t)k * (size_t)d * sizeof *sums);
    int64_t *counts = malloc((size_t)k * sizeof *counts);
    float *y = whiten(sub, n, gr);
    f.y = y;
    bd_status st = sums && counts && y ? BD_OK : bd_fail(BD_ENOMEM, "out of memory for EM with "
                                                                    "k=%d on %lld subvectors",
                                                         k, (long long)n);
    double best = INFINITY;
    int runs = 0;
    for (int r = 0; st == BD_OK && r < f.restarts; r++) {
        f.restart = r;
        uint64_t s = opt->seed;
        if (r > 0)
            s = splitmix(&s) + (uint64_t)r;
        if ((st = result_alloc(&cur, n, k, d, f.iters)) != BD_OK ||
            (st = fit_once(&f, k, s, sums, counts, &cur)) != BD_OK)
            break;
        double obj = cur.objective[cur.iters - 1];
        if (obj < best) {
            best = obj;
            bd_pq_result_free(res);
            *res = cur;
            res->best_restart = r;
        } else {
            bd_pq_result_free(&cur);
        }
        memset(&cur, 0, sizeof cur);
        runs++;
        if (res->exact)
            break; /* every subvector is a centroid: nothing left to improve */
    }
    res->restarts = runs;
    bd_pq_result_free(&cur);
    free(sums);
    free(counts);
    free(y);
    if (st != BD_OK)
        bd_pq_result_free(res);
    return st;
}

bd_status bd_pq_fit(const float *sub, int64_t n, const bd_gram *gr, const bd_pq_options *opt,
                    const bd_progress *progress, bd_pq_result *res)
{
    memset(res, 0, sizeof *res);
    BD_TRY(check_fit(n, (int)gr->d, opt));
    estep e;
    BD_TRY(estep_init(&e, sub, n, gr));
    bd_pq_engine eng = {&e, cpu_assign, cpu_sums};
    bd_status st = bd_pq_fit_on(&eng, sub, n, gr, opt, progress, res);
    estep_free(&e);
    return st;
}

bd_status bd_pq_assign(const float *sub, int64_t n, const bd_gram *gr, const float *centroids,
                       int k, int32_t *assign, double *dist_out)
{
    if (gr->d < 1 || gr->d > 64)
        return bd_fail(BD_EINVAL, "block size d=%lld is outside 1..64", (long long)gr->d);
    estep e;
    BD_TRY(estep_init(&e, sub, n, gr));
    for (int64_t i = 0; i < n; i++)
        assign[i] = -1;
    int64_t changed = estep_run(&e, centroids, k, assign);
    estep_free(&e);
    if (changed < 0)
        return bd_fail(BD_ENOMEM, "out of memory in the E-step");
    if (dist_out)
        for (int64_t i = 0; i < n; i++)
            dist_out[i] = residual_energy(sub + i * gr->d, centroids + (int64_t)assign[i] * gr->d,
                                          gr->g, (int)gr->d);
    return BD_OK;
}

void bd_pq_decode(const float *centroids, int d, const int32_t *assign, int64_t n, float *out)
{
    for (int64_t i = 0; i < n; i++)
        memcpy(out + i * d, centroids + (int64_t)assign[i] * d, (size_t)d * sizeof *out);
}

void bd_pq_round_fp16(float *centroids, int64_t count)
{
    for (int64_t i = 0; i < count; i++)
        centroids[i] = bd_f16_to_f32(bd_f32_to_f16(centroids[i]));
}

int64_t bd_pq_code_bytes(int64_t n, int k) { return n * (k <= 256 ? 1 : 2); }

int64_t bd_pq_codebook_bytes(int k, int d) { return (int64_t)k * d * 2; }

double bd_pq_bits_per_weight(int k, int d) { return log2((double)k) / (double)d; }
