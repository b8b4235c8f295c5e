#include "images.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tui.h"

enum { LABEL_ROWS = 3, MIN_SLOT = 16, MAX_BOX = 40 };

void tui_images_init(tui_images *im)
{
    memset(im, 0, sizeof *im);
    pthread_mutex_init(&im->mu, NULL);
}

static void clear_samples(tui_images *im)
{
    for (int i = 0; i < im->n; i++)
        bd_image_free(&im->s[i].img);
    im->n = 0;
}

void tui_images_destroy(tui_images *im)
{
    clear_samples(im);
    pthread_mutex_destroy(&im->mu);
}

static void class_name(bd_workspace *ws, int c, char *buf, size_t cap)
{
    const char *name = bd_ws_class_name(ws, c);
    if (name)
        snprintf(buf, cap, "%s", name);
    else
        snprintf(buf, cap, "class %d", c);
}

/* On the worker: predicts the samples the pane asked for, then swaps them
 * into the cache in one go so the pane never draws a half-filled page. */
static bd_status job_fetch(tui *t, const tui_job *j)
{
    tui_images_key key = {tui_worker_generation(&t->worker), j->what, j->step};
    tui_sample fresh[TUI_MAX_SAMPLES];
    int n = 0;
    char error[256] = "";
    for (; n < key.count; n++) {
        tui_sample *s = &fresh[n];
        memset(s, 0, sizeof *s);
        if (bd_ws_sample(t->ws, key.first + n, &s->img, &s->label, &s->teacher, &s->student) !=
            BD_OK) {
            if (n == 0) /* past the last page, or no evaluation data: say so */
                snprintf(error, sizeof error, "%s", bd_error_message());
            break;
        }
        class_name(t->ws, s->label, s->truth, sizeof s->truth);
        class_name(t->ws, s->teacher.cls[0], s->teacher_name, sizeof s->teacher_name);
        class_name(t->ws, s->student.cls[0], s->student_name, sizeof s->student_name);
    }
    const char *spec = bd_ws_data_spec(t->ws, BD_DATA_EVAL);
    tui_images *im = &t->images;
    pthread_mutex_lock(&im->mu);
    clear_samples(im);
    memcpy(im->s, fresh, (size_t)n * sizeof fresh[0]);
    im->n = n;
    im->key = key;
    im->cached = 1;
    snprintf(im->spec, sizeof im->spec, "%s", spec ? spec : "");
    snprintf(im->error, sizeof im->error, "%s", error);
    pthread_mutex_unlock(&im->mu);
    return BD_OK;
}

/* Box-filters (shrinking) or repeats (growing) img into w x h pixels. */
static void resample(const bd_image *img, int w, int h, tui_pixel *out)
{
    for (int oy = 0; oy < h; oy++) {
        int y0 = oy * img->height / h, y1 = (oy + 1) * img->height / h;
        y1 = y1 > y0 ? y1 : y0 + 1;
        for (int ox = 0; ox < w; ox++) {
            int x0 = ox * img->width / w, x1 = (ox + 1) * img->width / w;
            x1 = x1 > x0 ? x1 : x0 + 1;
            long sum[3] = {0, 0, 0};
            for (int y = y0; y < y1; y++)
                for (int x = x0; x < x1; x++)
                    for (int c = 0; c < img->channels; c++)
                        sum[c] += img->pixels[((size_t)y * img->width + x) * img->channels + c];
            long area = (long)(y1 - y0) * (x1 - x0);
            tui_pixel *p = &out[oy * w + ox];
            if (img->channels == 1)
                *p = tui_gray((unsigned char)(sum[0] / area));
            else
                *p = tui_rgb((unsigned char)(sum[0] / area), (unsigned char)(sum[1] / area),
                             (unsigned char)(sum[2] / area));
        }
    }
}

static void draw_sample(const tui_sample *s, int y, int x, int box, int slot, tui_rect clip)
{
    const bd_image *img = &s->img;
    /* Fit the box, keeping the aspect ratio; a terminal cell is one pixel
     * wide and two tall. */
    int w = box, h = box;
    if (img->width >= img->height)
        h = (int)((int64_t)box * img->height / img->width);
    else
        w = (int)((int64_t)box * img->width / img->height);
    w = w > 0 ? w : 1;
    h = h > 0 ? h : 1;
    tui_pixel *px = malloc((size_t)w * (size_t)h * sizeof *px);
    if (px) {
        resample(img, w, h, px);
        tui_pixels(y, x, px, w, h, clip);
        free(px);
    }
    int ly = y + (box + 1) / 2;
    tui_text(ly, x, slot, TS_DIM, s->truth);
    /* The probability before the name, so a narrow slot cuts the name. */
    tui_textf(ly + 1, x, slot, s->teacher.cls[0] == s->label ? TS_OK : TS_ERROR, "T %.0f%% %s",
              100.0 * s->teacher.prob[0], s->teacher_name);
    tui_textf(ly + 2, x, slot, s->student.cls[0] == s->label ? TS_OK : TS_ERROR, "S %.0f%% %s",
              100.0 * s->student.prob[0], s->student_name);
}

void tui_images_draw(tui *t, tui_rect r, int focused)
{
    tui_images *im = &t->images;
    /* What fits: a square box of pixels over three label rows per sample. */
    int box = 2 * (r.h - 1 - LABEL_ROWS);
    box = box > MAX_BOX ? MAX_BOX : box;
    int slot = box + 2 > MIN_SLOT ? box + 2 : MIN_SLOT;
    while (box > MIN_SLOT && (r.w + 1) / slot < 2) { /* two smaller beat one larger */
        box -= 2;
        slot = box + 2;
    }
    int count = box >= 4 ? (r.w + 1) / slot : 0;
    count = count > TUI_MAX_SAMPLES ? TUI_MAX_SAMPLES : count;
    tui_images_key want = {tui_worker_generation(&t->worker), im->page * count, count};

    pthread_mutex_lock(&im->mu);
    int stale = count > 0 && (!im->cached || memcmp(&im->key, &want, sizeof want) != 0);
    char title[320];
    if (im->n > 0)
        snprintf(title, sizeof title, "images: %s %d-%d%s", im->spec, im->key.first,
                 im->key.first + im->n - 1, focused ? " (Left/Right pages)" : "");
    else
        snprintf(title, sizeof title, "images");
    tui_rule(r.y, r.x, r.w, focused ? TS_FOCUS : TS_TITLE, title);
    if (count == 0)
        tui_text(r.y + 1, r.x + 1, r.w - 1, TS_DIM, "too small for images");
    else if (im->error[0])
        tui_text(r.y + 1, r.x + 1, r.w - 1, TS_WARN, im->error);
    for (int i = 0; i < im->n && i < count; i++)
        draw_sample(&im->s[i], r.y + 1, r.x + 1 + i * slot, box, slot - 2, r);
    pthread_mutex_unlock(&im->mu);

    /* Only when idle: behind queued work the samples would be out of date
     * before they were drawn. */
    if (stale && !tui_worker_busy(&t->worker, 0)) {
        tui_job j;
        memset(&j, 0, sizeof j);
        j.run = job_fetch;
        j.what = want.first;
        j.step = want.count;
        j.background = 1;
        snprintf(j.label, sizeof j.label, "images");
        tui_worker_submit(&t->worker, &j);
    }
}

void tui_images_page(tui *t, int step)
{
    tui_images *im = &t->images;
    pthread_mutex_lock(&im->mu);
    /* A short page was the last one. */
    int last = im->cached && (im->error[0] || im->n < im->key.count);
    pthread_mutex_unlock(&im->mu);
    if (step < 0 && im->page > 0)
        im->page--;
    else if (step > 0 && !last)
        im->page++;
}
