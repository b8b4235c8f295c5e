/* '/' finds a layer by name as it is typed, the way less and vim search:
 * the selection moves to the first match at or after where it was, Enter
 * keeps it, Esc puts the selection back; n and N go on to the next and
 * previous match of the last pattern, in the table's order and round. */
#include <stdio.h>
#include <string.h>

#include "tui.h"

/* A layer found: selected, with its detail shown. */
static void select_layer(tui *t, int i)
{
    if (i != t->sel)
        t->codebook_first = 0;
    t->sel = i;
    t->side = SIDE_DETAIL;
}

void tui_search_open(tui *t)
{
    t->search_from = t->sel;
    tui_cmdline_open(&t->line, "/", "", 0, 0);
    t->mode = MODE_SEARCH;
}

/* Moves the selection to the pattern's match from layer `from` (dir +1 or
 * -1); says so on the prompt's hint line when there is none. */
static void follow(tui *t, const char *pattern, int from, int dir, int inclusive)
{
    int i = tui_table_find(t, pattern, from, dir, inclusive);
    if (i >= 0)
        select_layer(t, i);
    else
        snprintf(t->line.hint, sizeof t->line.hint, "no layer matches '%.400s'", pattern);
}

void tui_search_key(tui *t, int key)
{
    char pattern[sizeof t->search];
    tui_cmdline_text(&t->line, pattern, sizeof pattern);
    if (key == TUI_TAB) /* no completion here: a pattern is not a command */
        return;
    if (key == TUI_FKEY(KEY_DOWN) || key == TUI_FKEY(KEY_UP)) {
        t->line.hint[0] = '\0';
        if (pattern[0])
            follow(t, pattern, t->sel, key == TUI_FKEY(KEY_DOWN) ? 1 : -1, 0);
        return;
    }
    char done[TUI_LINE_MAX * 4 + 1];
    tui_line_result r = tui_cmdline_key(&t->line, key, t->ws, done, sizeof done);
    if (r == LINE_CANCELLED) {
        select_layer(t, t->search_from);
        t->mode = MODE_KEYS;
        return;
    }
    if (r == LINE_DONE) {
        t->mode = MODE_KEYS;
        if (!done[0]) {
            select_layer(t, t->search_from);
            return;
        }
        snprintf(t->search, sizeof t->search, "%s", done);
        if (tui_table_find(t, done, t->sel, 1, 1) < 0) {
            select_layer(t, t->search_from);
            tui_log_addf(&t->log, TS_WARN, "no layer matches '%s'", done);
        }
        return;
    }
    tui_cmdline_text(&t->line, pattern, sizeof pattern);
    if (pattern[0])
        follow(t, pattern, t->search_from, 1, 1);
    else
        select_layer(t, t->search_from);
}

void tui_search_next(tui *t, int dir)
{
    if (!t->search[0]) {
        tui_log_add(&t->log, TS_WARN, "nothing searched yet: '/' finds a layer by name");
        return;
    }
    int i = tui_table_find(t, t->search, t->sel, dir, 0);
    if (i < 0)
        tui_log_addf(&t->log, TS_WARN, "no layer matches '%s'", t->search);
    else
        select_layer(t, i);
}
