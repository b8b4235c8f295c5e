/* The BitPruning pane: what the run aims at, per layer a bar of its bit
 * length as it moves (from the workspace's copy of the latest report,
 * bd_ws_last_bitprune), with its input's when the run learns those too, the
 * mean bits, lambda and the size; after the run, each layer's rounded bits
 * from its codec and its input's from the quantizer in front of it; and the
 * epochs of both phases. */
#include <stdio.h>
#include <string.h>

#include "act_quant.h"
#include "tui.h"

enum { NAME_W = 22, VALUE_W = 7, ACT_W = 6 };

static void title(const bd_bitprune_options *o, const bd_bitprune_live *live, int n, int running,
                  char *buf, size_t cap)
{
    int epochs = o->train.epochs + o->finetune_epochs;
    if (running && live->nlayers > 0)
        snprintf(buf, cap, "bitprune: %s, step %lld/%lld, %d of %d epochs done",
                 live->phase ? "fine-tuning" : "learning", (long long)live->step,
                 (long long)live->steps, n, epochs);
    else if (running)
        snprintf(buf, cap, "bitprune: starting");
    else if (n < epochs)
        snprintf(buf, cap, "bitprune: stopped after %d of %d epochs (nothing changed)", n, epochs);
    else
        snprintf(buf, cap, "bitprune: done, %d epochs", n);
}

static void aim(const bd_bitprune_options *o, char *buf, size_t cap)
{
    char target[64];
    if (o->target_bits > 0)
        snprintf(target, sizeof target, "target %g bits", (double)o->target_bits);
    else if (o->target_mb > 0)
        snprintf(target, sizeof target, "target %g MiB", (double)o->target_mb);
    else
        snprintf(target, sizeof target, "lambda %g fixed", (double)o->lambda);
    char inputs[64] = "";
    int act_lo, act_hi;
    bd_bitprune_act_bits(o, &act_lo, &act_hi);
    if (o->activations)
        snprintf(inputs, sizeof inputs, "  inputs %d..%d", act_lo, act_hi);
    snprintf(buf, cap, "%s  cost %s  per %s  bits %d..%d%s  lr %g  seed %llu", target,
             o->cost == BD_BITS_OPS ? "ops" : "memory",
             o->granularity == BD_BITS_CHANNEL ? "channel" : "layer", o->min_bits, o->max_bits,
             inputs, (double)o->train.lr, (unsigned long long)o->train.seed);
}

/* One layer's bar: its live bit length while the run goes, its codec's
 * bits once the run put one there; with acts (the run learns its inputs'
 * too), the input's after it: live, or "a" and the bits of the quantizer
 * in front of the layer once the run is over. */
static void layer_row(const tui *t, tui_rect r, int y, const bd_ws_layer *l, double live,
                      const double *act_live, int running, int max_bits)
{
    char value[32], act[32] = "";
    double bits = live;
    tui_style s = TS_ACCENT;
    bd_act_grid grid;
    if (!running && l->state != BD_STATE_FLOAT && l->q.format == BD_FMT_INT) {
        bits = l->q.ints.bits;
        snprintf(value, sizeof value, "int%d", l->q.ints.bits);
        s = TS_OK;
        if (act_live && bd_act_quant_find(bd_ws_student(t->ws), l->layer.node, &grid))
            snprintf(act, sizeof act, "a%d", grid.bits);
    } else {
        snprintf(value, sizeof value, "%.2f", live);
        if (act_live)
            snprintf(act, sizeof act, "a%.2f", *act_live);
    }
    const int act_w = act_live ? ACT_W : 0;
    int w = r.w - 3 - NAME_W - VALUE_W - act_w;
    tui_textf(y, r.x + 1, NAME_W, TS_NORMAL, "%s", l->layer.name);
    if (w > 0)
        tui_meter(y, r.x + 2 + NAME_W, w, bits / max_bits, s);
    tui_textf(y, r.x + r.w - VALUE_W - act_w, VALUE_W, TS_NORMAL, "%*s", VALUE_W - 1, value);
    if (act_w)
        tui_textf(y, r.x + r.w - act_w, act_w, TS_NORMAL, "%*s", act_w - 1, act);
}

void tui_bitprune_draw(tui *t, tui_rect r, int focused)
{
    bd_bitprune_options o;
    bd_bitprune_live live;
    const bd_training_epoch *e = NULL;
    int n = 0, running = 0;
    char buf[512];
    if (!bd_ws_last_bitprune(t->ws, &o, &live, &e, &n, &running)) {
        tui_rule(r.y, r.x, r.w, focused ? TS_FOCUS : TS_TITLE, "bitprune");
        int y = r.y + 1;
        tui_pane_line(r, &y, TS_DIM, "no bitprune run yet: ':bitprune target_bits=4' learns the "
                                     "bit lengths, ':help bitprune' lists the options");
        return;
    }
    title(&o, &live, n, running, buf, sizeof buf);
    tui_rule(r.y, r.x, r.w, focused ? TS_FOCUS : TS_TITLE, buf);
    int y = r.y + 1;
    aim(&o, buf, sizeof buf);
    tui_pane_line(r, &y, TS_NORMAL, buf);
    if (live.nlayers > 0) {
        char mb[32];
        snprintf(buf, sizeof buf, "mean %.3f bits (ops %.3f)  lambda %.4g  size %s",
                 live.mean_bits, live.ops_bits, live.lambda, tui_mb(live.bytes, mb, sizeof mb));
        tui_pane_line(r, &y, TS_TITLE, buf);
    }
    const double unknown = o.act_max_bits ? o.act_max_bits : o.max_bits;
    for (int i = 0; i < bd_ws_nlayers(t->ws) && y < r.y + r.h; i++) {
        const bd_ws_layer *l = bd_ws_layer_at(t->ws, i);
        if (!l->quantize)
            continue;
        const int known = i < live.nlayers;
        const double *act = !o.activations ? NULL
                            : known && live.act_bits ? &live.act_bits[i]
                                                     : &unknown;
        layer_row(t, r, y++, l, known ? live.bits[i] : o.max_bits, act, running, o.max_bits);
    }
    tui_epoch_rows(r, &y, e, n);
}
