/* The contract between the core and a device backend built as a plugin
 * (cuda/ as libbitdown_cuda.so): one exported table of device.h's entry
 * points, which src/device_plugin.c finds with dlsym and forwards to. The
 * plugin calls back into the core (bd_fail, tensors, graphs, EM's and
 * fine-tuning's loops) through the symbols the bitdown executable exports,
 * so a plugin only works with the executable of the same build.
 *
 * The table is looked up first in the running program (a program that
 * links the backend in, as tests/test_cuda.c does, and exports its
 * symbols), then in the plugin file; docs/architecture.md says where the
 * file is searched for. */
#ifndef BD_DEVICE_PLUGIN_H
#define BD_DEVICE_PLUGIN_H

#include <stdint.h>

#include "device.h"

/* Raised when an entry changes meaning; an entry added at the end raises
 * size, which the core also checks, so a stale plugin is refused rather
 * than called through the wrong pointer. */
#define BD_DEVICE_PLUGIN_VERSION 1

/* The one symbol a plugin exports, and its name for dlsym. */
#define BD_DEVICE_PLUGIN_SYMBOL "bd_cuda_plugin"

typedef struct bd_device_plugin {
    uint32_t version; /* BD_DEVICE_PLUGIN_VERSION as the plugin was built */
    uint32_t size;    /* sizeof(bd_device_plugin) as the plugin was built */
    bd_status (*device_open)(const char *name, bd_device **out);
    void (*device_close)(bd_device *dev);
    const char *(*device_describe)(const bd_device *dev);
    bd_status (*dexec_new)(bd_device *dev, const bd_graph *g, bd_dexec **out);
    void (*dexec_free)(bd_dexec *dx);
    bd_status (*dexec_sync)(bd_dexec *dx);
    bd_status (*dexec_run1)(bd_dexec *dx, const bd_tensor *x, bd_tensor **y);
    bd_status (*dexec_until)(bd_dexec *dx, const bd_tensor *x, int node);
    bd_status (*dexec_gram)(bd_dexec *dx, int node, const int64_t *images, int nimages,
                            bd_gram *gram);
    bd_status (*dexec_fetch)(bd_dexec *dx, int value, const int64_t *images, int nimages,
                             bd_tensor **out);
    bd_status (*device_pq_fit)(bd_device *dev, const float *sub, int64_t n, const bd_gram *gr,
                               const bd_pq_options *opt, const bd_progress *progress,
                               bd_pq_result *res);
    bd_status (*device_finetune)(bd_device *dev, bd_graph *student, bd_dexec *teacher,
                                 const bd_layer *layers, bd_qlayer *q, int n,
                                 const bd_dataset *data, const bd_finetune_options *opt,
                                 const bd_progress *progress, bd_finetune_report *report);
    bd_status (*device_training_start)(void *arg, const bd_training_state *st,
                                       bd_training_engine *eng);
    uint32_t caps; /* BD_DEVICE_CAP_* */
} bd_device_plugin;

/* The backend sums its engines' gradients and BatchNorm statistics across
 * the ranks of a job (the CUDA plugin built with NCCL). */
#define BD_DEVICE_CAP_RANKS 1u

/* Defined by the plugin (cuda/plugin.c) and exported from it; everything
 * else in the plugin is hidden. */
extern const bd_device_plugin bd_cuda_plugin;

#endif
