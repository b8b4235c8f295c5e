/* Backward of Conv by im2col + GEMM, per group:
 *   dW_g += dY_g cols_g^T         (summed over the images)
 *   dX    = col2im(W_g^T dY_g)
 *   dB    = dY summed over N, H, W
 * The images go in tiles wide enough for GEMMs to run well, as in the
 * forward; with enough tiles each thread takes whole tiles (its GEMMs on one
 * core) and sums its own dW, the partial sums added at the end; otherwise
 * the tiles go in turn, BLAS threading each GEMM. With stride 1, dX is
 * itself a convolution (of dY with the flipped weights) and runs on the
 * forward's kernels instead. Depthwise convs, with kernel-sized GEMMs,
 * take direct loops as in the forward. */
#include <cblas.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "conv.h"
#include "grad_kernels.h"

/* The adjoint of im2col for one channel of one image: dx[H][W] = the sum
 * of what its kh*kw rows of cols (rows ld apart, this image's columns)
 * took from each input pixel. */
static void col2im_channel(const bd_conv_geom *g, const float *rows, int64_t ld, float *dx)
{
    memset(dx, 0, (size_t)(g->h * g->w) * sizeof *dx);
    for (int64_t ki = 0; ki < g->kh; ki++)
        for (int64_t kj = 0; kj < g->kw; kj++) {
            const float *row = rows + (ki * g->kw + kj) * ld;
            int64_t x_off = kj * g->dw - g->pad_l, lo, hi;
            bd_conv_valid_cols(g, x_off, &lo, &hi);
            for (int64_t oy = 0; oy < g->oh; oy++) {
                int64_t iy = oy * g->sh - g->pad_t + ki * g->dh;
                if (iy < 0 || iy >= g->h)
                    continue;
                float *dst = dx + iy * g->w;
                const float *src = row + oy * g->ow;
                if (g->sw == 1) {
                    for (int64_t ox = lo; ox < hi; ox++)
                        dst[ox + x_off] += src[ox];
                } else {
                    for (int64_t ox = lo; ox < hi; ox++)
                        dst[ox * g->sw + x_off] += src[ox];
                }
            }
        }
}

typedef struct conv_bwd {
    const bd_conv_geom *g;
    const float *x, *w, *dy;
    float *dx; /* NULL: not wanted */
    int pointwise;
    int64_t k, mg, cg, ohw, plane, taps;
    int64_t imgs, ntiles; /* images per tile, tiles */
} conv_bwd;

/* Fewer columns than this make BLAS calls whose fixed costs show. */
enum { WIDE = 2048 };

/* cols[K][n] = im2col of group gi over the batch's columns [col0, col0+n).
 * A geometry of one channel per group gives each channel's rows alone, so
 * `inner` can spread the channels over the threads. */
static void im2col_tile(const conv_bwd *p, int64_t gi, int64_t col0, int64_t n, float *cols,
                        int inner)
{
    bd_conv_geom one = *p->g;
    one.group = one.c;
#pragma omp parallel for schedule(static) if (inner)
    for (int64_t c = 0; c < p->cg; c++)
        bd_im2col_range(&one, p->x, gi * p->cg + c, col0, n, cols + c * p->taps * n);
}

/* Tile ti's share of the gradients, group by group: dw (a [M][K] sum, NULL
 * when not wanted) gets dY_g cols^T added, p->dx its images' col2im. cols
 * holds K * tile columns and dyb Mg * tile columns (for tiles of several
 * images, whose dY_g is not one matrix in NCHW). */
static void conv_tile(const conv_bwd *p, int64_t ti, float *cols, float *dyb, float *dw,
                      int inner)
{
    const bd_conv_geom *g = p->g;
    const int64_t img = ti * p->imgs, nimg = g->n - img < p->imgs ? g->n - img : p->imgs;
    const int64_t n = nimg * p->ohw;
    for (int64_t gi = 0; gi < g->group; gi++) {
        const float *w = p->w + gi * p->mg * p->k;
        const float *dy = p->dy + (img * g->m + gi * p->mg) * p->ohw;
        if (nimg > 1) {
#pragma omp parallel for schedule(static) if (inner)
            for (int64_t m = 0; m < p->mg; m++)
                for (int64_t i = 0; i < nimg; i++)
                    memcpy(dyb + m * n + i * p->ohw, dy + (i * g->m + m) * p->ohw,
                           (size_t)p->ohw * sizeof *dyb);
            dy = dyb;
        }
        if (dw) {
            const float *b = p->x + (img * g->c + gi * p->cg) * p->plane;
            if (!p->pointwise || nimg > 1) { /* else the input is the im2col matrix */
                im2col_tile(p, gi, img * p->ohw, n, cols, inner);
                b = cols;
            }
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)p->mg, (int)p->k, (int)n,
                        1.0f, dy, (int)n, b, (int)n, 1.0f, dw + gi * p->mg * p->k, (int)p->k);
        }
        if (!p->dx)
            continue;
        float *dx = p->dx + (img * g->c + gi * p->cg) * p->plane;
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)p->k, (int)n, (int)p->mg, 1.0f,
                    w, (int)p->k, dy, (int)n, 0.0f, cols, (int)n);
        const int64_t planes = nimg * p->cg;
#pragma omp parallel for schedule(static) if (inner)
        for (int64_t q = 0; q < planes; q++) {
            int64_t i = q / p->cg, c = q % p->cg;
            col2im_channel(g, cols + c * p->taps * n + i * p->ohw, n,
                           dx + (i * g->c + c) * p->plane);
        }
    }
}

static bd_status conv_gemm_backward(conv_bwd *p, float *dw)
{
    const bd_conv_geom *g = p->g;
    const int64_t wsize = g->m * p->k;
    p->imgs = p->ohw >= WIDE ? 1 : (WIDE + p->ohw - 1) / p->ohw;
    if (g->n > 0 && p->imgs > g->n)
        p->imgs = g->n;
    p->ntiles = (g->n + p->imgs - 1) / p->imgs;
    const size_t cols_size = (size_t)(p->k * p->imgs * p->ohw) + 1;
    const size_t dyb_size = p->imgs > 1 ? (size_t)(p->mg * p->imgs * p->ohw) : 1;
    const int threads = omp_get_max_threads();
    int failed = 0;
    if (threads > 1 && p->ntiles >= threads) {
        /* One tile per thread at a time; each thread sums its own dW. */
        float *parts = dw ? calloc((size_t)(threads * wsize), sizeof *parts) : NULL;
        if (dw && !parts)
            return bd_fail(BD_ENOMEM, "out of memory for the weight gradient's partial sums");
#pragma omp parallel
        {
            float *cols = malloc(cols_size * sizeof *cols), *dyb = malloc(dyb_size * sizeof *dyb);
            float *mine = parts ? parts + omp_get_thread_num() * wsize : NULL;
            if (!cols || !dyb) {
#pragma omp atomic write
                failed = 1;
            }
            /* static: each thread's images, and so the sums, fixed run to run */
#pragma omp for schedule(static)
            for (int64_t ti = 0; ti < p->ntiles; ti++)
                if (cols && dyb)
                    conv_tile(p, ti, cols, dyb, mine, 0);
            free(cols);
            free(dyb);
        }
        if (dw && !failed) {
#pragma omp parallel for schedule(static) if (threads * wsize >= BD_PARALLEL_MIN)
            for (int64_t i = 0; i < wsize; i++) {
                float s = 0.0f;
                for (int t = 0; t < threads; t++)
                    s += parts[t * wsize + i];
                dw[i] = s;
            }
        }
        free(parts);
    } else {
        /* Tiles in turn, each GEMM on BLAS's threads and the copying spread
         * over ours; not inside a parallel region of our own, where BLAS
         * would run on one core. */
        if (dw)
            memset(dw, 0, (size_t)wsize * sizeof *dw);
        float *cols = malloc(cols_size * sizeof *cols), *dyb = malloc(dyb_size * sizeof *dyb);
        failed = !cols || !dyb;
        for (int64_t ti = 0; ti < p->ntiles && !failed; ti++)
            conv_tile(p, ti, cols, dyb, dw, 1);
        free(cols);
        free(dyb);
    }
    return failed ? bd_fail(BD_ENOMEM, "out of memory for the im2col buffers of a conv backward")
                  : BD_OK;
}

/* With stride 1 and no pad beyond the kernel's reach, dX is the
 * convolution of dY, padded by (k - 1) * dilation - pad on each side, with
 * W's taps flipped and its input and output channels swapped within each
 * group. */
static int dx_is_conv(const bd_conv_geom *g)
{
    const int64_t reach_h = (g->kh - 1) * g->dh, reach_w = (g->kw - 1) * g->dw;
    return g->sh == 1 && g->sw == 1 && g->pad_t <= reach_h && g->pad_b <= reach_h &&
           g->pad_l <= reach_w && g->pad_r <= reach_w;
}

static bd_status dx_by_conv(const bd_conv_geom *g, const float *w, const float *dy, float *dx)
{
    const int64_t mg = g->m / g->group, cg = g->c / g->group, taps = g->kh * g->kw;
    bd_conv_geom t = *g;
    t.c = g->m;
    t.m = g->c;
    t.h = g->oh;
    t.w = g->ow;
    t.oh = g->h;
    t.ow = g->w;
    t.pad_t = (g->kh - 1) * g->dh - g->pad_t;
    t.pad_b = (g->kh - 1) * g->dh - g->pad_b;
    t.pad_l = (g->kw - 1) * g->dw - g->pad_l;
    t.pad_r = (g->kw - 1) * g->dw - g->pad_r;
    float *wt = malloc((size_t)(g->c * mg * taps) * sizeof *wt + 1);
    if (!wt)
        return bd_fail(BD_ENOMEM, "out of memory for the flipped weights of a conv backward");
    /* W [M][C/group][taps] -> W' [C][M/group][taps], taps reversed */
    for (int64_t gi = 0; gi < g->group; gi++)
        for (int64_t m = 0; m < mg; m++)
            for (int64_t c = 0; c < cg; c++) {
                const float *src = w + ((gi * mg + m) * cg + c) * taps;
                float *dst = wt + ((gi * cg + c) * mg + m) * taps;
                for (int64_t k = 0; k < taps; k++)
                    dst[taps - 1 - k] = src[k];
            }
    const bd_epilogue none = {.act = BD_ACT_NONE};
    bd_status st = bd_conv2d(&t, dy, wt, &none, dx);
    free(wt);
    return st;
}

/* One image's plane of a depthwise conv: dx (NULL: not wanted) gets the
 * plane's input gradient; acc (NULL: not wanted), [kh*kw][OW], gets each
 * tap's products added column by column. Rows are 7 to 28 wide: summing
 * each row to one number would make every row pay for a reduction (a
 * chain of dependent adds), where adding rows into acc vectorises and
 * leaves one reduction per tap for the whole channel. */
static void depthwise_plane(const bd_conv_geom *g, const float *x, const float *w,
                            const float *dy, float *dx, float *acc)
{
    if (dx)
        memset(dx, 0, (size_t)(g->h * g->w) * sizeof *dx);
    for (int64_t oy = 0; oy < g->oh; oy++) {
        const float *dyr = dy + oy * g->ow;
        for (int64_t ki = 0; ki < g->kh; ki++) {
            int64_t iy = oy * g->sh - g->pad_t + ki * g->dh;
            if (iy < 0 || iy >= g->h)
                continue;
            const float *xr = x + iy * g->w;
            for (int64_t kj = 0; kj < g->kw; kj++) {
                int64_t x_off = kj * g->dw - g->pad_l, lo, hi;
                bd_conv_valid_cols(g, x_off, &lo, &hi);
                /* omp simd: each loop writes one tensor and reads others */
                if (acc) {
                    float *a = acc + (ki * g->kw + kj) * g->ow;
#pragma omp simd
                    for (int64_t ox = lo; ox < hi; ox++)
                        a[ox] += dyr[ox] * xr[ox * g->sw + x_off];
                }
                if (dx) {
                    float *dxr = dx + iy * g->w;
                    const float wv = w[ki * g->kw + kj];
#pragma omp simd
                    for (int64_t ox = lo; ox < hi; ox++)
                        dxr[ox * g->sw + x_off] += wv * dyr[ox];
                }
            }
        }
    }
}

/* Channel by channel, so each channel's dW is summed by one thread. */
static bd_status depthwise_backward(const bd_conv_geom *g, const float *x, const float *w,
                                    const float *dy, float *dx, float *dw)
{
    const int64_t taps = g->kh * g->kw, plane = g->h * g->w, ohw = g->oh * g->ow;
    int failed = 0;
#pragma omp parallel if (g->n * g->c * ohw * taps >= BD_PARALLEL_MIN)
    {
        float *acc = dw ? malloc((size_t)(taps * g->ow) * sizeof *acc) : NULL;
        if (dw && !acc) {
#pragma omp atomic write
            failed = 1;
        }
#pragma omp for schedule(static)
        for (int64_t c = 0; c < g->c; c++) {
            if (dw && !acc)
                continue;
            if (acc)
                memset(acc, 0, (size_t)(taps * g->ow) * sizeof *acc);
            for (int64_t i = 0; i < g->n; i++) {
                int64_t at = i * g->c + c;
                depthwise_plane(g, x + at * plane, w + c * taps, dy + at * ohw,
                                dx ? dx + at * plane : NULL, acc);
            }
            for (int64_t t = 0; acc && t < taps; t++) {
                double s = 0;
                for (int64_t ox = 0; ox < g->ow; ox++)
                    s += acc[t * g->ow + ox];
                dw[c * taps + t] = (float)s;
            }
        }
        free(acc);
    }
    return failed ? bd_fail(BD_ENOMEM, "out of memory for a depthwise conv's weight gradient")
                  : BD_OK;
}

BD_GRAD(bd_g_conv)
{
    const bd_node *n = a->n;
    const bd_tensor *x = a->in[0], *w = a->in[1];
    bd_conv_geom g;
    BD_TRY(bd_conv_geom_from_node(n, x, w, &g));
    float *dx = NULL, *dw = NULL;
    if (a->want[0]) {
        BD_TRY(bd_k_output(n, &din[0], BD_F32, x->ndim, x->dims, 0));
        dx = din[0]->data;
    }
    if (a->want[1]) {
        BD_TRY(bd_k_output(n, &din[1], BD_F32, w->ndim, w->dims, 0));
        dw = din[1]->data;
    }
    if (n->ninputs > 2 && a->want[2]) { /* want has one entry per input */
        /* [M, 1, 1]: summed over N and the spatial dims */
        int64_t dims[BD_MAX_DIMS];
        const int nd = a->dy->ndim - 1;
        for (int d = 0; d < nd; d++)
            dims[d] = d ? 1 : g.m;
        BD_TRY(bd_k_output(n, &din[2], BD_F32, 1, &g.m, 0));
        bd_grad_sum_into(a->dy, nd, dims, 1.0f, din[2]->data);
    }
    if (!dx && !dw)
        return BD_OK;
    if (g.group == g.c && g.m == g.c) {
        bd_status st = depthwise_backward(&g, x->data, w->data, a->dy->data, dx, dw);
        return st == BD_OK ? st : bd_error_context(st, "node '%s' (Conv)", n->name);
    }
    conv_bwd p = {.g = &g, .x = x->data, .w = w->data, .dy = a->dy->data, .dx = dx,
                  .k = bd_conv_rows(&g), .mg = g.m / g.group,
                  .cg = g.c / g.group, .ohw = bd_conv_cols(&g), .plane = g.h * g.w,
                  .taps = g.kh * g.kw};
    p.pointwise = g.kh == 1 && g.kw == 1 && g.sh == 1 && g.sw == 1 && g.pad_t == 0 &&
                  g.pad_l == 0 && g.pad_b == 0 && g.pad_r == 0;
    bd_status st = BD_OK;
    if (dx && dx_is_conv(&g)) {
        st = dx_by_conv(&g, p.w, p.dy, dx);
        p.dx = NULL;
    }
    if (st == BD_OK && (dw || p.dx))
        st = conv_gemm_backward(&p, dw);
    return st == BD_OK ? st : bd_error_context(st, "node '%s' (Conv)", n->name);
}
