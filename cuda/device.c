/* The GPU as a bd_device: opening it, its memory (a cache of freed blocks
 * in front of the runtime), GPU tensors, and the GPU copies of a graph's
 * initializers. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dev.h"
#include "dist.h"

bd_status bd_dev_enter(bd_device *dev) { return bd_cu_set_device(dev->ordinal); }

bd_status bd_cuda_device_open(const char *name, bd_device **out)
{
    *out = NULL;
    if (strcmp(name, "cuda") != 0)
        return bd_fail(BD_EINVAL, "unknown device '%s'", name);
    int count = 0;
    if (bd_cu_device_count(&count) != BD_OK) {
        char why[400];
        snprintf(why, sizeof why, "%s", bd_error_message());
        return bd_fail(BD_EUNSUPPORTED, "no usable CUDA driver or GPU (%s)", why);
    }
    if (count < 1)
        return bd_fail(BD_EUNSUPPORTED, "no CUDA GPU is visible");
    bd_device *dev = calloc(1, sizeof *dev);
    if (!dev)
        return bd_fail(BD_ENOMEM, "out of memory");
    /* the first GPU; the ranks of a job on one machine spread over its GPUs */
    dev->ordinal = bd_dist_size() > 1 ? bd_dist_local_rank() % count : 0;
    char gpu[128];
    size_t bytes = 0;
    int major = 0, minor = 0;
    bd_status s = bd_dev_enter(dev);
    if (s == BD_OK)
        s = bd_cu_device_props(dev->ordinal, gpu, sizeof gpu, &bytes, &major, &minor);
    if (s == BD_OK && (s = bd_cu_probe()) != BD_OK) {
        char why[400];
        snprintf(why, sizeof why, "%s", bd_error_message());
        s = bd_fail(BD_EUNSUPPORTED,
                    "%s (compute capability %d.%d) cannot run this build's code (sm_90, or PTX "
                    "for compute 7.5 and later): %s",
                    gpu, major, minor, why);
    }
    if (s == BD_OK)
        s = bd_cu_blas_new(&dev->blas);
    if (s != BD_OK) {
        free(dev);
        return s;
    }
    snprintf(dev->desc, sizeof dev->desc, "%s, %.1f GiB", gpu,
             (double)bytes / (1024.0 * 1024.0 * 1024.0));
    if (dev->ordinal > 0) {
        const size_t used = strlen(dev->desc);
        snprintf(dev->desc + used, sizeof dev->desc - used, " (GPU %d)", dev->ordinal);
    }
    *out = dev;
    return BD_OK;
}

/* Gives the cached blocks back to the runtime. */
static void cache_flush(bd_device *dev)
{
    for (int i = 0; i < dev->ncache; i++)
        bd_cu_free(dev->cache[i].ptr);
    dev->ncache = 0;
}

void bd_cuda_device_close(bd_device *dev)
{
    if (!dev)
        return;
    bd_dev_enter(dev);
    cache_flush(dev);
    free(dev->cache);
    bd_cu_blas_free(dev->blas);
    free(dev);
}

const char *bd_cuda_device_describe(const bd_device *dev) { return dev->desc; }

/* Sizes are rounded so that nearly equal requests share blocks. */
static size_t rounded(size_t bytes) { return (bytes + 511) / 512 * 512; }

bd_status bd_dev_alloc(bd_device *dev, size_t bytes, void **p)
{
    bytes = rounded(bytes);
    for (int i = 0; i < dev->ncache; i++)
        if (dev->cache[i].bytes == bytes) {
            *p = dev->cache[i].ptr;
            dev->cache[i] = dev->cache[--dev->ncache];
            return BD_OK;
        }
    if (bd_cu_malloc(p, bytes) == BD_OK)
        return BD_OK;
    bd_error_clear();
    cache_flush(dev);
    return bd_cu_malloc(p, bytes);
}

void bd_dev_release(bd_device *dev, void *p, size_t bytes)
{
    if (!p)
        return;
    if (dev->ncache == dev->cache_cap) {
        int cap = dev->cache_cap ? 2 * dev->cache_cap : 64;
        bd_dblock *more = realloc(dev->cache, (size_t)cap * sizeof *more);
        if (!more) { /* no room to remember it: give it back */
            bd_cu_free(p);
            return;
        }
        dev->cache = more;
        dev->cache_cap = cap;
    }
    dev->cache[dev->ncache++] = (bd_dblock){p, rounded(bytes)};
}

/* ---- GPU tensors ------------------------------------------------------------- */

int64_t bd_dt_count(const bd_dt *t)
{
    int64_t n = 1;
    for (int d = 0; d < t->ndim; d++)
        n *= t->dims[d];
    return n;
}

bd_device *bd_dt_device(const bd_dt *t) { return t->buf->dev; }

bd_status bd_dt_new(bd_device *dev, int ndim, const int64_t *dims, bd_dt **out)
{
    *out = NULL;
    if (ndim < 0 || ndim > BD_MAX_DIMS)
        return bd_fail(BD_EINVAL, "a GPU tensor of rank %d", ndim);
    int64_t count;
    BD_TRY(bd_shape_count(ndim, dims, &count, "a GPU tensor"));
    bd_dt *t = calloc(1, sizeof *t);
    bd_dbuf *b = calloc(1, sizeof *b);
    if (!t || !b) {
        free(t);
        free(b);
        return bd_fail(BD_ENOMEM, "out of memory");
    }
    b->refs = 1;
    b->bytes = (size_t)count * sizeof(float);
    b->dev = dev;
    bd_status s = bd_dev_alloc(dev, b->bytes, &b->ptr);
    if (s != BD_OK) {
        free(t);
        free(b);
        return s;
    }
    t->ndim = ndim;
    if (ndim)
        memcpy(t->dims, dims, (size_t)ndim * sizeof *dims);
    t->buf = b;
    t->data = b->ptr;
    *out = t;
    return BD_OK;
}

bd_status bd_dt_zeros(bd_device *dev, int ndim, const int64_t *dims, bd_dt **out)
{
    BD_TRY(bd_dt_new(dev, ndim, dims, out));
    bd_status s = bd_cu_zero((*out)->data, (*out)->buf->bytes);
    if (s != BD_OK) {
        bd_dt_free(*out);
        *out = NULL;
    }
    return s;
}

bd_status bd_dt_view(const bd_dt *src, int ndim, const int64_t *dims, bd_dt **out)
{
    *out = NULL;
    int64_t count;
    BD_TRY(bd_shape_count(ndim, dims, &count, "a GPU view"));
    if (count != bd_dt_count(src))
        return bd_fail(BD_EINVAL, "cannot view %lld elements as %lld", (long long)bd_dt_count(src),
                       (long long)count);
    bd_dt *t = calloc(1, sizeof *t);
    if (!t)
        return bd_fail(BD_ENOMEM, "out of memory");
    t->ndim = ndim;
    if (ndim)
        memcpy(t->dims, dims, (size_t)ndim * sizeof *dims);
    t->buf = src->buf;
    t->data = src->data;
    t->buf->refs++;
    *out = t;
    return BD_OK;
}

bd_status bd_dt_clone(const bd_dt *src, bd_dt **out)
{
    BD_TRY(bd_dt_new(src->buf->dev, src->ndim, src->dims, out));
    bd_status s = bd_cu_copy((*out)->data, src->data, (size_t)bd_dt_count(src) * sizeof(float));
    if (s != BD_OK) {
        bd_dt_free(*out);
        *out = NULL;
    }
    return s;
}

bd_status bd_dt_upload(bd_device *dev, const bd_tensor *t, bd_dt **out)
{
    *out = NULL;
    if (t->dtype != BD_F32)
        return bd_fail(BD_EUNSUPPORTED, "the GPU takes float32 tensors, not %s",
                       bd_dtype_name(t->dtype));
    BD_TRY(bd_dt_new(dev, t->ndim, t->dims, out));
    bd_status s = bd_cu_upload((*out)->data, t->data, bd_tensor_nbytes(t));
    if (s != BD_OK) {
        bd_dt_free(*out);
        *out = NULL;
    }
    return s;
}

bd_status bd_dt_download(const bd_dt *t, bd_tensor **out)
{
    BD_TRY(bd_tensor_new_raw(out, BD_F32, t->ndim, t->dims, "a copy from the GPU"));
    bd_status s = bd_cu_download((*out)->data, t->data, bd_tensor_nbytes(*out));
    if (s != BD_OK) {
        bd_tensor_free(*out);
        *out = NULL;
    }
    return s;
}

void bd_dt_free(bd_dt *t)
{
    if (!t)
        return;
    if (--t->buf->refs == 0) {
        bd_dev_release(t->buf->dev, t->buf->ptr, t->buf->bytes);
        free(t->buf);
    }
    free(t);
}

void bd_dt_header(const bd_dt *t, bd_tensor *h, bd_storage *st)
{
    memset(h, 0, sizeof *h);
    memset(st, 0, sizeof *st);
    st->refs = 1; /* the caller's: views made of h never free it */
    h->dtype = BD_F32;
    h->ndim = t->ndim;
    memcpy(h->dims, t->dims, sizeof h->dims);
    h->storage = st;
}

/* ---- a graph's initializers on the GPU ---------------------------------------- */

/* Float initializers some node reads. */
static int wanted(const bd_graph *g, int v, const unsigned char *read)
{
    const bd_tensor *t = g->values[v].init;
    return t && t->dtype == BD_F32 && read[v];
}

void bd_dparams_free(bd_dparams *p)
{
    for (int v = 0; p->g && v < p->g->nvalues; v++) {
        if (p->dev_copy)
            bd_dt_free(p->dev_copy[v]);
        if (p->uploaded)
            free(p->uploaded[v]);
    }
    free(p->dev_copy);
    free(p->uploaded);
    memset(p, 0, sizeof *p);
}

bd_status bd_dparams_init(bd_dparams *p, bd_device *dev, const bd_graph *g, int track)
{
    memset(p, 0, sizeof *p);
    p->dev = dev;
    p->g = g;
    unsigned char *read = calloc((size_t)g->nvalues + 1, 1);
    p->dev_copy = calloc((size_t)g->nvalues + 1, sizeof *p->dev_copy);
    if (track)
        p->uploaded = calloc((size_t)g->nvalues + 1, sizeof *p->uploaded);
    bd_status s = read && p->dev_copy && (!track || p->uploaded)
                      ? BD_OK
                      : bd_fail(BD_ENOMEM, "out of memory");
    for (int i = 0; s == BD_OK && i < g->nnodes; i++)
        for (int k = 0; k < g->nodes[i].ninputs; k++)
            if (g->nodes[i].inputs[k] >= 0)
                read[g->nodes[i].inputs[k]] = 1;
    for (int v = 0; s == BD_OK && v < g->nvalues; v++) {
        if (!wanted(g, v, read))
            continue;
        const bd_tensor *t = g->values[v].init;
        s = bd_dt_upload(dev, t, &p->dev_copy[v]);
        if (s == BD_OK && track) {
            p->uploaded[v] = malloc(bd_tensor_nbytes(t) + 1);
            if (p->uploaded[v])
                memcpy(p->uploaded[v], t->data, bd_tensor_nbytes(t));
            else
                s = bd_fail(BD_ENOMEM, "out of memory for a copy of '%s'", g->values[v].name);
        }
    }
    free(read);
    if (s != BD_OK)
        bd_dparams_free(p);
    return s;
}

bd_status bd_dparams_sync(bd_dparams *p)
{
    for (int v = 0; v < p->g->nvalues; v++) {
        const bd_tensor *t = p->g->values[v].init;
        if (!p->dev_copy[v] || !p->uploaded || !t)
            continue;
        size_t bytes = bd_tensor_nbytes(t);
        if (t->dtype != BD_F32 || (size_t)bd_dt_count(p->dev_copy[v]) * sizeof(float) != bytes)
            return bd_fail(BD_EINVAL, "'%s' changed type or shape since it went to the GPU",
                           p->g->values[v].name);
        if (memcmp(p->uploaded[v], t->data, bytes) == 0)
            continue;
        BD_TRY(bd_cu_upload(p->dev_copy[v]->data, t->data, bytes));
        memcpy(p->uploaded[v], t->data, bytes);
    }
    return BD_OK;
}
