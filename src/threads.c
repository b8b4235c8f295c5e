#include "threads.h"

#include <cblas.h>
#include <omp.h>
#include <unistd.h>

void bd_threads_set(int n)
{
    if (n <= 0) {
        long cpus = sysconf(_SC_NPROCESSORS_ONLN);
        n = cpus > 0 ? (int)cpus : 1;
    }
    omp_set_num_threads(n);
    openblas_set_num_threads(n);
}

int bd_threads_get(void) { return omp_get_max_threads(); }
