#include "dist.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#ifdef BD_HAVE_MPI
#include <mpi.h>
#endif

static int g_rank = 0, g_size = 1, g_joined = 0;
static int64_t g_bytes = 0, g_calls = 0;

/* The launchers' own word for how many ranks the job has: Open MPI's, then
 * PMIx's and PMI's (MPICH's Hydra, Slurm). */
static int launched_size(void)
{
    static const char *const vars[] = {"OMPI_COMM_WORLD_SIZE", "PMIX_SIZE", "PMI_SIZE"};
    for (size_t i = 0; i < sizeof vars / sizeof *vars; i++) {
        const char *v = getenv(vars[i]);
        if (v && *v)
            return atoi(v);
    }
    return getenv("PMIX_RANK") ? 2 : 0; /* PMIx without a size: a launcher all the same */
}

bd_status bd_dist_init(int *argc, char ***argv)
{
    const int launched = launched_size();
#ifdef BD_HAVE_MPI
    if (launched <= 0)
        return BD_OK; /* no launcher: one process, and MPI is not started at all */
    int provided;
    /* FUNNELED: OpenMP threads compute, the main thread alone communicates. */
    if (MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided) != MPI_SUCCESS)
        return bd_fail(BD_EIO, "MPI_Init failed: the launcher's environment is not usable");
    /* A failing collective ends the job instead of returning a code no
     * caller could recover from with the other ranks waiting. */
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_ARE_FATAL);
    MPI_Comm_rank(MPI_COMM_WORLD, &g_rank);
    MPI_Comm_size(MPI_COMM_WORLD, &g_size);
    g_joined = 1;
    return BD_OK;
#else
    (void)argc;
    (void)argv;
    if (launched > 1)
        return bd_fail(BD_EUNSUPPORTED,
                       "launched as one of %d ranks, but this bitdown was built without MPI: "
                       "install libopenmpi-dev and build again (./bd build), or run one process",
                       launched);
    return BD_OK;
#endif
}

void bd_dist_finalize(void)
{
#ifdef BD_HAVE_MPI
    if (g_joined)
        MPI_Finalize();
#endif
    g_joined = 0;
}

int bd_dist_rank(void) { return g_rank; }
int bd_dist_size(void) { return g_size; }
int bd_dist_joined(void) { return g_joined; }

int bd_dist_local_rank(void)
{
    static const char *const vars[] = {"OMPI_COMM_WORLD_LOCAL_RANK", "MPI_LOCALRANKID",
                                       "SLURM_LOCALID"};
    for (size_t i = 0; i < sizeof vars / sizeof *vars; i++) {
        const char *v = getenv(vars[i]);
        if (v && *v)
            return atoi(v) > 0 ? atoi(v) : 0;
    }
    return 0;
}

void bd_dist_share(int64_t n, int64_t *first, int64_t *count)
{
    const int64_t base = n / g_size, extra = n % g_size;
    *count = base + (g_rank < extra);
    *first = (int64_t)g_rank * base + (g_rank < extra ? g_rank : extra);
}

void bd_dist_traffic(int64_t *bytes, int64_t *calls)
{
    *bytes = g_bytes;
    *calls = g_calls;
}

#ifdef BD_HAVE_MPI
/* MPI counts in int: long arrays go in pieces. */
static bd_status sum_in_pieces(void *v, int64_t n, size_t size, MPI_Datatype type)
{
    g_bytes += n * (int64_t)size;
    g_calls++;
    for (int64_t at = 0; at < n; at += INT_MAX / 2) {
        const int64_t k = n - at < INT_MAX / 2 ? n - at : INT_MAX / 2;
        MPI_Allreduce(MPI_IN_PLACE, (char *)v + at * (int64_t)size, (int)k, type, MPI_SUM,
                      MPI_COMM_WORLD);
    }
    return BD_OK;
}
#define SUM(v, n, type, mpi) (g_size > 1 ? sum_in_pieces(v, n, sizeof(type), mpi) : BD_OK)
#else
#define SUM(v, n, type, mpi) ((void)(v), (void)(n), BD_OK)
#endif

bd_status bd_dist_sum_f32(float *v, int64_t n) { return SUM(v, n, float, MPI_FLOAT); }
bd_status bd_dist_sum_f64(double *v, int64_t n) { return SUM(v, n, double, MPI_DOUBLE); }
bd_status bd_dist_sum_i64(int64_t *v, int64_t n) { return SUM(v, n, int64_t, MPI_INT64_T); }

bd_status bd_dist_sum_tensors(bd_tensor *const *t, int n)
{
    if (g_size == 1)
        return BD_OK;
    int64_t total = 0;
    for (int i = 0; i < n; i++)
        total += t[i] ? bd_tensor_count(t[i]) : 0;
    float *buf = malloc((size_t)(total + 1) * sizeof *buf);
    if (!buf)
        return bd_fail(BD_ENOMEM, "out of memory for the %lld gradients to sum across ranks",
                       (long long)total);
    int64_t at = 0;
    for (int i = 0; i < n; i++)
        if (t[i]) {
            memcpy(buf + at, t[i]->data, (size_t)bd_tensor_count(t[i]) * sizeof *buf);
            at += bd_tensor_count(t[i]);
        }
    bd_status s = bd_dist_sum_f32(buf, total);
    at = 0;
    for (int i = 0; s == BD_OK && i < n; i++)
        if (t[i]) {
            memcpy(t[i]->data, buf + at, (size_t)bd_tensor_count(t[i]) * sizeof *buf);
            at += bd_tensor_count(t[i]);
        }
    free(buf);
    return s;
}

double bd_dist_share_of(int64_t local, int64_t global)
{
    return global > 0 && local != global ? (double)local / (double)global : 1.0;
}

void bd_dist_share_loss(bd_tensor *dlogits, double *loss, int64_t global)
{
    const double w = dlogits && dlogits->ndim > 0 ? bd_dist_share_of(dlogits->dims[0], global) : 1;
    if (w == 1)
        return;
    float *d = dlogits->data;
    for (int64_t i = 0; i < bd_tensor_count(dlogits); i++)
        d[i] = (float)(d[i] * w);
    *loss *= w;
}

bd_status bd_dist_broadcast(void *buf, size_t bytes)
{
#ifdef BD_HAVE_MPI
    for (size_t at = 0; g_size > 1 && at < bytes; at += INT_MAX / 2) {
        const size_t k = bytes - at < INT_MAX / 2 ? bytes - at : INT_MAX / 2;
        MPI_Bcast((char *)buf + at, (int)k, MPI_BYTE, 0, MPI_COMM_WORLD);
    }
#else
    (void)buf;
    (void)bytes;
#endif
    return BD_OK;
}

bd_status bd_dist_gather_rows(float *buf, int32_t *tag, int64_t *n, int64_t len,
                              int64_t capacity)
{
#ifdef BD_HAVE_MPI
    if (g_size == 1)
        return BD_OK;
    int64_t *counts = calloc((size_t)g_size, sizeof *counts);
    if (!counts)
        return bd_fail(BD_ENOMEM, "out of memory");
    MPI_Allgather(n, 1, MPI_INT64_T, counts, 1, MPI_INT64_T, MPI_COMM_WORLD);
    int64_t total = 0;
    for (int r = 0; r < g_size; r++)
        total += counts[r];
    float *all = malloc((size_t)(total * len + 1) * sizeof *all);
    int32_t *tags = malloc((size_t)(total + 1) * sizeof *tags);
    int *rc = malloc(2 * (size_t)g_size * sizeof *rc);
    bd_status s = all && tags && rc && total * len < INT_MAX
                      ? BD_OK
                      : bd_fail(BD_ENOMEM, "out of memory for %lld gathered rows",
                                (long long)total);
    if (s == BD_OK) {
        int *displ = rc + g_size;
        for (int pass = 0; pass < 2; pass++) {
            const int64_t per = pass ? 1 : len;
            for (int r = 0, at = 0; r < g_size; r++) {
                rc[r] = (int)(counts[r] * per);
                displ[r] = at;
                at += rc[r];
            }
            if (pass == 0)
                MPI_Allgatherv(buf, (int)(*n * len), MPI_FLOAT, all, rc, displ, MPI_FLOAT,
                               MPI_COMM_WORLD);
            else if (tag)
                MPI_Allgatherv(tag, (int)*n, MPI_INT32_T, tags, rc, displ, MPI_INT32_T,
                               MPI_COMM_WORLD);
        }
        *n = total < capacity ? total : capacity;
        memcpy(buf, all, (size_t)(*n * len) * sizeof *buf);
        if (tag)
            memcpy(tag, tags, (size_t)*n * sizeof *tag);
    }
    free(counts);
    free(all);
    free(tags);
    free(rc);
    return s;
#else
    (void)buf;
    (void)tag;
    (void)n;
    (void)len;
    (void)capacity;
    return BD_OK;
#endif
}

bd_status bd_dist_agree(bd_status s, uint64_t hash, int *printer)
{
    *printer = s != BD_OK;
#ifdef BD_HAVE_MPI
    if (g_size == 1)
        return s;
    int first = s != BD_OK ? g_rank : g_size;
    MPI_Allreduce(MPI_IN_PLACE, &first, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
    if (first < g_size) {
        *printer = g_rank == first;
        if (g_rank == first)
            return bd_error_context(s, "rank %d of %d", g_rank, g_size);
        return bd_fail(BD_EINVAL, "rank %d of %d failed its setup", first, g_size);
    }
    uint64_t zero = hash;
    MPI_Bcast(&zero, 1, MPI_UINT64_T, 0, MPI_COMM_WORLD);
    int differs = zero != hash ? g_rank : g_size;
    MPI_Allreduce(MPI_IN_PLACE, &differs, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
    if (differs == g_size)
        return BD_OK;
    *printer = g_rank == 0;
    return bd_fail(BD_EINVAL,
                   "the ranks disagree: rank %d has another model, data or options than rank 0 "
                   "(every rank must run the same command on the same files)",
                   differs);
#else
    (void)hash;
    return s;
#endif
}

_Noreturn void bd_dist_abort(int code)
{
    fflush(stdout);
    fflush(stderr);
#ifdef BD_HAVE_MPI
    if (g_joined && g_size > 1)
        MPI_Abort(MPI_COMM_WORLD, code);
#endif
    exit(code);
}

uint64_t bd_dist_hash(uint64_t h, const void *bytes, size_t n)
{
    uLong c = (uLong)h;
    for (size_t at = 0; at < n; at += 1u << 30) {
        const size_t k = n - at < (1u << 30) ? n - at : 1u << 30;
        c = crc32(c, (const Bytef *)bytes + at, (uInt)k);
    }
    return c;
}
