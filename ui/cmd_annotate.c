/* bitdown annotate MODEL -o OUT: writes what a model says about its input
 * and classes (docs/metadata.md) into a copy of it, so every later command
 * reads the right preprocessing without flags. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "model_meta.h"
#include "onnx_io.h"

static const char help[] =
    "usage: bitdown annotate MODEL -o OUT.onnx [--preset NAME] [--classes FILE] [options]\n\n"
    "Copies MODEL (plain or compressed, node for node) with preprocessing and class\n"
    "names in its metadata (docs/metadata.md), so that eval, predict, quantize and the\n"
    "workbench preprocess its images right without flags and name its classes.\n\n"
    "  -o, --output FILE     where to write (atomically)\n"
    "  --preset NAME         a dataset's preprocessing and class names:\n"
    "                        imagenet (resize 256, crop 224, RGB, ImageNet's mean and\n"
    "                        std; class names from --classes), fmnist, mnist, cifar10\n"
    "  --classes FILE        class names, one per line, in label order (their count\n"
    "                        must be the model's output's)\n"
    "  --dataset SPEC        the data spec prefix it was trained on (fmnist: eval then\n"
    "                        uses its test split without --data)\n"
    "The preprocessing options below override the preset (or the model's own):\n" CLI_PREPROCESS_HELP;

typedef struct args {
    const char *model, *out, *preset, *classes, *dataset;
    cli_preprocess cp;
} args;

static int parse(int argc, char **argv, args *a)
{
    static const struct option opts[] = {
        {"help", no_argument, 0, 'h'},           {"output", required_argument, 0, 'o'},
        {"preset", required_argument, 0, 'p'},   {"classes", required_argument, 0, 'c'},
        {"dataset", required_argument, 0, 'd'},  CLI_PREPROCESS_LONGOPTS,
        {0, 0, 0, 0}};
    memset(a, 0, sizeof *a);
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "ho:", opts, NULL)) != -1) {
        if (cli_preprocess_option(&a->cp, c, optarg))
            continue;
        switch (c) {
        case 'h': fputs(help, stdout); exit(CLI_OK);
        case 'o': a->out = optarg; break;
        case 'p': a->preset = optarg; break;
        case 'c': a->classes = optarg; break;
        case 'd': a->dataset = optarg; break;
        default: return cli_bad_option("annotate", argv);
        }
    }
    if (optind != argc - 1)
        return cli_usage_error("annotate", "expects one MODEL");
    if (!a->out)
        return cli_usage_error("annotate", "-o OUT.onnx is needed");
    a->model = argv[optind];
    if (!a->preset && !a->classes && !a->dataset && !cli_preprocess_given(&a->cp))
        return cli_usage_error("annotate", "nothing to write: give --preset, --classes, "
                                           "--dataset or preprocessing options");
    return CLI_OK;
}

/* The class names of the file, else the preset's; none from either is
 * fine (imagenet's come from a file). */
static bd_status classes(bd_graph *g, const args *a, const bd_meta_preset *preset)
{
    char **names = NULL;
    int n = 0;
    char what[96];
    if (a->classes)
        BD_TRY(bd_class_names_load(a->classes, &names, &n));
    else if (preset && preset->classes) {
        snprintf(what, sizeof what, "preset %s", preset->name);
        BD_TRY(bd_class_names_parse(preset->classes, strlen(preset->classes), what, &names, &n));
    } else
        return BD_OK;
    bd_status s = bd_model_set_class_names(g, names, n, a->classes ? a->classes : what);
    bd_class_names_free(names, n);
    return s;
}

int cli_annotate(int argc, char **argv)
{
    args a;
    int rc = parse(argc, argv, &a);
    if (rc != CLI_OK)
        return rc;
    const bd_meta_preset *preset = NULL;
    bd_status s = a.preset ? bd_meta_preset_find(a.preset, &preset) : BD_OK;
    if (s != BD_OK)
        return cli_usage_error("annotate", "%s", bd_error_message());
    bd_graph *g = NULL;
    if ((s = bd_onnx_load(a.model, &g)) != BD_OK)
        return cli_report(s);
    /* the preset goes in first, as if the model had said it, so that the
     * options override it and it is checked against the model's input */
    if (preset)
        s = bd_model_set_preprocess(g, &preset->pp);
    bd_preprocess pp;
    if (s == BD_OK && (preset || cli_preprocess_given(&a.cp))) {
        rc = cli_preprocess_resolve("annotate", &a.cp, g, &pp);
        if (rc == CLI_OK)
            s = bd_model_set_preprocess(g, &pp);
    }
    const char *dataset = a.dataset ? a.dataset : preset ? preset->dataset : NULL;
    if (rc == CLI_OK && s == BD_OK)
        s = classes(g, &a, preset);
    if (rc == CLI_OK && s == BD_OK && dataset)
        s = bd_graph_set_meta(g, BD_META_DATASET, dataset);
    if (rc == CLI_OK && s == BD_OK && (s = bd_onnx_save(g, a.out)) == BD_OK)
        printf("wrote %s\n", a.out);
    if (rc == CLI_OK && s != BD_OK)
        rc = cli_report(s);
    bd_graph_free(g);
    return rc;
}
