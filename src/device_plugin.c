/* The device interface as the core implements it: every entry point
 * forwards to a backend's table (device_plugin.h), which the first
 * bd_device_open("cuda") loads from the CUDA plugin, libbitdown_cuda.so.
 * A run that never asks for a GPU never loads it and so never maps the
 * CUDA libraries (cudart, cuBLAS, cuBLASLt), whose loading alone costs
 * some 200 MB of memory. A build without nvcc has no plugin to find, and
 * `device cuda` fails saying where it looked. */
#include "device_plugin.h"

#include <dlfcn.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "dist.h"

#define PLUGIN_FILE "libbitdown_cuda.so"

/* Set once, under load_lock, and never unset (the plugin is never
 * unloaded); a device or executor exists only once it is set. */
static const bd_device_plugin *backend;
static pthread_mutex_t load_lock = PTHREAD_MUTEX_INITIALIZER;

static bd_status check_table(const bd_device_plugin *t, const char *where)
{
    if (t->version != BD_DEVICE_PLUGIN_VERSION || t->size != sizeof *t)
        return bd_fail(BD_EUNSUPPORTED,
                       "%s is the CUDA backend of another build of bitdown (its table: version "
                       "%u, %u bytes; this bitdown's: version %d, %zu bytes)",
                       where, (unsigned)t->version, (unsigned)t->size, BD_DEVICE_PLUGIN_VERSION,
                       sizeof *t);
    backend = t;
    return BD_OK;
}

/* RTLD_NOW: a symbol the plugin needs and cannot find (in the CUDA
 * libraries, or in this program) fails here, dlerror naming it, rather
 * than at a call halfway through a run. */
static bd_status load_file(const char *path)
{
    void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!h)
        return bd_fail(BD_EUNSUPPORTED, "cannot load the CUDA backend %s: %s", path, dlerror());
    const bd_device_plugin *t = dlsym(h, BD_DEVICE_PLUGIN_SYMBOL);
    bd_status s = t ? check_table(t, path)
                    : bd_fail(BD_EUNSUPPORTED, "%s is not a bitdown CUDA backend: %s", path,
                              dlerror());
    if (s != BD_OK)
        dlclose(h);
    return s;
}

/* The table of a program that links the backend in (tests/test_cuda.c,
 * which exports its symbols), else the first plugin file found: beside
 * the executable (the build folder), in ../lib/bitdown from it (an
 * install), or in the folder this core was built in (the test programs,
 * one level below it). */
static bd_status load(void)
{
    void *self = dlopen(NULL, RTLD_NOW);
    const bd_device_plugin *own = self ? dlsym(self, BD_DEVICE_PLUGIN_SYMBOL) : NULL;
    if (self)
        dlclose(self);
    if (own)
        return check_table(own, "this program");

    char exe[PATH_MAX], install[PATH_MAX + 16];
    const char *dirs[3];
    int ndirs = 0;
    ssize_t len = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (len > 0) {
        exe[len] = '\0';
        *strrchr(exe, '/') = '\0'; /* the kernel's path is absolute */
        snprintf(install, sizeof install, "%s/../lib/bitdown", exe);
        dirs[ndirs++] = exe;
        dirs[ndirs++] = install;
    }
#ifdef BD_PLUGIN_DIR
    if (ndirs == 0 || strcmp(exe, BD_PLUGIN_DIR) != 0)
        dirs[ndirs++] = BD_PLUGIN_DIR;
#endif
    char tried[3 * (PATH_MAX + 16)] = "";
    for (int i = 0; i < ndirs; i++) {
        char path[PATH_MAX + 64];
        snprintf(path, sizeof path, "%s/" PLUGIN_FILE, dirs[i]);
        if (access(path, F_OK) == 0)
            return load_file(path);
        size_t used = strlen(tried);
        snprintf(tried + used, sizeof tried - used, "%s%s", i ? ", " : "", dirs[i]);
    }
    return bd_fail(BD_EUNSUPPORTED,
                   "this bitdown has no CUDA backend: " PLUGIN_FILE
                   " is in none of %s (it is built beside bitdown where CMake finds nvcc)",
                   ndirs ? tried : "any folder (the executable's own path is unknown)");
}

bd_status bd_device_open(const char *name, bd_device **out)
{
    *out = NULL;
    if (strcmp(name, "cuda") != 0)
        return bd_fail(BD_EINVAL, "unknown device '%s'", name);
    pthread_mutex_lock(&load_lock);
    bd_status s = backend ? BD_OK : load();
    pthread_mutex_unlock(&load_lock);
    BD_TRY(s);
    return backend->device_open(name, out);
}

void bd_device_close(bd_device *dev)
{
    if (dev)
        backend->device_close(dev);
}

const char *bd_device_describe(const bd_device *dev) { return backend->device_describe(dev); }

bd_status bd_dexec_new(bd_device *dev, const bd_graph *g, bd_dexec **out)
{
    return backend->dexec_new(dev, g, out);
}

void bd_dexec_free(bd_dexec *dx)
{
    if (dx)
        backend->dexec_free(dx);
}

bd_status bd_dexec_sync(bd_dexec *dx) { return backend->dexec_sync(dx); }

bd_status bd_dexec_run1(bd_dexec *dx, const bd_tensor *x, bd_tensor **y)
{
    return backend->dexec_run1(dx, x, y);
}

bd_status bd_dexec_until(bd_dexec *dx, const bd_tensor *x, int node)
{
    return backend->dexec_until(dx, x, node);
}

bd_status bd_dexec_gram(bd_dexec *dx, int node, const int64_t *images, int nimages,
                        bd_gram *gram)
{
    return backend->dexec_gram(dx, node, images, nimages, gram);
}

bd_status bd_dexec_fetch(bd_dexec *dx, int value, const int64_t *images, int nimages,
                         bd_tensor **out)
{
    return backend->dexec_fetch(dx, value, images, nimages, out);
}

bd_status bd_device_pq_fit(bd_device *dev, const float *sub, int64_t n, const bd_gram *gr,
                           const bd_pq_options *opt, const bd_progress *progress,
                           bd_pq_result *res)
{
    return backend->device_pq_fit(dev, sub, n, gr, opt, progress, res);
}

/* A backend that sums nothing across ranks would have each rank of a job
 * train a model of its own. */
bd_status bd_device_check_ranks(const char *what)
{
    if (bd_dist_size() == 1 || (backend && (backend->caps & BD_DEVICE_CAP_RANKS)))
        return BD_OK;
    return bd_fail(BD_EUNSUPPORTED,
                   "%s on GPUs in a job of %d ranks needs NCCL's collectives, which this "
                   "build's CUDA backend does not have (CMake found no nccl.h and libnccl.so "
                   "beside CUDA): run the ranks on the CPU, or one process on the GPU",
                   what, bd_dist_size());
}

bd_status bd_device_finetune(bd_device *dev, bd_graph *student, bd_dexec *teacher,
                             const bd_layer *layers, bd_qlayer *q, int n, const bd_dataset *data,
                             const bd_finetune_options *opt, const bd_progress *progress,
                             bd_finetune_report *report)
{
    BD_TRY(bd_device_check_ranks("fine-tuning"));
    return backend->device_finetune(dev, student, teacher, layers, q, n, data, opt, progress,
                                    report);
}

bd_status bd_device_training_start(void *arg, const bd_training_state *st,
                                   bd_training_engine *eng)
{
    BD_TRY(bd_device_check_ranks("training"));
    return backend->device_training_start(arg, st, eng);
}
