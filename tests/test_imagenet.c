/* A model no one here wrote: torchvision's ResNet-18 (random seeded weights)
 * exported by examples/imagenet/export.py, on real photos. The script records
 * torchvision's own preprocessed input tensors and PyTorch's logits. Skipped
 * when PyTorch is not installed (it is never needed to build or test). */
#include "bd_test.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "data.h"
#include "exec.h"
#include "model_meta.h"
#include "onnx_io.h"

static char dir[512];

static int setup(void **state)
{
    (void)state;
    snprintf(dir, sizeof dir, "%s", bd_test_path("examples/imagenet/models"));
    char marker[600];
    snprintf(marker, sizeof marker, "%s/resnet18.photos.logits.f32", dir);
    if (access(marker, R_OK) == 0)
        return 0;
    if (system("/usr/bin/python3 -c 'import torch, torchvision' 2>/dev/null") != 0)
        return 0; /* the tests skip themselves */
    char cmd[1200];
    snprintf(cmd, sizeof cmd, "/usr/bin/python3 %s resnet18 >/dev/null",
             bd_test_path("examples/imagenet/export.py"));
    return system(cmd) == 0 ? 0 : -1;
}

static void *load_fixture(const char *name, size_t *len)
{
    char path[700];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    return bd_test_read_file(path, len);
}

/* On torchvision's exact input tensors, our logits equal PyTorch's. */
static void test_logits_on_photos(void **state)
{
    (void)state;
    size_t xlen, ylen;
    float *x = load_fixture("resnet18.photos.input.f32", &xlen);
    float *torch = load_fixture("resnet18.photos.logits.f32", &ylen);
    if (!x || !torch) {
        free(x);
        free(torch);
        BD_TEST_SKIP("PyTorch is not installed, so there is no exported ResNet-18");
        return;
    }
    int n = (int)(ylen / (1000 * sizeof(float)));
    assert_int_equal(xlen, (size_t)n * 3 * 224 * 224 * sizeof(float));
    char path[700];
    snprintf(path, sizeof path, "%s/resnet18.onnx", dir);
    bd_graph *g;
    bd_exec *ex;
    if (bd_onnx_load(path, &g) != BD_OK)
        fail_msg("%s", bd_error_message());
    assert_int_equal(bd_exec_new(&ex, g, BD_EXEC_FUSE), BD_OK);
    int64_t dims[4] = {n, 3, 224, 224};
    bd_tensor *in, *out;
    assert_int_equal(bd_tensor_new_raw(&in, BD_F32, 4, dims, "photos"), BD_OK);
    memcpy(in->data, x, xlen);
    if (bd_exec_run1(ex, in, &out) != BD_OK)
        fail_msg("%s", bd_error_message());
    for (int i = 0; i < n; i++) {
        double e = bd_test_rel_error((float *)out->data + i * 1000, torch + i * 1000, 1000);
        print_message("photo %d: relative logit error %.2e\n", i, e);
        assert_true(e < 1e-4);
    }
    bd_tensor_free(in);
    bd_tensor_free(out);
    bd_exec_free(ex);
    bd_graph_free(g);
    free(x);
    free(torch);
}

/* Our decoding + resize + crop + normalisation of the same photos is close to
 * torchvision's (PIL rounds its resize to 8 bits; we keep floats). */
static void test_preprocessing_on_photos(void **state)
{
    (void)state;
    size_t xlen, nlen;
    float *x = load_fixture("resnet18.photos.input.f32", &xlen);
    char *names = load_fixture("resnet18.photos.txt", &nlen);
    if (!x || !names) {
        free(x);
        free(names);
        BD_TEST_SKIP("PyTorch is not installed, so there are no recorded inputs");
        return;
    }
    char path[700];
    snprintf(path, sizeof path, "%s/resnet18.onnx", dir);
    bd_graph *g;
    assert_int_equal(bd_onnx_load(path, &g), BD_OK);
    bd_preprocess pp;
    assert_int_equal(bd_model_preprocess(g, &pp), BD_OK);
    assert_int_equal(pp.resize, 256);
    assert_int_equal(pp.crop, 224);
    const size_t plane = 3 * 224 * 224;
    float *ours = malloc(plane * sizeof *ours);
    int i = 0;
    for (char *line = strtok(names, "\n"); line; line = strtok(NULL, "\n"), i++) {
        bd_image img;
        if (bd_image_load(line, &img) != BD_OK)
            fail_msg("%s", bd_error_message());
        assert_int_equal(bd_image_preprocess(&img, &pp, ours), BD_OK);
        double sum = 0, worst = 0;
        for (size_t k = 0; k < plane; k++) {
            double d = fabs((double)ours[k] - (double)x[i * plane + k]);
            sum += d;
            if (d > worst)
                worst = d;
        }
        /* one 8-bit level is 1/255/0.225 = 0.017 in normalised units */
        print_message("%s: mean |diff| %.4f, max %.4f\n", line, sum / (double)plane, worst);
        assert_true(sum / (double)plane < 0.01);
        assert_true(worst < 0.2);
        bd_image_free(&img);
    }
    free(ours);
    free(x);
    free(names);
    bd_graph_free(g);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_logits_on_photos),
        cmocka_unit_test(test_preprocessing_on_photos),
    };
    return cmocka_run_group_tests(tests, setup, NULL);
}
