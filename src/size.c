#include "size.h"

#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

static int is_float(bd_dtype t) { return t == BD_F32 || t == BD_F16 || t == BD_F64; }

void bd_model_size_compute(const bd_graph *g, const bd_layer *layers, int nlayers,
                           const bd_qlayer *const *q, bd_model_size *out)
{
    memset(out, 0, sizeof *out);
    for (int v = 0; v < g->nvalues; v++) {
        const bd_tensor *t = g->values[v].init;
        if (t && is_float(t->dtype))
            out->fp32_bytes += 4 * bd_tensor_count(t);
    }
    int64_t quantized_fp32 = 0;
    for (int i = 0; i < nlayers; i++) {
        if (!q || !q[i] || q[i]->k == 0)
            continue;
        out->code_bytes += bd_qlayer_code_bytes(q[i]);
        out->codebook_bytes += bd_qlayer_table_bytes(q[i]);
        quantized_fp32 += 4 * bd_layer_params(&layers[i]);
    }
    out->other_bytes = out->fp32_bytes - quantized_fp32;
    out->compressed_bytes = out->code_bytes + out->codebook_bytes + out->other_bytes;
    out->ratio = out->compressed_bytes > 0 ? (double)out->fp32_bytes / (double)out->compressed_bytes
                                           : 0;
}

static int64_t file_bytes(const char *path)
{
    struct stat st;
    return path && stat(path, &st) == 0 ? (int64_t)st.st_size : -1;
}

void bd_disk_size_of(const char *path, const char *original, bd_disk_size *out)
{
    out->bytes = file_bytes(path);
    out->original_bytes = file_bytes(original);
    out->ratio = out->bytes > 0 && out->original_bytes > 0
                     ? (double)out->original_bytes / (double)out->bytes
                     : 0;
}

const char *bd_disk_size_str(const bd_disk_size *d, const bd_model_size *payload, char *buf,
                             size_t cap)
{
    int n;
    if (d->bytes < 0)
        n = snprintf(buf, cap, "size on disk unknown");
    else if (d->ratio > 0)
        n = snprintf(buf, cap, "%.4f MB on disk, ratio %.2fx to the original file (%.4f MB)",
                     bd_mb(d->bytes), d->ratio, bd_mb(d->original_bytes));
    else
        n = snprintf(buf, cap, "%.4f MB on disk", bd_mb(d->bytes));
    if (payload && n >= 0 && (size_t)n < cap)
        snprintf(buf + n, cap - (size_t)n, "; payload %.4f MB, ratio %.2fx",
                 bd_mb(payload->compressed_bytes), payload->ratio);
    return buf;
}
