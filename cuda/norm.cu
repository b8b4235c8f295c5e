/* BatchNormalization, with x read as [n][c][s]: the frozen (inference)
 * coefficients, the batch statistics of the training forward, their
 * application, the backward and the running statistics' update. Each
 * per-channel sum is one block's, in double, as grad_norm.c sums; the sums
 * are kernels of their own, apart from what uses them, so that the sums of
 * a job's ranks can meet in between (dist.c). */
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

/* The element of channel ch's e-th value, x read as [n][c][s]. */
static __device__ int64_t bn_at(int64_t e, int64_t ch, int64_t c, int64_t s)
{
    return (e / s * c + ch) * s + e % s;
}

/* One block per channel: its sum, or with center its sum of squares about
 * the mean center[ch] / center[c]; block 0 also writes the count. */
static __global__ void bn_sums_kernel(const float *x, int64_t n, int64_t c, int64_t s,
                                      const double *center, double *out)
{
    const int64_t ch = blockIdx.x, per = n * s;
    const double mu = center ? center[ch] / center[c] : 0;
    double sum = 0;
    for (int64_t e = threadIdx.x; e < per; e += blockDim.x) {
        const double d = x[bn_at(e, ch, c, s)] - mu;
        sum += center ? d * d : d;
    }
    sum = cu_block_sum(sum);
    if (threadIdx.x == 0) {
        out[ch] = sum;
        if (ch == 0)
            out[c] = (double)per;
    }
}

/* A kernel of one block per channel: refused beyond the grid's reach. */
static bd_status per_channel(int64_t c)
{
    if (c > 0x7fffffff)
        return bd_fail(BD_EUNSUPPORTED, "BatchNormalization: %lld channels", (long long)c);
    return BD_OK;
}

extern "C" bd_status bd_cu_bn_sums(const float *x, int64_t n, int64_t c, int64_t s,
                                   const double *center, double *out)
{
    if (c <= 0)
        return BD_OK;
    BD_TRY(per_channel(c));
    bn_sums_kernel<<<(unsigned)c, CU_THREADS>>>(x, n, c, s, center, out);
    return cu_launched("BatchNormalization's batch sums");
}

static __global__ void bn_stats_kernel(const double *sums, const double *squares, int64_t c,
                                       const float *scale, const float *bias, double eps,
                                       float *mean, float *var, float *ab)
{
    CU_FOR(ch, c)
    {
        const double mu = sums[ch] / sums[c], v = squares[ch] / squares[c];
        const double k = scale[ch] / sqrt(v + eps);
        mean[ch] = (float)mu;
        var[ch] = (float)v;
        ab[ch] = (float)k;
        ab[c + ch] = (float)(bias[ch] - mu * k);
    }
}

extern "C" bd_status bd_cu_bn_stats(const double *sums, const double *squares, int64_t c,
                                    const float *scale, const float *bias, double eps,
                                    float *mean, float *var, float *ab)
{
    if (c <= 0)
        return BD_OK;
    bn_stats_kernel<<<cu_blocks(c), CU_THREADS>>>(sums, squares, c, scale, bias, eps, mean, var,
                                                  ab);
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

/* The backward's sums, one block per channel: sum dy and sum dy (x - mean);
 * block 0 also writes the count. */
static __global__ void bn_grad_sums_kernel(const float *x, const float *dy, int64_t n, int64_t c,
                                           int64_t s, const float *mean, double *out)
{
    const int64_t ch = blockIdx.x, per = n * s;
    const double mu = mean[ch];
    double a = 0, b = 0;
    for (int64_t e = threadIdx.x; e < per; e += blockDim.x) {
        const int64_t at = bn_at(e, ch, c, s);
        a += dy[at];
        b += dy[at] * (x[at] - mu);
    }
    a = cu_block_sum(a);
    b = cu_block_sum(b);
    if (threadIdx.x == 0) {
        out[ch] = a;
        out[c + ch] = b;
        if (ch == 0)
            out[2 * c] = (double)per;
    }
}

extern "C" bd_status bd_cu_bn_grad_sums(const float *x, const float *dy, int64_t n, int64_t c,
                                        int64_t s, const float *mean, double *out)
{
    if (c <= 0)
        return BD_OK;
    BD_TRY(per_channel(c));
    bn_grad_sums_kernel<<<(unsigned)c, CU_THREADS>>>(x, dy, n, c, s, mean, out);
    return cu_launched("BatchNormalization's backward sums");
}

/* grad_norm.c's backward from the sums: dscale = sdyx, dbias = sdy (this
 * rank's), and dx = k dy + kx (x - mean) + k0 with k = scale rstd and, on
 * batch statistics, kx = -k rstd sdyx / M, k0 = -k sdy / M (the global
 * sums and count M; else both 0). One block per channel. */
static __global__ void bn_backward_kernel(const float *x, const float *dy, int64_t n, int64_t c,
                                          int64_t s, const float *scale, const float *mean,
                                          const float *var, double eps, int train,
                                          const double *local, const double *global, float *dx,
                                          float *dscale, float *dbias)
{
    const int64_t ch = blockIdx.x, per = n * s;
    const double mu = mean[ch], rstd = 1 / sqrt(var[ch] + eps);
    if (threadIdx.x == 0) {
        if (dscale)
            dscale[ch] = (float)(local[c + ch] * rstd);
        if (dbias)
            dbias[ch] = (float)local[ch];
    }
    if (!dx)
        return;
    const double sdy = global[ch], sdyx = global[c + ch] * rstd, m = global[2 * c];
    const double k = scale[ch] * rstd;
    const double kx = train ? -k * rstd * sdyx / m : 0;
    const double k0 = train ? -k * sdy / m : 0;
    const float fk = (float)k, fkx = (float)kx, fk0 = (float)k0, fmu = (float)mu;
    for (int64_t e = threadIdx.x; e < per; e += blockDim.x) {
        const int64_t at = bn_at(e, ch, c, s);
        dx[at] = fk * dy[at] + fkx * (x[at] - fmu) + fk0;
    }
}

extern "C" bd_status bd_cu_bn_backward(const float *x, const float *dy, int64_t n, int64_t c,
                                       int64_t s, const float *scale, const float *mean,
                                       const float *var, double eps, int train,
                                       const double *local, const double *global, float *dx,
                                       float *dscale, float *dbias)
{
    if (c <= 0)
        return BD_OK;
    BD_TRY(per_channel(c));
    bn_backward_kernel<<<(unsigned)c, CU_THREADS>>>(x, dy, n, c, s, scale, mean, var, eps, train,
                                                    local, global, dx, dscale, dbias);
    return cu_launched("BatchNormalization's backward");
}

static __global__ void bn_running_kernel(float *rm, float *rv, const float *mean, const float *var,
                                         int64_t c, float m, const double *count)
{
    const double unbias = *count > 1 ? *count / (*count - 1) : 1.0;
    CU_FOR(ch, c)
    {
        rm[ch] = (1 - m) * rm[ch] + m * mean[ch];
        rv[ch] = (1 - m) * rv[ch] + m * (float)(var[ch] * unbias);
    }
}

extern "C" bd_status bd_cu_bn_running(float *rm, float *rv, const float *mean, const float *var,
                                      int64_t c, float momentum, const double *count)
{
    if (c <= 0)
        return BD_OK;
    bn_running_kernel<<<cu_blocks(c), CU_THREADS>>>(rm, rv, mean, var, c, momentum, count);
    return cu_launched("BatchNormalization's running statistics");
}
