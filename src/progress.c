#include "progress.h"

#include <time.h>

int bd_progress_canceled(const bd_progress *p)
{
    return p && p->cancel && atomic_load(p->cancel);
}

bd_status bd_progress_report(const bd_progress *p, const char *stage, int64_t done,
                             int64_t total, const char *message, double metric)
{
    if (p && p->fn)
        p->fn(p->user, stage, done, total, message, metric);
    if (bd_progress_canceled(p))
        return bd_fail(BD_ECANCELED, "%s: canceled", stage);
    return BD_OK;
}

double bd_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}
