/* Backward of the elementwise ops: the broadcasting arithmetic, whose
 * gradients are summed back to each operand's shape, and the activations. */
#include <math.h>

#include "fast_math.h"
#include "grad_kernels.h"


void bd_grad_sum_into(const bd_tensor *src, int ndim, const int64_t *dims, float scale,
                      float *dst)
{
    const int lead = src->ndim - ndim;
    int64_t strides[BD_MAX_DIMS];
    bd_k_strides(src->ndim, src->dims, strides);
    /* Kept and summed dims as (size, stride in src). src is contiguous, so
     * neighbours of one kind merge: a per-channel sum over N, H, W becomes
     * N strided runs of H*W contiguous elements per channel. */
    int64_t kdim[BD_MAX_DIMS], kstride[BD_MAX_DIMS], sdim[BD_MAX_DIMS], sstride[BD_MAX_DIMS];
    int nk = 0, ns = 0, last = -1;
    int64_t kept = 1, summed = 1;
    for (int d = 0; d < src->ndim; d++) {
        int64_t size = src->dims[d];
        if (size == 1)
            continue;
        int sum = d < lead || dims[d - lead] == 1;
        int64_t *dim = sum ? sdim : kdim, *stride = sum ? sstride : kstride;
        int *count = sum ? &ns : &nk;
        if (last == sum) {
            dim[*count - 1] *= size;
            stride[*count - 1] = strides[d];
        } else {
            dim[*count] = size;
            stride[*count] = strides[d];
            ++*count;
        }
        last = sum;
        *(sum ? &summed : &kept) *= size;
    }
    /* the innermost summed group is the run; the others index the runs */
    const int64_t run = ns ? sdim[ns - 1] : 1, run_stride = ns ? sstride[ns - 1] : 0;
    const int64_t runs = run ? summed / run : 0;
    const float *x = src->data;
#pragma omp parallel for if (kept * summed >= BD_PARALLEL_MIN) schedule(static)
    for (int64_t o = 0; o < kept; o++) {
        int64_t base = bd_k_offset_of(o, nk, kdim, kstride);
        double sum = 0;
        for (int64_t q = 0; q < runs; q++) {
            const float *p = x + base + bd_k_offset_of(q, ns - 1, sdim, sstride);
            for (int64_t j = 0; j < run; j++)
                sum += p[j * run_stride];
        }
        dst[o] = (float)(scale * sum);
    }
}

bd_status bd_grad_sum_to(const bd_node *n, const bd_tensor *src, const bd_tensor *like,
                         float scale, bd_tensor **out)
{
    if (scale == 1.0f && bd_tensor_same_shape(src, like))
        return bd_k_view(n, out, src, like->ndim, like->dims);
    BD_TRY(bd_k_output(n, out, BD_F32, like->ndim, like->dims, 0));
    bd_grad_sum_into(src, like->ndim, like->dims, scale, (*out)->data);
    return BD_OK;
}

BD_GRAD(bd_g_add)
{
    for (int i = 0; i < 2; i++)
        if (a->want[i])
            BD_TRY(bd_grad_sum_to(a->n, a->dy, a->in[i], 1.0f, &din[i]));
    /* at most one view of dy (grad.h) */
    if (din[0] && din[1] && din[0]->storage == din[1]->storage) {
        bd_tensor *copy = NULL;
        bd_status st = bd_k_in_node(a->n, bd_tensor_clone(&copy, din[1]));
        bd_tensor_free(din[1]);
        din[1] = st == BD_OK ? copy : NULL;
        return st;
    }
    return BD_OK;
}

BD_GRAD(bd_g_sub)
{
    for (int i = 0; i < 2; i++)
        if (a->want[i])
            BD_TRY(bd_grad_sum_to(a->n, a->dy, a->in[i], i ? -1.0f : 1.0f, &din[i]));
    return BD_OK;
}

/* Broadcast-map runs (kernel_util.h) over operands that broadcast to dy's
 * shape. */
static void mul_run(const void *ctx, void *out, const void *const *in, const int *step,
                    int64_t count)
{
    (void)ctx;
    float *o = out;
    const float *p = in[0], *q = in[1];
    if (step[1]) {
        for (int64_t j = 0; j < count; j++)
            o[j] = p[j * step[0]] * q[j];
    } else {
        const float v = q[0];
        for (int64_t j = 0; j < count; j++)
            o[j] = p[j * step[0]] * v;
    }
}

static void div_run(const void *ctx, void *out, const void *const *in, const int *step,
                    int64_t count)
{
    (void)ctx;
    float *o = out;
    const float *p = in[0], *q = in[1];
    for (int64_t j = 0; j < count; j++)
        o[j] = p[j * step[0]] / q[j * step[1]];
}

/* d(x^e)/dx = e * x^(e - 1) */
static void pow_d_run(const void *ctx, void *out, const void *const *in, const int *step,
                      int64_t count)
{
    (void)ctx;
    float *o = out;
    const float *x = in[0], *e = in[1];
    for (int64_t j = 0; j < count; j++) {
        const float v = e[j * step[1]];
        o[j] = v == 2.0f ? 2.0f * x[j * step[0]] : v * powf(x[j * step[0]], v - 1);
    }
}

/* A new tensor shaped like dy, mapped by run from ops p and q. */
static bd_status full_map(const bd_grad_args *a, const bd_tensor *p, const bd_tensor *q,
                          bd_k_run run, bd_tensor **out)
{
    const bd_tensor *ops[2] = {p, q};
    BD_TRY(bd_k_output(a->n, out, BD_F32, a->dy->ndim, a->dy->dims, 0));
    bd_k_broadcast_map(*out, 2, ops, run, NULL);
    return BD_OK;
}

/* The gradient of operand x from full, its dy-shaped gradient before the
 * broadcast is undone, which this consumes. */
static bd_status reduce_full(const bd_grad_args *a, bd_tensor *full, const bd_tensor *x,
                             float scale, bd_tensor **out)
{
    if (scale == 1.0f && bd_tensor_same_shape(full, x)) {
        *out = full;
        return BD_OK;
    }
    bd_status st = bd_grad_sum_to(a->n, full, x, scale, out);
    bd_tensor_free(full);
    return st;
}

BD_GRAD(bd_g_mul)
{
    /* the other operand is float32 too: the forward took the same types */
    for (int i = 0; i < 2; i++) {
        bd_tensor *prod;
        if (a->want[i]) {
            BD_TRY(full_map(a, a->dy, a->in[1 - i], mul_run, &prod));
            BD_TRY(reduce_full(a, prod, a->in[i], 1.0f, &din[i]));
        }
    }
    return BD_OK;
}

/* y = p / q: dp = dy / q, dq = -dy * p / q^2 = -(dy / q) * y. */
BD_GRAD(bd_g_div)
{
    bd_tensor *quot;
    BD_TRY(full_map(a, a->dy, a->in[1], div_run, &quot));
    if (a->want[1]) {
        bd_tensor *prod;
        bd_status st = full_map(a, quot, a->out[0], mul_run, &prod);
        if (st == BD_OK)
            st = reduce_full(a, prod, a->in[1], -1.0f, &din[1]);
        if (st != BD_OK) {
            bd_tensor_free(quot);
            return st;
        }
    }
    if (!a->want[0]) {
        bd_tensor_free(quot);
        return BD_OK;
    }
    return reduce_full(a, quot, a->in[0], 1.0f, &din[0]);
}

/* The exponent gets no gradient (grad.c's table): the zoo's are constants
 * (x^2 of a variance, x^0.5 of a norm). */
BD_GRAD(bd_g_pow)
{
    bd_tensor *d;
    BD_TRY(full_map(a, a->in[0], a->in[1], pow_d_run, &d));
    const int64_t count = bd_tensor_count(d);
    float *restrict dv = d->data;
    const float *restrict dy = a->dy->data;
#pragma omp parallel for simd if (count >= BD_PARALLEL_MIN) schedule(static)
    for (int64_t i = 0; i < count; i++)
        dv[i] *= dy[i];
    return reduce_full(a, d, a->in[0], 1.0f, &din[0]);
}

/* The gradient is loaded whether it passes or not: a select between two
 * loaded values vectorises, where a load behind the test became a branch
 * that a half-active ReLU mispredicts at every other element (13% of a
 * ResNet's training step, measured). */
BD_GRAD(bd_g_relu)
{
    const bd_tensor *y = a->out[0];
    BD_TRY(bd_k_output(a->n, &din[0], BD_F32, y->ndim, y->dims, 0));
    const int64_t count = bd_tensor_count(y);
    const float *restrict yv = y->data, *restrict dy = a->dy->data;
    float *restrict dx = din[0]->data;
#pragma omp parallel for simd if (count >= BD_PARALLEL_MIN) schedule(static)
    for (int64_t i = 0; i < count; i++) {
        const float g = dy[i];
        dx[i] = yv[i] > 0 ? g : 0.0f;
    }
    return BD_OK;
}

/* Where x passed unclipped, y equals x: comparing them spares reading the
 * bounds again (attributes before opset 11, optional inputs since). At a
 * bound itself the gradient passes, as torch.clamp's does. */
BD_GRAD(bd_g_clip)
{
    const bd_tensor *x = a->in[0];
    BD_TRY(bd_k_output(a->n, &din[0], BD_F32, x->ndim, x->dims, 0));
    const int64_t count = bd_tensor_count(x);
    const float *restrict xv = x->data, *restrict yv = a->out[0]->data;
    const float *restrict dy = a->dy->data;
    float *restrict dx = din[0]->data;
#pragma omp parallel for simd if (count >= BD_PARALLEL_MIN) schedule(static)
    for (int64_t i = 0; i < count; i++) {
        const float g = dy[i]; /* loaded either way, as in Relu's */
        dx[i] = xv[i] == yv[i] ? g : 0.0f;
    }
    return BD_OK;
}

/* dx = dy * f'(x), with f' from x, y = f(x) or the node's parameters p,
 * whichever is cheapest. Inlined into each activation's kernel so that f
 * is too, rather than called per element. */
typedef float (*derivative_fn)(float x, float y, const float *p);

static inline __attribute__((always_inline)) bd_status
pointwise(const bd_grad_args *a, bd_tensor **din, derivative_fn f, const float *p)
{
    const bd_tensor *x = a->in[0];
    BD_TRY(bd_k_output(a->n, &din[0], BD_F32, x->ndim, x->dims, 0));
    const int64_t count = bd_tensor_count(x);
    const float *restrict xv = x->data, *restrict yv = a->out[0]->data;
    const float *restrict dy = a->dy->data;
    float *restrict dx = din[0]->data;
#pragma omp parallel for if (count >= BD_PARALLEL_MIN) schedule(static)
    for (int64_t i = 0; i < count; i++)
        dx[i] = dy[i] * f(xv[i], yv[i], p);
    return BD_OK;
}

static float sigmoid_d(float x, float y, const float *p)
{
    (void)x, (void)p;
    return y * (1 - y);
}

/* Zero where the output is clamped, as torch's hardsigmoid_backward. */
static float hard_sigmoid_d(float x, float y, const float *p)
{
    const float v = p[0] * x + p[1];
    (void)y;
    return v > 0 && v < 1 ? p[0] : 0;
}

/* torch's hardswish_backward: 0 below -3, 1 above 3, x/3 + 1/2 between. */
static float hard_swish_d(float x, float y, const float *p)
{
    (void)y, (void)p;
    return x < -3 ? 0 : x > 3 ? 1 : x / 3 + 0.5f;
}

static float tanh_d(float x, float y, const float *p)
{
    (void)x, (void)p;
    return 1 - y * y;
}

static float exp_d(float x, float y, const float *p)
{
    (void)x, (void)p;
    return y;
}

static float sqrt_d(float x, float y, const float *p)
{
    (void)x, (void)p;
    return 0.5f / y;
}

static float neg_d(float x, float y, const float *p)
{
    (void)x, (void)y, (void)p;
    return -1;
}

static float erf_d(float x, float y, const float *p)
{
    (void)y, (void)p;
    return 1.1283791670955126f * bd_expf(-x * x); /* 2 / sqrt(pi) */
}

static float leaky_relu_d(float x, float y, const float *p)
{
    (void)y;
    return x >= 0 ? 1 : p[0];
}

BD_GRAD(bd_g_sigmoid) { return pointwise(a, din, sigmoid_d, NULL); }
BD_GRAD(bd_g_hard_swish) { return pointwise(a, din, hard_swish_d, NULL); }
BD_GRAD(bd_g_tanh) { return pointwise(a, din, tanh_d, NULL); }
BD_GRAD(bd_g_exp) { return pointwise(a, din, exp_d, NULL); }
BD_GRAD(bd_g_sqrt) { return pointwise(a, din, sqrt_d, NULL); }
BD_GRAD(bd_g_neg) { return pointwise(a, din, neg_d, NULL); }
BD_GRAD(bd_g_erf) { return pointwise(a, din, erf_d, NULL); }

/* The defaults are the forward's (elementwise.c). */
BD_GRAD(bd_g_hard_sigmoid)
{
    const float p[2] = {bd_attr_float(a->n, "alpha", 0.2f), bd_attr_float(a->n, "beta", 0.5f)};
    return pointwise(a, din, hard_sigmoid_d, p);
}

BD_GRAD(bd_g_leaky_relu)
{
    const float p[1] = {bd_attr_float(a->n, "alpha", 0.01f)};
    return pointwise(a, din, leaky_relu_d, p);
}
