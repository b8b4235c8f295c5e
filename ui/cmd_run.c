/* bitdown run [--model MODEL] SCRIPT.lua [ARGS...]: a Lua script on a
 * workspace, with a progress bar on stderr and Ctrl-C as interrupt. */
#include <getopt.h>
#include <stdio.h>

#include "bd_lua.h"
#include "cli.h"
#include "progress_bar.h"

static const char help[] =
    "usage: bitdown run [--model MODEL] SCRIPT.lua [ARGS...]\n"
    "       bitdown run [--model MODEL] -e CODE [ARGS...]\n\n"
    "Runs a Lua 5.4 script with the bd module on a fresh workspace:\n"
    "bd.layers(), bd.set(), bd.quantize(), bd.eval(), bd.size(), bd.save() and more.\n"
    "arg[0] is the script and arg[1..] its ARGS, which are also the chunk's '...'.\n"
    "An error is reported with its file:line and a traceback, and exits 1; one raised\n"
    "with error(MESSAGE, 0), as the policies refuse an argument, with MESSAGE alone.\n\n"
    "  --model MODEL   load MODEL before the script runs (else the script calls bd.load)\n"
    "  -e CODE         run CODE instead of a file\n" CLI_PREPROCESS_HELP "\n"
    "The policies in lua/policies/ are scripts that take key=value ARGS, e.g.\n"
    "  bitdown run --model M.onnx lua/policies/size_budget.lua target_mb=0.05 out=M.q.onnx\n";

/* Lua's print() goes to stdout, past the progress bar. */
static void print_out(void *user, const char *text)
{
    (void)user;
    cli_progress_clear();
    fputs(text, stdout);
    fflush(stdout);
}

int cli_run_lua(bd_workspace *ws, const char *path, const char *code, int argc, char **argv)
{
    bd_progress p = cli_progress_start();
    bd_lua_host host = {.ws = ws, .print = print_out, .progress = p.fn,
                        .progress_user = p.user, .interrupt = p.cancel};
    bd_status s = path ? bd_lua_run_file(&host, path, argc, argv)
                       : bd_lua_run_string(&host, code, "=(command line)", argc, argv);
    cli_progress_stop();
    return s == BD_OK ? CLI_OK : cli_report(s);
}

int cli_run(int argc, char **argv)
{
    static const struct option opts[] = {{"help", no_argument, 0, 'h'},
                                         {"model", required_argument, 0, 'm'},
                                         CLI_PREPROCESS_LONGOPTS,
                                         {0, 0, 0, 0}};
    const char *model = NULL, *code = NULL;
    cli_preprocess cp = {0};
    int c;
    optind = 1;
    /* '+': the options end at the script, whose ARGS may look like options */
    while ((c = getopt_long(argc, argv, "+he:", opts, NULL)) != -1) {
        if (cli_preprocess_option(&cp, c, optarg))
            continue;
        switch (c) {
        case 'h': fputs(help, stdout); return CLI_OK;
        case 'm': model = optarg; break;
        case 'e': code = optarg; break;
        default: return cli_bad_option("run", argv);
        }
    }
    if (!code && optind == argc)
        return cli_usage_error("run", "expects a SCRIPT.lua (or -e CODE)");
    if (!model && cli_preprocess_given(&cp))
        return cli_usage_error("run", "the preprocessing options need --model");
    const char *path = code ? NULL : argv[optind++];
    bd_workspace *ws = NULL;
    bd_status s = bd_ws_new(&ws);
    if (s == BD_OK && model)
        s = bd_ws_load(ws, model);
    int rc = s != BD_OK ? cli_report(s) : model ? cli_preprocess_ws("run", &cp, ws) : CLI_OK;
    if (rc == CLI_OK)
        rc = cli_dist_agree(model ? bd_ws_teacher(ws) : NULL);
    if (rc == CLI_OK)
        rc = cli_run_lua(ws, path, code, argc - optind, argv + optind);
    bd_ws_free(ws);
    return rc;
}
