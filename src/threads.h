/* How many threads the CPU kernels use (OpenMP loops and OpenBLAS). */
#ifndef BD_THREADS_H
#define BD_THREADS_H

/* n <= 0 means one per CPU the process may run on (its affinity). */
void bd_threads_set(int n);
int bd_threads_get(void);

#endif
