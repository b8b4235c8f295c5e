#include "worker.h"

#include <string.h>

static double since(const struct timespec *t0)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)(t.tv_sec - t0->tv_sec) + 1e-9 * (double)(t.tv_nsec - t0->tv_nsec);
}

/* Called by the workspace on the worker thread (or its OpenMP threads). */
static void on_progress(void *user, const char *stage, int64_t done, int64_t total,
                        const char *message, double metric)
{
    tui_worker *w = user;
    pthread_mutex_lock(&w->mu);
    tui_progress *p = &w->progress;
    snprintf(p->stage, sizeof p->stage, "%s", stage ? stage : "");
    snprintf(p->message, sizeof p->message, "%s", message ? message : "");
    p->done = done;
    p->total = total;
    p->metric = metric;
    pthread_mutex_unlock(&w->mu);
}

static void finish(tui_worker *w, const tui_job *j, bd_status s)
{
    if (s == BD_ECANCELED)
        tui_log_addf(w->log, TS_WARN, "cancelled: %s (left as it was)", j->label);
    else if (s != BD_OK)
        tui_log_addf(w->log, TS_ERROR, "%s: %s", j->label,
                     bd_error_message()[0] ? bd_error_message() : bd_status_name(s));
    if (j->changes)
        atomic_fetch_add(&w->generation, 1);
}

static void *worker_main(void *arg)
{
    tui_worker *w = arg;
    pthread_mutex_lock(&w->mu);
    for (;;) {
        while (!w->n && !w->stop)
            pthread_cond_wait(&w->wake, &w->mu);
        if (w->stop)
            break;
        tui_job j = w->queue[w->head];
        w->head = (w->head + 1) % TUI_QUEUE;
        w->n--;
        w->running = 1;
        w->background = j.background;
        memset(&w->progress, 0, sizeof w->progress);
        snprintf(w->progress.label, sizeof w->progress.label, "%s", j.label);
        clock_gettime(CLOCK_MONOTONIC, &w->started);
        pthread_mutex_unlock(&w->mu);

        bd_error_clear();
        finish(w, &j, j.run(w->t, &j));

        pthread_mutex_lock(&w->mu);
        w->running = 0;
    }
    pthread_mutex_unlock(&w->mu);
    return NULL;
}

bd_status tui_worker_start(tui_worker *w, struct tui *t, bd_workspace *ws, tui_log *log)
{
    memset(w, 0, sizeof *w);
    w->t = t;
    w->ws = ws;
    w->log = log;
    atomic_init(&w->generation, 0);
    pthread_mutex_init(&w->mu, NULL);
    pthread_cond_init(&w->wake, NULL);
    bd_ws_on_progress(ws, on_progress, w);
    if (pthread_create(&w->thread, NULL, worker_main, w) != 0) {
        bd_ws_on_progress(ws, NULL, NULL);
        return bd_fail(BD_ENOMEM, "cannot start the TUI's worker thread");
    }
    return BD_OK;
}

void tui_worker_stop(tui_worker *w)
{
    tui_worker_cancel(w);
    pthread_mutex_lock(&w->mu);
    w->stop = 1;
    pthread_cond_signal(&w->wake);
    pthread_mutex_unlock(&w->mu);
    pthread_join(w->thread, NULL);
    bd_ws_on_progress(w->ws, NULL, NULL);
    pthread_cond_destroy(&w->wake);
    pthread_mutex_destroy(&w->mu);
}

int tui_worker_submit(tui_worker *w, const tui_job *j)
{
    pthread_mutex_lock(&w->mu);
    int full = w->n == TUI_QUEUE;
    if (!full) {
        w->queue[(w->head + w->n) % TUI_QUEUE] = *j;
        w->n++;
        pthread_cond_signal(&w->wake);
    }
    pthread_mutex_unlock(&w->mu);
    if (full)
        tui_log_addf(w->log, TS_ERROR, "%s: %d jobs are waiting already (Esc cancels them)",
                     j->label, TUI_QUEUE);
    return full ? -1 : 0;
}

int tui_worker_cancel(tui_worker *w)
{
    pthread_mutex_lock(&w->mu);
    int touched = w->n + w->running;
    w->n = 0;
    /* A request that arrives just after the operation returned is harmless:
     * the workspace clears it when the next operation starts. */
    if (w->running)
        bd_ws_cancel(w->ws);
    pthread_mutex_unlock(&w->mu);
    return touched;
}

int tui_worker_busy(tui_worker *w, int user)
{
    pthread_mutex_lock(&w->mu);
    int busy = w->running && !(user && w->background);
    for (int i = 0; i < w->n && !busy; i++)
        busy = !user || !w->queue[(w->head + i) % TUI_QUEUE].background;
    pthread_mutex_unlock(&w->mu);
    return busy;
}

void tui_worker_progress(tui_worker *w, tui_progress *out)
{
    pthread_mutex_lock(&w->mu);
    *out = w->progress;
    out->busy = w->running;
    out->queued = w->n;
    out->seconds = w->running ? since(&w->started) : 0;
    pthread_mutex_unlock(&w->mu);
}

unsigned tui_worker_generation(tui_worker *w) { return atomic_load(&w->generation); }
