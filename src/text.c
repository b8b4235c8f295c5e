#include "text.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

void bd_strbuf_add(bd_strbuf *b, const char *fmt, ...)
{
    if (b->oom)
        return;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    size_t need = b->len + (size_t)n + 1;
    if (n >= 0 && need > b->cap) {
        size_t cap = need > 2 * b->cap ? need : 2 * b->cap;
        char *s = realloc(b->s, cap);
        if (s) {
            b->s = s;
            b->cap = cap;
        }
    }
    if (n < 0 || need > b->cap) {
        b->oom = 1;
        return;
    }
    va_start(ap, fmt);
    vsnprintf(b->s + b->len, b->cap - b->len, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

void bd_strbuf_free(bd_strbuf *b)
{
    free(b->s);
    b->s = NULL;
    b->len = b->cap = 0;
}

bd_status bd_c_numeric_enter(bd_c_numeric *l)
{
    l->old = (locale_t)0;
    l->c = newlocale(LC_NUMERIC_MASK, "C", (locale_t)0);
    if (!l->c)
        return bd_fail(BD_ENOMEM, "out of memory (the C locale)");
    l->old = uselocale(l->c);
    return BD_OK;
}

void bd_c_numeric_leave(bd_c_numeric *l)
{
    uselocale(l->old);
    freelocale(l->c);
}
