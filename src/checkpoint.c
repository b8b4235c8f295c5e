/* Crash safety: the workspace's checkpoint and resuming from it.
 *
 * A checkpoint is what 'save' writes (the student as compressed ONNX, which
 * names its original model) plus, in metadata_props, what a session holds
 * besides the model: the plan, the data, the settings and a quantization in
 * progress. Loading it with bd_ws_resume gives the session back; a
 * quantization it caught midway goes on from the last finished layer with
 * the same seed, calibration images and options, so it ends where an
 * uninterrupted run would have. */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "dist.h"
#include "onnx_io.h"
#include "text.h"
#include "workspace_internal.h"

#define KEY_MODEL "bitdown.checkpoint.model"
#define KEY_PLAN "bitdown.checkpoint.plan"
#define KEY_DATA "bitdown.checkpoint.data"
#define KEY_SETTINGS "bitdown.checkpoint.settings"
#define KEY_PENDING "bitdown.checkpoint.pending"

static const char *const keys[] = {KEY_MODEL, KEY_PLAN, KEY_DATA, KEY_SETTINGS, KEY_PENDING};
enum { NKEYS = sizeof keys / sizeof keys[0] };

bd_status bd_ws_checkpoint(bd_workspace *ws, const char *path)
{
    char *copy = NULL;
    if (path && !(copy = bd_strdup(path)))
        return bd_fail(BD_ENOMEM, "out of memory");
    free(ws->checkpoint);
    ws->checkpoint = copy;
    bd_ws_checkpoint_write(ws, NULL);
    return BD_OK;
}

const char *bd_ws_checkpoint_file(const bd_workspace *ws) { return ws->checkpoint; }

static bd_status make_dirs(const char *dir)
{
    char buf[PATH_MAX];
    snprintf(buf, sizeof buf, "%s", dir);
    for (char *p = buf + 1;; p++) {
        if (*p != '/' && *p != '\0')
            continue;
        char c = *p;
        *p = '\0';
        if (mkdir(buf, 0700) != 0 && errno != EEXIST)
            return bd_fail(BD_EIO, "cannot create %s: %s", buf, strerror(errno));
        *p = c;
        if (!c)
            return BD_OK;
    }
}

bd_status bd_ws_default_checkpoint(const char *model, char *buf, size_t cap)
{
    char dir[PATH_MAX], real[PATH_MAX];
    const char *env = getenv("BITDOWN_STATE_DIR"), *xdg = getenv("XDG_STATE_HOME"),
               *home = getenv("HOME");
    if (env && env[0])
        snprintf(dir, sizeof dir, "%s", env);
    else if (xdg && xdg[0])
        snprintf(dir, sizeof dir, "%s/bitdown", xdg);
    else if (home && home[0])
        snprintf(dir, sizeof dir, "%s/.local/state/bitdown", home);
    else
        return bd_fail(BD_EINVAL, "no place for checkpoints: set BITDOWN_STATE_DIR or HOME");
    if (!realpath(model, real))
        return bd_fail(BD_EIO, "%s: %s", model, strerror(errno));
    BD_TRY(make_dirs(dir));
    uint64_t h = 1469598103934665603ull; /* FNV-1a: one model, one checkpoint */
    for (const char *p = real; *p; p++)
        h = (h ^ (unsigned char)*p) * 1099511628211ull;
    const char *base = strrchr(real, '/') ? strrchr(real, '/') + 1 : real;
    if (snprintf(buf, cap, "%s/%s-%016llx.checkpoint.onnx", dir, base, (unsigned long long)h) >=
        (int)cap)
        return bd_fail(BD_EINVAL, "checkpoint path too long");
    return BD_OK;
}

/* ---- writing -------------------------------------------------------------------- */

static void describe(const bd_workspace *ws, const bd_ws_pending *p, bd_strbuf *text[NKEYS])
{
    char real[PATH_MAX];
    bd_strbuf_add(text[0], "%s", realpath(ws->path, real) ? real : ws->path);
    for (int i = 0; i < ws->nlayers; i++) {
        const bd_ws_layer *l = &ws->layers[i];
        bd_strbuf_add(text[1], "%s %d %d %d %d %d %d %d %d\n", l->layer.name, l->d, l->k,
                      (int)l->objective, l->quantize, (int)l->format, l->ints.bits,
                      l->ints.per_channel, l->ints.symmetric);
    }
    for (int k = 0; k < 2; k++)
        if (ws->spec[k])
            bd_strbuf_add(text[2], "%d\t%lld\t%s\n", k, (long long)ws->n[k], ws->spec[k]);
    bd_strbuf_add(text[3], "seed=%llu batch=%d compare=%d restarts=%d tol=%.17g",
                  (unsigned long long)ws->seed, ws->batch, ws->compare, ws->restarts, ws->tol);
    if (!p)
        return;
    const bd_finetune_options *t = p->tune;
    bd_strbuf_add(text[4], "iters=%d done=%d tune=%d", p->iters, p->done, t ? t->iters : 0);
    if (t)
        bd_strbuf_add(text[4], " batch=%d lr=%.9g momentum=%.9g wd=%.9g step=%d gamma=%.9g "
                      "loss=%d bn=%d bias=%d seed=%llu",
                      t->batch, t->lr, t->momentum, t->wd, t->step_every, t->gamma, (int)t->loss,
                      t->bn_train, t->tune_bias, (unsigned long long)t->seed);
    bd_strbuf_add(text[4], "\n");
    for (int j = 0; j < p->n; j++)
        bd_strbuf_add(text[4], "%s\n", ws->layers[p->idx[j]].layer.name);
}

void bd_ws_checkpoint_write(bd_workspace *ws, const bd_ws_pending *pending)
{
    if (!ws->checkpoint || !ws->student || bd_dist_rank() != 0) /* rank 0's is every rank's */
        return;
    bd_strbuf b[NKEYS] = {{0}};
    bd_strbuf *text[NKEYS];
    for (int i = 0; i < NKEYS; i++)
        text[i] = &b[i];
    bd_graph *out = NULL;
    bd_c_numeric loc;
    bd_status s = bd_c_numeric_enter(&loc);
    if (s == BD_OK) {
        describe(ws, pending, text);
        bd_c_numeric_leave(&loc);
        s = bd_ws_export(ws, &out);
    }
    for (int i = 0; s == BD_OK && i < NKEYS; i++)
        s = b[i].oom ? bd_fail(BD_ENOMEM, "out of memory")
                     : bd_graph_set_meta(out, keys[i], b[i].s ? b[i].s : "");
    if (s == BD_OK)
        s = bd_onnx_save(out, ws->checkpoint);
    if (s != BD_OK && ws->progress_fn)
        ws->progress_fn(ws->progress_user, "checkpoint", 0, 0, bd_error_message(), 0);
    for (int i = 0; i < NKEYS; i++)
        bd_strbuf_free(&b[i]);
    bd_graph_free(out);
}

/* ---- resuming ---------------------------------------------------------------------- */

static bd_status bad(const char *key, const char *what)
{
    return bd_fail(BD_EFORMAT, "checkpoint metadata %s: %s", key, what);
}

static bd_status restore_plan(bd_workspace *ws, const char *text)
{
    char name[BD_LAYER_NAME_MAX];
    for (const char *p = text; *p;) {
        int d, k, objective, quantize, used = 0;
        /* the int fields came later: a line without them planned PQ */
        int format = BD_FMT_PQ, bits = 8, per_channel = 1, symmetric = 0;
        int got = sscanf(p, "%127s %d %d %d %d %d %d %d %d%n", name, &d, &k, &objective, &quantize,
                         &format, &bits, &per_channel, &symmetric, &used);
        if (got == 5)
            sscanf(p, "%*s %*d %*d %*d %*d%n", &used);
        if ((got != 5 && got != 9) || (p[used] != '\n' && p[used] != '\0'))
            return bad(KEY_PLAN, "a line is not 'name d k objective quantize [format bits "
                                 "per_channel symmetric]'");
        p += used + (p[used] == '\n');
        int i = bd_ws_layer_index(ws, name);
        if (i < 0)
            return bad(KEY_PLAN, "it names a layer the model does not have");
        bd_ws_layer *l = &ws->layers[i];
        bd_int_spec ints = {bits, per_channel != 0, symmetric != 0};
        if (objective < 0 || objective >= BD_OBJ_COUNT)
            return bad(KEY_PLAN, "an objective is out of range");
        if ((format != BD_FMT_PQ && format != BD_FMT_INT) ||
            bd_int_spec_check(&l->layer, &ints) != BD_OK)
            return bad(KEY_PLAN, "a format or its bits are out of range");
        l->d = d;
        l->k = k;
        l->objective = (bd_objective)objective;
        l->quantize = quantize != 0;
        l->format = (bd_format)format;
        l->ints = ints;
    }
    return BD_OK;
}

static bd_status restore_data(bd_workspace *ws, char *text)
{
    for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) {
        int kind;
        long long n;
        int used;
        if (sscanf(line, "%d\t%lld\t%n", &kind, &n, &used) != 2 || (kind != 0 && kind != 1))
            return bad(KEY_DATA, "a line is not 'kind n spec'");
        BD_TRY(bd_ws_data(ws, (bd_data_kind)kind, line + used, n));
    }
    return BD_OK;
}

static bd_status restore_settings(bd_workspace *ws, const char *text)
{
    unsigned long long seed;
    int batch, compare, restarts = BD_PQ_RESTARTS;
    double tol = BD_PQ_TOL;
    /* restarts and tol came later: a checkpoint without them had the defaults */
    int got = sscanf(text, "seed=%llu batch=%d compare=%d restarts=%d tol=%lf", &seed, &batch,
                     &compare, &restarts, &tol);
    if (got != 3 && got != 5)
        return bad(KEY_SETTINGS, "not 'seed=S batch=B compare=C restarts=R tol=X'");
    BD_TRY(bd_ws_search(ws, restarts, tol));
    bd_ws_seed(ws, seed);
    bd_ws_compare_objectives(ws, compare);
    return bd_ws_batch(ws, batch);
}

/* The rest of a quantization the checkpoint caught in progress. */
static bd_status finish_pending(bd_workspace *ws, char *text, int *resumed)
{
    char *nl = strchr(text, '\n');
    if (!nl)
        return bad(KEY_PENDING, "no list of layers");
    *nl = '\0';
    int iters, done, tune_iters;
    int used = 0;
    if (sscanf(text, "iters=%d done=%d tune=%d%n", &iters, &done, &tune_iters, &used) != 3)
        return bad(KEY_PENDING, "not 'iters=N done=D tune=T ...'");
    bd_finetune_options tune = {.iters = tune_iters};
    int loss = 0;
    unsigned long long tseed = 0;
    if (tune_iters > 0 &&
        sscanf(text + used, " batch=%d lr=%g momentum=%g wd=%g step=%d gamma=%g loss=%d bn=%d "
                            "bias=%d seed=%llu",
               &tune.batch, &tune.lr, &tune.momentum, &tune.wd, &tune.step_every, &tune.gamma,
               &loss, &tune.bn_train, &tune.tune_bias, &tseed) != 10)
        return bad(KEY_PENDING, "the fine-tuning options do not parse");
    tune.loss = loss ? BD_LOSS_CE : BD_LOSS_KL;
    tune.seed = tseed;
    int *idx = malloc((size_t)ws->nlayers * sizeof *idx + 1), n = 0;
    if (!idx)
        return bd_fail(BD_ENOMEM, "out of memory");
    bd_status s = BD_OK;
    for (char *line = strtok(nl + 1, "\n"); s == BD_OK && line; line = strtok(NULL, "\n")) {
        int i = bd_ws_layer_index(ws, line);
        if (i < 0 || n == ws->nlayers)
            s = bad(KEY_PENDING, "it names a layer the model does not have");
        else
            idx[n++] = i;
    }
    if (s == BD_OK && (done < 0 || done > n))
        s = bad(KEY_PENDING, "more layers done than listed");
    if (s == BD_OK && done < n) {
        s = bd_ws_quantize_list(ws, idx + done, n - done, "quantize (resumed)", iters,
                                tune_iters > 0 ? &tune : NULL);
        *resumed = n - done;
    }
    free(idx);
    return s;
}

void bd_ws_autosave(bd_workspace *ws, int on) { ws->autosave = on != 0; }

bd_status bd_ws_open(bd_workspace *ws, const char *model, int resume, int *resumed)
{
    char ckpt[PATH_MAX];
    struct stat st;
    *resumed = -1;
    if (resume && bd_ws_default_checkpoint(model, ckpt, sizeof ckpt) == BD_OK &&
        stat(ckpt, &st) == 0)
        return bd_ws_resume(ws, ckpt, resumed);
    return bd_ws_load(ws, model);
}

bd_status bd_ws_resume(bd_workspace *ws, const char *checkpoint, int *resumed)
{
    *resumed = 0;
    int autosave = ws->autosave; /* the checkpoint is the place, not its default */
    ws->autosave = 0;
    bd_status loaded = bd_ws_load(ws, checkpoint);
    ws->autosave = autosave;
    BD_TRY(loaded);
    /* what the checkpoint says besides the model, taken off the student so a
     * later save does not carry it */
    char *text[NKEYS] = {NULL};
    bd_status s = BD_OK;
    for (int i = 0; i < NKEYS && s == BD_OK; i++) {
        const char *v = bd_graph_meta(ws->student, keys[i]);
        if (!v && i != 4)
            s = bad(keys[i], "missing: this is not a bitdown checkpoint");
        else if (v && !(text[i] = bd_strdup(v)))
            s = bd_fail(BD_ENOMEM, "out of memory");
    }
    for (int i = 0; s == BD_OK && i < NKEYS; i++)
        bd_graph_del_meta(ws->student, keys[i]);
    char *model = s == BD_OK ? bd_strdup(text[0]) : NULL;
    if (s == BD_OK && !model)
        s = bd_fail(BD_ENOMEM, "out of memory");
    if (s == BD_OK) {
        free(ws->path);
        ws->path = model;
        s = restore_plan(ws, text[1]);
    }
    if (s == BD_OK)
        s = restore_data(ws, text[2]);
    if (s == BD_OK)
        s = restore_settings(ws, text[3]);
    if (s == BD_OK)
        s = bd_ws_checkpoint(ws, checkpoint);
    if (s == BD_OK && text[4] && text[4][0])
        s = finish_pending(ws, text[4], resumed);
    for (int i = 0; i < NKEYS; i++)
        free(text[i]);
    if (s != BD_OK)
        bd_error_context(s, "%s", checkpoint);
    return s;
}
