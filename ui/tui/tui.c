/* bitdown tui: the entry point, the main loop, the layout and the keys'
 * first stop (the line editor, the quit question and the help take keys
 * before the bindings do). */
#include <getopt.h>
#include <limits.h>
#include <locale.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "fileio.h"
#include "tui.h"

static const char help[] =
    "usage: bitdown tui [MODEL] [-c COMMAND]... [--resume] [--no-checkpoint]\n\n"
    "The interactive workbench: the layer table with each layer's d, k, size and\n"
    "error, keys to change d and k, quantize, evaluate, train, undo and save, the\n"
    "selected layer's EM curve, code usage and codebook, a training run's curves,\n"
    "a BitPruning run's bit lengths (':bitprune'), evaluation images with the\n"
    "teacher's and student's predictions, and a ':' line for the command language.\n"
    "Press '?' inside for every key. MODEL defaults to the bundled example,\n"
    "examples/fmnist/resnet_bn.onnx. Needs a terminal.\n\n"
    "  -c, --command LINE   run a command line first (repeatable), as if typed\n"
    "                       after ':', e.g. -c 'data eval fmnist:test n=1000'\n"
    "  --resume             carry on from MODEL's checkpoint after a crash (the\n"
    "                       session keeps one; see 'bitdown repl --help')\n"
    "  --no-checkpoint      keep no checkpoint\n" CLI_PREPROCESS_HELP;

enum { MAX_COMMANDS = 32 };

const char *tui_mb(int64_t bytes, char *buf, size_t cap)
{
    snprintf(buf, cap, "%.4g MB", bd_mb(bytes));
    return buf;
}

/* ---- quitting ----------------------------------------------------------------- */

void tui_request_quit(tui *t)
{
    int busy = tui_worker_busy(&t->worker, 1);
    bd_ws_lock(t->ws);
    int ask = cli_quit_question(t->ws, busy, t->question, sizeof t->question);
    bd_ws_unlock(t->ws);
    if (ask)
        t->mode = MODE_QUIT;
    else
        t->quit = 1;
}

void tui_selected_name(tui *t, char *buf, size_t cap)
{
    bd_ws_lock(t->ws);
    int n = bd_ws_nlayers(t->ws);
    if (t->sel >= n)
        t->sel = n - 1;
    if (t->sel < 0)
        t->sel = 0;
    snprintf(buf, cap, "%s", n > 0 ? bd_ws_layer_at(t->ws, t->sel)->layer.name : "");
    bd_ws_unlock(t->ws);
}

/* ---- drawing ------------------------------------------------------------------ */

typedef struct layout {
    tui_rect header, table, detail, images, log;
    int progress, bottom; /* rows */
} layout;

static layout compute_layout(const tui *t, int nlayers)
{
    int H = LINES, W = COLS;
    layout l;
    memset(&l, 0, sizeof l);
    l.bottom = H - 1;
    l.progress = H - 2;
    int hh = H >= 16 ? 2 : 1;
    int lh = H >= 30 ? 7 : H >= 20 ? 4 : 0; /* the log's title and lines */
    int room = H - hh - 2 - lh;
    int th = nlayers + 1;
    /* The table first, but leave the panes below room for a plot or an
     * image where there is some. */
    int cap = room - 14 > room / 2 ? room - 14 : room / 2 > 3 ? room / 2 : 3;
    if (th > cap)
        th = cap;
    if (th > room)
        th = room > 0 ? room : 0;
    int mh = room - th;
    l.header = (tui_rect){0, 0, hh, W};
    l.table = (tui_rect){hh, 0, th, W};
    l.log = (tui_rect){hh + th + mh, 0, lh, W};
    tui_rect middle = {hh + th, 0, mh, W};
    if (t->focus == PANE_LOG) { /* reading the log: it takes the panes' room too */
        l.log = (tui_rect){middle.y, 0, mh + lh, W};
        return l;
    }
    if (mh < 3)
        return l;
    if (W >= 100) { /* side by side */
        int iw = W * 9 / 20;
        l.detail = (tui_rect){middle.y, 0, mh, W - iw - 1};
        l.images = (tui_rect){middle.y, W - iw, mh, iw};
    } else if (t->focus == PANE_IMAGES) {
        l.images = middle;
    } else {
        l.detail = middle;
    }
    return l;
}

static void draw_header(tui *t, tui_rect r, int unsaved)
{
    bd_workspace *ws = t->ws;
    for (int y = 0; y < r.h; y++)
        tui_blank(r.y + y, 0, r.w, TS_HEADER);
    bd_model_size sz;
    bd_ws_size(ws, &sz);
    bd_accuracy te, st;
    bd_ws_last_eval(ws, &te, &st);
    int n = bd_ws_nlayers(ws), quantized = 0;
    for (int i = 0; i < n; i++)
        quantized += bd_ws_layer_at(ws, i)->state != BD_STATE_FLOAT;
    char a[32], b[32], acc[128] = "";
    if (te.valid || st.valid) {
        char tb[16] = "-", sb[16] = "-";
        if (te.valid)
            snprintf(tb, sizeof tb, "%.2f%%", te.top1);
        if (st.valid)
            snprintf(sb, sizeof sb, "%.2f%%", st.top1);
        snprintf(acc, sizeof acc, "top-1 teacher %s  student %s  (%lld images)", tb, sb,
                 (long long)(te.valid ? te.n : st.n));
    } else {
        snprintf(acc, sizeof acc, "top-1 not evaluated yet (e)");
    }
    /* the file saved last, its size on disk and ratio to the original
     * model's file, beside the payload */
    bd_disk_size disk;
    char file[96] = "", c[32];
    if (bd_ws_last_saved(ws, &disk) && disk.bytes >= 0) {
        int at = snprintf(file, sizeof file, "  on disk %s", tui_mb(disk.bytes, c, sizeof c));
        if (disk.ratio > 0)
            snprintf(file + at, sizeof file - (size_t)at, " %.2fx", disk.ratio);
    }
    char line1[512], line2[512], device[192];
    snprintf(line1, sizeof line1, " bitdown %s %s %s %s %s %d/%d layers quantized%s",
             tui_sym("\u2502", "|"), bd_ws_path(ws), tui_sym("\u2502", "|"),
             bd_ws_device_describe(ws, device, sizeof device), tui_sym("\u2502", "|"), quantized,
             n, unsaved ? "  [unsaved]" : "");
    snprintf(line2, sizeof line2, " %s fp32 %s %s  ratio %.2fx%s %s %s",
             tui_mb(sz.fp32_bytes, a, sizeof a), tui_sym("\u2192", "->"),
             tui_mb(sz.compressed_bytes, b, sizeof b), sz.ratio, file, tui_sym("\u2502", "|"),
             acc);
    if (r.h >= 2) {
        tui_text(r.y, 0, r.w, TS_HEADER, line1);
        tui_text(r.y + 1, 0, r.w, TS_HEADER, line2);
    } else {
        int used = tui_text(r.y, 0, r.w, TS_HEADER, line2);
        tui_text(r.y, used, r.w - used, TS_HEADER, line1 + strlen(" bitdown"));
    }
}

static void draw_progress(tui *t, int y, int w, const char *undo)
{
    tui_progress p;
    tui_worker_progress(&t->worker, &p);
    tui_blank(y, 0, w, TS_NORMAL);
    if (!p.busy) {
        tui_text(y, 1, w - 1, TS_DIM, undo[0] ? undo : "ready");
        return;
    }
    static const char *const spin_utf8[] = {"\u280b", "\u2819", "\u2839", "\u2838", "\u283c",
                                            "\u2834", "\u2826", "\u2827", "\u2807", "\u280f"};
    static const char *const spin_ascii[] = {"|", "/", "-", "\\"};
    int frame = (int)(p.seconds * 10);
    int x = 1;
    x += tui_text(y, x, w - x, TS_ACCENT, tui_sym(spin_utf8[frame % 10], spin_ascii[frame % 4]));
    x += tui_textf(y, x, w - x, TS_ACCENT, " %s ", p.label);
    if (p.total > 0 && w - x > 40) {
        tui_meter(y, x, 20, (double)p.done / (double)p.total, TS_OK);
        x += 21;
        x += tui_textf(y, x, w - x, TS_NORMAL, "%lld/%lld ", (long long)p.done, (long long)p.total);
    }
    /* every stage's message says its metric already */
    x += tui_textf(y, x, w - x, TS_NORMAL, "%s %s  %.1fs  ", p.stage, p.message, p.seconds);
    x += tui_text(y, x, w - x, TS_WARN, "Esc cancels");
    if (p.queued)
        tui_textf(y, x, w - x, TS_DIM, "  (+%d queued)", p.queued);
}

/* The keys most worth knowing, in words, as many as fit in w columns:
 * the most useful first, shown in the order of the work. */
static void draw_key_bar(int y, int w)
{
    static const struct {
        const char *keys, *what;
        int rank; /* 0 stays longest */
    } items[] = {
        {"Enter", "quantize", 1}, {"A", "all", 4},  {"[ ]", "block d", 10},
        {"k K", "centroids", 9},  {"u", "undo", 5}, {"e", "eval", 3},
        {"f", "finetune", 8},     {"S", "sensitivity", 11},
        {"/", "search", 6},       {"< >", "sort", 12},
        {"s", "save", 7},         {":", "command", 2},
        {"?", "help", 0},         {"q", "quit", 0},
    };
    enum { N = sizeof items / sizeof items[0] };
    int shown[N] = {0}, used = 1;
    for (int rank = 0; rank < N; rank++)
        for (int i = 0; i < N; i++) {
            int iw = tui_text_width(items[i].keys) + 1 + tui_text_width(items[i].what) + 2;
            if (items[i].rank == rank && used + iw <= w) {
                shown[i] = 1;
                used += iw;
            }
        }
    tui_blank(y, 0, w, TS_HEADER);
    int x = 1;
    for (int i = 0; i < N; i++)
        if (shown[i]) {
            x += tui_text(y, x, w - x, TS_ACCENT, items[i].keys);
            x += tui_textf(y, x, w - x, TS_HEADER, " %s  ", items[i].what);
        }
}

static void draw_bottom(tui *t, int y, int w)
{
    switch (t->mode) {
    case MODE_COMMAND:
    case MODE_SEARCH:
    case MODE_SAVE: {
        int cx = tui_cmdline_draw(&t->line, y, 0, w);
        curs_set(1);
        move(y, cx);
        return;
    }
    case MODE_QUIT:
        tui_blank(y, 0, w, TS_NORMAL);
        tui_text(y, 1, w - 1, TS_WARN, t->question);
        break;
    default:
        if (t->help) {
            tui_blank(y, 0, w, TS_HEADER);
            tui_text(y, 0, w, TS_HEADER, " Up/Down scroll the help, any other key closes it");
        } else {
            draw_key_bar(y, w);
        }
        break;
    }
    curs_set(0);
}

static void frame(tui *t)
{
    erase();
    if (LINES < 4 || COLS < 20) {
        tui_text(0, 0, COLS, TS_WARN, "too small");
        refresh();
        return;
    }
    char undo[200] = "";
    tui_train_observe(t);
    bd_ws_lock(t->ws);
    int running = 0, pruning = 0;
    bd_ws_last_training(t->ws, NULL, NULL, NULL, &running);
    bd_ws_last_bitprune(t->ws, NULL, NULL, NULL, NULL, &pruning);
    /* a run started (by a command or a script) */
    if (running && !t->train_running)
        t->side = t->run_side = SIDE_TRAIN;
    if (pruning && !t->bitprune_running)
        t->side = t->run_side = SIDE_BITPRUNE;
    t->train_running = running;
    t->bitprune_running = pruning;
    layout l = compute_layout(t, bd_ws_nlayers(t->ws));
    int trained;
    draw_header(t, l.header, bd_ws_unsaved(t->ws, &trained) + trained);
    tui_table_draw(t, l.table, t->focus == PANE_TABLE);
    if (l.detail.h > 0) {
        if (t->side == SIDE_TRAIN)
            tui_train_draw(t, l.detail, t->focus == PANE_DETAIL);
        else if (t->side == SIDE_BITPRUNE)
            tui_bitprune_draw(t, l.detail, t->focus == PANE_DETAIL);
        else if (t->side == SIDE_FRONTIER)
            tui_frontier_draw(t, l.detail, t->focus == PANE_DETAIL);
        else
            tui_detail_draw(t, l.detail, t->focus == PANE_DETAIL);
        if (l.images.h > 0) /* the border between detail and images */
            mvvline(l.detail.y, l.detail.w, ACS_VLINE | tui_style_attr(TS_TITLE), l.detail.h);
    }
    const char *u = bd_ws_undo_label(t->ws);
    if (u)
        snprintf(undo, sizeof undo, "u undoes: %s", u);
    bd_ws_unlock(t->ws);

    if (l.images.h > 0)
        tui_images_draw(t, l.images, t->focus == PANE_IMAGES);
    if (l.log.h > 0) {
        char title[64];
        if (t->log_back > 0)
            snprintf(title, sizeof title, "log (%d lines back)", t->log_back);
        else
            snprintf(title, sizeof title, "log");
        tui_rule(l.log.y, 0, l.log.w, t->focus == PANE_LOG ? TS_FOCUS : TS_TITLE, title);
        tui_rect lines = {l.log.y + 1, 1, l.log.h - 1, l.log.w - 1};
        tui_log_draw(&t->log, lines, t->log_back);
    }
    draw_progress(t, l.progress, COLS, undo);
    if (t->help) {
        tui_rect r = {l.header.h, 0, LINES - l.header.h - 1, COLS};
        int lines = tui_help_draw(t, r);
        int most = lines - (r.h - 1); /* the rule takes a row */
        if (t->help_top > most)
            t->help_top = most > 0 ? most : 0;
    }
    draw_bottom(t, l.bottom, COLS);
    refresh();
}

/* ---- keys ----------------------------------------------------------------------- */

static void edit_key(tui *t, int key)
{
    char line[TUI_LINE_MAX * 4 + 1];
    tui_line_result r = tui_cmdline_key(&t->line, key, t->ws, line, sizeof line);
    if (r == LINE_EDITING)
        return;
    tui_mode was = t->mode;
    t->mode = MODE_KEYS;
    if (r == LINE_CANCELLED || !line[strspn(line, " \t")])
        return;
    if (was == MODE_COMMAND)
        tui_run_command(t, line);
    else
        tui_run_save(t, line);
}

static void help_key(tui *t, int key)
{
    if (key == TUI_FKEY(KEY_UP) || key == TUI_FKEY(KEY_PPAGE))
        t->help_top -= key == TUI_FKEY(KEY_UP) ? 1 : LINES / 2;
    else if (key == TUI_FKEY(KEY_DOWN) || key == TUI_FKEY(KEY_NPAGE))
        t->help_top += key == TUI_FKEY(KEY_DOWN) ? 1 : LINES / 2;
    else
        t->help = 0;
    if (t->help_top < 0)
        t->help_top = 0;
}

/* "unknown key 'x': ? lists the keys", the key named as it was typed. */
static void unknown_key(tui *t, int key)
{
    char name[32];
    const char *curses = key >= TUI_FKEY(0) ? keyname(key - TUI_FKEY(0)) : NULL;
    if (key >= TUI_FKEY(0))
        snprintf(name, sizeof name, "%s", curses ? curses : "?");
    else if (key < 32)
        snprintf(name, sizeof name, "Ctrl-%c", key + 64);
    else if (key == 127)
        snprintf(name, sizeof name, "Backspace");
    else {
        mbstate_t st;
        memset(&st, 0, sizeof st);
        size_t len = wcrtomb(name, (wchar_t)key, &st);
        name[len == (size_t)-1 ? 0 : len] = '\0';
    }
    tui_log_addf(&t->log, TS_WARN, "unknown key '%s': ? lists the keys", name);
}

static void handle_key(tui *t, int key)
{
    switch (t->mode) {
    case MODE_COMMAND:
    case MODE_SAVE: edit_key(t, key); break;
    case MODE_SEARCH: tui_search_key(t, key); break;
    case MODE_QUIT:
        t->mode = MODE_KEYS;
        if (key == 'y' || key == 'Y')
            t->quit = 1;
        break;
    default:
        if (t->help)
            help_key(t, key);
        else if (!tui_dispatch(t, key))
            unknown_key(t, key);
        break;
    }
}

static void run(tui *t)
{
    while (!t->quit) {
        if (atomic_exchange(&t->quit_asked, 0))
            tui_request_quit(t);
        frame(t);
        wint_t wc;
        int rc = get_wch(&wc);
        if (rc == ERR || (rc == KEY_CODE_YES && wc == KEY_RESIZE))
            continue; /* a tick, or a resize: the next frame lays out anew */
        handle_key(t, rc == KEY_CODE_YES ? TUI_FKEY((int)wc) : (int)wc);
    }
}

static int parse(int argc, char **argv, const char **model, const char **commands, int *ncommands,
                 int *resume, int *checkpoint, cli_preprocess *cp)
{
    static const struct option opts[] = {{"help", no_argument, 0, 'h'},
                                         {"command", required_argument, 0, 'c'},
                                         {"resume", no_argument, 0, 'r'},
                                         {"no-checkpoint", no_argument, 0, 'n'},
                                         CLI_PREPROCESS_LONGOPTS,
                                         {0, 0, 0, 0}};
    static char example[4096];
    snprintf(example, sizeof example, "%s/examples/fmnist/resnet_bn.onnx", bd_share_dir());
    *model = example;
    *ncommands = 0;
    *resume = 0;
    *checkpoint = 1;
    optind = 1;
    int c;
    while ((c = getopt_long(argc, argv, "hc:", opts, NULL)) != -1) {
        if (cli_preprocess_option(cp, c, optarg))
            continue;
        switch (c) {
        case 'h': fputs(help, stdout); exit(CLI_OK);
        case 'r': *resume = 1; break;
        case 'n': *checkpoint = 0; break;
        case 'c':
            if (*ncommands == MAX_COMMANDS)
                return cli_usage_error("tui", "at most %d -c options", MAX_COMMANDS);
            commands[(*ncommands)++] = optarg;
            break;
        default: return cli_bad_option("tui", argv);
        }
    }
    if (argc - optind > 1)
        return cli_usage_error("tui", "expects at most one MODEL");
    if (optind < argc)
        *model = argv[optind];
    if (!isatty(STDIN_FILENO) || !isatty(STDOUT_FILENO))
        return cli_usage_error("tui", "needs a terminal on stdin and stdout");
    return CLI_OK;
}

int cli_tui(int argc, char **argv)
{
    const char *model, *commands[MAX_COMMANDS];
    int ncommands, resume, checkpoint, resumed;
    cli_preprocess cp = {0};
    int rc = parse(argc, argv, &model, commands, &ncommands, &resume, &checkpoint, &cp);
    if (rc != CLI_OK)
        return rc;
    /* Wide characters need the user's character set; numbers keep the C
     * locale's decimal point, so only LC_CTYPE changes. */
    setlocale(LC_CTYPE, "");

    bd_workspace *ws;
    bd_status s = bd_ws_new(&ws);
    if (s != BD_OK)
        return cli_report(s);
    /* a session keeps a checkpoint, so a crash loses nothing (--resume) */
    bd_ws_autosave(ws, checkpoint);
    if (resume)
        fprintf(stderr, "bitdown: resuming %s...\n", model);
    s = bd_ws_open(ws, model, resume, &resumed);
    if (s == BD_OK && (rc = cli_preprocess_ws("tui", &cp, ws)) != CLI_OK) {
        bd_ws_free(ws);
        return rc;
    }
    tui *t = s == BD_OK ? calloc(1, sizeof *t) : NULL;
    if (!t) {
        if (s == BD_OK)
            s = bd_fail(BD_ENOMEM, "out of memory");
        bd_ws_free(ws);
        return cli_report(s);
    }
    t->ws = ws;
    t->run_side = SIDE_TRAIN; /* 'T' shows the training pane until a bitprune ran */
    tui_log_init(&t->log);
    tui_images_init(&t->images);
    tui_cmdline_init(&t->line);
    t->cmd.ws = ws;
    t->cmd.print = tui_log_print;
    t->cmd.user = &t->log;
    atomic_init(&t->quit_asked, 0);

    SCREEN *screen = newterm(NULL, stdout, stdin);
    if (!screen) {
        s = bd_fail(BD_EUNSUPPORTED, "cannot drive this terminal (TERM=%s)",
                    getenv("TERM") ? getenv("TERM") : "");
        rc = cli_report(s);
    } else {
        set_term(screen);
        raw(); /* Ctrl-C is a key here: it cancels work instead of killing it */
        noecho();
        nonl();
        keypad(stdscr, TRUE);
        set_escdelay(25);
        timeout(100); /* ten frames a second while work runs */
        tui_draw_init();
        s = tui_worker_start(&t->worker, t, ws, &t->log);
        if (s == BD_OK) {
            if (resume) {
                char msg[PATH_MAX + 128];
                cli_resumed_message(ws, model, resumed, msg, sizeof msg);
                tui_log_add(&t->log, TS_NORMAL, msg);
            }
            tui_log_addf(&t->log, TS_NORMAL,
                         "loaded %s: %d layers. '?' lists every key, ':' opens the command line.",
                         model, bd_ws_nlayers(ws));
            for (int i = 0; i < ncommands; i++)
                tui_run_command(t, commands[i]);
            run(t);
            tui_worker_stop(&t->worker);
        }
        endwin();
        delscreen(screen);
        rc = s == BD_OK ? CLI_OK : cli_report(s);
    }
    tui_cmdline_free(&t->line);
    tui_images_destroy(&t->images);
    tui_log_destroy(&t->log);
    free(t);
    bd_ws_free(ws);
    return rc;
}
