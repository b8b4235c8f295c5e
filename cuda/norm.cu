/* BatchNormalization, with x read as [n][c][s]: the frozen (inference)
 * coefficients, the batch statistics of the training forward, their
 * application, the backward and the running statistics' update. Each
 * per-channel sum is one block's, in double, as grad_norm.c sums. */
#include <math.h>

#include "common.cuh"

static __global__ void bn_frozen_kernel(int64_t c, const float *scale, const float *bias,
                                        const float *mean, const float *var, float eps, float *ab)
{
    CU_FOR(ch, c)
    {
        float a = scale[ch] / sqrtf(var[ch] + eps);
        ab[ch] = a;
        ab[c + ch] = bias[ch] - mean[ch] * a;
    }
}

extern "C" bd_status bd_cu_bn_frozen(int64_t c, const float *scale, const float *bias,
                                     const float *mean, const float *var, float eps, float *ab)
{
    if (c <= 0)
        return BD_OK;
    bn_frozen_kernel<<<cu_blocks(c), CU_THREADS>>>(c, scale, bias, mean, var, eps, ab);
    return cu_launched("BatchNormalization's coefficients");
}

/* One block per channel: the mean, then the mean of squared deviations. */
static __global__ void bn_batch_kernel(const float *x, int64_t n, int64_t c, int64_t s,
                                       const float *scale, const float *bias, double eps,
                                       float *mean, float *var, float *ab)
{
    const int64_t ch = blockIdx.x, per = n * s;
    double sum = 0;
    for (int64_t e = threadIdx.x; e < per; e += blockDim.x)
        sum += x[(e / s * c + ch) * s + e % s];
    const double mu = cu_block_sum(sum) / (double)per;
    double sq = 0;
    for (int64_t e = threadIdx.x; e < per; e += blockDim.x) {
        const double dev = x[(e / s * c + ch) * s + e % s] - mu;
        sq += dev * dev;
    }
    const double v = cu_block_sum(sq) / (double)per;
    if (threadIdx.x == 0) {
        const double k = scale[ch] / sqrt(v + eps);
        mean[ch] = (float)mu;
        var[ch] = (float)v;
        ab[ch] = (float)k;
        ab[c + ch] = (float)(bias[ch] - mu * k);
    }
}

extern "C" bd_status bd_cu_bn_batch(const float *x, int64_t n, int64_t c, int64_t s,
                                    const float *scale, const float *bias, double eps,
                                    float *mean, float *var, float *ab)
{
    if (c <= 0)
        return BD_OK;
    if (c > 0x7fffffff)
        return bd_fail(BD_EUNSUPPORTED, "BatchNormalization: %lld channels", (long long)c);
    bn_batch_kernel<<<(unsigned)c, CU_THREADS>>>(x, n, c, s, scale, bias, eps, mean, var, ab);
    return cu_launched("BatchNormalization's batch statistics");
}

static __global__ void bn_apply_kernel(const float *x, int64_t n, int64_t c, int64_t s,
                                       const float *ab, float *y)
{
    CU_FOR(e, n * c * s)
    {
        const int64_t ch = e / s % c;
        y[e] = x[e] * ab[ch] + ab[c + ch];
    }
}

extern "C" bd_status bd_cu_bn_apply(const float *x, int64_t n, int64_t c, int64_t s,
                                    const float *ab, float *y)
{
    if (n * c * s <= 0)
        return BD_OK;
    bn_apply_kernel<<<cu_blocks(n * c * s), CU_THREADS>>>(x, n, c, s, ab, y);
    return cu_launched("BatchNormalization");
}

/* grad_norm.c's backward: per channel, sdy = sum dy and sdyx = sum dy xhat;
 * dscale = sdyx, dbias = sdy, and dx = k dy + kx (x - mean) + k0 with
 * k = scale rstd and, on batch statistics, kx = -k rstd sdyx / M,
 * k0 = -k sdy / M (else both 0). One block per channel. */
static __global__ void bn_backward_kernel(const float *x, const float *dy, int64_t n, int64_t c,
                                          int64_t s, const float *scale, const float *mean,
                                          const float *var, double eps, int train, float *dx,
                                          float *dscale, float *dbias)
{
    const int64_t ch = blockIdx.x, per = n * s;
    const double mu = mean[ch], rstd = 1 / sqrt(var[ch] + eps);
    double a = 0, b = 0;
    for (int64_t e = threadIdx.x; e < per; e += blockDim.x) {
        const int64_t at = (e / s * c + ch) * s + e % s;
        a += dy[at];
        b += dy[at] * (x[at] - mu);
    }
    const double sdy = cu_block_sum(a), sdyx = cu_block_sum(b) * rstd;
    if (threadIdx.x == 0) {
        if (dscale)
            dscale[ch] = (float)sdyx;
        if (dbias)
            dbias[ch] = (float)sdy;
    }
    if (!dx)
        return;
    const double k = scale[ch] * rstd;
    const double kx = train ? -k * rstd * sdyx / (double)per : 0;
    const double k0 = train ? -k * sdy / (double)per : 0;
    const float fk = (float)k, fkx = (float)kx, fk0 = (float)k0, fmu = (float)mu;
    for (int64_t e = threadIdx.x; e < per; e += blockDim.x) {
        const int64_t at = (e / s * c + ch) * s + e % s;
        dx[at] = fk * dy[at] + fkx * (x[at] - fmu) + fk0;
    }
}

extern "C" bd_status bd_cu_bn_backward(const float *x, const float *dy, int64_t n, int64_t c,
                                       int64_t s, const float *scale, const float *mean,
                                       const float *var, double eps, int train, float *dx,
                                       float *dscale, float *dbias)
{
    if (c <= 0)
        return BD_OK;
    if (c > 0x7fffffff)
        return bd_fail(BD_EUNSUPPORTED, "BatchNormalization: %lld channels", (long long)c);
    bn_backward_kernel<<<(unsigned)c, CU_THREADS>>>(x, dy, n, c, s, scale, mean, var, eps, train,
                                                    dx, dscale, dbias);
    return cu_launched("BatchNormalization's backward");
}

static __global__ void bn_running_kernel(float *rm, float *rv, const float *mean, const float *var,
                                         int64_t c, float m, double unbias)
{
    CU_FOR(ch, c)
    {
        rm[ch] = (1 - m) * rm[ch] + m * mean[ch];
        rv[ch] = (1 - m) * rv[ch] + m * (float)(var[ch] * unbias);
    }
}

extern "C" bd_status bd_cu_bn_running(float *rm, float *rv, const float *mean, const float *var,
                                      int64_t c, float momentum, double unbias)
{
    if (c <= 0)
        return BD_OK;
    bn_running_kernel<<<cu_blocks(c), CU_THREADS>>>(rm, rv, mean, var, c, momentum, unbias);
    return cu_launched("BatchNormalization's running statistics");
}
