#include "pq.h"

#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "data.h"
#include "rng.h"
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
 * (fixed for the whole fit) and G in float for the centroid terms; and,
 * between the E-steps of one fit, bounds in the manner of Yinyang k-means:
 * per subvector an upper bound on its distance to its centroid and, per
 * group of nearby centroids (split_groups), a lower bound on its
 * distance to every centroid of the group but its own, valid for the
 * centroids in `prev`. Distances are the seminorm
 * sqrt((w - c)^T G (w - c)), for which the triangle inequality holds, so
 * after the centroids move the upper bound loosens by its centroid's move
 * and a group's lower bound by the largest move in the group. A subvector
 * whose upper bound stays below every lower bound (or below half its
 * centroid's distance to the nearest other one) cannot change centroid:
 * it is skipped; one that can is scanned only in the groups whose bound
 * it passes. One lower bound for all centroids (Hamerly's) loosened by the
 * largest move of 2048, about five times the typical one, and left ResNet-
 * 50's classifier scanning a third of its subvectors in full every
 * iteration. */
typedef struct estep {
    const float *sub;
    int64_t n;
    int d;
    float *gf;  /* d x d */
    float *sg;  /* n x d: sub * G */
    float *wgw; /* n: w^T G w */
    float *upper, *prev;
    float *lower; /* n x groups */
    int prev_k, bounded;
    int groups, group_blocks; /* for prev_k centroids */
    int32_t *order; /* kp: the centroid at each place of the scan (>= k: padding) */
    int32_t *place; /* k: each centroid's place */
    unsigned char *open; /* n: the bounds left the subvector undecided */
    int64_t *list;
} estep;

static void estep_free(estep *e)
{
    free(e->gf);
    free(e->sg);
    free(e->wgw);
    free(e->upper);
    free(e->lower);
    free(e->prev);
    free(e->open);
    free(e->list);
    free(e->order);
    free(e->place);
    memset(e, 0, sizeof *e);
}

static bd_status estep_init(estep *e, const float *sub, int64_t n, const bd_gram *gr)
{
    memset(e, 0, sizeof *e);
    e->sub = sub;
    e->n = n;
    e->d = (int)gr->d;
    const size_t nn = (size_t)n + 1;
    e->gf = malloc((size_t)(e->d * e->d) * sizeof *e->gf);
    e->sg = malloc(nn * (size_t)e->d * sizeof *e->sg);
    e->wgw = malloc(nn * sizeof *e->wgw);
    e->upper = malloc(nn * sizeof *e->upper);
    e->open = malloc(nn);
    e->list = malloc(nn * sizeof *e->list);
    if (!e->gf || !e->sg || !e->wgw || !e->upper || !e->open || !e->list) {
        estep_free(e);
        return bd_fail(BD_ENOMEM, "out of memory for %lld subvectors", (long long)n);
    }
    for (int i = 0; i < e->d * e->d; i++)
        e->gf[i] = (float)gr->g[i];
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)n, e->d, e->d, 1.0f, sub, e->d,
                e->gf, e->d, 0.0f, e->sg, e->d);
    for (int64_t i = 0; i < n; i++) {
        float v = 0;
        for (int t = 0; t < e->d; t++)
            v += sub[i * e->d + t] * e->sg[i * e->d + t];
        e->wgw[i] = v;
    }
    return BD_OK;
}

/* sqrt of w_i^T G w_i - 2 (G w_i)^T c + c^T G c, clamped at 0 where
 * rounding takes the expansion below it. */
static float dist_to(const estep *e, int64_t i, const float *c, float cgc)
{
    float dot = 0;
    for (int t = 0; t < e->d; t++)
        dot += e->sg[i * e->d + t] * c[t];
    float v = e->wgw[i] - 2 * dot + cgc;
    return v > 0 ? sqrtf(v) : 0;
}

/* Centroids per block of the fused scan: a vector register's floats, so
 * that each block's scores, minima and indices stay in registers. */
enum { LANES = 16, SETS = 4 };

/* The centroids as the fused scan reads them, in the order of the groups
 * (place p holds centroid order[p]): ct[t kp + p] = -2 c_t for coordinate t,
 * cgc[p] = c^T G c and id[p] the centroid, all padded to kp (a multiple of
 * SETS x LANES) with centroids that are never nearest (cgc +inf). */
typedef struct scan_table {
    float *ct, *cgc;
    const int32_t *id;
    int kp;
} scan_table;

static int scan_table_init(scan_table *t, const float *centroids, const float *cgc, int k, int d,
                           const int32_t *order)
{
    t->kp = (k + SETS * LANES - 1) / (SETS * LANES) * (SETS * LANES);
    t->ct = malloc((size_t)t->kp * (size_t)d * sizeof *t->ct);
    t->cgc = malloc((size_t)t->kp * sizeof *t->cgc);
    t->id = order;
    if (!t->ct || !t->cgc) {
        free(t->ct);
        free(t->cgc);
        return -1;
    }
    for (int p = 0; p < t->kp; p++) {
        const int c = order[p];
        t->cgc[p] = c < k ? cgc[c] : INFINITY;
        for (int s = 0; s < d; s++)
            t->ct[(int64_t)s * t->kp + p] = c < k ? -2 * centroids[(int64_t)c * d + s] : 0;
    }
    return 0;
}

/* The groups of the bounds: at least GROUP_BLOCKS_MIN whole blocks of the
 * scan, at most GROUPS_MAX of them, and n x groups lower bounds of at most
 * LOWER_BYTES. A group's own lowest and second lowest cost about what
 * scoring one block does, so smaller groups (four for k = 256) cost the
 * 3x3 layers of ResNet-50 more than their bounds saved. */
enum { GROUPS_MAX = 16, GROUP_BLOCKS_MIN = 4 };
#define LOWER_BYTES ((int64_t)256 << 20)

/* The lowest score c^T G c - 2 (G w)^T c of one subvector (sg = G w) and
 * the first centroid with it, in one pass over the centroids: each lane
 * keeps its own lowest and index, merged at the end. With `groups_open`
 * NULL (a first E-step, or every group open) every centroid is scored and
 * the lanes also keep
 * their second lowest, for *second over all centroids; otherwise only the
 * open groups are, and each lane keeps its lowest and second lowest within
 * the group, merged as the group ends into lo1[g] and lo2[g]. A GEMM writing
 * every score, then passes over them, cost twice as much for d = 4..9,
 * where the GEMM's inner dimension is too short to pay for its packing and
 * stores. */
typedef float lanes_f __attribute__((vector_size(LANES * sizeof(float))));
typedef int32_t lanes_i __attribute__((vector_size(LANES * sizeof(int32_t))));

/* mask ? a : b, lane by lane (mask lanes all ones or all zeros) */
static inline lanes_f pick(lanes_i mask, lanes_f a, lanes_f b)
{
    return (lanes_f)(((lanes_i)a & mask) | ((lanes_i)b & ~mask));
}

static inline lanes_f vmin(lanes_f a, lanes_f b) { return pick(a < b, a, b); }
static inline lanes_f vmax(lanes_f a, lanes_f b) { return pick(a < b, b, a); }

/* The lowest and second lowest of the values in (lo1, lo2), two per lane,
 * by halving: each step folds half of the lanes onto the other half. */
static inline void fold_step(lanes_f *lo1, lanes_f *lo2, lanes_f o1, lanes_f o2)
{
    *lo2 = vmin(vmin(*lo2, o2), vmax(*lo1, o1));
    *lo1 = vmin(*lo1, o1);
}

static inline void fold_lanes(lanes_f lo1, lanes_f lo2, float *first, float *second)
{
#define BY(...)                                                                                 \
    fold_step(&lo1, &lo2, __builtin_shufflevector(lo1, lo1, __VA_ARGS__),                     \
              __builtin_shufflevector(lo2, lo2, __VA_ARGS__))
    BY(8, 9, 10, 11, 12, 13, 14, 15, 0, 1, 2, 3, 4, 5, 6, 7);
    BY(4, 5, 6, 7, 0, 1, 2, 3, 12, 13, 14, 15, 8, 9, 10, 11);
    BY(2, 3, 0, 1, 6, 7, 4, 5, 10, 11, 8, 9, 14, 15, 12, 13);
    BY(1, 0, 3, 2, 5, 4, 7, 6, 9, 8, 11, 10, 13, 12, 15, 14);
#undef BY
    *first = lo1[0];
    *second = lo2[0];
}

static inline __attribute__((always_inline)) void
nearest(const float *sg, int d, const scan_table *t, int group_blocks, int groups,
        const unsigned char *groups_open, float *lo1, float *lo2, float *lowest, int *at,
        float *second)
{
    /* SETS blocks side by side, each with its own lowest and index: one
     * set's compare-and-select chain from block to block would leave the
     * core waiting on it (it was the scan's hottest instruction) */
    const int width = SETS * LANES;
    lanes_f m1[SETS], m2[SETS];
    lanes_i i1[SETS];
#pragma GCC unroll 4
    for (int u = 0; u < SETS; u++)
        for (int j = 0; j < LANES; j++) {
            m1[u][j] = m2[u][j] = INFINITY;
            i1[u][j] = INT32_MAX;
        }
    for (int g = 0; g < groups; g++) {
        if (groups_open && !groups_open[g])
            continue;
        const int first = g * group_blocks * width;
        const int end = first + group_blocks * width < t->kp ? first + group_blocks * width : t->kp;
        lanes_f g1[SETS], g2[SETS];
#pragma GCC unroll 4
        for (int u = 0; u < SETS; u++)
            for (int j = 0; j < LANES; j++)
                g1[u][j] = g2[u][j] = INFINITY;
        for (int c0 = first; c0 < end; c0 += width) {
#pragma GCC unroll 4
            for (int u = 0; u < SETS; u++) {
                const int cb = c0 + u * LANES;
                lanes_f v;
                memcpy(&v, t->cgc + cb, sizeof v);
                for (int s = 0; s < d; s++) {
                    lanes_f row;
                    memcpy(&row, t->ct + (int64_t)s * t->kp + cb, sizeof row);
                    v += sg[s] * row;
                }
                /* a tie goes to the lower centroid, as a scan in index
                 * order would have it, and is the second lowest */
                lanes_i idx;
                memcpy(&idx, t->id + cb, sizeof idx);
                const lanes_i below = (v < m1[u]) | ((v == m1[u]) & (idx < i1[u]));
                if (!groups_open)
                    m2[u] = vmin(m2[u], pick(below, m1[u], v));
                i1[u] = (idx & below) | (i1[u] & ~below);
                m1[u] = pick(below, v, m1[u]);
                if (groups_open) {
                    g2[u] = vmin(g2[u], vmax(g1[u], v));
                    g1[u] = vmin(g1[u], v);
                }
            }
        }
        if (groups_open) {
            lanes_f a1 = g1[0], a2 = g2[0];
#pragma GCC unroll 4
            for (int u = 1; u < SETS; u++) {
                a2 = vmin(vmin(a2, g2[u]), vmax(a1, g1[u]));
                a1 = vmin(a1, g1[u]);
            }
            fold_lanes(a1, a2, &lo1[g], &lo2[g]);
        }
    }
    /* the sets lane by lane, then the lanes, without branches: a
     * mispredicted one per lane cost more than the blocks themselves at
     * k = 256 */
    lanes_f low1 = m1[0], low2 = m2[0];
    lanes_i at1 = i1[0];
#pragma GCC unroll 4
    for (int u = 1; u < SETS; u++) {
        const lanes_i take = (m1[u] < low1) | ((m1[u] == low1) & (i1[u] < at1));
        if (!groups_open)
            low2 = vmin(vmin(low2, m2[u]), pick(take, low1, m1[u]));
        low1 = pick(take, m1[u], low1);
        at1 = (i1[u] & take) | (at1 & ~take);
    }
    float low = INFINITY;
    for (int j = 0; j < LANES; j++)
        low = low1[j] < low ? low1[j] : low;
    int best = INT32_MAX;
    for (int j = 0; j < LANES; j++)
        best = low1[j] == low && at1[j] < best ? at1[j] : best;
    if (!groups_open) {
        float sec = INFINITY;
        for (int j = 0; j < LANES; j++) {
            const float other = at1[j] == best ? low2[j] : low1[j];
            sec = other < sec ? other : sec;
        }
        *second = sec;
    }
    *lowest = low;
    *at = best;
}

/* nearest() with the block sizes of the regimes (plan.c) and the first
 * E-step's mode as constants: the loop over coordinates unrolls and keeps
 * G w in registers, which took ResNet-50's fc from 22 s to 16. */
static void nearest_of(const float *sg, int d, const scan_table *t, int group_blocks, int groups,
                       const unsigned char *groups_open, float *lo1, float *lo2, float *lowest,
                       int *at, float *second)
{
#define NEAREST(D, OPEN)                                                                       \
    nearest(sg, D, t, group_blocks, groups, OPEN, lo1, lo2, lowest, at, second)
#define NEAREST_D(OPEN)                                                                        \
    switch (d) {                                                                               \
    case 4: NEAREST(4, OPEN); break;                                                           \
    case 8: NEAREST(8, OPEN); break;                                                           \
    case 9: NEAREST(9, OPEN); break;                                                           \
    case 18: NEAREST(18, OPEN); break;                                                         \
    default: NEAREST(d, OPEN); break;                                                          \
    }
    if (groups_open)
        NEAREST_D(groups_open)
    else
        NEAREST_D(NULL)
#undef NEAREST_D
#undef NEAREST
}

/* The nearest centroid of every listed subvector, scoring the groups its
 * bounds leave open (every centroid when `fresh`); sets assign, the bounds
 * and *changed. Returns -1 when out of memory. */
static int scan(estep *e, const float *centroids, const float *cgc, int k, const int64_t *list,
                int64_t count, int fresh, int32_t *assign, int64_t *changed_out)
{
    const int d = e->d, groups = e->groups, gb = e->group_blocks;
    const int group_width = gb * SETS * LANES;
    scan_table t;
    if (scan_table_init(&t, centroids, cgc, k, d, e->order) != 0)
        return -1;
    int64_t changed = 0;
#pragma omp parallel for schedule(dynamic, 256) reduction(+ : changed)
    for (int64_t j = 0; j < count; j++) {
        const int64_t i = list[j];
        const int a = assign[i];
        float *lower = e->lower + i * groups;
        const float *sg = e->sg + i * d, w = e->wgw[i];
        float bv, second = INFINITY;
        int best, nopen = 0;
        const float u = fresh ? INFINITY : e->upper[i];
        unsigned char open[GROUPS_MAX];
        for (int g = 0; g < groups && !fresh; g++)
            nopen += open[g] = lower[g] < u;
        if (fresh || nopen == groups) {
            /* every group's bound is the second lowest over all */
            nearest_of(sg, d, &t, gb, groups, NULL, NULL, NULL, &bv, &best, &second);
            for (int g = 0; g < groups; g++)
                lower[g] = w + second > 0 ? sqrtf(w + second) : 0;
        } else {
            float lo1[GROUPS_MAX], lo2[GROUPS_MAX];
            for (int g = 0; g < groups; g++)
                lo1[g] = lo2[g] = INFINITY;
            nearest_of(sg, d, &t, gb, groups, open, lo1, lo2, &bv, &best, &second);
            const int own = e->place[a] / group_width;
            if (!open[own]) {
                /* its own group went unscored: its score, summed as the
                 * scan sums, against the best of the groups that were */
                const int pa = e->place[a];
                float sa = t.cgc[pa];
                for (int s = 0; s < d; s++)
                    sa += sg[s] * t.ct[(int64_t)s * t.kp + pa];
                if (!(bv < sa || (bv == sa && best < a))) {
                    bv = sa;
                    best = a;
                } else if (u < lower[own]) {
                    lower[own] = u; /* it joins the others of its group */
                }
            }
            /* the best's own group: its bound is on the others */
            const int mine = e->place[best] / group_width;
            lo1[mine] = lo2[mine];
            for (int g = 0; g < groups; g++) {
                const float x = w + lo1[g], v = x > 0 ? sqrtf(x) : 0;
                lower[g] = open[g] ? v : lower[g];
            }
        }
        e->upper[i] = w + bv > 0 ? sqrtf(w + bv) : 0;
        if (a != best) {
            assign[i] = best;
            changed++;
        }
    }
    free(t.ct);
    free(t.cgc);
    *changed_out = changed;
    return 0;
}

/* Which subvectors the bounds cannot settle, after the centroids moved from
 * e->prev to `centroids`; into e->list, their count returned. */
static int64_t unsettled(estep *e, const float *centroids, const float *cg, const float *cgc,
                         int k, const int32_t *assign)
{
    const int d = e->d, groups = e->groups, group_width = e->group_blocks * SETS * LANES;
    float *delta = malloc((size_t)k * sizeof *delta), *half = malloc((size_t)k * sizeof *half);
    if (!delta || !half) { /* no bounds this time: every subvector scans every group */
        free(delta);
        free(half);
        for (int64_t i = 0; i < e->n; i++) {
            e->list[i] = i;
            for (int g = 0; g < groups; g++)
                e->lower[i * groups + g] = -INFINITY;
        }
        return e->n;
    }
    float moved[GROUPS_MAX] = {0}; /* the largest move in each group */
    for (int c = 0; c < k; c++) {
        double v = 0;
        for (int s = 0; s < d; s++)
            for (int t = 0; t < d; t++)
                v += ((double)centroids[c * d + s] - e->prev[c * d + s]) * e->gf[s * d + t] *
                     ((double)centroids[c * d + t] - e->prev[c * d + t]);
        delta[c] = v > 0 ? (float)sqrt(v) : 0;
        const int g = e->place[c] / group_width;
        if (delta[c] > moved[g])
            moved[g] = delta[c];
    }
    /* half the distance to the nearest other centroid: k^2 d, skipped where
     * that would cost more than the scans it saves */
#pragma omp parallel for schedule(static) if (k > 64)
    for (int c = 0; c < k; c++) {
        float best = INFINITY;
        if (k <= 4096)
            for (int o = 0; o < k; o++) {
                if (o == c)
                    continue;
                float dot = 0;
                for (int t = 0; t < d; t++)
                    dot += centroids[c * d + t] * cg[o * d + t];
                float v = cgc[c] + cgc[o] - 2 * dot;
                if (v < best)
                    best = v;
            }
        half[c] = k <= 4096 && best > 0 && best < INFINITY ? 0.5f * sqrtf(best) : 0;
    }
#pragma omp parallel for schedule(static) if (e->n > 8192)
    for (int64_t i = 0; i < e->n; i++) {
        int a = assign[i];
        float *lower = e->lower + i * groups, m = INFINITY;
        for (int g = 0; g < groups; g++) {
            lower[g] -= moved[g];
            m = lower[g] < m ? lower[g] : m;
        }
        float u = e->upper[i] + delta[a];
        m = m > half[a] ? m : half[a];
        e->open[i] = 0;
        if (u <= m) {
            e->upper[i] = u;
            continue;
        }
        u = dist_to(e, i, centroids + (int64_t)a * d, cgc[a]);
        e->upper[i] = u;
        e->open[i] = u > m;
    }
    int64_t count = 0;
    for (int64_t i = 0; i < e->n; i++)
        if (e->open[i])
            e->list[count++] = i;
    free(delta);
    free(half);
    return count;
}

/* The groups of the bounds for k centroids, and room for their lower
 * bounds; 0, or -1 when out of memory. */
static int estep_groups(estep *e, int k)
{
    const int blocks = (k + SETS * LANES - 1) / (SETS * LANES);
    int per = (blocks + GROUPS_MAX - 1) / GROUPS_MAX;
    per = per > GROUP_BLOCKS_MIN ? per : GROUP_BLOCKS_MIN;
    int groups = (blocks + per - 1) / per;
    while (groups > 1 && (int64_t)groups * e->n * (int64_t)sizeof(float) > LOWER_BYTES) {
        per *= 2;
        groups = (blocks + per - 1) / per;
    }
    const int kp = blocks * SETS * LANES;
    float *lower = realloc(e->lower, ((size_t)e->n + 1) * (size_t)groups * sizeof *lower);
    if (lower)
        e->lower = lower;
    int32_t *order = realloc(e->order, (size_t)kp * sizeof *order);
    if (order)
        e->order = order;
    int32_t *place = realloc(e->place, (size_t)k * sizeof *place);
    if (place)
        e->place = place;
    if (!lower || !order || !place)
        return -1;
    e->groups = groups;
    e->group_blocks = per;
    return 0;
}

typedef struct keyed {
    float key;
    int32_t c;
} keyed;

static int by_key(const void *a, const void *b)
{
    const keyed *x = a, *y = b;
    return x->key < y->key ? -1 : x->key > y->key ? 1 : (x->c > y->c) - (x->c < y->c);
}

/* Places [lo, hi) of e->order into `groups` groups of `width` places (the
 * last one the rest), each a region of nearby centroids: the range sorted
 * along its widest coordinate (scaled by G's diagonal) and cut where the
 * first half of the groups ends, recursively. Groups of nearby centroids
 * are what make a far group's bound worth keeping: groups by index each
 * held a centroid near every subvector, and their bounds saved a fifth of
 * the classifier's scan time where these save twice that. */
static void split_groups(const estep *e, const float *centroids, int lo, int hi, int groups,
                         int width, keyed *tmp)
{
    const int d = e->d, left = groups / 2, cut = lo + left * width;
    if (groups <= 1 || cut >= hi)
        return;
    int widest = 0;
    float spread = -1;
    for (int t = 0; t < d; t++) {
        const float g = e->gf[t * d + t], scale = g > 0 ? sqrtf(g) : 0;
        float a = INFINITY, b = -INFINITY;
        for (int p = lo; p < hi; p++) {
            const float v = centroids[(int64_t)e->order[p] * d + t] * scale;
            a = v < a ? v : a;
            b = v > b ? v : b;
        }
        if (b - a > spread) {
            spread = b - a;
            widest = t;
        }
    }
    for (int p = lo; p < hi; p++)
        tmp[p - lo] = (keyed){centroids[(int64_t)e->order[p] * d + widest], e->order[p]};
    qsort(tmp, (size_t)(hi - lo), sizeof *tmp, by_key);
    for (int p = lo; p < hi; p++)
        e->order[p] = tmp[p - lo].c;
    split_groups(e, centroids, lo, cut, left, width, tmp);
    split_groups(e, centroids, cut, hi, groups - left, width, tmp);
}

/* The order of the scan for the fit the centroids start: 0, or -1 when out
 * of memory. */
static int group_order(estep *e, const float *centroids, int k)
{
    const int width = e->group_blocks * SETS * LANES;
    const int kp = (k + SETS * LANES - 1) / (SETS * LANES) * (SETS * LANES);
    keyed *tmp = malloc((size_t)k * sizeof *tmp);
    if (!tmp)
        return -1;
    for (int p = 0; p < kp; p++)
        e->order[p] = p;
    split_groups(e, centroids, 0, k, (k + width - 1) / width, width, tmp);
    for (int p = 0; p < k; p++)
        e->place[e->order[p]] = p;
    free(tmp);
    return 0;
}

/* One E-step: every subvector to its nearest centroid under G. The first
 * E-step of a fit (or one after k changed) scans everything; later ones
 * scan only what the bounds leave open. Returns the number of assignments
 * that changed, or -1 when out of memory. */
static int64_t estep_run(estep *e, const float *centroids, int k, int32_t *assign)
{
    const int d = e->d;
    float *cg = malloc((size_t)k * (size_t)d * sizeof *cg);
    float *cgc = malloc((size_t)k * sizeof *cgc);
    float *prev = e->prev_k == k ? e->prev : malloc((size_t)k * (size_t)d * sizeof *prev);
    if (!cg || !cgc || !prev || (prev != e->prev && estep_groups(e, k) != 0)) {
        free(cg);
        free(cgc);
        if (prev != e->prev)
            free(prev);
        return -1;
    }
    if (prev != e->prev) {
        free(e->prev);
        e->prev = prev;
        e->prev_k = k;
        e->bounded = 0;
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, k, d, d, 1.0f, centroids, d, e->gf, d,
                0.0f, cg, d);
    for (int c = 0; c < k; c++) {
        float s = 0;
        for (int t = 0; t < d; t++)
            s += centroids[c * d + t] * cg[c * d + t];
        cgc[c] = s;
    }
    int fresh = !e->bounded;
    for (int64_t i = 0; !fresh && i < e->n; i++)
        fresh = assign[i] < 0;
    int64_t count;
    if (fresh && group_order(e, centroids, k) != 0) {
        free(cg);
        free(cgc);
        return -1;
    }
    if (fresh) {
        for (int64_t i = 0; i < e->n; i++)
            e->list[i] = i;
        count = e->n;
    } else {
        count = unsettled(e, centroids, cg, cgc, k, assign);
    }
    int64_t changed = 0;
    int st = scan(e, centroids, cgc, k, e->list, count, fresh, assign, &changed);
    memcpy(e->prev, centroids, (size_t)k * (size_t)d * sizeof *e->prev);
    e->bounded = st == 0;
    free(cg);
    free(cgc);
    return st < 0 ? -1 : changed;
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

/* Sums over the points are kept per fixed slice of them, not per thread,
 * so they, and the fits that compare them, are the same whatever the
 * thread count: the same bits in one process as on every rank of a job. */
enum { SLICES = 256 };

/* sum_i (w_i - c_{a_i})^T G (w_i - c_{a_i}); without centroids, sum_i
 * w_i^T G w_i. d is at most 64 here: callers validate (bd_pq_fit). */
static double residual_total(const float *sub, int64_t n, const bd_gram *gr,
                             const float *centroids, const int32_t *assign)
{
    const int d = (int)gr->d;
    const int64_t per = (n + SLICES - 1) / SLICES;
    const float zero[64] = {0};
    double part[SLICES];
#pragma omp parallel for schedule(static) if (n > 4096)
    for (int sl = 0; sl < SLICES; sl++) {
        double sum = 0;
        const int64_t end = (sl + 1) * per < n ? (sl + 1) * per : n;
        for (int64_t i = sl * per; i < end; i++)
            sum += residual_energy(sub + i * d, centroids ? centroids + (int64_t)assign[i] * d : zero,
                                   gr->g, d);
        part[sl] = sum;
    }
    double total = 0;
    for (int sl = 0; sl < SLICES; sl++)
        total += part[sl];
    return total;
}

double bd_pq_objective(const float *sub, int64_t n, const bd_gram *gr, const float *centroids,
                       const int32_t *assign)
{
    return residual_total(sub, n, gr, centroids, assign);
}

static double normalised(double objective, const bd_gram *gr, int64_t n)
{
    double denom = (double)(gr->blocks > 0 ? gr->blocks : 1) * (double)n;
    return sqrt(objective > 0 ? objective / denom : 0);
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
                float nudge = (bd_splitmix64(rng) & 1) ? eps : -eps;
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

/* k-means++: the first centroid a uniform draw, each next one a draw with
 * probability proportional to its squared distance to the nearest centroid
 * chosen so far. Distances are differences, not expanded dot products, so a
 * duplicate of a chosen subvector has distance exactly 0 and is never drawn:
 * the centroids are distinct subvectors. Stops early, with *k_eff < k, when
 * every subvector coincides with a chosen one. */
static bd_status seed_kmeanspp(const float *sub, const float *y, int64_t n, int d, int k,
                               uint64_t seed, float *centroids, int *k_eff)
{
    float *dist = malloc((size_t)n * sizeof *dist);
    if (!dist)
        return bd_fail(BD_ENOMEM, "out of memory seeding %d centroids", k);
    double slice_sum[SLICES];
    const int64_t per = (n + SLICES - 1) / SLICES;
    uint64_t rng = seed ^ 0xA5A5A5A5DEADBEEFull;
    int64_t pick = (int64_t)(bd_splitmix64(&rng) % (uint64_t)n);
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
            /* in float, so it vectorises: a draw needs the weights to a few
             * digits, and a duplicate's difference is exactly 0 either way */
            float sum = 0;
            int64_t end = (sl + 1) * per < n ? (sl + 1) * per : n;
#pragma omp simd reduction(+ : sum)
            for (int64_t i = sl * per; i < end; i++) {
                float e = 0;
                for (int t = 0; t < d; t++) {
                    float r = y[i * d + t] - z[t];
                    e += r * r;
                }
                float m = first || e < dist[i] ? e : dist[i];
                dist[i] = m;
                sum += m;
            }
            slice_sum[sl] = sum;
        }
        double total = 0;
        for (int sl = 0; sl < SLICES; sl++)
            total += slice_sum[sl];
        if (!(total > 0))
            break; /* every subvector is one of the chosen */
        double r = bd_rng_uniform(&rng) * total;
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
    double wgw; /* sum_i w_i^T G w_i */
    int iters;
    double tol;
    const bd_progress *progress;
    int restart, restarts;
} fit_run;

/* The objective after an M-step, from the sums alone: with every centroid
 * the mean s_c / n_c of its members, sum_i (w_i - c)^T G (w_i - c) =
 * sum_i w_i^T G w_i - sum_c s_c^T G s_c / n_c, in k d^2 instead of n d^2
 * (in double: the terms are within a few digits of each other, far from
 * double's 16). The last iteration's value is then recomputed from the
 * residuals. */
static double objective_of_means(const fit_run *f, const double *sums, const int64_t *counts,
                                 int k)
{
    const int d = (int)f->gr->d;
    double explained = 0;
    for (int c = 0; c < k; c++) {
        if (!counts[c])
            continue;
        const double *s = sums + (int64_t)c * d;
        double q = 0;
        for (int i = 0; i < d; i++) {
            double row = 0;
            for (int j = 0; j < d; j++)
                row += f->gr->g[i * d + j] * s[j];
            q += s[i] * row;
        }
        explained += q / (double)counts[c];
    }
    double v = f->wgw - explained;
    return v > 0 ? v : 0;
}

/* One fit from one seed, run in steps: fit_steps runs it up to `limit`
 * iterations (seeding it first), and a later call resumes it. */
typedef struct fit_state {
    bd_pq_result res;
    int k;        /* asked for */
    int sampled;  /* its iterations so far ran on a trial's sample */
    uint64_t rng; /* empty-cluster repair's nudges */
    int calm;     /* iterations in a row under the tolerance */
    int done;     /* converged, stopped or at the cap */
} fit_state;

static bd_status fit_steps(const fit_run *f, fit_state *fs, uint64_t seed, int limit, double *sums,
                           int64_t *counts)
{
    const int d = (int)f->gr->d;
    const int64_t n = f->n;
    bd_pq_result *res = &fs->res;
    if (res->iters == 0) {
        BD_TRY(seed_kmeanspp(f->sub, f->y, n, d, fs->k, seed, res->centroids, &res->k));
        res->exact = res->k < fs->k;
        fs->rng = seed ^ 0x5DEECE66Dull;
    }
    if (fs->done || res->iters >= limit)
        return BD_OK;
    /* -1: a full E-step, which resuming needs too, as the engine's bounds
     * belong to whichever fit it served last */
    for (int64_t i = 0; i < n; i++)
        res->assign[i] = -1;
    const int k = res->k;
    for (int it = res->iters; it < limit && !fs->done; it++) {
        int64_t changed;
        int repaired = res->empty_repaired;
        BD_TRY(f->eng->assign(f->eng->ctx, res->centroids, k, res->assign, &changed));
        BD_TRY(repair_empty(f->eng, f->sub, n, d, res->centroids, k, res->assign, counts, &fs->rng,
                            &res->empty_repaired, &res->empty_left));
        BD_TRY(f->eng->sums(f->eng->ctx, res->assign, k, sums, counts));
        /* M-step: each centroid becomes the mean of its members */
        for (int c = 0; c < k; c++)
            if (counts[c])
                for (int t = 0; t < d; t++)
                    res->centroids[c * d + t] = (float)(sums[c * d + t] / (double)counts[c]);
        double obj = normalised(objective_of_means(f, sums, counts, k), f->gr, n);
        res->objective[it] = obj;
        res->iters = it + 1;
        char msg[128];
        snprintf(msg, sizeof msg, "restart %d of %d, iteration %d: objective %.6g, %lld reassigned",
                 f->restart + 1, f->restarts, it + 1, obj, (long long)changed);
        BD_TRY(bd_progress_report(f->progress, "em", it + 1, f->iters, msg, obj));
        double prev = it > 0 ? res->objective[it - 1] : INFINITY;
        fs->calm = prev - obj < f->tol * prev ? fs->calm + 1 : 0;
        /* a fixed point (every later iteration would be this one), or calm */
        if ((it > 0 && changed == 0 && res->empty_repaired == repaired) ||
            (f->tol > 0 && fs->calm >= BD_PQ_PATIENCE))
            fs->done = 1;
    }
    if (res->iters >= f->iters)
        fs->done = 1;
    /* the last value exactly, from the residuals of the rounded centroids */
    if (res->iters > 0)
        res->objective[res->iters - 1] =
            normalised(bd_pq_objective(f->sub, n, f->gr, res->centroids, res->assign), f->gr, n);
    /* every subvector on its centroid: no restart or refinement can improve it */
    if (res->iters > 0 && res->objective[res->iters - 1] == 0)
        res->exact = fs->done = 1;
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

/* Subvectors per centroid in a trial's sample. */
enum { TRIAL_SAMPLE = 64 };

/* A restart after the first is a trial: BD_PQ_TRIAL iterations on a sample
 * of TRIAL_SAMPLE x k subvectors, spread evenly from an offset its seed
 * draws, with an engine of its own (the CPU's); only the best trial goes
 * on, over every subvector. Trials over every subvector cost as much as
 * restart 0's whole fit, the early iterations being the dear ones (the
 * centroids move far, so the bounds skip little): a fifth of a whole ResNet-
 * 50's quantization, for the largest layers' fits. A sample holding fewer
 * than k distinct subvectors says nothing about the layer's: that trial
 * runs over every subvector. */
typedef struct trial {
    fit_run f;
    float *sub, *y;
    bd_pq_engine eng;
} trial;

static void trial_free(trial *t)
{
    bd_pq_cpu_engine_free(&t->eng);
    free(t->sub);
    free(t->y);
}

static bd_status trial_init(const fit_run *full, int k, uint64_t seed, trial *t)
{
    memset(t, 0, sizeof *t);
    t->f = *full;
    const int d = (int)full->gr->d;
    const int64_t n = full->n, m = (int64_t)TRIAL_SAMPLE * k;
    if (m >= n)
        return BD_OK;
    t->sub = malloc((size_t)m * (size_t)d * sizeof *t->sub);
    t->y = malloc((size_t)m * (size_t)d * sizeof *t->y);
    if (!t->sub || !t->y) {
        trial_free(t);
        return bd_fail(BD_ENOMEM, "out of memory for a restart's sample of %lld subvectors",
                       (long long)m);
    }
    uint64_t rng = seed ^ 0x9E3779B97F4A7C15ull;
    const int64_t off = (int64_t)(bd_splitmix64(&rng) % (uint64_t)(n / m));
    for (int64_t j = 0; j < m; j++) {
        const int64_t i = off + j * n / m;
        memcpy(t->sub + j * d, full->sub + i * d, (size_t)d * sizeof *t->sub);
        memcpy(t->y + j * d, full->y + i * d, (size_t)d * sizeof *t->y);
    }
    bd_status st = bd_pq_cpu_engine_new(t->sub, m, full->gr, &t->eng);
    if (st != BD_OK) {
        trial_free(t);
        return st;
    }
    t->f.eng = &t->eng;
    t->f.sub = t->sub;
    t->f.y = t->y;
    t->f.n = m;
    t->f.wgw = residual_total(t->sub, m, full->gr, NULL, NULL);
    return BD_OK;
}

/* Trial `fs` from its seed: `limit` iterations on its sample, or over every
 * subvector when there is no sample or it is too uniform (above). A trial
 * on its sample is never done or exact: only every subvector can say. */
static bd_status run_trial(const fit_run *full, fit_state *fs, uint64_t seed, int limit,
                           double *sums, int64_t *counts)
{
    trial t;
    BD_TRY(trial_init(full, fs->k, seed, &t));
    fs->sampled = t.f.n < full->n;
    bd_status st = fit_steps(&t.f, fs, seed, limit, sums, counts);
    if (st == BD_OK && fs->sampled && fs->res.k < fs->k) {
        bd_pq_result *r = &fs->res;
        r->k = fs->k;
        r->iters = r->empty_repaired = r->empty_left = r->exact = 0;
        fs->sampled = fs->calm = fs->done = 0;
        st = fit_steps(full, fs, seed, limit, sums, counts);
    } else if (fs->sampled) {
        fs->res.exact = fs->done = fs->calm = 0;
    }
    trial_free(&t);
    return st;
}

bd_status bd_pq_fit_on(const bd_pq_engine *eng, const float *sub, int64_t n, const bd_gram *gr,
                       const bd_pq_options *opt, const bd_progress *progress,
                       bd_pq_result *res)
{
    memset(res, 0, sizeof *res);
    const int d = (int)gr->d, k = opt->k;
    BD_TRY(check_fit(n, d, opt));
    fit_run f = {eng,      sub, NULL, n, gr, residual_total(sub, n, gr, NULL, NULL), opt->iters > 0 ? opt->iters : 100,
                 opt->tol, progress, 0, opt->restarts > 0 ? opt->restarts : 1};
    fit_state run[BD_PQ_MAX_RESTARTS];
    memset(run, 0, sizeof run);
    double *sums = malloc((size_t)k * (size_t)d * sizeof *sums);
    int64_t *counts = malloc((size_t)k * sizeof *counts);
    float *y = whiten(sub, n, gr);
    f.y = y;
    bd_status st = sums && counts && y ? BD_OK : bd_fail(BD_ENOMEM, "out of memory for EM with "
                                                                    "k=%d on %lld subvectors",
                                                         k, (long long)n);
    uint64_t seeds[BD_PQ_MAX_RESTARTS];
    for (int r = 0; r < f.restarts; r++) {
        seeds[r] = opt->seed;
        if (r > 0)
            seeds[r] = bd_splitmix64(&seeds[r]) + (uint64_t)r;
        run[r].k = k;
    }
    /* Restart 0 runs to the end: it is the plain fit, and the result is never
     * worse than it. The others are trials (run_trial); the one lowest then
     * runs on only if, over every subvector, it is below where restart 0
     * stood at the same iteration. Lloyd's ranking is mostly settled that
     * early, and a full run of every restart would cost `restarts` times the
     * fit. */
    int winner = 0, runs = 0, challenger = -1;
    for (int r = 0; st == BD_OK && r < f.restarts; r++) {
        f.restart = r;
        /* a trial leaves room for the iteration over every subvector */
        const int trial_iters = BD_PQ_TRIAL < f.iters ? BD_PQ_TRIAL : f.iters - 1;
        if ((st = result_alloc(&run[r].res, n, k, d, f.iters)) != BD_OK)
            break;
        if (r == 0 || trial_iters < 1)
            st = fit_steps(&f, &run[r], seeds[r], r == 0 ? f.iters : 1, sums, counts);
        else
            st = run_trial(&f, &run[r], seeds[r], trial_iters, sums, counts);
        if (st != BD_OK)
            break;
        runs++;
        if (run[r].res.exact) {
            winner = r;
            challenger = -1;
            break; /* every subvector is a centroid: nothing left to improve */
        }
        if (r == 0)
            continue;
        const bd_pq_result *c = &run[r].res;
        if (challenger < 0 || c->objective[c->iters - 1] <
                                  run[challenger].res.objective[run[challenger].res.iters - 1])
            challenger = r;
    }
    if (st == BD_OK && challenger > 0) {
        fit_state *cs = &run[challenger];
        const bd_pq_result *c = &cs->res, *z = &run[0].res;
        f.restart = challenger;
        /* a sampled trial's objective is its sample's: one iteration over
         * every subvector says where it stands */
        if (cs->sampled) {
            st = fit_steps(&f, cs, seeds[challenger], c->iters + 1, sums, counts);
            cs->sampled = 0;
        }
        int at = c->iters < z->iters ? c->iters : z->iters;
        if (st == BD_OK && !cs->sampled && c->objective[c->iters - 1] < z->objective[at - 1]) {
            st = fit_steps(&f, cs, seeds[challenger], f.iters, sums, counts);
            if (st == BD_OK && c->objective[c->iters - 1] < z->objective[z->iters - 1])
                winner = challenger;
        }
    }
    if (st == BD_OK) {
        *res = run[winner].res;
        memset(&run[winner].res, 0, sizeof run[winner].res);
        res->best_restart = winner;
        res->restarts = runs;
    }
    for (int r = 0; r < f.restarts; r++)
        bd_pq_result_free(&run[r].res);
    free(sums);
    free(counts);
    free(y);
    return st;
}

bd_status bd_pq_cpu_engine_new(const float *sub, int64_t n, const bd_gram *gr, bd_pq_engine *eng)
{
    estep *e = malloc(sizeof *e);
    if (!e)
        return bd_fail(BD_ENOMEM, "out of memory");
    bd_status st = estep_init(e, sub, n, gr);
    if (st != BD_OK) {
        free(e);
        return st;
    }
    *eng = (bd_pq_engine){e, cpu_assign, cpu_sums};
    return BD_OK;
}

void bd_pq_cpu_engine_free(bd_pq_engine *eng)
{
    if (eng->ctx)
        estep_free(eng->ctx);
    free(eng->ctx);
    eng->ctx = NULL;
}

bd_status bd_pq_fit(const float *sub, int64_t n, const bd_gram *gr, const bd_pq_options *opt,
                    const bd_progress *progress, bd_pq_result *res)
{
    memset(res, 0, sizeof *res);
    BD_TRY(check_fit(n, (int)gr->d, opt));
    bd_pq_engine eng;
    BD_TRY(bd_pq_cpu_engine_new(sub, n, gr, &eng));
    bd_status st = bd_pq_fit_on(&eng, sub, n, gr, opt, progress, res);
    bd_pq_cpu_engine_free(&eng);
    return st;
}

bd_status bd_pq_assign(const float *sub, int64_t n, const bd_gram *gr, const float *centroids,
                       int k, int32_t *assign, double *dist_out)
{
    if (gr->d < 1 || gr->d > 64)
        return bd_fail(BD_EINVAL, "block size d=%lld is outside 1..64", (long long)gr->d);
    bd_pq_engine eng;
    BD_TRY(bd_pq_cpu_engine_new(sub, n, gr, &eng));
    for (int64_t i = 0; i < n; i++)
        assign[i] = -1;
    int64_t changed;
    bd_status st = eng.assign(eng.ctx, centroids, k, assign, &changed);
    bd_pq_cpu_engine_free(&eng);
    BD_TRY(st);
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

int64_t bd_pq_codebook_bytes(int k, int d) { return (int64_t)k * d * 2; }

double bd_pq_bits_per_weight(int k, int d) { return log2((double)k) / (double)d; }
