#define _GNU_SOURCE /* sched_getaffinity */
#include "threads.h"

#include <cblas.h>
#include <omp.h>
#include <sched.h>
#include <unistd.h>

void bd_threads_set(int n)
{
    /* The CPUs this process may run on, not all online: mpirun binds each
     * rank to its own cores, and taskset or a container may allow fewer. */
    cpu_set_t set;
    if (n <= 0 && sched_getaffinity(0, sizeof set, &set) == 0)
        n = CPU_COUNT(&set);
    if (n <= 0) {
        long cpus = sysconf(_SC_NPROCESSORS_ONLN);
        n = cpus > 0 ? (int)cpus : 1;
    }
    omp_set_num_threads(n);
    openblas_set_num_threads(n);
}

int bd_threads_get(void) { return omp_get_max_threads(); }
