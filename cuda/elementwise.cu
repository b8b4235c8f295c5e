/* Elementwise ops: broadcasting Add and copies (numpy strides, 0 along a
 * broadcast dim), the sum back to a broadcast operand's shape, Relu, Clip,
 * their backward passes, and the optimiser's update. */
#include <math.h>

#include "common.cuh"

/* Offset of contiguous element e of s->dims read with s->strides. */
static __device__ int64_t strided_offset(const bd_cu_strided &s, int64_t e)
{
    int64_t off = 0;
    for (int d = s.ndim - 1; d >= 0; d--) {
        off += e % s.dims[d] * s.strides[d];
        e /= s.dims[d];
    }
    return off;
}

static int64_t count_of(const bd_cu_strided *s)
{
    int64_t n = 1;
    for (int d = 0; d < s->ndim; d++)
        n *= s->dims[d];
    return n;
}

static __global__ void add_kernel(bd_cu_strided a, const float *x, bd_cu_strided b, const float *y,
                                  int64_t n, float *out)
{
    CU_FOR(e, n)
    out[e] = x[strided_offset(a, e)] + y[strided_offset(b, e)];
}

extern "C" bd_status bd_cu_add(const bd_cu_strided *a, const float *x, const bd_cu_strided *b,
                               const float *y, float *out)
{
    const int64_t n = count_of(a);
    if (n <= 0)
        return BD_OK;
    add_kernel<<<cu_blocks(n), CU_THREADS>>>(*a, x, *b, y, n, out);
    return cu_launched("Add");
}

static __global__ void broadcast_kernel(bd_cu_strided s, const float *src, float scale, int64_t n,
                                        float *out)
{
    CU_FOR(e, n)
    out[e] = scale * src[strided_offset(s, e)];
}

extern "C" bd_status bd_cu_broadcast(const bd_cu_strided *s, const float *src, float scale,
                                     float *out)
{
    const int64_t n = count_of(s);
    if (n <= 0)
        return BD_OK;
    broadcast_kernel<<<cu_blocks(n), CU_THREADS>>>(*s, src, scale, n, out);
    return cu_launched("a broadcast copy");
}

/* src's dims split into kept ones (dst's) and summed ones; dst element o
 * sums the elements of src whose kept coordinates are o's. */
typedef struct sum_plan {
    int ndim;
    int64_t dims[BD_MAX_DIMS];
    int summed[BD_MAX_DIMS];
    int64_t kept, per; /* dst elements, src elements summed into each */
} sum_plan;

static __global__ void sum_to_kernel(sum_plan p, const float *src, float scale, float *dst)
{
    CU_FOR(o, p.kept)
    {
        double sum = 0;
        for (int64_t q = 0; q < p.per; q++) {
            /* the src element with kept coordinates o and summed ones q */
            int64_t ko = o, kq = q, off = 0, stride = 1;
            for (int d = p.ndim - 1; d >= 0; d--) {
                int64_t at;
                if (p.summed[d]) {
                    at = kq % p.dims[d];
                    kq /= p.dims[d];
                } else {
                    at = ko % p.dims[d];
                    ko /= p.dims[d];
                }
                off += at * stride;
                stride *= p.dims[d];
            }
            sum += src[off];
        }
        dst[o] = (float)(scale * sum);
    }
}

extern "C" bd_status bd_cu_sum_to(int sn, const int64_t *sdims, const float *src, int dn,
                                  const int64_t *ddims, float scale, float *dst)
{
    sum_plan p;
    p.ndim = sn;
    p.kept = 1;
    p.per = 1;
    const int lead = sn - dn;
    for (int d = 0; d < sn; d++) {
        p.dims[d] = sdims[d];
        p.summed[d] = d < lead || ddims[d - lead] == 1;
        *(p.summed[d] ? &p.per : &p.kept) *= sdims[d];
    }
    if (p.kept <= 0)
        return BD_OK;
    sum_to_kernel<<<cu_blocks(p.kept), CU_THREADS>>>(p, src, scale, dst);
    return cu_launched("a gradient's sum over broadcast dims");
}

static __global__ void relu_kernel(const float *x, int64_t n, float *y)
{
    CU_FOR(i, n)
    y[i] = x[i] > 0 ? x[i] : 0;
}

extern "C" bd_status bd_cu_relu(const float *x, int64_t n, float *y)
{
    if (n <= 0)
        return BD_OK;
    relu_kernel<<<cu_blocks(n), CU_THREADS>>>(x, n, y);
    return cu_launched("Relu");
}

static __global__ void relu_backward_kernel(const float *y, const float *dy, int64_t n, float *dx)
{
    CU_FOR(i, n)
    dx[i] = y[i] > 0 ? dy[i] : 0.0f;
}

extern "C" bd_status bd_cu_relu_backward(const float *y, const float *dy, int64_t n, float *dx)
{
    if (n <= 0)
        return BD_OK;
    relu_backward_kernel<<<cu_blocks(n), CU_THREADS>>>(y, dy, n, dx);
    return cu_launched("Relu's backward");
}

/* Bounds first, then NaN passes through; with lo > hi everything becomes
 * hi (the CPU's clampf). */
static __global__ void clip_kernel(const float *x, int64_t n, float lo, float hi, float *y)
{
    CU_FOR(i, n)
    {
        float v = x[i] < lo ? lo : x[i];
        y[i] = v > hi ? hi : v;
    }
}

extern "C" bd_status bd_cu_clip(const float *x, int64_t n, float lo, float hi, float *y)
{
    if (n <= 0)
        return BD_OK;
    clip_kernel<<<cu_blocks(n), CU_THREADS>>>(x, n, lo, hi, y);
    return cu_launched("Clip");
}

static __global__ void clip_backward_kernel(const float *x, const float *y, const float *dy,
                                            int64_t n, float *dx)
{
    CU_FOR(i, n)
    dx[i] = x[i] == y[i] ? dy[i] : 0.0f;
}

extern "C" bd_status bd_cu_clip_backward(const float *x, const float *y, const float *dy,
                                         int64_t n, float *dx)
{
    if (n <= 0)
        return BD_OK;
    clip_backward_kernel<<<cu_blocks(n), CU_THREADS>>>(x, y, dy, n, dx);
    return cu_launched("Clip's backward");
}

static __global__ void axpy_kernel(int64_t n, float a, const float *x, float *y)
{
    CU_FOR(i, n)
    y[i] += a * x[i];
}

extern "C" bd_status bd_cu_axpy(int64_t n, float a, const float *x, float *y)
{
    if (n <= 0)
        return BD_OK;
    axpy_kernel<<<cu_blocks(n), CU_THREADS>>>(n, a, x, y);
    return cu_launched("axpy");
}

static __global__ void scale_kernel(float *x, int64_t n, double w)
{
    CU_FOR(i, n)
    x[i] = (float)(x[i] * w);
}

extern "C" bd_status bd_cu_scale(float *x, int64_t n, double w)
{
    if (n <= 0)
        return BD_OK;
    scale_kernel<<<cu_blocks(n), CU_THREADS>>>(x, n, w);
    return cu_launched("scale");
}

static __global__ void sgd_kernel(float *p, float *v, const float *g, int64_t n, float lr,
                                  float momentum, float wd)
{
    CU_FOR(i, n)
    {
        v[i] = momentum * v[i] + g[i] + wd * p[i];
        p[i] -= lr * v[i];
    }
}

extern "C" bd_status bd_cu_sgd(float *p, float *v, const float *g, int64_t n, float lr,
                               float momentum, float wd)
{
    if (n <= 0)
        return BD_OK;
    sgd_kernel<<<cu_blocks(n), CU_THREADS>>>(p, v, g, n, lr, momentum, wd);
    return cu_launched("the SGD update");
}
