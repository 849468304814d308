/* cmd_export.c — `barlowd export`: a stored model version as an ONNX or safetensors file.
 *
 *   barlowd export --db PATH [--version N] --format onnx|safetensors --out FILE
 *
 * Reads the database (a running server may have it open: SQLite readers do not block it) through
 * the same service call as GET /checkpoints/{version}/export, so both write the same bytes.
 * Without --version, the serving version (the newest when none is recorded). The file is written
 * atomically. Exit codes: 0 written, 1 failure, 2 bad input (flags, no such version, a version
 * the quality gate refused). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli_util.h"
#include "commands.h"
#include "svc.h"

int cmd_export(int argc, char **argv) {
    static const char *const known[] = {"--db", "--version", "--format", "--out", NULL};
    if (cli_check_flags(argc, argv, known)) return CLI_BAD_INPUT;
    const char *db = cli_flag(argc, argv, "--db"), *format = cli_flag(argc, argv, "--format");
    const char *out = cli_flag(argc, argv, "--out");
    if (!db || !format || !out) {
        fprintf(stderr, "usage: barlowd export --db PATH [--version N] --format "
                        "onnx|safetensors --out FILE\n");
        return CLI_BAD_INPUT;
    }
    eng_export_format fmt;
    if (eng_export_format_parse(format, &fmt)) {
        fprintf(stderr, "error: --format must be onnx or safetensors, got '%s'\n", format);
        return CLI_BAD_INPUT;
    }
    long version = cli_flag_long(argc, argv, "--version", 0, 1, 0x7fffffffffffffffL);
    if (version < 0) return CLI_BAD_INPUT;
    if (access(db, R_OK) != 0) { /* store_open would create an empty database */
        fprintf(stderr, "error: no database at %s: %s\n", db, strerror(errno));
        return CLI_BAD_INPUT;
    }
    store *st;
    store_err se = {0};
    if (store_open(db, NULL, &st, &se)) {
        fprintf(stderr, "error: %s\n", se.msg);
        return CLI_FAIL;
    }
    int rc = CLI_FAIL;
    uint8_t *bytes = NULL;
    size_t len = 0;
    svc_err err = {0};
    int64_t v = version;
    int r = version ? 0 : svc_export_default_version(st, &v, &err);
    if (r == 1) {
        fprintf(stderr, "error: %s holds no model version\n", db);
        rc = CLI_BAD_INPUT;
        goto done;
    }
    if (r == 0) r = svc_export_store(st, v, fmt, &bytes, &len, &err);
    if (r == 1) {
        fprintf(stderr, "error: no model version %lld in %s (never published, or its checkpoint "
                        "was pruned)\n", (long long)v, db);
        rc = CLI_BAD_INPUT;
    } else if (r == 2) {
        fprintf(stderr, "error: %s\n", err.msg);
        rc = CLI_BAD_INPUT;
    } else if (r < 0) {
        fprintf(stderr, "error: %s\n", err.msg);
    } else if (cli_write_atomic(out, bytes, len)) {
        fprintf(stderr, "error: cannot write %s: %s\n", out, strerror(errno));
    } else {
        fprintf(stderr, "model version %lld as %s: %zu bytes to %s\n", (long long)v,
                eng_export_format_name(fmt), len, out);
        rc = CLI_OK;
    }
done:
    free(bytes);
    store_close(st);
    return rc;
}
