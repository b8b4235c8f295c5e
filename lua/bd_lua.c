#include "bd_lua.h"

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fileio.h"
#include "model_meta.h"
#include "pq.h"


/* One run of a script. Every coroutine of the state reaches it through the
 * state's extra space (lua_newthread copies it). */
typedef struct script {
    const bd_lua_host *host;
    lua_State *L;         /* the thread that called into the workspace last */
    int progress_ref;     /* the bd.on_progress function, or LUA_NOREF */
    int in_callback;      /* the on_progress function is running */
    char *callback_error; /* why it failed: the operation is being canceled */
    /* C memory a bd function holds while it builds Lua values (which may
     * raise a memory error): freed by the next such call or at the end. */
    void *held;
} script;

static script *script_of(lua_State *L) { return *(script **)lua_getextraspace(L); }

static void hold(script *s, void *p)
{
    free(s->held);
    s->held = p;
}

static int interrupted(const script *s)
{
    return s->host->interrupt && atomic_load(s->host->interrupt);
}

/* ---- calling into the workspace ------------------------------------------------ */

/* The workspace, for bd function fn about to use it. */
static bd_workspace *ws_for(lua_State *L, const char *fn, int need_model)
{
    script *s = script_of(L);
    if (s->in_callback)
        luaL_error(L, "%s: bd functions cannot be called from inside the on_progress callback",
                   fn);
    if (need_model && !bd_ws_loaded(s->host->ws))
        luaL_error(L, "%s: no model is loaded (call bd.load(PATH) first)", fn);
    s->L = L;
    return s->host->ws;
}

/* Raises the workspace's failure as a Lua error naming fn; also a failure
 * of the on_progress function during an operation that completed anyway. */
static void check(lua_State *L, bd_status st, const char *fn)
{
    script *s = script_of(L);
    if (s->callback_error) {
        lua_pushstring(L, s->callback_error);
        free(s->callback_error);
        s->callback_error = NULL;
        luaL_error(L, "%s: error in the on_progress callback: %s", fn, lua_tostring(L, -1));
    }
    if (st != BD_OK)
        luaL_error(L, "%s: %s", fn, bd_error_message());
}

typedef struct progress_args {
    int ref;
    const char *stage, *message;
    int64_t done, total;
    double metric;
} progress_args;

static int call_progress(lua_State *L)
{
    const progress_args *a = lua_touserdata(L, 1);
    lua_rawgeti(L, LUA_REGISTRYINDEX, a->ref);
    lua_pushstring(L, a->stage);
    lua_pushinteger(L, a->done);
    lua_pushinteger(L, a->total);
    lua_pushstring(L, a->message);
    lua_pushnumber(L, a->metric);
    lua_call(L, 5, 0);
    return 0;
}

/* Records why the on_progress function failed (check raises it) and stops
 * the operation. */
static void callback_failed(script *s, const char *why)
{
    s->callback_error = strdup(why);
    bd_ws_cancel(s->host->ws);
}

/* The workspace's progress callback for the whole run. It runs inside a
 * workspace operation, so nothing may longjmp out of it: the Lua function
 * runs under lua_pcall, and its failure cancels the operation (which rolls
 * back) and is raised once the operation has returned (check). */
static void on_progress(void *user, const char *stage, int64_t done, int64_t total,
                        const char *message, double metric)
{
    script *s = user;
    if (interrupted(s)) {
        bd_ws_cancel(s->host->ws);
        return;
    }
    if (s->progress_ref == LUA_NOREF) {
        if (s->host->progress)
            s->host->progress(s->host->progress_user, stage, done, total, message, metric);
        return;
    }
    if (s->callback_error)
        return;
    lua_State *L = s->L;
    progress_args a = {s->progress_ref, stage, message, done, total, metric};
    /* pushing a light C function and a pointer allocates nothing */
    if (!lua_checkstack(L, 8)) {
        callback_failed(s, "out of memory for the Lua stack");
        return;
    }
    lua_pushcfunction(L, call_progress);
    lua_pushlightuserdata(L, &a);
    s->in_callback = 1;
    int rc = lua_pcall(L, 1, 0, 0);
    s->in_callback = 0;
    if (rc != LUA_OK) {
        callback_failed(s, lua_isstring(L, -1) ? lua_tostring(L, -1)
                                               : "an error object that is not a string");
        lua_pop(L, 1);
    }
}

/* ---- arguments and options ------------------------------------------------------- */

/* Checks the options table of fn at index idx against keys. Returns idx,
 * or 0 when the argument is absent or nil (every option at its default). */
static int options(lua_State *L, int idx, const char *fn, const char *const *keys)
{
    if (lua_isnoneornil(L, idx))
        return 0;
    if (!lua_istable(L, idx))
        luaL_error(L, "%s: argument #%d must be a table of options, not a %s", fn, idx,
                   luaL_typename(L, idx));
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        lua_pop(L, 1);
        const char *key = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : NULL;
        int known = 0;
        for (int i = 0; key && keys[i] && !known; i++)
            known = strcmp(key, keys[i]) == 0;
        if (!known) {
            const char *shown = luaL_tolstring(L, -1, NULL);
            luaL_Buffer b;
            luaL_buffinit(L, &b);
            for (int i = 0; keys[i]; i++) {
                if (i)
                    luaL_addstring(&b, ", ");
                luaL_addstring(&b, keys[i]);
            }
            luaL_pushresult(&b);
            luaL_error(L, "%s: unknown option '%s' (it takes %s)", fn, shown, lua_tostring(L, -1));
        }
    }
    return idx;
}

/* Pushes option key of the table at idx (nil when idx is 0); its type. */
static int get_option(lua_State *L, int idx, const char *key)
{
    if (!idx) {
        lua_pushnil(L);
        return LUA_TNIL;
    }
    return lua_getfield(L, idx, key);
}

static lua_Integer opt_int(lua_State *L, int idx, const char *fn, const char *key,
                           lua_Integer def, lua_Integer min, lua_Integer max)
{
    int t = get_option(L, idx, key), isint = 0;
    lua_Integer v = t == LUA_TNUMBER ? lua_tointegerx(L, -1, &isint) : def;
    if (t != LUA_TNIL && (!isint || v < min || v > max))
        luaL_error(L, "%s: option %s must be a whole number from %I to %I, not %s", fn, key, min,
                   max, luaL_tolstring(L, -1, NULL));
    lua_pop(L, 1);
    return v;
}

/* A boolean option: 0 or 1, or def (which may be -1: absent). */
static int opt_bool(lua_State *L, int idx, const char *fn, const char *key, int def)
{
    int t = get_option(L, idx, key);
    if (t != LUA_TNIL && t != LUA_TBOOLEAN)
        luaL_error(L, "%s: option %s must be true or false, not a %s", fn, key, lua_typename(L, t));
    int v = t == LUA_TNIL ? def : lua_toboolean(L, -1);
    lua_pop(L, 1);
    return v;
}

/* An option that is one of words: its index, or -1 when absent. */
static int opt_word(lua_State *L, int idx, const char *fn, const char *key,
                    const char *const *words)
{
    int t = get_option(L, idx, key);
    int v = -1;
    if (t != LUA_TNIL) {
        const char *w = t == LUA_TSTRING ? lua_tostring(L, -1) : "";
        for (int i = 0; words[i] && v < 0; i++)
            if (strcmp(w, words[i]) == 0)
                v = i;
        if (v < 0)
            luaL_error(L, "%s: option %s must be '%s' or '%s', not %s", fn, key, words[0],
                       words[1], luaL_tolstring(L, -1, NULL));
    }
    lua_pop(L, 1);
    return v;
}

/* ---- building results ---------------------------------------------------------------- */

static void set_int(lua_State *L, const char *k, lua_Integer v)
{
    lua_pushinteger(L, v);
    lua_setfield(L, -2, k);
}

static void set_num(lua_State *L, const char *k, double v)
{
    lua_pushnumber(L, v);
    lua_setfield(L, -2, k);
}

static void set_str(lua_State *L, const char *k, const char *v)
{
    lua_pushstring(L, v);
    lua_setfield(L, -2, k);
}

static void set_bool(lua_State *L, const char *k, int v)
{
    lua_pushboolean(L, v);
    lua_setfield(L, -2, k);
}

/* The reference's cap on k for layer l cut into blocks of d; 0 when d
 * does not divide its rows. */
static int max_k(const bd_layer *l, int64_t d)
{
    return d > 0 && l->row_len % d == 0 ? bd_pq_max_k(l->rows * (l->row_len / d)) : 0;
}

/* The table bd.layers() gives for layer i; with detail, what bd.layer()
 * adds: the divisors of the row length with the cap on k for each, and the
 * EM objective per iteration. */
static void push_layer(lua_State *L, const bd_workspace *ws, int i, int detail)
{
    const bd_ws_layer *l = bd_ws_layer_at(ws, i);
    const bd_layer *ly = &l->layer;
    const bd_tensor *w = bd_ws_student(ws)->values[ly->weight].init;
    int quantized = l->state != BD_STATE_FLOAT;
    char kind[32];
    lua_createtable(L, 0, 24);
    set_int(L, "index", i + 1);
    set_str(L, "name", ly->name);
    set_str(L, "op", ly->op);
    set_str(L, "kind", bd_layer_kind(ly, kind, sizeof kind));
    lua_createtable(L, w->ndim, 0);
    for (int j = 0; j < w->ndim; j++) {
        lua_pushinteger(L, w->dims[j]);
        lua_rawseti(L, -2, j + 1);
    }
    lua_setfield(L, -2, "shape");
    set_int(L, "params", bd_layer_params(ly));
    set_int(L, "rows", ly->rows);
    set_int(L, "row_len", ly->row_len);
    set_str(L, "format", bd_format_name(l->format));
    set_int(L, "d", l->d);
    set_int(L, "k", l->k);
    set_int(L, "bits", l->ints.bits);
    set_str(L, "per", l->ints.per_channel ? "channel" : "tensor");
    set_bool(L, "sym", l->ints.symmetric);
    set_int(L, "max_k", max_k(ly, l->d));
    set_str(L, "objective", bd_objective_name(l->objective));
    set_bool(L, "quantize", l->quantize);
    if (l->note[0])
        set_str(L, "note", l->note);
    set_str(L, "state", bd_layer_state_name(l->state));
    set_num(L, "bits_per_weight", bd_ws_bits_per_weight(l));
    set_int(L, "bytes", quantized ? bd_qlayer_bytes(&l->q) : 4 * bd_layer_params(ly));
    if (quantized && l->q.rel_error >= 0)
        set_num(L, "rel_error", l->q.rel_error);
    if (quantized) {
        lua_createtable(L, 0, 8);
        set_str(L, "format", bd_format_name(l->q.format));
        set_int(L, "d", l->q.d);
        set_int(L, "k", l->q.k);
        if (l->q.format == BD_FMT_INT)
            set_int(L, "bits", l->q.ints.bits);
        set_str(L, "objective", bd_objective_name(l->q.objective));
        if (l->q.rel_error >= 0)
            set_num(L, "rel_error", l->q.rel_error);
        if (l->q.other_error >= 0)
            set_num(L, "other_error", l->q.other_error);
        set_int(L, "iters", l->q.iters);
        set_num(L, "seconds", l->q.seconds);
        lua_setfield(L, -2, "codebook");
    }
    if (!detail)
        return;
    lua_newtable(L); /* divisors */
    lua_newtable(L); /* max_k_by_d */
    for (int64_t d = 1, n = 0; d <= ly->row_len; d++) {
        if (ly->row_len % d)
            continue;
        lua_pushinteger(L, d);
        lua_rawseti(L, -3, ++n);
        lua_pushinteger(L, max_k(ly, d));
        lua_rawseti(L, -2, d);
    }
    lua_setfield(L, -3, "max_k_by_d");
    lua_setfield(L, -2, "divisors");
    if (quantized && l->q.history) {
        lua_createtable(L, l->q.iters, 0);
        for (int j = 0; j < l->q.iters; j++) {
            lua_pushnumber(L, l->q.history[j]);
            lua_rawseti(L, -2, j + 1);
        }
        lua_setfield(L, -2, "history");
    }
}

/* The index of the layer named by argument arg. */
static int layer_arg(lua_State *L, const bd_workspace *ws, int arg, const char *fn)
{
    const char *name = luaL_checkstring(L, arg);
    int i = bd_ws_layer_index(ws, name);
    if (i < 0)
        luaL_error(L, "%s: no layer named '%s'", fn, name);
    return i;
}

/* ---- the bd functions ------------------------------------------------------------------ */

/* Every layer, or those a glob matches as quantize's would ("all": the
 * plan's); none matching is an empty table, for scripts that filter. */
static int l_layers(lua_State *L)
{
    const char *glob = luaL_optstring(L, 1, NULL);
    const bd_workspace *ws = ws_for(L, "bd.layers", 1);
    int n = bd_ws_nlayers(ws), *idx = NULL;
    if (glob) {
        bd_status st = bd_ws_select(ws, glob, &idx, &n);
        if (st == BD_EINVAL) { /* no layer matches */
            bd_error_clear();
            n = 0;
        } else {
            check(L, st, "bd.layers");
        }
        hold(script_of(L), idx); /* freed even if building the tables raises */
    }
    lua_createtable(L, n, 0);
    for (int j = 0; j < n; j++) {
        push_layer(L, ws, idx ? idx[j] : j, 0);
        lua_rawseti(L, -2, j + 1);
    }
    if (glob)
        hold(script_of(L), NULL);
    return 1;
}

static int l_layer(lua_State *L)
{
    const bd_workspace *ws = ws_for(L, "bd.layer", 1);
    push_layer(L, ws, layer_arg(L, ws, 1, "bd.layer"), 1);
    return 1;
}

/* in bd_objective's order */
static const char *const objectives[] = {"act", "weight", "feedback", NULL};

static int l_set(lua_State *L)
{
    static const char *const keys[] = {"d",      "k",         "bits",     "per",   "sym",
                                       "format", "objective", "quantize", "clamp", NULL};
    static const char *const pers[] = {"tensor", "channel", NULL};
    static const char *const formats[] = {"pq", "int", NULL}; /* in bd_format's order */
    const char *glob = luaL_checkstring(L, 1);
    luaL_checktype(L, 2, LUA_TTABLE);
    int o = options(L, 2, "bd.set", keys);
    bd_ws_change c = {
        .d = (int)opt_int(L, o, "bd.set", "d", 0, 1, 1 << 20),
        .k = (int)opt_int(L, o, "bd.set", "k", 0, 1, 65536),
        .bits = (int)opt_int(L, o, "bd.set", "bits", 0, BD_INT_MIN_BITS, BD_INT_MAX_BITS),
        .per_channel = opt_word(L, o, "bd.set", "per", pers),
        .symmetric = opt_bool(L, o, "bd.set", "sym", -1),
        .format = opt_word(L, o, "bd.set", "format", formats),
        .objective = opt_word(L, o, "bd.set", "objective", objectives),
        .quantize = opt_bool(L, o, "bd.set", "quantize", -1),
        .clamp = opt_bool(L, o, "bd.set", "clamp", 0),
    };
    check(L, bd_ws_set(ws_for(L, "bd.set", 1), glob, &c), "bd.set");
    return 0;
}

static int l_regime(lua_State *L)
{
    static const char *const keys[] = {"first", NULL};
    const char *name = luaL_checkstring(L, 1);
    int first = opt_bool(L, options(L, 2, "bd.regime", keys), "bd.regime", "first", 0);
    check(L, bd_ws_regime(ws_for(L, "bd.regime", 1), name, first), "bd.regime");
    return 0;
}

/* The functions that take ([glob], [options]): the options' index, and the
 * glob (NULL: the plan's layers). */
static int glob_and_options(lua_State *L, const char **glob)
{
    *glob = lua_istable(L, 1) ? NULL : luaL_optstring(L, 1, NULL);
    return lua_istable(L, 1) ? 1 : 2;
}

/* Argument idx, a table whose every field is a key of op's options (nil
 * or absent: none), into opts, which holds the defaults: numbers and
 * strings as their text, booleans as true or false. The first bad field
 * raises bd_opt_op_set's message: an unknown key with every key op takes,
 * a value out of range with the range. */
static void read_options(lua_State *L, int idx, const char *fn, const bd_opt_op *op, void *opts)
{
    if (lua_isnoneornil(L, idx))
        return;
    if (!lua_istable(L, idx))
        luaL_error(L, "%s: argument #%d must be a table of options, not a %s", fn, idx,
                   luaL_typename(L, idx));
    for (lua_pushnil(L); lua_next(L, idx); lua_pop(L, 1)) {
        if (lua_type(L, -2) != LUA_TSTRING)
            luaL_error(L, "%s: option names are strings, not %s", fn,
                       luaL_tolstring(L, -2, NULL));
        char number[64];
        const char *value = number;
        switch (lua_type(L, -1)) {
        case LUA_TBOOLEAN: value = lua_toboolean(L, -1) ? "true" : "false"; break;
        case LUA_TNUMBER:
            if (lua_isinteger(L, -1))
                snprintf(number, sizeof number, LUA_INTEGER_FMT, lua_tointeger(L, -1));
            else
                snprintf(number, sizeof number, "%.17g", (double)lua_tonumber(L, -1));
            break;
        case LUA_TSTRING: value = lua_tostring(L, -1); break;
        default:
            luaL_error(L, "%s: option %s must be a number, a boolean or a string, not a %s", fn,
                       lua_tostring(L, -2), luaL_typename(L, -1));
        }
        /* the message names fn and the key already */
        if (bd_opt_op_set(op, opts, fn, lua_tostring(L, -2), value) != BD_OK)
            luaL_error(L, "%s", bd_error_message());
    }
}

/* Pushes the list of layer tables of the layers glob selects as quantize's
 * would (NULL: the plan's). */
static void push_selected(lua_State *L, bd_workspace *ws, const char *glob, const char *fn)
{
    script *s = script_of(L);
    int *idx, n;
    check(L, bd_ws_select(ws, glob, &idx, &n), fn);
    hold(s, idx);
    lua_createtable(L, n, 0);
    for (int j = 0; j < n; j++) {
        push_layer(L, ws, idx[j], 0);
        lua_rawseti(L, -2, j + 1);
    }
    hold(s, NULL);
}

/* A size target: the size-budget policy, run in this state as 'bitdown
 * run' would run it (its `arg`, put back after), with r's iterations and
 * EM search for the call. Its failure is raised naming fn. */
static void quantize_to_target(lua_State *L, bd_workspace *ws, const bd_quantize_run *r,
                               const char *target, const char *fn)
{
    char path[4096], iters[32];
    check(L, bd_policy_path(BD_SIZE_POLICY, path, sizeof path), fn);
    snprintf(iters, sizeof iters, "iters=%d", r->iters);
    const char *argv[] = {target, iters};
    int argc = 2, restarts;
    double tol;
    bd_ws_get_search(ws, &restarts, &tol);
    check(L, bd_ws_search(ws, r->restarts, r->tol), fn);
    lua_getglobal(L, "arg");
    int saved = lua_gettop(L);
    lua_createtable(L, argc, 1);
    lua_pushstring(L, path);
    lua_rawseti(L, -2, 0);
    for (int i = 0; i < argc; i++) {
        lua_pushstring(L, argv[i]);
        lua_rawseti(L, -2, i + 1);
    }
    lua_setglobal(L, "arg");
    int rc = luaL_loadfile(L, path);
    if (rc == LUA_OK) {
        for (int i = 0; i < argc; i++)
            lua_pushstring(L, argv[i]);
        rc = lua_pcall(L, argc, 0, 0);
    }
    bd_ws_search(ws, restarts, tol);
    lua_pushvalue(L, saved);
    lua_setglobal(L, "arg");
    if (rc != LUA_OK) {
        if (lua_type(L, -1) == LUA_TSTRING)
            luaL_error(L, "%s: %s", fn, lua_tostring(L, -1));
        lua_error(L);
    }
    lua_settop(L, saved - 1);
}

/* bd.quantize([glob], [opts]) -> the layers it quantized: opts are the
 * keys of the quantize operation (bd.options("quantize")); a size target
 * runs the size-budget policy instead, on the plan's layers */
static int l_quantize(lua_State *L)
{
    const char *fn = "bd.quantize", *glob;
    int idx = glob_and_options(L, &glob);
    bd_workspace *ws = ws_for(L, fn, 1);
    bd_quantize_run r;
    bd_ws_quantize_defaults(ws, &r);
    read_options(L, idx, fn, &bd_quantize_op, &r);
    char target[96];
    if (bd_quantize_target(&r, fn, 0, target, sizeof target) != BD_OK)
        luaL_error(L, "%s", bd_error_message());
    if (target[0] && glob)
        luaL_error(L, "%s: %s plans every layer the plan takes: give no glob", fn, target);
    if (target[0])
        quantize_to_target(L, ws, &r, target, fn);
    else
        check(L, bd_ws_quantize_run(ws, glob, &r), fn);
    push_selected(L, ws, glob, fn);
    return 1;
}

/* bd.finetune([glob], [opts]) -> {first_loss=, last_loss=, steps=,
 * seconds=, images_per_second=}: opts are the keys of the finetune
 * operation (bd.options("finetune")) */
static int l_finetune(lua_State *L)
{
    const char *fn = "bd.finetune", *glob;
    int idx = glob_and_options(L, &glob);
    bd_finetune_options t;
    bd_finetune_options_init(&t);
    read_options(L, idx, fn, &bd_finetune_op, &t);
    bd_finetune_report r;
    check(L, bd_ws_finetune(ws_for(L, fn, 1), glob, &t, &r), fn);
    lua_createtable(L, 0, 5);
    set_num(L, "first_loss", r.first_loss);
    set_num(L, "last_loss", r.last_loss);
    set_int(L, "steps", r.steps);
    set_num(L, "seconds", r.seconds);
    set_num(L, "images_per_second", r.images_per_second);
    return 1;
}

/* bd.options(name, [opts]) -> the settings operation `name` (quantize,
 * finetune, train, bitprune) would run with: its defaults (quantize's EM
 * search the session's, as bd.quantize takes it) with opts applied and
 * checked as the operation checks them; numbers as numbers, flags as
 * booleans, words as strings, a setting without a value of its own (train's
 * augment: the data's) absent */
static int l_options(lua_State *L)
{
    const char *fn = "bd.options";
    const char *name = luaL_checkstring(L, 1);
    const bd_cmd_info *c = bd_cmd_find(name);
    if (!c || !c->op) {
        luaL_Buffer b;
        luaL_buffinit(L, &b);
        for (int i = 0, listed = 0; i < bd_cmd_count(); i++)
            if (bd_cmd_at(i)->op) {
                luaL_addstring(&b, listed++ ? ", " : "");
                luaL_addstring(&b, bd_cmd_at(i)->name);
            }
        luaL_pushresult(&b);
        luaL_error(L, "%s: '%s' is no operation with options (they are %s)", fn, name,
                   lua_tostring(L, -1));
    }
    const bd_opt_op *op = c->op;
    bd_workspace *ws = ws_for(L, fn, 0);
    lua_settop(L, 2);
    void *opts = lua_newuserdatauv(L, op->size, 0); /* collected with the rest */
    op->init(opts);
    if (op == &bd_quantize_op)
        bd_ws_quantize_defaults(ws, opts);
    read_options(L, 2, fn, op, opts);
    lua_createtable(L, 0, bd_opt_op_count(op));
    size_t at;
    const bd_opt *o;
    for (int i = 0; (o = bd_opt_op_at(op, i, &at)); i++) {
        char value[256];
        bd_opt_value(o, (char *)opts + at, value, sizeof value);
        if (o->type == BD_OPT_FLAG)
            lua_pushboolean(L, strcmp(value, "1") == 0);
        else if (o->type == BD_OPT_WORD || o->type == BD_OPT_TEXT || o->type == BD_OPT_PARSE ||
                 !lua_stringtonumber(L, value))
            lua_pushstring(L, value);
        if (value[0] || o->type == BD_OPT_FLAG)
            lua_setfield(L, -2, o->key);
        else
            lua_pop(L, 1);
    }
    return 1;
}

/* Raises st's message, named by fn rather than by the command-language
 * name (prefix, "train: ") the operation gave itself. */
static void check_run(lua_State *L, bd_status st, const char *fn, const char *prefix)
{
    size_t len = strlen(prefix);
    if (st != BD_OK && strncmp(bd_error_message(), prefix, len) == 0) {
        char why[1024];
        snprintf(why, sizeof why, "%s", bd_error_message() + len);
        bd_fail(st, "%s", why);
    }
    check(L, st, fn);
}

/* Epoch e as a table on the stack; phase (may be NULL) names its phase. */
static void push_epoch(lua_State *L, const bd_training_epoch *e, const char *phase)
{
    lua_createtable(L, 0, 9);
    set_int(L, "epoch", e->epoch);
    if (phase)
        set_str(L, "phase", phase);
    set_num(L, "loss", e->loss);
    set_num(L, "train_top1", e->train_top1);
    if (e->top1 >= 0) {
        set_num(L, "top1", e->top1);
        set_num(L, "top5", e->top5);
    }
    if (e->quant_top1 >= 0)
        set_num(L, "quant_top1", e->quant_top1);
    set_num(L, "lr", e->lr);
    set_num(L, "seconds", e->seconds);
}

/* bd.train{epochs=, lr=, quant_noise="pq:p=0.1", ...}: every field is a key of
 * the training options' table (options.h), a number or boolean given as
 * its text -> {{epoch=, loss=, train_top1=, top1=, top5=, quant_top1=,
 * lr=, seconds=}, ...}, one per epoch; top1, top5 and quant_top1 are nil
 * when the run did not measure them */
static int l_train(lua_State *L)
{
    const char *fn = "bd.train";
    bd_training_options o;
    bd_training_options_init(&o);
    read_options(L, 1, fn, &bd_training_op, &o);
    bd_training_report r;
    check_run(L, bd_ws_train(ws_for(L, fn, 1), &o, NULL, NULL, &r), fn, "train: ");
    hold(script_of(L), r.per_epoch); /* freed even if building the tables raises */
    lua_createtable(L, r.epochs, 0);
    for (int i = 0; i < r.epochs; i++) {
        push_epoch(L, &r.per_epoch[i], NULL);
        lua_rawseti(L, -2, i + 1);
    }
    hold(script_of(L), NULL);
    return 1;
}

/* A BitPruning report's layers and epochs in one block, so that hold frees
 * it whatever building the tables raises. */
typedef struct bitprune_result {
    int nlayers, learn, tune;
    bd_bitprune_layer *layers;
    bd_training_epoch *epochs; /* learn, then tune */
} bitprune_result;

static bitprune_result *bitprune_result_of(const bd_bitprune_report *r)
{
    size_t nl = (size_t)r->nlayers, ne = (size_t)r->learn.epochs + (size_t)r->tune.epochs;
    bitprune_result *b = malloc(sizeof *b + nl * sizeof *b->layers + ne * sizeof *b->epochs);
    if (!b)
        return NULL;
    b->nlayers = r->nlayers;
    b->learn = r->learn.epochs;
    b->tune = r->tune.epochs;
    b->layers = (bd_bitprune_layer *)(b + 1);
    b->epochs = (bd_training_epoch *)(b->layers + nl);
    memcpy(b->layers, r->layers, nl * sizeof *b->layers);
    memcpy(b->epochs, r->learn.per_epoch, (size_t)b->learn * sizeof *b->epochs);
    if (b->tune) /* finetune_epochs=0: no epochs, and no array to copy from */
        memcpy(b->epochs + b->learn, r->tune.per_epoch, (size_t)b->tune * sizeof *b->epochs);
    return b;
}

/* bd.bitprune{target_bits=4, epochs=2, ...}: every field is a key of
 * BitPruning's table or training's, given as bd.train's are -> {mean_bits=,
 * mean_bits_layers=, learned_mean=, lambda=, size= (compressed bytes),
 * act_mean=, bitops= (with activations),
 * layers={{name=, learned=, bits=, min_bits=, max_bits=, params=,
 * act_learned=, act_bits= (with activations)}, ...},
 * epochs={{phase="learn"|"tune", epoch=, loss=, ...}, ...}} */
static int l_bitprune(lua_State *L)
{
    const char *fn = "bd.bitprune";
    bd_bitprune_options o;
    bd_bitprune_options_init(&o);
    read_options(L, 1, fn, &bd_bitprune_op, &o);
    bd_workspace *ws = ws_for(L, fn, 1);
    bd_bitprune_report r;
    check_run(L, bd_ws_bitprune(ws, &o, NULL, 0, NULL, NULL, &r), fn, "bitprune: ");
    bitprune_result *b = bitprune_result_of(&r);
    const double mean = r.mean_bits, per_layer = r.mean_bits_layers, learned = r.learned_mean,
                 lambda = r.lambda, act_mean = r.act_mean, bitops = r.bitops;
    bd_bitprune_report_free(&r);
    if (!b)
        luaL_error(L, "%s: out of memory", fn);
    hold(script_of(L), b);
    bd_model_size size;
    bd_ws_size(ws, &size);
    lua_createtable(L, 0, 7);
    set_num(L, "mean_bits", mean);
    set_num(L, "mean_bits_layers", per_layer);
    set_num(L, "learned_mean", learned);
    set_num(L, "lambda", lambda);
    set_int(L, "size", size.compressed_bytes);
    if (o.activations) {
        set_num(L, "act_mean", act_mean);
        set_num(L, "bitops", bitops);
    }
    lua_createtable(L, b->nlayers, 0);
    for (int j = 0; j < b->nlayers; j++) {
        const bd_bitprune_layer *l = &b->layers[j];
        lua_createtable(L, 0, 6);
        set_str(L, "name", bd_ws_layer_at(ws, l->layer)->layer.name);
        set_num(L, "learned", l->learned);
        set_num(L, "bits", l->bits);
        set_int(L, "min_bits", l->min_bits);
        set_int(L, "max_bits", l->max_bits);
        set_int(L, "params", l->params);
        if (l->act.bits > 0) {
            set_num(L, "act_learned", l->act_learned);
            set_int(L, "act_bits", l->act.bits);
        }
        lua_rawseti(L, -2, j + 1);
    }
    lua_setfield(L, -2, "layers");
    lua_createtable(L, b->learn + b->tune, 0);
    for (int i = 0; i < b->learn + b->tune; i++) {
        push_epoch(L, &b->epochs[i], i < b->learn ? "learn" : "tune");
        lua_rawseti(L, -2, i + 1);
    }
    lua_setfield(L, -2, "epochs");
    hold(script_of(L), NULL);
    return 1;
}

static int l_reset(lua_State *L)
{
    const char *glob = luaL_optstring(L, 1, NULL);
    check(L, bd_ws_reset(ws_for(L, "bd.reset", 1), glob), "bd.reset");
    return 0;
}

/* bd.undo() -> what was undone, or nil when there was nothing */
static int l_undo(lua_State *L)
{
    bd_workspace *ws = ws_for(L, "bd.undo", 0);
    if (!bd_ws_undo_label(ws))
        return 0;
    char what[256];
    check(L, bd_ws_undo(ws, what, sizeof what), "bd.undo");
    lua_pushstring(L, what);
    return 1;
}

static void push_ints(lua_State *L, const int *v, int n)
{
    lua_createtable(L, n, 0);
    for (int j = 0; j < n; j++) {
        lua_pushinteger(L, v[j]);
        lua_rawseti(L, -2, j + 1);
    }
}

/* bd.trial(name, {d=, k=K or {K...}, iters=}) -> {d=, k={...}, errors={...}, bytes={...}}:
 * d defaults to the plan's, k to every power of two from 2 to the cap. */
/* A number or a list of whole numbers from lo to hi at option key of
 * table o into v[0..*n), at most cap of them; *n = 0 when absent. */
static void opt_ints(lua_State *L, int o, const char *fn, const char *key, int lo, int hi, int *v,
                     int cap, int *n)
{
    int t = get_option(L, o, key);
    *n = 0;
    if (t == LUA_TNUMBER) {
        lua_pop(L, 1);
        v[(*n)++] = (int)opt_int(L, o, fn, key, 0, lo, hi);
        return;
    }
    if (t == LUA_TTABLE) {
        *n = (int)luaL_len(L, -1);
        if (*n < 1 || *n > cap)
            luaL_error(L, "%s: option %s must list 1 to %d values, not %d", fn, key, cap, *n);
        for (int j = 0; j < *n; j++) {
            int isint = 0;
            lua_rawgeti(L, -1, j + 1);
            lua_Integer x = lua_tointegerx(L, -1, &isint);
            if (lua_type(L, -1) != LUA_TNUMBER || !isint || x < lo || x > hi)
                luaL_error(L, "%s: option %s[%d] must be a whole number from %d to %d", fn, key,
                           j + 1, lo, hi);
            v[j] = (int)x;
            lua_pop(L, 1);
        }
    } else if (t != LUA_TNIL) {
        luaL_error(L, "%s: option %s must be a number or a list of numbers, not a %s", fn, key,
                   lua_typename(L, t));
    }
    lua_pop(L, 1);
}

static void push_list(lua_State *L, const char *key, const double *x, const int64_t *b, int n)
{
    lua_createtable(L, n, 0);
    for (int j = 0; j < n; j++) {
        if (x)
            lua_pushnumber(L, x[j]);
        else
            lua_pushinteger(L, b[j]);
        lua_rawseti(L, -2, j + 1);
    }
    lua_setfield(L, -2, key);
}

static int l_trial(lua_State *L)
{
    static const char *const keys[] = {"d", "k", "bits", "iters", NULL};
    enum { MAXK = 64 };
    const char *fn = "bd.trial";
    bd_workspace *ws = ws_for(L, fn, 1);
    int i = layer_arg(L, ws, 1, fn);
    const bd_layer *ly = &bd_ws_layer_at(ws, i)->layer;
    int o = options(L, 2, fn, keys);
    int d = (int)opt_int(L, o, fn, "d", bd_ws_layer_at(ws, i)->d, 1, 1 << 20);
    int iters = (int)opt_int(L, o, fn, "iters", 0, 1, 100000);
    int ks[MAXK], nk, bits[MAXK], nb;
    opt_ints(L, o, fn, "k", 1, 65536, ks, MAXK, &nk);
    opt_ints(L, o, fn, "bits", BD_INT_MIN_BITS, BD_INT_MAX_BITS, bits, MAXK, &nb);
    int has_d = get_option(L, o, "d") != LUA_TNIL;
    lua_pop(L, 1);
    if (nb && (nk || has_d))
        luaL_error(L, "%s: bits is a format of its own; d and k apply to pq only", fn);
    bd_pq_layout lay;
    if (!nb) {
        check(L, bd_pq_layout_init(ly, d, &lay), fn);
        if (nk == 0) /* every power of two up to the cap */
            for (int k = 2; k <= bd_pq_max_k(lay.n) && nk < MAXK; k *= 2)
                ks[nk++] = k;
        if (nk == 0)
            luaL_error(L, "%s: layer '%s' with d=%d has too few blocks for 2 centroids", fn,
                       ly->name, d);
    }
    double errors[MAXK];
    int64_t bytes[MAXK];
    check(L, bd_ws_trial(ws, i, nb ? BD_FMT_INT : BD_FMT_PQ, d, nb ? bits : ks, nb ? nb : nk, iters,
                         errors, bytes),
          fn);
    lua_createtable(L, 0, 4);
    if (nb) {
        push_ints(L, bits, nb);
        lua_setfield(L, -2, "bits");
    } else {
        set_int(L, "d", d);
        push_ints(L, ks, nk);
        lua_setfield(L, -2, "k");
    }
    push_list(L, "errors", errors, NULL, nb ? nb : nk);
    push_list(L, "bytes", NULL, bytes, nb ? nb : nk);
    return 1;
}

static void push_accuracy(lua_State *L, const bd_accuracy *a)
{
    lua_createtable(L, 0, 3);
    set_num(L, "top1", a->top1);
    set_num(L, "top5", a->top5);
    set_int(L, "n", a->n);
}

/* bd.eval{n=} -> {teacher={top1=, top5=, n=}, student={...}}, in percent */
static int l_eval(lua_State *L)
{
    static const char *const keys[] = {"n", NULL};
    int64_t n = opt_int(L, options(L, 1, "bd.eval", keys), "bd.eval", "n", 0, 0, INT64_MAX);
    bd_accuracy t, s;
    check(L, bd_ws_eval(ws_for(L, "bd.eval", 1), n, &t, &s), "bd.eval");
    lua_createtable(L, 0, 2);
    push_accuracy(L, &t);
    lua_setfield(L, -2, "teacher");
    push_accuracy(L, &s);
    lua_setfield(L, -2, "student");
    return 1;
}

static void push_prediction(lua_State *L, const bd_workspace *ws, const bd_prediction *p)
{
    lua_createtable(L, p->k, 0);
    for (int j = 0; j < p->k; j++) {
        lua_createtable(L, 0, 3);
        set_int(L, "class", p->cls[j]);
        set_num(L, "prob", p->prob[j]);
        const char *name = bd_ws_class_name(ws, p->cls[j]);
        if (name)
            set_str(L, "name", name);
        lua_rawseti(L, -2, j + 1);
    }
}

/* bd.predict(image) -> {teacher={{class=, name=, prob=}, ...}, student={...}} */
static int l_predict(lua_State *L)
{
    const char *path = luaL_checkstring(L, 1);
    bd_workspace *ws = ws_for(L, "bd.predict", 1);
    bd_prediction t, s;
    check(L, bd_ws_predict(ws, path, &t, &s), "bd.predict");
    lua_createtable(L, 0, 2);
    push_prediction(L, ws, &t);
    lua_setfield(L, -2, "teacher");
    push_prediction(L, ws, &s);
    lua_setfield(L, -2, "student");
    return 1;
}

static int l_size(lua_State *L)
{
    bd_model_size z;
    bd_ws_size(ws_for(L, "bd.size", 1), &z);
    lua_createtable(L, 0, 8);
    set_int(L, "fp32_bytes", z.fp32_bytes);
    set_int(L, "compressed_bytes", z.compressed_bytes);
    set_int(L, "code_bytes", z.code_bytes);
    set_int(L, "codebook_bytes", z.codebook_bytes);
    set_int(L, "other_bytes", z.other_bytes);
    set_num(L, "ratio", z.ratio);
    set_num(L, "fp32_mb", bd_mb(z.fp32_bytes));
    set_num(L, "compressed_mb", bd_mb(z.compressed_bytes));
    return 1;
}

/* bd.save(path, {decoded=}) -> {bytes=, original_bytes=, ratio=, summary=}: the
 * file's size on disk, the original model file's and their ratio (nil when
 * the original is unknown), and the line the commands print about it */
static int l_save(lua_State *L)
{
    static const char *const keys[] = {"decoded", NULL};
    const char *path = luaL_checkstring(L, 1);
    int decoded = opt_bool(L, options(L, 2, "bd.save", keys), "bd.save", "decoded", 0);
    bd_workspace *ws = ws_for(L, "bd.save", 1);
    check(L, bd_ws_save(ws, path, decoded), "bd.save");
    bd_disk_size disk;
    bd_model_size payload;
    char summary[256];
    bd_ws_last_saved(ws, &disk);
    bd_ws_size(ws, &payload);
    lua_createtable(L, 0, 4);
    set_int(L, "bytes", disk.bytes);
    if (disk.ratio > 0) {
        set_int(L, "original_bytes", disk.original_bytes);
        set_num(L, "ratio", disk.ratio);
    }
    bd_disk_size_str(&disk, decoded ? NULL : &payload, summary, sizeof summary);
    set_str(L, "summary", summary);
    return 1;
}

/* bd.path() -> the loaded model's file, or nil when none is loaded */
static int l_path(lua_State *L)
{
    bd_workspace *ws = ws_for(L, "bd.path", 0);
    if (!bd_ws_loaded(ws))
        return lua_pushnil(L), 1;
    lua_pushstring(L, bd_ws_path(ws));
    return 1;
}

static int l_load(lua_State *L)
{
    const char *path = luaL_checkstring(L, 1);
    check(L, bd_ws_load(ws_for(L, "bd.load", 0), path), "bd.load");
    return 0;
}

/* bd.data(kind, [spec], [{n=, color=, resize=, crop=, mean=, std=}]) ->
 * {spec=, n=}: sets the calibration or evaluation data (a nil spec keeps the
 * current one) and the preprocessing of all images, or with kind alone says
 * what it is. color first: it decides how many values mean and std take. */
static int l_data(lua_State *L)
{
    static const char *const kinds[] = {"calib", "eval", NULL};
    static const char *const keys[] = {"n", "color", "resize", "crop", "mean", "std", NULL};
    bd_data_kind kind = (bd_data_kind)luaL_checkoption(L, 1, NULL, kinds);
    const char *spec = luaL_optstring(L, 2, NULL);
    int o = options(L, 3, "bd.data", keys);
    bd_workspace *ws = ws_for(L, "bd.data", 1);
    bd_preprocess pp = *bd_ws_preprocess(ws);
    int changed = 0;
    for (int i = 1; o && keys[i]; i++) {
        if (get_option(L, o, keys[i]) != LUA_TNIL) {
            check(L, bd_preprocess_set(&pp, keys[i], luaL_tolstring(L, -1, NULL)), "bd.data");
            lua_pop(L, 1);
            changed = 1;
        }
        lua_pop(L, 1);
    }
    int has_n = get_option(L, o, "n") != LUA_TNIL;
    lua_pop(L, 1);
    if (spec || has_n) {
        int64_t n = opt_int(L, o, "bd.data", "n", 0, 0, INT64_MAX);
        if (!spec && !(spec = bd_ws_data_spec(ws, kind)))
            luaL_error(L, "bd.data: no %s data is set, so a spec is needed", kinds[kind]);
        lua_pushstring(L, spec); /* the workspace's own copy is about to be replaced */
        check(L, bd_ws_data(ws, kind, lua_tostring(L, -1), n), "bd.data");
    }
    if (changed)
        check(L, bd_ws_set_preprocess(ws, &pp), "bd.data");
    lua_createtable(L, 0, 2);
    if (bd_ws_data_spec(ws, kind))
        set_str(L, "spec", bd_ws_data_spec(ws, kind));
    set_int(L, "n", bd_ws_data_n(ws, kind));
    return 1;
}

/* bd.device([name]) -> the device in use */
static int l_device(lua_State *L)
{
    const char *name = luaL_optstring(L, 1, NULL);
    bd_workspace *ws = ws_for(L, "bd.device", 0);
    if (name)
        check(L, bd_ws_device(ws, name), "bd.device");
    lua_pushstring(L, bd_ws_device_name(ws));
    return 1;
}

/* bd.on_progress(fn or nil): fn(stage, done, total, message, metric) */
static int l_on_progress(lua_State *L)
{
    if (!lua_isnil(L, 1))
        luaL_checktype(L, 1, LUA_TFUNCTION);
    ws_for(L, "bd.on_progress", 0);
    script *s = script_of(L);
    lua_settop(L, 1);
    int ref = lua_isnil(L, 1) ? LUA_NOREF : luaL_ref(L, LUA_REGISTRYINDEX);
    luaL_unref(L, LUA_REGISTRYINDEX, s->progress_ref);
    s->progress_ref = ref;
    return 0;
}

typedef struct text {
    char *buf;
    size_t len, cap;
    int oom;
} text;

static void collect(void *user, const char *t)
{
    text *o = user;
    size_t n = strlen(t);
    if (o->oom)
        return;
    if (o->len + n + 1 > o->cap) {
        size_t cap = 2 * (o->len + n + 1);
        char *b = realloc(o->buf, cap);
        if (!b) {
            o->oom = 1;
            return;
        }
        o->buf = b;
        o->cap = cap;
    }
    memcpy(o->buf + o->len, t, n + 1);
    o->len += n;
}

/* bd.cmd(line) -> what the command printed */
static int l_cmd(lua_State *L)
{
    const char *line = luaL_checkstring(L, 1);
    bd_workspace *ws = ws_for(L, "bd.cmd", 0);
    script *s = script_of(L);
    text out = {0};
    bd_cmd_ctx ctx = {.ws = ws, .print = collect, .user = &out};
    bd_status st = bd_cmd_exec(&ctx, line);
    hold(s, out.buf);
    check(L, st, "bd.cmd");
    if (out.oom)
        luaL_error(L, "bd.cmd: out of memory for the output of '%s'", line);
    lua_pushlstring(L, out.buf ? out.buf : "", out.len);
    hold(s, NULL);
    return 1;
}

static const luaL_Reg bd_functions[] = {
    {"layers", l_layers},   {"layer", l_layer},     {"set", l_set},
    {"regime", l_regime},   {"quantize", l_quantize}, {"reset", l_reset},
    {"undo", l_undo},       {"trial", l_trial},     {"eval", l_eval},
    {"finetune", l_finetune}, {"train", l_train}, {"bitprune", l_bitprune},
    {"predict", l_predict}, {"size", l_size},       {"save", l_save},
    {"load", l_load},       {"path", l_path},       {"data", l_data},       {"device", l_device},
    {"on_progress", l_on_progress}, {"cmd", l_cmd}, {"options", l_options}, {NULL, NULL}};

static int open_bd(lua_State *L)
{
    luaL_newlib(L, bd_functions);
    return 1;
}

/* ---- running a script -------------------------------------------------------------------- */

/* print() through the host's callback, formatted as Lua's own. */
static int host_print(lua_State *L)
{
    int n = lua_gettop(L);
    for (int i = 1; i <= n; i++) {
        luaL_tolstring(L, i, NULL);
        lua_pushstring(L, i < n ? "\t" : "\n");
    }
    if (n == 0)
        lua_pushliteral(L, "\n");
    lua_concat(L, n ? 2 * n : 1);
    const bd_lua_host *h = script_of(L)->host;
    h->print(h->print_user, lua_tostring(L, -1));
    return 0;
}

static void interrupt_hook(lua_State *L, lua_Debug *ar)
{
    (void)ar;
    if (interrupted(script_of(L)))
        luaL_error(L, "interrupted");
}

/* Whether msg begins with a position, "chunk:line: ", as every error Lua
 * or a bd function raises does; error(msg, 0) leaves it out. */
static int has_position(const char *msg)
{
    const char *colon = strchr(msg, ':');
    if (!colon || colon == msg || memchr(msg, '\n', (size_t)(colon - msg)))
        return 0;
    const char *p = colon + 1;
    while (*p >= '0' && *p <= '9')
        p++;
    return p > colon + 1 && *p == ':';
}

/* The message handler: the message with a traceback; a message without a
 * position (error(msg, 0): how the policies refuse an argument) is meant
 * for the user as it stands, and stays alone. */
static int traceback(lua_State *L)
{
    const char *msg = lua_tostring(L, 1);
    if (msg && !has_position(msg))
        return 1;
    if (!msg) {
        if (luaL_callmeta(L, 1, "__tostring") && lua_type(L, -1) == LUA_TSTRING)
            msg = lua_tostring(L, -1);
        else
            msg = lua_pushfstring(L, "(an error object that is a %s value)", luaL_typename(L, 1));
    }
    luaL_traceback(L, L, msg, 1);
    return 1;
}

typedef struct job {
    const char *path; /* a file, or NULL for code */
    const char *code, *name;
    int argc;
    char **argv;
} job;

/* Everything that may raise, under the outer lua_pcall. */
static int pmain(lua_State *L)
{
    const job *j = lua_touserdata(L, 1);
    script *s = script_of(L);
    luaL_openlibs(L);
    luaL_requiref(L, "bd", open_bd, 1);
    lua_pop(L, 1);
    lua_getglobal(L, "package");
    lua_getfield(L, -1, "path");
    lua_pushfstring(L, "%s/lua/policies/?.lua;%s", bd_share_dir(), lua_tostring(L, -1));
    lua_setfield(L, -3, "path");
    lua_pop(L, 2);
    if (s->host->print) {
        lua_pushcfunction(L, host_print);
        lua_setglobal(L, "print");
    }
    lua_createtable(L, j->argc, 1);
    /* a chunk's name may start with Lua's '=' or '@' */
    lua_pushstring(L, j->path ? j->path : j->name + (j->name[0] == '=' || j->name[0] == '@'));
    lua_rawseti(L, -2, 0);
    for (int i = 0; i < j->argc; i++) {
        lua_pushstring(L, j->argv[i]);
        lua_rawseti(L, -2, i + 1);
    }
    lua_setglobal(L, "arg");
    lua_pushcfunction(L, traceback);
    int rc = j->path ? luaL_loadfile(L, j->path)
                     : luaL_loadbuffer(L, j->code, strlen(j->code), j->name);
    if (rc != LUA_OK)
        return lua_error(L); /* "file:line: message": no traceback to show */
    luaL_checkstack(L, j->argc, "too many arguments to the script");
    for (int i = 0; i < j->argc; i++)
        lua_pushstring(L, j->argv[i]);
    if (lua_pcall(L, j->argc, 0, 2) != LUA_OK)
        return lua_error(L);
    return 0;
}

static bd_status run(const bd_lua_host *host, const job *j)
{
    lua_State *L = luaL_newstate();
    if (!L)
        return bd_fail(BD_ENOMEM, "out of memory for a Lua state");
    script s = {.host = host, .L = L, .progress_ref = LUA_NOREF};
    *(script **)lua_getextraspace(L) = &s;
    if (host->interrupt)
        lua_sethook(L, interrupt_hook, LUA_MASKCOUNT, 1000);
    bd_ws_on_progress(host->ws, on_progress, &s);
    lua_pushcfunction(L, pmain);
    lua_pushlightuserdata(L, (void *)j);
    int rc = lua_pcall(L, 1, 0, 0);
    bd_ws_on_progress(host->ws, host->progress, host->progress_user);
    bd_status st = BD_OK;
    if (rc != LUA_OK) {
        const char *msg = lua_tostring(L, -1);
        st = bd_fail(BD_EINVAL, "%s", msg ? msg : "a Lua error (out of memory)");
    }
    lua_close(L);
    free(s.callback_error);
    free(s.held);
    return st;
}

bd_status bd_lua_run_file(const bd_lua_host *host, const char *path, int argc, char **argv)
{
    job j = {.path = path, .argc = argc, .argv = argv};
    return run(host, &j);
}

bd_status bd_lua_run_string(const bd_lua_host *host, const char *code, const char *name,
                            int argc, char **argv)
{
    job j = {.code = code, .name = name, .argc = argc, .argv = argv};
    return run(host, &j);
}

bd_status bd_lua_run_script(void *host, const char *path, int argc, char **argv)
{
    return bd_lua_run_file(host, path, argc, argv);
}
