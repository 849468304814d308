/* train_wire.h — the frames between `barlowd serve` and rank 0 of its training job.
 *
 * `barlowd serve --train-ranks R` runs training as an MPI job of R `barlowd train-rank`
 * processes (server/train_job.c starts it with mpirun); rank 0 connects to the server over a
 * Unix socket and relays each request to the other ranks by MPI broadcast. Requests and replies
 * alternate strictly, one request in flight. A frame is a header {magic, type, payload length}
 * (little-endian, as both ends run on this machine) and the payload:
 *
 *   START  checkpoint blob     build the job's trainer from it      → OK (step) | ERR (text)
 *   STEP   0–2 batches' images one data-parallel step on the oldest  → STATS | ERR
 *                              batch held; the sent ones join the queue (the server sends a
 *                              batch a step ahead, so that the job augments it while it trains)
 *   SAVE   (none)              the last completed step's checkpoint → BLOB | ERR
 *   RESUME checkpoint blob     go back to it (the quality gate)     → OK (step) | ERR
 *   RESEED u64 seed            draw augmentations from a new seed   → OK (step) | ERR
 *                              (START, RESUME and RESEED drop the queued batches)
 *   QUIT   (none)              every rank ends                      (no reply)
 *
 * Images travel as u32 count, then per image u32 width, height, channels and its HWC bytes:
 * the training copies the server draws from the store, which every rank then augments (its
 * shard of them) exactly as the single-process trainer would. */
#ifndef TRAIN_WIRE_H
#define TRAIN_WIRE_H

#include <stddef.h>
#include <stdint.h>

#include "eng_image.h"
#include "eng_trainer.h"

enum {
    WIRE_START = 1, WIRE_STEP, WIRE_SAVE, WIRE_RESUME, WIRE_RESEED, WIRE_QUIT,
    WIRE_OK = 100, WIRE_ERR, WIRE_STATS, WIRE_BLOB
};

#define WIRE_MAGIC 0x314a4442u /* "BDJ1" */
#define WIRE_MAX_PAYLOAD ((uint64_t)1 << 33)
#define WIRE_CORR_MAX 128 /* the c block a STATS reply carries, at most this many rows (SVC_CORR_SIDE) */

/* A STATS reply: the step's statistics and the leading block of its c. */
typedef struct wire_stats {
    int64_t step;
    double loss, lr, images_per_s, diag_mean, offdiag_abs_mean;
    int32_t corr_side, corr_d;             /* rows of corr; the projector's D */
    float corr[WIRE_CORR_MAX * WIRE_CORR_MAX];
    double mpi_seconds, mpi_bytes;         /* rank 0's collectives so far */
    int32_t queued;                        /* batches the job holds for the next steps */
} wire_stats;

/* Sends a frame whose payload is a then b (either may be empty). 0, or -1 with errno. */
int wire_send(int fd, uint32_t type, const void *a, size_t alen, const void *b, size_t blen);

/* Waits for a frame (polling fd; every second, give_up(ctx) may end the wait: it returns
 * non-zero to stop). *payload is malloc'd (NULL when empty). 0; -1 on EOF, a bad frame, an error
 * or give-up, with why in msg. */
int wire_recv(int fd, uint32_t *type, uint8_t **payload, size_t *len, int (*give_up)(void *),
              void *ctx, char *msg, size_t msglen);

/* The images as a STEP payload (malloc'd). */
uint8_t *wire_pack_images(const eng_image *imgs, int n, size_t *len);
/* Unpacks a STEP payload into imgs[0..n) (each owning its pixels; *n set); -1 on a bad payload. */
int wire_unpack_images(const uint8_t *p, size_t len, eng_image *imgs, int cap, int *n);

#endif
