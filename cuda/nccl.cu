/* NCCL: the sums across the ranks of a job on the GPUs. One communicator
 * for the process (one rank, one GPU), made by bd_cu_nccl_init on the GPU
 * current then and kept until the process ends, as the plugin is. Sums are
 * in place on the default stream, after the kernels before them and
 * before those after. A build without NCCL has the same functions, which
 * say so; the host side (dist.c) never calls them there. */
#include <string.h>

#include "common.cuh"

#ifdef BD_HAVE_NCCL
#include <nccl.h>

static_assert(sizeof(ncclUniqueId) == BD_CU_NCCL_ID, "NCCL's id is not BD_CU_NCCL_ID bytes");

static ncclComm_t comm;

/* NCCL's reason, and its last message, which says what the code cannot. */
static bd_status nccl_check(ncclResult_t r, const char *what)
{
    if (r == ncclSuccess)
        return BD_OK;
    const char *last = ncclGetLastError(NULL);
    return bd_fail(r == ncclInvalidArgument || r == ncclInvalidUsage ? BD_EINVAL : BD_EIO,
                   "NCCL: %s: %s%s%s%s", what, ncclGetErrorString(r),
                   last && *last ? " (" : "", last ? last : "", last && *last ? ")" : "");
}

extern "C" int bd_cu_nccl_built(void) { return 1; }

extern "C" bd_status bd_cu_nccl_id(unsigned char *id)
{
    ncclUniqueId u;
    BD_TRY(nccl_check(ncclGetUniqueId(&u), "ncclGetUniqueId"));
    memcpy(id, &u, sizeof u);
    return BD_OK;
}

extern "C" bd_status bd_cu_nccl_init(const unsigned char *id, int size, int rank)
{
    ncclUniqueId u;
    memcpy(&u, id, sizeof u);
    return nccl_check(ncclCommInitRank(&comm, size, u, rank), "ncclCommInitRank");
}

/* Every array's sum is one operation of one group: NCCL launches them
 * together instead of one after another. */
extern "C" bd_status bd_cu_nccl_sum_f32(float *const *v, const int64_t *n, int count)
{
    BD_TRY(nccl_check(ncclGroupStart(), "ncclGroupStart"));
    bd_status s = BD_OK;
    for (int i = 0; s == BD_OK && i < count; i++)
        if (n[i] > 0)
            s = nccl_check(ncclAllReduce(v[i], v[i], (size_t)n[i], ncclFloat, ncclSum, comm, 0),
                           "ncclAllReduce of float32 gradients");
    /* a group started is ended, failed or not */
    bd_status e = nccl_check(ncclGroupEnd(), "ncclGroupEnd");
    return s == BD_OK ? e : s;
}

extern "C" bd_status bd_cu_nccl_sum_f64(double *v, int64_t n)
{
    if (n <= 0)
        return BD_OK;
    return nccl_check(ncclAllReduce(v, v, (size_t)n, ncclDouble, ncclSum, comm, 0),
                      "ncclAllReduce of float64 sums");
}

#else

static bd_status no_nccl(void)
{
    return bd_fail(BD_EUNSUPPORTED, "this CUDA backend was built without NCCL");
}

extern "C" int bd_cu_nccl_built(void) { return 0; }
extern "C" bd_status bd_cu_nccl_id(unsigned char *id)
{
    (void)id;
    return no_nccl();
}
extern "C" bd_status bd_cu_nccl_init(const unsigned char *id, int size, int rank)
{
    (void)id;
    (void)size;
    (void)rank;
    return no_nccl();
}
extern "C" bd_status bd_cu_nccl_sum_f32(float *const *v, const int64_t *n, int count)
{
    (void)v;
    (void)n;
    (void)count;
    return no_nccl();
}
extern "C" bd_status bd_cu_nccl_sum_f64(double *v, int64_t n)
{
    (void)v;
    (void)n;
    return no_nccl();
}

#endif
