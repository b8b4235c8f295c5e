#include "conv.h"

#include <cblas.h>
#include <omp.h>
#include <stdlib.h>
#include <math.h>
#include <string.h>

#include "conv_depthwise.h"
#include "conv_planes.h"
#include "conv_pointwise.h"
#include "conv_direct.h"
#include "conv_winograd.h"
#ifdef __AVX512F__
#include "avx512.h"
#endif
#include "fast_math.h"
#include "ops.h"

/* Pads for one spatial axis under auto_pad (ONNX Conv semantics). */
static void auto_pads(const char *mode, int64_t in, int64_t k, int64_t s, int64_t d,
                      int64_t *begin, int64_t *end)
{
    int64_t out = (in + s - 1) / s;
    int64_t total = (out - 1) * s + (k - 1) * d + 1 - in;
    if (total < 0)
        total = 0;
    if (strcmp(mode, "SAME_LOWER") == 0) {
        *end = total / 2;
        *begin = total - *end;
    } else {
        *begin = total / 2;
        *end = total - *begin;
    }
}

bd_status bd_conv_geom_from_node(const bd_node *n, const bd_tensor *x, const bd_tensor *w,
                                 bd_conv_geom *geom)
{
    char sx[96], sw[96];
    if (x->dtype != BD_F32 || w->dtype != BD_F32)
        return bd_node_fail(n, BD_EUNSUPPORTED, "needs float32 input and weight (got %s, %s)",
                            bd_dtype_name(x->dtype), bd_dtype_name(w->dtype));
    if (x->ndim != w->ndim || (x->ndim != 3 && x->ndim != 4))
        return bd_node_fail(n, BD_EUNSUPPORTED,
                            "input %s and weight %s: only 1-D and 2-D convolutions are supported",
                            bd_shape_str(x->ndim, x->dims, sx, sizeof sx),
                            bd_shape_str(w->ndim, w->dims, sw, sizeof sw));
    int sp = x->ndim - 2; /* spatial rank */
    bd_conv_geom g;
    memset(&g, 0, sizeof g);
    g.n = x->dims[0];
    g.c = x->dims[1];
    g.h = sp == 2 ? x->dims[2] : 1;
    g.w = x->dims[x->ndim - 1];
    g.m = w->dims[0];
    g.group = bd_attr_int(n, "group", 1);
    g.kh = sp == 2 ? w->dims[2] : 1;
    g.kw = w->dims[w->ndim - 1];
    if (g.group < 1 || g.c % g.group || g.m % g.group || w->dims[1] * g.group != g.c)
        return bd_node_fail(n, BD_EFORMAT, "input %s, weight %s and group %lld do not agree",
                            bd_shape_str(x->ndim, x->dims, sx, sizeof sx),
                            bd_shape_str(w->ndim, w->dims, sw, sizeof sw), (long long)g.group);
    const int64_t *v;
    int cnt;
    int64_t ks[2] = {g.kh, g.kw}, st[2] = {1, 1}, dl[2] = {1, 1}, pads[4] = {0, 0, 0, 0};
    if ((cnt = bd_attr_ints(n, "kernel_shape", &v)) >= 0) {
        if (cnt != sp || v[0] != w->dims[2] || v[sp - 1] != w->dims[w->ndim - 1])
            return bd_node_fail(n, BD_EFORMAT, "kernel_shape does not match weight %s",
                                bd_shape_str(w->ndim, w->dims, sw, sizeof sw));
    }
    if ((cnt = bd_attr_ints(n, "strides", &v)) >= 0) {
        if (cnt != sp)
            return bd_node_fail(n, BD_EFORMAT, "strides has %d values for %d axes", cnt, sp);
        for (int i = 0; i < sp; i++)
            st[2 - sp + i] = v[i];
    }
    if ((cnt = bd_attr_ints(n, "dilations", &v)) >= 0) {
        if (cnt != sp)
            return bd_node_fail(n, BD_EFORMAT, "dilations has %d values for %d axes", cnt, sp);
        for (int i = 0; i < sp; i++)
            dl[2 - sp + i] = v[i];
    }
    for (int i = 0; i < 2; i++)
        if (st[i] < 1 || dl[i] < 1)
            return bd_node_fail(n, BD_EFORMAT, "strides and dilations must be positive");
    const char *ap = bd_attr_string(n, "auto_pad", "NOTSET");
    int64_t in[2] = {g.h, g.w};
    if (strcmp(ap, "NOTSET") == 0) {
        if ((cnt = bd_attr_ints(n, "pads", &v)) >= 0) {
            if (cnt != 2 * sp)
                return bd_node_fail(n, BD_EFORMAT, "pads has %d values for %d axes", cnt, sp);
            for (int i = 0; i < sp; i++) {
                pads[2 - sp + i] = v[i];
                pads[4 - sp + i] = v[sp + i];
            }
        }
    } else if (strcmp(ap, "SAME_UPPER") == 0 || strcmp(ap, "SAME_LOWER") == 0) {
        for (int i = 0; i < 2; i++)
            auto_pads(ap, in[i], ks[i], st[i], dl[i], &pads[i], &pads[2 + i]);
    } else if (strcmp(ap, "VALID") != 0) {
        return bd_node_fail(n, BD_EFORMAT, "unknown auto_pad '%s'", ap);
    }
    for (int i = 0; i < 4; i++)
        if (pads[i] < 0 || pads[i] > 1 << 20)
            return bd_node_fail(n, BD_EFORMAT, "pad %lld is out of range", (long long)pads[i]);
    g.sh = st[0];
    g.sw = st[1];
    g.dh = dl[0];
    g.dw = dl[1];
    g.pad_t = pads[0];
    g.pad_l = pads[1];
    g.pad_b = pads[2];
    g.pad_r = pads[3];
    int64_t span_h = (g.kh - 1) * g.dh + 1, span_w = (g.kw - 1) * g.dw + 1;
    int64_t eh = g.h + g.pad_t + g.pad_b, ew = g.w + g.pad_l + g.pad_r;
    if (g.kh < 1 || g.kw < 1 || eh < span_h || ew < span_w)
        return bd_node_fail(n, BD_EFORMAT, "kernel %s does not fit the padded input %s",
                            bd_shape_str(w->ndim, w->dims, sw, sizeof sw),
                            bd_shape_str(x->ndim, x->dims, sx, sizeof sx));
    g.oh = (eh - span_h) / g.sh + 1;
    g.ow = (ew - span_w) / g.sw + 1;
    *geom = g;
    return BD_OK;
}

/* One row of the im2col matrix, r = (c, ki, kj), over columns [c0, c0 + n),
 * walked output row by output row. The valid columns depend only on the
 * tap, so they are found once; rows are often only 7 to 28 wide, where a
 * division or a library call per row costs more than the copy. */
__attribute__((optimize("no-tree-loop-distribute-patterns")))
static void im2col_row(const bd_conv_geom *g, const float *x, int64_t gi, int64_t r, int64_t c0,
                       int64_t n, float *row)
{
    const int64_t cg = g->c / g->group, ohw = g->oh * g->ow, plane = g->h * g->w;
    const int64_t c = r / (g->kh * g->kw), ki = r / g->kw % g->kh, kj = r % g->kw;
    const int64_t x_off = kj * g->dw - g->pad_l, sw = g->sw;
    int64_t lo, hi;
    bd_conv_valid_cols(g, x_off, &lo, &hi);
    int64_t img = c0 / ohw, oy = c0 % ohw / g->ow, ox = c0 % g->ow;
    for (int64_t j = 0; j < n;) {
        const int64_t len = g->ow - ox < n - j ? g->ow - ox : n - j, end = ox + len;
        const int64_t iy = oy * g->sh - g->pad_t + ki * g->dh;
        float *out = row + j - ox; /* indexed by ox */
        int64_t a = ox, b = ox; /* [a, b): the valid columns of this stretch */
        if (iy >= 0 && iy < g->h) {
            a = lo > ox ? (lo < end ? lo : end) : ox;
            b = hi < end ? (hi > a ? hi : a) : end;
            const float *in = x + (img * g->c + gi * cg + c) * plane + iy * g->w;
            if (sw == 1) {
#pragma omp simd
                for (int64_t t = a; t < b; t++)
                    out[t] = in[t + x_off];
            } else {
                for (int64_t t = a; t < b; t++)
                    out[t] = in[t * sw + x_off];
            }
        }
        for (int64_t t = ox; t < a; t++)
            out[t] = 0.0f;
        for (int64_t t = b; t < end; t++)
            out[t] = 0.0f;
        j += len;
        ox = 0;
        if (++oy == g->oh) {
            oy = 0;
            img++;
        }
    }
}

void bd_im2col_range(const bd_conv_geom *g, const float *x, int64_t gi, int64_t c0, int64_t n,
                     float *cols)
{
    const int64_t k = g->c / g->group * g->kh * g->kw;
    /* split over the threads when called outside a parallel region (a
     * nested one runs on the caller alone) */
#pragma omp parallel for schedule(static) if (k * n >= 65536)
    for (int64_t r = 0; r < k; r++)
        im2col_row(g, x, gi, r, c0, n, cols + r * n);
}

void bd_im2col(const bd_conv_geom *g, const float *x, float *cols)
{
    bd_conv_geom one = *g;
    one.n = 1;
    one.group = 1; /* x is already one group's channels */
    one.c = g->c / g->group;
    bd_im2col_range(&one, x, 0, 0, g->oh * g->ow, cols);
}

void bd_epilogue_clamp(const bd_epilogue *ep, float *lo, float *hi)
{
    const bd_activation act = ep ? ep->act : BD_ACT_NONE;
    *lo = act == BD_ACT_RELU ? 0.0f : act == BD_ACT_CLIP ? ep->lo : -INFINITY;
    *hi = act == BD_ACT_CLIP ? ep->hi : INFINITY;
}

void bd_activation_apply(const bd_epilogue *ep, float *y, int64_t len)
{
    if (!bd_epilogue_has_function(ep))
        return;
#ifdef __AVX512F__
    /* every value through the kernels' own bd_activation_vec, the last
     * ones masked: the same bits fused in registers or applied here */
    for (int64_t i = 0; i < len; i += 16) {
        const __mmask16 m = bd_lanes(0, len - i);
        _mm512_mask_storeu_ps(y + i, m, bd_activation_vec(ep, _mm512_maskz_loadu_ps(m, y + i)));
    }
#else
    /* omp simd: -O2 alone vectorises only loops without a remainder */
    const float alpha = ep->alpha, beta = ep->beta;
    switch (ep->act) {
    case BD_ACT_SIGMOID:
    case BD_ACT_SILU: bd_sigmoid_run(y, y, len, ep->act == BD_ACT_SILU); break;
    case BD_ACT_HARD_SIGMOID:
#pragma omp simd
        for (int64_t i = 0; i < len; i++)
            y[i] = bd_hard_sigmoidf(y[i], alpha, beta);
        break;
    case BD_ACT_X_HARD_SIGMOID:
#pragma omp simd
        for (int64_t i = 0; i < len; i++)
            y[i] = y[i] * bd_hard_sigmoidf(y[i], alpha, beta);
        break;
    case BD_ACT_HARD_SWISH:
#pragma omp simd
        for (int64_t i = 0; i < len; i++)
            y[i] = bd_hard_swishf(y[i]);
        break;
    default: break;
    }
#endif
}

void bd_epilogue_apply(const bd_epilogue *ep, int64_t c, const float *src, const float *res,
                       float *dst, int64_t len)
{
    float a = ep && ep->scale ? ep->scale[c] : 1.0f;
    float b = ep && ep->shift ? ep->shift[c] : 0.0f;
    float lo, hi;
    bd_epilogue_clamp(ep, &lo, &hi);
    /* one comparison per statement, so the loops vectorise (max/min);
     * omp simd: -O2 alone vectorises only loops without a remainder */
    if (res) {
#pragma omp simd
        for (int64_t i = 0; i < len; i++) {
            float v = src[i] * a + b + res[i];
            v = v > lo ? v : lo;
            dst[i] = v < hi ? v : hi;
        }
    } else {
#pragma omp simd
        for (int64_t i = 0; i < len; i++) {
            float v = src[i] * a + b;
            v = v > lo ? v : lo;
            dst[i] = v < hi ? v : hi;
        }
    }
    bd_activation_apply(ep, dst, len);
}

static int is_pointwise(const bd_conv_geom *g)
{
    return g->kh == 1 && g->kw == 1 && g->sh == 1 && g->sw == 1 && g->pad_t == 0 &&
           g->pad_l == 0 && g->pad_b == 0 && g->pad_r == 0;
}

/* How a conv becomes GEMMs. POINTWISE: the input already is the matrix.
 * SHIFT (stride 1): the input is padded once, channel-major ([C][N][Hp*Wp]);
 * there every im2col row is one contiguous slice if outputs are computed on
 * the padded grid (positions outside the real output are computed and
 * dropped when storing), so im2col is a memcpy per row, across images.
 * IM2COL (strided): the general gather, over column ranges that may span
 * images. Small images are merged into one tile so GEMMs stay wide; an
 * image is never split, so each GEMM's packed weights serve a whole image. */
typedef enum lowering { POINTWISE, SHIFT, IM2COL } lowering;

typedef struct conv_plan {
    const bd_conv_geom *g;
    const float *x, *w;
    const bd_epilogue *ep;
    float *y;
    lowering how;
    int64_t k, mg, ohw;
    int64_t imgs;   /* images per tile */
    int64_t ntiles; /* tiles per group */
    float *padded;  /* SHIFT: [C][N*plane + slack] */
    int64_t wp, plane, chan; /* SHIFT: padded width, plane, channel stride */
} conv_plan;

/* Fewer columns than this make BLAS calls whose fixed costs show. */
enum { WIDE = 2048 };

static int64_t columns_per_image(const conv_plan *p)
{
    return p->how == SHIFT ? p->plane : p->ohw;
}

/* Pads every channel plane of the batch into p->padded. */
static void pad_input(conv_plan *p)
{
    const bd_conv_geom *g = p->g;
    const int64_t planes = g->n * g->c;
    memset(p->padded, 0, (size_t)(g->c * p->chan) * sizeof *p->padded);
#pragma omp parallel for schedule(static) if (planes * p->plane > 65536)
    for (int64_t i = 0; i < planes; i++) {
        int64_t img = i / g->c, c = i % g->c;
        float *dst = p->padded + c * p->chan + img * p->plane;
        const float *src = p->x + i * g->h * g->w;
        for (int64_t r = 0; r < g->h; r++)
            memcpy(dst + (r + g->pad_t) * p->wp + g->pad_l, src + r * g->w,
                   (size_t)g->w * sizeof *dst);
    }
}

/* The B matrix of tile (gi, first image, n columns): the input itself, or
 * rows of cols; `inner` spreads the copying over the threads. */
static const float *tile_matrix(const conv_plan *p, int64_t gi, int64_t img, int64_t n,
                                float *cols, int64_t *ldb, int inner)
{
    const bd_conv_geom *g = p->g;
    const int64_t cg = g->c / g->group;
    if (p->how == POINTWISE) {
        *ldb = p->ohw;
        return p->x + (img * g->c + gi * cg) * p->ohw;
    }
    *ldb = n;
#pragma omp parallel for schedule(static) if (inner)
    for (int64_t r = 0; r < p->k; r++) {
        if (p->how == IM2COL) {
            im2col_row(g, p->x, gi, r, img * p->ohw, n, cols + r * n);
        } else {
            int64_t c = r / (g->kh * g->kw), ki = r / g->kw % g->kh, kj = r % g->kw;
            memcpy(cols + r * n,
                   p->padded + (gi * cg + c) * p->chan + img * p->plane + ki * g->dh * p->wp +
                       kj * g->dw,
                   (size_t)n * sizeof *cols);
        }
    }
    return cols;
}

/* Output channel m of the GEMM result c (n columns from image img on) into
 * y, through the epilogue, dropping SHIFT's positions off the real grid. */
static void store_channel(const conv_plan *p, int64_t gi, int64_t m, int64_t img, int64_t nimg,
                          const float *c, int64_t n)
{
    const bd_conv_geom *g = p->g;
    const bd_epilogue *ep = p->ep;
    const int64_t ch = gi * p->mg + m;
    const float *src = c + m * n;
    for (int64_t i = 0; i < nimg; i++) {
        int64_t at = ((img + i) * g->m + ch) * p->ohw;
        if (p->how == SHIFT) {
            for (int64_t oy = 0; oy < g->oh; oy++)
                bd_epilogue_apply(ep, ch, src + i * p->plane + oy * p->wp,
                                  ep && ep->residual ? ep->residual + at + oy * g->ow : NULL,
                                  p->y + at + oy * g->ow, g->ow);
        } else {
            bd_epilogue_apply(ep, ch, src + i * p->ohw, ep && ep->residual ? ep->residual + at : NULL,
                              p->y + at, p->ohw);
        }
    }
}

/* Tile ti of group gi: its B matrix, one GEMM into the scratch c, then the
 * epilogue while storing. */
static void conv_tile(const conv_plan *p, int64_t gi, int64_t ti, float *cols, float *c, int inner)
{
    const bd_conv_geom *g = p->g;
    const int64_t img = ti * p->imgs;
    const int64_t nimg = g->n - img < p->imgs ? g->n - img : p->imgs;
    /* SHIFT: the last image needs only its rows up to the real output's end */
    const int64_t n = p->how == SHIFT ? (nimg - 1) * p->plane + g->oh * p->wp : nimg * p->ohw;
    int64_t ldb;
    const float *b = tile_matrix(p, gi, img, n, cols, &ldb, inner);
    if (p->how == POINTWISE && nimg > 1) {
        /* images are not adjacent in NCHW: one GEMM each */
        for (int64_t i = 0; i < nimg; i++)
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)p->mg, (int)p->ohw,
                        (int)p->k, 1.0f, p->w + gi * p->mg * p->k, (int)p->k,
                        b + i * g->c * p->ohw, (int)ldb, 0.0f, c + i * p->ohw, (int)n);
    } else {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)p->mg, (int)n, (int)p->k, 1.0f,
                    p->w + gi * p->mg * p->k, (int)p->k, b, (int)ldb, 0.0f, c, (int)n);
    }
#pragma omp parallel for schedule(static) if (inner)
    for (int64_t m = 0; m < p->mg; m++)
        store_channel(p, gi, m, img, nimg, c, n);
}

/* The share of a count's vector lanes (or tile rows) that hold something
 * when it is cut into pieces of `width`. */
static double busy(int64_t count, int64_t width)
{
    return (double)count / (double)(width * ((count + width - 1) / width));
}

/* Whether the planes kernel keeps more lanes busy than the direct one (or
 * is the only one: grouped convs that are not depthwise, which im2col and
 * GEMM had run at a fifth of the speed of a dense layer): the direct
 * kernel puts 16 input and 16 output channels in its vectors, the planes
 * kernel 16 pixels of a row and 6 output channels in its tiles.
 * Measured on EfficientNetV2-S: 24 -> 24 channels at 112x112, 2.7 ms direct
 * and 1.5 planes; 48 -> 192 at 56x56, 5.3 direct and 5.8 planes. */
static int planes_busier(const bd_conv_geom *g)
{
    if (!bd_conv_planes_supported(g) || bd_conv_is_depthwise(g))
        return 0;
    if (!bd_conv_direct_supported(g))
        return 1;
    return busy(g->ow, 16) * busy(g->m, 6) > busy(g->c, 16) * busy(g->m, 16);
}

/* The GEMM lowerings, for what no kernel of its own takes. */
static bd_status conv_lowered(const bd_conv_geom *g, const float *x, const float *w,
                              const bd_epilogue *ep, float *y)
{
    const int64_t ohw = bd_conv_cols(g);
    conv_plan p = {.g = g, .x = x, .w = w, .ep = ep, .y = y, .k = bd_conv_rows(g),
                   .mg = g->m / g->group, .ohw = ohw};
    /* SHIFT computes the padded grid: worth it where the padding is thin */
    int64_t hp = g->h + g->pad_t + g->pad_b, wp = g->w + g->pad_l + g->pad_r;
    int thin = hp * wp * 8 <= ohw * 9;
    p.how = is_pointwise(g) ? POINTWISE : g->sh == 1 && g->sw == 1 && thin ? SHIFT : IM2COL;
    if (p.how == SHIFT) {
        p.wp = wp;
        p.plane = hp * wp;
        /* slack: the last rows' reads run past the plane into dropped columns */
        p.chan = g->n * p.plane + (g->kw - 1) * g->dw + (g->kh - 1) * g->dh * p.wp;
        p.padded = malloc((size_t)(g->c * p.chan) * sizeof *p.padded);
        if (!p.padded)
            return bd_fail(BD_ENOMEM, "out of memory for the padded input of a conv");
        pad_input(&p);
    }
    int64_t per = columns_per_image(&p);
    p.imgs = per >= WIDE ? 1 : (WIDE + per - 1) / per;
    int threads = omp_get_max_threads();
    /* keep every thread busy: never fewer tiles than threads if images allow */
    if (g->n > 1 && (g->n + p.imgs - 1) / p.imgs < threads)
        p.imgs = (g->n + threads - 1) / threads;
    p.ntiles = (g->n + p.imgs - 1) / p.imgs;
    const int64_t items = g->group * p.ntiles;
    const int64_t tile_cols = p.imgs * per;
    const size_t cols_size = p.how == POINTWISE ? 1 : (size_t)(p.k * tile_cols);
    const size_t c_size = (size_t)(p.mg * tile_cols);
    int failed = 0;
    if (threads > 1 && items >= threads) {
        /* Several tiles: one per thread at a time, each GEMM on one core, no
         * thread waits on another. */
#pragma omp parallel
        {
            float *cols = malloc(cols_size * sizeof *cols), *c = malloc(c_size * sizeof *c);
            if (!cols || !c) {
#pragma omp atomic write
                failed = 1;
            }
#pragma omp for schedule(dynamic)
            for (int64_t it = 0; it < items; it++)
                if (cols && c)
                    conv_tile(&p, it / p.ntiles, it % p.ntiles, cols, c, 0);
            free(cols);
            free(c);
        }
    } else {
        /* One tile at a time, its copying, GEMM (BLAS's threads) and storing
         * each spread over the cores. Not inside a parallel region of our
         * own: nested teams would be new threads competing for the cores. */
        float *cols = malloc(cols_size * sizeof *cols), *c = malloc(c_size * sizeof *c);
        failed = !cols || !c;
        for (int64_t it = 0; it < items && !failed; it++)
            conv_tile(&p, it / p.ntiles, it % p.ntiles, cols, c, 1);
        free(cols);
        free(c);
    }
    free(p.padded);
    return failed ? bd_fail(BD_ENOMEM, "out of memory for the im2col buffers of a conv") : BD_OK;
}

/* Which kernel bd_conv2d runs on g. */
typedef enum conv_path {
    PATH_POINTWISE,
    PATH_PLANES,
    PATH_DIRECT,
    PATH_WINOGRAD,
    PATH_DEPTHWISE,
    PATH_LOWERED
} conv_path;

/* A pointwise conv of fewer than three vectors of pixels an image (the 5x5
 * grid of Inception-v3 at 224x224, 6x6, 3x3) leaves most lanes of the
 * pointwise kernel's last, masked vector idle, where the direct kernel's
 * flat tiles fit the run: one thread, on the 2-core EPYC, 2048 -> 448 at
 * 5x5 0.53 -> 0.43 ms, 256 -> 256 at 6x6 55 -> 50 us, 256 -> 512 at 3x3
 * 38 -> 29 us; from 9x9 up the pointwise kernel was faster (13x13: 104
 * and 125 us). At 7x7 (49 pixels) the two tied there; on the 2-core Xeon
 * (Emerald Rapids) the direct kernel, once it chunked its sums
 * (conv_direct.c), was faster where the weights reach a megabyte (2048 ->
 * 1024 1.71 -> 1.51 ms, 2048 -> 512 0.84 -> 0.75, 320 -> 1280 0.31 ->
 * 0.29) and slower below (192 -> 1152 153 -> 166 us, 160 -> 1280 140 ->
 * 158). A single pixel (squeeze-and-excitation) stays pointwise. */
enum { DIRECT_POINTWISE_WEIGHTS = 1 << 18 };

static int direct_beats_pointwise(const bd_conv_geom *g)
{
    const int64_t pixels = g->oh * g->ow;
    return pixels > 1 && bd_conv_direct_supported(g) &&
           (pixels < 48 || (pixels < 64 && g->c * g->m >= DIRECT_POINTWISE_WEIGHTS));
}

static conv_path choose_path(const bd_conv_geom *g)
{
    if (bd_conv_pointwise_supported(g) && !direct_beats_pointwise(g))
        return PATH_POINTWISE;
    if (planes_busier(g))
        return PATH_PLANES;
    if (bd_conv_winograd_preferred(g))
        return PATH_WINOGRAD;
    if (bd_conv_direct_preferred(g))
        return PATH_DIRECT;
    return bd_conv_is_depthwise(g) ? PATH_DEPTHWISE : PATH_LOWERED;
}

int bd_conv2d_in_place(const bd_conv_geom *g)
{
    return choose_path(g) == PATH_DEPTHWISE && bd_conv_depthwise_in_place(g);
}

bd_status bd_conv2d(const bd_conv_geom *g, const float *x, const float *w, const bd_epilogue *ep,
                    float *y)
{
    switch (choose_path(g)) {
    case PATH_POINTWISE:
        return bd_conv_pointwise(g, x, w, ep, y);
    case PATH_PLANES:
        return bd_conv_planes(g, x, w, ep, y);
    case PATH_DIRECT:
        return bd_conv_direct(g, x, w, NULL, ep, y);
    case PATH_WINOGRAD:
        return bd_conv_winograd(g, x, w, NULL, ep, y);
    case PATH_DEPTHWISE:
        return bd_conv_depthwise(g, x, w, ep, y);
    default:
        return conv_lowered(g, x, w, ep, y);
    }
}

struct bd_conv_cache {
    bd_conv_geom g; /* the geometry it was laid out for (any batch) */
    const float *w;
    const bd_conv_packed_kernel *k; /* whose layout packed holds */
    float *packed;
};

/* The kernel of path that takes its weights re-laid, or NULL. */
static const bd_conv_packed_kernel *packed_kernel(conv_path path)
{
    static const bd_conv_packed_kernel direct = {bd_conv_direct_packed_floats,
                                                 bd_conv_direct_pack, bd_conv_direct};
    static const bd_conv_packed_kernel winograd = {bd_conv_winograd_packed_floats,
                                                   bd_conv_winograd_pack, bd_conv_winograd};
    return path == PATH_DIRECT ? &direct : path == PATH_WINOGRAD ? &winograd : NULL;
}

/* Output pixels per call at most for a layer to keep its weights re-laid.
 * Re-laying is a pass over the weights, the conv's arithmetic is that many
 * passes: at batch 1 with 2 threads, ResNet-18's 7x7 layers went from 1.5
 * to 1.3 ms each, the model from 19.3 to 18.1 ms, Inception-v3 from 37.6
 * to 34.9; keeping only layers of 256 pixels or fewer (no 28x28 ones)
 * measured the same within the noise. Past that a copy of the weights is
 * memory spent for little. */
enum { KEEP_PIXELS = 1024 };

static int same_layout(const bd_conv_geom *a, const bd_conv_geom *b)
{
    bd_conv_geom x = *a, y = *b;
    x.n = y.n = 0;
    return memcmp(&x, &y, sizeof x) == 0;
}

bd_status bd_conv2d_cached(const bd_conv_geom *g, const float *x, const float *w,
                           const bd_epilogue *ep, float *y, bd_conv_cache **cache)
{
    if (g->n * g->oh * g->ow > KEEP_PIXELS)
        return bd_conv2d(g, x, w, ep, y);
    const bd_conv_packed_kernel *k = packed_kernel(choose_path(g));
    if (!k)
        return bd_conv2d(g, x, w, ep, y);
    bd_conv_cache *c = *cache;
    if (!c || c->w != w || c->k != k || !same_layout(&c->g, g)) {
        float *packed = aligned_alloc(64, (k->floats(g) * sizeof *packed + 63) / 64 * 64);
        if (!packed)
            return bd_conv2d(g, x, w, ep, y); /* re-laid per call instead */
        if (!c && !(c = calloc(1, sizeof *c))) {
            free(packed);
            return bd_conv2d(g, x, w, ep, y);
        }
        k->pack(g, w, packed);
        free(c->packed);
        *c = (bd_conv_cache){.g = *g, .w = w, .k = k, .packed = packed};
        *cache = c;
    }
    return k->run(g, x, w, c->packed, ep, y);
}

void bd_conv_cache_free(bd_conv_cache *c)
{
    if (c)
        free(c->packed);
    free(c);
}

bd_status bd_k_conv(const bd_graph *gr, const bd_node *n, bd_tensor *const *in, bd_tensor **out)
{
    (void)gr;
    bd_conv_geom g;
    BD_TRY(bd_conv_geom_from_node(n, in[0], in[1], &g));
    const bd_tensor *b = n->ninputs > 2 ? in[2] : NULL;
    if (b && (b->dtype != BD_F32 || bd_tensor_count(b) != g.m))
        return bd_node_fail(n, BD_EFORMAT, "bias has %lld values, expected %lld float32",
                            (long long)bd_tensor_count(b), (long long)g.m);
    int64_t dims[4] = {g.n, g.m, g.oh, g.ow};
    int nd = in[0]->ndim;
    if (nd == 3)
        dims[2] = g.ow;
    BD_TRY(bd_tensor_new_raw(out, BD_F32, nd, dims, n->name));
    bd_epilogue ep = {.shift = b ? (const float *)b->data : NULL, .act = BD_ACT_NONE};
    bd_status st = bd_conv2d(&g, in[0]->data, in[1]->data, &ep, (*out)->data);
    if (st != BD_OK) {
        bd_tensor_free(*out);
        *out = NULL;
        return bd_error_context(st, "node '%s' (Conv)", n->name);
    }
    return BD_OK;
}
