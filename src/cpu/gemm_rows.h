/* Products of row-major float matrices by a constant right-hand side, as
 * MatMul computes them (a Linear layer on tokens, ConvNeXt's blocks), with
 * what follows them in a model applied as each tile is made. bitdown's
 * kernel reads B where it lies: OpenBLAS copies all of B into its panels
 * on every call, which at few rows (ConvNeXt's 49 and 196 at batch 1, with
 * weights of 9.4 and 2.4 MB) costs about as much as the products. Each
 * column panel of B is read once per block of rows, from L2 by every row
 * tile after the first. Without AVX-512 the product is OpenBLAS's and the
 * epilogue a pass over it. */
#ifndef BD_CPU_GEMM_ROWS_H
#define BD_CPU_GEMM_ROWS_H

#include <stdint.h>

/* What happens to each row of the product, in this order: bias[j] added
 * (NULL: nothing), then with gelu set, x (erf(x / k[0]) + k[1]) k[2]
 * (bd_gelu_span): the exporter's Add, then its Div, Erf, Add, Mul, Mul,
 * with their arithmetic, so the result is theirs bit for bit. */
typedef struct bd_gemm_epilogue {
    const float *bias;
    int gelu;
    float k[3];
} bd_gemm_epilogue;

/* y[i][j] = sum_p a[i][p] b[p][j] for i < m, j < n, p < k (a [m][k], b
 * [k][n], y [m][n], contiguous), then ep (NULL: none). y is written
 * whole, also where k is 0. */
void bd_gemm_rows(int64_t m, int64_t n, int64_t k, const float *a, const float *b,
                  const bd_gemm_epilogue *ep, float *y);

#endif
