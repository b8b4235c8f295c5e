#include "quant_noise.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "int_fit.h"
#include "pq.h"
#include "rng.h"

static const char *const kind_names[] = {"none", "pq", "pq-centroid", "int"};

bd_status bd_noise_parse(const char *where, const char *text, bd_noise_spec *out)
{
    bd_noise_spec s = {.kind = BD_NOISE_NONE};
    if (strcmp(text, "none") == 0) {
        *out = s;
        return BD_OK;
    }
    char buf[128];
    if (strlen(text) >= sizeof buf)
        return bd_fail(BD_EINVAL, "%s: quant-noise '%s' is too long", where, text);
    strcpy(buf, text);
    char *colon = strchr(buf, ':');
    if (colon)
        *colon = '\0';
    char *end;
    if (strcmp(buf, "pq") == 0)
        s.kind = BD_NOISE_PQ;
    else if (strcmp(buf, "pq-centroid") == 0)
        s.kind = BD_NOISE_PQ_CENTROID;
    else if (strncmp(buf, "int", 3) == 0 && (s.bits = (int)strtol(buf + 3, &end, 10), end > buf + 3) &&
             !*end && s.bits >= BD_INT_MIN_BITS && s.bits <= BD_INT_MAX_BITS)
        s.kind = BD_NOISE_INT;
    else
        return bd_fail(BD_EINVAL,
                       "%s: quant-noise kind '%s' is not one of pq, pq-centroid, int8, int4 "
                       "(intB, B = %d..%d)",
                       where, buf, BD_INT_MIN_BITS, BD_INT_MAX_BITS);
    if (s.kind == BD_NOISE_INT)
        snprintf(s.regime, sizeof s.regime, "int%d", s.bits);
    else
        snprintf(s.regime, sizeof s.regime, "small");
    s.p = -1;
    for (char *save = NULL, *item = colon ? strtok_r(colon + 1, ",", &save) : NULL; item;
         item = strtok_r(NULL, ",", &save)) {
        char *eq = strchr(item, '=');
        if (!eq)
            return bd_fail(BD_EINVAL, "%s: quant-noise setting '%s' is not key=value", where, item);
        *eq = '\0';
        const char *v = eq + 1;
        if (strcmp(item, "p") == 0) {
            s.p = strtod(v, &end);
            if (end == v || *end || !(s.p >= 0 && s.p <= 1))
                return bd_fail(BD_EINVAL, "%s: quant-noise p must lie in [0, 1], not '%s'", where, v);
        } else if (strcmp(item, "regime") == 0 && s.kind != BD_NOISE_INT) {
            if (strcmp(v, "small") && strcmp(v, "large"))
                return bd_fail(BD_EINVAL, "%s: quant-noise regime is small or large, not '%s'",
                               where, v);
            snprintf(s.regime, sizeof s.regime, "%s", v);
        } else if (strcmp(item, "refresh") == 0) {
            long r = strtol(v, &end, 10);
            if (end == v || *end || r < 1 || r > 1000000000)
                return bd_fail(BD_EINVAL, "%s: quant-noise refresh is a step count >= 1, not '%s'",
                               where, v);
            s.refresh = (int)r;
        } else
            return bd_fail(BD_EINVAL, "%s: quant-noise %s takes p=, %srefresh=, not '%s'", where,
                           kind_names[s.kind], s.kind == BD_NOISE_INT ? "" : "regime=", item);
    }
    if (s.p < 0)
        return bd_fail(BD_EINVAL, "%s: quant-noise '%s' needs p= (the rate, in [0, 1])", where,
                       text);
    *out = s;
    return BD_OK;
}

void bd_noise_describe(const bd_noise_spec *s, char *buf, size_t cap)
{
    if (s->kind == BD_NOISE_NONE)
        snprintf(buf, cap, "none");
    else if (s->kind == BD_NOISE_INT)
        snprintf(buf, cap, "int%d:p=%g", s->bits, s->p);
    else
        snprintf(buf, cap, "%s:p=%g,regime=%s", kind_names[s->kind], s->p, s->regime);
}

typedef struct noised {
    int layer;          /* index in the layers given */
    int weight;         /* value id */
    bd_pq_layout lay;   /* blocks of d (1 for int) */
    int k;              /* pq: codebook size */
    bd_int_spec ints;   /* int */
    float *master;      /* the weight as stored, while a noisy copy is in the graph */
    float *sub;         /* n x d scratch */
    uint8_t *mask;      /* n */
    /* the quantizer's state */
    bd_pq_result codebook; /* pq kinds, once fitted */
    bd_qlayer grid;        /* int, once fitted */
    int64_t fitted_at;     /* step of the last fit; -1 never */
    int32_t *assign;       /* n, pq-centroid's current assignment */
    int applied;
} noised;

struct bd_noise {
    bd_noise_spec spec;
    int nlayers; /* of the layers given */
    int *which;  /* per given layer: index into nz[] or -1 */
    int n;
    noised *nz;
};

void bd_noise_free(bd_noise *x)
{
    if (!x)
        return;
    for (int i = 0; i < x->n; i++) {
        noised *z = &x->nz[i];
        free(z->master);
        free(z->sub);
        free(z->mask);
        free(z->assign);
        bd_pq_result_free(&z->codebook);
        bd_qlayer_free(&z->grid);
    }
    free(x->nz);
    free(x->which);
    free(x);
}

static bd_status check_format(const bd_layer *l, const bd_layer_plan *p, const bd_noise_spec *s)
{
    if (s->kind == BD_NOISE_INT && (p->format != BD_FMT_INT || p->ints.bits != s->bits))
        return bd_fail(BD_EINVAL,
                       "layer '%s' is planned as %s, not int%d: int%d noise does not match it "
                       "(set it to int=%d, or use the int%d regime)",
                       l->name, p->format == BD_FMT_INT ? "int with other bits" : "pq", s->bits,
                       s->bits, s->bits, s->bits);
    if (s->kind != BD_NOISE_INT && p->format != BD_FMT_PQ)
        return bd_fail(BD_EINVAL,
                       "layer '%s' is planned as int%d: %s noise needs a pq layer (d and k)",
                       l->name, p->ints.bits, kind_names[s->kind]);
    return BD_OK;
}

bd_status bd_noise_new(bd_noise **out, const bd_graph *g, const bd_layer *layers, int n,
                       const bd_layer_plan *plan, const bd_noise_spec *spec)
{
    *out = NULL;
    if (!(spec->p >= 0 && spec->p <= 1))
        return bd_fail(BD_EINVAL, "quant-noise p must lie in [0, 1], not %g", spec->p);
    bd_layer_plan *own = NULL;
    if (!plan) {
        if (!(own = calloc((size_t)n + 1, sizeof *own)))
            return bd_fail(BD_ENOMEM, "out of memory");
        bd_status s = bd_plan_regime(layers, n, spec->regime, 0, own);
        if (s != BD_OK) {
            free(own);
            return s;
        }
        plan = own;
    }
    bd_noise *x = calloc(1, sizeof *x);
    bd_status s = x ? BD_OK : bd_fail(BD_ENOMEM, "out of memory");
    if (s == BD_OK) {
        x->spec = *spec;
        x->nlayers = n;
        x->which = malloc(((size_t)n + 1) * sizeof *x->which);
        x->nz = calloc((size_t)n + 1, sizeof *x->nz);
        if (!x->which || !x->nz)
            s = bd_fail(BD_ENOMEM, "out of memory");
    }
    for (int i = 0; s == BD_OK && i < n; i++) {
        x->which[i] = -1;
        if (!plan[i].quantize || spec->kind == BD_NOISE_NONE)
            continue;
        if ((s = check_format(&layers[i], &plan[i], spec)) != BD_OK)
            break;
        noised *z = &x->nz[x->n];
        z->layer = i;
        z->weight = layers[i].weight;
        z->k = plan[i].k;
        z->ints = plan[i].ints;
        z->fitted_at = -1;
        int d = spec->kind == BD_NOISE_INT ? 1 : plan[i].d;
        if ((s = bd_pq_layout_init(&layers[i], d, &z->lay)) != BD_OK)
            break;
        x->which[i] = x->n++;
        int64_t count = bd_tensor_count(g->values[z->weight].init);
        z->master = malloc((size_t)count * sizeof *z->master);
        z->sub = malloc((size_t)(z->lay.n * d) * sizeof *z->sub);
        z->mask = malloc((size_t)z->lay.n);
        if (!z->master || !z->sub || !z->mask)
            s = bd_fail(BD_ENOMEM, "out of memory for the noise of layer '%s'", layers[i].name);
    }
    free(own);
    if (s != BD_OK) {
        bd_noise_free(x);
        return s;
    }
    *out = x;
    return BD_OK;
}

int bd_noise_layer_count(const bd_noise *x) { return x ? x->n : 0; }

int bd_noise_block(const bd_noise *x, int i)
{
    return x && i >= 0 && i < x->nlayers && x->which[i] >= 0 ? (int)x->nz[x->which[i]].lay.d : 0;
}

int64_t bd_noise_blocks(const bd_noise *x, int i)
{
    return bd_noise_block(x, i) ? x->nz[x->which[i]].lay.n : 0;
}

void bd_noise_mask(const bd_noise *x, int i, uint64_t seed, int64_t step, uint8_t *mask)
{
    const noised *z = &x->nz[x->which[i]];
    uint64_t rng = bd_rng_stream(seed, 0x9E, (uint64_t)step, (uint64_t)i);
    for (int64_t b = 0; b < z->lay.n; b++)
        mask[b] = bd_rng_uniform(&rng) < x->spec.p;
}

static int refresh_every(const bd_noise *x)
{
    if (x->spec.refresh > 0)
        return x->spec.refresh;
    return x->spec.kind == BD_NOISE_INT ? BD_NOISE_REFRESH_INT : BD_NOISE_REFRESH_PQ;
}

/* Weight k-means of the current weights (in z->sub): the paper's codebook
 * for the exact noise, refitted now and then; a few iterations suffice
 * since each refit starts a fresh k-means++ on weights that moved little. */
static bd_status fit_codebook(noised *z, uint64_t seed)
{
    bd_gram id;
    BD_TRY(bd_gram_identity(&id, z->lay.d));
    bd_pq_options o = {.k = z->k, .iters = 20, .seed = seed, .restarts = 1, .tol = BD_PQ_TOL};
    bd_pq_result r = {0};
    bd_status s = bd_pq_fit(z->sub, z->lay.n, &id, &o, NULL, &r);
    bd_gram_free(&id);
    if (s != BD_OK)
        return s;
    bd_pq_result_free(&z->codebook);
    z->codebook = r;
    return BD_OK;
}

static bd_status fit_grid(noised *z)
{
    bd_feedback_layer fl = {.w = z->sub, .rows = z->lay.rows, .L = z->lay.row_len, .groups = 1};
    float *w_hat = malloc((size_t)(z->lay.n) * sizeof *w_hat);
    if (!w_hat)
        return bd_fail(BD_ENOMEM, "out of memory");
    bd_qlayer q = {0};
    bd_status s = bd_int_fit(&fl, &z->ints, NULL, BD_OBJ_WEIGHT, NULL, &q, w_hat);
    free(w_hat);
    if (s != BD_OK)
        return s;
    bd_qlayer_free(&z->grid);
    z->grid = q;
    return BD_OK;
}

/* The quantized value of every block of z->sub, into out (n x d): the
 * assigned centroid, or the weight on the grid. */
static bd_status quantized(const bd_noise *x, noised *z, float *out)
{
    const int64_t n = z->lay.n, d = z->lay.d;
    if (x->spec.kind == BD_NOISE_INT) {
        bd_int_round(&z->grid, z->lay.rows, z->lay.row_len, z->sub, NULL, out);
        return BD_OK;
    }
    if (!z->assign && !(z->assign = malloc((size_t)n * sizeof *z->assign)))
        return bd_fail(BD_ENOMEM, "out of memory");
    bd_gram id;
    BD_TRY(bd_gram_identity(&id, d));
    bd_status s = bd_pq_assign(z->sub, n, &id, z->codebook.centroids, z->codebook.k, z->assign,
                               NULL);
    bd_gram_free(&id);
    if (s == BD_OK)
        bd_pq_decode(z->codebook.centroids, (int)d, z->assign, n, out);
    return s;
}

static bd_status ensure_fit(const bd_noise *x, noised *z, uint64_t seed, int64_t step, int due)
{
    if (z->fitted_at >= 0 && !due)
        return BD_OK;
    z->fitted_at = step;
    return x->spec.kind == BD_NOISE_INT
               ? fit_grid(z)
               : fit_codebook(z, bd_rng_stream(seed, 0xC0, (uint64_t)step, (uint64_t)z->layer));
}

/* Saves the master weight of z and gathers it into z->sub. */
static void take_master(noised *z, bd_graph *g)
{
    const bd_tensor *w = g->values[z->weight].init;
    memcpy(z->master, w->data, (size_t)bd_tensor_count(w) * sizeof(float));
    bd_pq_gather(&z->lay, z->master, z->sub);
    z->applied = 1;
}

bd_status bd_noise_apply(bd_noise *x, bd_graph *g, uint64_t seed, int64_t step)
{
    const double p = x->spec.p;
    const int every = refresh_every(x);
    bd_status s = BD_OK;
    float *q = NULL;
    for (int j = 0; s == BD_OK && j < x->n; j++) {
        noised *z = &x->nz[j];
        const int64_t n = z->lay.n, d = z->lay.d;
        take_master(z, g);
        bd_noise_mask(x, z->layer, seed, step, z->mask);
        if (x->spec.kind == BD_NOISE_PQ) {
            const float keep = p < 1 ? (float)(1.0 / (1.0 - p)) : 1.0f;
            for (int64_t b = 0; b < n; b++)
                for (int64_t t = 0; t < d; t++)
                    z->sub[b * d + t] = z->mask[b] ? 0.0f : keep * z->sub[b * d + t];
        } else {
            free(q);
            if (!(q = malloc((size_t)(n * d) * sizeof *q))) {
                s = bd_fail(BD_ENOMEM, "out of memory");
                break;
            }
            if ((s = ensure_fit(x, z, seed, step, step % every == 0)) != BD_OK ||
                (s = quantized(x, z, q)) != BD_OK)
                break;
            for (int64_t b = 0; b < n; b++)
                if (z->mask[b])
                    memcpy(z->sub + b * d, q + b * d, (size_t)d * sizeof *q);
        }
        bd_pq_scatter(&z->lay, z->sub, g->values[z->weight].init->data);
    }
    free(q);
    if (s != BD_OK)
        bd_noise_restore(x, g, NULL);
    return s;
}

bd_status bd_noise_apply_all(bd_noise *x, bd_graph *g)
{
    bd_status s = BD_OK;
    for (int j = 0; s == BD_OK && j < x->n; j++) {
        noised *z = &x->nz[j];
        take_master(z, g);
        float *q = malloc((size_t)(z->lay.n * z->lay.d) * sizeof *q);
        if (!q)
            s = bd_fail(BD_ENOMEM, "out of memory");
        if (s == BD_OK && x->spec.kind == BD_NOISE_INT)
            s = fit_grid(z);
        else if (s == BD_OK)
            s = fit_codebook(z, bd_rng_stream(0, 0xC1, 0, (uint64_t)z->layer));
        if (s == BD_OK && (s = quantized(x, z, q)) == BD_OK)
            bd_pq_scatter(&z->lay, q, g->values[z->weight].init->data);
        free(q);
    }
    if (s != BD_OK)
        bd_noise_restore(x, g, NULL);
    return s;
}

int bd_noise_refit_due(const bd_noise *x, int64_t step)
{
    if (x->spec.kind != BD_NOISE_PQ_CENTROID && x->spec.kind != BD_NOISE_INT)
        return 0;
    for (int j = 0; j < x->n; j++)
        if (x->nz[j].fitted_at < 0)
            return 1;
    return x->n > 0 && step % refresh_every(x) == 0;
}

bd_status bd_noise_refit(bd_noise *x, const bd_graph *g, uint64_t seed, int64_t step)
{
    if (!bd_noise_refit_due(x, step))
        return BD_OK;
    for (int j = 0; j < x->n; j++) {
        noised *z = &x->nz[j];
        bd_pq_gather(&z->lay, g->values[z->weight].init->data, z->sub);
        BD_TRY(ensure_fit(x, z, seed, step, step % refresh_every(x) == 0));
    }
    return BD_OK;
}

const bd_pq_result *bd_noise_codebook(const bd_noise *x, int i)
{
    if (!bd_noise_block(x, i) || x->spec.kind != BD_NOISE_PQ_CENTROID)
        return NULL;
    const noised *z = &x->nz[x->which[i]];
    return z->fitted_at >= 0 ? &z->codebook : NULL;
}

const bd_qlayer *bd_noise_grid(const bd_noise *x, int i)
{
    if (!bd_noise_block(x, i) || x->spec.kind != BD_NOISE_INT)
        return NULL;
    const noised *z = &x->nz[x->which[i]];
    return z->fitted_at >= 0 ? &z->grid : NULL;
}

void bd_noise_refit_next(bd_noise *x)
{
    for (int j = 0; j < x->n; j++)
        x->nz[j].fitted_at = -1;
}

void bd_noise_restore(bd_noise *x, bd_graph *g, bd_tensor *const *grads)
{
    const double p = x->spec.p;
    for (int j = 0; j < x->n; j++) {
        noised *z = &x->nz[j];
        if (!z->applied)
            continue;
        bd_tensor *w = g->values[z->weight].init;
        memcpy(w->data, z->master, (size_t)bd_tensor_count(w) * sizeof(float));
        z->applied = 0;
        bd_tensor *gr = grads ? grads[z->layer] : NULL;
        /* block drop's kept blocks were scaled, so their gradient is too;
         * every other value passes straight through */
        if (!gr || x->spec.kind != BD_NOISE_PQ || !(p > 0 && p < 1))
            continue;
        const int64_t n = z->lay.n, d = z->lay.d;
        const float keep = (float)(1.0 / (1.0 - p));
        bd_pq_gather(&z->lay, gr->data, z->sub);
        for (int64_t b = 0; b < n; b++)
            for (int64_t t = 0; !z->mask[b] && t < d; t++)
                z->sub[b * d + t] *= keep;
        bd_pq_scatter(&z->lay, z->sub, gr->data);
    }
}
