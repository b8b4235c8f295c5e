/* Convolution's data movement: im2col (for the forward's GEMMs, the weight
 * gradient and the Gram matrix), its adjoint col2im (the input gradient),
 * and depthwise convolution, whose kernel-sized GEMMs would be all
 * overhead. One thread per output element; a tap's input position is
 * worked out as the CPU's conv.c does (oy * sh - pad_t + ki * dh). */
#include "common.cuh"

static __global__ void im2col_kernel(bd_conv_geom g, const float *x, int64_t gi,
                                     const int32_t *images, int64_t img0, int64_t nimages,
                                     float *cols, int64_t image_stride, int64_t row_stride)
{
    const int64_t cg = g.c / g.group, taps = g.kh * g.kw, ohw = g.oh * g.ow;
    const int64_t rows = cg * taps, total = nimages * rows * ohw;
    CU_FOR(e, total)
    {
        const int64_t p = e % ohw, r = e / ohw % rows, i = e / (ohw * rows);
        const int64_t c = r / taps, ki = r / g.kw % g.kh, kj = r % g.kw;
        const int64_t oy = p / g.ow, ox = p % g.ow;
        const int64_t iy = oy * g.sh - g.pad_t + ki * g.dh, ix = ox * g.sw - g.pad_l + kj * g.dw;
        const int64_t img = images ? images[i] : img0 + i;
        float v = 0.0f;
        if (iy >= 0 && iy < g.h && ix >= 0 && ix < g.w)
            v = x[((img * g.c + gi * cg + c) * g.h + iy) * g.w + ix];
        cols[i * image_stride + r * row_stride + p] = v;
    }
}

extern "C" bd_status bd_cu_im2col(const bd_conv_geom *g, const float *x, int64_t gi,
                                  const int32_t *images, int64_t img0, int64_t nimages,
                                  float *cols, int64_t image_stride, int64_t row_stride)
{
    const int64_t total = nimages * (g->c / g->group) * g->kh * g->kw * g->oh * g->ow;
    if (total <= 0)
        return BD_OK;
    im2col_kernel<<<cu_blocks(total), CU_THREADS>>>(*g, x, gi, images, img0, nimages, cols,
                                                    image_stride, row_stride);
    return cu_launched("im2col");
}

/* dx[img][c][iy][ix] = the sum, over the taps (ki, kj) whose output
 * position (oy, ox) reads (iy, ix), of cols[i][(c, ki, kj)][oy * OW + ox]:
 * oy = (iy + pad_t - ki * dh) / sh when that divides exactly and lands in
 * [0, OH). Gathered per input element: no two threads write one place. */
static __global__ void col2im_kernel(bd_conv_geom g, const float *cols, int64_t gi, int64_t img0,
                                     int64_t nimages, float *dx)
{
    const int64_t cg = g.c / g.group, taps = g.kh * g.kw, ohw = g.oh * g.ow;
    const int64_t plane = g.h * g.w, total = nimages * cg * plane;
    CU_FOR(e, total)
    {
        const int64_t ix = e % g.w, iy = e / g.w % g.h, c = e / plane % cg, i = e / (plane * cg);
        const float *ci = cols + (i * cg * taps + c * taps) * ohw;
        float sum = 0.0f;
        for (int64_t ki = 0; ki < g.kh; ki++) {
            const int64_t ny = iy + g.pad_t - ki * g.dh;
            if (ny < 0 || ny % g.sh != 0 || ny / g.sh >= g.oh)
                continue;
            const int64_t oy = ny / g.sh;
            for (int64_t kj = 0; kj < g.kw; kj++) {
                const int64_t nx = ix + g.pad_l - kj * g.dw;
                if (nx < 0 || nx % g.sw != 0 || nx / g.sw >= g.ow)
                    continue;
                sum += ci[(ki * g.kw + kj) * ohw + oy * g.ow + nx / g.sw];
            }
        }
        dx[(((img0 + i) * g.c + gi * cg + c) * g.h + iy) * g.w + ix] = sum;
    }
}

extern "C" bd_status bd_cu_col2im(const bd_conv_geom *g, const float *cols, int64_t gi,
                                  int64_t img0, int64_t nimages, float *dx)
{
    const int64_t total = nimages * (g->c / g->group) * g->h * g->w;
    if (total <= 0)
        return BD_OK;
    col2im_kernel<<<cu_blocks(total), CU_THREADS>>>(*g, cols, gi, img0, nimages, dx);
    return cu_launched("col2im");
}

/* y[img][c][oy][ox] = sum over taps inside the input of w[c][ki][kj] x. */
static __global__ void depthwise_kernel(bd_conv_geom g, const float *x, const float *w, float *y)
{
    const int64_t ohw = g.oh * g.ow, total = g.n * g.c * ohw;
    CU_FOR(e, total)
    {
        const int64_t ox = e % g.ow, oy = e / g.ow % g.oh, plane = e / ohw, c = plane % g.c;
        const float *xp = x + plane * g.h * g.w, *wc = w + c * g.kh * g.kw;
        float sum = 0.0f;
        for (int64_t ki = 0; ki < g.kh; ki++) {
            const int64_t iy = oy * g.sh - g.pad_t + ki * g.dh;
            if (iy < 0 || iy >= g.h)
                continue;
            for (int64_t kj = 0; kj < g.kw; kj++) {
                const int64_t ix = ox * g.sw - g.pad_l + kj * g.dw;
                if (ix >= 0 && ix < g.w)
                    sum += wc[ki * g.kw + kj] * xp[iy * g.w + ix];
            }
        }
        y[e] = sum;
    }
}

extern "C" bd_status bd_cu_depthwise(const bd_conv_geom *g, const float *x, const float *w,
                                     float *y)
{
    const int64_t total = g->n * g->c * g->oh * g->ow;
    if (total <= 0)
        return BD_OK;
    depthwise_kernel<<<cu_blocks(total), CU_THREADS>>>(*g, x, w, y);
    return cu_launched("depthwise convolution");
}

/* dx gathered per input element, as col2im, with dy in place of cols. */
static __global__ void depthwise_dx_kernel(bd_conv_geom g, const float *w, const float *dy,
                                           float *dx)
{
    const int64_t plane = g.h * g.w, total = g.n * g.c * plane;
    CU_FOR(e, total)
    {
        const int64_t ix = e % g.w, iy = e / g.w % g.h, p = e / plane, c = p % g.c;
        const float *dyp = dy + p * g.oh * g.ow, *wc = w + c * g.kh * g.kw;
        float sum = 0.0f;
        for (int64_t ki = 0; ki < g.kh; ki++) {
            const int64_t ny = iy + g.pad_t - ki * g.dh;
            if (ny < 0 || ny % g.sh != 0 || ny / g.sh >= g.oh)
                continue;
            for (int64_t kj = 0; kj < g.kw; kj++) {
                const int64_t nx = ix + g.pad_l - kj * g.dw;
                if (nx < 0 || nx % g.sw != 0 || nx / g.sw >= g.ow)
                    continue;
                sum += wc[ki * g.kw + kj] * dyp[(ny / g.sh) * g.ow + nx / g.sw];
            }
        }
        dx[e] = sum;
    }
}

extern "C" bd_status bd_cu_depthwise_dx(const bd_conv_geom *g, const float *w, const float *dy,
                                        float *dx)
{
    const int64_t total = g->n * g->c * g->h * g->w;
    if (total <= 0)
        return BD_OK;
    depthwise_dx_kernel<<<cu_blocks(total), CU_THREADS>>>(*g, w, dy, dx);
    return cu_launched("depthwise convolution's input gradient");
}

/* One block per weight (c, ki, kj): the sum over images and output pixels
 * of dy x at that tap, in double. */
static __global__ void depthwise_dw_kernel(bd_conv_geom g, const float *x, const float *dy,
                                           float *dw)
{
    const int64_t taps = g.kh * g.kw, ohw = g.oh * g.ow;
    const int64_t c = blockIdx.x / taps, ki = blockIdx.x % taps / g.kw, kj = blockIdx.x % g.kw;
    double sum = 0;
    for (int64_t e = threadIdx.x; e < g.n * ohw; e += blockDim.x) {
        const int64_t img = e / ohw, oy = e % ohw / g.ow, ox = e % g.ow;
        const int64_t iy = oy * g.sh - g.pad_t + ki * g.dh, ix = ox * g.sw - g.pad_l + kj * g.dw;
        if (iy >= 0 && iy < g.h && ix >= 0 && ix < g.w) {
            const int64_t plane = img * g.c + c;
            sum += (double)dy[plane * ohw + oy * g.ow + ox] * x[(plane * g.h + iy) * g.w + ix];
        }
    }
    sum = cu_block_sum(sum);
    if (threadIdx.x == 0)
        dw[blockIdx.x] = (float)sum;
}

extern "C" bd_status bd_cu_depthwise_dw(const bd_conv_geom *g, const float *x, const float *dy,
                                        float *dw)
{
    const int64_t weights = g->c * g->kh * g->kw;
    if (weights <= 0)
        return BD_OK;
    if (weights > 0x7fffffff)
        return bd_fail(BD_EUNSUPPORTED, "depthwise convolution: %lld weights",
                       (long long)weights);
    depthwise_dw_kernel<<<(unsigned)weights, CU_THREADS>>>(*g, x, dy, dw);
    return cu_launched("depthwise convolution's weight gradient");
}
