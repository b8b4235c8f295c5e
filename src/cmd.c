/* The command language (cmd.h). Everything a command is (its words, its
 * options, its help, how it completes) lives in one table entry, so parsing,
 * 'help' and completion cannot drift apart.
 *
 * Output is meant to be read by people and checked by scripts alike: one
 * fact per line where a number matters, the same formats as the one-shot
 * commands ("teacher top1 93.20% top5 99.80% (500 images)"). */
#include "cmd.h"

#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fileio.h"
#include "model_meta.h"
#include "pq.h"

/* ---- splitting ------------------------------------------------------------------ */

void bd_cmd_free_words(char **argv, int argc)
{
    for (int i = 0; i < argc; i++)
        free(argv[i]);
    free(argv);
}

static int is_blank(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

bd_status bd_cmd_split(const char *line, char ***argv, int *argc)
{
    *argv = NULL;
    *argc = 0;
    size_t len = strlen(line);
    /* no word is longer than the line, and no line has more words than
     * half its length plus one */
    char *word = malloc(len + 1);
    char **v = calloc(len / 2 + 2, sizeof *v);
    int n = 0;
    bd_status s = word && v ? BD_OK : bd_fail(BD_ENOMEM, "out of memory");
    const char *p = line;
    while (s == BD_OK) {
        while (is_blank(*p))
            p++;
        if (!*p || *p == '#')
            break;
        size_t used = 0;
        while (s == BD_OK && *p && !is_blank(*p)) {
            const char *open = p;
            if (*p == '\'') {
                for (p++; *p && *p != '\''; p++)
                    word[used++] = *p;
                if (!*p)
                    s = bd_fail(BD_EINVAL, "the single quote at column %d is not closed",
                                (int)(open - line) + 1);
                else
                    p++;
            } else if (*p == '"') {
                /* as in the shell, a backslash inside double quotes only
                 * escapes another backslash or a double quote */
                for (p++; *p && *p != '"'; p++) {
                    if (*p == '\\' && (p[1] == '"' || p[1] == '\\'))
                        p++;
                    word[used++] = *p;
                }
                if (!*p)
                    s = bd_fail(BD_EINVAL, "the double quote at column %d is not closed",
                                (int)(open - line) + 1);
                else
                    p++;
            } else if (*p == '\\') {
                if (!p[1])
                    s = bd_fail(BD_EINVAL, "the line ends with a lone backslash");
                else {
                    word[used++] = p[1];
                    p += 2;
                }
            } else {
                word[used++] = *p++;
            }
        }
        if (s == BD_OK) {
            word[used] = '\0';
            if (!(v[n] = bd_strdup(word)))
                s = bd_fail(BD_ENOMEM, "out of memory");
            else
                n++;
        }
    }
    free(word);
    if (s != BD_OK) {
        bd_cmd_free_words(v, n);
        return s;
    }
    *argv = v;
    *argc = n;
    return BD_OK;
}

/* ---- the table -------------------------------------------------------------------- */

/* A parsed line: positional words and key=value options, borrowed from the
 * split words. */
enum { MAX_WORDS = 64, MAX_OPTS = 32 };
typedef struct command command;
typedef struct call {
    const command *cmd;
    int npos;
    char *pos[MAX_WORDS];
    int nopt;
    const char *key[MAX_OPTS];
    const char *val[MAX_OPTS];
} call;

typedef bd_status (*handler)(bd_cmd_ctx *ctx, const call *c);

/* What the positional arguments after the first are (the first one is
 * described by info.arg and info.words). */
typedef struct slot {
    bd_arg_kind arg;
    const char *const *words;
} slot;

struct command {
    bd_cmd_info info;
    slot second; /* also every later one, for commands with no upper bound */
    int min_args, max_args; /* positional; max_args < 0: no bound */
    int needs_model;
    handler run;
};

static bd_status cmd_load(bd_cmd_ctx *ctx, const call *c);
static bd_status cmd_data(bd_cmd_ctx *ctx, const call *c);
static bd_status cmd_regime(bd_cmd_ctx *ctx, const call *c);
static bd_status cmd_set(bd_cmd_ctx *ctx, const call *c);
static bd_status cmd_layers(bd_cmd_ctx *ctx, const call *c);
static bd_status cmd_show(bd_cmd_ctx *ctx, const call *c);
static bd_status cmd_quantize(bd_cmd_ctx *ctx, const call *c);
static bd_status cmd_finetune(bd_cmd_ctx *ctx, const call *c);
static bd_status cmd_train(bd_cmd_ctx *ctx, const call *c);
static bd_status cmd_bitprune(bd_cmd_ctx *ctx, const call *c);
static bd_status cmd_reset(bd_cmd_ctx *ctx, const call *c);
static bd_status cmd_undo(bd_cmd_ctx *ctx, const call *c);
static bd_status cmd_eval(bd_cmd_ctx *ctx, const call *c);
static bd_status cmd_sensitivity(bd_cmd_ctx *ctx, const call *c);
static bd_status cmd_predict(bd_cmd_ctx *ctx, const call *c);
static bd_status cmd_size(bd_cmd_ctx *ctx, const call *c);
static bd_status cmd_save(bd_cmd_ctx *ctx, const call *c);
static bd_status cmd_device(bd_cmd_ctx *ctx, const call *c);
static bd_status cmd_threads(bd_cmd_ctx *ctx, const call *c);
static bd_status cmd_seed(bd_cmd_ctx *ctx, const call *c);
static bd_status cmd_run(bd_cmd_ctx *ctx, const call *c);
static bd_status cmd_help(bd_cmd_ctx *ctx, const call *c);
static bd_status cmd_quit(bd_cmd_ctx *ctx, const call *c);

static const char *const data_kinds[] = {"calib", "eval", NULL};
static const char *const regimes[] = {"small", "large", "int8", "int4", NULL};
static const char *const first_word[] = {"first", NULL};
static const char *const skip_include[] = {"skip", "include", NULL};
static const char *const all_word[] = {"all", NULL};
static const char *const decoded_word[] = {"decoded", NULL};
static const char *const devices[] = {"cpu", "cuda", NULL};
static const char *const n_key[] = {"n", NULL};
static const char *const data_keys[] = {"n", "color", "resize", "crop", "mean", "std", NULL};
static const char *const set_keys[] = {"d",      "k",         "int",   "per", "sym",
                                       "format", "objective", "clamp", NULL};

static const command commands[] = {
    {{"load", "load PATH", "load a model, plain or compressed (resumes its codebooks)",
      "Loads an ONNX model and replaces the current one, its plan and its undo\n"
      "history. A compressed file written by 'save' comes back with its quantized\n"
      "layers. The plan starts as the small regime; the data default to the\n"
      "model's dataset (train split for calibration, test split for evaluation).",
      BD_ARG_PATH, NULL, NULL, NULL},
     {BD_ARG_NONE, NULL}, 1, 1, 0, cmd_load},
    {{"data", "data [calib|eval [SPEC]] [n=N] [color=gray|rgb resize=S crop=C mean=M std=S]",
      "set the calibration or evaluation images, and their preprocessing",
      "Sets the images used for calibration (the inputs whose activations weigh\n"
      "the quantization, and fine-tuning's images) or for evaluation, and how many\n"
      "of them (n=N; calibration: 1024 by default; fine-tuning draws its batches\n"
      "from the whole set). SPEC is\n"
      "fmnist:train, fmnist:test, idx:IMAGES.gz,LABELS.gz, dir:PATH or list:FILE;\n"
      "without it the current one is kept and only n changes. Without arguments,\n"
      "shows both and the preprocessing.\n"
      "color, resize, crop, mean and std replace what the model's metadata says\n"
      "about preprocessing (as --gray/--rgb, --resize, --crop, --mean, --std do on\n"
      "the command line) for all images, calibration and evaluation alike; mean and\n"
      "std take one value or one per channel (mean=0.485,0.456,0.406).",
      BD_ARG_WORD, data_kinds, data_keys, NULL},
     {BD_ARG_PATH, NULL}, 0, 2, 1, cmd_data},
    {{"regime", "regime small|large|int8|int4 [first]", "replace the plan with a regime",
      "small: d=9 for 3x3 convs, 4 for 1x1 convs and fully-connected layers;\n"
      "large: d=18 for 3x3, 8 for 1x1, 4 for fully-connected. k=256, 2048 for\n"
      "fully-connected layers, clamped to what each layer allows (said per layer).\n"
      "int8, int4 (any intB, B = 1..16): scalar ints of B bits, per output channel,\n"
      "asymmetric, fitted to the activations with error feedback.\n"
      "The first conv stays in fp32 unless 'first' is given. One undo step.",
      BD_ARG_WORD, regimes, NULL, NULL},
     {BD_ARG_WORD, first_word}, 1, 2, 1, cmd_regime},
    {{"set",
      "set GLOB [d=D] [k=K] [clamp=1] | [int=B] [per=channel|tensor] [sym=0|1] "
      "[format=pq|int] [objective=act|weight|feedback] | set GLOB skip|include",
      "change the plan of the layers matching GLOB",
      "Changes block size d or centroids k (PQ), or makes the layers int=B\n"
      "(B = 1..16 bits; per=channel or tensor scales, sym=1 a grid symmetric about 0;\n"
      "format= switches back and forth keeping both settings), or the objective (act: ||X(W-W^)||^2\n"
      "through each block's Gram, the paper's; weight: ||W-W^||^2, plain k-means;\n"
      "feedback, the default: act, then error feedback across each row's blocks\n"
      "with the full row's Gram, for rows of at most 8192) of every layer matching GLOB\n"
      "(layer3.*, *conv1; all: every layer); skip keeps them in fp32 when\n"
      "quantizing all, include takes them back. Refused as a whole, naming the\n"
      "layer, if any layer cannot take the change; with clamp=1 a k larger than a\n"
      "layer allows becomes its largest (said per layer) instead. A quantized layer keeps its\n"
      "codebook until quantized again. One undo step.",
      BD_ARG_LAYER, NULL, set_keys, NULL},
     {BD_ARG_WORD, skip_include}, 1, 2, 1, cmd_set},
    {{"layers", "layers", "the layer table: plan, size, error and state of every layer",
      "One line per quantizable layer: name, kind, weight shape, parameters, the\n"
      "plan's d, k and bits per weight (plan b/w), then the layer as it stands:\n"
      "bits per weight (32 while float), stored size in KB, relative output error\n"
      "||X(W-W^)||/||XW|| on the held-out calibration rows ('-' when unknown;\n"
      "measured again after fine-tuning) and state (float, quantized, tuned);\n"
      "'skip' marks layers the plan leaves in fp32.",
      BD_ARG_NONE, NULL, NULL, NULL},
     {BD_ARG_NONE, NULL}, 0, 0, 1, cmd_layers},
    {{"show", "show LAYER", "everything about one layer",
      "Shape, row length and its divisors (the block sizes d it allows), the plan\n"
      "and the largest k allowed for its d, the state and, when quantized, the\n"
      "codebook: d, k, codes actually used, EM iterations, the EM objective from\n"
      "first to last iteration, relative error and time.",
      BD_ARG_LAYER, NULL, NULL, NULL},
     {BD_ARG_NONE, NULL}, 1, 1, 1, cmd_show},
    {{"quantize",
      "quantize [GLOB|all] [iters=N] [restarts=R] [tol=X] [tune=N] "
      "[target_ratio=R|target_mb=M|target_bpw=B]",
      "quantize layers with the plan's d and k, or to a size target",
      "Quantizes the layers matching GLOB (default all: every layer the plan does\n"
      "not skip), in graph order, each from the student as it stands, with the\n"
      "plan's objective. EM runs from R seeds (k-means++ each) and keeps the best;\n"
      "each fit stops after N iterations or when its objective improves by less\n"
      "than X (relative) for 3 iterations in a row. restarts and tol default to\n"
      "the session's (as below, unless a command line set them). tune=N tunes\n"
      "each layer's centroids for N steps by distillation right after it is\n"
      "quantized (layer-wise fine-tuning, default settings of 'finetune').\n"
      "A size target replaces the plan: target_ratio (the fp32 size over the\n"
      "compressed one), target_mb (the compressed size in MiB) or target_bpw (the\n"
      "mean bits per weight of every quantizable layer, codebooks and layers left\n"
      "fp32 counted) runs the size_budget policy (lua/policies/size_budget.lua),\n"
      "which picks each planned layer's d and k, bits or fp32 to meet it with the\n"
      "least error and quantizes them: one target at a time, no GLOB, no tune.\n"
      "One undo step; Ctrl-C cancels and leaves every layer as it was (a target:\n"
      "the policy's changes of the plan are undo steps of their own, kept when\n"
      "Ctrl-C cancels its quantization).",
      BD_ARG_LAYER, all_word, NULL, &bd_quantize_op},
     {BD_ARG_NONE, NULL}, 0, 1, 1, cmd_quantize},
    {{"finetune", "finetune [GLOB|all] [key=value ...]",
      "tune the centroids of quantized layers (distillation or labels)",
      "Tunes the codebooks of the quantized layers matching GLOB (default all):\n"
      "the centroids are the parameters, a centroid's gradient the mean of its\n"
      "weights' gradients; SGD with momentum and weight decay for iters steps\n"
      "of batch images from the calibration data. mode=layer tunes one layer at\n"
      "a time, mode=global all together. loss=kl distils the teacher's softmax\n"
      "(KL(teacher||student), unlabelled); loss=ce uses the labels. lr is\n"
      "multiplied by gamma every step=N steps. bn=train normalises with batch\n"
      "statistics and updates the running ones; bias=1 also tunes biases and\n"
      "BatchNorm scales and shifts. seed=0 takes the workspace's seed.\n"
      "The codes do not change. One undo step; Ctrl-C cancels and restores.",
      BD_ARG_LAYER, all_word, NULL, &bd_finetune_op},
     {BD_ARG_NONE, NULL}, 0, 1, 1, cmd_finetune},
    {{"train", "train [key=value ...]",
      "train the model's weights (optionally with Quant-Noise)",
      "Trains every float parameter of the model (weights, biases, BatchNorm and\n"
      "its running statistics) by SGD on the calibration data (all of it, with\n"
      "labels for loss=ce), and evaluates it after every epoch on the evaluation\n"
      "data (eval_n images; default: as set with 'data eval'). Quant-Noise\n"
      "(quant_noise=pq:p=0.1, int8:p=0.5, ...) lays its blocks out as the plan does.\n"
      "One line per epoch: loss, top-1 on the training batches, top-1 on the\n"
      "evaluation data, learning rate, seconds. With every layer float, the\n"
      "trained model becomes both the teacher and the student, so 'quantize'\n"
      "starts from it and distils from it. With layers quantized (iterative PQ),\n"
      "PQ layers train their centroids (and become tuned), int layers stay, the\n"
      "float layers train (the noise only on them) and 'quantize' and 'reset'\n"
      "start from their trained weights; the teacher stays. seed=0 takes the\n"
      "workspace's seed. One undo step; Ctrl-C cancels and changes nothing.",
      BD_ARG_NONE, NULL, NULL, &bd_training_op},
     {BD_ARG_NONE, NULL}, 0, 0, 1, cmd_train},
    {{"bitprune", "bitprune target_bits=B|target_mb=S|lambda=L [key=value ...]",
      "learn each layer's bit length and store the layers as int codecs",
      "BitPruning (docs/method.md): every layer the plan quantizes (as 'quantize\n"
      "all' takes them; every layer must be float) gets a continuous bit length,\n"
      "learned by training with a penalty on the bits until the mean reaches\n"
      "target_bits (or the size target_mb, or with a fixed lambda); the lengths\n"
      "are rounded, the network fine-tuned at them (finetune_epochs), and each\n"
      "layer stored as an int codec of its bits. cost=ops weighs the bits by\n"
      "multiply-accumulates, granularity=channel learns one length per output\n"
      "channel. Training's keys (epochs, steps, lr, loss=kl, ...) set the\n"
      "learning phase (lr 0.01 by default here: the model is trained already),\n"
      "on the calibration data (all of it), evaluated on the\n"
      "evaluation data. One line per epoch, then per layer its learned and\n"
      "rounded bits, the mean bits and the size. The layers become tuned; their\n"
      "float sources stay as they were. One undo step; Ctrl-C cancels and\n"
      "changes nothing.",
      BD_ARG_NONE, NULL, NULL, &bd_bitprune_op},
     {BD_ARG_NONE, NULL}, 0, 0, 1, cmd_bitprune},
    {{"reset", "reset GLOB", "put layers back to float",
      "Puts the layers matching GLOB (all: every layer) back to their fp32 weights:\n"
      "the teacher's, or what 'train' trained them to, and takes away the activation\n"
      "quantizers 'bitprune activations=1' put in front of them. One undo step.",
      BD_ARG_LAYER, all_word, NULL, NULL},
     {BD_ARG_NONE, NULL}, 1, 1, 1, cmd_reset},
    {{"undo", "undo", "undo the last quantize, finetune, train, bitprune, reset, set or regime",
      "Puts back the layers the last quantize, finetune, reset, set or regime\n"
      "changed (with the biases and BatchNorm statistics a finetune touched), or\n"
      "every parameter and the teacher a train or bitprune changed, and says\n"
      "what it undid.",
      BD_ARG_NONE, NULL, NULL, NULL},
     {BD_ARG_NONE, NULL}, 0, 0, 1, cmd_undo},
    {{"eval", "eval [n=N]", "top-1 / top-5 of teacher and student",
      "Evaluates teacher and student on the evaluation data (the first N images;\n"
      "default: as set with 'data eval'). The teacher's result is remembered.",
      BD_ARG_NONE, NULL, n_key, NULL},
     {BD_ARG_NONE, NULL}, 0, 0, 1, cmd_eval},
    {{"sensitivity", "sensitivity [GLOB|all] [n=N]",
      "the top-1 each layer loses when it alone is quantized",
      "For each layer matching GLOB (default all: the plan's), how many points of\n"
      "top-1 the model loses when that layer alone is quantized by its plan. The\n"
      "student with every layer at its float weight (the teacher, unless training\n"
      "changed its other parameters) is evaluated on the first N evaluation images\n"
      "(default 1000, or fewer as set with 'data eval'); then each layer in turn is\n"
      "quantized as 'quantize' would quantize it (the calibration data, EM's\n"
      "settings, the seed) and the model evaluated again. Changes nothing: the\n"
      "layers, their plans and the undo history stay as they are (the TUI shows\n"
      "the drops in its table until a plan changes). Ctrl-C cancels.",
      BD_ARG_LAYER, all_word, n_key, NULL},
     {BD_ARG_NONE, NULL}, 0, 1, 1, cmd_sensitivity},
    {{"predict", "predict IMAGE", "top-5 classes of teacher and student for an image",
      "Runs teacher and student on a JPEG or PNG file, preprocessed as the model\n"
      "says, and prints each one's five likeliest classes.",
      BD_ARG_PATH, NULL, NULL, NULL},
     {BD_ARG_NONE, NULL}, 1, 1, 1, cmd_predict},
    {{"size", "size", "fp32 and compressed size, the split, the ratio",
      "The model's size in fp32, and as it would be stored now: codes (uint8 up\n"
      "to k=256, uint16 above), fp16 codebooks and fp32 for everything else; MB\n"
      "are 2^20 bytes.",
      BD_ARG_NONE, NULL, NULL, NULL},
     {BD_ARG_NONE, NULL}, 0, 0, 1, cmd_size},
    {{"save", "save PATH [decoded]", "write the student as compressed (or dense) ONNX",
      "Writes the student as standard ONNX, atomically: quantized layers as codes\n"
      "and fp16 codebooks (any ONNX runtime runs it; 'load' resumes from it), or\n"
      "with 'decoded' as a plain dense fp32 model. Says the file's size on disk\n"
      "and its ratio to the original model's file, beside the payload ('size').",
      BD_ARG_PATH, NULL, NULL, NULL},
     {BD_ARG_WORD, decoded_word}, 1, 2, 1, cmd_save},
    {{"device", "device [cpu|cuda]", "compute on the CPU or a GPU",
      "Chooses where the work runs. cuda fails with a message when there is no GPU\n"
      "or no CUDA build, and the device stays as it was. Without an argument,\n"
      "shows the device.",
      BD_ARG_WORD, devices, NULL, NULL},
     {BD_ARG_NONE, NULL}, 0, 1, 0, cmd_device},
    {{"threads", "threads [N]", "CPU threads",
      "Sets the number of CPU threads (1 to 1024); without N, shows it.",
      BD_ARG_NONE, NULL, NULL, NULL},
     {BD_ARG_NONE, NULL}, 0, 1, 0, cmd_threads},
    {{"seed", "seed [N]", "seed of calibration sampling and EM",
      "Sets the seed that picks the calibration images and initialises EM; the\n"
      "same seed gives the same result. Without N, shows it.",
      BD_ARG_NONE, NULL, NULL, NULL},
     {BD_ARG_NONE, NULL}, 0, 1, 0, cmd_seed},
    {{"run", "run SCRIPT.lua [ARGS...]", "run a Lua script on this workspace",
      "Runs a Lua script with the bd module bound to this workspace; ARGS are the\n"
      "script's arguments.",
      BD_ARG_PATH, NULL, NULL, NULL},
     {BD_ARG_PATH, NULL}, 1, -1, 0, cmd_run},
    {{"help", "help [COMMAND]", "list the commands, or describe one",
      "Without an argument, lists the commands; with one, prints its usage and\n"
      "what it does.",
      BD_ARG_COMMAND, NULL, NULL, NULL},
     {BD_ARG_NONE, NULL}, 0, 1, 0, cmd_help},
    {{"quit", "quit", "leave", "Stops reading commands.", BD_ARG_NONE, NULL, NULL, NULL},
     {BD_ARG_NONE, NULL}, 0, 0, 0, cmd_quit},
};
enum { NCOMMANDS = sizeof commands / sizeof commands[0] };

int bd_cmd_count(void) { return NCOMMANDS; }

const bd_cmd_info *bd_cmd_at(int i) { return i >= 0 && i < NCOMMANDS ? &commands[i].info : NULL; }

static const command *find(const char *name)
{
    for (int i = 0; i < NCOMMANDS; i++)
        if (strcmp(commands[i].info.name, name) == 0)
            return &commands[i];
    return NULL;
}

const bd_cmd_info *bd_cmd_find(const char *name)
{
    const command *c = find(name);
    return c ? &c->info : NULL;
}

/* The kind and fixed words of positional argument p (0-based). */
static slot slot_at(const command *cmd, int p)
{
    slot none = {BD_ARG_NONE, NULL};
    if (cmd->max_args >= 0 && p >= cmd->max_args)
        return none;
    if (p == 0) {
        slot first = {cmd->info.arg, cmd->info.words};
        return first;
    }
    return cmd->second;
}

static int in_list(const char *const *list, const char *s)
{
    for (; list && *list; list++)
        if (strcmp(*list, s) == 0)
            return 1;
    return 0;
}

/* "a, b or c" */
static const char *list_str(const char *const *list, char *buf, size_t cap)
{
    buf[0] = '\0';
    for (int i = 0; list && list[i]; i++) {
        size_t used = strlen(buf);
        snprintf(buf + used, cap - used, "%s%s", i == 0 ? "" : list[i + 1] ? ", " : " or ",
                 list[i]);
    }
    return buf;
}

/* key=value, where key looks like a name: a path such as "out/a=b.onnx" is
 * not an option. */
static int option_key_len(const char *w)
{
    const char *eq = strchr(w, '=');
    if (!eq || eq == w || !isalpha((unsigned char)w[0]))
        return 0;
    for (const char *p = w; p < eq; p++)
        if (!isalnum((unsigned char)*p) && *p != '_')
            return 0;
    return (int)(eq - w);
}

/* Key i of a command's options, from its list or its operation's table;
 * NULL past the last. */
static const char *key_at(const bd_cmd_info *info, int i)
{
    if (info->op) {
        const bd_opt *o = bd_opt_op_at(info->op, i, NULL);
        return o ? o->key : NULL;
    }
    return info->keys ? info->keys[i] : NULL;
}

/* The command's spelling of the key of option word w (klen long), or NULL. */
static const char *command_key(const bd_cmd_info *info, const char *w, int klen)
{
    const char *k;
    for (int i = 0; (k = key_at(info, i)); i++)
        if ((int)strlen(k) == klen && strncmp(k, w, (size_t)klen) == 0)
            return k;
    return NULL;
}

static const char *opt(const call *c, const char *key)
{
    for (int i = 0; i < c->nopt; i++)
        if (strcmp(c->key[i], key) == 0)
            return c->val[i];
    return NULL;
}

static bd_status parse(const command *cmd, char **argv, int argc, call *c)
{
    memset(c, 0, sizeof *c);
    c->cmd = cmd;
    const char *usage = cmd->info.usage;
    char buf[256];
    for (int i = 1; i < argc; i++) {
        char *w = argv[i];
        int klen = option_key_len(w);
        /* a command whose words are all its own (run's script arguments,
         * which policies spell key=value) passes option-like words on */
        if (klen && !key_at(&cmd->info, 0) && cmd->max_args < 0)
            klen = 0;
        if (klen) {
            const char *key = command_key(&cmd->info, w, klen);
            if (!key && !key_at(&cmd->info, 0))
                return bd_fail(BD_EINVAL, "takes no options, not '%s' (usage: %s)", w, usage);
            if (!key) {
                char keys[2048];
                if (cmd->info.op)
                    bd_opt_op_keys(cmd->info.op, keys, sizeof keys);
                else
                    list_str(cmd->info.keys, keys, sizeof keys);
                return bd_fail(BD_EINVAL, "unknown option '%.*s' (it takes %s)", klen, w, keys);
            }
            if (opt(c, key))
                return bd_fail(BD_EINVAL, "%s= is given twice", key);
            if (c->nopt == MAX_OPTS)
                return bd_fail(BD_EINVAL, "more than %d options", MAX_OPTS);
            c->key[c->nopt] = key;
            c->val[c->nopt++] = w + klen + 1;
            continue;
        }
        slot s = slot_at(cmd, c->npos);
        if ((cmd->max_args >= 0 && c->npos >= cmd->max_args) || c->npos == MAX_WORDS)
            return bd_fail(BD_EINVAL, "unexpected '%s' (usage: %s)", w, usage);
        if (s.arg == BD_ARG_WORD && s.words && !in_list(s.words, w))
            return bd_fail(BD_EINVAL, "'%s' is not %s (usage: %s)", w,
                           list_str(s.words, buf, sizeof buf), usage);
        c->pos[c->npos++] = w;
    }
    if (c->npos < cmd->min_args)
        return bd_fail(BD_EINVAL, "missing arguments (usage: %s)", usage);
    return BD_OK;
}

/* ---- option values ------------------------------------------------------------------ */

static bd_status whole(const char *what, const char *s, long long min, long long max,
                       long long *out)
{
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || end == s || *end || v < min || v > max)
        return bd_fail(BD_EINVAL, "%s wants a whole number from %lld to %lld, not '%s'", what, min,
                       max, s);
    *out = v;
    return BD_OK;
}

/* *out is left alone when the option is absent. */
static bd_status opt_whole(const call *c, const char *key, long long min, long long max,
                           long long *out)
{
    const char *v = opt(c, key);
    return v ? whole(key, v, min, max, out) : BD_OK;
}

/* ---- printing ------------------------------------------------------------------------- */

/* Every call prints whole lines, so a front-end may treat each one as a
 * line or more of its log. */
static void out(bd_cmd_ctx *ctx, const char *fmt, ...) BD_PRINTF(2, 3);
static void out(bd_cmd_ctx *ctx, const char *fmt, ...)
{
    if (!ctx->print)
        return;
    char small[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(small, sizeof small, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    if ((size_t)n < sizeof small) {
        ctx->print(ctx->user, small);
        return;
    }
    char *big = malloc((size_t)n + 1);
    if (!big) {
        ctx->print(ctx->user, small); /* cut short rather than lost */
        return;
    }
    va_start(ap, fmt);
    vsnprintf(big, (size_t)n + 1, fmt, ap);
    va_end(ap);
    ctx->print(ctx->user, big);
    free(big);
}

const char *bd_cmd_error_str(double e, char *buf, size_t cap)
{
    if (e < 0)
        snprintf(buf, cap, "-");
    else
        snprintf(buf, cap, "%.4f", e);
    return buf;
}

static int64_t stored_bytes(const bd_ws_layer *l)
{
    return l->state == BD_STATE_FLOAT ? 4 * bd_layer_params(&l->layer) : bd_qlayer_bytes(&l->q);
}

static const char *shape_of(const bd_workspace *ws, const bd_ws_layer *l, char *buf, size_t cap)
{
    const bd_tensor *w = bd_ws_student(ws)->values[l->layer.weight].init;
    return bd_shape_str(w->ndim, w->dims, buf, cap);
}

/* "layer3.0.conv1: d=9 k=256 objective=act" or "...: skip", and the note. */
static void print_plan(bd_cmd_ctx *ctx, const bd_ws_layer *l)
{
    char plan[96];
    bd_layer_plan p = bd_ws_plan_of(l);
    bd_plan_describe(&p, plan, sizeof plan);
    out(ctx, "%s: %s%s%s%s\n", l->layer.name, plan, l->note[0] ? " (" : "", l->note,
        l->note[0] ? ")" : "");
}

static void print_size_line(bd_cmd_ctx *ctx)
{
    bd_model_size sz;
    bd_ws_size(ctx->ws, &sz);
    out(ctx, "size %.4f MB -> %.4f MB, ratio %.2fx\n", bd_mb(sz.fp32_bytes),
        bd_mb(sz.compressed_bytes), sz.ratio);
}

static void print_data(bd_cmd_ctx *ctx, bd_data_kind kind)
{
    const char *spec = bd_ws_data_spec(ctx->ws, kind);
    int64_t n = bd_ws_data_n(ctx->ws, kind);
    const char *name = kind == BD_DATA_CALIB ? "calib" : "eval";
    if (!spec)
        out(ctx, "%s data: none\n", name);
    else if (n > 0)
        out(ctx, "%s data: %s n=%lld\n", name, spec, (long long)n);
    else
        out(ctx, "%s data: %s n=all\n", name, spec);
}

/* set and reset take "all" as every layer, not the plan's (bd_ws_select's
 * meaning), so they are told "*", which lists the same layers. */
static const char *every_layer(const char *glob)
{
    return strcmp(glob, "all") == 0 ? "*" : glob;
}

/* ---- the commands ---------------------------------------------------------------------- */

static bd_status cmd_load(bd_cmd_ctx *ctx, const call *c)
{
    BD_TRY(bd_ws_load(ctx->ws, c->pos[0]));
    int n = bd_ws_nlayers(ctx->ws), quantized = 0;
    for (int i = 0; i < n; i++)
        quantized += bd_ws_layer_at(ctx->ws, i)->state != BD_STATE_FLOAT;
    out(ctx, "loaded %s: %d layers, %d quantized\n", bd_ws_path(ctx->ws), n, quantized);
    return BD_OK;
}

static void print_preprocess(bd_cmd_ctx *ctx)
{
    const bd_preprocess *pp = bd_ws_preprocess(ctx->ws);
    out(ctx, "preprocessing: %s resize=%d crop=%d mean=%g,%g,%g std=%g,%g,%g\n",
        pp->channels == 1 ? "gray" : "rgb", pp->resize, pp->crop, pp->mean[0], pp->mean[1],
        pp->mean[2], pp->std[0], pp->std[1], pp->std[2]);
}

/* The workspace's preprocessing with the line's options applied; color
 * first, since it decides how many values mean and std may have. */
static bd_status data_preprocess(bd_cmd_ctx *ctx, const call *c, bd_preprocess *pp, int *changed)
{
    *pp = *bd_ws_preprocess(ctx->ws);
    *changed = 0;
    for (int i = 1; data_keys[i]; i++) {
        const char *v = opt(c, data_keys[i]);
        if (v) {
            BD_TRY(bd_preprocess_set(pp, data_keys[i], v));
            *changed = 1;
        }
    }
    return BD_OK;
}

static bd_status cmd_data(bd_cmd_ctx *ctx, const call *c)
{
    bd_preprocess pp;
    int changed;
    BD_TRY(data_preprocess(ctx, c, &pp, &changed));
    if (c->npos == 0) {
        if (opt(c, "n"))
            return bd_fail(BD_EINVAL, "n= needs calib or eval (usage: %s)", c->cmd->info.usage);
        if (changed) {
            BD_TRY(bd_ws_set_preprocess(ctx->ws, &pp));
            print_preprocess(ctx);
            return BD_OK;
        }
        print_data(ctx, BD_DATA_CALIB);
        print_data(ctx, BD_DATA_EVAL);
        print_preprocess(ctx);
        return BD_OK;
    }
    bd_data_kind kind = strcmp(c->pos[0], "calib") == 0 ? BD_DATA_CALIB : BD_DATA_EVAL;
    const char *spec = c->npos > 1 ? c->pos[1] : bd_ws_data_spec(ctx->ws, kind);
    if (!spec)
        return bd_fail(BD_EINVAL, "the model names no dataset: give a SPEC (usage: %s)",
                       c->cmd->info.usage);
    long long n = 0;
    BD_TRY(opt_whole(c, "n", 1, 1LL << 40, &n));
    /* spec may be the workspace's own string, which bd_ws_data replaces */
    char *copy = bd_strdup(spec);
    if (!copy)
        return bd_fail(BD_ENOMEM, "out of memory");
    bd_status s = bd_ws_data(ctx->ws, kind, copy, n);
    free(copy);
    BD_TRY(s);
    if (changed)
        BD_TRY(bd_ws_set_preprocess(ctx->ws, &pp));
    print_data(ctx, kind);
    if (changed)
        print_preprocess(ctx);
    return BD_OK;
}

static bd_status cmd_regime(bd_cmd_ctx *ctx, const call *c)
{
    BD_TRY(bd_ws_regime(ctx->ws, c->pos[0], c->npos > 1));
    int n = bd_ws_nlayers(ctx->ws), planned = 0;
    for (int i = 0; i < n; i++) {
        const bd_ws_layer *l = bd_ws_layer_at(ctx->ws, i);
        planned += l->quantize;
        if (l->note[0])
            print_plan(ctx, l);
    }
    out(ctx, "plan: %s regime, %d of %d layers to quantize\n", c->pos[0], planned, n);
    return BD_OK;
}

static bd_status cmd_set(bd_cmd_ctx *ctx, const call *c)
{
    bd_ws_change ch = BD_PLAN_CHANGE_NONE;
    for (int i = 0; i < c->nopt; i++)
        BD_TRY(bd_plan_parse_setting(NULL, c->key[i], c->val[i], &ch));
    if (c->npos > 1) {
        if (c->nopt)
            return bd_fail(BD_EINVAL, "%s cannot go with other settings (usage: %s)",
                           c->pos[1], c->cmd->info.usage);
        BD_TRY(bd_plan_parse_setting(NULL, c->pos[1], NULL, &ch));
    } else if (!c->nopt) {
        return bd_fail(BD_EINVAL, "nothing to change (usage: %s)", c->cmd->info.usage);
    }
    const char *glob = every_layer(c->pos[0]);
    BD_TRY(bd_ws_set(ctx->ws, glob, &ch));
    int *idx, n;
    BD_TRY(bd_ws_select(ctx->ws, glob, &idx, &n));
    for (int j = 0; j < n; j++)
        print_plan(ctx, bd_ws_layer_at(ctx->ws, idx[j]));
    free(idx);
    return BD_OK;
}

static bd_status cmd_layers(bd_cmd_ctx *ctx, const call *c)
{
    (void)c;
    int n = bd_ws_nlayers(ctx->ws), count[3] = {0, 0, 0}, skipped = 0;
    out(ctx, "%-24s %-9s %-16s %9s %4s %6s %8s %7s %10s %8s  %s\n", "layer", "kind", "weight",
        "params", "d", "k", "plan b/w", "bits/w", "size KB", "rel err", "state");
    for (int i = 0; i < n; i++) {
        const bd_ws_layer *l = bd_ws_layer_at(ctx->ws, i);
        char kind[32], shape[64], err[32], plan_bits[32], bits[32];
        /* the plan's format: d and k, or "-" and intB */
        bd_qlayer planned = {.format = l->format, .d = l->d, .k = l->k, .ints = l->ints};
        char d[8], k[8];
        bd_qlayer_dk(&planned, d, k);
        bd_layer_plan p = bd_ws_plan_of(l);
        out(ctx, "%-24s %-9s %-16s %9lld %4s %6s %8s %7s %10.3f %8s  %s%s\n", l->layer.name,
            bd_layer_kind(&l->layer, kind, sizeof kind), shape_of(ctx->ws, l, shape, sizeof shape),
            (long long)bd_layer_params(&l->layer), d, k,
            bd_bits_str(bd_plan_bits_per_weight(&p), plan_bits, sizeof plan_bits),
            bd_bits_str(bd_ws_bits_per_weight(l), bits, sizeof bits),
            (double)stored_bytes(l) / 1024,
            bd_cmd_error_str(l->state == BD_STATE_FLOAT ? -1 : l->q.rel_error, err, sizeof err),
            bd_layer_state_name(l->state), l->quantize ? "" : " skip");
        count[l->state]++;
        skipped += !l->quantize;
    }
    out(ctx, "%d layers: %d float, %d quantized, %d tuned; the plan skips %d\n", n,
        count[BD_STATE_FLOAT], count[BD_STATE_QUANTIZED], count[BD_STATE_TUNED], skipped);
    return BD_OK;
}

static int codes_used(const bd_qlayer *q)
{
    unsigned char *seen = calloc((size_t)q->k, 1);
    if (!seen)
        return -1;
    int used = 0;
    for (int64_t i = 0; i < q->n; i++)
        if (q->codes[i] >= 0 && q->codes[i] < q->k && !seen[q->codes[i]]) {
            seen[q->codes[i]] = 1;
            used++;
        }
    free(seen);
    return used;
}

static void print_codebook(bd_cmd_ctx *ctx, const bd_qlayer *q)
{
    char err[32];
    char format[64];
    bd_qlayer_describe(q, format, sizeof format);
    out(ctx, "%-13s %s objective=%s\n", q->format == BD_FMT_INT ? "grid" : "codebook", format,
        bd_objective_name(q->objective));
    out(ctx, "%-13s %lld\n", q->format == BD_FMT_INT ? "weights" : "subvectors", (long long)q->n);
    out(ctx, "codes used    %d of %d\n", codes_used(q), q->k);
    out(ctx, "iterations    %d\n", q->iters);
    if (q->restarts > 0)
        out(ctx, "restarts      %d, fit %d kept%s\n", q->restarts, q->best_restart + 1,
            q->exact ? "; exact: every subvector is a centroid" : "");
    if (q->fit_rows > 0)
        out(ctx, "input rows    %lld fitted, %lld held out for the error\n", (long long)q->fit_rows,
            (long long)q->held_rows);
    if (q->history && q->iters > 0)
        out(ctx, "EM objective  %.6g -> %.6g\n", q->history[0], q->history[q->iters - 1]);
    out(ctx, "rel error     %s\n", bd_cmd_error_str(q->rel_error, err, sizeof err));
    if (q->other_error >= 0)
        out(ctx, "%-13s %s\n", q->objective == BD_OBJ_ACT ? "weight-only" : "act-aware (block)",
            bd_cmd_error_str(q->other_error, err, sizeof err));
    if (q->empty_repaired)
        out(ctx, "empty fixed   %d\n", q->empty_repaired);
    out(ctx, "seconds       %.2f\n", q->seconds);
}

static bd_status cmd_show(bd_cmd_ctx *ctx, const call *c)
{
    int i = bd_ws_layer_index(ctx->ws, c->pos[0]);
    if (i < 0)
        return bd_fail(BD_EINVAL, "no layer '%s' (see 'layers')", c->pos[0]);
    const bd_ws_layer *l = bd_ws_layer_at(ctx->ws, i);
    const bd_layer *ly = &l->layer;
    char kind[32], shape[64];
    out(ctx, "layer         %s\n", ly->name);
    out(ctx, "kind          %s (%s)\n", bd_layer_kind(ly, kind, sizeof kind), ly->op);
    out(ctx, "weight        %s\n", shape_of(ctx->ws, l, shape, sizeof shape));
    out(ctx, "params        %lld\n", (long long)bd_layer_params(ly));
    out(ctx, "rows          %lld\n", (long long)ly->rows);
    out(ctx, "row length    %lld\n", (long long)ly->row_len);
    char divisors[1024] = "";
    for (int64_t v = 1, used = 0; v <= ly->row_len && used < (int64_t)sizeof divisors; v++)
        if (ly->row_len % v == 0)
            used += snprintf(divisors + used, sizeof divisors - (size_t)used, " %lld", (long long)v);
    out(ctx, "divisors     %s\n", divisors);
    bd_layer_plan p = bd_ws_plan_of(l);
    p.quantize = 1;
    char plan[96];
    bd_plan_describe(&p, plan, sizeof plan);
    out(ctx, "plan          %s%s\n", plan, l->quantize ? "" : " skip");
    if (l->note[0])
        out(ctx, "note          %s\n", l->note);
    bd_pq_layout lay;
    if (bd_pq_layout_init(ly, l->d, &lay) == BD_OK)
        out(ctx, "max k         %d (d=%d: %lld subvectors)\n", bd_pq_max_k(lay.n), l->d,
            (long long)lay.n);
    char bits[32];
    out(ctx, "bits/w plan   %s\n", bd_bits_str(bd_plan_bits_per_weight(&p), bits, sizeof bits));
    out(ctx, "state         %s\n", bd_layer_state_name(l->state));
    out(ctx, "bits/w now    %s\n", bd_bits_str(bd_ws_bits_per_weight(l), bits, sizeof bits));
    out(ctx, "size KB       %.3f (fp32 %.3f)\n", (double)stored_bytes(l) / 1024,
        (double)bd_layer_params(ly) * 4 / 1024);
    if (l->state != BD_STATE_FLOAT)
        print_codebook(ctx, &l->q);
    return BD_OK;
}

/* quantize with a size target: the size-budget policy, a Lua script the
 * front-end runs, with the line's EM search for the call. */
static bd_status quantize_to_target(bd_cmd_ctx *ctx, const call *c, const bd_quantize_run *r,
                                    char *target)
{
    if (c->npos)
        return bd_fail(BD_EINVAL, "%s plans every layer the plan takes: give no GLOB (usage: %s)",
                       target, c->cmd->info.usage);
    if (!ctx->run_script)
        return bd_fail(BD_EUNSUPPORTED, "%s runs the %s policy, a Lua script, which cannot run "
                                        "from here (bitdown repl or bd.quantize can)",
                       target, BD_SIZE_POLICY);
    char path[4096], iters[32];
    BD_TRY(bd_policy_path(BD_SIZE_POLICY, path, sizeof path));
    snprintf(iters, sizeof iters, "iters=%d", r->iters);
    char *argv[] = {target, iters};
    int restarts;
    double tol;
    bd_ws_get_search(ctx->ws, &restarts, &tol);
    BD_TRY(bd_ws_search(ctx->ws, r->restarts, r->tol));
    bd_status s = ctx->run_script(ctx->script_user, path, 2, argv);
    bd_ws_search(ctx->ws, restarts, tol);
    return s;
}

static bd_status cmd_quantize(bd_cmd_ctx *ctx, const call *c)
{
    bd_quantize_run r;
    bd_ws_quantize_defaults(ctx->ws, &r);
    for (int i = 0; i < c->nopt; i++)
        BD_TRY(bd_opt_op_set(&bd_quantize_op, &r, "quantize", c->key[i], c->val[i]));
    char target[96];
    BD_TRY(bd_quantize_target(&r, "quantize", 0, target, sizeof target));
    if (target[0])
        return quantize_to_target(ctx, c, &r, target);
    const char *glob = c->npos ? c->pos[0] : NULL;
    int *idx, n;
    BD_TRY(bd_ws_select(ctx->ws, glob, &idx, &n));
    bd_status s = bd_ws_quantize_run(ctx->ws, glob, &r);
    for (int j = 0; s == BD_OK && j < n; j++) {
        const bd_ws_layer *l = bd_ws_layer_at(ctx->ws, idx[j]);
        char err[32];
        char format[64];
        bd_qlayer_describe(&l->q, format, sizeof format);
        out(ctx, "%s: quantized %s, rel error %s, %d iterations, %.2f s\n", l->layer.name, format,
            bd_cmd_error_str(l->q.rel_error, err, sizeof err), l->q.iters, l->q.seconds);
    }
    free(idx);
    BD_TRY(s);
    print_size_line(ctx);
    return BD_OK;
}

static bd_status cmd_finetune(bd_cmd_ctx *ctx, const call *c)
{
    bd_finetune_options o;
    bd_finetune_options_init(&o);
    for (int i = 0; i < c->nopt; i++)
        BD_TRY(bd_opt_op_set(&bd_finetune_op, &o, "finetune", c->key[i], c->val[i]));
    bd_finetune_report r;
    BD_TRY(bd_ws_finetune(ctx->ws, c->npos ? c->pos[0] : NULL, &o, &r));
    out(ctx, "finetune: %d steps, loss %.5f -> %.5f, %.1f images/s, %.2f s\n", r.steps,
        r.first_loss, r.last_loss, r.images_per_second, r.seconds);
    print_size_line(ctx);
    return BD_OK;
}

/* A percentage, or "-" when there is none (negative). */
static const char *percent_str(double v, char *buf, size_t cap)
{
    if (v < 0)
        snprintf(buf, cap, "-");
    else
        snprintf(buf, cap, "%.2f%%", v);
    return buf;
}

static void print_epoch_of(bd_cmd_ctx *ctx, const char *phase, const bd_training_epoch *e,
                           int epochs)
{
    char train[16], top1[16], quant[48] = "";
    if (e->quant_top1 >= 0)
        snprintf(quant, sizeof quant, " quantized top1 %.2f%%", e->quant_top1);
    out(ctx, "%sepoch %d/%d loss %.4f train top1 %s eval top1 %s%s lr %.4g %.1f s\n", phase,
        e->epoch, epochs, e->loss, percent_str(e->train_top1, train, sizeof train),
        percent_str(e->top1, top1, sizeof top1), quant, e->lr, e->seconds);
}

static void print_epoch(void *user, const bd_training_epoch *e, int epochs)
{
    print_epoch_of(user, "", e, epochs);
}

static bd_status cmd_train(bd_cmd_ctx *ctx, const call *c)
{
    bd_training_options o;
    bd_training_options_init(&o);
    for (int i = 0; i < c->nopt; i++)
        BD_TRY(bd_opt_op_set(&bd_training_op, &o, "train", c->key[i], c->val[i]));
    bd_training_report r;
    BD_TRY(bd_ws_train(ctx->ws, &o, print_epoch, ctx, &r));
    const bd_training_epoch *first = r.epochs > 0 ? &r.per_epoch[0] : NULL,
                            *last = r.epochs > 0 ? &r.per_epoch[r.epochs - 1] : NULL;
    char top1[16], noise[96];
    bd_noise_describe(&o.noise, noise, sizeof noise);
    /* training leaves quantized layers quantized (PQ ones tuned): with any,
     * the teacher stayed */
    int quantized = 0;
    for (int i = 0; i < bd_ws_nlayers(ctx->ws); i++)
        quantized |= bd_ws_layer_at(ctx->ws, i)->state != BD_STATE_FLOAT;
    if (last)
        out(ctx, "trained: %d epoch%s, loss %.4f -> %.4f, student eval top1 %s, noise %s, %.1f "
                 "images/s; %s\n",
            r.epochs, r.epochs == 1 ? "" : "s", first->loss, last->loss,
            percent_str(last->top1, top1, sizeof top1), noise, r.images_per_second,
            quantized ? "the PQ layers are tuned, the float layers start from their trained "
                        "weights, the teacher is as it was"
                      : "the teacher and the student are the trained model");
    bd_training_report_free(&r);
    return BD_OK;
}

const char *bd_cmd_bits_str(const bd_bitprune_layer *l, char *buf, size_t cap)
{
    if (l->min_bits == l->max_bits)
        snprintf(buf, cap, "%d", l->min_bits);
    else
        snprintf(buf, cap, "%.2f (%d..%d)", l->bits, l->min_bits, l->max_bits);
    return buf;
}

const char *bd_cmd_bitprune_phase(bd_workspace *ws)
{
    bd_bitprune_live live = {0};
    bd_ws_lock(ws);
    bd_ws_last_bitprune(ws, NULL, &live, NULL, NULL, NULL);
    bd_ws_unlock(ws);
    return live.phase ? "tune " : "learn ";
}

static void print_bitprune_epoch(void *user, const bd_training_epoch *e, int epochs)
{
    bd_cmd_ctx *ctx = user;
    print_epoch_of(ctx, bd_cmd_bitprune_phase(ctx->ws), e, epochs);
}

static bd_status cmd_bitprune(bd_cmd_ctx *ctx, const call *c)
{
    bd_bitprune_options o;
    bd_bitprune_options_init(&o);
    for (int i = 0; i < c->nopt; i++)
        BD_TRY(bd_opt_op_set(&bd_bitprune_op, &o, "bitprune", c->key[i], c->val[i]));
    bd_bitprune_report r;
    BD_TRY(bd_ws_bitprune(ctx->ws, &o, NULL, 0, print_bitprune_epoch, ctx, &r));
    for (int j = 0; j < r.nlayers; j++) {
        const bd_bitprune_layer *l = &r.layers[j];
        char bits[48];
        char act[64] = "";
        if (l->act.bits > 0)
            snprintf(act, sizeof act, "; input %d bits (learned %.2f)", l->act.bits,
                     l->act_learned);
        out(ctx, "%s: %s bits (learned %.2f, %lld params)%s\n",
            bd_ws_layer_at(ctx->ws, l->layer)->layer.name, bd_cmd_bits_str(l, bits, sizeof bits),
            l->learned, (long long)l->params, act);
    }
    out(ctx, "bitprune: mean bits %.3f (per layer %.3f, learned %.3f), lambda %.4g; the layers "
             "are int codecs, tuned\n",
        r.mean_bits, r.mean_bits_layers, r.learned_mean, r.lambda);
    if (o.activations)
        out(ctx, "bitprune: mean input bits %.3f, %.2f bit-operations per MAC; the inputs are "
                 "quantized by Div, Round, Clip, Mul before each layer\n",
            r.act_mean, r.bitops);
    bd_bitprune_report_free(&r);
    print_size_line(ctx);
    return BD_OK;
}

static bd_status cmd_reset(bd_cmd_ctx *ctx, const call *c)
{
    const char *glob = every_layer(c->pos[0]);
    BD_TRY(bd_ws_reset(ctx->ws, glob));
    int *idx, n;
    BD_TRY(bd_ws_select(ctx->ws, glob, &idx, &n));
    for (int j = 0; j < n; j++)
        out(ctx, "%s: float\n", bd_ws_layer_at(ctx->ws, idx[j])->layer.name);
    free(idx);
    print_size_line(ctx);
    return BD_OK;
}

static bd_status cmd_undo(bd_cmd_ctx *ctx, const call *c)
{
    (void)c;
    char what[256];
    BD_TRY(bd_ws_undo(ctx->ws, what, sizeof what));
    out(ctx, "undid: %s\n", what);
    print_size_line(ctx);
    return BD_OK;
}

static void print_accuracy(bd_cmd_ctx *ctx, const char *who, const bd_accuracy *a)
{
    if (a->valid)
        out(ctx, "%s top1 %.2f%% top5 %.2f%% (%lld images)\n", who, a->top1, a->top5,
            (long long)a->n);
}

static bd_status cmd_eval(bd_cmd_ctx *ctx, const call *c)
{
    long long n = 0;
    BD_TRY(opt_whole(c, "n", 1, 1LL << 40, &n));
    bd_accuracy t, s;
    BD_TRY(bd_ws_eval(ctx->ws, n, &t, &s));
    print_accuracy(ctx, "teacher", &t);
    print_accuracy(ctx, "student", &s);
    return BD_OK;
}

static bd_status cmd_sensitivity(bd_cmd_ctx *ctx, const call *c)
{
    long long n = 0;
    BD_TRY(opt_whole(c, "n", 1, 1LL << 40, &n));
    bd_sensitivity_report r;
    BD_TRY(bd_ws_sensitivity(ctx->ws, c->npos ? c->pos[0] : NULL, n, &r));
    out(ctx, "float model top1 %.2f%% (%lld images); each layer alone quantized:\n",
        r.reference.top1, (long long)r.reference.n);
    int most = 0;
    for (int j = 0; j < r.n; j++) {
        const bd_sensitivity *m = &r.layers[j];
        const bd_ws_layer *l = bd_ws_layer_at(ctx->ws, m->layer);
        bd_layer_plan p = bd_ws_plan_of(l);
        p.quantize = 1;
        char plan[96], err[32];
        bd_plan_describe(&p, plan, sizeof plan);
        out(ctx, "%s: %s, top1 %.2f%%, drop %.2f points, rel error %s\n", l->layer.name, plan,
            m->top1, m->drop, bd_cmd_error_str(m->rel_error, err, sizeof err));
        if (m->drop > r.layers[most].drop)
            most = j;
    }
    out(ctx, "most sensitive: %s (%.2f points)\n",
        bd_ws_layer_at(ctx->ws, r.layers[most].layer)->layer.name, r.layers[most].drop);
    bd_sensitivity_report_free(&r);
    return BD_OK;
}

static void print_prediction(bd_cmd_ctx *ctx, const char *who, const bd_prediction *p)
{
    for (int j = 0; j < p->k; j++) {
        const char *name = bd_ws_class_name(ctx->ws, p->cls[j]);
        out(ctx, "%s #%d %6.2f%% %s (%d)\n", who, j + 1, 100.0 * p->prob[j],
            name ? name : "class", p->cls[j]);
    }
}

static bd_status cmd_predict(bd_cmd_ctx *ctx, const call *c)
{
    bd_prediction t, s;
    BD_TRY(bd_ws_predict(ctx->ws, c->pos[0], &t, &s));
    print_prediction(ctx, "teacher", &t);
    print_prediction(ctx, "student", &s);
    return BD_OK;
}

static void print_bytes(bd_cmd_ctx *ctx, const char *what, int64_t bytes)
{
    out(ctx, "%-15s %.4f MB (%lld bytes)\n", what, bd_mb(bytes), (long long)bytes);
}

static bd_status cmd_size(bd_cmd_ctx *ctx, const call *c)
{
    (void)c;
    bd_model_size sz;
    bd_ws_size(ctx->ws, &sz);
    print_bytes(ctx, "fp32", sz.fp32_bytes);
    print_bytes(ctx, "compressed", sz.compressed_bytes);
    print_bytes(ctx, "  codes", sz.code_bytes);
    print_bytes(ctx, "  codebooks", sz.codebook_bytes);
    print_bytes(ctx, "  fp32 rest", sz.other_bytes);
    out(ctx, "%-15s %.2fx\n", "ratio", sz.ratio);
    return BD_OK;
}

static bd_status cmd_save(bd_cmd_ctx *ctx, const call *c)
{
    int decoded = c->npos > 1;
    BD_TRY(bd_ws_save(ctx->ws, c->pos[0], decoded));
    bd_disk_size disk;
    bd_model_size payload;
    bd_ws_last_saved(ctx->ws, &disk);
    bd_ws_size(ctx->ws, &payload);
    char sizes[256];
    out(ctx, "wrote %s: %s, %lld bytes, %s\n", c->pos[0],
        decoded ? "decoded (dense fp32)" : "compressed", (long long)disk.bytes,
        bd_disk_size_str(&disk, decoded ? NULL : &payload, sizes, sizeof sizes));
    return BD_OK;
}

static bd_status cmd_device(bd_cmd_ctx *ctx, const call *c)
{
    if (c->npos)
        BD_TRY(bd_ws_device(ctx->ws, c->pos[0]));
    out(ctx, "device %s\n", bd_ws_device_name(ctx->ws));
    return BD_OK;
}

static bd_status cmd_threads(bd_cmd_ctx *ctx, const call *c)
{
    if (c->npos) {
        long long n;
        BD_TRY(whole("N", c->pos[0], 1, 1024, &n));
        BD_TRY(bd_ws_threads(ctx->ws, (int)n));
    }
    out(ctx, "threads %d\n", bd_ws_get_threads(ctx->ws));
    return BD_OK;
}

static bd_status cmd_seed(bd_cmd_ctx *ctx, const call *c)
{
    if (c->npos) {
        long long n;
        BD_TRY(whole("N", c->pos[0], 0, (long long)(~0ULL >> 1), &n));
        bd_ws_seed(ctx->ws, (uint64_t)n);
    }
    out(ctx, "seed %llu\n", (unsigned long long)bd_ws_get_seed(ctx->ws));
    return BD_OK;
}

static bd_status cmd_run(bd_cmd_ctx *ctx, const call *c)
{
    if (!ctx->run_script)
        return bd_fail(BD_EUNSUPPORTED, "Lua scripts cannot run from here (try 'bitdown run %s')",
                       c->pos[0]);
    /* the words are bd_cmd_exec's own copies: the script may have them */
    return ctx->run_script(ctx->script_user, c->pos[0], c->npos - 1, (char **)(c->pos + 1));
}

static bd_status cmd_help(bd_cmd_ctx *ctx, const call *c)
{
    if (c->npos) {
        const command *cmd = find(c->pos[0]);
        if (!cmd)
            return bd_fail(BD_EINVAL, "no command '%s' (try 'help')", c->pos[0]);
        out(ctx, "usage: %s\n%s\n", cmd->info.usage, cmd->info.help);
        if (cmd->info.op) {
            char keys[16384];
            bd_opt_op_help(cmd->info.op, 0, keys, sizeof keys);
            out(ctx, "options [range, default]:\n%s", keys);
        }
        return BD_OK;
    }
    out(ctx, "commands:\n");
    for (int i = 0; i < NCOMMANDS; i++)
        out(ctx, "  %-11s %s\n", commands[i].info.name, commands[i].info.summary);
    out(ctx, "'help COMMAND' describes one. Globs match layer names: layer3.*, *conv1.\n");
    return BD_OK;
}

static bd_status cmd_quit(bd_cmd_ctx *ctx, const call *c)
{
    (void)c;
    ctx->quit = 1;
    return BD_OK;
}

/* ---- running a line --------------------------------------------------------------------- */

/* Messages from below often start with the command already ("device cuda:
 * ..."); others get it in front. */
static bd_status name_command(bd_status s, const char *name)
{
    const char *msg = bd_error_message();
    size_t len = strlen(name);
    if (!msg[0])
        return bd_fail(s, "%s: %s", name, bd_status_name(s));
    if (strncmp(msg, name, len) == 0 && (msg[len] == ' ' || msg[len] == ':'))
        return s;
    return bd_error_context(s, "%s", name);
}

/* The command a line starts with, to name in a message about a line that
 * does not even split into words. */
static const command *first_command(const char *line)
{
    line += strspn(line, " \t");
    size_t len = strcspn(line, " \t\r\n");
    for (int i = 0; i < NCOMMANDS; i++)
        if (strlen(commands[i].info.name) == len && strncmp(commands[i].info.name, line, len) == 0)
            return &commands[i];
    return NULL;
}

bd_status bd_cmd_exec(bd_cmd_ctx *ctx, const char *line)
{
    char **argv;
    int argc;
    bd_status s = bd_cmd_split(line, &argv, &argc);
    if (s != BD_OK) {
        const command *cmd = first_command(line);
        return cmd ? name_command(s, cmd->info.name) : s;
    }
    if (argc > 0) {
        const command *cmd = find(argv[0]);
        call c;
        bd_error_clear();
        if (!cmd)
            s = bd_fail(BD_EINVAL, "unknown command '%s' (try 'help')", argv[0]);
        else if ((s = parse(cmd, argv, argc, &c)) == BD_OK) {
            if (cmd->needs_model && !bd_ws_loaded(ctx->ws))
                s = bd_fail(BD_EINVAL, "no model is loaded (use 'load PATH')");
            else
                s = cmd->run(ctx, &c);
        }
        if (s != BD_OK && cmd)
            name_command(s, cmd->info.name);
    }
    bd_cmd_free_words(argv, argc);
    return s;
}

/* ---- completion --------------------------------------------------------------------------- */

static int has_prefix(const char *s, const char *prefix)
{
    return strncmp(s, prefix, strlen(prefix)) == 0;
}

static void add_words(const char *const *words, const char *partial,
                      void (*add)(void *user, const char *c), void *user)
{
    for (; words && *words; words++)
        if (has_prefix(*words, partial))
            add(user, *words);
}

bd_arg_kind bd_cmd_complete(const bd_workspace *ws, int word, char *const *argv,
                            const char *partial, void (*add)(void *user, const char *c),
                            void *user)
{
    if (word == 0) {
        for (int i = 0; i < NCOMMANDS; i++)
            if (has_prefix(commands[i].info.name, partial))
                add(user, commands[i].info.name);
        return BD_ARG_COMMAND;
    }
    const command *cmd = find(argv[0]);
    if (!cmd || strchr(partial, '='))
        return BD_ARG_NONE;
    int p = 0;
    for (int i = 1; i < word; i++)
        p += option_key_len(argv[i]) == 0;
    const char *k;
    for (int j = 0; (k = key_at(&cmd->info, j)); j++) {
        char cand[64];
        snprintf(cand, sizeof cand, "%s=", k);
        int given = 0;
        for (int i = 1; i < word; i++)
            given |= has_prefix(argv[i], cand);
        if (!given && has_prefix(cand, partial))
            add(user, cand);
    }
    slot s = slot_at(cmd, p);
    add_words(s.words, partial, add, user);
    if (s.arg == BD_ARG_COMMAND)
        return bd_cmd_complete(ws, 0, argv, partial, add, user);
    if (s.arg == BD_ARG_LAYER && ws && bd_ws_loaded(ws))
        for (int i = 0; i < bd_ws_nlayers(ws); i++) {
            const char *name = bd_ws_layer_at(ws, i)->layer.name;
            if (has_prefix(name, partial))
                add(user, name);
        }
    return s.arg;
}
