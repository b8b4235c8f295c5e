#include "report.h"

#include <cJSON.h>
#include <stdlib.h>
#include <string.h>

#include "act_quant.h"
#include "fileio.h"

static cJSON *shape_json(const bd_tensor *t)
{
    cJSON *a = cJSON_CreateArray();
    for (int i = 0; a && i < t->ndim; i++)
        cJSON_AddItemToArray(a, cJSON_CreateNumber((double)t->dims[i]));
    return a;
}

static cJSON *layer_json(const bd_report *r, int i)
{
    const bd_layer *l = &r->layers[i];
    const bd_qlayer *q = r->q ? r->q[i] : NULL;
    int quantized = q && q->k > 0;
    cJSON *o = cJSON_CreateObject();
    if (!o)
        return NULL;
    cJSON_AddStringToObject(o, "name", l->name);
    cJSON_AddStringToObject(o, "op", l->op);
    cJSON_AddItemToObject(o, "shape", shape_json(r->g->values[l->weight].init));
    cJSON_AddBoolToObject(o, "quantized", quantized);
    bd_act_grid act;
    if (bd_act_quant_find(r->g, l->node, &act)) { /* BitPruning's activations */
        cJSON_AddNumberToObject(o, "act_bits", act.bits);
        const double range[2] = {(double)act.qmin * act.scale, (double)act.qmax * act.scale};
        cJSON_AddItemToObject(o, "act_range", cJSON_CreateDoubleArray(range, 2));
    }
    int64_t params = bd_layer_params(l);
    if (!quantized) {
        cJSON_AddNumberToObject(o, "bytes", (double)(4 * params));
        return o;
    }
    cJSON_AddStringToObject(o, "format", bd_format_name(q->format));
    cJSON_AddNumberToObject(o, "d", q->d);
    cJSON_AddNumberToObject(o, "k", q->k);
    if (q->format == BD_FMT_INT) {
        /* the mean when rows have bits of their own */
        cJSON_AddNumberToObject(o, "bits", bd_qlayer_bits_per_weight(q));
        cJSON_AddStringToObject(o, "per", q->ints.per_channel ? "channel" : "tensor");
        cJSON_AddBoolToObject(o, "symmetric", q->ints.symmetric);
    }
    cJSON_AddStringToObject(o, "objective", bd_objective_name(q->objective));
    cJSON_AddNumberToObject(o, "bits_per_weight", bd_qlayer_bits_per_weight(q));
    cJSON_AddNumberToObject(o, "bytes", (double)bd_qlayer_bytes(q));
    if (q->rel_error >= 0)
        cJSON_AddNumberToObject(o, "rel_error", q->rel_error);
    else
        cJSON_AddNullToObject(o, "rel_error");
    if (q->other_error >= 0)
        cJSON_AddNumberToObject(o, "rel_error_other_objective", q->other_error);
    cJSON *hist = cJSON_CreateDoubleArray(q->history, q->iters);
    cJSON_AddItemToObject(o, "objective_history", hist ? hist : cJSON_CreateArray());
    cJSON_AddNumberToObject(o, "seconds", q->seconds);
    cJSON_AddNumberToObject(o, "empty_clusters_repaired", q->empty_repaired);
    cJSON_AddNumberToObject(o, "restarts", q->restarts);
    cJSON_AddNumberToObject(o, "best_restart", q->best_restart);
    cJSON_AddBoolToObject(o, "exact", q->exact);
    cJSON_AddNumberToObject(o, "fit_rows", (double)q->fit_rows);
    cJSON_AddNumberToObject(o, "held_out_rows", (double)q->held_rows);
    return o;
}

/* The bits a weight's code takes: an int layer's own, a PQ code spread over
 * its block. Table bytes are left out: this is the number a bit-length
 * target speaks of. */
static double code_bits(const bd_qlayer *q)
{
    return q->format == BD_FMT_INT ? bd_qlayer_bits_per_weight(q) /* rows' mean */
                                   : (double)bd_code_bits(q->k) / q->d;
}

/* The quantized layers' mean code bits, weighted by their parameters;
 * null when none is quantized. */
static void add_mean_bits(cJSON *totals, const bd_report *r)
{
    double params = 0, bits = 0;
    for (int i = 0; r->q && i < r->nlayers; i++) {
        const bd_qlayer *q = r->q[i];
        if (!q || q->k <= 0)
            continue;
        double p = (double)bd_layer_params(&r->layers[i]);
        params += p;
        bits += p * code_bits(q);
    }
    if (params > 0)
        cJSON_AddNumberToObject(totals, "mean_bits", bits / params);
    else
        cJSON_AddNullToObject(totals, "mean_bits");
    int acts = 0;
    double act_bits = 0;
    for (int i = 0; i < r->nlayers; i++) {
        bd_act_grid act;
        if (bd_act_quant_find(r->g, r->layers[i].node, &act)) {
            acts++;
            act_bits += act.bits;
        }
    }
    if (acts)
        cJSON_AddNumberToObject(totals, "mean_act_bits", act_bits / acts);
}

static void add_accuracy(cJSON *totals, const char *who, const bd_accuracy *e)
{
    if (!e || !e->valid)
        return;
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "top1", e->top1);
    cJSON_AddNumberToObject(o, "top5", e->top5);
    cJSON_AddNumberToObject(o, "images", (double)e->n);
    cJSON_AddItemToObject(totals, who, o);
}

bd_status bd_report_json(const bd_report *r, char **json)
{
    cJSON *root = cJSON_CreateObject();
    cJSON *layers = cJSON_CreateArray();
    cJSON *totals = cJSON_CreateObject();
    if (!root || !layers || !totals) {
        cJSON_Delete(root);
        cJSON_Delete(layers);
        cJSON_Delete(totals);
        return bd_fail(BD_ENOMEM, "out of memory");
    }
    cJSON_AddItemToObject(root, "layers", layers);
    cJSON_AddItemToObject(root, "totals", totals);
    for (int i = 0; i < r->nlayers; i++)
        cJSON_AddItemToArray(layers, layer_json(r, i));
    const bd_model_size *s = r->size;
    cJSON_AddNumberToObject(totals, "fp32_bytes", (double)s->fp32_bytes);
    cJSON_AddNumberToObject(totals, "compressed_bytes", (double)s->compressed_bytes);
    if (r->file_bytes > 0)
        cJSON_AddNumberToObject(totals, "file_bytes", (double)r->file_bytes);
    cJSON_AddNumberToObject(totals, "code_bytes", (double)s->code_bytes);
    cJSON_AddNumberToObject(totals, "codebook_bytes", (double)s->codebook_bytes);
    cJSON_AddNumberToObject(totals, "other_fp32_bytes", (double)s->other_bytes);
    cJSON_AddNumberToObject(totals, "ratio", s->ratio);
    add_mean_bits(totals, r);
    add_accuracy(totals, "teacher", r->teacher);
    add_accuracy(totals, "student", r->student);
    *json = cJSON_Print(root);
    cJSON_Delete(root);
    return *json ? BD_OK : bd_fail(BD_ENOMEM, "out of memory writing the report");
}

bd_status bd_report_write(const bd_report *r, const char *path)
{
    char *json;
    BD_TRY(bd_report_json(r, &json));
    size_t len = strlen(json);
    const void *chunks[2] = {json, "\n"};
    size_t lens[2] = {len, 1};
    bd_status s = bd_write_file_atomic(path, 2, chunks, lens);
    free(json);
    return s;
}
