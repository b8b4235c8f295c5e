#include "plan.h"

#include <errno.h>
#include <fnmatch.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "feedback.h"
#include "pq.h"

int64_t bd_nearest_divisor(int64_t n, int64_t want)
{
    int64_t best = 1;
    for (int64_t v = 1; v <= n; v++)
        if (n % v == 0 && llabs(v - want) < llabs(best - want))
            best = v;
    return best;
}

static void append_note(bd_layer_plan *p, const char *fmt, long long a, long long b)
{
    size_t used = strlen(p->note);
    snprintf(p->note + used, sizeof p->note - used, used ? "; " : "");
    used = strlen(p->note);
    snprintf(p->note + used, sizeof p->note - used, fmt, a, b);
}

bd_status bd_plan_regime(const bd_layer *layers, int n, const char *regime, int quantize_first,
                         bd_layer_plan *plan)
{
    int large;
    if (strcmp(regime, "small") == 0)
        large = 0;
    else if (strcmp(regime, "large") == 0)
        large = 1;
    else
        return bd_fail(BD_EINVAL, "unknown regime '%s' (small or large)", regime);
    for (int i = 0; i < n; i++) {
        const bd_layer *l = &layers[i];
        bd_layer_plan *p = &plan[i];
        memset(p, 0, sizeof *p);
        int conv = strcmp(l->op, "Conv") == 0;
        int spatial = conv && l->kh * l->kw > 1;
        p->quantize = !(i == 0 && conv && !quantize_first);
        int64_t want = spatial ? (large ? 18 : 9) : (conv ? (large ? 8 : 4) : 4);
        int64_t d = bd_nearest_divisor(l->row_len, want);
        if (d != want)
            append_note(p, "d=%lld does not divide the row length %lld", want, l->row_len);
        p->d = (int)d;
        bd_pq_layout lay;
        BD_TRY(bd_pq_layout_init(l, d, &lay));
        int want_k = conv ? 256 : 2048, kmax = bd_pq_max_k(lay.n);
        p->k = want_k < kmax ? want_k : kmax;
        if (p->k != want_k)
            append_note(p, "k clamped from %lld to %lld", want_k, p->k);
        /* error feedback wins on every layer measured (docs/benchmarks.md);
         * rows too long for its Gram keep the block objective */
        p->objective = BD_OBJ_FEEDBACK;
        if (l->row_len > BD_FEEDBACK_MAX_LEN) {
            p->objective = BD_OBJ_ACT;
            append_note(p, "rows of %lld: objective act (feedback takes at most %lld)",
                        l->row_len, BD_FEEDBACK_MAX_LEN);
        }
        if (!p->quantize)
            snprintf(p->note, sizeof p->note, "first conv: kept in fp32");
    }
    return BD_OK;
}

bd_status bd_plan_check(const bd_layer *l, int d, int k)
{
    bd_pq_layout lay;
    BD_TRY(bd_pq_layout_init(l, d, &lay));
    int kmax = bd_pq_max_k(lay.n);
    if (k < 1 || k > kmax)
        return bd_fail(BD_EINVAL,
                       "layer '%s': k=%d is too large: with d=%d it has %lld subvectors, and k "
                       "may be at most %d (the largest power of two below a quarter of them)",
                       l->name, k, d, (long long)lay.n, kmax);
    return BD_OK;
}

/* Reads "key=value" pairs of spec after the colon. */
static bd_status parse_settings(const char *spec, const char *rest, int *d, int *k, int *obj,
                                int *skip)
{
    char buf[256];
    snprintf(buf, sizeof buf, "%s", rest);
    for (char *save = NULL, *tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        if (strcmp(tok, "skip") == 0) {
            *skip = 1;
            continue;
        }
        char *eq = strchr(tok, '=');
        if (!eq)
            return bd_fail(BD_EINVAL, "'%s': '%s' is not key=value", spec, tok);
        *eq = '\0';
        const char *key = tok, *val = eq + 1;
        if (strcmp(key, "objective") == 0) {
            bd_objective o;
            if (bd_objective_parse(val, &o) != BD_OK) {
                char why[256];
                snprintf(why, sizeof why, "%s", bd_error_message());
                return bd_fail(BD_EINVAL, "'%s': %s", spec, why);
            }
            *obj = (int)o;
            continue;
        }
        char *end;
        errno = 0;
        long v = strtol(val, &end, 10);
        if (errno || *end || end == val || v < 1 || v > 65536)
            return bd_fail(BD_EINVAL, "'%s': %s wants a whole number from 1 to 65536, not '%s'",
                           spec, key, val);
        if (strcmp(key, "d") == 0)
            *d = (int)v;
        else if (strcmp(key, "k") == 0)
            *k = (int)v;
        else
            return bd_fail(BD_EINVAL, "'%s': unknown setting '%s' (d, k, objective or skip)", spec,
                           key);
    }
    return BD_OK;
}

bd_status bd_plan_parse_set(const char *spec, char *glob, size_t cap, int *d, int *k,
                            int *objective, int *skip)
{
    const char *colon = strchr(spec, ':');
    if (!colon || colon == spec)
        return bd_fail(BD_EINVAL, "'%s' is not GLOB:d=D,k=K (or GLOB:skip)", spec);
    snprintf(glob, cap, "%.*s", (int)(colon - spec), spec);
    *d = *k = *skip = 0;
    *objective = -1;
    return parse_settings(spec, colon + 1, d, k, objective, skip);
}
