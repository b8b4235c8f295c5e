/* bitdown's command line: one subcommand per task. */
#include <cblas.h>
#include <getopt.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "cli.h"
#include "dist.h"
#include "threads.h"

static const cli_command commands[] = {
    {"info", "layers of a model: name, op, weight shape, parameters, size", cli_info},
    {"eval", "top-1 / top-5 accuracy of a model on a dataset", cli_eval},
    {"predict", "top-5 classes of a model for image files", cli_predict},
    {"bench", "forward throughput in images per second", cli_bench},
    {"annotate", "write a model's preprocessing and class names into it (--preset imagenet)",
     cli_annotate},
    {"quantize", "compress a model with activation-aware product quantization", cli_quantize},
    {"finetune", "tune the codebooks of a compressed model (distillation or labels)",
     cli_finetune},
    {"train", "train a model's weights, optionally with Quant-Noise", cli_train},
    {"bitprune", "learn a bit length per layer and store the layers as int codecs",
     cli_bitprune},
    {"tui", "the interactive workbench (bitdown alone opens it on the example)", cli_tui},
    {"repl", "interactive commands on a model (readline), or a script of them", cli_repl},
    {"run", "run a Lua script (the bd module) on a model: policies, batch work", cli_run},
};
enum { NCOMMANDS = sizeof commands / sizeof commands[0] };

static void usage(FILE *f)
{
    fprintf(f, "usage: bitdown COMMAND [ARGS...]\n\n"
               "bitdown compresses convolutional networks with activation-aware product\n"
               "quantization (\"And the Bit Goes Down\", Stock et al., ICLR 2020).\n\n"
               "commands:\n");
    for (int i = 0; i < NCOMMANDS; i++)
        fprintf(f, "  %-9s %s\n", commands[i].name, commands[i].summary);
    fprintf(f, "\n'bitdown COMMAND --help' describes a command; 'bitdown --version' (or -V,\n"
               "also after any COMMAND) prints the version.\n");
}

static int is_version(const char *arg)
{
    return strcmp(arg, "--version") == 0 || strcmp(arg, "-V") == 0;
}

/* --version anywhere among a command's options, so no subcommand needs its
 * own; run's arguments after its options belong to the script, so there
 * only the first counts. */
static int wants_version(int argc, char **argv)
{
    if (is_version(argv[1]))
        return 1;
    int last = strcmp(argv[1], "run") == 0 ? 2 : argc - 1;
    for (int i = 2; i <= last && i < argc && strcmp(argv[i], "--") != 0; i++)
        if (is_version(argv[i]))
            return 1;
    return 0;
}

char *openblas_get_corename(void);

/* Whether name is one of the OpenBLAS cores in list (NULL-terminated). */
static int core_in(const char *name, const char *const *list)
{
    for (; *list; list++)
        if (strcasecmp(name, *list) == 0)
            return 1;
    return 0;
}

/* OpenBLAS 0.3.21 (Debian 12) does not recognise chips newer than it and
 * falls back to older kernels: AMD Zen 4 to its Haswell (AVX2) ones, at
 * half the speed its AVX-512 SkylakeX kernels reach there; Intel's Emerald
 * Rapids Xeons to Prescott (SSE3): a 1024^3 sgemm on one core ran 33
 * GFLOP/s with them, 82 with Haswell's, 155 with SkylakeX's. Returns
 * whether it set OPENBLAS_CORETYPE to the best kernels the CPU runs; a
 * user who set the variable keeps their choice. */
static int prefer_wide_blas(void)
{
    static const char *const avx512[] = {"SkylakeX", "Cooperlake", "SapphireRapids", NULL};
    static const char *const avx2[] = {"Haswell", "Zen", "SkylakeX", "Cooperlake",
                                       "SapphireRapids", NULL};
    if (getenv("OPENBLAS_CORETYPE"))
        return 0;
    const char *core = openblas_get_corename();
    if (!core)
        return 0;
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq"))
        return !core_in(core, avx512) && setenv("OPENBLAS_CORETYPE", "SKYLAKEX", 1) == 0;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
        return !core_in(core, avx2) && setenv("OPENBLAS_CORETYPE", "HASWELL", 1) == 0;
    return 0;
}

/* libgomp's idle threads spin 300000 times before they sleep. On an idle
 * machine that costs nothing, but beside another busy process a spinning
 * thread holds the core its teammate needs to finish the loop it waits
 * for: two bitdowns side by side ran ResNet-18 at 16 img/s each, against
 * 35 each with 1000 spins, and idle speed did not change (75 img/s, 2 cores,
 * docs/architecture.md). Too few spins and a thread sleeps through the
 * serial work between two loops, and waking it costs more than the loop:
 * on the 2-core Xeon, ShuffleNetV2 x0.5 took 1.92 ms a pass with 1000,
 * 1.43 with 2000 (no faster with more), GoogLeNet 16.0 and 13.5; two
 * ResNet-18s side by side ran 34.4 img/s each with 1000, 33.3 with 2000,
 * 30.0 with 4000. Returns whether it set the count; a user's
 * GOMP_SPINCOUNT or OMP_WAIT_POLICY stands. */
static int spin_briefly(void)
{
    if (getenv("GOMP_SPINCOUNT") || getenv("OMP_WAIT_POLICY"))
        return 0;
    return setenv("GOMP_SPINCOUNT", "2000", 1) == 0;
}

/* OpenBLAS and libgomp read their settings when they load, before main
 * runs, so the only way to choose for them is to start again with the
 * variables set (never when BD_NO_REEXEC is set). If exec fails, bitdown
 * carries on as it is. */
static void reexec_with_library_settings(char **argv)
{
    if (getenv("BD_NO_REEXEC"))
        return;
    int changed = prefer_wide_blas();
    changed |= spin_briefly();
    if (!changed)
        return;
    execv("/proc/self/exe", argv); /* which then finds both variables set */
}

static int run(int argc, char **argv)
{
    if (bd_dist_size() > 1 && (argc < 2 || !strcmp(argv[1], "tui") || !strcmp(argv[1], "repl"))) {
        fprintf(cli_err(), "bitdown: %sthe interactive commands run as one process, not under "
                           "mpirun\n", cli_rank_prefix());
        return CLI_USAGE;
    }
    if (argc < 2) {
        if (isatty(STDIN_FILENO) && isatty(STDOUT_FILENO))
            return cli_tui(argc, argv); /* on the bundled example */
        usage(stderr);
        return CLI_USAGE;
    }
    if (wants_version(argc, argv)) {
        printf("bitdown %s\n", BD_VERSION);
        return CLI_OK;
    }
    if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 ||
        strcmp(argv[1], "help") == 0) {
        usage(stdout);
        return CLI_OK;
    }
    for (int i = 0; i < NCOMMANDS; i++)
        if (strcmp(argv[1], commands[i].name) == 0)
            return commands[i].run(argc - 1, argv + 1);
    fprintf(cli_err(), "bitdown: unknown command '%s'\n\n", argv[1]);
    usage(cli_err());
    return CLI_USAGE;
}

int main(int argc, char **argv)
{
    reexec_with_library_settings(argv);
    /* Every forward pass allocates and frees the same large activations
     * (and a training step the same gradients); kept in the heap, they are
     * reused instead of mapped and faulted in afresh each time. Inference
     * alone maps its largest blocks (cli_inference_memory). */
    mallopt(M_MMAP_THRESHOLD, 1 << 30);
    mallopt(M_TRIM_THRESHOLD, 1 << 30);
    bd_threads_set(0);
    opterr = 0; /* cli_bad_option reports a bad option, once */
    if (cli_dist_begin(argc, argv) != CLI_OK)
        return CLI_FAIL;
    return cli_dist_end(run(argc, argv));
}
