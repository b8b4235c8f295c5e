/* Elementwise ops: binary arithmetic with numpy broadcasting, the float
 * activations and Clip. Every one is a run function handed to the broadcast
 * map (kernel_util.h); its splitting into runs is what gives the fast paths
 * for same-shape, scalar and per-channel operands, so no op has its own. */
#include <inttypes.h>
#include <math.h>
#include <stdint.h>

#include "fast_math.h"
#include "kernel_util.h"

/* Integer arithmetic wraps as two's complement hardware does, rather than
 * being undefined on overflow. */
static int64_t wrap_add(int64_t x, int64_t y) { return (int64_t)((uint64_t)x + (uint64_t)y); }
static int64_t wrap_sub(int64_t x, int64_t y) { return (int64_t)((uint64_t)x - (uint64_t)y); }
static int64_t wrap_mul(int64_t x, int64_t y) { return (int64_t)((uint64_t)x * (uint64_t)y); }

/* C division truncates toward zero as ONNX wants; INT64_MIN / -1 would trap.
 * Zero divisors are refused before the map runs. */
static int64_t int_div(int64_t x, int64_t y) { return y == -1 ? wrap_sub(0, x) : x / y; }

/* ONNX's integer Mod takes the divisor's sign (Python's %), not C's. */
static int64_t int_mod(int64_t x, int64_t y)
{
    int64_t r = y == -1 ? 0 : x % y;
    return r != 0 && (r < 0) != (y < 0) ? r + y : r;
}

static int64_t int_pow(int64_t x, int64_t y)
{
    if (y < 0) /* only 1 and -1 have integer reciprocals */
        return x == 1 ? 1 : x == -1 ? (y & 1 ? -1 : 1) : 0;
    int64_t r = 1;
    for (; y; y >>= 1, x = wrap_mul(x, x))
        if (y & 1)
            r = wrap_mul(r, x);
    return r;
}

/* A run with both operands moving, with b fixed (scalar, or a per-channel
 * value over a plane), or with a fixed; the last branch also takes the
 * one-element output where both are fixed. */
#define BINARY_RUN(name, T, expr)                                                        \
    static void name(const void *ctx, void *out, const void *const *in, const int *step, \
                     int64_t count)                                                      \
    {                                                                                    \
        T *o = out;                                                                      \
        const T *a = in[0], *b = in[1];                                                  \
        (void)ctx;                                                                       \
        if (step[0] && step[1]) {                                                        \
            _Pragma("omp simd") for (int64_t j = 0; j < count; j++) {                    \
                const T x = a[j], y = b[j];                                              \
                o[j] = (expr);                                                           \
            }                                                                            \
        } else if (step[0]) {                                                            \
            const T y = b[0];                                                            \
            _Pragma("omp simd") for (int64_t j = 0; j < count; j++) {                    \
                const T x = a[j];                                                        \
                o[j] = (expr);                                                           \
            }                                                                            \
        } else {                                                                         \
            const T x = a[0];                                                            \
            _Pragma("omp simd") for (int64_t j = 0; j < count; j++) {                    \
                const T y = b[j];                                                        \
                o[j] = (expr);                                                           \
            }                                                                            \
        }                                                                                \
    }

BINARY_RUN(add_f32, float, x + y)
BINARY_RUN(sub_f32, float, x - y)
BINARY_RUN(mul_f32, float, x * y)
BINARY_RUN(div_f32, float, x / y)
/* x^2 is LayerNorm's variance as exporters spell it out (ConvNeXt): a
 * product, not a call per element; powf(x, 2) is the same rounded square. */
static inline float pow_f(float x, float y) { return y == 2.0f ? x * x : powf(x, y); }
BINARY_RUN(pow_f32, float, pow_f(x, y))
BINARY_RUN(fmod_f32, float, fmodf(x, y))
BINARY_RUN(add_i64, int64_t, wrap_add(x, y))
BINARY_RUN(sub_i64, int64_t, wrap_sub(x, y))
BINARY_RUN(mul_i64, int64_t, wrap_mul(x, y))
BINARY_RUN(div_i64, int64_t, int_div(x, y))
BINARY_RUN(pow_i64, int64_t, int_pow(x, y))
BINARY_RUN(mod_i64, int64_t, int_mod(x, y))

static bd_status binary(const bd_node *n, bd_tensor *const *in, bd_tensor **out, bd_k_run f32,
                        bd_k_run i64)
{
    const bd_tensor *a = in[0], *b = in[1];
    if (a->dtype != b->dtype)
        return bd_node_fail(n, BD_EINVAL, "inputs have different types (%s and %s)",
                            bd_dtype_name(a->dtype), bd_dtype_name(b->dtype));
    bd_k_run run = a->dtype == BD_F32 ? f32 : a->dtype == BD_I64 ? i64 : NULL;
    if (!run)
        return bd_node_fail(n, BD_EUNSUPPORTED,
                            "inputs are %s; only float32 and int64 are supported",
                            bd_dtype_name(a->dtype));
    int nd;
    int64_t dims[BD_MAX_DIMS];
    BD_TRY(bd_k_broadcast_shape(n, a->ndim, a->dims, b->ndim, b->dims, &nd, dims));
    BD_TRY(bd_k_output(n, out, a->dtype, nd, dims, 0));
    const bd_tensor *ab[2] = {a, b};
    bd_k_broadcast_map(out[0], 2, ab, run, NULL);
    return BD_OK;
}

BD_KERNEL(bd_k_add) { (void)g; return binary(n, in, out, add_f32, add_i64); }
BD_KERNEL(bd_k_sub) { (void)g; return binary(n, in, out, sub_f32, sub_i64); }
BD_KERNEL(bd_k_mul) { (void)g; return binary(n, in, out, mul_f32, mul_i64); }
BD_KERNEL(bd_k_pow) { (void)g; return binary(n, in, out, pow_f32, pow_i64); }

/* Integer divisors are checked before the map runs: a zero would trap. */
static bd_status int_divisor_check(const bd_node *n, bd_tensor *const *in)
{
    const bd_tensor *b = in[1];
    if (in[0]->dtype != BD_I64 || b->dtype != BD_I64)
        return BD_OK;
    const int64_t *d = b->data;
    int64_t count = bd_tensor_count(b);
    for (int64_t i = 0; i < count; i++)
        if (d[i] == 0)
            return bd_node_fail(n, BD_EINVAL,
                                "integer division by zero (divisor element %" PRId64 ")", i);
    return BD_OK;
}

BD_KERNEL(bd_k_div)
{
    (void)g;
    BD_TRY(int_divisor_check(n, in));
    return binary(n, in, out, div_f32, div_i64);
}

/* Floats need fmod=1 (C's fmodf), as ONNX requires; integers take either. */
BD_KERNEL(bd_k_mod)
{
    (void)g;
    if (in[0]->dtype == BD_F32 && bd_attr_int(n, "fmod", 0) != 1)
        return bd_node_fail(n, BD_EINVAL, "float inputs need fmod=1");
    BD_TRY(int_divisor_check(n, in));
    return binary(n, in, out, fmod_f32, mod_i64);
}

/* Unary ops see x, and p: the op's float parameters (alpha, beta, bounds). */
#define UNARY_RUN(name, T, expr)                                                         \
    static void name(const void *ctx, void *out, const void *const *in, const int *step, \
                     int64_t count)                                                      \
    {                                                                                    \
        const float *p = ctx;                                                            \
        T *o = out;                                                                      \
        const T *src = in[0];                                                            \
        (void)p;                                                                         \
        (void)step;                                                                      \
        _Pragma("omp simd") for (int64_t j = 0; j < count; j++) {                        \
            const T x = src[j];                                                          \
            o[j] = (expr);                                                               \
        }                                                                                \
    }

UNARY_RUN(relu_f32, float, x > 0 ? x : 0)
UNARY_RUN(leaky_relu_f32, float, x >= 0 ? x : p[0] * x)
UNARY_RUN(clip_f32, float, bd_clampf(x, p[0], p[1]))
static void sigmoid_f32(const void *ctx, void *out, const void *const *in, const int *step,
                        int64_t count)
{
    (void)ctx;
    if (step[0]) {
        bd_sigmoid_run(in[0], out, count, 0);
        return;
    }
    float s; /* one value broadcast */
    bd_sigmoid_run(in[0], &s, 1, 0);
    for (int64_t j = 0; j < count; j++)
        ((float *)out)[j] = s;
}
UNARY_RUN(hard_sigmoid_f32, float, bd_hard_sigmoidf(x, p[0], p[1]))
UNARY_RUN(hard_swish_f32, float, bd_hard_swishf(x))
UNARY_RUN(tanh_f32, float, tanhf(x))
UNARY_RUN(exp_f32, float, expf(x))
UNARY_RUN(sqrt_f32, float, sqrtf(x))
UNARY_RUN(neg_f32, float, -x)
UNARY_RUN(neg_i64, int64_t, wrap_sub(0, x))
UNARY_RUN(erf_f32, float, bd_erff(x))
/* halves to even, as ONNX's Round (the default rounding mode) */
UNARY_RUN(round_f32, float, nearbyintf(x))

/* i64 is NULL for the ops that take float32 only. */
static bd_status unary(const bd_node *n, const bd_tensor *x, bd_tensor **out, bd_k_run f32,
                       bd_k_run i64, const float *params)
{
    bd_k_run run = x->dtype == BD_F32 ? f32 : x->dtype == BD_I64 ? i64 : NULL;
    if (!run)
        return bd_node_fail(n, BD_EUNSUPPORTED, "input is %s; only %s supported",
                            bd_dtype_name(x->dtype), i64 ? "float32 and int64 are" : "float32 is");
    BD_TRY(bd_k_output(n, out, x->dtype, x->ndim, x->dims, 0));
    bd_k_broadcast_map(out[0], 1, &x, run, params);
    return BD_OK;
}

BD_KERNEL(bd_k_relu) { (void)g; return unary(n, in[0], out, relu_f32, NULL, NULL); }
BD_KERNEL(bd_k_sigmoid) { (void)g; return unary(n, in[0], out, sigmoid_f32, NULL, NULL); }
BD_KERNEL(bd_k_hard_swish) { (void)g; return unary(n, in[0], out, hard_swish_f32, NULL, NULL); }
BD_KERNEL(bd_k_tanh) { (void)g; return unary(n, in[0], out, tanh_f32, NULL, NULL); }
BD_KERNEL(bd_k_exp) { (void)g; return unary(n, in[0], out, exp_f32, NULL, NULL); }
BD_KERNEL(bd_k_sqrt) { (void)g; return unary(n, in[0], out, sqrt_f32, NULL, NULL); }
BD_KERNEL(bd_k_neg) { (void)g; return unary(n, in[0], out, neg_f32, neg_i64, NULL); }
BD_KERNEL(bd_k_erf) { (void)g; return unary(n, in[0], out, erf_f32, NULL, NULL); }
BD_KERNEL(bd_k_round) { (void)g; return unary(n, in[0], out, round_f32, NULL, NULL); }

BD_KERNEL(bd_k_leaky_relu)
{
    (void)g;
    const float p[1] = {bd_attr_float(n, "alpha", 0.01f)};
    return unary(n, in[0], out, leaky_relu_f32, NULL, p);
}

void bd_k_hard_sigmoid_params(const bd_node *n, float *alpha, float *beta)
{
    *alpha = bd_attr_float(n, "alpha", 0.2f);
    *beta = bd_attr_float(n, "beta", 0.5f);
}

BD_KERNEL(bd_k_hard_sigmoid)
{
    (void)g;
    float p[2];
    bd_k_hard_sigmoid_params(n, &p[0], &p[1]);
    return unary(n, in[0], out, hard_sigmoid_f32, NULL, p);
}

bd_status bd_k_clip_bounds(const bd_graph *g, const bd_node *n, bd_tensor *const *in, float *lo,
                           float *hi)
{
    static const char *const names[2] = {"min", "max"};
    float p[2] = {-INFINITY, INFINITY};
    for (int k = 0; k < 2; k++) {
        /* Opset 11 moved the bounds from attributes to optional inputs. */
        if (g->opset < 11) {
            p[k] = bd_attr_float(n, names[k], p[k]);
            continue;
        }
        const bd_tensor *b = bd_k_opt(n, in, k + 1);
        if (!b)
            continue;
        if (bd_tensor_count(b) != 1)
            return bd_node_fail(n, BD_EINVAL, "'%s' must be a scalar, has %" PRId64 " elements",
                                names[k], bd_tensor_count(b));
        p[k] = (float)bd_tensor_get_f64(b, 0);
    }
    *lo = p[0];
    *hi = p[1];
    return BD_OK;
}

BD_KERNEL(bd_k_clip)
{
    float p[2];
    BD_TRY(bd_k_clip_bounds(g, n, in, &p[0], &p[1]));
    return unary(n, in[0], out, clip_f32, NULL, p);
}
