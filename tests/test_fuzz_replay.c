/* test_fuzz_replay.c — replays the fuzzers' committed inputs through the same entry points the
 * libFuzzer harnesses use (tests/fuzz/fuzz_inputs.c): every seed of corpus/image and
 * corpus/checkpoint and every crasher in crashers/<harness>/ (inputs that once crashed or
 * leaked; each stays here as a regression test). The ASan+UBSan run is the one that matters.
 * The http harness's inputs are replayed against the real server in test_server. */
#include <criterion/criterion.h>
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "eng_ctx.h"
#include "fuzz_inputs.h"
#include "test_util.h"

/* Runs every file of dir through fn; returns how many (0 if dir does not exist). */
static int replay_dir(const char *dir, int (*fn)(const uint8_t *, size_t)) {
    DIR *d = opendir(dir);
    if (!d) return 0;
    int n = 0;
    for (struct dirent *e; (e = readdir(d));) {
        if (e->d_name[0] == '.') continue;
        char path[1024];
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        size_t len;
        uint8_t *b = (uint8_t *)tu_read_file(path, &len);
        cr_expect_eq(fn(b, len), 0, "%s", path);
        free(b);
        n++;
    }
    closedir(d);
    return n;
}

static void replay(const char *name, int (*fn)(const uint8_t *, size_t), int min_seeds) {
    char dir[512];
    snprintf(dir, sizeof dir, "%s/corpus/%s", BARLOWD_FUZZ_DIR, name);
    int seeds = replay_dir(dir, fn);
    cr_expect_geq(seeds, min_seeds, "%s: %d seeds", dir, seeds);
    snprintf(dir, sizeof dir, "%s/crashers/%s", BARLOWD_FUZZ_DIR, name);
    int crashers = replay_dir(dir, fn);
    cr_log_info("%s: %d seeds, %d crashers replayed", name, seeds, crashers);
}

Test(fuzz_replay, image_seeds_and_crashers) { replay("image", fuzz_image_input, 16); }

Test(fuzz_replay, checkpoint_seeds_and_crashers) {
    eng_set_threads(1);
    replay("checkpoint", fuzz_checkpoint_input, 2);
}
