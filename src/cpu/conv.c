#include "conv.h"

#include <cblas.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

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

void bd_im2col(const bd_conv_geom *g, const float *x, float *cols)
{
    const int64_t cg = g->c / g->group, ohw = g->oh * g->ow;
    for (int64_t c = 0; c < cg; c++) {
        const float *xc = x + c * g->h * g->w;
        for (int64_t ki = 0; ki < g->kh; ki++) {
            for (int64_t kj = 0; kj < g->kw; kj++) {
                float *row = cols + ((c * g->kh + ki) * g->kw + kj) * ohw;
                int64_t x_off = kj * g->dw - g->pad_l;
                /* output columns ox whose input column lies inside [0, w) */
                int64_t lo = x_off >= 0 ? 0 : (-x_off + g->sw - 1) / g->sw;
                int64_t hi = g->w - x_off <= 0 ? 0 : (g->w - x_off + g->sw - 1) / g->sw;
                if (hi > g->ow)
                    hi = g->ow;
                if (lo > hi)
                    lo = hi;
                for (int64_t oy = 0; oy < g->oh; oy++) {
                    float *out = row + oy * g->ow;
                    int64_t iy = oy * g->sh - g->pad_t + ki * g->dh;
                    if (iy < 0 || iy >= g->h) {
                        memset(out, 0, (size_t)g->ow * sizeof *out);
                        continue;
                    }
                    const float *in = xc + iy * g->w + x_off;
                    memset(out, 0, (size_t)lo * sizeof *out);
                    if (g->sw == 1) {
                        memcpy(out + lo, in + lo, (size_t)(hi - lo) * sizeof *out);
                    } else {
                        for (int64_t ox = lo; ox < hi; ox++)
                            out[ox] = in[ox * g->sw];
                    }
                    memset(out + hi, 0, (size_t)(g->ow - hi) * sizeof *out);
                }
            }
        }
    }
}

void bd_epilogue_rows(const bd_epilogue *ep, int64_t c0, int64_t rows, int64_t len, float *y)
{
    if (!ep || (!ep->scale && !ep->shift && ep->act == BD_ACT_NONE))
        return;
    for (int64_t r = 0; r < rows; r++) {
        float a = ep->scale ? ep->scale[c0 + r] : 1.0f;
        float b = ep->shift ? ep->shift[c0 + r] : 0.0f;
        float *p = y + r * len;
        switch (ep->act) {
        case BD_ACT_NONE:
            for (int64_t i = 0; i < len; i++)
                p[i] = p[i] * a + b;
            break;
        case BD_ACT_RELU:
            for (int64_t i = 0; i < len; i++) {
                float v = p[i] * a + b;
                p[i] = v > 0.0f ? v : 0.0f;
            }
            break;
        case BD_ACT_CLIP:
            for (int64_t i = 0; i < len; i++) {
                float v = p[i] * a + b;
                p[i] = v < ep->lo ? ep->lo : v > ep->hi ? ep->hi : v;
            }
            break;
        }
    }
}

/* Depthwise convolution (one input and one output channel per group) does
 * 9 multiply-adds per output: a GEMM per channel would be all overhead. */
static void depthwise_channel(const bd_conv_geom *g, const float *x, const float *w, float *y)
{
    for (int64_t oy = 0; oy < g->oh; oy++) {
        float *out = y + oy * g->ow;
        for (int64_t ox = 0; ox < g->ow; ox++)
            out[ox] = 0.0f;
        for (int64_t ki = 0; ki < g->kh; ki++) {
            int64_t iy = oy * g->sh - g->pad_t + ki * g->dh;
            if (iy < 0 || iy >= g->h)
                continue;
            const float *in = x + iy * g->w;
            for (int64_t kj = 0; kj < g->kw; kj++) {
                float wv = w[ki * g->kw + kj];
                int64_t x_off = kj * g->dw - g->pad_l;
                int64_t lo = x_off >= 0 ? 0 : (-x_off + g->sw - 1) / g->sw;
                int64_t hi = g->w - x_off <= 0 ? 0 : (g->w - x_off + g->sw - 1) / g->sw;
                if (hi > g->ow)
                    hi = g->ow;
                if (g->sw == 1) {
                    const float *src = in + x_off;
                    for (int64_t ox = lo; ox < hi; ox++)
                        out[ox] += wv * src[ox];
                } else {
                    for (int64_t ox = lo; ox < hi; ox++)
                        out[ox] += wv * in[ox * g->sw + x_off];
                }
            }
        }
    }
}

static int is_pointwise(const bd_conv_geom *g)
{
    return g->kh == 1 && g->kw == 1 && g->sh == 1 && g->sw == 1 && g->pad_t == 0 &&
           g->pad_l == 0 && g->pad_b == 0 && g->pad_r == 0;
}

/* One image: every group's GEMM, then the epilogue. cols is scratch of
 * rows*cols floats (unused for pointwise convs, which need no im2col). */
static void conv_image(const bd_conv_geom *g, const float *x, const float *w,
                       const bd_epilogue *ep, float *y, float *cols)
{
    const int64_t cg = g->c / g->group, mg = g->m / g->group;
    const int64_t k = bd_conv_rows(g), ohw = bd_conv_cols(g);
    for (int64_t gi = 0; gi < g->group; gi++) {
        const float *xg = x + gi * cg * g->h * g->w;
        const float *b = xg;
        if (!is_pointwise(g)) {
            bd_im2col(g, xg, cols);
            b = cols;
        }
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)mg, (int)ohw, (int)k, 1.0f,
                    w + gi * mg * k, (int)k, b, (int)ohw, 0.0f, y + gi * mg * ohw, (int)ohw);
    }
    bd_epilogue_rows(ep, 0, g->m, ohw, y);
}

bd_status bd_conv2d(const bd_conv_geom *g, const float *x, const float *w, const bd_epilogue *ep,
                    float *y)
{
    const int64_t in_img = g->c * g->h * g->w, out_img = g->m * g->oh * g->ow;
    const int64_t ohw = bd_conv_cols(g);
    if (g->group == g->c && g->m == g->c) {
        const int64_t total = g->n * g->c;
#pragma omp parallel for schedule(static) if (total * ohw > 4096)
        for (int64_t i = 0; i < total; i++) {
            int64_t c = i % g->c;
            float *yc = y + i * ohw;
            depthwise_channel(g, x + i * g->h * g->w, w + c * g->kh * g->kw, yc);
            bd_epilogue_rows(ep, c, 1, ohw, yc);
        }
        return BD_OK;
    }
    size_t scratch = is_pointwise(g) ? 1 : (size_t)(bd_conv_rows(g) * ohw);
    int threads = omp_get_max_threads();
    if (g->n > 1 && threads > 1) {
        /* Images in parallel, one BLAS thread each: better than splitting
         * every (often small) GEMM across cores. */
        int failed = 0;
#pragma omp parallel
        {
            float *cols = malloc(scratch * sizeof *cols);
            if (!cols) {
#pragma omp atomic write
                failed = 1;
            }
#pragma omp for schedule(dynamic)
            for (int64_t i = 0; i < g->n; i++)
                if (cols)
                    conv_image(g, x + i * in_img, w, ep, y + i * out_img, cols);
            free(cols);
        }
        if (failed)
            return bd_fail(BD_ENOMEM, "out of memory for the im2col buffer of a conv");
        return BD_OK;
    }
    float *cols = malloc(scratch * sizeof *cols);
    if (!cols)
        return bd_fail(BD_ENOMEM, "out of memory for the im2col buffer of a conv");
    for (int64_t i = 0; i < g->n; i++)
        conv_image(g, x + i * in_img, w, ep, y + i * out_img, cols);
    free(cols);
    return BD_OK;
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
