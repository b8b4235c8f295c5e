/* bitdown train MODEL -o OUT: trains every float parameter of a model, from
 * its weights or from scratch, optionally with Quant-Noise. The options are
 * the training table's (src/training.h), spelled --key. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "device.h"
#include "dist.h"
#include "model_meta.h"
#include "onnx_io.h"
#include "progress_bar.h"
#include "threads.h"
#include "training.h"

enum { OPT_TABLE = 2000, OPT_DATA = 1100, OPT_EVAL, OPT_TEACHER, OPT_CKPT, OPT_RESUME, OPT_THREADS,
       OPT_DEVICE };

static void usage(void)
{
    static char opts[8192];
    bd_opt_op_help(&bd_training_op, 1, opts, sizeof opts);
    printf("usage: bitdown train MODEL -o OUT.onnx [options]\n\n"
           "Trains every float parameter of MODEL (conv and linear weights, biases,\n"
           "BatchNorm) with SGD on labelled images, evaluating after every epoch and\n"
           "writing a checkpoint that --resume continues from. With --quant-noise the\n"
           "network learns to bear the quantization it will get (docs/method.md,\n"
           "\"Quant-Noise\"); the output is the trained float model, for 'quantize'.\n\n"
           "  -o, --output FILE        where to write the trained model (atomically)\n"
           "  --data SPEC              training images (default: the model's dataset, train)\n"
           "  --eval SPEC              evaluated after every epoch (default: its test split;\n"
           "                           'none' for no evaluation)\n"
           "  --teacher MODEL          for --loss kl (default: MODEL as loaded)\n"
           "  --checkpoint FILE        written after every epoch (default: OUT.ckpt)\n"
           "  --resume                 continue from the checkpoint\n"
           "  --threads T              CPU threads (default: all cores)\n"
           "  --device cpu|cuda        where the steps run (default cpu); cuda: the first\n"
           "                           GPU (a rank of an mpirun job: its local rank's,\n"
           "                           modulo the GPUs), with the same results to float\n"
           "                           rounding\n"
           "%s" CLI_PREPROCESS_HELP,
           opts);
}

typedef struct args {
    const char *model, *out, *data, *eval, *teacher, *checkpoint, *device;
    int resume;
    long threads;
    bd_training_options o;
    cli_preprocess cp;
} args;

static int parse(int argc, char **argv, args *a)
{
    enum { NFIXED = 15, MAXOPTS = 96 };
    static struct option opts[MAXOPTS];
    static char names[MAXOPTS][48];
    const struct option fixed[NFIXED] = {
        {"help", no_argument, 0, 'h'},           {"output", required_argument, 0, 'o'},
        {"data", required_argument, 0, OPT_DATA}, {"eval", required_argument, 0, OPT_EVAL},
        {"teacher", required_argument, 0, OPT_TEACHER},
        {"checkpoint", required_argument, 0, OPT_CKPT},
        {"resume", no_argument, 0, OPT_RESUME}, {"threads", required_argument, 0, OPT_THREADS},
        {"device", required_argument, 0, OPT_DEVICE},
        CLI_PREPROCESS_LONGOPTS};
    int n = 0;
    for (; n < NFIXED && fixed[n].name; n++)
        opts[n] = fixed[n];
    cli_table_longopts(&bd_training_op, OPT_TABLE, opts, names, &n, MAXOPTS);
    memset(a, 0, sizeof *a);
    bd_training_options_init(&a->o);
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "ho:", opts, NULL)) != -1) {
        if (cli_preprocess_option(&a->cp, c, optarg))
            continue;
        const char *value;
        const bd_opt *o = cli_table_entry(&bd_training_op, OPT_TABLE, c, optarg, &value);
        if (o) {
            if (cli_table_set("train", &bd_training_op, &a->o, o, value) != CLI_OK)
                return CLI_USAGE;
            continue;
        }
        switch (c) {
        case 'h': usage(); exit(CLI_OK);
        case 'o': a->out = optarg; break;
        case OPT_DATA: a->data = optarg; break;
        case OPT_EVAL: a->eval = optarg; break;
        case OPT_TEACHER: a->teacher = optarg; break;
        case OPT_CKPT: a->checkpoint = optarg; break;
        case OPT_RESUME: a->resume = 1; break;
        case OPT_DEVICE:
            if (strcmp(optarg, "cpu") != 0 && strcmp(optarg, "cuda") != 0)
                return cli_usage_error("train", "--device is cpu or cuda, not '%s'", optarg);
            a->device = strcmp(optarg, "cuda") == 0 ? "cuda" : NULL;
            break;
        case OPT_THREADS:
            if (cli_parse_int("train", "--threads", optarg, 1, 1024, &a->threads) != CLI_OK)
                return CLI_USAGE;
            break;
        default: return cli_bad_table_option("train", argv, opts);
        }
    }
    if (optind != argc - 1)
        return cli_usage_error("train", "expects one MODEL");
    if (!a->out)
        return cli_usage_error("train", "-o OUT.onnx is needed");
    a->model = argv[optind];
    return CLI_OK;
}

static void print_epoch(void *user, const bd_training_epoch *e, int epochs)
{
    (void)user;
    cli_print_epoch("", e, epochs);
}

/* The training and evaluation data: as given, or the splits of the
 * dataset the model names. */
static bd_status open_data(const args *a, const bd_graph *g, const bd_preprocess *pp,
                           bd_dataset **train, bd_dataset **eval)
{
    const char *named = bd_graph_meta(g, BD_META_DATASET);
    char spec[4096];
    if (!a->data && !named)
        return bd_fail(BD_EINVAL, "--data is needed: %s does not name its dataset", a->model);
    snprintf(spec, sizeof spec, "%s:train", named ? named : "");
    BD_TRY(bd_dataset_open(train, a->data ? a->data : spec, pp));
    if (a->eval && strcmp(a->eval, "none") == 0)
        return BD_OK;
    if (!a->eval && !named)
        return BD_OK;
    snprintf(spec, sizeof spec, "%s:test", named ? named : "");
    return bd_dataset_open(eval, a->eval ? a->eval : spec, pp);
}

static bd_status train(const args *a, bd_graph *g, const bd_preprocess *pp)
{
    bd_dataset *data = NULL, *eval = NULL;
    bd_graph *tg = NULL;
    bd_exec *teacher = NULL;
    bd_device *dev = NULL;
    char ckpt[4096];
    snprintf(ckpt, sizeof ckpt, "%s.ckpt", a->out);
    bd_status s = open_data(a, g, pp, &data, &eval);
    if (s == BD_OK && a->o.loss == BD_LOSS_KL) {
        s = a->teacher ? cli_load_model(a->teacher, &tg, 0, NULL) : bd_graph_clone(&tg, g);
        if (s == BD_OK)
            s = bd_exec_new(&teacher, tg, BD_EXEC_FUSE);
    }
    if (s == BD_OK && a->device && (s = bd_device_open(a->device, &dev)) != BD_OK) {
        char why[512];
        snprintf(why, sizeof why, "%s", bd_error_message());
        s = bd_fail(s, "--device cuda: %s", why);
    }
    bd_training_report r = {0};
    if (s == BD_OK && dev)
        s = bd_device_check_ranks("training");
    if (s == BD_OK && cli_dist_agree(g) != CLI_OK)
        s = BD_EINVAL;
    if (s == BD_OK)
        cli_dist_share_note("train", a->o.batch < bd_dataset_count(data) ? a->o.batch
                                                                         : bd_dataset_count(data));
    if (s == BD_OK) {
        bd_progress progress = cli_progress_start();
        bd_training_io io = {.train = data, .eval = eval, .pp = pp, .teacher = teacher,
                             .checkpoint = a->checkpoint ? a->checkpoint : ckpt,
                             .resume = a->resume, .progress = &progress,
                             .on_epoch = print_epoch};
        s = dev ? bd_training_run_with(bd_device_training_start, dev, g, &a->o, &io, &r)
                : bd_training_run(g, &a->o, &io, &r);
        cli_progress_stop();
    }
    if (s == BD_OK) {
        char noise[96], desc[256];
        bd_noise_describe(&a->o.noise, noise, sizeof noise);
        const bd_training_epoch *last = &r.per_epoch[r.epochs - 1];
        snprintf(desc, sizeof desc, "epochs=%d quant_noise=%s loss=%.4f top1=%.2f", r.epochs,
                 noise, last->loss, last->top1);
        printf("trained %d epochs (%d in this run), %.1f images/s\n", r.epochs,
               r.epochs - r.first + 1, r.images_per_second);
        s = bd_graph_set_meta(g, "bitdown.training", desc);
    }
    /* rank 0's model is every rank's */
    if (s == BD_OK && bd_dist_rank() == 0 && (s = bd_onnx_save(g, a->out)) == BD_OK)
        printf("wrote %s\n", a->out);
    bd_training_report_free(&r);
    bd_exec_free(teacher);
    bd_device_close(dev);
    bd_graph_free(tg);
    bd_dataset_free(data);
    bd_dataset_free(eval);
    return s;
}

int cli_train(int argc, char **argv)
{
    args a;
    int rc = parse(argc, argv, &a);
    if (rc != CLI_OK)
        return rc;
    if (a.threads)
        bd_threads_set((int)a.threads);
    bd_graph *g = NULL;
    bd_status s = cli_load_model(a.model, &g, 0, NULL);
    if (s != BD_OK)
        return cli_report(s);
    bd_preprocess pp;
    rc = cli_preprocess_resolve("train", &a.cp, g, &pp);
    if (rc == CLI_OK)
        rc = (s = train(&a, g, &pp)) == BD_OK ? CLI_OK : cli_report(s);
    bd_graph_free(g);
    return rc;
}
