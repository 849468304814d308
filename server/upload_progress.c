/* upload_progress.c — the progress bar and lines of `barlowd upload`; see upload_progress.h. */
#include "upload_progress.h"

#include <assert.h>

#define BAR_WIDTH 24

/* bytes as "12.3 MB" into out. */
static void human_bytes(uint64_t b, char *out, size_t n) {
    static const char *const unit[] = {"B", "kB", "MB", "GB", "TB"};
    double x = (double)b;
    int u = 0;
    while (x >= 1000 && u < 4) x /= 1000, u++;
    snprintf(out, n, u ? "%.1f %s" : "%.0f %s", x, unit[u]);
}

/* seconds as "1h02m", "3m05s" or "42s" ("?" before any rate is known). */
static void human_time(double s, char *out, size_t n) {
    if (s < 0 || s > 1e7) {
        snprintf(out, n, "?");
        return;
    }
    long t = (long)(s + 0.5);
    if (t >= 3600)
        snprintf(out, n, "%ldh%02ldm", t / 3600, t / 60 % 60);
    else if (t >= 60)
        snprintf(out, n, "%ldm%02lds", t / 60, t % 60);
    else
        snprintf(out, n, "%lds", t);
}

void upload_progress(FILE *out, int tty, const upload_counts *c, double elapsed) {
    assert(c->done <= c->total);
    double rate = elapsed > 0 ? c->done / elapsed : 0;
    char bytes[32], eta[32];
    human_bytes(c->bytes, bytes, sizeof bytes);
    human_time(rate > 0 ? (c->total - c->done) / rate : -1, eta, sizeof eta);
    if (tty) {
        char bar[BAR_WIDTH + 1];
        int fill = c->total ? (int)((long long)BAR_WIDTH * c->done / c->total) : BAR_WIDTH;
        for (int i = 0; i < BAR_WIDTH; i++) bar[i] = i < fill ? '#' : '.';
        bar[BAR_WIDTH] = 0;
        fprintf(out, "\r[%s] %d/%d files  %.1f images/s  %s sent  ETA %s\033[K", bar, c->done,
                c->total, rate, bytes, eta);
    } else {
        fprintf(out, "upload: %d/%d files (%d sent, %d already there, %d refused, %d failed), "
                     "%.1f images/s, %s sent, ETA %s\n",
                c->done, c->total, c->sent, c->there, c->refused, c->failed, rate, bytes, eta);
    }
    fflush(out);
}

void upload_progress_end(FILE *out, int tty) {
    if (tty) fputc('\n', out);
    fflush(out);
}
