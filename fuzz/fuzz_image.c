/* The JPEG and PNG decoders (bd_image_decode, from memory) and the
 * preprocessing every decoded image goes through (resize, centre crop,
 * fixed output size, gray/RGB conversion, normalisation).
 *
 * The last four bytes of the input choose the preprocessing. Both decoders
 * stop at the end of the image, so those bytes are trailing data to them
 * and a valid image with any suffix is still valid: seeds stay meaningful
 * while the fuzzer varies the sizes. */
#include <stdint.h>
#include <stdlib.h>

#include "data.h"
#include "fuzz_common.h"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    bd_fuzz_init();
    return 0;
}

/* Small sizes, so the work per input stays small whatever the image. */
static void preprocessing(const uint8_t *tail, bd_preprocess *pp)
{
    bd_preprocess_default(pp);
    pp->resize = tail[0] % 80;
    pp->crop = tail[1] % 72;
    int side = tail[2] & 0x3f;
    pp->out_h = side;
    pp->out_w = tail[2] & 0x40 ? side / 2 + 1 : side;
    pp->channels = tail[3] & 1 ? 3 : 1;
    for (int c = 0; c < 3; c++) {
        pp->mean[c] = 0.25f * (float)c;
        pp->std[c] = 0.5f + 0.25f * (float)c;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    bd_image img;
    if (bd_image_decode(data, size, "fuzz.img", &img) != BD_OK)
        return 0;
    bd_preprocess pp;
    preprocessing(size >= 4 ? data + size - 4 : (const uint8_t[4]){0}, &pp);
    int w, h;
    bd_preprocess_size(&pp, img.width, img.height, &w, &h);
    bd_tensor *out;
    /* the output is sized the way the datasets size it, limit included */
    if (bd_tensor_new_raw(&out, BD_F32, 3, (int64_t[]){pp.channels, h, w}, "fuzz.img") ==
        BD_OK) {
        bd_image_preprocess(&img, &pp, out->data);
        bd_tensor_free(out);
    }
    bd_image_free(&img);
    return 0;
}
