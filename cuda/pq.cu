/* EM's steps on the GPU (the E-step's GEMMs are cuBLAS's, in em.c) and the
 * codebook layout fine-tuning needs. The argmin and the centroid terms
 * follow pq.c's estep_run loop for loop, so that where the scores agree
 * the assignments do, ties included. */
#include "common.cuh"

static __global__ void center_terms_kernel(const float *centroids, const float *cg, int k, int d,
                                           float *cgc)
{
    CU_FOR(c, k)
    {
        float s = 0;
        for (int t = 0; t < d; t++)
            s += centroids[c * d + t] * cg[c * d + t];
        cgc[c] = s;
    }
}

extern "C" bd_status bd_cu_center_terms(const float *centroids, const float *cg, int k, int d,
                                        float *cgc)
{
    if (k <= 0)
        return BD_OK;
    center_terms_kernel<<<cu_blocks(k), CU_THREADS>>>(centroids, cg, k, d, cgc);
    return cu_launched("the E-step's centroid terms");
}

static __global__ void argmin_kernel(const float *scores, const float *cgc, int64_t rows, int k,
                                     int32_t *assign)
{
    CU_FOR(r, rows)
    {
        const float *s = scores + r * k;
        int best = 0;
        float bv = s[0] + cgc[0];
        for (int c = 1; c < k; c++) {
            float v = s[c] + cgc[c];
            if (v < bv) { /* strictly: the lowest index keeps a tie */
                bv = v;
                best = c;
            }
        }
        assign[r] = best;
    }
}

extern "C" bd_status bd_cu_argmin(const float *scores, const float *cgc, int64_t rows, int k,
                                  int32_t *assign)
{
    if (rows <= 0)
        return BD_OK;
    argmin_kernel<<<cu_blocks(rows), CU_THREADS>>>(scores, cgc, rows, k, assign);
    return cu_launched("the E-step's argmin");
}

static __global__ void cluster_sums_kernel(const float *sub, const int32_t *assign, int64_t n,
                                           int d, double *sums, unsigned long long *counts)
{
    CU_FOR(e, n * d)
    {
        const int64_t i = e / d;
        const int t = (int)(e % d);
        atomicAdd(&sums[(int64_t)assign[i] * d + t], (double)sub[e]);
        if (t == 0)
            atomicAdd(&counts[assign[i]], 1ull);
    }
}

extern "C" bd_status bd_cu_cluster_sums(const float *sub, const int32_t *assign, int64_t n, int d,
                                        int k, double *sums, unsigned long long *counts)
{
    BD_TRY(cu_check(cudaMemset(sums, 0, (size_t)k * (size_t)d * sizeof *sums), "cudaMemset"));
    BD_TRY(cu_check(cudaMemset(counts, 0, (size_t)k * sizeof *counts), "cudaMemset"));
    if (n <= 0)
        return BD_OK;
    cluster_sums_kernel<<<cu_blocks(n * d), CU_THREADS>>>(sub, assign, n, d, sums, counts);
    return cu_launched("the M-step's sums");
}

static __global__ void cluster_means_kernel(const double *sums, const unsigned long long *counts,
                                            int k, int d, float *out)
{
    CU_FOR(e, (int64_t)k * d)
    {
        const unsigned long long count = counts[e / d];
        out[e] = count ? (float)(sums[e] / (double)count) : 0.0f;
    }
}

extern "C" bd_status bd_cu_cluster_means(const double *sums, const unsigned long long *counts,
                                         int k, int d, float *out)
{
    if ((int64_t)k * d <= 0)
        return BD_OK;
    cluster_means_kernel<<<cu_blocks((int64_t)k * d), CU_THREADS>>>(sums, counts, k, d, out);
    return cu_launched("the centroid means");
}

/* Element (r, c) of the rows x row_len matrix: at r * row_len + c in sub
 * (subvector r * m + c / d, position c % d), and in the weight as stored
 * at the same place, or at c * rows + r when transposed. */
static __global__ void pq_gather_kernel(const float *w, int64_t rows, int64_t row_len,
                                        int transposed, float *sub)
{
    CU_FOR(e, rows * row_len)
    {
        const int64_t r = e / row_len, c = e % row_len;
        sub[e] = w[transposed ? c * rows + r : e];
    }
}

extern "C" bd_status bd_cu_pq_gather(const float *w, int64_t rows, int64_t row_len,
                                     int transposed, float *sub)
{
    if (rows * row_len <= 0)
        return BD_OK;
    pq_gather_kernel<<<cu_blocks(rows * row_len), CU_THREADS>>>(w, rows, row_len, transposed, sub);
    return cu_launched("the subvectors' gather");
}

static __global__ void pq_decode_kernel(const float *centroids, const int32_t *codes, int64_t rows,
                                        int64_t row_len, int64_t d, int transposed, float *w)
{
    CU_FOR(e, rows * row_len)
    {
        const int64_t r = e / row_len, c = e % row_len;
        const float v = centroids[(int64_t)codes[e / d] * d + c % d];
        w[transposed ? c * rows + r : e] = v;
    }
}

extern "C" bd_status bd_cu_pq_decode(const float *centroids, const int32_t *codes, int64_t rows,
                                     int64_t row_len, int64_t d, int transposed, float *w)
{
    if (rows * row_len <= 0)
        return BD_OK;
    pq_decode_kernel<<<cu_blocks(rows * row_len), CU_THREADS>>>(centroids, codes, rows, row_len,
                                                                d, transposed, w);
    return cu_launched("the codebook's decoding");
}
