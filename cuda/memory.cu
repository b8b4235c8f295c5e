/* The CUDA runtime: GPUs, memory and copies. Copies are synchronous (they
 * wait for the kernels before them), which keeps every host read of GPU
 * results obviously ordered. */
#include <stdio.h>
#include <string.h>

#include "common.cuh"

extern "C" bd_status bd_cu_device_count(int *count)
{
    *count = 0;
    return cu_check(cudaGetDeviceCount(count), "cudaGetDeviceCount");
}

extern "C" bd_status bd_cu_set_device(int ordinal)
{
    return cu_check(cudaSetDevice(ordinal), "cudaSetDevice");
}

extern "C" bd_status bd_cu_device_props(int ordinal, char *name, size_t cap, size_t *bytes,
                                        int *major, int *minor)
{
    cudaDeviceProp p;
    BD_TRY(cu_check(cudaGetDeviceProperties(&p, ordinal), "cudaGetDeviceProperties"));
    snprintf(name, cap, "%s", p.name);
    *bytes = p.totalGlobalMem;
    *major = p.major;
    *minor = p.minor;
    return BD_OK;
}

static __global__ void probe_kernel(int *out) { *out = 42; }

extern "C" bd_status bd_cu_probe(void)
{
    int *p = NULL, got = 0;
    BD_TRY(cu_check(cudaMalloc((void **)&p, sizeof *p), "cudaMalloc"));
    probe_kernel<<<1, 1>>>(p);
    bd_status s = cu_launched("a first kernel");
    if (s == BD_OK)
        s = cu_check(cudaMemcpy(&got, p, sizeof got, cudaMemcpyDeviceToHost), "cudaMemcpy");
    cudaFree(p);
    if (s == BD_OK && got != 42)
        s = bd_fail(BD_EIO, "CUDA: a first kernel ran but did not write its result");
    return s;
}

extern "C" bd_status bd_cu_malloc(void **p, size_t bytes)
{
    *p = NULL;
    cudaError_t e = cudaMalloc(p, bytes ? bytes : 1);
    if (e != cudaSuccess) {
        cudaGetLastError(); /* out of memory is not sticky: clear it */
        *p = NULL;
        return bd_fail(e == cudaErrorMemoryAllocation ? BD_ENOMEM : BD_EIO,
                       "CUDA: cudaMalloc of %zu bytes: %s", bytes, cudaGetErrorString(e));
    }
    return BD_OK;
}

extern "C" void bd_cu_free(void *p)
{
    if (p)
        cudaFree(p);
}

extern "C" bd_status bd_cu_upload(void *dst, const void *src, size_t bytes)
{
    if (bytes == 0)
        return BD_OK;
    return cu_check(cudaMemcpy(dst, src, bytes, cudaMemcpyHostToDevice), "copy to the GPU");
}

extern "C" bd_status bd_cu_download(void *dst, const void *src, size_t bytes)
{
    if (bytes == 0)
        return BD_OK;
    return cu_check(cudaMemcpy(dst, src, bytes, cudaMemcpyDeviceToHost), "copy from the GPU");
}

extern "C" bd_status bd_cu_copy(void *dst, const void *src, size_t bytes)
{
    if (bytes == 0)
        return BD_OK;
    return cu_check(cudaMemcpy(dst, src, bytes, cudaMemcpyDeviceToDevice), "copy on the GPU");
}

extern "C" bd_status bd_cu_zero(void *p, size_t bytes)
{
    if (bytes == 0)
        return BD_OK;
    return cu_check(cudaMemset(p, 0, bytes), "cudaMemset");
}
