/* Matrix-vector products, as a classifier computes them at batch 1: y =
 * alpha W x + beta y or alpha W^T x + beta y, W row-major. They are bound
 * by reading W once from memory (AlexNet's first classifier layer is 151
 * MB, VGG's 411 MB), and OpenBLAS's sgemv read it well below what the
 * memory gives: on the 2-core EPYC here, 2 threads, AlexNet's three
 * classifier layers at batch 1 took 9.3 ms with it, 6.5 with these
 * kernels (the model 14.4 -> 11.6 ms, VGG-11 70.0 -> 64.9). Each element
 * of y is summed by one thread, in an order that the shape alone fixes,
 * so its bits do not depend on the thread count. Without AVX-512 the
 * product is OpenBLAS's. */
#ifndef BD_CPU_GEMV_H
#define BD_CPU_GEMV_H

#include <stdint.h>

/* W is [rows][cols] (contiguous). trans 0: x has cols elements, y rows;
 * y[i] = alpha sum_j W[i][j] x[j] + beta y[i]. trans 1: x has rows
 * elements, y cols; y[j] = alpha sum_i W[i][j] x[i] + beta y[j]. With beta
 * 0, y's earlier contents are not read (a NaN there does not survive). */
void bd_gemv(int trans, int64_t rows, int64_t cols, float alpha, const float *w, const float *x,
             float beta, float *y);

#endif
