/* Training checkpoints (training.h): a run's state after an epoch, so that
 * --resume continues exactly where an uninterrupted run would be. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fileio.h"
#include "training.h"

static int float_init(const bd_graph *g, int v)
{
    return v >= 0 && g->values[v].init && g->values[v].init->dtype == BD_F32;
}

/* ---- checkpoints ------------------------------------------------------------
 * A checkpoint holds every float initializer of the model by name (weights,
 * biases, BatchNorm parameters and running statistics), the momentum of
 * every trained one, the epochs done with their results, and what the
 * stream of random choices depends on (seed, steps per epoch), checked on
 * resume, and last the state of the run's weight hook, if it has one
 * (BitPruning's bit lengths; a length and the hook's bytes; a checkpoint
 * that ends before them has none). Everything else a run does is a function
 * of those. */

static const char magic[8] = {'B', 'D', 'T', 'R', 'A', 'I', 'N', '1'};

typedef struct buf {
    unsigned char *p;
    size_t len, cap;
    int failed;
} buf;

static void put(buf *b, const void *v, size_t n)
{
    if (b->failed)
        return;
    if (b->len + n > b->cap) {
        size_t cap = (b->cap ? b->cap * 2 : 4096) + n;
        unsigned char *p = realloc(b->p, cap);
        if (!p) {
            b->failed = 1;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, v, n);
    b->len += n;
}

static void put_i64(buf *b, int64_t v) { put(b, &v, sizeof v); }

static int param_index(const bd_training_state *r, int v)
{
    for (int i = 0; i < r->nparams; i++)
        if (r->params[i] == v)
            return i;
    return -1;
}

bd_status bd_training_checkpoint_write(const bd_training_state *r, const char *path, const bd_training_epoch *rec,
                                  int done)
{
    buf b = {0};
    put(&b, magic, sizeof magic);
    put_i64(&b, done);
    put_i64(&b, r->steps);
    put_i64(&b, (int64_t)r->o->seed);
    for (int e = 0; e < done; e++)
        put(&b, &rec[e], sizeof rec[e]);
    int64_t nv = 0;
    for (int v = 0; v < r->g->nvalues; v++)
        nv += float_init(r->g, v);
    put_i64(&b, nv);
    for (int v = 0; v < r->g->nvalues; v++) {
        if (!float_init(r->g, v))
            continue;
        const bd_tensor *t = r->g->values[v].init;
        const int64_t len = (int64_t)strlen(r->g->values[v].name), count = bd_tensor_count(t);
        const int pi = param_index(r, v);
        put_i64(&b, len);
        put(&b, r->g->values[v].name, (size_t)len);
        put_i64(&b, count);
        put(&b, t->data, (size_t)count * sizeof(float));
        put_i64(&b, pi >= 0 && r->moment[pi]);
        if (pi >= 0 && r->moment[pi])
            put(&b, r->moment[pi], (size_t)count * sizeof(float));
    }
    put_i64(&b, r->ncb);
    for (int i = 0; i < r->ncb; i++) {
        const bd_training_codebook *c = &r->cb[i];
        const char *name = r->layers[c->layer].name;
        const int64_t count = (int64_t)r->io->q[c->layer].k * r->io->q[c->layer].d;
        put_i64(&b, (int64_t)strlen(name));
        put(&b, name, strlen(name));
        put_i64(&b, count);
        put(&b, c->master, (size_t)count * sizeof(float));
        put(&b, c->moment, (size_t)count * sizeof(float));
    }
    const bd_training_hook *h = r->io->hook;
    void *state = NULL;
    size_t state_len = 0;
    bd_status s = h && h->save ? h->save(h->ctx, done, &state, &state_len) : BD_OK;
    put_i64(&b, (int64_t)state_len);
    if (state_len)
        put(&b, state, state_len);
    free(state);
    if (s == BD_OK && b.failed)
        s = bd_fail(BD_ENOMEM, "out of memory for the checkpoint %s", path);
    if (s == BD_OK) {
        const void *chunk = b.p;
        s = bd_write_file_atomic(path, 1, &chunk, &b.len);
    }
    free(b.p);
    return s;
}

typedef struct reader {
    const unsigned char *p;
    size_t len, at;
} reader;

static int take(reader *rd, void *out, size_t n)
{
    if (rd->len - rd->at < n)
        return 0;
    memcpy(out, rd->p + rd->at, n);
    rd->at += n;
    return 1;
}

/* The codebooks' records: every quantized layer's, by name, in order. */
static bd_status read_codebooks(bd_training_state *r, reader *rd, const char *path, int copy)
{
    int64_t n = -1;
    if (!take(rd, &n, 8) || n != r->ncb)
        return bd_fail(BD_EINVAL, "%s holds %" PRId64 " codebooks; the model has %d quantized "
                       "pq layers", path, n, r->ncb);
    for (int i = 0; i < r->ncb; i++) {
        const bd_training_codebook *c = &r->cb[i];
        const char *name = r->layers[c->layer].name;
        const int64_t want = (int64_t)r->io->q[c->layer].k * r->io->q[c->layer].d;
        int64_t len = 0, count = 0;
        char got[BD_LAYER_NAME_MAX];
        if (!take(rd, &len, 8) || len < 0 || len >= (int64_t)sizeof got ||
            !take(rd, got, (size_t)len))
            return bd_fail(BD_EFORMAT, "%s: truncated", path);
        got[len] = '\0';
        const size_t bytes = (size_t)want * sizeof(float);
        if (strcmp(got, name) || !take(rd, &count, 8) || count != want ||
            rd->len - rd->at < 2 * bytes)
            return bd_fail(BD_EINVAL, "%s: the codebook of '%s' does not match this model's",
                           path, name);
        if (copy) {
            memcpy(c->master, rd->p + rd->at, bytes);
            memcpy(c->moment, rd->p + rd->at + bytes, bytes);
        }
        rd->at += 2 * bytes;
    }
    return BD_OK;
}

static int skip_floats(reader *rd, int64_t count)
{
    if (count < 0 || count > ((int64_t)1 << 40) ||
        (uint64_t)count * sizeof(float) > rd->len - rd->at)
        return 0;
    rd->at += (size_t)count * sizeof(float);
    return 1;
}

/* Past a name and a count, then `per` runs of count floats; *count gets it. */
static int skip_named(reader *rd, int per, int64_t *count)
{
    int64_t len;
    if (!take(rd, &len, 8) || len < 0 || (uint64_t)len > rd->len - rd->at)
        return 0;
    rd->at += (size_t)len;
    if (!take(rd, count, 8))
        return 0;
    for (int i = 0; i < per; i++)
        if (!skip_floats(rd, *count))
            return 0;
    return 1;
}

/* Where the hook's state lies in a checkpoint (*len 0: none), past every
 * other record; 0 when the file is not a checkpoint or is cut short. */
static int locate_hook_state(const unsigned char *p, size_t n, size_t *at, int64_t *len)
{
    reader rd = {p, n, 0};
    char m[8];
    int64_t done = 0, skip[2], count = 0;
    int ok = take(&rd, m, sizeof m) && !memcmp(m, magic, sizeof m) && take(&rd, &done, 8) &&
             take(&rd, skip, sizeof skip) && done >= 0 && done <= 1000000 &&
             (uint64_t)done * sizeof(bd_training_epoch) <= rd.len - rd.at;
    if (ok)
        rd.at += (size_t)done * sizeof(bd_training_epoch);
    ok = ok && take(&rd, &count, 8) && count >= 0;
    for (int64_t i = 0, c = 0, has = 0; ok && i < count; i++) /* a tensor, its momentum if any */
        ok = skip_named(&rd, 1, &c) && take(&rd, &has, 8) && (!has || skip_floats(&rd, c));
    ok = ok && take(&rd, &count, 8) && count >= 0;
    for (int64_t i = 0, c = 0; ok && i < count; i++)
        ok = skip_named(&rd, 2, &c); /* a codebook: its centroids and their momentum */
    *len = 0;
    if (ok && rd.at < rd.len)
        ok = take(&rd, len, 8) && *len >= 0 && (uint64_t)*len <= rd.len - rd.at;
    *at = rd.at;
    return ok;
}

/* The hook's state at [at, at + len): checked against the run's hook
 * (apply 0) or put back. */
static bd_status read_hook_state(bd_training_state *r, const unsigned char *p, size_t at,
                                 int64_t len, const char *path, int apply)
{
    const bd_training_hook *h = r->io->hook;
    bd_status s = h ? h->load(h->ctx, p + at, (size_t)len, apply) : BD_OK;
    return s == BD_OK ? s : bd_error_context(s, "%s", path);
}

/* A checkpoint of the kind of run this is: with the state of a hook when
 * the run has one, without when not. Checked first: any other record of
 * another kind of run would fail on something less telling. */
static bd_status check_kind(const bd_training_state *r, int64_t len, const char *path)
{
    const bd_training_hook *h = r->io->hook;
    if (h && len == 0)
        return bd_fail(BD_EINVAL, "%s was written by a plain training run, not by this kind of run",
                       path);
    if (!h && len > 0)
        return bd_fail(BD_EINVAL, "%s was written by a run that transforms the weights "
                                  "(bitprune), not by a plain training run",
                       path);
    return BD_OK;
}

/* Reads the checkpoint into the model and optimiser, all or nothing:
 * every record is checked against the model before anything is copied. */
bd_status bd_training_checkpoint_read(bd_training_state *r, const char *path, bd_training_epoch **rec, int *done)
{
    void *data;
    size_t len;
    BD_TRY(bd_read_file(path, (size_t)1 << 40, &data, &len));
    reader rd = {data, len, 0};
    char m[8];
    int64_t ndone = 0, steps = 0, seed = 0, nv = 0, state_len = 0;
    size_t state_at = 0;
    bd_status s = BD_OK;
    if (!locate_hook_state(data, len, &state_at, &state_len) || !take(&rd, m, sizeof m) ||
        memcmp(m, magic, sizeof m) || !take(&rd, &ndone, 8) || !take(&rd, &steps, 8) ||
        !take(&rd, &seed, 8) || ndone < 0 || ndone > 1000000)
        s = bd_fail(BD_EFORMAT, "%s is not a bitdown training checkpoint", path);
    else
        s = check_kind(r, state_len, path);
    if (s == BD_OK && (steps != r->steps || (uint64_t)seed != r->o->seed))
        s = bd_fail(BD_EINVAL,
                    "%s was written by a run with seed %" PRId64 " and %" PRId64
                    " steps per epoch; this one has seed %" PRIu64 " and %" PRId64
                    ": resume with the same seed, data, batch and steps",
                    path, seed, steps, r->o->seed, r->steps);
    else if (s == BD_OK && ndone > r->o->epochs)
        s = bd_fail(BD_EINVAL, "%s has %" PRId64 " epochs done, more than the %d asked", path,
                    ndone, r->o->epochs);
    bd_training_epoch *e = s == BD_OK ? calloc((size_t)r->o->epochs + 1, sizeof *e) : NULL;
    if (s == BD_OK && !e)
        s = bd_fail(BD_ENOMEM, "out of memory");
    for (int64_t i = 0; s == BD_OK && i < ndone; i++)
        if (!take(&rd, &e[i], sizeof e[i]))
            s = bd_fail(BD_EFORMAT, "%s: truncated", path);
    /* two passes: check, then copy */
    for (int pass = 0; s == BD_OK && pass < 2; pass++) {
        size_t start = rd.at;
        if (!take(&rd, &nv, 8) || nv < 0) {
            s = bd_fail(BD_EFORMAT, "%s: truncated", path);
            break;
        }
        for (int64_t i = 0; s == BD_OK && i < nv; i++) {
            int64_t nlen, count, has;
            char name[1024];
            if (!take(&rd, &nlen, 8) || nlen < 0 || nlen >= (int64_t)sizeof name ||
                !take(&rd, name, (size_t)nlen)) {
                s = bd_fail(BD_EFORMAT, "%s: truncated", path);
                break;
            }
            name[nlen] = '\0';
            int v = bd_graph_find(r->g, name);
            if (v < 0 || !float_init(r->g, v) ||
                !take(&rd, &count, 8) || count != bd_tensor_count(r->g->values[v].init)) {
                s = bd_fail(BD_EINVAL, "%s: tensor '%s' is not in the model, or has another size",
                            path, name);
                break;
            }
            const size_t bytes = (size_t)count * sizeof(float);
            if (rd.len - rd.at < bytes) {
                s = bd_fail(BD_EFORMAT, "%s: truncated at '%s'", path, name);
                break;
            }
            if (pass)
                memcpy(r->g->values[v].init->data, rd.p + rd.at, bytes);
            rd.at += bytes;
            const int pi = param_index(r, v);
            if (!take(&rd, &has, 8) || (has && rd.len - rd.at < bytes)) {
                s = bd_fail(BD_EFORMAT, "%s: truncated at '%s'", path, name);
                break;
            }
            if (has && pass && pi >= 0 && r->moment[pi])
                memcpy(r->moment[pi], rd.p + rd.at, bytes);
            rd.at += has ? bytes : 0;
        }
        if (s == BD_OK)
            s = read_codebooks(r, &rd, path, pass);
        if (s == BD_OK)
            s = read_hook_state(r, data, state_at, state_len, path, pass);
        if (!pass)
            rd.at = start;
    }
    free(data);
    if (s != BD_OK) {
        free(e);
        return s;
    }
    *rec = e;
    *done = (int)ndone;
    return BD_OK;
}


bd_status bd_training_checkpoint_hook_state(const char *path, void **data, size_t *len)
{
    void *file;
    size_t flen, at;
    int64_t state = 0;
    *data = NULL;
    *len = 0;
    BD_TRY(bd_read_file(path, (size_t)1 << 40, &file, &flen));
    bd_status s = locate_hook_state(file, flen, &at, &state)
                      ? BD_OK
                      : bd_fail(BD_EFORMAT, "%s is not a bitdown training checkpoint", path);
    if (s == BD_OK && state > 0) {
        *data = malloc((size_t)state);
        if (*data) {
            memcpy(*data, (const unsigned char *)file + at, (size_t)state);
            *len = (size_t)state;
        } else {
            s = bd_fail(BD_ENOMEM, "out of memory");
        }
    }
    free(file);
    return s;
}
