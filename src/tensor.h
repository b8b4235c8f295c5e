/* Tensors: a dtype, a shape and a reference-counted block of host memory.
 *
 * Several tensors may share one storage (a Reshape is a new header over the
 * same bytes), so kernels treat their inputs as read-only. The dtype codes
 * are ONNX's TensorProto.DataType values, which keeps the loader trivial. */
#ifndef BD_TENSOR_H
#define BD_TENSOR_H

#include <stddef.h>
#include <stdint.h>

#include "status.h"

typedef enum bd_dtype {
    BD_UNDEFINED = 0,
    BD_F32 = 1,
    BD_U8 = 2,
    BD_I8 = 3,
    BD_U16 = 4,
    BD_I16 = 5,
    BD_I32 = 6,
    BD_I64 = 7,
    BD_BOOL = 9,
    BD_F16 = 10,
    BD_F64 = 11
} bd_dtype;

enum { BD_MAX_DIMS = 8 };

typedef struct bd_storage {
    int refs;
    size_t nbytes;
    void *data;
} bd_storage;

typedef struct bd_tensor {
    bd_dtype dtype;
    int ndim;
    int64_t dims[BD_MAX_DIMS];
    bd_storage *storage;
    void *data; /* storage->data, or within it for a view of a slice */
} bd_tensor;

/* Bytes per element; 0 for a dtype bitdown does not handle. */
size_t bd_dtype_size(bd_dtype t);
const char *bd_dtype_name(bd_dtype t);

/* Element count of a shape, with overflow and sign checks. what names the
 * tensor in the error message. */
bd_status bd_shape_count(int ndim, const int64_t *dims, int64_t *count, const char *what);

/* Largest single tensor bitdown will allocate; a file that claims more is
 * refused before anything is allocated. Defaults to half the physical RAM. */
size_t bd_tensor_limit(void);
void bd_tensor_set_limit(size_t bytes);

/* A new zero-filled tensor; fails with a message naming `what` if the shape
 * is invalid, too large, or memory runs out. */
bd_status bd_tensor_new(bd_tensor **out, bd_dtype dtype, int ndim, const int64_t *dims,
                        const char *what);
/* A new tensor whose contents are left uninitialised (for kernels that
 * overwrite every element). */
bd_status bd_tensor_new_raw(bd_tensor **out, bd_dtype dtype, int ndim, const int64_t *dims,
                            const char *what);
/* A new header sharing src's storage with another shape of equal count. */
bd_status bd_tensor_view(bd_tensor **out, const bd_tensor *src, int ndim, const int64_t *dims);
/* A view of the first elements of src (same dtype) with the given shape,
 * which may hold fewer elements than src: one buffer serving tensors of
 * several shapes in turn. */
bd_status bd_tensor_view_head(bd_tensor **out, const bd_tensor *src, int ndim, const int64_t *dims);
/* A view of the elements of src from `offset` on, as many as dims hold
 * (all within src): a slice of a tensor that another holds whole. */
bd_status bd_tensor_view_at(bd_tensor **out, const bd_tensor *src, int64_t offset, int ndim,
                            const int64_t *dims);
/* A deep copy. */
bd_status bd_tensor_clone(bd_tensor **out, const bd_tensor *src);
void bd_tensor_free(bd_tensor *t);

int64_t bd_tensor_count(const bd_tensor *t);
size_t bd_tensor_nbytes(const bd_tensor *t);
int bd_tensor_same_shape(const bd_tensor *a, const bd_tensor *b);
/* "[64, 3, 7, 7]" into buf. */
const char *bd_shape_str(int ndim, const int64_t *dims, char *buf, size_t cap);

/* Converts between float32 and IEEE half precision (round to nearest even). */
uint16_t bd_f32_to_f16(float f);
float bd_f16_to_f32(uint16_t h);

/* Reads element i of any numeric tensor as double / int64 (for the small
 * integer tensors shape arithmetic uses). */
double bd_tensor_get_f64(const bd_tensor *t, int64_t i);
int64_t bd_tensor_get_i64(const bd_tensor *t, int64_t i);

/* A copy of src converted to dtype `to`. */
bd_status bd_tensor_cast(bd_tensor **out, const bd_tensor *src, bd_dtype to);

#endif
