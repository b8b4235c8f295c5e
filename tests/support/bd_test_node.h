/* Helpers for the kernel tests: a graph holding one node, its attributes,
 * small input tensors, and the assertions the kernel tests share. Every
 * helper fails the calling cmocka test on any error. */
#ifndef BD_TEST_NODE_H
#define BD_TEST_NODE_H

#include "bd_test.h"
#include "graph.h"

/* The name of every node bd_test_node makes. */
#define BD_TEST_NODE_NAME "test_node"
/* The most inputs, and the most outputs, a test node may have. */
#define BD_TEST_MAX_IO 8

/* BD_TEST_DIMS(3, 5) expands to the (ndim, dims) argument pair 2, {3, 5}. */
#define BD_TEST_DIMS(...) \
    (int)(sizeof((int64_t[]){__VA_ARGS__}) / sizeof(int64_t)), (int64_t[]){__VA_ARGS__}
/* The (ndim, dims) pair of a scalar. */
#define BD_TEST_SCALAR 0, (int64_t[]){1}
/* A 1-D int64 tensor holding the arguments: BD_TEST_INTS(3, 5). */
#define BD_TEST_INTS(...) bd_test_ints(BD_TEST_DIMS(__VA_ARGS__))

/* A fresh graph *g at this opset holding one node of type op named
 * BD_TEST_NODE_NAME, with inputs x0, x1, ... (nin of them) and outputs y0,
 * y1, ... (nout). The node stays valid until *g is freed. */
bd_node *bd_test_node(bd_graph **g, int64_t opset, const char *op, int nin, int nout);
/* The same with the input names given (NULL: x0, x1, ...); "" omits an
 * optional input. */
bd_node *bd_test_node_inputs(bd_graph **g, int64_t opset, const char *op, int nin,
                             const char *const *ins, int nout);

/* Attributes (deep-copied onto the node). */
void bd_test_attr_int(bd_node *n, const char *name, int64_t v);
void bd_test_attr_float(bd_node *n, const char *name, float v);
void bd_test_attr_ints(bd_node *n, const char *name, int count, const int64_t *v);
void bd_test_attr_str(bd_node *n, const char *name, const char *v);
void bd_test_attr_tensor(bd_node *n, const char *name, const bd_tensor *t);

/* A new tensor (contents as bd_tensor_new leaves them). */
bd_tensor *bd_test_tensor(bd_dtype dt, int ndim, const int64_t *dims);
/* A float32 tensor of bd_test_fill_random values in [lo, hi). */
bd_tensor *bd_test_rand_f32(int ndim, const int64_t *dims, uint64_t seed, float lo, float hi);
/* A 1-D int64 tensor of count elements copied from v. */
bd_tensor *bd_test_ints(int count, const int64_t *v);

/* Runs n, which must succeed (failing with the error message otherwise),
 * and returns output 0; every other output slot must stay NULL. */
bd_tensor *bd_test_run(const bd_graph *g, const bd_node *n, bd_tensor *const *in);
/* Runs n and expects it to fail, leave every output slot NULL, and say
 * why in a message that names the node ('name'). */
void bd_test_assert_fails(const bd_graph *g, const bd_node *n, bd_tensor *const *in);

/* t has rank ndim and these dims; what (may be NULL) labels a failure. */
void bd_test_assert_shape(const bd_tensor *t, int ndim, const int64_t *dims, const char *what);
/* got is float32 and within relative error tol (bd_test_rel_error) of ref,
 * which has as many elements as got; what (may be NULL) labels a failure. */
void bd_test_assert_close(const bd_tensor *got, const float *ref, double tol, const char *what);

/* The multi-dimensional index idx (rank ndim) of flat position i in dims. */
void bd_test_unravel(int64_t i, int ndim, const int64_t *dims, int64_t *idx);
/* The flat offset, in a tensor of dims (rank ndim), of the element that
 * output index idx (rank out_ndim >= ndim) reads under numpy broadcasting:
 * dims are right-aligned and a size-1 dim always reads index 0. */
int64_t bd_test_bcast_offset(int ndim, const int64_t *dims, int out_ndim, const int64_t *idx);

#endif
