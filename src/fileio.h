/* Whole-file reads with a size limit, and atomic writes: a save either
 * completes or leaves the previous file untouched (write a temporary file in
 * the same folder, fsync it, rename it over the target, fsync the folder). */
#ifndef BD_FILEIO_H
#define BD_FILEIO_H

#include <stddef.h>

#include "status.h"

/* Reads all of path; fails if it is larger than max_bytes. *data is
 * malloc'ed (with a NUL after the last byte, for text). */
bd_status bd_read_file(const char *path, size_t max_bytes, void **data, size_t *len);

/* Writes the concatenation of the n chunks to path atomically. */
bd_status bd_write_file_atomic(const char *path, int n, const void *const *chunks,
                               const size_t *lens);

/* The folder of bitdown's own files (lua/policies/, examples/): installed,
 * PREFIX/share/bitdown beside PREFIX/bin/bitdown; run from the build
 * folder, the source tree. Absolute; found once. */
const char *bd_share_dir(void);

/* The file of Lua policy `name`: lua/policies/NAME.lua of bd_share_dir, or
 * name itself when it has a '/' or ends in ".lua". Fails, listing the
 * policies there are, when the file is not readable. */
bd_status bd_policy_path(const char *name, char *buf, size_t cap);

/* The folder part of path ("." if none), into buf. */
const char *bd_dirname(const char *path, char *buf, size_t cap);

#endif
