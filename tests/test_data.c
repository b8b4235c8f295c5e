/* Datasets (IDX, folders, lists), shuffling, and the model metadata that
 * says how to preprocess.
 *
 * Fashion-MNIST values were read with numpy from Debian's files:
 *   /usr/bin/python3 -c "import gzip, numpy as np; d = '/usr/share/datasets/
 *     fashion-mnist/'; a = np.frombuffer(gzip.open(d + 't10k-images-idx3-
 *     ubyte.gz').read(), np.uint8)[16:].reshape(-1, 28, 28); print(a[i, y, x])"
 * (labels likewise from offset 8 of the labels file). */
#include "bd_test.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "data.h"
#include "graph.h"
#include "model_meta.h"

#define FMNIST "/usr/share/datasets/fashion-mnist/"
#define ROCKET "/usr/lib/python3/dist-packages/skimage/data/rocket.jpg"

/* A path in the temporary folder; each call gets its own buffer, which
 * lives until the program ends. */
static const char *tmp_path(const char *fmt, const char *arg)
{
    static char buf[400][512];
    static int used;
    char name[256];
    assert_true(used < 400);
    char *b = buf[used++];
    snprintf(name, sizeof name, fmt, arg);
    snprintf(b, 512, "%s/%s", bd_test_tmpdir(), name);
    return b;
}

static void need_fmnist(void)
{
    if (access(FMNIST "t10k-images-idx3-ubyte.gz", R_OK) != 0)
        BD_TEST_SKIP("Fashion-MNIST is not installed (dataset-fashion-mnist)");
}

/* The call failed with a message naming `what`. */
static void expect_failure(bd_status s, const char *what)
{
    assert_int_not_equal(s, BD_OK);
    if (!strstr(bd_error_message(), what))
        fail_msg("message '%s' does not name '%s'", bd_error_message(), what);
}

static void test_fmnist(void **state)
{
    (void)state;
    need_fmnist();
    bd_dataset *d;
    assert_int_equal(bd_dataset_open(&d, "fmnist:test", NULL), BD_OK);
    assert_int_equal(bd_dataset_count(d), 10000);
    assert_int_equal(bd_dataset_classes(d), 10);
    assert_string_equal(bd_dataset_class_name(d, 9), "Ankle boot");
    assert_null(bd_dataset_class_name(d, 10));
    assert_string_equal(bd_dataset_spec(d), "fmnist:test");

    bd_image img;
    assert_int_equal(bd_dataset_image(d, 0, &img), BD_OK);
    assert_true(img.width == 28 && img.height == 28 && img.channels == 1);
    assert_int_equal(img.pixels[14 * 28 + 14], 110);
    assert_int_equal(img.pixels[20 * 28 + 20], 245);
    assert_int_equal(img.pixels[0], 0);
    bd_image_free(&img);

    /* the default preprocessing is just v / 255 */
    bd_tensor *x;
    int label;
    assert_int_equal(bd_dataset_get(d, 9999, &x, &label), BD_OK);
    assert_int_equal(label, 5);
    assert_int_equal(x->ndim, 4);
    assert_true(x->dims[0] == 1 && x->dims[1] == 1 && x->dims[2] == 28 && x->dims[3] == 28);
    const float *v = x->data;
    assert_float_equal(v[14 * 28 + 14], 132 / 255.0f, 1e-7);
    assert_float_equal(v[10 * 28 + 5], 5 / 255.0f, 1e-7);
    bd_tensor_free(x);

    static const int first_labels[10] = {9, 2, 1, 1, 6, 1, 4, 6, 5, 7};
    int64_t idx[10] = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9};
    int labels[10];
    assert_int_equal(bd_dataset_batch(d, idx, 10, &x, labels), BD_OK);
    assert_memory_equal(labels, first_labels, sizeof labels);
    bd_tensor_free(x);

    expect_failure(bd_dataset_get(d, 10000, &x, &label), "fmnist:test");
    expect_failure(bd_dataset_get(d, -1, &x, &label), "fmnist:test");
    bd_dataset_free(d);

    assert_int_equal(bd_dataset_open(&d, "fmnist:train", NULL), BD_OK);
    assert_int_equal(bd_dataset_count(d), 60000);
    assert_int_equal(bd_dataset_image(d, 0, &img), BD_OK);
    assert_int_equal(img.pixels[14 * 28 + 14], 217);
    bd_image_free(&img);
    assert_int_equal(bd_dataset_get(d, 59999, &x, &label), BD_OK);
    assert_int_equal(label, 5);
    bd_tensor_free(x);
    bd_dataset_free(d);
}

/* A batch equals its samples fetched one by one, with any preprocessing. */
static void expect_batch_matches(const bd_dataset *d, const int64_t *idx, int n)
{
    bd_tensor *batch;
    int labels[16];
    assert_true(n <= 16);
    assert_int_equal(bd_dataset_batch(d, idx, n, &batch, labels), BD_OK);
    assert_int_equal(batch->dims[0], n);
    size_t per = (size_t)(bd_tensor_count(batch) / n);
    for (int j = 0; j < n; j++) {
        bd_tensor *one;
        int label;
        assert_int_equal(bd_dataset_get(d, idx[j], &one, &label), BD_OK);
        assert_int_equal(label, labels[j]);
        assert_int_equal((size_t)bd_tensor_count(one), per);
        assert_memory_equal(one->data, (const float *)batch->data + j * per, per * sizeof(float));
        bd_tensor_free(one);
    }
    bd_tensor_free(batch);
}

static void test_fmnist_batch_preprocessed(void **state)
{
    (void)state;
    need_fmnist();
    bd_preprocess pp;
    bd_preprocess_default(&pp);
    pp.channels = 3;
    pp.out_h = pp.out_w = 32;
    pp.mean[0] = pp.mean[1] = pp.mean[2] = 0.5f;
    pp.std[0] = pp.std[1] = pp.std[2] = 0.5f;
    bd_dataset *d;
    assert_int_equal(bd_dataset_open(&d, "fmnist:test", &pp), BD_OK);
    int64_t idx[7] = {9999, 0, 17, 5000, 1, 1, 42};
    bd_tensor *x;
    int labels[7];
    assert_int_equal(bd_dataset_batch(d, idx, 7, &x, labels), BD_OK);
    assert_true(x->dims[0] == 7 && x->dims[1] == 3 && x->dims[2] == 32 && x->dims[3] == 32);
    assert_int_equal(labels[0], 5);
    assert_int_equal(labels[1], 9);
    bd_tensor_free(x);
    expect_batch_matches(d, idx, 7);
    bd_dataset_free(d);
}

/* ---- IDX files built here ---- */

static void put_be32(unsigned char *p, uint32_t v)
{
    p[0] = (unsigned char)(v >> 24);
    p[1] = (unsigned char)(v >> 16);
    p[2] = (unsigned char)(v >> 8);
    p[3] = (unsigned char)v;
}

/* An IDX file: `magic`, the dims, then `payload` bytes (i & 0xff); gzipped
 * when the name ends in .gz. */
static const char *write_idx(const char *name, uint32_t magic, int ndim, const uint32_t *dims,
                             size_t payload)
{
    size_t len = 4 + 4 * (size_t)ndim + payload;
    unsigned char *buf = malloc(len);
    assert_non_null(buf);
    put_be32(buf, magic);
    for (int i = 0; i < ndim; i++)
        put_be32(buf + 4 + 4 * i, dims[i]);
    for (size_t i = 0; i < payload; i++)
        buf[4 + 4 * ndim + i] = (unsigned char)i;
    const char *path = tmp_path("%s", name);
    if (strstr(name, ".gz")) {
        gzFile f = gzopen(path, "wb");
        assert_non_null(f);
        assert_int_equal(gzwrite(f, buf, (unsigned)len), (int)len);
        assert_int_equal(gzclose(f), Z_OK);
    } else {
        assert_int_equal(bd_test_write_file(path, buf, len), 0);
    }
    free(buf);
    return path;
}

static const char *idx_spec(const char *images, const char *labels)
{
    static char buf[1200];
    snprintf(buf, sizeof buf, "idx:%s,%s", images, labels);
    return buf;
}

static void test_idx_files(void **state)
{
    (void)state;
    /* three 2 x 3 images, plain and gzipped, with labels 0 1 2 */
    const uint32_t img_dims[3] = {3, 2, 3}, lab_dims[1] = {3};
    const char *images = write_idx("ok-images.gz", 0x803, 3, img_dims, 18);
    const char *plain = write_idx("ok-images", 0x803, 3, img_dims, 18);
    const char *labels = write_idx("ok-labels", 0x801, 1, lab_dims, 3);
    bd_dataset *d;
    for (int gz = 0; gz < 2; gz++) {
        assert_int_equal(bd_dataset_open(&d, idx_spec(gz ? images : plain, labels), NULL), BD_OK);
        assert_int_equal(bd_dataset_count(d), 3);
        assert_int_equal(bd_dataset_classes(d), 3);
        assert_null(bd_dataset_class_name(d, 0));
        bd_image img;
        assert_int_equal(bd_dataset_image(d, 2, &img), BD_OK);
        assert_true(img.width == 3 && img.height == 2);
        assert_int_equal(img.pixels[0], 12);
        assert_int_equal(img.pixels[5], 17);
        bd_image_free(&img);
        bd_dataset_free(d);
    }

    bd_tensor *t;
    /* a gzip file cut short */
    size_t len;
    void *data = bd_test_read_file(images, &len);
    assert_non_null(data);
    const char *cut = tmp_path("%s", "cut-images.gz");
    assert_int_equal(bd_test_write_file(cut, data, len - 10), 0);
    free(data);
    expect_failure(bd_idx_read(cut, 3, &t), cut);
    /* wrong magic: labels where images are expected, and plain garbage */
    expect_failure(bd_idx_read(labels, 3, &t), labels);
    const char *text = tmp_path("%s", "text.gz");
    assert_int_equal(bd_test_write_file(text, "hello, world\n", 13), 0);
    expect_failure(bd_idx_read(text, 3, &t), text);
    /* dims that do not match the data, plain and gzipped */
    const uint32_t four[3] = {4, 2, 3};
    const char *p = write_idx("short-images", 0x803, 3, four, 18);
    expect_failure(bd_idx_read(p, 3, &t), p);
    p = write_idx("short-images.gz", 0x803, 3, four, 18);
    expect_failure(bd_idx_read(p, 3, &t), p);
    p = write_idx("long-images.gz", 0x803, 3, img_dims, 19);
    expect_failure(bd_idx_read(p, 3, &t), p);
    /* claims 2^32-1 images of 2^32-1 x 16: refused before any allocation */
    const uint32_t huge[3] = {0xFFFFFFFFu, 0xFFFFFFFFu, 16};
    p = write_idx("huge-images.gz", 0x803, 3, huge, 64);
    expect_failure(bd_idx_read(p, 3, &t), p);
    const uint32_t big[3] = {1u << 30, 28, 28};
    p = write_idx("big-images.gz", 0x803, 3, big, 64);
    expect_failure(bd_idx_read(p, 3, &t), p);
    p = write_idx("big-images", 0x803, 3, big, 64);
    expect_failure(bd_idx_read(p, 3, &t), p);
    expect_failure(bd_idx_read(tmp_path("%s", "absent.gz"), 1, &t), "absent.gz");

    /* two labels for three images */
    const uint32_t two[1] = {2};
    p = write_idx("two-labels", 0x801, 1, two, 2);
    expect_failure(bd_dataset_open(&d, idx_spec(images, p), NULL), p);
    /* no images at all */
    const uint32_t none[3] = {0, 28, 28};
    p = write_idx("no-images", 0x803, 3, none, 0);
    expect_failure(bd_dataset_open(&d, idx_spec(p, labels), NULL), p);
}

static void test_bad_specs(void **state)
{
    (void)state;
    bd_dataset *d;
    expect_failure(bd_dataset_open(&d, "imagenet:val", NULL), "imagenet:val");
    expect_failure(bd_dataset_open(&d, "fmnist:valid", NULL), "fmnist:valid");
    expect_failure(bd_dataset_open(&d, "idx:only-one-file", NULL), "idx:only-one-file");
    const char *missing = tmp_path("%s", "no-such-folder");
    char spec[600];
    snprintf(spec, sizeof spec, "dir:%s", missing);
    expect_failure(bd_dataset_open(&d, spec, NULL), missing);
    snprintf(spec, sizeof spec, "list:%s", missing);
    expect_failure(bd_dataset_open(&d, spec, NULL), missing);
}

/* ---- folders and lists built here ---- */

/* Saves a w x h gray image of constant value v. */
static void save_gray(const char *path, int w, int h, int v)
{
    bd_image img;
    assert_int_equal(bd_image_alloc(&img, w, h, 1, path), BD_OK);
    memset(img.pixels, v, (size_t)w * h);
    assert_int_equal(bd_image_save_png(path, &img), BD_OK);
    bd_image_free(&img);
}

static void copy_file(const char *from, const char *to)
{
    size_t len;
    void *data = bd_test_read_file(from, &len);
    assert_non_null(data);
    assert_int_equal(bd_test_write_file(to, data, len), 0);
    free(data);
}

static void make_dir(const char *path) { assert_int_equal(mkdir(path, 0777), 0); }

/* tmp/classes/{dog,ant,cat}: sorted, ant = 0, cat = 1, dog = 2. */
static const char *make_class_tree(void)
{
    const char *root = tmp_path("%s", "classes");
    make_dir(root);
    make_dir(tmp_path("%s", "classes/dog"));
    make_dir(tmp_path("%s", "classes/ant"));
    make_dir(tmp_path("%s", "classes/cat"));
    save_gray(tmp_path("%s", "classes/dog/b.png"), 40, 30, 200);
    save_gray(tmp_path("%s", "classes/dog/a.PNG"), 30, 40, 100);
    save_gray(tmp_path("%s", "classes/ant/z.png"), 20, 20, 10);
    save_gray(tmp_path("%s", "classes/cat/m.png"), 25, 50, 50);
    if (access(ROCKET, R_OK) == 0)
        copy_file(ROCKET, tmp_path("%s", "classes/cat/photo.JPG"));
    else
        save_gray(tmp_path("%s", "classes/cat/photo.JPG"), 64, 48, 60);
    /* neither images nor classes */
    assert_int_equal(bd_test_write_file(tmp_path("%s", "classes/cat/readme.txt"), "x", 1), 0);
    assert_int_equal(bd_test_write_file(tmp_path("%s", "classes/dog/.hidden.png"), "x", 1), 0);
    assert_int_equal(bd_test_write_file(tmp_path("%s", "classes/top.png"), "x", 1), 0);
    return root;
}

static void test_dir_dataset(void **state)
{
    (void)state;
    const char *root = make_class_tree();
    char spec[600];
    snprintf(spec, sizeof spec, "dir:%s", root);
    bd_preprocess pp;
    bd_preprocess_default(&pp);
    pp.channels = 3;
    pp.resize = 24;
    pp.crop = 16;
    bd_dataset *d;
    assert_int_equal(bd_dataset_open(&d, spec, &pp), BD_OK);
    assert_int_equal(bd_dataset_count(d), 5);
    assert_int_equal(bd_dataset_classes(d), 3);
    assert_string_equal(bd_dataset_class_name(d, 0), "ant");
    assert_string_equal(bd_dataset_class_name(d, 1), "cat");
    assert_string_equal(bd_dataset_class_name(d, 2), "dog");

    /* samples in class order, files by strcmp within a class ("a.PNG" < "b.png",
     * "m.png" < "photo.JPG") */
    static const int want_labels[5] = {0, 1, 1, 2, 2};
    static const int want_width[5] = {20, 25, 0, 30, 40};
    int64_t idx[5] = {0, 1, 2, 3, 4};
    for (int i = 0; i < 5; i++) {
        bd_image img;
        assert_int_equal(bd_dataset_image(d, i, &img), BD_OK);
        if (want_width[i])
            assert_int_equal(img.width, want_width[i]);
        bd_image_free(&img);
    }
    bd_tensor *x;
    int labels[5];
    assert_int_equal(bd_dataset_batch(d, idx, 5, &x, labels), BD_OK);
    assert_memory_equal(labels, want_labels, sizeof labels);
    assert_true(x->dims[0] == 5 && x->dims[1] == 3 && x->dims[2] == 16 && x->dims[3] == 16);
    /* dog/a.PNG is flat 100 everywhere, in every channel */
    const float *v = (const float *)x->data + 3 * 3 * 16 * 16;
    for (int i = 0; i < 3 * 16 * 16; i++)
        assert_float_equal(v[i], 100 / 255.0f, 1e-6);
    bd_tensor_free(x);
    expect_batch_matches(d, idx, 5);
    bd_dataset_free(d);

    /* without a crop the sizes differ, and the batch names the odd one */
    bd_preprocess_default(&pp);
    assert_int_equal(bd_dataset_open(&d, spec, &pp), BD_OK);
    int64_t two[2] = {0, 3};
    expect_failure(bd_dataset_batch(d, two, 2, &x, labels), "a.PNG");
    bd_dataset_free(d);
}

static void test_dir_failures(void **state)
{
    (void)state;
    bd_dataset *d;
    char spec[600];
    /* a folder without class subfolders */
    const char *flat = tmp_path("%s", "flat");
    make_dir(flat);
    save_gray(tmp_path("%s", "flat/a.png"), 4, 4, 1);
    snprintf(spec, sizeof spec, "dir:%s", flat);
    expect_failure(bd_dataset_open(&d, spec, NULL), flat);
    /* a class folder without images */
    const char *empty = tmp_path("%s", "flat/empty-class");
    make_dir(empty);
    assert_int_equal(bd_test_write_file(tmp_path("%s", "flat/empty-class/notes.txt"), "x", 1), 0);
    expect_failure(bd_dataset_open(&d, spec, NULL), empty);

    /* a broken image among good ones: the batch fails, naming it */
    const char *mixed = tmp_path("%s", "mixed");
    make_dir(mixed);
    make_dir(tmp_path("%s", "mixed/k"));
    for (int i = 0; i < 9; i++) {
        char name[64];
        snprintf(name, sizeof name, "mixed/k/%d.png", i);
        save_gray(tmp_path("%s", name), 8, 8, i);
    }
    const char *bad = tmp_path("%s", "mixed/k/4.png");
    assert_int_equal(bd_test_write_file(bad, "not a png", 9), 0);
    snprintf(spec, sizeof spec, "dir:%s", mixed);
    assert_int_equal(bd_dataset_open(&d, spec, NULL), BD_OK);
    int64_t idx[9] = {8, 7, 6, 5, 4, 3, 2, 1, 0};
    bd_tensor *x = NULL;
    int labels[9];
    expect_failure(bd_dataset_batch(d, idx, 9, &x, labels), bad);
    assert_null(x);
    expect_failure(bd_dataset_get(d, 4, &x, labels), bad);
    bd_dataset_free(d);
}

static const char *write_text(const char *name, const char *text)
{
    const char *path = tmp_path("%s", name);
    assert_int_equal(bd_test_write_file(path, text, strlen(text)), 0);
    return path;
}

static void test_list_dataset(void **state)
{
    (void)state;
    make_dir(tmp_path("%s", "listed"));
    make_dir(tmp_path("%s", "listed/sub dir"));
    save_gray(tmp_path("%s", "listed/one.png"), 6, 6, 11);
    save_gray(tmp_path("%s", "listed/sub dir/two.png"), 6, 6, 22);
    const char *abs = tmp_path("%s", "elsewhere.png");
    save_gray(abs, 6, 6, 33);

    char text[1500];
    /* a relative path, one with a space, an absolute one, CRLF, blank lines */
    snprintf(text, sizeof text, "one.png 3\n\n  sub dir/two.png\t0\r\n%s 7\n\n", abs);
    const char *list = write_text("listed/list.txt", text);
    char spec[600];
    snprintf(spec, sizeof spec, "list:%s", list);
    bd_dataset *d;
    assert_int_equal(bd_dataset_open(&d, spec, NULL), BD_OK);
    assert_int_equal(bd_dataset_count(d), 3);
    assert_int_equal(bd_dataset_classes(d), 8);
    assert_null(bd_dataset_class_name(d, 0));
    int64_t idx[3] = {0, 1, 2};
    bd_tensor *x;
    int labels[3];
    assert_int_equal(bd_dataset_batch(d, idx, 3, &x, labels), BD_OK);
    assert_true(labels[0] == 3 && labels[1] == 0 && labels[2] == 7);
    for (int j = 0; j < 3; j++)
        assert_float_equal(((const float *)x->data)[j * 36], 11 * (j + 1) / 255.0f, 1e-6);
    bd_tensor_free(x);
    expect_batch_matches(d, idx, 3);
    bd_dataset_free(d);

    static const char *const bad_lists[] = {
        "one.png 1\nno-label.png\n",     /* a line without a label */
        "one.png 1\none.png -1\n",       /* negative */
        "one.png 1\none.png 70000\n",    /* beyond BD_MAX_CLASSES */
        "one.png 1\none.png 99999999999999999999\n",
        "one.png one\n",                 /* not a number */
        "one.png 2x\n",
        "\n\n",                          /* no samples */
    };
    for (size_t i = 0; i < sizeof bad_lists / sizeof *bad_lists; i++) {
        const char *path = write_text("listed/bad.txt", bad_lists[i]);
        snprintf(spec, sizeof spec, "list:%s", path);
        expect_failure(bd_dataset_open(&d, spec, NULL), path);
        if (i < 4 && !strstr(bd_error_message(), ":2:"))
            fail_msg("'%s' does not give the line number", bd_error_message());
    }

    /* an entry that is not an image fails when read, naming the file */
    const char *fake = write_text("listed/fake.png", "text");
    const char *path = write_text("listed/fake.txt", "one.png 0\nfake.png 1\n");
    snprintf(spec, sizeof spec, "list:%s", path);
    assert_int_equal(bd_dataset_open(&d, spec, NULL), BD_OK);
    expect_failure(bd_dataset_batch(d, idx, 2, &x, labels), fake);
    bd_dataset_free(d);
}

static void test_permutation(void **state)
{
    (void)state;
    enum { N = 1000 };
    int64_t *a, *b, *c;
    assert_int_equal(bd_permutation(N, 7, &a), BD_OK);
    assert_int_equal(bd_permutation(N, 7, &b), BD_OK);
    assert_int_equal(bd_permutation(N, 8, &c), BD_OK);
    assert_memory_equal(a, b, N * sizeof *a);
    assert_memory_not_equal(a, c, N * sizeof *a);
    unsigned char seen[N] = {0};
    int moved = 0;
    for (int i = 0; i < N; i++) {
        assert_true(a[i] >= 0 && a[i] < N);
        assert_false(seen[a[i]]);
        seen[a[i]] = 1;
        moved += a[i] != i;
    }
    assert_true(moved > N / 2);
    free(a);
    free(b);
    free(c);

    /* the exact order, from an independent Python transcription of
     * splitmix64 + Fisher-Yates with rejection sampling */
    static const int64_t seed42[10] = {0, 9, 5, 8, 6, 4, 7, 2, 1, 3};
    static const int64_t seed0[10] = {6, 3, 2, 9, 8, 1, 4, 7, 0, 5};
    assert_int_equal(bd_permutation(10, 42, &a), BD_OK);
    assert_memory_equal(a, seed42, sizeof seed42);
    free(a);
    assert_int_equal(bd_permutation(10, 0, &a), BD_OK);
    assert_memory_equal(a, seed0, sizeof seed0);
    free(a);

    assert_int_equal(bd_permutation(0, 1, &a), BD_OK);
    free(a);
    assert_int_equal(bd_permutation(1, 1, &a), BD_OK);
    assert_int_equal(a[0], 0);
    free(a);
    assert_int_not_equal(bd_permutation(-1, 1, &a), BD_OK);
}

/* ---- model metadata ---- */

/* A graph whose first input is declared [1, c, h, w] (-1 for unknown). */
static bd_graph *graph_with_input(int64_t c, int64_t h, int64_t w)
{
    bd_graph *g;
    int id;
    assert_int_equal(bd_graph_new(&g), BD_OK);
    assert_int_equal(bd_graph_value(g, "image", &id), BD_OK);
    bd_value *v = &g->values[id];
    v->dtype = BD_F32;
    v->ndim = 4;
    v->dims[0] = 1;
    v->dims[1] = c;
    v->dims[2] = h;
    v->dims[3] = w;
    g->inputs = malloc(sizeof *g->inputs);
    assert_non_null(g->inputs);
    g->inputs[0] = id;
    g->ninputs = 1;
    return g;
}

static void test_model_preprocess(void **state)
{
    (void)state;
    bd_preprocess pp;
    bd_graph *g = graph_with_input(3, 224, 224);
    assert_int_equal(bd_graph_set_meta(g, BD_META_COLOR, "rgb"), BD_OK);
    assert_int_equal(bd_graph_set_meta(g, BD_META_RESIZE, "256"), BD_OK);
    assert_int_equal(bd_graph_set_meta(g, BD_META_CROP, "224"), BD_OK);
    assert_int_equal(bd_graph_set_meta(g, BD_META_MEAN, "0.485,0.456, 0.406"), BD_OK);
    assert_int_equal(bd_graph_set_meta(g, BD_META_STD, "0.229,0.224,0.225"), BD_OK);
    assert_int_equal(bd_model_preprocess(g, &pp), BD_OK);
    assert_int_equal(pp.channels, 3);
    assert_int_equal(pp.resize, 256);
    assert_int_equal(pp.crop, 224);
    assert_true(pp.out_h == 224 && pp.out_w == 224);
    assert_float_equal(pp.mean[1], 0.456f, 1e-7);
    assert_float_equal(pp.std[2], 0.225f, 1e-7);

    /* each bad value fails, naming the key and the value */
    static const struct {
        const char *key, *value;
    } bad[] = {
        {BD_META_RESIZE, "abc"},   {BD_META_RESIZE, "-3"},   {BD_META_CROP, "12px"},
        {BD_META_MEAN, "0.1,x"},   {BD_META_MEAN, "1,2"},    {BD_META_MEAN, "1,2,3,4"},
        {BD_META_STD, "0"},        {BD_META_STD, "nan"},     {BD_META_COLOR, "cmyk"},
        {BD_META_COLOR, "gray"}, /* the input has 3 channels */
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        bd_graph *b = graph_with_input(3, 224, 224);
        assert_int_equal(bd_graph_set_meta(b, bad[i].key, bad[i].value), BD_OK);
        bd_status s = bd_model_preprocess(b, &pp);
        expect_failure(s, bad[i].key);
        if (!strstr(bd_error_message(), bad[i].value))
            fail_msg("'%s' does not quote '%s'", bd_error_message(), bad[i].value);
        bd_graph_free(b);
    }
    bd_graph_free(g);

    /* a gray model: one mean for all channels, size from the input */
    g = graph_with_input(1, 28, 28);
    assert_int_equal(bd_graph_set_meta(g, BD_META_MEAN, "0.5"), BD_OK);
    assert_int_equal(bd_model_preprocess(g, &pp), BD_OK);
    assert_int_equal(pp.channels, 1);
    assert_true(pp.out_h == 28 && pp.out_w == 28);
    assert_true(pp.resize == 0 && pp.crop == 0);
    assert_true(pp.mean[0] == 0.5f && pp.mean[2] == 0.5f && pp.std[0] == 1.0f);
    bd_graph_free(g);

    /* dynamic sizes leave the output size free; the metadata picks colour */
    g = graph_with_input(-1, -1, -1);
    assert_int_equal(bd_graph_set_meta(g, BD_META_COLOR, "rgb"), BD_OK);
    assert_int_equal(bd_model_preprocess(g, &pp), BD_OK);
    assert_int_equal(pp.channels, 3);
    assert_true(pp.out_h == 0 && pp.out_w == 0);
    bd_graph_free(g);

    g = graph_with_input(4, 32, 32);
    expect_failure(bd_model_preprocess(g, &pp), "image");
    bd_graph_free(g);
}

static void test_class_names(void **state)
{
    (void)state;
    char **names;
    int n;
    bd_graph *g = graph_with_input(1, 28, 28);
    assert_int_equal(bd_model_class_names(g, &names, &n), BD_OK);
    assert_null(names);
    assert_int_equal(n, 0);
    assert_int_equal(bd_graph_set_meta(g, BD_META_CLASSES, "T-shirt/top\nTrouser\nAnkle boot\n"),
                     BD_OK);
    assert_int_equal(bd_model_class_names(g, &names, &n), BD_OK);
    assert_int_equal(n, 3);
    assert_string_equal(names[0], "T-shirt/top");
    assert_string_equal(names[2], "Ankle boot");
    bd_class_names_free(names, n);
    assert_int_equal(bd_graph_set_meta(g, BD_META_CLASSES, "a\n\nc"), BD_OK);
    assert_int_equal(bd_model_class_names(g, &names, &n), BD_OK);
    assert_int_equal(n, 3);
    assert_string_equal(names[1], "");
    assert_string_equal(names[2], "c");
    bd_class_names_free(names, n);
    bd_graph_free(g);

    const char *path = write_text("names.txt", "cat\r\ndog\r\nsea lion\r\n");
    assert_int_equal(bd_class_names_load(path, &names, &n), BD_OK);
    assert_int_equal(n, 3);
    assert_string_equal(names[0], "cat");
    assert_string_equal(names[2], "sea lion");
    bd_class_names_free(names, n);
    path = write_text("no-newline.txt", "only");
    assert_int_equal(bd_class_names_load(path, &names, &n), BD_OK);
    assert_int_equal(n, 1);
    assert_string_equal(names[0], "only");
    bd_class_names_free(names, n);

    path = write_text("empty.txt", "");
    expect_failure(bd_class_names_load(path, &names, &n), path);
    path = tmp_path("%s", "absent.txt");
    expect_failure(bd_class_names_load(path, &names, &n), path);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fmnist),
        cmocka_unit_test(test_fmnist_batch_preprocessed),
        cmocka_unit_test(test_idx_files),
        cmocka_unit_test(test_bad_specs),
        cmocka_unit_test(test_dir_dataset),
        cmocka_unit_test(test_dir_failures),
        cmocka_unit_test(test_list_dataset),
        cmocka_unit_test(test_permutation),
        cmocka_unit_test(test_model_preprocess),
        cmocka_unit_test(test_class_names),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
