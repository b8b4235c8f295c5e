#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

void tui_log_init(tui_log *log)
{
    pthread_mutex_init(&log->mu, NULL);
    log->count = 0;
}

void tui_log_destroy(tui_log *log) { pthread_mutex_destroy(&log->mu); }

static void add_line(tui_log *log, tui_style s, const char *text, size_t len)
{
    struct tui_log_line *l = &log->line[log->count % TUI_LOG_LINES];
    size_t o = 0;
    for (size_t i = 0; i < len && o + 1 < sizeof l->text; i++) {
        if (text[i] == '\t') {
            do
                l->text[o++] = ' ';
            while (o % 8 && o + 1 < sizeof l->text);
        } else if (text[i] != '\r') {
            l->text[o++] = text[i];
        }
    }
    l->text[o] = '\0';
    l->style = s;
    log->count++;
}

void tui_log_add(tui_log *log, tui_style s, const char *text)
{
    pthread_mutex_lock(&log->mu);
    for (;;) {
        const char *nl = strchr(text, '\n');
        if (!nl) {
            if (*text)
                add_line(log, s, text, strlen(text));
            break;
        }
        add_line(log, s, text, (size_t)(nl - text));
        text = nl + 1;
    }
    pthread_mutex_unlock(&log->mu);
}

void tui_log_addf(tui_log *log, tui_style s, const char *fmt, ...)
{
    char buf[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    tui_log_add(log, s, buf);
}

void tui_log_print(void *log, const char *text) { tui_log_add(log, TS_NORMAL, text); }

long tui_log_count(tui_log *log)
{
    pthread_mutex_lock(&log->mu);
    long n = log->count;
    pthread_mutex_unlock(&log->mu);
    return n;
}

void tui_log_draw(tui_log *log, tui_rect r, int back)
{
    pthread_mutex_lock(&log->mu);
    long kept = log->count < TUI_LOG_LINES ? log->count : TUI_LOG_LINES;
    long oldest = log->count - kept;
    long end = log->count - (back > 0 ? back : 0); /* one past the newest line shown */
    long min_end = oldest + r.h < log->count ? oldest + r.h : log->count;
    if (end < min_end) /* scrolled back past the oldest line kept */
        end = min_end;
    long first = end - r.h > oldest ? end - r.h : oldest;
    for (long i = first; i < end; i++) {
        const struct tui_log_line *l = &log->line[i % TUI_LOG_LINES];
        tui_text(r.y + (int)(i - first), r.x, r.w, l->style, l->text);
    }
    pthread_mutex_unlock(&log->mu);
}
