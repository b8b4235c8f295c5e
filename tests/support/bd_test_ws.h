/* Workspace helpers for the cmocka tests. */
#ifndef BD_TEST_WS_H
#define BD_TEST_WS_H

#include <stddef.h>

#include "workspace.h"

/* Saves ws as `name` in the test's temporary directory (its path written to
 * path[size]) and loads that file into a new workspace, returned: what a
 * user who saves the work and opens the file again gets. Fails the test
 * when either step fails. */
bd_workspace *bd_test_reload(bd_workspace *ws, const char *name, char *path, size_t size);

#endif
