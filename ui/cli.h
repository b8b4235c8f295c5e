/* What the command-line subcommands share: error reporting, model loading,
 * option values. Exit codes: 0 done, 1 the work failed, 2 bad usage. */
#ifndef BD_CLI_H
#define BD_CLI_H

#include <stdio.h>

#include "data.h"
#include "graph.h"
#include "options.h"
#include "status.h"

struct bd_workspace;

enum { CLI_OK = 0, CLI_FAIL = 1, CLI_USAGE = 2 };

typedef struct cli_command {
    const char *name;
    const char *summary;
    int (*run)(int argc, char **argv);
} cli_command;

/* ---- jobs of several ranks (mpirun; src/dist.h, docs/distributed.md) ----
 * Every rank runs the same command. Until the ranks agree that their
 * setups succeeded, a rank's messages are held (cli_err); at the agreement
 * only the first failing rank's are printed, and every rank exits. Past
 * it, a failure is printed with its rank and ends the whole job. Ranks
 * other than 0 print nothing on stdout and write no files. */

/* Joins the job (if launched as one) with main's arguments. Returns
 * CLI_OK, or CLI_FAIL having said why. */
int cli_dist_begin(int argc, char **argv);
/* Where error messages go: stderr; in a job of several ranks, the held
 * messages before the agreement, and nowhere after a refused one. */
FILE *cli_err(void);
/* "rank R of N: " on ranks past 0 of a job, "" otherwise. */
const char *cli_rank_prefix(void);
/* The agreement, called by a command once its setup succeeded, before
 * its work (model: what the work starts from, may be NULL): every rank's
 * arguments, threads and model must be the same. Returns CLI_OK to go on;
 * CLI_FAIL on every rank otherwise, the reason printed once (and what the
 * command goes on to report goes nowhere). */
int cli_dist_agree(const bd_graph *model);
/* Says on stderr (rank 0) how a global batch that the ranks cannot share
 * evenly is spread: the first ranks take one image more. */
void cli_dist_share_note(const char *cmd, int64_t batch);
/* main's end: rc of the command. A rank that fails past the agreement ends
 * the whole job; one that never reached it agrees now (with its failure).
 * After a job's success rank 0 says on stderr how much it summed with the
 * others (communication volume). Returns the exit code. */
int cli_dist_end(int rc);

/* Prints "bitdown: <the current error message>" and returns CLI_FAIL. */
int cli_report(bd_status s);
/* Prints "bitdown <cmd>: <message>" and a hint to --help; returns CLI_USAGE. */
int cli_usage_error(const char *cmd, const char *fmt, ...) BD_PRINTF(2, 3);
/* After getopt_long returned '?' (main turns getopt's own message off, so
 * the problem is said once): names the option; returns CLI_USAGE. */
int cli_bad_option(const char *cmd, char **argv);

/* For the commands that only infer (eval, predict): blocks from 32 MB up
 * are mapped rather than kept in the heap (main.c keeps every block there
 * for the forward passes and training steps that reuse them). A batch's
 * activations of a few hundred MB, freed among live ones, fragment the
 * heap, which then holds what no later request fits: ResNet-50's eval at
 * batch 64 peaked at 1180 MB with everything in the heap, dense and
 * compressed alike (the weights a compressed model saves lost in the
 * holes), and at 678 MB dense, 580 MB compressed with the large blocks
 * mapped, for about 12 % more time. Training keeps the heap: AlexNet's
 * and VGG's classifier gradients (150-400 MB a step) mapped afresh each
 * step cost a fifth of its speed. */
void cli_inference_memory(void);

/* Loads a model, plain or compressed; with `describe`, says on stdout how a
 * compressed one was compressed (layers quantized, size, ratio). With lw,
 * a compressed model's quantized weights stay as stored (*lw, NULL for a
 * plain model) and are decoded one layer at a time by the executor that
 * runs it (bd_lazy_weights_attach); without, they are decoded in place. A
 * lazy load is for the commands that only infer: it leaves the memory
 * policy cli_inference_memory's. */
struct bd_lazy_weights;
bd_status cli_load_model(const char *path, bd_graph **g, int describe,
                         struct bd_lazy_weights **lw);

struct bd_accuracy;
/* For a one-shot command driving a workspace: the progress bar on stderr,
 * and Ctrl-C cancelling the running operation (which rolls back). */
void cli_ws_attach(struct bd_workspace *ws);
void cli_ws_detach(void);
/* "teacher  top1 X.XX% top5 Y.YY% (N images)", and ", WHEN" after it when
 * when is not NULL ("student ... (500 images), before fine-tuning") */
void cli_print_accuracy(const char *who, const struct bd_accuracy *a, const char *when);

/* The data spec of a command working on a workspace: the option's value
 * (given), or the model's dataset with the split; refused, naming the
 * option, when neither is there. *spec points at given or into buf. */
int cli_data_spec(const char *cmd, const bd_graph *g, const char *given, const char *split,
                  const char *option, char *buf, size_t cap, const char **spec);
/* What a front-end asks before quitting when work would be lost
 * (bd_ws_unsaved; busy: work is running): "2 quantized layers are not
 * saved: quit without saving? (y/n)", into buf. Returns 0 (buf "") when
 * there is nothing to ask. */
int cli_quit_question(const struct bd_workspace *ws, int busy, char *buf, size_t cap);
/* What --resume of model did (resumed as bd_ws_open gives it: -1 when no
 * checkpoint was there, else the layers the interrupted work finished now):
 * "resumed MODEL from its checkpoint, 9 layers quantized (7 restored, 2
 * finished now)" or "no checkpoint of MODEL to resume; starting afresh",
 * into buf. */
void cli_resumed_message(const struct bd_workspace *ws, const char *model, int resumed, char *buf,
                         size_t cap);
/* After a save of the workspace's student to path: "wrote PATH: 0.0812 MB
 * on disk, ratio 3.64x to the original file (0.2958 MB); payload 0.0531
 * MB, ratio 5.56x" (the payload left out for a decoded file). Rank 0. */
void cli_print_written(const struct bd_workspace *ws, const char *path, int decoded);
/* --report FILE.json (report.h) of the workspace's student, the accuracies
 * when evaluated (may be NULL), the size of the file written. */
bd_status cli_write_report(const struct bd_workspace *ws, const char *path,
                           const struct bd_accuracy *t, const struct bd_accuracy *st,
                           const char *written);

/* An operation's options (options.h) on the command line: every entry of
 * op's tables, in turn, as a --key long option with val base + its index,
 * appended to opts from *n (at most max entries with the ending zero one,
 * which is written); names (max entries) holds the spellings. */
struct option;
void cli_table_longopts(const bd_opt_op *op, int base, struct option *opts, char (*names)[48],
                        int *n, int max);
/* What getopt_long's c (val) means: the entry of op it stands for, NULL
 * when it stands for none; *value the value to set it with: arg, or "1"
 * for a flag. */
const bd_opt *cli_table_entry(const bd_opt_op *op, int base, int c, const char *arg,
                              const char **value);
/* Sets entry o of op in opts to value; a bad value is a usage error that
 * names the option as the command line spells it and its range. Returns
 * CLI_OK or CLI_USAGE. */
int cli_table_set(const char *cmd, const bd_opt_op *op, void *opts, const bd_opt *o,
                  const char *value);
/* cli_bad_option for a command with an operation's options: an unknown
 * option's message lists every option of opts (what the command takes);
 * one that lacks its value says so. Returns CLI_USAGE. */
int cli_bad_table_option(const char *cmd, char **argv, const struct option *opts);

/* "PHASEepoch E/N: loss ..., eval top1 ..." on stdout, over the progress
 * bar, as a training run's epoch ends (phase "" or "learn ", ...). */
struct bd_training_epoch;
void cli_print_epoch(const char *phase, const struct bd_training_epoch *e, int epochs);

/* Whole-number and list option values; messages name the option. */
int cli_parse_int(const char *cmd, const char *opt, const char *s, long min, long max, long *out);
int cli_parse_floats(const char *cmd, const char *opt, const char *s, float *out, int max, int *n);

/* Preprocessing options shared by every command that reads images (eval,
 * predict, quantize, finetune): --resize --crop --mean --std --gray --rgb.
 * They override what the model's metadata says. */
typedef struct cli_preprocess {
    const char *resize, *crop, *mean, *std;
    int gray, rgb;
} cli_preprocess;
#define CLI_PREPROCESS_LONGOPTS                                                           \
    {"resize", required_argument, 0, 1001}, {"crop", required_argument, 0, 1002},         \
        {"mean", required_argument, 0, 1003}, {"std", required_argument, 0, 1004},        \
        {"gray", no_argument, 0, 1005}, {"rgb", no_argument, 0, 1006}
/* Records option c if it is one of the above; returns 1 if it was. */
int cli_preprocess_option(cli_preprocess *cp, int c, const char *arg);
/* Whether any of them was given. */
int cli_preprocess_given(const cli_preprocess *cp);
/* Those given, as words of a command line to print (" --resize 256 --mean
 * ..."; "" when none), into buf. */
const char *cli_preprocess_flags(const cli_preprocess *cp, char *buf, size_t cap);
/* s as one word of a shell command: as it is when that is safe, else in
 * single quotes. Into buf. */
const char *cli_shell_word(const char *s, char *buf, size_t cap);
/* The model's preprocessing with the options applied on top; warns on
 * stderr when the model has no preprocessing metadata and no option says
 * what to do instead. A mean or std with more channels than the model's
 * input is a usage error. */
int cli_preprocess_resolve(const char *cmd, const cli_preprocess *cp, const bd_graph *g,
                           bd_preprocess *pp);
/* The same, applied to a workspace's loaded model. */
int cli_preprocess_ws(const char *cmd, const cli_preprocess *cp, struct bd_workspace *ws);
#define CLI_PREPROCESS_HELP                                                                 \
    "  --resize S        resize the shorter side to S pixels first (0: no resize)\n"       \
    "  --crop C          centre crop C x C (0: no crop)\n"                                  \
    "  --mean a[,b,c]    per-channel mean subtracted after scaling to [0, 1]\n"            \
    "  --std a[,b,c]     per-channel standard deviation divided by\n"                      \
    "  --gray | --rgb    convert images to 1 or 3 channels\n"                              \
    "  (the defaults come from the model's metadata; see docs/metadata.md)\n"

int cli_info(int argc, char **argv);
int cli_annotate(int argc, char **argv);
int cli_eval(int argc, char **argv);
int cli_predict(int argc, char **argv);
int cli_bench(int argc, char **argv);
int cli_quantize(int argc, char **argv);
int cli_finetune(int argc, char **argv);
int cli_train(int argc, char **argv);
int cli_bitprune(int argc, char **argv);
/* The TUI; without a MODEL argument, on the bundled example model. */
int cli_tui(int argc, char **argv);
int cli_repl(int argc, char **argv);
int cli_run(int argc, char **argv);
struct bd_workspace;
/* Runs a Lua script (path), or a chunk of code when path is NULL, on ws:
 * print() to stdout, a progress bar on stderr, Ctrl-C interrupts; reports
 * a failure on stderr. */
int cli_run_lua(struct bd_workspace *ws, const char *path, const char *code, int argc,
                char **argv);

#endif
