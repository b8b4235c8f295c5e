#include "quantize.h"

#include <cblas.h>
#include <limits.h>
#include <math.h>
#include <omp.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cpu/conv.h"
#include "device.h"
#include "dist.h"
#include "exec.h"
#include "feedback.h"
#include "int_fit.h"
#include "ops.h"


/* ---- calibration ----------------------------------------------------------- */

struct bd_calib {
    bd_graph *student;
    const bd_dataset *data;
    bd_calib_options opt;
    int64_t *order; /* dataset index of calibration image i */
    int nbatches;
    bd_exec *ex;
    bd_exec_state **states; /* one per batch, or NULL where not held */
    int keep;               /* hold runs between captures (memory allows it) */
    bd_dexec *dx;           /* the student on the GPU, NULL: on the CPU */
};

static size_t quarter_of_ram(void)
{
    long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
    return pages > 0 && page > 0 ? (size_t)pages * (size_t)page / 4 : (size_t)1 << 30;
}

bd_status bd_calib_new(bd_calib **out, bd_graph *student, const bd_dataset *d,
                       const bd_calib_options *opt)
{
    bd_calib *c = calloc(1, sizeof *c);
    if (!c)
        return bd_fail(BD_ENOMEM, "out of memory");
    c->student = student;
    c->data = d;
    c->opt = *opt;
    int64_t total = bd_dataset_count(d);
    if (c->opt.images <= 0)
        c->opt.images = 1024;
    if (c->opt.images > total)
        c->opt.images = total;
    if (c->opt.batch <= 0)
        c->opt.batch = 64;
    if (c->opt.holdout_every <= 1)
        c->opt.holdout_every = BD_HOLDOUT_EVERY;
    if (c->opt.holdout_rows <= 0)
        c->opt.holdout_rows = 4096;
    if (c->opt.cache_bytes == 0)
        c->opt.cache_bytes = quarter_of_ram();
    c->keep = 1;
    bd_status s = BD_OK;
    if (c->opt.images < 1)
        s = bd_fail(BD_EINVAL, "%s: no calibration images", bd_dataset_spec(d));
    if (s == BD_OK)
        s = bd_permutation(total, c->opt.seed, &c->order);
    if (s == BD_OK) {
        c->nbatches = (int)((c->opt.images + c->opt.batch - 1) / c->opt.batch);
        c->states = calloc((size_t)c->nbatches, sizeof *c->states);
        if (!c->states)
            s = bd_fail(BD_ENOMEM, "out of memory");
    }
    if (s == BD_OK)
        s = bd_exec_new(&c->ex, student, BD_EXEC_FUSE);
    if (s == BD_OK && opt->device)
        s = bd_dexec_new(opt->device, student, &c->dx);
    if (s != BD_OK) {
        bd_calib_free(c);
        return s;
    }
    *out = c;
    return BD_OK;
}

static void drop_states(bd_calib *c)
{
    for (int b = 0; b < c->nbatches; b++) {
        bd_exec_state_free(c->ex, c->states[b]);
        c->states[b] = NULL;
    }
}

void bd_calib_free(bd_calib *c)
{
    if (!c)
        return;
    if (c->states)
        drop_states(c);
    free(c->states);
    free(c->order);
    bd_exec_free(c->ex);
    bd_dexec_free(c->dx);
    free(c);
}

int64_t bd_calib_images(const bd_calib *c) { return c->opt.images; }

void bd_calib_changed(bd_calib *c, int node)
{
    /* a held run that already went past the node computed with the old weight */
    for (int b = 0; b < c->nbatches; b++)
        if (c->states[b] && bd_exec_state_node(c->ex, c->states[b]) > node) {
            bd_exec_state_free(c->ex, c->states[b]);
            c->states[b] = NULL;
        }
}

static int held_out_rule(int64_t images, int every, int64_t i)
{
    if (images < every) /* too few for the rule: hold out the last one */
        return images > 1 && i == images - 1;
    return i % every == every - 1;
}

static int held_out(const bd_calib *c, int64_t i)
{
    return held_out_rule(c->opt.images, c->opt.holdout_every, i);
}

int64_t bd_calib_held_out(int64_t images)
{
    if (images < BD_HOLDOUT_EVERY)
        return images > 1;
    return images / BD_HOLDOUT_EVERY;
}

void bd_capture_free(bd_capture *cap)
{
    bd_gram_free(&cap->gram);
    for (int64_t gi = 0; cap->rowgram && gi < cap->groups; gi++)
        bd_gram_free(&cap->rowgram[gi]);
    free(cap->rowgram);
    free(cap->held);
    free(cap->group);
    memset(cap, 0, sizeof *cap);
}

/* Per-thread accumulation of the block Gram, merged at the end of every
 * batch (the full rows' Grams are summed by row_grams instead). */
typedef struct sink {
    bd_gram gram; /* d 0: a capture of the held-out rows alone sums none */
    float *cols;
} sink;

static void sink_free(sink *s)
{
    bd_gram_free(&s->gram);
    free(s->cols);
    memset(s, 0, sizeof *s);
}

static bd_status sink_init(sink *s, const bd_capture *cap, int64_t ncols_floats)
{
    s->cols = malloc((size_t)ncols_floats * sizeof *s->cols + 1);
    if (!s->cols)
        return BD_ENOMEM;
    return cap->rowgram || cap->gram.d == 0 ? BD_OK : bd_gram_init(&s->gram, cap->gram.d);
}

/* Adds a thread's sums into the capture's. */
static void sink_merge(bd_capture *cap, const sink *s)
{
    if (s->gram.d == 0)
        return;
    for (int64_t k = 0; k < s->gram.d * s->gram.d; k++)
        cap->gram.g[k] += s->gram.g[k];
    cap->gram.rows += s->gram.rows;
    cap->gram.blocks += s->gram.blocks;
}

static uint64_t mix(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ull;
    return x ^ (x >> 33);
}

/* Copies up to `quota` rows, chosen by a seeded hash, out of `avail` input
 * rows of length row_len; row(i) gives input row i. */
typedef const float *(*row_fn)(const void *src, int64_t i, float *scratch);

static void keep_rows(bd_capture *cap, int64_t capacity, int64_t quota, int64_t avail,
                      uint64_t key, int32_t group, row_fn row, const void *src, float *scratch)
{
    for (int64_t t = 0; t < quota && t < avail; t++) {
        int64_t slot;
#pragma omp atomic capture
        slot = cap->nheld++;
        if (slot >= capacity) {
#pragma omp atomic update
            cap->nheld--;
            return;
        }
        int64_t i = (int64_t)(mix(key + (uint64_t)t) % (uint64_t)avail);
        memcpy(cap->held + slot * cap->row_len, row(src, i, scratch),
               (size_t)cap->row_len * sizeof(float));
        cap->group[slot] = group;
    }
}

typedef struct cols_src {
    const float *cols;
    int64_t row_len, ncols;
} cols_src;

static const float *col_row(const void *src, int64_t i, float *scratch)
{
    const cols_src *s = src;
    for (int64_t r = 0; r < s->row_len; r++)
        scratch[r] = s->cols[r * s->ncols + i];
    return scratch;
}

typedef struct mat_src {
    const float *x;
    int64_t row_len, stride, step; /* row i at x + i*stride, values step apart */
} mat_src;

static const float *mat_row(const void *src, int64_t i, float *scratch)
{
    const mat_src *s = src;
    if (s->step == 1)
        return s->x + i * s->stride;
    for (int64_t r = 0; r < s->row_len; r++)
        scratch[r] = s->x[i * s->stride + r * s->step];
    return scratch;
}

typedef struct capture_job {
    bd_calib *c;
    const bd_layer *l;
    bd_capture *cap;
    int want_gram;
    int64_t first;      /* calibration index of the batch's first image */
    const int64_t *images; /* which images of the batch the input holds (NULL: all) */
    int64_t capacity;   /* held-out rows at most */
    int64_t per_image;  /* held-out rows per held-out image */
} capture_job;

/* Columns per piece of a conv's Gram: enough for BLAS to run near its peak
 * and for the fold of each piece's float sum into the double total (a pass
 * over L x L) to be rare; a late layer has 49 an image, and summing per
 * image cost a sixth of ResNet-50's quantization. Few enough that a
 * thread's piece of L rows stays near 8 MB. Each piece is summed and
 * folded on its own, so the total does not depend on which thread took
 * which piece. */
static int64_t piece_cols(int64_t L)
{
    int64_t n = (int64_t)(2 << 20) / L;
    return n < 256 ? 256 : n > 4096 ? 4096 : n;
}

/* Columns per piece of a conv's full-row Grams: one buffer of at most 32 MB
 * for all the threads. */
static int64_t row_piece_cols(int64_t L)
{
    int64_t n = (int64_t)(8 << 20) / L;
    return n < 1024 ? 1024 : n > 16384 ? 16384 : n;
}

/* The training images' columns [c0, c0 + n) of the batch seen as one
 * matrix (bd_im2col_range), cut into pieces of at most `most`: runs of
 * consecutive training images, so a piece never includes a held-out one.
 * Fills pieces (pairs c0, n) when given; returns how many. */
static int64_t gram_pieces(const capture_job *job, int64_t images, int64_t ohw, int64_t most,
                           int64_t *pieces)
{
    int64_t count = 0;
    for (int64_t i = 0; i < images;) {
        int64_t img = job->first + (job->images ? job->images[i] : i);
        if (held_out(job->c, img)) {
            i++;
            continue;
        }
        int64_t end = i + 1;
        while (end < images &&
               !held_out(job->c, job->first + (job->images ? job->images[end] : end)))
            end++;
        for (int64_t c0 = i * ohw; c0 < end * ohw; c0 += most, count++)
            if (pieces) {
                pieces[2 * count] = c0;
                pieces[2 * count + 1] = end * ohw - c0 < most ? end * ohw - c0 : most;
            }
        i = end;
    }
    return count;
}

/* The full rows' Grams (error feedback's, L x L per group), one piece at a
 * time, im2col's rows and BLAS's SYRK each split over the threads. Per-
 * thread sums, as the block Gram is taken, held an L x L float and double
 * per thread (a quarter GB each at L = 4608, cleared every batch) and were
 * folded every 2 MB piece: those passes over memory took as long as the
 * products. The pieces are summed in order, so the total depends on the
 * thread count only through BLAS. */
static bd_status row_grams(const capture_job *job, const bd_conv_geom *g, const float *x,
                           const int64_t *pieces, int64_t npieces, int64_t most)
{
    const int64_t L = bd_conv_rows(g);
    float *cols = malloc((size_t)(L * most) * sizeof *cols);
    if (!cols)
        return bd_fail(BD_ENOMEM, "out of memory for the im2col buffer of layer '%s'",
                       job->l->name);
    for (int64_t p = 0; p < npieces; p++)
        for (int64_t gi = 0; gi < g->group; gi++) {
            bd_im2col_range(g, x, gi, pieces[2 * p], pieces[2 * p + 1], cols);
            bd_gram_add_cols(&job->cap->rowgram[gi], cols, L, pieces[2 * p + 1]);
        }
    free(cols);
    return BD_OK;
}

static bd_status capture_conv(capture_job *job, const bd_node *node, const bd_tensor *x,
                              const bd_tensor *w)
{
    bd_conv_geom g;
    BD_TRY(bd_conv_geom_from_node(node, x, w, &g));
    const int64_t L = bd_conv_rows(&g), ohw = bd_conv_cols(&g), cg = g.c / g.group;
    const int rows = job->cap->rowgram != NULL;
    const int64_t per = rows ? row_piece_cols(L) : piece_cols(L), most = per > ohw ? per : ohw;
    const int64_t npieces = job->want_gram ? gram_pieces(job, g.n, ohw, most, NULL) : 0;
    int nthreads = omp_get_max_threads();
    sink *sinks = calloc((size_t)nthreads, sizeof *sinks);
    int64_t *pieces = malloc(2 * (size_t)npieces * sizeof *pieces + 1);
    if (!sinks || !pieces) {
        free(sinks);
        free(pieces);
        return bd_fail(BD_ENOMEM, "out of memory");
    }
    if (npieces > 0)
        gram_pieces(job, g.n, ohw, most, pieces);
    bd_status st = rows ? row_grams(job, &g, x->data, pieces, npieces, most) : BD_OK;
    int failed = st != BD_OK;
#pragma omp parallel num_threads(nthreads) if (!failed)
    {
        sink *s = &sinks[omp_get_thread_num()];
        float *scratch = malloc((size_t)L * sizeof *scratch);
        if (!scratch || sink_init(s, job->cap, L * (rows ? ohw : most)) != BD_OK) {
#pragma omp atomic write
            failed = 1;
        }
#pragma omp for schedule(dynamic)
        for (int64_t p = 0; p < (rows ? 0 : npieces * g.group); p++) {
            if (failed)
                continue;
            const int64_t *piece = pieces + 2 * (p / g.group);
            bd_im2col_range(&g, x->data, p % g.group, piece[0], piece[1], s->cols);
            bd_gram_add_cols(&s->gram, s->cols, L, piece[1]);
        }
#pragma omp for schedule(dynamic)
        for (int64_t i = 0; i < g.n; i++) {
            int64_t img = job->first + (job->images ? job->images[i] : i);
            if (failed || !held_out(job->c, img))
                continue;
            for (int64_t gi = 0; gi < g.group; gi++) {
                bd_im2col(&g, (const float *)x->data + (i * g.c + gi * cg) * g.h * g.w, s->cols);
                cols_src src = {s->cols, L, ohw};
                int64_t quota = (job->per_image + g.group - 1) / g.group;
                keep_rows(job->cap, job->capacity, quota, ohw,
                          mix(job->c->opt.seed ^ ((uint64_t)img << 20) ^ (uint64_t)gi), (int32_t)gi,
                          col_row, &src, scratch);
            }
        }
        free(scratch);
    }
    for (int t = 0; t < nthreads; t++) {
        if (!failed)
            sink_merge(job->cap, &sinks[t]);
        sink_free(&sinks[t]);
    }
    free(sinks);
    free(pieces);
    if (st != BD_OK)
        return st;
    return failed ? bd_fail(BD_ENOMEM, "out of memory for the im2col buffers") : BD_OK;
}

/* Gemm (A, maybe transposed) and MatMul ([..., K]) inputs are rows already. */
static bd_status capture_rows(capture_job *job, const bd_node *node, const bd_tensor *x)
{
    const int64_t L = job->l->row_len, count = bd_tensor_count(x);
    int64_t rows = count / L, stride = L, step = 1;
    if (strcmp(node->op, "Gemm") == 0 && bd_attr_int(node, "transA", 0)) {
        stride = 1; /* A is [K][M]: row i is column i */
        step = rows;
    }
    /* one image per row of A for Gemm; leading dimension for MatMul */
    int64_t batch = x->ndim > 0 ? x->dims[step == 1 ? 0 : x->ndim - 1] : 1;
    if (count % L || batch < 1 || rows % batch)
        return bd_node_fail(node, BD_EFORMAT, "input of %lld values is not rows of %lld",
                            (long long)count, (long long)L);
    /* the training rows go to the Gram in pieces of whole images, as a
     * conv's do (piece_cols): a classifier has one row an image */
    const int64_t per = rows / batch, most = piece_cols(L) > per ? piece_cols(L) / per * per : per;
    bd_gram *gram = job->cap->rowgram ? job->cap->rowgram : &job->cap->gram;
    int64_t ntrain = 0;
    float *scratch = malloc((size_t)L * sizeof *scratch);
    float *train = job->want_gram ? malloc((size_t)(most * L) * sizeof *train) : NULL;
    if (!scratch || (job->want_gram && !train)) {
        free(scratch);
        free(train);
        return bd_fail(BD_ENOMEM, "out of memory");
    }
    mat_src src = {x->data, L, stride, step};
    for (int64_t i = 0; i < batch; i++) {
        int64_t img = job->first + i;
        if (held_out(job->c, img)) {
            mat_src one = src;
            one.x = (const float *)x->data + i * per * (step == 1 ? stride : 1);
            keep_rows(job->cap, job->capacity, job->per_image, per,
                      mix(job->c->opt.seed ^ ((uint64_t)img << 20)), 0, mat_row, &one, scratch);
        } else if (job->want_gram) {
            if (ntrain + per > most) {
                bd_gram_add_rows(gram, train, ntrain, L);
                ntrain = 0;
            }
            for (int64_t r = 0; r < per; r++, ntrain++)
                memcpy(train + ntrain * L, mat_row(&src, i * per + r, scratch),
                       (size_t)L * sizeof(float));
        }
    }
    if (ntrain > 0)
        bd_gram_add_rows(gram, train, ntrain, L);
    free(scratch);
    free(train);
    return BD_OK;
}

static int batch_images(const bd_calib *c, int b)
{
    int64_t first = (int64_t)b * c->opt.batch;
    return (int)(c->opt.images - first < c->opt.batch ? c->opt.images - first : c->opt.batch);
}

/* The images of calibration batch b. */
static bd_status load_batch(bd_calib *c, int b, bd_tensor **x)
{
    int n = batch_images(c, b);
    int *labels = malloc((size_t)n * sizeof *labels);
    if (!labels)
        return bd_fail(BD_ENOMEM, "out of memory");
    bd_status s = bd_dataset_batch(c->data, c->order + (int64_t)b * c->opt.batch, n, x, labels);
    free(labels);
    return s;
}

static bd_status batch_state(bd_calib *c, int b, bd_exec_state **st)
{
    bd_tensor *x = NULL;
    BD_TRY(load_batch(c, b, &x));
    bd_status s = bd_exec_state_new(c->ex, &x, st);
    bd_tensor_free(x);
    return s;
}

/* Batch b on the CPU, from its held run if there is one (and holding it
 * afterwards while memory allows). */
static bd_status host_batch(bd_calib *c, int b, const bd_layer *l, capture_job *job,
                            size_t *held_bytes)
{
    const bd_node *node = &c->student->nodes[l->node];
    bd_status s = BD_OK;
    bd_exec_state *st = c->states[b];
    if (st && bd_exec_state_node(c->ex, st) > l->node) {
        bd_exec_state_free(c->ex, st);
        st = c->states[b] = NULL;
    }
    if (!st)
        s = batch_state(c, b, &st);
    if (s == BD_OK)
        s = bd_exec_advance(c->ex, st, l->node);
    if (s == BD_OK) {
        const bd_tensor *x = bd_exec_state_value(st, node->inputs[0]);
        const bd_tensor *w = c->student->values[l->weight].init;
        if (!x || x->dtype != BD_F32)
            s = bd_fail(BD_EINVAL, "layer '%s': its input is not a float32 tensor", l->name);
        else if (strcmp(node->op, "Conv") == 0)
            s = capture_conv(job, node, x, w);
        else
            s = capture_rows(job, node, x);
    }
    if (st && c->keep && s == BD_OK) {
        c->states[b] = st;
        *held_bytes += bd_exec_state_bytes(c->ex, st);
        if (*held_bytes > c->opt.cache_bytes) {
            c->keep = 0; /* too big for memory: recompute from the input from now on */
            drop_states(c);
        }
    } else {
        bd_exec_state_free(c->ex, st);
        c->states[b] = NULL;
    }
    return s;
}

/* Batch b on the GPU: the forward up to the layer and a Conv's Gram blocks
 * stay there; only the held-out images' inputs come back, for the error
 * metric's rows, chosen by the CPU's own code. A Gemm or MatMul's input
 * (a row or a few per image) comes back whole and goes the CPU's way. */
static bd_status device_batch(bd_calib *c, int b, const bd_layer *l, capture_job *job)
{
    const bd_node *node = &c->student->nodes[l->node];
    const int n = batch_images(c, b);
    bd_tensor *x = NULL, *in = NULL;
    int64_t *train = malloc(2 * (size_t)n * sizeof *train);
    bd_status s = train ? load_batch(c, b, &x) : bd_fail(BD_ENOMEM, "out of memory");
    if (s == BD_OK)
        s = bd_dexec_until(c->dx, x, l->node);
    int64_t *held = train + n;
    int ntrain = 0, nheld = 0;
    for (int i = 0; s == BD_OK && i < n; i++) {
        if (held_out(c, job->first + i))
            held[nheld++] = i;
        else
            train[ntrain++] = i;
    }
    if (s == BD_OK && strcmp(node->op, "Conv") == 0 && job->cap->rowgram) {
        /* the full rows' Grams are the CPU's: the inputs come back whole */
        s = bd_dexec_fetch(c->dx, node->inputs[0], NULL, n, &in);
        if (s == BD_OK)
            s = capture_conv(job, node, in, c->student->values[l->weight].init);
    } else if (s == BD_OK && strcmp(node->op, "Conv") == 0) {
        if (job->want_gram)
            s = bd_dexec_gram(c->dx, l->node, train, ntrain, &job->cap->gram);
        if (s == BD_OK && nheld > 0)
            s = bd_dexec_fetch(c->dx, node->inputs[0], held, nheld, &in);
        if (s == BD_OK && nheld > 0) {
            capture_job only_held = *job;
            only_held.images = held;
            only_held.want_gram = 0;
            s = capture_conv(&only_held, node, in, c->student->values[l->weight].init);
        }
    } else if (s == BD_OK) {
        s = bd_dexec_fetch(c->dx, node->inputs[0], NULL, n, &in);
        if (s == BD_OK)
            s = capture_rows(job, node, in);
    }
    bd_tensor_free(in);
    bd_tensor_free(x);
    free(train);
    return s;
}

/* A Gram summed over the ranks' calibration batches, before it is
 * finished: every rank then fits to every image. */
static bd_status sum_over_ranks(bd_gram *gr)
{
    int64_t counts[2] = {gr->rows, gr->blocks};
    BD_TRY(bd_dist_sum_f64(gr->g, gr->d * gr->d));
    BD_TRY(bd_dist_sum_i64(counts, 2));
    gr->rows = counts[0];
    gr->blocks = counts[1];
    return BD_OK;
}

bd_status bd_calib_capture(bd_calib *c, const bd_layer *l, int64_t d, int full_row,
                           const bd_progress *progress, bd_capture *cap)
{
    memset(cap, 0, sizeof *cap);
    cap->row_len = l->row_len;
    cap->groups = l->groups > 0 ? l->groups : 1;
    const int want_gram = d > 0;
    if (!want_gram && full_row)
        return bd_fail(BD_EINVAL, "layer '%s': a capture without a Gram has no full rows", l->name);
    if (want_gram)
        BD_TRY(bd_gram_init(&cap->gram, d));
    if (full_row) {
        bd_status s = bd_objective_check(l, BD_OBJ_FEEDBACK);
        cap->rowgram = s == BD_OK ? calloc((size_t)cap->groups, sizeof *cap->rowgram) : NULL;
        if (s == BD_OK && !cap->rowgram)
            s = bd_fail(BD_ENOMEM, "out of memory for the row Grams of layer '%s'", l->name);
        for (int64_t gi = 0; s == BD_OK && gi < cap->groups; gi++)
            s = bd_gram_init(&cap->rowgram[gi], l->row_len);
        if (s != BD_OK) {
            bd_capture_free(cap);
            return s;
        }
    }
    int64_t held_images = 0;
    for (int64_t i = 0; i < c->opt.images; i++)
        held_images += held_out(c, i);
    int64_t capacity = c->opt.holdout_rows;
    /* at most 64 MiB of held-out rows */
    if (capacity * l->row_len > ((int64_t)16 << 20))
        capacity = ((int64_t)16 << 20) / l->row_len;
    if (capacity < 1)
        capacity = 1;
    cap->held = malloc((size_t)(capacity * l->row_len) * sizeof *cap->held);
    cap->group = malloc((size_t)capacity * sizeof *cap->group);
    if (!cap->held || !cap->group) {
        bd_capture_free(cap);
        return bd_fail(BD_ENOMEM, "out of memory for held-out rows of layer '%s'", l->name);
    }
    capture_job job = {c, l, cap, want_gram, 0, NULL, capacity,
                       held_images ? (capacity + held_images - 1) / held_images : 0};
    /* the GPU's copy of the student catches up with weights changed since */
    bd_status s = c->dx ? bd_dexec_sync(c->dx) : BD_OK;
    size_t held_bytes = 0;
    int64_t mine_first, mine; /* this rank's batches */
    bd_dist_share(c->nbatches, &mine_first, &mine);
    for (int b = (int)mine_first; b < mine_first + mine && s == BD_OK; b++) {
        job.first = (int64_t)b * c->opt.batch;
        s = c->dx ? device_batch(c, b, l, &job) : host_batch(c, b, l, &job, &held_bytes);
        if (s == BD_OK) {
            char msg[256];
            snprintf(msg, sizeof msg, "layer %s: batch %d of %d", l->name, b + 1, c->nbatches);
            s = bd_progress_report(progress, "capture", b + 1, c->nbatches, msg, 0);
        }
    }
    for (int64_t gi = 0; s == BD_OK && want_gram && gi < (cap->rowgram ? cap->groups : 1); gi++)
        s = sum_over_ranks(cap->rowgram ? &cap->rowgram[gi] : &cap->gram);
    if (s == BD_OK)
        s = bd_dist_gather_rows(cap->held, cap->group, &cap->nheld, cap->row_len, capacity);
    if (s == BD_OK && cap->rowgram) {
        for (int64_t gi = 0; gi < cap->groups; gi++)
            bd_gram_finish(&cap->rowgram[gi]);
        bd_feedback_layer fl = {NULL, l->rows, l->row_len, cap->groups, cap->rowgram};
        bd_gram_free(&cap->gram);
        s = bd_feedback_block_gram(&fl, (int)d, &cap->gram);
    } else if (s == BD_OK) {
        bd_gram_finish(&cap->gram);
    }
    if (s != BD_OK)
        bd_capture_free(cap);
    return s;
}

/* ---- metrics ----------------------------------------------------------------- */

double bd_relative_error(const bd_capture *cap, const bd_layer *l, const float *w,
                         const float *w_hat)
{
    if (cap->nheld == 0)
        return -1;
    const int64_t L = l->row_len, rows = l->rows, mg = rows / l->groups;
    bd_pq_layout lay = {rows, L, 1, L, rows * L, l->transposed};
    float *wr = malloc((size_t)(rows * L) * sizeof *wr);
    float *dr = malloc((size_t)(rows * L) * sizeof *dr);
    float *x = malloc((size_t)(cap->nheld * L) * sizeof *x);
    float *y = malloc((size_t)(cap->nheld * mg) * sizeof *y);
    double num = 0, den = 0;
    if (wr && dr && x && y) {
        bd_pq_gather(&lay, w, wr);
        bd_pq_gather(&lay, w_hat, dr);
        for (int64_t i = 0; i < rows * L; i++)
            dr[i] = wr[i] - dr[i];
        for (int64_t gi = 0; gi < l->groups; gi++) {
            int64_t h = 0;
            for (int64_t r = 0; r < cap->nheld; r++)
                if (cap->group[r] == gi)
                    memcpy(x + (h++) * L, cap->held + r * L, (size_t)L * sizeof *x);
            if (h == 0)
                continue;
            const float *mats[2] = {wr + gi * mg * L, dr + gi * mg * L};
            double *acc[2] = {&den, &num};
            for (int k = 0; k < 2; k++) {
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)h, (int)mg, (int)L, 1.0f,
                            x, (int)L, mats[k], (int)L, 0.0f, y, (int)mg);
                for (int64_t i = 0; i < h * mg; i++)
                    *acc[k] += (double)y[i] * (double)y[i];
            }
        }
    }
    free(wr);
    free(dr);
    free(x);
    free(y);
    return den > 0 ? sqrt(num / den) : (num > 0 ? INFINITY : 0);
}

bd_status bd_calib_measure(bd_calib *c, const bd_layer *l, const float *w, const float *w_hat,
                           const bd_progress *progress, double *error)
{
    bd_capture cap;
    BD_TRY(bd_calib_capture(c, l, 0, 0, progress, &cap));
    *error = bd_relative_error(&cap, l, w, w_hat);
    bd_capture_free(&cap);
    return BD_OK;
}

/* ---- one layer ----------------------------------------------------------------- */

/* One fit of `original` under the objective's metric, decoded into w_hat. */
static bd_status fit(const bd_layer *l, const bd_pq_layout *lay, const float *sub,
                     const bd_capture *cap, bd_objective objective, const bd_quantize_options *opt,
                     const bd_progress *progress, bd_qlayer *q, float *w_hat)
{
    bd_gram identity = {0};
    const bd_gram *gram = &cap->gram;
    if (objective == BD_OBJ_WEIGHT) {
        BD_TRY(bd_gram_identity(&identity, opt->d));
        gram = &identity;
    } else if (gram->blocks == 0) {
        return bd_fail(BD_EINVAL, "layer '%s': no calibration rows (every image was held out)",
                       l->name);
    }
    bd_pq_options po = {.k = opt->k, .iters = opt->iters, .seed = opt->seed,
                        .restarts = opt->restarts > 0 ? opt->restarts : BD_PQ_RESTARTS,
                        .tol = opt->tol >= 0 ? opt->tol : BD_PQ_TOL};
    if (objective == BD_OBJ_FEEDBACK && !cap->rowgram)
        return bd_fail(BD_EINVAL, "layer '%s': objective=feedback needs the full rows' Gram, "
                                  "which this capture did not take",
                       l->name);
    bd_pq_result res;
    bd_status s = opt->device ? bd_device_pq_fit(opt->device, sub, lay->n, gram, &po, progress, &res)
                              : bd_pq_fit(sub, lay->n, gram, &po, progress, &res);
    bd_gram_free(&identity);
    if (s == BD_OK && objective == BD_OBJ_FEEDBACK && !res.exact) {
        bd_feedback_layer fl = {sub, l->rows, l->row_len, cap->groups, cap->rowgram};
        s = bd_feedback_pq(&fl, (int)lay->d, res.k, res.centroids, res.assign, BD_FEEDBACK_PASSES,
                           progress, NULL, NULL);
    }
    if (s != BD_OK) {
        bd_pq_result_free(&res);
        return s;
    }
    bd_pq_round_fp16(res.centroids, (int64_t)res.k * res.d);
    memset(q, 0, sizeof *q);
    q->d = opt->d;
    q->k = res.k;
    q->objective = objective;
    q->n = lay->n;
    q->iters = res.iters;
    q->restarts = res.restarts;
    q->best_restart = res.best_restart;
    q->exact = res.exact;
    q->fit_rows = cap->gram.rows;
    q->held_rows = cap->nheld;
    q->empty_repaired = res.empty_repaired;
    q->centroids = res.centroids;
    q->codes = res.assign;
    q->history = res.objective;
    q->other_error = -1;
    s = bd_qlayer_decode(q, l, w_hat);
    if (s != BD_OK)
        bd_qlayer_free(q);
    return s;
}

static bd_status check_options(const bd_layer *l, const bd_quantize_options *opt,
                               bd_pq_layout *lay)
{
    if (opt->format == BD_FMT_INT) {
        BD_TRY(bd_int_spec_check(l, &opt->ints));
        if (opt->objective != BD_OBJ_WEIGHT)
            BD_TRY(bd_objective_check(l, BD_OBJ_FEEDBACK));
        return bd_pq_layout_init(l, 1, lay);
    }
    BD_TRY(bd_pq_layout_init(l, opt->d, lay));
    int kmax = bd_pq_max_k(lay->n);
    if (opt->k < 1 || opt->k > kmax)
        return bd_fail(BD_EINVAL,
                       "layer '%s': k=%d is not allowed; with d=%d it has %lld subvectors, so k "
                       "can be 1 to %d",
                       l->name, opt->k, opt->d, (long long)lay->n, kmax);
    return BD_OK;
}

void bd_quantize_capture_needs(const bd_quantize_options *opt, int64_t *d, int *full_row)
{
    *d = opt->format == BD_FMT_INT ? 1 : opt->d;
    *full_row = opt->format == BD_FMT_INT ? opt->objective != BD_OBJ_WEIGHT || opt->compare_objectives
                                          : opt->objective == BD_OBJ_FEEDBACK;
}

/* The int codec's fit, the counterpart of fit() for PQ. */
static bd_status fit_int(const bd_layer *l, const float *sub, const bd_capture *cap,
                         bd_objective objective, const bd_quantize_options *opt,
                         const bd_progress *progress, bd_qlayer *q, float *w_hat)
{
    if (objective != BD_OBJ_WEIGHT && !cap->rowgram)
        return bd_fail(BD_EINVAL, "layer '%s': the int fit needs the full rows' Gram, which this "
                                  "capture did not take",
                       l->name);
    bd_feedback_layer fl = {sub, l->rows, l->row_len, cap->groups,
                            objective == BD_OBJ_WEIGHT ? NULL : cap->rowgram};
    float *rows = malloc((size_t)(l->rows * l->row_len) * sizeof *rows);
    bd_status s = rows ? bd_int_fit(&fl, &opt->ints, NULL, objective, progress, q, rows)
                       : bd_fail(BD_ENOMEM, "out of memory for layer '%s'", l->name);
    if (s == BD_OK) {
        bd_pq_layout lay;
        bd_pq_layout_init(l, 1, &lay);
        bd_pq_scatter(&lay, rows, w_hat);
        q->fit_rows = cap->gram.rows;
        q->held_rows = cap->nheld;
    }
    free(rows);
    return s;
}

static bd_status fit_any(const bd_layer *l, const bd_pq_layout *lay, const float *sub,
                         const bd_capture *cap, bd_objective objective,
                         const bd_quantize_options *opt, const bd_progress *progress,
                         bd_qlayer *q, float *w_hat)
{
    return opt->format == BD_FMT_INT
               ? fit_int(l, sub, cap, objective, opt, progress, q, w_hat)
               : fit(l, lay, sub, cap, objective, opt, progress, q, w_hat);
}

bd_status bd_quantize_fit(const bd_capture *cap, const bd_layer *l, const float *original,
                          const bd_quantize_options *opt, const bd_progress *progress,
                          bd_qlayer *q, float *w_hat)
{
    memset(q, 0, sizeof *q);
    bd_pq_layout lay;
    BD_TRY(check_options(l, opt, &lay));
    float *sub = malloc((size_t)(lay.n * lay.d) * sizeof *sub);
    if (!sub)
        return bd_fail(BD_ENOMEM, "out of memory for layer '%s'", l->name);
    bd_pq_gather(&lay, original, sub);
    bd_status s = fit_any(l, &lay, sub, cap, opt->objective, opt, progress, q, w_hat);
    if (s == BD_OK && opt->compare_objectives) {
        bd_qlayer other;
        size_t bytes = (size_t)(l->rows * l->row_len) * sizeof(float);
        float *other_hat = malloc(bytes);
        /* feedback is compared with the block objective it starts from */
        bd_objective o = opt->objective == BD_OBJ_WEIGHT ? BD_OBJ_ACT
                         : opt->objective == BD_OBJ_ACT  ? BD_OBJ_WEIGHT
                                                         : BD_OBJ_ACT;
        s = other_hat ? fit_any(l, &lay, sub, cap, o, opt, NULL, &other, other_hat)
                      : bd_fail(BD_ENOMEM, "out of memory for layer '%s'", l->name);
        if (s == BD_OK) {
            q->other_error = bd_relative_error(cap, l, original, other_hat);
            bd_qlayer_free(&other);
        } else {
            bd_qlayer_free(q);
        }
        free(other_hat);
    }
    if (s == BD_OK)
        q->rel_error = bd_relative_error(cap, l, original, w_hat);
    free(sub);
    return s;
}

bd_status bd_quantize_layer(bd_calib *c, bd_graph *student, const bd_layer *l,
                            const bd_tensor *original, const bd_quantize_options *opt,
                            const bd_progress *progress, bd_qlayer *out)
{
    memset(out, 0, sizeof *out);
    double t0 = bd_now();
    bd_tensor *w = student->values[l->weight].init;
    bd_pq_layout lay;
    BD_TRY(check_options(l, opt, &lay));
    if (!w || !original || !bd_tensor_same_shape(w, original) || original->dtype != BD_F32)
        return bd_fail(BD_EINVAL, "layer '%s': the original weight does not match the student's",
                       l->name);
    bd_capture cap;
    int64_t d;
    int full_row;
    bd_quantize_capture_needs(opt, &d, &full_row);
    BD_TRY(bd_calib_capture(c, l, d, full_row, progress, &cap));
    float *w_hat = malloc(bd_tensor_nbytes(w));
    bd_status s = w_hat ? bd_quantize_fit(&cap, l, original->data, opt, progress, out, w_hat)
                        : bd_fail(BD_ENOMEM, "out of memory for layer '%s'", l->name);
    if (s == BD_OK) {
        memcpy(w->data, w_hat, bd_tensor_nbytes(w)); /* the only change to the student */
        bd_calib_changed(c, l->node);
        out->seconds = bd_now() - t0;
    }
    free(w_hat);
    bd_capture_free(&cap);
    return s;
}

/* ---- a run: the operation's options ----------------------------------------- */

void bd_quantize_run_init(bd_quantize_run *r)
{
    *r = (bd_quantize_run){.iters = 100, .restarts = BD_PQ_RESTARTS, .tol = BD_PQ_TOL};
}

#define OFF(f) offsetof(bd_quantize_run, f)
const bd_opt bd_quantize_opts[] = {
    {"iters", BD_OPT_INT, OFF(iters), 1, 100000, NULL, 0, NULL, "N",
     "EM iterations per restart, at most"},
    {"restarts", BD_OPT_INT, OFF(restarts), 1, BD_PQ_MAX_RESTARTS, NULL, 0, NULL, "R",
     "EM fits from R seeds (k-means++ each), the best kept"},
    {"tol", BD_OPT_DOUBLE, OFF(tol), 0, 0.5, NULL, 0, NULL, "X",
     "stop a fit gaining less than X (relative) 3 times"},
    {"tune", BD_OPT_INT, OFF(tune), 0, 1e8, NULL, 0, NULL, "N",
     "layer-wise tuning steps after each layer"},
    {"target_ratio", BD_OPT_DOUBLE, OFF(target_ratio), 1, 1e6, NULL, 0, NULL, "R",
     BD_SIZE_POLICY " to this ratio over fp32 (0: none)"},
    {"target_mb", BD_OPT_DOUBLE, OFF(target_mb), 1e-6, 1e6, NULL, 0, NULL, "M",
     BD_SIZE_POLICY " to this size in MiB (0: none)"},
    {"target_bpw", BD_OPT_DOUBLE, OFF(target_bpw), 0.01, 32, NULL, 0, NULL, "B",
     BD_SIZE_POLICY " to this mean of bits per weight (0: none)"},
    {NULL, 0, 0, 0, 0, NULL, 0, NULL, NULL, NULL}};
#undef OFF

static void init_op(void *opts) { bd_quantize_run_init(opts); }

const bd_opt_op bd_quantize_op = {"quantize", {bd_quantize_opts, NULL}, {0, 0},
                                  sizeof(bd_quantize_run), init_op};

static const char *key_name(const char *key, int cli, char *buf, size_t cap)
{
    const bd_opt *o = bd_opt_find(bd_quantize_opts, key);
    if (cli)
        bd_opt_cli_name(o, buf, cap);
    else
        snprintf(buf, cap, "%s", key);
    return buf;
}

bd_status bd_quantize_target(const bd_quantize_run *r, const char *where, int cli, char *arg,
                             size_t cap)
{
    const struct {
        const char *key;
        double value;
    } targets[] = {{"target_ratio", r->target_ratio}, {"target_mb", r->target_mb},
                   {"target_bpw", r->target_bpw}};
    const char *given = NULL;
    char a[48], b[48];
    arg[0] = '\0';
    for (size_t i = 0; i < sizeof targets / sizeof targets[0]; i++) {
        if (targets[i].value <= 0)
            continue;
        if (given)
            return bd_fail(BD_EINVAL, "%s: %s and %s exclude each other: give one size target",
                           where, key_name(given, cli, a, sizeof a),
                           key_name(targets[i].key, cli, b, sizeof b));
        given = targets[i].key;
        char value[64];
        bd_opt_value(bd_opt_find(bd_quantize_opts, given), r, value, sizeof value);
        snprintf(arg, cap, "%s=%s", given, value);
    }
    if (given && r->tune > 0)
        return bd_fail(BD_EINVAL, "%s: %s does not combine with %s: %s quantizes without tuning",
                       where, key_name("tune", cli, a, sizeof a), key_name(given, cli, b, sizeof b),
                       BD_SIZE_POLICY);
    return BD_OK;
}
