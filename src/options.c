#include "options.h"

#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

const bd_opt *bd_opt_find(const bd_opt *table, const char *key)
{
    for (const bd_opt *o = table; o->key; o++)
        if (strcmp(o->key, key) == 0)
            return o;
    return NULL;
}

/* ---- one table ---------------------------------------------------------------- */

static bd_status number(const char *where, const bd_opt *o, const char *value, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(value, &end);
    int whole = o->type == BD_OPT_INT || o->type == BD_OPT_INT64;
    if (end == value || *end || errno || !isfinite(v) || (whole && v != floor(v)))
        return bd_fail(BD_EINVAL, "%s: %s is a %snumber, not '%s'", where, o->key,
                       whole ? "whole " : "", value);
    if ((v < o->min || v > o->max) && whole)
        return bd_fail(BD_EINVAL, "%s: %s must lie in [%.0f, %.0f], not %s", where, o->key,
                       o->min, o->max, value);
    if (v < o->min || v > o->max)
        return bd_fail(BD_EINVAL, "%s: %s must lie in [%g, %g], not %s", where, o->key, o->min,
                       o->max, value);
    *out = v;
    return BD_OK;
}

static bd_status flag(const char *where, const bd_opt *o, const char *value, int *out)
{
    static const char *const yes[] = {"1", "yes", "on", "true"}, *const no[] = {"0", "no", "off",
                                                                                 "false"};
    for (int i = 0; i < 4; i++) {
        if (strcasecmp(value, yes[i]) == 0)
            return *out = 1, BD_OK;
        if (strcasecmp(value, no[i]) == 0)
            return *out = 0, BD_OK;
    }
    return bd_fail(BD_EINVAL, "%s: %s is on or off, not '%s'", where, o->key, value);
}

/* Appends "name" to a list being made in buf: "a", "a or b", "a, b or c";
 * last says whether it is the list's last. */
static void list_add(char *buf, size_t cap, const char *name, int first, int last)
{
    size_t used = strlen(buf);
    snprintf(buf + used, cap - used, "%s%s", first ? "" : last ? " or " : ", ", name);
}

static bd_status word(const char *where, const bd_opt *o, const char *value, int *out)
{
    char list[256] = "";
    int n = 0;
    while (o->words[n])
        n++;
    for (int i = 0; i < n; i++) {
        if (strcmp(value, o->words[i]) == 0)
            return *out = i, BD_OK;
        list_add(list, sizeof list, o->words[i], i == 0, i == n - 1);
    }
    return bd_fail(BD_EINVAL, "%s: %s is %s, not '%s'", where, o->key, list, value);
}

static void table_keys(const bd_opt *const *tables, int ntables, char *buf, size_t cap)
{
    int total = 0, i = 0;
    for (int t = 0; t < ntables && tables[t]; t++)
        for (const bd_opt *o = tables[t]; o->key; o++)
            total++;
    buf[0] = '\0';
    for (int t = 0; t < ntables && tables[t]; t++)
        for (const bd_opt *o = tables[t]; o->key; o++, i++)
            list_add(buf, cap, o->key, i == 0, i == total - 1);
}

static bd_status unknown(const bd_opt *const *tables, int ntables, const char *where,
                         const char *key)
{
    char keys[2048];
    table_keys(tables, ntables, keys, sizeof keys);
    return bd_fail(BD_EINVAL, "%s: unknown option '%s' (it takes %s)", where, key, keys);
}

static bd_status set_entry(const bd_opt *o, void *obj, const char *where, const char *value)
{
    const char *key = o->key;
    if (!value)
        return bd_fail(BD_EINVAL, "%s: %s needs a value", where, key);
    char *field = (char *)obj + o->offset;
    double v = 0;
    int i = 0;
    switch (o->type) {
    case BD_OPT_INT:
        BD_TRY(number(where, o, value, &v));
        *(int *)field = (int)v;
        return BD_OK;
    case BD_OPT_INT64:
        BD_TRY(number(where, o, value, &v));
        *(int64_t *)field = (int64_t)v;
        return BD_OK;
    case BD_OPT_FLOAT:
        BD_TRY(number(where, o, value, &v));
        *(float *)field = (float)v;
        return BD_OK;
    case BD_OPT_DOUBLE:
        BD_TRY(number(where, o, value, &v));
        *(double *)field = v;
        return BD_OK;
    case BD_OPT_FLAG:
        BD_TRY(flag(where, o, value, &i));
        *(int *)field = i;
        return BD_OK;
    case BD_OPT_WORD:
        BD_TRY(word(where, o, value, &i));
        *(int *)field = i;
        return BD_OK;
    case BD_OPT_TEXT:
        if (strlen(value) >= o->size)
            return bd_fail(BD_EINVAL, "%s: %s is longer than %zu characters", where, key,
                           o->size - 1);
        memcpy(field, value, strlen(value) + 1);
        return BD_OK;
    case BD_OPT_PARSE:
        return o->codec->parse(where, value, field);
    }
    return bd_fail(BD_EINVAL, "%s: option '%s' has no type", where, key);
}

bd_status bd_opt_set(const bd_opt *table, void *obj, const char *where, const char *key,
                     const char *value)
{
    const bd_opt *o = bd_opt_find(table, key);
    return o ? set_entry(o, obj, where, value) : unknown(&table, 1, where, key);
}

/* The shortest text that reads back as v (as a float when single), with
 * no exponent between 1e-5 and 1e15 (10, not 1e+01). */
static void shortest(double v, int single, char *buf, size_t cap)
{
    int plain = fabs(v) >= 1e-5 && fabs(v) < 1e15;
    for (int digits = 1; digits <= 17; digits++) {
        snprintf(buf, cap, "%.*g", digits, v);
        double back = strtod(buf, NULL);
        if ((single ? (float)back == (float)v : back == v) && !(plain && strchr(buf, 'e')))
            return;
    }
}

void bd_opt_value(const bd_opt *o, const void *obj, char *buf, size_t cap)
{
    const char *field = (const char *)obj + o->offset;
    switch (o->type) {
    case BD_OPT_INT: snprintf(buf, cap, "%d", *(const int *)field); return;
    case BD_OPT_INT64: snprintf(buf, cap, "%lld", (long long)*(const int64_t *)field); return;
    case BD_OPT_FLOAT: shortest(*(const float *)field, 1, buf, cap); return;
    case BD_OPT_DOUBLE: shortest(*(const double *)field, 0, buf, cap); return;
    case BD_OPT_FLAG: snprintf(buf, cap, "%d", *(const int *)field != 0); return;
    case BD_OPT_WORD: snprintf(buf, cap, "%s", o->words[*(const int *)field]); return;
    case BD_OPT_TEXT: snprintf(buf, cap, "%s", field); return;
    case BD_OPT_PARSE: o->codec->show(field, buf, cap); return;
    }
    snprintf(buf, cap, "?");
}

void bd_opt_cli_name(const bd_opt *o, char *buf, size_t cap)
{
    snprintf(buf, cap, "--%s", o->key);
    for (char *c = buf; *c; c++)
        if (*c == '_')
            *c = '-';
}

/* ---- an operation ------------------------------------------------------------- */

static int ntables(const bd_opt_op *op)
{
    int n = 0;
    while (n < BD_OPT_TABLES && op->tables[n])
        n++;
    return n;
}

const bd_opt *bd_opt_op_at(const bd_opt_op *op, int i, size_t *at)
{
    for (int t = 0; t < ntables(op) && i >= 0; t++)
        for (const bd_opt *o = op->tables[t]; o->key; o++)
            if (i-- == 0) {
                if (at)
                    *at = op->at[t];
                return o;
            }
    return NULL;
}

int bd_opt_op_count(const bd_opt_op *op)
{
    int n = 0;
    while (bd_opt_op_at(op, n, NULL))
        n++;
    return n;
}

const bd_opt *bd_opt_op_find(const bd_opt_op *op, const char *key, size_t *at)
{
    for (int t = 0; t < ntables(op); t++) {
        const bd_opt *o = bd_opt_find(op->tables[t], key);
        if (o) {
            if (at)
                *at = op->at[t];
            return o;
        }
    }
    return NULL;
}

bd_status bd_opt_op_set(const bd_opt_op *op, void *opts, const char *where, const char *key,
                        const char *value)
{
    size_t at;
    const bd_opt *o = bd_opt_op_find(op, key, &at);
    return o ? set_entry(o, (char *)opts + at, where, value)
             : unknown(op->tables, ntables(op), where, key);
}

void bd_opt_op_keys(const bd_opt_op *op, char *buf, size_t cap)
{
    table_keys(op->tables, ntables(op), buf, cap);
}

/* " [1..100000, default 100]": the range of a number, and the default
 * (flags: on or off; none for a value without text of its own, which the
 * help line explains). */
static void range_and_default(const bd_opt *o, const void *defaults, char *buf, size_t cap)
{
    char value[128], range[96] = "";
    bd_opt_value(o, defaults, value, sizeof value);
    if (o->type == BD_OPT_INT || o->type == BD_OPT_INT64)
        snprintf(range, sizeof range, "%.0f..%.0f", o->min, o->max);
    else if (o->type == BD_OPT_FLOAT || o->type == BD_OPT_DOUBLE)
        snprintf(range, sizeof range, "%g..%g", o->min, o->max);
    if (o->type == BD_OPT_FLAG)
        snprintf(value, sizeof value, "%s", strcmp(value, "1") == 0 ? "on" : "off");
    if (value[0])
        snprintf(buf, cap, " [%s%sdefault %s]", range, range[0] ? ", " : "", value);
    else if (range[0])
        snprintf(buf, cap, " [%s]", range);
    else
        buf[0] = '\0';
}

void bd_opt_op_help(const bd_opt_op *op, int cli, char *buf, size_t cap)
{
    buf[0] = '\0';
    void *defaults = calloc(1, op->size);
    if (!defaults)
        return;
    op->init(defaults);
    size_t used = 0, at;
    const bd_opt *o;
    for (int i = 0; (o = bd_opt_op_at(op, i, &at)) && used < cap; i++) {
        char name[48], head[96], tail[256];
        const char *arg = o->type == BD_OPT_FLAG ? (cli ? "" : "0|1") : o->arg ? o->arg : "X";
        if (cli) {
            bd_opt_cli_name(o, name, sizeof name);
            snprintf(head, sizeof head, "%s%s%s", name, *arg ? " " : "", arg);
        } else
            snprintf(head, sizeof head, "%s=%s", o->key, arg);
        range_and_default(o, (char *)defaults + at, tail, sizeof tail);
        /* a line too long for a terminal of 80 gets its range under it */
        int wide = tail[0] && 2 + 24 + 1 + (int)(strlen(o->help) + strlen(tail)) > 79;
        int w = snprintf(buf + used, cap - used, "  %-24s %s%s%s\n", head, o->help,
                         wide ? "\n                           " : "", tail + wide);
        used += w > 0 ? (size_t)w : 0;
    }
    free(defaults);
}
