/* The command language: one table of commands, parsed once, used by the
 * REPL, the TUI's ':' line and Lua's bd.cmd. The same table drives parsing,
 * 'help' and completion.
 *
 * A line is split into words like a shell does (single and double quotes,
 * backslash escapes); '#' starts a comment; a blank line does nothing.
 * Options are key=value words (iters=50, n=1000, d=9, k=256). Output goes
 * through the context's print callback, never straight to a terminal. */
#ifndef BD_CMD_H
#define BD_CMD_H

#include "bitprune.h"
#include "options.h"
#include "status.h"
#include "workspace.h"

/* What a command's positional arguments are, for completion. */
typedef enum bd_arg_kind {
    BD_ARG_NONE,
    BD_ARG_LAYER, /* a layer name or glob */
    BD_ARG_PATH,  /* a file */
    BD_ARG_WORD,  /* one of the command's fixed words */
    BD_ARG_COMMAND
} bd_arg_kind;

typedef struct bd_cmd_info {
    const char *name;
    const char *usage;   /* "quantize [GLOB|all] [iters=N]" */
    const char *summary; /* one line */
    const char *help;    /* a paragraph or more */
    bd_arg_kind arg;
    const char *const *words; /* for BD_ARG_WORD, NULL-terminated; may be NULL */
    const char *const *keys;  /* the key= options it takes, NULL-terminated */
    /* or, for an operation with an option table (options.h: quantize,
     * finetune, train, bitprune), the operation: its keys are the
     * command's, set by bd_opt_op_set on its defaults, listed by 'help'
     * with their ranges and defaults */
    const bd_opt_op *op;
} bd_cmd_info;

int bd_cmd_count(void);
const bd_cmd_info *bd_cmd_at(int i);
const bd_cmd_info *bd_cmd_find(const char *name);

typedef void (*bd_cmd_print)(void *user, const char *text);

typedef struct bd_cmd_ctx {
    bd_workspace *ws;
    bd_cmd_print print;
    void *user;
    int quit; /* set by 'quit' */
    /* 'run SCRIPT.lua [args]' belongs to the front-end: the core has no Lua.
     * NULL: 'run' is refused with a message. */
    bd_status (*run_script)(void *user, const char *path, int argc, char **argv);
    void *script_user;
} bd_cmd_ctx;

/* Parses and runs one line. Unknown commands, bad arguments and failures
 * return non-OK with a message (bd_error_message) that names the command. */
bd_status bd_cmd_exec(bd_cmd_ctx *ctx, const char *line);

/* Splits a line into words (the parser's own rules). *argv and its strings
 * are malloc'ed; free with bd_cmd_free_words. An unterminated quote fails. */
bd_status bd_cmd_split(const char *line, char ***argv, int *argc);
void bd_cmd_free_words(char **argv, int argc);

/* A relative error as the commands print it: four decimals, or "-" when
 * unknown (negative). */
const char *bd_cmd_error_str(double e, char *buf, size_t cap);

/* A layer's bits as the commands print them: "4", or with per-channel bits
 * their mean and range, "3.52 (2..6)". */
const char *bd_cmd_bits_str(const bd_bitprune_layer *l, char *buf, size_t cap);
/* The phase of the BitPruning run on ws, as its epochs are labelled:
 * "learn " or "tune " (bd_ws_last_bitprune's live phase, which a resumed
 * run's first epoch needs: it may be either's). */
const char *bd_cmd_bitprune_phase(bd_workspace *ws);

/* Candidates for completing `partial` as word number `word` (0: the
 * command) of a line whose earlier words are argv[0..word): command names,
 * layer names, fixed words and key= options. Paths are the front-end's.
 * Calls add(user, candidate) for each; returns the argument kind expected. */
bd_arg_kind bd_cmd_complete(const bd_workspace *ws, int word, char *const *argv,
                            const char *partial, void (*add)(void *user, const char *c),
                            void *user);

#endif
