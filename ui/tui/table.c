/* The layer table: one row per quantizable layer, the plan (d, k) next to
 * what the layer is now (bits per weight, stored size, top-1 drop alone,
 * error, state), in graph order or sorted by a column. */
#include <ctype.h>
#include <fnmatch.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pq.h"
#include "tui.h"

enum col {
    C_NAME,
    C_OP,
    C_SHAPE,
    C_PARAMS,
    C_D,
    C_K,
    C_BITS,
    C_SIZE,
    C_SENS,
    C_ERR,
    C_STATE,
    C_COUNT
};

/* Narrow terminals lose columns in `drop` order (0: never). Widths leave
 * room for the sort mark after a title. */
static const struct column {
    const char *title;
    int width, right, drop;
} columns[C_COUNT] = {
    {"layer", 0, 0, 0},      {"op", 8, 0, 3},        {"weight", 16, 0, 1}, {"params", 7, 1, 2},
    {"d", 4, 1, 0},          {"k", 5, 1, 0},         {"bits/w", 7, 1, 4},  {"size KB", 8, 1, 5},
    {"top1 drop", 10, 1, 6}, {"rel err", 8, 1, 7},   {"state", 10, 0, 0},
};
enum { DROP_RANKS = 7 };

/* The column each order sorts by (C_COUNT: none, graph order). */
static const enum col sort_column[SORT_COUNT] = {C_COUNT, C_SIZE, C_ERR, C_BITS, C_SENS, C_NAME};

const char *tui_sort_name(tui_sort s)
{
    static const char *const names[SORT_COUNT] = {
        "graph order",
        "stored size (largest first)",
        "relative error (largest first)",
        "bits per weight (most first)",
        "top-1 drop alone quantized (largest first)",
        "name"};
    return names[s];
}

static int coded(const bd_ws_layer *l) { return l->state != BD_STATE_FLOAT; }

static int64_t stored_bytes(const bd_ws_layer *l)
{
    return coded(l) ? bd_qlayer_bytes(&l->q) : 4 * bd_layer_params(&l->layer);
}

static void cell(const tui *t, int i, enum col c, char *buf, size_t cap)
{
    const bd_ws_layer *l = bd_ws_layer_at(t->ws, i);
    const bd_qlayer *q = &l->q;
    /* '*': the plan differs from the codebook in use, so quantizing again
     * would change the layer. */
    const char *pending =
        coded(l) && (q->format != l->format ||
                     (l->format == BD_FMT_PQ ? q->d != l->d || q->k != l->k
                                             : q->ints.bits != l->ints.bits ||
                                                   q->ints.per_channel != l->ints.per_channel ||
                                                   q->ints.symmetric != l->ints.symmetric))
            ? "*"
            : "";
    bd_sensitivity m;
    int stale;
    switch (c) {
    case C_NAME: snprintf(buf, cap, "%s", l->layer.name); break;
    case C_OP: bd_layer_kind(&l->layer, buf, cap); break;
    case C_SHAPE:
        bd_value_shape_str(&bd_ws_student(t->ws)->values[l->layer.weight], buf, cap);
        break;
    case C_PARAMS: snprintf(buf, cap, "%lld", (long long)bd_layer_params(&l->layer)); break;
    case C_D:
        if (l->format == BD_FMT_INT)
            snprintf(buf, cap, "-%s", pending);
        else
            snprintf(buf, cap, "%d%s", l->d, pending);
        break;
    case C_K:
        if (l->format == BD_FMT_INT)
            snprintf(buf, cap, "int%d%s", l->ints.bits, pending);
        else
            snprintf(buf, cap, "%d%s", l->k, pending);
        break;
    case C_BITS:
        bd_bits_str(bd_ws_bits_per_weight(l), buf, cap);
        break;
    case C_SIZE: snprintf(buf, cap, "%.2f", (double)stored_bytes(l) / 1024); break;
    case C_SENS:
        /* '?': measured with another plan, or before the float model changed */
        if (bd_ws_last_sensitivity(t->ws, i, &m, &stale))
            snprintf(buf, cap, "%.2f%s", m.drop, stale ? "?" : "");
        else
            snprintf(buf, cap, "-");
        break;
    case C_ERR:
        if (coded(l) && q->rel_error >= 0)
            snprintf(buf, cap, "%.4f", q->rel_error);
        else
            snprintf(buf, cap, "-");
        break;
    default:
        snprintf(buf, cap, "%s",
                 !coded(l) && !l->quantize ? "float skip" : bd_layer_state_name(l->state));
        break;
    }
}

/* ---- the order of the rows ------------------------------------------------------ */

typedef struct row_key {
    int index, known;
    double value; /* larger first */
    const char *name;
} row_key;

static int by_key(const void *a, const void *b)
{
    const row_key *x = a, *y = b;
    if (x->known != y->known) /* what is not known yet goes last */
        return y->known - x->known;
    if (x->name) {
        int c = strcmp(x->name, y->name);
        if (c)
            return c;
    } else if (x->value != y->value) {
        return x->value > y->value ? -1 : 1;
    }
    return x->index - y->index; /* ties keep graph order */
}

/* The layers' indices in the table's order (order holds one per layer);
 * under bd_ws_lock. */
static void table_order(const tui *t, int *order)
{
    int n = bd_ws_nlayers(t->ws);
    row_key *k = t->sort == SORT_GRAPH ? NULL : malloc((size_t)n * sizeof *k + 1);
    if (!k) { /* graph order, or out of memory: graph order too */
        for (int i = 0; i < n; i++)
            order[i] = i;
        return;
    }
    for (int i = 0; i < n; i++) {
        const bd_ws_layer *l = bd_ws_layer_at(t->ws, i);
        row_key r = {i, 1, 0, NULL};
        bd_sensitivity m = {0};
        switch (t->sort) {
        case SORT_SIZE: r.value = (double)stored_bytes(l); break;
        case SORT_ERROR:
            r.known = coded(l) && l->q.rel_error >= 0;
            r.value = l->q.rel_error;
            break;
        case SORT_BITS: r.value = bd_ws_bits_per_weight(l); break;
        case SORT_SENSITIVITY:
            r.known = bd_ws_last_sensitivity(t->ws, i, &m, NULL);
            r.value = m.drop;
            break;
        default: r.name = l->layer.name; break;
        }
        k[i] = r;
    }
    qsort(k, (size_t)n, sizeof *k, by_key);
    for (int i = 0; i < n; i++)
        order[i] = k[i].index;
    free(k);
}

/* The row of layer i in order, -1 when absent. */
static int row_of(const int *order, int n, int i)
{
    for (int r = 0; r < n; r++)
        if (order[r] == i)
            return r;
    return -1;
}

void tui_table_move(tui *t, int delta)
{
    bd_ws_lock(t->ws);
    int n = bd_ws_nlayers(t->ws);
    int *order = malloc((size_t)n * sizeof *order + 1);
    if (order && n > 0) {
        table_order(t, order);
        int r = row_of(order, n, t->sel);
        /* far moves (Home, End) must not overflow */
        int64_t to = (int64_t)(r < 0 ? 0 : r) + delta;
        to = to < 0 ? 0 : to >= n ? n - 1 : to;
        t->sel = order[to];
    }
    free(order);
    bd_ws_unlock(t->ws);
}

/* A substring of name, either case. */
static int contains(const char *name, const char *pattern)
{
    size_t len = strlen(pattern);
    for (const char *p = name; *p; p++) {
        size_t j = 0;
        while (j < len && p[j] &&
               tolower((unsigned char)p[j]) == tolower((unsigned char)pattern[j]))
            j++;
        if (j == len)
            return 1;
    }
    return len == 0;
}

static int matches(const char *name, const char *pattern)
{
    if (strpbrk(pattern, "*?["))
        return fnmatch(pattern, name, 0) == 0;
    return contains(name, pattern);
}

int tui_table_find(tui *t, const char *pattern, int from, int dir, int inclusive)
{
    bd_ws_lock(t->ws);
    int n = bd_ws_nlayers(t->ws), found = -1;
    int *order = malloc((size_t)n * sizeof *order + 1);
    if (order && n > 0) {
        table_order(t, order);
        int r = row_of(order, n, from);
        r = r < 0 ? 0 : r;
        for (int step = inclusive ? 0 : 1; step <= n && found < 0; step++) {
            int i = order[((r + dir * step) % n + n) % n];
            if (matches(bd_ws_layer_at(t->ws, i)->layer.name, pattern))
                found = i;
        }
    }
    free(order);
    bd_ws_unlock(t->ws);
    return found;
}

/* ---- drawing --------------------------------------------------------------------- */

static tui_style row_style(const bd_ws_layer *l, int selected)
{
    if (selected)
        return TS_SELECT;
    if (l->state == BD_STATE_QUANTIZED)
        return TS_OK;
    if (l->state == BD_STATE_TUNED)
        return TS_TUNED;
    return l->quantize ? TS_NORMAL : TS_DIM;
}

/* The titles, the sort column's marked with the direction it sorts. */
static void draw_titles(const tui *t, tui_rect r, const int *width, const int *shown,
                        tui_style style)
{
    tui_blank(r.y, r.x, r.w, style);
    int x = r.x + 1;
    for (int c = 0; c < C_COUNT; c++) {
        if (!shown[c])
            continue;
        char title[32];
        int sorted = sort_column[t->sort] == (enum col)c;
        snprintf(title, sizeof title, "%s%s", columns[c].title,
                 !sorted          ? ""
                 : c == C_NAME ? tui_sym("\u25b2", "^")
                                  : tui_sym("\u25bc", "v"));
        int tw = tui_text_width(title);
        tui_text(r.y, columns[c].right && tw < width[c] ? x + width[c] - tw : x, width[c],
                 sorted ? TS_ACCENT : style, title);
        x += width[c] + 1;
    }
}

void tui_table_draw(tui *t, tui_rect r, int focused)
{
    if (r.h < 1)
        return;
    int n = bd_ws_nlayers(t->ws);
    if (t->sel >= n)
        t->sel = n - 1;
    if (t->sel < 0)
        t->sel = 0;
    int *order = malloc((size_t)n * sizeof *order + 1);
    if (!order) {
        tui_text(r.y, r.x, r.w, TS_ERROR, "out of memory");
        return;
    }
    table_order(t, order);
    int sel_row = row_of(order, n, t->sel);

    /* Column widths: the name as wide as the longest, then drop columns
     * until the row fits. */
    int width[C_COUNT], shown[C_COUNT];
    int name_w = 8;
    for (int i = 0; i < n; i++) {
        int w = tui_text_width(bd_ws_layer_at(t->ws, i)->layer.name);
        name_w = w > name_w ? w : name_w;
    }
    name_w = name_w > 32 ? 32 : name_w;
    int total = 1;
    for (int c = 0; c < C_COUNT; c++) {
        width[c] = c == C_NAME ? name_w : columns[c].width;
        shown[c] = 1;
        total += width[c] + 1;
    }
    for (int rank = 1; total > r.w && rank <= DROP_RANKS; rank++)
        for (int c = 0; c < C_COUNT; c++)
            if (columns[c].drop == rank && shown[c]) {
                shown[c] = 0;
                total -= width[c] + 1;
            }
    if (total > r.w) /* what is left of the row goes to the name */
        width[C_NAME] -= total - r.w < width[C_NAME] - 4 ? total - r.w : width[C_NAME] - 4;

    int rows = r.h - 1;
    if (sel_row < t->top)
        t->top = sel_row;
    if (rows > 0 && sel_row >= t->top + rows)
        t->top = sel_row - rows + 1;
    if (t->top > n - rows)
        t->top = n - rows > 0 ? n - rows : 0;

    draw_titles(t, r, width, shown, focused ? TS_FOCUS : TS_TITLE);
    int x = r.x + 1;
    for (int c = 0; c < C_COUNT; c++)
        x += shown[c] ? width[c] + 1 : 0;
    if ((t->top > 0 || t->top + rows < n) && r.x + r.w - x > 12)
        tui_textf(r.y, r.x + r.w - 12, 12, TS_DIM, "%d-%d of %d", t->top + 1,
                  t->top + rows < n ? t->top + rows : n, n);

    for (int row = t->top; row < n && row < t->top + rows; row++) {
        int i = order[row];
        const bd_ws_layer *l = bd_ws_layer_at(t->ws, i);
        int y = r.y + 1 + row - t->top;
        tui_style st = row_style(l, i == t->sel);
        tui_blank(y, r.x, r.w, i == t->sel ? TS_SELECT : TS_NORMAL);
        x = r.x + 1;
        for (int c = 0; c < C_COUNT; c++) {
            if (!shown[c])
                continue;
            char buf[128];
            cell(t, i, (enum col)c, buf, sizeof buf);
            int tw = tui_text_width(buf);
            int at = columns[c].right && tw < width[c] ? x + width[c] - tw : x;
            tui_text(y, at, width[c], st, buf);
            x += width[c] + 1;
        }
    }
    free(order);
}
