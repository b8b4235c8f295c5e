/* Option tables: one table per operation names its settings, their types,
 * ranges and help, and every front-end reads it. The command line makes
 * "--key VALUE" of each entry, the command language "key=VALUE", Lua a
 * table field; help is printed from the same entries. So a setting exists
 * in all of them or in none, with one spelling and one check. */
#ifndef BD_OPTIONS_H
#define BD_OPTIONS_H

#include <stddef.h>

#include "status.h"

typedef enum bd_opt_type {
    BD_OPT_INT,   /* int, in [min, max] */
    BD_OPT_INT64, /* int64_t, in [min, max] */
    BD_OPT_FLOAT, /* float, in [min, max] */
    BD_OPT_FLAG,  /* int 0/1: "1", "0", "yes", "no", "on", "off", "true", "false" */
    BD_OPT_WORD,  /* int: the index of the value in words */
    BD_OPT_TEXT,  /* char[size]: the value itself */
    BD_OPT_PARSE  /* parse(where, value, field) fills the field */
} bd_opt_type;

typedef struct bd_opt {
    const char *key;
    bd_opt_type type;
    size_t offset; /* of the field in the options struct */
    double min, max;
    const char *const *words; /* BD_OPT_WORD, NULL-terminated */
    size_t size;              /* BD_OPT_TEXT: the field's capacity */
    bd_status (*parse)(const char *where, const char *value, void *field);
    const char *arg;  /* what the value looks like in help: "N", "X", "SPEC" */
    const char *help; /* one line */
} bd_opt;

/* The entry named key in a table ended by an entry with key NULL. */
const bd_opt *bd_opt_find(const bd_opt *table, const char *key);

/* Sets key to value in obj (the struct the table describes). `where` names
 * the operation in messages ("train: lr must be ..."). Unknown keys, bad
 * numbers, values out of range and unknown words fail, leaving obj as it
 * was. */
bd_status bd_opt_set(const bd_opt *table, void *obj, const char *where, const char *key,
                     const char *value);

/* An entry's name on the command line: "--" and the key with '-' for '_'
 * (eval_n: --eval-n). */
void bd_opt_cli_name(const bd_opt *o, char *buf, size_t cap);

/* Help for every entry, one per line: "  --eval-n N   help" for the command
 * line (cli set), "  eval_n=N   help" for the command language. */
void bd_opt_help(const bd_opt *table, int cli, char *buf, size_t cap);

/* "key key key ..." of a table, for usage lines and completion lists. */
int bd_opt_count(const bd_opt *table);

#endif
