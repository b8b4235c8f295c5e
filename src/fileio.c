#include "fileio.h"

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <fcntl.h>
#include <glob.h>
#include <stdio.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

bd_status bd_read_file(const char *path, size_t max_bytes, void **data, size_t *len)
{
    int fd = open(path, O_RDONLY);
    if (fd < 0)
        return bd_fail(BD_EIO, "%s: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return bd_fail(BD_EIO, "%s: not a regular file", path);
    }
    if ((uint64_t)st.st_size > max_bytes) {
        close(fd);
        return bd_fail(BD_ENOMEM, "%s: %lld bytes is more than the %zu MiB limit", path,
                       (long long)st.st_size, max_bytes >> 20);
    }
    size_t n = (size_t)st.st_size;
    char *buf = malloc(n + 1);
    if (!buf) {
        close(fd);
        return bd_fail(BD_ENOMEM, "%s: out of memory reading %zu bytes", path, n);
    }
    size_t got = 0;
    while (got < n) {
        ssize_t r = read(fd, buf + got, n - got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0) {
            free(buf);
            close(fd);
            return bd_fail(BD_EIO, "%s: read failed after %zu of %zu bytes", path, got, n);
        }
        got += (size_t)r;
    }
    close(fd);
    buf[n] = '\0';
    *data = buf;
    *len = n;
    return BD_OK;
}

const char *bd_dirname(const char *path, char *buf, size_t cap)
{
    const char *slash = strrchr(path, '/');
    if (!slash) {
        snprintf(buf, cap, ".");
    } else if (slash == path) {
        snprintf(buf, cap, "/");
    } else {
        size_t n = (size_t)(slash - path);
        if (n >= cap)
            n = cap - 1;
        memcpy(buf, path, n);
        buf[n] = '\0';
    }
    return buf;
}

static int write_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

bd_status bd_write_file_atomic(const char *path, int n, const void *const *chunks,
                               const size_t *lens)
{
    char dir[4096], tmp[4200];
    bd_dirname(path, dir, sizeof dir);
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    if (snprintf(tmp, sizeof tmp, "%s/.%s.XXXXXX", dir, base) >= (int)sizeof tmp)
        return bd_fail(BD_EINVAL, "%s: path too long", path);
    int fd = mkstemp(tmp);
    if (fd < 0)
        return bd_fail(BD_EIO, "%s: cannot create a temporary file in %s: %s", path, dir,
                       strerror(errno));
    int err = 0;
    for (int i = 0; i < n && !err; i++)
        if (write_all(fd, chunks[i], lens[i]) != 0)
            err = errno ? errno : EIO;
    /* rename() keeps the temporary's 0600 mode; give the file the usual one */
    mode_t mask = umask(0);
    umask(mask);
    if (!err && fchmod(fd, 0666 & ~mask) != 0)
        err = errno;
    if (!err && fsync(fd) != 0)
        err = errno;
    if (close(fd) != 0 && !err)
        err = errno;
    if (!err && rename(tmp, path) != 0)
        err = errno;
    if (err) {
        unlink(tmp);
        return bd_fail(BD_EIO, "%s: write failed: %s", path, strerror(err));
    }
    int dfd = open(dir, O_RDONLY | O_DIRECTORY);
    if (dfd >= 0) {
        fsync(dfd); /* best effort: the rename is done either way */
        close(dfd);
    }
    return BD_OK;
}

/* The source tree is where a build-folder bitdown finds its files. */
#ifndef BD_SOURCE_DIR
#error "BD_SOURCE_DIR must name the source tree (CMakeLists.txt defines it)"
#endif

static char share_dir[PATH_MAX];

/* PREFIX/share/bitdown when it holds the policies, from the executable's
 * own path (so a moved install still finds them); else the source tree. */
static void find_share_dir(void)
{
    char exe[PATH_MAX], cand[PATH_MAX + 64], probe[PATH_MAX + 96];
    ssize_t len = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (len > 0) {
        exe[len] = '\0';
        *strrchr(exe, '/') = '\0'; /* the kernel's path is absolute */
        snprintf(cand, sizeof cand, "%s/../share/bitdown", exe);
        snprintf(probe, sizeof probe, "%s/lua/policies", cand);
        if (access(probe, R_OK) == 0 && realpath(cand, share_dir))
            return;
    }
    snprintf(share_dir, sizeof share_dir, "%s", BD_SOURCE_DIR);
}

const char *bd_share_dir(void)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, find_share_dir);
    return share_dir;
}

bd_status bd_policy_path(const char *name, char *buf, size_t cap)
{
    size_t n = strlen(name);
    if (strchr(name, '/') || (n > 4 && strcmp(name + n - 4, ".lua") == 0))
        snprintf(buf, cap, "%s", name);
    else
        snprintf(buf, cap, "%s/lua/policies/%s.lua", bd_share_dir(), name);
    if (access(buf, R_OK) == 0)
        return BD_OK;
    char list[512] = "";
    glob_t g;
    char pattern[4096 + 32];
    snprintf(pattern, sizeof pattern, "%s/lua/policies/*.lua", bd_share_dir());
    if (glob(pattern, 0, NULL, &g) == 0) {
        for (size_t i = 0; i < g.gl_pathc; i++) {
            const char *base = strrchr(g.gl_pathv[i], '/') + 1;
            size_t len = strlen(list);
            snprintf(list + len, sizeof list - len, "%s%.*s", len ? ", " : "",
                     (int)(strlen(base) - 4), base);
        }
        globfree(&g);
    }
    return bd_fail(BD_EINVAL, "no policy '%s' (%s is not readable); the policies are: %s", name,
                   buf, list[0] ? list : "none found");
}
