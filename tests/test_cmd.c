/* The command language's own rules: splitting lines into words, completion,
 * and the parser's refusals (the commands themselves are driven end to end
 * by test_repl.sh). */
#include "bd_test.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmd.h"

/* Splits line and checks it gives exactly the n words. */
static void expect_words(const char *line, int n, const char *const *want)
{
    char **argv;
    int argc;
    assert_int_equal(bd_cmd_split(line, &argv, &argc), BD_OK);
    assert_int_equal(argc, n);
    for (int i = 0; i < n; i++)
        assert_string_equal(argv[i], want[i]);
    bd_cmd_free_words(argv, argc);
}

static void expect_split_error(const char *line, const char *message)
{
    char **argv = (char **)1;
    int argc = -1;
    assert_int_equal(bd_cmd_split(line, &argv, &argc), BD_EINVAL);
    assert_null(argv);
    assert_int_equal(argc, 0);
    if (!strstr(bd_error_message(), message))
        fail_msg("'%s': message '%s' lacks '%s'", line, bd_error_message(), message);
}

static void test_split_words(void **state)
{
    (void)state;
    expect_words("quantize layer3.* iters=50", 3,
                 (const char *[]){"quantize", "layer3.*", "iters=50"});
    expect_words("  \tset\t fc   k=16 \r\n", 3, (const char *[]){"set", "fc", "k=16"});
    expect_words("", 0, NULL);
    expect_words("   \t \n", 0, NULL);
}

static void test_split_quotes_and_escapes(void **state)
{
    (void)state;
    /* single quotes keep everything, backslashes included */
    expect_words("save 'my model.onnx' 'a\\b'", 3,
                 (const char *[]){"save", "my model.onnx", "a\\b"});
    /* double quotes: \" and \\ are escapes, any other backslash stays */
    expect_words("load \"a \\\"b\\\" c\\\\d \\n\"", 2, (const char *[]){"load", "a \"b\" c\\d \\n"});
    /* outside quotes a backslash escapes the next character */
    expect_words("load my\\ model.onnx \\'x", 3, (const char *[]){"load", "my model.onnx", "'x"});
    /* quoted pieces join the word around them; empty quotes are a word */
    expect_words("predict im'age 1'.png \"\"", 3, (const char *[]){"predict", "image 1.png", ""});
}

static void test_split_comments(void **state)
{
    (void)state;
    expect_words("# a comment", 0, NULL);
    expect_words("   #indented", 0, NULL);
    expect_words("layers # the table", 1, (const char *[]){"layers"});
    /* '#' inside a word or quoted is an ordinary character */
    expect_words("show conv#2 '#x' \\#y", 4, (const char *[]){"show", "conv#2", "#x", "#y"});
}

static void test_split_errors(void **state)
{
    (void)state;
    expect_split_error("save 'unterminated", "single quote at column 6 is not closed");
    expect_split_error("load \"a b", "double quote at column 6 is not closed");
    expect_split_error("load \"a \\\"", "double quote at column 6 is not closed");
    expect_split_error("load x\\", "lone backslash");
}

/* ---- completion ---------------------------------------------------------------- */

typedef struct got {
    int n;
    char v[64][BD_LAYER_NAME_MAX];
} got;

static void collect(void *user, const char *c)
{
    got *g = user;
    assert_true(g->n < 64);
    snprintf(g->v[g->n++], sizeof g->v[0], "%s", c);
}

static int has(const got *g, const char *s)
{
    for (int i = 0; i < g->n; i++)
        if (strcmp(g->v[i], s) == 0)
            return 1;
    return 0;
}

/* Completes the last word of line (the text after its last space). */
static bd_arg_kind complete(const bd_workspace *ws, const char *line, got *g)
{
    memset(g, 0, sizeof *g);
    const char *space = strrchr(line, ' ');
    const char *partial = space ? space + 1 : line;
    char head[256];
    snprintf(head, sizeof head, "%.*s", (int)(partial - line), line);
    char **argv;
    int argc;
    assert_int_equal(bd_cmd_split(head, &argv, &argc), BD_OK);
    bd_arg_kind k = bd_cmd_complete(ws, argc, argv, partial, collect, g);
    bd_cmd_free_words(argv, argc);
    return k;
}

static int setup_ws(void **state)
{
    bd_workspace *ws;
    if (bd_ws_new(&ws) != BD_OK ||
        bd_ws_load(ws, bd_test_path("examples/fmnist/resnet_bn.onnx")) != BD_OK) {
        print_error("cannot load the example model: %s\n", bd_error_message());
        return -1;
    }
    *state = ws;
    return 0;
}

static int teardown_ws(void **state)
{
    bd_ws_free(*state);
    return 0;
}

static void test_complete_commands(void **state)
{
    (void)state;
    got g;
    assert_int_equal(complete(NULL, "", &g), BD_ARG_COMMAND);
    assert_int_equal(g.n, bd_cmd_count());
    assert_int_equal(complete(NULL, "qu", &g), BD_ARG_COMMAND);
    assert_int_equal(g.n, 2);
    assert_true(has(&g, "quantize") && has(&g, "quit"));
    assert_int_equal(complete(NULL, "help se", &g), BD_ARG_COMMAND);
    assert_int_equal(g.n, 3);
    assert_true(has(&g, "set") && has(&g, "seed") && has(&g, "sensitivity"));
    assert_int_equal(complete(NULL, "frobnicate x", &g), BD_ARG_NONE);
    assert_int_equal(g.n, 0);
}

static void test_complete_layers(void **state)
{
    got g;
    assert_int_equal(complete(*state, "show layer1.0", &g), BD_ARG_LAYER);
    assert_int_equal(g.n, 2);
    assert_true(has(&g, "layer1.0.conv1") && has(&g, "layer1.0.conv2"));
    assert_int_equal(complete(*state, "show ", &g), BD_ARG_LAYER);
    assert_int_equal(g.n, bd_ws_nlayers(*state));
    /* one argument only: nothing after it */
    assert_int_equal(complete(*state, "show fc ", &g), BD_ARG_NONE);
    assert_int_equal(g.n, 0);
    /* without a model there are no names, but the kind is known */
    assert_int_equal(complete(NULL, "show lay", &g), BD_ARG_LAYER);
    assert_int_equal(g.n, 0);
}

static void test_complete_words_and_keys(void **state)
{
    got g;
    assert_int_equal(complete(*state, "data ", &g), BD_ARG_WORD);
    assert_true(has(&g, "calib") && has(&g, "eval") && has(&g, "n="));
    assert_true(has(&g, "mean=") && has(&g, "std=") && has(&g, "resize=") && has(&g, "crop=") &&
                has(&g, "color="));
    assert_int_equal(g.n, 8);
    assert_int_equal(complete(*state, "data ca", &g), BD_ARG_WORD);
    assert_int_equal(g.n, 1);
    assert_string_equal(g.v[0], "calib");
    assert_int_equal(complete(*state, "data calib ", &g), BD_ARG_PATH);
    assert_int_equal(complete(*state, "regime small ", &g), BD_ARG_WORD);
    assert_int_equal(g.n, 1);
    assert_string_equal(g.v[0], "first");
    assert_int_equal(complete(*state, "save out.onnx ", &g), BD_ARG_WORD);
    assert_true(has(&g, "decoded"));

    /* quantize: layers, "all" and the keys of its option table */
    assert_int_equal(complete(*state, "quantize ", &g), BD_ARG_LAYER);
    assert_true(has(&g, "all") && has(&g, "iters=") && has(&g, "tune=") && has(&g, "fc") &&
                has(&g, "restarts=") && has(&g, "tol=") && has(&g, "target_bpw="));
    assert_int_equal(g.n, bd_ws_nlayers(*state) + 1 + bd_opt_op_count(&bd_quantize_op));
    assert_int_equal(complete(*state, "quantize it", &g), BD_ARG_LAYER);
    assert_int_equal(g.n, 1);
    assert_string_equal(g.v[0], "iters=");
    /* an option does not use up the positional slot, and is not offered twice */
    assert_int_equal(complete(*state, "quantize iters=5 la", &g), BD_ARG_LAYER);
    assert_true(has(&g, "layer3.0.conv2") && !has(&g, "iters="));
    assert_int_equal(complete(*state, "quantize fc ", &g), BD_ARG_NONE);
    assert_int_equal(g.n, bd_opt_op_count(&bd_quantize_op));
    assert_true(has(&g, "iters=") && has(&g, "tune="));
    /* finetune: its table's keys too */
    assert_int_equal(complete(*state, "finetune fc ", &g), BD_ARG_NONE);
    assert_int_equal(g.n, bd_opt_op_count(&bd_finetune_op));
    assert_true(has(&g, "mode=") && has(&g, "bias=") && has(&g, "seed="));
    /* set: keys, then skip|include second */
    assert_int_equal(complete(*state, "set fc ", &g), BD_ARG_WORD);
    assert_true(has(&g, "d=") && has(&g, "k=") && has(&g, "objective=") && has(&g, "skip") &&
                has(&g, "include"));
    /* train: the keys of its option table, and nothing positional */
    assert_int_equal(complete(*state, "train ", &g), BD_ARG_NONE);
    assert_int_equal(g.n, bd_opt_op_count(&bd_training_op));
    assert_true(has(&g, "epochs=") && has(&g, "quant_noise=") && has(&g, "eval_n="));
    assert_int_equal(complete(*state, "train lr=0.1 eval", &g), BD_ARG_NONE);
    assert_int_equal(g.n, 2);
    assert_true(has(&g, "eval_n=") && has(&g, "eval_quantized="));
    /* bitprune: the keys of both its tables, BitPruning's first */
    assert_int_equal(complete(*state, "bitprune ", &g), BD_ARG_NONE);
    assert_int_equal(g.n, bd_opt_op_count(&bd_bitprune_op));
    assert_string_equal(g.v[0], "target_bits=");
    assert_true(has(&g, "max_bits=") && has(&g, "epochs=") && has(&g, "loss="));
    assert_int_equal(complete(*state, "bitprune target_bits=4 target", &g), BD_ARG_NONE);
    assert_int_equal(g.n, 1);
    assert_true(has(&g, "target_mb="));
    /* a value after '=' is not completed */
    assert_int_equal(complete(*state, "quantize iters=", &g), BD_ARG_NONE);
    assert_int_equal(g.n, 0);
}

/* ---- the parser's refusals --------------------------------------------------------- */

static void test_table(void **state)
{
    (void)state;
    for (int i = 0; i < bd_cmd_count(); i++) {
        const bd_cmd_info *c = bd_cmd_at(i);
        assert_non_null(c->summary);
        assert_non_null(c->help);
        assert_int_equal(strncmp(c->usage, c->name, strlen(c->name)), 0);
        assert_ptr_equal(bd_cmd_find(c->name), c);
    }
    assert_null(bd_cmd_at(bd_cmd_count()));
    assert_null(bd_cmd_find("frobnicate"));
}

static void expect_refusal(bd_cmd_ctx *ctx, const char *line, const char *message)
{
    assert_int_not_equal(bd_cmd_exec(ctx, line), BD_OK);
    if (!strstr(bd_error_message(), message))
        fail_msg("'%s': message '%s' lacks '%s'", line, bd_error_message(), message);
}

static void test_refusals(void **state)
{
    bd_cmd_ctx ctx = {.ws = *state};
    expect_refusal(&ctx, "frobnicate", "unknown command 'frobnicate'");
    expect_refusal(&ctx, "layers extra", "layers: unexpected 'extra'");
    expect_refusal(&ctx, "layers n=3", "layers: takes no options");
    expect_refusal(&ctx, "quantize bogus=1",
                   "quantize: unknown option 'bogus' (it takes iters, restarts, tol, tune, "
                   "target_ratio, target_mb or target_bpw)");
    expect_refusal(&ctx, "quantize iters=ten", "quantize: iters is a whole number, not 'ten'");
    expect_refusal(&ctx, "quantize iters=1 iters=2", "quantize: iters= is given twice");
    expect_refusal(&ctx, "quantize restarts=0", "quantize: restarts must lie in [1, 64], not 0");
    expect_refusal(&ctx, "quantize restarts=65", "quantize: restarts must lie in [1, 64]");
    expect_refusal(&ctx, "quantize tol=0.9", "quantize: tol must lie in [0, 0.5], not 0.9");
    expect_refusal(&ctx, "quantize target_mb=0", "quantize: target_mb must lie in [1e-06, ");
    expect_refusal(&ctx, "quantize target_ratio=0.5", "quantize: target_ratio must lie in [1, ");
    expect_refusal(&ctx, "quantize target_bpw=-2", "quantize: target_bpw must lie in [0.01, 32]");
    expect_refusal(&ctx, "quantize target_mb=0.1 target_bpw=4",
                   "quantize: target_mb and target_bpw exclude each other");
    expect_refusal(&ctx, "quantize target_ratio=8 tune=5",
                   "quantize: tune does not combine with target_ratio");
    expect_refusal(&ctx, "quantize fc target_ratio=8",
                   "quantize: target_ratio=8 plans every layer the plan takes: give no GLOB");
    /* without a Lua runner (the TUI, bd.cmd) the policy cannot run */
    expect_refusal(&ctx, "quantize target_ratio=8", "quantize: target_ratio=8 runs the "
                                                    "size_budget policy, a Lua script, which "
                                                    "cannot run from here");
    expect_refusal(&ctx, "finetune epochs=3",
                   "finetune: unknown option 'epochs' (it takes mode, iters, batch, lr, momentum, "
                   "wd, step, gamma, loss, bn, bias or seed)");
    expect_refusal(&ctx, "finetune lr=0", "finetune: lr must lie in [1e-12, 1000], not 0");
    expect_refusal(&ctx, "finetune mode=both", "finetune: mode is layer or global, not 'both'");
    expect_refusal(&ctx, "eval n=0", "eval: n wants a whole number from 1");
    expect_refusal(&ctx, "train bogus=1",
                   "train: unknown option 'bogus' (it takes epochs, steps, ");
    expect_refusal(&ctx, "train lr=-1", "train: lr must lie in");
    expect_refusal(&ctx, "train epochs=1 epochs=2", "train: epochs= is given twice");
    expect_refusal(&ctx, "train all", "train: unexpected 'all'");
    expect_refusal(&ctx, "bitprune bogus=1",
                   "bitprune: unknown option 'bogus' (it takes target_bits, target_mb, ");
    expect_refusal(&ctx, "bitprune max_bits=17", "bitprune: max_bits");
    expect_refusal(&ctx, "bitprune lr=-1", "bitprune: lr");
    expect_refusal(&ctx, "bitprune all", "bitprune: unexpected 'all'");
    expect_refusal(&ctx, "show", "show: missing arguments (usage: show LAYER)");
    expect_refusal(&ctx, "data train x", "data: 'train' is not calib or eval");
    expect_refusal(&ctx, "regime medium", "regime: 'medium' is not small, large, int8 or int4");
    expect_refusal(&ctx, "set fc", "set: nothing to change");
    expect_refusal(&ctx, "set fc skip d=4", "set: skip cannot go with");
    expect_refusal(&ctx, "set fc objective=both", "set: objective is act|weight|feedback");
    expect_refusal(&ctx, "threads many", "threads: N wants a whole number");
    expect_refusal(&ctx, "help frobnicate", "help: no command 'frobnicate'");
    expect_refusal(&ctx, "run x.lua", "run: Lua scripts cannot run from here");
    expect_refusal(&ctx, "show 'open", "show: the single quote at column 6 is not closed");
    /* a path with '=' in it is not an option */
    expect_refusal(&ctx, "load ./a=b.onnx", "a=b.onnx");
    assert_int_equal(bd_cmd_exec(&ctx, "  # nothing"), BD_OK);
    assert_int_equal(ctx.quit, 0);
    assert_int_equal(bd_cmd_exec(&ctx, "quit"), BD_OK);
    assert_int_equal(ctx.quit, 1);
}

/* run hands every word after the script to it, key=value ones included (the
 * policies' arguments): a runner that records what it was given. */
typedef struct {
    char words[256];
    int argc;
} script_call;

static bd_status record_script(void *user, const char *path, int argc, char **argv)
{
    script_call *c = user;
    c->argc = argc;
    snprintf(c->words, sizeof c->words, "%s", path);
    for (int i = 0; i < argc; i++)
        snprintf(c->words + strlen(c->words), sizeof c->words - strlen(c->words), "|%s", argv[i]);
    return BD_OK;
}

static void test_run_passes_arguments(void **state)
{
    script_call got = {{0}, -1};
    bd_cmd_ctx ctx = {.ws = *state, .run_script = record_script, .script_user = &got};
    assert_int_equal(bd_cmd_exec(&ctx, "run p.lua regime=small 'stages=a;b' x"), BD_OK);
    assert_int_equal(got.argc, 3);
    assert_string_equal(got.words, "p.lua|regime=small|stages=a;b|x");
}

/* ---- option tables: values as text, help with ranges and defaults ---------------- */

static void expect_text(const bd_opt_op *op, void *opts, const char *key, const char *want)
{
    size_t at;
    const bd_opt *o = bd_opt_op_find(op, key, &at);
    char got[128];
    assert_non_null(o);
    bd_opt_value(o, (char *)opts + at, got, sizeof got);
    assert_string_equal(got, want);
}

static void test_option_values_and_help(void **state)
{
    (void)state;
    /* a value's text is the shortest that reads back, and reads back */
    bd_training_options t;
    bd_training_options_init(&t);
    expect_text(&bd_training_op, &t, "lr", "0.1");
    expect_text(&bd_training_op, &t, "div", "10");
    expect_text(&bd_training_op, &t, "wd", "0.0005");
    expect_text(&bd_training_op, &t, "schedule", "cosine");
    expect_text(&bd_training_op, &t, "quant_noise", "none");
    expect_text(&bd_training_op, &t, "augment", "");
    assert_int_equal(bd_opt_op_set(&bd_training_op, &t, "t", "augment", "crop=4,flip"), BD_OK);
    expect_text(&bd_training_op, &t, "augment", "crop=4,flip");
    bd_quantize_run r;
    bd_quantize_run_init(&r);
    expect_text(&bd_quantize_op, &r, "tol", "0.0001");
    assert_int_equal(bd_opt_op_set(&bd_quantize_op, &r, "q", "target_mb", "0.05"), BD_OK);
    expect_text(&bd_quantize_op, &r, "target_mb", "0.05");
    assert_true(r.target_mb == 0.05);
    /* BitPruning's training keys land in its .train, with its own lr */
    bd_bitprune_options b;
    bd_bitprune_options_init(&b);
    expect_text(&bd_bitprune_op, &b, "lr", "0.01");
    assert_int_equal(bd_opt_op_set(&bd_bitprune_op, &b, "b", "epochs", "3"), BD_OK);
    assert_int_equal(b.train.epochs, 3);
    /* help: each entry's range and its default from the defaults function */
    char help[16384];
    bd_opt_op_help(&bd_finetune_op, 0, help, sizeof help);
    assert_non_null(strstr(help, "  iters=N "));
    assert_non_null(strstr(help, "[1..100000000, default 200]\n"));
    assert_non_null(strstr(help, "[1e-12..1000, default 0.01]\n"));
    assert_non_null(strstr(help, "[default global]\n"));
    assert_non_null(strstr(help, "  bias=0|1 "));
    assert_non_null(strstr(help, "[default off]\n"));
    bd_opt_op_help(&bd_bitprune_op, 1, help, sizeof help);
    assert_non_null(strstr(help, "  --max-bits N "));
    assert_non_null(strstr(help, "  --lr X ")); /* training's, with BitPruning's default */
    assert_non_null(strstr(help, "[1e-12..1000, default 0.01]\n"));
    /* an unknown key lists them all, over both tables */
    assert_int_equal(bd_opt_op_set(&bd_bitprune_op, &b, "bitprune", "nope", "1"), BD_EINVAL);
    assert_non_null(strstr(bd_error_message(), "bitprune: unknown option 'nope' (it takes "
                                               "target_bits, target_mb, "));
    assert_non_null(strstr(bd_error_message(), ", eval_quantized or eval_n)"));
}

static void test_needs_model(void **state)
{
    (void)state;
    bd_workspace *ws;
    assert_int_equal(bd_ws_new(&ws), BD_OK);
    bd_cmd_ctx ctx = {.ws = ws};
    expect_refusal(&ctx, "layers", "layers: no model is loaded");
    assert_int_equal(bd_cmd_exec(&ctx, "help"), BD_OK);
    bd_ws_free(ws);
}

/* ---- a command end to end: sensitivity --------------------------------------------- */

typedef struct printed {
    char text[4096];
    size_t used;
} printed;

static void print_into(void *user, const char *text)
{
    printed *p = user;
    p->used += (size_t)snprintf(p->text + p->used, sizeof p->text - p->used, "%s", text);
    assert_true(p->used < sizeof p->text);
}

/* 'sensitivity' reports each matching layer's drop, the most sensitive one,
 * refuses bad options, and changes nothing the undo history would know. */
static void test_sensitivity(void **state)
{
    printed out = {"", 0};
    bd_cmd_ctx ctx = {.ws = *state, .print = print_into, .user = &out};
    assert_int_equal(bd_cmd_exec(&ctx, "data calib fmnist:train n=128"), BD_OK);
    expect_refusal(&ctx, "sensitivity n=0", "sensitivity: n wants a whole number from 1");
    expect_refusal(&ctx, "sensitivity k=2", "sensitivity: unknown option 'k' (it takes n)");
    expect_refusal(&ctx, "sensitivity nothing*", "sensitivity: no layer matches 'nothing*'");
    assert_int_equal(bd_cmd_exec(&ctx, "set fc k=2"), BD_OK);
    out.used = 0;
    out.text[0] = '\0';
    assert_int_equal(bd_cmd_exec(&ctx, "sensitivity 'layer3.0.conv[12]' n=200"), BD_OK);
    const char *want[] = {
        "float model top1 ", "% (200 images); each layer alone quantized:\n",
        "\nlayer3.0.conv1: d=9 k=256 objective=feedback, top1 ", "\nlayer3.0.conv2: d=9 k=256",
        "\nmost sensitive: layer3.0.conv"};
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++)
        if (!strstr(out.text, want[i]))
            fail_msg("the output lacks '%s':\n%s", want[i], out.text);
    assert_null(strstr(out.text, "fc:")); /* only the layers the glob matches */
    const bd_ws_layer *fc = bd_ws_layer_at(ctx.ws, bd_ws_layer_index(ctx.ws, "fc"));
    assert_int_equal(fc->k, 2);
    assert_string_equal(bd_ws_undo_label(ctx.ws), "set fc");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_split_words),
        cmocka_unit_test(test_split_quotes_and_escapes),
        cmocka_unit_test(test_split_comments),
        cmocka_unit_test(test_split_errors),
        cmocka_unit_test(test_complete_commands),
        cmocka_unit_test_setup_teardown(test_complete_layers, setup_ws, teardown_ws),
        cmocka_unit_test_setup_teardown(test_complete_words_and_keys, setup_ws, teardown_ws),
        cmocka_unit_test(test_table),
        cmocka_unit_test_setup_teardown(test_refusals, setup_ws, teardown_ws),
        cmocka_unit_test_setup_teardown(test_run_passes_arguments, setup_ws, teardown_ws),
        cmocka_unit_test(test_needs_model),
        cmocka_unit_test_setup_teardown(test_sensitivity, setup_ws, teardown_ws),
        cmocka_unit_test(test_option_values_and_help),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
