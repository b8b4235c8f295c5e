/* The GPU engines in a job of ranks (docs/distributed.md): dist.h's
 * collectives for what lives in GPU memory, through NCCL (nccl.cu). The
 * communicator is made on the first sum, on every rank at the same point
 * of the same step: rank 0 makes its id and MPI (bd_dist_broadcast) takes
 * it to the others. */
#include <stdlib.h>

#include "dev.h"
#include "dist.h"

int bd_dev_ranks(void) { return bd_cu_nccl_built() && bd_dist_joined(); }

/* What rank 0 sends: whether it made an id, so that a failure there fails
 * every rank (rather than leaving them waiting in NCCL's init), and the id. */
typedef struct nccl_root {
    int ok;
    unsigned char id[BD_CU_NCCL_ID];
} nccl_root;

static bd_status communicator(void)
{
    static int made;
    if (made)
        return BD_OK;
    nccl_root root = {.ok = 1};
    bd_status s = bd_dist_rank() == 0 ? bd_cu_nccl_id(root.id) : BD_OK;
    root.ok = s == BD_OK;
    BD_TRY(bd_dist_broadcast(&root, sizeof root));
    if (!root.ok)
        return s != BD_OK ? s
                          : bd_fail(BD_EIO, "NCCL: rank 0 could not make the job's "
                                            "communicator id");
    BD_TRY(bd_cu_nccl_init(root.id, bd_dist_size(), bd_dist_rank()));
    made = 1;
    return BD_OK;
}

bd_status bd_dev_sum_f64(double *v, int64_t n)
{
    if (!bd_dev_ranks())
        return BD_OK;
    BD_TRY(communicator());
    return bd_cu_nccl_sum_f64(v, n);
}

bd_status bd_dev_sum_grads(bd_dt *const *g, int n)
{
    if (!bd_dev_ranks())
        return BD_OK;
    BD_TRY(communicator());
    float **v = malloc((size_t)n * sizeof *v + 1);
    int64_t *count = malloc((size_t)n * sizeof *count + 1);
    int k = 0;
    for (int i = 0; v && count && i < n; i++)
        if (g[i]) {
            v[k] = g[i]->data;
            count[k++] = bd_dt_count(g[i]);
        }
    bd_status s = v && count ? bd_cu_nccl_sum_f32(v, count, k)
                             : bd_fail(BD_ENOMEM, "out of memory");
    free(v);
    free(count);
    return s;
}

bd_status bd_dev_share_loss(bd_dt *dlogits, double *loss, int64_t global)
{
    const double w = dlogits->ndim > 0 ? bd_dist_share_of(dlogits->dims[0], global) : 1;
    if (!bd_dev_ranks() || w == 1)
        return BD_OK;
    *loss *= w;
    return bd_cu_scale(dlogits->data, bd_dt_count(dlogits), w);
}
