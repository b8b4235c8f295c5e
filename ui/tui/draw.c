#include "draw.h"

#include <langinfo.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <term.h>
#include <wchar.h>

static struct {
    int utf8;
    int colors;     /* at least the 8 basic ones */
    int c256;       /* enough for pixels: a 256-colour palette or direct RGB */
    int direct;     /* colour numbers are 0xRRGGBB */
    int default_bg; /* -1 (the terminal's own) when use_default_colors works */
    attr_t style[TS_COUNT];
} term;

static int pair_of(int fg, int bg)
{
    int p = alloc_pair(fg, bg);
    return p < 0 ? 0 : p;
}

void tui_draw_init(void)
{
    term.utf8 = strcmp(nl_langinfo(CODESET), "UTF-8") == 0;
    term.default_bg = -1;
    attr_t *st = term.style;
    if (has_colors() && start_color() == OK) {
        term.colors = 1;
        if (use_default_colors() != OK)
            term.default_bg = COLOR_BLACK;
        int fg = term.default_bg == -1 ? -1 : COLOR_WHITE, bg = term.default_bg;
        term.direct = tigetflag("RGB") > 0 && COLORS >= 0x1000000;
        term.c256 = COLORS >= 256;
        /* UI pairs first, so they get small numbers that fit in an attr_t. */
        st[TS_HEADER] = COLOR_PAIR(pair_of(COLOR_WHITE, COLOR_BLUE)) | A_BOLD;
        st[TS_TITLE] = COLOR_PAIR(pair_of(COLOR_CYAN, bg));
        st[TS_FOCUS] = COLOR_PAIR(pair_of(COLOR_YELLOW, bg)) | A_BOLD;
        st[TS_SELECT] = COLOR_PAIR(pair_of(COLOR_BLACK, COLOR_CYAN));
        st[TS_DIM] = COLOR_PAIR(pair_of(fg, bg)) | A_DIM;
        st[TS_OK] = COLOR_PAIR(pair_of(COLOR_GREEN, bg));
        st[TS_TUNED] = COLOR_PAIR(pair_of(COLOR_MAGENTA, bg)) | A_BOLD;
        st[TS_WARN] = COLOR_PAIR(pair_of(COLOR_YELLOW, bg));
        st[TS_ERROR] = COLOR_PAIR(pair_of(COLOR_RED, bg)) | A_BOLD;
        st[TS_ACCENT] = COLOR_PAIR(pair_of(COLOR_CYAN, bg)) | A_BOLD;
    } else {
        st[TS_HEADER] = A_REVERSE;
        st[TS_TITLE] = A_BOLD;
        st[TS_FOCUS] = A_BOLD | A_UNDERLINE;
        st[TS_SELECT] = A_REVERSE;
        st[TS_DIM] = A_DIM;
        st[TS_OK] = A_BOLD;
        st[TS_TUNED] = A_BOLD;
        st[TS_WARN] = A_BOLD;
        st[TS_ERROR] = A_BOLD | A_UNDERLINE;
        st[TS_ACCENT] = A_BOLD;
    }
}

attr_t tui_style_attr(tui_style s) { return term.style[s]; }

const char *tui_sym(const char *utf8, const char *ascii) { return term.utf8 ? utf8 : ascii; }

/* One wide character; the pair goes through setcchar's extended argument,
 * since pixel pairs can be numbered past what an attr_t holds. */
static void put_wch(int y, int x, wchar_t wc, attr_t a, int pair)
{
    wchar_t s[2] = {wc, L'\0'};
    cchar_t cc;
    setcchar(&cc, s, a & ~A_COLOR, 0, &pair);
    mvadd_wch(y, x, &cc);
}

static void put_styled(int y, int x, wchar_t wc, tui_style s)
{
    attr_t a = term.style[s];
    put_wch(y, x, wc, a, (int)PAIR_NUMBER(a));
}

static int decode(const char *text, int maxw, wchar_t *buf, int cap, int *cols)
{
    mbstate_t st;
    memset(&st, 0, sizeof st);
    size_t left = strlen(text);
    int n = 0, used = 0;
    while (left && n < cap) {
        wchar_t wc;
        size_t len = mbrtowc(&wc, text, left, &st);
        if (len == 0)
            break;
        if (len == (size_t)-1 || len == (size_t)-2) {
            wc = L'?';
            len = 1;
            memset(&st, 0, sizeof st);
        }
        int cw = wcwidth(wc);
        if (cw < 0) { /* control characters would move the cursor */
            wc = L'?';
            cw = 1;
        }
        if (used + cw > maxw)
            break;
        buf[n++] = wc;
        used += cw;
        text += len;
        left -= len;
    }
    *cols = used;
    return n;
}

int tui_text_width(const char *text)
{
    wchar_t buf[1024];
    int cols;
    decode(text, 1 << 20, buf, 1024, &cols);
    return cols;
}

int tui_text(int y, int x, int maxw, tui_style s, const char *text)
{
    if (y < 0 || y >= LINES || x < 0 || x >= COLS || maxw <= 0)
        return 0;
    if (maxw > COLS - x)
        maxw = COLS - x;
    wchar_t buf[1024];
    int cols, n = decode(text, maxw, buf, 1024, &cols);
    attrset(term.style[s]);
    mvaddnwstr(y, x, buf, n);
    attrset(A_NORMAL);
    return cols;
}

int tui_textf(int y, int x, int maxw, tui_style s, const char *fmt, ...)
{
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    return tui_text(y, x, maxw, s, buf);
}

void tui_blank(int y, int x, int w, tui_style s)
{
    if (y < 0 || y >= LINES || x < 0 || x >= COLS || w <= 0)
        return;
    if (w > COLS - x)
        w = COLS - x;
    mvhline(y, x, ' ' | term.style[s], w);
}

void tui_rule(int y, int x, int w, tui_style s, const char *title)
{
    if (y < 0 || y >= LINES || w <= 0)
        return;
    if (w > COLS - x)
        w = COLS - x;
    mvhline(y, x, ACS_HLINE | term.style[s], w);
    if (title && w > 4) {
        int used = tui_text(y, x + 1, w - 2, s, " ");
        used += tui_text(y, x + 1 + used, w - 2 - used, s, title);
        tui_text(y, x + 1 + used, w - 2 - used, s, " ");
    }
}

void tui_meter(int y, int x, int w, double frac, tui_style s)
{
    if (frac < 0 || frac != frac)
        frac = 0;
    if (frac > 1)
        frac = 1;
    int eighths = (int)lround(frac * w * 8);
    static const wchar_t partial[] = L" \u258f\u258e\u258d\u258c\u258b\u258a\u2589";
    for (int i = 0; i < w && x + i < COLS; i++) {
        int e = eighths - 8 * i;
        wchar_t wc;
        if (term.utf8)
            wc = e >= 8 ? L'\u2588' : e > 0 ? partial[e] : L'\u2591';
        else
            wc = e >= 4 ? L'#' : L'-';
        put_styled(y, x + i, wc, s);
    }
}

void tui_bars(tui_rect r, const double *v, int n, double lo, double hi, tui_style s)
{
    if (n <= 0 || r.w <= 0 || r.h <= 0)
        return;
    static const wchar_t blocks[] = L" \u2581\u2582\u2583\u2584\u2585\u2586\u2587\u2588";
    static const wchar_t ascii[] = L"    ..::#";
    double span = hi > lo ? hi - lo : 1;
    for (int c = 0; c < r.w; c++) {
        /* Columns share values when n < w and average them when n > w. */
        int i0 = (int)((int64_t)c * n / r.w), i1 = (int)((int64_t)(c + 1) * n / r.w);
        if (i1 <= i0)
            i1 = i0 + 1;
        double sum = 0;
        for (int i = i0; i < i1; i++)
            sum += v[i];
        double f = (sum / (i1 - i0) - lo) / span;
        int eighths = (int)lround((f < 0 ? 0 : f > 1 ? 1 : f) * r.h * 8);
        for (int row = 0; row < r.h; row++) {
            int e = eighths - 8 * row;
            e = e < 0 ? 0 : e > 8 ? 8 : e;
            put_styled(r.y + r.h - 1 - row, r.x + c, term.utf8 ? blocks[e] : ascii[e], s);
        }
    }
}

tui_pixel tui_gray(unsigned char v)
{
    tui_pixel p = {v, v, v, v, COLOR_WHITE, 0};
    return p;
}

tui_pixel tui_rgb(unsigned char r, unsigned char g, unsigned char b)
{
    /* The basic colour whose channels are on where this one's are bright:
     * curses numbers red, green and blue as bits 1, 2 and 4. */
    short basic = (short)((r > 127 ? COLOR_RED : 0) | (g > 127 ? COLOR_GREEN : 0) |
                          (b > 127 ? COLOR_BLUE : 0));
    tui_pixel p = {
        r, g, b, (unsigned char)((299 * r + 587 * g + 114 * b) / 1000), basic ? basic : COLOR_WHITE,
        0};
    return p;
}

tui_pixel tui_signed(double v)
{
    double a = fabs(v) > 1 ? 1 : fabs(v);
    a = sqrt(a); /* most weights are small: lift them off black */
    tui_pixel p;
    if (v >= 0)
        p = tui_rgb((unsigned char)(255 * a), (unsigned char)(70 * a), (unsigned char)(30 * a));
    else
        p = tui_rgb((unsigned char)(40 * a), (unsigned char)(110 * a), (unsigned char)(255 * a));
    p.level = (unsigned char)(255 * a);
    p.basic = v >= 0 ? COLOR_RED : COLOR_BLUE;
    return p;
}

static int cube(int v) { return v < 48 ? 0 : v < 115 ? 1 : (v - 35) / 40; }

static int color_of(const tui_pixel *p)
{
    if (term.direct)
        return (p->r << 16) | (p->g << 8) | p->b;
    int r = p->r, g = p->g, b = p->b;
    int cr = cube(r), cg = cube(g), cb = cube(b);
    static const int level[6] = {0, 95, 135, 175, 215, 255};
    int dc = (r - level[cr]) * (r - level[cr]) + (g - level[cg]) * (g - level[cg]) +
             (b - level[cb]) * (b - level[cb]);
    /* The gray ramp (8, 18, ..., 238) is finer than the cube's grays. */
    int mean = (r + g + b) / 3, gi = mean < 8 ? 0 : mean > 238 ? 23 : (mean - 3) / 10;
    int gv = 8 + 10 * gi;
    int dg = (r - gv) * (r - gv) + (g - gv) * (g - gv) + (b - gv) * (b - gv);
    return dg < dc ? 232 + gi : 16 + 36 * cr + 6 * cg + cb;
}

static void pixel_cell(int y, int x, const tui_pixel *top, const tui_pixel *bot)
{
    int has_top = top && !top->none, has_bot = bot && !bot->none;
    if (!has_top && !has_bot) {
        put_wch(y, x, L' ', A_NORMAL, 0);
        return;
    }
    if (term.c256 && term.utf8) {
        /* The upper half block in the top colour over the bottom one as
         * background; a lone bottom pixel needs the lower half block, since
         * the terminal's default is a background, not a foreground. */
        if (!has_top)
            put_wch(y, x, L'\u2584', A_NORMAL, pair_of(color_of(bot), term.default_bg));
        else
            put_wch(y, x, L'\u2580', A_NORMAL,
                    pair_of(color_of(top), has_bot ? color_of(bot) : term.default_bg));
        return;
    }
    const tui_pixel *a = has_top ? top : bot, *b = has_bot ? bot : top;
    if (term.c256) { /* no half blocks: one blended colour per cell */
        tui_pixel m =
            tui_rgb((unsigned char)((a->r + b->r) / 2), (unsigned char)((a->g + b->g) / 2),
                    (unsigned char)((a->b + b->b) / 2));
        put_wch(y, x, L' ', A_NORMAL, pair_of(COLOR_WHITE, color_of(&m)));
        return;
    }
    static const wchar_t shades[] = L" \u2591\u2592\u2593\u2588";
    static const char ascii[] = " .:-=+*#%@";
    const tui_pixel *brighter = a->level >= b->level ? a : b;
    int level = (a->level + b->level) / 2;
    wchar_t wc = term.utf8 ? shades[(level * 5) / 256] : (wchar_t)ascii[(level * 10) / 256];
    put_wch(y, x, wc, A_NORMAL, term.colors ? pair_of(brighter->basic, term.default_bg) : 0);
}

void tui_pixels(int y, int x, const tui_pixel *px, int w, int h, tui_rect clip)
{
    for (int row = 0; 2 * row < h; row++) {
        int cy = y + row;
        if (cy < clip.y || cy >= clip.y + clip.h || cy >= LINES)
            continue;
        for (int c = 0; c < w; c++) {
            int cx = x + c;
            if (cx < clip.x || cx >= clip.x + clip.w || cx >= COLS)
                continue;
            const tui_pixel *bot = 2 * row + 1 < h ? &px[(2 * row + 1) * w + c] : NULL;
            pixel_cell(cy, cx, &px[2 * row * w + c], bot);
        }
    }
}
