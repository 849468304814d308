/* cmd_train.c — `barlowd train` and `barlowd embed`: the training loop and batch inference from
 * the command line, on an IDX file or a directory of images.
 *
 *   barlowd train --data DIR|FILE.idx [--model small] [--minutes M] [--seconds S] [--steps N]
 *                 [--batch 256]
 *                 [--checkpoint out.bin] [--resume] [--seed S] [--warmup W] [--save-every SEC]
 *                 [--recipe FILE.json]
 *   barlowd embed --checkpoint out.bin --data DIR|FILE.idx --out vectors.f32 [--batch 256]
 *
 * Checkpoints are written atomically (temporary file, fsync, rename). SIGINT/SIGTERM stop
 * training after the current step and save.
 *
 * Under mpirun (`mpirun -np R barlowd train ...`) the ranks train data-parallel: each opens the
 * same data (its own copy on its own host), trains its shard of every batch of --batch images
 * (the batch norms, c and the gradients summed over the ranks), and holds the same parameters
 * after every step. Rank 0 decides when to stop (its clock, its signals) and tells the others
 * each step; it alone reads the --resume checkpoint (sent to the others) and writes checkpoints
 * and progress. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "eng_comm.h"
#include "eng_source.h"
#include "eng_infer.h"
#include "eng_recipe.h"
#include "eng_trainer.h"
#include "cli_util.h"
#include "commands.h"

/* Set by SIGINT/SIGTERM; the loop stops after the current step. (server/ owns process state.) */
static volatile sig_atomic_t stop_requested;

static void on_signal(int sig) {
    (void)sig;
    stop_requested = 1;
}

/* Rank 0's checkpoint file sent to every rank: *bytes (malloc'd) and *len, or *len = 0 when rank
 * 0 has none to resume from. */
static int share_checkpoint(eng_comm *comm, const char *path, uint8_t **bytes, size_t *len) {
    eng_err err = {0};
    *bytes = NULL;
    *len = 0;
    uint64_t n = 0;
    if (comm->rank == 0 && access(path, F_OK) == 0) {
        if (cli_read_bytes(path, "checkpoint", bytes, len)) return -1;
        n = *len;
    }
    if (eng_comm_bcast(comm, &n, sizeof n, 0, &err)) goto fail;
    if (!n) return 0;
    if (comm->rank != 0) {
        *bytes = malloc((size_t)n);
        if (!*bytes) {
            eng_fail(&err, "out of memory for a checkpoint of %llu bytes", (unsigned long long)n);
            goto fail;
        }
        *len = (size_t)n;
    }
    if (eng_comm_bcast(comm, *bytes, *len, 0, &err)) goto fail;
    return 0;
fail:
    fprintf(stderr, "error: rank %d: %s\n", comm->rank, err.msg);
    free(*bytes);
    *bytes = NULL;
    return -1;
}

/* Leaves the job with exit code rc: a failing rank ends every rank (eng_comm_abort). */
static int leave_job(eng_comm *comm, int rc) {
    if (rc != CLI_OK) eng_comm_abort(comm, rc);
    eng_comm_finish(comm);
    return rc;
}

static int save_checkpoint(eng_trainer *t, const char *path) {
    uint8_t *blob;
    size_t len;
    eng_err err = {0};
    if (eng_trainer_save(t, &blob, &len, &err)) {
        fprintf(stderr, "\nerror: %s\n", err.msg);
        return -1;
    }
    int rc = cli_write_atomic(path, blob, len);
    if (rc) fprintf(stderr, "\nerror: cannot write checkpoint %s: %s\n", path, strerror(errno));
    free(blob);
    return rc;
}

static void seek_source(void *ctx, uint64_t seed, uint64_t batch) {
    eng_source_seek(ctx, seed, batch);
}

int cmd_train(int argc, char **argv) {
    static const char *const known[] = {"--data",   "--model", "--minutes", "--seconds",
                                        "--steps",  "--batch", "--checkpoint", "--resume",
                                        "--seed",   "--warmup", "--save-every", "--recipe",
                                        NULL};
    if (cli_check_flags(argc, argv, known)) return CLI_BAD_INPUT;
    const char *data = cli_flag(argc, argv, "--data");
    const char *model = cli_flag(argc, argv, "--model");
    const char *ckpt = cli_flag(argc, argv, "--checkpoint");
    const char *resume = cli_flag(argc, argv, "--resume");
    const char *recipe = cli_flag(argc, argv, "--recipe");
    long minutes = cli_flag_long(argc, argv, "--minutes", 0, 0, 1000000);
    long seconds = cli_flag_long(argc, argv, "--seconds", 0, 0, 1000000000);
    long steps = cli_flag_long(argc, argv, "--steps", 0, 0, 1000000000);
    long batch = cli_flag_long(argc, argv, "--batch", 256, 2, 65536);
    long seed = cli_flag_long(argc, argv, "--seed", 1, 0, 2000000000);
    long warmup = cli_flag_long(argc, argv, "--warmup", 200, 0, 1000000000);
    long save_every = cli_flag_long(argc, argv, "--save-every", 300, 1, 1000000);
    if (minutes < 0 || seconds < 0 || steps < 0 || batch < 0 || seed < 0 || warmup < 0 ||
        save_every < 0)
        return CLI_BAD_INPUT;
    int has_steps = cli_flag(argc, argv, "--steps") != NULL; /* --steps 0: just the initial model */
    if (!data) {
        fprintf(stderr, "error: train needs --data DIR|FILE.idx\n");
        return CLI_BAD_INPUT;
    }
    if (!minutes && !seconds && !has_steps) {
        fprintf(stderr, "error: train needs --minutes M, --seconds S or --steps N\n");
        return CLI_BAD_INPUT;
    }
    if (resume && (strcmp(resume, "yes") && strcmp(resume, "no"))) {
        fprintf(stderr, "error: --resume takes yes or no\n");
        return CLI_BAD_INPUT;
    }
    eng_err err = {0};
    eng_config cfg;
    if (eng_config_resolve(&cfg, model ? model : "small", &err)) {
        fprintf(stderr, "error: %s\n", err.msg);
        return CLI_BAD_INPUT;
    }
    eng_comm comm;
    if (eng_comm_init(&comm, &err)) {
        fprintf(stderr, "error: %s\n", err.msg);
        return CLI_FAIL;
    }
    if (batch < comm.size) {
        fprintf(stderr, "error: a batch of %ld cannot be shared by %d ranks\n", batch, comm.size);
        return leave_job(&comm, CLI_BAD_INPUT);
    }
    int lead = comm.rank == 0;
    eng_source src;
    double t_load = cli_now();
    /* training copies twice the model's input side: room for crops at several scales */
    if (eng_source_open(&src, data, cfg.in_channels, 2 * cfg.input_size, &err)) {
        fprintf(stderr, "error: %s\n", err.msg);
        return leave_job(&comm, CLI_BAD_INPUT);
    }
    if (lead) fprintf(stderr, "loaded %zu images from %s in %.1f s\n", src.n, data, cli_now() - t_load);
    int same = 1;
    if (eng_comm_agree_u64(&comm, (uint64_t)src.n, &same, &err) || !same) {
        fprintf(stderr, "error: rank %d: %s\n", comm.rank,
                same ? err.msg : "the ranks loaded different numbers of images");
        eng_source_free(&src);
        return leave_job(&comm, CLI_BAD_INPUT);
    }
    eng_trainer_cfg tc = eng_trainer_defaults(&cfg, (int)batch);
    tc.seed = (uint64_t)seed;
    tc.opt.warmup = warmup;
    if (recipe && eng_recipe_load(&tc, recipe, &err)) {
        fprintf(stderr, "error: %s\n", err.msg);
        eng_source_free(&src);
        return leave_job(&comm, CLI_BAD_INPUT);
    }
    eng_trainer t;
    int rc = CLI_FAIL, first = 0, count = (int)batch;
    eng_comm_shard(&comm, (int)batch, &first, &count);
    eng_reduce red = eng_comm_reducer(&comm);
    if (eng_trainer_create_shard(&t, &cfg, &tc, first, count, comm.size > 1 ? &red : NULL,
                                 eng_source_fill, seek_source, &src, &err)) {
        fprintf(stderr, "error: %s\n", err.msg);
        eng_source_free(&src);
        return leave_job(&comm, CLI_FAIL);
    }
    if (resume && !strcmp(resume, "yes") && ckpt) {
        uint8_t *bytes;
        size_t len;
        if (share_checkpoint(&comm, ckpt, &bytes, &len)) goto done;
        if (len) {
            int bad = eng_trainer_resume(&t, bytes, len, &err);
            free(bytes);
            if (bad) {
                fprintf(stderr, "error: resuming from %s: %s\n", ckpt, err.msg);
                goto done;
            }
            if (lead) fprintf(stderr, "resumed from %s at step %ld\n", ckpt, t.stats.step);
        }
    }

    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    int tty = isatty(2);
    double start = cli_now(), last_save = start, last_print = 0, ips_avg = 0;
    long first_step = t.stats.step, target = has_steps ? first_step + steps : -1;
    double budget = 60.0 * (double)minutes + (double)seconds;
    double deadline = budget > 0 ? start + budget : -1;
    for (;;) {
        /* rank 0's clock and signals decide, for every rank */
        int go = !stop_requested && !(target >= 0 && t.stats.step >= target) &&
                 !(deadline >= 0 && cli_now() >= deadline);
        if (eng_comm_bcast(&comm, &go, sizeof go, 0, &err)) {
            fprintf(stderr, "\nerror: rank %d: %s\n", comm.rank, err.msg);
            goto done;
        }
        if (!go) break;
        if (eng_trainer_step(&t, &err)) {
            fprintf(stderr, "\nerror: step %ld: %s\n", t.stats.step, err.msg);
            goto done;
        }
        ips_avg = ips_avg ? 0.9 * ips_avg + 0.1 * t.stats.images_per_s : t.stats.images_per_s;
        double now = cli_now();
        double left = deadline >= 0 ? deadline - now
                                    : (double)(target - t.stats.step) * batch / (ips_avg + 1e-9);
        if (lead && now - last_print >= (tty ? 0.5 : 10.0)) {
            fprintf(stderr,
                    "%sstep %ld loss %.4f lr %.4g images/s %.1f c_ii %.3f |c_ij| %.4f "
                    "time %.1fs ETA %.0fs%s",
                    tty ? "\r" : "", t.stats.step, t.stats.loss, t.stats.lr, ips_avg,
                    t.stats.diag_mean, t.stats.offdiag_abs_mean, now - start, left > 0 ? left : 0,
                    tty ? "   " : "\n");
            last_print = now;
        }
        if (lead && ckpt && now - last_save >= (double)save_every) {
            if (save_checkpoint(&t, ckpt)) goto done;
            last_save = now;
        }
    }
    double took = cli_now() - start;
    long ran = t.stats.step - first_step;
    if (lead)
        fprintf(stderr, "%strained %ld steps (%ld in this run) in %.1f s; loss %.4f; %.1f images/s\n",
                tty ? "\n" : "", t.stats.step, ran, took, t.stats.loss,
                took > 0 ? (double)ran * (double)batch / took : 0.0);
    if (comm.size > 1)
        fprintf(stderr,
                "rank %d of %d: %d images a step; MPI %.2f s (%.1f%% of the time) in %ld calls, "
                "%.3f MB a step\n",
                comm.rank, comm.size, count, comm.seconds, took > 0 ? 100 * comm.seconds / took : 0,
                comm.calls, ran ? comm.bytes / (double)ran / 1e6 : 0.0);
    if (lead && ckpt && save_checkpoint(&t, ckpt)) goto done;
    if (lead && ckpt) fprintf(stderr, "checkpoint written to %s\n", ckpt);
    rc = CLI_OK;
done:
    eng_trainer_free(&t);
    eng_source_free(&src);
    return leave_job(&comm, rc);
}

int cmd_embed(int argc, char **argv) {
    static const char *const known[] = {"--checkpoint", "--data", "--out", "--batch", NULL};
    if (cli_check_flags(argc, argv, known)) return CLI_BAD_INPUT;
    const char *ckpt = cli_flag(argc, argv, "--checkpoint");
    const char *data = cli_flag(argc, argv, "--data");
    const char *out_path = cli_flag(argc, argv, "--out");
    long batch = cli_flag_long(argc, argv, "--batch", 256, 1, 65536);
    if (batch < 0) return CLI_BAD_INPUT;
    if (!ckpt || !data || !out_path) {
        fprintf(stderr, "error: embed needs --checkpoint, --data and --out\n");
        return CLI_BAD_INPUT;
    }
    uint8_t *blob;
    size_t len;
    if (cli_read_bytes(ckpt, "checkpoint", &blob, &len)) return CLI_BAD_INPUT;
    eng_err err = {0};
    eng_infer inf;
    if (eng_infer_create(&inf, blob, len, (int)batch, 0, &err)) {
        fprintf(stderr, "error: %s: %s\n", ckpt, err.msg);
        free(blob);
        return CLI_BAD_INPUT;
    }
    free(blob);
    eng_source src;
    if (eng_source_open(&src, data, inf.cfg.in_channels, 2 * inf.cfg.input_size, &err)) {
        fprintf(stderr, "error: %s\n", err.msg);
        eng_infer_free(&inf);
        return CLI_BAD_INPUT;
    }
    int rc = CLI_FAIL;
    float *vecs = malloc((size_t)batch * inf.dim * sizeof *vecs);
    eng_aug_src *imgs = malloc((size_t)batch * sizeof *imgs);
    FILE *out = fopen(out_path, "wb");
    if (!vecs || !imgs || !out) {
        fprintf(stderr, "error: cannot write %s: %s\n", out_path, out ? "out of memory" : strerror(errno));
        goto done;
    }
    double t0 = cli_now();
    for (size_t first = 0; first < src.n; first += (size_t)batch) {
        size_t n = src.n - first < (size_t)batch ? src.n - first : (size_t)batch;
        for (size_t i = 0; i < n; i++) imgs[i] = eng_source_image(&src, first + i);
        if (eng_infer_embed(&inf, imgs, (int)n, vecs, &err)) {
            fprintf(stderr, "error: images %zu..%zu: %s\n", first, first + n - 1, err.msg);
            goto done;
        }
        if (fwrite(vecs, sizeof(float) * (size_t)inf.dim, n, out) != n) {
            fprintf(stderr, "error: writing %s failed\n", out_path);
            goto done;
        }
    }
    if (fclose(out) != 0) {
        out = NULL;
        fprintf(stderr, "error: writing %s failed\n", out_path);
        goto done;
    }
    out = NULL;
    fprintf(stderr, "embedded %zu images (%d floats each) in %.1f s into %s\n", src.n, inf.dim,
            cli_now() - t0, out_path);
    rc = CLI_OK;
done:
    if (out) fclose(out);
    free(vecs);
    free(imgs);
    eng_infer_free(&inf);
    eng_source_free(&src);
    return rc;
}
