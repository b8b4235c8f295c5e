/* Text that files carry: a growing string buffer, and the C locale for
 * numbers (metadata written by one user must parse for another, whatever
 * their locale says about decimal commas). */
#ifndef BD_TEXT_H
#define BD_TEXT_H

#include <locale.h>
#include <stddef.h>

#include "status.h"

typedef struct bd_strbuf {
    char *s;
    size_t len, cap;
    int oom; /* an append failed: the text is incomplete */
} bd_strbuf;

void bd_strbuf_add(bd_strbuf *b, const char *fmt, ...) BD_PRINTF(2, 3);
void bd_strbuf_free(bd_strbuf *b);

/* Switches this thread to the C locale for numbers until bd_c_numeric_leave. */
typedef struct bd_c_numeric {
    locale_t c, old;
} bd_c_numeric;

bd_status bd_c_numeric_enter(bd_c_numeric *l);
void bd_c_numeric_leave(bd_c_numeric *l);

#endif
