/* train_job.h — the training job of `barlowd serve --train-ranks R`: data-parallel training in
 * an MPI job of R `barlowd train-rank` processes, started with mpirun and driven over a Unix
 * socket (train_wire.h) by the server's trainer thread.
 *
 * The server keeps the HTTP API, the store and publishing; the job holds the training model on
 * every rank. Each step the server draws the batch's training copies from the store and sends
 * them to rank 0, which hands them to every rank; the ranks train their shards and rank 0
 * answers with the step's statistics. MPI ends a job as a whole when one of its processes dies:
 * the server sees the connection close (or mpirun exit), ends the job cleanly, keeps serving
 * and says so in /status, and starts a new job from the newest stored checkpoint after
 * retry_s (when the ranks come back, training goes on from there). */
#ifndef TRAIN_JOB_H
#define TRAIN_JOB_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "eng_image.h"
#include "eng_trainer.h"
#include "train_wire.h"

typedef struct train_job_opts {
    int ranks;            /* R >= 2; 0 or 1: no job, the server trains itself */
    const char *hosts;    /* mpirun --host list (e.g. "h1:1,h2:1"); NULL: R ranks on this
                           * machine (--oversubscribe) */
    const char *mpirun;   /* the launcher: "mpirun" */
    const char *args;     /* more mpirun arguments, split at spaces (NULL: none) */
    double retry_s;       /* after a job ends, the next one starts this much later */
    double timeout_s;     /* a step's reply is overdue after max(this, 20 × the last step) */
    const char *program;  /* the barlowd the ranks run (NULL: this process's own executable) */
} train_job_opts;

typedef struct train_job {
    pid_t pid;               /* mpirun; 0 when no job runs */
    int fd;                  /* rank 0's connection, -1 none */
    char dir[64];            /* the socket's private directory */
    char sock[100];          /* fits sockaddr_un.sun_path */
    const atomic_int *stop;  /* borrowed: the server is stopping (waits give up) */
    double stop_seen;        /* when a wait first saw stop (waits give up 5 s later) */
    double deadline;         /* the reply in wait must come before this (a hung rank) */
    double step_s;           /* the last step's round trip */
    double timeout_s;        /* train_job_opts.timeout_s */
    int pending;             /* a request whose reply was given up on: read before the next */
    int ahead;               /* 1 when the job holds the next step's batch already */
    int exit_status;         /* mpirun's wait status once it ended */
    wire_stats *last;        /* owned: the last step's reply */
    eng_train_stats stats;   /* of the last completed step */
} train_job;

/* Starts mpirun and waits for rank 0 (60 s at most), then START with the checkpoint blob.
 * 0; -1 (msg says why; the job is ended and j is empty). */
int train_job_start(train_job *j, const train_job_opts *o, const void *blob, size_t len,
                    const atomic_int *stop, char *msg, size_t msglen);

/* How many batches the next step should carry: 2 (the step's and the next one's) when the job
 * holds none ahead (after START, RESUME and RESEED), else 1 (the next one's). The job trains
 * the oldest batch it holds and augments the next while it trains. */
int train_job_batches_wanted(const train_job *j);

/* One data-parallel step: imgs are train_job_batches_wanted batches of training copies, and the
 * job trains the oldest it holds; j->stats and j->last follow it. A step gives up
 * when mpirun ends, 5 s after the server began stopping, or when no reply came within
 * max(timeout_s, 20 × the last step): a hung rank is then a lost job too. */
int train_job_step(train_job *j, const eng_image *imgs, int n, char *msg, size_t msglen);
/* The last completed step's checkpoint (malloc'd). */
int train_job_save(train_job *j, uint8_t **blob, size_t *len, char *msg, size_t msglen);
/* The job goes back to a checkpoint (the quality gate), or draws from a new seed. */
int train_job_resume(train_job *j, const void *blob, size_t len, char *msg, size_t msglen);
int train_job_reseed(train_job *j, uint64_t seed, char *msg, size_t msglen);

/* Ends the job: QUIT, then mpirun gets 10 s (1 s when the server is stopping) before SIGTERM and
 * 5 s (1 s) more before SIGKILL; reaped. Safe on a job that never started or already ended. */
void train_job_end(train_job *j);

/* Why the job ended, from mpirun's exit ("mpirun exited with status 1", ...), into msg. */
void train_job_why(const train_job *j, char *msg, size_t msglen);

#endif
