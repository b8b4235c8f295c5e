#include "augment.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rng.h"

bd_status bd_augment_parse(const char *where, const char *spec, bd_augment *a)
{
    bd_augment r = {.is_set = 1};
    if (strcmp(spec, "none") == 0) {
        *a = r;
        return BD_OK;
    }
    char buf[128];
    if (strlen(spec) >= sizeof buf)
        return bd_fail(BD_EINVAL, "%s: augment '%s' is too long", where, spec);
    strcpy(buf, spec);
    for (char *save = NULL, *item = strtok_r(buf, ",", &save); item;
         item = strtok_r(NULL, ",", &save)) {
        char *end;
        if (strcmp(item, "flip") == 0)
            r.flip = 1;
        else if (strcmp(item, "rrc") == 0)
            r.resized = 1;
        else if (strncmp(item, "crop=", 5) == 0) {
            long p = strtol(item + 5, &end, 10);
            if (end == item + 5 || *end || p < 1 || p > 64)
                return bd_fail(BD_EINVAL, "%s: augment crop=P takes P in 1..64, not '%s'", where,
                               item + 5);
            r.pad = (int)p;
        } else
            return bd_fail(BD_EINVAL,
                           "%s: augment '%s' is not one of none, crop=P, rrc, flip", where, item);
    }
    if (r.pad && r.resized)
        return bd_fail(BD_EINVAL, "%s: augment takes crop=P or rrc, not both", where);
    *a = r;
    return BD_OK;
}

void bd_augment_default(const char *dataset_spec, bd_augment *a)
{
    int idx = strncmp(dataset_spec, "fmnist:", 7) == 0 || strncmp(dataset_spec, "idx:", 4) == 0;
    *a = (bd_augment){.pad = idx ? 2 : 0, .resized = !idx, .flip = 1, .is_set = 1};
}

void bd_augment_describe(const bd_augment *a, char *buf, size_t cap)
{
    if (!a->pad && !a->resized && !a->flip) {
        snprintf(buf, cap, "none");
        return;
    }
    char crop[16] = "";
    if (a->pad)
        snprintf(crop, sizeof crop, "crop=%d", a->pad);
    snprintf(buf, cap, "%s%s%s%s", crop, a->resized ? "rrc" : "",
             (a->pad || a->resized) && a->flip ? "," : "", a->flip ? "flip" : "");
}

/* Bilinear sample of plane p (h x w) at (y, x), edges clamped. */
static float bilinear(const float *p, int h, int w, double y, double x)
{
    y = fmin(fmax(y, 0), h - 1);
    x = fmin(fmax(x, 0), w - 1);
    int y0 = (int)y, x0 = (int)x;
    int y1 = y0 + 1 < h ? y0 + 1 : y0, x1 = x0 + 1 < w ? x0 + 1 : x0;
    double fy = y - y0, fx = x - x0;
    double top = p[y0 * w + x0] * (1 - fx) + p[y0 * w + x1] * fx;
    double bot = p[y1 * w + x0] * (1 - fx) + p[y1 * w + x1] * fx;
    return (float)(top * (1 - fy) + bot * fy);
}

/* torchvision's RandomResizedCrop window: ten tries at a random area and
 * log-uniform aspect, else the whole image. */
static void rrc_window(uint64_t *rng, int h, int w, double *y0, double *x0, double *ch, double *cw)
{
    for (int t = 0; t < 10; t++) {
        double area = (double)h * w * (0.08 + 0.92 * bd_rng_uniform(rng));
        double ar = exp(log(3.0 / 4) + (log(4.0 / 3) - log(3.0 / 4)) * bd_rng_uniform(rng));
        double cwt = round(sqrt(area * ar)), cht = round(sqrt(area / ar));
        if (cwt >= 1 && cht >= 1 && cwt <= w && cht <= h) {
            *y0 = floor(bd_rng_uniform(rng) * (h - cht + 1));
            *x0 = floor(bd_rng_uniform(rng) * (w - cwt + 1));
            *ch = cht;
            *cw = cwt;
            return;
        }
    }
    *y0 = *x0 = 0;
    *ch = h;
    *cw = w;
}

bd_status bd_augment_batch(const bd_augment *a, const bd_preprocess *pp, bd_tensor *x,
                           uint64_t seed, int64_t first)
{
    if (!a->pad && !a->resized && !a->flip)
        return BD_OK;
    if (x->ndim != 4)
        return bd_fail(BD_EINVAL, "augment: images are [n, C, H, W], not %d-dimensional",
                       x->ndim);
    const int64_t n = x->dims[0], c = x->dims[1], h = x->dims[2], w = x->dims[3];
    float *tmp = malloc((size_t)(h * w) * sizeof *tmp);
    if (!tmp)
        return bd_fail(BD_ENOMEM, "augment: out of memory");
    float *data = x->data;
    for (int64_t i = 0; i < n; i++) {
        uint64_t rng = bd_rng_stream(seed, 0xA0, (uint64_t)(first + i), 0);
        int64_t dy = 0, dx = 0;
        double y0 = 0, x0 = 0, ch = (double)h, cw = (double)w;
        if (a->pad) {
            dy = (int64_t)bd_rng_below(&rng, (uint64_t)(2 * a->pad + 1)) - a->pad;
            dx = (int64_t)bd_rng_below(&rng, (uint64_t)(2 * a->pad + 1)) - a->pad;
        }
        if (a->resized)
            rrc_window(&rng, (int)h, (int)w, &y0, &x0, &ch, &cw);
        int flip = a->flip && (bd_splitmix64(&rng) >> 63);
        for (int64_t k = 0; k < c; k++) {
            float *p = data + (i * c + k) * h * w;
            const int ci = pp && pp->channels == 3 && k < 3 ? (int)k : 0;
            const float black = pp && pp->std[ci] != 0 ? -pp->mean[ci] / pp->std[ci] : 0.0f;
            memcpy(tmp, p, (size_t)(h * w) * sizeof *tmp);
            for (int64_t yy = 0; yy < h; yy++)
                for (int64_t xx = 0; xx < w; xx++) {
                    const int64_t sx = flip ? w - 1 - xx : xx;
                    float v;
                    if (a->resized)
                        v = bilinear(tmp, (int)h, (int)w, y0 + (yy + 0.5) * ch / h - 0.5,
                                     x0 + (sx + 0.5) * cw / w - 0.5);
                    else {
                        const int64_t y = yy + dy, xs = sx + dx;
                        v = y >= 0 && y < h && xs >= 0 && xs < w ? tmp[y * w + xs] : black;
                    }
                    p[yy * w + xx] = v;
                }
        }
    }
    free(tmp);
    return BD_OK;
}
