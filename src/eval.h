/* Accuracy of a model on a dataset: top-1, top-5, per-class counts, and the
 * raw logits when asked; top-k predictions with probabilities. */
#ifndef BD_EVAL_H
#define BD_EVAL_H

#include <stdint.h>

#include "data.h"
#include "exec.h"
#include "progress.h"

typedef struct bd_eval_result {
    int64_t n;
    int64_t top1, top5;
    int classes;
    int64_t *class_total;   /* [classes] */
    int64_t *class_correct; /* [classes], top-1 */
    float *logits;          /* n x classes, row-major, when asked for */
    int *labels;            /* n true labels, likewise */
} bd_eval_result;

typedef struct bd_eval_options {
    int64_t limit; /* evaluate the first `limit` samples (0: all) */
    int batch;     /* images per forward pass (0: 64) */
    int keep_logits; /* fill res->logits and res->labels */
    const char *who; /* whose accuracy, for progress ("teacher", "student"); may be NULL */
} bd_eval_options;

/* In a job of several ranks (dist.h) every rank calls it: each evaluates
 * its share of the images, and every rank gets the whole result. */
bd_status bd_evaluate(bd_exec *ex, const bd_dataset *d, const bd_eval_options *opt,
                      const bd_progress *progress, bd_eval_result *res);

/* A forward pass of one batch: *y gets new logits for x. */
typedef bd_status (*bd_eval_forward_fn)(void *user, const bd_tensor *x, bd_tensor **y);

/* bd_evaluate with the forward passes of fwd (a GPU's executor, device.h). */
bd_status bd_evaluate_with(bd_eval_forward_fn fwd, void *user, const bd_dataset *d,
                           const bd_eval_options *opt, const bd_progress *progress,
                           bd_eval_result *res);
void bd_eval_result_free(bd_eval_result *res);

/* Indices of the k largest of v[0..n), largest first (ties: lower index). */
void bd_topk(const float *v, int n, int k, int *idx);

/* Softmax of v[0..n) into p, computed stably. */
void bd_softmax(const float *v, int n, float *p);

#endif
