/* The TUI's worker thread: the one thread that runs workspace operations.
 *
 * The UI thread never calls a bd_ws_* function that changes anything; it
 * queues a job, and the worker runs the jobs one at a time, in order. While
 * one runs the UI keeps drawing (reading the workspace under bd_ws_lock and
 * the progress snapshot kept here), and Esc cancels it through
 * bd_ws_cancel, dropping what was queued behind it. */
#ifndef BD_TUI_WORKER_H
#define BD_TUI_WORKER_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <time.h>

#include "log.h"
#include "workspace.h"

struct tui;
typedef struct tui_job tui_job;

struct tui_job {
    bd_status (*run)(struct tui *t, const tui_job *j);
    char label[128]; /* names the work on the progress line and in messages */
    char arg[1024];  /* a layer glob, a path or a command line */
    int what, step;  /* job-specific choices */
    int changes;     /* may change the model or its data: views refetch after it */
    int background;  /* a view's refresh, not work the user asked for */
};

/* What the progress line shows. */
typedef struct tui_progress {
    int busy;
    char label[128];
    char stage[32];
    char message[160];
    int64_t done, total;
    double metric;
    double seconds; /* since the job started */
    int queued;
} tui_progress;

enum { TUI_QUEUE = 16 };

typedef struct tui_worker {
    struct tui *t;
    bd_workspace *ws;
    tui_log *log;
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t wake;
    tui_job queue[TUI_QUEUE];
    int head, n;
    int running, stop;
    int background; /* the running job's */
    tui_progress progress;
    struct timespec started;
    atomic_uint generation; /* jobs with `changes` finished so far */
} tui_worker;

/* Starts the thread and routes the workspace's progress reports here. */
bd_status tui_worker_start(tui_worker *w, struct tui *t, bd_workspace *ws, tui_log *log);
/* Cancels what runs, drops the queue and joins the thread. */
void tui_worker_stop(tui_worker *w);
/* Queues a job; refused (with a log line) when the queue is full. */
int tui_worker_submit(tui_worker *w, const tui_job *j);
/* Cancels the running job and drops the queued ones; returns how many
 * jobs that touched (0: there was nothing to cancel). */
int tui_worker_cancel(tui_worker *w);
/* A job is running or queued; with `user`, only jobs the user asked for
 * count. */
int tui_worker_busy(tui_worker *w, int user);
void tui_worker_progress(tui_worker *w, tui_progress *out);
unsigned tui_worker_generation(tui_worker *w);

#endif
