/* The layer table: one row per quantizable layer, the plan (d, k) next to
 * what the layer is now (bits per weight, stored size, error, state). */
#include <stdio.h>
#include <string.h>

#include "pq.h"
#include "tui.h"

enum col { C_NAME, C_OP, C_SHAPE, C_PARAMS, C_D, C_K, C_BITS, C_SIZE, C_ERR, C_STATE, C_COUNT };

/* Narrow terminals lose columns in `drop` order (0: never). */
static const struct column {
    const char *title;
    int width, right, drop;
} columns[C_COUNT] = {
    {"layer", 0, 0, 0},   {"op", 8, 0, 3},     {"weight", 16, 0, 1}, {"params", 7, 1, 2},
    {"d", 4, 1, 0},       {"k", 5, 1, 0},      {"bits/w", 6, 1, 4},  {"size KB", 8, 1, 5},
    {"rel err", 7, 1, 6}, {"state", 10, 0, 0},
};

static void cell(const tui *t, const bd_ws_layer *l, enum col c, char *buf, size_t cap)
{
    const bd_qlayer *q = &l->q;
    int coded = l->state != BD_STATE_FLOAT;
    int64_t params = bd_layer_params(&l->layer);
    /* '*': the plan differs from the codebook in use, so quantizing again
     * would change the layer. */
    const char *pending =
        coded && (q->format != l->format ||
                  (l->format == BD_FMT_PQ ? q->d != l->d || q->k != l->k
                                          : q->ints.bits != l->ints.bits ||
                                                q->ints.per_channel != l->ints.per_channel ||
                                                q->ints.symmetric != l->ints.symmetric))
            ? "*"
            : "";
    switch (c) {
    case C_NAME: snprintf(buf, cap, "%s", l->layer.name); break;
    case C_OP: bd_layer_kind(&l->layer, buf, cap); break;
    case C_SHAPE:
        bd_value_shape_str(&bd_ws_student(t->ws)->values[l->layer.weight], buf, cap);
        break;
    case C_PARAMS: snprintf(buf, cap, "%lld", (long long)params); break;
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
        snprintf(buf, cap, "%.3g", coded ? bd_qlayer_bits_per_weight(q) : 32.0);
        break;
    case C_SIZE:
        snprintf(buf, cap, "%.2f", (double)(coded ? bd_qlayer_bytes(q) : 4 * params) / 1024);
        break;
    case C_ERR:
        if (coded && q->rel_error >= 0)
            snprintf(buf, cap, "%.4f", q->rel_error);
        else
            snprintf(buf, cap, "-");
        break;
    default:
        snprintf(buf, cap, "%s",
                 !coded && !l->quantize ? "float skip" : bd_layer_state_name(l->state));
        break;
    }
}

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

void tui_table_draw(tui *t, tui_rect r, int focused)
{
    if (r.h < 1)
        return;
    int n = bd_ws_nlayers(t->ws);
    if (t->sel >= n)
        t->sel = n - 1;
    if (t->sel < 0)
        t->sel = 0;

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
    for (int rank = 1; total > r.w && rank <= 6; rank++)
        for (int c = 0; c < C_COUNT; c++)
            if (columns[c].drop == rank && shown[c]) {
                shown[c] = 0;
                total -= width[c] + 1;
            }
    if (total > r.w) /* what is left of the row goes to the name */
        width[C_NAME] -= total - r.w < width[C_NAME] - 4 ? total - r.w : width[C_NAME] - 4;

    int rows = r.h - 1;
    if (t->sel < t->top)
        t->top = t->sel;
    if (rows > 0 && t->sel >= t->top + rows)
        t->top = t->sel - rows + 1;
    if (t->top > n - rows)
        t->top = n - rows > 0 ? n - rows : 0;

    tui_style title = focused ? TS_FOCUS : TS_TITLE;
    tui_blank(r.y, r.x, r.w, title);
    int x = r.x + 1;
    for (int c = 0; c < C_COUNT; c++) {
        if (!shown[c])
            continue;
        int tw = tui_text_width(columns[c].title);
        tui_text(r.y, columns[c].right && tw < width[c] ? x + width[c] - tw : x, width[c], title,
                 columns[c].title);
        x += width[c] + 1;
    }
    if ((t->top > 0 || t->top + rows < n) && r.x + r.w - x > 12)
        tui_textf(r.y, r.x + r.w - 12, 12, TS_DIM, "%d-%d of %d", t->top + 1,
                  t->top + rows < n ? t->top + rows : n, n);

    for (int i = t->top; i < n && i < t->top + rows; i++) {
        const bd_ws_layer *l = bd_ws_layer_at(t->ws, i);
        int y = r.y + 1 + i - t->top;
        tui_style st = row_style(l, i == t->sel);
        tui_blank(y, r.x, r.w, i == t->sel ? TS_SELECT : TS_NORMAL);
        x = r.x + 1;
        for (int c = 0; c < C_COUNT; c++) {
            if (!shown[c])
                continue;
            char buf[128];
            cell(t, l, (enum col)c, buf, sizeof buf);
            int tw = tui_text_width(buf);
            int at = columns[c].right && tw < width[c] ? x + width[c] - tw : x;
            tui_text(y, at, width[c], st, buf);
            x += width[c] + 1;
        }
    }
}
