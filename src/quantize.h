/* The per-layer pipeline: capture a layer's inputs from the current student
 * on calibration images, fit its codebook, install W^ in the student, and
 * measure what it cost.
 *
 * A calibration cache (bd_calib) keeps, for every calibration batch, the run
 * of the student held just before the last layer it served. Quantizing in
 * graph order therefore runs every node once per batch in all: the inputs of
 * the next layer come from advancing the held runs, which re-runs the layer
 * just quantized with its new weight. Asking for an earlier layer, or
 * changing a weight upstream of the held point, restarts from the input.
 *
 * In a job of several ranks (dist.h) each rank runs its share of the
 * calibration batches; the Grams are summed and the held-out rows gathered,
 * in rank order, so every rank fits the same codebooks to every image. */
#ifndef BD_QUANTIZE_H
#define BD_QUANTIZE_H

#include <stdint.h>

#include "codec.h"
#include "data.h"
#include "graph.h"
#include "layers.h"
#include "options.h"
#include "pq.h"
#include "progress.h"

/* A GPU (device.h); NULL in an option means the CPU. */
typedef struct bd_device bd_device;


/* ---- calibration ----------------------------------------------------------- */

typedef struct bd_calib bd_calib;

/* By default every 8th calibration image is held out for the error metric. */
enum { BD_HOLDOUT_EVERY = 8 };
/* How many of `images` calibration images the default rule holds out. */
int64_t bd_calib_held_out(int64_t images);

typedef struct bd_calib_options {
    int64_t images;  /* calibration images (default 1024, at most the dataset) */
    int batch;       /* images per batch (default 64) */
    uint64_t seed;   /* which images, and which held-out rows */
    /* Every `holdout_every`-th image (default 8) gives held-out rows for the
     * error metric instead of rows for the Gram matrix. */
    int holdout_every;
    int64_t holdout_rows; /* held-out rows kept per layer (default 4096) */
    size_t cache_bytes;   /* most memory the held runs may use (default 1/4 RAM) */
    /* Run the calibration forward and sum the Gram matrix on this GPU
     * (NULL: the CPU). The GPU holds no runs between captures: each
     * capture runs the batches from the input, which costs the GPU less
     * than keeping every batch's activations would cost its memory. */
    bd_device *device;
} bd_calib_options;

/* The calibration set: `images` samples of d in a seeded order. The student
 * graph is borrowed and must outlive the cache. With a device, fails with
 * BD_EUNSUPPORTED when the device cannot run the student. */
bd_status bd_calib_new(bd_calib **out, bd_graph *student, const bd_dataset *d,
                       const bd_calib_options *opt);
void bd_calib_free(bd_calib *c);
/* Tells the cache the weight of node `node` changed. */
void bd_calib_changed(bd_calib *c, int node);
int64_t bd_calib_images(const bd_calib *c);

/* What a layer's inputs gave: the Gram matrix for block size d and the
 * held-out rows with their group. */
typedef struct bd_capture {
    bd_gram gram;
    /* with full_row: the full row's Gram of each conv group (d = row_len),
     * from which gram was derived; NULL otherwise */
    bd_gram *rowgram;
    int64_t groups;
    int64_t row_len;
    int64_t nheld;
    float *held;     /* nheld x row_len */
    int32_t *group;  /* nheld: the conv group each row belongs to */
} bd_capture;

/* The layer's inputs from the student as it stands, on the calibration
 * images: the Gram matrix of blocks of d (with full_row, also the full
 * rows' Grams) from the fitted images and the held-out rows from the
 * others. d 0: the held-out rows alone, no Gram (full_row 0), to measure
 * an error again. The held-out rows are the same ones every capture takes
 * (the images and positions follow the seed), so errors measured at
 * different times compare. */
bd_status bd_calib_capture(bd_calib *c, const bd_layer *l, int64_t d, int full_row,
                           const bd_progress *progress, bd_capture *cap);
void bd_capture_free(bd_capture *cap);

/* ---- one layer --------------------------------------------------------------- */

typedef struct bd_quantize_options {
    bd_format format;
    int d, k;          /* pq: k already within bd_pq_max_k */
    bd_int_spec ints;  /* int */
    bd_objective objective;
    int iters;         /* EM iterations per restart, at most (default 100) */
    int restarts;      /* EM fits from different seeds (0: BD_PQ_RESTARTS) */
    double tol;        /* EM's stopping tolerance (< 0: BD_PQ_TOL; pq.h) */
    uint64_t seed;
    int compare_objectives; /* also fit the other objective, to report its error */
    bd_device *device; /* run EM on this GPU (NULL: the CPU) */
} bd_quantize_options;

/* What a capture for these options must take: the block size, and whether
 * the full rows' Gram (PQ's feedback, and every int fit but round to
 * nearest, which with compare_objectives compares with one that does). */
void bd_quantize_capture_needs(const bd_quantize_options *opt, int64_t *d, int *full_row);

/* Captures the layer's inputs from the student, fits a codebook to the
 * ORIGINAL weight (the teacher's, as stored: re-quantizing starts from it,
 * never from an earlier W^), installs W^ into the student's weight and
 * measures. On failure or cancellation the student is left exactly as it
 * was. */
bd_status bd_quantize_layer(bd_calib *c, bd_graph *student, const bd_layer *l,
                            const bd_tensor *original, const bd_quantize_options *opt,
                            const bd_progress *progress, bd_qlayer *out);

/* One fit of the layer's ORIGINAL weight (as stored) to the captured
 * inputs, without touching any graph: the codebook in *q and the decoded
 * W^ (as stored) in w_hat, with q->rel_error measured on the held-out rows.
 * What bd_quantize_layer does short of installing W^; policies use it to
 * try settings. */
bd_status bd_quantize_fit(const bd_capture *cap, const bd_layer *l, const float *original,
                          const bd_quantize_options *opt, const bd_progress *progress,
                          bd_qlayer *q, float *w_hat);

/* ||X(W - W^)||_F / ||X W||_F over held-out rows, W and W^ as stored. */
double bd_relative_error(const bd_capture *cap, const bd_layer *l, const float *w,
                         const float *w_hat);

/* ---- a run: the operation's options -------------------------------------------
 * What a 'quantize' takes beyond the plan (which says each layer's format,
 * d, k, bits and objective): EM's search, layer-wise tuning, or a size
 * target. A target stands for the size-budget policy
 * (lua/policies/size_budget.lua), which plans every layer the plan takes
 * to meet it and quantizes: the front-ends run that policy for it. */
typedef struct bd_quantize_run {
    int iters;           /* EM iterations per restart, at most */
    int restarts;        /* EM fits from different seeds, the best kept */
    double tol;          /* EM's stopping tolerance (pq.h) */
    int tune;            /* layer-wise fine-tuning steps after each layer (0: none) */
    double target_ratio; /* > 0: at most the fp32 size / target_ratio */
    double target_mb;    /* > 0: at most this many MiB (2^20 bytes) */
    double target_bpw;   /* > 0: at most this many bits per quantizable weight on average */
} bd_quantize_run;

/* The defaults, every field: the one place they come from (100 iterations,
 * BD_PQ_RESTARTS, BD_PQ_TOL, no tuning, no target). */
void bd_quantize_run_init(bd_quantize_run *r);

/* The table every front-end reads (options.h), and the operation: the
 * table with bd_quantize_run_init's defaults. */
extern const bd_opt bd_quantize_opts[];
extern const bd_opt_op bd_quantize_op;

/* The policy a size target stands for: lua/policies/BD_SIZE_POLICY.lua. */
#define BD_SIZE_POLICY "size_budget"

/* r's size target as that policy's argument ("target_mb=0.05") in arg; ""
 * when r sets none. Fails, naming the keys (spelled as the command line
 * spells them with cli), when r sets more than one target, or a target and
 * tune (the policy does not tune). where names the caller. */
bd_status bd_quantize_target(const bd_quantize_run *r, const char *where, int cli, char *arg,
                             size_t cap);

/* The same error measured again, once the student changed (its codebook
 * tuned, layers before it changed): X the held-out rows of the layer's
 * inputs from the student as it stands now, W the layer's float source and
 * W^ its weight now. -1 when no row is held out. */
bd_status bd_calib_measure(bd_calib *c, const bd_layer *l, const float *w, const float *w_hat,
                           const bd_progress *progress, double *error);

#endif
