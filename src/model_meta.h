/* What a model file says about its input and classes, in ONNX
 * metadata_props (documented in docs/metadata.md):
 *   bitdown.preprocess.color   gray | rgb
 *   bitdown.preprocess.resize  shorter side before cropping, 0 = none
 *   bitdown.preprocess.crop    centre crop size, 0 = none
 *   bitdown.preprocess.mean    one value or three, comma-separated
 *   bitdown.preprocess.std     likewise
 *   bitdown.classes            class names, one per line, in label order
 *   bitdown.dataset            the spec of the data it was trained on */
#ifndef BD_MODEL_META_H
#define BD_MODEL_META_H

#include "data.h"
#include "graph.h"

#define BD_META_COLOR "bitdown.preprocess.color"
#define BD_META_RESIZE "bitdown.preprocess.resize"
#define BD_META_CROP "bitdown.preprocess.crop"
#define BD_META_MEAN "bitdown.preprocess.mean"
#define BD_META_STD "bitdown.preprocess.std"
#define BD_META_CLASSES "bitdown.classes"
#define BD_META_DATASET "bitdown.dataset"

/* Preprocessing for the model's first input: the metadata where present,
 * the input's channel count and static H/W from its declared shape. Fails
 * with a message naming the key when a value does not parse. */
bd_status bd_model_preprocess(const bd_graph *g, bd_preprocess *pp);
/* Whether the metadata says anything about preprocessing; a plain PyTorch
 * export does not, and its inputs are then only scaled to [0, 1]. */
int bd_model_has_preprocess(const bd_graph *g);

/* One setting by name, as the data command and bd.data give it: resize,
 * crop (pixels, 0 = none), mean, std (one value, or one per channel of
 * pp->channels), color (gray | rgb). The message names the key and value. */
bd_status bd_preprocess_set(bd_preprocess *pp, const char *key, const char *value);

/* Class names from the metadata (NULL when absent); *n gets the count.
 * Free with bd_class_names_free. */
bd_status bd_model_class_names(const bd_graph *g, char ***names, int *n);
void bd_class_names_free(char **names, int n);

/* Class names from text, one per line (what names the text in messages). */
bd_status bd_class_names_parse(const char *text, size_t len, const char *what, char ***names,
                               int *n);
/* Class names from a text file, one per line. */
bd_status bd_class_names_load(const char *path, char ***names, int *n);

/* ---- writing (bitdown annotate) ---- */

/* A known dataset's preprocessing, class names (NULL for imagenet, whose
 * thousand names come from a file) and data spec (NULL when bitdown has no
 * reader for it): imagenet, fmnist, mnist, cifar10. Fails naming the
 * presets for any other name. */
typedef struct bd_meta_preset {
    const char *name;
    bd_preprocess pp;
    const char *classes; /* one per line */
    const char *dataset;
} bd_meta_preset;
bd_status bd_meta_preset_find(const char *name, const bd_meta_preset **out);

/* Writes pp as the bitdown.preprocess.* keys. */
bd_status bd_model_set_preprocess(bd_graph *g, const bd_preprocess *pp);
/* Writes the class names (n, one per line), after checking them against
 * the model's declared output [N, classes] where it is static; the message
 * names `what` (the file) and both counts. */
bd_status bd_model_set_class_names(bd_graph *g, char *const *names, int n, const char *what);

#endif
