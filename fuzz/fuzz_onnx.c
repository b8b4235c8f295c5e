/* The ONNX loader on arbitrary bytes, and what bitdown does next with a
 * model it accepted: the layer list, the preprocessing and class names in
 * its metadata, an execution plan, a run on a small input (every kernel meets
 * the attributes and shapes the file chose), and a save that must load back.
 *
 * External data resolves against a scratch folder holding one data file and
 * a symbolic link that leads out of it, so the confinement checks run on
 * every input that names a location. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "exec.h"
#include "fuzz_common.h"
#include "layers.h"
#include "model_meta.h"
#include "onnx_io.h"

static char model_dir[256];

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    bd_fuzz_init();
    bd_fuzz_external_dir(model_dir, sizeof model_dir);
    return 0;
}

/* What the front-ends read from a loaded model; each may refuse it. */
static void inspect(const bd_graph *g)
{
    bd_layer *layers;
    int n;
    if (bd_layers_find(g, &layers, &n) == BD_OK) {
        char kind[32];
        for (int i = 0; i < n; i++)
            bd_layer_kind(&layers[i], kind, sizeof kind);
        free(layers);
    }
    bd_preprocess pp;
    bd_model_preprocess(g, &pp);
    char **names;
    if (bd_model_class_names(g, &names, &n) == BD_OK)
        bd_class_names_free(names, n);
}

/* Inputs beyond this many elements are not run: the point is the kernels'
 * shape handling, not their speed. */
enum { MAX_INPUT_ELEMENTS = 4096 };

/* Runs g on inputs of its declared types and shapes (unknown or symbolic
 * dimensions as 1), filled with a small repeating pattern; flags choose
 * between the fused plan inference uses and the plain one quantization's
 * hooks see. */
static void run(const bd_graph *g, int flags)
{
    bd_tensor *in[16] = {NULL}, *out[16] = {NULL};
    if (g->ninputs > 16 || g->noutputs > 16)
        return;
    int ok = 1;
    for (int i = 0; i < g->ninputs && ok; i++) {
        const bd_value *v = &g->values[g->inputs[i]];
        int64_t dims[BD_MAX_DIMS], count = 1;
        int ndim = v->ndim < 0 ? 1 : v->ndim;
        for (int d = 0; d < ndim; d++) {
            dims[d] = v->ndim < 0 || v->dims[d] < 0 ? 1 : v->dims[d];
            count = dims[d] > MAX_INPUT_ELEMENTS ? MAX_INPUT_ELEMENTS + 1 : count * dims[d];
            if (count > MAX_INPUT_ELEMENTS)
                break;
        }
        bd_dtype dt = bd_dtype_size(v->dtype) ? v->dtype : BD_F32;
        ok = count <= MAX_INPUT_ELEMENTS && bd_tensor_new(&in[i], dt, ndim, dims, v->name) == BD_OK;
        for (int64_t k = 0; ok && k < count; k++) {
            int64_t x = k % 7 - 3;
            switch (dt) {
            case BD_F32: ((float *)in[i]->data)[k] = (float)x * 0.5f; break;
            case BD_F64: ((double *)in[i]->data)[k] = (double)x * 0.5; break;
            case BD_F16: ((uint16_t *)in[i]->data)[k] = bd_f32_to_f16((float)x); break;
            case BD_I64: ((int64_t *)in[i]->data)[k] = x; break;
            case BD_I32: ((int32_t *)in[i]->data)[k] = (int32_t)x; break;
            default: memset((char *)in[i]->data + k * (int64_t)bd_dtype_size(dt), (int)(k & 1),
                            bd_dtype_size(dt));
            }
        }
    }
    bd_exec *ex;
    if (ok && bd_exec_new(&ex, g, flags) == BD_OK) {
        bd_exec_run(ex, in, out);
        bd_exec_free(ex);
    }
    for (int i = 0; i < 16; i++) {
        bd_tensor_free(in[i]);
        bd_tensor_free(out[i]);
    }
}

/* A model bitdown accepted and wrote out must load again. */
static void round_trip(const bd_graph *g)
{
    void *data;
    size_t len;
    if (bd_onnx_serialize(g, &data, &len) != BD_OK)
        return; /* only when memory runs out */
    bd_graph *again;
    if (bd_onnx_load_buffer(data, len, "saved.onnx", NULL, &again) != BD_OK)
        bd_fuzz_abort("a model that loaded does not load after saving: %s", bd_error_message());
    if (again->nnodes != g->nnodes)
        bd_fuzz_abort("saving changed the node count from %d to %d", g->nnodes, again->nnodes);
    bd_graph_free(again);
    free(data);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    bd_graph *g;
    if (bd_onnx_load_buffer(data, size, "fuzz.onnx", model_dir, &g) != BD_OK)
        return 0;
    inspect(g);
    run(g, size & 1 ? BD_EXEC_FUSE : 0);
    round_trip(g);
    bd_graph_free(g);
    return 0;
}
