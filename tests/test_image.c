/* Image decoding, PNG writing and preprocessing, checked against Pillow.
 *
 * The photos are the ones Debian's python3-skimage ships. Expected pixel
 * values were read with Pillow 9.4 (the same libjpeg-turbo 2.1.5 as here):
 *   /usr/bin/python3 -c 'from PIL import Image; import numpy as np;
 *     a = np.asarray(Image.open(F).convert(MODE)); print(a[y, x])'
 * and for the resizes, torchvision's pipeline done by hand in Pillow:
 *   Image.open(F).resize((W, H), Image.BILINEAR).crop((L, T, L + C, T + C))
 * with (W, H) from Resize's shorter-side rule and (L, T) = round((size-C)/2). */
#include "bd_test.h"

#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jpeglib.h>

#include "data.h"

#define SKIMAGE "/usr/lib/python3/dist-packages/skimage/data/"

static const char *photo(const char *name)
{
    static char buf[512];
    snprintf(buf, sizeof buf, SKIMAGE "%s", name);
    if (access(buf, R_OK) != 0)
        BD_TEST_SKIP("%s is not installed (python3-skimage)", buf);
    return buf;
}

/* A path in the temporary folder; each call gets its own buffer, which
 * lives until the program ends. */
static const char *tmp_path(const char *name)
{
    static char buf[64][512];
    static int used;
    assert_true(used < 64);
    char *b = buf[used++];
    snprintf(b, 512, "%s/%s", bd_test_tmpdir(), name);
    return b;
}

static void expect_pixel(const bd_image *img, int x, int y, int r, int g, int b)
{
    const uint8_t *p = img->pixels + ((size_t)y * img->width + x) * img->channels;
    int want[3] = {r, g, b};
    for (int c = 0; c < img->channels; c++)
        if (p[c] != want[c])
            fail_msg("pixel (%d, %d) channel %d is %d, expected %d", x, y, c, p[c], want[c]);
}

/* The call must fail, leave no pixels, and name the file in its message. */
static void expect_bad_image(const char *path)
{
    bd_image img;
    bd_status s = bd_image_load(path, &img);
    assert_int_not_equal(s, BD_OK);
    assert_null(img.pixels);
    if (!strstr(bd_error_message(), path))
        fail_msg("message '%s' does not name %s", bd_error_message(), path);
}

static void test_jpeg_photo(void **state)
{
    (void)state;
    bd_image img;
    assert_int_equal(bd_image_load(photo("rocket.jpg"), &img), BD_OK);
    assert_int_equal(img.width, 640);
    assert_int_equal(img.height, 427);
    assert_int_equal(img.channels, 3);
    expect_pixel(&img, 0, 0, 17, 33, 58);
    expect_pixel(&img, 320, 213, 132, 123, 114);
    expect_pixel(&img, 639, 426, 83, 61, 37);
    expect_pixel(&img, 100, 300, 83, 102, 134);
    bd_image_free(&img);

    assert_int_equal(bd_image_load(photo("retina.jpg"), &img), BD_OK);
    assert_int_equal(img.width, 1411);
    assert_int_equal(img.height, 1411);
    expect_pixel(&img, 0, 0, 0, 0, 0);
    expect_pixel(&img, 705, 705, 187, 46, 26);
    bd_image_free(&img);
}

static void test_png_kinds(void **state)
{
    (void)state;
    static const struct {
        const char *file;
        int w, h, channels;
        int x, y, r, g, b;
    } cases[] = {
        {"chelsea.png", 451, 300, 3, 225, 150, 190, 150, 124},    /* RGB */
        {"chelsea.png", 451, 300, 3, 100, 50, 120, 84, 52},
        {"camera.png", 512, 512, 1, 256, 256, 14, 0, 0},          /* gray */
        {"camera.png", 512, 512, 1, 511, 511, 149, 0, 0},
        {"palette_color.png", 10, 10, 3, 5, 5, 102, 51, 255},     /* palette */
        {"palette_gray.png", 10, 10, 3, 9, 9, 25, 25, 25},
        {"foo3x5x4indexed.png", 5, 3, 3, 0, 0, 127, 0, 255},      /* palette + tRNS */
        {"horse.png", 400, 328, 3, 0, 0, 255, 255, 255},          /* alpha 110 here: */
        {"horse.png", 400, 328, 3, 200, 164, 0, 0, 0},            /* stripped, not blended */
        {"chessboard_RGB.png", 200, 200, 3, 100, 10, 205, 205, 205}, /* 16-bit */
        {"checker_bilevel.png", 10, 10, 1, 0, 0, 255, 0, 0},      /* 1-bit */
        {"checker_bilevel.png", 10, 10, 1, 9, 9, 0, 0, 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        bd_image img;
        assert_int_equal(bd_image_load(photo(cases[i].file), &img), BD_OK);
        assert_int_equal(img.width, cases[i].w);
        assert_int_equal(img.height, cases[i].h);
        assert_int_equal(img.channels, cases[i].channels);
        expect_pixel(&img, cases[i].x, cases[i].y, cases[i].r, cases[i].g, cases[i].b);
        bd_image_free(&img);
    }
}

static void fill_pattern(bd_image *img, int w, int h, int channels)
{
    assert_int_equal(bd_image_alloc(img, w, h, channels, "pattern"), BD_OK);
    for (size_t i = 0; i < (size_t)w * h * channels; i++)
        img->pixels[i] = (uint8_t)(i * 37 + i / 7);
}

static void test_png_round_trip(void **state)
{
    (void)state;
    const char *dir = tmp_path("saved");
    assert_int_equal(mkdir(dir, 0777), 0);
    for (int channels = 1; channels <= 3; channels += 2) {
        bd_image img, back;
        fill_pattern(&img, 13, 7, channels);
        const char *path = tmp_path(channels == 1 ? "saved/gray.png" : "saved/rgb.png");
        assert_int_equal(bd_image_save_png(path, &img), BD_OK);
        /* saving over an existing file replaces it */
        assert_int_equal(bd_image_save_png(path, &img), BD_OK);
        assert_int_equal(bd_image_load(path, &back), BD_OK);
        assert_int_equal(back.width, 13);
        assert_int_equal(back.height, 7);
        assert_int_equal(back.channels, channels);
        assert_memory_equal(back.pixels, img.pixels, (size_t)13 * 7 * channels);
        bd_image_free(&img);
        bd_image_free(&back);
    }
    /* no temporary files are left beside the result */
    DIR *dp = opendir(dir);
    assert_non_null(dp);
    struct dirent *e;
    while ((e = readdir(dp)))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..") && strcmp(e->d_name, "gray.png") &&
            strcmp(e->d_name, "rgb.png"))
            fail_msg("stray file %s after saving", e->d_name);
    closedir(dp);

    bd_image bad = {0};
    assert_int_not_equal(bd_image_save_png(tmp_path("none.png"), &bad), BD_OK);
    bd_image img;
    fill_pattern(&img, 2, 2, 1);
    const char *unwritable = tmp_path("no-such-folder/x.png");
    assert_int_not_equal(bd_image_save_png(unwritable, &img), BD_OK);
    assert_non_null(strstr(bd_error_message(), unwritable));
    bd_image_free(&img);
}

/* A smooth test pattern compressed by libjpeg (progressive if asked); free
 * *out with free(). */
static void encode_jpeg(const bd_image *img, int progressive, unsigned char **out,
                        unsigned long *len)
{
    struct jpeg_compress_struct c;
    struct jpeg_error_mgr err;
    c.err = jpeg_std_error(&err);
    jpeg_create_compress(&c);
    *out = NULL;
    *len = 0;
    jpeg_mem_dest(&c, out, len);
    c.image_width = (JDIMENSION)img->width;
    c.image_height = (JDIMENSION)img->height;
    c.input_components = img->channels;
    c.in_color_space = img->channels == 1 ? JCS_GRAYSCALE : JCS_RGB;
    jpeg_set_defaults(&c);
    jpeg_set_quality(&c, 95, TRUE);
    if (progressive)
        jpeg_simple_progression(&c);
    jpeg_start_compress(&c, TRUE);
    while (c.next_scanline < c.image_height) {
        JSAMPROW row = img->pixels + (size_t)c.next_scanline * img->width * img->channels;
        jpeg_write_scanlines(&c, &row, 1);
    }
    jpeg_finish_compress(&c);
    jpeg_destroy_compress(&c);
}

static void test_jpeg_gray_and_progressive(void **state)
{
    (void)state;
    for (int channels = 1; channels <= 3; channels += 2) {
        bd_image img, back;
        assert_int_equal(bd_image_alloc(&img, 48, 32, channels, "gradient"), BD_OK);
        for (int y = 0; y < 32; y++)
            for (int x = 0; x < 48; x++)
                for (int c = 0; c < channels; c++)
                    img.pixels[(y * 48 + x) * channels + c] = (uint8_t)(20 + 2 * (x + y) + 30 * c);
        unsigned char *jpeg;
        unsigned long len;
        /* gray baseline, RGB progressive */
        encode_jpeg(&img, channels == 3, &jpeg, &len);
        assert_int_equal(bd_image_decode(jpeg, len, "in-memory", &back), BD_OK);
        assert_true(back.width == 48 && back.height == 32 && back.channels == channels);
        for (size_t i = 0; i < (size_t)48 * 32 * channels; i++)
            if (abs(back.pixels[i] - img.pixels[i]) > 4)
                fail_msg("byte %zu: %d, was %d", i, back.pixels[i], img.pixels[i]);
        bd_image_free(&back);
        /* progressive files are decoded whole before the first row comes out */
        assert_int_not_equal(bd_image_decode(jpeg, len / 2, "cut-in-memory", &back), BD_OK);
        assert_null(back.pixels);
        assert_non_null(strstr(bd_error_message(), "cut-in-memory"));
        free(jpeg);
        bd_image_free(&img);
    }
}

/* Writes the first `keep` bytes of src to tmp/name. */
static const char *cut_copy(const char *src, const char *name, size_t keep)
{
    size_t len;
    void *data = bd_test_read_file(src, &len);
    assert_non_null(data);
    assert_true(keep <= len);
    const char *path = tmp_path(name);
    assert_int_equal(bd_test_write_file(path, data, keep), 0);
    free(data);
    return path;
}

static void test_corrupt_images(void **state)
{
    (void)state;
    size_t len;
    void *data = bd_test_read_file(photo("chelsea.png"), &len);
    assert_non_null(data);
    free(data);
    expect_bad_image(cut_copy(photo("chelsea.png"), "half.png", len / 2));
    expect_bad_image(cut_copy(photo("chelsea.png"), "header-only.png", 40));
    data = bd_test_read_file(photo("rocket.jpg"), &len);
    assert_non_null(data);
    free(data);
    expect_bad_image(cut_copy(photo("rocket.jpg"), "half.jpg", len / 2));
    expect_bad_image(cut_copy(photo("rocket.jpg"), "head.jpg", 200));
    /* a real truncated file, which Pillow refuses too */
    expect_bad_image(photo("truncated.jpg"));

    const char *text = tmp_path("notes.png");
    assert_int_equal(bd_test_write_file(text, "just some text\n", 15), 0);
    expect_bad_image(text);
    const char *empty = tmp_path("empty.jpg");
    assert_int_equal(bd_test_write_file(empty, "", 0), 0);
    expect_bad_image(empty);
    /* the right magic, then garbage */
    unsigned char fake[64] = {0xFF, 0xD8, 0xFF, 0xE0, 0x00, 0x10};
    const char *garbage = tmp_path("garbage.jpg");
    assert_int_equal(bd_test_write_file(garbage, fake, sizeof fake), 0);
    expect_bad_image(garbage);
    expect_bad_image(tmp_path("missing.png"));
    expect_bad_image(bd_test_tmpdir());

    bd_image img;
    assert_int_not_equal(bd_image_decode("GIF89a....", 10, "buffer-name", &img), BD_OK);
    assert_non_null(strstr(bd_error_message(), "buffer-name"));
}

/* Compares preprocessed output (mean 0, std 1) with Pillow's 8-bit values. */
static void expect_level(const float *out, int w, int h, int c, int x, int y, int want)
{
    float v = out[((size_t)c * h + y) * w + x] * 255.0f;
    if (fabsf(v - (float)want) > 1.0f)
        fail_msg("(%d, %d) channel %d: %.2f, Pillow gives %d", x, y, c, (double)v, want);
}

static float *preprocess(const char *file, const bd_preprocess *pp, int w, int h)
{
    bd_image img;
    int ow, oh;
    assert_int_equal(bd_image_load(file, &img), BD_OK);
    bd_preprocess_size(pp, img.width, img.height, &ow, &oh);
    assert_int_equal(ow, w);
    assert_int_equal(oh, h);
    float *out = malloc(sizeof *out * (size_t)pp->channels * w * h);
    assert_non_null(out);
    assert_int_equal(bd_image_preprocess(&img, pp, out), BD_OK);
    bd_image_free(&img);
    return out;
}

static void test_resize_matches_pillow(void **state)
{
    (void)state;
    bd_preprocess pp;
    bd_preprocess_default(&pp);
    pp.resize = 224;
    pp.crop = 224;
    pp.channels = 3;
    /* 451 x 300 -> 336 x 224, crop from x 56: a 1.34x antialiased shrink */
    static const int chelsea[][6] = {{0, 0, 122, 65, 50, 80},       {112, 112, 190, 149, 122, 158},
                                     {223, 223, 173, 151, 141, 156}, {50, 170, 175, 136, 114, 145},
                                     {200, 30, 166, 131, 109, 139}};
    float *out = preprocess(photo("chelsea.png"), &pp, 224, 224);
    for (int i = 0; i < 5; i++)
        for (int c = 0; c < 3; c++)
            expect_level(out, 224, 224, c, chelsea[i][0], chelsea[i][1], chelsea[i][2 + c]);
    free(out);
    /* gray after the resize, by Pillow's convert("L") */
    pp.channels = 1;
    out = preprocess(photo("chelsea.png"), &pp, 224, 224);
    for (int i = 0; i < 5; i++)
        expect_level(out, 224, 224, 0, chelsea[i][0], chelsea[i][1], chelsea[i][5]);
    free(out);

    /* 640 x 427 JPEG -> 335 x 224; the crop starts at round(55.5) = 56 */
    pp.channels = 3;
    static const int rocket[][5] = {{0, 0, 20, 36, 62},
                                    {112, 112, 127, 120, 103},
                                    {223, 223, 26, 28, 40},
                                    {10, 200, 61, 59, 70}};
    out = preprocess(photo("rocket.jpg"), &pp, 224, 224);
    for (int i = 0; i < 4; i++)
        for (int c = 0; c < 3; c++)
            expect_level(out, 224, 224, c, rocket[i][0], rocket[i][1], rocket[i][2 + c]);
    free(out);

    /* a 13.8x shrink of a gray photo, and a 3.7x enlargement of an RGB one */
    pp.crop = 0;
    pp.resize = 37;
    pp.channels = 1;
    static const int camera[][3] = {{0, 0, 200}, {18, 18, 9}, {36, 36, 143}, {5, 30, 28}};
    out = preprocess(photo("camera.png"), &pp, 37, 37);
    for (int i = 0; i < 4; i++)
        expect_level(out, 37, 37, 0, camera[i][0], camera[i][1], camera[i][2]);
    free(out);
    pp.channels = 3;
    static const int block[][5] = {
        {0, 0, 0, 0, 0}, {18, 18, 124, 139, 113}, {36, 36, 0, 0, 0}, {5, 30, 80, 150, 12}};
    out = preprocess(photo("block.png"), &pp, 37, 37);
    for (int i = 0; i < 4; i++)
        for (int c = 0; c < 3; c++)
            expect_level(out, 37, 37, c, block[i][0], block[i][1], block[i][2 + c]);
    free(out);
}

static void make_image(bd_image *img, int w, int h, int channels, const uint8_t *px)
{
    assert_int_equal(bd_image_alloc(img, w, h, channels, "test"), BD_OK);
    memcpy(img->pixels, px, (size_t)w * h * channels);
}

static void run(const bd_image *img, const bd_preprocess *pp, float *out, size_t n)
{
    int w, h;
    bd_preprocess_size(pp, img->width, img->height, &w, &h);
    assert_int_equal((size_t)pp->channels * w * h, n);
    assert_int_equal(bd_image_preprocess(img, pp, out), BD_OK);
}

static void expect_floats(const float *got, const float *want, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (fabsf(got[i] - want[i]) > 1e-5f)
            fail_msg("element %zu is %g, expected %g", i, (double)got[i], (double)want[i]);
}

static void test_normalise_and_channels(void **state)
{
    (void)state;
    bd_preprocess pp;
    bd_preprocess_default(&pp);
    assert_int_equal(pp.resize, 0);
    assert_int_equal(pp.crop, 0);
    assert_int_equal(pp.channels, 1);
    assert_true(pp.mean[2] == 0.0f && pp.std[2] == 1.0f);

    bd_image gray, rgb;
    make_image(&gray, 2, 2, 1, (const uint8_t[]){0, 51, 102, 255});
    float out[12];
    /* (v / 255 - 0.5) / 0.25 */
    pp.mean[0] = 0.5f;
    pp.std[0] = 0.25f;
    run(&gray, &pp, out, 4);
    expect_floats(out, (const float[]){-2.0f, -1.2f, -0.4f, 2.0f}, 4);

    /* gray to RGB repeats the value under each channel's mean and std */
    pp.channels = 3;
    memcpy(pp.mean, (const float[]){0.0f, 0.5f, 1.0f}, sizeof pp.mean);
    memcpy(pp.std, (const float[]){1.0f, 0.5f, 0.25f}, sizeof pp.std);
    run(&gray, &pp, out, 12);
    expect_floats(out, (const float[]){0, 0.2f, 0.4f, 1, -1, -0.6f, -0.2f, 1, -4, -3.2f, -2.4f, 0},
                  12);

    /* RGB to gray: L = R 299/1000 + G 587/1000 + B 114/1000, rounded as
     * Pillow does: red 76.2 -> 76, green 149.7 -> 150, blue 29.1 -> 29,
     * (10, 20, 30) 18.2 -> 18 */
    make_image(&rgb, 2, 2, 3, (const uint8_t[]){255, 0, 0, 0, 255, 0, 0, 0, 255, 10, 20, 30});
    bd_preprocess_default(&pp);
    run(&rgb, &pp, out, 4);
    expect_floats(out, (const float[]){76 / 255.0f, 150 / 255.0f, 29 / 255.0f, 18 / 255.0f}, 4);
    /* RGB stays planar RGB */
    pp.channels = 3;
    run(&rgb, &pp, out, 12);
    expect_floats(out, (const float[]){1, 0, 0, 10 / 255.0f, 0, 1, 0, 20 / 255.0f, 0, 0, 1,
                                       30 / 255.0f},
                  12);

    /* refused settings */
    pp.channels = 2;
    assert_int_equal(bd_image_preprocess(&rgb, &pp, out), BD_EINVAL);
    pp.channels = 3;
    pp.std[1] = 0.0f;
    assert_int_equal(bd_image_preprocess(&rgb, &pp, out), BD_EINVAL);
    bd_image_free(&gray);
    bd_image_free(&rgb);
}

static void test_crop_geometry(void **state)
{
    (void)state;
    /* pixel value 10 * y + x, so a crop's first value gives its offset */
    uint8_t px[8 * 6];
    for (int y = 0; y < 6; y++)
        for (int x = 0; x < 8; x++)
            px[y * 8 + x] = (uint8_t)(10 * y + x);
    bd_image img;
    make_image(&img, 8, 6, 1, px);
    bd_preprocess pp;
    bd_preprocess_default(&pp);
    float out[25];
    /* torchvision: left = round((8 - 3) / 2) = round(2.5) = 2 (half to even),
     * top = round((6 - 3) / 2) = round(1.5) = 2 */
    pp.crop = 3;
    run(&img, &pp, out, 9);
    for (int i = 0; i < 9; i++)
        assert_float_equal(out[i] * 255.0f, (float)(10 * (2 + i / 3) + 2 + i % 3), 1e-3);
    /* 8 x 6 crop 4: left round(2) = 2, top round(1) = 1 */
    pp.crop = 4;
    run(&img, &pp, out, 16);
    assert_float_equal(out[0] * 255.0f, 12.0f, 1e-3);
    bd_image_free(&img);

    /* a crop larger than the image pads with zeros, (5 - 2) // 2 = 1 before */
    make_image(&img, 2, 2, 1, (const uint8_t[]){255, 255, 255, 255});
    pp.crop = 5;
    pp.mean[0] = 0.5f;
    run(&img, &pp, out, 25);
    for (int y = 0; y < 5; y++)
        for (int x = 0; x < 5; x++) {
            int inside = x >= 1 && x <= 2 && y >= 1 && y <= 2;
            assert_float_equal(out[y * 5 + x], inside ? 0.5f : -0.5f, 1e-6);
        }
    bd_image_free(&img);
}

static void test_output_sizes(void **state)
{
    (void)state;
    bd_preprocess pp;
    bd_preprocess_default(&pp);
    int w, h;
    bd_preprocess_size(&pp, 500, 375, &w, &h);
    assert_true(w == 500 && h == 375);
    /* shorter side to 224, the other 224 * 500 / 375 = 298.7 rounded down */
    pp.resize = 224;
    bd_preprocess_size(&pp, 500, 375, &w, &h);
    assert_true(w == 298 && h == 224);
    bd_preprocess_size(&pp, 375, 500, &w, &h);
    assert_true(w == 224 && h == 298);
    pp.crop = 200;
    bd_preprocess_size(&pp, 375, 500, &w, &h);
    assert_true(w == 200 && h == 200);
    /* a fixed model input: shorter side to max(h, w), then a centre crop */
    bd_preprocess_default(&pp);
    pp.out_h = 24;
    pp.out_w = 32;
    bd_preprocess_size(&pp, 100, 50, &w, &h);
    assert_true(w == 32 && h == 24);
    bd_preprocess_size(&pp, 32, 24, &w, &h);
    assert_true(w == 32 && h == 24);

    /* and the pixels follow: 100 x 50 -> 64 x 32 -> crop 32 x 24 at (16, 4) */
    bd_image img;
    uint8_t px[100 * 50];
    memset(px, 7, sizeof px);
    make_image(&img, 100, 50, 1, px);
    float out[32 * 24];
    run(&img, &pp, out, 32 * 24);
    for (int i = 0; i < 32 * 24; i++)
        assert_float_equal(out[i], 7 / 255.0f, 1e-6);
    bd_image_free(&img);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_jpeg_photo),
        cmocka_unit_test(test_jpeg_gray_and_progressive),
        cmocka_unit_test(test_png_kinds),
        cmocka_unit_test(test_png_round_trip),
        cmocka_unit_test(test_corrupt_images),
        cmocka_unit_test(test_resize_matches_pillow),
        cmocka_unit_test(test_normalise_and_channels),
        cmocka_unit_test(test_crop_geometry),
        cmocka_unit_test(test_output_sizes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
