/* The JSON report of a quantization: per layer name, op, shape, d, k,
 * bits_per_weight, bytes, rel_error, objective history, seconds, and for a
 * layer whose input has an activation quantizer (act_quant.h) act_bits and
 * act_range; totals fp32_bytes, compressed_bytes (the payload, with the
 * split into codes, codebooks and the fp32 rest), file_bytes (the file as
 * written), ratio, mean_bits (the quantized layers' code bits per weight,
 * weighted by their parameters; null when none is), mean_act_bits (over
 * the layers with an activation quantizer; absent when none has), and
 * top-1/top-5 of teacher and student when they were evaluated. Written
 * atomically. */
#ifndef BD_REPORT_H
#define BD_REPORT_H

#include "graph.h"
#include "layers.h"
#include "codec.h"
#include "size.h"
#include "workspace.h"

typedef struct bd_report {
    const bd_graph *g;
    const bd_layer *layers;
    int nlayers;
    const bd_qlayer *const *q; /* NULL / k == 0: not quantized */
    const bd_model_size *size;
    const bd_accuracy *teacher, *student; /* NULL (or not valid) when not evaluated */
    int64_t file_bytes; /* the file written; <= 0: none */
} bd_report;

/* The report as a JSON string (malloc'ed). */
bd_status bd_report_json(const bd_report *r, char **json);
bd_status bd_report_write(const bd_report *r, const char *path);

#endif
