/* What the CUDA plugin exports: the table of device.h's entry points that
 * the core's src/device_plugin.c forwards to. The plugin is built with
 * hidden visibility, so this is its only dynamic symbol. */
#include "dev.h"
#include "device_plugin.h"

__attribute__((visibility("default"))) const bd_device_plugin bd_cuda_plugin = {
    .version = BD_DEVICE_PLUGIN_VERSION,
    .size = sizeof(bd_device_plugin),
    .device_open = bd_cuda_device_open,
    .device_close = bd_cuda_device_close,
    .device_describe = bd_cuda_device_describe,
    .dexec_new = bd_cuda_dexec_new,
    .dexec_free = bd_cuda_dexec_free,
    .dexec_sync = bd_cuda_dexec_sync,
    .dexec_run1 = bd_cuda_dexec_run1,
    .dexec_until = bd_cuda_dexec_until,
    .dexec_gram = bd_cuda_dexec_gram,
    .dexec_fetch = bd_cuda_dexec_fetch,
    .device_pq_fit = bd_cuda_device_pq_fit,
    .device_finetune = bd_cuda_device_finetune,
    .device_training_start = bd_cuda_device_training_start,
#ifdef BD_HAVE_NCCL
    .caps = BD_DEVICE_CAP_RANKS,
#endif
};
