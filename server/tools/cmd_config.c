/* cmd_config.c — `barlowd config`: print a model config as canonical JSON (stdout) and its
 * parameter table (stderr). Benchmarks use it so the PyTorch peer builds the very same model. */
#include <stdio.h>
#include <stdlib.h>

#include "eng_model.h"
#include "cli_util.h"
#include "commands.h"

int cmd_config(int argc, char **argv) {
    static const char *const known[] = {"--model", NULL};
    if (cli_check_flags(argc, argv, known)) return CLI_BAD_INPUT;
    const char *model = cli_flag(argc, argv, "--model");
    eng_config cfg;
    eng_err err = {0};
    if (eng_config_resolve(&cfg, model ? model : "small", &err)) {
        fprintf(stderr, "error: %s\n", err.msg);
        return CLI_BAD_INPUT;
    }
    eng_param *tab;
    int n;
    size_t floats;
    if (eng_model_param_table(&cfg, &tab, &n, &floats, &err)) {
        fprintf(stderr, "error: %s\n", err.msg);
        return CLI_FAIL;
    }
    char *json = eng_config_to_json(&cfg);
    if (!json) {
        free(tab);
        fprintf(stderr, "error: out of memory\n");
        return CLI_FAIL;
    }
    printf("%s\n", json);
    for (int i = 0; i < n; i++) {
        fprintf(stderr, "%-28s", tab[i].name);
        for (int d = 0; d < tab[i].ndims; d++) fprintf(stderr, "%s%d", d ? "x" : " ", tab[i].shape[d]);
        fprintf(stderr, "\n");
    }
    fprintf(stderr, "%zu parameters, %.3f GFLOP per view forward\n", floats,
            eng_config_forward_flops(&cfg) / 1e9);
    free(json);
    free(tab);
    return CLI_OK;
}
