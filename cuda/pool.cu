/* Pooling: MaxPool and AveragePool over bd_pool_geometry's three spatial
 * dims (the CPU's own reading of the node), the global average, and their
 * backward passes. A window's taps are tried in the CPU's scan order
 * (dim 0, 1, 2, each ascending), so MaxPool's backward picks the same
 * first maximum. */
#include <float.h>

#include "common.cuh"

/* Output o of a plane along dim t: its first tap's input index. */
static __device__ int64_t window_start(const bd_pool_geom &g, int t, int64_t o)
{
    return o * g.stride[t] - g.pad_begin[t];
}

static __device__ bool inside(int64_t v, int64_t lo, int64_t hi) { return v >= lo && v < hi; }

/* The taps of output (o0, o1, o2) that fall inside the input (or, with
 * padded, inside the padded input), in scan order: calls f(offset) for
 * inside ones and returns how many were counted. */
template <typename F>
static __device__ int64_t each_tap(const bd_pool_geom &g, int64_t o0, int64_t o1, int64_t o2,
                                   bool padded, F f)
{
    const int64_t s0 = window_start(g, 0, o0), s1 = window_start(g, 1, o1),
                  s2 = window_start(g, 2, o2);
    int64_t counted = 0;
    for (int64_t j0 = 0; j0 < g.kernel[0]; j0++) {
        const int64_t i0 = s0 + j0 * g.dilation[0];
        for (int64_t j1 = 0; j1 < g.kernel[1]; j1++) {
            const int64_t i1 = s1 + j1 * g.dilation[1];
            for (int64_t j2 = 0; j2 < g.kernel[2]; j2++) {
                const int64_t i2 = s2 + j2 * g.dilation[2];
                const bool in = inside(i0, 0, g.in[0]) && inside(i1, 0, g.in[1]) &&
                                inside(i2, 0, g.in[2]);
                if (padded)
                    counted += inside(i0, -g.pad_begin[0], g.in[0] + g.pad_end[0]) &&
                               inside(i1, -g.pad_begin[1], g.in[1] + g.pad_end[1]) &&
                               inside(i2, -g.pad_begin[2], g.in[2] + g.pad_end[2]);
                else
                    counted += in;
                if (in)
                    f((i0 * g.in[1] + i1) * g.in[2] + i2);
            }
        }
    }
    return counted;
}

static __global__ void pool_kernel(bd_pool_geom g, int64_t planes, int kind, const float *x,
                                   float *y)
{
    const int64_t outs = g.out[0] * g.out[1] * g.out[2], ins = g.in[0] * g.in[1] * g.in[2];
    CU_FOR(e, planes * outs)
    {
        const int64_t p = e / outs, o = e % outs;
        const int64_t o2 = o % g.out[2], o1 = o / g.out[2] % g.out[1], o0 = o / (g.out[2] * g.out[1]);
        const float *xp = x + p * ins;
        float max = -FLT_MAX;
        double sum = 0;
        int64_t count = each_tap(g, o0, o1, o2, kind == BD_CU_POOL_AVG_PAD, [&](int64_t at) {
            if (xp[at] > max)
                max = xp[at];
            sum += xp[at];
        });
        if (kind == BD_CU_POOL_MAX)
            y[e] = max;
        else
            y[e] = count ? (float)(sum / (double)count) : 0.0f;
    }
}

extern "C" bd_status bd_cu_pool(const bd_pool_geom *pg, int64_t planes, bd_cu_pool_kind kind,
                                const float *x, float *y)
{
    const int64_t total = planes * pg->out[0] * pg->out[1] * pg->out[2];
    if (total <= 0)
        return BD_OK;
    pool_kernel<<<cu_blocks(total), CU_THREADS>>>(*pg, planes, (int)kind, x, y);
    return cu_launched(kind == BD_CU_POOL_MAX ? "MaxPool" : "AveragePool");
}

/* One thread per output: windows overlap, so their gradients are added
 * into dx atomically. */
static __global__ void pool_backward_kernel(bd_pool_geom g, int64_t planes, int kind,
                                            const float *x, const float *dy, float *dx)
{
    const int64_t outs = g.out[0] * g.out[1] * g.out[2], ins = g.in[0] * g.in[1] * g.in[2];
    CU_FOR(e, planes * outs)
    {
        const int64_t p = e / outs, o = e % outs;
        const int64_t o2 = o % g.out[2], o1 = o / g.out[2] % g.out[1], o0 = o / (g.out[2] * g.out[1]);
        const float *xp = x + p * ins;
        float *dxp = dx + p * ins;
        if (kind == BD_CU_POOL_MAX) {
            int64_t best = -1;
            float bv = 0.0f;
            each_tap(g, o0, o1, o2, false, [&](int64_t at) {
                if (best < 0 || xp[at] > bv) {
                    best = at;
                    bv = xp[at];
                }
            });
            if (best >= 0)
                atomicAdd(&dxp[best], dy[e]);
            continue;
        }
        const int64_t count =
            each_tap(g, o0, o1, o2, kind == BD_CU_POOL_AVG_PAD, [&](int64_t) {});
        if (count == 0)
            continue;
        const float share = dy[e] / (float)count;
        each_tap(g, o0, o1, o2, false, [&](int64_t at) { atomicAdd(&dxp[at], share); });
    }
}

extern "C" bd_status bd_cu_pool_backward(const bd_pool_geom *pg, int64_t planes,
                                         bd_cu_pool_kind kind, const float *x, const float *dy,
                                         float *dx)
{
    const int64_t ins = pg->in[0] * pg->in[1] * pg->in[2];
    const int64_t total = planes * pg->out[0] * pg->out[1] * pg->out[2];
    BD_TRY(cu_check(cudaMemset(dx, 0, (size_t)(planes * ins) * sizeof *dx), "cudaMemset"));
    if (total <= 0)
        return BD_OK;
    pool_backward_kernel<<<cu_blocks(total), CU_THREADS>>>(*pg, planes, (int)kind, x, dy, dx);
    return cu_launched(kind == BD_CU_POOL_MAX ? "MaxPool's backward" : "AveragePool's backward");
}

static __global__ void global_avg_kernel(int64_t planes, int64_t size, const float *x, float *y)
{
    CU_FOR(p, planes)
    {
        double sum = 0;
        for (int64_t i = 0; i < size; i++)
            sum += x[p * size + i];
        y[p] = (float)(sum / (double)size);
    }
}

extern "C" bd_status bd_cu_global_avg(int64_t planes, int64_t size, const float *x, float *y)
{
    if (planes <= 0 || size <= 0)
        return BD_OK;
    global_avg_kernel<<<cu_blocks(planes), CU_THREADS>>>(planes, size, x, y);
    return cu_launched("GlobalAveragePool");
}

static __global__ void global_avg_backward_kernel(int64_t planes, int64_t size, const float *dy,
                                                  float *dx)
{
    CU_FOR(e, planes * size)
    dx[e] = dy[e / size] / (float)size;
}

extern "C" bd_status bd_cu_global_avg_backward(int64_t planes, int64_t size, const float *dy,
                                               float *dx)
{
    if (planes * size <= 0)
        return BD_OK;
    global_avg_backward_kernel<<<cu_blocks(planes * size), CU_THREADS>>>(planes, size, dy, dx);
    return cu_launched("GlobalAveragePool's backward");
}
