#include "progress.h"

#include <stdio.h>
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

double bd_eta(double elapsed, double done, double total)
{
    if (done <= 0)
        return -1;
    return done >= total ? 0 : elapsed * (total - done) / done;
}

const char *bd_seconds_str(double seconds, char *buf, size_t cap)
{
    if (seconds < 0)
        snprintf(buf, cap, "-");
    else if (seconds < 60)
        snprintf(buf, cap, "%.1f s", seconds);
    else if (seconds < 3600)
        snprintf(buf, cap, "%d min %02d s", (int)seconds / 60, (int)seconds % 60);
    else
        snprintf(buf, cap, "%d h %02d min", (int)(seconds / 3600), (int)seconds % 3600 / 60);
    return buf;
}
