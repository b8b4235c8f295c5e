/* The command language: bd_cmd_split, completion, and bd_cmd_exec on two
 * workspaces, one with no model and one holding the small example ResNet
 * (loaded once, at start).
 *
 * An input is up to MAX_LINES lines. Commands that do heavy work or touch
 * files (quantize, finetune, train, bitprune, eval, sensitivity, predict, load, save, run,
 * and data with a dataset to open) are left out on the loaded workspace, and load on the
 * empty one: the parser, the option checks and the plan editing (regime,
 * set, reset, undo, layers, show, size, ...) are what is fuzzed. After each
 * input every change is undone, and the plan must then be exactly the plan
 * as loaded: undo is checked on the way. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cmd.h"
#include "fuzz_common.h"

/* Well below the workspace's undo depth, so undoing everything an input
 * did always gets back to the start. */
enum { MAX_LINES = 32 };

static bd_workspace *loaded;
static bd_ws_layer *as_loaded; /* the plan and state of every layer at start */
static int nlayers;
static uint64_t seed;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    bd_fuzz_init();
    if (bd_ws_new(&loaded) != BD_OK ||
        bd_ws_load(loaded, BD_SOURCE_DIR "/examples/fmnist/resnet_bn.onnx") != BD_OK)
        bd_fuzz_abort("cannot load the example model: %s", bd_error_message());
    nlayers = bd_ws_nlayers(loaded);
    as_loaded = calloc((size_t)nlayers, sizeof *as_loaded);
    if (!as_loaded)
        bd_fuzz_abort("out of memory");
    for (int i = 0; i < nlayers; i++)
        as_loaded[i] = *bd_ws_layer_at(loaded, i);
    seed = bd_ws_get_seed(loaded);
    return 0;
}

static void quiet(void *user, const char *text)
{
    (void)user;
    (void)text;
}

static void ignore(void *user, const char *candidate)
{
    (void)user;
    (void)candidate;
}

static int is_heavy(const char *word)
{
    static const char *const heavy[] = {"quantize", "finetune", "train", "bitprune",
                                        "eval",     "sensitivity", "predict", "load",
                                        "save",     "run",      NULL};
    for (int i = 0; heavy[i]; i++)
        if (strcmp(word, heavy[i]) == 0)
            return 1;
    return 0;
}

static void one_line(bd_workspace *empty, const char *line)
{
    char **argv;
    int argc;
    if (bd_cmd_split(line, &argv, &argc) != BD_OK)
        return; /* bd_cmd_exec refuses it the same way; nothing more to reach */
    for (int w = 0; w <= argc; w++)
        bd_cmd_complete(loaded, w, argv, w < argc ? argv[w] : "", ignore, NULL);
    int light = argc == 0 || !is_heavy(argv[0]);
    /* 'data' alone shows the data; with more it opens a dataset */
    int opens_data = argc > 1 && strcmp(argv[0], "data") == 0;
    if (argc == 0 || strcmp(argv[0], "load") != 0) {
        bd_cmd_ctx ctx = {.ws = empty, .print = quiet};
        bd_cmd_exec(&ctx, line);
    }
    if (light && !opens_data) {
        bd_cmd_ctx ctx = {.ws = loaded, .print = quiet};
        bd_cmd_exec(&ctx, line);
    }
    bd_cmd_free_words(argv, argc);
}

/* Undoes everything, then checks the plan is the one the model loaded with. */
static void restore(void)
{
    char what[256];
    while (bd_ws_undo(loaded, what, sizeof what) == BD_OK)
        ;
    bd_ws_seed(loaded, seed);
    bd_ws_threads(loaded, 1);
    bd_ws_device(loaded, "cpu");
    if (bd_ws_nlayers(loaded) != nlayers)
        bd_fuzz_abort("the model changed: %d layers, was %d", bd_ws_nlayers(loaded), nlayers);
    for (int i = 0; i < nlayers; i++) {
        const bd_ws_layer *l = bd_ws_layer_at(loaded, i), *a = &as_loaded[i];
        if (l->quantize != a->quantize || l->d != a->d || l->k != a->k ||
            l->objective != a->objective || l->state != a->state ||
            strcmp(l->note, a->note) != 0)
            bd_fuzz_abort("after undoing everything, layer %s has d=%d k=%d objective=%d "
                          "quantize=%d state=%d note '%s'; it loaded with d=%d k=%d "
                          "objective=%d quantize=%d state=%d note '%s'",
                          l->layer.name, l->d, l->k, (int)l->objective, l->quantize,
                          (int)l->state, l->note, a->d, a->k, (int)a->objective, a->quantize,
                          (int)a->state, a->note);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* lines end at a newline; a NUL ends the input, as it would a C string */
    char *text = malloc(size + 1);
    bd_workspace *empty;
    if (!text || bd_ws_new(&empty) != BD_OK)
        bd_fuzz_abort("out of memory");
    memcpy(text, data, size);
    text[size] = '\0';
    char *line = text;
    for (int n = 0; line && n < MAX_LINES; n++) {
        char *nl = strchr(line, '\n');
        if (nl)
            *nl = '\0';
        one_line(empty, line);
        line = nl ? nl + 1 : NULL;
    }
    bd_ws_free(empty);
    free(text);
    restore();
    bd_threads_set(1);
    return 0;
}
