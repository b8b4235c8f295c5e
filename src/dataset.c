/* Datasets: the spec forms documented in data.h, sample access, batching. */
#include "data.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include "rng.h"

#define FMNIST_DIR "/usr/share/datasets/fashion-mnist"

/* Fashion-MNIST's published label names (Xiao, Rasul and Vollgraf, 2017). */
static const char *const fmnist_names[] = {"T-shirt/top", "Trouser", "Pullover", "Dress",
                                           "Coat",        "Sandal",  "Shirt",    "Sneaker",
                                           "Bag",         "Ankle boot"};

struct bd_dataset {
    char *spec;
    bd_preprocess pp;
    int64_t count, labels_cap, paths_cap;
    int classes;
    int *labels;
    /* IDX: every image in one [n, rows, cols] tensor, read from images_path */
    bd_tensor *images;
    char *images_path;
    /* folders and lists: one file per sample */
    char **paths;
    int nnames;
    char **class_names;
};

/* arr, which has room for *cap items of elem bytes, grown to hold need; NULL
 * (arr still valid) when memory runs out. */
static void *grow(void *arr, size_t elem, int64_t need, int64_t *cap)
{
    if (need <= *cap)
        return arr;
    int64_t n = *cap ? *cap * 2 : 64;
    if (n < need)
        n = need;
    if ((uint64_t)n > bd_tensor_limit() / elem)
        return NULL;
    void *p = realloc(arr, (size_t)n * elem);
    if (p)
        *cap = n;
    return p;
}

static char *join_path(const char *dir, size_t dir_len, const char *name)
{
    size_t n = dir_len + strlen(name) + 2;
    char *p = malloc(n);
    if (p)
        snprintf(p, n, "%.*s/%s", (int)dir_len, dir, name);
    return p;
}

/* Takes ownership of path. */
static bd_status add_sample(bd_dataset *d, char *path, int label)
{
    char **paths = path ? grow(d->paths, sizeof *paths, d->count + 1, &d->paths_cap) : NULL;
    if (paths)
        d->paths = paths;
    int *labels = paths ? grow(d->labels, sizeof *labels, d->count + 1, &d->labels_cap) : NULL;
    if (!labels) {
        free(path);
        return bd_fail(BD_ENOMEM, "out of memory indexing sample %" PRId64, d->count + 1);
    }
    d->labels = labels;
    d->paths[d->count] = path;
    d->labels[d->count++] = label;
    if (label >= d->classes)
        d->classes = label + 1;
    return BD_OK;
}

static bd_status set_class_names(bd_dataset *d, const char *const *names, int n)
{
    d->class_names = calloc((size_t)n, sizeof *d->class_names);
    if (!d->class_names)
        return bd_fail(BD_ENOMEM, "out of memory");
    d->nnames = n;
    for (int i = 0; i < n; i++)
        if (!(d->class_names[i] = strdup(names[i])))
            return bd_fail(BD_ENOMEM, "out of memory");
    return BD_OK;
}

/* ---- idx: and fmnist: ---- */

static bd_status open_idx(bd_dataset *d, const char *images, const char *labels)
{
    bd_tensor *lab;
    BD_TRY(bd_idx_read(images, 3, &d->images));
    if (!(d->images_path = strdup(images)))
        return bd_fail(BD_ENOMEM, "out of memory");
    const int64_t *dims = d->images->dims;
    if (dims[0] == 0)
        return bd_fail(BD_EFORMAT, "%s: holds no images", images);
    if (dims[1] == 0 || dims[2] == 0 || dims[1] > INT32_MAX || dims[2] > INT32_MAX)
        return bd_fail(BD_EFORMAT, "%s: images of %" PRId64 " x %" PRId64 " pixels", images,
                       dims[2], dims[1]);
    BD_TRY(bd_idx_read(labels, 1, &lab));
    bd_status s = BD_OK;
    if (lab->dims[0] != dims[0])
        s = bd_fail(BD_EFORMAT, "%s: %" PRId64 " labels, but %s has %" PRId64 " images", labels,
                    lab->dims[0], images, dims[0]);
    if (s == BD_OK && !(d->labels = malloc((size_t)dims[0] * sizeof *d->labels)))
        s = bd_fail(BD_ENOMEM, "%s: out of memory", labels);
    if (s == BD_OK) {
        const uint8_t *l = lab->data;
        d->count = dims[0];
        for (int64_t i = 0; i < d->count; i++) {
            d->labels[i] = l[i];
            if (l[i] >= d->classes)
                d->classes = l[i] + 1;
        }
    }
    bd_tensor_free(lab);
    return s;
}

static bd_status open_fmnist(bd_dataset *d, const char *split)
{
    const char *prefix = strcmp(split, "train") == 0 ? "train"
                         : strcmp(split, "test") == 0 ? "t10k"
                                                      : NULL;
    if (!prefix)
        return bd_fail(BD_EINVAL, "dataset '%s': the Fashion-MNIST splits are train and test",
                       d->spec);
    char images[256], labels[256];
    snprintf(images, sizeof images, "%s/%s-images-idx3-ubyte.gz", FMNIST_DIR, prefix);
    snprintf(labels, sizeof labels, "%s/%s-labels-idx1-ubyte.gz", FMNIST_DIR, prefix);
    BD_TRY(open_idx(d, images, labels));
    return set_class_names(d, fmnist_names, (int)(sizeof fmnist_names / sizeof *fmnist_names));
}

static bd_status open_idx_spec(bd_dataset *d, const char *arg)
{
    const char *comma = strchr(arg, ',');
    if (!comma || comma == arg || !comma[1])
        return bd_fail(BD_EINVAL, "dataset '%s': expected idx:IMAGES,LABELS", d->spec);
    char *images = strndup(arg, (size_t)(comma - arg));
    if (!images)
        return bd_fail(BD_ENOMEM, "out of memory");
    bd_status s = open_idx(d, images, comma + 1);
    free(images);
    return s;
}

/* ---- dir: ---- */

static int compare_names(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static int is_image_name(const char *name)
{
    const char *dot = strrchr(name, '.');
    return dot && (strcasecmp(dot, ".jpg") == 0 || strcasecmp(dot, ".jpeg") == 0 ||
                   strcasecmp(dot, ".png") == 0);
}

static int is_subdir(const char *dir, const char *name)
{
    struct stat sb;
    char *p = join_path(dir, strlen(dir), name);
    int yes = p && stat(p, &sb) == 0 && S_ISDIR(sb.st_mode);
    free(p);
    return yes;
}

/* The entries of dir that are class folders (want_dirs) or image files,
 * sorted by strcmp; hidden entries are skipped. */
static bd_status list_dir(const char *dir, int want_dirs, char ***names, int64_t *n)
{
    DIR *dp = opendir(dir);
    if (!dp)
        return bd_fail(BD_EIO, "%s: %s", dir, strerror(errno));
    char **list = NULL;
    int64_t count = 0, cap = 0;
    bd_status s = BD_OK;
    struct dirent *e;
    while (s == BD_OK && (errno = 0, e = readdir(dp))) {
        if (e->d_name[0] == '.' ||
            (want_dirs ? !is_subdir(dir, e->d_name) : !is_image_name(e->d_name)))
            continue;
        char **grown = grow(list, sizeof *list, count + 1, &cap);
        if (grown)
            list = grown;
        char *name = grown ? strdup(e->d_name) : NULL;
        if (name)
            list[count++] = name;
        else
            s = bd_fail(BD_ENOMEM, "%s: out of memory listing", dir);
    }
    if (s == BD_OK && errno)
        s = bd_fail(BD_EIO, "%s: %s", dir, strerror(errno));
    closedir(dp);
    if (s != BD_OK) {
        for (int64_t i = 0; i < count; i++)
            free(list[i]);
        free(list);
        return s;
    }
    if (count)
        qsort(list, (size_t)count, sizeof *list, compare_names);
    *names = list;
    *n = count;
    return BD_OK;
}

static void free_names(char **names, int64_t n)
{
    if (!names)
        return;
    for (int64_t i = 0; i < n; i++)
        free(names[i]);
    free(names);
}

static bd_status add_class_dir(bd_dataset *d, const char *dir, int label)
{
    char **files;
    int64_t n;
    BD_TRY(list_dir(dir, 0, &files, &n));
    bd_status s = n ? BD_OK : bd_fail(BD_EFORMAT, "%s: no .jpg, .jpeg or .png files", dir);
    for (int64_t i = 0; i < n && s == BD_OK; i++)
        s = add_sample(d, join_path(dir, strlen(dir), files[i]), label);
    free_names(files, n);
    return s;
}

static bd_status open_dir(bd_dataset *d, const char *path)
{
    char **classes;
    int64_t n;
    BD_TRY(list_dir(path, 1, &classes, &n));
    bd_status s = BD_OK;
    if (n == 0)
        s = bd_fail(BD_EFORMAT, "%s: no class subfolders", path);
    else if (n > BD_MAX_CLASSES)
        s = bd_fail(BD_EUNSUPPORTED, "%s: %" PRId64 " class subfolders (at most %d)", path, n,
                    BD_MAX_CLASSES);
    for (int64_t i = 0; i < n && s == BD_OK; i++) {
        char *sub = join_path(path, strlen(path), classes[i]);
        s = sub ? add_class_dir(d, sub, (int)i) : bd_fail(BD_ENOMEM, "out of memory");
        free(sub);
    }
    if (s == BD_OK)
        s = set_class_names(d, (const char *const *)classes, (int)n);
    free_names(classes, n);
    return s;
}

/* ---- list: ---- */

/* One "path label" line; the label is the last field, so paths may hold
 * spaces. Blank lines are skipped. base is FILE's folder (base_len 0: none). */
static bd_status parse_list_line(bd_dataset *d, const char *file, int64_t lineno, char *line,
                                 size_t base_len)
{
    char *end = line + strlen(line);
    while (end > line && isspace((unsigned char)end[-1]))
        *--end = '\0';
    while (isspace((unsigned char)*line))
        line++;
    if (!*line)
        return BD_OK;
    char *sp = end;
    while (sp > line && !isspace((unsigned char)sp[-1]))
        sp--;
    if (sp == line)
        return bd_fail(BD_EFORMAT, "%s:%" PRId64 ": '%s' has no label (expected 'path label')",
                       file, lineno, line);
    char *tail;
    errno = 0;
    long label = strtol(sp, &tail, 10);
    if (tail == sp || *tail)
        return bd_fail(BD_EFORMAT, "%s:%" PRId64 ": label '%s' is not an integer", file, lineno,
                       sp);
    if (errno || label < 0 || label >= BD_MAX_CLASSES)
        return bd_fail(BD_EFORMAT, "%s:%" PRId64 ": label %s is out of range [0, %d)", file,
                       lineno, sp, BD_MAX_CLASSES);
    char *name_end = sp;
    while (isspace((unsigned char)name_end[-1]))
        name_end--;
    *name_end = '\0';
    char *path = line[0] == '/' || base_len == 0 ? strdup(line) : join_path(file, base_len, line);
    return add_sample(d, path, (int)label);
}

static bd_status open_list(bd_dataset *d, const char *file)
{
    FILE *f = fopen(file, "r");
    if (!f)
        return bd_fail(BD_EIO, "%s: %s", file, strerror(errno));
    const char *slash = strrchr(file, '/');
    size_t base_len = slash ? (size_t)(slash - file) + (slash == file) : 0;
    char *line = NULL;
    size_t cap = 0;
    int64_t lineno = 0;
    bd_status s = BD_OK;
    while (s == BD_OK && getline(&line, &cap, f) >= 0)
        s = parse_list_line(d, file, ++lineno, line, base_len);
    if (s == BD_OK && ferror(f))
        s = bd_fail(BD_EIO, "%s: read error", file);
    if (s == BD_OK && d->count == 0)
        s = bd_fail(BD_EFORMAT, "%s: no samples", file);
    free(line);
    fclose(f);
    return s;
}

/* ---- the public interface ---- */

bd_status bd_dataset_open(bd_dataset **out, const char *spec, const bd_preprocess *pp)
{
    static const struct {
        const char *prefix;
        bd_status (*open)(bd_dataset *, const char *);
    } kinds[] = {{"fmnist:", open_fmnist}, {"idx:", open_idx_spec}, {"dir:", open_dir},
                 {"list:", open_list}};
    bd_dataset *d = calloc(1, sizeof *d);
    if (!d || !(d->spec = strdup(spec))) {
        free(d);
        return bd_fail(BD_ENOMEM, "out of memory");
    }
    if (pp)
        d->pp = *pp;
    else
        bd_preprocess_default(&d->pp);
    size_t k = 0;
    while (k < sizeof kinds / sizeof *kinds &&
           strncmp(spec, kinds[k].prefix, strlen(kinds[k].prefix)) != 0)
        k++;
    bd_status s = k < sizeof kinds / sizeof *kinds
                      ? kinds[k].open(d, spec + strlen(kinds[k].prefix))
                      : bd_fail(BD_EINVAL,
                                "dataset '%s': expected fmnist:train, fmnist:test, "
                                "idx:IMAGES,LABELS, dir:PATH or list:FILE",
                                spec);
    if (s != BD_OK) {
        bd_dataset_free(d);
        return s;
    }
    *out = d;
    return BD_OK;
}

void bd_dataset_free(bd_dataset *d)
{
    if (!d)
        return;
    free_names(d->paths, d->count);
    free_names(d->class_names, d->nnames);
    bd_tensor_free(d->images);
    free(d->images_path);
    free(d->labels);
    free(d->spec);
    free(d);
}

int64_t bd_dataset_count(const bd_dataset *d) { return d->count; }

int bd_dataset_classes(const bd_dataset *d) { return d->nnames ? d->nnames : d->classes; }

const char *bd_dataset_class_name(const bd_dataset *d, int i)
{
    return i >= 0 && i < d->nnames ? d->class_names[i] : NULL;
}

const char *bd_dataset_spec(const bd_dataset *d) { return d->spec; }

/* The file a sample comes from, for messages. */
static const char *sample_name(const bd_dataset *d, int64_t i, char *buf, size_t cap)
{
    if (d->paths)
        return d->paths[i];
    snprintf(buf, cap, "%s, image %" PRId64, d->images_path, i);
    return buf;
}

bd_status bd_dataset_image(const bd_dataset *d, int64_t i, bd_image *img)
{
    memset(img, 0, sizeof *img);
    if (i < 0 || i >= d->count)
        return bd_fail(BD_EINVAL, "dataset '%s': sample %" PRId64 " out of range (%" PRId64
                       " samples)",
                       d->spec, i, d->count);
    if (d->paths)
        return bd_image_load(d->paths[i], img);
    int h = (int)d->images->dims[1], w = (int)d->images->dims[2];
    char name[300];
    BD_TRY(bd_image_alloc(img, w, h, 1, sample_name(d, i, name, sizeof name)));
    memcpy(img->pixels, (const uint8_t *)d->images->data + (size_t)i * (size_t)w * (size_t)h,
           (size_t)w * (size_t)h);
    return BD_OK;
}

typedef struct sample {
    float *data;
    int c, h, w;
} sample;

static bd_status load_sample(const bd_dataset *d, int64_t i, sample *out)
{
    bd_image img;
    BD_TRY(bd_dataset_image(d, i, &img));
    char name[300];
    const char *what = sample_name(d, i, name, sizeof name);
    bd_preprocess_size(&d->pp, img.width, img.height, &out->w, &out->h);
    out->c = d->pp.channels;
    uint64_t n = (uint64_t)out->c * (uint64_t)out->h * (uint64_t)out->w;
    bd_status s = BD_OK;
    if (n > bd_tensor_limit() / sizeof *out->data)
        s = bd_fail(BD_ENOMEM, "%s: preprocessed to %d x %d, beyond the %zu MiB limit", what,
                    out->w, out->h, bd_tensor_limit() >> 20);
    else if (!(out->data = malloc((size_t)n * sizeof *out->data)))
        s = bd_fail(BD_ENOMEM, "%s: out of memory", what);
    else if ((s = bd_image_preprocess(&img, &d->pp, out->data)) != BD_OK)
        bd_error_context(s, "%s", what);
    bd_image_free(&img);
    return s;
}

bd_status bd_dataset_batch(const bd_dataset *d, const int64_t *idx, int n, bd_tensor **x,
                           int *labels)
{
    if (n < 1)
        return bd_fail(BD_EINVAL, "dataset '%s': batch of %d samples", d->spec, n);
    sample *samples = calloc((size_t)n, sizeof *samples);
    if (!samples)
        return bd_fail(BD_ENOMEM, "out of memory");
    /* The message of a failure is thread-local, so the worker that fails
     * copies it out; the lowest failing position wins, whatever the timing. */
    int first = n;
    bd_status first_status = BD_OK;
    char first_message[1024] = "";
#pragma omp parallel for schedule(dynamic) if (n > 1)
    for (int j = 0; j < n; j++) {
        bd_status s = load_sample(d, idx[j], &samples[j]);
        if (s != BD_OK) {
#pragma omp critical(bd_dataset_batch_failure)
            if (j < first) {
                first = j;
                first_status = s;
                snprintf(first_message, sizeof first_message, "%s", bd_error_message());
            }
        }
    }
    bd_status s = first < n ? bd_fail(first_status, "%s", first_message) : BD_OK;
    for (int j = 1; j < n && s == BD_OK; j++)
        if (samples[j].c != samples[0].c || samples[j].h != samples[0].h ||
            samples[j].w != samples[0].w) {
            char a[300], b[300];
            s = bd_fail(BD_EINVAL, "%s: preprocessed to %d x %d, but %s gave %d x %d in the same "
                        "batch (set a crop or resize size)",
                        sample_name(d, idx[j], a, sizeof a), samples[j].w, samples[j].h,
                        sample_name(d, idx[0], b, sizeof b), samples[0].w, samples[0].h);
        }
    int64_t dims[4] = {n, samples[0].c, samples[0].h, samples[0].w};
    if (s == BD_OK)
        s = bd_tensor_new_raw(x, BD_F32, 4, dims, "batch");
    if (s == BD_OK) {
        size_t per = (size_t)dims[1] * (size_t)dims[2] * (size_t)dims[3];
        for (int j = 0; j < n; j++) {
            memcpy((float *)(*x)->data + (size_t)j * per, samples[j].data, per * sizeof(float));
            if (labels)
                labels[j] = d->labels[idx[j]];
        }
    }
    for (int j = 0; j < n; j++)
        free(samples[j].data);
    free(samples);
    return s;
}

bd_status bd_dataset_get(const bd_dataset *d, int64_t i, bd_tensor **x, int *label)
{
    return bd_dataset_batch(d, &i, 1, x, label);
}

/* ---- shuffling ---- */

bd_status bd_permutation(int64_t n, uint64_t seed, int64_t **perm)
{
    if (n < 0 || (uint64_t)n > bd_tensor_limit() / sizeof **perm)
        return bd_fail(BD_EINVAL, "permutation of %" PRId64 " elements", n);
    int64_t *p = malloc((size_t)(n ? n : 1) * sizeof *p);
    if (!p)
        return bd_fail(BD_ENOMEM, "out of memory for a permutation of %" PRId64, n);
    for (int64_t i = 0; i < n; i++)
        p[i] = i;
    uint64_t state = seed;
    for (int64_t i = n - 1; i > 0; i--) {
        int64_t j = (int64_t)bd_rng_below(&state, (uint64_t)i + 1);
        int64_t t = p[i];
        p[i] = p[j];
        p[j] = t;
    }
    *perm = p;
    return BD_OK;
}
