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
 * training after the current step and save. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

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
    eng_source src;
    double t_load = cli_now();
    /* training copies twice the model's input side: room for crops at several scales */
    if (eng_source_open(&src, data, cfg.in_channels, 2 * cfg.input_size, &err)) {
        fprintf(stderr, "error: %s\n", err.msg);
        return CLI_BAD_INPUT;
    }
    fprintf(stderr, "loaded %zu images from %s in %.1f s\n", src.n, data, cli_now() - t_load);
    eng_trainer_cfg tc = eng_trainer_defaults(&cfg, (int)batch);
    tc.seed = (uint64_t)seed;
    tc.opt.warmup = warmup;
    if (recipe && eng_recipe_load(&tc, recipe, &err)) {
        fprintf(stderr, "error: %s\n", err.msg);
        eng_source_free(&src);
        return CLI_BAD_INPUT;
    }
    eng_trainer t;
    int rc = CLI_FAIL;
    if (eng_trainer_create(&t, &cfg, &tc, eng_source_fill, seek_source, &src, &err)) {
        fprintf(stderr, "error: %s\n", err.msg);
        eng_source_free(&src);
        return CLI_FAIL;
    }
    if (resume && !strcmp(resume, "yes") && ckpt && access(ckpt, F_OK) == 0) {
        uint8_t *bytes;
        size_t len;
        if (cli_read_bytes(ckpt, "checkpoint", &bytes, &len)) goto done;
        int bad = eng_trainer_resume(&t, bytes, len, &err);
        free(bytes);
        if (bad) {
            fprintf(stderr, "error: resuming from %s: %s\n", ckpt, err.msg);
            goto done;
        }
        fprintf(stderr, "resumed from %s at step %ld\n", ckpt, t.stats.step);
    }

    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    int tty = isatty(2);
    double start = cli_now(), last_save = start, last_print = 0, ips_avg = 0;
    long first_step = t.stats.step, target = has_steps ? first_step + steps : -1;
    double budget = 60.0 * (double)minutes + (double)seconds;
    double deadline = budget > 0 ? start + budget : -1;
    while (!stop_requested) {
        if (target >= 0 && t.stats.step >= target) break;
        if (deadline >= 0 && cli_now() >= deadline) break;
        if (eng_trainer_step(&t, &err)) {
            fprintf(stderr, "\nerror: step %ld: %s\n", t.stats.step, err.msg);
            goto done;
        }
        ips_avg = ips_avg ? 0.9 * ips_avg + 0.1 * t.stats.images_per_s : t.stats.images_per_s;
        double now = cli_now();
        double left = deadline >= 0 ? deadline - now
                                    : (double)(target - t.stats.step) * batch / (ips_avg + 1e-9);
        if (now - last_print >= (tty ? 0.5 : 10.0)) {
            fprintf(stderr,
                    "%sstep %ld loss %.4f lr %.4g images/s %.1f c_ii %.3f |c_ij| %.4f "
                    "time %.1fs ETA %.0fs%s",
                    tty ? "\r" : "", t.stats.step, t.stats.loss, t.stats.lr, ips_avg,
                    t.stats.diag_mean, t.stats.offdiag_abs_mean, now - start, left > 0 ? left : 0,
                    tty ? "   " : "\n");
            last_print = now;
        }
        if (ckpt && now - last_save >= (double)save_every) {
            if (save_checkpoint(&t, ckpt)) goto done;
            last_save = now;
        }
    }
    double took = cli_now() - start;
    fprintf(stderr, "%strained %ld steps (%ld in this run) in %.1f s; loss %.4f; %.1f images/s\n",
            tty ? "\n" : "", t.stats.step, t.stats.step - first_step, took, t.stats.loss,
            took > 0 ? (double)(t.stats.step - first_step) * (double)batch / took : 0.0);
    if (ckpt && save_checkpoint(&t, ckpt)) goto done;
    if (ckpt) fprintf(stderr, "checkpoint written to %s\n", ckpt);
    rc = CLI_OK;
done:
    eng_trainer_free(&t);
    eng_source_free(&src);
    return rc;
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
