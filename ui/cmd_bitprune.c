/* bitdown bitprune MODEL -o OUT: BitPruning (src/bitprune.h) through a
 * workspace, as the REPL's 'bitprune' runs it: learned bit lengths per
 * layer or channel, the layers stored as int codecs of their bits. The
 * options are BitPruning's table and training's, spelled --key. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bitprune.h"
#include "cli.h"
#include "cmd.h"
#include "progress_bar.h"
#include "size.h"
#include "threads.h"
#include "workspace.h"

enum {
    OPT_TABLE = 2000,
    OPT_DATA = 1100,
    OPT_EVAL,
    OPT_TEACHER,
    OPT_THREADS,
    OPT_REPORT,
    OPT_CKPT,
    OPT_RESUME
};

static void usage(void)
{
    static char opts[16384];
    bd_opt_op_help(&bd_bitprune_op, 1, opts, sizeof opts);
    printf("usage: bitdown bitprune MODEL -o OUT.onnx (--target-bits B | --target-mb S |\n"
           "                        --lambda L) [options]\n\n"
           "Learns a bit length for every layer (or output channel) by training with a\n"
           "penalty on the bits (docs/method.md, \"BitPruning\"), rounds them, fine-tunes\n"
           "at them and writes the compressed model, every layer an int codec of its\n"
           "own bits. With --activations every layer's input learns its bit length too,\n"
           "and the model quantizes it with Div, Round, Clip and Mul before the layer.\n"
           "MODEL's layers must be float. Training's options set the learning phase,\n"
           "with lr 0.01 by default (MODEL is trained already).\n\n"
           "  -o, --output FILE        where to write the compressed model (atomically)\n"
           "  --data SPEC              training images (default: the model's dataset, train)\n"
           "  --eval SPEC              evaluated after every epoch and at the end, on\n"
           "                           --eval-n images (default: its test split, all)\n"
           "  --teacher MODEL          for --loss kl (default: MODEL as loaded)\n"
           "  --checkpoint FILE        written after every epoch of either phase\n"
           "                           (default: OUT.ckpt)\n"
           "  --resume                 continue from the checkpoint, in the phase it was\n"
           "                           written in, with the same options\n"
           "  --threads T              CPU threads (default: all cores)\n"
           "  --report FILE.json       the per-layer table and totals as JSON\n"
           "%s" CLI_PREPROCESS_HELP,
           opts);
}

typedef struct args {
    const char *model, *out, *data, *eval, *teacher, *report, *checkpoint;
    int resume;
    long threads;
    bd_bitprune_options o;
    cli_preprocess cp;
} args;

static int parse(int argc, char **argv, args *a)
{
    enum { NFIXED = 16, MAXOPTS = 128 };
    static struct option opts[MAXOPTS];
    static char names[MAXOPTS][48];
    const struct option fixed[NFIXED] = {
        {"help", no_argument, 0, 'h'},           {"output", required_argument, 0, 'o'},
        {"data", required_argument, 0, OPT_DATA}, {"eval", required_argument, 0, OPT_EVAL},
        {"teacher", required_argument, 0, OPT_TEACHER},
        {"threads", required_argument, 0, OPT_THREADS},
        {"report", required_argument, 0, OPT_REPORT},
        {"checkpoint", required_argument, 0, OPT_CKPT},
        {"resume", no_argument, 0, OPT_RESUME},
        CLI_PREPROCESS_LONGOPTS};
    int n = 0;
    for (; n < NFIXED && fixed[n].name; n++)
        opts[n] = fixed[n];
    cli_table_longopts(&bd_bitprune_op, OPT_TABLE, opts, names, &n, MAXOPTS);
    memset(a, 0, sizeof *a);
    bd_bitprune_options_init(&a->o);
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "ho:", opts, NULL)) != -1) {
        if (cli_preprocess_option(&a->cp, c, optarg))
            continue;
        const char *value;
        const bd_opt *o = cli_table_entry(&bd_bitprune_op, OPT_TABLE, c, optarg, &value);
        if (o) {
            if (cli_table_set("bitprune", &bd_bitprune_op, &a->o, o, value) != CLI_OK)
                return CLI_USAGE;
            continue;
        }
        switch (c) {
        case 'h': usage(); exit(CLI_OK);
        case 'o': a->out = optarg; break;
        case OPT_DATA: a->data = optarg; break;
        case OPT_EVAL: a->eval = optarg; break;
        case OPT_TEACHER: a->teacher = optarg; break;
        case OPT_REPORT: a->report = optarg; break;
        case OPT_CKPT: a->checkpoint = optarg; break;
        case OPT_RESUME: a->resume = 1; break;
        case OPT_THREADS:
            if (cli_parse_int("bitprune", "--threads", optarg, 1, 1024, &a->threads) != CLI_OK)
                return CLI_USAGE;
            break;
        default: return cli_bad_table_option("bitprune", argv, opts);
        }
    }
    if (optind != argc - 1)
        return cli_usage_error("bitprune", "expects one MODEL");
    if (!a->out)
        return cli_usage_error("bitprune", "-o OUT.onnx is needed");
    if (a->o.target_bits <= 0 && a->o.target_mb <= 0 && a->o.lambda < 0)
        return cli_usage_error("bitprune", "one of --target-bits, --target-mb or --lambda is "
                                           "needed");
    a->model = argv[optind];
    return CLI_OK;
}

static void print_epoch(void *user, const bd_training_epoch *e, int epochs)
{
    cli_print_epoch(bd_cmd_bitprune_phase(user), e, epochs);
}

static void print_result(const bd_workspace *ws, const bd_bitprune_report *r, int acts)
{
    printf("\n%-26s %10s %8s %14s", "layer", "params", "learned", "bits");
    printf(acts ? " %10s %9s\n" : "\n", "act learned", "act bits");
    for (int j = 0; j < r->nlayers; j++) {
        const bd_bitprune_layer *l = &r->layers[j];
        char bits[48];
        printf("%-26s %10lld %8.2f %14s", bd_ws_layer_at(ws, l->layer)->layer.name,
               (long long)l->params, l->learned, bd_cmd_bits_str(l, bits, sizeof bits));
        if (acts)
            printf(" %11.2f %9d\n", l->act_learned, l->act.bits);
        else
            printf("\n");
    }
    if (acts)
        printf("\nmean activation bits %.3f (per layer), %.2f bit-operations per MAC\n",
               r->act_mean, r->bitops);
    bd_model_size size;
    bd_ws_size(ws, &size);
    printf("\nmean bits %.3f (memory-weighted), %.3f (per layer), learned %.3f, lambda %.4g\n"
           "size: %.4f MB fp32 -> %.4f MB, ratio %.2fx\n",
           r->mean_bits, r->mean_bits_layers, r->learned_mean, r->lambda, bd_mb(size.fp32_bytes),
           bd_mb(size.compressed_bytes), size.ratio);
}

/* Evaluation on as many images as training evaluates: the given data, or
 * the model's test split the workspace took at load. */
static bd_status set_eval(bd_workspace *ws, const args *a)
{
    const char *spec = a->eval ? a->eval : bd_ws_data_spec(ws, BD_DATA_EVAL);
    if (!spec)
        return BD_OK;
    char copy[4096];
    snprintf(copy, sizeof copy, "%s", spec);
    return bd_ws_data(ws, BD_DATA_EVAL, copy, a->o.train.eval_n);
}

static bd_status bitprune(bd_workspace *ws, const args *a, const char *data)
{
    BD_TRY(bd_ws_data(ws, BD_DATA_CALIB, data, 0));
    BD_TRY(set_eval(ws, a));
    if (cli_dist_agree(bd_ws_teacher(ws)) != CLI_OK)
        return BD_EINVAL;
    bd_bitprune_report r;
    char ckpt[4096];
    snprintf(ckpt, sizeof ckpt, "%s.ckpt", a->out);
    bd_status s = bd_ws_bitprune(ws, &a->o, a->checkpoint ? a->checkpoint : ckpt, a->resume,
                                 print_epoch, ws, &r);
    cli_progress_clear();
    BD_TRY(s);
    if (a->resume)
        printf("resumed from %s: %d of %d learning epochs and %d of %d fine-tuning epochs had "
               "run\n",
               a->checkpoint ? a->checkpoint : ckpt, r.learn.first > 1 ? r.learn.first - 1 : 0,
               r.learn.epochs, r.tune.first > 1 ? r.tune.first - 1 : 0, r.tune.epochs);
    print_result(ws, &r, a->o.activations);
    bd_bitprune_report_free(&r);
    bd_accuracy t = {0}, st = {0};
    if (bd_ws_data_spec(ws, BD_DATA_EVAL)) {
        s = bd_ws_eval(ws, 0, &t, &st);
        cli_progress_clear();
        BD_TRY(s);
        cli_print_accuracy("teacher", &t, NULL);
        cli_print_accuracy("student", &st, NULL);
    }
    BD_TRY(bd_ws_save(ws, a->out, 0));
    /* the report needs the file's size, so it comes second; a model
     * without its report is not a finished run */
    if (a->report && (s = cli_write_report(ws, a->report, &t, &st, a->out)) != BD_OK) {
        remove(a->out);
        return s;
    }
    cli_print_written(ws, a->out, 0);
    return BD_OK;
}

int cli_bitprune(int argc, char **argv)
{
    args a;
    int rc = parse(argc, argv, &a);
    if (rc != CLI_OK)
        return rc;
    if (a.threads)
        bd_threads_set((int)a.threads);
    bd_workspace *ws = NULL;
    char data[4096];
    const char *spec;
    bd_status s = bd_ws_new(&ws);
    if (s == BD_OK)
        s = a.teacher ? bd_ws_load_teacher(ws, a.model, a.teacher) : bd_ws_load(ws, a.model);
    if (s != BD_OK)
        rc = cli_report(s);
    else if ((rc = cli_preprocess_ws("bitprune", &a.cp, ws)) == CLI_OK &&
             (rc = cli_data_spec("bitprune", bd_ws_teacher(ws), a.data, "train", "--data", data,
                                 sizeof data, &spec)) == CLI_OK) {
        cli_ws_attach(ws);
        s = bitprune(ws, &a, spec);
        cli_ws_detach();
        rc = s == BD_OK ? CLI_OK : cli_report(s);
    }
    bd_ws_free(ws);
    return rc;
}
