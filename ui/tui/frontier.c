/* The frontier pane: every evaluation of the student since the model was
 * loaded (bd_ws_points) as a point of stored size against top-1, with the
 * teacher's, so the trade-off the user explored is one picture. Size runs
 * on a log scale: the points of interest are ratios apart. The points no
 * other beats on both size and top-1 (the frontier) are drawn apart and
 * listed below the plot, smallest first. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "tui.h"

enum { AXIS_W = 7, LIST_MAX = 8 };

/* Whether point i is beaten: another as small with a higher top-1, or
 * smaller with as high a one. */
static int beaten(const bd_ws_point *p, int n, int i)
{
    for (int j = 0; j < n; j++)
        if (j != i && p[j].bytes <= p[i].bytes && p[j].acc.top1 >= p[i].acc.top1 &&
            (p[j].bytes < p[i].bytes || p[j].acc.top1 > p[i].acc.top1))
            return 1;
    return 0;
}

typedef struct scale {
    double x0, x1, y0, y1; /* log10 bytes, top-1 */
} scale;

static void extend(scale *s, double bytes, double top1)
{
    double x = log10(bytes > 1 ? bytes : 1);
    s->x0 = fmin(s->x0, x);
    s->x1 = fmax(s->x1, x);
    s->y0 = fmin(s->y0, top1);
    s->y1 = fmax(s->y1, top1);
}

/* The cell of (bytes, top1) in plot area a. */
static void cell(const scale *s, tui_rect a, double bytes, double top1, int *y, int *x)
{
    double fx = (log10(bytes > 1 ? bytes : 1) - s->x0) / (s->x1 - s->x0);
    double fy = (top1 - s->y0) / (s->y1 - s->y0);
    *x = a.x + (int)lround(fx * (a.w - 1));
    *y = a.y + a.h - 1 - (int)lround(fy * (a.h - 1));
}

static void axes(const scale *s, tui_rect a)
{
    char mb[32];
    for (int y = a.y; y < a.y + a.h; y++)
        tui_text(y, a.x - 1, 1, TS_DIM, tui_sym("│", "|"));
    tui_textf(a.y, a.x - AXIS_W, AXIS_W - 1, TS_DIM, "%5.1f%%", s->y1);
    tui_textf(a.y + a.h - 1, a.x - AXIS_W, AXIS_W - 1, TS_DIM, "%5.1f%%", s->y0);
    tui_text(a.y + a.h, a.x, a.w, TS_DIM, tui_mb((int64_t)pow(10, s->x0), mb, sizeof mb));
    const char *hi = tui_mb((int64_t)pow(10, s->x1), mb, sizeof mb);
    int w = tui_text_width(hi);
    tui_text(a.y + a.h, a.x + a.w - w, w, TS_DIM, hi);
}

void tui_frontier_draw(tui *t, tui_rect r, int focused)
{
    int n;
    const bd_ws_point *p = bd_ws_points(t->ws, &n);
    bd_accuracy teacher;
    bd_ws_last_eval(t->ws, &teacher, NULL);
    bd_model_size size;
    bd_ws_size(t->ws, &size);
    char buf[256], mb[32];
    snprintf(buf, sizeof buf, "frontier: top-1 against stored size, %d evaluation%s", n,
             n == 1 ? "" : "s");
    tui_rule(r.y, r.x, r.w, focused ? TS_FOCUS : TS_TITLE, buf);
    int y = r.y + 1;
    if (n == 0) {
        tui_pane_line(r, &y, TS_DIM, "no evaluation yet: each 'e' (or ':eval') adds the student "
                                     "at its size; F shows the layer again");
        return;
    }
    int *front = malloc((size_t)n * sizeof *front), nfront = 0;
    if (!front)
        return;
    scale s = {INFINITY, -INFINITY, INFINITY, -INFINITY};
    for (int i = 0; i < n; i++) {
        extend(&s, (double)p[i].bytes, p[i].acc.top1);
        if (!beaten(p, n, i))
            front[nfront++] = i;
    }
    if (teacher.valid)
        extend(&s, (double)size.fp32_bytes, teacher.top1);
    /* a single size or top-1 still needs a span to place points in */
    if (s.x1 - s.x0 < 0.05) {
        s.x0 -= 0.05;
        s.x1 += 0.05;
    }
    if (s.y1 - s.y0 < 0.5) {
        s.y0 -= 0.5;
        s.y1 += 0.5;
    }
    int listed = nfront < LIST_MAX ? nfront : LIST_MAX;
    tui_rect a = {y, r.x + 1 + AXIS_W, r.h - (y - r.y) - listed - 2, r.w - 2 - AXIS_W};
    if (a.h >= 3 && a.w >= 10) {
        axes(&s, a);
        int cy, cx;
        for (int i = 0; i < n; i++) {
            cell(&s, a, (double)p[i].bytes, p[i].acc.top1, &cy, &cx);
            tui_text(cy, cx, 1, TS_DIM, tui_sym("•", "."));
        }
        for (int j = 0; j < nfront; j++) {
            cell(&s, a, (double)p[front[j]].bytes, p[front[j]].acc.top1, &cy, &cx);
            tui_text(cy, cx, 1, TS_OK, tui_sym("◆", "*"));
        }
        if (teacher.valid) {
            cell(&s, a, (double)size.fp32_bytes, teacher.top1, &cy, &cx);
            tui_text(cy, cx, 1, TS_ACCENT, "T");
        }
        y = a.y + a.h + 1;
    }
    /* the frontier, smallest first (points are kept oldest first) */
    for (int j = 1; j < nfront; j++)
        for (int i = j; i > 0 && p[front[i]].bytes < p[front[i - 1]].bytes; i--) {
            int tmp = front[i];
            front[i] = front[i - 1];
            front[i - 1] = tmp;
        }
    for (int j = 0; j < listed; j++) {
        const bd_ws_point *q = &p[front[j]];
        snprintf(buf, sizeof buf, "%s %10s  %7.2fx  top-1 %6.2f%%  %s", tui_sym("◆", "*"),
                 tui_mb(q->bytes, mb, sizeof mb),
                 q->bytes > 0 ? (double)size.fp32_bytes / (double)q->bytes : 0.0, q->acc.top1,
                 q->label);
        tui_pane_line(r, &y, TS_NORMAL, buf);
    }
    if (teacher.valid) {
        snprintf(buf, sizeof buf, "T %10s  %7.2fx  top-1 %6.2f%%  the teacher",
                 tui_mb(size.fp32_bytes, mb, sizeof mb), 1.0, teacher.top1);
        tui_pane_line(r, &y, TS_DIM, buf);
    }
    free(front);
}
