#include "cmdline.h"

#include <glob.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "cmd.h"
#include "draw.h"

void tui_cmdline_init(tui_cmdline *c) { memset(c, 0, sizeof *c); }

void tui_cmdline_free(tui_cmdline *c)
{
    for (int i = 0; i < c->nhist; i++)
        free(c->history[i]);
    c->nhist = 0;
}

/* wide -> UTF-8 (in the locale's encoding); unrepresentable characters become '?' */
static void narrow(const wchar_t *w, int n, char *out, size_t cap)
{
    mbstate_t st;
    memset(&st, 0, sizeof st);
    size_t o = 0;
    for (int i = 0; i < n; i++) {
        char mb[MB_LEN_MAX];
        size_t len = wcrtomb(mb, w[i], &st);
        if (len == (size_t)-1) {
            mb[0] = '?';
            len = 1;
            memset(&st, 0, sizeof st);
        }
        if (o + len >= cap)
            break;
        memcpy(out + o, mb, len);
        o += len;
    }
    out[o] = '\0';
}

static void set_text(tui_cmdline *c, const char *text)
{
    mbstate_t st;
    memset(&st, 0, sizeof st);
    const char *p = text;
    size_t n = mbsrtowcs(c->buf, &p, TUI_LINE_MAX, &st);
    if (n == (size_t)-1) { /* not valid in this locale: keep the ASCII */
        n = 0;
        for (const char *q = text; *q && n < TUI_LINE_MAX; q++)
            c->buf[n++] = (unsigned char)*q < 128 ? (wchar_t)*q : L'?';
    }
    c->len = c->cur = (int)n;
    c->buf[c->len] = L'\0';
}

void tui_cmdline_open(tui_cmdline *c, const char *prompt, const char *text, int use_history,
                      int paths_only)
{
    snprintf(c->prompt, sizeof c->prompt, "%s", prompt);
    set_text(c, text);
    c->use_history = use_history;
    c->paths_only = paths_only;
    c->hpos = c->nhist;
    c->hint[0] = '\0';
}

static void insert(tui_cmdline *c, const wchar_t *s, int n)
{
    if (c->len + n > TUI_LINE_MAX)
        n = TUI_LINE_MAX - c->len;
    memmove(c->buf + c->cur + n, c->buf + c->cur, (size_t)(c->len - c->cur) * sizeof(wchar_t));
    memcpy(c->buf + c->cur, s, (size_t)n * sizeof(wchar_t));
    c->len += n;
    c->cur += n;
    c->buf[c->len] = L'\0';
}

static void cut(tui_cmdline *c, int from, int to)
{
    memmove(c->buf + from, c->buf + to, (size_t)(c->len - to) * sizeof(wchar_t));
    c->len -= to - from;
    c->cur = from;
    c->buf[c->len] = L'\0';
}

static void remember(tui_cmdline *c, const char *line)
{
    if (!line[0] || (c->nhist && strcmp(c->history[c->nhist - 1], line) == 0))
        return;
    char *copy = strdup(line);
    if (!copy)
        return;
    if (c->nhist == TUI_HISTORY) {
        free(c->history[0]);
        memmove(c->history, c->history + 1, (TUI_HISTORY - 1) * sizeof(char *));
        c->nhist--;
    }
    c->history[c->nhist++] = copy;
}

static void browse(tui_cmdline *c, int step)
{
    int to = c->hpos + step;
    if (!c->use_history || to < 0 || to > c->nhist)
        return;
    if (c->hpos == c->nhist)
        narrow(c->buf, c->len, c->draft, sizeof c->draft);
    c->hpos = to;
    set_text(c, to == c->nhist ? c->draft : c->history[to]);
}

/* ---- completion ------------------------------------------------------------- */

typedef struct candidates {
    char **v;
    int n, cap;
    const char *prefix;
} candidates;

static void add_candidate(void *user, const char *s)
{
    candidates *cs = user;
    if (strncmp(s, cs->prefix, strlen(cs->prefix)) != 0)
        return;
    for (int i = 0; i < cs->n; i++)
        if (strcmp(cs->v[i], s) == 0)
            return;
    if (cs->n == cs->cap) {
        int cap = cs->cap ? 2 * cs->cap : 32;
        char **v = realloc(cs->v, (size_t)cap * sizeof *v);
        if (!v)
            return;
        cs->v = v;
        cs->cap = cap;
    }
    char *copy = strdup(s);
    if (copy)
        cs->v[cs->n++] = copy;
}

static void add_paths(candidates *cs, const char *partial)
{
    char pattern[TUI_LINE_MAX * 4 + 2];
    snprintf(pattern, sizeof pattern, "%s*", partial);
    glob_t g;
    if (glob(pattern, GLOB_MARK | GLOB_TILDE, NULL, &g) == 0)
        for (size_t i = 0; i < g.gl_pathc; i++)
            add_candidate(cs, g.gl_pathv[i]);
    globfree(&g);
}

static void complete(tui_cmdline *c, bd_workspace *ws)
{
    int start = c->cur;
    while (start > 0 && c->buf[start - 1] != L' ')
        start--;
    char before[TUI_LINE_MAX * 4 + 1], partial[TUI_LINE_MAX * 4 + 1];
    narrow(c->buf, start, before, sizeof before);
    narrow(c->buf + start, c->cur - start, partial, sizeof partial);
    candidates cs = {NULL, 0, 0, partial};
    if (c->paths_only) {
        add_paths(&cs, partial);
    } else {
        char **argv = NULL;
        int argc = 0;
        if (bd_cmd_split(before, &argv, &argc) != BD_OK) {
            snprintf(c->hint, sizeof c->hint, "%s", bd_error_message());
            return;
        }
        bd_ws_lock(ws);
        bd_arg_kind kind = bd_cmd_complete(ws, argc, argv, partial, add_candidate, &cs);
        bd_ws_unlock(ws);
        if (kind == BD_ARG_PATH && !strchr(partial, '='))
            add_paths(&cs, partial);
        bd_cmd_free_words(argv, argc);
    }
    if (cs.n == 0) {
        snprintf(c->hint, sizeof c->hint, "no completions for '%.400s'", partial);
    } else {
        /* The longest prefix all candidates share; a single one is a
         * finished word (unless it is a directory or a key=). */
        size_t common = strlen(cs.v[0]);
        for (int i = 1; i < cs.n; i++) {
            size_t j = 0;
            while (j < common && cs.v[i][j] == cs.v[0][j])
                j++;
            common = j;
        }
        char word[TUI_LINE_MAX * 4 + 2];
        snprintf(word, sizeof word, "%.*s", (int)common, cs.v[0]);
        char last = common ? word[common - 1] : '\0';
        if (cs.n == 1 && last != '/' && last != '=')
            strcat(word, " ");
        wchar_t wide[TUI_LINE_MAX + 1];
        mbstate_t st;
        memset(&st, 0, sizeof st);
        const char *p = word;
        size_t n = mbsrtowcs(wide, &p, TUI_LINE_MAX, &st);
        if (n != (size_t)-1) {
            cut(c, start, c->cur);
            insert(c, wide, (int)n);
        }
        c->hint[0] = '\0';
        if (cs.n > 1) {
            size_t o = 0;
            for (int i = 0; i < cs.n && o + 1 < sizeof c->hint; i++)
                o += (size_t)snprintf(c->hint + o, sizeof c->hint - o, "%s  ", cs.v[i]);
        }
    }
    for (int i = 0; i < cs.n; i++)
        free(cs.v[i]);
    free(cs.v);
}

tui_line_result tui_cmdline_key(tui_cmdline *c, int key, bd_workspace *ws, char *out, size_t cap)
{
    if (key != TUI_TAB)
        c->hint[0] = '\0';
    switch (key) {
    case '\n':
    case '\r':
    case TUI_FKEY(KEY_ENTER):
        narrow(c->buf, c->len, out, cap);
        if (c->use_history)
            remember(c, out);
        return LINE_DONE;
    case TUI_ESC:
    case TUI_CTRL_C: return LINE_CANCELLED;
    case TUI_TAB: complete(c, ws); break;
    case TUI_FKEY(KEY_BACKSPACE):
    case 127:
    case 8:
        if (c->cur > 0)
            cut(c, c->cur - 1, c->cur);
        else if (c->len == 0) /* backspace on an empty line leaves it, as in vim */
            return LINE_CANCELLED;
        break;
    case TUI_FKEY(KEY_DC):
    case 4: /* Ctrl-D */
        if (c->cur < c->len)
            cut(c, c->cur, c->cur + 1);
        break;
    case TUI_FKEY(KEY_LEFT):
    case 2: /* Ctrl-B */
        if (c->cur > 0)
            c->cur--;
        break;
    case TUI_FKEY(KEY_RIGHT):
    case 6: /* Ctrl-F */
        if (c->cur < c->len)
            c->cur++;
        break;
    case TUI_FKEY(KEY_HOME):
    case 1: c->cur = 0; break; /* Ctrl-A */
    case TUI_FKEY(KEY_END):
    case 5: c->cur = c->len; break;         /* Ctrl-E */
    case 21: cut(c, 0, c->cur); break;      /* Ctrl-U */
    case 11: cut(c, c->cur, c->len); break; /* Ctrl-K */
    case 23: {                              /* Ctrl-W: the word before the cursor */
        int from = c->cur;
        while (from > 0 && c->buf[from - 1] == L' ')
            from--;
        while (from > 0 && c->buf[from - 1] != L' ')
            from--;
        cut(c, from, c->cur);
        break;
    }
    case TUI_FKEY(KEY_UP):
    case 16: browse(c, -1); break; /* Ctrl-P */
    case TUI_FKEY(KEY_DOWN):
    case 14: browse(c, +1); break; /* Ctrl-N */
    default:
        if (key >= 32 && key < 0x110000 && key != 127) {
            wchar_t wc = (wchar_t)key;
            insert(c, &wc, 1);
        }
        break;
    }
    return LINE_EDITING;
}

void tui_cmdline_text(const tui_cmdline *c, char *out, size_t cap)
{
    narrow(c->buf, c->len, out, cap);
}

int tui_cmdline_draw(const tui_cmdline *c, int y, int x, int w)
{
    if (c->hint[0]) {
        tui_blank(y - 1, x, w, TS_DIM);
        tui_text(y - 1, x, w, TS_DIM, c->hint);
    }
    tui_blank(y, x, w, TS_NORMAL);
    int pw = tui_text(y, x, w, TS_ACCENT, c->prompt);
    int room = w - pw - 1;
    if (room < 1)
        return x + pw;
    /* Scroll sideways so the cursor stays in view. */
    int first = c->cur, cols = 0;
    for (int i = c->cur - 1; i >= 0; i--) {
        int cw = wcwidth(c->buf[i]);
        cw = cw < 0 ? 1 : cw;
        if (cols + cw > room)
            break;
        cols += cw;
        first = i;
    }
    char text[TUI_LINE_MAX * 4 + 1];
    narrow(c->buf + first, c->len - first, text, sizeof text);
    tui_text(y, x + pw, room, TS_NORMAL, text);
    return x + pw + cols;
}
