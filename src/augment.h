/* Data augmentation for training on images: applied to a batch after
 * preprocessing, so it works on every dataset kind alike.
 *
 *   crop=P   a random crop of the image padded by P pixels on each side,
 *            back to the image's size (the CIFAR/Fashion-MNIST recipe);
 *            padding reads the preprocessed value of black, as padding the
 *            raw image before normalising would;
 *   rrc      a random resized crop: a window of 8-100 % of the area and
 *            aspect 3/4-4/3, resampled bilinearly to the image's size
 *            (torchvision's RandomResizedCrop, on the preprocessed image);
 *   flip     a horizontal flip with probability 1/2.
 *
 * Every choice comes from a stream seeded by (seed, sample's position in the
 * run), so a batch is augmented the same way however the run was split by
 * checkpoints and whatever the thread count. */
#ifndef BD_AUGMENT_H
#define BD_AUGMENT_H

#include <stdint.h>

#include "data.h"
#include "tensor.h"

typedef struct bd_augment {
    int pad;     /* crop=P; 0: no random crop */
    int resized; /* rrc */
    int flip;
    int is_set;  /* set by a parse (even to "none"), so defaults leave it */
} bd_augment;

/* "none", or a comma-separated list of "crop=P", "rrc", "flip". */
bd_status bd_augment_parse(const char *where, const char *spec, bd_augment *a);

/* What suits a dataset when the user says nothing: Fashion-MNIST and other
 * IDX data (small, centred, greyscale) crop=2,flip; image folders and lists
 * rrc,flip. */
void bd_augment_default(const char *dataset_spec, bd_augment *a);

/* "crop=2,flip" (or "none"). */
void bd_augment_describe(const bd_augment *a, char *buf, size_t cap);

/* Augments x ([n, C, H, W], preprocessed with pp) in place; sample i uses
 * the stream (seed, first + i). */
bd_status bd_augment_batch(const bd_augment *a, const bd_preprocess *pp, bd_tensor *x,
                           uint64_t seed, int64_t first);

#endif
