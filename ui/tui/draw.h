/* What every pane of the TUI draws with: clipped UTF-8 text, the UI's
 * colours (or mono attributes), bar charts and pixels drawn two to a cell.
 *
 * Each needs a fallback, chosen once from the terminal: wide glyphs only in
 * a UTF-8 locale, pixel colours only with 256 colours, and shades of one
 * character (Unicode or ASCII) otherwise, so a plain vt100 still shows the
 * images and codebooks. Everything draws on stdscr and clips to the
 * rectangle it is given, so a resize only means computing a new layout. */
#ifndef BD_TUI_DRAW_H
#define BD_TUI_DRAW_H

#define NCURSES_WIDECHAR 1
#include <curses.h>

#include "status.h"

typedef struct tui_rect {
    int y, x, h, w;
} tui_rect;

typedef enum tui_style {
    TS_NORMAL = 0,
    TS_HEADER, /* the header and the key line */
    TS_TITLE,  /* a pane's title row */
    TS_FOCUS,  /* the focused pane's title */
    TS_SELECT, /* the selected layer */
    TS_DIM,
    TS_OK, /* quantized, a correct prediction, a success */
    TS_TUNED,
    TS_WARN,
    TS_ERROR,
    TS_ACCENT, /* a command echoed in the log, the prompt */
    TS_COUNT
} tui_style;

/* Picks glyphs and colours for the terminal; after newterm. */
void tui_draw_init(void);
attr_t tui_style_attr(tui_style s);
/* utf8 where the terminal shows Unicode, else ascii. */
const char *tui_sym(const char *utf8, const char *ascii);

/* Draws s at (y, x) in at most maxw columns; returns the columns used.
 * Invalid bytes show as '?'. */
int tui_text(int y, int x, int maxw, tui_style s, const char *text);
int tui_textf(int y, int x, int maxw, tui_style s, const char *fmt, ...) BD_PRINTF(5, 6);
/* Blanks w columns from (y, x) in style s. */
void tui_blank(int y, int x, int w, tui_style s);
/* A rule of w columns with a title at its left. */
void tui_rule(int y, int x, int w, tui_style s, const char *title);
/* Columns that text takes on screen (wide characters count 2). */
int tui_text_width(const char *text);

/* A horizontal bar w columns long filled to frac in [0, 1]. */
void tui_meter(int y, int x, int w, double frac, tui_style s);
/* Vertical bars of v[0..n) resampled to r.w columns, scaled so lo is empty
 * and hi fills r.h rows. */
void tui_bars(tui_rect r, const double *v, int n, double lo, double hi, tui_style s);

/* A pixel: its colour, and for terminals without 256 colours a level
 * (0..255, drawn as a shade) and one of the 8 basic colours. `none` leaves
 * the terminal's background. */
typedef struct tui_pixel {
    unsigned char r, g, b, level;
    short basic;
    unsigned char none;
} tui_pixel;

tui_pixel tui_gray(unsigned char v);
tui_pixel tui_rgb(unsigned char r, unsigned char g, unsigned char b);
/* A diverging colour for v in [-1, 1]: blue below zero, red above, dark at 0. */
tui_pixel tui_signed(double v);

/* Draws w x h pixels (row-major) at cell (y, x), two pixel rows per cell
 * row, clipped to clip. */
void tui_pixels(int y, int x, const tui_pixel *px, int w, int h, tui_rect clip);

#endif
