#include "plan.h"

#include <errno.h>
#include <stdarg.h>
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

double bd_plan_bits_per_weight(const bd_layer_plan *p)
{
    return p->format == BD_FMT_INT ? (double)p->ints.bits : bd_pq_bits_per_weight(p->k, p->d);
}

void bd_plan_describe(const bd_layer_plan *p, char *buf, size_t cap)
{
    if (!p->quantize)
        snprintf(buf, cap, "skip");
    else if (p->format == BD_FMT_INT)
        snprintf(buf, cap, "int=%d per=%s sym=%d objective=%s", p->ints.bits,
                 p->ints.per_channel ? "channel" : "tensor", p->ints.symmetric,
                 bd_objective_name(p->objective));
    else
        snprintf(buf, cap, "d=%d k=%d objective=%s", p->d, p->k, bd_objective_name(p->objective));
}

bd_int_spec bd_plan_int_default(int bits) { return (bd_int_spec){bits, 1, 0}; }

/* "small", "large" or "intB": *large, *bits (0 for PQ). */
static bd_status parse_regime(const char *regime, int *large, int *bits)
{
    *large = strcmp(regime, "large") == 0;
    *bits = 0;
    if (*large || strcmp(regime, "small") == 0)
        return BD_OK;
    char *end;
    long b = strncmp(regime, "int", 3) == 0 ? strtol(regime + 3, &end, 10) : 0;
    if (b >= BD_INT_MIN_BITS && b <= BD_INT_MAX_BITS && end != regime + 3 && !*end) {
        *bits = (int)b;
        return BD_OK;
    }
    return bd_fail(BD_EINVAL, "unknown regime '%s' (small, large, int8, int4 or intB with B "
                              "from %d to %d)",
                   regime, BD_INT_MIN_BITS, BD_INT_MAX_BITS);
}

bd_status bd_plan_regime(const bd_layer *layers, int n, const char *regime, int quantize_first,
                         bd_layer_plan *plan)
{
    int large, bits;
    BD_TRY(parse_regime(regime, &large, &bits));
    for (int i = 0; i < n; i++) {
        const bd_layer *l = &layers[i];
        bd_layer_plan *p = &plan[i];
        memset(p, 0, sizeof *p);
        int conv = strcmp(l->op, "Conv") == 0;
        int spatial = conv && l->kh * l->kw > 1;
        p->quantize = !(i == 0 && conv && !quantize_first);
        p->format = bits ? BD_FMT_INT : BD_FMT_PQ;
        p->ints = bd_plan_int_default(bits ? bits : 8);
        int64_t want = spatial ? (large ? 18 : 9) : (conv ? (large ? 8 : 4) : 4);
        int64_t d = bd_nearest_divisor(l->row_len, want);
        if (d != want && !bits)
            append_note(p, "d=%lld does not divide the row length %lld", want, l->row_len);
        p->d = (int)d;
        bd_pq_layout lay;
        BD_TRY(bd_pq_layout_init(l, d, &lay));
        int want_k = conv ? 256 : 2048, kmax = bd_pq_max_k(lay.n);
        p->k = want_k < kmax ? want_k : kmax;
        if (p->k != want_k && !bits)
            append_note(p, "k clamped from %lld to %lld", want_k, p->k);
        /* error feedback wins on every layer measured (docs/benchmarks.md);
         * rows too long for its Gram keep the block objective, or for int
         * (whose activation-aware fit needs the full rows) round to nearest */
        p->objective = BD_OBJ_FEEDBACK;
        if (l->row_len > BD_FEEDBACK_MAX_LEN) {
            p->objective = bits ? BD_OBJ_WEIGHT : BD_OBJ_ACT;
            append_note(p, bits ? "rows of %lld: objective weight (the int fit's Gram takes at "
                                  "most %lld)"
                                : "rows of %lld: objective act (feedback takes at most %lld)",
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

bd_status bd_plan_apply(const bd_layer *l, const bd_plan_change *c, bd_layer_plan *p)
{
    if (c->bits && (c->d || c->k))
        return bd_fail(BD_EINVAL, "layer '%s': int= is a format of its own; d= and k= apply to "
                                  "pq only", l->name);
    if (c->objective >= BD_OBJ_COUNT)
        return bd_fail(BD_EINVAL, "objective must be %s", bd_objective_names());
    bd_layer_plan n = *p;
    n.format = c->bits || c->format == BD_FMT_INT ? BD_FMT_INT
               : c->d || c->k || c->format == BD_FMT_PQ ? BD_FMT_PQ
                                                       : p->format;
    if ((c->per_channel >= 0 || c->symmetric >= 0) && n.format != BD_FMT_INT)
        return bd_fail(BD_EINVAL, "layer '%s': per= and sym= apply to int layers only (set int=B "
                                  "first)", l->name);
    if (c->bits)
        n.ints.bits = c->bits;
    if (c->per_channel >= 0)
        n.ints.per_channel = c->per_channel;
    if (c->symmetric >= 0)
        n.ints.symmetric = c->symmetric;
    BD_TRY(bd_int_spec_check(l, &n.ints));
    /* an explicit k must fit unless the change clamps; a k kept from
     * before is clamped to what a new d allows */
    n.d = c->d ? c->d : p->d;
    bd_pq_layout lay;
    BD_TRY(bd_pq_layout_init(l, n.d, &lay));
    int kmax = bd_pq_max_k(lay.n);
    int want = c->k ? c->k : p->k;
    n.k = c->k && !c->clamp ? c->k : (want < kmax ? want : kmax);
    if (c->k)
        BD_TRY(bd_plan_check(l, n.d, n.k));
    if (c->objective >= 0) {
        n.objective = (bd_objective)c->objective;
        BD_TRY(bd_objective_check(l, n.objective));
    }
    if (n.format == BD_FMT_INT && n.objective != BD_OBJ_WEIGHT)
        BD_TRY(bd_objective_check(l, BD_OBJ_FEEDBACK)); /* the int fit's Gram is the full row's */
    if (n.k != want && n.format == BD_FMT_PQ)
        snprintf(n.note, sizeof n.note, "k clamped from %d to %d", want, n.k);
    else if (c->d || c->k || c->bits || c->format >= 0)
        n.note[0] = '\0';
    if (c->quantize == 0)
        snprintf(n.note, sizeof n.note, "skipped by the plan");
    else if (c->quantize == 1 && !p->quantize)
        n.note[0] = '\0';
    if (c->quantize >= 0)
        n.quantize = c->quantize;
    *p = n;
    return BD_OK;
}

/* A message about a setting, after "'where': " when where is given. */
__attribute__((format(printf, 2, 3))) static bd_status fail_at(const char *where,
                                                               const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return where ? bd_fail(BD_EINVAL, "'%s': %s", where, msg) : bd_fail(BD_EINVAL, "%s", msg);
}

/* A whole number in [lo, hi] for key, from the whole of value. */
static bd_status parse_int(const char *where, const char *key, const char *value, long lo,
                           long hi, int *out)
{
    char *end;
    errno = 0;
    long v = strtol(value, &end, 10);
    if (errno || *end || end == value || v < lo || v > hi)
        return fail_at(where, "%s wants a whole number from %ld to %ld, not '%s'", key, lo, hi,
                       value);
    *out = (int)v;
    return BD_OK;
}

bd_status bd_plan_parse_setting(const char *where, const char *key, const char *value,
                                bd_plan_change *c)
{
    if (!value && (strcmp(key, "skip") == 0 || strcmp(key, "include") == 0)) {
        c->quantize = strcmp(key, "include") == 0;
        return BD_OK;
    }
    if (strcmp(key, "clamp") == 0 && !value) {
        c->clamp = 1;
        return BD_OK;
    }
    if (!value)
        return fail_at(where, "'%s' is not key=value", key);
    if (strcmp(key, "objective") == 0) {
        bd_objective o;
        if (bd_objective_parse(value, &o) != BD_OK) {
            char why[256];
            snprintf(why, sizeof why, "%s", bd_error_message());
            return fail_at(where, "%s", why);
        }
        c->objective = (int)o;
        return BD_OK;
    }
    if (strcmp(key, "format") == 0) {
        if (strcmp(value, "pq") && strcmp(value, "int"))
            return fail_at(where, "format is pq or int, not '%s'", value);
        c->format = strcmp(value, "int") == 0 ? BD_FMT_INT : BD_FMT_PQ;
        return BD_OK;
    }
    if (strcmp(key, "per") == 0) {
        if (strcmp(value, "channel") && strcmp(value, "tensor"))
            return fail_at(where, "per is channel or tensor, not '%s'", value);
        c->per_channel = strcmp(value, "channel") == 0;
        return BD_OK;
    }
    if (strcmp(key, "sym") == 0)
        return parse_int(where, key, value, 0, 1, &c->symmetric);
    if (strcmp(key, "clamp") == 0)
        return parse_int(where, key, value, 0, 1, &c->clamp);
    if (strcmp(key, "int") == 0)
        return parse_int(where, key, value, BD_INT_MIN_BITS, BD_INT_MAX_BITS, &c->bits);
    if (strcmp(key, "d") == 0)
        return parse_int(where, key, value, 1, 65536, &c->d);
    if (strcmp(key, "k") == 0)
        return parse_int(where, key, value, 1, 65536, &c->k);
    return fail_at(where, "unknown setting '%s' (d, k, int, per, sym, format, objective, "
                              "clamp or skip)",
                   key);
}

bd_status bd_plan_parse_set(const char *spec, char *glob, size_t cap, bd_plan_change *c)
{
    const char *colon = strchr(spec, ':');
    if (!colon || colon == spec)
        return bd_fail(BD_EINVAL, "'%s' is not GLOB:d=D,k=K, GLOB:int=B (or GLOB:skip)", spec);
    snprintf(glob, cap, "%.*s", (int)(colon - spec), spec);
    *c = BD_PLAN_CHANGE_NONE;
    char buf[256];
    snprintf(buf, sizeof buf, "%s", colon + 1);
    for (char *save = NULL, *tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        char *eq = strchr(tok, '=');
        if (eq)
            *eq = '\0';
        BD_TRY(bd_plan_parse_setting(spec, tok, eq ? eq + 1 : NULL, c));
    }
    return BD_OK;
}
