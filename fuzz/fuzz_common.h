/* What every harness shares: small limits, so a file that claims a large but
 * valid tensor is refused cheaply instead of exhausting the fuzzer's memory;
 * one thread, so runs are repeatable; and a way to report a broken
 * invariant as a crash. Header-only so that every fuzz_*.c is one harness. */
#ifndef BD_FUZZ_COMMON_H
#define BD_FUZZ_COMMON_H

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "status.h"
#include "tensor.h"
#include "threads.h"

enum { BD_FUZZ_TENSOR_LIMIT = 64 << 20 };

static inline void bd_fuzz_init(void)
{
    bd_tensor_set_limit(BD_FUZZ_TENSOR_LIMIT);
    bd_threads_set(1);
}

/* libFuzzer reports an abort as a crash and saves the input. */
static inline void bd_fuzz_abort(const char *fmt, ...) BD_PRINTF(1, 2);
static inline void bd_fuzz_abort(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("bitdown fuzz: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    abort();
}

static char bd_fuzz_scratch[256];

static inline void bd_fuzz_scratch_remove(void)
{
    static const char *const names[] = {"model/weights.bin", "model/link.bin", "secret.bin",
                                        "model", ""};
    char path[320];
    for (size_t i = 0; i < sizeof names / sizeof *names; i++) {
        snprintf(path, sizeof path, "%s/%s", bd_fuzz_scratch, names[i]);
        remove(path);
    }
}

static inline void bd_fuzz_write(const char *path, const void *data, size_t len)
{
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(data, 1, len, f) != len || fclose(f) != 0)
        bd_fuzz_abort("cannot write %s", path);
}

/* A model folder for external data: model/weights.bin (4 KiB of a
 * pattern, so offsets and lengths within it are valid), and model/link.bin,
 * a symbolic link to a file outside the folder. Removed at exit. */
static inline void bd_fuzz_external_dir(char *dir, size_t cap)
{
    const char *tmp = getenv("TMPDIR");
    snprintf(bd_fuzz_scratch, sizeof bd_fuzz_scratch, "%s/bd-fuzz-XXXXXX",
             tmp && tmp[0] ? tmp : "/tmp");
    if (!mkdtemp(bd_fuzz_scratch))
        bd_fuzz_abort("cannot make a scratch folder in %s", tmp && tmp[0] ? tmp : "/tmp");
    atexit(bd_fuzz_scratch_remove);
    snprintf(dir, cap, "%s/model", bd_fuzz_scratch);
    if (mkdir(dir, 0700) != 0)
        bd_fuzz_abort("cannot make %s", dir);
    unsigned char data[4096];
    for (size_t i = 0; i < sizeof data; i++)
        data[i] = (unsigned char)(i * 37 + 11);
    char path[320];
    snprintf(path, sizeof path, "%s/weights.bin", dir);
    bd_fuzz_write(path, data, sizeof data);
    snprintf(path, sizeof path, "%s/secret.bin", bd_fuzz_scratch);
    bd_fuzz_write(path, data, sizeof data);
    snprintf(path, sizeof path, "%s/link.bin", dir);
    if (symlink("../secret.bin", path) != 0)
        bd_fuzz_abort("cannot make %s", path);
}

#endif
