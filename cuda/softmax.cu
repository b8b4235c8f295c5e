/* Softmax and LogSoftmax over rows (bd_softmax_rows' layout), their
 * backward passes, and the two losses: one thread per row, each row's
 * arithmetic as the CPU's (norm.c, grad_norm.c, loss.c). */
#include <math.h>

#include "common.cuh"

static __global__ void softmax_kernel(const float *x, int64_t outer, int64_t len, int64_t inner,
                                      int log_form, float *y)
{
    CU_FOR(r, outer * inner)
    {
        const int64_t base = r / inner * len * inner + r % inner;
        const float *xr = x + base;
        float *yr = y + base;
        float max = -INFINITY;
        for (int64_t j = 0; j < len; j++)
            if (xr[j * inner] > max)
                max = xr[j * inner];
        double sum = 0;
        for (int64_t j = 0; j < len; j++) {
            float e = expf(xr[j * inner] - max);
            sum += e;
            if (!log_form)
                yr[j * inner] = e;
        }
        if (log_form) {
            float shift = max + (float)log(sum);
            for (int64_t j = 0; j < len; j++)
                yr[j * inner] = xr[j * inner] - shift;
        } else {
            float scale = (float)(1 / sum);
            for (int64_t j = 0; j < len; j++)
                yr[j * inner] *= scale;
        }
    }
}

extern "C" bd_status bd_cu_softmax(const float *x, int64_t outer, int64_t len, int64_t inner,
                                   int log_form, float *y)
{
    if (outer * inner <= 0 || len <= 0)
        return BD_OK;
    softmax_kernel<<<cu_blocks(outer * inner), CU_THREADS>>>(x, outer, len, inner, log_form, y);
    return cu_launched(log_form ? "LogSoftmax" : "Softmax");
}

/* Softmax: dx = y (dy - sum dy y); LogSoftmax: dx = dy - exp(y) sum dy. */
static __global__ void softmax_backward_kernel(const float *y, const float *dy, int64_t outer,
                                               int64_t len, int64_t inner, int log_form,
                                               float *dx)
{
    CU_FOR(r, outer * inner)
    {
        const int64_t base = r / inner * len * inner + r % inner;
        const float *yr = y + base, *d = dy + base;
        float *o = dx + base;
        double s = 0;
        for (int64_t j = 0; j < len; j++)
            s += log_form ? d[j * inner] : (double)d[j * inner] * yr[j * inner];
        for (int64_t j = 0; j < len; j++) {
            const int64_t at = j * inner;
            o[at] = log_form ? (float)(d[at] - exp(yr[at]) * s) : (float)(yr[at] * (d[at] - s));
        }
    }
}

extern "C" bd_status bd_cu_softmax_backward(const float *y, const float *dy, int64_t outer,
                                            int64_t len, int64_t inner, int log_form, float *dx)
{
    if (outer * inner <= 0 || len <= 0)
        return BD_OK;
    softmax_backward_kernel<<<cu_blocks(outer * inner), CU_THREADS>>>(y, dy, outer, len, inner,
                                                                      log_form, dx);
    return cu_launched(log_form ? "LogSoftmax's backward" : "Softmax's backward");
}

/* log sum exp of a row, from its maximum (loss.c's row_lse). */
static __device__ double row_lse(const float *x, int64_t len)
{
    float max = -INFINITY;
    for (int64_t j = 0; j < len; j++)
        if (x[j] > max)
            max = x[j];
    double sum = 0;
    for (int64_t j = 0; j < len; j++)
        sum += exp((double)x[j] - max);
    return max + log(sum);
}

static __global__ void loss_kl_kernel(const float *sv, const float *tv, int64_t n, int64_t c,
                                      double *rows, float *g)
{
    CU_FOR(i, n)
    {
        const float *s = sv + i * c, *t = tv + i * c;
        const double ls = row_lse(s, c), lt = row_lse(t, c);
        double kl = 0;
        for (int64_t j = 0; j < c; j++) {
            const double log_ps = s[j] - ls, log_pt = t[j] - lt, pt = exp(log_pt);
            if (pt > 0) /* p log p -> 0 as p -> 0 */
                kl += pt * (log_pt - log_ps);
            if (g)
                g[i * c + j] = (float)((exp(log_ps) - pt) / (double)n);
        }
        rows[i] = kl;
    }
}

extern "C" bd_status bd_cu_loss_kl(const float *student, const float *teacher, int64_t n,
                                   int64_t c, double *rows, float *dlogits)
{
    if (n <= 0)
        return BD_OK;
    loss_kl_kernel<<<cu_blocks(n), CU_THREADS>>>(student, teacher, n, c, rows, dlogits);
    return cu_launched("the KL loss");
}

static __global__ void loss_ce_kernel(const float *xv, const int32_t *labels, int64_t n,
                                      int64_t c, double smoothing, double *rows, float *g)
{
    /* the target is (1 - s) one-hot + s / c, PyTorch's label smoothing */
    const double spread = smoothing / (double)c, hit = 1 - smoothing + spread;
    CU_FOR(i, n)
    {
        const float *x = xv + i * c;
        const double lse = row_lse(x, c);
        double mean = 0;
        for (int64_t j = 0; smoothing > 0 && j < c; j++)
            mean += x[j];
        rows[i] = (1 - smoothing) * (lse - x[labels[i]]) + smoothing * (lse - mean / (double)c);
        for (int64_t j = 0; g && j < c; j++)
            g[i * c + j] = (float)((exp(x[j] - lse) - (j == labels[i] ? hit : spread)) / (double)n);
    }
}

extern "C" bd_status bd_cu_loss_ce(const float *logits, const int32_t *labels, int64_t n,
                                   int64_t c, double smoothing, double *rows, float *dlogits)
{
    if (n <= 0)
        return BD_OK;
    loss_ce_kernel<<<cu_blocks(n), CU_THREADS>>>(logits, labels, n, c, smoothing, rows, dlogits);
    return cu_launched("the cross-entropy loss");
}
