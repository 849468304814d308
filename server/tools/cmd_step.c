/* cmd_step.c — `barlowd step`: one training forward+backward on given parameters and views.
 *
 * The contract that proves the engine equals PyTorch: files in, files out, no optimiser step.
 * Bad input files (wrong size, bad JSON, unknown keys, non-finite values) give a one-line error
 * and exit code 2.
 *
 * Under mpirun (`mpirun -np R barlowd step ...`) every rank reads the same files and takes its
 * shard of the batch (eng_comm_shard); the batch norms, c and the gradients are summed over the
 * ranks, so the outputs are those of the single-process step on the whole batch. Every rank
 * checks that it holds the same outputs as the others; rank 0 writes them (the representation
 * rows gathered from the ranks in order). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "eng_comm.h"
#include "eng_model.h"
#include "cli_util.h"
#include "commands.h"

int cmd_step(int argc, char **argv) {
    static const char *const known[] = {"--config", "--params", "--views", "--out",
                                        "--rep",    "--stats",  NULL};
    if (cli_check_flags(argc, argv, known)) return CLI_BAD_INPUT;
    const char *cfg_path = cli_flag(argc, argv, "--config");
    const char *p_path = cli_flag(argc, argv, "--params");
    const char *v_path = cli_flag(argc, argv, "--views");
    const char *o_path = cli_flag(argc, argv, "--out");
    const char *r_path = cli_flag(argc, argv, "--rep");
    const char *s_path = cli_flag(argc, argv, "--stats");
    if (!cfg_path || !p_path || !v_path || !o_path) {
        fprintf(stderr, "error: step needs --config, --params, --views and --out\n");
        return CLI_BAD_INPUT;
    }

    int rc = CLI_BAD_INPUT;
    eng_err err = {0};
    eng_config cfg;
    eng_param *tab = NULL;
    float *params = NULL, *views = NULL, *out = NULL;
    size_t n_params = 0, n_views = 0, n_floats = 0;
    int n_tab = 0;
    eng_model m;
    int built = 0, joined = 0;
    eng_comm comm = {0};
    eng_reduce red;
    float *rep = NULL;

    if (eng_config_load(&cfg, cfg_path, &err) ||
        eng_model_param_table(&cfg, &tab, &n_tab, &n_floats, &err)) {
        fprintf(stderr, "error: %s\n", err.msg);
        goto done;
    }
    if (cli_read_floats(p_path, "params", &params, &n_params) ||
        cli_read_floats(v_path, "views", &views, &n_views))
        goto done;
    if (n_params != n_floats) {
        fprintf(stderr, "error: params file %s holds %zu floats; the config needs %zu\n", p_path,
                n_params, n_floats);
        goto done;
    }
    size_t per_image = (size_t)cfg.in_channels * cfg.input_size * cfg.input_size;
    if (n_views % (2 * per_image) || n_views / (2 * per_image) < 2) {
        fprintf(stderr,
                "error: views file %s holds %zu floats: not two views of N >= 2 images of "
                "%zu floats each\n",
                v_path, n_views, per_image);
        goto done;
    }
    int n = (int)(n_views / (2 * per_image));

    rc = CLI_FAIL;
    if (eng_comm_init(&comm, &err)) {
        fprintf(stderr, "error: %s\n", err.msg);
        goto done;
    }
    joined = 1;
    if (n < comm.size) {
        fprintf(stderr, "error: %d images cannot be shared by %d ranks\n", n, comm.size);
        rc = CLI_BAD_INPUT;
        goto done;
    }
    int lo = 0, count = n;
    eng_comm_shard(&comm, n, &lo, &count);
    red = eng_comm_reducer(&comm);
    if (eng_model_build_shard(&m, &cfg, count, n, comm.size > 1 ? &red : NULL, 1, &err)) {
        fprintf(stderr, "error: %s\n", err.msg);
        goto done;
    }
    built = 1;
    memcpy(m.params, params, n_floats * sizeof(float));
    /* this rank's rows of view A, then the same rows of view B */
    float *in = eng_model_input(&m);
    for (int v = 0; v < 2; v++)
        memcpy(in + (size_t)v * count * per_image, views + ((size_t)v * n + lo) * per_image,
               (size_t)count * per_image * sizeof(float));
    if (eng_model_forward_backward(&m, &err)) {
        fprintf(stderr, "error: %s\n", err.msg);
        goto done;
    }
    out = malloc((n_floats + 1) * sizeof(float));
    if (!out) {
        fprintf(stderr, "error: out of memory\n");
        goto done;
    }
    out[0] = (float)m.last_loss;
    memcpy(out + 1, m.grads, n_floats * sizeof(float));
    if (comm.size > 1) { /* the loss, gradients and running statistics must be every rank's */
        uint64_t h = eng_checksum_f32(ENG_CHECKSUM_SEED, out, n_floats + 1);
        h = eng_checksum_f32(h, m.stats, m.n_stats);
        int same = 0;
        if (eng_comm_agree_u64(&comm, h, &same, &err) || !same) {
            fprintf(stderr, "error: rank %d: %s\n", comm.rank,
                    same ? err.msg : "the ranks' losses, gradients or statistics differ");
            goto done;
        }
    }
    size_t rep_floats = (size_t)eng_config_rep_dim(&cfg);
    if (r_path) {
        rep = malloc((size_t)n * rep_floats * sizeof(float) + 1);
        if (!rep ||
            eng_comm_gather(&comm, eng_model_rep(&m), (size_t)count * rep_floats * sizeof(float),
                            rep, &err)) {
            fprintf(stderr, "error: %s\n", rep ? err.msg : "out of memory");
            goto done;
        }
    }
    if (comm.rank == 0) {
        if (cli_write_floats(o_path, out, n_floats + 1)) goto done;
        if (r_path && cli_write_floats(r_path, rep, (size_t)n * rep_floats)) goto done;
        if (s_path && cli_write_floats(s_path, m.stats, m.n_stats)) goto done;
    }
    rc = CLI_OK;
done:
    if (built) eng_model_free(&m);
    if (joined && rc != CLI_OK) eng_comm_abort(&comm, rc);
    if (joined) eng_comm_finish(&comm);
    free(rep);
    free(tab);
    free(params);
    free(views);
    free(out);
    return rc;
}
