/* Fine-tuning on the GPU: the engine bd_finetune_with drives (finetune.h).
 * A step uploads the batch and brings back one double per image (the
 * loss); everything else stays on the GPU: the student's forward and
 * backward (train.c), the teacher's forward (exec.c), the loss and its
 * gradient, each layer's centroid gradient (its weight gradient summed by
 * code and divided by the member counts, as bd_qlayer_tuned_gradient), SGD
 * on the float32 centroids and the decoding of the layer's weight into the
 * trainer's copy, which the next step reads. The host's graph learns the
 * tuned values at the end (finish, values). PQ layers only: the workspace
 * tunes int layers on the CPU. */
#include <stdlib.h>
#include <string.h>

#include "dev.h"

typedef struct gpu_layer {
    bd_pq_layout lay;
    int k;
    int weight;                   /* value id */
    float *master, *moment;       /* k x d: the centroids being tuned, their momentum */
    float *cgrad, *sub;           /* k x d; n x d (a transposed weight's gradient, gathered) */
    int32_t *codes;               /* n */
    double *sums;                 /* k x d */
    unsigned long long *counts;   /* k */
} gpu_layer;

typedef struct gpu_tuner {
    bd_device *dev;
    bd_graph *student;
    bd_dexec *teacher;
    bd_finetune_options opt;
    bd_dtrain *tr;
    int nlayers, nparams; /* layer weights first, then the extra parameters */
    int *params;
    gpu_layer *layers;
    float **moment; /* per extra parameter (index nlayers..nparams-1) */
    int batch;
    int32_t *labels, *host_labels; /* batch */
    double *rows, *host_rows;      /* batch: each image's loss */
} gpu_tuner;

/* Sizes of what a layer keeps on the GPU. */
static size_t kd_bytes(const gpu_layer *l, size_t elem)
{
    return (size_t)l->k * (size_t)l->lay.d * elem;
}

static void layer_free(bd_device *dev, gpu_layer *l)
{
    bd_dev_release(dev, l->master, kd_bytes(l, sizeof(float)));
    bd_dev_release(dev, l->moment, kd_bytes(l, sizeof(float)));
    bd_dev_release(dev, l->cgrad, kd_bytes(l, sizeof(float)));
    bd_dev_release(dev, l->sums, kd_bytes(l, sizeof(double)));
    bd_dev_release(dev, l->counts, (size_t)l->k * sizeof(unsigned long long));
    bd_dev_release(dev, l->codes, (size_t)l->lay.n * sizeof(int32_t));
    bd_dev_release(dev, l->sub, (size_t)(l->lay.n * l->lay.d) * sizeof(float));
}

static void tuner_free(void *ctx)
{
    gpu_tuner *t = ctx;
    bd_dev_enter(t->dev);
    for (int i = 0; t->layers && i < t->nlayers; i++)
        layer_free(t->dev, &t->layers[i]);
    for (int i = t->nlayers; t->moment && t->params && i < t->nparams; i++)
        bd_dev_release(t->dev, t->moment[i],
                       (size_t)bd_tensor_count(t->student->values[t->params[i]].init) *
                           sizeof(float));
    bd_dev_release(t->dev, t->labels, (size_t)t->batch * sizeof(int32_t));
    bd_dev_release(t->dev, t->rows, (size_t)t->batch * sizeof(double));
    bd_dtrain_free(t->tr);
    free(t->layers);
    free(t->moment);
    free(t->params);
    free(t->host_labels);
    free(t->host_rows);
    free(t);
}

/* GPU memory of `bytes`, zeroed, or holding `from` (bytes of host memory). */
static bd_status gpu_buffer(bd_device *dev, size_t bytes, const void *from, void **p)
{
    BD_TRY(bd_dev_alloc(dev, bytes, p));
    return from ? bd_cu_upload(*p, from, bytes) : bd_cu_zero(*p, bytes);
}

static bd_status layer_init(gpu_tuner *t, gpu_layer *gl, const bd_layer *l, const bd_qlayer *q)
{
    if (q->k <= 0)
        return bd_fail(BD_EINVAL, "layer '%s' is not quantized: nothing to tune", l->name);
    BD_TRY(bd_pq_layout_init(l, q->d, &gl->lay));
    gl->k = q->k;
    gl->weight = l->weight;
    bd_device *dev = t->dev;
    bd_status s = gpu_buffer(dev, kd_bytes(gl, sizeof(float)), q->centroids, (void **)&gl->master);
    if (s == BD_OK)
        s = gpu_buffer(dev, kd_bytes(gl, sizeof(float)), NULL, (void **)&gl->moment);
    if (s == BD_OK)
        s = bd_dev_alloc(dev, kd_bytes(gl, sizeof(float)), (void **)&gl->cgrad);
    if (s == BD_OK)
        s = bd_dev_alloc(dev, kd_bytes(gl, sizeof(double)), (void **)&gl->sums);
    if (s == BD_OK)
        s = bd_dev_alloc(dev, (size_t)gl->k * sizeof(unsigned long long), (void **)&gl->counts);
    if (s == BD_OK)
        s = gpu_buffer(dev, (size_t)gl->lay.n * sizeof(int32_t), q->codes, (void **)&gl->codes);
    if (s == BD_OK && gl->lay.transposed)
        s = bd_dev_alloc(dev, (size_t)(gl->lay.n * gl->lay.d) * sizeof(float), (void **)&gl->sub);
    return s;
}

/* One SGD step: finetune.c's cpu_step, on the GPU (in a job, on this
 * rank's share of the global batch, the gradients summed over the ranks). */
static bd_status gpu_step(void *ctx, const bd_tensor *x, const int *labels, float lr,
                          double *loss)
{
    gpu_tuner *t = ctx;
    const bd_finetune_options *opt = &t->opt;
    BD_TRY(bd_dev_enter(t->dev));
    bd_dt *xd = NULL, *target = NULL, *dlogits = NULL;
    const bd_dt *logits = NULL;
    bd_dt **grads = calloc((size_t)t->nparams + 1, sizeof *grads);
    bd_status s = grads ? bd_dt_upload(t->dev, x, &xd) : bd_fail(BD_ENOMEM, "out of memory");
    if (s == BD_OK)
        s = bd_dtrain_forward(t->tr, xd, &logits);
    if (s == BD_OK && (logits->ndim != 2 || logits->dims[0] < 1 || logits->dims[0] > t->batch))
        s = bd_fail(BD_EINVAL, "the model's output is not [batch, classes] logits");
    const int64_t n = s == BD_OK ? logits->dims[0] : 0, c = s == BD_OK ? logits->dims[1] : 0;
    if (s == BD_OK && opt->loss == BD_LOSS_KL) {
        s = bd_dexec_forward(t->teacher, xd, &target);
        if (s == BD_OK && (target->ndim != 2 || target->dims[0] != n || target->dims[1] != c))
            s = bd_fail(BD_EINVAL, "KL loss: the teacher's logits differ in shape from the "
                                   "student's");
    } else if (s == BD_OK) {
        s = bd_loss_check_labels(labels, n, c);
        for (int64_t i = 0; s == BD_OK && i < n; i++)
            t->host_labels[i] = labels[i];
        if (s == BD_OK)
            s = bd_cu_upload(t->labels, t->host_labels, (size_t)n * sizeof *t->labels);
    }
    if (s == BD_OK)
        s = bd_dt_new(t->dev, 2, logits->dims, &dlogits);
    if (s == BD_OK)
        s = opt->loss == BD_LOSS_KL
                ? bd_cu_loss_kl(logits->data, target->data, n, c, t->rows, dlogits->data)
                : bd_cu_loss_ce(logits->data, t->labels, n, c, 0, t->rows, dlogits->data);
    if (s == BD_OK)
        s = bd_cu_download(t->host_rows, t->rows, (size_t)n * sizeof *t->host_rows);
    if (s == BD_OK) { /* summed in order, as loss.c's total() */
        double sum = 0;
        for (int64_t i = 0; i < n; i++)
            sum += t->host_rows[i];
        *loss = sum / (double)n;
        s = bd_dev_share_loss(dlogits, loss, opt->batch);
    }
    if (s == BD_OK)
        s = bd_dtrain_backward(t->tr, dlogits, grads);
    if (s == BD_OK)
        s = bd_dev_sum_grads(grads, t->nparams);
    for (int i = 0; s == BD_OK && i < t->nlayers; i++) {
        gpu_layer *l = &t->layers[i];
        const bd_pq_layout *lay = &l->lay;
        const float *sub = grads[i]->data;
        if (lay->transposed) {
            s = bd_cu_pq_gather(grads[i]->data, lay->rows, lay->row_len, 1, l->sub);
            sub = l->sub;
        }
        if (s == BD_OK)
            s = bd_cu_cluster_sums(sub, l->codes, lay->n, (int)lay->d, l->k, l->sums, l->counts);
        if (s == BD_OK)
            s = bd_cu_cluster_means(l->sums, l->counts, l->k, (int)lay->d, l->cgrad);
        if (s == BD_OK)
            s = bd_cu_sgd(l->master, l->moment, l->cgrad, (int64_t)l->k * lay->d, lr,
                          opt->momentum, opt->wd);
        if (s == BD_OK)
            s = bd_cu_pq_decode(l->master, l->codes, lay->rows, lay->row_len, lay->d,
                                lay->transposed, bd_dtrain_param(t->tr, l->weight)->data);
    }
    for (int i = t->nlayers; s == BD_OK && i < t->nparams; i++) {
        bd_dt *p = bd_dtrain_param(t->tr, t->params[i]);
        /* no weight decay on biases and BatchNorm affine parameters */
        s = bd_cu_sgd(p->data, t->moment[i], grads[i]->data, bd_dt_count(p), lr, opt->momentum,
                      0);
    }
    for (int i = 0; grads && i < t->nparams; i++)
        bd_dt_free(grads[i]);
    free(grads);
    bd_dt_free(xd);
    bd_dt_free(target);
    bd_dt_free(dlogits);
    return s;
}

/* Value v's tuned contents, from the trainer's copy into the host graph. */
static bd_status bring_back(gpu_tuner *t, int v)
{
    bd_tensor *host = t->student->values[v].init;
    const bd_dt *p = bd_dtrain_param(t->tr, v);
    if (!host || !p)
        return BD_OK;
    return bd_cu_download(host->data, p->data, bd_tensor_nbytes(host));
}

/* The extra parameters (tune_bias) and, in train mode, BatchNorm's running
 * statistics. */
static bd_status gpu_finish(void *ctx)
{
    gpu_tuner *t = ctx;
    BD_TRY(bd_dev_enter(t->dev));
    for (int i = t->nlayers; i < t->nparams; i++)
        BD_TRY(bring_back(t, t->params[i]));
    const bd_graph *g = t->student;
    for (int i = 0; t->opt.bn_train && i < g->nnodes; i++) {
        const bd_node *n = &g->nodes[i];
        if (strcmp(n->op, "BatchNormalization") != 0)
            continue;
        for (int k = 3; k <= 4 && k < n->ninputs; k++)
            if (n->inputs[k] >= 0)
                BD_TRY(bring_back(t, n->inputs[k]));
    }
    return BD_OK;
}

static bd_status gpu_values(void *ctx, int i, float *out)
{
    gpu_tuner *t = ctx;
    BD_TRY(bd_dev_enter(t->dev));
    const gpu_layer *l = &t->layers[i];
    return bd_cu_download(out, l->master, kd_bytes(l, sizeof(float)));
}

typedef struct gpu_args {
    bd_device *dev;
    bd_dexec *teacher;
} gpu_args;

static bd_status gpu_start(void *arg, bd_graph *student, const bd_layer *layers,
                           const bd_qlayer *q, int n, const bd_finetune_options *opt,
                           bd_tune_engine *eng)
{
    const gpu_args *a = arg;
    gpu_tuner *t = calloc(1, sizeof *t);
    if (!t)
        return bd_fail(BD_ENOMEM, "out of memory");
    *t = (gpu_tuner){.dev = a->dev, .student = student, .teacher = a->teacher, .opt = *opt,
                     .nlayers = n, .batch = opt->batch};
    int *extra = NULL, nextra = 0;
    bd_status s = opt->tune_bias ? bd_finetune_extra_params(student, layers, n, &extra, &nextra)
                                 : BD_OK;
    t->nparams = n + nextra;
    if (s == BD_OK) {
        t->params = malloc((size_t)t->nparams * sizeof *t->params + 1);
        t->layers = calloc((size_t)n + 1, sizeof *t->layers);
        t->moment = calloc((size_t)t->nparams + 1, sizeof *t->moment);
        t->host_labels = malloc((size_t)t->batch * sizeof *t->host_labels + 1);
        t->host_rows = malloc((size_t)t->batch * sizeof *t->host_rows + 1);
        if (!t->params || !t->layers || !t->moment || !t->host_labels || !t->host_rows)
            s = bd_fail(BD_ENOMEM, "out of memory");
    }
    for (int i = 0; s == BD_OK && i < t->nparams; i++)
        t->params[i] = i < n ? layers[i].weight : extra[i - n];
    free(extra);
    for (int i = 0; s == BD_OK && i < n; i++)
        s = layer_init(t, &t->layers[i], &layers[i], &q[i]);
    /* BatchNorm's statistics over the job's global batch, as finetune.c's */
    bd_train_options to = {.bn_train = opt->bn_train, .bn_sync = 1};
    if (s == BD_OK)
        s = bd_dtrain_new(t->dev, student, t->params, t->nparams, &to, &t->tr);
    for (int i = n; s == BD_OK && i < t->nparams; i++)
        s = gpu_buffer(t->dev,
                       (size_t)bd_tensor_count(student->values[t->params[i]].init) * sizeof(float),
                       NULL, (void **)&t->moment[i]);
    if (s == BD_OK)
        s = bd_dev_alloc(t->dev, (size_t)t->batch * sizeof(int32_t), (void **)&t->labels);
    if (s == BD_OK)
        s = bd_dev_alloc(t->dev, (size_t)t->batch * sizeof(double), (void **)&t->rows);
    if (s != BD_OK) {
        tuner_free(t);
        return s;
    }
    *eng = (bd_tune_engine){t, gpu_step, gpu_finish, gpu_values, tuner_free};
    return BD_OK;
}

bd_status bd_cuda_device_finetune(bd_device *dev, bd_graph *student, bd_dexec *teacher,
                                  const bd_layer *layers, bd_qlayer *q, int n,
                                  const bd_dataset *data, const bd_finetune_options *opt,
                                  const bd_progress *progress, bd_finetune_report *report)
{
    memset(report, 0, sizeof *report);
    BD_TRY(bd_dev_enter(dev));
    gpu_args a = {dev, teacher};
    return bd_finetune_with(gpu_start, &a, student, layers, q, n, data, opt, progress, report);
}
