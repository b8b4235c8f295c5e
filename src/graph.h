/* The network IR: values (named tensors, constant or computed), nodes (ops
 * with attributes), graph inputs and outputs, and the model's metadata.
 *
 * It mirrors the part of ONNX bitdown uses, so loading and saving are plain
 * translations. Nodes are kept in topological order (bd_graph_sort). */
#ifndef BD_GRAPH_H
#define BD_GRAPH_H

#include <stdint.h>

#include "status.h"
#include "tensor.h"

/* Attribute types use ONNX's AttributeProto codes. */
typedef enum bd_attr_type {
    BD_ATTR_FLOAT = 1,
    BD_ATTR_INT = 2,
    BD_ATTR_STRING = 3,
    BD_ATTR_TENSOR = 4,
    BD_ATTR_FLOATS = 6,
    BD_ATTR_INTS = 7,
    BD_ATTR_STRINGS = 8
} bd_attr_type;

typedef struct bd_attr {
    char *name;
    bd_attr_type type;
    float f;
    int64_t i;
    char *s; /* NUL-terminated copy; strings with embedded NULs are cut */
    bd_tensor *t;
    int n; /* length of floats / ints / strings */
    float *floats;
    int64_t *ints;
    char **strings;
} bd_attr;

typedef struct bd_node {
    char *name;
    char *op;
    char *domain; /* "" for the default ONNX domain */
    int ninputs;
    int *inputs; /* value ids; -1 for an omitted optional input */
    int noutputs;
    int *outputs;
    int nattrs;
    bd_attr *attrs;
} bd_node;

typedef struct bd_value {
    char *name;
    bd_tensor *init; /* owned; non-NULL for an initializer (a constant) */
    int producer;    /* index of the node that computes it, -1 if none */
    /* Declared type, from graph inputs/outputs/value_info (or the
     * initializer). Unknown dims are -1; symbolic ones keep their name. */
    bd_dtype dtype;
    int ndim; /* -1 when the rank is unknown */
    int64_t dims[BD_MAX_DIMS];
    char *dim_param[BD_MAX_DIMS];
} bd_value;

typedef struct bd_meta {
    char *key;
    char *value;
} bd_meta;

typedef struct bd_graph {
    int nvalues, values_cap;
    bd_value *values;
    int nnodes, nodes_cap;
    bd_node *nodes;
    int ninputs; /* runtime inputs (not initializers) */
    int *inputs;
    int noutputs;
    int *outputs;
    int nmeta;
    bd_meta *meta;
    char *name;
    int64_t ir_version;
    int64_t opset; /* version of the default ONNX domain */
    char *producer_name;
    char *producer_version;
    /* name -> value id, open addressing */
    int index_cap;
    int *index;
} bd_graph;

bd_status bd_graph_new(bd_graph **out);
void bd_graph_free(bd_graph *g);
/* A deep copy (the student starts as a copy of the teacher). */
bd_status bd_graph_clone(bd_graph **out, const bd_graph *g);

/* The id of the value with this name, or -1. */
int bd_graph_find(const bd_graph *g, const char *name);
/* The id of the value with this name, created (undeclared) if missing. */
bd_status bd_graph_value(bd_graph *g, const char *name, int *id);
/* Gives value id another name; fails if another value has it. */
bd_status bd_graph_rename(bd_graph *g, int id, const char *name);
/* Sets value id's initializer, taking ownership of t (the old one is freed). */
void bd_graph_set_init(bd_graph *g, int id, bd_tensor *t);

/* Appends a node; inputs/outputs are value names ("" = omitted optional).
 * The returned pointer stays valid until the next node is added. */
bd_status bd_graph_add_node(bd_graph *g, const char *name, const char *op, const char *domain,
                            int ninputs, const char *const *inputs, int noutputs,
                            const char *const *outputs, bd_node **node);
bd_status bd_node_add_attr(bd_node *n, const bd_attr *a); /* deep copies a */
/* Removes attribute i of n (the others keep their order). */
void bd_node_del_attr(bd_node *n, int i);
/* Removes the nodes whose flag in `drop` is set; keeps the order of the rest. */
void bd_graph_remove_nodes(bd_graph *g, const unsigned char *drop);
/* Moves the last `count` nodes (just added) to index `before`, in their
 * order, the others keeping theirs: nodes that compute a node's new input
 * go right before it, and the order of everything else (the layers' order,
 * bd_layers_find) stays as it was, which bd_graph_sort would not promise. */
void bd_graph_move_last(bd_graph *g, int count, int before);

/* Puts the nodes in topological order and fills every value's producer.
 * Fails, naming the node, on a cycle, on an input that nothing produces, on
 * a value produced twice. */
bd_status bd_graph_sort(bd_graph *g);

/* Number of nodes that read value id (counting repeats). */
int bd_graph_use_count(const bd_graph *g, int id);

const char *bd_graph_meta(const bd_graph *g, const char *key); /* NULL if absent */
bd_status bd_graph_set_meta(bd_graph *g, const char *key, const char *value);
/* Removes a metadata key (nothing if absent). */
void bd_graph_del_meta(bd_graph *g, const char *key);

/* Attribute access; a missing attribute gives the default. */
const bd_attr *bd_node_attr(const bd_node *n, const char *name);
int64_t bd_attr_int(const bd_node *n, const char *name, int64_t def);
float bd_attr_float(const bd_node *n, const char *name, float def);
const char *bd_attr_string(const bd_node *n, const char *name, const char *def);
/* Number of ints and a pointer to them, or -1 when absent. */
int bd_attr_ints(const bd_node *n, const char *name, const int64_t **vals);

/* The node's input tensor i if it is a constant (initializer), else NULL. */
const bd_tensor *bd_node_const_input(const bd_graph *g, const bd_node *n, int i);

/* A value's declared shape, "[batch, 3, 224, 224]": symbolic dims by name,
 * unknown ones as "?", an unknown rank as "?". */
const char *bd_value_shape_str(const bd_value *v, char *buf, size_t cap);

/* "node 'name' (Op)" for messages. */
const char *bd_node_label(const bd_node *n, char *buf, size_t cap);

char *bd_strdup(const char *s);

#endif
