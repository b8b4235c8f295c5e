/* Reading the bitdown.* metadata keys documented in model_meta.h. */
#include "model_meta.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <locale.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fileio.h"
#include "text.h"

/* Sizes beyond this are typing mistakes, not images. */
enum { MAX_SIDE = 1 << 16 };

/* Numbers in the metadata are written by Python, with a decimal point,
 * whatever locale the UI switched to for ncurses; so they are read in the C
 * locale. Returns the end of the number, or NULL if there is none. */
static const char *parse_double(const char *s, double *v)
{
    locale_t c = newlocale(LC_NUMERIC_MASK, "C", (locale_t)0);
    if (!c)
        return NULL;
    locale_t old = uselocale(c);
    char *end;
    errno = 0;
    *v = strtod(s, &end);
    int ok = end != s && errno == 0 && isfinite(*v);
    uselocale(old);
    freelocale(c);
    return ok ? end : NULL;
}

static const char *skip_space(const char *s)
{
    while (isspace((unsigned char)*s))
        s++;
    return s;
}

static bd_status bad_value(const char *what, const char *key, const char *value, const char *why)
{
    return bd_fail(BD_EFORMAT, "%s %s = '%s': %s", what, key, value, why);
}

static bd_status parse_size(const char *what, const char *key, const char *v, int *out)
{
    char *end;
    errno = 0;
    long n = strtol(v, &end, 10);
    if (end == v || *skip_space(end) || errno)
        return bad_value(what, key, v, "not a whole number");
    if (n < 0 || n > MAX_SIDE)
        return bad_value(what, key, v, "out of range");
    *out = (int)n;
    return BD_OK;
}

/* One value for every channel, or one per channel; std must be positive. */
static bd_status parse_floats(const char *what, const char *key, const char *v, int channels,
                              int positive, float *out)
{
    double vals[3];
    int n = 0;
    for (const char *p = v;;) {
        if (n == 3)
            return bad_value(what, key, v, "more than three values");
        p = parse_double(p, &vals[n]);
        if (!p)
            return bad_value(what, key, v, "not a comma-separated list of numbers");
        if (positive && !(vals[n] > 0))
            return bad_value(what, key, v, "must be positive");
        n++;
        p = skip_space(p);
        if (!*p)
            break;
        if (*p++ != ',')
            return bad_value(what, key, v, "not a comma-separated list of numbers");
    }
    if (n != 1 && n != channels)
        return bd_fail(BD_EFORMAT, "%s %s = '%s': %d values for %d channels", what, key, v, n,
                       channels);
    for (int c = 0; c < 3; c++)
        out[c] = (float)vals[n == 1 ? 0 : c];
    return BD_OK;
}

static bd_status parse_color(const char *what, const char *key, const char *v, int *channels)
{
    int c = strcmp(v, "gray") == 0 ? 1 : strcmp(v, "rgb") == 0 ? 3 : 0;
    if (!c)
        return bad_value(what, key, v, "expected gray or rgb");
    *channels = c;
    return BD_OK;
}

bd_status bd_preprocess_set(bd_preprocess *pp, const char *key, const char *value)
{
    static const char what[] = "preprocessing option";
    if (strcmp(key, "resize") == 0)
        return parse_size(what, key, value, &pp->resize);
    if (strcmp(key, "crop") == 0)
        return parse_size(what, key, value, &pp->crop);
    if (strcmp(key, "mean") == 0)
        return parse_floats(what, key, value, pp->channels, 0, pp->mean);
    if (strcmp(key, "std") == 0)
        return parse_floats(what, key, value, pp->channels, 1, pp->std);
    if (strcmp(key, "color") == 0)
        return parse_color(what, key, value, &pp->channels);
    return bd_fail(BD_EINVAL, "unknown preprocessing option '%s' (resize, crop, mean, std, color)",
                   key);
}

static bd_status meta_size(const bd_graph *g, const char *key, int *out)
{
    const char *v = bd_graph_meta(g, key);
    return v ? parse_size("model metadata", key, v, out) : BD_OK;
}

static bd_status meta_floats(const bd_graph *g, const char *key, int channels, int positive,
                             float *out)
{
    const char *v = bd_graph_meta(g, key);
    return v ? parse_floats("model metadata", key, v, channels, positive, out) : BD_OK;
}

int bd_model_has_preprocess(const bd_graph *g)
{
    static const char *const keys[] = {BD_META_COLOR, BD_META_RESIZE, BD_META_CROP, BD_META_MEAN,
                                       BD_META_STD};
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++)
        if (bd_graph_meta(g, keys[i]))
            return 1;
    return 0;
}

bd_status bd_model_preprocess(const bd_graph *g, bd_preprocess *pp)
{
    bd_preprocess_default(pp);
    int declared = 0;
    if (g->ninputs > 0) {
        const bd_value *in = &g->values[g->inputs[0]];
        if (in->ndim >= 2 && in->dims[1] > 0) {
            if (in->dims[1] != 1 && in->dims[1] != 3)
                return bd_fail(BD_EUNSUPPORTED,
                               "input '%s' has %" PRId64 " channels; images give 1 or 3",
                               in->name, in->dims[1]);
            pp->channels = declared = (int)in->dims[1];
        }
        if (in->ndim == 4 && in->dims[2] > 0 && in->dims[3] > 0) {
            if (in->dims[2] > MAX_SIDE || in->dims[3] > MAX_SIDE)
                return bd_fail(BD_EUNSUPPORTED, "input '%s' is %" PRId64 " x %" PRId64
                               " pixels, larger than %d",
                               in->name, in->dims[3], in->dims[2], MAX_SIDE);
            pp->out_h = (int)in->dims[2];
            pp->out_w = (int)in->dims[3];
        }
    }
    const char *color = bd_graph_meta(g, BD_META_COLOR);
    if (color) {
        int c;
        BD_TRY(parse_color("model metadata", BD_META_COLOR, color, &c));
        if (declared && c != declared)
            return bd_fail(BD_EFORMAT, "model metadata %s = '%s', but input '%s' has %d channels",
                           BD_META_COLOR, color, g->values[g->inputs[0]].name, declared);
        pp->channels = c;
    }
    BD_TRY(meta_size(g, BD_META_RESIZE, &pp->resize));
    BD_TRY(meta_size(g, BD_META_CROP, &pp->crop));
    BD_TRY(meta_floats(g, BD_META_MEAN, pp->channels, 0, pp->mean));
    BD_TRY(meta_floats(g, BD_META_STD, pp->channels, 1, pp->std));
    return BD_OK;
}

void bd_class_names_free(char **names, int n)
{
    if (!names)
        return;
    for (int i = 0; i < n; i++)
        free(names[i]);
    free(names);
}

/* One name per line. The newline ending the last line, and a CR before each
 * newline (files from Windows), belong to no name. */
bd_status bd_class_names_parse(const char *text, size_t len, const char *what, char ***names,
                               int *n)
{
    size_t lines = 0;
    for (size_t i = 0; i < len; i++)
        lines += text[i] == '\n';
    if (len && text[len - 1] != '\n')
        lines++;
    if (lines > BD_MAX_CLASSES)
        return bd_fail(BD_EFORMAT, "%s: %zu class names (at most %d)", what, lines,
                       BD_MAX_CLASSES);
    *names = NULL;
    *n = 0;
    if (!lines)
        return BD_OK;
    char **list = calloc(lines, sizeof *list);
    if (!list)
        return bd_fail(BD_ENOMEM, "out of memory");
    const char *p = text, *end = text + len;
    for (size_t i = 0; i < lines; i++) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *stop = nl ? nl : end;
        size_t k = (size_t)(stop - p);
        if (k && p[k - 1] == '\r')
            k--;
        if (!(list[i] = strndup(p, k))) {
            bd_class_names_free(list, (int)lines);
            return bd_fail(BD_ENOMEM, "out of memory");
        }
        p = nl ? nl + 1 : end;
    }
    *names = list;
    *n = (int)lines;
    return BD_OK;
}

bd_status bd_model_class_names(const bd_graph *g, char ***names, int *n)
{
    const char *v = bd_graph_meta(g, BD_META_CLASSES);
    *names = NULL;
    *n = 0;
    return v ? bd_class_names_parse(v, strlen(v), "model metadata " BD_META_CLASSES, names, n) : BD_OK;
}

bd_status bd_class_names_load(const char *path, char ***names, int *n)
{
    void *data;
    size_t len;
    *names = NULL;
    *n = 0;
    BD_TRY(bd_read_file(path, bd_tensor_limit(), &data, &len));
    bd_status s = bd_class_names_parse(data, len, path, names, n);
    free(data);
    if (s == BD_OK && *n == 0)
        s = bd_fail(BD_EFORMAT, "%s: no class names", path);
    return s;
}

/* ---- writing ---------------------------------------------------------------- */

#define IMAGENET_PP {.resize = 256, .crop = 224, .channels = 3, \
                     .mean = {0.485f, 0.456f, 0.406f}, .std = {0.229f, 0.224f, 0.225f}}
static const bd_meta_preset presets[] = {
    {"imagenet", IMAGENET_PP, NULL, NULL},
    {"fmnist", {.channels = 1, .mean = {0.2860f}, .std = {0.3530f}},
     "T-shirt/top\nTrouser\nPullover\nDress\nCoat\nSandal\nShirt\nSneaker\nBag\nAnkle boot",
     "fmnist"},
    {"mnist", {.channels = 1, .mean = {0.1307f}, .std = {0.3081f}},
     "0\n1\n2\n3\n4\n5\n6\n7\n8\n9", NULL},
    {"cifar10", {.channels = 3, .mean = {0.4914f, 0.4822f, 0.4465f}, .std = {0.2470f, 0.2435f, 0.2616f}},
     "airplane\nautomobile\nbird\ncat\ndeer\ndog\nfrog\nhorse\nship\ntruck", NULL},
};

bd_status bd_meta_preset_find(const char *name, const bd_meta_preset **out)
{
    char list[128] = "";
    for (size_t i = 0; i < sizeof presets / sizeof *presets; i++) {
        if (strcmp(name, presets[i].name) == 0) {
            *out = &presets[i];
            return BD_OK;
        }
        size_t used = strlen(list);
        snprintf(list + used, sizeof list - used, "%s%s", i ? ", " : "", presets[i].name);
    }
    return bd_fail(BD_EINVAL, "unknown preset '%s' (the presets are %s)", name, list);
}

/* "a" or "a,b,c", in the C locale, as parse_floats reads them back. */
static bd_status set_floats(bd_graph *g, const char *key, const float *v, int n)
{
    char buf[96] = "";
    bd_c_numeric loc;
    BD_TRY(bd_c_numeric_enter(&loc));
    for (int i = 0; i < n; i++) {
        size_t used = strlen(buf);
        snprintf(buf + used, sizeof buf - used, "%s%.9g", i ? "," : "", (double)v[i]);
    }
    bd_c_numeric_leave(&loc);
    return bd_graph_set_meta(g, key, buf);
}

bd_status bd_model_set_preprocess(bd_graph *g, const bd_preprocess *pp)
{
    char num[32];
    BD_TRY(bd_graph_set_meta(g, BD_META_COLOR, pp->channels == 3 ? "rgb" : "gray"));
    snprintf(num, sizeof num, "%d", pp->resize);
    BD_TRY(bd_graph_set_meta(g, BD_META_RESIZE, num));
    snprintf(num, sizeof num, "%d", pp->crop);
    BD_TRY(bd_graph_set_meta(g, BD_META_CROP, num));
    BD_TRY(set_floats(g, BD_META_MEAN, pp->mean, pp->channels));
    return set_floats(g, BD_META_STD, pp->std, pp->channels);
}

bd_status bd_model_set_class_names(bd_graph *g, char *const *names, int n, const char *what)
{
    if (g->noutputs > 0) {
        const bd_value *out = &g->values[g->outputs[0]];
        if (out->ndim == 2 && out->dims[1] > 0 && out->dims[1] != n)
            return bd_fail(BD_EINVAL, "%s has %d class names, but the model's output '%s' has %" PRId64
                           " classes", what, n, out->name, out->dims[1]);
    }
    bd_strbuf b = {0};
    for (int i = 0; i < n; i++)
        bd_strbuf_add(&b, "%s%s", i ? "\n" : "", names[i]);
    bd_status s = b.oom ? bd_fail(BD_ENOMEM, "out of memory for %d class names", n)
                        : bd_graph_set_meta(g, BD_META_CLASSES, b.s ? b.s : "");
    bd_strbuf_free(&b);
    return s;
}
