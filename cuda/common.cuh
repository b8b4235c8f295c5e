/* What every .cu file of the backend shares: turning CUDA's errors into a
 * bd_status, launch sizes, and the block-wide sum. Kernels are written for
 * obviousness (one thread per output, grid-stride loops, sums in double
 * where the CPU sums in double), not for speed. */
#ifndef BD_CUDA_COMMON_CUH
#define BD_CUDA_COMMON_CUH

#include <cuda_runtime.h>

#include "dev.h"

/* A CUDA error as a bd_status naming the call: BD_ENOMEM when memory ran
 * out, BD_EIO for any other failure of the GPU or its driver. */
static inline bd_status cu_check(cudaError_t e, const char *what)
{
    if (e == cudaSuccess)
        return BD_OK;
    return bd_fail(e == cudaErrorMemoryAllocation ? BD_ENOMEM : BD_EIO, "CUDA: %s: %s (%s)", what,
                   cudaGetErrorString(e), cudaGetErrorName(e));
}

/* After a kernel launch: the launch's own error (a bad configuration, no
 * code for this GPU); errors while it runs surface at the next wait. */
static inline bd_status cu_launched(const char *kernel)
{
    return cu_check(cudaGetLastError(), kernel);
}

enum { CU_THREADS = 256 };

/* Blocks for n elements at CU_THREADS per block; kernels loop over the
 * grid, so capping the count only lengthens their loops. n must be > 0. */
static inline unsigned cu_blocks(int64_t n)
{
    int64_t b = (n + CU_THREADS - 1) / CU_THREADS;
    return (unsigned)(b < 65535 ? b : 65535);
}

/* The index and step of a grid-stride loop over int64_t elements. */
#define CU_FOR(i, n)                                                                \
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < (n);      \
         i += (int64_t)blockDim.x * gridDim.x)

/* The sum of v over the CU_THREADS threads of a block, returned to all of
 * them; every thread of the block must call it. */
static __device__ double cu_block_sum(double v)
{
    __shared__ double part[CU_THREADS];
    part[threadIdx.x] = v;
    __syncthreads();
    for (int s = CU_THREADS / 2; s > 0; s >>= 1) {
        if ((int)threadIdx.x < s)
            part[threadIdx.x] += part[threadIdx.x + s];
        __syncthreads();
    }
    double total = part[0];
    __syncthreads(); /* before a next call overwrites part */
    return total;
}

#endif
