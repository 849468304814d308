/* cmd_step.c — `barlowd step`: one training forward+backward on given parameters and views.
 *
 * The contract that proves the engine equals PyTorch: files in, files out, no optimiser step.
 * Bad input files (wrong size, bad JSON, unknown keys, non-finite values) give a one-line error
 * and exit code 2. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
    int built = 0;

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
    if (eng_model_build(&m, &cfg, n, 1, &err)) {
        fprintf(stderr, "error: %s\n", err.msg);
        goto done;
    }
    built = 1;
    memcpy(m.params, params, n_floats * sizeof(float));
    memcpy(eng_model_input(&m), views, n_views * sizeof(float));
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
    if (cli_write_floats(o_path, out, n_floats + 1)) goto done;
    if (r_path &&
        cli_write_floats(r_path, eng_model_rep(&m), (size_t)n * eng_config_rep_dim(&cfg)))
        goto done;
    if (s_path && cli_write_floats(s_path, m.stats, m.n_stats)) goto done;
    rc = CLI_OK;
done:
    if (built) eng_model_free(&m);
    free(tab);
    free(params);
    free(views);
    free(out);
    return rc;
}
