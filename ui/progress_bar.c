#include "progress_bar.h"

#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "dist.h"

static atomic_int cancel_flag;
static int drawn;
static double last_draw;

static void on_sigint(int sig)
{
    (void)sig;
    atomic_store(&cancel_flag, 1);
}

static void draw(void *user, const char *stage, int64_t done, int64_t total, const char *message,
                 double metric)
{
    (void)user;
    (void)metric;
    double t = bd_now();
    if (done < total && t - last_draw < 0.1) /* at most ten redraws a second */
        return;
    last_draw = t;
    enum { WIDTH = 24 };
    int fill = total > 0 ? (int)(WIDTH * done / total) : 0;
    char bar[WIDTH + 1];
    for (int i = 0; i < WIDTH; i++)
        bar[i] = i < fill ? '#' : '.';
    bar[WIDTH] = '\0';
    fprintf(stderr, "\r\033[K%-8s [%s] %lld/%lld %.60s", stage, bar, (long long)done,
            (long long)total, message ? message : "");
    fflush(stderr);
    drawn = 1;
}

void cli_progress_clear(void)
{
    if (drawn) {
        fprintf(stderr, "\r\033[K");
        fflush(stderr);
        drawn = 0;
    }
}

/* In a job of several ranks rank 0 alone draws, and Ctrl-C is mpirun's
 * (it ends every rank): one rank cancelling alone would leave the others
 * waiting for it. */
bd_progress_fn cli_progress_bar(void)
{
    return isatty(STDERR_FILENO) && bd_dist_rank() == 0 ? draw : NULL;
}

bd_progress cli_progress_start(void)
{
    atomic_store(&cancel_flag, 0);
    if (bd_dist_size() > 1)
        return (bd_progress){cli_progress_bar(), NULL, &cancel_flag};
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_sigint;
    sigaction(SIGINT, &sa, NULL);
    bd_progress p = {cli_progress_bar(), NULL, &cancel_flag};
    return p;
}

void cli_progress_stop(void)
{
    cli_progress_clear();
    signal(SIGINT, SIG_DFL);
}
