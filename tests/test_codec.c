/* The int codec's record (codec.h) at every bit length from 1 to 16 and with
 * a bit length per row: codes pack and unpack at any width; a layer decodes
 * to s * (u - z) of each row's grid; a per-row-bits layer counts its bytes
 * as its rows' widths say, decodes packed as unpacked, rounds each row at
 * its own width, and fits each row as a layer of that width would. */
#include "bd_test.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec.h"
#include "int_fit.h"

enum { ROWS = 16, L = 12 };

static bd_layer layer(int transposed)
{
    bd_layer l;
    memset(&l, 0, sizeof l);
    snprintf(l.name, sizeof l.name, "fc3");
    snprintf(l.op, sizeof l.op, transposed ? "MatMul" : "Gemm");
    l.rows = ROWS;
    l.row_len = L;
    l.groups = 1;
    l.kh = l.kw = 1;
    l.transposed = transposed;
    return l;
}

/* Row r's bits in the per-row tests: every width 1..16, some twice. */
static int32_t bits_of_row(int64_t r) { return (int32_t)(1 + (r * 7) % 16); }

static void fill(float *w, int64_t n, uint64_t seed)
{
    bd_test_fill_random(w, n, seed, -1, 1);
    for (int64_t i = 0; i < n; i++) /* rows of different ranges */
        w[i] *= (float)(1 + (i / L) % 5);
}

static void test_pack_every_width(void **state)
{
    (void)state;
    enum { N = 61 };
    for (int b = 1; b <= 16; b++) {
        int32_t codes[N], back[N];
        for (int i = 0; i < N; i++)
            codes[i] = (int32_t)(((uint32_t)i * 2654435761u) >> 7) & ((1 << b) - 1);
        codes[0] = (1 << b) - 1; /* all bits set */
        uint8_t packed[(N * 16 + 7) / 8 + 1];
        packed[bd_packed_bytes(N, b)] = 0xa5; /* nothing past the end is written */
        bd_pack_bits(codes, N, b, packed);
        assert_int_equal(packed[bd_packed_bytes(N, b)], 0xa5);
        bd_unpack_bits(packed, N, b, back);
        assert_memory_equal(codes, back, sizeof codes);
        /* from any bit offset, as compressed files pack widths together */
        uint8_t at[(N * 16 + 7) / 8 + 4] = {0};
        bd_pack_bits_at(codes, N, b, at, 5);
        bd_unpack_bits_at(at, 5, N, b, back);
        assert_memory_equal(codes, back, sizeof codes);
    }
}

/* Every code of every width decodes to s * (u - z), asymmetric and
 * symmetric (z = 2^(b-1)), per row and per tensor. */
static void test_decode_every_width(void **state)
{
    (void)state;
    bd_layer l = layer(0);
    for (int b = 1; b <= 16; b++)
        for (int sym = 0; sym < 2; sym++) {
            if (sym && b < 2)
                continue;
            float scales[ROWS], zeros[ROWS], w[ROWS * L];
            int32_t codes[ROWS * L];
            for (int r = 0; r < ROWS; r++) {
                scales[r] = (float)(r + 1) / 64;
                zeros[r] = (float)(r % (1 << b));
            }
            for (int i = 0; i < ROWS * L; i++)
                codes[i] = (int32_t)(((uint32_t)i * 40503u) % (1u << b));
            codes[5] = (1 << b) - 1;
            bd_qlayer q = {.format = BD_FMT_INT, .d = 1, .k = 1 << b, .ints = {b, 1, sym},
                           .n = ROWS * L, .nscales = ROWS, .scales = scales,
                           .zeros = sym ? NULL : zeros, .codes = codes};
            assert_int_equal(bd_qlayer_decode(&q, &l, w), BD_OK);
            for (int i = 0; i < ROWS * L; i++) {
                const int r = i / L;
                const float z = sym ? (float)(1 << (b - 1)) : zeros[r];
                if (w[i] != scales[r] * ((float)codes[i] - z))
                    fail_msg("bits %d sym %d: weight %d is %g", b, sym, i, w[i]);
            }
            assert_int_equal(bd_qlayer_code_bytes(&q), (ROWS * L * b + 7) / 8);
            q.nscales = 1;
            assert_int_equal(bd_qlayer_decode(&q, &l, w), BD_OK);
            for (int i = 0; i < ROWS * L; i++)
                assert_true(w[i] == scales[0] * ((float)codes[i] - (sym ? (float)(1 << (b - 1))
                                                                          : zeros[0])));
        }
}

/* A layer of ROWS rows at bits_of_row, fitted to the weight objective. */
static void fit_rows(const float *w, int sym, bd_qlayer *q, float *w_hat)
{
    int32_t row_bits[ROWS];
    for (int r = 0; r < ROWS; r++)
        row_bits[r] = sym && bits_of_row(r) < 2 ? 2 : bits_of_row(r);
    bd_feedback_layer fl = {(float *)w, ROWS, L, 1, NULL};
    bd_int_spec spec = {0, 1, sym};
    assert_int_equal(bd_int_fit(&fl, &spec, row_bits, BD_OBJ_WEIGHT, NULL, q, w_hat), BD_OK);
}

static void test_row_bits_sizes_and_decode(void **state)
{
    (void)state;
    for (int sym = 0; sym < 2; sym++) {
        float w[ROWS * L], w_hat[ROWS * L], dec[ROWS * L];
        fill(w, ROWS * L, 11 + (uint64_t)sym);
        bd_qlayer q;
        fit_rows(w, sym, &q, w_hat);
        assert_non_null(q.row_bits);
        assert_int_equal(q.ints.bits, 16);
        assert_int_equal(q.k, 1 << 16);
        int64_t bits = 0;
        for (int r = 0; r < ROWS; r++) {
            bits += L * q.row_bits[r];
            const float s = q.scales[r];
            const float z = sym ? (float)(1 << (q.row_bits[r] - 1)) : q.zeros[r];
            assert_true(bd_int_zero(&q, r) == z);
            for (int c = 0; c < L; c++) {
                const int i = r * L + c;
                assert_true(q.codes[i] >= 0 && q.codes[i] < 1 << q.row_bits[r]);
                assert_true(w_hat[i] == s * ((float)q.codes[i] - z));
            }
        }
        /* by hand: codes at their rows' widths; fp16 scales (and zeros),
         * and the row order of 4 bits a row */
        assert_int_equal(bd_qlayer_code_bytes(&q), (bits + 7) / 8);
        assert_int_equal(bd_qlayer_table_bytes(&q), 2 * ROWS * (sym ? 1 : 2) + ROWS * 4 / 8);
        assert_true(fabs(bd_qlayer_bits_per_weight(&q) - (double)bits / (ROWS * L)) < 1e-12);
        char buf[64], d[8], k[8];
        bd_qlayer_describe(&q, buf, sizeof buf);
        assert_string_equal(buf, sym ? "int=2..16 per=channel sym=1"
                                     : "int=1..16 per=channel sym=0");
        bd_qlayer_dk(&q, d, k);
        assert_string_equal(k, sym ? "int2-16" : "int1-16");
        /* decoded, packed and not, and transposed: the per-row formula */
        for (int tr = 0; tr < 2; tr++) {
            bd_layer l = layer(tr);
            assert_int_equal(bd_qlayer_decode(&q, &l, dec), BD_OK);
            for (int r = 0; r < ROWS; r++)
                for (int c = 0; c < L; c++)
                    assert_true(dec[tr ? c * ROWS + r : r * L + c] == w_hat[r * L + c]);
            uint8_t *packed = malloc((size_t)bd_qlayer_code_bytes(&q));
            bd_qlayer_pack(&q, packed);
            float *dec2 = malloc(sizeof dec);
            assert_int_equal(bd_qlayer_decode_packed(&q, packed, &l, dec2), BD_OK);
            assert_memory_equal(dec, dec2, sizeof dec);
            free(dec2);
            free(packed);
        }
        /* copies own their rows' bits */
        bd_qlayer copy;
        assert_int_equal(bd_qlayer_copy(&copy, &q), BD_OK);
        assert_true(copy.row_bits != q.row_bits);
        assert_memory_equal(copy.row_bits, q.row_bits, ROWS * sizeof *q.row_bits);
        bd_qlayer_free(&copy);
        /* a row wider than the layer's bits is refused, naming the layer */
        bd_layer l = layer(0);
        q.row_bits[3] = 17;
        assert_int_equal(bd_qlayer_decode(&q, &l, dec), BD_EINVAL);
        assert_non_null(strstr(bd_error_message(), "fc3"));
        bd_qlayer_free(&q);
    }
}

/* Each row of a per-row-bits fit is the row of a uniform fit at its
 * width, and bd_int_round rounds each row at its own width. */
static void test_row_bits_fit_and_round(void **state)
{
    (void)state;
    for (int sym = 0; sym < 2; sym++) {
        float w[ROWS * L], w_hat[ROWS * L], u_hat[ROWS * L], rounded[ROWS * L];
        int32_t codes[ROWS * L];
        fill(w, ROWS * L, 21 + (uint64_t)sym);
        bd_qlayer q;
        fit_rows(w, sym, &q, w_hat);
        for (int r = 0; r < ROWS; r++) {
            bd_feedback_layer fl = {w, ROWS, L, 1, NULL};
            bd_int_spec spec = {q.row_bits[r], 1, sym};
            bd_qlayer u;
            assert_int_equal(bd_int_fit(&fl, &spec, NULL, BD_OBJ_WEIGHT, NULL, &u, u_hat), BD_OK);
            assert_true(u.scales[r] == q.scales[r]);
            assert_true(sym || u.zeros[r] == q.zeros[r]);
            assert_memory_equal(u.codes + r * L, q.codes + r * L, L * sizeof *q.codes);
            assert_memory_equal(u_hat + r * L, w_hat + r * L, L * sizeof *w_hat);
            bd_qlayer_free(&u);
        }
        /* weights far outside every grid clamp to each row's own top code */
        float far[ROWS * L];
        for (int i = 0; i < ROWS * L; i++)
            far[i] = 1e6f;
        bd_int_round(&q, ROWS, L, far, codes, rounded);
        for (int i = 0; i < ROWS * L; i++)
            assert_int_equal(codes[i], (1 << q.row_bits[i / L]) - 1);
        bd_int_round(&q, ROWS, L, w, codes, rounded);
        assert_memory_equal(codes, q.codes, sizeof codes);
        assert_memory_equal(rounded, w_hat, sizeof rounded);
        bd_qlayer_free(&q);
    }
}

/* The act objective also fits a row at b bits as a b-bit layer does. */
static void test_row_bits_act_fit(void **state)
{
    (void)state;
    enum { N = 256 };
    float w[ROWS * L], x[N * L], w_hat[ROWS * L], u_hat[ROWS * L];
    fill(w, ROWS * L, 31);
    bd_test_fill_random(x, N * L, 32, -1, 1);
    bd_gram h;
    assert_int_equal(bd_gram_init(&h, L), BD_OK);
    bd_gram_add_rows(&h, x, N, L);
    bd_gram_finish(&h);
    bd_feedback_layer fl = {w, ROWS, L, 1, &h};
    bd_int_spec spec = {0, 1, 0};
    int32_t row_bits[ROWS];
    for (int r = 0; r < ROWS; r++)
        row_bits[r] = 2 + r % 3;
    bd_qlayer q;
    assert_int_equal(bd_int_fit(&fl, &spec, row_bits, BD_OBJ_ACT, NULL, &q, w_hat), BD_OK);
    for (int b = 2; b <= 4; b++) {
        bd_qlayer u;
        spec.bits = b;
        assert_int_equal(bd_int_fit(&fl, &spec, NULL, BD_OBJ_ACT, NULL, &u, u_hat), BD_OK);
        for (int r = b - 2; r < ROWS; r += 3)
            assert_memory_equal(u.codes + r * L, q.codes + r * L, L * sizeof *q.codes);
        bd_qlayer_free(&u);
    }
    bd_qlayer_free(&q);
    bd_gram_free(&h);
    /* a bit length per row needs a grid per row */
    spec.per_channel = 0;
    fl.h = NULL;
    assert_int_equal(bd_int_fit(&fl, &spec, row_bits, BD_OBJ_WEIGHT, NULL, &q, w_hat), BD_EINVAL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_pack_every_width),
        cmocka_unit_test(test_decode_every_width),
        cmocka_unit_test(test_row_bits_sizes_and_decode),
        cmocka_unit_test(test_row_bits_fit_and_round),
        cmocka_unit_test(test_row_bits_act_fit),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
