/* bitdown repl: the command language (src/cmd.h) at a readline prompt, with
 * history and completion, or line by line from a pipe for scripts. */
#include <getopt.h>
#include <limits.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <readline/history.h>
#include <readline/readline.h>

#include "bd_lua.h"
#include "cli.h"
#include "cmd.h"
#include "progress_bar.h"
#include "size.h"

static const char help[] =
    "usage: bitdown repl [MODEL] [--keep-going] [--resume] [--no-checkpoint]\n\n"
    "Reads commands and runs them on one workspace, MODEL loaded first: 'help'\n"
    "lists the commands (quantize layer3.* iters=50, eval n=1000, save out.onnx...),\n"
    "'help COMMAND' describes one.\n\n"
    "At a terminal: a 'bitdown> ' prompt, line editing, history in\n"
    "~/.bitdown_history (or $BITDOWN_HISTORY), Tab completes commands, layer\n"
    "names, options and file names, a progress bar shows long work, and Ctrl-C\n"
    "cancels the running command (every layer stays as it was) or clears the line.\n\n"
    "Leaving with Ctrl-D or 'quit' while quantized layers or trained weights are\n"
    "not saved asks first (y leaves; so does another Ctrl-D).\n\n"
    "From a pipe or file: no prompt; the first failing command stops the REPL with\n"
    "exit status 1 and 'bitdown: line N: <message>' on stderr; the end of the input\n"
    "or 'quit' ends the session without asking (nobody could answer): save first.\n\n"
    "  --keep-going   from a pipe, go on after a failing command (the exit status\n"
    "                 is still 1 at the end)\n"
    "  --resume       carry on from MODEL's checkpoint: the session keeps one (after\n"
    "                 every finished layer and every change) in\n"
    "                 $BITDOWN_STATE_DIR or ~/.local/state/bitdown; after a crash\n"
    "                 this brings back the plan, the quantized layers, the data and\n"
    "                 settings, and finishes a quantization the crash cut short\n"
    "  --no-checkpoint  keep no checkpoint\n" CLI_PREPROCESS_HELP;

enum { HISTORY_MAX = 1000 };

/* What the signal handler and readline's completion hook need to reach. */
static bd_workspace *the_ws;
static volatile sig_atomic_t busy;      /* a command is running */
static atomic_int interrupted;          /* Ctrl-C during a command (stops a Lua script) */
static volatile sig_atomic_t at_prompt; /* inside readline() */
static int interactive;

/* Ctrl-C. During a command it cancels the workspace's operation, which rolls
 * back. At the prompt, readline has already cleaned up and calls this at a
 * safe point of its own, so starting a fresh line is allowed. From a pipe,
 * with nothing running, it ends the program as usual. */
static void on_sigint(int sig)
{
    if (busy) {
        bd_ws_cancel(the_ws);
        atomic_store(&interrupted, 1);
    } else if (at_prompt) {
        rl_crlf();
        rl_on_new_line();
        rl_replace_line("", 0);
        rl_redisplay();
    } else if (!interactive) {
        signal(sig, SIG_DFL);
        raise(sig);
    }
}

static void print_stdout(void *user, const char *text)
{
    (void)user;
    cli_progress_clear();
    fputs(text, stdout);
}

/* ---- completion ------------------------------------------------------------------ */

typedef struct candidates {
    char **v;
    int n, cap;
} candidates;

static candidates found; /* handed to readline one by one by next_candidate */

static void take_candidate(candidates *c, char *s)
{
    if (!s)
        return;
    if (c->n == c->cap) {
        int cap = c->cap ? 2 * c->cap : 32;
        char **v = realloc(c->v, (size_t)cap * sizeof *v);
        if (!v) {
            free(s);
            return;
        }
        c->v = v;
        c->cap = cap;
    }
    c->v[c->n++] = s;
}

static void add_candidate(void *user, const char *s) { take_candidate(user, strdup(s)); }

static char *next_candidate(const char *text, int state)
{
    static int i;
    (void)text;
    if (state == 0)
        i = 0;
    return i < found.n ? found.v[i++] : NULL; /* readline frees what it gets */
}

static char **complete(const char *text, int start, int end)
{
    (void)end;
    rl_attempted_completion_over = 1; /* file names only where a path goes */
    /* the words before this one; an open quote belongs to this word */
    int before = start > 0 && rl_completion_quote_character ? start - 1 : start;
    char *head = strndup(rl_line_buffer, (size_t)before);
    char **argv = NULL;
    int argc = 0;
    if (!head || bd_cmd_split(head, &argv, &argc) != BD_OK) {
        free(head);
        return NULL;
    }
    free(head);
    found.n = 0;
    bd_arg_kind kind = bd_cmd_complete(the_ws, argc, argv, text, add_candidate, &found);
    bd_cmd_free_words(argv, argc);
    if (kind == BD_ARG_PATH)
        for (int state = 0;; state++) {
            char *f = rl_filename_completion_function(text, state);
            if (!f)
                break;
            take_candidate(&found, f);
        }
    if (found.n == 1 && found.v[0][strlen(found.v[0]) - 1] == '=')
        rl_completion_suppress_append = 1; /* the value follows the '=' */
    char **matches = found.n ? rl_completion_matches(text, next_candidate) : NULL;
    found.n = 0;
    return matches;
}

/* ---- history ---------------------------------------------------------------------- */

/* $BITDOWN_HISTORY, else ~/.bitdown_history; NULL without a home. */
static const char *history_path(char *buf, size_t cap)
{
    const char *env = getenv("BITDOWN_HISTORY");
    if (env && env[0])
        return env;
    const char *home = getenv("HOME");
    if (!home || !home[0])
        return NULL;
    snprintf(buf, cap, "%s/.bitdown_history", home);
    return buf;
}

static void history_start(const char *path)
{
    stifle_history(HISTORY_MAX);
    if (!path)
        return;
    struct stat st;
    if (stat(path, &st) == 0)
        read_history(path);
    else
        write_history(path); /* append_history needs the file to exist */
}

/* Each line is appended as it is entered, so a crash or a second REPL
 * loses nothing. */
static void history_add(const char *path, const char *line)
{
    HIST_ENTRY *last = history_length ? history_get(history_base + history_length - 1) : NULL;
    if (last && strcmp(last->line, line) == 0)
        return;
    add_history(line);
    if (path)
        append_history(1, path);
}

/* ---- the loop ----------------------------------------------------------------------- */

static int blank(const char *line) { return line[strspn(line, " \t\r\n")] == '\0'; }

/* The next line, malloc'ed, or NULL at the end of input. */
static char *next_line(void)
{
    if (interactive) {
        at_prompt = 1;
        char *line = readline("bitdown> ");
        at_prompt = 0;
        if (!line)
            putchar('\n'); /* Ctrl-D: leave the shell's prompt on a line of its own */
        return line;
    }
    char *line = NULL;
    size_t cap = 0;
    if (getline(&line, &cap, stdin) < 0) {
        free(line);
        return NULL;
    }
    return line;
}

/* At a terminal, leaving (Ctrl-D or 'quit') with work that is not saved
 * asks first, as the TUI does: 'y' or another Ctrl-D leaves, anything else
 * stays. From a pipe nobody could answer: the session ends as asked. */
static int may_leave(void)
{
    char question[200];
    if (!interactive || !cli_quit_question(the_ws, 0, question, sizeof question - 1))
        return 1;
    strcat(question, " ");
    at_prompt = 1;
    char *answer = readline(question);
    at_prompt = 0;
    int leave = !answer || answer[strspn(answer, " \t")] == 'y' ||
                answer[strspn(answer, " \t")] == 'Y';
    if (!answer)
        putchar('\n');
    free(answer);
    return leave;
}

static void report(long lineno, bd_status s)
{
    const char *msg = bd_error_message();
    cli_progress_clear();
    fflush(stdout);
    if (interactive)
        fprintf(stderr, "bitdown: %s\n", msg[0] ? msg : bd_status_name(s));
    else
        fprintf(stderr, "bitdown: line %ld: %s\n", lineno, msg[0] ? msg : bd_status_name(s));
}

typedef struct repl_args {
    const char *model;
    int keep_going, resume, checkpoint;
    cli_preprocess cp;
} repl_args;

static int parse_args(int argc, char **argv, repl_args *a)
{
    static const struct option opts[] = {{"help", no_argument, 0, 'h'},
                                         {"keep-going", no_argument, 0, 'k'},
                                         {"resume", no_argument, 0, 'r'},
                                         {"no-checkpoint", no_argument, 0, 'n'},
                                         CLI_PREPROCESS_LONGOPTS,
                                         {0, 0, 0, 0}};
    int c;
    optind = 1;
    a->checkpoint = 1;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        if (cli_preprocess_option(&a->cp, c, optarg))
            continue;
        switch (c) {
        case 'h': fputs(help, stdout); exit(CLI_OK);
        case 'k': a->keep_going = 1; break;
        case 'r': a->resume = 1; break;
        case 'n': a->checkpoint = 0; break;
        default: return cli_bad_option("repl", argv);
        }
    }
    if (argc - optind > 1)
        return cli_usage_error("repl", "expects at most one MODEL");
    a->model = optind < argc ? argv[optind] : NULL;
    if (a->resume && !a->model)
        return cli_usage_error("repl", "--resume needs the MODEL whose session to resume");
    if (!a->model && cli_preprocess_given(&a->cp))
        return cli_usage_error("repl", "the preprocessing options need a MODEL (or use 'data')");
    if (a->resume && !a->checkpoint)
        return cli_usage_error("repl", "--resume and --no-checkpoint exclude each other");
    return CLI_OK;
}

int cli_repl(int argc, char **argv)
{
    repl_args a = {0};
    int rc = parse_args(argc, argv, &a);
    if (rc != CLI_OK)
        return rc;
    int keep_going = a.keep_going;
    bd_status s = bd_ws_new(&the_ws);
    if (s != BD_OK)
        return cli_report(s);
    interactive = isatty(STDIN_FILENO);
    bd_ws_on_progress(the_ws, cli_progress_bar(), NULL);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_sigint;
    sa.sa_flags = SA_RESTART;
    sigaction(SIGINT, &sa, NULL);
    /* a session keeps a checkpoint, so a crash loses nothing (--resume) */
    bd_ws_autosave(the_ws, a.checkpoint);
    int resumed = -1;
    if (a.model) {
        busy = 1; /* resuming may finish a quantization: Ctrl-C cancels it */
        s = bd_ws_open(the_ws, a.model, a.resume, &resumed);
        busy = 0;
        cli_progress_clear();
    }
    if (s != BD_OK || (a.model && (rc = cli_preprocess_ws("repl", &a.cp, the_ws)) != CLI_OK)) {
        bd_ws_free(the_ws);
        return s != BD_OK ? cli_report(s) : rc;
    }
    struct stat st;
    if (interactive && a.model && stat(a.model, &st) == 0)
        printf("loaded %s: %d layers, %.2f MB\n", a.model, bd_ws_nlayers(the_ws),
               bd_mb((int64_t)st.st_size));
    if (a.resume) {
        char msg[PATH_MAX + 128];
        cli_resumed_message(the_ws, a.model, resumed, msg, sizeof msg);
        fprintf(stderr, "bitdown: %s\n", msg);
    }

    char hist_buf[4096];
    const char *hist = NULL;
    if (interactive) {
        rl_readline_name = "bitdown";
        rl_attempted_completion_function = complete;
        rl_completer_word_break_characters = " \t\n";
        rl_completer_quote_characters = "\"'";
        hist = history_path(hist_buf, sizeof hist_buf);
        history_start(hist);
    }

    bd_lua_host host = {.ws = the_ws, .print = print_stdout, .progress = cli_progress_bar(),
                        .interrupt = &interrupted};
    bd_cmd_ctx ctx = {.ws = the_ws, .print = print_stdout, .run_script = bd_lua_run_script,
                      .script_user = &host};
    long lineno = 0;
    int failed = 0;
    for (;;) {
        char *line = next_line();
        if (!line) {
            if (may_leave())
                break;
            continue;
        }
        lineno++;
        if (interactive && !blank(line))
            history_add(hist, line);
        atomic_store(&interrupted, 0);
        busy = 1;
        s = bd_cmd_exec(&ctx, line);
        busy = 0;
        free(line);
        cli_progress_clear();
        fflush(stdout);
        if (s != BD_OK) {
            failed = 1;
            report(lineno, s);
            if (!interactive && !keep_going)
                break;
        }
        if (ctx.quit && may_leave())
            break;
        ctx.quit = 0;
    }
    if (hist)
        history_truncate_file(hist, HISTORY_MAX);
    free(found.v);
    bd_ws_free(the_ws);
    the_ws = NULL;
    return failed && !interactive ? CLI_FAIL : CLI_OK;
}
