/* Training on the GPU: the engine bd_training_run_with drives (training.h),
 * training_step.c's step with every value on the GPU. The parameters are
 * the trainer's GPU copies (train.c), updated in place by training's SGD;
 * quantized PQ layers train their centroids as fine-tuning does (tune.c).
 *
 * Quant-Noise is the CPU's (quant_noise.h): the masks are bd_noise_mask's,
 * made on the host and uploaded (a byte per block); the codebooks and grids
 * are fitted by the CPU's own code on the master weights brought back when
 * a refit is due, then uploaded; the noisy weight is written over the
 * trainer's copy after the master is saved on the GPU, and the master put
 * back after the backward. pq-centroid's assignment of every block to its
 * nearest centroid runs here each step (one GEMM per chunk and the argmin,
 * as EM's E-step with G = I, em.c).
 *
 * A step uploads the batch, its labels and the masks, and brings back one
 * loss and one hit per image; store and load move the rest between the GPU
 * and the state once an epoch. */
#include <stdlib.h>
#include <string.h>

#include "dev.h"

/* Scores of at most 16 Mi floats per GEMM (pq-centroid's assignment). */
enum { SCORE_BUDGET = 16 << 20 };

/* A layer with Quant-Noise. */
typedef struct gpu_noised {
    int layer;        /* index in the state's layers */
    int weight;       /* value id */
    bd_pq_layout lay;
    bd_cu_blocks b;
    size_t bytes;     /* the weight's */
    uint8_t *mask, *host_mask; /* lay.n */
    float *master;    /* the weight while the noisy copy is the trainer's */
    int applied;      /* master holds this step's weight */
    /* pq-centroid: the codebook, the gathered master, the assignment */
    int k, k_room;
    float *cent, *cgc, *sub, *scores;
    int64_t chunk;
    int32_t *assign;
    /* int: the grid */
    int64_t nscales;
    float *scales, *zeros;
} gpu_noised;

/* A quantized PQ layer training its centroids (tune.c's gpu_layer). */
typedef struct gpu_codebook {
    bd_pq_layout lay;
    int k;
    float *master, *moment, *cgrad, *sub; /* k x d, k x d, k x d, n x d when transposed */
    int32_t *codes;
    double *sums;
    unsigned long long *counts;
} gpu_codebook;

typedef struct gpu_trainer {
    bd_device *dev;
    const bd_training_state *st;
    bd_dtrain *tr;
    bd_dexec *teacher;
    bd_noise *noise;
    int nnoised;
    gpu_noised *nz;
    gpu_codebook *cb;   /* st->ncb */
    float **moment;     /* per BD_PARAM_SGD parameter */
    int batch;
    int32_t *labels, *host_labels, *hit, *host_hit;
    double *rows, *host_rows;
} gpu_trainer;

static size_t param_bytes(const gpu_trainer *t, int i)
{
    return bd_tensor_nbytes(t->st->g->values[t->st->params[i]].init);
}

static size_t kd_bytes(const bd_pq_layout *lay, int k, size_t elem)
{
    return (size_t)k * (size_t)lay->d * elem;
}

static void release(bd_device *dev, void *p, size_t bytes) { bd_dev_release(dev, p, bytes); }

static void free_codebook_room(bd_device *dev, gpu_noised *z)
{
    release(dev, z->cent, kd_bytes(&z->lay, z->k_room, sizeof(float)));
    release(dev, z->cgc, (size_t)z->k_room * sizeof(float));
    release(dev, z->scores, (size_t)z->chunk * (size_t)z->k_room * sizeof(float));
    z->cent = z->cgc = z->scores = NULL;
    z->k_room = 0;
}

static void noised_free(bd_device *dev, gpu_noised *z)
{
    const size_t n = (size_t)z->lay.n, d = (size_t)z->lay.d;
    free_codebook_room(dev, z);
    release(dev, z->mask, n);
    release(dev, z->master, z->bytes);
    release(dev, z->sub, n * d * sizeof(float));
    release(dev, z->assign, n * sizeof(int32_t));
    release(dev, z->scales, (size_t)z->nscales * sizeof(float));
    release(dev, z->zeros, (size_t)z->nscales * sizeof(float));
    free(z->host_mask);
}

static void codebook_free(bd_device *dev, gpu_codebook *c)
{
    release(dev, c->master, kd_bytes(&c->lay, c->k, sizeof(float)));
    release(dev, c->moment, kd_bytes(&c->lay, c->k, sizeof(float)));
    release(dev, c->cgrad, kd_bytes(&c->lay, c->k, sizeof(float)));
    release(dev, c->sums, kd_bytes(&c->lay, c->k, sizeof(double)));
    release(dev, c->counts, (size_t)c->k * sizeof(unsigned long long));
    release(dev, c->codes, (size_t)c->lay.n * sizeof(int32_t));
    release(dev, c->sub, (size_t)(c->lay.n * c->lay.d) * sizeof(float));
}

static void trainer_free(void *ctx)
{
    gpu_trainer *t = ctx;
    const bd_training_state *st = t->st;
    bd_dev_enter(t->dev);
    for (int i = 0; t->nz && i < t->nnoised; i++)
        noised_free(t->dev, &t->nz[i]);
    for (int i = 0; t->cb && i < st->ncb; i++)
        codebook_free(t->dev, &t->cb[i]);
    for (int i = 0; t->moment && i < st->nparams; i++)
        release(t->dev, t->moment[i], param_bytes(t, i));
    release(t->dev, t->labels, (size_t)t->batch * sizeof(int32_t));
    release(t->dev, t->hit, (size_t)t->batch * sizeof(int32_t));
    release(t->dev, t->rows, (size_t)t->batch * sizeof(double));
    bd_dtrain_free(t->tr);
    bd_cuda_dexec_free(t->teacher);
    bd_noise_free(t->noise);
    free(t->nz);
    free(t->cb);
    free(t->moment);
    free(t->host_labels);
    free(t->host_hit);
    free(t->host_rows);
    free(t);
}

/* ---- Quant-Noise ------------------------------------------------------------------ */

/* Room for a codebook of k centroids (a refit may find fewer distinct
 * blocks than the plan's k, never more). */
static bd_status codebook_room(bd_device *dev, gpu_noised *z, int k)
{
    if (k <= z->k_room)
        return BD_OK;
    free_codebook_room(dev, z);
    z->chunk = SCORE_BUDGET / k < 1 ? 1 : SCORE_BUDGET / k;
    if (z->chunk > z->lay.n)
        z->chunk = z->lay.n;
    z->k_room = k;
    bd_status s = bd_dev_alloc(dev, kd_bytes(&z->lay, k, sizeof(float)), (void **)&z->cent);
    if (s == BD_OK)
        s = bd_dev_alloc(dev, (size_t)k * sizeof(float), (void **)&z->cgc);
    if (s == BD_OK)
        s = bd_dev_alloc(dev, (size_t)z->chunk * (size_t)k * sizeof(float), (void **)&z->scores);
    return s;
}

/* The fitted codebook or grid of every noised layer, uploaded. */
static bd_status upload_quantizers(gpu_trainer *t)
{
    for (int i = 0; i < t->nnoised; i++) {
        gpu_noised *z = &t->nz[i];
        const bd_pq_result *cb = bd_noise_codebook(t->noise, z->layer);
        const bd_qlayer *grid = bd_noise_grid(t->noise, z->layer);
        if (cb) {
            z->k = cb->k;
            BD_TRY(codebook_room(t->dev, z, cb->k));
            BD_TRY(bd_cu_upload(z->cent, cb->centroids, kd_bytes(&z->lay, cb->k, sizeof(float))));
            /* with G = I, EM's c^T G c is each centroid's squared norm */
            BD_TRY(bd_cu_center_terms(z->cent, z->cent, cb->k, (int)z->lay.d, z->cgc));
        } else if (grid) {
            if (grid->nscales != z->nscales) {
                release(t->dev, z->scales, (size_t)z->nscales * sizeof(float));
                release(t->dev, z->zeros, (size_t)z->nscales * sizeof(float));
                z->scales = z->zeros = NULL;
                z->nscales = grid->nscales;
                BD_TRY(bd_dev_alloc(t->dev, (size_t)z->nscales * sizeof(float),
                                    (void **)&z->scales));
                BD_TRY(bd_dev_alloc(t->dev, (size_t)z->nscales * sizeof(float),
                                    (void **)&z->zeros));
            }
            BD_TRY(bd_cu_upload(z->scales, grid->scales, (size_t)z->nscales * sizeof(float)));
            if (grid->zeros)
                BD_TRY(bd_cu_upload(z->zeros, grid->zeros, (size_t)z->nscales * sizeof(float)));
        }
    }
    return BD_OK;
}

/* bd_noise_apply on the GPU: refit when due (on the host, from the master
 * weights brought back), then each layer's master saved and its noisy
 * weight written into the trainer's copy. */
static bd_status noise_apply(gpu_trainer *t, int64_t step)
{
    const bd_training_state *st = t->st;
    const bd_noise_spec *spec = &st->o->noise;
    if (bd_noise_refit_due(t->noise, step)) {
        for (int i = 0; i < t->nnoised; i++) {
            const gpu_noised *z = &t->nz[i];
            BD_TRY(bd_cu_download(st->g->values[z->weight].init->data,
                                  bd_dtrain_param(t->tr, z->weight)->data, z->bytes));
        }
        BD_TRY(bd_noise_refit(t->noise, st->g, st->o->seed, step));
        BD_TRY(upload_quantizers(t));
    }
    for (int i = 0; i < t->nnoised; i++) {
        gpu_noised *z = &t->nz[i];
        float *w = bd_dtrain_param(t->tr, z->weight)->data;
        bd_noise_mask(t->noise, z->layer, st->o->seed, step, z->host_mask);
        BD_TRY(bd_cu_upload(z->mask, z->host_mask, (size_t)z->lay.n));
        BD_TRY(bd_cu_copy(z->master, w, z->bytes));
        z->applied = 1;
        if (spec->kind == BD_NOISE_PQ) {
            const float keep = spec->p < 1 ? (float)(1.0 / (1.0 - spec->p)) : 1.0f;
            BD_TRY(bd_cu_noise_drop(&z->b, z->mask, keep, w));
        } else if (spec->kind == BD_NOISE_PQ_CENTROID) {
            const int64_t d = z->lay.d;
            BD_TRY(bd_cu_pq_gather(w, z->lay.rows, z->lay.row_len, z->lay.transposed, z->sub));
            for (int64_t i0 = 0; i0 < z->lay.n; i0 += z->chunk) {
                const int64_t rows = z->lay.n - i0 < z->chunk ? z->lay.n - i0 : z->chunk;
                /* scores = -2 W C^T; each row's argmin of scores + |c|^2 */
                BD_TRY(bd_cu_gemm(t->dev->blas, 0, 1, rows, z->k, d, -2.0f, z->sub + i0 * d, d,
                                  0, z->cent, d, 0, 0.0f, z->scores, z->k, 0, 1));
                BD_TRY(bd_cu_argmin(z->scores, z->cgc, rows, z->k, z->assign + i0));
            }
            BD_TRY(bd_cu_noise_centroid(&z->b, z->mask, z->cent, z->assign, w));
        } else {
            const bd_qlayer *grid = bd_noise_grid(t->noise, z->layer);
            BD_TRY(bd_cu_noise_int(&z->b, z->mask, z->scales, grid->zeros ? z->zeros : NULL,
                                   z->nscales, (float)(1 << (grid->ints.bits - 1)), grid->k, w));
        }
    }
    return BD_OK;
}

/* bd_noise_restore on the GPU: the masters back, block drop's kept blocks'
 * gradients scaled (grads: per parameter, NULL after a failure). */
static bd_status noise_restore(gpu_trainer *t, bd_dt *const *grads)
{
    const bd_training_state *st = t->st;
    const double p = st->o->noise.p;
    bd_status s = BD_OK;
    for (int i = 0; i < t->nnoised; i++) {
        gpu_noised *z = &t->nz[i];
        if (!z->applied)
            continue;
        z->applied = 0;
        bd_status r = bd_cu_copy(bd_dtrain_param(t->tr, z->weight)->data, z->master, z->bytes);
        s = s == BD_OK ? r : s;
        const int param = st->layer_param[z->layer];
        if (s == BD_OK && grads && st->o->noise.kind == BD_NOISE_PQ && p > 0 && p < 1)
            s = bd_cu_noise_keep(&z->b, z->mask, (float)(1.0 / (1.0 - p)), grads[param]->data);
    }
    return s;
}

static bd_status noised_init(gpu_trainer *t, gpu_noised *z, int l)
{
    const bd_training_state *st = t->st;
    const bd_layer *layer = &st->layers[l];
    z->layer = l;
    z->weight = layer->weight;
    if (st->layer_param[l] < 0)
        return bd_fail(BD_EINVAL, "layer '%s' gets Quant-Noise but its weight is not trained",
                       layer->name);
    BD_TRY(bd_pq_layout_init(layer, bd_noise_block(t->noise, l), &z->lay));
    z->b = (bd_cu_blocks){z->lay.rows, z->lay.row_len, z->lay.d, z->lay.transposed};
    z->bytes = bd_tensor_nbytes(st->g->values[z->weight].init);
    const size_t n = (size_t)z->lay.n, d = (size_t)z->lay.d;
    if (!(z->host_mask = malloc(n + 1)))
        return bd_fail(BD_ENOMEM, "out of memory");
    BD_TRY(bd_dev_alloc(t->dev, n, (void **)&z->mask));
    BD_TRY(bd_dev_alloc(t->dev, z->bytes, (void **)&z->master));
    if (st->o->noise.kind == BD_NOISE_PQ_CENTROID) {
        BD_TRY(bd_dev_alloc(t->dev, n * d * sizeof(float), (void **)&z->sub));
        BD_TRY(bd_dev_alloc(t->dev, n * sizeof(int32_t), (void **)&z->assign));
    }
    return BD_OK;
}

/* ---- the step ----------------------------------------------------------------------- */

/* The centroid SGD of codebook i from its weight's gradient, and its layer's
 * weight decoded into the trainer's copy (training_step.c's update). */
static bd_status codebook_update(gpu_trainer *t, int i, const bd_dt *wgrad, float lr, float m)
{
    const bd_training_options *o = t->st->o;
    gpu_codebook *c = &t->cb[i];
    const bd_pq_layout *lay = &c->lay;
    const float *sub = wgrad->data;
    if (lay->transposed) {
        BD_TRY(bd_cu_pq_gather(wgrad->data, lay->rows, lay->row_len, 1, c->sub));
        sub = c->sub;
    }
    BD_TRY(bd_cu_cluster_sums(sub, c->codes, lay->n, (int)lay->d, c->k, c->sums, c->counts));
    BD_TRY(bd_cu_cluster_means(c->sums, c->counts, c->k, (int)lay->d, c->cgrad));
    BD_TRY(bd_cu_training_sgd(c->master, c->moment, c->cgrad, (int64_t)c->k * lay->d, lr, m,
                              o->wd, o->nesterov));
    const int weight = t->st->layers[t->st->cb[i].layer].weight;
    return bd_cu_pq_decode(c->master, c->codes, lay->rows, lay->row_len, lay->d, lay->transposed,
                           bd_dtrain_param(t->tr, weight)->data);
}

static bd_status update(gpu_trainer *t, bd_dt *const *grads, float lr, float m)
{
    const bd_training_state *st = t->st;
    const bd_training_options *o = st->o;
    for (int i = 0; i < st->nparams; i++) {
        if (st->kind[i] != BD_PARAM_SGD)
            continue;
        bd_dt *p = bd_dtrain_param(t->tr, st->params[i]);
        BD_TRY(bd_cu_training_sgd(p->data, t->moment[i], grads[i]->data, bd_dt_count(p), lr, m,
                                  st->decay[i] ? o->wd : 0, o->nesterov));
    }
    for (int i = 0; i < st->ncb; i++)
        BD_TRY(codebook_update(t, i, grads[st->cb[i].param], lr, m));
    return BD_OK;
}

/* Forward, loss and backward on the uploaded batch: *loss and *hits as
 * training_step.c's (in a job, the loss and the gradients this rank's
 * share of the global batch's), grads per parameter. */
static bd_status forward_backward(gpu_trainer *t, const bd_dt *xd, const int *labels,
                                  double *loss, int64_t *hits, bd_dt **grads)
{
    const bd_training_options *o = t->st->o;
    const bd_dt *logits = NULL;
    bd_dt *target = NULL, *dlogits = NULL;
    BD_TRY(bd_dtrain_forward(t->tr, xd, &logits));
    if (logits->ndim != 2 || logits->dims[0] < 1 || logits->dims[0] > t->batch)
        return bd_fail(BD_EINVAL, "the model's output is not [batch, classes] logits");
    const int64_t n = logits->dims[0], c = logits->dims[1];
    bd_status s = o->loss == BD_LOSS_CE ? bd_loss_check_labels(labels, n, c) : BD_OK;
    for (int64_t i = 0; s == BD_OK && i < n; i++)
        t->host_labels[i] = labels[i];
    if (s == BD_OK)
        s = bd_cu_upload(t->labels, t->host_labels, (size_t)n * sizeof *t->labels);
    if (s == BD_OK && o->loss == BD_LOSS_KL) {
        s = bd_dexec_forward(t->teacher, xd, &target);
        if (s == BD_OK && (target->ndim != 2 || target->dims[0] != n || target->dims[1] != c))
            s = bd_fail(BD_EINVAL, "KL loss: the teacher's logits differ in shape from the "
                                   "student's");
    }
    if (s == BD_OK)
        s = bd_dt_new(t->dev, 2, logits->dims, &dlogits);
    if (s == BD_OK)
        s = o->loss == BD_LOSS_KL
                ? bd_cu_loss_kl(logits->data, target->data, n, c, t->rows, dlogits->data)
                : bd_cu_loss_ce(logits->data, t->labels, n, c, o->smoothing, t->rows,
                                dlogits->data);
    if (s == BD_OK)
        s = bd_cu_hits(logits->data, t->labels, n, c, t->hit);
    if (s == BD_OK)
        s = bd_cu_download(t->host_rows, t->rows, (size_t)n * sizeof *t->host_rows);
    if (s == BD_OK)
        s = bd_cu_download(t->host_hit, t->hit, (size_t)n * sizeof *t->host_hit);
    if (s == BD_OK) { /* summed in order, as loss.c's total() */
        double sum = 0;
        *hits = 0;
        for (int64_t i = 0; i < n; i++) {
            sum += t->host_rows[i];
            *hits += t->host_hit[i];
        }
        *loss = sum / (double)n;
        s = bd_dev_share_loss(dlogits, loss, t->st->batch);
    }
    if (s == BD_OK)
        s = bd_dtrain_backward(t->tr, dlogits, grads);
    bd_dt_free(target);
    bd_dt_free(dlogits);
    return s;
}

static bd_status gpu_step(void *ctx, const bd_tensor *x, const int *labels, int64_t step,
                          float lr, float m, double *loss, int64_t *hits)
{
    gpu_trainer *t = ctx;
    const bd_training_state *st = t->st;
    *hits = 0;
    BD_TRY(bd_dev_enter(t->dev));
    bd_dt *xd = NULL;
    bd_dt **grads = calloc((size_t)st->nparams + 1, sizeof *grads);
    bd_status s = grads ? bd_dt_upload(t->dev, x, &xd) : bd_fail(BD_ENOMEM, "out of memory");
    if (s == BD_OK && t->noise)
        s = noise_apply(t, step);
    if (s == BD_OK)
        s = forward_backward(t, xd, labels, loss, hits, grads);
    if (s == BD_OK)
        s = bd_dev_sum_grads(grads, st->nparams);
    if (t->noise) {
        bd_status r = noise_restore(t, s == BD_OK ? grads : NULL);
        s = s == BD_OK ? r : s;
        if (s == BD_OK && (step + 1) % st->steps == 0)
            bd_noise_refit_next(t->noise);
    }
    if (s == BD_OK)
        s = update(t, grads, lr, m);
    for (int i = 0; grads && i < st->nparams; i++)
        bd_dt_free(grads[i]);
    free(grads);
    bd_dt_free(xd);
    return s;
}

/* ---- store and load --------------------------------------------------------------------- */

enum { TO_HOST, TO_GPU };

static bd_status move(void *host, void *gpu, size_t bytes, int way)
{
    return way == TO_HOST ? bd_cu_download(host, gpu, bytes) : bd_cu_upload(gpu, host, bytes);
}

/* Value v between the host graph and the trainer's copy. */
static bd_status move_value(gpu_trainer *t, int v, int way)
{
    bd_tensor *host = t->st->g->values[v].init;
    bd_dt *p = bd_dtrain_param(t->tr, v);
    return host && p ? move(host->data, p->data, bd_tensor_nbytes(host), way) : BD_OK;
}

/* Everything the steps change: the parameters (a codebook layer's decoded
 * weight with them), BatchNorm's running statistics in train mode, the
 * momentum, the codebooks. */
static bd_status move_all(gpu_trainer *t, int way)
{
    const bd_training_state *st = t->st;
    BD_TRY(bd_dev_enter(t->dev));
    for (int i = 0; i < st->nparams; i++) {
        BD_TRY(move_value(t, st->params[i], way));
        if (st->kind[i] == BD_PARAM_SGD)
            BD_TRY(move(st->moment[i], t->moment[i], param_bytes(t, i), way));
    }
    const bd_graph *g = st->g;
    for (int i = 0; st->o->bn == 0 && i < g->nnodes; i++) {
        const bd_node *n = &g->nodes[i];
        if (strcmp(n->op, "BatchNormalization") != 0)
            continue;
        for (int k = 3; k <= 4 && k < n->ninputs; k++)
            if (n->inputs[k] >= 0)
                BD_TRY(move_value(t, n->inputs[k], way));
    }
    for (int i = 0; i < st->ncb; i++) {
        gpu_codebook *c = &t->cb[i];
        BD_TRY(move(st->cb[i].master, c->master, kd_bytes(&c->lay, c->k, sizeof(float)), way));
        BD_TRY(move(st->cb[i].moment, c->moment, kd_bytes(&c->lay, c->k, sizeof(float)), way));
    }
    return BD_OK;
}

static bd_status gpu_store(void *ctx) { return move_all(ctx, TO_HOST); }
static bd_status gpu_load(void *ctx) { return move_all(ctx, TO_GPU); }

/* ---- start ------------------------------------------------------------------------------ */

static bd_status codebook_init(gpu_trainer *t, int i)
{
    const bd_training_state *st = t->st;
    const bd_training_codebook *tc = &st->cb[i];
    const bd_qlayer *q = &st->io->q[tc->layer];
    gpu_codebook *c = &t->cb[i];
    BD_TRY(bd_pq_layout_init(&st->layers[tc->layer], q->d, &c->lay));
    c->k = q->k;
    bd_device *dev = t->dev;
    BD_TRY(bd_dev_alloc(dev, kd_bytes(&c->lay, c->k, sizeof(float)), (void **)&c->master));
    BD_TRY(bd_dev_alloc(dev, kd_bytes(&c->lay, c->k, sizeof(float)), (void **)&c->moment));
    BD_TRY(bd_dev_alloc(dev, kd_bytes(&c->lay, c->k, sizeof(float)), (void **)&c->cgrad));
    BD_TRY(bd_dev_alloc(dev, kd_bytes(&c->lay, c->k, sizeof(double)), (void **)&c->sums));
    BD_TRY(bd_dev_alloc(dev, (size_t)c->k * sizeof(unsigned long long), (void **)&c->counts));
    BD_TRY(bd_dev_alloc(dev, (size_t)c->lay.n * sizeof(int32_t), (void **)&c->codes));
    BD_TRY(bd_cu_upload(c->codes, q->codes, (size_t)c->lay.n * sizeof(int32_t)));
    if (c->lay.transposed)
        BD_TRY(bd_dev_alloc(dev, (size_t)(c->lay.n * c->lay.d) * sizeof(float), (void **)&c->sub));
    return BD_OK;
}

static bd_status trainer_init(gpu_trainer *t)
{
    const bd_training_state *st = t->st;
    const bd_training_options *o = st->o;
    t->nz = calloc((size_t)st->nlayers + 1, sizeof *t->nz);
    t->cb = calloc((size_t)st->ncb + 1, sizeof *t->cb);
    t->moment = calloc((size_t)st->nparams + 1, sizeof *t->moment);
    t->host_labels = malloc((size_t)t->batch * sizeof *t->host_labels);
    t->host_hit = malloc((size_t)t->batch * sizeof *t->host_hit);
    t->host_rows = malloc((size_t)t->batch * sizeof *t->host_rows);
    if (!t->nz || !t->cb || !t->moment || !t->host_labels || !t->host_hit || !t->host_rows)
        return bd_fail(BD_ENOMEM, "out of memory");
    if (o->loss == BD_LOSS_KL)
        BD_TRY(bd_cuda_dexec_new(t->dev, bd_exec_graph(st->io->teacher), &t->teacher));
    if (o->noise.kind != BD_NOISE_NONE)
        BD_TRY(bd_noise_new(&t->noise, st->g, st->layers, st->nlayers, st->plan, &o->noise));
    for (int l = 0; t->noise && l < st->nlayers; l++)
        if (bd_noise_block(t->noise, l) > 0)
            BD_TRY(noised_init(t, &t->nz[t->nnoised++], l));
    for (int i = 0; i < st->ncb; i++)
        BD_TRY(codebook_init(t, i));
    bd_train_options to = {.bn_train = o->bn == 0, .bn_momentum = o->bn_momentum,
                           .bn_sync = !o->bn_local};
    BD_TRY(bd_dtrain_new(t->dev, st->g, st->params, st->nparams, &to, &t->tr));
    for (int i = 0; i < st->nparams; i++)
        if (st->kind[i] == BD_PARAM_SGD)
            BD_TRY(bd_dev_alloc(t->dev, param_bytes(t, i), (void **)&t->moment[i]));
    BD_TRY(bd_dev_alloc(t->dev, (size_t)t->batch * sizeof(int32_t), (void **)&t->labels));
    BD_TRY(bd_dev_alloc(t->dev, (size_t)t->batch * sizeof(int32_t), (void **)&t->hit));
    BD_TRY(bd_dev_alloc(t->dev, (size_t)t->batch * sizeof(double), (void **)&t->rows));
    /* the state's momentum and codebooks: zero, or a resumed run's */
    return move_all(t, TO_GPU);
}

bd_status bd_cuda_device_training_start(void *arg, const bd_training_state *st,
                                        bd_training_engine *eng)
{
    bd_device *dev = arg;
    if (st->io->hook)
        return bd_fail(BD_EINVAL, "train: the GPU's steps take no weight hook (BitPruning's "
                                  "learned bit lengths train on the CPU)");
    BD_TRY(bd_dev_enter(dev));
    gpu_trainer *t = calloc(1, sizeof *t);
    if (!t)
        return bd_fail(BD_ENOMEM, "out of memory");
    t->dev = dev;
    t->st = st;
    t->batch = st->o->batch;
    bd_status s = trainer_init(t);
    if (s != BD_OK) {
        trainer_free(t);
        return s;
    }
    *eng = (bd_training_engine){.ctx = t, .step = gpu_step, .store = gpu_store,
                                .load = gpu_load, .free = trainer_free};
    return BD_OK;
}
