/* Progress reporting and cancellation for long operations.
 *
 * Long loops call bd_progress_report() now and then; the front-end decides
 * how to show it (a bar on stderr, the TUI's log, a Lua callback). A set
 * cancel flag makes the loop stop with BD_ECANCELED at its next check. */
#ifndef BD_PROGRESS_H
#define BD_PROGRESS_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "status.h"

typedef void (*bd_progress_fn)(void *user, const char *stage, int64_t done, int64_t total,
                               const char *message, double metric);

typedef struct bd_progress {
    bd_progress_fn fn;
    void *user;
    atomic_int *cancel; /* may be NULL */
} bd_progress;

/* Reports (if p and p->fn are set) and returns BD_ECANCELED if canceled. */
bd_status bd_progress_report(const bd_progress *p, const char *stage, int64_t done,
                             int64_t total, const char *message, double metric);

int bd_progress_canceled(const bd_progress *p);

/* Seconds on the monotonic clock: what long operations time themselves
 * with (rates, ETAs), never moved by changes of the wall clock. */
double bd_now(void);

/* Seconds left of a run when `done` of `total` units of work (in any
 * measure: layers, parameters) took `elapsed` seconds and the rest goes at
 * the same pace; -1 before any is done. */
double bd_eta(double elapsed, double done, double total);
/* A duration for people: "4.2 s", "3 min 05 s", "1 h 02 min"; "-" when
 * negative (unknown). */
const char *bd_seconds_str(double seconds, char *buf, size_t cap);

#endif
