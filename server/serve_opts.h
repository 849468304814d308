/* serve_opts.h — `barlowd serve`'s settings: every flag, its environment variable and default.
 *
 * A flag `--some-name V` can also come from BARLOWD_SOME_NAME=V; the flag wins. `--help`
 * prints the table. */
#ifndef SERVE_OPTS_H
#define SERVE_OPTS_H

#include <stdio.h>

typedef struct serve_opts {
    const char *listen;        /* HOST:PORT, [V6]:PORT */
    const char *db;            /* SQLite file */
    const char *model;         /* preset or config JSON (a new database only) */
    const char *api_key;       /* NULL: none */
    int api_key_reads;         /* the key guards reads too */
    long min_images;           /* train only with at least this many live images */
    long publish_steps;        /* publish a version every N steps (0: off) */
    long publish_seconds;      /* ... or every S seconds of training (0: off) */
    long batch;                /* training batch */
    long seed;
    long threads;              /* HTTP worker threads */
    long max_connections;
    long timeout;              /* seconds of inactivity before a connection is closed */
    long long max_body;        /* request body limit, bytes */
    long max_parts;            /* multipart parts per request */
    long long max_pixels;      /* decoded image limit */
    long keep_versions;
    int sync_full;
    long embed_batch;
    long ann_threshold;        /* images from which searches are approximate (0: never) */
    int train;                 /* 0: serve only, never train */
    long idle_steps;           /* pause after this many steps without a new upload (0: never) */
    long release_after;        /* seconds waiting or paused before the training model is freed */
    const char *addr_file;     /* NULL: none; else where the listening address is written */
    int gate;                  /* 1: the quality gate decides each swap */
    double gate_tolerance;     /* absolute k-NN-20 a new version may lose */
    const char *label_key;     /* meta key of the monitor's labels */
    long max_snapshots;        /* snapshots kept at most in <db dir>/snapshots */
    long train_ranks;          /* >= 2: train in an MPI job of this many ranks (train_job.h) */
    const char *train_hosts;   /* the job's mpirun --host list (NULL: this machine) */
    const char *train_mpirun;  /* the launcher */
    const char *train_mpi_args;/* more mpirun arguments (NULL: none) */
    long train_retry;          /* seconds between a lost job and the next try */
    long train_timeout;        /* seconds a job's step may take at least before it counts as hung */
} serve_opts;

/* Fills o from defaults, environment and argv. Returns 0, 1 when --help was printed, -1 on a
 * bad value (message printed). */
int serve_opts_parse(serve_opts *o, int argc, char **argv);
void serve_opts_help(FILE *out);

/* Splits "HOST:PORT" / "[V6]:PORT" into host (NUL-terminated, in buf) and port. */
int serve_parse_listen(const char *listen, char *host, size_t n, int *port);

#endif
