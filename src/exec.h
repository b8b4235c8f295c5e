/* Runs a graph forward on a batch.
 *
 * The executor plans once per graph structure (kernel per node, the last use
 * of every value, fusions) and reads weights from the graph at run time, so
 * changing an initializer's contents needs no new plan (unless it was made
 * BD_EXEC_FROZEN); adding or removing nodes does. Intermediates are freed
 * right after their last use. */
#ifndef BD_EXEC_H
#define BD_EXEC_H

#include "graph.h"

typedef struct bd_exec bd_exec;

enum {
    /* Fold an inference BatchNormalization and a following Relu/Clip into
     * the Conv before them (one pass over the output instead of three).
     * A Pad of zeros that only an AveragePool reads becomes that pool's
     * own padding, counted in its windows (no padded copy).
     * Hooks are not called for the nodes folded away. At batch 1, convs
     * whose outputs only a Concat along the channels reads write them into
     * its output, so that it copies nothing (the hook still sees it, its
     * inputs being slices of one tensor). */
    BD_EXEC_FUSE = 1,
    /* The graph's initializers keep their contents while the executor
     * lives (inference of a loaded model): kernels may keep weights
     * re-laid for them from one run to the next (bd_conv2d_cached), convs
     * their bias and BatchNormalization folded into one scale and shift,
     * and a change made to an initializer in place is then not seen. A
     * depthwise conv may also write its output over an input that nothing
     * after it reads (bd_conv2d_in_place), and a Mul by one factor a
     * channel its product, unless a hook or a transform sees the run. Runs
     * of the executor must not overlap. */
    BD_EXEC_FROZEN = 2
};

/* Called before node `node` runs, with its inputs (NULL where an optional
 * input is omitted). A non-OK return stops the run with that status. */
typedef bd_status (*bd_exec_hook)(void *user, const bd_graph *g, int node,
                                  bd_tensor *const *inputs);

bd_status bd_exec_new(bd_exec **out, const bd_graph *g, int flags);
void bd_exec_free(bd_exec *ex);
/* The graph it runs (a device builds its own executor of it: a GPU's teacher). */
const bd_graph *bd_exec_graph(const bd_exec *ex);

void bd_exec_set_hook(bd_exec *ex, bd_exec_hook hook, void *user);

/* A function of some nodes' first input (BitPruning's learned activation
 * quantizer, bitprune.h): such a node reads forward(x) in x's place, a new
 * tensor of x's shape; x stays what every other reader sees. The trainer
 * (train.h) also maps the gradient back through backward. */
typedef struct bd_input_transform {
    void *ctx;
    int (*applies)(void *ctx, int node);
    bd_status (*forward)(void *ctx, int node, const bd_tensor *x, bd_tensor **y);
    /* dx from dy, the gradient with respect to forward's y (training only) */
    bd_status (*backward)(void *ctx, int node, const bd_tensor *x, const bd_tensor *dy,
                          bd_tensor **dx);
} bd_input_transform;

/* Every later run adds each step's kernel time, in seconds, to
 * seconds[node] (g->nnodes entries, the caller's; NULL stops it). A fused
 * step counts under the node it starts from (a Conv, a BatchNormalization,
 * a MatMul or a Pad; a GELU's Div; a LayerNorm's first ReduceMean); hooks
 * and transforms are not counted. */
void bd_exec_set_profile(bd_exec *ex, double *seconds);
/* What the step starting at `node` runs, for a profile: "GELU",
 * "LayerNorm", "MatMul+bias", "MatMul+bias+GELU" or "Pad+AveragePool" for
 * those chains fused, else the node's op. */
const char *bd_exec_step_op(const bd_exec *ex, int node);

/* Every run applies tf (NULL: none; borrowed) after the hook, which sees
 * the input as it was. */
void bd_exec_set_transform(bd_exec *ex, const bd_input_transform *tf);

/* inputs: one tensor per graph input, in order. outputs: one new tensor per
 * graph output (the caller frees them). */
bd_status bd_exec_run(bd_exec *ex, bd_tensor *const *inputs, bd_tensor **outputs);

/* Runs nodes 0..last only (no outputs): enough to feed a hook on `last`. */
bd_status bd_exec_run_until(bd_exec *ex, bd_tensor *const *inputs, int last);

/* A run held at a point: the values alive before some node, for one batch.
 * Advancing it runs the steps before `node` (hooks included) and frees what
 * is no longer read; a caller may change a later node's weight between two
 * advances and the rest of the run sees the change. */
typedef struct bd_exec_state bd_exec_state;

bd_status bd_exec_state_new(const bd_exec *ex, bd_tensor *const *inputs, bd_exec_state **out);
bd_status bd_exec_advance(bd_exec *ex, bd_exec_state *st, int node);
/* The node the state stands before (g->nnodes at the end). */
int bd_exec_state_node(const bd_exec *ex, const bd_exec_state *st);
/* A value the state holds (NULL if dead or not computed yet). */
const bd_tensor *bd_exec_state_value(const bd_exec_state *st, int value);
/* Bytes of the intermediates it holds. */
size_t bd_exec_state_bytes(const bd_exec *ex, const bd_exec_state *st);
void bd_exec_state_free(const bd_exec *ex, bd_exec_state *st);

/* Convenience for single-input, single-output models. */
bd_status bd_exec_run1(bd_exec *ex, const bd_tensor *input, bd_tensor **output);

#endif
