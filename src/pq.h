/* Product quantization of one layer's weight, activation-aware (docs/method.md,
 * "Layout", "The Gram matrix" and "EM").
 *
 * A weight is `rows` rows of `row_len` values (layers.h); each row is cut
 * into m = row_len / d contiguous subvectors of d values, and all rows*m
 * subvectors share ONE codebook of k centroids. EM minimises
 *     sum_i (w_i - c_{a_i})^T G (w_i - c_{a_i})
 * where G = sum_b X_b^T X_b is the d x d Gram matrix of the layer's input
 * rows cut into blocks the same way (G = I gives plain k-means on weights,
 * the paper's "standard objective" baseline). G is accumulated from chunks
 * of input rows (bd_gram_*), so the activations matrix is never stored. */
#ifndef BD_PQ_H
#define BD_PQ_H

#include <stdint.h>

#include "layers.h"
#include "progress.h"
#include "status.h"

typedef struct bd_pq_layout {
    int64_t rows, row_len;
    int64_t d, m; /* block size, subvectors per row */
    int64_t n;    /* rows * m subvectors */
    int transposed; /* the stored weight is [row_len][rows] */
} bd_pq_layout;

/* Fails with a message naming the layer and the divisors of its row length
 * when d does not divide it. */
bd_status bd_pq_layout_init(const bd_layer *l, int64_t d, bd_pq_layout *lay);

/* The subvectors of a weight (as stored) into sub[n][d]: subvector j of row
 * r is sub[r*m + j]. */
void bd_pq_gather(const bd_pq_layout *lay, const float *w, float *sub);
/* The inverse: writes sub[n][d] back into a weight as stored. */
void bd_pq_scatter(const bd_pq_layout *lay, const float *sub, float *w);

/* ---- the Gram matrix ----------------------------------------------------- */

typedef struct bd_gram {
    int64_t d;
    double *g;     /* d x d, full (both triangles) once finished */
    float *acc;    /* d x d, upper triangle, the running ssyrk sum */
    int64_t rows;  /* input rows seen (each contributes m blocks) */
    int64_t blocks;
} bd_gram;

bd_status bd_gram_init(bd_gram *gr, int64_t d);
void bd_gram_free(bd_gram *gr);
/* Adds the blocks of r input rows x[r][row_len] (row_len a multiple of d). */
void bd_gram_add_rows(bd_gram *gr, const float *x, int64_t r, int64_t row_len);
/* Adds the blocks of a transposed chunk: cols[row_len][ncols], one input row
 * per column (the layout im2col produces). */
void bd_gram_add_cols(bd_gram *gr, const float *cols, int64_t row_len, int64_t ncols);
/* Adds gr->acc, the float sum of a chunk's blocks (upper triangle,
 * row-major), to the double total and counts the chunk's rows and blocks:
 * what every add above ends with, and how a chunk summed elsewhere (on a
 * GPU) joins the total. */
void bd_gram_fold(bd_gram *gr, int64_t rows, int64_t blocks);
/* Symmetrises the sum into g (double). Call once, after the last add. */
void bd_gram_finish(bd_gram *gr);
/* The identity, for the weight-only baseline. */
bd_status bd_gram_identity(bd_gram *gr, int64_t d);

/* ---- EM ------------------------------------------------------------------ */

/* Defaults and limits of the fit's search (quantize.h's options use them). */
enum { BD_PQ_RESTARTS = 4, BD_PQ_MAX_RESTARTS = 64, BD_PQ_PATIENCE = 3, BD_PQ_TRIAL = 10 };
#define BD_PQ_TOL 1e-4

typedef struct bd_pq_options {
    int k;          /* centroids (after clamping) */
    int iters;      /* EM iterations at most, per restart (default 100, the reference's) */
    uint64_t seed;
    /* Fits from different seeds (restart 0 uses `seed` itself); the lowest
     * objective is kept. Restart 0 runs whole; the others are trials of
     * BD_PQ_TRIAL iterations on a sample of 64 k subvectors (all of them
     * when there are fewer), and only the best trial goes on, over every
     * subvector, if it then stands below restart 0. 0 means 1. */
    int restarts;
    /* A fit stops when the objective's relative improvement stays below tol
     * for BD_PQ_PATIENCE iterations in a row, or at a fixed point (no
     * assignment changed). 0: only at a fixed point or after iters. */
    double tol;
} bd_pq_options;

typedef struct bd_pq_result {
    /* k centroids: fewer than asked when the subvectors have fewer distinct
     * values (under G) than k. `exact` is set when every subvector equals
     * its centroid (always so with fewer distinct values than k). */
    int k, d;
    float *centroids;  /* k x d */
    int32_t *assign;   /* n */
    /* The kept fit's normalised objective after each iteration (a trial's
     * first iterations: on its sample's subvectors):
     * sqrt(sum_i (w_i - c_{a_i})^T G (w_i - c_{a_i}) / (blocks * n)), the
     * reference implementation's ||X(W - W^)||_F / sqrt(rows * subvectors). */
    double *objective;
    int iters;            /* iterations the kept fit ran */
    int restarts;         /* fits run */
    int best_restart;     /* which one was kept */
    int exact;
    int empty_repaired;   /* empty clusters split from the most populated one, kept fit */
    int empty_left;       /* clusters still empty (only with duplicate subvectors) */
} bd_pq_result;

/* Fails with a message naming the option when restarts or tol is out of
 * range (restarts 0..BD_PQ_MAX_RESTARTS, tol 0..0.5). */
bd_status bd_pq_check_search(int restarts, double tol);

/* The reference implementation's cap: the largest power of two strictly
 * below n/4 (a layer with 256 subvectors gets at most 32 centroids), and
 * never more than 65536. Returns at least 1. */
int bd_pq_max_k(int64_t n);

/* Runs EM on sub[n][d] under Gram matrix gr: per restart, k-means++ seeding
 * in the metric (w - c)^T G (w - c) (so the initial centroids are distinct
 * subvectors), then Lloyd iterations. Reports progress per iteration ("em",
 * iteration over all restarts, restarts * iters, ..., objective) and
 * honours cancellation. Deterministic for a seed and thread count. */
bd_status bd_pq_fit(const float *sub, int64_t n, const bd_gram *gr, const bd_pq_options *opt,
                    const bd_progress *progress, bd_pq_result *res);

/* Where EM's two heavy steps run, for the n subvectors and the Gram matrix
 * the engine was made for: bd_pq_fit's own (BLAS and OpenMP) or a GPU's
 * (device.h). Everything else (initialisation, empty-cluster repair, the
 * means, the objective, stopping) is bd_pq_fit_on's, the same for both. */
typedef struct bd_pq_engine {
    void *ctx;
    /* E-step: every subvector to its nearest centroid under G, the lowest
     * index winning ties, written into assign; *changed gets how many
     * entries changed. */
    bd_status (*assign)(void *ctx, const float *centroids, int k, int32_t *assign,
                        int64_t *changed);
    /* M-step sums: sums[k][d] (double) and counts[k] of the subvectors by
     * assignment. */
    bd_status (*sums)(void *ctx, const int32_t *assign, int k, double *sums, int64_t *counts);
} bd_pq_engine;

/* bd_pq_fit's own engine, for sub[n][d] under gr (both must outlive it).
 * Between its E-steps it keeps bounds that let it skip most subvectors
 * (pq.c, estep), valid for as long as assign holds what its last E-step
 * wrote; an assign entry of -1 makes the next E-step scan everything. */
bd_status bd_pq_cpu_engine_new(const float *sub, int64_t n, const bd_gram *gr, bd_pq_engine *eng);
void bd_pq_cpu_engine_free(bd_pq_engine *eng);

/* bd_pq_fit with the heavy steps on eng. */
bd_status bd_pq_fit_on(const bd_pq_engine *eng, const float *sub, int64_t n, const bd_gram *gr,
                       const bd_pq_options *opt, const bd_progress *progress,
                       bd_pq_result *res);
void bd_pq_result_free(bd_pq_result *res);

/* Assignment of every subvector to its nearest centroid under G (the
 * E-step alone, also used after centroids are tuned). dist_out, if given,
 * gets each subvector's distance (w - c)^T G (w - c). */
bd_status bd_pq_assign(const float *sub, int64_t n, const bd_gram *gr, const float *centroids,
                       int k, int32_t *assign, double *dist_out);

/* The objective sum_i (w_i - c_{a_i})^T G (w_i - c_{a_i}), in double. */
double bd_pq_objective(const float *sub, int64_t n, const bd_gram *gr, const float *centroids,
                       const int32_t *assign);

/* Decoded subvectors: out[i] = centroids[assign[i]]. */
void bd_pq_decode(const float *centroids, int d, const int32_t *assign, int64_t n, float *out);

/* Rounds every centroid to the nearest float16 (what the file stores), so
 * the model in memory is exactly the model on disk. */
void bd_pq_round_fp16(float *centroids, int64_t count);

/* ---- stored sizes ---------------------------------------------------------- */

/* Bytes of the fp16 codebook. */
int64_t bd_pq_codebook_bytes(int k, int d);
/* log2(k) / d: the paper's bits per weight. */
double bd_pq_bits_per_weight(int k, int d);

#endif
