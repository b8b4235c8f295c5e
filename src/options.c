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

int bd_opt_count(const bd_opt *table)
{
    int n = 0;
    while (table[n].key)
        n++;
    return n;
}

static bd_status number(const char *where, const bd_opt *o, const char *value, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(value, &end);
    if (end == value || *end || errno || !isfinite(v))
        return bd_fail(BD_EINVAL, "%s: %s is a number, not '%s'", where, o->key, value);
    if ((o->type == BD_OPT_INT || o->type == BD_OPT_INT64) && v != floor(v))
        return bd_fail(BD_EINVAL, "%s: %s is a whole number, not '%s'", where, o->key, value);
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

static bd_status word(const char *where, const bd_opt *o, const char *value, int *out)
{
    char list[256] = "";
    for (int i = 0; o->words[i]; i++) {
        if (strcmp(value, o->words[i]) == 0)
            return *out = i, BD_OK;
        snprintf(list + strlen(list), sizeof list - strlen(list), "%s%s", i ? ", " : "",
                 o->words[i]);
    }
    return bd_fail(BD_EINVAL, "%s: %s is one of %s, not '%s'", where, o->key, list, value);
}

bd_status bd_opt_set(const bd_opt *table, void *obj, const char *where, const char *key,
                     const char *value)
{
    const bd_opt *o = bd_opt_find(table, key);
    if (!o)
        return bd_fail(BD_EINVAL, "%s: unknown option '%s'", where, key);
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
        return o->parse(where, value, field);
    }
    return bd_fail(BD_EINVAL, "%s: option '%s' has no type", where, key);
}

void bd_opt_cli_name(const bd_opt *o, char *buf, size_t cap)
{
    snprintf(buf, cap, "--%s", o->key);
    for (char *c = buf; *c; c++)
        if (*c == '_')
            *c = '-';
}

void bd_opt_help(const bd_opt *table, int cli, char *buf, size_t cap)
{
    size_t used = 0;
    buf[0] = '\0';
    for (const bd_opt *o = table; o->key && used < cap; o++) {
        char name[48], head[96];
        const char *arg = o->type == BD_OPT_FLAG ? (cli ? "" : "0|1") : o->arg ? o->arg : "X";
        if (cli) {
            bd_opt_cli_name(o, name, sizeof name);
            snprintf(head, sizeof head, "%s%s%s", name, *arg ? " " : "", arg);
        } else
            snprintf(head, sizeof head, "%s=%s", o->key, arg);
        int w = snprintf(buf + used, cap - used, "  %-24s %s\n", head, o->help);
        used += w > 0 ? (size_t)w : 0;
    }
}
