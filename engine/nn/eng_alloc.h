/* eng_alloc.h — the engine's allocator for tensors and other large buffers.
 *
 * Buffers of 2 MiB or more are 2 MiB-aligned and marked for transparent huge pages
 * (madvise MADV_HUGEPAGE; a kernel that says no leaves ordinary pages). Huge pages mean
 * 512x fewer page-table entries to walk for the model's activations and weights; on our
 * machines that also keeps the host's page-table scanning (DAMON, every 500 ms) from
 * stalling inference: measured in docs/BENCHMARKS.md ("POST /embed while training").
 * Smaller buffers are 64-byte aligned. Everything is released with free(). */
#ifndef ENG_ALLOC_H
#define ENG_ALLOC_H

#include <stddef.h>

/* bytes (> 0) of zeroed memory, or NULL when out of memory. */
void *eng_alloc_zeroed(size_t bytes);

#endif
