/* The log: what the TUI's work and commands said, newest last. Written from
 * the worker thread (command output, results) and the UI thread (echoed
 * commands), read by the UI thread to draw. */
#ifndef BD_TUI_LOG_H
#define BD_TUI_LOG_H

#include <pthread.h>

#include "draw.h"

enum { TUI_LOG_LINES = 2000, TUI_LOG_WIDTH = 400 };

typedef struct tui_log {
    pthread_mutex_t mu;
    struct tui_log_line {
        tui_style style;
        char text[TUI_LOG_WIDTH];
    } line[TUI_LOG_LINES];
    long count; /* lines ever added; line i lives at i % TUI_LOG_LINES */
} tui_log;

void tui_log_init(tui_log *log);
void tui_log_destroy(tui_log *log);
/* Adds text, one log line per '\n'-separated line; tabs become spaces. */
void tui_log_add(tui_log *log, tui_style s, const char *text);
void tui_log_addf(tui_log *log, tui_style s, const char *fmt, ...) BD_PRINTF(3, 4);
/* A bd_cmd_print: command output goes to the log as normal text. */
void tui_log_print(void *log, const char *text);
/* Draws the lines that end `back` lines before the newest into r. */
void tui_log_draw(tui_log *log, tui_rect r, int back);
long tui_log_count(tui_log *log);

#endif
