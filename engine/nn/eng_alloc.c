/* eng_alloc.c — large buffers on transparent huge pages (see eng_alloc.h). */
#define _DEFAULT_SOURCE /* madvise */
#include "eng_alloc.h"

#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#define HUGE_PAGE ((size_t)2 << 20)

void *eng_alloc_zeroed(size_t bytes) {
    if (bytes == 0) bytes = 64;
    if (bytes < HUGE_PAGE) {
        size_t rounded = (bytes + 63) / 64 * 64;
        void *p = aligned_alloc(64, rounded);
        if (p) memset(p, 0, rounded);
        return p;
    }
    if (bytes > (size_t)-1 - HUGE_PAGE) return NULL;
    size_t rounded = (bytes + HUGE_PAGE - 1) / HUGE_PAGE * HUGE_PAGE;
    void *p = aligned_alloc(HUGE_PAGE, rounded);
    if (!p) return NULL;
    (void)madvise(p, rounded, MADV_HUGEPAGE); /* advice only: no THP is not an error */
    memset(p, 0, rounded);                    /* first touch after the advice */
    return p;
}
