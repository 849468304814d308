/* cmd_backup.c — `barlowd backup` and `barlowd restore`: a snapshot of a database from the
 * command line, and putting one back in place (both are the store's: store_backup,
 * store_restore; docs/DESIGN.md "Snapshots").
 *
 *   barlowd backup --db PATH --out FILE     works while a server runs on PATH
 *   barlowd restore FILE --db PATH          refused while a server runs on PATH
 *
 * Each prints one JSON line on success: what the file holds and how long it took. */
#include <stdio.h>
#include <string.h>

#include "cli_util.h"
#include "commands.h"
#include "store.h"

static void print_info(const char *key, const char *path, const store_snapshot_info *info,
                       double seconds) {
    printf("{\"%s\": \"%s\", \"bytes\": %lld, \"images\": %lld, \"serving_version\": %lld, "
           "\"schema\": %d, \"seconds\": %.3f}\n",
           key, path, (long long)info->bytes, (long long)info->images,
           (long long)info->serving_version, info->schema, seconds);
}

/* The exit code of a store failure: 2 for what the user gave (a bad file, a path that exists),
 * 1 for anything else. */
static int exit_code(const store_err *e) { return e->code == ERR_BAD_INPUT ? CLI_BAD_INPUT : CLI_FAIL; }

int cmd_backup(int argc, char **argv) {
    static const char *const known[] = {"--db", "--out", NULL};
    if (cli_check_flags(argc, argv, known)) return CLI_BAD_INPUT;
    const char *db = cli_flag(argc, argv, "--db"), *out = cli_flag(argc, argv, "--out");
    if (!db || !out) {
        fprintf(stderr, "error: backup needs --db PATH and --out FILE\n");
        return CLI_BAD_INPUT;
    }
    double t0 = cli_now();
    store_snapshot_info info;
    store_err e = {0};
    if (store_backup(db, out, NULL, NULL, &info, &e)) {
        fprintf(stderr, "error: backup of %s: %s\n", db, e.msg);
        return exit_code(&e);
    }
    print_info("out", out, &info, cli_now() - t0);
    return CLI_OK;
}

int cmd_restore(int argc, char **argv) {
    /* one positional argument (the snapshot), anywhere among the flags */
    const char *file = NULL, *db = NULL;
    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "--db") && i + 1 < argc) {
            db = argv[++i];
        } else if (!strncmp(argv[i], "--", 2) || file) {
            fprintf(stderr, "error: unexpected argument '%s' (barlowd restore FILE --db PATH)\n",
                    argv[i]);
            return CLI_BAD_INPUT;
        } else {
            file = argv[i];
        }
    }
    if (!file || !db) {
        fprintf(stderr, "error: restore needs a snapshot FILE and --db PATH\n");
        return CLI_BAD_INPUT;
    }
    double t0 = cli_now();
    store_snapshot_info info;
    store_err e = {0};
    int r = store_restore(file, db, &info, &e);
    if (r == 1) {
        fprintf(stderr, "error: %s is in use (a server runs on it: %s.lock is held); stop it "
                        "first — nothing was changed\n", db, db);
        return CLI_FAIL;
    }
    if (r) {
        fprintf(stderr, "error: restore of %s: %s\n", file, e.msg);
        return exit_code(&e);
    }
    print_info("restored", db, &info, cli_now() - t0);
    fprintf(stderr, "barlowd: %s restored from %s (the old database, if any, is %s.before-restore); "
                    "it serves from the next start\n", db, file, db);
    return CLI_OK;
}
