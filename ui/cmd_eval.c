/* bitdown eval MODEL --data SPEC: accuracy on a dataset. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "dist.h"
#include "compressed.h"
#include "lazy_weights.h"
#include "size.h"
#include "eval.h"
#include "fileio.h"
#include "model_meta.h"
#include "threads.h"

static const char help[] =
    "usage: bitdown eval MODEL [--data SPEC] [options]\n\n"
    "Runs MODEL on a dataset and prints 'top1 X.XX% top5 Y.YY% (N images)'.\n\n"
    "  --data SPEC       fmnist:train | fmnist:test | idx:IMAGES,LABELS | dir:PATH |\n"
    "                    list:FILE (default: the model's bitdown.dataset, test split)\n"
    "  --limit N         only the first N images\n"
    "  --batch B         images per forward pass (default 64)\n"
    "  --threads T       CPU threads (default: all cores)\n"
    "  --logits FILE     write the raw logits: float32, row-major [N, classes],\n"
    "                    little-endian\n"
    "  --per-class       also print the top-1 accuracy of every class\n" CLI_PREPROCESS_HELP;

static int write_logits(const char *path, const bd_eval_result *r)
{
    const void *chunk[1] = {r->logits};
    size_t len = (size_t)r->n * (size_t)r->classes * sizeof(float);
    bd_status s = bd_write_file_atomic(path, 1, chunk, &len);
    return s == BD_OK ? CLI_OK : cli_report(s);
}

static void print_per_class(const bd_graph *g, const bd_dataset *d, const bd_eval_result *r)
{
    char **names = NULL;
    int nnames = 0;
    if (bd_model_class_names(g, &names, &nnames) != BD_OK)
        names = NULL;
    for (int c = 0; c < r->classes; c++) {
        if (!r->class_total[c])
            continue;
        const char *name = c < nnames && names ? names[c] : bd_dataset_class_name(d, c);
        printf("  class %3d %-24s %6.2f%% (%lld images)\n", c, name ? name : "",
               100.0 * (double)r->class_correct[c] / (double)r->class_total[c],
               (long long)r->class_total[c]);
    }
    bd_class_names_free(names, nnames);
}

int cli_eval(int argc, char **argv)
{
    static const struct option opts[] = {
        {"help", no_argument, 0, 'h'},        {"data", required_argument, 0, 'd'},
        {"limit", required_argument, 0, 'n'}, {"batch", required_argument, 0, 'b'},
        {"threads", required_argument, 0, 't'}, {"logits", required_argument, 0, 'l'},
        {"per-class", no_argument, 0, 'p'},   CLI_PREPROCESS_LONGOPTS,
        {0, 0, 0, 0}};
    cli_inference_memory();
    const char *data = NULL, *logits = NULL;
    long limit = 0, batch = 64, threads = 0;
    int per_class = 0, c;
    cli_preprocess cp = {0};
    optind = 1;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        if (cli_preprocess_option(&cp, c, optarg))
            continue;
        switch (c) {
        case 'h': fputs(help, stdout); return CLI_OK;
        case 'd': data = optarg; break;
        case 'l': logits = optarg; break;
        case 'p': per_class = 1; break;
        case 'n':
            if (cli_parse_int("eval", "--limit", optarg, 1, 1L << 40, &limit))
                return CLI_USAGE;
            break;
        case 'b':
            if (cli_parse_int("eval", "--batch", optarg, 1, 1 << 16, &batch))
                return CLI_USAGE;
            break;
        case 't':
            if (cli_parse_int("eval", "--threads", optarg, 1, 1024, &threads))
                return CLI_USAGE;
            break;
        default: return cli_bad_option("eval", argv);
        }
    }
    if (optind != argc - 1)
        return cli_usage_error("eval", "expects one MODEL");
    if (threads)
        bd_threads_set((int)threads);
    bd_graph *g = NULL;
    bd_dataset *d = NULL;
    bd_exec *ex = NULL;
    bd_eval_result r = {0};
    char spec[4096];
    int rc = CLI_FAIL;
    bd_lazy_weights *lw = NULL;
    bd_status s = cli_load_model(argv[optind], &g, 1, &lw);
    if (s != BD_OK)
        return cli_report(s);
    const char *dataset = bd_graph_meta(g, BD_META_DATASET);
    if (!data && !dataset) {
        rc = cli_usage_error("eval", "--data is needed: %s does not name its dataset",
                             argv[optind]);
        goto done;
    }
    if (!data) {
        snprintf(spec, sizeof spec, "%s:test", dataset);
        data = spec;
    }
    bd_preprocess pp;
    if ((rc = cli_preprocess_resolve("eval", &cp, g, &pp)) != CLI_OK)
        goto done;
    rc = CLI_FAIL;
    if ((s = bd_dataset_open(&d, data, &pp)) != BD_OK ||
        (s = bd_exec_new(&ex, g, BD_EXEC_FUSE)) != BD_OK) {
        cli_report(s);
        goto done;
    }
    if (lw)
        bd_lazy_weights_attach(lw, ex);
    if ((rc = cli_dist_agree(g)) != CLI_OK)
        goto done;
    rc = CLI_FAIL;
    bd_eval_options eo = {.limit = limit, .batch = (int)batch, .keep_logits = logits != NULL};
    if ((s = bd_evaluate(ex, d, &eo, NULL, &r)) != BD_OK) {
        cli_report(s);
        goto done;
    }
    printf("%s on %s:\n", argv[optind], data); /* whose accuracy, on what */
    printf("top1 %.2f%% top5 %.2f%% (%lld images)\n", 100.0 * (double)r.top1 / (double)r.n,
           100.0 * (double)r.top5 / (double)r.n, (long long)r.n);
    if (per_class)
        print_per_class(g, d, &r);
    rc = logits && bd_dist_rank() == 0 ? write_logits(logits, &r) : CLI_OK; /* every rank's */
done:
    bd_eval_result_free(&r);
    bd_exec_free(ex);
    bd_dataset_free(d);
    bd_graph_free(g);
    bd_lazy_weights_free(lw);
    return rc;
}
