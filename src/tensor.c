#include "tensor.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

enum { ALIGNMENT = 64 };

static size_t limit_bytes;

size_t bd_dtype_size(bd_dtype t)
{
    switch (t) {
    case BD_F32: case BD_I32: return 4;
    case BD_U8: case BD_I8: case BD_BOOL: return 1;
    case BD_U16: case BD_I16: case BD_F16: return 2;
    case BD_I64: case BD_F64: return 8;
    case BD_UNDEFINED: break;
    }
    return 0;
}

const char *bd_dtype_name(bd_dtype t)
{
    switch (t) {
    case BD_F32: return "float32";
    case BD_U8: return "uint8";
    case BD_I8: return "int8";
    case BD_U16: return "uint16";
    case BD_I16: return "int16";
    case BD_I32: return "int32";
    case BD_I64: return "int64";
    case BD_BOOL: return "bool";
    case BD_F16: return "float16";
    case BD_F64: return "float64";
    case BD_UNDEFINED: break;
    }
    return "undefined";
}

size_t bd_tensor_limit(void)
{
    if (limit_bytes == 0) {
        long pages = sysconf(_SC_PHYS_PAGES);
        long page = sysconf(_SC_PAGESIZE);
        size_t phys = (pages > 0 && page > 0) ? (size_t)pages * (size_t)page : (size_t)8 << 30;
        limit_bytes = phys / 2;
    }
    return limit_bytes;
}

void bd_tensor_set_limit(size_t bytes) { limit_bytes = bytes; }

bd_status bd_shape_count(int ndim, const int64_t *dims, int64_t *count, const char *what)
{
    if (ndim < 0 || ndim > BD_MAX_DIMS)
        return bd_fail(BD_EUNSUPPORTED, "%s: %d dimensions (at most %d supported)", what, ndim,
                       BD_MAX_DIMS);
    int64_t n = 1;
    for (int i = 0; i < ndim; i++) {
        if (dims[i] < 0)
            return bd_fail(BD_EFORMAT, "%s: dimension %d is negative (%" PRId64 ")", what, i,
                           dims[i]);
        if (dims[i] != 0 && n > INT64_MAX / dims[i])
            return bd_fail(BD_ENOMEM, "%s: element count overflows", what);
        n *= dims[i];
    }
    *count = n;
    return BD_OK;
}

static bd_status tensor_alloc(bd_tensor **out, bd_dtype dtype, int ndim, const int64_t *dims,
                              const char *what, int zero)
{
    size_t es = bd_dtype_size(dtype);
    if (es == 0)
        return bd_fail(BD_EUNSUPPORTED, "%s: data type %d is not supported", what, (int)dtype);
    int64_t n;
    BD_TRY(bd_shape_count(ndim, dims, &n, what));
    if ((uint64_t)n > bd_tensor_limit() / es) {
        char buf[128];
        return bd_fail(BD_ENOMEM, "%s: shape %s of %s needs more than the %zu MiB limit", what,
                       bd_shape_str(ndim, dims, buf, sizeof buf), bd_dtype_name(dtype),
                       bd_tensor_limit() >> 20);
    }
    size_t nbytes = (size_t)n * es;
    bd_tensor *t = calloc(1, sizeof *t);
    bd_storage *s = calloc(1, sizeof *s);
    size_t rounded = (nbytes + ALIGNMENT - 1) / ALIGNMENT * ALIGNMENT;
    void *data = aligned_alloc(ALIGNMENT, rounded ? rounded : ALIGNMENT);
    if (!t || !s || !data) {
        free(t);
        free(s);
        free(data);
        return bd_fail(BD_ENOMEM, "%s: out of memory allocating %zu bytes", what, nbytes);
    }
    if (zero)
        memset(data, 0, rounded ? rounded : ALIGNMENT);
    s->refs = 1;
    s->nbytes = nbytes;
    s->data = data;
    t->dtype = dtype;
    t->ndim = ndim;
    if (ndim)
        memcpy(t->dims, dims, (size_t)ndim * sizeof *dims);
    t->storage = s;
    t->data = data;
    *out = t;
    return BD_OK;
}

bd_status bd_tensor_new(bd_tensor **out, bd_dtype dtype, int ndim, const int64_t *dims,
                        const char *what)
{
    return tensor_alloc(out, dtype, ndim, dims, what, 1);
}

bd_status bd_tensor_new_raw(bd_tensor **out, bd_dtype dtype, int ndim, const int64_t *dims,
                            const char *what)
{
    return tensor_alloc(out, dtype, ndim, dims, what, 0);
}

/* A view of src's storage with the given shape, n elements, n at most
 * src's count. */
static bd_status view_of(bd_tensor **out, const bd_tensor *src, int ndim, const int64_t *dims)
{
    bd_tensor *t = calloc(1, sizeof *t);
    if (!t)
        return bd_fail(BD_ENOMEM, "out of memory");
    t->dtype = src->dtype;
    t->ndim = ndim;
    if (ndim)
        memcpy(t->dims, dims, (size_t)ndim * sizeof *dims);
    t->storage = src->storage;
    t->data = src->data;
    t->storage->refs++;
    *out = t;
    return BD_OK;
}

bd_status bd_tensor_view(bd_tensor **out, const bd_tensor *src, int ndim, const int64_t *dims)
{
    int64_t n;
    BD_TRY(bd_shape_count(ndim, dims, &n, "view"));
    if (n != bd_tensor_count(src))
        return bd_fail(BD_EINVAL, "cannot view %" PRId64 " elements as %" PRId64,
                       bd_tensor_count(src), n);
    return view_of(out, src, ndim, dims);
}

bd_status bd_tensor_view_at(bd_tensor **out, const bd_tensor *src, int64_t offset, int ndim,
                            const int64_t *dims)
{
    int64_t n;
    BD_TRY(bd_shape_count(ndim, dims, &n, "view"));
    if (offset < 0 || n > bd_tensor_count(src) - offset)
        return bd_fail(BD_EINVAL, "cannot view %" PRId64 " elements from %" PRId64 " of %" PRId64,
                       n, offset, bd_tensor_count(src));
    BD_TRY(view_of(out, src, ndim, dims));
    (*out)->data = (char *)src->data + (size_t)offset * bd_dtype_size(src->dtype);
    return BD_OK;
}

bd_status bd_tensor_view_head(bd_tensor **out, const bd_tensor *src, int ndim, const int64_t *dims)
{
    return bd_tensor_view_at(out, src, 0, ndim, dims);
}

bd_status bd_tensor_clone(bd_tensor **out, const bd_tensor *src)
{
    BD_TRY(bd_tensor_new_raw(out, src->dtype, src->ndim, src->dims, "copy"));
    memcpy((*out)->data, src->data, bd_tensor_nbytes(src));
    return BD_OK;
}

void bd_tensor_free(bd_tensor *t)
{
    if (!t)
        return;
    if (--t->storage->refs == 0) {
        free(t->storage->data);
        free(t->storage);
    }
    free(t);
}

int64_t bd_tensor_count(const bd_tensor *t)
{
    int64_t n = 1;
    for (int i = 0; i < t->ndim; i++)
        n *= t->dims[i];
    return n;
}

size_t bd_tensor_nbytes(const bd_tensor *t)
{
    return (size_t)bd_tensor_count(t) * bd_dtype_size(t->dtype);
}

int bd_tensor_same_shape(const bd_tensor *a, const bd_tensor *b)
{
    if (a->ndim != b->ndim)
        return 0;
    for (int i = 0; i < a->ndim; i++)
        if (a->dims[i] != b->dims[i])
            return 0;
    return 1;
}

const char *bd_shape_str(int ndim, const int64_t *dims, char *buf, size_t cap)
{
    size_t used = 0;
    if (cap == 0)
        return buf;
    buf[0] = '\0';
    used += (size_t)snprintf(buf, cap, "[");
    for (int i = 0; i < ndim && used < cap; i++)
        used += (size_t)snprintf(buf + used, cap - used, "%s%" PRId64, i ? ", " : "", dims[i]);
    if (used < cap)
        snprintf(buf + used, cap - used, "]");
    return buf;
}

uint16_t bd_f32_to_f16(float f)
{
    uint32_t x;
    memcpy(&x, &f, 4);
    uint32_t sign = (x >> 16) & 0x8000u;
    uint32_t exp = (x >> 23) & 0xffu;
    uint32_t man = x & 0x7fffffu;
    if (exp == 0xff) /* inf or nan; keep nan quiet */
        return (uint16_t)(sign | 0x7c00u | (man ? 0x200u : 0));
    int32_t e = (int32_t)exp - 127 + 15;
    if (e >= 0x1f)
        return (uint16_t)(sign | 0x7c00u);
    if (e <= 0) {
        if (e < -10)
            return (uint16_t)sign;
        man |= 0x800000u;
        uint32_t shift = (uint32_t)(14 - e);
        uint32_t half = man >> shift;
        uint32_t rem = man & ((1u << shift) - 1);
        uint32_t mid = 1u << (shift - 1);
        if (rem > mid || (rem == mid && (half & 1u)))
            half++;
        return (uint16_t)(sign | half);
    }
    uint32_t half = ((uint32_t)e << 10) | (man >> 13);
    uint32_t rem = man & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (half & 1u)))
        half++; /* may carry into the exponent, which is the right rounding */
    return (uint16_t)(sign | half);
}

float bd_f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu;
    uint32_t man = h & 0x3ffu;
    uint32_t x;
    if (exp == 0) {
        if (man == 0) {
            x = sign;
        } else {
            int e = -1;
            do {
                e++;
                man <<= 1;
            } while (!(man & 0x400u));
            x = sign | ((uint32_t)(127 - 15 - e) << 23) | ((man & 0x3ffu) << 13);
        }
    } else if (exp == 0x1f) {
        x = sign | 0x7f800000u | (man << 13);
    } else {
        x = sign | ((exp - 15 + 127) << 23) | (man << 13);
    }
    float f;
    memcpy(&f, &x, 4);
    return f;
}

double bd_tensor_get_f64(const bd_tensor *t, int64_t i)
{
    const void *p = t->data;
    switch (t->dtype) {
    case BD_F32: return ((const float *)p)[i];
    case BD_F64: return ((const double *)p)[i];
    case BD_F16: return bd_f16_to_f32(((const uint16_t *)p)[i]);
    case BD_U8: return ((const uint8_t *)p)[i];
    case BD_BOOL: return ((const uint8_t *)p)[i] != 0;
    case BD_I8: return ((const int8_t *)p)[i];
    case BD_U16: return ((const uint16_t *)p)[i];
    case BD_I16: return ((const int16_t *)p)[i];
    case BD_I32: return ((const int32_t *)p)[i];
    case BD_I64: return (double)((const int64_t *)p)[i];
    case BD_UNDEFINED: break;
    }
    return 0;
}

int64_t bd_tensor_get_i64(const bd_tensor *t, int64_t i)
{
    switch (t->dtype) {
    case BD_I64: return ((const int64_t *)t->data)[i];
    case BD_I32: return ((const int32_t *)t->data)[i];
    default: break;
    }
    double v = bd_tensor_get_f64(t, i);
    if (!(v > -9.2e18 && v < 9.2e18))
        return v > 0 ? INT64_MAX : INT64_MIN;
    return (int64_t)v;
}

static void put_f64(bd_tensor *t, int64_t i, double v)
{
    void *p = t->data;
    if (v != v && t->dtype != BD_F32 && t->dtype != BD_F64 && t->dtype != BD_F16)
        v = 0; /* NaN has no integer value; converting it would be undefined */
    switch (t->dtype) {
    case BD_F32: ((float *)p)[i] = (float)v; break;
    case BD_F64: ((double *)p)[i] = v; break;
    case BD_F16: ((uint16_t *)p)[i] = bd_f32_to_f16((float)v); break;
    case BD_BOOL: ((uint8_t *)p)[i] = v != 0; break;
    /* ONNX Cast from float to integer truncates toward zero; out-of-range
     * values are undefined there, so saturating is as good as anything. */
    case BD_U8: ((uint8_t *)p)[i] = (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v); break;
    case BD_I8: ((int8_t *)p)[i] = (int8_t)(v < -128 ? -128 : v > 127 ? 127 : v); break;
    case BD_U16: ((uint16_t *)p)[i] = (uint16_t)(v < 0 ? 0 : v > 65535 ? 65535 : v); break;
    case BD_I16: ((int16_t *)p)[i] = (int16_t)(v < -32768 ? -32768 : v > 32767 ? 32767 : v); break;
    case BD_I32:
        ((int32_t *)p)[i] = (int32_t)(v < -2147483648.0 ? -2147483648.0 : v > 2147483647.0 ? 2147483647.0 : v);
        break;
    case BD_I64:
        ((int64_t *)p)[i] = (int64_t)(v < -9.2e18 ? -9.2e18 : v > 9.2e18 ? 9.2e18 : v);
        break;
    case BD_UNDEFINED: break;
    }
}

bd_status bd_tensor_cast(bd_tensor **out, const bd_tensor *src, bd_dtype to)
{
    BD_TRY(bd_tensor_new_raw(out, to, src->ndim, src->dims, "Cast output"));
    int64_t n = bd_tensor_count(src);
    bd_tensor *dst = *out;
    if (src->dtype == to) {
        memcpy(dst->data, src->data, bd_tensor_nbytes(src));
    } else if (src->dtype == BD_I64 && to != BD_F32 && to != BD_F64 && to != BD_F16) {
        for (int64_t i = 0; i < n; i++) {
            int64_t v = ((const int64_t *)src->data)[i];
            if (to == BD_I32)
                ((int32_t *)dst->data)[i] = (int32_t)v;
            else
                put_f64(dst, i, (double)v);
        }
    } else if (to == BD_I64 && src->dtype != BD_F32 && src->dtype != BD_F64 &&
               src->dtype != BD_F16) {
        for (int64_t i = 0; i < n; i++)
            ((int64_t *)dst->data)[i] = bd_tensor_get_i64(src, i);
    } else {
        for (int64_t i = 0; i < n; i++)
            put_f64(dst, i, bd_tensor_get_f64(src, i));
    }
    return BD_OK;
}
