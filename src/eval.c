#include "eval.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dist.h"

void bd_topk(const float *v, int n, int k, int *idx)
{
    if (k > n)
        k = n;
    for (int j = 0; j < k; j++)
        idx[j] = -1;
    for (int i = 0; i < n; i++) {
        /* insertion into the sorted top list; NaN never ranks */
        int pos = k;
        while (pos > 0 && (idx[pos - 1] < 0 || v[i] > v[idx[pos - 1]]))
            pos--;
        if (pos >= k)
            continue;
        memmove(idx + pos + 1, idx + pos, (size_t)(k - pos - 1) * sizeof *idx);
        idx[pos] = i;
    }
}

void bd_softmax(const float *v, int n, float *p)
{
    float mx = -INFINITY;
    for (int i = 0; i < n; i++)
        if (v[i] > mx)
            mx = v[i];
    double sum = 0;
    for (int i = 0; i < n; i++)
        sum += p[i] = expf(v[i] - mx);
    for (int i = 0; i < n; i++)
        p[i] = (float)(p[i] / sum);
}

void bd_eval_result_free(bd_eval_result *res)
{
    free(res->class_total);
    free(res->class_correct);
    free(res->logits);
    free(res->labels);
    memset(res, 0, sizeof *res);
}

static bd_status score_batch(const bd_tensor *logits, const int *labels, int b,
                             const bd_dataset *d, int64_t first, bd_eval_result *res)
{
    char shape[96];
    if (logits->dtype != BD_F32 || logits->ndim != 2 || logits->dims[0] != b)
        return bd_fail(BD_EFORMAT, "the model's output %s is not [batch, classes] float32 logits",
                       bd_shape_str(logits->ndim, logits->dims, shape, sizeof shape));
    int classes = (int)logits->dims[1];
    if (!res->class_total) {
        res->classes = classes;
        res->class_total = calloc((size_t)classes + 1, sizeof *res->class_total);
        res->class_correct = calloc((size_t)classes + 1, sizeof *res->class_correct);
        if (!res->class_total || !res->class_correct)
            return bd_fail(BD_ENOMEM, "out of memory");
    }
    const float *l = logits->data;
    for (int i = 0; i < b; i++) {
        int y = labels[i];
        if (y < 0 || y >= classes)
            return bd_fail(BD_EINVAL, "%s: sample %lld has label %d but the model has %d classes",
                           bd_dataset_spec(d), (long long)(first + i), y, classes);
        int top[5];
        bd_topk(l + (int64_t)i * classes, classes, 5, top);
        res->class_total[y]++;
        if (top[0] == y) {
            res->top1++;
            res->class_correct[y]++;
        }
        for (int j = 0; j < 5 && j < classes; j++)
            if (top[j] == y) {
                res->top5++;
                break;
            }
    }
    res->n += b;
    return BD_OK;
}

/* Every rank's counts (and logits, in rank order, which is image order)
 * into every rank's result. */
static bd_status sum_shares(bd_eval_result *res, int64_t n, int keep_logits)
{
    int64_t totals[3] = {res->n, res->top1, res->top5};
    BD_TRY(bd_dist_sum_i64(totals, 3));
    BD_TRY(bd_dist_sum_i64(res->class_total, res->classes));
    BD_TRY(bd_dist_sum_i64(res->class_correct, res->classes));
    int64_t rows = res->n;
    res->n = totals[0];
    res->top1 = totals[1];
    res->top5 = totals[2];
    return keep_logits ? bd_dist_gather_rows(res->logits, res->labels, &rows, res->classes, n)
                       : BD_OK;
}

static bd_status exec_forward(void *user, const bd_tensor *x, bd_tensor **y)
{
    return bd_exec_run1(user, x, y);
}

bd_status bd_evaluate(bd_exec *ex, const bd_dataset *d, const bd_eval_options *opt,
                      const bd_progress *progress, bd_eval_result *res)
{
    return bd_evaluate_with(exec_forward, ex, d, opt, progress, res);
}

bd_status bd_evaluate_with(bd_eval_forward_fn fwd, void *user, const bd_dataset *d,
                           const bd_eval_options *opt, const bd_progress *progress,
                           bd_eval_result *res)
{
    memset(res, 0, sizeof *res);
    int64_t n = bd_dataset_count(d);
    if (opt->limit > 0 && opt->limit < n)
        n = opt->limit;
    if (n == 0)
        return bd_fail(BD_EINVAL, "%s: no images to evaluate", bd_dataset_spec(d));
    int batch = opt->batch > 0 ? opt->batch : 64;
    int64_t *idx = malloc((size_t)batch * sizeof *idx);
    int *labels = malloc((size_t)batch * sizeof *labels);
    bd_status st = idx && labels ? BD_OK : bd_fail(BD_ENOMEM, "out of memory");
    /* In a job of several ranks each takes a share of the images (when
     * there is one for every rank) and the counts are summed after. */
    int64_t from = 0, mine = n;
    const int shared = bd_dist_size() > 1 && n >= bd_dist_size();
    if (shared)
        bd_dist_share(n, &from, &mine);
    for (int64_t first = from; first < from + mine && st == BD_OK; first += batch) {
        int b = (int)(from + mine - first < batch ? from + mine - first : batch);
        for (int i = 0; i < b; i++)
            idx[i] = first + i;
        bd_tensor *x = NULL, *y = NULL;
        st = bd_dataset_batch(d, idx, b, &x, labels);
        if (st == BD_OK)
            st = fwd(user, x, &y);
        if (st == BD_OK)
            st = score_batch(y, labels, b, d, first, res);
        if (st == BD_OK && opt->keep_logits) {
            if (!res->logits) {
                res->logits = malloc((size_t)n * (size_t)res->classes * sizeof(float));
                res->labels = malloc((size_t)n * sizeof(int));
            }
            if (!res->logits || !res->labels) {
                st = bd_fail(BD_ENOMEM, "out of memory for %lld x %d logits", (long long)n,
                             res->classes);
            } else {
                memcpy(res->logits + (first - from) * res->classes, y->data,
                       (size_t)b * (size_t)res->classes * sizeof(float));
                memcpy(res->labels + (first - from), labels, (size_t)b * sizeof(int));
            }
        }
        bd_tensor_free(x);
        bd_tensor_free(y);
        if (st == BD_OK) {
            char msg[96];
            snprintf(msg, sizeof msg, "%s%stop1 %.2f%%", opt->who ? opt->who : "",
                     opt->who ? " " : "", 100.0 * (double)res->top1 / (double)res->n);
            st = bd_progress_report(progress, "eval", first - from + b, mine, msg,
                                    (double)res->top1 / (double)res->n);
        }
    }
    if (st == BD_OK && shared)
        st = sum_shares(res, n, opt->keep_logits);
    free(idx);
    free(labels);
    if (st != BD_OK)
        bd_eval_result_free(res);
    return st;
}
