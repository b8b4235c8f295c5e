/* Training's own kernels (training.c on the GPU): PyTorch's SGD as
 * bd_training_sgd, the hits of a batch, and Quant-Noise written on a
 * weight as stored. Products are rounded before they are added
 * (__fmul_rn), as the CPU's code compiles without fused multiply-adds, so
 * that an update or a noisy weight is the CPU's to the bit. */
#include "common.cuh"

static __global__ void training_sgd_kernel(float *p, float *v, const float *grad, int64_t n,
                                           float lr, float m, float wd, int nesterov)
{
    CU_FOR(i, n)
    {
        const float g = grad[i] + __fmul_rn(wd, p[i]);
        v[i] = __fmul_rn(m, v[i]) + g;
        p[i] -= __fmul_rn(lr, nesterov ? g + __fmul_rn(m, v[i]) : v[i]);
    }
}

extern "C" bd_status bd_cu_training_sgd(float *p, float *v, const float *grad, int64_t n,
                                        float lr, float m, float wd, int nesterov)
{
    if (n <= 0)
        return BD_OK;
    training_sgd_kernel<<<cu_blocks(n), CU_THREADS>>>(p, v, grad, n, lr, m, wd, nesterov);
    return cu_launched("training's SGD update");
}

static __global__ void hits_kernel(const float *xv, const int32_t *labels, int64_t n, int64_t c,
                                   int32_t *hit)
{
    CU_FOR(i, n)
    {
        const float *x = xv + i * c;
        int64_t best = 0;
        for (int64_t j = 1; j < c; j++)
            if (x[j] > x[best])
                best = j;
        hit[i] = best == labels[i];
    }
}

extern "C" bd_status bd_cu_hits(const float *logits, const int32_t *labels, int64_t n, int64_t c,
                                int32_t *hit)
{
    if (n <= 0)
        return BD_OK;
    hits_kernel<<<cu_blocks(n), CU_THREADS>>>(logits, labels, n, c, hit);
    return cu_launched("the batch's hits");
}

/* Element e of the rows x row_len matrix in pq.h's layout: row e / row_len,
 * block e / d (d divides row_len), stored at e or, transposed, at
 * column * rows + row. */
static __device__ int64_t stored_at(const bd_cu_blocks b, int64_t e)
{
    return b.transposed ? (e % b.row_len) * b.rows + e / b.row_len : e;
}

/* drop: hit blocks 0; either way the kept ones times keep. */
static __global__ void noise_scale_kernel(const bd_cu_blocks b, const uint8_t *mask, float keep,
                                          int drop, float *w)
{
    CU_FOR(e, b.rows * b.row_len)
    {
        const int64_t at = stored_at(b, e);
        if (mask[e / b.d])
            w[at] = drop ? 0.0f : w[at];
        else
            w[at] = keep * w[at];
    }
}

static bd_status noise_scale(const bd_cu_blocks *b, const uint8_t *mask, float keep, int drop,
                             float *w)
{
    if (b->rows * b->row_len <= 0)
        return BD_OK;
    noise_scale_kernel<<<cu_blocks(b->rows * b->row_len), CU_THREADS>>>(*b, mask, keep, drop, w);
    return cu_launched(drop ? "Quant-Noise's block drop" : "block drop's gradient");
}

extern "C" bd_status bd_cu_noise_drop(const bd_cu_blocks *b, const uint8_t *mask, float keep,
                                      float *w)
{
    return noise_scale(b, mask, keep, 1, w);
}

extern "C" bd_status bd_cu_noise_keep(const bd_cu_blocks *b, const uint8_t *mask, float keep,
                                      float *grad)
{
    return noise_scale(b, mask, keep, 0, grad);
}

static __global__ void noise_centroid_kernel(const bd_cu_blocks b, const uint8_t *mask,
                                             const float *centroids, const int32_t *assign,
                                             float *w)
{
    CU_FOR(e, b.rows * b.row_len)
    {
        const int64_t blk = e / b.d;
        if (mask[blk])
            w[stored_at(b, e)] = centroids[(int64_t)assign[blk] * b.d + e % b.d];
    }
}

extern "C" bd_status bd_cu_noise_centroid(const bd_cu_blocks *b, const uint8_t *mask,
                                          const float *centroids, const int32_t *assign,
                                          float *w)
{
    if (b->rows * b->row_len <= 0)
        return BD_OK;
    noise_centroid_kernel<<<cu_blocks(b->rows * b->row_len), CU_THREADS>>>(*b, mask, centroids,
                                                                          assign, w);
    return cu_launched("Quant-Noise's centroids");
}

/* int_fit.c's code_of and bd_int_round's decoding. */
static __global__ void noise_int_kernel(const bd_cu_blocks b, const uint8_t *mask,
                                        const float *scales, const float *zeros, int64_t nscales,
                                        float zero0, int levels, float *w)
{
    CU_FOR(e, b.rows * b.row_len)
    {
        if (!mask[e / b.d])
            continue;
        const int64_t r = nscales > 1 ? e / b.row_len : 0, at = stored_at(b, e);
        const float s = scales[r], z = zeros ? zeros[r] : zero0;
        const float u = rintf(__fdiv_rn(w[at], s) + z);
        const int32_t c = u < 0 ? 0 : u > (float)(levels - 1) ? levels - 1 : (int32_t)u;
        w[at] = __fmul_rn(s, (float)c - z);
    }
}

extern "C" bd_status bd_cu_noise_int(const bd_cu_blocks *b, const uint8_t *mask,
                                     const float *scales, const float *zeros, int64_t nscales,
                                     float zero0, int levels, float *w)
{
    if (b->rows * b->row_len <= 0)
        return BD_OK;
    noise_int_kernel<<<cu_blocks(b->rows * b->row_len), CU_THREADS>>>(*b, mask, scales, zeros,
                                                                      nscales, zero0, levels, w);
    return cu_launched("Quant-Noise's fake quantization");
}
