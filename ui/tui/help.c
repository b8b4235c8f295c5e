/* The help: every key binding (from the table the keys are dispatched by,
 * so none can be missing) and where the command language is described. */
#include <stdio.h>

#include "tui.h"

static const char *const notes[] = {
    "",
    "The table shows each layer's plan (d, k; '*' when it differs from the codebook in use)",
    "and what the layer is now: bits per weight, stored size, relative output error, state.",
    "top1 drop: the top-1 points the model loses with that layer alone quantized by its plan,",
    "once measured (S); '?' after it: measured with another plan, or before training.",
    "The marked title is the column the table is sorted by ('<' '>').",
    "Everything here is also a command: type ':help' for the command language.",
};

int tui_help_draw(tui *t, tui_rect r)
{
    int n;
    const tui_binding *b = tui_bindings(&n);
    int lines = n + (int)(sizeof notes / sizeof notes[0]);
    int keys_w = 0;
    for (int i = 0; i < n; i++) {
        int w = tui_text_width(b[i].keys);
        keys_w = w > keys_w ? w : keys_w;
    }
    for (int y = 0; y < r.h; y++)
        tui_blank(r.y + y, r.x, r.w, TS_NORMAL);
    tui_rule(r.y, r.x, r.w, TS_FOCUS, "help: keys");
    for (int i = t->help_top; i < lines; i++) {
        int y = r.y + 1 + i - t->help_top;
        if (y >= r.y + r.h)
            break;
        if (i < n) {
            tui_text(y, r.x + 2, keys_w, TS_ACCENT, b[i].keys);
            tui_text(y, r.x + 4 + keys_w, r.w - keys_w - 5, TS_NORMAL, b[i].what);
        } else {
            tui_text(y, r.x + 2, r.w - 3, TS_DIM, notes[i - n]);
        }
    }
    return lines;
}
