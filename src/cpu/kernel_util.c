#include "kernel_util.h"

#include <cblas.h>
#include <inttypes.h>
#include <string.h>

#ifdef __AVX512F__
#include <immintrin.h>

#include "avx512.h"
#endif

/* Broadcast maps hand out work in chunks this size, so a single huge run
 * (two same-shape operands) still spreads over the threads. */
enum { CHUNK = 1 << 14, MAP_MAX_IN = 2 };

bd_status bd_k_in_node(const bd_node *n, bd_status st)
{
    char label[256];
    if (st == BD_OK)
        return st;
    return bd_error_context(st, "%s", bd_node_label(n, label, sizeof label));
}

const bd_tensor *bd_k_opt(const bd_node *n, bd_tensor *const *in, int i)
{
    return i < n->ninputs ? in[i] : NULL;
}

bd_status bd_k_want_f32(const bd_node *n, const bd_tensor *t, const char *what)
{
    if (t->dtype != BD_F32)
        return bd_node_fail(n, BD_EUNSUPPORTED, "%s is %s; only float32 is supported", what,
                            bd_dtype_name(t->dtype));
    return BD_OK;
}

bd_status bd_k_axis(const bd_node *n, int64_t axis, int rank, int *out)
{
    if (axis < -rank || axis >= rank)
        return bd_node_fail(n, BD_EINVAL, "axis %" PRId64 " is out of range for rank %d", axis,
                            rank);
    *out = (int)(axis < 0 ? axis + rank : axis);
    return BD_OK;
}

bd_status bd_k_axes(const bd_node *n, int64_t *axes, int count, int rank)
{
    for (int i = 0; i < count; i++) {
        int a = 0;
        BD_TRY(bd_k_axis(n, axes[i], rank, &a));
        axes[i] = a;
        for (int j = 0; j < i; j++)
            if (axes[j] == a)
                return bd_node_fail(n, BD_EINVAL, "axis %d is listed twice", a);
    }
    return BD_OK;
}

bd_status bd_k_output(const bd_node *n, bd_tensor **out, bd_dtype dtype, int ndim,
                      const int64_t *dims, int zero)
{
    return bd_k_in_node(n, zero ? bd_tensor_new(out, dtype, ndim, dims, "output")
                           : bd_tensor_new_raw(out, dtype, ndim, dims, "output"));
}

bd_status bd_k_view(const bd_node *n, bd_tensor **out, const bd_tensor *src, int ndim,
                    const int64_t *dims)
{
    return bd_k_in_node(n, bd_tensor_view(out, src, ndim, dims));
}

bd_status bd_k_int_list(const bd_node *n, int from_input, const bd_tensor *t, const char *name,
                        int64_t *vals, int cap, int *count)
{
    if (!from_input) {
        const int64_t *a = NULL;
        int c = bd_attr_ints(n, name, &a);
        if (c > cap)
            return bd_node_fail(n, BD_EUNSUPPORTED, "attribute '%s' has %d values (at most %d)",
                                name, c, cap);
        if (c > 0)
            memcpy(vals, a, (size_t)c * sizeof *vals);
        *count = c;
        return BD_OK;
    }
    if (!t) {
        *count = -1;
        return BD_OK;
    }
    if ((t->dtype != BD_I64 && t->dtype != BD_I32) || t->ndim > 1)
        return bd_node_fail(n, BD_EINVAL, "input '%s' must be a 1-D int64 tensor, not %d-D %s",
                            name, t->ndim, bd_dtype_name(t->dtype));
    int64_t c = bd_tensor_count(t);
    if (c > cap)
        return bd_node_fail(n, BD_EUNSUPPORTED, "input '%s' has %" PRId64 " values (at most %d)",
                            name, c, cap);
    for (int64_t i = 0; i < c; i++)
        vals[i] = bd_tensor_get_i64(t, i);
    *count = (int)c;
    return BD_OK;
}

bd_status bd_k_broadcast_shape(const bd_node *n, int na, const int64_t *a, int nb,
                               const int64_t *b, int *nout, int64_t *out)
{
    int r = na > nb ? na : nb;
    for (int i = 0; i < r; i++) {
        int64_t da = i < na ? a[na - 1 - i] : 1;
        int64_t db = i < nb ? b[nb - 1 - i] : 1;
        if (da != db && da != 1 && db != 1) {
            char sa[160], sb[160];
            return bd_node_fail(n, BD_EINVAL, "shapes %s and %s cannot be broadcast together",
                                bd_shape_str(na, a, sa, sizeof sa),
                                bd_shape_str(nb, b, sb, sizeof sb));
        }
        out[r - 1 - i] = da == 1 ? db : da;
    }
    *nout = r;
    return BD_OK;
}

void bd_k_strides(int ndim, const int64_t *dims, int64_t *strides)
{
    int64_t s = 1;
    for (int d = ndim - 1; d >= 0; d--) {
        strides[d] = s;
        s *= dims[d];
    }
}

void bd_k_broadcast_strides(const bd_tensor *t, int ndim, int64_t *strides)
{
    int64_t own[BD_MAX_DIMS];
    int lead = ndim - t->ndim;
    bd_k_strides(t->ndim, t->dims, own);
    for (int d = 0; d < ndim; d++)
        strides[d] = d < lead || t->dims[d - lead] == 1 ? 0 : own[d - lead];
}

/* Drops size-1 dims and merges neighbours that every operand walks as one
 * (outer stride == inner stride * inner dim), so inner loops run as long as
 * the layouts allow. The output is contiguous and always merges, so only the
 * inputs' strides take part. Returns the new rank, at least 1. */
static int coalesce(int ndim, int64_t *dims, int nops, int64_t (*strides)[BD_MAX_DIMS])
{
    int m = 0;
    for (int d = 0; d < ndim; d++) {
        if (dims[d] == 1)
            continue;
        int merge = m > 0;
        for (int k = 0; k < nops && merge; k++)
            merge = strides[k][m - 1] == strides[k][d] * dims[d];
        int at = merge ? m - 1 : m;
        dims[at] = merge ? dims[at] * dims[d] : dims[d];
        for (int k = 0; k < nops; k++)
            strides[k][at] = strides[k][d];
        m = at + 1;
    }
    if (m == 0) {
        dims[0] = 1;
        for (int k = 0; k < nops; k++)
            strides[k][0] = 0;
        m = 1;
    }
    return m;
}

int64_t bd_k_offset_of(int64_t i, int nd, const int64_t *dims, const int64_t *strides)
{
    int64_t off = 0;
    for (int d = nd - 1; d >= 0; d--) {
        off += i % dims[d] * strides[d];
        i /= dims[d];
    }
    return off;
}

void bd_k_broadcast_map(bd_tensor *out, int nin, const bd_tensor *const *in, bd_k_run run,
                        const void *ctx)
{
    int64_t total = bd_tensor_count(out);
    if (total == 0)
        return;
    int64_t dims[BD_MAX_DIMS], strides[MAP_MAX_IN][BD_MAX_DIMS];
    memcpy(dims, out->dims, sizeof dims);
    for (int k = 0; k < nin; k++)
        bd_k_broadcast_strides(in[k], out->ndim, strides[k]);
    int m = coalesce(out->ndim, dims, nin, strides);
    int64_t len = dims[m - 1];
    int step[MAP_MAX_IN];
    int64_t isize[MAP_MAX_IN];
    for (int k = 0; k < nin; k++) {
        step[k] = (int)strides[k][m - 1];
        isize[k] = (int64_t)bd_dtype_size(in[k]->dtype);
    }
    int64_t osize = (int64_t)bd_dtype_size(out->dtype);
    int64_t nchunks = (total + CHUNK - 1) / CHUNK;
#pragma omp parallel for if (total >= BD_PARALLEL_MIN) schedule(static)
    for (int64_t c = 0; c < nchunks; c++) {
        int64_t i = c * CHUNK, end = i + CHUNK < total ? i + CHUNK : total;
        while (i < end) {
            int64_t row = i / len, col = i % len;
            int64_t count = len - col < end - i ? len - col : end - i;
            const void *src[MAP_MAX_IN];
            for (int k = 0; k < nin; k++) {
                int64_t off = bd_k_offset_of(row, m - 1, dims, strides[k]) + col * step[k];
                src[k] = (const char *)in[k]->data + off * isize[k];
            }
            run(ctx, (char *)out->data + i * osize, src, step, count);
            i += count;
        }
    }
}

static void copy_run(char *o, const char *s, int64_t step, int64_t count, size_t es)
{
    if (step == 1) {
        memcpy(o, s, (size_t)count * es);
        return;
    }
    /* A constant width turns each memcpy into a single move. */
#define COPY_RUN(W)                                                  \
    for (int64_t j = 0; j < count; j++)                              \
        memcpy(o + j * (W), s + j * step * (W), (W));                \
    break
    switch (es) {
    case 1: COPY_RUN(1);
    case 2: COPY_RUN(2);
    case 4: COPY_RUN(4);
    default: COPY_RUN(8);
    }
#undef COPY_RUN
}

#ifdef __AVX512F__
/* Rows r0 .. r0 + 15 (fewer at the end) of o[r][c] = s[r + c * step], r <
 * rows, c < cols, for 4-byte elements: 16 columns of the source at a time,
 * each 16 consecutive elements, transposed in registers. */
static void transpose_rows(uint32_t *o, const uint32_t *s, int64_t r0, int64_t rows, int64_t cols,
                           int64_t step)
{
    const int64_t nr = rows - r0 < 16 ? rows - r0 : 16;
    const __mmask16 rm = bd_lanes(0, nr);
    for (int64_t c0 = 0; c0 < cols; c0 += 16) {
        const int64_t nc = cols - c0 < 16 ? cols - c0 : 16;
        __m512 v[16];
#pragma GCC unroll 16
        for (int c = 0; c < 16; c++)
            v[c] = c < nc ? _mm512_maskz_loadu_ps(rm, s + (c0 + c) * step + r0)
                          : _mm512_setzero_ps();
        bd_transpose16(v);
        const __mmask16 cm = bd_lanes(0, nc);
#pragma GCC unroll 16
        for (int r = 0; r < 16; r++)
            if (r < nr)
                _mm512_mask_storeu_ps(o + (r0 + r) * cols + c0, cm, v[r]);
    }
}

/* A copy whose last two dims (coalesced) are a transpose, 4-byte elements:
 * the source's stride is 1 down the second last and step across the
 * last, as Transpose gives for NCHW <-> NHWC (ConvNeXt's two per block).
 * Copied an element at a time down a column, each from another cache
 * line, those had cost three times ONNX Runtime's Transpose. */
static void transposed_copy(bd_tensor *out, const void *src, int64_t offset, int m,
                            const int64_t *dims, const int64_t *st)
{
    const int64_t rows = dims[m - 2], cols = dims[m - 1], blocks = (rows + 15) / 16;
    const int64_t outer = bd_tensor_count(out) / (rows * cols);
#pragma omp parallel for if (outer * rows * cols >= BD_PARALLEL_MIN) schedule(static)
    for (int64_t j = 0; j < outer * blocks; j++) {
        const int64_t b = j / blocks;
        transpose_rows((uint32_t *)out->data + b * rows * cols,
                       (const uint32_t *)src + offset + bd_k_offset_of(b, m - 2, dims, st),
                       j % blocks * 16, rows, cols, st[m - 1]);
    }
}
#endif

void bd_k_strided_copy(bd_tensor *out, const void *src, int64_t offset, const int64_t *strides)
{
    int64_t total = bd_tensor_count(out);
    if (total == 0)
        return;
    int64_t dims[BD_MAX_DIMS], st[1][BD_MAX_DIMS];
    memcpy(dims, out->dims, sizeof dims);
    memcpy(st[0], strides, (size_t)out->ndim * sizeof *strides);
    int m = coalesce(out->ndim, dims, 1, st);
    int64_t len = dims[m - 1], rows = total / len;
    size_t es = bd_dtype_size(out->dtype);
#ifdef __AVX512F__
    if (es == 4 && m >= 2 && st[0][m - 2] == 1 && st[0][m - 1] != 1 &&
        __builtin_cpu_supports("avx512f")) {
        transposed_copy(out, src, offset, m, dims, st[0]);
        return;
    }
#endif
#pragma omp parallel for if (total >= BD_PARALLEL_MIN) schedule(static)
    for (int64_t row = 0; row < rows; row++) {
        int64_t off = offset + bd_k_offset_of(row, m - 1, dims, st[0]);
        copy_run((char *)out->data + (size_t)(row * len) * es,
                 (const char *)src + (size_t)off * es, st[0][m - 1], len, es);
    }
}

void bd_sgemm_panels(int m, int n, int k, float alpha, const float *a, int lda, const float *b,
                     int ldb, float beta, float *c, int ldc)
{
    enum { PANEL = 256 }; /* wide enough for the kernels' full speed */
    const int panels = (n + PANEL - 1) / PANEL;
    /* inside an active parallel region OpenBLAS runs on the calling thread;
     * a team of one calls it with the thread count set to one */
#pragma omp parallel for schedule(dynamic)
    for (int p = 0; p < panels; p++) {
        const int j = p * PANEL, w = n - j < PANEL ? n - j : PANEL;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, m, w, k, alpha, a, lda, b + j, ldb,
                    beta, c + j, ldc);
    }
}
