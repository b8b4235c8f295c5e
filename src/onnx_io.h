/* ONNX files <-> graphs, through protobuf-c code generated at build time
 * from the system's onnx.proto.
 *
 * Loading accepts initializers in raw_data or in the typed fields, external
 * data kept inside the model's folder, and opsets 11 to 18 of the default
 * domain. Constant nodes become initializers. Every op must be one bitdown
 * can run: an unknown op fails the load with a message naming node and op. */
#ifndef BD_ONNX_IO_H
#define BD_ONNX_IO_H

#include <stddef.h>

#include "graph.h"

enum { BD_OPSET_MIN = 11, BD_OPSET_MAX = 18 };

bd_status bd_onnx_load(const char *path, bd_graph **out);
/* Loads from memory; name is used in messages, dir resolves external data
 * (NULL: external data is refused). */
bd_status bd_onnx_load_buffer(const void *data, size_t len, const char *name, const char *dir,
                              bd_graph **out);

/* Serialises g (initializers as raw_data). *data is malloc'ed. */
bd_status bd_onnx_serialize(const bd_graph *g, void **data, size_t *len);
/* Serialises and writes atomically. */
bd_status bd_onnx_save(const bd_graph *g, const char *path);

#endif
