/* Option tables: one table per operation names its settings, their types,
 * ranges and help, and every front-end reads it. The command line makes
 * "--key VALUE" of each entry, the command language "key=VALUE", Lua a
 * table field; help is printed from the same entries, with each one's range
 * and its default, which the operation's one defaults function gives. So a
 * setting exists in all of them or in none, with one spelling, one check
 * and one default. */
#ifndef BD_OPTIONS_H
#define BD_OPTIONS_H

#include <stddef.h>

#include "status.h"

typedef enum bd_opt_type {
    BD_OPT_INT,    /* int, in [min, max] */
    BD_OPT_INT64,  /* int64_t, in [min, max] */
    BD_OPT_FLOAT,  /* float, in [min, max] */
    BD_OPT_DOUBLE, /* double, in [min, max] */
    BD_OPT_FLAG,   /* int 0/1: "1", "0", "yes", "no", "on", "off", "true", "false" */
    BD_OPT_WORD,   /* int: the index of the value in words */
    BD_OPT_TEXT,   /* char[size]: the value itself */
    BD_OPT_PARSE   /* codec->parse(where, value, field) fills the field */
} bd_opt_type;

/* A BD_OPT_PARSE field's text both ways: parse fills the field (failing,
 * naming `where`, on bad text); show writes the text that parses back to
 * it. */
typedef struct bd_opt_codec {
    bd_status (*parse)(const char *where, const char *value, void *field);
    void (*show)(const void *field, char *buf, size_t cap);
} bd_opt_codec;

typedef struct bd_opt {
    const char *key;
    bd_opt_type type;
    size_t offset; /* of the field in the options struct */
    double min, max;
    const char *const *words;  /* BD_OPT_WORD, NULL-terminated */
    size_t size;               /* BD_OPT_TEXT: the field's capacity */
    const bd_opt_codec *codec; /* BD_OPT_PARSE */
    const char *arg;  /* what the value looks like in help: "N", "X", "SPEC" */
    const char *help; /* one line */
} bd_opt;

/* The entry named key in a table ended by an entry with key NULL. */
const bd_opt *bd_opt_find(const bd_opt *table, const char *key);

/* Sets key to value in obj (the struct the table describes). `where` names
 * the operation in messages ("train: lr must lie in ..."). Unknown keys
 * (the message lists the table's), bad numbers, values out of range (the
 * message names the range) and unknown words fail, leaving obj as it
 * was. */
bd_status bd_opt_set(const bd_opt *table, void *obj, const char *where, const char *key,
                     const char *value);

/* The text of entry o's value in obj (the struct its table describes), as
 * bd_opt_set takes it back: "100", "0.0001", "global", "1" for a flag on. */
void bd_opt_value(const bd_opt *o, const void *obj, char *buf, size_t cap);

/* An entry's name on the command line: "--" and the key with '-' for '_'
 * (eval_n: --eval-n). */
void bd_opt_cli_name(const bd_opt *o, char *buf, size_t cap);

/* ---- an operation's options ------------------------------------------------
 * What one operation (quantize, finetune, train, bitprune) takes: its
 * options struct, described by one table or two (BitPruning's own and, for
 * its .train member, training's), and the function that gives its
 * defaults. Front-ends go through these, never through the tables alone,
 * so they offer the same keys with the same defaults. */

enum { BD_OPT_TABLES = 2 };

typedef struct bd_opt_op {
    const char *name;                   /* "quantize": its messages' and help's */
    const bd_opt *tables[BD_OPT_TABLES]; /* the second may be NULL */
    size_t at[BD_OPT_TABLES];            /* offset of the struct each table describes */
    size_t size;                         /* of the operation's options struct */
    void (*init)(void *opts);            /* its defaults: the one place they come from */
} bd_opt_op;

/* Entry i over the op's tables in turn (NULL past the last); *at (may be
 * NULL) gets the offset of the struct it describes within the options. */
const bd_opt *bd_opt_op_at(const bd_opt_op *op, int i, size_t *at);
int bd_opt_op_count(const bd_opt_op *op);
/* The entry named key, or NULL. */
const bd_opt *bd_opt_op_find(const bd_opt_op *op, const char *key, size_t *at);

/* bd_opt_set on whichever table has key; an unknown key fails with
 * "where: unknown option 'key' (it takes a, b, ... or z)". */
bd_status bd_opt_op_set(const bd_opt_op *op, void *opts, const char *where, const char *key,
                        const char *value);

/* "a, b, ... or z": the op's keys, for messages. */
void bd_opt_op_keys(const bd_opt_op *op, char *buf, size_t cap);

/* Help for every entry, one per line, each with its range and default:
 * "  --iters N   EM iterations ... [1..100000, default 100]" for the command
 * line (cli set), "  iters=N   ..." for the command language. */
void bd_opt_op_help(const bd_opt_op *op, int cli, char *buf, size_t cap);

#endif
