/* The distillation and classification losses on logits, through a
 * log-softmax taken in double from each row's maximum, so no exponential
 * overflows and no probability underflows into a log of zero. */
#include <inttypes.h>
#include <math.h>
#include <stdlib.h>

#include "cpu/kernel_util.h"
#include "grad.h"

/* log sum exp of a row. */
static double row_lse(const float *x, int64_t len)
{
    float max = -INFINITY;
    for (int64_t j = 0; j < len; j++)
        if (x[j] > max)
            max = x[j];
    double sum = 0;
    for (int64_t j = 0; j < len; j++)
        sum += exp((double)x[j] - max);
    return max + log(sum);
}

static bd_status check_logits(const char *loss, const char *what, const bd_tensor *t)
{
    char s[96];
    if (!t)
        return bd_fail(BD_EINVAL, "%s loss: no %s", loss, what);
    if (t->dtype != BD_F32 || t->ndim != 2 || t->dims[0] < 1 || t->dims[1] < 1)
        return bd_fail(BD_EINVAL, "%s loss: %s are %s %s; float32 [N, C] expected", loss, what,
                       bd_dtype_name(t->dtype), bd_shape_str(t->ndim, t->dims, s, sizeof s));
    return BD_OK;
}

/* Sums the per-row losses in order, so the total does not depend on the
 * thread count; frees rows. */
static double total(double *rows, int64_t n)
{
    double sum = 0;
    for (int64_t i = 0; i < n; i++)
        sum += rows[i];
    free(rows);
    return sum / (double)n;
}

static bd_status start(const char *loss, const bd_tensor *logits, bd_tensor **dlogits,
                       double **rows)
{
    if (dlogits) {
        bd_status st = bd_tensor_new_raw(dlogits, BD_F32, 2, logits->dims, "dlogits");
        if (st != BD_OK)
            return bd_error_context(st, "%s loss", loss);
    }
    *rows = malloc((size_t)logits->dims[0] * sizeof **rows);
    if (!*rows) {
        if (dlogits) {
            bd_tensor_free(*dlogits);
            *dlogits = NULL;
        }
        return bd_fail(BD_ENOMEM, "%s loss: out of memory", loss);
    }
    return BD_OK;
}

bd_status bd_loss_kl(const bd_tensor *student, const bd_tensor *teacher, double *loss,
                     bd_tensor **dlogits)
{
    BD_TRY(check_logits("KL", "student logits", student));
    BD_TRY(check_logits("KL", "teacher logits", teacher));
    if (!bd_tensor_same_shape(student, teacher)) {
        char s[96], t[96];
        return bd_fail(BD_EINVAL, "KL loss: student logits %s and teacher logits %s differ",
                       bd_shape_str(student->ndim, student->dims, s, sizeof s),
                       bd_shape_str(teacher->ndim, teacher->dims, t, sizeof t));
    }
    const int64_t n = student->dims[0], c = student->dims[1];
    double *rows;
    BD_TRY(start("KL", student, dlogits, &rows));
    const float *sv = student->data, *tv = teacher->data;
    float *g = dlogits ? (*dlogits)->data : NULL;
#pragma omp parallel for schedule(static) if (n * c >= BD_PARALLEL_MIN)
    for (int64_t i = 0; i < n; i++) {
        const float *s = sv + i * c, *t = tv + i * c;
        const double ls = row_lse(s, c), lt = row_lse(t, c);
        double kl = 0;
        for (int64_t j = 0; j < c; j++) {
            const double log_ps = s[j] - ls, log_pt = t[j] - lt, pt = exp(log_pt);
            if (pt > 0) /* p log p -> 0 as p -> 0 */
                kl += pt * (log_pt - log_ps);
            if (g)
                g[i * c + j] = (float)((exp(log_ps) - pt) / (double)n);
        }
        rows[i] = kl;
    }
    *loss = total(rows, n);
    return BD_OK;
}

bd_status bd_loss_check_labels(const int *labels, int64_t n, int64_t c)
{
    if (!labels)
        return bd_fail(BD_EINVAL, "cross-entropy loss: no labels");
    for (int64_t i = 0; i < n; i++)
        if (labels[i] < 0 || labels[i] >= c)
            return bd_fail(BD_EINVAL,
                           "cross-entropy loss: label %d of sample %" PRId64
                           " is outside the %" PRId64 " classes",
                           labels[i], i, c);
    return BD_OK;
}

bd_status bd_loss_ce_smooth(const bd_tensor *logits, const int *labels, double smoothing,
                            double *loss, bd_tensor **dlogits)
{
    BD_TRY(check_logits("cross-entropy", "logits", logits));
    const int64_t n = logits->dims[0], c = logits->dims[1];
    BD_TRY(bd_loss_check_labels(labels, n, c));
    if (!(smoothing >= 0 && smoothing < 1))
        return bd_fail(BD_EINVAL, "cross-entropy loss: label smoothing %g is outside [0, 1)",
                       smoothing);
    double *rows;
    BD_TRY(start("cross-entropy", logits, dlogits, &rows));
    const float *xv = logits->data;
    float *g = dlogits ? (*dlogits)->data : NULL;
    /* the target is (1 - s) one-hot + s / c, PyTorch's label smoothing */
    const double spread = smoothing / (double)c, hit = 1 - smoothing + spread;
#pragma omp parallel for schedule(static) if (n * c >= BD_PARALLEL_MIN)
    for (int64_t i = 0; i < n; i++) {
        const float *x = xv + i * c;
        const double lse = row_lse(x, c);
        double mean = 0;
        for (int64_t j = 0; smoothing > 0 && j < c; j++)
            mean += x[j];
        rows[i] = (1 - smoothing) * (lse - x[labels[i]]) + smoothing * (lse - mean / (double)c);
        for (int64_t j = 0; g && j < c; j++)
            g[i * c + j] = (float)((exp(x[j] - lse) - (j == labels[i] ? hit : spread)) / (double)n);
    }
    *loss = total(rows, n);
    return BD_OK;
}

bd_status bd_loss_ce(const bd_tensor *logits, const int *labels, double *loss,
                     bd_tensor **dlogits)
{
    return bd_loss_ce_smooth(logits, labels, 0, loss, dlogits);
}
