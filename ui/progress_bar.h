/* A one-line progress bar on stderr for long work, drawn only when stderr
 * is a terminal (pipes and logs get nothing), and Ctrl-C as cancellation. */
#ifndef BD_PROGRESS_BAR_H
#define BD_PROGRESS_BAR_H

#include "progress.h"

/* A bd_progress that draws the bar and whose cancel flag Ctrl-C sets. */
bd_progress cli_progress_start(void);
/* Clears the bar's line and restores the default Ctrl-C behaviour. */
void cli_progress_stop(void);
/* Clears the bar's line (before printing something else). */
void cli_progress_clear(void);

#endif
