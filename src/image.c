/* Decoding JPEG and PNG into 8-bit gray or RGB, and writing PNG.
 *
 * Both libraries report fatal errors by longjmp from a callback, so every
 * variable that changes after setjmp lives in a struct in memory (the decoder
 * state below), which longjmp cannot roll back. */
#include "data.h"

#include <limits.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* jpeglib.h uses FILE and size_t without including their headers. */
#include <jerror.h>
#include <jpeglib.h>
#include <png.h>

#include "fileio.h"

enum { WARNING_CAP = 200 };

bd_status bd_image_alloc(bd_image *img, int w, int h, int channels, const char *name)
{
    memset(img, 0, sizeof *img);
    if (w <= 0 || h <= 0)
        return bd_fail(BD_EFORMAT, "%s: image is %d x %d", name, w, h);
    if (channels != 1 && channels != 3)
        return bd_fail(BD_EUNSUPPORTED, "%s: %d channels (1 or 3 supported)", name, channels);
    uint64_t bytes = (uint64_t)w * (uint64_t)h * (uint64_t)channels;
    if (bytes > bd_tensor_limit())
        return bd_fail(BD_ENOMEM, "%s: a %d x %d image needs more than the %zu MiB limit", name,
                       w, h, bd_tensor_limit() >> 20);
    img->pixels = malloc((size_t)bytes);
    if (!img->pixels)
        return bd_fail(BD_ENOMEM, "%s: out of memory for a %d x %d image", name, w, h);
    img->width = w;
    img->height = h;
    img->channels = channels;
    return BD_OK;
}

void bd_image_free(bd_image *img)
{
    if (!img)
        return;
    free(img->pixels);
    memset(img, 0, sizeof *img);
}

/* ---- JPEG ---- */

struct jpeg_state {
    struct jpeg_error_mgr err; /* first, so libjpeg's pointer is ours too */
    jmp_buf jump;
    const char *name;
    bd_status status;
    int in_pixels;
    char warning[JMSG_LENGTH_MAX];
};

static void jpeg_on_error(j_common_ptr cinfo)
{
    struct jpeg_state *st = (struct jpeg_state *)cinfo->err;
    char msg[JMSG_LENGTH_MAX];
    cinfo->err->format_message(cinfo, msg);
    int oom = cinfo->err->msg_code == JERR_OUT_OF_MEMORY ||
              cinfo->err->msg_code == JERR_NO_BACKING_STORE;
    st->status = bd_fail(oom ? BD_ENOMEM : BD_EFORMAT, "%s: %s", st->name, msg);
    longjmp(st->jump, 1);
}

/* When the compressed data is cut short or corrupt, libjpeg merely warns and
 * makes up the missing pixels; such images are refused. Warnings about the
 * headers, and about stray bytes between markers, leave the pixels alone. */
static void jpeg_on_message(j_common_ptr cinfo, int level)
{
    struct jpeg_state *st = (struct jpeg_state *)cinfo->err;
    if (level < 0 && st->in_pixels && cinfo->err->msg_code != JWRN_EXTRANEOUS_DATA &&
        !st->warning[0])
        cinfo->err->format_message(cinfo, st->warning);
}

static bd_status decode_jpeg(const unsigned char *data, size_t len, const char *name,
                             bd_image *img)
{
    struct jpeg_decompress_struct cinfo;
    struct jpeg_state st = {.name = name};
    cinfo.err = jpeg_std_error(&st.err);
    st.err.error_exit = jpeg_on_error;
    st.err.emit_message = jpeg_on_message;
    if (setjmp(st.jump)) {
        jpeg_destroy_decompress(&cinfo);
        bd_image_free(img);
        return st.status;
    }
    jpeg_create_decompress(&cinfo);
    /* Progressive files buffer the whole image in libjpeg's own memory. */
    cinfo.mem->max_memory_to_use =
        bd_tensor_limit() > (size_t)LONG_MAX ? LONG_MAX : (long)bd_tensor_limit();
    jpeg_mem_src(&cinfo, data, (unsigned long)len);
    jpeg_read_header(&cinfo, TRUE);

    int gray = cinfo.jpeg_color_space == JCS_GRAYSCALE;
    cinfo.out_color_space = gray ? JCS_GRAYSCALE : JCS_RGB;
    bd_status s = cinfo.jpeg_color_space == JCS_CMYK || cinfo.jpeg_color_space == JCS_YCCK
                      ? bd_fail(BD_EUNSUPPORTED, "%s: CMYK JPEG images are not supported", name)
                      : bd_image_alloc(img, (int)cinfo.image_width, (int)cinfo.image_height,
                                       gray ? 1 : 3, name);
    if (s != BD_OK) {
        jpeg_destroy_decompress(&cinfo);
        return s;
    }
    st.in_pixels = 1;
    jpeg_start_decompress(&cinfo);
    size_t stride = (size_t)img->width * (size_t)img->channels;
    while (cinfo.output_scanline < cinfo.output_height) {
        JSAMPROW row = img->pixels + (size_t)cinfo.output_scanline * stride;
        jpeg_read_scanlines(&cinfo, &row, 1);
    }
    /* No jpeg_finish_decompress: what follows the last scan cannot change
     * the pixels, so a missing end marker is no reason to refuse them. */
    jpeg_destroy_decompress(&cinfo);
    if (st.warning[0]) {
        bd_image_free(img);
        return bd_fail(BD_EFORMAT, "%s: %s", name, st.warning);
    }
    return BD_OK;
}

/* ---- PNG ---- */

/* Shared by reading (data, pos, rows) and writing (out, cap); len is the
 * size of either. */
struct png_state {
    const char *name;
    bd_status code; /* what a libpng error means */
    const unsigned char *data;
    size_t len, pos;
    png_bytep *rows;
    unsigned char *out;
    size_t cap;
    int in_pixels;
    char warning[WARNING_CAP];
};

static void png_on_error(png_structp png, png_const_charp msg)
{
    struct png_state *st = png_get_error_ptr(png);
    bd_fail(st->code, "%s: %s", st->name, msg);
    png_longjmp(png, 1);
}

/* As with JPEG: a warning while the image data is read means it is short or
 * corrupt; earlier ones (a bad colour profile, say) leave the pixels alone. */
static void png_on_warning(png_structp png, png_const_charp msg)
{
    struct png_state *st = png_get_error_ptr(png);
    if (st->in_pixels && !st->warning[0])
        snprintf(st->warning, sizeof st->warning, "%s", msg);
}

static void png_read_memory(png_structp png, png_bytep out, size_t n)
{
    struct png_state *st = png_get_io_ptr(png);
    if (n > st->len - st->pos)
        png_error(png, "file is truncated");
    memcpy(out, st->data + st->pos, n);
    st->pos += n;
}

static bd_status decode_png(const unsigned char *data, size_t len, const char *name,
                            bd_image *img)
{
    struct png_state st = {.name = name, .code = BD_EFORMAT, .data = data, .len = len};
    png_structp png =
        png_create_read_struct(PNG_LIBPNG_VER_STRING, &st, png_on_error, png_on_warning);
    png_infop info = png ? png_create_info_struct(png) : NULL;
    if (!info) {
        png_destroy_read_struct(&png, NULL, NULL);
        return bd_fail(BD_ENOMEM, "%s: out of memory", name);
    }
    if (setjmp(png_jmpbuf(png))) {
        png_destroy_read_struct(&png, &info, NULL);
        free(st.rows);
        bd_image_free(img);
        return st.code;
    }
    png_set_read_fn(png, &st, png_read_memory);
    png_read_info(png, info);
    int color = png_get_color_type(png, info);
    if (color == PNG_COLOR_TYPE_PALETTE)
        png_set_palette_to_rgb(png);
    if (color == PNG_COLOR_TYPE_GRAY && png_get_bit_depth(png, info) < 8)
        png_set_expand_gray_1_2_4_to_8(png);
    /* The high byte, as PIL reads 16-bit RGB. */
    png_set_strip_16(png);
    png_set_strip_alpha(png);
    png_set_interlace_handling(png);
    png_read_update_info(png, info);

    int w = (int)png_get_image_width(png, info), h = (int)png_get_image_height(png, info);
    bd_status s = bd_image_alloc(img, w, h, png_get_channels(png, info), name);
    if (s == BD_OK && !(st.rows = malloc((size_t)h * sizeof *st.rows)))
        s = bd_fail(BD_ENOMEM, "%s: out of memory", name);
    if (s != BD_OK) {
        png_destroy_read_struct(&png, &info, NULL);
        bd_image_free(img);
        return s;
    }
    for (int y = 0; y < h; y++)
        st.rows[y] = img->pixels + (size_t)y * (size_t)w * (size_t)img->channels;
    st.in_pixels = 1;
    png_read_image(png, st.rows);
    /* No png_read_end: chunks after the image data cannot change it. */
    png_destroy_read_struct(&png, &info, NULL);
    free(st.rows);
    if (st.warning[0]) {
        bd_image_free(img);
        return bd_fail(BD_EFORMAT, "%s: %s", name, st.warning);
    }
    return BD_OK;
}

bd_status bd_image_decode(const void *data, size_t len, const char *name, bd_image *img)
{
    static const unsigned char jpeg_magic[3] = {0xFF, 0xD8, 0xFF};
    memset(img, 0, sizeof *img);
    if (len >= sizeof jpeg_magic && memcmp(data, jpeg_magic, sizeof jpeg_magic) == 0)
        return decode_jpeg(data, len, name, img);
    if (len >= 8 && png_sig_cmp(data, 0, 8) == 0)
        return decode_png(data, len, name, img);
    return bd_fail(BD_EFORMAT, "%s: not a JPEG or PNG image", name);
}

bd_status bd_image_load(const char *path, bd_image *img)
{
    void *data;
    size_t len;
    memset(img, 0, sizeof *img);
    BD_TRY(bd_read_file(path, bd_tensor_limit(), &data, &len));
    bd_status s = bd_image_decode(data, len, path, img);
    free(data);
    return s;
}

static void png_write_memory(png_structp png, png_bytep data, size_t n)
{
    struct png_state *st = png_get_io_ptr(png);
    if (n > st->cap - st->len) {
        size_t cap = st->cap ? st->cap : 1 << 16;
        while (cap - st->len < n)
            cap *= 2;
        unsigned char *p = realloc(st->out, cap);
        if (!p)
            png_error(png, "out of memory");
        st->out = p;
        st->cap = cap;
    }
    memcpy(st->out + st->len, data, n);
    st->len += n;
}

static void png_flush_memory(png_structp png) { (void)png; }

/* Encodes into st->out (st->len bytes). */
static bd_status encode_png(struct png_state *st, const bd_image *img)
{
    png_structp png =
        png_create_write_struct(PNG_LIBPNG_VER_STRING, st, png_on_error, png_on_warning);
    png_infop info = png ? png_create_info_struct(png) : NULL;
    if (!info) {
        png_destroy_write_struct(&png, NULL);
        return bd_fail(BD_ENOMEM, "%s: out of memory", st->name);
    }
    if (setjmp(png_jmpbuf(png))) {
        png_destroy_write_struct(&png, &info);
        return st->code;
    }
    png_set_write_fn(png, st, png_write_memory, png_flush_memory);
    png_set_IHDR(png, info, (png_uint_32)img->width, (png_uint_32)img->height, 8,
                 img->channels == 1 ? PNG_COLOR_TYPE_GRAY : PNG_COLOR_TYPE_RGB,
                 PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    png_write_info(png, info);
    size_t stride = (size_t)img->width * (size_t)img->channels;
    for (int y = 0; y < img->height; y++)
        png_write_row(png, img->pixels + (size_t)y * stride);
    png_write_end(png, NULL);
    png_destroy_write_struct(&png, &info);
    return BD_OK;
}

bd_status bd_image_save_png(const char *path, const bd_image *img)
{
    if (!img->pixels || img->width <= 0 || img->height <= 0 ||
        (img->channels != 1 && img->channels != 3))
        return bd_fail(BD_EINVAL, "%s: cannot save a %d x %d image with %d channels", path,
                       img->width, img->height, img->channels);
    struct png_state st = {.name = path, .code = BD_ENOMEM};
    bd_status s = encode_png(&st, img);
    if (s == BD_OK) {
        const void *chunk = st.out;
        s = bd_write_file_atomic(path, 1, &chunk, &st.len);
    }
    free(st.out);
    return s;
}
