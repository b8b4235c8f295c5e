/* Lua 5.4 scripting: the `bd` module over a workspace, and running scripts.
 *
 * Each run gets a fresh Lua state with the standard libraries and `bd`
 * (also require("bd")); the workspace is the front-end's and outlives it.
 * Every bd function returns plain Lua tables and raises a Lua error, naming
 * the function and what was wrong, where the workspace refuses; since every
 * workspace operation either completes or changes nothing, a script that
 * fails part way leaves the workspace consistent (what it completed stays).
 *
 * require() also searches lua/policies/ of bitdown's own files
 * (bd_share_dir: the install's share/bitdown, or the source tree), so
 * policies share lua/policies/lib/. */
#ifndef BD_LUA_H
#define BD_LUA_H

#include <stdatomic.h>
#include <stddef.h>

#include "cmd.h"
#include "progress.h"
#include "status.h"
#include "workspace.h"

typedef struct bd_lua_host {
    bd_workspace *ws;
    /* Where the script's print() goes; NULL: stdout. */
    bd_cmd_print print;
    void *print_user;
    /* The front-end's progress display, used while the script has set no
     * bd.on_progress function, and put back on the workspace when the
     * script ends (a run takes the workspace's progress callback over). */
    bd_progress_fn progress;
    void *progress_user;
    /* The front-end's interrupt flag (Ctrl-C), or NULL: once set, the
     * running operation is canceled and the script stops with
     * "interrupted". */
    atomic_int *interrupt;
} bd_lua_host;

/* Runs a script file. `arg` is set as Lua's standalone interpreter does
 * (arg[0] = path, arg[1..argc] = argv) and the arguments are also the
 * chunk's `...`. A syntax or runtime error returns BD_EINVAL with the
 * message, its file:line and a traceback in bd_error_message(). */
bd_status bd_lua_run_file(const bd_lua_host *host, const char *path, int argc, char **argv);

/* The same for a chunk of code; name is what messages call it. */
bd_status bd_lua_run_string(const bd_lua_host *host, const char *code, const char *name,
                            int argc, char **argv);

/* bd_cmd_ctx.run_script, with script_user pointing at a bd_lua_host. */
bd_status bd_lua_run_script(void *host, const char *path, int argc, char **argv);

#endif
