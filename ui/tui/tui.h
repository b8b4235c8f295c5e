/* The TUI's state and what its parts share (docs/architecture.md).
 *
 * Threads: the UI thread reads keys, draws ten times a second and queues
 * jobs; the worker (worker.h) runs them. The UI reads the workspace only
 * under bd_ws_lock and never calls a bd_ws_* function that changes it. */
#ifndef BD_TUI_H
#define BD_TUI_H

#include <stdatomic.h>

#include "cmd.h"
#include "cmdline.h"
#include "draw.h"
#include "images.h"
#include "log.h"
#include "worker.h"
#include "workspace.h"

typedef enum tui_pane { PANE_TABLE, PANE_DETAIL, PANE_IMAGES, PANE_LOG, PANE_COUNT } tui_pane;

typedef enum tui_mode {
    MODE_KEYS,    /* keys are bindings */
    MODE_COMMAND, /* the ':' line */
    MODE_SAVE,    /* the save prompt's path */
    MODE_SEARCH,  /* the '/' prompt: a layer name to find */
    MODE_QUIT     /* "quit without saving?" */
} tui_mode;

/* The orders of the layer table ('<' and '>' cycle through them). */
typedef enum tui_sort {
    SORT_GRAPH = 0,
    SORT_SIZE,
    SORT_ERROR,
    SORT_BITS,
    SORT_SENSITIVITY,
    SORT_NAME,
    SORT_COUNT
} tui_sort;

enum { TUI_TRAIN_SAMPLES = 256 };

/* What the UI thread remembers of a training run's progress reports: the
 * latest one of stage "train" (the worker keeps only the latest of any
 * stage, and evaluation reports its own) and the loss along the run. */
typedef struct tui_train_view {
    int seen;
    tui_progress last;
    int64_t first_done; /* the first report's step and time, for the ETA */
    double first_seconds;
    double loss[TUI_TRAIN_SAMPLES];
    int nloss, stride, pending_n;
    double pending;
} tui_train_view;

/* What the detail pane's place shows: the selected layer, or a run. */
typedef enum tui_side { SIDE_DETAIL = 0, SIDE_TRAIN, SIDE_BITPRUNE, SIDE_FRONTIER } tui_side;

typedef struct tui {
    bd_workspace *ws;
    tui_log log;
    tui_worker worker;
    tui_images images;
    tui_cmdline line;
    bd_cmd_ctx cmd;        /* the worker's, for ':' lines */
    atomic_int quit_asked; /* ':quit' ran */
    int quit;
    tui_mode mode;
    tui_pane focus;
    int sel, top;           /* the selected layer (its index), the first row shown */
    tui_sort sort;          /* the table's order of rows */
    char search[TUI_LINE_MAX * 4 + 1]; /* the last '/' pattern, which n and N look for */
    int search_from;        /* the selected layer when '/' was pressed */
    int help, help_top;     /* the help is shown, scrolled to help_top */
    int log_back;           /* log lines scrolled back */
    int codebook_first;     /* first centroid shown in the detail pane */
    int codebook_page;      /* centroids that fit there */
    char question[200];     /* MODE_QUIT's */
    tui_side side;              /* what the detail pane's place shows */
    tui_side run_side;          /* the run pane shown last, which Tab's toggle brings back */
    int train_running;          /* as the last frame saw it */
    int bitprune_running;       /* as the last frame saw it */
    char train_line[TUI_LINE_MAX]; /* the last ':train' line, which 't' runs again */
    tui_train_view train;
} tui;

/* ---- actions.c: the key bindings and the jobs they queue ---------------- */

typedef struct tui_binding {
    const char *keys; /* as the help shows them */
    const char *what;
    int codes[8]; /* the key codes, 0-terminated */
    void (*act)(tui *t, int key);
} tui_binding;

const tui_binding *tui_bindings(int *n);
/* Runs the binding for key; returns 0 if none has it. */
int tui_dispatch(tui *t, int key);
/* Queues the ':' line `line` (echoed in the log). */
void tui_run_command(tui *t, const char *line);
/* Queues a save to path. */
void tui_run_save(tui *t, const char *path);

/* ---- tui.c ----------------------------------------------------------------- */

/* Quits, or asks first when quantization or training work is unsaved
 * (bd_ws_unsaved). */
void tui_request_quit(tui *t);
/* The selected layer's name (takes bd_ws_lock), "" when there is none. */
void tui_selected_name(tui *t, char *buf, size_t cap);

/* ---- the panes: table.c, detail.c, help.c --------------------------------- */

/* The layer table, under bd_ws_lock; keeps the selection in view. */
void tui_table_draw(tui *t, tui_rect r, int focused);
/* What the table is sorted by, for messages: "stored size (largest first)". */
const char *tui_sort_name(tui_sort s);
/* Moves the selection delta rows in the table's order, within the table;
 * takes bd_ws_lock. */
void tui_table_move(tui *t, int delta);
/* The first layer whose name matches pattern (a glob when it has * ? or [,
 * else a substring, either case) in the table's order from the row of
 * layer `from` (itself included when `inclusive`), going dir (+1 or -1)
 * and round; -1 when none does. Takes bd_ws_lock. */
int tui_table_find(tui *t, const char *pattern, int from, int dir, int inclusive);
/* The selected layer's detail, under bd_ws_lock. */
void tui_detail_draw(tui *t, tui_rect r, int focused);
/* The help over r; returns the lines it has, for scrolling. */
int tui_help_draw(tui *t, tui_rect r);

/* ---- search.c: '/' and n N --------------------------------------------------- */

/* Opens the '/' prompt. */
void tui_search_open(tui *t);
/* A key typed at the '/' prompt: the selection follows the first match. */
void tui_search_key(tui *t, int key);
/* The next (dir +1) or previous (-1) layer matching the last pattern. */
void tui_search_next(tui *t, int dir);

/* ---- train.c: the training pane ------------------------------------------- */

/* Takes the worker's progress in; call every frame, outside bd_ws_lock. */
void tui_train_observe(tui *t);
/* The last training run, under bd_ws_lock. */
void tui_train_draw(tui *t, tui_rect r, int focused);

/* A line of text at *y in pane r (advancing *y); 0 when r is full. */
int tui_pane_line(tui_rect r, int *y, tui_style s, const char *text);
/* The last epochs of a run that fit below *y: loss, top-1s, lr, seconds. */
void tui_epoch_rows(tui_rect r, int *y, const bd_training_epoch *e, int n);

/* ---- bitprune.c: the BitPruning pane ---------------------------------------- */

/* The last BitPruning run, under bd_ws_lock: per layer a bar of its bit
 * length, the mean bits, lambda, the size, the epochs. */
void tui_bitprune_draw(tui *t, tui_rect r, int focused);

/* ---- frontier.c: the size / top-1 frontier pane ------------------------------- */

/* Every evaluation of the student as a point of size against top-1, the
 * teacher's, and the points no other beats on both, under bd_ws_lock. */
void tui_frontier_draw(tui *t, tui_rect r, int focused);

/* Formats bytes as MB with four significant digits. */
const char *tui_mb(int64_t bytes, char *buf, size_t cap);

#endif
