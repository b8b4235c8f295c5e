/* Status codes and the error message that goes with them.
 *
 * Every fallible function returns a bd_status. The function that detects a
 * problem records a message with bd_fail(); callers up the stack may prefix
 * context (the file, the node) with bd_error_context(). The message lives in
 * thread-local storage so worker threads do not clobber each other. */
#ifndef BD_STATUS_H
#define BD_STATUS_H

typedef enum bd_status {
    BD_OK = 0,
    BD_EINVAL,      /* bad argument or bad user input */
    BD_ENOMEM,      /* allocation failed or a size is beyond the limits */
    BD_EIO,         /* file system */
    BD_EFORMAT,     /* a file is corrupt or not what it claims */
    BD_EUNSUPPORTED,/* valid, but something bitdown does not do */
    BD_ECANCELED    /* the user asked to stop */
} bd_status;

#if defined(__GNUC__)
#define BD_PRINTF(a, b) __attribute__((format(printf, a, b)))
#else
#define BD_PRINTF(a, b)
#endif

/* Records a message and returns code, so callers can write
 * `return bd_fail(BD_EFORMAT, "%s: truncated", path);` */
bd_status bd_fail(bd_status code, const char *fmt, ...) BD_PRINTF(2, 3);

/* Prepends "context: " to the current message; returns code unchanged. */
bd_status bd_error_context(bd_status code, const char *fmt, ...) BD_PRINTF(2, 3);

/* The last message recorded on this thread ("" if none). */
const char *bd_error_message(void);

void bd_error_clear(void);

const char *bd_status_name(bd_status s);

/* Propagate a failing status. */
#define BD_TRY(expr)                        \
    do {                                    \
        bd_status bd_try_s_ = (expr);       \
        if (bd_try_s_ != BD_OK)             \
            return bd_try_s_;               \
    } while (0)

#endif
