/* The AVX-512 convolution kernels (direct, Winograd, pointwise, depthwise) against a
 * naive loop on odd shapes: batch sizes that split unevenly over the
 * threads, channel counts that are and are not multiples of 16 or of a
 * register tile, planes whose pixels no vector or tile divides (down to one
 * pixel), every kernel size the zoo uses, strides, dilations, asymmetric
 * pads, and each part of the epilogue. Each case also runs through
 * bd_conv2d, which picks among them. */
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>

#include "bd_test.h"
#include "cpu/conv.h"
#include "cpu/conv_depthwise.h"
#include "cpu/conv_direct.h"
#include "cpu/conv_planes.h"
#include "cpu/conv_pointwise.h"
#include "cpu/conv_winograd.h"

#define TOL 1e-5

typedef struct {
    int64_t n, c, h, w, m, kh, kw, s, d;
    int64_t pad_t, pad_l, pad_b, pad_r;
    int64_t group;
} direct_case;

typedef bd_status (*conv_fn)(const bd_conv_geom *g, const float *x, const float *w,
                             const bd_epilogue *ep, float *y);

enum { EP_NONE, EP_AFFINE, EP_RELU, EP_RESIDUAL_RELU, EP_CLIP, EP_RESIDUAL, EP_KINDS };

static bd_conv_geom geom_of(const direct_case *dc)
{
    bd_conv_geom g = {.n = dc->n, .c = dc->c, .h = dc->h, .w = dc->w, .m = dc->m,
                      .group = dc->group,
                      .kh = dc->kh, .kw = dc->kw, .sh = dc->s, .sw = dc->s, .dh = dc->d,
                      .dw = dc->d, .pad_t = dc->pad_t, .pad_l = dc->pad_l, .pad_b = dc->pad_b,
                      .pad_r = dc->pad_r};
    g.oh = (dc->h + dc->pad_t + dc->pad_b - (dc->kh - 1) * dc->d - 1) / dc->s + 1;
    g.ow = (dc->w + dc->pad_l + dc->pad_r - (dc->kw - 1) * dc->d - 1) / dc->s + 1;
    return g;
}

/* The convolution and epilogue from their definitions, in double. */
static void reference(const bd_conv_geom *g, const float *x, const float *w,
                      const bd_epilogue *ep, float *y)
{
    const int64_t ohw = g->oh * g->ow, cg = g->c / g->group, mg = g->m / g->group;
    for (int64_t i = 0; i < g->n; i++)
        for (int64_t m = 0; m < g->m; m++)
            for (int64_t oy = 0; oy < g->oh; oy++)
                for (int64_t ox = 0; ox < g->ow; ox++) {
                    double acc = 0;
                    for (int64_t c = 0; c < cg; c++)
                        for (int64_t ky = 0; ky < g->kh; ky++)
                            for (int64_t kx = 0; kx < g->kw; kx++) {
                                int64_t iy = oy * g->sh - g->pad_t + ky * g->dh;
                                int64_t ix = ox * g->sw - g->pad_l + kx * g->dw;
                                if (iy < 0 || iy >= g->h || ix < 0 || ix >= g->w)
                                    continue;
                                const int64_t ci = m / mg * cg + c;
                                acc += (double)x[((i * g->c + ci) * g->h + iy) * g->w + ix] *
                                       w[((m * cg + c) * g->kh + ky) * g->kw + kx];
                            }
                    int64_t at = (i * g->m + m) * ohw + oy * g->ow + ox;
                    double v = acc * (ep->scale ? ep->scale[m] : 1.0) +
                               (ep->shift ? ep->shift[m] : 0.0) +
                               (ep->residual ? ep->residual[at] : 0.0);
                    if (ep->act == BD_ACT_RELU)
                        v = v > 0 ? v : 0;
                    if (ep->act == BD_ACT_CLIP)
                        v = v < ep->lo ? ep->lo : v > ep->hi ? ep->hi : v;
                    y[at] = (float)v;
                }
}

static float *random_floats(int64_t n, uint64_t seed)
{
    float *v = malloc((size_t)n * sizeof *v + 1);
    assert_non_null(v);
    bd_test_fill_random(v, (size_t)n, seed, -1, 1);
    return v;
}

static void run_case(const direct_case *dc, conv_fn kernel, int kind, uint64_t seed)
{
    const bd_conv_geom g = geom_of(dc);
    const int64_t nx = g.n * g.c * g.h * g.w, nw = g.m * g.c / g.group * g.kh * g.kw;
    const int64_t ny = g.n * g.m * g.oh * g.ow;
    float *x = random_floats(nx, seed), *w = random_floats(nw, seed + 1);
    float *scale = random_floats(g.m, seed + 2), *shift = random_floats(g.m, seed + 3);
    float *res = random_floats(ny, seed + 4);
    float *ref = malloc((size_t)ny * sizeof *ref), *got = malloc((size_t)ny * sizeof *got);
    assert_true(ref && got);
    bd_epilogue ep = {.act = BD_ACT_NONE};
    if (kind != EP_NONE && kind != EP_RESIDUAL) {
        ep.scale = scale;
        ep.shift = shift;
    }
    if (kind == EP_RESIDUAL_RELU || kind == EP_RESIDUAL)
        ep.residual = res;
    if (kind == EP_RELU || kind == EP_RESIDUAL_RELU)
        ep.act = BD_ACT_RELU;
    if (kind == EP_CLIP) {
        /* about the spread of the sums, so that the clamp bites on some
         * outputs and leaves a scale that measures the error of the rest */
        float spread = sqrtf((float)(g.c / g.group * g.kh * g.kw)) / 3;
        ep.act = BD_ACT_CLIP;
        ep.lo = -0.5f * spread;
        ep.hi = 0.75f * spread;
    }
    reference(&g, x, w, &ep, ref);
    char what[160];
    snprintf(what, sizeof what,
             "n%lld c%lld %lldx%lld m%lld group %lld k%lldx%lld s%lld d%lld pads "
             "%lld,%lld,%lld,%lld epilogue %d",
             (long long)g.n, (long long)g.c, (long long)g.h, (long long)g.w, (long long)g.m,
             (long long)g.group, (long long)g.kh, (long long)g.kw, (long long)g.sh,
             (long long)g.dh, (long long)g.pad_t, (long long)g.pad_l, (long long)g.pad_b,
             (long long)g.pad_r, kind);
    for (int via_conv2d = 0; via_conv2d < 2; via_conv2d++) {
        for (int64_t k = 0; k < ny; k++)
            got[k] = NAN; /* every output must be written */
        bd_status st = via_conv2d ? bd_conv2d(&g, x, w, &ep, got) : kernel(&g, x, w, &ep, got);
        if (st != BD_OK)
            fail_msg("%s: %s", what, bd_error_message());
        double err = bd_test_rel_error(got, ref, (size_t)ny);
        if (!(err < TOL))
            fail_msg("%s%s: relative error %g", what, via_conv2d ? " (bd_conv2d)" : "", err);
    }
    free(x);
    free(w);
    free(scale);
    free(shift);
    free(res);
    free(ref);
    free(got);
}

static void skip_without_avx512(void)
{
    if (!bd_conv_direct_available())
        BD_TEST_SKIP("the direct convolution needs AVX-512 in the build and the CPU");
}

static const direct_case direct_cases[] = {
    /* n   c   h   w   m  kh kw s  d  pads t l b r  group */
    {3, 16, 7, 9, 16, 3, 3, 1, 1, 1, 1, 1, 1, 1},
    {3, 32, 15, 13, 32, 3, 3, 1, 1, 1, 1, 1, 1, 1},
    {3, 48, 15, 13, 16, 3, 3, 2, 1, 1, 1, 1, 1, 1},
    {3, 20, 7, 9, 32, 3, 3, 1, 1, 0, 2, 1, 0, 1},   /* a partial input block, asymmetric pads */
    {4, 16, 15, 13, 32, 1, 1, 1, 1, 0, 0, 0, 0, 1}, /* 4 images: whole images per thread */
    {3, 32, 15, 13, 32, 1, 1, 2, 1, 0, 0, 0, 0, 1},
    {3, 16, 15, 13, 32, 1, 1, 2, 1, 1, 0, 0, 2, 1}, /* padded pointwise: zeros on the grid */
    {3, 16, 9, 11, 16, 1, 3, 2, 1, 0, 1, 0, 1, 1},  /* one tap tall: only rows subsampled */
    {1, 3, 15, 13, 16, 7, 7, 2, 1, 3, 3, 3, 3, 1},  /* first layers: few input channels */
    {3, 1, 7, 9, 16, 3, 3, 1, 1, 1, 1, 1, 1, 1},
    {3, 3, 15, 13, 32, 7, 7, 2, 1, 2, 3, 1, 0, 1},
    {3, 16, 15, 13, 64, 3, 3, 1, 2, 2, 2, 2, 2, 1}, /* dilated */
    {3, 17, 15, 13, 48, 5, 3, 2, 1, 2, 0, 0, 1, 1}, /* 5x3 kernel, 3 output blocks */
    {1, 64, 7, 7, 128, 3, 3, 1, 1, 1, 1, 1, 1, 1},  /* ResNet's last stage, one image */
    {2, 16, 3, 2, 16, 3, 3, 1, 1, 1, 1, 1, 1, 1},   /* rows narrower than any tile */
    {3, 32, 30, 37, 32, 3, 3, 1, 1, 1, 1, 1, 1, 1}, /* rows wider than one tile */
    {3, 19, 9, 20, 24, 3, 3, 1, 1, 1, 1, 1, 1, 1},  /* a partial output block */
    {2, 16, 7, 7, 40, 3, 3, 2, 1, 1, 1, 1, 1, 1},   /* 40 = 2.5 blocks */
    {1, 32, 5, 5, 64, 3, 3, 1, 1, 1, 1, 1, 1, 1},   /* Inception's 5x5 maps: tiles 5 wide */
    {1, 20, 10, 10, 64, 3, 3, 1, 1, 1, 1, 1, 1, 1}, /* two of them to a row */
    /* output blocks the widest tiles do not divide: a last group of the
     * blocks left (Inception-v3's 160 channels, GoogLeNet's 208 and 112) */
    {1, 32, 12, 12, 160, 7, 1, 1, 1, 3, 0, 3, 0, 1},
    {1, 24, 9, 14, 208, 3, 3, 1, 1, 1, 1, 1, 1, 1},
    {2, 16, 7, 7, 112, 1, 1, 1, 1, 0, 0, 0, 0, 1},
    {1, 16, 12, 12, 150, 3, 3, 1, 1, 1, 1, 1, 1, 1}, /* and its last block partial */
    /* sums a chunk of taps at a time (the last chunk partial), kept between
     * chunks for a run of units: image by image, rows in two runs; a deep
     * pointwise layer's flat units; */
    {4, 32, 24, 24, 64, 3, 3, 1, 1, 1, 1, 1, 1, 1},
    {1, 256, 7, 7, 64, 1, 1, 1, 1, 0, 0, 0, 0, 1},
    /* rows too wide for one row's sums to be kept: summed whole */
    {1, 32, 4, 1100, 32, 3, 3, 1, 1, 1, 1, 1, 1, 1},
    /* groups of whole blocks (ResNeXt's last stages): each output group
     * sums over its own input blocks; strided, 3 groups of 32 -> 16, 1x1 */
    {1, 64, 14, 14, 64, 3, 3, 2, 1, 1, 1, 1, 1, 2},
    {2, 96, 7, 9, 48, 3, 3, 1, 1, 1, 1, 1, 1, 3},
    {1, 64, 9, 9, 128, 1, 1, 1, 1, 0, 0, 0, 0, 4},
    {1, 512, 7, 7, 512, 3, 3, 1, 1, 1, 1, 1, 1, 32},
};

/* Every epilogue on every case. */
static void run_cases(const direct_case *cases, size_t n, conv_fn kernel, uint64_t seed)
{
    for (size_t k = 0; k < n; k++)
        for (int kind = 0; kind < EP_KINDS; kind++, seed += 10)
            run_case(&cases[k], kernel, kind, seed);
}

/* run_cases on 1 to 3 threads: the kernels share their work out by the
 * thread count. */
static void run_cases_on_threads(const direct_case *cases, size_t n, conv_fn kernel,
                                 uint64_t seed)
{
    const int threads = omp_get_max_threads();
    for (int t = 1; t <= 3; t++) {
        omp_set_num_threads(t);
        run_cases(cases, n, kernel, seed);
    }
    omp_set_num_threads(threads);
}

static bd_status direct(const bd_conv_geom *g, const float *x, const float *w,
                        const bd_epilogue *ep, float *y)
{
    return bd_conv_direct(g, x, w, NULL, ep, y);
}

/* k's weights re-laid beforehand; w itself is not read. */
static bd_status run_packed(const bd_conv_packed_kernel *k, const bd_conv_geom *g, const float *x,
                            const float *w, const bd_epilogue *ep, float *y)
{
    float *packed = aligned_alloc(64, (k->floats(g) * sizeof(float) + 63) / 64 * 64);
    assert_non_null(packed);
    k->pack(g, w, packed);
    bd_status st = k->run(g, x, NULL, packed, ep, y);
    free(packed);
    return st;
}

static bd_status direct_packed(const bd_conv_geom *g, const float *x, const float *w,
                               const bd_epilogue *ep, float *y)
{
    static const bd_conv_packed_kernel k = {bd_conv_direct_packed_floats, bd_conv_direct_pack,
                                            bd_conv_direct};
    return run_packed(&k, g, x, w, ep, y);
}

static void test_direct(void **state)
{
    (void)state;
    skip_without_avx512();
    const size_t n = sizeof direct_cases / sizeof direct_cases[0];
    run_cases(direct_cases, n, direct, 1);
    run_cases(direct_cases, n, direct_packed, 1);
}

/* A layer of few pixels keeps its weights re-laid between calls: the
 * second call reads the copy (the weights changed in place are not seen,
 * as the contract allows), another weight pointer or geometry (its input
 * 6x6) is re-laid, and many pixels (a large batch) keep nothing. */
static void check_cached(const direct_case *dc)
{
    bd_conv_geom g = geom_of(dc);
    const int64_t ohw = g.oh * g.ow, nx = 64 * g.c * g.h * g.w, nw = g.m * g.c * 9;
    const int64_t ny = 64 * g.m * ohw;
    float *x = random_floats(nx, 11), *w = random_floats(nw, 12), *w2 = random_floats(nw, 13);
    float *ref = malloc((size_t)ny * sizeof *ref), *got = malloc((size_t)ny * sizeof *got);
    assert_true(ref && got);
    bd_epilogue ep = {.act = BD_ACT_RELU};
    bd_conv_cache *cache = NULL;
    assert_int_equal(bd_conv2d_cached(&g, x, w, &ep, got, &cache), BD_OK);
    assert_non_null(cache);
    assert_int_equal(bd_conv2d(&g, x, w, &ep, ref), BD_OK);
    assert_memory_equal(got, ref, (size_t)(g.m * ohw) * sizeof *got);
    const float kept = w[0];
    w[0] += 1; /* not seen: the cache holds the re-laid copy */
    assert_int_equal(bd_conv2d_cached(&g, x, w, &ep, got, &cache), BD_OK);
    assert_memory_equal(got, ref, (size_t)(g.m * ohw) * sizeof *got);
    w[0] = kept;
    assert_int_equal(bd_conv2d_cached(&g, x, w2, &ep, got, &cache), BD_OK);
    assert_int_equal(bd_conv2d(&g, x, w2, &ep, ref), BD_OK);
    assert_memory_equal(got, ref, (size_t)(g.m * ohw) * sizeof *got);
    direct_case other = *dc; /* another output grid */
    other.h = other.w = 6;
    bd_conv_geom g6 = geom_of(&other);
    assert_int_equal(bd_conv2d_cached(&g6, x, w2, &ep, got, &cache), BD_OK);
    assert_int_equal(bd_conv2d(&g6, x, w2, &ep, ref), BD_OK);
    assert_memory_equal(got, ref, (size_t)(g6.m * g6.oh * g6.ow) * sizeof *got);
    bd_conv_cache_free(cache);
    g.n = 64;
    cache = NULL;
    assert_int_equal(bd_conv2d_cached(&g, x, w, &ep, got, &cache), BD_OK);
    assert_null(cache);
    assert_int_equal(bd_conv2d(&g, x, w, &ep, ref), BD_OK);
    assert_memory_equal(got, ref, (size_t)ny * sizeof *got);
    free(x);
    free(w);
    free(w2);
    free(ref);
    free(got);
}

/* check_cached for the Winograd kernel (3x3 stride 1) and the direct one
 * (stride 2). */
static void test_cached(void **state)
{
    (void)state;
    skip_without_avx512();
    const direct_case winograd_layer = {1, 32, 7, 7, 32, 3, 3, 1, 1, 1, 1, 1, 1, 1};
    const direct_case direct_layer = {1, 32, 13, 13, 32, 3, 3, 2, 1, 1, 1, 1, 1, 1};
    check_cached(&winograd_layer);
    check_cached(&direct_layer);
}

/* Tiles of 6 output channels by 4 vectors of 16 pixels; the pixels past
 * the last whole vector go as dot products where they are 8 or fewer, and
 * input channels there go 16 at a time. */
static const direct_case pointwise_cases[] = {
    /* n   c   h   w   m  kh kw s  d  pads t l b r  group */
    {3, 16, 8, 8, 24, 1, 1, 1, 1, 0, 0, 0, 0, 1},    /* whole vectors, whole tiles */
    {3, 37, 7, 7, 13, 1, 1, 1, 1, 0, 0, 0, 0, 1},    /* 3 vectors and 1 pixel; tiles 6, 6, 1 */
    {2, 20, 1, 1, 9, 1, 1, 1, 1, 0, 0, 0, 0, 1},     /* one pixel (squeeze-and-excitation) */
    {3, 24, 14, 14, 30, 1, 1, 1, 1, 0, 0, 0, 0, 1},  /* 12 vectors and 4 pixels */
    {2, 5, 7, 9, 7, 1, 1, 1, 1, 0, 0, 0, 0, 1},      /* 3 vectors and 15 pixels: a masked one */
    {3, 9, 12, 12, 17, 1, 1, 1, 1, 0, 0, 0, 0, 1},   /* 9 vectors: blocks of 4, 4 and 1 */
    {1, 64, 7, 7, 200, 1, 1, 1, 1, 0, 0, 0, 0, 1},   /* one image: channels split over threads */
    {1, 3, 2, 3, 2, 1, 1, 1, 1, 0, 0, 0, 0, 1},      /* 6 pixels, all dot products */
    {2, 21, 5, 7, 11, 1, 1, 1, 1, 0, 0, 0, 0, 1},    /* 2 vectors and 3 pixels: dots of */
                                                     /* channel pairs, the last one alone */
    {2, 40, 5, 5, 36, 1, 1, 1, 1, 0, 0, 0, 0, 1},    /* 25 pixels: bd_conv2d takes direct */
    /* twice as many pixels as output channels: the threads share pixel
     * blocks, 3 made 4 for 2 threads */
    {1, 24, 10, 16, 32, 1, 1, 1, 1, 0, 0, 0, 0, 1},
    /* deep enough for the input to be copied to rows of whole vectors */
    {1, 256, 5, 7, 130, 1, 1, 1, 1, 0, 0, 0, 0, 1},  /* 2 vectors and 3 dots */
    {2, 257, 5, 5, 128, 1, 1, 1, 1, 0, 0, 0, 0, 1},  /* 2 vectors, the last masked */
};

static void test_pointwise(void **state)
{
    (void)state;
    skip_without_avx512();
    run_cases_on_threads(pointwise_cases, sizeof pointwise_cases / sizeof pointwise_cases[0],
                         bd_conv_pointwise, 1001);
    direct_case padded = {1, 16, 7, 9, 24, 1, 1, 1, 1, 0, 1, 0, 0, 1};
    bd_conv_geom g = geom_of(&padded);
    assert_false(bd_conv_pointwise_supported(&g));
    assert_int_equal(bd_conv_pointwise(&g, NULL, NULL, NULL, NULL), BD_EUNSUPPORTED);
}

/* Pixels in vectors: tiles of 6 output channels by 4 blocks of 16 pixels
 * over bordered planes, blocks taken across rows, within each group. */
static const direct_case planes_cases[] = {
    /* n   c   h   w   m  kh kw s  d  pads t l b r  group */
    {2, 3, 23, 40, 16, 3, 3, 2, 1, 1, 1, 1, 1, 1},   /* a first layer: 3 planes, stride 2 */
    {1, 3, 15, 37, 13, 7, 7, 2, 1, 3, 3, 3, 3, 1},   /* 7x7, tiles of 6, 6 and 1 channels */
    {3, 1, 9, 7, 7, 3, 3, 1, 1, 1, 1, 1, 1, 1},      /* one plane, rows of one block */
    {2, 15, 8, 20, 8, 3, 3, 1, 2, 2, 1, 2, 3, 1},    /* dilated, asymmetric pads */
    {2, 4, 11, 35, 6, 3, 3, 2, 1, 0, 0, 1, 1, 1},    /* stride 2, no left pad: phases swap */
    {1, 2, 6, 70, 5, 1, 5, 1, 1, 0, 2, 0, 2, 1},     /* 1x5, rows of 5 blocks */
    {2, 24, 13, 35, 24, 3, 3, 1, 1, 1, 1, 1, 1, 1},  /* 24 channels (EfficientNetV2) */
    /* groups (RegNet, ResNeXt): each group's tiles over its own planes */
    {2, 6, 11, 35, 10, 3, 3, 1, 1, 1, 1, 1, 1, 2},   /* 3 -> 5 channels a group */
    {1, 32, 14, 21, 32, 3, 3, 2, 1, 1, 1, 1, 1, 4},  /* 8 -> 8: tiles of 6 and 2 */
    {2, 12, 7, 7, 24, 3, 3, 1, 1, 1, 1, 1, 1, 3},    /* 4 -> 8, rows of one block */
};

static void test_planes(void **state)
{
    (void)state;
    skip_without_avx512();
    run_cases(planes_cases, sizeof planes_cases / sizeof planes_cases[0], bd_conv_planes, 4001);
    direct_case many = {1, 17, 7, 9, 8, 7, 7, 1, 1, 3, 3, 3, 3, 1};
    bd_conv_geom g = geom_of(&many);
    assert_false(bd_conv_planes_supported(&g)); /* 833 taps */
    assert_int_equal(bd_conv_planes(&g, NULL, NULL, NULL, NULL), BD_EUNSUPPORTED);
    g.c = 16;
    assert_true(bd_conv_planes_supported(&g));
    g.sw = 3;
    assert_false(bd_conv_planes_supported(&g));
}

/* Blocks of 16 outputs, 4 at a time across rows (or at 3x3 stride 1, 4
 * rows of a block), from a bordered plane split by column phase at stride 2;
 * rows of 16 outputs or fewer with 16 channels to a vector. */
static const direct_case depthwise_cases[] = {
    /* n   c   h   w   m  kh kw s  d  pads t l b r  group */
    {3, 5, 7, 7, 5, 3, 3, 1, 1, 1, 1, 1, 1, 5},      /* rows of one block */
    {2, 4, 9, 70, 4, 3, 3, 1, 1, 1, 1, 1, 1, 4},     /* 4 whole blocks and a part per row */
    /* 3x3 stride 1, ROWS output rows at a time: rows a multiple of them; the
     * last ones overlapping with asymmetric pads; fewer rows than that */
    {2, 3, 8, 40, 3, 3, 3, 1, 1, 1, 1, 1, 1, 3},
    {2, 3, 10, 21, 3, 3, 3, 1, 1, 0, 1, 2, 0, 3},
    {1, 2, 3, 20, 2, 3, 3, 1, 1, 0, 1, 0, 1, 2},
    {2, 4, 13, 40, 4, 5, 5, 2, 1, 2, 2, 2, 2, 4},    /* 5x5 stride 2 */
    {2, 3, 12, 33, 3, 3, 3, 2, 1, 0, 0, 1, 1, 3},    /* stride 2, pad left 0: even phase first */
    {2, 3, 11, 34, 3, 3, 3, 2, 1, 1, 1, 1, 1, 3},    /* stride 2, even width */
    /* 3x3 stride 2 from the plane as it lies: rows of two blocks (blocks
     * taken across rows, a row's second block partial), pad left 0; odd
     * width, no pads after, the last row's window at the plane's edge */
    {2, 3, 12, 41, 3, 3, 3, 2, 1, 0, 0, 1, 1, 3},
    {1, 2, 9, 45, 2, 3, 3, 2, 1, 1, 1, 0, 0, 2},
    {1, 2, 9, 30, 2, 7, 7, 1, 1, 3, 3, 3, 3, 2},     /* 7x7 (ConvNeXt) */
    {2, 3, 9, 20, 3, 3, 3, 1, 2, 2, 2, 2, 2, 3},     /* dilated: any kernel */
    {2, 3, 10, 21, 3, 1, 7, 1, 1, 0, 3, 0, 3, 3},    /* 1x7 */
    /* rows of at most 16 outputs: 16 channels to a vector, the last block
     * partial, and PX outputs to a group with a partial last one */
    {2, 33, 7, 7, 33, 5, 5, 1, 1, 2, 2, 2, 2, 33},
    {1, 21, 14, 14, 21, 3, 3, 2, 1, 1, 1, 1, 1, 21},
    {2, 18, 11, 13, 18, 3, 3, 1, 2, 2, 1, 2, 3, 18},  /* dilated, asymmetric pads */
    {1, 16, 5, 9, 16, 7, 7, 1, 1, 3, 3, 3, 3, 16},
    {2, 3, 10, 21, 6, 3, 3, 1, 1, 1, 1, 1, 1, 3},    /* two outputs per channel: not depthwise */
};

static void test_depthwise(void **state)
{
    (void)state;
    skip_without_avx512();
    const size_t n = sizeof depthwise_cases / sizeof depthwise_cases[0] - 1;
    run_cases(depthwise_cases, n, bd_conv_depthwise, 2001);
    /* a grouped conv that is not depthwise: through bd_conv2d only */
    run_cases(depthwise_cases + n, 1, bd_conv2d, 3001);
}

/* 2x2 output tiles of 3x3 stride-1 layers: planes whose tiles the output
 * does not fill (odd sizes, one pixel), rows of tiles cut where a vector
 * of the block ends, blocks of tiles within and across images, input
 * channels packed two at a time (an odd count leaves one), output channel
 * blocks of 8 with a partial last one. */
static const direct_case winograd_cases[] = {
    /* n   c   h   w   m  kh kw s  d  pads t l b r  group */
    {1, 16, 7, 7, 16, 3, 3, 1, 1, 1, 1, 1, 1, 1},    /* tile rows of 4: 4 runs a vector */
    {3, 17, 9, 11, 24, 3, 3, 1, 1, 1, 1, 1, 1, 1},   /* odd sizes, odd channels, 3 images */
    {2, 16, 40, 37, 8, 3, 3, 1, 1, 1, 1, 1, 1, 1},   /* tile rows of 19: cut at vectors */
    {1, 300, 14, 14, 20, 3, 3, 1, 1, 1, 1, 1, 1, 1}, /* deep: 2 blocks of 25 tiles */
    {1, 16, 70, 70, 16, 3, 3, 1, 1, 1, 1, 1, 1, 1},  /* 1225 tiles in blocks */
    {2, 16, 9, 12, 16, 3, 3, 1, 1, 0, 2, 1, 0, 1},   /* asymmetric pads */
    {1, 16, 5, 5, 16, 3, 3, 1, 1, 2, 2, 2, 2, 1},    /* pads of 2: patches of zeros */
    {1, 16, 6, 6, 16, 3, 3, 1, 1, 0, 0, 0, 0, 1},    /* no pads */
    {1, 16, 3, 3, 40, 3, 3, 1, 1, 0, 0, 0, 0, 1},    /* one output pixel */
    {2, 16, 1, 2, 16, 3, 3, 1, 1, 1, 1, 1, 1, 1},    /* one row of two */
};

static bd_status winograd(const bd_conv_geom *g, const float *x, const float *w,
                          const bd_epilogue *ep, float *y)
{
    return bd_conv_winograd(g, x, w, NULL, ep, y);
}

static bd_status winograd_packed(const bd_conv_geom *g, const float *x, const float *w,
                                 const bd_epilogue *ep, float *y)
{
    static const bd_conv_packed_kernel k = {bd_conv_winograd_packed_floats,
                                            bd_conv_winograd_pack, bd_conv_winograd};
    return run_packed(&k, g, x, w, ep, y);
}

/* On 1 to 3 threads: blocks and runs of output channels share out by the
 * thread count. */
static void test_winograd(void **state)
{
    (void)state;
    skip_without_avx512();
    const size_t n = sizeof winograd_cases / sizeof winograd_cases[0];
    run_cases_on_threads(winograd_cases, n, winograd, 5001);
    run_cases_on_threads(winograd_cases, n, winograd_packed, 5001);
    const direct_case other[] = {
        {1, 16, 7, 7, 16, 3, 3, 2, 1, 1, 1, 1, 1, 1}, /* stride 2 */
        {1, 16, 7, 7, 16, 3, 3, 1, 2, 2, 2, 2, 2, 1}, /* dilated */
        {1, 16, 7, 7, 16, 3, 3, 1, 1, 1, 1, 1, 1, 2}, /* two groups */
        {1, 16, 7, 7, 16, 5, 5, 1, 1, 2, 2, 2, 2, 1}, /* 5x5 */
    };
    for (size_t k = 0; k < sizeof other / sizeof other[0]; k++) {
        bd_conv_geom g = geom_of(&other[k]);
        assert_false(bd_conv_winograd_supported(&g));
        assert_int_equal(bd_conv_winograd(&g, NULL, NULL, NULL, NULL, NULL), BD_EUNSUPPORTED);
    }
}

/* Few images, each too large for the re-laid input of them all to be held
 * at once: they go through in chunks, and a thread keeps the weights it
 * packed for a group from one chunk to the next. */
static void test_chunks(void **state)
{
    (void)state;
    skip_without_avx512();
    const direct_case big = {3, 64, 120, 120, 48, 1, 1, 1, 1, 0, 0, 0, 0, 1};
    run_case(&big, direct, EP_RESIDUAL_RELU, 7);
    run_case(&big, direct_packed, EP_RESIDUAL_RELU, 7);
}

static void test_unsupported(void **state)
{
    (void)state;
    skip_without_avx512();
    direct_case dc = {1, 16, 7, 9, 32, 3, 3, 1, 1, 1, 1, 1, 1, 2};
    bd_conv_geom g = geom_of(&dc);
    assert_false(bd_conv_direct_supported(&g)); /* two groups of 8 input channels */
    assert_int_equal(bd_conv_direct(&g, NULL, NULL, NULL, NULL, NULL), BD_EUNSUPPORTED);
    g.group = 1;
    assert_true(bd_conv_direct_supported(&g));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_direct),
        cmocka_unit_test(test_cached),
        cmocka_unit_test(test_winograd),
        cmocka_unit_test(test_chunks),
        cmocka_unit_test(test_pointwise),
        cmocka_unit_test(test_planes),
        cmocka_unit_test(test_depthwise),
        cmocka_unit_test(test_unsupported),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
