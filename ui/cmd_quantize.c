/* bitdown quantize MODEL -o OUT.onnx: the whole model, layer by layer. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "compressed.h"
#include "eval.h"
#include "model_meta.h"
#include "onnx_io.h"
#include "plan.h"
#include "progress_bar.h"
#include "report.h"
#include "size.h"
#include "threads.h"

static const char help[] =
    "usage: bitdown quantize MODEL -o OUT.onnx [options]\n\n"
    "Quantizes MODEL's layers in graph order with activation-aware product\n"
    "quantization, each from the student as it stands, and writes the compressed\n"
    "model as standard ONNX (codes -> Cast -> Gather(fp16 centroids) -> Cast ->\n"
    "Reshape), which any ONNX runtime runs. Prints a table per layer and the totals.\n\n"
    "  -o, --output FILE     where to write (atomically)\n"
    "  --calib SPEC          calibration images (default: the model's dataset,\n"
    "                        train split); see 'bitdown eval --help' for SPEC\n"
    "  --calib-n N           calibration images (default 1024)\n"
    "  --regime small|large  the paper's block sizes: small d=9 (3x3), 4 (1x1, fc);\n"
    "                        large d=18, 8, 4; k=256, fc k=2048, clamped (default small)\n"
    "  --set GLOB:d=D,k=K[,objective=act|weight]   override layers matching GLOB\n"
    "                        (fnmatch, e.g. 'layer3.*'); GLOB:skip keeps them fp32;\n"
    "                        repeatable, applied in order\n"
    "  --objective act|weight  act: ||X(W-W^)||^2 (default); weight: ||W-W^||^2\n"
    "  --compare             also fit the other objective on the same inputs and show\n"
    "                        its error (what the activations buy)\n"
    "  --iters N             EM iterations at most (default 100; stops when stable)\n"
    "  --quantize-first      also quantize the first conv (kept fp32 by default)\n"
    "  --seed S              seed for calibration sampling and EM (default 0)\n"
    "  --eval SPEC           evaluate teacher and student on SPEC afterwards\n"
    "  --eval-n N            only the first N evaluation images\n"
    "  --report FILE.json    write the per-layer table and totals as JSON\n"
    "  --decoded             write a plain dense fp32 model instead\n"
    "  --batch B             images per forward pass (default 64)\n"
    "  --threads T           CPU threads (default: all cores)\n";

typedef struct args {
    const char *model, *out, *calib, *regime, *eval, *report;
    const char *sets[64];
    int nsets;
    long calib_n, iters, seed, batch, threads, eval_n;
    int objective, quantize_first, decoded, compare;
} args;

static int parse(int argc, char **argv, args *a)
{
    static const struct option opts[] = {
        {"help", no_argument, 0, 'h'},          {"output", required_argument, 0, 'o'},
        {"calib", required_argument, 0, 'c'},   {"calib-n", required_argument, 0, 'n'},
        {"regime", required_argument, 0, 'r'},  {"set", required_argument, 0, 's'},
        {"objective", required_argument, 0, 'j'}, {"iters", required_argument, 0, 'i'},
        {"quantize-first", no_argument, 0, 'f'}, {"seed", required_argument, 0, 'S'},
        {"eval", required_argument, 0, 'e'},    {"eval-n", required_argument, 0, 'E'},
        {"report", required_argument, 0, 'R'},  {"decoded", no_argument, 0, 'D'},
        {"batch", required_argument, 0, 'b'},   {"threads", required_argument, 0, 't'},
        {"compare", no_argument, 0, 'C'},       {0, 0, 0, 0}};
    memset(a, 0, sizeof *a);
    a->regime = "small";
    a->calib_n = 1024;
    a->iters = 100;
    a->batch = 64;
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "ho:", opts, NULL)) != -1) {
        switch (c) {
        case 'h': fputs(help, stdout); exit(CLI_OK);
        case 'o': a->out = optarg; break;
        case 'c': a->calib = optarg; break;
        case 'r': a->regime = optarg; break;
        case 'e': a->eval = optarg; break;
        case 'R': a->report = optarg; break;
        case 'f': a->quantize_first = 1; break;
        case 'D': a->decoded = 1; break;
        case 'C': a->compare = 1; break;
        case 's':
            if (a->nsets == 64)
                return cli_usage_error("quantize", "at most 64 --set options");
            a->sets[a->nsets++] = optarg;
            break;
        case 'j':
            if (strcmp(optarg, "act") && strcmp(optarg, "weight"))
                return cli_usage_error("quantize", "--objective is act or weight, not '%s'", optarg);
            a->objective = strcmp(optarg, "weight") == 0 ? BD_OBJ_WEIGHT : BD_OBJ_ACT;
            break;
        case 'n':
            if (cli_parse_int("quantize", "--calib-n", optarg, 1, 1L << 30, &a->calib_n))
                return CLI_USAGE;
            break;
        case 'i':
            if (cli_parse_int("quantize", "--iters", optarg, 1, 100000, &a->iters))
                return CLI_USAGE;
            break;
        case 'S':
            if (cli_parse_int("quantize", "--seed", optarg, 0, 1L << 62, &a->seed))
                return CLI_USAGE;
            break;
        case 'E':
            if (cli_parse_int("quantize", "--eval-n", optarg, 1, 1L << 40, &a->eval_n))
                return CLI_USAGE;
            break;
        case 'b':
            if (cli_parse_int("quantize", "--batch", optarg, 1, 1 << 16, &a->batch))
                return CLI_USAGE;
            break;
        case 't':
            if (cli_parse_int("quantize", "--threads", optarg, 1, 1024, &a->threads))
                return CLI_USAGE;
            break;
        default: return cli_usage_error("quantize", "unknown option");
        }
    }
    if (optind != argc - 1)
        return cli_usage_error("quantize", "expects one MODEL");
    a->model = argv[optind];
    if (!a->out)
        return cli_usage_error("quantize", "-o OUT.onnx is needed");
    return CLI_OK;
}

/* The data spec: the option, or the model's dataset with the given split. */
static int data_spec(const bd_graph *g, const char *given, const char *split, const char *option,
                     char *buf, size_t cap, const char **spec)
{
    const char *dataset = bd_graph_meta(g, BD_META_DATASET);
    if (given) {
        *spec = given;
        return CLI_OK;
    }
    if (!dataset)
        return cli_usage_error("quantize", "%s is needed: the model does not name its dataset",
                               option);
    snprintf(buf, cap, "%s:%s", dataset, split);
    *spec = buf;
    return CLI_OK;
}

static const char *error_str(double e, char *buf, size_t cap)
{
    if (e < 0)
        snprintf(buf, cap, "-");
    else
        snprintf(buf, cap, "%.4f", e);
    return buf;
}

static void print_row(const bd_layer *l, const bd_tensor *w, const bd_layer_plan *p,
                      const bd_qlayer *q, int compare)
{
    char shape[64], err[32], other[32];
    bd_shape_str(w->ndim, w->dims, shape, sizeof shape);
    printf("%-26s %-18s ", l->name, shape);
    if (!q || q->k == 0)
        printf("%4s %6s %6s %10.2f %10s", "-", "-", "32", (double)bd_layer_params(l) * 4 / 1024, "-");
    else
        printf("%4d %6d %6.3f %10.2f %10s", q->d, q->k, bd_pq_bits_per_weight(q->k, q->d),
               (double)bd_qlayer_bytes(q) / 1024, error_str(q->rel_error, err, sizeof err));
    if (compare)
        printf(" %10s", q && q->k ? error_str(q->other_error, other, sizeof other) : "-");
    if (!q || q->k == 0)
        printf(" %7s  %s\n", "-", p->note);
    else
        printf(" %7.2f  %s\n", q->seconds, p->note);
    fflush(stdout);
}

static bd_status evaluate(const bd_graph *g, const char *spec, long limit, long batch,
                          const bd_progress *progress, bd_eval_result *r)
{
    bd_preprocess pp;
    bd_dataset *d = NULL;
    bd_exec *ex = NULL;
    BD_TRY(bd_model_preprocess(g, &pp));
    bd_status s = bd_dataset_open(&d, spec, &pp);
    if (s == BD_OK)
        s = bd_exec_new(&ex, g, BD_EXEC_FUSE);
    if (s == BD_OK) {
        bd_eval_options eo = {.limit = limit, .batch = (int)batch};
        s = bd_evaluate(ex, d, &eo, progress, r);
    }
    bd_exec_free(ex);
    bd_dataset_free(d);
    return s;
}

static void print_accuracy(const char *who, const bd_eval_result *r)
{
    printf("%-8s top1 %.2f%% top5 %.2f%% (%lld images)\n", who,
           100.0 * (double)r->top1 / (double)r->n, 100.0 * (double)r->top5 / (double)r->n,
           (long long)r->n);
}

int cli_quantize(int argc, char **argv)
{
    args a;
    int rc = parse(argc, argv, &a);
    if (rc != CLI_OK)
        return rc;
    if (a.threads)
        bd_threads_set((int)a.threads);
    bd_graph *teacher = NULL, *student = NULL, *out = NULL;
    bd_qlayer *loaded = NULL, *q = NULL;
    bd_layer *layers = NULL;
    bd_layer_plan *plan = NULL;
    const bd_qlayer **qp = NULL;
    bd_dataset *calib_data = NULL;
    bd_calib *calib = NULL;
    bd_eval_result et = {0}, es = {0};
    int nlayers = 0, nloaded = 0;
    char calib_buf[4096], eval_buf[4096];
    const char *calib_spec = NULL;
    bd_progress progress = cli_progress_start();
    bd_status s = bd_model_load(a.model, &teacher, &loaded, &nloaded);
    if (s == BD_OK)
        s = bd_graph_clone(&student, teacher);
    if (s == BD_OK)
        s = bd_layers_find(student, &layers, &nlayers);
    if (s == BD_OK) {
        plan = calloc((size_t)nlayers + 1, sizeof *plan);
        q = calloc((size_t)nlayers + 1, sizeof *q);
        qp = calloc((size_t)nlayers + 1, sizeof *qp);
        if (!plan || !q || !qp)
            s = bd_fail(BD_ENOMEM, "out of memory");
    }
    if (s == BD_OK)
        s = bd_plan_regime(layers, nlayers, a.regime, a.quantize_first, plan);
    for (int i = 0; s == BD_OK && i < nlayers; i++)
        plan[i].objective = (bd_objective)a.objective;
    for (int i = 0; s == BD_OK && i < a.nsets; i++)
        s = bd_plan_apply(layers, nlayers, a.sets[i], plan);
    if (s != BD_OK) {
        rc = cli_report(s);
        goto done;
    }
    if ((rc = data_spec(teacher, a.calib, "train", "--calib", calib_buf, sizeof calib_buf,
                        &calib_spec)) != CLI_OK)
        goto done;
    rc = CLI_FAIL;
    bd_preprocess pp;
    bd_calib_options co = {.images = a.calib_n, .batch = (int)a.batch, .seed = (uint64_t)a.seed};
    if ((s = bd_model_preprocess(teacher, &pp)) != BD_OK ||
        (s = bd_dataset_open(&calib_data, calib_spec, &pp)) != BD_OK ||
        (s = bd_calib_new(&calib, student, calib_data, &co)) != BD_OK) {
        cli_report(s);
        goto done;
    }
    printf("quantizing %s: %d layers, %lld calibration images from %s, %s objective\n\n", a.model,
           nlayers, (long long)bd_calib_images(calib), calib_spec,
           a.objective == BD_OBJ_WEIGHT ? "weight-only" : "activation-aware");
    printf("%-26s %-18s %4s %6s %6s %10s %10s", "layer", "weight", "d", "k", "bits/w", "size KB",
           "rel error");
    if (a.compare)
        printf(" %10s", a.objective == BD_OBJ_WEIGHT ? "act error" : "w-only err");
    printf(" %7s\n", "seconds");
    for (int i = 0; i < nlayers; i++) {
        const bd_tensor *w = student->values[layers[i].weight].init;
        if (plan[i].quantize) {
            bd_quantize_options qo = {.d = plan[i].d, .k = plan[i].k,
                                      .objective = plan[i].objective, .iters = (int)a.iters,
                                      .seed = (uint64_t)a.seed, .compare_objectives = a.compare};
            s = bd_quantize_layer(calib, student, &layers[i],
                                  teacher->values[layers[i].weight].init, &qo, &progress, &q[i]);
            cli_progress_clear();
            if (s != BD_OK) {
                cli_report(s);
                goto done;
            }
            qp[i] = &q[i];
        } else if (i < nloaded && loaded[i].k > 0) {
            qp[i] = &loaded[i]; /* a compressed input's layer, left as it was */
        }
        print_row(&layers[i], w, &plan[i], qp[i], a.compare);
    }
    bd_model_size size;
    bd_model_size_compute(student, layers, nlayers, qp, &size);
    printf("\nsize: %.4f MB fp32 -> %.4f MB (codes %.4f + codebooks %.4f + fp32 rest %.4f), "
           "ratio %.2fx\n",
           bd_mb(size.fp32_bytes), bd_mb(size.compressed_bytes), bd_mb(size.code_bytes),
           bd_mb(size.codebook_bytes), bd_mb(size.other_bytes), size.ratio);
    if (a.eval) {
        const char *spec;
        if (data_spec(teacher, a.eval, "test", "--eval", eval_buf, sizeof eval_buf, &spec) != CLI_OK)
            goto done;
        if ((s = evaluate(teacher, spec, a.eval_n, a.batch, &progress, &et)) != BD_OK ||
            (s = evaluate(student, spec, a.eval_n, a.batch, &progress, &es)) != BD_OK) {
            cli_progress_clear();
            cli_report(s);
            goto done;
        }
        cli_progress_clear();
        print_accuracy("teacher", &et);
        print_accuracy("student", &es);
    }
    if (a.decoded)
        s = bd_onnx_save(student, a.out);
    else if ((s = bd_compressed_export(student, layers, nlayers, qp, &out)) == BD_OK)
        s = bd_onnx_save(out, a.out);
    if (s == BD_OK && a.report) {
        bd_report r = {student, layers, nlayers, qp, &size, a.eval ? &et : NULL,
                       a.eval ? &es : NULL};
        s = bd_report_write(&r, a.report);
    }
    if (s != BD_OK) {
        cli_report(s);
        goto done;
    }
    printf("wrote %s%s\n", a.out, a.decoded ? " (decoded, dense fp32)" : "");
    rc = CLI_OK;
done:
    cli_progress_stop();
    bd_eval_result_free(&et);
    bd_eval_result_free(&es);
    bd_calib_free(calib);
    bd_dataset_free(calib_data);
    for (int i = 0; i < nlayers; i++)
        bd_qlayer_free(&q[i]);
    for (int i = 0; i < nloaded; i++)
        bd_qlayer_free(&loaded[i]);
    free(loaded);
    free(q);
    free(qp);
    free(plan);
    free(layers);
    bd_graph_free(out);
    bd_graph_free(student);
    bd_graph_free(teacher);
    return rc;
}
