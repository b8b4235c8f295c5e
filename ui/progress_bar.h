/* A one-line progress bar on stderr for long work, drawn only when stderr
 * is a terminal (pipes and logs get nothing), and Ctrl-C as cancellation. */
#ifndef BD_PROGRESS_BAR_H
#define BD_PROGRESS_BAR_H

#include "progress.h"

/* A bd_progress that draws the bar and whose cancel flag Ctrl-C sets. */
bd_progress cli_progress_start(void);
/* The bar's drawing function, for progress that reaches the front-end
 * through a callback of its own (the workspace's); NULL when stderr is not
 * a terminal. */
bd_progress_fn cli_progress_bar(void);
/* Clears the bar's line and restores the default Ctrl-C behaviour. */
void cli_progress_stop(void);
/* Clears the bar's line (before printing something else). */
void cli_progress_clear(void);

#endif
