/* The IDX reader (bd_idx_read) and the idx: dataset on top of it.
 *
 * bd_idx_read takes a path, so each input is written to an in-memory file
 * (memfd) and read through /proc/self/fd: no disk traffic, and the core is
 * exercised exactly as it runs. Input layout:
 *   byte 0: bit 0 set: the harness gzips the payload first (so mutations of
 *           plain IDX bytes also reach the gzip path); bits 1-3: the number
 *           of dimensions the caller expects, minus one
 *   rest:   the payload, written as the file (itself gzipped or not)
 * A three-dimensional file that reads is then opened as an idx: dataset with
 * a matching labels file, and its last image preprocessed. */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
#include <zlib.h>

#include "data.h"
#include "fuzz_common.h"

static int images_fd = -1, labels_fd = -1;
static char images_path[64], labels_path[64];

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    bd_fuzz_init();
    images_fd = memfd_create("bd-fuzz-images", 0);
    labels_fd = memfd_create("bd-fuzz-labels", 0);
    if (images_fd < 0 || labels_fd < 0)
        bd_fuzz_abort("memfd_create failed");
    snprintf(images_path, sizeof images_path, "/proc/self/fd/%d", images_fd);
    snprintf(labels_path, sizeof labels_path, "/proc/self/fd/%d", labels_fd);
    return 0;
}

static void set_contents(int fd, const void *data, size_t len)
{
    if (ftruncate(fd, 0) != 0 || (len && pwrite(fd, data, len, 0) != (ssize_t)len))
        bd_fuzz_abort("cannot write the memfd");
}

/* data as a gzip stream, malloc'ed; NULL when zlib fails. */
static unsigned char *gzip(const uint8_t *data, size_t len, size_t *out_len)
{
    z_stream z = {0};
    if (deflateInit2(&z, Z_BEST_SPEED, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK)
        return NULL;
    size_t cap = deflateBound(&z, (uLong)len) + 32;
    unsigned char *out = malloc(cap);
    z.next_in = (Bytef *)data;
    z.avail_in = (uInt)len;
    z.next_out = out;
    z.avail_out = (uInt)cap;
    int r = out ? deflate(&z, Z_FINISH) : Z_MEM_ERROR;
    *out_len = cap - z.avail_out;
    deflateEnd(&z);
    if (r != Z_STREAM_END) {
        free(out);
        return NULL;
    }
    return out;
}

/* Labels for n images (n is small here), varied so class counting runs. */
static void write_labels(int64_t n)
{
    size_t len = 8 + (size_t)n;
    unsigned char *l = malloc(len);
    if (!l)
        bd_fuzz_abort("out of memory");
    memcpy(l, (unsigned char[]){0, 0, 8, 1, (unsigned char)(n >> 24), (unsigned char)(n >> 16),
                                (unsigned char)(n >> 8), (unsigned char)n},
           8);
    for (int64_t i = 0; i < n; i++)
        l[8 + i] = (unsigned char)(i % 10);
    set_contents(labels_fd, l, len);
    free(l);
}

static void open_dataset(int64_t n)
{
    write_labels(n);
    char spec[160];
    snprintf(spec, sizeof spec, "idx:%s,%s", images_path, labels_path);
    bd_preprocess pp;
    bd_preprocess_default(&pp);
    bd_dataset *d;
    if (bd_dataset_open(&d, spec, &pp) != BD_OK)
        return;
    bd_tensor *x;
    int label;
    if (bd_dataset_get(d, bd_dataset_count(d) - 1, &x, &label) == BD_OK)
        bd_tensor_free(x);
    bd_dataset_free(d);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    int gz = data[0] & 1, ndim = ((data[0] >> 1) & 7) + 1;
    const uint8_t *payload = data + 1;
    size_t len = size - 1;
    unsigned char *packed = NULL;
    if (gz) {
        if (!(packed = gzip(payload, len, &len)))
            return 0;
        payload = packed;
    }
    set_contents(images_fd, payload, len);
    free(packed);
    bd_tensor *t;
    if (bd_idx_read(images_path, ndim, &t) != BD_OK)
        return 0;
    int64_t n = t->dims[0];
    bd_tensor_free(t);
    /* a dataset of a few images is enough to reach every check */
    if (ndim == 3 && n <= 4096)
        open_dataset(n);
    return 0;
}
