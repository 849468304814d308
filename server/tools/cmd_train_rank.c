/* cmd_train_rank.c — `barlowd train-rank`: one rank of the training job of `barlowd serve
 * --train-ranks` (server/train_job.c starts the job; server/train_wire.h is the protocol).
 *
 * Every rank of the job runs this. Rank 0 connects to the server's Unix socket, reads each
 * request and broadcasts it to the other ranks; every rank then acts on it (START builds the
 * shard trainer from a checkpoint, STEP trains its shard of the images the server sent, RESUME
 * and RESEED move the trainer as the server's own trainer would move), and rank 0 replies.
 * The images reach the trainer's augmentation thread through a hand-off queue: the thread's
 * source waits for the batches the main thread received, which the server sends a step ahead. Any failure on any rank ends the whole
 * job (MPI_Abort): the server sees its connection close and keeps serving. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "eng_checkpoint.h"
#include "eng_comm.h"
#include "eng_copy.h"
#include "eng_trainer.h"
#include "cli_util.h"
#include "commands.h"
#include "train_wire.h"

/* The batches the main thread received, on their way to the augmentation thread's source: a
 * queue, because the server sends each batch one step ahead (STEP k carries batch k+1), so that
 * batch k+1 is augmented while step k trains. */
#define HANDOFF_MAX 3
typedef struct handoff {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    eng_image *queue[HANDOFF_MAX]; /* posted batches, oldest first, owned here until taken */
    int nq;
    int batch;       /* images per batch */
    eng_image *cur;  /* the batch the source handed out last (valid until its next call) */
    int cancel;      /* the trainer is about to drop its prefetcher: the source gives up */
} handoff;

static void free_images(eng_image *imgs, int n) {
    for (int i = 0; imgs && i < n; i++) eng_image_free(&imgs[i]);
    free(imgs);
}

static int handoff_fill(void *ctx, eng_aug_src *srcs, int n, eng_err *err) {
    handoff *h = ctx;
    pthread_mutex_lock(&h->mu);
    free_images(h->cur, h->batch);
    h->cur = NULL;
    while (!h->nq && !h->cancel) pthread_cond_wait(&h->cv, &h->mu);
    if (h->cancel || n != h->batch) {
        pthread_mutex_unlock(&h->mu);
        return eng_fail(err, "the trainer moved on");
    }
    h->cur = h->queue[0];
    memmove(h->queue, h->queue + 1, sizeof *h->queue * (size_t)(HANDOFF_MAX - 1));
    h->queue[--h->nq] = NULL;
    pthread_mutex_unlock(&h->mu);
    for (int i = 0; i < n; i++) srcs[i] = eng_image_as_src(&h->cur[i]);
    return 0;
}

/* Queues imgs[0 .. k·batch) as k batches (taking ownership of their pixels; imgs is freed).
 * -1 when they do not fit. */
static int handoff_post(handoff *h, eng_image *imgs, int n) {
    pthread_mutex_lock(&h->mu);
    int k = n / h->batch, bad = n % h->batch || h->nq + k > HANDOFF_MAX;
    for (int b = 0; b < k && !bad; b++) {
        eng_image *one = malloc(sizeof *one * (size_t)h->batch);
        if (!one) {
            bad = 1;
            break;
        }
        memcpy(one, imgs + (size_t)b * h->batch, sizeof *one * (size_t)h->batch);
        memset(imgs + (size_t)b * h->batch, 0, sizeof *one * (size_t)h->batch);
        h->queue[h->nq++] = one;
    }
    pthread_cond_broadcast(&h->cv);
    pthread_mutex_unlock(&h->mu);
    free_images(imgs, n); /* what was not queued */
    return bad ? -1 : 0;
}

/* on = 1: the source gives up (the prefetcher is about to be dropped); on = 0: the queued
 * batches are dropped too (a resumed or reseeded stream starts from the server's next ones). */
static void handoff_cancel(handoff *h, int on) {
    pthread_mutex_lock(&h->mu);
    h->cancel = on;
    if (!on) {
        for (int q = 0; q < h->nq; q++) free_images(h->queue[q], h->batch);
        memset(h->queue, 0, sizeof h->queue);
        h->nq = 0;
    }
    pthread_cond_broadcast(&h->cv);
    pthread_mutex_unlock(&h->mu);
}

typedef struct rank_job {
    eng_comm comm;
    eng_reduce red;
    int fd;           /* rank 0: the server's connection */
    handoff h;
    eng_trainer t;
    int have_trainer;
    int held;         /* batches sent and not yet trained (queued, or in the prefetcher) */
    char msg[ENG_ERR_LEN + 64];
} rank_job;

static int connect_feed(const char *path, double timeout_s, char *msg, size_t n) {
    struct sockaddr_un a = {0};
    a.sun_family = AF_UNIX;
    if (strlen(path) >= sizeof a.sun_path) {
        snprintf(msg, n, "socket path too long: %s", path);
        return -1;
    }
    strcpy(a.sun_path, path);
    double until = cli_now() + timeout_s;
    for (;;) {
        int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0) break;
        if (connect(fd, (struct sockaddr *)&a, sizeof a) == 0) return fd;
        close(fd);
        if (cli_now() > until) break;
        struct timespec pause = {0, 100 * 1000000L};
        nanosleep(&pause, NULL);
    }
    snprintf(msg, n, "cannot connect to the server at %s", path);
    return -1;
}

/* Frees the trainer after its prefetcher gave up waiting for a batch. */
static void drop_trainer(rank_job *j) {
    if (!j->have_trainer) return;
    handoff_cancel(&j->h, 1);
    eng_trainer_free(&j->t);
    handoff_cancel(&j->h, 0);
    j->have_trainer = 0;
    j->held = 0;
}

static int start(rank_job *j, const uint8_t *blob, size_t len) {
    eng_err err = {0};
    eng_config cfg;
    eng_ckpt_meta meta;
    if (eng_checkpoint_peek(blob, len, &cfg, &meta, &err)) goto fail;
    drop_trainer(j);
    int batch = meta.opt.batch;
    if (batch < j->comm.size) {
        eng_fail(&err, "a batch of %d cannot be shared by %d ranks", batch, j->comm.size);
        goto fail;
    }
    eng_trainer_cfg tc = eng_trainer_defaults(&cfg, batch);
    pthread_mutex_lock(&j->h.mu);
    free_images(j->h.cur, j->h.batch); /* of the old batch size */
    j->h.cur = NULL;
    j->h.batch = batch;
    pthread_mutex_unlock(&j->h.mu);
    int first, count;
    eng_comm_shard(&j->comm, batch, &first, &count);
    if (eng_trainer_create_shard(&j->t, &cfg, &tc, first, count, j->comm.size > 1 ? &j->red : NULL,
                                 handoff_fill, NULL, &j->h, &err))
        goto fail;
    j->have_trainer = 1;
    if (eng_trainer_resume(&j->t, blob, len, &err)) goto fail;
    return 0;
fail:
    snprintf(j->msg, sizeof j->msg, "starting: %s", err.msg);
    return -1;
}

static int step(rank_job *j, const uint8_t *p, size_t len, wire_stats *st) {
    eng_err err = {0};
    if (!j->have_trainer) {
        snprintf(j->msg, sizeof j->msg, "a step before the trainer was started");
        return -1;
    }
    int cap = HANDOFF_MAX * j->t.cfg.batch, n = 0;
    eng_image *imgs = calloc((size_t)cap, sizeof *imgs);
    if (!imgs || wire_unpack_images(p, len, imgs, cap, &n)) {
        free(imgs);
        snprintf(j->msg, sizeof j->msg, "a bad batch from the server");
        return -1;
    }
    j->held += n / j->t.cfg.batch;
    if (!j->held) {
        free_images(imgs, n);
        snprintf(j->msg, sizeof j->msg, "a step without a batch");
        return -1;
    }
    if (handoff_post(&j->h, imgs, n)) {
        snprintf(j->msg, sizeof j->msg, "the server sent %d images: not whole batches of %d, or "
                                        "more than %d queued", n, j->t.cfg.batch, HANDOFF_MAX);
        return -1;
    }
    if (eng_trainer_step(&j->t, &err)) {
        snprintf(j->msg, sizeof j->msg, "step %ld: %s", j->t.stats.step, err.msg);
        return -1;
    }
    j->held--;
    memset(st, 0, sizeof *st);
    const eng_train_stats *s = &j->t.stats;
    st->step = s->step;
    st->loss = s->loss;
    st->lr = s->lr;
    st->images_per_s = s->images_per_s;
    st->diag_mean = s->diag_mean;
    st->offdiag_abs_mean = s->offdiag_abs_mean;
    st->corr_side = eng_trainer_corr_block(&j->t, WIRE_CORR_MAX, st->corr);
    st->corr_d = j->t.model.loss.d;
    st->mpi_seconds = j->comm.seconds;
    st->mpi_bytes = j->comm.bytes;
    st->queued = j->held;
    return 0;
}

/* Rank 0's reply to the server (the other ranks reply nothing). */
static int reply(rank_job *j, uint32_t type, const void *p, size_t n) {
    if (j->comm.rank != 0) return 0;
    return wire_send(j->fd, type, p, n, NULL, 0);
}

/* One request: rank 0 reads it and every rank gets it. 0, or -1 (the job ends). */
static int next_request(rank_job *j, uint32_t *type, uint8_t **payload, size_t *len) {
    eng_err err = {0};
    uint64_t head[2] = {0, 0};
    *payload = NULL;
    *len = 0;
    if (j->comm.rank == 0) {
        if (wire_recv(j->fd, type, payload, len, NULL, NULL, j->msg, sizeof j->msg)) {
            /* the server went away: the job ends (a QUIT for every rank) */
            *type = WIRE_QUIT;
            free(*payload);
            *payload = NULL;
            *len = 0;
        }
        head[0] = *type;
        head[1] = *len;
    }
    if (eng_comm_bcast(&j->comm, head, sizeof head, 0, &err)) goto fail;
    *type = (uint32_t)head[0];
    *len = (size_t)head[1];
    if (j->comm.rank != 0 && *len) {
        *payload = malloc(*len);
        if (!*payload) {
            eng_fail(&err, "out of memory for a request of %zu bytes", *len);
            goto fail;
        }
    }
    if (*len && eng_comm_bcast(&j->comm, *payload, *len, 0, &err)) goto fail;
    return 0;
fail:
    snprintf(j->msg, sizeof j->msg, "rank %d: %s", j->comm.rank, err.msg);
    return -1;
}

int cmd_train_rank(int argc, char **argv) {
    static const char *const known[] = {"--feed", "--connect-timeout", NULL};
    if (cli_check_flags(argc, argv, known)) return CLI_BAD_INPUT;
    const char *feed = cli_flag(argc, argv, "--feed");
    long wait_s = cli_flag_long(argc, argv, "--connect-timeout", 60, 1, 3600);
    if (!feed || wait_s < 0) {
        fprintf(stderr, "error: train-rank needs --feed SOCKET (barlowd serve --train-ranks "
                        "starts it)\n");
        return CLI_BAD_INPUT;
    }
    rank_job *j = calloc(1, sizeof *j);
    wire_stats *st = malloc(sizeof *st);
    if (!j || !st) {
        fprintf(stderr, "error: out of memory\n");
        free(j);
        free(st);
        return CLI_FAIL;
    }
    j->fd = -1;
    pthread_mutex_init(&j->h.mu, NULL);
    pthread_cond_init(&j->h.cv, NULL);
    eng_err err = {0};
    int rc = CLI_FAIL, joined = 0;
    if (eng_comm_init(&j->comm, &err)) {
        snprintf(j->msg, sizeof j->msg, "%s", err.msg);
        goto done;
    }
    joined = 1;
    j->red = eng_comm_reducer(&j->comm);
    if (j->comm.rank == 0 && (j->fd = connect_feed(feed, (double)wait_s, j->msg, sizeof j->msg)) < 0)
        goto done;
    for (;;) {
        uint32_t type;
        uint8_t *p;
        size_t len;
        if (next_request(j, &type, &p, &len)) goto done;
        int bad = 0;
        int64_t at;
        switch (type) {
        case WIRE_START:
        case WIRE_RESUME:
            if (type == WIRE_START || !j->have_trainer) {
                bad = start(j, p, len);
            } else {
                handoff_cancel(&j->h, 1);
                bad = eng_trainer_resume(&j->t, p, len, &err);
                handoff_cancel(&j->h, 0);
                j->held = 0;
                if (bad) snprintf(j->msg, sizeof j->msg, "resuming: %s", err.msg);
            }
            at = j->have_trainer ? j->t.stats.step : 0;
            if (!bad) bad = reply(j, WIRE_OK, &at, sizeof at);
            break;
        case WIRE_RESEED:
            if (len != sizeof(uint64_t) || !j->have_trainer) {
                snprintf(j->msg, sizeof j->msg, "a bad reseed");
                bad = 1;
                break;
            }
            uint64_t seed;
            memcpy(&seed, p, sizeof seed);
            handoff_cancel(&j->h, 1);
            eng_trainer_reseed(&j->t, seed);
            handoff_cancel(&j->h, 0);
            j->held = 0;
            at = j->t.stats.step;
            bad = reply(j, WIRE_OK, &at, sizeof at);
            break;
        case WIRE_STEP:
            bad = step(j, p, len, st) || reply(j, WIRE_STATS, st, sizeof *st);
            break;
        case WIRE_SAVE:
            if (j->comm.rank == 0) {
                uint8_t *blob = NULL;
                size_t n = 0;
                bad = !j->have_trainer || eng_trainer_save(&j->t, &blob, &n, &err);
                if (bad) snprintf(j->msg, sizeof j->msg, "saving: %s", err.msg);
                else bad = reply(j, WIRE_BLOB, blob, n);
                free(blob);
            }
            break;
        case WIRE_QUIT:
            free(p);
            rc = CLI_OK;
            goto done;
        default:
            snprintf(j->msg, sizeof j->msg, "an unknown request %u", type);
            bad = 1;
        }
        free(p);
        if (bad) goto done;
    }
done:
    if (rc != CLI_OK) {
        fprintf(stderr, "train-rank %d: %s\n", j->comm.rank, j->msg);
        if (j->fd >= 0) wire_send(j->fd, WIRE_ERR, j->msg, strlen(j->msg), NULL, 0);
        if (joined) eng_comm_abort(&j->comm, rc);
    }
    drop_trainer(j);
    handoff_cancel(&j->h, 0); /* the queue */
    free_images(j->h.cur, j->h.batch);
    if (j->fd >= 0) close(j->fd);
    if (joined) eng_comm_finish(&j->comm);
    pthread_mutex_destroy(&j->h.mu);
    pthread_cond_destroy(&j->h.cv);
    free(st);
    free(j);
    return rc;
}
