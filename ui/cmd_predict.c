/* bitdown predict MODEL IMAGE...: the five likeliest classes per image. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "eval.h"
#include "exec.h"
#include "model_meta.h"

static const char help[] =
    "usage: bitdown predict MODEL IMAGE... [options]\n\n"
    "Prints the five likeliest classes, with probabilities, for each JPEG or PNG\n"
    "image.\n\n"
    "  --classes FILE    class names, one per line (default: the model's metadata)\n"
    "  --top K           how many classes to print (default 5)\n" CLI_PREPROCESS_HELP;

static int predict_one(bd_exec *ex, const char *path, const bd_preprocess *pp, char **names,
                       int nnames, int top)
{
    bd_image img;
    bd_tensor *x = NULL, *y = NULL;
    bd_status s = bd_image_load(path, &img);
    if (s != BD_OK)
        return cli_report(s);
    int w, h;
    bd_preprocess_size(pp, img.width, img.height, &w, &h);
    int64_t dims[4] = {1, pp->channels, h, w};
    s = bd_tensor_new_raw(&x, BD_F32, 4, dims, path);
    if (s == BD_OK)
        s = bd_image_preprocess(&img, pp, x->data);
    if (s == BD_OK)
        s = bd_exec_run1(ex, x, &y);
    if (s == BD_OK && (y->ndim != 2 || y->dims[0] != 1 || y->dtype != BD_F32))
        s = bd_fail(BD_EFORMAT, "the model's output is not [1, classes] float32 logits");
    int rc = CLI_OK;
    if (s != BD_OK) {
        rc = cli_report(s);
    } else {
        int classes = (int)y->dims[1];
        float *p = malloc((size_t)classes * sizeof *p);
        int idx[64];
        if (top > classes)
            top = classes;
        if (!p) {
            rc = cli_report(bd_fail(BD_ENOMEM, "out of memory"));
        } else {
            bd_softmax(y->data, classes, p);
            bd_topk(p, classes, top, idx);
            printf("%s\n", path);
            for (int k = 0; k < top; k++)
                printf("  %6.2f%%  %s (%d)\n", 100.0 * p[idx[k]],
                       idx[k] < nnames ? names[idx[k]] : "", idx[k]);
        }
        free(p);
    }
    bd_tensor_free(x);
    bd_tensor_free(y);
    bd_image_free(&img);
    return rc;
}

int cli_predict(int argc, char **argv)
{
    static const struct option opts[] = {{"help", no_argument, 0, 'h'},
                                         {"classes", required_argument, 0, 'c'},
                                         {"top", required_argument, 0, 'k'},
                                         CLI_PREPROCESS_LONGOPTS,
                                         {0, 0, 0, 0}};
    cli_inference_memory();
    const char *classes = NULL;
    long top = 5;
    int c;
    cli_preprocess cp = {0};
    optind = 1;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        if (cli_preprocess_option(&cp, c, optarg))
            continue;
        switch (c) {
        case 'h': fputs(help, stdout); return CLI_OK;
        case 'c': classes = optarg; break;
        case 'k':
            if (cli_parse_int("predict", "--top", optarg, 1, 64, &top))
                return CLI_USAGE;
            break;
        default: return cli_bad_option("predict", argv);
        }
    }
    if (argc - optind < 2)
        return cli_usage_error("predict", "expects a MODEL and at least one IMAGE");
    bd_graph *g;
    bd_status s = cli_load_model(argv[optind], &g, 0, NULL);
    if (s != BD_OK)
        return cli_report(s);
    char **names = NULL;
    int nnames = 0, rc;
    bd_preprocess pp;
    bd_exec *ex = NULL;
    if ((rc = cli_preprocess_resolve("predict", &cp, g, &pp)) != CLI_OK)
        goto done;
    s = classes ? bd_class_names_load(classes, &names, &nnames)
                : bd_model_class_names(g, &names, &nnames);
    const bd_value *out = g->noutputs > 0 ? &g->values[g->outputs[0]] : NULL;
    if (s == BD_OK && classes && out && out->ndim == 2 && out->dims[1] > 0 &&
        out->dims[1] != nnames) {
        rc = cli_usage_error("predict", "%s has %d class names, but the model has %lld outputs",
                             classes, nnames, (long long)out->dims[1]);
        goto done;
    }
    if (s == BD_OK)
        s = bd_exec_new(&ex, g, BD_EXEC_FUSE | BD_EXEC_FROZEN);
    if (s != BD_OK) {
        rc = cli_report(s);
        goto done;
    }
    for (int i = optind + 1; i < argc; i++)
        if (predict_one(ex, argv[i], &pp, names, nnames, (int)top) != CLI_OK)
            rc = CLI_FAIL;
done:
    bd_exec_free(ex);
    bd_class_names_free(names, nnames);
    bd_graph_free(g);
    return rc;
}
