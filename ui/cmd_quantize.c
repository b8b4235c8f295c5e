/* bitdown quantize MODEL -o OUT.onnx: the whole model, layer by layer. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "cmd.h"
#include "fileio.h"
#include "dist.h"
#include "model_meta.h"
#include "plan.h"
#include "pq.h"
#include "progress_bar.h"
#include "quantize.h"
#include "threads.h"
#include "size.h"
#include "workspace.h"

enum { OPT_TABLE = 2000 };

static void usage(void)
{
    static char opts[8192];
    bd_opt_op_help(&bd_quantize_op, 1, opts, sizeof opts);
    printf(
        "usage: bitdown quantize MODEL -o OUT.onnx [options]\n\n"
        "Quantizes MODEL's layers in graph order with activation-aware product\n"
        "quantization, each from the student as it stands, and writes the compressed\n"
        "model as standard ONNX (bit-packed codes unpacked in-graph -> Gather(fp16\n"
        "centroids) -> Reshape), which any ONNX runtime runs. Prints a table per layer\n"
        "and the totals.\n\n"
        "  -o, --output FILE     where to write (atomically)\n"
        "  --calib SPEC          calibration images (default: the model's dataset,\n"
        "                        train split); see 'bitdown eval --help' for SPEC\n"
        "  --calib-n N           calibration images (default 1024)\n"
        "  --regime small|large|int8|int4  the paper's block sizes: small d=9 (3x3), 4\n"
        "                        (1x1, fc); large d=18, 8, 4; k=256, fc k=2048, clamped\n"
        "                        (default small); intB: B-bit ints per channel (B = 1..16)\n"
        "  --set GLOB:d=D,k=K[,objective=act|weight|feedback]   override layers matching GLOB\n"
        "  --set GLOB:int=B[,per=channel|tensor][,sym=0|1]   make them B-bit ints\n"
        "                        (fnmatch, e.g. 'layer3.*'); GLOB:skip keeps them fp32;\n"
        "                        repeatable, applied in order\n"
        "  --objective act|weight|feedback  act: ||X(W-W^)||^2 through each block's\n"
        "                        Gram (the paper's); weight: ||W-W^||^2; feedback: act,\n"
        "                        then error feedback across each row's blocks with the\n"
        "                        full row's Gram (GPTVQ's update; 'gptvq' also names it)\n"
        "                        (default: the regime's plan)\n"
        "  --compare             also fit another objective on the same inputs and show\n"
        "                        its error (act: weight; weight and feedback: act)\n"
        "  --quantize-first      also quantize the first conv (kept fp32 by default)\n"
        "  --seed S              seed for calibration sampling and EM (default 0)\n"
        "  --eval SPEC           evaluate teacher and student on SPEC afterwards\n"
        "  --eval-n N            only the first N evaluation images\n"
        "  --check-n N           without --eval, compare the student's top-1 with the\n"
        "                        teacher's on the first N test images of the model's\n"
        "                        dataset (default 1000; 0: no check); a loss of more\n"
        "                        than 3 points is said on stderr with the finetune\n"
        "                        command that recovers it\n"
        "  --report FILE.json    write the per-layer table and totals as JSON\n"
        "  --decoded             write a plain dense fp32 model instead\n"
        "  --batch B             images per forward pass and per fine-tuning step (64)\n"
        "  --threads T           CPU threads (default: all cores)\n"
        "  --finetune-global N   at the end, tune all centroids together for N steps\n"
        "  --lr X --momentum X --wd X   SGD settings of fine-tuning (--tune and\n"
        "                        --finetune-global): 'bitdown finetune's, with its\n"
        "                        ranges and defaults\n"
        "  --policy NAME[:KEY=VALUE,...]  a Lua policy plans and quantizes instead:\n"
        "                        lua/policies/NAME.lua (or a path to a .lua file), e.g.\n"
        "                        small_blocks, large_blocks, size_budget:target_mb=M,\n"
        "                        error_budget:max_error=E, ipq:stages=\"A;B,C\" (each\n"
        "                        file's header says its arguments; a word without '='\n"
        "                        continues the value before it); -o, --calib, --calib-n,\n"
        "                        --iters, --restarts, --tol, --seed, --objective,\n"
        "                        --quantize-first, --eval, --eval-n, --decoded, --report,\n"
        "                        --threads and the preprocessing options apply; --regime,\n"
        "                        --set, --compare, --batch, --tune, --finetune-global,\n"
        "                        --lr, --momentum and --wd do not combine with it\n\n"
        "The quantize operation's options (the command language's 'quantize' keys and\n"
        "bd.quantize's fields). A size target (one at most) stands for --policy\n"
        BD_SIZE_POLICY ":target_X=V and combines as --policy does; --target-bpw counts\n"
        "the bits of every quantizable layer's weights (codebooks, and layers left\n"
        "fp32, included) over their number:\n"
        "%s" CLI_PREPROCESS_HELP,
        opts);
}

typedef struct args {
    const char *model, *out, *calib, *regime, *eval, *report, *policy;
    const char *sets[64];
    int nsets;
    long calib_n, seed, batch, threads, eval_n, ft_global, check_n;
    bd_quantize_run run;
    bd_finetune_options ft; /* --lr, --momentum, --wd */
    char target_policy[128]; /* the policy a size target stands for */
    int objective, objective_given, quantize_first, decoded, compare;
    const char *not_with_policy; /* an option --policy leaves to the policy */
    cli_preprocess cp;
} args;

/* The options a policy, which plans and quantizes for itself, leaves to
 * it: NULL for the others. */
static const char *policy_excluded(int c)
{
    switch (c) {
    case 'r': return "--regime";
    case 's': return "--set";
    case 'C': return "--compare";
    case 'b': return "--batch";
    case 'G': return "--finetune-global";
    case 'l': return "--lr";
    case 'm': return "--momentum";
    case 'w': return "--wd";
    case 'K': return "--check-n";
    default: return NULL;
    }
}

/* --policy, or a size target, which stands for one: refused with another,
 * or with an option that says how to plan or tune. */
static int check_policy(args *a)
{
    char target[96];
    if (bd_quantize_target(&a->run, "quantize", 1, target, sizeof target) != BD_OK)
        return cli_usage_error("quantize", "%s", bd_error_message() + strlen("quantize: "));
    char name[48] = "--policy";
    if (target[0]) {
        char key[48];
        snprintf(key, sizeof key, "%.*s", (int)strcspn(target, "="), target);
        bd_opt_cli_name(bd_opt_find(bd_quantize_opts, key), name, sizeof name);
        if (a->policy)
            return cli_usage_error("quantize", "%s does not combine with --policy (it stands for "
                                               "--policy %s:%s)",
                                   name, BD_SIZE_POLICY, target);
        snprintf(a->target_policy, sizeof a->target_policy, "%s:%s", BD_SIZE_POLICY, target);
        a->policy = a->target_policy;
    }
    if (a->policy && a->not_with_policy)
        return cli_usage_error("quantize", "%s does not combine with %s", a->not_with_policy,
                               name);
    return CLI_OK;
}

static int parse(int argc, char **argv, args *a)
{
    enum { NFIXED = 32, MAXOPTS = 64 };
    static struct option opts[MAXOPTS];
    static char names[MAXOPTS][48];
    const struct option fixed[NFIXED] = {
        {"help", no_argument, 0, 'h'},          {"output", required_argument, 0, 'o'},
        {"calib", required_argument, 0, 'c'},   {"calib-n", required_argument, 0, 'n'},
        {"regime", required_argument, 0, 'r'},  {"set", required_argument, 0, 's'},
        {"objective", required_argument, 0, 'j'},
        {"quantize-first", no_argument, 0, 'f'}, {"seed", required_argument, 0, 'S'},
        {"eval", required_argument, 0, 'e'},    {"eval-n", required_argument, 0, 'E'},
        {"report", required_argument, 0, 'R'},  {"decoded", no_argument, 0, 'D'},
        {"batch", required_argument, 0, 'b'},   {"threads", required_argument, 0, 't'},
        {"compare", no_argument, 0, 'C'},       {"policy", required_argument, 0, 'P'},
        {"finetune-global", required_argument, 0, 'G'},
        {"lr", required_argument, 0, 'l'},      {"momentum", required_argument, 0, 'm'},
        {"wd", required_argument, 0, 'w'},      {"check-n", required_argument, 0, 'K'},
        CLI_PREPROCESS_LONGOPTS};
    int n = 0;
    for (; n < NFIXED && fixed[n].name; n++)
        opts[n] = fixed[n];
    cli_table_longopts(&bd_quantize_op, OPT_TABLE, opts, names, &n, MAXOPTS);
    memset(a, 0, sizeof *a);
    a->regime = "small";
    a->calib_n = 1024;
    a->batch = 64;
    bd_quantize_run_init(&a->run);
    bd_finetune_options_init(&a->ft);
    a->check_n = 1000;
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "ho:", opts, NULL)) != -1) {
        if (cli_preprocess_option(&a->cp, c, optarg))
            continue;
        const char *value;
        const bd_opt *o = cli_table_entry(&bd_quantize_op, OPT_TABLE, c, optarg, &value);
        if (o) {
            if (cli_table_set("quantize", &bd_quantize_op, &a->run, o, value) != CLI_OK)
                return CLI_USAGE;
            if (strcmp(o->key, "tune") == 0)
                a->not_with_policy = "--tune";
            continue;
        }
        if (policy_excluded(c))
            a->not_with_policy = policy_excluded(c);
        switch (c) {
        case 'h': usage(); exit(CLI_OK);
        case 'o': a->out = optarg; break;
        case 'c': a->calib = optarg; break;
        case 'r': a->regime = optarg; break;
        case 'e': a->eval = optarg; break;
        case 'R': a->report = optarg; break;
        case 'f': a->quantize_first = 1; break;
        case 'D': a->decoded = 1; break;
        case 'C': a->compare = 1; break;
        case 'P': a->policy = optarg; break;
        case 'G':
            if (cli_parse_int("quantize", "--finetune-global", optarg, 0, 100000000, &a->ft_global))
                return CLI_USAGE;
            break;
        case 'l':
        case 'm':
        case 'w': {
            const char *key = c == 'l' ? "lr" : c == 'm' ? "momentum" : "wd";
            if (cli_table_set("quantize", &bd_finetune_op, &a->ft,
                              bd_opt_op_find(&bd_finetune_op, key, NULL), optarg) != CLI_OK)
                return CLI_USAGE;
            break;
        }
        case 's':
            if (a->nsets == 64)
                return cli_usage_error("quantize", "at most 64 --set options");
            a->sets[a->nsets++] = optarg;
            break;
        case 'j': {
            bd_objective obj;
            if (bd_objective_parse(optarg, &obj) != BD_OK)
                return cli_usage_error("quantize", "--objective: %s", bd_error_message());
            a->objective = (int)obj;
            a->objective_given = 1;
            break;
        }
        case 'n':
            if (cli_parse_int("quantize", "--calib-n", optarg, 1, 1L << 30, &a->calib_n))
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
        case 'K':
            if (cli_parse_int("quantize", "--check-n", optarg, 0, 1L << 40, &a->check_n))
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
        default: return cli_bad_table_option("quantize", argv, opts);
        }
    }
    if (optind != argc - 1)
        return cli_usage_error("quantize", "expects one MODEL");
    a->model = argv[optind];
    if (!a->out)
        return cli_usage_error("quantize", "-o OUT.onnx is needed");
    a->ft.batch = (int)a->batch;
    return check_policy(a);
}

static void print_row(const bd_workspace *ws, int i, int compare)
{
    const bd_ws_layer *l = bd_ws_layer_at(ws, i);
    const bd_qlayer *q = l->state == BD_STATE_FLOAT ? NULL : &l->q;
    const bd_tensor *w = bd_ws_student(ws)->values[l->layer.weight].init;
    char shape[64], err[32], other[32], bits[32];
    bd_shape_str(w->ndim, w->dims, shape, sizeof shape);
    printf("%-26s %-18s ", l->layer.name, shape);
    bd_bits_str(bd_ws_bits_per_weight(l), bits, sizeof bits);
    if (!q)
        printf("%4s %6s %6s %10.2f %10s", "-", "-", bits,
               (double)bd_layer_params(&l->layer) * 4 / 1024, "-");
    else {
        char d[8], k[8];
        bd_qlayer_dk(q, d, k);
        printf("%4s %6s %6s %10.2f %10s", d, k, bits,
               (double)bd_qlayer_bytes(q) / 1024, bd_cmd_error_str(q->rel_error, err, sizeof err));
    }
    if (compare)
        printf(" %10s", q ? bd_cmd_error_str(q->other_error, other, sizeof other) : "-");
    if (!q)
        printf(" %7s  %s\n", "-", l->note);
    else
        printf(" %7.2f  %s%s\n", q->seconds, l->state == BD_STATE_TUNED ? "tuned " : "", l->note);
    fflush(stdout);
}

/* --policy: the policy, a Lua program, plans, quantizes, reports and saves
 * on a workspace; this command sets the workspace up and hands its options
 * on as the policy's key=value arguments, before the policy's own. */
static int run_policy(const args *a)
{
    enum { MAXARGS = 64 };
    char spec[4096], path[4096], out[4200], iters[32], calib_buf[4096];
    char *argv[MAXARGS];
    int n = 0;
    snprintf(spec, sizeof spec, "%s", a->policy);
    char *own = strchr(spec, ':');
    if (own)
        *own++ = '\0';
    if (bd_policy_path(spec, path, sizeof path) != BD_OK)
        return cli_usage_error("quantize", "%s", bd_error_message());
    snprintf(out, sizeof out, "out=%s", a->out);
    snprintf(iters, sizeof iters, "iters=%d", a->run.iters);
    argv[n++] = out;
    argv[n++] = iters;
    if (a->quantize_first)
        argv[n++] = "first=true";
    char objective[64];
    if (a->objective_given) {
        snprintf(objective, sizeof objective, "objective=%s", bd_objective_name(a->objective));
        argv[n++] = objective;
    }
    if (a->eval)
        argv[n++] = "eval=true";
    if (a->decoded)
        argv[n++] = "decoded=true";
    int passed_on = n;
    /* an argument ends at the first ',' before a word with '=', so that a
     * value may hold commas (ipq's stages=a,b;c) */
    for (char *w = own; w && *w;) {
        char *c = w;
        while ((c = strchr(c, ',')) && !memchr(c + 1, '=', strcspn(c + 1, ",")))
            c++;
        if (c)
            *c++ = '\0';
        if (n == MAXARGS)
            return cli_usage_error("quantize", "--policy takes at most %d arguments",
                                   MAXARGS - passed_on);
        argv[n++] = w;
        w = c;
    }
    bd_workspace *ws = NULL;
    const char *calib_spec = NULL;
    bd_status s = bd_ws_new(&ws);
    if (s == BD_OK)
        s = bd_ws_load(ws, a->model);
    int rc = s == BD_OK ? cli_preprocess_ws("quantize", &a->cp, ws) : cli_report(s);
    rc = rc == CLI_OK ? cli_data_spec("quantize", bd_ws_teacher(ws), a->calib, "train", "--calib",
                                      calib_buf, sizeof calib_buf, &calib_spec)
                      : rc;
    if (rc == CLI_OK && (s = bd_ws_data(ws, BD_DATA_CALIB, calib_spec, a->calib_n)) == BD_OK &&
        a->eval)
        s = bd_ws_data(ws, BD_DATA_EVAL, a->eval, a->eval_n);
    if (rc == CLI_OK && s != BD_OK)
        rc = cli_report(s);
    if (rc == CLI_OK && (s = bd_ws_search(ws, a->run.restarts, a->run.tol)) != BD_OK)
        rc = cli_report(s);
    if (rc == CLI_OK)
        rc = cli_dist_agree(bd_ws_teacher(ws));
    if (rc == CLI_OK) {
        bd_ws_seed(ws, (uint64_t)a->seed);
        rc = cli_run_lua(ws, path, NULL, n, argv);
    }
    /* the policy evaluates as it likes: the report has the sizes */
    if (rc == CLI_OK && a->report &&
        (s = cli_write_report(ws, a->report, NULL, NULL, a->out)) != BD_OK)
        rc = cli_report(s);
    bd_ws_free(ws);
    return rc;
}

/* The plan: the regime, the objective, then each --set in order. */
static bd_status make_plan(bd_workspace *ws, const args *a)
{
    BD_TRY(bd_ws_regime(ws, a->regime, a->quantize_first));
    bd_ws_change all = BD_PLAN_CHANGE_NONE;
    all.objective = a->objective;
    if (a->objective_given)
        BD_TRY(bd_error_context(bd_ws_set(ws, "*", &all), "--objective %s",
                                bd_objective_name(a->objective)));
    for (int i = 0; i < a->nsets; i++) {
        char glob[BD_LAYER_NAME_MAX];
        bd_ws_change c;
        BD_TRY(bd_plan_parse_set(a->sets[i], glob, sizeof glob, &c));
        if (c.quantize < 0) /* a layer given settings is taken */
            c.quantize = 1;
        BD_TRY(bd_error_context(bd_ws_set(ws, glob, &c), "--set '%s'", a->sets[i]));
    }
    return BD_OK;
}


/* "[4/9] layer2.0.conv1: 3.1 s elapsed, ETA 5.2 s" on stderr as a layer
 * starts, for a terminal and a log alike. The ETA counts layers: neither
 * their parameters nor their activations alone measure their work. */
static void say_layer(const bd_ws_layer *l, int at, int of, double elapsed)
{
    char spent[32], left[32];
    cli_progress_clear();
    if (bd_dist_rank() == 0)
        fprintf(stderr, "[%d/%d] %s: %s elapsed, ETA %s\n", at, of, l->layer.name,
                bd_seconds_str(elapsed, spent, sizeof spent),
                bd_seconds_str(bd_eta(elapsed, at - 1, of), left, sizeof left));
}

/* A student that lost more than this many points of top-1 is said to have. */
enum { LOSS_WARN_POINTS = 3 };

/* Says on stderr when the student lost more than a few points of the
 * teacher's top-1 on the data measured, with the command that tunes its
 * codebooks on the model's training data (500 steps recover the example
 * MobileNet's small regime from 48% to 90.5% of 93.2%, docs/method.md). */
static void warn_if_lost(const args *a, const bd_accuracy *t, const bd_accuracy *st,
                         const char *spec)
{
    double lost = t->top1 - st->top1;
    if (!t->valid || !st->valid || lost <= LOSS_WARN_POINTS || bd_dist_rank() != 0)
        return;
    if (a->decoded) { /* a dense file has no codebooks to tune */
        fprintf(stderr,
                "bitdown: WARNING: the student lost %.2f points of top-1 (%.2f%% against the "
                "teacher's %.2f%% on %lld images of %s); quantizing with --finetune-global 500 "
                "(or without --decoded, then 'bitdown finetune') recovers most of it\n",
                lost, st->top1, t->top1, (long long)st->n, spec);
        return;
    }
    char tuned[4200], out[4200], word[4200], data[4300] = "", pp[1024], eval[4200];
    size_t len = strlen(a->out);
    snprintf(tuned, sizeof tuned, "%.*s.tuned.onnx",
             (int)(len > 5 && strcmp(a->out + len - 5, ".onnx") == 0 ? len - 5 : len), a->out);
    if (a->calib)
        snprintf(data, sizeof data, " --data %s", cli_shell_word(a->calib, word, sizeof word));
    fprintf(stderr,
            "bitdown: WARNING: the student lost %.2f points of top-1 (%.2f%% against the "
            "teacher's %.2f%% on %lld images of %s); fine-tuning its codebooks by distillation "
            "recovers most of it:\n  bitdown finetune %s -o %s%s%s --iters 500 --eval %s\n",
            lost, st->top1, t->top1, (long long)st->n, spec,
            cli_shell_word(a->out, out, sizeof out), cli_shell_word(tuned, word, sizeof word), data,
            cli_preprocess_flags(&a->cp, pp, sizeof pp), cli_shell_word(spec, eval, sizeof eval));
}

/* The quantization itself: the table, fine-tuning, size, evaluation. */
static bd_status work(bd_workspace *ws, const args *a, bd_accuracy *t, bd_accuracy *st)
{
    bd_finetune_options ft = a->ft;
    ft.iters = a->run.tune;
    int64_t images = bd_ws_data_n(ws, BD_DATA_CALIB), held = bd_calib_held_out(images);
    printf("quantizing %s: %d layers, %lld calibration images from %s (%lld for the fit, %lld held "
           "out for the errors), objective %s, EM best of %ld from seed %ld\n\n",
           a->model, bd_ws_nlayers(ws), (long long)images, bd_ws_data_spec(ws, BD_DATA_CALIB),
           (long long)(images - held), (long long)held,
           a->objective_given ? bd_objective_name(a->objective) : "as planned",
           (long)a->run.restarts, a->seed);
    printf("%-26s %-18s %4s %6s %6s %10s %10s", "layer", "weight", "d", "k", "bits/w", "size KB",
           "rel error");
    if (a->compare)
        printf(" %10s", "other obj.");
    printf(" %7s\n", "seconds");
    fflush(stdout);
    int planned = 0, at = 0;
    for (int i = 0; i < bd_ws_nlayers(ws); i++)
        planned += bd_ws_layer_at(ws, i)->quantize;
    const double t0 = bd_now();
    for (int i = 0; i < bd_ws_nlayers(ws); i++) {
        if (bd_ws_layer_at(ws, i)->quantize) {
            say_layer(bd_ws_layer_at(ws, i), ++at, planned, bd_now() - t0);
            bd_status s = bd_ws_quantize_at(ws, i, a->run.iters, &ft);
            cli_progress_clear();
            BD_TRY(s);
        }
        print_row(ws, i, a->compare);
    }
    if (a->ft_global > 0) {
        bd_finetune_report r;
        ft.iters = (int)a->ft_global;
        ft.global = 1;
        bd_status s = bd_ws_finetune(ws, "*", &ft, &r);
        cli_progress_clear();
        BD_TRY(s);
        printf("\nglobal fine-tuning: %d steps, loss %.5f -> %.5f, %.1f images/s\n", r.steps,
               r.first_loss, r.last_loss, r.images_per_second);
    }
    bd_model_size size;
    bd_ws_size(ws, &size);
    printf("\nsize: %.4f MB fp32 -> %.4f MB (codes %.4f + codebooks %.4f + fp32 rest %.4f), "
           "ratio %.2fx\n",
           bd_mb(size.fp32_bytes), bd_mb(size.compressed_bytes), bd_mb(size.code_bytes),
           bd_mb(size.codebook_bytes), bd_mb(size.other_bytes), size.ratio);
    /* --eval, or a quick check on a sample of the model's own test data */
    char check[600];
    const char *spec = a->eval, *dataset = bd_graph_meta(bd_ws_teacher(ws), BD_META_DATASET);
    int64_t n = a->eval_n;
    const int checking = !spec && a->check_n > 0 && dataset;
    if (checking) {
        snprintf(check, sizeof check, "%s:test", dataset);
        spec = check;
        n = a->check_n;
    }
    bd_status s = spec ? bd_ws_data(ws, BD_DATA_EVAL, spec, n) : BD_OK;
    if (s != BD_OK && checking) /* a check is no reason to fail the work */
        fprintf(stderr, "bitdown: no check of the student: %s\n", bd_error_message());
    else if (s != BD_OK)
        return s;
    else if (spec) {
        if (checking)
            printf("\nchecking the student against the teacher on the first %lld images of %s "
                   "(--check-n; 0 skips it)\n",
                   (long long)n, spec);
        s = bd_ws_eval(ws, 0, t, st);
        cli_progress_clear();
        BD_TRY(s);
        cli_print_accuracy("teacher", t, NULL);
        cli_print_accuracy("student", st, NULL);
    }
    BD_TRY(bd_ws_save(ws, a->out, a->decoded));
    if (a->report)
        BD_TRY(cli_write_report(ws, a->report, t, st, a->out));
    cli_print_written(ws, a->out, a->decoded);
    fflush(stdout);
    if (spec)
        warn_if_lost(a, t, st, spec);
    return BD_OK;
}

int cli_quantize(int argc, char **argv)
{
    args a;
    int rc = parse(argc, argv, &a);
    if (rc != CLI_OK)
        return rc;
    if (a.threads)
        bd_threads_set((int)a.threads);
    if (a.policy)
        return run_policy(&a);
    bd_workspace *ws = NULL;
    char calib_buf[4096];
    const char *calib_spec = NULL;
    bd_status s = bd_ws_new(&ws);
    if (s == BD_OK)
        s = bd_ws_load(ws, a.model);
    if (s == BD_OK)
        s = bd_ws_batch(ws, (int)a.batch);
    if (s == BD_OK)
        s = make_plan(ws, &a);
    if (s != BD_OK) {
        rc = cli_report(s);
    } else if ((rc = cli_preprocess_ws("quantize", &a.cp, ws)) == CLI_OK &&
               (rc = cli_data_spec("quantize", bd_ws_teacher(ws), a.calib, "train", "--calib",
                                   calib_buf, sizeof calib_buf, &calib_spec)) == CLI_OK) {
        bd_ws_seed(ws, (uint64_t)a.seed);
        bd_ws_compare_objectives(ws, a.compare);
        s = bd_ws_search(ws, a.run.restarts, a.run.tol);
        cli_ws_attach(ws);
        bd_accuracy t = {0}, st = {0};
        if (s == BD_OK)
            s = bd_ws_data(ws, BD_DATA_CALIB, calib_spec, a.calib_n);
        if (s == BD_OK && cli_dist_agree(bd_ws_teacher(ws)) != CLI_OK)
            s = BD_EINVAL;
        if (s == BD_OK)
            s = work(ws, &a, &t, &st);
        cli_ws_detach();
        rc = s == BD_OK ? CLI_OK : cli_report(s);
    }
    bd_ws_free(ws);
    return rc;
}
