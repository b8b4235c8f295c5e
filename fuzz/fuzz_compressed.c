/* The compressed-ONNX recogniser on arbitrary models: load, then
 * bd_compressed_import, which finds the decoding expressions (codes -> Cast
 * -> Gather -> Cast -> Reshape [-> Transpose]), runs them and parses the
 * bitdown.* metadata. What it accepts must survive export: writing the
 * codebooks back and importing the file again must work. */
#include <stdint.h>
#include <stdlib.h>

#include "compressed.h"
#include "fuzz_common.h"
#include "onnx_io.h"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    bd_fuzz_init();
    return 0;
}

static void free_qlayers(bd_qlayer *q, int n)
{
    for (int i = 0; q && i < n; i++)
        bd_qlayer_free(&q[i]);
    free(q);
}

/* Export g with its codebooks q (one per layer of g), then load and import
 * the result: a file bitdown writes must read back with as many quantized
 * layers. */
static void re_export(const bd_graph *g, const bd_qlayer *q, int nq)
{
    bd_layer *layers;
    int n;
    if (bd_layers_find(g, &layers, &n) != BD_OK)
        bd_fuzz_abort("the layers of an imported model: %s", bd_error_message());
    if (n != nq)
        bd_fuzz_abort("import gave %d codebooks for %d layers", nq, n);
    const bd_qlayer **qp = calloc((size_t)n + 1, sizeof *qp);
    int quantized = 0;
    for (int i = 0; qp && i < n; i++)
        if (q[i].k > 0) {
            qp[i] = &q[i];
            quantized++;
        }
    bd_graph *out = NULL;
    void *data = NULL;
    size_t len;
    /* export may refuse a graph it cannot extend (a name its expression
     * needs is taken); what it does write must load */
    if (qp && quantized && bd_compressed_export(g, layers, n, qp, &out) == BD_OK &&
        bd_onnx_serialize(out, &data, &len) == BD_OK) {
        bd_graph *back;
        bd_qlayer *q2;
        int n2;
        if (bd_onnx_load_buffer(data, len, "exported.onnx", NULL, &back) != BD_OK)
            bd_fuzz_abort("an exported model does not load: %s", bd_error_message());
        if (bd_compressed_import(back, &q2, &n2) != BD_OK)
            bd_fuzz_abort("an exported model does not import: %s", bd_error_message());
        int again = 0;
        for (int i = 0; i < n2; i++)
            again += q2[i].k > 0;
        if (again != quantized)
            bd_fuzz_abort("%d quantized layers exported, %d imported back", quantized, again);
        free_qlayers(q2, n2);
        bd_graph_free(back);
    }
    free(data);
    bd_graph_free(out);
    free(qp);
    free(layers);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    bd_graph *g;
    if (bd_onnx_load_buffer(data, size, "fuzz.onnx", NULL, &g) != BD_OK)
        return 0;
    bd_qlayer *q;
    int n;
    if (bd_compressed_import(g, &q, &n) == BD_OK) {
        re_export(g, q, n);
        free_qlayers(q, n);
    }
    bd_graph_free(g);
    return 0;
}
