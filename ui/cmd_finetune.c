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

static const char help[] =
    "usage: bitdown finetune COMPRESSED.onnx -o OUT.onnx [options]\n\n"
    "Tunes the centroids of the quantized layers of a compressed model (written by\n"
    "'bitdown quantize' or 'save'): a centroid's gradient is the mean of the\n"
    "gradients of the weights that point to it, SGD with momentum and weight decay.\n"
    "The codes stay; the output is the same compressed ONNX with tuned centroids.\n\n"
    "  -o, --output FILE     where to write (atomically)\n"
    "  --teacher MODEL       the original model (default: the one the file names)\n"
    "  --data SPEC           training images (default: the model's dataset, train split)\n"
    "  --mode layer|global   one layer at a time, or all together (default global)\n"
    "  --iters N             SGD steps (per layer with --mode layer; default 500)\n"
    "  --batch B             images per step (default 64)\n"
    "  --lr X                learning rate (default 0.01)\n"
    "  --momentum X          (default 0.9)\n"
    "  --wd X                weight decay (default 1e-4)\n"
    "  --step N --gamma X    multiply the learning rate by X every N steps\n"
    "  --loss kl|ce          distil the teacher's softmax (default) or use the labels\n"
    "  --bn frozen|train     BatchNorm on running (default) or batch statistics\n"
    "  --bias                also tune biases and BatchNorm scales and shifts\n"
    "  --eval SPEC           evaluate teacher and student on SPEC afterwards\n"
    "  --eval-n N            only the first N evaluation images\n"
    "  --seed S              order of the images (default 0)\n"
    "  --threads T           CPU threads (default: all cores)\n" CLI_PREPROCESS_HELP;

typedef struct args {
    const char *model, *out, *teacher, *data, *eval;
    long eval_n, seed, threads, iters, batch, step;
    int global;
    bd_finetune_options o;
    cli_preprocess cp;
} args;

static int pick(const char *opt, const char *v, const char *a, const char *b, int *out)
{
    if (strcmp(v, a) == 0 || strcmp(v, b) == 0) {
        *out = strcmp(v, b) == 0;
        return CLI_OK;
    }
    return cli_usage_error("finetune", "%s is %s or %s, not '%s'", opt, a, b, v);
}

static int number(const char *opt, const char *v, float *out)
{
    int n;
    if (cli_parse_floats("finetune", opt, v, out, 1, &n) != CLI_OK)
        return CLI_USAGE;
    if (*out < 0)
        return cli_usage_error("finetune", "%s must not be negative", opt);
    return CLI_OK;
}

static int parse(int argc, char **argv, args *a)
{
    static const struct option opts[] = {
        {"help", no_argument, 0, 'h'},         {"output", required_argument, 0, 'o'},
        {"teacher", required_argument, 0, 'T'}, {"data", required_argument, 0, 'd'},
        {"mode", required_argument, 0, 'M'},
        {"iters", required_argument, 0, 'i'},  {"batch", required_argument, 0, 'b'},
        {"lr", required_argument, 0, 'l'},     {"momentum", required_argument, 0, 'm'},
        {"wd", required_argument, 0, 'w'},     {"step", required_argument, 0, 's'},
        {"gamma", required_argument, 0, 'g'},  {"loss", required_argument, 0, 'L'},
        {"bn", required_argument, 0, 'B'},     {"bias", no_argument, 0, 'x'},
        {"eval", required_argument, 0, 'e'},   {"eval-n", required_argument, 0, 'E'},
        {"seed", required_argument, 0, 'S'},   {"threads", required_argument, 0, 't'},
        CLI_PREPROCESS_LONGOPTS,               {0, 0, 0, 0}};
    memset(a, 0, sizeof *a);
    a->global = 1;
    a->iters = 500;
    a->batch = 64;
    a->o.lr = 0.01f;
    a->o.momentum = 0.9f;
    a->o.wd = 1e-4f;
    a->o.gamma = 0.1f;
    int c, loss = 0, bn = 0, rc = CLI_OK;
    optind = 1;
    while (rc == CLI_OK && (c = getopt_long(argc, argv, "ho:", opts, NULL)) != -1) {
        if (cli_preprocess_option(&a->cp, c, optarg))
            continue;
        switch (c) {
        case 'h': fputs(help, stdout); exit(CLI_OK);
        case 'o': a->out = optarg; break;
        case 'T': a->teacher = optarg; break;
        case 'd': a->data = optarg; break;
        case 'e': a->eval = optarg; break;
        case 'x': a->o.tune_bias = 1; break;
        case 'M': rc = pick("--mode", optarg, "layer", "global", &a->global); break;
        case 'L': rc = pick("--loss", optarg, "kl", "ce", &loss); break;
        case 'B': rc = pick("--bn", optarg, "frozen", "train", &bn); break;
        case 'l': rc = number("--lr", optarg, &a->o.lr); break;
        case 'm': rc = number("--momentum", optarg, &a->o.momentum); break;
        case 'w': rc = number("--wd", optarg, &a->o.wd); break;
        case 'g': rc = number("--gamma", optarg, &a->o.gamma); break;
        case 'E': rc = cli_parse_int("finetune", "--eval-n", optarg, 1, 1L << 40, &a->eval_n); break;
        case 'i': rc = cli_parse_int("finetune", "--iters", optarg, 1, 100000000, &a->iters); break;
        case 'b': rc = cli_parse_int("finetune", "--batch", optarg, 1, 65536, &a->batch); break;
        case 's': rc = cli_parse_int("finetune", "--step", optarg, 0, 100000000, &a->step); break;
        case 'S': rc = cli_parse_int("finetune", "--seed", optarg, 0, 1L << 62, &a->seed); break;
        case 't': rc = cli_parse_int("finetune", "--threads", optarg, 1, 1024, &a->threads); break;
        default: return cli_bad_option("finetune", argv);
        }
    }
    if (rc != CLI_OK)
        return rc;
    if (optind != argc - 1)
        return cli_usage_error("finetune", "expects one COMPRESSED model");
    if (!a->out)
        return cli_usage_error("finetune", "-o OUT.onnx is needed");
    a->model = argv[optind];
    a->o.iters = (int)a->iters;
    a->o.batch = (int)a->batch;
    a->o.step_every = (int)a->step;
    a->o.loss = loss ? BD_LOSS_CE : BD_LOSS_KL;
    a->o.bn_train = bn;
    a->o.seed = (uint64_t)a->seed;
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
    bd_status s = bd_ws_finetune(ws, "*", a->global, &a->o, &r);
    cli_progress_clear();
    BD_TRY(s);
    printf("%s fine-tuning: %d steps, loss %.5f -> %.5f, %.1f images/s, %.1f s\n",
           a->global ? "global" : "layer-wise", r.steps, r.first_loss, r.last_loss,
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
    if (s == BD_OK && (s = bd_ws_batch(ws, (int)a.batch)) == BD_OK) {
        bd_ws_seed(ws, (uint64_t)a.seed);
        cli_ws_attach(ws);
        s = tune(ws, &a);
        cli_ws_detach();
    }
    rc = s == BD_OK ? CLI_OK : cli_report(s);
    bd_ws_free(ws);
    return rc;
}
