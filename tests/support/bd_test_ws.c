#include "bd_test_ws.h"

#include <stdio.h>

#include "bd_test.h"

bd_workspace *bd_test_reload(bd_workspace *ws, const char *name, char *path, size_t size)
{
    snprintf(path, size, "%s/%s", bd_test_tmpdir(), name);
    assert_int_equal(bd_ws_save(ws, path, 0), BD_OK);
    bd_workspace *again;
    assert_int_equal(bd_ws_new(&again), BD_OK);
    assert_int_equal(bd_ws_load(again, path), BD_OK);
    return again;
}
