/* The trainer: a forward pass in training mode that keeps what the
 * backward pass needs, and the backward pass down to the parameters asked
 * for. Backward stops at the earliest node that reads a trained parameter,
 * so tuning one layer deep in a network does not pay for the layers before
 * it; with BatchNorm frozen, those layers even run through the fused
 * inference executor. */
#ifndef BD_TRAIN_H
#define BD_TRAIN_H

#include "exec.h"
#include "grad.h"
#include "graph.h"

typedef struct bd_train bd_train;

/* What training a graph for some parameters involves, worked out once and
 * shared by this trainer and the GPU's (device.h). */
typedef struct bd_train_plan {
    unsigned char *req;  /* per value: the loss's gradient flows through it */
    unsigned char *keep; /* per value: the backward reads it */
    int *last_read;      /* per value: the last node that reads it, -1 if none */
    /* per value: a function of tensor shapes alone (Shape, and what the
     * untrained constants make of its result: Gather, Concat, Reshape
     * targets, ConstantOfShape), so fixed once the input's shape is; no
     * gradient flows through it */
    unsigned char *fold;
    int first;           /* the first node that reads a value in req */
} bd_train_plan;

/* Plans training of g for params[0..n) (value ids of initializers);
 * supported(op) says whether the backward pass has the op. Fails naming
 * the first node on the gradient's path it lacks; shape computations are
 * off that path. */
bd_status bd_train_plan_new(const bd_graph *g, const int *params, int n,
                            int (*supported)(const char *op), bd_train_plan *p);
void bd_train_plan_free(bd_train_plan *p);

typedef struct bd_train_options {
    /* BatchNormalization on batch statistics, running statistics updated
     * with this momentum (PyTorch's convention: running = (1 - m) running
     * + m batch; 0.1 by default); otherwise frozen. */
    int bn_train;
    float bn_momentum;
    /* With bn_train in a job of several ranks: the statistics over the
     * global batch (dist.h), as one process would have them. */
    int bn_sync;
    /* Applied to the first input of the nodes it names, forward and
     * backward (exec.h; NULL: none; borrowed). Such a node's input gets its
     * gradient even where nothing is trained before it (the transform may
     * learn from it); one before the first trained node runs forward only. */
    const bd_input_transform *transform;
} bd_train_options;

/* Plans training of graph g for the parameters params[0..n) (value ids of
 * initializers). The graph is borrowed; its weights may change between
 * steps (the plan reads them at run time). */
bd_status bd_train_new(bd_train **out, bd_graph *g, const int *params, int n,
                       const bd_train_options *opt);
void bd_train_free(bd_train *t);

/* Forward on a batch; *logits gets the graph's (single) output. What the
 * backward needs is kept until bd_train_backward or the next forward. */
bd_status bd_train_forward(bd_train *t, const bd_tensor *x, bd_tensor **logits);

/* Backward from the gradient of the loss with respect to the logits;
 * grads[i] gets a new tensor with the gradient of params[i] (shaped like
 * it). Frees what the forward kept. */
bd_status bd_train_backward(bd_train *t, const bd_tensor *dlogits, bd_tensor **grads);

/* The index of the first node the backward reaches (for tests). */
int bd_train_first_node(const bd_train *t);

#endif
