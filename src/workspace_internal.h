/* The workspace's insides, shared by the files that implement it
 * (workspace.c, checkpoint.c); no front-end includes this. */
#ifndef BD_WORKSPACE_INTERNAL_H
#define BD_WORKSPACE_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>

#include "bitprune.h"
#include "device.h"
#include "exec.h"
#include "quantize.h"
#include "training.h"
#include "workspace.h"

/* One layer as it was before an operation, to put back on undo or rollback. */
typedef struct saved_layer {
    int index;
    bd_ws_layer layer; /* deep copy (its own codebook) */
} saved_layer;

/* A parameter other than a layer weight (a bias, BatchNorm's scale, shift
 * and statistics), which fine-tuning may change. */
typedef struct saved_tensor {
    int value;
    bd_tensor *copy;
} saved_tensor;

typedef struct undo_step {
    char label[160];
    int n;
    saved_layer *saved;
    int nt;
    saved_tensor *tensors;
    /* Training changes where the layers' float weights come from: its step
     * keeps the original[] and source that were (original NULL in every
     * other step) to put back. */
    const bd_tensor **original;
    bd_graph *source;
    uint64_t params_version; /* the float parameters' before the step */
    /* Training without quantized layers also replaces the teacher with the
     * trained model; its step keeps the teacher that was (NULL otherwise). */
    bd_graph *teacher;
    bd_exec *teacher_ex;
    char *teacher_path;
    int trained_teacher;
    /* BitPruning's activation quantizers add nodes to the student: its
     * step keeps the student that was and its executor (NULL otherwise). */
    bd_graph *student;
    bd_exec *student_ex;
} undo_step;

enum { UNDO_MAX = 64 };

struct bd_workspace {
    pthread_mutex_t mu;
    char *path;
    char *teacher_path; /* the original model's file (absolute), NULL if unknown */
    int trained_teacher; /* the teacher was trained here: no file holds it */
    /* what sizes on disk compare with (the teacher's file when loaded, kept
     * when training replaces the teacher), NULL if unknown; the last file
     * saved and its size */
    char *original_file;
    char *saved_path;
    bd_disk_size saved_size;
    /* what is saved (bd_ws_unsaved): the layers' codebook versions and the
     * float parameters' version in the file last loaded or saved, the
     * versions now, and the last one given out */
    uint64_t *saved_versions;
    uint64_t saved_params_version, params_version, last_version;
    bd_graph *teacher, *student;
    bd_exec *teacher_ex, *student_ex;
    bd_ws_layer *layers;
    int nlayers;
    /* Each layer's float source: what its weight is when float, and what
     * quantize and reset start from. Its weight in the teacher, or in
     * source once training with quantized layers trained the float ones. */
    const bd_tensor **original;
    /* Every layer's float source as its weight (the value ids are the
     * student's), or NULL while the teacher's weights are the sources. */
    bd_graph *source;
    bd_preprocess pp;
    char **classes;
    int nclasses;
    /* data, by bd_data_kind */
    char *spec[2];
    int64_t n[2];
    bd_dataset *data[2];
    /* the images each set holds, -1 before it was first opened; kept while
     * new preprocessing closes the set (it reopens the same images) */
    int64_t count[2];
    bd_calib *calib;
    /* settings */
    bd_device *device; /* the GPU in use, NULL: the CPU */
    /* the loaded model on the GPU, made on first use */
    bd_dexec *dev_teacher, *dev_student;
    int device_cannot; /* the GPU lacks an op of the loaded model: the CPU runs it */
    int threads;
    int batch;
    int compare;
    uint64_t seed;
    int restarts; /* EM's search (pq.h) */
    double tol;
    /* cached results */
    bd_accuracy teacher_acc, student_acc;
    char *teacher_acc_key;
    bd_ws_point points[BD_WS_MAX_POINTS]; /* bd_ws_points */
    int npoints;
    /* history */
    undo_step undo[UNDO_MAX];
    int nundo;
    /* the last training run, for display (bd_ws_last_training) */
    int trained, training;
    bd_training_options train_opt;
    bd_training_epoch *train_epochs;
    int ntrain_epochs;
    /* the last BitPruning run, for display (bd_ws_last_bitprune): its
     * epochs (learning's, then fine-tuning's) and the latest bit lengths,
     * bp_bits holding live's per-layer arrays (2 nlayers: the weights',
     * then the inputs') */
    int bitpruned, bitpruning;
    bd_bitprune_options bp_opt;
    bd_training_epoch *bp_epochs;
    int nbp_epochs, bp_room;
    bd_bitprune_live bp_live;
    double *bp_bits;
    /* the last sensitivity measure of each layer (bd_ws_last_sensitivity):
     * nlayers entries, NULL until the first measure */
    struct sensitivity_entry *sens;
    /* progress */
    bd_progress_fn progress_fn;
    void *progress_user;
    atomic_int cancel;
    /* crash safety (checkpoint.c) */
    char *checkpoint; /* where to write, NULL: off */
    int autosave;     /* every model loaded gets its default checkpoint */
};

/* A quantization in progress, as a checkpoint records it so that a
 * resumed session finishes it the same way. */
typedef struct bd_ws_pending {
    const int *idx; /* the layers, in order */
    int n;
    int done; /* how many of them are finished */
    int iters;
    const bd_finetune_options *tune; /* NULL: none */
} bd_ws_pending;

/* Writes the checkpoint (if enabled) atomically: the student as compressed
 * ONNX with the plan, data, settings and the pending work in its metadata.
 * A failure is reported through the progress callback, not returned: the
 * operation itself succeeded. */
void bd_ws_checkpoint_write(bd_workspace *ws, const bd_ws_pending *pending);

/* The student as a compressed graph (what bd_ws_save writes). */
bd_status bd_ws_export(bd_workspace *ws, bd_graph **out);

/* Quantizes the listed layers in order as one undo step (the shared body of
 * bd_ws_quantize_tuned and the continuation of a resumed checkpoint). */
bd_status bd_ws_quantize_list(bd_workspace *ws, const int *idx, int n, const char *label,
                              int iters, const bd_finetune_options *tune);

#endif


