/* The compute device: a GPU through the CUDA backend (cuda/), as the core
 * sees it. The core never includes a CUDA header; it calls this interface,
 * which src/device_plugin.c implements by forwarding to the CUDA plugin
 * (libbitdown_cuda.so, built from cuda/ when bitdown is built with nvcc),
 * loaded by the first bd_device_open("cuda"). Without the plugin, or when
 * it cannot load, opening a device fails with a message saying why, and
 * nothing else is ever reached.
 *
 * What runs on the GPU (docs/architecture.md, "The device"): the forward
 * pass of a graph (evaluation, the calibration forward), the Gram matrix of
 * a layer's inputs (im2col + SYRK), EM's E-step (GEMM + argmin) and M-step
 * sums, the whole forward and backward pass of fine-tuning with the
 * losses, centroid gradients and SGD, and training's steps with
 * Quant-Noise. What stays on the host: the data (batches are uploaded),
 * the held-out rows of the error metric and the metric itself, EM's
 * control flow (initialisation, empty-cluster repair, the means, the
 * objective), fine-tuning's and training's loops, and Quant-Noise's masks
 * and fits, which are the CPU's own code (bd_pq_fit_on, bd_finetune_with,
 * bd_training_run_with, quant_noise.h).
 *
 * A device is used by one thread at a time (the workspace's operations run
 * one at a time); every entry point selects the device for the calling
 * thread first. CUDA and cuBLAS failures come back as a bd_status whose
 * message names the call and CUDA's reason. */
#ifndef BD_DEVICE_H
#define BD_DEVICE_H

#include <stdint.h>

#include "data.h"
#include "finetune.h"
#include "graph.h"
#include "layers.h"
#include "pq.h"
#include "progress.h"
#include "codec.h"
#include "tensor.h"
#include "training.h"

typedef struct bd_device bd_device;

/* Opens a device by name: "cuda" is the first GPU, or in a job of several
 * ranks (dist.h) GPU bd_dist_local_rank() modulo the GPUs visible. Fails with a message
 * that says why: the CUDA plugin is not found (a build without nvcc) or
 * does not load (the CUDA libraries are missing: dlerror's reason), no
 * driver is installed, no GPU is visible, or the GPU cannot run this
 * build's code. */
bd_status bd_device_open(const char *name, bd_device **out);
void bd_device_close(bd_device *dev);
/* The GPU's name and memory, for a header line:
 * "NVIDIA H100 80GB HBM3, 79.2 GiB". */
const char *bd_device_describe(const bd_device *dev);

/* ---- graphs on the device ---------------------------------------------------- */

/* An executor: a graph planned for the device, its float initializers
 * uploaded once. The ops it runs: Conv (groups, depthwise, stride, pad,
 * dilation), Gemm, BatchNormalization, Relu, Clip, Add (numpy
 * broadcasting), MaxPool, AveragePool, GlobalAveragePool, Softmax,
 * LogSoftmax, and the reshapes (Flatten, Reshape, Squeeze, Unsqueeze,
 * Identity, Dropout at inference); every op of the example models and of
 * torchvision's ResNets and MobileNetV2. */
typedef struct bd_dexec bd_dexec;

/* Plans g (borrowed: it must outlive the executor) and uploads its
 * weights. Fails with BD_EUNSUPPORTED, naming the node, when g has an op
 * the device lacks. */
bd_status bd_dexec_new(bd_device *dev, const bd_graph *g, bd_dexec **out);
void bd_dexec_free(bd_dexec *dx);
/* Uploads again every initializer whose host contents differ from what
 * was last uploaded (a host copy of it is kept to compare): call it before
 * a run that must see weights the host changed (a layer quantized, tuned,
 * reset, undone). */
bd_status bd_dexec_sync(bd_dexec *dx);
/* Forward on a batch of a one-input, one-output model; *y gets the output
 * on the host. */
bd_status bd_dexec_run1(bd_dexec *dx, const bd_tensor *x, bd_tensor **y);

/* The calibration forward. Runs batch x up to node `node` (node itself does
 * not run); the values alive there stay on the device until the next run
 * or until the executor is freed. */
bd_status bd_dexec_until(bd_dexec *dx, const bd_tensor *x, int node);
/* Adds to gram the blocks of the im2col rows (one per output pixel and
 * group) of Conv node `node`'s input, as bd_dexec_until left it, for the
 * listed images of the batch: summed with SYRK on the device in float,
 * folded into gram's double total per chunk of images (bd_gram_fold). */
bd_status bd_dexec_gram(bd_dexec *dx, int node, const int64_t *images, int nimages,
                        bd_gram *gram);
/* A host copy of value v as bd_dexec_until left it (float32, batch
 * first) holding the listed images of the batch, in that order. */
bd_status bd_dexec_fetch(bd_dexec *dx, int value, const int64_t *images, int nimages,
                         bd_tensor **out);

/* ---- EM ---------------------------------------------------------------------------- */

/* bd_pq_fit's contract, with its E-step (cuBLAS GEMMs and an argmin, the
 * lowest index winning ties) and M-step sums (double) on the device. */
bd_status bd_device_pq_fit(bd_device *dev, const float *sub, int64_t n, const bd_gram *gr,
                           const bd_pq_options *opt, const bd_progress *progress,
                           bd_pq_result *res);

/* BD_OK unless this is a job of several ranks (dist.h) and the loaded
 * backend cannot sum across them (a CUDA plugin built without NCCL): then
 * a failure that says so, `what` naming the work. After bd_device_open. */
bd_status bd_device_check_ranks(const char *what);

/* ---- fine-tuning ---------------------------------------------------------------- */

/* bd_finetune's contract with every step on the device: the student's
 * forward and backward, the teacher's forward (teacher: an executor of the
 * teacher on the same device), the loss, the centroid gradients and SGD;
 * only the batch goes up and the loss comes down. After the last step the
 * tuned biases, BatchNorm parameters and running statistics are written
 * into the student graph, then the centroids as bd_finetune leaves them.
 * Fails with BD_EUNSUPPORTED, naming the node, when the backward pass
 * meets an op the device lacks. */
bd_status bd_device_finetune(bd_device *dev, bd_graph *student, bd_dexec *teacher,
                             const bd_layer *layers, bd_qlayer *q, int n, const bd_dataset *data,
                             const bd_finetune_options *opt, const bd_progress *progress,
                             bd_finetune_report *report);

/* ---- training ------------------------------------------------------------------ */

/* training.h's engine on the device (arg: the bd_device *), for
 * bd_training_run_with: Quant-Noise (bd_noise_mask's masks and the CPU's
 * codebook and grid fits, made on the host, applied on the device), the
 * forward and backward, the loss (a teacher for loss=kl runs on the device
 * too), SGD and the codebooks' centroid SGD; a step uploads the batch, its
 * labels and the masks and brings back each image's loss and hit. store
 * and load copy parameters, running statistics, momentum and codebooks
 * between the device and the state. */
bd_status bd_device_training_start(void *arg, const bd_training_state *st,
                                   bd_training_engine *eng);

#endif
