/* What the keys do. Each binding that changes the workspace queues a job
 * for the worker that makes the same workspace call the command language
 * makes (cmd.h), so the keys are shortcuts, never a second implementation.
 * The table below is also what the help lists, so every key is in it. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pq.h"
#include "tui.h"

/* A layer name as a glob that matches only it (names may hold '[', as in
 * "op_[3]", which fnmatch would read as a set). */
static void glob_quote(const char *name, char *out, size_t cap)
{
    size_t o = 0;
    for (const char *p = name; *p && o + 2 < cap; p++) {
        if (strchr("*?[]\\", *p))
            out[o++] = '\\';
        out[o++] = *p;
    }
    out[o] = '\0';
}

static void submit(tui *t, bd_status (*run)(tui *, const tui_job *), int changes, const char *arg,
                   int what, int step, const char *label)
{
    tui_job j;
    memset(&j, 0, sizeof j);
    j.run = run;
    j.changes = changes;
    j.what = what;
    j.step = step;
    snprintf(j.arg, sizeof j.arg, "%s", arg);
    snprintf(j.label, sizeof j.label, "%s", label);
    tui_worker_submit(&t->worker, &j);
}

/* ---- jobs: these run on the worker thread ------------------------------------ */

static bd_status job_command(tui *t, const tui_job *j)
{
    t->cmd.quit = 0;
    bd_status s = bd_cmd_exec(&t->cmd, j->arg);
    if (s == BD_OK) {
        if (t->cmd.quit)
            atomic_store(&t->quit_asked, 1);
    } else if (s != BD_ECANCELED) { /* the message names the command already */
        tui_log_add(&t->log, TS_ERROR,
                    bd_error_message()[0] ? bd_error_message() : bd_status_name(s));
    }
    return s == BD_ECANCELED ? s : BD_OK;
}

enum { PLAN_D, PLAN_K, PLAN_OBJECTIVE, PLAN_INCLUDE, PLAN_FORMAT };

/* The divisor of n after (step > 0) or before cur; cur itself at the ends. */
static int64_t step_divisor(int64_t n, int64_t cur, int step)
{
    if (step > 0) {
        for (int64_t d = cur + 1; d <= n; d++)
            if (n % d == 0)
                return d;
    } else {
        for (int64_t d = cur - 1; d >= 1; d--)
            if (n % d == 0)
                return d;
    }
    return cur;
}

/* The power of two after (step > 0) or before k. */
static int step_pow2(int k, int step)
{
    int p = 1;
    if (step > 0) {
        while (p <= k)
            p *= 2;
        return p;
    }
    while (p * 2 < k)
        p *= 2;
    return k > 1 ? p : 0;
}

/* The next value is worked out here, from the plan as it stands when the
 * job runs, so keys pressed quickly in a row each take one step. */
static bd_status job_plan(tui *t, const tui_job *j)
{
    int i = bd_ws_layer_index(t->ws, j->arg);
    if (i < 0)
        return bd_fail(BD_EINVAL, "no layer '%s' (the model changed)", j->arg);
    const bd_ws_layer *l = bd_ws_layer_at(t->ws, i);
    int64_t rows = l->layer.rows, len = l->layer.row_len;
    bd_ws_change c = BD_PLAN_CHANGE_NONE;
    int is_int = l->format == BD_FMT_INT;
    if (is_int && j->what == PLAN_D) {
        tui_log_addf(&t->log, TS_WARN, "%s: an int layer has no block size ('i' makes it PQ)",
                     l->layer.name);
        return BD_OK;
    }
    switch (j->what) {
    case PLAN_FORMAT:
        c.format = is_int ? BD_FMT_PQ : BD_FMT_INT;
        break;
    case PLAN_D: {
        int64_t d = step_divisor(len, l->d, j->step);
        if (d == l->d) {
            tui_log_addf(&t->log, TS_WARN, "%s: d=%d is the %s divisor of its row length %lld",
                         l->layer.name, l->d, j->step > 0 ? "largest" : "smallest", (long long)len);
            return BD_OK;
        }
        int kmax = bd_pq_max_k(rows * (len / d));
        c.d = (int)d;
        c.k = l->k > kmax ? kmax : l->k; /* a larger d leaves fewer subvectors */
        break;
    }
    case PLAN_K: {
        if (is_int) {
            /* a symmetric grid needs a level on each side of 0 */
            const int least = l->ints.symmetric ? 2 : BD_INT_MIN_BITS;
            c.bits = l->ints.bits + j->step;
            if (c.bits >= least && c.bits <= BD_INT_MAX_BITS)
                break;
            tui_log_addf(&t->log, TS_WARN, "%s: int%d is the %s (%d to %d bits%s)", l->layer.name,
                         l->ints.bits, j->step > 0 ? "most" : "least", least, BD_INT_MAX_BITS,
                         l->ints.symmetric ? " when symmetric" : "");
            return BD_OK;
        }
        int k = step_pow2(l->k, j->step), kmax = bd_pq_max_k(rows * (len / l->d));
        if (k < 1 || k > kmax) {
            tui_log_addf(&t->log, TS_WARN,
                         "%s: k=%d is the %s this layer allows with d=%d (1 to %d)", l->layer.name,
                         l->k, j->step > 0 ? "most" : "least", l->d, kmax);
            return BD_OK;
        }
        c.k = k;
        break;
    }
    case PLAN_OBJECTIVE:
        c.objective = (l->objective + 1) % BD_OBJ_COUNT;
        break;
    default: c.quantize = !l->quantize; break;
    }
    char glob[2 * BD_LAYER_NAME_MAX];
    glob_quote(j->arg, glob, sizeof glob);
    BD_TRY(bd_ws_set(t->ws, glob, &c));
    l = bd_ws_layer_at(t->ws, i);
    bd_layer_plan p = bd_ws_plan_of(l);
    p.quantize = 1;
    char plan[96];
    bd_plan_describe(&p, plan, sizeof plan);
    tui_log_addf(&t->log, TS_NORMAL, "%s: plan %s, %s 'quantize all'%s%s", l->layer.name, plan,
                 l->quantize ? "taken by" : "skipped by", l->note[0] ? "; " : "", l->note);
    return BD_OK;
}

/* ---- what the UI thread queues ------------------------------------------------ */

/* A ':train' line is what 't' runs next; its run, and a ':bitprune' one,
 * is worth watching. */
static void note_train(tui *t, const char *line)
{
    char **argv;
    int argc;
    if (bd_cmd_split(line, &argv, &argc) != BD_OK)
        return;
    if (argc > 0 && strcmp(argv[0], "train") == 0) {
        snprintf(t->train_line, sizeof t->train_line, "%s", line);
        t->side = t->run_side = SIDE_TRAIN;
    } else if (argc > 0 && strcmp(argv[0], "bitprune") == 0)
        t->side = t->run_side = SIDE_BITPRUNE;
    bd_cmd_free_words(argv, argc);
}

void tui_run_command(tui *t, const char *line)
{
    note_train(t, line);
    tui_log_addf(&t->log, TS_ACCENT, ":%s", line);
    t->log_back = 0;
    char label[128];
    snprintf(label, sizeof label, ":%s", line);
    submit(t, job_command, 1, line, 0, 0, label);
}

/* A key's command applied to one layer: the name as a glob that matches
 * only it, single-quoted so the command line takes it as one word. */
static void run_on_layer(tui *t, const char *command, const char *name)
{
    char glob[2 * BD_LAYER_NAME_MAX], line[3 * BD_LAYER_NAME_MAX];
    glob_quote(name, glob, sizeof glob);
    snprintf(line, sizeof line, "%s '%s'", command, glob);
    tui_run_command(t, line);
}

void tui_run_save(tui *t, const char *path)
{
    char line[TUI_LINE_MAX + 16];
    snprintf(line, sizeof line, "save '%s'", path);
    tui_run_command(t, line);
}

/* Where 's' proposes to save: next to the model, NAME.pq.onnx. */
static void default_save_path(tui *t, char *buf, size_t cap)
{
    bd_ws_lock(t->ws);
    snprintf(buf, cap, "%s", bd_ws_path(t->ws));
    bd_ws_unlock(t->ws);
    size_t n = strlen(buf);
    static const char *const ends[] = {".pq.onnx", ".onnx"};
    for (int i = 0; i < 2; i++) {
        size_t e = strlen(ends[i]);
        if (n > e && strcmp(buf + n - e, ends[i]) == 0) {
            buf[n - e] = '\0';
            break;
        }
    }
    strncat(buf, ".pq.onnx", cap - strlen(buf) - 1);
}

/* The selected layer, or a log line saying there is none. */
static int selected(tui *t, char *name, size_t cap)
{
    tui_selected_name(t, name, cap);
    if (!name[0])
        tui_log_add(&t->log, TS_WARN, "no layer selected");
    return name[0] != '\0';
}

/* The keys are shortcuts for commands: what they print goes to the log. */
static void act_quantize(tui *t, int key)
{
    (void)key;
    char name[BD_LAYER_NAME_MAX];
    if (selected(t, name, sizeof name))
        run_on_layer(t, "quantize", name);
}

static void act_quantize_all(tui *t, int key)
{
    (void)key;
    tui_run_command(t, "quantize all");
}

static void act_reset(tui *t, int key)
{
    (void)key;
    char name[BD_LAYER_NAME_MAX];
    if (selected(t, name, sizeof name))
        run_on_layer(t, "reset", name);
}

static void act_plan(tui *t, int key)
{
    char name[BD_LAYER_NAME_MAX];
    if (!selected(t, name, sizeof name))
        return;
    int what = key == 'k' || key == 'K' ? PLAN_K
               : key == 'o'             ? PLAN_OBJECTIVE
               : key == 'x'             ? PLAN_INCLUDE
               : key == 'i'             ? PLAN_FORMAT
                                        : PLAN_D;
    int step = key == ']' || key == '+' || key == '=' || key == 'K' ? 1 : -1;
    submit(t, job_plan, 0, name, what, step, "plan");
}

static void act_undo(tui *t, int key)
{
    (void)key;
    tui_run_command(t, "undo");
}

static void act_eval(tui *t, int key)
{
    (void)key;
    tui_run_command(t, "eval");
}

/* Every quantized layer together, by distillation, with the defaults. */
static void act_finetune(tui *t, int key)
{
    (void)key;
    tui_run_command(t, "finetune");
}

static void act_train(tui *t, int key)
{
    (void)key;
    char line[sizeof t->train_line]; /* tui_run_command writes t->train_line */
    snprintf(line, sizeof line, "%s", t->train_line[0] ? t->train_line : "train");
    tui_run_command(t, line);
}

static void act_train_pane(tui *t, int key)
{
    (void)key;
    t->side = t->side != SIDE_DETAIL ? SIDE_DETAIL : t->run_side;
}

static void act_frontier_pane(tui *t, int key)
{
    (void)key;
    t->side = t->side != SIDE_FRONTIER ? SIDE_FRONTIER : SIDE_DETAIL;
}

static void act_save(tui *t, int key)
{
    (void)key;
    char path[TUI_LINE_MAX];
    default_save_path(t, path, sizeof path);
    tui_cmdline_open(&t->line, "save to: ", path, 0, 1);
    t->mode = MODE_SAVE;
}

static void act_command(tui *t, int key)
{
    (void)key;
    tui_cmdline_open(&t->line, ":", "", 1, 0);
    t->mode = MODE_COMMAND;
}

static void act_cancel(tui *t, int key)
{
    (void)key;
    if (tui_worker_cancel(&t->worker))
        tui_log_add(&t->log, TS_WARN, "cancelling...");
}

static void act_help(tui *t, int key)
{
    (void)key;
    t->help = 1;
    t->help_top = 0;
}

static void act_focus(tui *t, int key)
{
    int step = key == TUI_TAB ? 1 : PANE_COUNT - 1;
    t->focus = (tui_pane)((t->focus + step) % PANE_COUNT);
}

static void act_move(tui *t, int key)
{
    int page = LINES > 8 ? LINES / 3 : 1;
    int delta = key == TUI_FKEY(KEY_UP)      ? -1
                : key == TUI_FKEY(KEY_DOWN)  ? 1
                : key == TUI_FKEY(KEY_PPAGE) ? -page
                : key == TUI_FKEY(KEY_NPAGE) ? page
                : key == TUI_FKEY(KEY_HOME)  ? -(1 << 30)
                : key == TUI_FKEY(KEY_END)   ? 1 << 30
                : key == TUI_FKEY(KEY_LEFT)  ? -1
                                             : 1;
    int sideways = key == TUI_FKEY(KEY_LEFT) || key == TUI_FKEY(KEY_RIGHT);
    switch (t->focus) {
    case PANE_IMAGES: tui_images_page(t, delta < 0 ? -1 : 1); break;
    case PANE_DETAIL:
        t->codebook_first += (delta < 0 ? -1 : 1) * (t->codebook_page > 0 ? t->codebook_page : 1);
        if (t->codebook_first < 0)
            t->codebook_first = 0;
        break; /* the detail pane clamps the end, knowing k */
    case PANE_LOG:
        t->log_back -= delta;
        if (t->log_back < 0)
            t->log_back = 0;
        if (t->log_back > tui_log_count(&t->log))
            t->log_back = (int)tui_log_count(&t->log);
        break;
    default:
        if (!sideways) { /* a layer to look at: its detail */
            tui_table_move(t, delta);
            t->codebook_first = 0;
            t->side = SIDE_DETAIL;
        }
        break;
    }
}

static void act_redraw(tui *t, int key)
{
    (void)t;
    (void)key;
    clearok(curscr, TRUE);
}

static void act_quit(tui *t, int key)
{
    (void)key;
    tui_request_quit(t);
}

static void act_search(tui *t, int key)
{
    (void)key;
    tui_search_open(t);
}

static void act_search_next(tui *t, int key)
{
    tui_search_next(t, key == 'N' ? -1 : 1);
}

/* The selection stays on its layer, wherever the new order puts it. */
static void act_sort(tui *t, int key)
{
    t->sort = (tui_sort)((t->sort + (key == '<' ? SORT_COUNT - 1 : 1)) % SORT_COUNT);
    tui_log_addf(&t->log, TS_NORMAL, "the table in %s", tui_sort_name(t->sort));
}

static void act_sensitivity(tui *t, int key)
{
    (void)key;
    tui_run_command(t, "sensitivity");
}

static const tui_binding bindings[] = {
    {"Up Down PgUp PgDn Home End",
     "move the selection, or scroll the focused pane",
     {TUI_FKEY(KEY_UP), TUI_FKEY(KEY_DOWN), TUI_FKEY(KEY_PPAGE), TUI_FKEY(KEY_NPAGE),
      TUI_FKEY(KEY_HOME), TUI_FKEY(KEY_END)},
     act_move},
    {"Left Right",
     "turn the page of images or centroids (their pane focused)",
     {TUI_FKEY(KEY_LEFT), TUI_FKEY(KEY_RIGHT)},
     act_move},
    {"Tab Shift-Tab",
     "focus the next / previous pane: layers, detail, images, log",
     {TUI_TAB, TUI_FKEY(KEY_BTAB)},
     act_focus},
    {"Enter",
     "quantize the selected layer by its plan (its d and k, or its int bits)",
     {'\r', '\n', TUI_FKEY(KEY_ENTER)},
     act_quantize},
    {"A", "quantize all the layers the plan takes, in graph order", {'A'}, act_quantize_all},
    {"[ ]  - +",
     "d: previous / next divisor of the layer's row length",
     {'[', ']', '-', '+', '='},
     act_plan},
    {"k K", "k: halve / double (up to what the layer allows); int: one bit less / more",
     {'k', 'K'}, act_plan},
    {"i", "format: PQ (codebook) / int (B-bit grid per channel)", {'i'}, act_plan},
    {"o", "objective: act (activation-aware) / weight / feedback (across blocks)", {'o'}, act_plan},
    {"x", "take or skip the layer in 'quantize all'", {'x'}, act_plan},
    {"r", "reset the selected layer to float", {'r'}, act_reset},
    {"u", "undo the last change", {'u'}, act_undo},
    {"e", "evaluate teacher and student (top-1, top-5)", {'e'}, act_eval},
    {"f",
     "fine-tune the quantized layers' centroids by distillation (':help finetune')",
     {'f'},
     act_finetune},
    {"t",
     "train the weights: the last ':train' line again, else the defaults (':help train')",
     {'t'},
     act_train},
    {"T", "show the training pane (or bitprune's, whichever ran last) / the layer's detail",
     {'T'}, act_train_pane},
    {"F", "show the frontier: top-1 against size of every evaluation ('e') / the layer's detail",
     {'F'}, act_frontier_pane},
    {"S",
     "measure the top-1 each planned layer loses quantized alone (':help sensitivity')",
     {'S'},
     act_sensitivity},
    {"/",
     "find a layer by name (part of it, or a glob: layer3.*); Enter keeps it, Esc goes back",
     {'/'},
     act_search},
    {"n N", "the next / previous layer the last '/' pattern matches", {'n', 'N'}, act_search_next},
    {"< >",
     "sort the table by the previous / next column: graph order, size, rel err, bits/w, "
     "top1 drop, name",
     {'<', '>'},
     act_sort},
    {"s", "save the compressed model (asks where)", {'s'}, act_save},
    {":",
     "command line: Up/Down history, Tab completes, ':help' lists commands",
     {':'},
     act_command},
    {"Esc Ctrl-C", "cancel the running work and what is queued", {TUI_ESC, TUI_CTRL_C}, act_cancel},
    {"Ctrl-L", "redraw the screen", {TUI_CTRL_L}, act_redraw},
    {"?", "this help", {'?'}, act_help},
    {"q Q", "quit (asks first when quantization or training work is unsaved)", {'q', 'Q'},
     act_quit},
};

const tui_binding *tui_bindings(int *n)
{
    *n = (int)(sizeof bindings / sizeof bindings[0]);
    return bindings;
}

int tui_dispatch(tui *t, int key)
{
    int n;
    const tui_binding *b = tui_bindings(&n);
    for (int i = 0; i < n; i++)
        for (int j = 0; j < 8 && b[i].codes[j]; j++)
            if (b[i].codes[j] == key) {
                b[i].act(t, key);
                return 1;
            }
    return 0;
}
