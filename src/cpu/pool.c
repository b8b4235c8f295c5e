/* Pooling: MaxPool and AveragePool over 1 to 3 spatial dims, and the global
 * pools over any number. Windowed pools share one walker that works in three
 * spatial dims (fewer are padded with trivial ones in front); every pool
 * reduces through the same accumulate(). */
#include <float.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "kernel_util.h"
#include "pool.h"
#ifdef __AVX512F__
#include <immintrin.h>

#include "avx512.h"
#endif

enum { SPATIAL = BD_POOL_SPATIAL };

typedef enum pool_kind { POOL_MAX, POOL_AVG } pool_kind;

static void accumulate(const float *x, int64_t count, int64_t stride, pool_kind kind, float *max,
                       double *sum)
{
    if (kind == POOL_MAX) {
        for (int64_t j = 0; j < count; j++)
            if (x[j * stride] > *max)
                *max = x[j * stride];
    } else {
        /* in vector lanes, double still: a squeeze-and-excitation block
         * averages every channel of a map this way */
        double s = 0;
#pragma omp simd reduction(+ : s)
        for (int64_t j = 0; j < count; j++)
            s += x[j * stride];
        *sum += s;
    }
}

static int64_t floor_div(int64_t a, int64_t b) { return a >= 0 ? a / b : -((-a + b - 1) / b); }

/* Of the taps start + j * dilation (0 <= j < kernel), the number that fall
 * in [lo, hi), and the first j that does. */
static int64_t taps_within(int64_t start, int64_t kernel, int64_t dilation, int64_t lo,
                           int64_t hi, int64_t *first)
{
    /* without dilation, no division: plane_2d asks twice an output row,
     * and the divisions had cost as much as the row's maxima */
    int64_t j0 = dilation == 1 ? lo - start : -floor_div(start - lo, dilation);
    int64_t j1 = dilation == 1 ? hi - 1 - start : floor_div(hi - 1 - start, dilation);
    if (j0 < 0)
        j0 = 0;
    if (j1 > kernel - 1)
        j1 = kernel - 1;
    *first = j0;
    return j1 >= j0 ? j1 - j0 + 1 : 0;
}

/* Reads an ints attribute of len values, each at least min; def fills an
 * absent optional one, and a NULL def makes it required. */
static bd_status pool_ints(const bd_node *n, const char *name, int len, int64_t min,
                           const int64_t *def, int64_t *vals)
{
    int count;
    BD_TRY(bd_k_int_list(n, 0, NULL, name, vals, 2 * SPATIAL, &count));
    if (count < 0 && !def)
        return bd_node_fail(n, BD_EINVAL, "attribute '%s' is required", name);
    if (count < 0) {
        memcpy(vals, def, (size_t)len * sizeof *vals);
        return BD_OK;
    }
    if (count != len)
        return bd_node_fail(n, BD_EINVAL, "'%s' has %d values, expected %d", name, count, len);
    for (int i = 0; i < count; i++)
        if (vals[i] < min)
            return bd_node_fail(n, BD_EINVAL, "'%s' has the invalid value %" PRId64, name,
                                vals[i]);
    return BD_OK;
}

bd_status bd_pool_geometry(const bd_node *n, const bd_tensor *x, bd_pool_geom *pg)
{
    int s = x->ndim - 2;
    if (s < 1 || s > SPATIAL)
        return bd_node_fail(n, BD_EUNSUPPORTED,
                            "input has rank %d; [N, C, ...] with 1 to %d spatial dims expected",
                            x->ndim, SPATIAL);
    static const int64_t ones[2 * SPATIAL] = {1, 1, 1, 1, 1, 1}, zeros[2 * SPATIAL];
    int64_t kernel[SPATIAL], stride[SPATIAL], dilation[SPATIAL], pads[2 * SPATIAL];
    BD_TRY(pool_ints(n, "kernel_shape", s, 1, NULL, kernel));
    BD_TRY(pool_ints(n, "strides", s, 1, ones, stride));
    BD_TRY(pool_ints(n, "dilations", s, 1, ones, dilation));
    BD_TRY(pool_ints(n, "pads", 2 * s, 0, zeros, pads));
    const char *auto_pad = bd_attr_string(n, "auto_pad", "NOTSET");
    int same_upper = strcmp(auto_pad, "SAME_UPPER") == 0;
    int same = same_upper || strcmp(auto_pad, "SAME_LOWER") == 0;
    int valid = strcmp(auto_pad, "VALID") == 0;
    if (!same && !valid && strcmp(auto_pad, "NOTSET") != 0)
        return bd_node_fail(n, BD_EINVAL, "unknown auto_pad '%s'", auto_pad);
    int ceil_mode = bd_attr_int(n, "ceil_mode", 0) != 0;

    int lead = SPATIAL - s;
    for (int t = 0; t < SPATIAL; t++) {
        int i = t - lead;
        int64_t in = i < 0 ? 1 : x->dims[2 + i];
        int64_t k = i < 0 ? 1 : kernel[i], st = i < 0 ? 1 : stride[i];
        int64_t dil = i < 0 ? 1 : dilation[i];
        int64_t pb = i < 0 || same || valid ? 0 : pads[i];
        int64_t pe = i < 0 || same || valid ? 0 : pads[i + s];
        int64_t span = (k - 1) * dil + 1;
        int64_t out;
        if (same) {
            out = (in + st - 1) / st;
            int64_t total = (out - 1) * st + span - in;
            if (total < 0)
                total = 0;
            pb = same_upper ? total / 2 : total - total / 2;
            pe = total - pb;
        } else {
            int64_t room = in + pb + pe - span;
            if (room < 0) {
                char buf[96];
                return bd_node_fail(n, BD_EINVAL,
                                    "kernel spans %" PRId64 " but spatial dim %d of input %s "
                                    "is %" PRId64 " with padding",
                                    span, i, bd_shape_str(x->ndim, x->dims, buf, sizeof buf),
                                    in + pb + pe);
            }
            if (ceil_mode && !valid) {
                out = (room + st - 1) / st + 1;
                /* As PyTorch does: the last window must start inside the
                 * input or the leading padding, or it would pool nothing. */
                if ((out - 1) * st >= in + pb)
                    out--;
            } else {
                out = room / st + 1;
            }
        }
        pg->in[t] = in;
        pg->out[t] = out;
        pg->kernel[t] = k;
        pg->stride[t] = st;
        pg->dilation[t] = dil;
        pg->pad_begin[t] = pb;
        pg->pad_end[t] = pe;
    }
    return BD_OK;
}

/* The window of output position o along spatial dim t: the first input
 * index it reads, how many taps fall inside the input, and how many inside
 * the padded input (the divisor of count_include_pad). */
static void window(const bd_pool_geom *pg, int t, int64_t o, int64_t *first, int64_t *taps,
                   int64_t *padded)
{
    int64_t start = o * pg->stride[t] - pg->pad_begin[t], j0, unused;
    *taps = taps_within(start, pg->kernel[t], pg->dilation[t], 0, pg->in[t], &j0);
    *first = start + j0 * pg->dilation[t];
    *padded = taps_within(start, pg->kernel[t], pg->dilation[t], -pg->pad_begin[t],
                          pg->in[t] + pg->pad_end[t], &unused);
}

/* The windows along the last spatial dim are the same for every row, so
 * they are worked out once per call: first tap, taps inside, taps padded. */
typedef struct row_windows {
    int64_t *first, *taps, *padded;
} row_windows;

/* Computes one row (the last spatial dim) of a plane's output. */
static void pool_row(const bd_pool_geom *pg, const row_windows *rw, const float *x, float *y,
                     int64_t o0, int64_t o1, pool_kind kind, int include_pad)
{
    int64_t first[SPATIAL], taps[SPATIAL], padded[SPATIAL];
    window(pg, 0, o0, &first[0], &taps[0], &padded[0]);
    window(pg, 1, o1, &first[1], &taps[1], &padded[1]);
    for (int64_t o2 = 0; o2 < pg->out[2]; o2++) {
        first[2] = rw->first[o2];
        taps[2] = rw->taps[o2];
        padded[2] = rw->padded[o2];
        /* A window wholly in the padding yields -FLT_MAX, as onnxruntime's does. */
        float max = -FLT_MAX;
        double sum = 0;
        for (int64_t j0 = 0; j0 < taps[0]; j0++)
            for (int64_t j1 = 0; j1 < taps[1]; j1++) {
                int64_t i0 = first[0] + j0 * pg->dilation[0];
                int64_t i1 = first[1] + j1 * pg->dilation[1];
                accumulate(x + (i0 * pg->in[1] + i1) * pg->in[2] + first[2], taps[2],
                           pg->dilation[2], kind, &max, &sum);
            }
        const int64_t *counted = include_pad ? padded : taps;
        int64_t count = counted[0] * counted[1] * counted[2];
        if (kind == POOL_MAX)
            y[o2] = max;
        else
            y[o2] = count ? (float)(sum / (double)count) : 0;
    }
}

/* One step of a window reduction over n floats, dst op= src; the first
 * starts from the empty window's value (-FLT_MAX or 0), so NaN is skipped
 * by the comparison pool_row makes, and a sum starts from 0 as its does. */
static void reduce_into(float *dst, const float *src, int64_t n, int max, int first)
{
    if (first && max) {
#pragma omp simd
        for (int64_t j = 0; j < n; j++)
            dst[j] = src[j] > -FLT_MAX ? src[j] : -FLT_MAX;
    } else if (first) {
#pragma omp simd
        for (int64_t j = 0; j < n; j++)
            dst[j] = 0.0f + src[j];
    } else if (max) {
#pragma omp simd
        for (int64_t j = 0; j < n; j++)
            dst[j] = src[j] > dst[j] ? src[j] : dst[j];
    } else {
#pragma omp simd
        for (int64_t j = 0; j < n; j++)
            dst[j] += src[j];
    }
}

/* dst[0..w) reduced over rows r0 .. r0 + rows - 1 of x (rows of w), or
 * the empty window's value where there are none. */
static void reduce_rows(float *dst, const float *x, int64_t w, int64_t r0, int64_t rows, int max)
{
    const float none = max ? -FLT_MAX : 0;
    for (int64_t c = 0; c < w && rows == 0; c++)
        dst[c] = none;
    for (int64_t r = r0; r < r0 + rows; r++)
        reduce_into(dst, x + r * w, w, max, r == r0);
}

/* A 2-D pool without dilation, one plane, separably: each output row first
 * reduces down its window's rows for every input column (one vectorised
 * pass per row), then across each window's columns. The maximum is
 * pool_row's, NaN skipped alike (the same comparison picks each value);
 * the average sums in float, in another order than pool_row's double sum
 * (within a float's rounding of it). At stride 2 across, the column sums
 * are first split into their even and odd columns, so that each tap reads
 * a contiguous run: read two apart, they were gathers (MaxPool 3x3/2 on
 * 64x111x111: 0.36 ms). acc has room for two rows; cols[ox] is how many
 * columns output column ox's window counts (for the average). */
static void plane_2d(const bd_pool_geom *pg, pool_kind kind, int include_pad, const float *x,
                     float *y, float *acc, const int64_t *cols)
{
    const int64_t h = pg->in[1], w = pg->in[2], ow = pg->out[2];
    const int64_t kw = pg->kernel[2], sw = pg->stride[2], pl = pg->pad_begin[2];
    const int max = kind == POOL_MAX;
    for (int64_t oy = 0; oy < pg->out[1]; oy++) {
        const int64_t start = oy * pg->stride[1] - pg->pad_begin[1];
        int64_t r0, unused, rows = taps_within(start, pg->kernel[1], 1, 0, h, &r0);
        const int64_t rows_counted =
            include_pad ? taps_within(start, pg->kernel[1], 1, -pg->pad_begin[1],
                                      h + pg->pad_end[1], &unused)
                        : rows;
        reduce_rows(acc, x, w, r0 + start, rows, max);
        const int64_t half = (w + 1) / 2;
        float *phase = acc + w; /* at stride 2: the even columns, then the odd */
        if (sw == 2) {
#pragma omp simd
            for (int64_t c = 0; c < half; c++)
                phase[c] = acc[2 * c];
#pragma omp simd
            for (int64_t c = 0; c < w / 2; c++)
                phase[half + c] = acc[2 * c + 1];
        }
        const float none = max ? -FLT_MAX : 0;
        float *out = y + oy * ow;
#pragma omp simd
        for (int64_t ox = 0; ox < ow; ox++)
            out[ox] = none;
        for (int64_t kj = 0; kj < kw; kj++) {
            /* the outputs whose tap kj reads column ox * sw + kj - pl in [0, w) */
            const int64_t off = kj - pl;
            int64_t lo = off >= 0 ? 0 : (-off + sw - 1) / sw;
            int64_t hi = w - off <= 0 ? 0 : (w - off + sw - 1) / sw;
            hi = hi < ow ? hi : ow;
            /* src[ox * step] is column ox * sw + off; a step of 1 has loops
             * of its own, which the compiler makes plain vector loads */
            const int64_t q = floor_div(off, 2);
            const float *src = sw == 2 ? phase + (off - 2 * q) * half + q : acc + off;
            const int64_t step = sw == 2 ? 1 : sw;
            if (max && step == 1) {
#pragma omp simd
                for (int64_t ox = lo; ox < hi; ox++)
                    out[ox] = src[ox] > out[ox] ? src[ox] : out[ox];
            } else if (max) {
#pragma omp simd
                for (int64_t ox = lo; ox < hi; ox++) {
                    const float v = src[ox * step];
                    out[ox] = v > out[ox] ? v : out[ox];
                }
            } else if (step == 1) {
#pragma omp simd
                for (int64_t ox = lo; ox < hi; ox++)
                    out[ox] += src[ox];
            } else {
#pragma omp simd
                for (int64_t ox = lo; ox < hi; ox++)
                    out[ox] += src[ox * step];
            }
        }
        if (!max) {
#pragma omp simd
            for (int64_t ox = 0; ox < ow; ox++) {
                const int64_t count = rows_counted * cols[ox];
                out[ox] = count ? out[ox] / (float)count : 0;
            }
        }
    }
}

#ifdef __AVX512F__
/* Whether plane_max_s2 takes pg: a MaxPool 2 or 3 wide at stride 2 across,
 * without dilation (ResNet's, VGG's, AlexNet's, SqueezeNet's, GoogLeNet's
 * downsampling pools). */
static int max_s2(const bd_pool_geom *pg, pool_kind kind)
{
    return kind == POOL_MAX && pg->stride[2] == 2 && (pg->kernel[2] == 2 || pg->kernel[2] == 3) &&
           __builtin_cpu_supports("avx512f");
}

/* plane_2d's maximum for a max_s2 geometry, 16 outputs of a row at a time
 * in registers: the window's rows are reduced over the 33 input columns
 * under them (three loads a row, lanes outside the row masked to the empty
 * window's value), split into even and odd columns, and the even ones
 * shifted by one for a third tap. plane_2d's passes went through memory
 * row by row, each a short loop. The same comparisons in another order;
 * no NaN reaches the maxima (as in plane_2d, the max of a NaN and a value
 * is the value), so the bits are the same. */
static void plane_max_s2(const bd_pool_geom *pg, const float *x, float *y)
{
    const int64_t h = pg->in[1], w = pg->in[2], ow = pg->out[2];
    const int64_t pl = pg->pad_begin[2], three = pg->kernel[2] == 3;
    const __m512 none = _mm512_set1_ps(-FLT_MAX);
    const __m512i even = _mm512_set_epi32(30, 28, 26, 24, 22, 20, 18, 16, 14, 12, 10, 8, 6, 4,
                                          2, 0);
    const __m512i odd = _mm512_add_epi32(even, _mm512_set1_epi32(1));
    const __m512i width = _mm512_set1_epi32((int)w), outs = _mm512_set1_epi32((int)ow);
    const __m512i sixteen = _mm512_set1_epi32(16), thirty_two = _mm512_set1_epi32(32);
    for (int64_t oy = 0; oy < pg->out[1]; oy++) {
        const int64_t start = oy * pg->stride[1] - pg->pad_begin[1];
        int64_t r0, rows = taps_within(start, pg->kernel[1], 1, 0, h, &r0);
        r0 += start;
        for (int64_t ox = 0; ox < ow; ox += 16) {
            const int64_t c = 2 * ox - pl; /* the first column of lane 0's window */
            const __m512i cols = _mm512_add_epi32(bd_iota(), _mm512_set1_epi32((int)c));
            const __mmask16 m0 = bd_lanes_within(cols, width);
            const __mmask16 m1 = bd_lanes_within(_mm512_add_epi32(cols, sixteen), width);
            const __mmask16 m2 = bd_lanes_within(_mm512_add_epi32(cols, thirty_two), width);
            __m512 a = none, b = none, d = none; /* columns c.., c + 16.., c + 32.. */
            for (int64_t r = r0; r < r0 + rows; r++) {
                const float *at = x + r * w + c;
                a = _mm512_max_ps(_mm512_mask_loadu_ps(none, m0, at), a);
                b = _mm512_max_ps(_mm512_mask_loadu_ps(none, m1, at + 16), b);
                if (three)
                    d = _mm512_max_ps(_mm512_mask_loadu_ps(none, m2 & 1, at + 32), d);
            }
            const __m512 e = _mm512_permutex2var_ps(a, even, b);
            __m512 m = _mm512_max_ps(_mm512_permutex2var_ps(a, odd, b), e);
            if (three) /* columns c + 2, c + 4, ..., c + 32 */
                m = _mm512_max_ps(_mm512_castsi512_ps(_mm512_alignr_epi32(
                                      _mm512_castps_si512(d), _mm512_castps_si512(e), 1)),
                                  m);
            const __m512i out_cols = _mm512_add_epi32(bd_iota(), _mm512_set1_epi32((int)ox));
            _mm512_mask_storeu_ps(y + oy * ow + ox, bd_lanes_within(out_cols, outs), m);
        }
    }
}

/* Whether plane_s1 takes pg: stride 1 both ways, without dilation, a
 * window at most 17 wide (so that a vector of outputs reads two vectors of
 * input columns). */
static int s1_pool(const bd_pool_geom *pg)
{
    return pg->stride[1] == 1 && pg->stride[2] == 1 && pg->kernel[2] <= 17 &&
           __builtin_cpu_supports("avx512f");
}

/* plane_2d's and plane_flat's pool at stride 1, 16 outputs of a row at a
 * time in registers: the window's rows are reduced over the input columns
 * under them (two vectors, lanes outside the row masked to the empty
 * window's value), then each column tap is those sums shifted across
 * lanes. Their passes went through memory, each a short loop: on the
 * branch pools of GoogLeNet (3x3 pad 1 on 28x28 to 7x7 maps) and
 * Inception-v3 (Pad and 3x3 AveragePool on 25x25 and 12x12), a few hundred
 * nanoseconds a plane. The same operations in the same order (a masked
 * lane adds 0 or compares with -FLT_MAX, which changes no sum or maximum
 * that starts from those), so the same bits; count[j] as plane_flat's. */
static inline __attribute__((always_inline)) void
s1_body(const bd_pool_geom *pg, const float *x, float *y, const float *count, const int max)
{
    const int64_t h = pg->in[1], w = pg->in[2], oh = pg->out[1], ow = pg->out[2];
    const int64_t kh = pg->kernel[1], kw = pg->kernel[2];
    const int64_t pt = pg->pad_begin[1], pl = pg->pad_begin[2];
    const __m512 none = _mm512_set1_ps(max ? -FLT_MAX : 0.0f);
    const __m512i width = _mm512_set1_epi32((int)w), outs = _mm512_set1_epi32((int)ow);
    for (int64_t ox = 0; ox < ow; ox += 16) {
        __mmask16 m[2];
#pragma GCC unroll 2
        for (int j = 0; j < 2; j++)
            m[j] = bd_lanes_within(
                _mm512_add_epi32(bd_iota(), _mm512_set1_epi32((int)(ox - pl + 16 * j))), width);
        const __mmask16 keep =
            bd_lanes_within(_mm512_add_epi32(bd_iota(), _mm512_set1_epi32((int)ox)), outs);
        for (int64_t oy = 0; oy < oh; oy++) {
            int64_t r0, rows = taps_within(oy - pt, kh, 1, 0, h, &r0);
            const float *at = x + (r0 + oy - pt) * w + ox - pl;
            __m512 v[2];
#pragma GCC unroll 2
            for (int j = 0; j < 2; j++) {
                v[j] = none;
#pragma GCC unroll 4
                for (int64_t i = 0; i < rows; i++) {
                    const float *in = at + i * w + 16 * j;
                    v[j] = max ? _mm512_max_ps(_mm512_mask_loadu_ps(none, m[j], in), v[j])
                               : _mm512_add_ps(v[j], _mm512_maskz_loadu_ps(m[j], in));
                }
            }
            __m512 r = none;
            for (int64_t kj = 0; kj < kw; kj++) {
                const __m512 t =
                    kj == 0    ? v[0]
                    : kj == 16 ? v[1]
                               : _mm512_permutex2var_ps(
                                     v[0], _mm512_add_epi32(bd_iota(), _mm512_set1_epi32((int)kj)),
                                     v[1]);
                r = max ? _mm512_max_ps(t, r) : _mm512_add_ps(r, t);
            }
            if (!max) {
                const __m512 c = _mm512_maskz_loadu_ps(keep, count + oy * ow + ox);
                r = _mm512_maskz_div_ps(_mm512_cmp_ps_mask(c, _mm512_setzero_ps(), _CMP_NEQ_OQ),
                                        r, c);
            }
            _mm512_mask_storeu_ps(y + oy * ow + ox, keep, r);
        }
    }
}

/* (an instance each: tested in the loops, the kind had cost as much as
 * the loads) */
static void plane_s1_max(const bd_pool_geom *pg, const float *x, float *y)
{
    s1_body(pg, x, y, NULL, 1);
}

static void plane_s1_avg(const bd_pool_geom *pg, const float *x, float *y, const float *count)
{
    s1_body(pg, x, y, count, 0);
}
#endif

/* Whether plane_flat takes pg: stride 1, and rows either as wide out as in
 * ("same" pooling: GoogLeNet's branch pools, 3x3 pad 1) or not padded
 * across (Inception-v3's, exported as a Pad and a pool without pads). */
static int flat_pool(const bd_pool_geom *pg)
{
    return pg->stride[1] == 1 && pg->stride[2] == 1 &&
           ((pg->out[2] == pg->in[2] && pg->pad_begin[2] < pg->kernel[2]) ||
            (pg->pad_begin[2] == 0 && pg->pad_end[2] == 0));
}

/* plane_2d's passes, and its arithmetic in the same order, for a
 * flat_pool geometry: each pass runs over the whole plane flattened, one
 * long loop per tap, where plane_2d ran a loop of a row's width per row
 * and tap (a 14x14 map paid a loop's start-up for every 14 values); only
 * the rows and columns whose windows the border clips are done one by one.
 * Rows narrower out than in (no padding across) are summed on the input's
 * width and then cut to the output's. v has room for 2 out[1] rows of
 * in[2]; count[j], for the average, is how many inputs output j's window
 * counts. */
static void plane_flat(const bd_pool_geom *pg, pool_kind kind, const float *x, float *y,
                       float *v, const float *count)
{
    const int64_t h = pg->in[1], w = pg->in[2], oh = pg->out[1], ow = pg->out[2];
    const int64_t kh = pg->kernel[1], kw = pg->kernel[2], pt = pg->pad_begin[1];
    const int64_t pl = pg->pad_begin[2], pr = kw - 1 - pl;
    const int max = kind == POOL_MAX;
    const float none = max ? -FLT_MAX : 0;
    /* down the rows: those whose taps all fall inside in one run */
    int64_t lo = pt < oh ? pt : oh, hi = h - kh + 1 + pt;
    hi = hi < lo ? lo : hi > oh ? oh : hi;
    for (int64_t ki = 0; ki < kh && hi > lo; ki++)
        reduce_into(v + lo * w, x + (lo - pt + ki) * w, (hi - lo) * w, max, ki == 0);
    for (int64_t oy = 0; oy < oh; oy++) {
        if (oy == lo && hi > lo)
            oy = hi;
        if (oy >= oh)
            break;
        int64_t r0, rows = taps_within(oy - pt, kh, 1, 0, h, &r0);
        reduce_rows(v + oy * w, x, w, r0 + oy - pt, rows, max);
    }
    /* across: the flat run, then the columns at either border again, or
     * on the input's width, cut to the output's */
    const int64_t first = pl, last = oh * w - pr;
    float *z = ow == w ? y : v + oh * w;
    for (int64_t kj = 0; kj < kw && last > first; kj++)
        reduce_into(z + first, v + first - pl + kj, last - first, max, kj == 0);
    for (int64_t oy = 0; oy < oh && ow != w; oy++)
        memcpy(y + oy * ow, z + oy * w, (size_t)ow * sizeof *y);
    for (int64_t oy = 0; oy < oh && ow == w; oy++)
        for (int64_t ox = 0; ox < w; ox++) {
            if (ox == pl && w - pr > pl)
                ox = w - pr;
            if (ox >= w)
                break;
            float r = none;
            for (int64_t kj = 0; kj < kw; kj++) {
                const int64_t c = ox - pl + kj;
                if (c < 0 || c >= w)
                    continue;
                const float t = v[oy * w + c];
                r = max ? (t > r ? t : r) : r + t;
            }
            y[oy * w + ox] = r;
        }
    if (!max) {
#pragma omp simd
        for (int64_t j = 0; j < oh * ow; j++)
            y[j] = count[j] != 0 ? y[j] / count[j] : 0;
    }
}

/* Pool node n over x with geometry pg (the node's own, or one with more
 * padding: bd_avgpool_padded). */
static bd_status pool_with(const bd_node *n, const bd_tensor *x, bd_pool_geom pg, bd_tensor **out,
                           pool_kind kind, int include_pad)
{
    int64_t dims[2 + SPATIAL];
    dims[0] = x->dims[0];
    dims[1] = x->dims[1];
    int s = x->ndim - 2;
    memcpy(dims + 2, pg.out + SPATIAL - s, (size_t)s * sizeof *dims);
    BD_TRY(bd_k_output(n, out, BD_F32, x->ndim, dims, 0));
    /* an empty output needs no window table, whatever length its rows claim */
    if (bd_tensor_count(out[0]) == 0)
        return BD_OK;
    if (pg.in[0] == 1 && pg.kernel[0] == 1 && pg.dilation[1] == 1 && pg.dilation[2] == 1) {
        const int64_t planes = x->dims[0] * x->dims[1], in_plane = pg.in[1] * pg.in[2];
        const int64_t out_plane = pg.out[1] * pg.out[2];
        /* the columns each output column's window counts, the same in every
         * row (worked out per output, they had cost more than the sums) */
        int64_t *cols = malloc((size_t)pg.out[2] * sizeof *cols + 1);
        if (!cols) {
            bd_tensor_free(out[0]);
            out[0] = NULL;
            return bd_node_fail(n, BD_ENOMEM, "out of memory");
        }
        for (int64_t ox = 0, unused; ox < pg.out[2]; ox++) {
            const int64_t start = ox * pg.stride[2] - pg.pad_begin[2];
            cols[ox] = include_pad ? taps_within(start, pg.kernel[2], 1, -pg.pad_begin[2],
                                                 pg.in[2] + pg.pad_end[2], &unused)
                                   : taps_within(start, pg.kernel[2], 1, 0, pg.in[2], &unused);
        }
        /* plane_flat's and plane_s1's count of each output's window, the
         * same in every plane */
#ifdef __AVX512F__
        const int s2 = max_s2(&pg, kind), s1 = s1_pool(&pg);
#else
        const int s2 = 0, s1 = 0;
#endif
        const int flat = flat_pool(&pg), counted = (flat || s1) && kind == POOL_AVG;
        float *count = counted ? malloc((size_t)out_plane * sizeof *count) : NULL;
        int failed = counted && !count;
        for (int64_t oy = 0; count && oy < pg.out[1]; oy++) {
            const int64_t start = oy - pg.pad_begin[1];
            int64_t unused, rows = include_pad ? taps_within(start, pg.kernel[1], 1,
                                                             -pg.pad_begin[1],
                                                             pg.in[1] + pg.pad_end[1], &unused)
                                               : taps_within(start, pg.kernel[1], 1, 0, pg.in[1],
                                                             &unused);
            for (int64_t ox = 0; ox < pg.out[2]; ox++)
                count[oy * pg.out[2] + ox] = (float)(rows * cols[ox]);
        }
#pragma omp parallel if (planes * out_plane * pg.kernel[1] * pg.kernel[2] >= BD_PARALLEL_MIN)
        {
            /* the row sums of plane_flat and plane_2d; the register
             * kernels need none */
            const size_t floats = (size_t)(flat ? 2 * pg.out[1] * pg.in[2] : 2 * pg.in[2]);
            float *acc = s1 || s2 ? NULL : malloc(floats * sizeof *acc + 1);
            if (!acc && !(s1 || s2)) {
#pragma omp atomic write
                failed = 1;
            }
#pragma omp for schedule(static)
            for (int64_t p = 0; p < planes; p++) {
                const float *xp = (const float *)x->data + p * in_plane;
                float *yp = (float *)out[0]->data + p * out_plane;
#ifdef __AVX512F__
                if (s2) {
                    plane_max_s2(&pg, xp, yp);
                    continue;
                }
                if (s1 && kind == POOL_MAX) {
                    plane_s1_max(&pg, xp, yp);
                    continue;
                }
                if (s1) {
                    if (count)
                        plane_s1_avg(&pg, xp, yp, count);
                    continue;
                }
#endif
                if (acc && flat)
                    plane_flat(&pg, kind, xp, yp, acc, count);
                else if (acc)
                    plane_2d(&pg, kind, include_pad, xp, yp, acc, cols);
            }
            free(acc);
        }
        free(count);
        free(cols);
        if (!failed)
            return BD_OK;
        bd_tensor_free(out[0]);
        out[0] = NULL;
        return bd_node_fail(n, BD_ENOMEM, "out of memory");
    }
    int64_t rows_per_plane = pg.out[0] * pg.out[1];
    int64_t rows = x->dims[0] * x->dims[1] * rows_per_plane;
    int64_t in_plane = pg.in[0] * pg.in[1] * pg.in[2];
    const float *xd = x->data;
    float *yd = out[0]->data;
    int64_t *cols = malloc(3 * (size_t)pg.out[2] * sizeof *cols + 1);
    if (!cols) {
        bd_tensor_free(out[0]);
        out[0] = NULL;
        return bd_node_fail(n, BD_ENOMEM, "out of memory");
    }
    row_windows rw = {cols, cols + pg.out[2], cols + 2 * pg.out[2]};
    for (int64_t o2 = 0; o2 < pg.out[2]; o2++)
        window(&pg, 2, o2, &rw.first[o2], &rw.taps[o2], &rw.padded[o2]);
#pragma omp parallel for if (rows * pg.out[2] * pg.kernel[0] * pg.kernel[1] * pg.kernel[2] >= \
                                 BD_PARALLEL_MIN) schedule(static)
    for (int64_t r = 0; r < rows; r++) {
        int64_t plane = r / rows_per_plane, within = r % rows_per_plane;
        pool_row(&pg, &rw, xd + plane * in_plane, yd + r * pg.out[2], within / pg.out[1],
                 within % pg.out[1], kind, include_pad);
    }
    free(cols);
    return BD_OK;
}

static bd_status pool(const bd_node *n, const bd_tensor *x, bd_tensor **out, pool_kind kind,
                      int include_pad)
{
    bd_pool_geom pg;
    BD_TRY(bd_k_want_f32(n, x, "input"));
    BD_TRY(bd_pool_geometry(n, x, &pg));
    return pool_with(n, x, pg, out, kind, include_pad);
}

bd_status bd_avgpool_padded(const bd_node *n, const bd_tensor *x, const int64_t *begin,
                            const int64_t *end, bd_tensor **out)
{
    BD_TRY(bd_k_want_f32(n, x, "input"));
    const int s = x->ndim - 2;
    bd_tensor padded = *x; /* its shape alone: the geometry reads nothing else */
    for (int d = 0; d < s; d++)
        padded.dims[2 + d] += begin[d] + end[d];
    bd_pool_geom pg;
    BD_TRY(bd_pool_geometry(n, &padded, &pg));
    for (int d = 0; d < s; d++) {
        const int k = SPATIAL - s + d;
        if (pg.pad_begin[k] || pg.pad_end[k] || pg.dilation[k] != 1)
            return bd_node_fail(n, BD_EUNSUPPORTED, "has pads or dilations of its own");
        pg.in[k] = x->dims[2 + d];
        pg.pad_begin[k] = begin[d];
        pg.pad_end[k] = end[d];
    }
    return pool_with(n, x, pg, out, POOL_AVG, 1);
}

BD_KERNEL(bd_k_maxpool)
{
    (void)g;
    if (n->noutputs > 1 && n->outputs[1] >= 0)
        return bd_node_fail(n, BD_EUNSUPPORTED, "the Indices output is not supported");
    return pool(n, in[0], out, POOL_MAX, 0);
}

BD_KERNEL(bd_k_averagepool)
{
    (void)g;
    return pool(n, in[0], out, POOL_AVG, bd_attr_int(n, "count_include_pad", 0) != 0);
}

#ifdef __AVX512F__
/* The 16 floats of v, widened, added to s[0] and s[1]. */
static inline void add_widened(__m512 v, __m512d *s)
{
    s[0] = _mm512_add_pd(s[0], _mm512_cvtps_pd(_mm512_castps512_ps256(v)));
    s[1] = _mm512_add_pd(
        s[1], _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1))));
}
#endif

/* accumulate's sum of n contiguous floats, in double as there. A global
 * average pool reads whole planes this way (every channel of a squeeze-and-
 * excitation block's map): four sums side by side, where accumulate's
 * loop waited on each addition in turn (EfficientNet-B0's 17 pools took 0.76
 * ms a pass on one thread, ONNX Runtime's 0.19). */
static double plane_sum(const float *x, int64_t n)
{
    double sum = 0;
#ifdef __AVX512F__
    if (__builtin_cpu_supports("avx512f")) {
        __m512d s[4] = {_mm512_setzero_pd(), _mm512_setzero_pd(), _mm512_setzero_pd(),
                        _mm512_setzero_pd()};
        int64_t j = 0;
        for (; j + 32 <= n; j += 32) {
            add_widened(_mm512_loadu_ps(x + j), s);
            add_widened(_mm512_loadu_ps(x + j + 16), s + 2);
        }
        for (; j < n; j += 16)
            add_widened(_mm512_maskz_loadu_ps(bd_lanes(0, n - j), x + j), s);
        return _mm512_reduce_add_pd(_mm512_add_pd(_mm512_add_pd(s[0], s[1]),
                                                  _mm512_add_pd(s[2], s[3])));
    }
#endif
    accumulate(x, n, 1, POOL_AVG, NULL, &sum);
    return sum;
}

static bd_status global_pool(const bd_node *n, const bd_tensor *x, bd_tensor **out,
                             pool_kind kind)
{
    BD_TRY(bd_k_want_f32(n, x, "input"));
    if (x->ndim < 2)
        return bd_node_fail(n, BD_EINVAL, "input has rank %d; [N, C, ...] expected", x->ndim);
    int64_t dims[BD_MAX_DIMS];
    for (int d = 0; d < x->ndim; d++)
        dims[d] = d < 2 ? x->dims[d] : 1;
    BD_TRY(bd_k_output(n, out, BD_F32, x->ndim, dims, 0));
    int64_t planes = x->dims[0] * x->dims[1];
    int64_t size = planes ? bd_tensor_count(x) / planes : 0;
    const float *xd = x->data;
    float *yd = out[0]->data;
#pragma omp parallel for if (planes * size >= BD_PARALLEL_MIN) schedule(static)
    for (int64_t p = 0; p < planes; p++) {
        float max = -FLT_MAX;
        if (kind == POOL_MAX)
            accumulate(xd + p * size, size, 1, kind, &max, NULL);
        yd[p] = kind == POOL_MAX ? max : (float)(plane_sum(xd + p * size, size) / (double)size);
    }
    return BD_OK;
}

BD_KERNEL(bd_k_global_averagepool)
{
    (void)g;
    return global_pool(n, in[0], out, POOL_AVG);
}

BD_KERNEL(bd_k_global_maxpool)
{
    (void)g;
    return global_pool(n, in[0], out, POOL_MAX);
}
