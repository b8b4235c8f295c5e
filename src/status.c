#include "status.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

enum { MESSAGE_CAP = 1024 };

static _Thread_local char message[MESSAGE_CAP];

bd_status bd_fail(bd_status code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(message, sizeof message, fmt, ap);
    va_end(ap);
    return code;
}

bd_status bd_error_context(bd_status code, const char *fmt, ...)
{
    char prefix[512];
    char old[MESSAGE_CAP];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    memcpy(old, message, sizeof old);
    /* a message cut short is better than none */
    size_t n = strlen(prefix);
    memcpy(message, prefix, n + 1);
    if (n + 2 < sizeof message) {
        message[n] = ':';
        message[n + 1] = ' ';
        size_t room = sizeof message - n - 3;
        size_t m = strnlen(old, room);
        memcpy(message + n + 2, old, m);
        message[n + 2 + m] = '\0';
    }
    return code;
}

const char *bd_error_message(void) { return message; }

void bd_error_clear(void) { message[0] = '\0'; }

const char *bd_status_name(bd_status s)
{
    switch (s) {
    case BD_OK: return "ok";
    case BD_EINVAL: return "invalid argument";
    case BD_ENOMEM: return "out of memory";
    case BD_EIO: return "i/o error";
    case BD_EFORMAT: return "bad format";
    case BD_EUNSUPPORTED: return "unsupported";
    case BD_ECANCELED: return "canceled";
    }
    return "unknown status";
}
