/* The workspace: THE object every front-end drives (the REPL, the TUI, Lua
 * and the one-shot commands). It holds the teacher (the model as loaded)
 * and the student (the model being compressed), the layer plan (d, k,
 * objective per layer) and each layer's state, the calibration and
 * evaluation data, settings (device, threads, seed), an undo history, and
 * progress reporting with cancellation.
 *
 * Every operation either completes or leaves the workspace exactly as it
 * was (on an error, or when cancelled), with a message naming what was
 * wrong. A layer's weight in the student is always a function of its state:
 * its float source when float, the decoded codebook when quantized or
 * tuned; so undo restores states and codebooks, never whole models. A
 * layer's float source is its weight in the teacher, until training with
 * quantized layers trains the float ones (bd_ws_train): their trained
 * weights are their sources from then on. Quantizing a layer starts from
 * its float source, and reset puts it back.
 *
 * Threads: operations run on one thread at a time (the TUI's worker);
 * bd_ws_lock / bd_ws_unlock let another thread read the layer table and the
 * cached results consistently while one runs. */
#ifndef BD_WORKSPACE_H
#define BD_WORKSPACE_H

#include <stdint.h>

#include "bitprune.h"
#include "data.h"
#include "finetune.h"
#include "graph.h"
#include "layers.h"
#include "progress.h"
#include "codec.h"
#include "plan.h"
#include "quantize.h"
#include "size.h"
#include "training.h"

typedef enum bd_layer_state {
    BD_STATE_FLOAT = 0,
    BD_STATE_QUANTIZED,
    BD_STATE_TUNED
} bd_layer_state;

const char *bd_layer_state_name(bd_layer_state s);

typedef struct bd_ws_layer {
    bd_layer layer; /* name, op, node and weight ids in the student */
    /* the plan */
    int quantize; /* taken by "quantize all" (the first conv is not, by default) */
    bd_format format;
    int d, k;          /* pq */
    bd_int_spec ints;  /* int */
    bd_objective objective;
    char note[160]; /* what the plan adjusted (clamped k, nearest d) */
    /* the state */
    bd_layer_state state;
    bd_qlayer q; /* the codebook, when quantized or tuned (q.k > 0) */
    /* which codebook this is: each new or tuned one gets a new number, and
     * undo brings the old number back with the old codebook (bd_ws_unsaved) */
    uint64_t version;
} bd_ws_layer;

/* A layer's plan fields as a bd_layer_plan. */
bd_layer_plan bd_ws_plan_of(const bd_ws_layer *l);
/* What the layer stores per weight now: its codec's code bits, 32
 * (BD_FLOAT_BITS) while float. Its plan's: bd_plan_bits_per_weight. */
double bd_ws_bits_per_weight(const bd_ws_layer *l);

typedef struct bd_workspace bd_workspace;

bd_status bd_ws_new(bd_workspace **out);
void bd_ws_free(bd_workspace *ws);

/* ---- the model ------------------------------------------------------------ */

/* Loads a model, plain or compressed (a compressed one resumes: its
 * quantized layers come back with their codebooks). Replaces the current
 * model, plan, history and cached results only if loading succeeds. The
 * plan starts as the small regime. Data specs default to the model's
 * bitdown.dataset (train split for calibration, test for evaluation). */
bd_status bd_ws_load(bd_workspace *ws, const char *path);
/* The same with an explicit teacher: the original model a compressed file
 * was made from (refused if its layers differ). */
bd_status bd_ws_load_teacher(bd_workspace *ws, const char *path, const char *teacher);
int bd_ws_loaded(const bd_workspace *ws);
const char *bd_ws_path(const bd_workspace *ws);
const bd_graph *bd_ws_teacher(const bd_workspace *ws);
const bd_graph *bd_ws_student(const bd_workspace *ws);

/* ---- layers and the plan ---------------------------------------------------- */

int bd_ws_nlayers(const bd_workspace *ws);
const bd_ws_layer *bd_ws_layer_at(const bd_workspace *ws, int i);
/* -1 if no layer has that name. */
int bd_ws_layer_index(const bd_workspace *ws, const char *name);
/* The indices of the layers matching glob (fnmatch; NULL or "all": every
 * layer whose plan says quantize), in graph order. Fails if none match.
 * *idx is malloc'ed. */
bd_status bd_ws_select(const bd_workspace *ws, const char *glob, int **idx, int *n);

/* A change to the plan (plan.h: start from BD_PLAN_CHANGE_NONE). */
typedef bd_plan_change bd_ws_change;

/* Applies a change to every layer matching glob; refused as a whole (with a
 * message naming the layer and what it allows) if any layer cannot take it.
 * A layer already quantized keeps its codebook until quantized again. */
bd_status bd_ws_set(bd_workspace *ws, const char *glob, const bd_ws_change *c);
/* Replaces the plan with a regime (bd_plan_regime: small, large, int8, ...). */
bd_status bd_ws_regime(bd_workspace *ws, const char *regime, int quantize_first);

/* ---- data ------------------------------------------------------------------- */

typedef enum bd_data_kind { BD_DATA_CALIB = 0, BD_DATA_EVAL = 1 } bd_data_kind;

/* Sets the calibration or evaluation data (opened and checked now, with the
 * model's preprocessing); n limits the images used (0: the default, 1024
 * for calibration, all for evaluation). */
bd_status bd_ws_data(bd_workspace *ws, bd_data_kind kind, const char *spec, int64_t n);
const char *bd_ws_data_spec(const bd_workspace *ws, bd_data_kind kind); /* NULL if unset */
/* The images that will be used: n as set (or the default), at most what
 * the data set holds. */
int64_t bd_ws_data_n(const bd_workspace *ws, bd_data_kind kind);
/* Replaces the preprocessing the model's metadata gave (the command line's
 * --resize, --mean, ... or the data command's options); data already set is
 * reopened with it on next use and calibration is redone. */
bd_status bd_ws_set_preprocess(bd_workspace *ws, const bd_preprocess *pp);
const bd_preprocess *bd_ws_preprocess(const bd_workspace *ws);

/* ---- work --------------------------------------------------------------------- */

/* Quantizes the matching layers (NULL/"all": the plan's), in graph order,
 * each from the student as it stands, with EM for at most iters iterations
 * (0: 100). One undo step. Cancelled or failed: every layer as it was. */
bd_status bd_ws_quantize(bd_workspace *ws, const char *glob, int iters);
/* The same, and after each layer is quantized its centroids are tuned by
 * distillation (layer-wise fine-tuning, tune->iters steps) before the next
 * one; tune NULL or tune->iters 0: no tuning. */
bd_status bd_ws_quantize_tuned(bd_workspace *ws, const char *glob, int iters,
                               const bd_finetune_options *tune);
/* The same for layer i alone, whatever its plan's quantize flag says. */
bd_status bd_ws_quantize_at(bd_workspace *ws, int i, int iters, const bd_finetune_options *tune);
/* The command language's and Lua's quantize: as bd_ws_quantize_tuned with
 * r's iterations and tune steps (fine-tuning's defaults otherwise), EM's
 * search r's for this call only (bd_ws_search's stays). A size target is
 * refused: it stands for a policy, which the front-end runs. */
bd_status bd_ws_quantize_run(bd_workspace *ws, const char *glob, const bd_quantize_run *r);
/* The settings such a call starts from: bd_quantize_run_init's, with EM's
 * search the workspace's (bd_ws_search: the same unless a command line set
 * it for a policy). */
void bd_ws_quantize_defaults(const bd_workspace *ws, bd_quantize_run *r);
/* Fine-tunes the codebooks of the matching quantized layers: one at a time
 * (opt->global 0: layer-wise) or all together (opt->global 1); distillation
 * on the calibration images, or cross-entropy with their labels
 * (opt->loss). Tuned layers are in state "tuned". One undo step; cancelled
 * or failed: everything as it was (BatchNorm statistics and biases
 * included). */
bd_status bd_ws_finetune(bd_workspace *ws, const char *glob, const bd_finetune_options *opt,
                         bd_finetune_report *report);
/* Puts the matching layers back to float (their float sources) and takes
 * away the activation quantizers (act_quant.h) in front of them. One undo
 * step; failed: nothing changed. */
bd_status bd_ws_reset(bd_workspace *ws, const char *glob);
/* Undoes the last change (a quantize, finetune, reset, set, regime,
 * train or bitprune); what gets a
 * description of what was undone. BD_EINVAL when there is nothing to undo. */
bd_status bd_ws_undo(bd_workspace *ws, char *what, size_t cap);
/* Description of what undo would undo, or NULL. */
const char *bd_ws_undo_label(const bd_workspace *ws);

/* A quick fit that changes nothing: the relative output error layer i
 * would get with each of n settings, fitted and measured as a real
 * quantization would be, from the student as it stands (one capture of the
 * layer's inputs serves them all). For policies that search the plan. PQ:
 * block size d and values[j] the k; int: values[j] the bits, per channel
 * and asymmetric, with the plan's objective (round to nearest where the
 * row is too long for the full-row Gram). errors[j] gets the error;
 * bytes[j] (if not NULL) the layer's stored size then. */
bd_status bd_ws_trial(bd_workspace *ws, int i, bd_format format, int d, const int *values, int n,
                      int iters, double *errors, int64_t *bytes);

/* ---- training ------------------------------------------------------------------ */

/* Trains the student (training.h): every float parameter, on the
 * calibration data (the whole set: the n of 'data calib'
 * is calibration's; labels are needed for the labels' loss), evaluated
 * after each epoch on the evaluation data when that is set (opt->eval_n
 * images, 0: the evaluation data's n). The preprocessing is the
 * workspace's, the noise's blocks are laid out as the plan says, the seed
 * is the workspace's when opt->seed is 0, and distillation (BD_LOSS_KL)
 * learns from the teacher as it stands. With cuda the steps run on the
 * GPU; a model with an op the GPU lacks trains on the CPU, which is said
 * once (stage "device").
 *
 * With every layer float, the trained model replaces both the teacher and
 * the student's float parameters (weights, biases, BatchNorm and its
 * running statistics), so a later quantize starts from it and distils from
 * it, and saves no longer name the original file as the teacher (it is not
 * the teacher any more).
 *
 * With layers quantized or tuned (iterative PQ, docs/method.md): a PQ
 * layer trains its centroids (each one's gradient the mean of its
 * members') and becomes tuned, an int layer stays as it is, the float
 * layers train as weights (the noise only on them) and their trained
 * weights become their float sources; biases, BatchNorm and its running
 * statistics go into the student. The teacher stays as it is.
 *
 * Either way cached results of the student are dropped. One undo step,
 * "train", puts every parameter, codebook, state, float source and the
 * teacher back. Failed or cancelled: the model, plan and history as they
 * were.
 *
 * on_epoch (may be NULL) is called on the calling thread after each
 * epoch, for a front-end that prints or plots as the run goes. report (may
 * be NULL) gets the run's report; free it with bd_training_report_free. */
bd_status bd_ws_train(bd_workspace *ws, const bd_training_options *opt, bd_epoch_fn on_epoch,
                      void *user, bd_training_report *report);

/* The last training run on the loaded model, for display from another
 * thread (call under bd_ws_lock): its options (the seed resolved), the
 * epochs it finished so far (while it runs too, and those a failed or
 * cancelled run finished: *epochs stays valid until the lock is released)
 * and whether it is running. Returns 0, setting nothing, when no run was
 * started since the model was loaded. */
int bd_ws_last_training(const bd_workspace *ws, bd_training_options *opt,
                        const bd_training_epoch **epochs, int *n, int *running);

/* ---- BitPruning ------------------------------------------------------------------ */

/* Learns a bit length per layer (or per output channel) and leaves every
 * layer the plan quantizes (the plan's quantize flag, as 'quantize all'
 * takes them) an int codec of its learned bits (bitprune.h). Every layer
 * must be float: a quantized or tuned one is refused, naming it, and
 * nothing changes. Like bd_ws_train: on the calibration data (the whole
 * set), evaluated on the evaluation data when set (o->train.eval_n images,
 * 0: its n), the workspace's preprocessing, its seed when o->train.seed is
 * 0, distillation (train.loss = kl) from the teacher as it stands. The run
 * is on the CPU whatever the device.
 *
 * On success the quantized layers are in state "tuned" (their codecs came
 * out of training), their plans say their int codecs (format int, the
 * learned bits), and they keep their float sources as they were, the weights
 * before the run, so 'reset' returns them to that; the layers left float
 * trained, and their trained weights are their sources from then on;
 * biases and BatchNorm go into the student; the teacher stays. Cached
 * results of the student are dropped. One undo step, "bitprune", puts
 * every parameter, state and float source back. Failed (bad options are
 * refused before any work) or cancelled: everything as it was.
 *
 * checkpoint (NULL: none) is written after every epoch of either phase;
 * with resume the run goes on from it (bitprune.h, bd_bitprune_io), and a
 * checkpoint that does not fit the model or the options is refused before
 * any work. on_epoch (may be NULL) is called on the calling thread after
 * each epoch of the learning phase, then of the fine-tuning (a resumed run:
 * from where it stood; bd_ws_last_bitprune's live.phase says which phase).
 * report (may be NULL) gets the run's report; free it with
 * bd_bitprune_report_free. */
bd_status bd_ws_bitprune(bd_workspace *ws, const bd_bitprune_options *o, const char *checkpoint,
                         int resume, bd_epoch_fn on_epoch, void *user,
                         bd_bitprune_report *report);

/* The last BitPruning run on the loaded model, for display from another
 * thread (call under bd_ws_lock): its options (the seed resolved), the
 * latest bit lengths it reported (live->nlayers 0 before the first; live's
 * bits stay valid until the lock is released), the epochs it finished so
 * far, learning's first then fine-tuning's (*epochs valid until the lock is
 * released), and whether it is running. Returns 0, setting nothing, when
 * no run was started since the model was loaded. */
int bd_ws_last_bitprune(const bd_workspace *ws, bd_bitprune_options *opt, bd_bitprune_live *live,
                        const bd_training_epoch **epochs, int *n, int *running);

/* ---- results ---------------------------------------------------------------- */

typedef struct bd_accuracy {
    int valid;
    int64_t n;
    double top1, top5; /* percent */
} bd_accuracy;

/* Evaluates teacher and student on the evaluation data (n images; 0: as
 * set). The teacher's result is cached per data spec and n. */
bd_status bd_ws_eval(bd_workspace *ws, int64_t n, bd_accuracy *teacher, bd_accuracy *student);
/* The last results (valid == 0 when the student changed since). */
void bd_ws_last_eval(const bd_workspace *ws, bd_accuracy *teacher, bd_accuracy *student);

/* Every evaluation of the student since the model was loaded, at the size
 * it had then: the points of the size / top-1 trade-off the user explored
 * (the TUI's frontier pane). Undo keeps them (they are measurements, not
 * state); loading a model clears them. At most BD_WS_MAX_POINTS are kept,
 * the oldest dropped first. */
enum { BD_WS_MAX_POINTS = 256 };
typedef struct bd_ws_point {
    int64_t bytes;      /* the student's compressed size (bd_ws_size) */
    bd_accuracy acc;
    char label[96];     /* what made the student so: the last change's undo label, or "float" */
} bd_ws_point;
/* The points, oldest first, valid while the lock is held; *n their count.
 * The teacher's own point is not among them: its fp32 size (bd_ws_size)
 * and bd_ws_last_eval's teacher. */
const bd_ws_point *bd_ws_points(const bd_workspace *ws, int *n);

enum { BD_TOPK = 5 };
typedef struct bd_prediction {
    int k;
    int cls[BD_TOPK];
    float prob[BD_TOPK];
} bd_prediction;

/* Top-5 classes of teacher and student for an image file. */
bd_status bd_ws_predict(bd_workspace *ws, const char *image, bd_prediction *teacher,
                        bd_prediction *student);
/* Evaluation sample i (of the evaluation data): its raw image, label and
 * both predictions, for display. */
bd_status bd_ws_sample(bd_workspace *ws, int64_t i, bd_image *img, int *label,
                       bd_prediction *teacher, bd_prediction *student);
/* Class name c, or NULL when the model has none. */
const char *bd_ws_class_name(const bd_workspace *ws, int c);

void bd_ws_size(const bd_workspace *ws, bd_model_size *out);

/* Saves the student: compressed ONNX (quantized layers as codebooks), or a
 * plain dense fp32 model when decoded. Atomic. In a job of several ranks
 * (dist.h) rank 0 alone writes (and keeps the checkpoint): every rank holds
 * the same model. */
bd_status bd_ws_save(bd_workspace *ws, const char *path, int decoded);
/* Work that quitting would lose: the quantized or tuned layers whose
 * codebooks are not those of the file last loaded or saved (a layer put
 * back to float loses nothing; undoing back to what was saved is saved),
 * and in *trained (may be NULL) whether training or fine-tuning changed
 * the float parameters (weights, biases, BatchNorm) since. */
int bd_ws_unsaved(const bd_workspace *ws, int *trained);

/* The original model's file, what sizes on disk compare with: the plain
 * model loaded, or the file a compressed one names as its original (when
 * it is there); NULL when unknown. */
const char *bd_ws_original_file(const bd_workspace *ws);
/* The file bd_ws_save wrote last since the model was loaded (NULL: none)
 * and, if size is not NULL, its size on disk beside the original's. */
const char *bd_ws_last_saved(const bd_workspace *ws, bd_disk_size *size);

/* ---- sensitivity ---------------------------------------------------------------- */

/* How many evaluation images a sensitivity measure uses unless told. */
enum { BD_SENSITIVITY_IMAGES = 1000 };

typedef struct bd_sensitivity {
    int layer;        /* its index */
    double top1;      /* percent, with this layer alone quantized */
    double drop;      /* points: the float model's top-1 minus top1 */
    double rel_error; /* of the layer's fit */
} bd_sensitivity;

typedef struct bd_sensitivity_report {
    bd_accuracy reference; /* the float model's */
    int n;
    bd_sensitivity *layers; /* n, in graph order */
} bd_sensitivity_report;

/* What quantizing each matching layer (NULL/"all": the plan's) costs on its
 * own: a copy of the student with every layer at its float weight is
 * evaluated (the reference: the teacher's top-1 unless training, or
 * fine-tuning of biases and BatchNorm, changed the student's other
 * parameters), then, one layer at a time, that layer is quantized by its
 * plan as 'quantize' would quantize it (calibration data, EM settings,
 * seed) and the copy evaluated again; the drop is the difference in top-1.
 * n evaluation images (0: BD_SENSITIVITY_IMAGES, at most what the
 * evaluation data holds). The layers, their plans, the student and the
 * undo history stay as they are; only the results are remembered
 * (bd_ws_last_sensitivity). Cancelled or failed: nothing remembered.
 * Free the report with bd_sensitivity_report_free. */
bd_status bd_ws_sensitivity(bd_workspace *ws, const char *glob, int64_t n,
                            bd_sensitivity_report *report);
void bd_sensitivity_report_free(bd_sensitivity_report *r);
/* The last measure of layer i, for display (call under bd_ws_lock from
 * another thread): 0 when none was taken since the model was loaded; else
 * *s gets it and *stale is set when it no longer holds: the layer's plan
 * changed since, or training (or fine-tuning of biases and BatchNorm, or
 * undoing either) changed the float model. */
int bd_ws_last_sensitivity(const bd_workspace *ws, int i, bd_sensitivity *s, int *stale);

/* ---- crash safety ----------------------------------------------------------------- */

/* Keeps a checkpoint at path (NULL: none): after every finished layer of a
 * quantization and after every other change, the student as compressed
 * ONNX with the plan, the data, the settings and the quantization in
 * progress, written atomically. After a crash, bd_ws_resume carries on from
 * it. A checkpoint that cannot be written is reported through the progress
 * callback (stage "checkpoint"); the work goes on. */
bd_status bd_ws_checkpoint(bd_workspace *ws, const char *path);
const char *bd_ws_checkpoint_file(const bd_workspace *ws);
/* Where a session on model keeps its checkpoint unless told otherwise:
 * $BITDOWN_STATE_DIR, else $XDG_STATE_HOME/bitdown, else
 * ~/.local/state/bitdown, in a file named after the model and a hash of its
 * absolute path. The folder is created. */
bd_status bd_ws_default_checkpoint(const char *model, char *buf, size_t cap);
/* With on, every model loaded from now on keeps its checkpoint at its
 * default place (bd_ws_default_checkpoint); the interactive front-ends do. */
void bd_ws_autosave(bd_workspace *ws, int on);
/* Loads model; with resume, and a checkpoint at its default place, resumes
 * that checkpoint instead (*resumed: as bd_ws_resume; -1 when there was no
 * checkpoint to resume). */
bd_status bd_ws_open(bd_workspace *ws, const char *model, int resume, int *resumed);
/* Loads a checkpoint: the model, its codebooks, the plan, the data and the
 * settings as they were, and the checkpoint path stays this one; then
 * finishes a quantization the checkpoint caught in progress, the same way
 * it would have gone on (*resumed gets the number of layers it quantized). */
bd_status bd_ws_resume(bd_workspace *ws, const char *checkpoint, int *resumed);

/* ---- settings ------------------------------------------------------------------ */

/* "cpu" or "cuda" (the first GPU); cuda fails with a clear message when no
 * GPU (or no CUDA build) is there, and the device stays as it was. With
 * cuda, quantization (the calibration forward, the Gram matrix, EM),
 * evaluation and fine-tuning run on the GPU; a model with an op the GPU
 * lacks runs on the CPU, which is said once through the progress callback
 * (stage "device"). Predictions of single images run on the CPU. */
bd_status bd_ws_device(bd_workspace *ws, const char *name);
const char *bd_ws_device_name(const bd_workspace *ws);
/* What computes, for a header line: "cpu 2 threads", or "cuda" and the
 * GPU's name and memory. Into buf (cap bytes), which it returns. */
const char *bd_ws_device_describe(const bd_workspace *ws, char *buf, size_t cap);
bd_status bd_ws_threads(bd_workspace *ws, int n);
int bd_ws_get_threads(const bd_workspace *ws);
/* Images per forward pass for calibration, evaluation and fine-tuning
 * (default 64). */
bd_status bd_ws_batch(bd_workspace *ws, int n);
/* Also fit the other objective on the same inputs when quantizing, and
 * keep its relative error in q.other_error: what the activations buy. */
void bd_ws_compare_objectives(bd_workspace *ws, int on);
void bd_ws_seed(bd_workspace *ws, uint64_t seed);
uint64_t bd_ws_get_seed(const bd_workspace *ws);
/* EM's search: fits from `restarts` seeds, the best kept, each stopped when
 * its objective improves by less than tol (relative) for a few iterations
 * (pq.h; defaults BD_PQ_RESTARTS, BD_PQ_TOL). Out of range: refused, nothing
 * changed. */
bd_status bd_ws_search(bd_workspace *ws, int restarts, double tol);
void bd_ws_get_search(const bd_workspace *ws, int *restarts, double *tol);

/* ---- progress, cancellation, locking ------------------------------------------- */

void bd_ws_on_progress(bd_workspace *ws, bd_progress_fn fn, void *user);
/* Asks the running operation to stop (safe from any thread or a signal
 * handler); it stops at its next check and rolls back. */
void bd_ws_cancel(bd_workspace *ws);
void bd_ws_lock(bd_workspace *ws);
void bd_ws_unlock(bd_workspace *ws);

#endif
