/* The TUI's line editor: the ':' command line (history, completion of
 * commands, layer names, words and key= options through bd_cmd_complete,
 * and of paths here) and the save prompt (paths only). */
#ifndef BD_TUI_CMDLINE_H
#define BD_TUI_CMDLINE_H

#include <wchar.h>

#include "workspace.h"

/* Keys as the TUI passes them around: a character is its code point, a
 * curses function key (KEY_UP...) is lifted above every code point. */
#define TUI_FKEY(k) (0x200000 | (k))
enum { TUI_ESC = 27, TUI_TAB = 9, TUI_CTRL_C = 3, TUI_CTRL_L = 12 };

enum { TUI_LINE_MAX = 1024, TUI_HISTORY = 200 };

typedef enum tui_line_result { LINE_EDITING, LINE_DONE, LINE_CANCELLED } tui_line_result;

typedef struct tui_cmdline {
    char prompt[64];
    wchar_t buf[TUI_LINE_MAX + 1];
    int len, cur;
    int use_history, paths_only;
    char *history[TUI_HISTORY];
    int nhist, hpos;                  /* hpos == nhist: the line being typed */
    char draft[TUI_LINE_MAX * 4 + 1]; /* that line, while browsing history */
    char hint[512];                   /* completions, shown above the line */
} tui_cmdline;

void tui_cmdline_init(tui_cmdline *c);
void tui_cmdline_free(tui_cmdline *c);
/* Starts editing `text` after `prompt`. */
void tui_cmdline_open(tui_cmdline *c, const char *prompt, const char *text, int use_history,
                      int paths_only);
/* Handles a key; on LINE_DONE out holds the line (UTF-8) and it joins the
 * history. Completion reads the workspace under bd_ws_lock. */
tui_line_result tui_cmdline_key(tui_cmdline *c, int key, bd_workspace *ws, char *out, size_t cap);
/* The line as typed so far (UTF-8). */
void tui_cmdline_text(const tui_cmdline *c, char *out, size_t cap);
/* Draws the hint on row y - 1 and the line on row y; returns the cursor's
 * column. */
int tui_cmdline_draw(const tui_cmdline *c, int y, int x, int w);

#endif
