#include "workspace.h"
#include "workspace_internal.h"

#include <fnmatch.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "act_quant.h"
#include "compressed.h"
#include "device.h"
#include "dist.h"
#include "eval.h"
#include "exec.h"
#include "model_meta.h"
#include "onnx_io.h"
#include "plan.h"
#include "threads.h"

const char *bd_layer_state_name(bd_layer_state s)
{
    switch (s) {
    case BD_STATE_FLOAT: return "float";
    case BD_STATE_QUANTIZED: return "quantized";
    case BD_STATE_TUNED: return "tuned";
    }
    return "?";
}

bd_status bd_ws_new(bd_workspace **out)
{
    bd_workspace *ws = calloc(1, sizeof *ws);
    if (!ws)
        return bd_fail(BD_ENOMEM, "out of memory");
    pthread_mutex_init(&ws->mu, NULL);
    ws->threads = bd_threads_get();
    ws->batch = 64;
    ws->restarts = BD_PQ_RESTARTS;
    ws->tol = BD_PQ_TOL;
    ws->count[0] = ws->count[1] = -1;
    *out = ws;
    return BD_OK;
}

void bd_ws_lock(bd_workspace *ws) { pthread_mutex_lock(&ws->mu); }
void bd_ws_unlock(bd_workspace *ws) { pthread_mutex_unlock(&ws->mu); }

static void layer_clear(bd_ws_layer *l) { bd_qlayer_free(&l->q); }

/* A layer got a new or tuned codebook; the float parameters changed. */
static void new_version(bd_workspace *ws, bd_ws_layer *l) { l->version = ++ws->last_version; }
static void params_changed(bd_workspace *ws) { ws->params_version = ++ws->last_version; }

/* What the file just loaded or saved holds (call under the lock). */
static void mark_saved(bd_workspace *ws)
{
    uint64_t *v = realloc(ws->saved_versions, (size_t)ws->nlayers * sizeof *v + 1);
    if (!v) { /* nothing to compare with: every codebook counts as unsaved */
        free(ws->saved_versions);
        ws->saved_versions = NULL;
        return;
    }
    for (int i = 0; i < ws->nlayers; i++)
        v[i] = ws->layers[i].version;
    ws->saved_versions = v;
    ws->saved_params_version = ws->params_version;
}

int bd_ws_unsaved(const bd_workspace *ws, int *trained)
{
    int n = 0;
    for (int i = 0; i < ws->nlayers; i++)
        n += ws->layers[i].state != BD_STATE_FLOAT &&
             (!ws->saved_versions || ws->layers[i].version != ws->saved_versions[i]);
    if (trained)
        *trained = ws->params_version != ws->saved_params_version;
    return n;
}

static bd_status layer_copy(bd_ws_layer *dst, const bd_ws_layer *src)
{
    *dst = *src;
    memset(&dst->q, 0, sizeof dst->q);
    return src->q.k > 0 ? bd_qlayer_copy(&dst->q, &src->q) : BD_OK;
}

static void step_clear(undo_step *u)
{
    for (int i = 0; i < u->n; i++)
        layer_clear(&u->saved[i].layer);
    for (int i = 0; i < u->nt; i++)
        bd_tensor_free(u->tensors[i].copy);
    free(u->saved);
    free(u->tensors);
    bd_exec_free(u->teacher_ex);
    bd_graph_free(u->teacher);
    bd_exec_free(u->student_ex);
    bd_graph_free(u->student);
    free(u->original);
    bd_graph_free(u->source);
    free(u->teacher_path);
    memset(u, 0, sizeof *u);
}

static void history_clear(bd_workspace *ws)
{
    for (int i = 0; i < ws->nundo; i++)
        step_clear(&ws->undo[i]);
    ws->nundo = 0;
}

/* Everything that belongs to the loaded model (not the settings). */
typedef struct model_part {
    char *path;
    char *teacher_path;
    bd_graph *teacher, *student;
    bd_exec *teacher_ex, *student_ex;
    bd_ws_layer *layers;
    int nlayers;
    const bd_tensor **original;
    bd_preprocess pp;
    char **classes;
    int nclasses;
    char *spec[2];
    int64_t n[2];
    bd_graph *source;
} model_part;

static void model_part_free(model_part *m)
{
    free(m->path);
    free(m->teacher_path);
    bd_exec_free(m->teacher_ex);
    bd_exec_free(m->student_ex);
    bd_graph_free(m->teacher);
    bd_graph_free(m->student);
    for (int i = 0; i < m->nlayers; i++)
        layer_clear(&m->layers[i]);
    free(m->layers);
    free(m->original);
    bd_graph_free(m->source);
    bd_class_names_free(m->classes, m->nclasses);
    free(m->spec[0]);
    free(m->spec[1]);
    memset(m, 0, sizeof *m);
}

/* The model's executors on the GPU (they read its graphs). */
static void drop_device_execs(bd_workspace *ws)
{
    bd_dexec_free(ws->dev_teacher);
    bd_dexec_free(ws->dev_student);
    ws->dev_teacher = ws->dev_student = NULL;
    ws->device_cannot = 0;
}

static void drop_model(bd_workspace *ws)
{
    /* the calibration cache runs the student: it goes first */
    bd_calib_free(ws->calib);
    ws->calib = NULL;
    drop_device_execs(ws);
    for (int k = 0; k < 2; k++) {
        bd_dataset_free(ws->data[k]);
        ws->data[k] = NULL;
    }
    model_part m = {ws->path,       ws->teacher_path, ws->teacher, ws->student,
                    ws->teacher_ex, ws->student_ex,   ws->layers,  ws->nlayers,
                    ws->original,   ws->pp,           ws->classes, ws->nclasses,
                    {ws->spec[0], ws->spec[1]},       {0, 0},
                    ws->source};
    model_part_free(&m);
    free(ws->teacher_acc_key);
    ws->teacher_acc_key = NULL;
    memset(&ws->teacher_acc, 0, sizeof ws->teacher_acc);
    memset(&ws->student_acc, 0, sizeof ws->student_acc);
    ws->npoints = 0;
    ws->path = NULL;
    ws->teacher_path = NULL;
    ws->trained_teacher = 0;
    free(ws->original_file);
    free(ws->saved_path);
    ws->original_file = ws->saved_path = NULL;
    free(ws->saved_versions);
    ws->saved_versions = NULL;
    ws->spec[0] = ws->spec[1] = NULL;
    ws->teacher = ws->student = NULL;
    ws->teacher_ex = ws->student_ex = NULL;
    ws->layers = NULL;
    ws->nlayers = 0;
    ws->original = NULL;
    ws->source = NULL;
    ws->classes = NULL;
    ws->nclasses = 0;
    history_clear(ws);
    free(ws->train_epochs);
    ws->train_epochs = NULL;
    ws->ntrain_epochs = 0;
    ws->trained = ws->training = 0;
    free(ws->bp_epochs);
    free(ws->bp_bits);
    ws->bp_epochs = NULL;
    ws->bp_bits = NULL;
    ws->nbp_epochs = ws->bp_room = 0;
    memset(&ws->bp_live, 0, sizeof ws->bp_live);
    ws->bitpruned = ws->bitpruning = 0;
    free(ws->sens);
    ws->sens = NULL;
}

void bd_ws_free(bd_workspace *ws)
{
    if (!ws)
        return;
    drop_model(ws);
    bd_device_close(ws->device);
    free(ws->checkpoint);
    pthread_mutex_destroy(&ws->mu);
    free(ws);
}

static bd_status need_model(const bd_workspace *ws)
{
    return ws->student ? BD_OK : bd_fail(BD_EINVAL, "no model is loaded (use 'load MODEL')");
}

bd_layer_plan bd_ws_plan_of(const bd_ws_layer *l)
{
    bd_layer_plan p = {l->quantize, l->format, l->d, l->k, l->ints, l->objective, ""};
    memcpy(p.note, l->note, sizeof p.note);
    return p;
}

double bd_ws_bits_per_weight(const bd_ws_layer *l)
{
    return l->state == BD_STATE_FLOAT ? BD_FLOAT_BITS : bd_qlayer_bits_per_weight(&l->q);
}

static void set_plan(bd_ws_layer *l, const bd_layer_plan *p)
{
    l->quantize = p->quantize;
    l->format = p->format;
    l->d = p->d;
    l->k = p->k;
    l->ints = p->ints;
    l->objective = p->objective;
    memcpy(l->note, p->note, sizeof l->note);
}

/* Sets a layer's plan from the regime, keeping a state it already has. */
static bd_status plan_layers(bd_ws_layer *layers, int n, const char *regime, int quantize_first)
{
    bd_layer *ls = calloc((size_t)n + 1, sizeof *ls);
    bd_layer_plan *plan = malloc((size_t)n * sizeof *plan + 1);
    bd_status s = ls && plan ? BD_OK : bd_fail(BD_ENOMEM, "out of memory");
    for (int i = 0; s == BD_OK && i < n; i++)
        ls[i] = layers[i].layer;
    if (s == BD_OK)
        s = bd_plan_regime(ls, n, regime, quantize_first, plan);
    for (int i = 0; s == BD_OK && i < n; i++)
        set_plan(&layers[i], &plan[i]);
    free(ls);
    free(plan);
    return s;
}

/* The teacher of a compressed file is the original it was made from, when
 * the file names it (bitdown.teacher) and it still matches; otherwise the
 * decoded model itself. Value ids differ between the two graphs, so each
 * layer's weight in it goes in original[]. */
static bd_graph *original_teacher(const bd_graph *g, const char *orig, const bd_layer *layers,
                                  int n, const bd_tensor **original)
{
    bd_graph *t = NULL;
    bd_layer *tl = NULL;
    int tn = 0;
    if (!orig || bd_onnx_load(orig, &t) != BD_OK || bd_layers_find(t, &tl, &tn) != BD_OK ||
        tn != n) {
        bd_graph_free(t);
        free(tl);
        return NULL;
    }
    for (int i = 0; i < n; i++) {
        const bd_tensor *a = g->values[layers[i].weight].init, *b = t->values[tl[i].weight].init;
        int id = bd_graph_find(g, t->values[tl[i].weight].name);
        if (strcmp(layers[i].name, tl[i].name) != 0 || id != layers[i].weight ||
            !bd_tensor_same_shape(a, b)) {
            bd_graph_free(t);
            free(tl);
            return NULL;
        }
        original[i] = b;
    }
    free(tl);
    return t;
}

static int nq_any(const bd_qlayer *q, int n)
{
    for (int i = 0; i < n; i++)
        if (q[i].k > 0)
            return 1;
    return 0;
}

/* A float layer of a compressed file whose weight is not its teacher's was
 * trained in the session that saved it (training with quantized layers):
 * that weight is its float source, as it was there. A quantized layer's
 * source did not go into the file; the teacher's weight stands in. */
static bd_status float_sources(model_part *m)
{
    int trained = 0;
    for (int i = 0; i < m->nlayers; i++) {
        const bd_tensor *w = m->student->values[m->layers[i].layer.weight].init;
        trained |= m->layers[i].state == BD_STATE_FLOAT &&
                   memcmp(w->data, m->original[i]->data, bd_tensor_nbytes(w)) != 0;
    }
    if (!trained)
        return BD_OK;
    BD_TRY(bd_graph_clone(&m->source, m->student)); /* a clone keeps the ids */
    for (int i = 0; i < m->nlayers; i++) {
        bd_tensor *w = m->source->values[m->layers[i].layer.weight].init;
        if (m->layers[i].state != BD_STATE_FLOAT)
            memcpy(w->data, m->original[i]->data, bd_tensor_nbytes(w));
        m->original[i] = w;
    }
    return BD_OK;
}

static bd_status load_model(const char *path, const char *teacher, model_part *m)
{
    bd_qlayer *q = NULL;
    int nq = 0;
    bd_layer *ls = NULL;
    bd_graph *g = NULL;
    BD_TRY(bd_model_load(path, &g, &q, &nq));
    bd_status s = bd_layers_find(g, &ls, &m->nlayers);
    if (s == BD_OK && !(m->path = bd_strdup(path)))
        s = bd_fail(BD_ENOMEM, "out of memory");
    if (s == BD_OK && (!(m->layers = calloc((size_t)m->nlayers + 1, sizeof *m->layers)) ||
                       !(m->original = calloc((size_t)m->nlayers + 1, sizeof *m->original))))
        s = bd_fail(BD_ENOMEM, "out of memory");
    for (int i = 0; s == BD_OK && i < m->nlayers; i++)
        m->layers[i].layer = ls[i];
    if (s == BD_OK)
        s = plan_layers(m->layers, m->nlayers, "small", 0);
    const int compressed = nq_any(q, nq); /* before the codebooks move into the layers */
    for (int i = 0; s == BD_OK && i < m->nlayers && i < nq; i++) {
        if (q[i].k == 0)
            continue;
        bd_ws_layer *l = &m->layers[i];
        l->state = BD_STATE_QUANTIZED;
        l->q = q[i];
        memset(&q[i], 0, sizeof q[i]);
        /* the plan becomes what the file holds; an int layer keeps the
         * regime's d and k for a switch back to PQ */
        l->format = l->q.format;
        if (l->q.format == BD_FMT_INT) {
            l->ints = l->q.ints;
        } else {
            l->d = l->q.d;
            l->k = l->q.k;
        }
        l->objective = l->q.objective;
        l->quantize = 1;
        l->note[0] = '\0';
    }
    if (s == BD_OK) {
        m->student = g;
        g = NULL;
        const char *orig = teacher ? teacher : bd_graph_meta(m->student, BD_META_TEACHER);
        m->teacher = original_teacher(m->student, orig, ls, m->nlayers, m->original);
        /* a plain model is its own teacher; a compressed one found its original */
        char real[PATH_MAX];
        const char *tp = m->teacher ? orig : compressed ? NULL : path;
        if (tp && realpath(tp, real) && !(m->teacher_path = bd_strdup(real)))
            s = bd_fail(BD_ENOMEM, "out of memory");
        if (!m->teacher && teacher)
            s = bd_fail(BD_EINVAL, "%s is not the model %s was made from (its layers differ)",
                        teacher, path);
        else if (!m->teacher && (s = bd_graph_clone(&m->teacher, m->student)) == BD_OK)
            for (int i = 0; i < m->nlayers; i++) /* a clone keeps the ids */
                m->original[i] = m->teacher->values[ls[i].weight].init;
    }
    if (s == BD_OK)
        s = float_sources(m);
    if (s == BD_OK)
        s = bd_model_preprocess(m->teacher, &m->pp);
    if (s == BD_OK)
        s = bd_model_class_names(m->teacher, &m->classes, &m->nclasses);
    if (s == BD_OK)
        s = bd_exec_new(&m->teacher_ex, m->teacher, BD_EXEC_FUSE);
    if (s == BD_OK)
        s = bd_exec_new(&m->student_ex, m->student, BD_EXEC_FUSE);
    const char *dataset = m->teacher ? bd_graph_meta(m->teacher, BD_META_DATASET) : NULL;
    for (int k = 0; s == BD_OK && dataset && k < 2; k++) {
        char spec[512];
        snprintf(spec, sizeof spec, "%s:%s", dataset, k == BD_DATA_CALIB ? "train" : "test");
        if (!(m->spec[k] = bd_strdup(spec)))
            s = bd_fail(BD_ENOMEM, "out of memory");
    }
    m->n[BD_DATA_CALIB] = 1024;
    for (int i = 0; i < nq; i++)
        bd_qlayer_free(&q[i]);
    free(q);
    free(ls);
    bd_graph_free(g);
    if (s != BD_OK)
        model_part_free(m);
    return s;
}

bd_status bd_ws_load(bd_workspace *ws, const char *path)
{
    return bd_ws_load_teacher(ws, path, NULL);
}

bd_status bd_ws_load_teacher(bd_workspace *ws, const char *path, const char *teacher)
{
    model_part m = {0};
    BD_TRY(load_model(path, teacher, &m));
    char *original = m.teacher_path ? bd_strdup(m.teacher_path) : NULL;
    if (m.teacher_path && !original) {
        model_part_free(&m);
        return bd_fail(BD_ENOMEM, "out of memory");
    }
    bd_ws_lock(ws);
    drop_model(ws);
    ws->path = m.path;
    ws->teacher_path = m.teacher_path;
    ws->teacher = m.teacher;
    ws->student = m.student;
    ws->teacher_ex = m.teacher_ex;
    ws->student_ex = m.student_ex;
    ws->layers = m.layers;
    ws->nlayers = m.nlayers;
    ws->original = m.original;
    ws->source = m.source;
    ws->pp = m.pp;
    ws->classes = m.classes;
    ws->nclasses = m.nclasses;
    ws->spec[0] = m.spec[0];
    ws->spec[1] = m.spec[1];
    ws->n[0] = m.n[0];
    ws->n[1] = m.n[1];
    ws->count[0] = ws->count[1] = -1;
    ws->original_file = original;
    mark_saved(ws);
    bd_ws_unlock(ws);
    char ckpt[PATH_MAX];
    if (ws->autosave && bd_ws_default_checkpoint(path, ckpt, sizeof ckpt) == BD_OK)
        bd_ws_checkpoint(ws, ckpt);
    return BD_OK;
}

int bd_ws_loaded(const bd_workspace *ws) { return ws->student != NULL; }
const char *bd_ws_path(const bd_workspace *ws) { return ws->path; }
const bd_graph *bd_ws_teacher(const bd_workspace *ws) { return ws->teacher; }
const bd_graph *bd_ws_student(const bd_workspace *ws) { return ws->student; }
int bd_ws_nlayers(const bd_workspace *ws) { return ws->nlayers; }

const bd_ws_layer *bd_ws_layer_at(const bd_workspace *ws, int i)
{
    return i >= 0 && i < ws->nlayers ? &ws->layers[i] : NULL;
}

int bd_ws_layer_index(const bd_workspace *ws, const char *name)
{
    for (int i = 0; i < ws->nlayers; i++)
        if (strcmp(ws->layers[i].layer.name, name) == 0)
            return i;
    return -1;
}

static int is_all(const char *glob) { return !glob || !glob[0] || strcmp(glob, "all") == 0; }

/* Layers matching glob; with planned_only, "all" means the plan's. */
static bd_status select_layers(const bd_workspace *ws, const char *glob, int planned_only,
                               int **idx, int *n)
{
    BD_TRY(need_model(ws));
    *idx = malloc((size_t)ws->nlayers * sizeof **idx + 1);
    if (!*idx)
        return bd_fail(BD_ENOMEM, "out of memory");
    *n = 0;
    for (int i = 0; i < ws->nlayers; i++) {
        const bd_ws_layer *l = &ws->layers[i];
        int match = is_all(glob) ? (!planned_only || l->quantize)
                                 : fnmatch(glob, l->layer.name, 0) == 0;
        if (match)
            (*idx)[(*n)++] = i;
    }
    if (*n == 0) {
        free(*idx);
        *idx = NULL;
        return is_all(glob) ? bd_fail(BD_EINVAL, "the plan has no layers to quantize")
                            : bd_fail(BD_EINVAL, "no layer matches '%s'", glob);
    }
    return BD_OK;
}

bd_status bd_ws_select(const bd_workspace *ws, const char *glob, int **idx, int *n)
{
    return select_layers(ws, glob, 1, idx, n);
}

/* ---- undo --------------------------------------------------------------------- */

/* Copies the listed layers as they are now into a new step. */
static bd_status step_begin(const bd_workspace *ws, const int *idx, int n, const char *label,
                            undo_step *u)
{
    memset(u, 0, sizeof *u);
    snprintf(u->label, sizeof u->label, "%s", label);
    u->params_version = ws->params_version;
    u->saved = calloc((size_t)n + 1, sizeof *u->saved);
    if (!u->saved)
        return bd_fail(BD_ENOMEM, "out of memory");
    for (int i = 0; i < n; i++) {
        u->saved[i].index = idx[i];
        bd_status s = layer_copy(&u->saved[i].layer, &ws->layers[idx[i]]);
        if (s != BD_OK) {
            step_clear(u);
            return s;
        }
        u->n++;
    }
    return BD_OK;
}

static int is_weight(const bd_workspace *ws, int v)
{
    for (int i = 0; i < ws->nlayers; i++)
        if (ws->layers[i].layer.weight == v)
            return 1;
    return 0;
}

/* Adds to the step a copy of every float parameter that is not a layer
 * weight: what fine-tuning's bias and BatchNorm options change. */
static bd_status step_save_tensors(const bd_workspace *ws, undo_step *u)
{
    const bd_graph *g = ws->student;
    u->tensors = calloc((size_t)g->nvalues + 1, sizeof *u->tensors);
    if (!u->tensors)
        return bd_fail(BD_ENOMEM, "out of memory");
    for (int v = 0; v < g->nvalues; v++) {
        const bd_tensor *t = g->values[v].init;
        if (!t || t->dtype != BD_F32 || is_weight(ws, v))
            continue;
        BD_TRY(bd_tensor_clone(&u->tensors[u->nt].copy, t));
        u->tensors[u->nt++].value = v;
    }
    return BD_OK;
}

static void step_push(bd_workspace *ws, undo_step *u)
{
    if (ws->nundo == UNDO_MAX) { /* the oldest step goes */
        step_clear(&ws->undo[0]);
        memmove(ws->undo, ws->undo + 1, (UNDO_MAX - 1) * sizeof *ws->undo);
        ws->nundo--;
    }
    ws->undo[ws->nundo++] = *u;
    memset(u, 0, sizeof *u);
}

/* Writes the student weight that layer i's state implies. */
static bd_status install_weight(bd_workspace *ws, int i)
{
    const bd_ws_layer *l = &ws->layers[i];
    bd_tensor *w = ws->student->values[l->layer.weight].init;
    const bd_tensor *t = ws->original[i];
    if (l->state == BD_STATE_FLOAT) {
        memcpy(w->data, t->data, bd_tensor_nbytes(w));
        return BD_OK;
    }
    return bd_qlayer_decode(&l->q, &l->layer, w->data);
}

static void student_changed(bd_workspace *ws, int i)
{
    ws->student_acc.valid = 0;
    if (ws->calib)
        bd_calib_changed(ws->calib, ws->layers[i].layer.node);
}

static void sensitivity_stale(bd_workspace *ws);

static void invalidate_all(bd_workspace *ws)
{
    ws->student_acc.valid = 0;
    if (ws->calib)
        bd_calib_changed(ws->calib, -1);
    sensitivity_stale(ws); /* the float model changed */
}

/* Exchanges the layers' float sources with those step u holds. */
static void swap_sources(bd_workspace *ws, undo_step *u)
{
    const bd_tensor **original = ws->original;
    bd_graph *source = ws->source;
    ws->original = u->original;
    ws->source = u->source;
    u->original = original;
    u->source = source;
}

/* Exchanges the workspace's teacher with the one step u holds. The GPU's
 * executors read the teacher's graph: they are made again on next use. */
static void swap_teacher(bd_workspace *ws, undo_step *u)
{
    bd_graph *g = ws->teacher;
    bd_exec *ex = ws->teacher_ex;
    char *path = ws->teacher_path;
    int trained = ws->trained_teacher;
    ws->teacher = u->teacher;
    ws->teacher_ex = u->teacher_ex;
    ws->teacher_path = u->teacher_path;
    ws->trained_teacher = u->trained_teacher;
    u->teacher = g;
    u->teacher_ex = ex;
    u->teacher_path = path;
    u->trained_teacher = trained;
    drop_device_execs(ws);
    ws->teacher_acc.valid = 0;
}

/* The index of layer l's node in g, a copy of the model l was found in
 * (value ids kept, nodes perhaps moved): the node of l's op that reads its
 * weight; -1 if none does. */
static int node_of(const bd_graph *g, const bd_layer *l)
{
    for (int n = 0; n < g->nnodes; n++) {
        const bd_node *node = &g->nodes[n];
        for (int k = 0; k < node->ninputs; k++)
            if (node->inputs[k] == l->weight && strcmp(node->op, l->op) == 0)
                return n;
    }
    return -1;
}

/* Exchanges the student with the one step u holds (the same model with or
 * without BitPruning's activation quantizers: a copy keeps the value ids)
 * and finds every layer's node in it; what ran or cached the other goes. */
static void swap_student(bd_workspace *ws, undo_step *u)
{
    bd_graph *g = ws->student;
    bd_exec *ex = ws->student_ex;
    ws->student = u->student;
    ws->student_ex = u->student_ex;
    u->student = g;
    u->student_ex = ex;
    for (int i = 0; i < ws->nlayers; i++) {
        bd_layer *l = &ws->layers[i].layer;
        const int n = node_of(ws->student, l);
        l->node = n >= 0 ? n : l->node;
    }
    bd_calib_free(ws->calib);
    ws->calib = NULL;
    drop_device_execs(ws);
    invalidate_all(ws);
}

/* Puts the saved layers back (their plan, state, codebook and weight).
 * Takes ownership of the saved copies. */
static void step_restore(bd_workspace *ws, undo_step *u)
{
    bd_ws_lock(ws);
    if (u->student) /* first: what follows writes into the student it puts back */
        swap_student(ws, u);
    for (int j = 0; j < u->n; j++) {
        int i = u->saved[j].index;
        int weight_changes = ws->layers[i].state != u->saved[j].layer.state ||
                             ws->layers[i].q.codes != u->saved[j].layer.q.codes;
        layer_clear(&ws->layers[i]);
        ws->layers[i] = u->saved[j].layer;
        memset(&u->saved[j].layer.q, 0, sizeof u->saved[j].layer.q);
        if (weight_changes) {
            /* decoding what was decoded before cannot fail for want of
             * anything but memory; the layer then stays as saved */
            install_weight(ws, i);
            student_changed(ws, i);
        }
    }
    for (int j = 0; j < u->nt; j++) {
        bd_tensor *t = ws->student->values[u->tensors[j].value].init;
        memcpy(t->data, u->tensors[j].copy->data, bd_tensor_nbytes(t));
    }
    if (u->original)
        swap_sources(ws, u);
    if (u->teacher)
        swap_teacher(ws, u);
    if (u->nt) /* any node may have changed: nothing held is still valid */
        invalidate_all(ws);
    ws->params_version = u->params_version;
    bd_ws_unlock(ws);
    step_clear(u);
}

bd_status bd_ws_undo(bd_workspace *ws, char *what, size_t cap)
{
    if (ws->nundo == 0)
        return bd_fail(BD_EINVAL, "nothing to undo");
    undo_step u = ws->undo[--ws->nundo];
    if (what)
        snprintf(what, cap, "%s", u.label);
    step_restore(ws, &u);
    bd_ws_checkpoint_write(ws, NULL);
    return BD_OK;
}

const char *bd_ws_undo_label(const bd_workspace *ws)
{
    return ws->nundo ? ws->undo[ws->nundo - 1].label : NULL;
}

/* ---- the plan ----------------------------------------------------------------- */

bd_status bd_ws_set(bd_workspace *ws, const char *glob, const bd_ws_change *c)
{
    int *idx, n;
    BD_TRY(select_layers(ws, glob, 0, &idx, &n));
    bd_status s = BD_OK;
    for (int j = 0; j < n && s == BD_OK; j++) {
        bd_layer_plan p = bd_ws_plan_of(&ws->layers[idx[j]]);
        s = bd_plan_apply(&ws->layers[idx[j]].layer, c, &p);
    }
    char label[160];
    snprintf(label, sizeof label, "set %s", glob ? glob : "all");
    undo_step u;
    if (s == BD_OK)
        s = step_begin(ws, idx, n, label, &u);
    if (s == BD_OK) {
        bd_ws_lock(ws);
        for (int j = 0; j < n; j++) {
            bd_layer_plan p = bd_ws_plan_of(&ws->layers[idx[j]]);
            bd_plan_apply(&ws->layers[idx[j]].layer, c, &p); /* checked above */
            set_plan(&ws->layers[idx[j]], &p);
        }
        step_push(ws, &u);
        bd_ws_unlock(ws);
        bd_ws_checkpoint_write(ws, NULL);
    }
    free(idx);
    return s;
}

bd_status bd_ws_regime(bd_workspace *ws, const char *regime, int quantize_first)
{
    BD_TRY(need_model(ws));
    bd_ws_layer *plan = calloc((size_t)ws->nlayers + 1, sizeof *plan);
    int *idx = malloc((size_t)ws->nlayers * sizeof *idx + 1);
    bd_status s = plan && idx ? BD_OK : bd_fail(BD_ENOMEM, "out of memory");
    for (int i = 0; s == BD_OK && i < ws->nlayers; i++) {
        plan[i].layer = ws->layers[i].layer;
        idx[i] = i;
    }
    if (s == BD_OK)
        s = plan_layers(plan, ws->nlayers, regime, quantize_first);
    char label[64];
    snprintf(label, sizeof label, "regime %s", regime);
    undo_step u;
    if (s == BD_OK)
        s = step_begin(ws, idx, ws->nlayers, label, &u);
    if (s == BD_OK) {
        bd_ws_lock(ws);
        for (int i = 0; i < ws->nlayers; i++) {
            bd_layer_plan p = bd_ws_plan_of(&plan[i]);
            set_plan(&ws->layers[i], &p);
        }
        step_push(ws, &u);
        bd_ws_unlock(ws);
        bd_ws_checkpoint_write(ws, NULL);
    }
    free(plan);
    free(idx);
    return s;
}

/* ---- data ----------------------------------------------------------------------- */

/* The dataset of a kind, opened on first use. */
static bd_status data_of(bd_workspace *ws, bd_data_kind kind, bd_dataset **d)
{
    BD_TRY(need_model(ws));
    if (!ws->data[kind]) {
        if (!ws->spec[kind])
            return bd_fail(BD_EINVAL, "no %s data: the model names no dataset (use 'data %s SPEC')",
                           kind == BD_DATA_CALIB ? "calibration" : "evaluation",
                           kind == BD_DATA_CALIB ? "calib" : "eval");
        BD_TRY(bd_dataset_open(&ws->data[kind], ws->spec[kind], &ws->pp));
        ws->count[kind] = bd_dataset_count(ws->data[kind]);
    }
    *d = ws->data[kind];
    return BD_OK;
}

bd_status bd_ws_data(bd_workspace *ws, bd_data_kind kind, const char *spec, int64_t n)
{
    BD_TRY(need_model(ws));
    if (n < 0)
        return bd_fail(BD_EINVAL, "n must not be negative");
    bd_dataset *d = NULL;
    BD_TRY(bd_dataset_open(&d, spec, &ws->pp));
    char *copy = bd_strdup(spec);
    if (!copy) {
        bd_dataset_free(d);
        return bd_fail(BD_ENOMEM, "out of memory");
    }
    bd_ws_lock(ws);
    bd_dataset_free(ws->data[kind]);
    free(ws->spec[kind]);
    ws->data[kind] = d;
    ws->count[kind] = bd_dataset_count(d);
    ws->spec[kind] = copy;
    ws->n[kind] = n ? n : kind == BD_DATA_CALIB ? 1024 : 0;
    if (kind == BD_DATA_CALIB) {
        bd_calib_free(ws->calib);
        ws->calib = NULL;
    } else {
        ws->student_acc.valid = 0;
    }
    bd_ws_unlock(ws);
    return BD_OK;
}

const char *bd_ws_data_spec(const bd_workspace *ws, bd_data_kind kind) { return ws->spec[kind]; }
int64_t bd_ws_data_n(const bd_workspace *ws, bd_data_kind kind)
{
    int64_t n = ws->n[kind] > 0 ? ws->n[kind] : kind == BD_DATA_CALIB ? 1024 : 0;
    int64_t have = ws->count[kind];
    if (have >= 0 && (n == 0 || n > have))
        n = have;
    return n;
}

bd_status bd_ws_set_preprocess(bd_workspace *ws, const bd_preprocess *pp)
{
    BD_TRY(need_model(ws));
    const bd_graph *g = ws->teacher;
    const bd_value *in = g->ninputs > 0 ? &g->values[g->inputs[0]] : NULL;
    if (in && in->ndim >= 2 && in->dims[1] > 0 && in->dims[1] != pp->channels)
        return bd_fail(BD_EINVAL, "input '%s' of %s has %lld channels, not %d", in->name,
                       ws->path, (long long)in->dims[1], pp->channels);
    bd_ws_lock(ws);
    ws->pp = *pp;
    for (int k = 0; k < 2; k++) { /* data_of reopens them with the new preprocessing */
        bd_dataset_free(ws->data[k]);
        ws->data[k] = NULL;
    }
    bd_calib_free(ws->calib);
    ws->calib = NULL;
    ws->teacher_acc.valid = 0;
    ws->student_acc.valid = 0;
    bd_ws_unlock(ws);
    return BD_OK;
}

const bd_preprocess *bd_ws_preprocess(const bd_workspace *ws) { return &ws->pp; }

/* ---- progress ------------------------------------------------------------------- */

void bd_ws_on_progress(bd_workspace *ws, bd_progress_fn fn, void *user)
{
    ws->progress_fn = fn;
    ws->progress_user = user;
}

void bd_ws_cancel(bd_workspace *ws) { atomic_store(&ws->cancel, 1); }

/* The progress an operation reports through; clears an earlier cancel. */
static bd_progress start_op(bd_workspace *ws)
{
    atomic_store(&ws->cancel, 0);
    bd_progress p = {ws->progress_fn, ws->progress_user, &ws->cancel};
    return p;
}

/* ---- work ------------------------------------------------------------------------- */

/* A GPU that cannot run the model (it lacks an op: BD_EUNSUPPORTED) leaves
 * the model to the CPU, which is said once; any other failure of the GPU
 * (CUDA's, memory) is the operation's. */
static bd_status cpu_instead(bd_workspace *ws, const bd_progress *p, bd_status s)
{
    if (s != BD_EUNSUPPORTED)
        return s;
    ws->device_cannot = 1;
    char msg[640];
    snprintf(msg, sizeof msg, "cuda cannot run this model (%s); the CPU runs it",
             bd_error_message());
    bd_error_clear();
    return bd_progress_report(p, "device", 0, 0, msg, 0);
}

/* Whether the loaded model runs on the GPU (*on), making its executors
 * there on first use. */
static bd_status device_execs(bd_workspace *ws, const bd_progress *p, int *on)
{
    *on = 0;
    if (!ws->device || ws->device_cannot)
        return BD_OK;
    if (!ws->dev_student) {
        bd_status s = bd_dexec_new(ws->device, ws->teacher, &ws->dev_teacher);
        if (s == BD_OK)
            s = bd_dexec_new(ws->device, ws->student, &ws->dev_student);
        if (s != BD_OK) {
            drop_device_execs(ws);
            return cpu_instead(ws, p, s);
        }
    }
    *on = 1;
    return BD_OK;
}

/* A calibration cache of graph g (the student, or a copy of it) with the
 * workspace's calibration data and settings. */
static bd_status calib_new(bd_workspace *ws, const bd_progress *p, bd_graph *g, bd_calib **c)
{
    bd_dataset *d = NULL;
    BD_TRY(data_of(ws, BD_DATA_CALIB, &d));
    bd_calib_options co = {.images = ws->n[BD_DATA_CALIB], .batch = ws->batch,
                           .seed = ws->seed,
                           .device = ws->device_cannot ? NULL : ws->device};
    bd_status s = bd_calib_new(c, g, d, &co);
    if (s != BD_OK && co.device) {
        BD_TRY(cpu_instead(ws, p, s));
        co.device = NULL;
        s = bd_calib_new(c, g, d, &co);
    }
    return s;
}

static bd_status calib_of(bd_workspace *ws, const bd_progress *p, bd_calib **c)
{
    if (!ws->calib)
        BD_TRY(calib_new(ws, p, ws->student, &ws->calib));
    *c = ws->calib;
    return BD_OK;
}

static bd_quantize_options options_of(const bd_workspace *ws, const bd_ws_layer *l, int iters)
{
    bd_quantize_options o = {.format = l->format, .d = l->d, .k = l->k, .ints = l->ints,
                             .objective = l->objective,
                             .iters = iters > 0 ? iters : 100, .seed = ws->seed,
                             .restarts = ws->restarts, .tol = ws->tol,
                             .compare_objectives = ws->compare, .device = ws->device};
    return o;
}

/* Measures the listed layers' relative errors again, as quantizing measured
 * them (the same held-out calibration rows, their inputs from the student
 * as it stands): what an operation that tuned their codebooks leaves them
 * at. In graph order, the calibration cache runs the model once for all. */
static bd_status measure_again(bd_workspace *ws, const int *idx, int n, const bd_progress *p)
{
    bd_calib *calib;
    BD_TRY(calib_of(ws, p, &calib));
    for (int j = 0; j < n; j++) {
        bd_ws_layer *l = &ws->layers[idx[j]];
        double e;
        BD_TRY(bd_calib_measure(calib, &l->layer, ws->original[idx[j]]->data,
                                ws->student->values[l->layer.weight].init->data, p, &e));
        bd_ws_lock(ws);
        l->q.rel_error = e;
        bd_ws_unlock(ws);
    }
    return BD_OK;
}

/* Tunes the codebooks of the listed layers in place (state "tuned") and
 * measures their errors again. */
static bd_status tune_layers(bd_workspace *ws, const int *idx, int n, const bd_finetune_options *opt,
                             const bd_progress *progress, bd_finetune_report *report)
{
    bd_dataset *d = NULL;
    BD_TRY(data_of(ws, BD_DATA_CALIB, &d));
    bd_layer *ls = malloc((size_t)n * sizeof *ls + 1);
    bd_qlayer *qs = malloc((size_t)n * sizeof *qs + 1);
    bd_status s = ls && qs ? BD_OK : bd_fail(BD_ENOMEM, "out of memory");
    for (int j = 0; s == BD_OK && j < n; j++) {
        ls[j] = ws->layers[idx[j]].layer;
        qs[j] = ws->layers[idx[j]].q; /* shares the centroids: tuned in place */
    }
    bd_finetune_options o = *opt;
    if (o.seed == 0)
        o.seed = ws->seed;
    if (o.batch <= 0)
        o.batch = ws->batch;
    int on = 0, ints = 0;
    for (int j = 0; s == BD_OK && j < n; j++)
        ints += qs[j].format == BD_FMT_INT;
    if (s == BD_OK)
        s = device_execs(ws, progress, &on);
    if (s == BD_OK && on && ints) { /* the GPU's engine tunes codebooks only */
        on = 0;
        s = bd_progress_report(progress, "device", 0, 0,
                               "int layers' scales and zero points tune on the CPU", 0);
    }
    if (s == BD_OK && on) {
        s = bd_dexec_sync(ws->dev_teacher);
        if (s == BD_OK)
            s = bd_device_finetune(ws->device, ws->student, ws->dev_teacher, ls, qs, n, d, &o,
                                   progress, report);
        if (s != BD_OK) { /* an op the GPU's backward pass lacks: the CPU tunes */
            s = cpu_instead(ws, progress, s);
            on = 0;
        }
    }
    if (s == BD_OK && !on)
        s = bd_finetune(ws->student, ws->teacher_ex, ls, qs, n, d, &o, progress, report);
    if (s == BD_OK) {
        bd_ws_lock(ws);
        for (int j = 0; j < n; j++) {
            ws->layers[idx[j]].state = BD_STATE_TUNED;
            new_version(ws, &ws->layers[idx[j]]);
            student_changed(ws, idx[j]);
        }
        if (o.bn_train || o.tune_bias) {
            params_changed(ws);
            invalidate_all(ws);
        }
        bd_ws_unlock(ws);
    }
    if (s == BD_OK)
        s = measure_again(ws, idx, n, progress);
    free(ls);
    free(qs);
    return s;
}

bd_status bd_ws_quantize_list(bd_workspace *ws, const int *idx, int n, const char *label,
                              int iters, const bd_finetune_options *tune)
{
    bd_progress progress = start_op(ws);
    bd_calib *calib;
    undo_step u = {0};
    int tuning = tune && tune->iters > 0;
    bd_status s = calib_of(ws, &progress, &calib);
    for (int j = 0; s == BD_OK && j < n; j++)
        s = bd_plan_check(&ws->layers[idx[j]].layer, ws->layers[idx[j]].d,
                          ws->layers[idx[j]].k);
    if (s == BD_OK)
        s = step_begin(ws, idx, n, label, &u);
    if (s == BD_OK && tuning)
        s = step_save_tensors(ws, &u);
    const double t0 = bd_now();
    int done = 0;
    for (; s == BD_OK && done < n; done++) {
        bd_ws_layer *l = &ws->layers[idx[done]];
        char msg[256], eta[32];
        bd_seconds_str(bd_eta(bd_now() - t0, done, n), eta, sizeof eta);
        snprintf(msg, sizeof msg, "%s (%d of %d, ETA %s)", l->layer.name, done + 1, n, eta);
        if ((s = bd_progress_report(&progress, "quantize", done, n, msg, 0)) != BD_OK)
            break;
        bd_quantize_options o = options_of(ws, l, iters);
        bd_qlayer q;
        /* the student's weight changes inside, the table only below */
        s = bd_quantize_layer(calib, ws->student, &l->layer, ws->original[idx[done]], &o,
                              &progress, &q);
        if (s != BD_OK)
            break;
        bd_ws_lock(ws);
        layer_clear(l);
        l->q = q;
        l->state = BD_STATE_QUANTIZED;
        new_version(ws, l);
        ws->student_acc.valid = 0;
        bd_ws_unlock(ws);
        bd_finetune_report r;
        if (tuning && (s = tune_layers(ws, &idx[done], 1, tune, &progress, &r)) != BD_OK)
            break;
        /* a crash from here on loses nothing: a resumed session goes on */
        bd_ws_pending pending = {idx, n, done + 1, iters, tuning ? tune : NULL};
        bd_ws_checkpoint_write(ws, &pending);
    }
    if (s == BD_OK) {
        bd_progress_report(&progress, "quantize", n, n, "done", 0);
        step_push(ws, &u);
    } else if (u.saved) {
        step_restore(ws, &u); /* every layer of this command as it was */
    }
    bd_ws_checkpoint_write(ws, NULL);
    return s;
}

bd_status bd_ws_quantize_tuned(bd_workspace *ws, const char *glob, int iters,
                               const bd_finetune_options *tune)
{
    int *idx, n;
    BD_TRY(select_layers(ws, glob, 1, &idx, &n));
    char label[160];
    snprintf(label, sizeof label, "quantize %s", glob ? glob : "all");
    bd_status s = bd_ws_quantize_list(ws, idx, n, label, iters, tune);
    free(idx);
    return s;
}

bd_status bd_ws_quantize_at(bd_workspace *ws, int i, int iters, const bd_finetune_options *tune)
{
    BD_TRY(need_model(ws));
    if (i < 0 || i >= ws->nlayers)
        return bd_fail(BD_EINVAL, "no layer %d (the model has %d)", i, ws->nlayers);
    char label[160];
    snprintf(label, sizeof label, "quantize %s", ws->layers[i].layer.name);
    return bd_ws_quantize_list(ws, &i, 1, label, iters, tune);
}

bd_status bd_ws_quantize(bd_workspace *ws, const char *glob, int iters)
{
    return bd_ws_quantize_tuned(ws, glob, iters, NULL);
}

void bd_ws_quantize_defaults(const bd_workspace *ws, bd_quantize_run *r)
{
    bd_quantize_run_init(r);
    r->restarts = ws->restarts;
    r->tol = ws->tol;
}

bd_status bd_ws_quantize_run(bd_workspace *ws, const char *glob, const bd_quantize_run *r)
{
    char target[96];
    BD_TRY(bd_quantize_target(r, "quantize", 0, target, sizeof target));
    if (target[0])
        return bd_fail(BD_EINVAL, "quantize: %s is the %s policy's, which the front-end runs",
                       target, BD_SIZE_POLICY);
    int restarts = ws->restarts;
    double tol = ws->tol;
    BD_TRY(bd_ws_search(ws, r->restarts, r->tol));
    bd_finetune_options tune;
    bd_finetune_options_init(&tune);
    tune.iters = r->tune;
    bd_status s = bd_ws_quantize_tuned(ws, glob, r->iters, &tune);
    ws->restarts = restarts;
    ws->tol = tol;
    return s;
}

bd_status bd_ws_finetune(bd_workspace *ws, const char *glob, const bd_finetune_options *opt,
                         bd_finetune_report *report)
{
    int *all, n, nq = 0;
    BD_TRY(select_layers(ws, glob, 0, &all, &n));
    /* PQ layers move their centroids, int layers their scales and zero points */
    for (int j = 0; j < n; j++)
        if (ws->layers[all[j]].state != BD_STATE_FLOAT)
            all[nq++] = all[j];
    if (nq == 0) {
        free(all);
        return bd_fail(BD_EINVAL, "no quantized layer matches '%s': quantize first",
                       glob ? glob : "all");
    }
    bd_progress progress = start_op(ws);
    char label[160];
    snprintf(label, sizeof label, "finetune %s", glob ? glob : "all");
    undo_step u = {0};
    bd_status s = step_begin(ws, all, nq, label, &u);
    if (s == BD_OK)
        s = step_save_tensors(ws, &u);
    bd_finetune_report r = {0};
    if (s == BD_OK && opt->global)
        s = tune_layers(ws, all, nq, opt, &progress, &r);
    for (int j = 0; s == BD_OK && !opt->global && j < nq; j++)
        s = tune_layers(ws, &all[j], 1, opt, &progress, &r);
    if (s == BD_OK) {
        step_push(ws, &u);
        if (report)
            *report = r;
    } else if (u.saved) {
        step_restore(ws, &u);
    }
    bd_ws_checkpoint_write(ws, NULL);
    free(all);
    return s;
}

/* The student without the activation quantizers (act_quant.h) in front of
 * layers idx[0..n), and its executor, made before anything changes; *g
 * NULL when none of them has one. */
static bd_status student_without_act(const bd_workspace *ws, const int *idx, int n, bd_graph **g,
                                     bd_exec **ex)
{
    *g = NULL;
    *ex = NULL;
    bd_act_grid grid;
    int any = 0;
    for (int j = 0; j < n && !any; j++)
        any = bd_act_quant_find(ws->student, ws->layers[idx[j]].layer.node, &grid);
    if (!any)
        return BD_OK;
    BD_TRY(bd_graph_clone(g, ws->student));
    bd_status s = BD_OK;
    /* removing a quantizer moves the nodes after it: each layer's node is
     * found again */
    for (int j = 0; s == BD_OK && j < n; j++) {
        int k = node_of(*g, &ws->layers[idx[j]].layer);
        if (k >= 0)
            s = bd_act_quant_remove(*g, &k);
    }
    if (s == BD_OK)
        s = bd_exec_new(ex, *g, BD_EXEC_FUSE);
    if (s != BD_OK) {
        bd_graph_free(*g);
        *g = NULL;
    }
    return s;
}

bd_status bd_ws_reset(bd_workspace *ws, const char *glob)
{
    int *idx, n;
    BD_TRY(select_layers(ws, glob, 0, &idx, &n));
    char label[160];
    snprintf(label, sizeof label, "reset %s", glob ? glob : "all");
    bd_graph *student;
    bd_exec *student_ex;
    bd_status s = student_without_act(ws, idx, n, &student, &student_ex);
    if (s != BD_OK) {
        free(idx);
        return s;
    }
    undo_step u;
    s = step_begin(ws, idx, n, label, &u);
    if (s != BD_OK) {
        bd_exec_free(student_ex);
        bd_graph_free(student);
    }
    if (s == BD_OK) {
        bd_ws_lock(ws);
        if (student) { /* the step keeps the student with its quantizers */
            u.student = student;
            u.student_ex = student_ex;
            swap_student(ws, &u);
        }
        for (int j = 0; j < n; j++) {
            bd_ws_layer *l = &ws->layers[idx[j]];
            if (l->state == BD_STATE_FLOAT)
                continue;
            layer_clear(l);
            l->state = BD_STATE_FLOAT;
            install_weight(ws, idx[j]);
            student_changed(ws, idx[j]);
        }
        step_push(ws, &u);
        bd_ws_unlock(ws);
        bd_ws_checkpoint_write(ws, NULL);
    }
    free(idx);
    return s;
}

bd_status bd_ws_trial(bd_workspace *ws, int i, bd_format format, int d, const int *values, int n,
                      int iters, double *errors, int64_t *bytes)
{
    BD_TRY(need_model(ws));
    if (i < 0 || i >= ws->nlayers)
        return bd_fail(BD_EINVAL, "no layer %d (the model has %d)", i, ws->nlayers);
    const bd_ws_layer *l = &ws->layers[i];
    bd_quantize_options o = options_of(ws, l, iters);
    o.format = format;
    o.d = d;
    o.ints = bd_plan_int_default(8);
    if (format == BD_FMT_INT && bd_objective_check(&l->layer, BD_OBJ_FEEDBACK) != BD_OK)
        o.objective = BD_OBJ_WEIGHT;
    for (int j = 0; j < n; j++) {
        o.ints.bits = values[j];
        BD_TRY(format == BD_FMT_INT ? bd_int_spec_check(&l->layer, &o.ints)
                                    : bd_plan_check(&l->layer, d, values[j]));
    }
    bd_progress progress = start_op(ws);
    bd_calib *calib;
    BD_TRY(calib_of(ws, &progress, &calib));
    int64_t cd;
    int full_row;
    bd_quantize_capture_needs(&o, &cd, &full_row);
    bd_capture cap;
    BD_TRY(bd_calib_capture(calib, &l->layer, cd, full_row, &progress, &cap));
    const bd_tensor *orig = ws->original[i];
    float *w_hat = malloc(bd_tensor_nbytes(orig));
    bd_status s = w_hat ? BD_OK : bd_fail(BD_ENOMEM, "out of memory for layer '%s'", l->layer.name);
    for (int j = 0; s == BD_OK && j < n; j++) {
        o.k = values[j];
        o.ints.bits = values[j];
        bd_qlayer q;
        s = bd_quantize_fit(&cap, &l->layer, orig->data, &o, &progress, &q, w_hat);
        if (s == BD_OK) {
            errors[j] = q.rel_error;
            if (bytes)
                bytes[j] = bd_qlayer_bytes(&q);
            bd_qlayer_free(&q);
        }
    }
    free(w_hat);
    bd_capture_free(&cap);
    return s;
}

/* ---- training ------------------------------------------------------------------------ */

typedef struct train_run {
    bd_workspace *ws;
    bd_epoch_fn fn;
    void *user;
} train_run;

/* Each finished epoch goes into the workspace's record (room for every
 * epoch was made before the run) for another thread to draw, then to the
 * caller. */
static void train_epoch(void *user, const bd_training_epoch *e, int epochs)
{
    train_run *r = user;
    bd_workspace *ws = r->ws;
    bd_ws_lock(ws);
    if (ws->ntrain_epochs < ws->train_opt.epochs)
        ws->train_epochs[ws->ntrain_epochs++] = *e;
    bd_ws_unlock(ws);
    if (r->fn)
        r->fn(r->user, e, epochs);
}

/* Copies of the quantized layers' codebooks, per layer, for a run to train
 * (the run trains a PQ layer's centroids in place); *q stays NULL when
 * every layer is float. */
static bd_status codebook_copies(const bd_workspace *ws, bd_qlayer **q)
{
    *q = NULL;
    int any = 0;
    for (int i = 0; i < ws->nlayers; i++)
        any |= ws->layers[i].state != BD_STATE_FLOAT;
    if (!any)
        return BD_OK;
    if (!(*q = calloc((size_t)ws->nlayers + 1, sizeof **q)))
        return bd_fail(BD_ENOMEM, "out of memory");
    for (int i = 0; i < ws->nlayers; i++) {
        if (ws->layers[i].state == BD_STATE_FLOAT)
            continue;
        bd_status s = bd_qlayer_copy(&(*q)[i], &ws->layers[i].q);
        if (s != BD_OK) {
            for (int j = 0; j < i; j++)
                bd_qlayer_free(&(*q)[j]);
            free(*q);
            *q = NULL;
            return s;
        }
    }
    return BD_OK;
}

static void codebook_copies_free(bd_qlayer *q, int n)
{
    for (int i = 0; q && i < n; i++)
        bd_qlayer_free(&q[i]);
    free(q);
}

/* The undo step of a training run that ended in g: the layers the run left
 * a codebook in q for (q NULL: none) as they are, and a copy of every
 * student parameter g changed. */
static bd_status train_step(const bd_workspace *ws, const bd_graph *g, const bd_qlayer *q,
                            const char *label, undo_step *u)
{
    int *idx = malloc((size_t)ws->nlayers * sizeof *idx + 1), n = 0;
    if (!idx)
        return bd_fail(BD_ENOMEM, "out of memory");
    for (int i = 0; q && i < ws->nlayers; i++)
        if (q[i].k > 0)
            idx[n++] = i;
    bd_status s = step_begin(ws, idx, n, label, u);
    free(idx);
    BD_TRY(s);
    const bd_graph *st = ws->student;
    u->tensors = calloc((size_t)st->nvalues + 1, sizeof *u->tensors);
    if (!u->tensors)
        s = bd_fail(BD_ENOMEM, "out of memory");
    for (int v = 0; s == BD_OK && v < st->nvalues; v++) {
        const bd_tensor *t = st->values[v].init, *trained = g->values[v].init;
        if (!t || t->dtype != BD_F32 || memcmp(t->data, trained->data, bd_tensor_nbytes(t)) == 0)
            continue;
        s = bd_tensor_clone(&u->tensors[u->nt].copy, t);
        if (s == BD_OK)
            u->tensors[u->nt++].value = v;
    }
    if (s != BD_OK)
        step_clear(u);
    return s;
}

/* Takes a successful run's result (under the lock): the student's parameters
 * from g; g becomes every layer's float source (with q) or the teacher
 * (without: ex is its executor); the clone kept the student's value ids, so
 * the layers' weights are found by them. A layer with a codebook in q keeps
 * its source as it was (what it was quantized from); a PQ one takes its
 * trained codebook, as does a float one the run quantized (both tuned, the
 * latter's plan its int codec's), while an int one was frozen. original (nlayers, the run's) and g pass to
 * the undo step u, which is pushed. */
static void adopt_run(bd_workspace *ws, bd_graph *g, bd_qlayer *q, bd_exec *ex,
                      const bd_tensor **original, undo_step *u)
{
    for (int j = 0; j < u->nt; j++) {
        bd_tensor *t = ws->student->values[u->tensors[j].value].init;
        memcpy(t->data, g->values[u->tensors[j].value].init->data, bd_tensor_nbytes(t));
    }
    for (int i = 0; i < ws->nlayers; i++) {
        bd_tensor *w = g->values[ws->layers[i].layer.weight].init;
        if (q && q[i].k > 0) {
            memcpy(w->data, ws->original[i]->data, bd_tensor_nbytes(w));
            bd_ws_layer *l = &ws->layers[i];
            if (l->state == BD_STATE_FLOAT && q[i].format == BD_FMT_INT) {
                /* the run chose the codec: the plan says it, so that the
                 * table shows it and quantizing again keeps its bits */
                l->format = BD_FMT_INT;
                l->ints = q[i].ints;
                l->objective = q[i].objective;
            }
            if (q[i].format == BD_FMT_PQ || l->state == BD_STATE_FLOAT) {
                layer_clear(&ws->layers[i]);
                ws->layers[i].q = q[i];
                memset(&q[i], 0, sizeof q[i]);
                ws->layers[i].state = BD_STATE_TUNED;
                new_version(ws, &ws->layers[i]);
            }
        }
        original[i] = w;
    }
    u->original = original;
    u->source = q ? g : NULL;
    swap_sources(ws, u);
    if (!q) {
        u->teacher = g;
        u->teacher_ex = ex;
        u->trained_teacher = 1;
        swap_teacher(ws, u);
    }
    params_changed(ws);
    invalidate_all(ws);
    step_push(ws, u);
}

/* After a run adopted with quantized layers (the last undo step): every
 * quantized layer's inputs or codebook changed, so each one's error is
 * measured again. If that fails or is cancelled, the run is undone: the
 * operation as a whole leaves the workspace as it was. */
static bd_status measure_after_run(bd_workspace *ws, const bd_progress *p)
{
    int *idx = malloc((size_t)ws->nlayers * sizeof *idx + 1), n = 0;
    bd_status s = idx ? BD_OK : bd_fail(BD_ENOMEM, "out of memory");
    for (int i = 0; s == BD_OK && i < ws->nlayers; i++)
        if (ws->layers[i].state != BD_STATE_FLOAT)
            idx[n++] = i;
    if (s == BD_OK)
        s = measure_again(ws, idx, n, p);
    free(idx);
    if (s != BD_OK) {
        undo_step u = ws->undo[--ws->nundo];
        step_restore(ws, &u);
    }
    return s;
}

bd_status bd_ws_train(bd_workspace *ws, const bd_training_options *opt, bd_epoch_fn on_epoch,
                      void *user, bd_training_report *report)
{
    BD_TRY(need_model(ws));
    bd_dataset *train = NULL, *eval = NULL;
    BD_TRY(data_of(ws, BD_DATA_CALIB, &train));
    if (ws->spec[BD_DATA_EVAL])
        BD_TRY(data_of(ws, BD_DATA_EVAL, &eval));
    bd_training_options o = *opt;
    if (o.seed == 0)
        o.seed = ws->seed;
    if (o.eval_n == 0)
        o.eval_n = ws->n[BD_DATA_EVAL];
    if (!o.augment.is_set) /* as the run would, so that the record says what it did */
        bd_augment_default(ws->spec[BD_DATA_CALIB], &o.augment);
    bd_layer_plan *plan = malloc((size_t)ws->nlayers * sizeof *plan + 1);
    bd_training_epoch *epochs = calloc((size_t)(o.epochs > 0 ? o.epochs : 0) + 1, sizeof *epochs);
    const bd_tensor **original = calloc((size_t)ws->nlayers + 1, sizeof *original);
    bd_status s = plan && epochs && original ? BD_OK : bd_fail(BD_ENOMEM, "out of memory");
    for (int i = 0; s == BD_OK && i < ws->nlayers; i++)
        plan[i] = bd_ws_plan_of(&ws->layers[i]);
    /* the run trains copies, so a failure or a cancel leaves the model as it was */
    bd_graph *g = NULL;
    bd_qlayer *q = NULL;
    if (s == BD_OK)
        s = codebook_copies(ws, &q);
    if (s == BD_OK)
        s = bd_graph_clone(&g, ws->student);
    if (s != BD_OK) {
        codebook_copies_free(q, ws->nlayers);
        free(plan);
        free(epochs);
        free(original);
        return s;
    }
    bd_progress progress = start_op(ws);
    bd_ws_lock(ws);
    free(ws->train_epochs);
    ws->train_epochs = epochs;
    ws->ntrain_epochs = 0;
    ws->train_opt = o;
    ws->trained = ws->training = 1;
    bd_ws_unlock(ws);
    train_run run = {ws, on_epoch, user};
    bd_training_io io = {.train = train, .eval = eval, .pp = &ws->pp, .teacher = ws->teacher_ex,
                         .plan = plan, .q = q, .progress = &progress, .on_epoch = train_epoch,
                         .user = &run};
    bd_training_report r = {0};
    int cpu = !ws->device || ws->device_cannot;
    if (!cpu) {
        s = bd_training_run_with(bd_device_training_start, ws->device, g, &o, &io, &r);
        if (s == BD_EUNSUPPORTED) { /* an op the device lacks: the CPU trains fresh copies */
            bd_graph_free(g);
            g = NULL;
            codebook_copies_free(q, ws->nlayers);
            q = io.q = NULL;
            s = cpu_instead(ws, &progress, s);
            if (s == BD_OK)
                s = codebook_copies(ws, &q);
            io.q = q;
            if (s == BD_OK)
                s = bd_graph_clone(&g, ws->student);
            bd_ws_lock(ws);
            ws->ntrain_epochs = 0;
            bd_ws_unlock(ws);
            cpu = 1;
        }
    }
    if (s == BD_OK && cpu)
        s = bd_training_run(g, &o, &io, &r);
    bd_exec *ex = NULL;
    if (s == BD_OK && !q) /* the trained model will be the teacher */
        s = bd_exec_new(&ex, g, BD_EXEC_FUSE);
    undo_step u = {0};
    if (s == BD_OK)
        s = train_step(ws, g, q, "train", &u);
    bd_ws_lock(ws);
    ws->training = 0;
    const int adopted = s == BD_OK, quantized = q != NULL;
    if (adopted)
        adopt_run(ws, g, q, ex, original, &u);
    bd_ws_unlock(ws);
    codebook_copies_free(q, ws->nlayers);
    if (adopted && quantized)
        s = measure_after_run(ws, &progress);
    if (s == BD_OK) {
        bd_ws_checkpoint_write(ws, NULL);
        if (report)
            *report = r;
        else
            bd_training_report_free(&r);
    } else if (adopted) { /* undone: the step took the run's graphs */
        bd_training_report_free(&r);
    } else {
        step_clear(&u);
        bd_exec_free(ex);
        bd_graph_free(g);
        free(original);
        bd_training_report_free(&r);
    }
    free(plan);
    return s;
}

int bd_ws_last_training(const bd_workspace *ws, bd_training_options *opt,
                        const bd_training_epoch **epochs, int *n, int *running)
{
    if (!ws->trained)
        return 0;
    if (opt)
        *opt = ws->train_opt;
    if (epochs)
        *epochs = ws->train_epochs;
    if (n)
        *n = ws->ntrain_epochs;
    if (running)
        *running = ws->training;
    return 1;
}

/* ---- BitPruning ------------------------------------------------------------------------ */

typedef struct bitprune_run {
    bd_workspace *ws;
    bd_epoch_fn fn;
    void *user;
} bitprune_run;

static void bitprune_epoch(void *user, const bd_training_epoch *e, int epochs)
{
    bitprune_run *r = user;
    bd_workspace *ws = r->ws;
    bd_ws_lock(ws);
    if (ws->nbp_epochs < ws->bp_room)
        ws->bp_epochs[ws->nbp_epochs++] = *e;
    bd_ws_unlock(ws);
    if (r->fn)
        r->fn(r->user, e, epochs);
}

/* The live bit lengths are only valid during the callback: a copy is kept
 * for another thread to draw. */
static void bitprune_bits(void *user, const bd_bitprune_live *live)
{
    bd_workspace *ws = ((bitprune_run *)user)->ws;
    bd_ws_lock(ws);
    int n = live->nlayers < ws->nlayers ? live->nlayers : ws->nlayers;
    double *acts = ws->bp_bits + ws->nlayers;
    memcpy(ws->bp_bits, live->bits, (size_t)n * sizeof *ws->bp_bits);
    if (live->act_bits)
        memcpy(acts, live->act_bits, (size_t)n * sizeof *acts);
    ws->bp_live = *live;
    ws->bp_live.nlayers = n;
    ws->bp_live.bits = ws->bp_bits;
    ws->bp_live.act_bits = live->act_bits ? acts : NULL;
    bd_ws_unlock(ws);
}

/* The student with the activation quantizers a run learned (bitprune.h),
 * and its executor, made before anything changes. */
static bd_status quantized_student(const bd_workspace *ws, const bd_bitprune_report *r,
                                   bd_graph **g, bd_exec **ex)
{
    *ex = NULL;
    BD_TRY(bd_graph_clone(g, ws->student));
    bd_status s = bd_bitprune_act_insert(*g, r);
    if (s == BD_OK)
        s = bd_exec_new(ex, *g, BD_EXEC_FUSE);
    if (s != BD_OK) {
        bd_graph_free(*g);
        *g = NULL;
    }
    return s;
}

/* Every layer must be float: BitPruning learns from float weights, and a
 * codebook would be silently replaced. */
static bd_status all_float(const bd_workspace *ws)
{
    for (int i = 0; i < ws->nlayers; i++)
        if (ws->layers[i].state != BD_STATE_FLOAT)
            return bd_fail(BD_EINVAL,
                           "bitprune: layer %s is %s; BitPruning starts from float layers "
                           "('reset' it first)",
                           ws->layers[i].layer.name, bd_layer_state_name(ws->layers[i].state));
    return BD_OK;
}

bd_status bd_ws_bitprune(bd_workspace *ws, const bd_bitprune_options *opt, const char *checkpoint,
                         int resume, bd_epoch_fn on_epoch, void *user,
                         bd_bitprune_report *report)
{
    BD_TRY(need_model(ws));
    BD_TRY(all_float(ws));
    bd_dataset *train = NULL, *eval = NULL;
    BD_TRY(data_of(ws, BD_DATA_CALIB, &train));
    if (ws->spec[BD_DATA_EVAL])
        BD_TRY(data_of(ws, BD_DATA_EVAL, &eval));
    bd_bitprune_options o = *opt;
    if (o.train.seed == 0)
        o.train.seed = ws->seed;
    if (o.train.eval_n == 0)
        o.train.eval_n = ws->n[BD_DATA_EVAL];
    if (!o.train.augment.is_set)
        bd_augment_default(ws->spec[BD_DATA_CALIB], &o.train.augment);
    int room = (o.train.epochs > 0 ? o.train.epochs : 0) +
               (o.finetune_epochs > 0 ? o.finetune_epochs : 0);
    bd_training_epoch *epochs = calloc((size_t)room + 1, sizeof *epochs);
    double *bits = calloc(2 * (size_t)ws->nlayers + 1, sizeof *bits); /* weights', inputs' */
    uint8_t *skip = calloc((size_t)ws->nlayers + 1, 1);
    bd_qlayer *q = calloc((size_t)ws->nlayers + 1, sizeof *q);
    const bd_tensor **original = calloc((size_t)ws->nlayers + 1, sizeof *original);
    bd_status s = epochs && bits && skip && q && original ? BD_OK
                                                          : bd_fail(BD_ENOMEM, "out of memory");
    for (int i = 0; s == BD_OK && i < ws->nlayers; i++)
        skip[i] = !ws->layers[i].quantize;
    /* the run trains a copy, so a failure or a cancel leaves the model as it was */
    bd_graph *g = NULL;
    if (s == BD_OK)
        s = bd_graph_clone(&g, ws->student);
    if (s != BD_OK) {
        free(epochs);
        free(bits);
        free(skip);
        free(q);
        free(original);
        return s;
    }
    bd_progress progress = start_op(ws);
    bd_ws_lock(ws);
    free(ws->bp_epochs);
    free(ws->bp_bits);
    ws->bp_epochs = epochs;
    ws->bp_bits = bits;
    ws->nbp_epochs = 0;
    ws->bp_room = room;
    memset(&ws->bp_live, 0, sizeof ws->bp_live);
    ws->bp_opt = o;
    ws->bitpruned = ws->bitpruning = 1;
    bd_ws_unlock(ws);
    bitprune_run run = {ws, on_epoch, user};
    bd_bitprune_io io = {.train = train, .eval = eval, .pp = &ws->pp, .teacher = ws->teacher_ex,
                         .skip = skip, .progress = &progress, .on_epoch = bitprune_epoch,
                         .on_bits = bitprune_bits, .user = &run, .checkpoint = checkpoint,
                         .resume = resume};
    bd_bitprune_report r = {0};
    s = bd_bitprune_run(g, &o, &io, q, &r);
    bd_graph *student = NULL;
    bd_exec *student_ex = NULL;
    if (s == BD_OK && o.activations)
        s = quantized_student(ws, &r, &student, &student_ex);
    undo_step u = {0};
    if (s == BD_OK)
        s = train_step(ws, g, q, "bitprune", &u);
    bd_ws_lock(ws);
    ws->bitpruning = 0;
    const int adopted = s == BD_OK;
    if (adopted && student) { /* the run's parameters go into the new one */
        u.student = student;
        u.student_ex = student_ex;
        student = NULL;
        student_ex = NULL;
        swap_student(ws, &u);
    }
    if (adopted)
        adopt_run(ws, g, q, NULL, original, &u);
    bd_ws_unlock(ws);
    bd_exec_free(student_ex);
    bd_graph_free(student);
    codebook_copies_free(q, ws->nlayers);
    free(skip);
    if (adopted)
        s = measure_after_run(ws, &progress);
    if (s == BD_OK) {
        bd_ws_checkpoint_write(ws, NULL);
        if (report)
            *report = r;
        else
            bd_bitprune_report_free(&r);
    } else if (adopted) { /* undone: the step took the run's graphs */
        bd_bitprune_report_free(&r);
    } else {
        step_clear(&u);
        bd_graph_free(g);
        free(original);
        bd_bitprune_report_free(&r);
    }
    return s;
}

int bd_ws_last_bitprune(const bd_workspace *ws, bd_bitprune_options *opt, bd_bitprune_live *live,
                        const bd_training_epoch **epochs, int *n, int *running)
{
    if (!ws->bitpruned)
        return 0;
    if (opt)
        *opt = ws->bp_opt;
    if (live)
        *live = ws->bp_live;
    if (epochs)
        *epochs = ws->bp_epochs;
    if (n)
        *n = ws->nbp_epochs;
    if (running)
        *running = ws->bitpruning;
    return 1;
}

/* ---- results ------------------------------------------------------------------------- */

static bd_status cpu_forward(void *ex, const bd_tensor *x, bd_tensor **y)
{
    return bd_exec_run1(ex, x, y);
}

static bd_status gpu_forward(void *dx, const bd_tensor *x, bd_tensor **y)
{
    return bd_dexec_run1(dx, x, y);
}

/* Top-1 and top-5 of one model (who: "teacher" or "student"): on the GPU
 * when dx is set, else ex. */
static bd_status accuracy(const char *who, bd_exec *ex, bd_dexec *dx, const bd_dataset *d,
                          int64_t n, int batch, const bd_progress *p, bd_accuracy *out)
{
    bd_eval_options eo = {.limit = n, .batch = batch, .who = who};
    bd_eval_result r;
    if (dx)
        BD_TRY(bd_dexec_sync(dx));
    BD_TRY(bd_evaluate_with(dx ? gpu_forward : cpu_forward, dx ? (void *)dx : (void *)ex, d, &eo,
                            p, &r));
    out->valid = 1;
    out->n = r.n;
    out->top1 = 100.0 * (double)r.top1 / (double)r.n;
    out->top5 = 100.0 * (double)r.top5 / (double)r.n;
    bd_eval_result_free(&r);
    return BD_OK;
}

bd_status bd_ws_eval(bd_workspace *ws, int64_t n, bd_accuracy *teacher, bd_accuracy *student)
{
    bd_dataset *d = NULL;
    BD_TRY(data_of(ws, BD_DATA_EVAL, &d));
    if (n <= 0)
        n = ws->n[BD_DATA_EVAL];
    bd_progress progress = start_op(ws);
    char key[600];
    snprintf(key, sizeof key, "%s#%lld", ws->spec[BD_DATA_EVAL], (long long)n);
    bd_accuracy t = ws->teacher_acc, st;
    int on;
    BD_TRY(device_execs(ws, &progress, &on));
    if (!t.valid || !ws->teacher_acc_key || strcmp(key, ws->teacher_acc_key) != 0)
        BD_TRY(accuracy("teacher", ws->teacher_ex, on ? ws->dev_teacher : NULL, d, n, ws->batch,
                        &progress, &t));
    BD_TRY(accuracy("student", ws->student_ex, on ? ws->dev_student : NULL, d, n, ws->batch,
                    &progress, &st));
    char *k = bd_strdup(key);
    if (!k)
        return bd_fail(BD_ENOMEM, "out of memory");
    bd_ws_point p = {.acc = st};
    bd_model_size size;
    bd_ws_size(ws, &size);
    p.bytes = size.compressed_bytes;
    snprintf(p.label, sizeof p.label, "%s", bd_ws_undo_label(ws) ? bd_ws_undo_label(ws) : "float");
    bd_ws_lock(ws);
    free(ws->teacher_acc_key);
    ws->teacher_acc_key = k;
    ws->teacher_acc = t;
    ws->student_acc = st;
    if (ws->npoints == BD_WS_MAX_POINTS)
        memmove(ws->points, ws->points + 1, (BD_WS_MAX_POINTS - 1) * sizeof *ws->points);
    ws->points[ws->npoints < BD_WS_MAX_POINTS ? ws->npoints++ : BD_WS_MAX_POINTS - 1] = p;
    bd_ws_unlock(ws);
    if (teacher)
        *teacher = t;
    if (student)
        *student = st;
    return BD_OK;
}

const bd_ws_point *bd_ws_points(const bd_workspace *ws, int *n)
{
    *n = ws->npoints;
    return ws->points;
}

void bd_ws_last_eval(const bd_workspace *ws, bd_accuracy *teacher, bd_accuracy *student)
{
    if (teacher)
        *teacher = ws->teacher_acc;
    if (student)
        *student = ws->student_acc;
}

/* Top-5 of one model on one preprocessed input. */
static bd_status top5(bd_exec *ex, const bd_tensor *x, bd_prediction *p)
{
    bd_tensor *y;
    BD_TRY(bd_exec_run1(ex, x, &y));
    bd_status s = BD_OK;
    if (y->dtype != BD_F32 || y->ndim != 2 || y->dims[0] != 1) {
        s = bd_fail(BD_EFORMAT, "the model's output is not [1, classes] float32 logits");
    } else {
        int classes = (int)y->dims[1];
        float *prob = malloc((size_t)classes * sizeof *prob);
        if (!prob) {
            s = bd_fail(BD_ENOMEM, "out of memory");
        } else {
            bd_softmax(y->data, classes, prob);
            p->k = classes < BD_TOPK ? classes : BD_TOPK;
            bd_topk(prob, classes, p->k, p->cls);
            for (int j = 0; j < p->k; j++)
                p->prob[j] = prob[p->cls[j]];
            free(prob);
        }
    }
    bd_tensor_free(y);
    return s;
}

static bd_status predict_both(bd_workspace *ws, const bd_tensor *x, bd_prediction *teacher,
                              bd_prediction *student)
{
    bd_prediction t, s;
    BD_TRY(top5(ws->teacher_ex, x, &t));
    BD_TRY(top5(ws->student_ex, x, &s));
    if (teacher)
        *teacher = t;
    if (student)
        *student = s;
    return BD_OK;
}

bd_status bd_ws_predict(bd_workspace *ws, const char *image, bd_prediction *teacher,
                        bd_prediction *student)
{
    BD_TRY(need_model(ws));
    bd_image img;
    BD_TRY(bd_image_load(image, &img));
    int w, h;
    bd_preprocess_size(&ws->pp, img.width, img.height, &w, &h);
    int64_t dims[4] = {1, ws->pp.channels, h, w};
    bd_tensor *x = NULL;
    bd_status s = bd_tensor_new_raw(&x, BD_F32, 4, dims, image);
    if (s == BD_OK)
        s = bd_image_preprocess(&img, &ws->pp, x->data);
    if (s == BD_OK)
        s = predict_both(ws, x, teacher, student);
    bd_tensor_free(x);
    bd_image_free(&img);
    return s;
}

bd_status bd_ws_sample(bd_workspace *ws, int64_t i, bd_image *img, int *label,
                       bd_prediction *teacher, bd_prediction *student)
{
    bd_dataset *d = NULL;
    BD_TRY(data_of(ws, BD_DATA_EVAL, &d));
    if (i < 0 || i >= bd_dataset_count(d))
        return bd_fail(BD_EINVAL, "%s has no sample %lld", ws->spec[BD_DATA_EVAL], (long long)i);
    bd_tensor *x;
    BD_TRY(bd_dataset_get(d, i, &x, label));
    bd_status s = predict_both(ws, x, teacher, student);
    bd_tensor_free(x);
    if (s == BD_OK && img)
        s = bd_dataset_image(d, i, img);
    return s;
}

const char *bd_ws_class_name(const bd_workspace *ws, int c)
{
    if (c >= 0 && c < ws->nclasses)
        return ws->classes[c];
    const bd_dataset *d = ws->data[BD_DATA_EVAL];
    return d ? bd_dataset_class_name(d, c) : NULL;
}

/* The codebooks of the quantized layers, NULL for float ones. */
static bd_status codebooks(const bd_workspace *ws, const bd_qlayer ***qp, bd_layer **ls)
{
    *qp = calloc((size_t)ws->nlayers + 1, sizeof **qp);
    *ls = malloc((size_t)ws->nlayers * sizeof **ls + 1);
    if (!*qp || !*ls) {
        free(*qp);
        free(*ls);
        return bd_fail(BD_ENOMEM, "out of memory");
    }
    for (int i = 0; i < ws->nlayers; i++) {
        (*ls)[i] = ws->layers[i].layer;
        if (ws->layers[i].state != BD_STATE_FLOAT)
            (*qp)[i] = &ws->layers[i].q;
    }
    return BD_OK;
}

void bd_ws_size(const bd_workspace *ws, bd_model_size *out)
{
    memset(out, 0, sizeof *out);
    const bd_qlayer **qp;
    bd_layer *ls;
    if (!ws->student || codebooks(ws, &qp, &ls) != BD_OK)
        return;
    bd_model_size_compute(ws->student, ls, ws->nlayers, qp, out);
    free(qp);
    free(ls);
}

bd_status bd_ws_export(bd_workspace *ws, bd_graph **out)
{
    BD_TRY(need_model(ws));
    const bd_qlayer **qp;
    bd_layer *ls;
    BD_TRY(codebooks(ws, &qp, &ls));
    *out = NULL;
    bd_status s = bd_compressed_export(ws->student, ls, ws->nlayers, qp, out);
    /* where the original is, so that loading this file resumes the work;
     * a teacher trained here is no file's, and the one the loaded file
     * named is not the teacher any more */
    if (s == BD_OK && ws->teacher_path)
        s = bd_graph_set_meta(*out, BD_META_TEACHER, ws->teacher_path);
    if (s == BD_OK && ws->trained_teacher)
        bd_graph_del_meta(*out, BD_META_TEACHER);
    if (s != BD_OK) {
        bd_graph_free(*out);
        *out = NULL;
    }
    free(qp);
    free(ls);
    return s;
}

bd_status bd_ws_save(bd_workspace *ws, const char *path, int decoded)
{
    BD_TRY(need_model(ws));
    if (bd_dist_rank() != 0) /* rank 0's model is every rank's, and it alone writes */
        return BD_OK;
    bd_status s = BD_OK;
    if (decoded) {
        s = bd_onnx_save(ws->student, path);
    } else {
        bd_graph *out;
        BD_TRY(bd_ws_export(ws, &out));
        s = bd_onnx_save(out, path);
        bd_graph_free(out);
    }
    char *copy = s == BD_OK ? bd_strdup(path) : NULL;
    if (s == BD_OK && !copy)
        return bd_fail(BD_ENOMEM, "out of memory");
    if (s == BD_OK) {
        bd_ws_lock(ws);
        free(ws->saved_path);
        ws->saved_path = copy;
        bd_disk_size_of(path, ws->original_file, &ws->saved_size);
        mark_saved(ws);
        bd_ws_unlock(ws);
    }
    return s;
}

const char *bd_ws_original_file(const bd_workspace *ws) { return ws->original_file; }

const char *bd_ws_last_saved(const bd_workspace *ws, bd_disk_size *size)
{
    if (size)
        *size = ws->saved_size;
    return ws->saved_path;
}

/* ---- sensitivity ------------------------------------------------------------------ */

/* A layer's last measure and the plan it was measured with. */
struct sensitivity_entry {
    int measured, stale;
    bd_sensitivity s;
    bd_layer_plan plan;
};

static void sensitivity_stale(bd_workspace *ws)
{
    for (int i = 0; ws->sens && i < ws->nlayers; i++)
        ws->sens[i].stale = 1;
}

/* Whether two plans give a layer the same codebook: the format's settings
 * and the objective (the quantize flag and the note do not count). */
static int same_fit(const bd_layer_plan *a, const bd_layer_plan *b)
{
    if (a->format != b->format || a->objective != b->objective)
        return 0;
    if (a->format == BD_FMT_INT)
        return a->ints.bits == b->ints.bits && a->ints.per_channel == b->ints.per_channel &&
               a->ints.symmetric == b->ints.symmetric;
    return a->d == b->d && a->k == b->k;
}

int bd_ws_last_sensitivity(const bd_workspace *ws, int i, bd_sensitivity *s, int *stale)
{
    if (!ws->sens || i < 0 || i >= ws->nlayers || !ws->sens[i].measured)
        return 0;
    const struct sensitivity_entry *e = &ws->sens[i];
    bd_layer_plan now = bd_ws_plan_of(&ws->layers[i]);
    if (s)
        *s = e->s;
    if (stale)
        *stale = e->stale || !same_fit(&e->plan, &now);
    return 1;
}

void bd_sensitivity_report_free(bd_sensitivity_report *r)
{
    free(r->layers);
    memset(r, 0, sizeof *r);
}

/* One step of the measure (the float model's evaluation, then each
 * layer's quantization and evaluation) reports as a step of the whole. */
typedef struct sensitivity_step {
    const bd_progress *outer;
    char what[BD_LAYER_NAME_MAX + 32];
    int step, steps;
} sensitivity_step;

static void sensitivity_progress(void *user, const char *stage, int64_t done, int64_t total,
                                 const char *message, double metric)
{
    const sensitivity_step *st = user;
    char msg[BD_LAYER_NAME_MAX + 256];
    if (total > 0)
        snprintf(msg, sizeof msg, "%s: %s %lld/%lld", st->what, stage, (long long)done,
                 (long long)total);
    else
        snprintf(msg, sizeof msg, "%s: %s %s", st->what, stage, message ? message : "");
    if (st->outer->fn)
        st->outer->fn(st->outer->user, "sensitivity", st->step, st->steps, msg, metric);
}

/* Quantizes layer l of copy (every layer float) by its plan, evaluates
 * copy, and puts the layer's float weight back. */
static bd_status measure_layer(bd_workspace *ws, int i, bd_graph *copy, bd_calib *calib,
                               bd_exec *ex, bd_dexec *dx, const bd_dataset *eval, int64_t n,
                               const bd_progress *progress, bd_sensitivity *out)
{
    const bd_ws_layer *l = &ws->layers[i];
    bd_quantize_options o = options_of(ws, l, 0);
    bd_qlayer q;
    BD_TRY(bd_quantize_layer(calib, copy, &l->layer, ws->original[i], &o, progress, &q));
    out->layer = i;
    out->rel_error = q.rel_error;
    bd_qlayer_free(&q);
    bd_accuracy a;
    bd_status s = accuracy("layer alone", ex, dx, eval, n, ws->batch, progress, &a);
    bd_tensor *w = copy->values[l->layer.weight].init;
    memcpy(w->data, ws->original[i]->data, bd_tensor_nbytes(w));
    bd_calib_changed(calib, l->layer.node);
    out->top1 = a.top1;
    return s;
}

/* Remembers the measures for bd_ws_last_sensitivity. */
static bd_status sensitivity_keep(bd_workspace *ws, const bd_sensitivity *m, int count)
{
    struct sensitivity_entry *e = ws->sens;
    if (!e && !(e = calloc((size_t)ws->nlayers + 1, sizeof *e)))
        return bd_fail(BD_ENOMEM, "out of memory");
    bd_ws_lock(ws);
    ws->sens = e;
    for (int j = 0; j < count; j++) {
        struct sensitivity_entry *x = &e[m[j].layer];
        x->measured = 1;
        x->stale = 0;
        x->s = m[j];
        x->plan = bd_ws_plan_of(&ws->layers[m[j].layer]);
    }
    bd_ws_unlock(ws);
    return BD_OK;
}

bd_status bd_ws_sensitivity(bd_workspace *ws, const char *glob, int64_t n,
                            bd_sensitivity_report *report)
{
    memset(report, 0, sizeof *report);
    int *idx, count;
    BD_TRY(select_layers(ws, glob, 1, &idx, &count));
    bd_progress progress = start_op(ws);
    bd_dataset *eval = NULL;
    bd_graph *copy = NULL;
    bd_exec *ex = NULL;
    bd_dexec *dx = NULL;
    bd_calib *calib = NULL;
    bd_accuracy ref = {0};
    bd_sensitivity *m = calloc((size_t)count, sizeof *m);
    bd_status s = m ? BD_OK : bd_fail(BD_ENOMEM, "out of memory");
    for (int j = 0; s == BD_OK && j < count; j++)
        s = bd_plan_check(&ws->layers[idx[j]].layer, ws->layers[idx[j]].d,
                          ws->layers[idx[j]].k);
    if (s == BD_OK)
        s = data_of(ws, BD_DATA_EVAL, &eval);
    if (s == BD_OK && n <= 0) {
        int64_t set = bd_ws_data_n(ws, BD_DATA_EVAL);
        n = set > 0 && set < BD_SENSITIVITY_IMAGES ? set : BD_SENSITIVITY_IMAGES;
    }
    /* the student with every layer float: quantizing one layer of it is
     * the one change measured */
    if (s == BD_OK)
        s = bd_graph_clone(&copy, ws->student);
    for (int i = 0; s == BD_OK && i < ws->nlayers; i++) {
        bd_tensor *w = copy->values[ws->layers[i].layer.weight].init;
        memcpy(w->data, ws->original[i]->data, bd_tensor_nbytes(w));
    }
    if (s == BD_OK)
        s = bd_exec_new(&ex, copy, BD_EXEC_FUSE);
    if (s == BD_OK && ws->device && !ws->device_cannot &&
        (s = bd_dexec_new(ws->device, copy, &dx)) != BD_OK) {
        dx = NULL;
        s = cpu_instead(ws, &progress, s);
    }
    if (s == BD_OK)
        s = calib_new(ws, &progress, copy, &calib);
    sensitivity_step st = {&progress, "the float model", 0, count + 1};
    bd_progress inner = {sensitivity_progress, &st, progress.cancel};
    if (s == BD_OK)
        s = accuracy("float model", ex, dx, eval, n, ws->batch, &inner, &ref);
    for (int j = 0; s == BD_OK && j < count; j++) {
        snprintf(st.what, sizeof st.what, "%s (%d of %d)", ws->layers[idx[j]].layer.name, j + 1,
                 count);
        st.step = j + 1;
        s = measure_layer(ws, idx[j], copy, calib, ex, dx, eval, n, &inner, &m[j]);
        m[j].drop = ref.top1 - m[j].top1;
    }
    if (s == BD_OK)
        s = sensitivity_keep(ws, m, count);
    if (s == BD_OK) {
        bd_progress_report(&progress, "sensitivity", count + 1, count + 1, "done", 0);
        report->reference = ref;
        report->n = count;
        report->layers = m;
        m = NULL;
    }
    bd_calib_free(calib); /* it runs the copy: it goes first */
    bd_dexec_free(dx);
    bd_exec_free(ex);
    bd_graph_free(copy);
    free(m);
    free(idx);
    return s;
}

/* ---- settings ------------------------------------------------------------------------ */

/* Puts dev (NULL: the CPU) in use; what ran on the old device is dropped. */
static void use_device(bd_workspace *ws, bd_device *dev)
{
    bd_calib_free(ws->calib); /* it runs on the device it was made for */
    ws->calib = NULL;
    drop_device_execs(ws);
    bd_device *old = ws->device;
    bd_ws_lock(ws); /* the TUI draws the device's description */
    ws->device = dev;
    bd_ws_unlock(ws);
    bd_device_close(old);
}

bd_status bd_ws_device(bd_workspace *ws, const char *name)
{
    if (strcmp(name, "cpu") == 0) {
        if (ws->device)
            use_device(ws, NULL);
        return BD_OK;
    }
    if (strcmp(name, "cuda") != 0)
        return bd_fail(BD_EINVAL, "unknown device '%s' (cpu or cuda)", name);
    if (ws->device)
        return BD_OK;
    bd_device *dev;
    bd_status s = bd_device_open(name, &dev);
    if (s != BD_OK) {
        char why[512];
        snprintf(why, sizeof why, "%s", bd_error_message());
        return bd_fail(s, "device cuda: %s; staying on the CPU", why);
    }
    use_device(ws, dev);
    return BD_OK;
}

const char *bd_ws_device_name(const bd_workspace *ws) { return ws->device ? "cuda" : "cpu"; }

const char *bd_ws_device_describe(const bd_workspace *ws, char *buf, size_t cap)
{
    if (ws->device)
        snprintf(buf, cap, "cuda %s", bd_device_describe(ws->device));
    else
        snprintf(buf, cap, "cpu %d threads", ws->threads);
    return buf;
}

bd_status bd_ws_threads(bd_workspace *ws, int n)
{
    if (n < 1 || n > 1024)
        return bd_fail(BD_EINVAL, "threads must be 1 to 1024, not %d", n);
    bd_threads_set(n);
    ws->threads = n;
    return BD_OK;
}

int bd_ws_get_threads(const bd_workspace *ws) { return ws->threads; }

bd_status bd_ws_batch(bd_workspace *ws, int n)
{
    if (n < 1 || n > 65536)
        return bd_fail(BD_EINVAL, "batch must be 1 to 65536, not %d", n);
    if (n != ws->batch) {
        ws->batch = n;
        bd_calib_free(ws->calib); /* its held runs are cut in batches */
        ws->calib = NULL;
    }
    return BD_OK;
}

void bd_ws_compare_objectives(bd_workspace *ws, int on) { ws->compare = on != 0; }

void bd_ws_seed(bd_workspace *ws, uint64_t seed)
{
    if (seed != ws->seed) {
        ws->seed = seed;
        bd_calib_free(ws->calib); /* the calibration sample depends on it */
        ws->calib = NULL;
    }
}

uint64_t bd_ws_get_seed(const bd_workspace *ws) { return ws->seed; }

bd_status bd_ws_search(bd_workspace *ws, int restarts, double tol)
{
    BD_TRY(bd_pq_check_search(restarts, tol));
    if (restarts < 1)
        return bd_fail(BD_EINVAL, "restarts=%d is outside 1..%d", restarts, BD_PQ_MAX_RESTARTS);
    ws->restarts = restarts;
    ws->tol = tol;
    return BD_OK;
}

void bd_ws_get_search(const bd_workspace *ws, int *restarts, double *tol)
{
    *restarts = ws->restarts;
    *tol = ws->tol;
}
