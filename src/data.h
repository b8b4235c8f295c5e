/* Datasets: where evaluation and calibration images come from, and how they
 * become network input.
 *
 * A dataset is opened from a spec string:
 *   fmnist:train | fmnist:test        Debian's dataset-fashion-mnist
 *   idx:IMAGES.gz,LABELS.gz           any gzipped (or plain) IDX pair
 *   dir:PATH                          one subfolder per class, sorted by name;
 *                                     JPEG and PNG files inside
 *   list:FILE                         lines "path label" (paths relative to
 *                                     FILE's folder unless absolute)
 * Images are decoded lazily for folders and lists (only the index is read at
 * open) and eagerly for IDX (the whole file is small and gzipped). */
#ifndef BD_DATA_H
#define BD_DATA_H

#include <stdint.h>

#include "status.h"
#include "tensor.h"

/* An 8-bit image, interleaved channels (HWC), 1 or 3 channels. */
typedef struct bd_image {
    int width, height, channels;
    uint8_t *pixels;
} bd_image;

/* How an image becomes a CHW float tensor:
 * 1. resize so the shorter side is `resize` (0: no resize), bilinear with
 *    antialiasing when shrinking (as PIL/torchvision do);
 * 2. centre crop to crop x crop (0: no crop);
 * 3. if out_h/out_w are set (> 0) and the image is not that size yet,
 *    resize the shorter side to max(out_h, out_w) and centre crop to
 *    out_h x out_w, so a model with a fixed input size always gets it;
 * 4. convert to `channels` (1 = gray by ITU-R 601 luma, 3 = RGB by
 *    replicating gray), scale to [0, 1], subtract mean[c], divide by std[c]. */
typedef struct bd_preprocess {
    int resize;
    int crop;
    int out_h, out_w;
    int channels;
    float mean[3];
    float std[3];
} bd_preprocess;

/* Identity preprocessing: no resize/crop, 1 channel, mean 0, std 1. */
void bd_preprocess_default(bd_preprocess *pp);

bd_status bd_image_load(const char *path, bd_image *img);   /* JPEG or PNG, by content */
bd_status bd_image_decode(const void *data, size_t len, const char *name, bd_image *img);
void bd_image_free(bd_image *img);
/* Allocates img's pixels (left uninitialised) for a w x h image with 1 or 3
 * channels; refuses sizes beyond bd_tensor_limit(), naming `name`. */
bd_status bd_image_alloc(bd_image *img, int w, int h, int channels, const char *name);
/* Writes an 8-bit PNG (1 or 3 channels), atomically. */
bd_status bd_image_save_png(const char *path, const bd_image *img);
/* out: channels*H*W floats, where H and W are what bd_preprocess_size gives. */
bd_status bd_image_preprocess(const bd_image *img, const bd_preprocess *pp, float *out);
/* The output height and width for an input of w x h. */
void bd_preprocess_size(const bd_preprocess *pp, int w, int h, int *out_w, int *out_h);

/* Labels must lie in [0, BD_MAX_CLASSES): a larger one is a broken file, and
 * per-class tables downstream are sized by it. */
enum { BD_MAX_CLASSES = 1 << 16 };

/* Reads a uint8 IDX file, gzipped or plain (told apart by content), that has
 * `ndim` dimensions: 3 for images [n, rows, cols], 1 for labels [n]. *out
 * gets a new BD_U8 tensor of that shape. */
bd_status bd_idx_read(const char *path, int ndim, bd_tensor **out);

typedef struct bd_dataset bd_dataset;

bd_status bd_dataset_open(bd_dataset **out, const char *spec, const bd_preprocess *pp);
void bd_dataset_free(bd_dataset *d);
int64_t bd_dataset_count(const bd_dataset *d);
/* Number of classes: max label + 1 (IDX), or the number of subfolders (dir). */
int bd_dataset_classes(const bd_dataset *d);
/* Class name i where the dataset knows it (dir: the folder name), else NULL. */
const char *bd_dataset_class_name(const bd_dataset *d, int i);
/* The spec it was opened with. */
const char *bd_dataset_spec(const bd_dataset *d);
/* Sample i, preprocessed: *x gets a new [1, C, H, W] float tensor. */
bd_status bd_dataset_get(const bd_dataset *d, int64_t i, bd_tensor **x, int *label);
/* A batch: *x gets [n, C, H, W] for samples idx[0..n); labels[j] filled. All
 * samples of a batch must come out the same size (the message names the
 * first one that does not). Decodes in parallel. */
bd_status bd_dataset_batch(const bd_dataset *d, const int64_t *idx, int n, bd_tensor **x,
                           int *labels);
/* The raw (unpreprocessed) image of sample i, for display. */
bd_status bd_dataset_image(const bd_dataset *d, int64_t i, bd_image *img);

/* A seeded permutation of 0..n-1 (Fisher-Yates with a fixed PRNG, so the
 * same seed gives the same order on every machine). Free *perm with free(). */
bd_status bd_permutation(int64_t n, uint64_t seed, int64_t **perm);

#endif
