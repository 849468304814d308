/* upload_progress.h — `barlowd upload`'s progress report on stderr: a bar redrawn in place on a
 * terminal, plain lines otherwise (logs, CI). */
#ifndef UPLOAD_PROGRESS_H
#define UPLOAD_PROGRESS_H

#include <stdint.h>
#include <stdio.h>

/* Where a run stands. */
typedef struct upload_counts {
    int total;      /* files found */
    int done;       /* files finished, whichever way */
    int sent;       /* stored by this run */
    int there;      /* the server held them already */
    int refused;    /* the server refused them (4xx) */
    int failed;     /* could not be sent (connection, 5xx after retries, unreadable) */
    uint64_t bytes; /* request bytes sent */
} upload_counts;

/* Seconds between plain lines when out is not a terminal. */
#define UPLOAD_PROGRESS_LINE_S 2.0

/* One report at `elapsed` seconds since the start: files done/total, images/s, bytes sent and
 * the estimated time left. tty: redraws one line with \r (upload_progress_end ends it). */
void upload_progress(FILE *out, int tty, const upload_counts *c, double elapsed);
void upload_progress_end(FILE *out, int tty);

#endif
