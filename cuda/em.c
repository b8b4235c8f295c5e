/* EM on the GPU: the engine bd_pq_fit_on drives (pq.h). The subvectors
 * and S = sub G stay on the GPU for the whole fit; an E-step uploads the
 * centroids, scores chunks of rows with one GEMM each, takes each row's
 * argmin there and brings the assignments back (the host's repair of empty
 * clusters and objective read them); an M-step sums the subvectors by
 * cluster in double there and brings k x d sums back. */
#include <stdlib.h>
#include <string.h>

#include "dev.h"

typedef struct gpu_em {
    bd_device *dev;
    int64_t n;
    int d;
    int k;           /* what the per-k buffers hold, 0: none yet */
    int64_t chunk;   /* rows scored per GEMM */
    float *sub, *gf, *sg;            /* n x d, d x d, n x d */
    float *cent, *cg, *cgc, *scores; /* k x d, k x d, k, chunk x k */
    int32_t *assign;                 /* n */
    double *sums;                    /* k x d */
    unsigned long long *counts;      /* k */
    int32_t *fresh;                  /* host: the E-step's assignments */
    unsigned long long *host_counts; /* host */
} gpu_em;

/* Scores of at most 64 Mi floats (256 MiB) per GEMM. */
enum { SCORE_BUDGET = 64 << 20 };

static void release(gpu_em *e, void **p, size_t bytes)
{
    bd_dev_release(e->dev, *p, bytes);
    *p = NULL;
}

static void free_per_k(gpu_em *e)
{
    const size_t k = (size_t)e->k, d = (size_t)e->d;
    release(e, (void **)&e->cent, k * d * sizeof(float));
    release(e, (void **)&e->cg, k * d * sizeof(float));
    release(e, (void **)&e->cgc, k * sizeof(float));
    release(e, (void **)&e->scores, (size_t)e->chunk * k * sizeof(float));
    release(e, (void **)&e->sums, k * d * sizeof(double));
    release(e, (void **)&e->counts, k * sizeof(unsigned long long));
    free(e->host_counts);
    e->host_counts = NULL;
    e->k = 0;
}

static void em_free(gpu_em *e)
{
    const size_t n = (size_t)e->n, d = (size_t)e->d;
    free_per_k(e);
    release(e, (void **)&e->sub, n * d * sizeof(float));
    release(e, (void **)&e->sg, n * d * sizeof(float));
    release(e, (void **)&e->gf, d * d * sizeof(float));
    release(e, (void **)&e->assign, n * sizeof(int32_t));
    free(e->fresh);
}

/* The buffers whose size depends on k. */
static bd_status per_k(gpu_em *e, int k)
{
    if (e->k == k)
        return BD_OK;
    free_per_k(e);
    const size_t d = (size_t)e->d;
    e->chunk = SCORE_BUDGET / k;
    if (e->chunk < 1)
        e->chunk = 1;
    if (e->chunk > e->n)
        e->chunk = e->n;
    e->k = k;
    bd_status s = bd_dev_alloc(e->dev, (size_t)k * d * sizeof(float), (void **)&e->cent);
    if (s == BD_OK)
        s = bd_dev_alloc(e->dev, (size_t)k * d * sizeof(float), (void **)&e->cg);
    if (s == BD_OK)
        s = bd_dev_alloc(e->dev, (size_t)k * sizeof(float), (void **)&e->cgc);
    if (s == BD_OK)
        s = bd_dev_alloc(e->dev, (size_t)e->chunk * (size_t)k * sizeof(float),
                         (void **)&e->scores);
    if (s == BD_OK)
        s = bd_dev_alloc(e->dev, (size_t)k * d * sizeof(double), (void **)&e->sums);
    if (s == BD_OK)
        s = bd_dev_alloc(e->dev, (size_t)k * sizeof(unsigned long long), (void **)&e->counts);
    if (s == BD_OK && !(e->host_counts = malloc((size_t)k * sizeof *e->host_counts)))
        s = bd_fail(BD_ENOMEM, "out of memory");
    if (s != BD_OK)
        free_per_k(e);
    return s;
}

/* The E-step of pq.c's estep_run: argmin_c c^T G c - 2 (G w)^T c. */
static bd_status gpu_assign(void *ctx, const float *centroids, int k, int32_t *assign,
                            int64_t *changed)
{
    gpu_em *e = ctx;
    const int d = e->d;
    *changed = 0;
    BD_TRY(per_k(e, k));
    BD_TRY(bd_cu_upload(e->cent, centroids, (size_t)k * (size_t)d * sizeof(float)));
    /* cg = C G; cgc[c] = c^T G c */
    BD_TRY(bd_cu_gemm(e->dev->blas, 0, 0, k, d, d, 1.0f, e->cent, d, 0, e->gf, d, 0, 0.0f, e->cg,
                      d, 0, 1));
    BD_TRY(bd_cu_center_terms(e->cent, e->cg, k, d, e->cgc));
    for (int64_t i0 = 0; i0 < e->n; i0 += e->chunk) {
        const int64_t rows = e->n - i0 < e->chunk ? e->n - i0 : e->chunk;
        /* scores = -2 S C^T, then each row's argmin of scores + cgc */
        BD_TRY(bd_cu_gemm(e->dev->blas, 0, 1, rows, k, d, -2.0f, e->sg + i0 * d, d, 0, e->cent,
                          d, 0, 0.0f, e->scores, k, 0, 1));
        BD_TRY(bd_cu_argmin(e->scores, e->cgc, rows, k, e->assign + i0));
    }
    BD_TRY(bd_cu_download(e->fresh, e->assign, (size_t)e->n * sizeof *e->fresh));
    for (int64_t i = 0; i < e->n; i++)
        if (assign[i] != e->fresh[i]) {
            assign[i] = e->fresh[i];
            (*changed)++;
        }
    return BD_OK;
}

static bd_status gpu_sums(void *ctx, const int32_t *assign, int k, double *sums, int64_t *counts)
{
    gpu_em *e = ctx;
    BD_TRY(per_k(e, k));
    /* the host's assignments: the repair of empty clusters may follow the E-step */
    BD_TRY(bd_cu_upload(e->assign, assign, (size_t)e->n * sizeof *assign));
    BD_TRY(bd_cu_cluster_sums(e->sub, e->assign, e->n, e->d, k, e->sums, e->counts));
    BD_TRY(bd_cu_download(sums, e->sums, (size_t)k * (size_t)e->d * sizeof *sums));
    BD_TRY(bd_cu_download(e->host_counts, e->counts, (size_t)k * sizeof *e->host_counts));
    for (int c = 0; c < k; c++)
        counts[c] = (int64_t)e->host_counts[c];
    return BD_OK;
}

/* Uploads the subvectors and G, and computes S = sub G once. */
static bd_status em_init(gpu_em *e, bd_device *dev, const float *sub, int64_t n,
                         const bd_gram *gr)
{
    memset(e, 0, sizeof *e);
    e->dev = dev;
    e->n = n;
    e->d = (int)gr->d;
    const size_t d = (size_t)e->d;
    float *gf = malloc(d * d * sizeof *gf);
    e->fresh = malloc((size_t)n * sizeof *e->fresh + 1);
    bd_status s = gf && e->fresh ? BD_OK : bd_fail(BD_ENOMEM, "out of memory");
    for (size_t i = 0; s == BD_OK && i < d * d; i++)
        gf[i] = (float)gr->g[i];
    if (s == BD_OK)
        s = bd_dev_alloc(dev, (size_t)n * d * sizeof(float), (void **)&e->sub);
    if (s == BD_OK)
        s = bd_dev_alloc(dev, (size_t)n * d * sizeof(float), (void **)&e->sg);
    if (s == BD_OK)
        s = bd_dev_alloc(dev, d * d * sizeof(float), (void **)&e->gf);
    if (s == BD_OK)
        s = bd_dev_alloc(dev, (size_t)n * sizeof(int32_t), (void **)&e->assign);
    if (s == BD_OK)
        s = bd_cu_upload(e->sub, sub, (size_t)n * d * sizeof(float));
    if (s == BD_OK)
        s = bd_cu_upload(e->gf, gf, d * d * sizeof(float));
    if (s == BD_OK)
        s = bd_cu_gemm(dev->blas, 0, 0, n, e->d, e->d, 1.0f, e->sub, e->d, 0, e->gf, e->d, 0, 0.0f,
                       e->sg, e->d, 0, 1);
    free(gf);
    if (s != BD_OK)
        em_free(e);
    return s;
}

bd_status bd_cuda_device_pq_fit(bd_device *dev, const float *sub, int64_t n, const bd_gram *gr,
                                const bd_pq_options *opt, const bd_progress *progress,
                                bd_pq_result *res)
{
    memset(res, 0, sizeof *res);
    BD_TRY(bd_dev_enter(dev));
    gpu_em e;
    BD_TRY(em_init(&e, dev, sub, n, gr));
    bd_pq_engine eng = {&e, gpu_assign, gpu_sums};
    bd_status s = bd_pq_fit_on(&eng, sub, n, gr, opt, progress, res);
    em_free(&e);
    return s;
}
