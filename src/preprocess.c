/* Image -> network input, following torchvision's PIL pipeline
 * (Resize, CenterCrop, ToTensor, Normalize) closely enough that a model
 * trained with it sees the same numbers: the resize reproduces Pillow's
 * Resample.c (a triangle filter stretched by the downscale factor, 22-bit
 * fixed-point coefficients, horizontal pass then vertical, each rounded to
 * 8 bits), and the gray conversion is Pillow's convert("L"). */
#include "data.h"

#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

void bd_preprocess_default(bd_preprocess *pp)
{
    memset(pp, 0, sizeof *pp);
    pp->channels = 1;
    for (int c = 0; c < 3; c++)
        pp->std[c] = 1.0f;
}

/* ---- planning: the sizes an image goes through ---- */

enum { MAX_STEPS = 4 };

typedef struct step {
    int resize; /* 1: resample to w x h; 0: centre crop (or pad) to w x h */
    int w, h;
} step;

typedef struct plan {
    int n;
    step steps[MAX_STEPS];
    int w, h; /* the size after the last step */
} plan;

static void add_step(plan *p, int resize, int64_t w, int64_t h)
{
    /* Sizes beyond int are refused later by the allocation limit. */
    int wi = w > INT_MAX ? INT_MAX : (int)w, hi = h > INT_MAX ? INT_MAX : (int)h;
    if (wi == p->w && hi == p->h)
        return;
    p->steps[p->n++] = (step){resize, wi, hi};
    p->w = wi;
    p->h = hi;
}

/* torchvision's Resize(int): the shorter side becomes `side`, the longer
 * one keeps the aspect ratio, rounded down. */
static void add_resize(plan *p, int side)
{
    if (p->w <= 0 || p->h <= 0)
        return;
    if (p->w <= p->h)
        add_step(p, 1, side, (int64_t)side * p->h / p->w);
    else
        add_step(p, 1, (int64_t)side * p->w / p->h, side);
}

static void make_plan(const bd_preprocess *pp, int w, int h, plan *p)
{
    p->n = 0;
    p->w = w;
    p->h = h;
    if (pp->resize > 0)
        add_resize(p, pp->resize);
    if (pp->crop > 0)
        add_step(p, 0, pp->crop, pp->crop);
    if (pp->out_h > 0 && pp->out_w > 0 && (p->w != pp->out_w || p->h != pp->out_h)) {
        add_resize(p, pp->out_h > pp->out_w ? pp->out_h : pp->out_w);
        add_step(p, 0, pp->out_w, pp->out_h);
    }
}

void bd_preprocess_size(const bd_preprocess *pp, int w, int h, int *out_w, int *out_h)
{
    plan p;
    make_plan(pp, w, h, &p);
    *out_w = p.w;
    *out_h = p.h;
}

/* ---- resampling, after Pillow's Resample.c ---- */

enum { PRECISION_BITS = 32 - 8 - 2 };

typedef struct coeffs {
    int ksize;
    int *first; /* first input index of each output */
    int *count; /* inputs it uses */
    int32_t *k; /* ksize fixed-point weights per output */
} coeffs;

static void coeffs_free(coeffs *c)
{
    free(c->first);
    free(c->count);
    free(c->k);
}

static double triangle(double x)
{
    x = fabs(x);
    return x < 1.0 ? 1.0 - x : 0.0;
}

static bd_status make_coeffs(int in_size, int out_size, coeffs *c)
{
    double scale = (double)in_size / out_size;
    /* When shrinking, the filter widens so every input pixel contributes:
     * that is the antialiasing. */
    double filterscale = scale < 1.0 ? 1.0 : scale;
    double support = filterscale;
    double inverse = 1.0 / filterscale; /* multiplied, not divided, as Pillow does */
    int ksize = (int)ceil(support) * 2 + 1;
    memset(c, 0, sizeof *c);
    c->ksize = ksize;
    c->first = malloc((size_t)out_size * sizeof *c->first);
    c->count = malloc((size_t)out_size * sizeof *c->count);
    c->k = calloc((size_t)out_size * (size_t)ksize, sizeof *c->k);
    double *w = malloc((size_t)ksize * sizeof *w);
    if (!c->first || !c->count || !c->k || !w) {
        coeffs_free(c);
        free(w);
        return bd_fail(BD_ENOMEM, "out of memory resizing %d to %d pixels", in_size, out_size);
    }
    for (int o = 0; o < out_size; o++) {
        double center = (o + 0.5) * scale;
        /* Pillow truncates after adding 0.5; reproduced as is. */
        int lo = (int)(center - support + 0.5);
        int hi = (int)(center + support + 0.5);
        if (lo < 0)
            lo = 0;
        if (hi > in_size)
            hi = in_size;
        double total = 0.0;
        for (int x = lo; x < hi; x++) {
            w[x - lo] = triangle((x - center + 0.5) * inverse);
            total += w[x - lo];
        }
        for (int x = 0; x < hi - lo; x++) {
            double v = total != 0.0 ? w[x] / total : w[x];
            double fixed = v * (1 << PRECISION_BITS);
            c->k[(size_t)o * ksize + x] = (int32_t)(v < 0 ? fixed - 0.5 : fixed + 0.5);
        }
        c->first[o] = lo;
        c->count[o] = hi - lo;
    }
    free(w);
    return BD_OK;
}

static uint8_t clip8(int64_t v)
{
    if (v >= (int64_t)256 << PRECISION_BITS)
        return 255;
    if (v <= 0)
        return 0;
    return (uint8_t)(v >> PRECISION_BITS);
}

/* Resamples along one axis. A "line" runs along that axis (a row for the
 * horizontal pass, a column for the vertical one); `along` is the distance
 * between neighbouring pixels on a line and `across` between lines, in
 * bytes, the same in the input and the output. */
static void resample_axis(const uint8_t *in, uint8_t *out, int lines, size_t in_across,
                          size_t in_along, size_t out_across, size_t out_along, int out_size,
                          int channels, const coeffs *c)
{
    for (int l = 0; l < lines; l++) {
        const uint8_t *src = in + (size_t)l * in_across;
        uint8_t *dst = out + (size_t)l * out_across;
        for (int o = 0; o < out_size; o++) {
            const int32_t *k = c->k + (size_t)o * c->ksize;
            const uint8_t *s0 = src + (size_t)c->first[o] * in_along;
            for (int ch = 0; ch < channels; ch++) {
                int64_t acc = 1 << (PRECISION_BITS - 1);
                for (int x = 0; x < c->count[o]; x++)
                    acc += (int64_t)s0[(size_t)x * in_along + ch] * k[x];
                dst[(size_t)o * out_along + ch] = clip8(acc);
            }
        }
    }
}

/* One pass along the axis whose size changes; the other is copied. */
static bd_status resize_pass(const bd_image *in, int w, int h, int horizontal, bd_image *out)
{
    int in_size = horizontal ? in->width : in->height, out_size = horizontal ? w : h;
    coeffs c;
    BD_TRY(bd_image_alloc(out, w, h, in->channels, "resized image"));
    bd_status s = make_coeffs(in_size, out_size, &c);
    if (s != BD_OK) {
        bd_image_free(out);
        return s;
    }
    size_t px = (size_t)in->channels;
    if (horizontal)
        resample_axis(in->pixels, out->pixels, h, (size_t)in->width * px, px,
                      (size_t)w * px, px, w, in->channels, &c);
    else
        resample_axis(in->pixels, out->pixels, w, px, (size_t)in->width * px, px,
                      (size_t)w * px, h, in->channels, &c);
    coeffs_free(&c);
    return BD_OK;
}

/* Replaces *cur by next, freeing *cur if this pipeline allocated it. */
static void advance(bd_image *cur, int *owned, bd_image *next)
{
    if (*owned)
        bd_image_free(cur);
    *cur = *next;
    *owned = 1;
}

static bd_status resize(const bd_image *in, int w, int h, bd_image *out)
{
    bd_image cur = *in, next;
    int owned = 0;
    if (w != in->width) {
        BD_TRY(resize_pass(&cur, w, cur.height, 1, &next));
        advance(&cur, &owned, &next);
    }
    if (h != in->height) {
        bd_status s = resize_pass(&cur, w, h, 0, &next);
        if (s != BD_OK) {
            if (owned)
                bd_image_free(&cur);
            return s;
        }
        advance(&cur, &owned, &next);
    }
    *out = cur;
    return BD_OK;
}

/* Where a centre crop of `out` starts in `in`. torchvision computes
 * round((in - out) / 2) with Python's round (half to even), and when the crop
 * is larger it pads (out - in) // 2 zeros before the image. */
static int crop_offset(int in, int out)
{
    if (in < out)
        return -((out - in) / 2);
    int d = in - out, k = d / 2;
    return (d % 2 && k % 2) ? k + 1 : k;
}

static bd_status crop(const bd_image *in, int w, int h, bd_image *out)
{
    BD_TRY(bd_image_alloc(out, w, h, in->channels, "cropped image"));
    int x0 = crop_offset(in->width, w), y0 = crop_offset(in->height, h);
    size_t px = (size_t)in->channels;
    for (int y = 0; y < h; y++) {
        uint8_t *dst = out->pixels + (size_t)y * w * px;
        int sy = y + y0;
        memset(dst, 0, (size_t)w * px);
        if (sy < 0 || sy >= in->height)
            continue;
        int from = x0 < 0 ? -x0 : 0;
        int to = in->width - x0 < w ? in->width - x0 : w;
        memcpy(dst + (size_t)from * px,
               in->pixels + ((size_t)sy * in->width + (size_t)(from + x0)) * px,
               (size_t)(to - from) * px);
    }
    return BD_OK;
}

/* Pillow's convert("L"): ITU-R 601-2 luma in 16-bit fixed point, rounded. */
static uint8_t luma(const uint8_t *rgb)
{
    return (uint8_t)((rgb[0] * 19595u + rgb[1] * 38470u + rgb[2] * 7471u + 0x8000u) >> 16);
}

/* ToTensor then Normalize, in the same float operations. */
static void to_float(const bd_image *img, const bd_preprocess *pp, float *out)
{
    size_t plane = (size_t)img->width * (size_t)img->height;
    for (size_t i = 0; i < plane; i++) {
        const uint8_t *p = img->pixels + i * (size_t)img->channels;
        for (int c = 0; c < pp->channels; c++) {
            uint8_t v = img->channels == pp->channels ? p[c]
                        : img->channels == 1          ? p[0]
                                                      : luma(p);
            out[(size_t)c * plane + i] = ((float)v / 255.0f - pp->mean[c]) / pp->std[c];
        }
    }
}

static bd_status check(const bd_image *img, const bd_preprocess *pp)
{
    if (pp->channels != 1 && pp->channels != 3)
        return bd_fail(BD_EINVAL, "preprocessing: %d channels (1 or 3 supported)", pp->channels);
    if (pp->resize < 0 || pp->crop < 0 || pp->out_h < 0 || pp->out_w < 0)
        return bd_fail(BD_EINVAL, "preprocessing: negative size (resize %d, crop %d, %d x %d)",
                       pp->resize, pp->crop, pp->out_w, pp->out_h);
    for (int c = 0; c < pp->channels; c++)
        if (pp->std[c] == 0.0f || !isfinite(pp->std[c]) || !isfinite(pp->mean[c]))
            return bd_fail(BD_EINVAL, "preprocessing: channel %d has mean %g, std %g", c,
                           (double)pp->mean[c], (double)pp->std[c]);
    if (!img->pixels || img->width <= 0 || img->height <= 0 ||
        (img->channels != 1 && img->channels != 3))
        return bd_fail(BD_EINVAL, "preprocessing: a %d x %d image with %d channels",
                       img->width, img->height, img->channels);
    return BD_OK;
}

bd_status bd_image_preprocess(const bd_image *img, const bd_preprocess *pp, float *out)
{
    BD_TRY(check(img, pp));
    plan p;
    make_plan(pp, img->width, img->height, &p);
    bd_image cur = *img, next;
    int owned = 0;
    for (int i = 0; i < p.n; i++) {
        const step *st = &p.steps[i];
        bd_status s = (st->resize ? resize : crop)(&cur, st->w, st->h, &next);
        if (s != BD_OK) {
            if (owned)
                bd_image_free(&cur);
            return s;
        }
        advance(&cur, &owned, &next);
    }
    to_float(&cur, pp, out);
    if (owned)
        bd_image_free(&cur);
    return BD_OK;
}
