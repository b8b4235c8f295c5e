#include "bd_test.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

const char *bd_test_path(const char *relative)
{
    static char buf[4][4096];
    static int slot;
    const char *root = getenv("BD_SOURCE_DIR");
    char *b = buf[slot++ & 3];
    snprintf(b, 4096, "%s/%s", root ? root : BD_SOURCE_DIR, relative);
    return b;
}

static char tmpdir[256];

static void remove_tmpdir(void)
{
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", tmpdir);
}

const char *bd_test_tmpdir(void)
{
    if (!tmpdir[0]) {
        snprintf(tmpdir, sizeof tmpdir, "/tmp/bdtest.XXXXXX");
        if (!mkdtemp(tmpdir)) {
            perror("mkdtemp");
            abort();
        }
        atexit(remove_tmpdir);
    }
    return tmpdir;
}

void *bd_test_read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *data = malloc(n > 0 ? (size_t)n + 1 : 1);
    if (data && n > 0 && fread(data, 1, (size_t)n, f) != (size_t)n) {
        free(data);
        data = NULL;
    }
    if (data)
        data[n > 0 ? n : 0] = '\0';
    fclose(f);
    if (len)
        *len = n > 0 ? (size_t)n : 0;
    return data;
}

int bd_test_write_file(const char *path, const void *data, size_t len)
{
    FILE *f = fopen(path, "wb");
    if (!f)
        return -1;
    size_t w = fwrite(data, 1, len, f);
    return fclose(f) == 0 && w == len ? 0 : -1;
}

static void put_be32(unsigned char *p, uint32_t v)
{
    p[0] = (unsigned char)(v >> 24);
    p[1] = (unsigned char)(v >> 16);
    p[2] = (unsigned char)(v >> 8);
    p[3] = (unsigned char)v;
}

int bd_test_write_idx(const char *images, const char *labels, int n, int h, int w,
                      const unsigned char *pixels, const unsigned char *label_bytes)
{
    const size_t count = (size_t)n * (size_t)h * (size_t)w;
    unsigned char *ib = malloc(16 + count), *lb = malloc(8 + (size_t)n);
    int rc = -1;
    if (ib && lb) {
        put_be32(ib, 0x803);
        put_be32(ib + 4, (uint32_t)n);
        put_be32(ib + 8, (uint32_t)h);
        put_be32(ib + 12, (uint32_t)w);
        memcpy(ib + 16, pixels, count);
        put_be32(lb, 0x801);
        put_be32(lb + 4, (uint32_t)n);
        memcpy(lb + 8, label_bytes, (size_t)n);
        rc = bd_test_write_file(images, ib, 16 + count) || bd_test_write_file(labels, lb, 8 + (size_t)n);
    }
    free(ib);
    free(lb);
    return rc;
}

double bd_test_rel_error(const float *a, const float *b, size_t n)
{
    double diff = 0, scale = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - (double)b[i]);
        if (d > diff || d != d)
            diff = d;
        if (fabs((double)b[i]) > scale)
            scale = fabs((double)b[i]);
    }
    return diff / (scale > 1e-12 ? scale : 1e-12);
}

void bd_test_fill_random(float *x, size_t n, uint64_t seed, float lo, float hi)
{
    uint64_t s = seed * 0x9E3779B97F4A7C15ull + 1;
    for (size_t i = 0; i < n; i++) {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        x[i] = lo + (hi - lo) * (float)((s >> 11) * (1.0 / 9007199254740992.0));
    }
}

double bd_test_output_error(const float *x, int64_t n, const float *w, const float *w_hat,
                            int64_t rows, int64_t L)
{
    double e = 0;
    for (int64_t i = 0; i < n; i++)
        for (int64_t r = 0; r < rows; r++) {
            double v = 0;
            for (int64_t c = 0; c < L; c++)
                v += (double)x[i * L + c] * ((double)w[r * L + c] - w_hat[r * L + c]);
            e += v * v;
        }
    return e;
}

void bd_test_assert_same_floats(const bd_graph *a, const bd_graph *b)
{
    int compared = 0;
    for (int v = 0; v < a->nvalues; v++) {
        const bd_tensor *ta = a->values[v].init;
        if (!ta || ta->dtype != BD_F32)
            continue;
        int u = bd_graph_find(b, a->values[v].name);
        assert_true(u >= 0);
        assert_memory_equal(ta->data, b->values[u].init->data,
                            (size_t)bd_tensor_count(ta) * sizeof(float));
        compared++;
    }
    assert_true(compared > 0);
}
