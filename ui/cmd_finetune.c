/* bitdown finetune COMPRESSED.onnx -o OUT.onnx: tune the codebooks of a
 * compressed model, layer by layer or all together. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "progress_bar.h"
#include "threads.h"
#include "workspace.h"

enum { OPT_TABLE = 2000, OPT_TEACHER = 1100, OPT_DATA, OPT_EVAL, OPT_EVAL_N, OPT_THREADS };

static void usage(void)
{
    static char opts[8192];
    bd_opt_op_help(&bd_finetune_op, 1, opts, sizeof opts);
    printf("usage: bitdown finetune COMPRESSED.onnx -o OUT.onnx [options]\n\n"
           "Tunes the centroids of the quantized layers of a compressed model (written by\n"
           "'bitdown quantize' or 'save'): a centroid's gradient is the mean of the\n"
           "gradients of the weights that point to it, SGD with momentum and weight decay.\n"
           "The codes stay; the output is the same compressed ONNX with tuned centroids.\n"
           "The options after --threads are the command language's 'finetune' keys and\n"
           "bd.finetune's fields, spelled --key.\n\n"
           "  -o, --output FILE        where to write (atomically)\n"
           "  --teacher MODEL          the original model (default: the one the file names)\n"
           "  --data SPEC              training images (default: the model's dataset, train)\n"
           "  --eval SPEC              evaluate teacher and student on SPEC afterwards\n"
           "  --eval-n N               only the first N evaluation images\n"
           "  --threads T              CPU threads (default: all cores)\n"
           "%s" CLI_PREPROCESS_HELP,
           opts);
}

typedef struct args {
    const char *model, *out, *teacher, *data, *eval;
    long eval_n, threads;
    bd_finetune_options o;
    cli_preprocess cp;
} args;

static int parse(int argc, char **argv, args *a)
{
    enum { NFIXED = 14, MAXOPTS = 64 };
    static struct option opts[MAXOPTS];
    static char names[MAXOPTS][48];
    const struct option fixed[NFIXED] = {
        {"help", no_argument, 0, 'h'},           {"output", required_argument, 0, 'o'},
        {"teacher", required_argument, 0, OPT_TEACHER},
        {"data", required_argument, 0, OPT_DATA}, {"eval", required_argument, 0, OPT_EVAL},
        {"eval-n", required_argument, 0, OPT_EVAL_N},
        {"threads", required_argument, 0, OPT_THREADS},
        CLI_PREPROCESS_LONGOPTS};
    int n = 0;
    for (; n < NFIXED && fixed[n].name; n++)
        opts[n] = fixed[n];
    cli_table_longopts(&bd_finetune_op, OPT_TABLE, opts, names, &n, MAXOPTS);
    memset(a, 0, sizeof *a);
    bd_finetune_options_init(&a->o);
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "ho:", opts, NULL)) != -1) {
        if (cli_preprocess_option(&a->cp, c, optarg))
            continue;
        const char *value;
        const bd_opt *o = cli_table_entry(&bd_finetune_op, OPT_TABLE, c, optarg, &value);
        if (o) {
            if (cli_table_set("finetune", &bd_finetune_op, &a->o, o, value) != CLI_OK)
                return CLI_USAGE;
            continue;
        }
        switch (c) {
        case 'h': usage(); exit(CLI_OK);
        case 'o': a->out = optarg; break;
        case OPT_TEACHER: a->teacher = optarg; break;
        case OPT_DATA: a->data = optarg; break;
        case OPT_EVAL: a->eval = optarg; break;
        case OPT_EVAL_N:
            if (cli_parse_int("finetune", "--eval-n", optarg, 1, 1L << 40, &a->eval_n) != CLI_OK)
                return CLI_USAGE;
            break;
        case OPT_THREADS:
            if (cli_parse_int("finetune", "--threads", optarg, 1, 1024, &a->threads) != CLI_OK)
                return CLI_USAGE;
            break;
        default: return cli_bad_table_option("finetune", argv, opts);
        }
    }
    if (optind != argc - 1)
        return cli_usage_error("finetune", "expects one COMPRESSED model");
    if (!a->out)
        return cli_usage_error("finetune", "-o OUT.onnx is needed");
    a->model = argv[optind];
    return CLI_OK;
}

static bd_status tune(bd_workspace *ws, const args *a)
{
    if (a->data)
        BD_TRY(bd_ws_data(ws, BD_DATA_CALIB, a->data, 0));
    else if (!bd_ws_data_spec(ws, BD_DATA_CALIB))
        return bd_fail(BD_EINVAL, "--data is needed: %s names no dataset", a->model);
    else
        BD_TRY(bd_ws_data(ws, BD_DATA_CALIB, bd_ws_data_spec(ws, BD_DATA_CALIB), 0));
    bd_accuracy t, before, after;
    if (a->eval) {
        BD_TRY(bd_ws_data(ws, BD_DATA_EVAL, a->eval, a->eval_n));
        BD_TRY(bd_ws_eval(ws, 0, &t, &before));
        cli_progress_clear();
        cli_print_accuracy("teacher", &t, NULL);
        cli_print_accuracy("student", &before, "before fine-tuning");
    }
    if (cli_dist_agree(bd_ws_teacher(ws)) != CLI_OK)
        return BD_EINVAL;
    cli_dist_share_note("finetune", a->o.batch);
    bd_finetune_report r;
    bd_status s = bd_ws_finetune(ws, "*", &a->o, &r);
    cli_progress_clear();
    BD_TRY(s);
    printf("%s fine-tuning: %d steps, loss %.5f -> %.5f, %.1f images/s, %.1f s\n",
           a->o.global ? "global" : "layer-wise", r.steps, r.first_loss, r.last_loss,
           r.images_per_second, r.seconds);
    if (a->eval) {
        s = bd_ws_eval(ws, 0, &t, &after);
        cli_progress_clear();
        BD_TRY(s);
        cli_print_accuracy("student", &after, "after fine-tuning");
    }
    BD_TRY(bd_ws_save(ws, a->out, 0));
    cli_print_written(ws, a->out, 0);
    return BD_OK;
}

int cli_finetune(int argc, char **argv)
{
    args a;
    int rc = parse(argc, argv, &a);
    if (rc != CLI_OK)
        return rc;
    if (a.threads)
        bd_threads_set((int)a.threads);
    bd_workspace *ws = NULL;
    bd_status s = bd_ws_new(&ws);
    if (s == BD_OK)
        s = bd_ws_load_teacher(ws, a.model, a.teacher);
    if (s == BD_OK && (rc = cli_preprocess_ws("finetune", &a.cp, ws)) != CLI_OK) {
        bd_ws_free(ws);
        return rc;
    }
    if (s == BD_OK && (s = bd_ws_batch(ws, a.o.batch)) == BD_OK) {
        bd_ws_seed(ws, a.o.seed);
        cli_ws_attach(ws);
        s = tune(ws, &a);
        cli_ws_detach();
    }
    rc = s == BD_OK ? CLI_OK : cli_report(s);
    bd_ws_free(ws);
    return rc;
}
