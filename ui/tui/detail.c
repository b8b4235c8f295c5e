/* The detail pane: the selected layer's plan and, once it is quantized,
 * how EM converged, how evenly the codes are used, and the codebook itself
 * (each centroid a small heat map: a 3x3 kernel when d = 9). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pq.h"
#include "tui.h"

typedef struct usage {
    int64_t count;
    int code;
} usage;

static int by_count_desc(const void *a, const void *b)
{
    const usage *x = a, *y = b;
    if (x->count != y->count)
        return x->count < y->count ? 1 : -1;
    return x->code - y->code;
}

/* How many subvectors use each code, most used first; NULL if out of memory. */
static usage *code_usage(const bd_qlayer *q)
{
    usage *u = calloc((size_t)q->k, sizeof *u);
    if (!u)
        return NULL;
    for (int c = 0; c < q->k; c++)
        u[c].code = c;
    for (int64_t i = 0; i < q->n; i++)
        if (q->codes[i] >= 0 && q->codes[i] < q->k)
            u[q->codes[i]].count++;
    qsort(u, (size_t)q->k, sizeof *u, by_count_desc);
    return u;
}

static int text_line(tui_rect r, int *y, tui_style s, const char *text)
{
    if (*y >= r.y + r.h)
        return 0;
    tui_text((*y)++, r.x + 1, r.w - 1, s, text);
    return 1;
}

static void divisors_line(const bd_ws_layer *l, char *buf, size_t cap)
{
    size_t o = (size_t)snprintf(buf, cap, "d can be:");
    for (int64_t d = 1; d <= l->layer.row_len && o + 16 < cap; d++)
        if (l->layer.row_len % d == 0)
            o += (size_t)snprintf(buf + o, cap - o, d == l->d ? " [%lld]" : " %lld", (long long)d);
}

static void em_plot(const bd_qlayer *q, tui_rect r, int *y, int h)
{
    double lo = q->history[0], hi = q->history[0];
    for (int i = 1; i < q->iters; i++) {
        lo = q->history[i] < lo ? q->history[i] : lo;
        hi = q->history[i] > hi ? q->history[i] : hi;
    }
    char title[160];
    snprintf(title, sizeof title, "EM objective %.4g %s %.4g over %d iteration%s", q->history[0],
             tui_sym("\u2192", "->"), q->history[q->iters - 1], q->iters, q->iters == 1 ? "" : "s");
    text_line(r, y, TS_TITLE, title);
    /* The floor sits below the minimum so the last bars still show. */
    tui_rect b = {*y, r.x + 1, h, r.w - 2};
    tui_bars(b, q->history, q->iters, hi > lo ? lo - 0.15 * (hi - lo) : 0, hi, TS_ACCENT);
    *y += h;
}

static void usage_plot(const bd_qlayer *q, const usage *u, tui_rect r, int *y, int h)
{
    double *v = malloc((size_t)q->k * sizeof *v);
    if (!v)
        return;
    int unused = 0;
    for (int c = 0; c < q->k; c++) {
        v[c] = (double)u[c].count;
        unused += u[c].count == 0;
    }
    char title[160];
    snprintf(title, sizeof title, "code usage, most used first: %lld %s %lld, %d of %d unused",
             (long long)u[0].count, tui_sym("\u2026", "..."), (long long)u[q->k - 1].count, unused,
             q->k);
    text_line(r, y, TS_TITLE, title);
    tui_bars((tui_rect){*y, r.x + 1, h, r.w - 2}, v, q->k, 0, v[0], TS_OK);
    *y += h;
    free(v);
}

/* Centroids as tiles of th x tw pixels: square when d is, else a strip. */
static void codebook(tui *t, const bd_qlayer *q, const usage *u, tui_rect r, int y, int focused)
{
    int s = (int)lround(sqrt((double)q->d));
    int th = s * s == q->d && s > 1 ? s : 1, tw = q->d / th;
    int cell_h = (th + 2) / 2; /* a blank pixel row under each tile */
    int per_row = (r.w - 1) / (tw + 1), nrows = (r.y + r.h - y - 1) / cell_h;
    if (tw > r.w - 2 || per_row < 1 || nrows < 1)
        return;
    int page = per_row * nrows;
    t->codebook_page = page;
    if (t->codebook_first >= q->k)
        t->codebook_first = (q->k - 1) / page * page;
    float maxabs = 0;
    for (int64_t i = 0; i < (int64_t)q->k * q->d; i++)
        maxabs = fabsf(q->centroids[i]) > maxabs ? fabsf(q->centroids[i]) : maxabs;
    int last = t->codebook_first + page < q->k ? t->codebook_first + page : q->k;
    char title[200];
    snprintf(title, sizeof title, "codebook %dx%d, most used first: %d-%d of %d%s", th, tw,
             t->codebook_first + 1, last, q->k,
             page >= q->k ? ""
             : focused    ? ", Left/Right pages"
                          : ", Tab here to page");
    text_line(r, &y, TS_TITLE, title);
    tui_pixel *px = malloc((size_t)((th + 1) * tw) * sizeof *px);
    if (!px)
        return;
    for (int i = t->codebook_first; i < last; i++) {
        int slot = i - t->codebook_first;
        const float *c = q->centroids + (int64_t)u[i].code * q->d;
        for (int p = 0; p < th * tw; p++)
            px[p] = tui_signed(maxabs > 0 ? c[p] / maxabs : 0);
        for (int p = th * tw; p < (th + 1) * tw; p++)
            px[p].none = 1;
        tui_pixels(y + slot / per_row * cell_h, r.x + 1 + slot % per_row * (tw + 1), px, tw, th + 1,
                   r);
    }
    free(px);
}

void tui_detail_draw(tui *t, tui_rect r, int focused)
{
    int n = bd_ws_nlayers(t->ws);
    if (n == 0 || r.h < 1)
        return;
    const bd_ws_layer *l = bd_ws_layer_at(t->ws, t->sel < n ? t->sel : n - 1);
    const bd_layer *ly = &l->layer;
    char buf[512], kind[32], shape[64];
    snprintf(buf, sizeof buf, "detail: %s", ly->name);
    tui_rule(r.y, r.x, r.w, focused ? TS_FOCUS : TS_TITLE, buf);
    int y = r.y + 1;

    bd_value_shape_str(&bd_ws_student(t->ws)->values[ly->weight], shape, sizeof shape);
    int64_t m = ly->row_len / (l->d > 0 ? l->d : 1);
    snprintf(buf, sizeof buf, "%s %s, %lld rows of %lld: %lld subvectors of d=%d",
             bd_layer_kind(ly, kind, sizeof kind), shape, (long long)ly->rows,
             (long long)ly->row_len, (long long)(ly->rows * m), l->d);
    text_line(r, &y, TS_NORMAL, buf);
    int64_t plan_bytes = l->format == BD_FMT_INT
                             ? bd_packed_bytes(ly->rows * ly->row_len, l->ints.bits) +
                                   2 * (l->ints.per_channel ? ly->rows : 1) *
                                       (l->ints.symmetric ? 1 : 2)
                             : bd_packed_bytes(ly->rows * m, bd_code_bits(l->k)) +
                                   bd_pq_codebook_bytes(l->k, l->d);
    bd_layer_plan p = bd_ws_plan_of(l);
    p.quantize = 1;
    char plan[96];
    bd_plan_describe(&p, plan, sizeof plan);
    char bits[32];
    snprintf(buf, sizeof buf, "plan: %s (k at most %d): %s bits/w, %.2f KB; %s", plan,
             bd_pq_max_k(ly->rows * m), bd_bits_str(bd_plan_bits_per_weight(&p), bits, sizeof bits),
             (double)plan_bytes / 1024,
             l->quantize ? "taken by 'quantize all'" : "skipped by 'quantize all' (x)");
    text_line(r, &y, TS_NORMAL, buf);
    divisors_line(l, buf, sizeof buf);
    text_line(r, &y, TS_DIM, buf);
    if (l->note[0])
        text_line(r, &y, TS_WARN, l->note);

    const bd_qlayer *q = &l->q;
    if (l->state == BD_STATE_FLOAT || q->k <= 0) {
        text_line(r, &y, TS_DIM, "float: Enter quantizes it with this plan");
        return;
    }
    char other[64] = "";
    if (q->other_error >= 0)
        snprintf(other, sizeof other, " (the other objective: %.4f)", q->other_error);
    char repaired[48] = "";
    if (q->empty_repaired)
        snprintf(repaired, sizeof repaired, ", %d empty clusters split", q->empty_repaired);
    char format[64];
    bd_qlayer_describe(q, format, sizeof format);
    snprintf(buf, sizeof buf, "%s: %s, %s objective, rel error %.4f%s, %.2f s%s",
             bd_layer_state_name(l->state), format, bd_objective_name(q->objective), q->rel_error,
             other, q->seconds, repaired);
    text_line(r, &y, TS_OK, buf);

    /* What is left: the EM curve, the usage histogram, the codebook. */
    int left = r.y + r.h - y;
    int plot_h = left >= 14 ? 4 : left >= 8 ? 2 : 0;
    if (plot_h && q->history && q->iters > 0) {
        em_plot(q, r, &y, plot_h);
        left = r.y + r.h - y;
    }
    usage *u = code_usage(q);
    if (!u)
        return;
    int hist_h = left >= 9 ? 3 : left >= 3 ? 1 : 0;
    if (hist_h)
        usage_plot(q, u, r, &y, hist_h);
    if (q->format == BD_FMT_PQ)
        codebook(t, q, u, r, y, focused);
    free(u);
}
