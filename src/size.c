#include "size.h"

#include <string.h>

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
