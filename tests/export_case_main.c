/* export_case_main.c — the export_case tool: writes a comparison case (export_case.h) for
 * tests/export_torch.py.
 *
 *   export_case DIR --fixture NAME [--images N]     the fixture's model, perturbed (tiny, odd...)
 *   export_case DIR --checkpoint FILE [--images N]  any checkpoint (e.g. from barlowd train) */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "export_case.h"

static uint8_t *read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *b = n > 0 ? malloc((size_t)n) : NULL;
    if (b && fread(b, 1, (size_t)n, f) != (size_t)n) {
        free(b);
        b = NULL;
    }
    fclose(f);
    *len = n > 0 ? (size_t)n : 0;
    return b;
}

int main(int argc, char **argv) {
    const char *fixture = NULL, *checkpoint = NULL;
    int images = 8, bad = argc < 4 || argc % 2;
    for (int i = 2; !bad && i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--fixture"))
            fixture = argv[i + 1];
        else if (!strcmp(argv[i], "--checkpoint"))
            checkpoint = argv[i + 1];
        else if (!strcmp(argv[i], "--images"))
            images = atoi(argv[i + 1]);
        else
            bad = 1;
    }
    if (bad || !!fixture == !!checkpoint) {
        fprintf(stderr, "usage: export_case DIR (--fixture NAME | --checkpoint FILE) "
                        "[--images N]\n");
        return 2;
    }
    mkdir(argv[1], 0755);
    uint8_t *blob = NULL;
    size_t len = 0;
    char err[512];
    if (fixture && export_fixture_blob(BARLOWD_FIXTURES, fixture, 1000, &blob, &len, err,
                                       sizeof err)) {
        fprintf(stderr, "error: %s\n", err);
        return 1;
    }
    if (checkpoint && !(blob = read_file(checkpoint, &len))) {
        fprintf(stderr, "error: cannot read %s\n", checkpoint);
        return 1;
    }
    int rc = export_case_write(argv[1], blob, len, images, err, sizeof err);
    if (rc) fprintf(stderr, "error: %s\n", err);
    free(blob);
    return rc ? 1 : 0;
}
