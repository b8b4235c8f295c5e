/* Shared helpers for the cmocka tests. */
#ifndef BD_TEST_H
#define BD_TEST_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
/* cmocka.h needs the three headers above first */
#include <cmocka.h>

#include "graph.h"
#include "tensor.h"

/* Path of a file in the source tree (static buffer, one at a time per slot). */
const char *bd_test_path(const char *relative);
/* Every float initializer of a equals b's of the same name, bit for bit
 * (there is at least one). */
void bd_test_assert_same_floats(const bd_graph *a, const bd_graph *b);
/* A fresh empty temporary directory for this test process. */
const char *bd_test_tmpdir(void);
/* Reads a whole file (with a NUL after it); NULL if it cannot. *len gets the size. */
void *bd_test_read_file(const char *path, size_t *len);
int bd_test_write_file(const char *path, const void *data, size_t len);
/* n gray images of h x w bytes and their labels as IDX files (Fashion-MNIST's
 * format), for tests that train on a dataset of their own; 0 on success. */
int bd_test_write_idx(const char *images, const char *labels, int n, int h, int w,
                      const unsigned char *pixels, const unsigned char *label_bytes);
/* max |a-b| / max(max |b|, 1e-12): the relative error used throughout. */
double bd_test_rel_error(const float *a, const float *b, size_t n);
/* Deterministic pseudo-random floats in [lo, hi). */
void bd_test_fill_random(float *x, size_t n, uint64_t seed, float lo, float hi);
/* sum_i ||W x_i - W^ x_i||^2 over n input rows x (n x L), W and W^ rows x L,
 * straight from the rows (the truth the quantizers' objectives are checked
 * against). */
double bd_test_output_error(const float *x, int64_t n, const float *w, const float *w_hat,
                            int64_t rows, int64_t L);
/* Skips the calling cmocka test (or the whole program) with a reason. */
#define BD_TEST_SKIP(...)                       \
    do {                                        \
        print_message("SKIP: " __VA_ARGS__);    \
        print_message("\n");                    \
        skip();                                 \
    } while (0)

#endif
