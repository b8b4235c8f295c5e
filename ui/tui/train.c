/* The training pane: the run in progress (epoch, step, loss, ETA, from the
 * progress reports), its settings (noise kind and rate among them), the
 * loss as the steps go, and per-epoch curves and rows of loss and top-1
 * from the workspace's record of the run (bd_ws_last_training). */
#include <stdio.h>
#include <string.h>

#include "quant_noise.h"
#include "tui.h"

void tui_train_observe(tui *t)
{
    tui_progress p;
    tui_worker_progress(&t->worker, &p);
    if (!p.busy || strcmp(p.stage, "train") != 0)
        return;
    tui_train_view *v = &t->train;
    if (v->seen && p.done == v->last.done && p.seconds >= v->last.seconds)
        return; /* the report drawn last frame */
    if (!v->seen || p.done < v->last.done || p.seconds < v->last.seconds) { /* a new run */
        v->nloss = 0;
        v->stride = 1;
        v->pending = 0;
        v->pending_n = 0;
        v->first_done = p.done;
        v->first_seconds = p.seconds;
    }
    v->seen = 1;
    /* The loss as the frames see it (ten a second at most), averaged over
     * `stride` frames; when the buffer fills, neighbours are averaged and
     * the stride doubles, so the curve always spans the whole run. */
    v->pending += p.metric;
    if (++v->pending_n >= v->stride) {
        if (v->nloss == TUI_TRAIN_SAMPLES) {
            for (int i = 0; i < TUI_TRAIN_SAMPLES / 2; i++)
                v->loss[i] = (v->loss[2 * i] + v->loss[2 * i + 1]) / 2;
            v->nloss = TUI_TRAIN_SAMPLES / 2;
            v->stride *= 2;
        }
        v->loss[v->nloss++] = v->pending / v->pending_n;
        v->pending = 0;
        v->pending_n = 0;
    }
    v->last = p;
}

static void duration(double s, char *buf, size_t cap)
{
    long v = (long)(s + 0.5);
    if (v >= 3600)
        snprintf(buf, cap, "%ldh%02ldm", v / 3600, v / 60 % 60);
    else if (v >= 60)
        snprintf(buf, cap, "%ldm%02lds", v / 60, v % 60);
    else
        snprintf(buf, cap, "%lds", v);
}

int tui_pane_line(tui_rect r, int *y, tui_style s, const char *text)
{
    if (*y >= r.y + r.h)
        return 0;
    tui_text((*y)++, r.x + 1, r.w - 1, s, text);
    return 1;
}

/* Bars of v[0..n), `per` columns each (fewer when they do not fit). */
static void curve(tui_rect r, int *y, int h, const double *v, int n, double lo, double hi,
                  tui_style s)
{
    if (n <= 0 || *y + h > r.y + r.h)
        return;
    int w = r.w - 2, per = n > 0 && w / n > 6 ? 6 : 1;
    if (n * per < w)
        w = n * per;
    tui_bars((tui_rect){*y, r.x + 1, h, w}, v, n, lo, hi, s);
    *y += h;
}

static void pct(double v, char *buf, size_t cap)
{
    if (v < 0)
        snprintf(buf, cap, "-");
    else
        snprintf(buf, cap, "%.2f%%", v);
}

void tui_train_draw(tui *t, tui_rect r, int focused)
{
    bd_training_options o;
    const bd_training_epoch *e = NULL;
    int n = 0, running = 0;
    char buf[512];
    if (!bd_ws_last_training(t->ws, &o, &e, &n, &running)) {
        tui_rule(r.y, r.x, r.w, focused ? TS_FOCUS : TS_TITLE, "training");
        int y = r.y + 1;
        tui_pane_line(r, &y, TS_DIM, "no training run yet: 't' trains the model's weights, "
                            "':help train' lists the options");
        return;
    }
    if (running)
        snprintf(buf, sizeof buf, "training: running, %d of %d epochs done", n, o.epochs);
    else if (n < o.epochs)
        snprintf(buf, sizeof buf, "training: stopped after %d of %d epochs (nothing changed)", n,
                 o.epochs);
    else
        snprintf(buf, sizeof buf, "training: %d of %d epochs done", n, o.epochs);
    tui_rule(r.y, r.x, r.w, focused ? TS_FOCUS : TS_TITLE, buf);
    int y = r.y + 1;

    const tui_train_view *v = &t->train;
    if (running && v->seen) {
        char eta[32] = "-";
        int64_t steps = v->last.done - v->first_done;
        double spent = v->last.seconds - v->first_seconds;
        if (steps > 0 && v->last.total > 0)
            duration(spent / (double)steps * (double)(v->last.total - v->last.done), eta,
                     sizeof eta);
        snprintf(buf, sizeof buf, "%s  ETA %s", v->last.message, eta);
        tui_pane_line(r, &y, TS_ACCENT, buf);
    }
    char noise[96], augment[64], steps[32] = "one pass";
    bd_noise_describe(&o.noise, noise, sizeof noise);
    bd_augment_describe(&o.augment, augment, sizeof augment);
    if (o.steps > 0)
        snprintf(steps, sizeof steps, "%lld steps", (long long)o.steps);
    snprintf(buf, sizeof buf, "noise %s  augment %s  epochs of %s  batch %d  lr %g  seed %llu",
             noise, augment, steps, o.batch, (double)o.lr, (unsigned long long)o.seed);
    tui_pane_line(r, &y, TS_NORMAL, buf);

    int left = r.y + r.h - y;
    int h = left >= 16 ? 3 : left >= 10 ? 2 : left >= 7 ? 1 : 0;
    if (h && v->nloss > 0) {
        double hi = 0;
        for (int i = 0; i < v->nloss; i++)
            hi = v->loss[i] > hi ? v->loss[i] : hi;
        snprintf(buf, sizeof buf, "loss by step %.4f %s %.4f", v->loss[0],
                 tui_sym("\u2192", "->"), v->loss[v->nloss - 1]);
        if (tui_pane_line(r, &y, TS_TITLE, buf))
            curve(r, &y, h, v->loss, v->nloss, 0, hi, TS_ACCENT);
    }
    if (h && n > 0) {
        double loss[64], top1[64];
        int first = n > 64 ? n - 64 : 0, m = n - first, eval = e[n - 1].top1 >= 0;
        double hi = 0;
        for (int i = 0; i < m; i++) {
            loss[i] = e[first + i].loss;
            top1[i] = eval ? e[first + i].top1 : e[first + i].train_top1;
            hi = loss[i] > hi ? loss[i] : hi;
        }
        snprintf(buf, sizeof buf, "loss by epoch %.4f %s %.4f", loss[0], tui_sym("\u2192", "->"),
                 loss[m - 1]);
        if (tui_pane_line(r, &y, TS_TITLE, buf))
            curve(r, &y, h, loss, m, 0, hi, TS_WARN);
        snprintf(buf, sizeof buf, "%s top-1 by epoch %.2f%% %s %.2f%%", eval ? "eval" : "train",
                 top1[0], tui_sym("\u2192", "->"), top1[m - 1]);
        if (tui_pane_line(r, &y, TS_TITLE, buf))
            curve(r, &y, h, top1, m, 0, 100, TS_OK);
    }
    tui_epoch_rows(r, &y, e, n);
}

void tui_epoch_rows(tui_rect r, int *y, const bd_training_epoch *e, int n)
{
    if (n == 0)
        return;
    tui_pane_line(r, y, TS_TITLE, "epoch      loss   train    eval   quant        lr        s");
    /* the last epochs that fit */
    int rows = r.y + r.h - *y, from = n > rows ? n - rows : 0;
    for (int i = from; i < n; i++) {
        char tr[16], ev[16], qu[16], buf[128];
        pct(e[i].train_top1, tr, sizeof tr);
        pct(e[i].top1, ev, sizeof ev);
        pct(e[i].quant_top1, qu, sizeof qu);
        snprintf(buf, sizeof buf, "%5d %9.4f %7s %7s %7s %9.4g %8.1f", e[i].epoch, e[i].loss, tr,
                 ev, qu, e[i].lr, e[i].seconds);
        tui_pane_line(r, y, TS_NORMAL, buf);
    }
}
