/* IDX files, the format of MNIST and Fashion-MNIST: the bytes 00 00 TYPE NDIM,
 * NDIM big-endian uint32 dimensions, then the data in C order. Only the uint8
 * type is read, which is all those data sets use. */
#include "data.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

enum { IDX_UINT8 = 0x08 };
/* Deflate cannot compress better than about 1032:1 (zlib's FAQ), so a gzip
 * file claiming more data than that is lying, and is refused before the
 * claimed amount is allocated. */
enum { DEFLATE_MAX_RATIO = 1032 };
/* gzread counts in unsigned and answers in int. */
enum { GZ_CHUNK = 1 << 30 };

static bd_status gz_fail(gzFile f, const char *path)
{
    int err;
    const char *msg = gzerror(f, &err);
    if (err == Z_ERRNO)
        return bd_fail(BD_EIO, "%s: %s", path, strerror(errno));
    if (err == Z_MEM_ERROR)
        return bd_fail(BD_ENOMEM, "%s: out of memory decompressing", path);
    if (err == Z_BUF_ERROR)
        return bd_fail(BD_EFORMAT, "%s: truncated (the gzip data ends early)", path);
    /* zlib starts its message with the name it knows the file by, "<fd:N>" */
    const char *colon = strstr(msg, ": ");
    return bd_fail(BD_EFORMAT, "%s: corrupt gzip data (%s)", path, colon ? colon + 2 : msg);
}

/* Reads up to len bytes; *got is short only where the data ends. A gzip
 * stream that is cut short or fails its CRC is an error, not an end. */
static bd_status read_some(gzFile f, const char *path, void *buf, size_t len, size_t *got)
{
    size_t done = 0;
    while (done < len) {
        unsigned chunk = len - done < GZ_CHUNK ? (unsigned)(len - done) : GZ_CHUNK;
        int n = gzread(f, (unsigned char *)buf + done, chunk);
        if (n < 0)
            return gz_fail(f, path);
        if (n == 0)
            break;
        done += (size_t)n;
    }
    int err;
    gzerror(f, &err);
    if (err != Z_OK)
        return gz_fail(f, path);
    *got = done;
    return BD_OK;
}

static bd_status read_idx(gzFile f, const char *path, uint64_t file_size, int ndim,
                          bd_tensor **out)
{
    unsigned char head[4 * (1 + BD_MAX_DIMS)];
    size_t got;
    BD_TRY(read_some(f, path, head, 4, &got));
    if (got < 4)
        return bd_fail(BD_EFORMAT, "%s: too short for an IDX file (%zu bytes)", path, got);
    uint32_t magic = (uint32_t)head[0] << 24 | (uint32_t)head[1] << 16 |
                     (uint32_t)head[2] << 8 | head[3];
    uint32_t want = (uint32_t)IDX_UINT8 << 8 | (uint32_t)ndim;
    if (magic != want)
        return bd_fail(BD_EFORMAT,
                       "%s: IDX magic is 0x%08" PRIx32 ", expected 0x%08" PRIx32
                       " (uint8, %d dimensions)",
                       path, magic, want, ndim);

    size_t head_len = 4 + 4 * (size_t)ndim;
    BD_TRY(read_some(f, path, head + 4, head_len - 4, &got));
    if (got < head_len - 4)
        return bd_fail(BD_EFORMAT, "%s: IDX header cut short", path);
    int64_t dims[BD_MAX_DIMS];
    for (int i = 0; i < ndim; i++) {
        const unsigned char *p = head + 4 + 4 * i;
        dims[i] = (int64_t)((uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 |
                            p[3]);
    }
    int64_t count;
    BD_TRY(bd_shape_count(ndim, dims, &count, path));

    char shape[128];
    bd_shape_str(ndim, dims, shape, sizeof shape);
    uint64_t claimed = (uint64_t)count;
    if (gzdirect(f) && claimed != file_size - head_len)
        return bd_fail(BD_EFORMAT, "%s: header says %s (%" PRIu64 " bytes of data) but the file "
                       "holds %" PRIu64 " bytes after the header",
                       path, shape, claimed, file_size - head_len);
    if (!gzdirect(f) && claimed / DEFLATE_MAX_RATIO > file_size)
        return bd_fail(BD_EFORMAT, "%s: header says %s (%" PRIu64 " bytes of data), more than "
                       "%" PRIu64 " bytes of gzip can hold",
                       path, shape, claimed, file_size);

    bd_tensor *t;
    BD_TRY(bd_tensor_new_raw(&t, BD_U8, ndim, dims, path));
    bd_status s = read_some(f, path, t->data, (size_t)count, &got);
    if (s == BD_OK && got < claimed)
        s = bd_fail(BD_EFORMAT, "%s: header says %s but the data ends after %zu of %" PRIu64
                    " bytes",
                    path, shape, got, claimed);
    unsigned char extra;
    if (s == BD_OK)
        s = read_some(f, path, &extra, 1, &got);
    if (s == BD_OK && got)
        s = bd_fail(BD_EFORMAT, "%s: more data than the header's %s", path, shape);
    if (s != BD_OK) {
        bd_tensor_free(t);
        return s;
    }
    *out = t;
    return BD_OK;
}

bd_status bd_idx_read(const char *path, int ndim, bd_tensor **out)
{
    if (ndim < 1 || ndim > BD_MAX_DIMS)
        return bd_fail(BD_EINVAL, "%s: cannot read IDX with %d dimensions", path, ndim);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return bd_fail(BD_EIO, "%s: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return bd_fail(BD_EIO, "%s: not a regular file", path);
    }
    gzFile f = gzdopen(fd, "rb");
    if (!f) {
        close(fd);
        return bd_fail(BD_ENOMEM, "%s: out of memory opening", path);
    }
    bd_status s = read_idx(f, path, (uint64_t)st.st_size, ndim, out);
    gzclose(f);
    return s;
}
