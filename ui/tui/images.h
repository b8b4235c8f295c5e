/* The images pane: evaluation samples drawn two pixels to a cell, with the
 * true label and the teacher's and student's top guesses.
 *
 * Predicting runs the student, so the samples are fetched by a job on the
 * worker (never while another operation changes the model) into a cache the
 * pane draws from; the pane asks again when what it shows is out of date:
 * the model changed, the page turned, or a resize fits more or fewer. */
#ifndef BD_TUI_IMAGES_H
#define BD_TUI_IMAGES_H

#include <pthread.h>

#include "draw.h"
#include "workspace.h"

struct tui;

enum { TUI_MAX_SAMPLES = 16 };

typedef struct tui_sample {
    bd_image img;
    int label;
    bd_prediction teacher, student;
    char truth[64], teacher_name[64], student_name[64];
} tui_sample;

/* Which samples, fetched when. */
typedef struct tui_images_key {
    unsigned generation;
    int first, count;
} tui_images_key;

typedef struct tui_images {
    pthread_mutex_t mu;
    int cached; /* key is valid */
    tui_images_key key;
    int n;
    tui_sample s[TUI_MAX_SAMPLES];
    char spec[256];
    char error[256];
    int page;
} tui_images;

void tui_images_init(tui_images *im);
void tui_images_destroy(tui_images *im);
/* Draws the pane and queues a fetch when the cache is out of date and the
 * worker is idle. */
void tui_images_draw(struct tui *t, tui_rect r, int focused);
/* Turns the page (step -1 or +1). */
void tui_images_page(struct tui *t, int step);

#endif
