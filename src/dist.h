/* Data parallelism across processes (docs/distributed.md): the ranks of a
 * job started by mpirun each take a share of every global batch (or of the
 * calibration batches), and their sums meet in MPI's collectives, so the
 * job ends where one process with the same options ends, up to the order
 * of floating-point summation.
 *
 * One job per process, so the state is the process's own, as MPI's is.
 * Outside a launcher (or in a build without MPI) there is one rank and
 * every collective returns at once with its input unchanged: callers never
 * test for the distributed case to stay correct, only to skip work (rank 0
 * alone writes files and evaluates).
 *
 * Collectives must be called by every rank in the same order. A rank that
 * fails between two of them cannot tell the others, which wait in the next
 * one: it calls bd_dist_abort, which ends the whole job. */
#ifndef BD_DIST_H
#define BD_DIST_H

#include <stddef.h>
#include <stdint.h>

#include "status.h"
#include "tensor.h"

/* Joins the job when launched by mpirun (or another PMI launcher); before
 * any thread starts. Fails, saying so, when launched with several ranks
 * by a build without MPI. */
bd_status bd_dist_init(int *argc, char ***argv);
/* Leaves the job (every rank, at the end of a run that did not abort). */
void bd_dist_finalize(void);
int bd_dist_rank(void);
int bd_dist_size(void);
/* Whether this process joined a job (a launcher started it and this build
 * has MPI), of one rank included: the GPU engines then sum through NCCL
 * even alone, so a one-rank job under mpirun takes the path of many. */
int bd_dist_joined(void);
/* This rank's index among the ranks on its machine, as the launcher says
 * (Open MPI's, MPICH's, then Slurm's variable); 0 when none says: which
 * GPU the rank takes. */
int bd_dist_local_rank(void);

/* This rank's share of n items in order: the first n % size ranks take one
 * more. */
void bd_dist_share(int64_t n, int64_t *first, int64_t *count);

/* In-place sums over the ranks; every rank gets the same bits. */
bd_status bd_dist_sum_f32(float *v, int64_t n);
bd_status bd_dist_sum_f64(double *v, int64_t n);
bd_status bd_dist_sum_i64(int64_t *v, int64_t n);
/* Sums the tensors t[0..n) (NULL ones skipped; the same shapes on every
 * rank), packed into one message. */
bd_status bd_dist_sum_tensors(bd_tensor *const *t, int n);
/* The weight of a rank's `local` images in a global batch of `global`:
 * local / global (1 for the whole batch, as with one rank). */
double bd_dist_share_of(int64_t local, int64_t global);
/* A rank's step on its share of a global batch of `global` images: scales
 * the gradient of its images' mean loss (dlogits, [local, ...]) and the
 * loss to their share of the global batch's mean, so that the sums over
 * the ranks are the global batch's. */
void bd_dist_share_loss(bd_tensor *dlogits, double *loss, int64_t global);

/* Rank 0's bytes to every rank. */
bd_status bd_dist_broadcast(void *buf, size_t bytes);
/* Rows of `len` floats: every rank's *n rows, concatenated in rank order
 * and cut at `capacity`, replace each rank's own (buf holds capacity rows);
 * tag (may be NULL) gets the same treatment, one int32 per row. */
bd_status bd_dist_gather_rows(float *buf, int32_t *tag, int64_t *n, int64_t len,
                              int64_t capacity);

/* The agreement at the end of a job's setup, where ranks may still differ
 * without waiting on one another: every rank says how its setup went (s)
 * and gives a hash of what must be the same everywhere (the model, the
 * options). Returns BD_OK on every rank when all succeeded with one hash;
 * otherwise a failure on every rank, whose message (on the first failing
 * rank, the one that prints) names the rank and its own error or the
 * disagreement. *printer is 1 on the rank that should print it. */
bd_status bd_dist_agree(bd_status s, uint64_t hash, int *printer);

/* Ends the whole job from this rank, after a failure past the agreement. */
_Noreturn void bd_dist_abort(int code);

/* Bytes this rank has put into sums since the start (communication volume,
 * for the benchmark); calls counted too. */
void bd_dist_traffic(int64_t *bytes, int64_t *calls);

/* A checksum of bytes (zlib's CRC-32), chained from h (start from 0). */
uint64_t bd_dist_hash(uint64_t h, const void *bytes, size_t n);

#endif
