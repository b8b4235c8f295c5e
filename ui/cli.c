#include "cli.h"

#include <errno.h>
#include <malloc.h>
#include <getopt.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "compressed.h"
#include "dist.h"
#include "lazy_weights.h"
#include "model_meta.h"
#include "progress_bar.h"
#include "report.h"
#include "size.h"
#include "workspace.h"

int cli_report(bd_status s)
{
    const char *msg = bd_error_message();
    fprintf(cli_err(), "bitdown: %s%s\n", cli_rank_prefix(), msg[0] ? msg : bd_status_name(s));
    return CLI_FAIL;
}

int cli_usage_error(const char *cmd, const char *fmt, ...)
{
    va_list ap;
    FILE *f = cli_err();
    fprintf(f, "bitdown %s: ", cmd);
    va_start(ap, fmt);
    vfprintf(f, fmt, ap);
    va_end(ap);
    fprintf(f, "\n(see 'bitdown %s --help')\n", cmd);
    return CLI_USAGE;
}

int cli_bad_option(const char *cmd, char **argv)
{
    return cli_usage_error(cmd, "option '%s' is unknown or lacks its value", argv[optind - 1]);
}

int cli_parse_int(const char *cmd, const char *opt, const char *s, long min, long max, long *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < min || v > max)
        return cli_usage_error(cmd, "%s wants a whole number from %ld to %ld, not '%s'", opt, min,
                               max, s);
    *out = v;
    return CLI_OK;
}

int cli_parse_floats(const char *cmd, const char *opt, const char *s, float *out, int max, int *n)
{
    *n = 0;
    const char *p = s;
    while (*p) {
        char *end;
        errno = 0;
        float v = strtof(p, &end);
        if (errno || end == p || (*end && *end != ',') || *n == max)
            return cli_usage_error(cmd, "%s wants up to %d comma-separated numbers, not '%s'", opt,
                                   max, s);
        out[(*n)++] = v;
        p = *end ? end + 1 : end;
    }
    if (*n == 0)
        return cli_usage_error(cmd, "%s wants a number", opt);
    return CLI_OK;
}

int cli_preprocess_option(cli_preprocess *cp, int c, const char *arg)
{
    switch (c) {
    case 1001: cp->resize = arg; return 1;
    case 1002: cp->crop = arg; return 1;
    case 1003: cp->mean = arg; return 1;
    case 1004: cp->std = arg; return 1;
    case 1005: cp->gray = 1; return 1;
    case 1006: cp->rgb = 1; return 1;
    default: return 0;
    }
}

int cli_preprocess_given(const cli_preprocess *cp)
{
    return cp->resize || cp->crop || cp->mean || cp->std || cp->gray || cp->rgb;
}

const char *cli_shell_word(const char *s, char *buf, size_t cap)
{
    if (s[0] && strspn(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
                          "_-+=.,:/@%") == strlen(s)) {
        snprintf(buf, cap, "%s", s);
        return buf;
    }
    size_t at = 0;
    buf[at++] = '\'';
    for (; *s && at + 5 < cap; s++) {
        if (*s == '\'') { /* close, an escaped quote, open again */
            memcpy(buf + at, "'\\''", 4);
            at += 4;
        } else {
            buf[at++] = *s;
        }
    }
    buf[at++] = '\'';
    buf[at] = '\0';
    return buf;
}

const char *cli_preprocess_flags(const cli_preprocess *cp, char *buf, size_t cap)
{
    const char *const flags[] = {"--resize", "--crop", "--mean", "--std"};
    const char *const values[] = {cp->resize, cp->crop, cp->mean, cp->std};
    size_t at = 0;
    buf[0] = '\0';
    for (int i = 0; i < 4; i++) {
        char word[256];
        if (values[i] && at < cap)
            at += (size_t)snprintf(buf + at, cap - at, " %s %s", flags[i],
                                   cli_shell_word(values[i], word, sizeof word));
    }
    if ((cp->gray || cp->rgb) && at < cap)
        snprintf(buf + at, cap - at, " %s", cp->gray ? "--gray" : "--rgb");
    return buf;
}

static int per_channel(const char *cmd, const char *opt, const char *s, float *dst, int *n)
{
    float v[3];
    if (cli_parse_floats(cmd, opt, s, v, 3, n) != CLI_OK)
        return CLI_USAGE;
    if (*n == 2)
        return cli_usage_error(cmd, "%s wants one value or three", opt);
    for (int c = 0; c < 3; c++)
        dst[c] = v[*n == 1 ? 0 : c];
    return CLI_OK;
}

int cli_preprocess_resolve(const char *cmd, const cli_preprocess *cp, const bd_graph *g,
                           bd_preprocess *pp)
{
    bd_status s = bd_model_preprocess(g, pp);
    if (s != BD_OK)
        return cli_report(s);
    long v;
    int nmean = 1, nstd = 1, model_channels = pp->channels;
    if (cp->resize) {
        if (cli_parse_int(cmd, "--resize", cp->resize, 0, 65536, &v) != CLI_OK)
            return CLI_USAGE;
        pp->resize = (int)v;
    }
    if (cp->crop) {
        if (cli_parse_int(cmd, "--crop", cp->crop, 0, 65536, &v) != CLI_OK)
            return CLI_USAGE;
        pp->crop = (int)v;
    }
    if (cp->mean && per_channel(cmd, "--mean", cp->mean, pp->mean, &nmean) != CLI_OK)
        return CLI_USAGE;
    if (cp->std && per_channel(cmd, "--std", cp->std, pp->std, &nstd) != CLI_OK)
        return CLI_USAGE;
    for (int c = 0; c < 3; c++)
        if (pp->std[c] == 0.0f)
            return cli_usage_error(cmd, "a standard deviation of 0 would divide by zero");
    if (cp->gray && cp->rgb)
        return cli_usage_error(cmd, "--gray and --rgb exclude each other");
    if (cp->gray)
        pp->channels = 1;
    if (cp->rgb)
        pp->channels = 3;
    if ((nmean > 1 || nstd > 1) && model_channels == 1)
        return cli_usage_error(cmd, "--%s has %d values, but the model's input has 1 channel",
                               nmean > 1 ? "mean" : "std", nmean > 1 ? nmean : nstd);
    /* A plain PyTorch export carries no preprocessing: its inputs would only
     * be scaled to [0, 1], and every accuracy measured on them is wrong. */
    if (!bd_model_has_preprocess(g) && !cli_preprocess_given(cp))
        fprintf(stderr,
                "bitdown %s: WARNING: the model has no preprocessing metadata and no "
                "--resize/--crop/--mean/--std was given; images are only scaled to [0, 1], "
                "which is wrong for most exported models (see docs/metadata.md)\n",
                cmd);
    return CLI_OK;
}

int cli_preprocess_ws(const char *cmd, const cli_preprocess *cp, bd_workspace *ws)
{
    bd_preprocess pp;
    int rc = cli_preprocess_resolve(cmd, cp, bd_ws_teacher(ws), &pp);
    if (rc != CLI_OK)
        return rc;
    bd_status s = bd_ws_set_preprocess(ws, &pp);
    return s == BD_OK ? CLI_OK : cli_report(s);
}

void cli_inference_memory(void) { mallopt(M_MMAP_THRESHOLD, 32 << 20); }

/* While a lazy load decodes each layer through the file's own expression,
 * whose temporaries are dense (and an int layer's codes int64, 8 bytes a
 * weight), blocks from 1 MB up are mapped: each expression's temporaries
 * then go back to the system when freed, instead of leaving holes in the
 * heap under the packed codes kept after them. ResNet-18 in int8 held
 * 102 MB once loaded, 56 more than in PQ, 79 MB with this. */
static void lazy_load_memory(void) { mallopt(M_MMAP_THRESHOLD, 1 << 20); }

bd_status cli_load_model(const char *path, bd_graph **g, int describe, bd_lazy_weights **lw)
{
    bd_qlayer *q;
    int n;
    if (lw)
        *lw = NULL;
    /* a lazy load never holds every dense weight; a file it cannot take
     * loads decoded */
    if (lw)
        lazy_load_memory();
    bd_status ls = lw ? bd_model_load_lazy(path, g, &q, &n) : BD_EUNSUPPORTED;
    if (ls == BD_EUNSUPPORTED)
        ls = bd_model_load(path, g, &q, &n);
    BD_TRY(ls);
    bd_layer *layers = NULL;
    const bd_qlayer **qp = calloc((size_t)n + 1, sizeof *qp);
    int quantized = 0, nlayers = 0;
    for (int i = 0; qp && i < n; i++)
        if (q[i].k > 0) {
            qp[i] = &q[i];
            quantized++;
        }
    bd_status s = qp ? BD_OK : bd_fail(BD_ENOMEM, "out of memory");
    if (s == BD_OK && quantized)
        s = bd_layers_find(*g, &layers, &nlayers);
    if (s == BD_OK && describe && quantized) {
        bd_model_size size;
        bd_model_size_compute(*g, layers, nlayers, qp, &size);
        printf("compressed model: %d of %d layers quantized, %.4f MB (fp32 %.4f MB), ratio %.2fx\n",
               quantized, nlayers, bd_mb(size.compressed_bytes), bd_mb(size.fp32_bytes), size.ratio);
    }
    if (s == BD_OK && lw && quantized)
        s = bd_lazy_weights_new(*g, layers, q, n, lw);
    if (lw)
        cli_inference_memory();
    free(layers);
    free(qp);
    for (int i = 0; i < n; i++)
        bd_qlayer_free(&q[i]);
    free(q);
    if (s != BD_OK) {
        bd_graph_free(*g);
        *g = NULL;
    }
    return s;
}

static bd_workspace *attached;

static void cancel_attached(int sig)
{
    (void)sig;
    if (attached)
        bd_ws_cancel(attached);
}

void cli_ws_attach(bd_workspace *ws)
{
    bd_ws_on_progress(ws, cli_progress_bar(), NULL);
    attached = ws;
    if (bd_dist_size() == 1) /* as cli_progress_start: mpirun's Ctrl-C ends every rank */
        signal(SIGINT, cancel_attached);
}

void cli_ws_detach(void)
{
    signal(SIGINT, SIG_DFL);
    attached = NULL;
    cli_progress_clear();
}

void cli_print_accuracy(const char *who, const bd_accuracy *a, const char *when)
{
    printf("%-8s top1 %.2f%% top5 %.2f%% (%lld images)%s%s\n", who, a->top1, a->top5,
           (long long)a->n, when ? ", " : "", when ? when : "");
}

int cli_data_spec(const char *cmd, const bd_graph *g, const char *given, const char *split,
                  const char *option, char *buf, size_t cap, const char **spec)
{
    const char *dataset = bd_graph_meta(g, BD_META_DATASET);
    if (given) {
        *spec = given;
        return CLI_OK;
    }
    if (!dataset)
        return cli_usage_error(cmd, "%s is needed: the model does not name its dataset", option);
    snprintf(buf, cap, "%s:%s", dataset, split);
    *spec = buf;
    return CLI_OK;
}

int cli_quit_question(const bd_workspace *ws, int busy, char *buf, size_t cap)
{
    int trained = 0, unsaved = bd_ws_loaded(ws) ? bd_ws_unsaved(ws, &trained) : 0;
    const char *running = busy ? "work is running and " : "";
    if (unsaved)
        snprintf(buf, cap, "%s%d quantized layer%s not saved: quit without saving? (y/n)",
                 running, unsaved, unsaved == 1 ? " is" : "s are");
    else if (trained)
        snprintf(buf, cap, "%sthe trained weights are not saved: quit without saving? (y/n)",
                 running);
    else if (busy)
        snprintf(buf, cap, "work is running: cancel it and quit? (y/n)");
    else
        buf[0] = '\0';
    return buf[0] != '\0';
}

void cli_resumed_message(const bd_workspace *ws, const char *model, int resumed, char *buf,
                         size_t cap)
{
    if (resumed < 0) {
        snprintf(buf, cap, "no checkpoint of %s to resume; starting afresh", model);
        return;
    }
    int quantized = 0;
    for (int i = 0; i < bd_ws_nlayers(ws); i++)
        quantized += bd_ws_layer_at(ws, i)->state != BD_STATE_FLOAT;
    snprintf(buf, cap, "resumed %s from its checkpoint, %d layer%s quantized (%d restored, %d "
                       "finished now)",
             model, quantized, quantized == 1 ? "" : "s", quantized - resumed, resumed);
}

void cli_print_written(const bd_workspace *ws, const char *path, int decoded)
{
    if (bd_dist_rank() != 0)
        return;
    bd_disk_size disk;
    bd_model_size payload;
    bd_ws_last_saved(ws, &disk);
    bd_ws_size(ws, &payload);
    char sizes[256];
    printf("wrote %s%s: %s\n", path, decoded ? " (decoded, dense fp32)" : "",
           bd_disk_size_str(&disk, decoded ? NULL : &payload, sizes, sizeof sizes));
}

bd_status cli_write_report(const bd_workspace *ws, const char *path, const bd_accuracy *t,
                           const bd_accuracy *st, const char *written)
{
    if (bd_dist_rank() != 0) /* rank 0's model is every rank's */
        return BD_OK;
    struct stat sb;
    int64_t file_bytes = stat(written, &sb) == 0 ? (int64_t)sb.st_size : 0;
    int n = bd_ws_nlayers(ws);
    bd_layer *ls = malloc((size_t)n * sizeof *ls + 1);
    const bd_qlayer **qp = calloc((size_t)n + 1, sizeof *qp);
    bd_status s = ls && qp ? BD_OK : bd_fail(BD_ENOMEM, "out of memory");
    for (int i = 0; s == BD_OK && i < n; i++) {
        const bd_ws_layer *l = bd_ws_layer_at(ws, i);
        ls[i] = l->layer;
        qp[i] = l->state == BD_STATE_FLOAT ? NULL : &l->q;
    }
    bd_model_size size;
    bd_ws_size(ws, &size);
    bd_report r = {bd_ws_student(ws), ls, n, qp, &size, t, st, file_bytes};
    if (s == BD_OK)
        s = bd_report_write(&r, path);
    free(ls);
    free(qp);
    return s;
}

void cli_table_longopts(const bd_opt_op *op, int base, struct option *opts, char (*names)[48],
                        int *n, int max)
{
    const bd_opt *o;
    for (int i = 0; (o = bd_opt_op_at(op, i, NULL)) && *n < max - 1; i++) {
        bd_opt_cli_name(o, names[*n], sizeof names[*n]);
        opts[*n] = (struct option){names[*n] + 2,
                                   o->type == BD_OPT_FLAG ? no_argument : required_argument, 0,
                                   base + i};
        ++*n;
    }
    opts[*n] = (struct option){0, 0, 0, 0};
}

const bd_opt *cli_table_entry(const bd_opt_op *op, int base, int c, const char *arg,
                              const char **value)
{
    const bd_opt *o = c >= base ? bd_opt_op_at(op, c - base, NULL) : NULL;
    if (o)
        *value = o->type == BD_OPT_FLAG ? "1" : arg;
    return o;
}

int cli_table_set(const char *cmd, const bd_opt_op *op, void *opts, const bd_opt *o,
                  const char *value)
{
    if (bd_opt_op_set(op, opts, cmd, o->key, value) == BD_OK)
        return CLI_OK;
    /* "cmd: key must lie in ...": the key as the command line spells it */
    const char *msg = bd_error_message();
    size_t cmdlen = strlen(cmd), len = strlen(o->key);
    if (strncmp(msg, cmd, cmdlen) == 0 && strncmp(msg + cmdlen, ": ", 2) == 0)
        msg += cmdlen + 2;
    char name[48];
    bd_opt_cli_name(o, name, sizeof name);
    if (strncmp(msg, o->key, len) == 0 && msg[len] == ' ')
        return cli_usage_error(cmd, "%s%s", name, msg + len);
    return cli_usage_error(cmd, "%s", msg); /* a parser's own, which names what it parses */
}

int cli_bad_table_option(const char *cmd, char **argv, const struct option *opts)
{
    char word[128];
    snprintf(word, sizeof word, "%s", argv[optind - 1]);
    word[strcspn(word, "=")] = '\0';
    /* getopt_long tells a known option that lacks its value by optopt */
    for (int i = 0; optopt && opts[i].name; i++)
        if (opts[i].val == optopt && opts[i].has_arg == required_argument)
            return cli_usage_error(cmd, "option '%s' needs a value", word);
    char list[4096] = "";
    int n = 0;
    while (opts[n].name)
        n++;
    for (int i = 0; i < n; i++) {
        size_t used = strlen(list);
        snprintf(list + used, sizeof list - used, "%s--%s",
                 i == 0 ? "" : i < n - 1 ? ", " : " or ", opts[i].name);
    }
    return cli_usage_error(cmd, "unknown option '%s' (it takes %s)", word, list);
}

void cli_print_epoch(const char *phase, const bd_training_epoch *e, int epochs)
{
    cli_progress_clear();
    printf("%sepoch %d/%d: loss %.4f, train top1 %.2f%%", phase, e->epoch, epochs, e->loss,
           e->train_top1);
    if (e->top1 >= 0)
        printf(", eval top1 %.2f%% top5 %.2f%%", e->top1, e->top5);
    if (e->quant_top1 >= 0)
        printf(", quantized top1 %.2f%%", e->quant_top1);
    printf(", lr %.4g, %.1f s\n", e->lr, e->seconds);
    fflush(stdout);
}
