/* The device interface in a build without the CUDA backend (CMake found no
 * nvcc, or BD_CUDA=OFF): no device can be opened, so nothing past
 * bd_device_open is ever reached with a device; those entry points fail
 * all the same rather than assume it. */
#include "device.h"

#include <string.h>

static bd_status no_backend(void)
{
    return bd_fail(BD_EUNSUPPORTED, "this build of bitdown has no CUDA backend");
}

int bd_device_built(void) { return 0; }

bd_status bd_device_open(const char *name, bd_device **out)
{
    *out = NULL;
    if (strcmp(name, "cuda") != 0)
        return bd_fail(BD_EINVAL, "unknown device '%s'", name);
    return bd_fail(BD_EUNSUPPORTED,
                   "this build of bitdown has no CUDA backend (nvcc was not found when it was "
                   "built)");
}

void bd_device_close(bd_device *dev) { (void)dev; }

const char *bd_device_describe(const bd_device *dev)
{
    (void)dev;
    return "no device";
}

bd_status bd_dexec_new(bd_device *dev, const bd_graph *g, bd_dexec **out)
{
    (void)dev;
    (void)g;
    *out = NULL;
    return no_backend();
}

void bd_dexec_free(bd_dexec *dx) { (void)dx; }

bd_status bd_dexec_sync(bd_dexec *dx)
{
    (void)dx;
    return no_backend();
}

bd_status bd_dexec_run1(bd_dexec *dx, const bd_tensor *x, bd_tensor **y)
{
    (void)dx;
    (void)x;
    *y = NULL;
    return no_backend();
}

bd_status bd_dexec_until(bd_dexec *dx, const bd_tensor *x, int node)
{
    (void)dx;
    (void)x;
    (void)node;
    return no_backend();
}

bd_status bd_dexec_gram(bd_dexec *dx, int node, const int64_t *images, int nimages,
                        bd_gram *gram)
{
    (void)dx;
    (void)node;
    (void)images;
    (void)nimages;
    (void)gram;
    return no_backend();
}

bd_status bd_dexec_fetch(bd_dexec *dx, int value, const int64_t *images, int nimages,
                         bd_tensor **out)
{
    (void)dx;
    (void)value;
    (void)images;
    (void)nimages;
    *out = NULL;
    return no_backend();
}

bd_status bd_device_pq_fit(bd_device *dev, const float *sub, int64_t n, const bd_gram *gr,
                           const bd_pq_options *opt, const bd_progress *progress,
                           bd_pq_result *res)
{
    (void)dev;
    (void)sub;
    (void)n;
    (void)gr;
    (void)opt;
    (void)progress;
    memset(res, 0, sizeof *res);
    return no_backend();
}

bd_status bd_device_finetune(bd_device *dev, bd_graph *student, bd_dexec *teacher,
                             const bd_layer *layers, bd_qlayer *q, int n, const bd_dataset *data,
                             const bd_finetune_options *opt, const bd_progress *progress,
                             bd_finetune_report *report)
{
    (void)dev;
    (void)student;
    (void)teacher;
    (void)layers;
    (void)q;
    (void)n;
    (void)data;
    (void)opt;
    (void)progress;
    memset(report, 0, sizeof *report);
    return no_backend();
}
