/* test_cli.c — `barlowd step` as a process: the file contract and its refusal of bad input. */
#include <criterion/criterion.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "test_util.h"

#define FIX(dir, name) BARLOWD_FIXTURES "/" dir "/" name

/* Runs barlowd with args; returns its exit code and stores stderr (truncated) in msg. */
static int run_barlowd(char *const args[], char *msg, size_t msglen) {
    char *argv[24] = {BARLOWD_BIN};
    for (int i = 0; args[i] && i < 22; i++) argv[i + 1] = args[i];
    return tu_run(argv, msg, msglen);
}

static void write_file(const char *path, const void *data, size_t len) {
    FILE *f = fopen(path, "wb");
    cr_assert(f != NULL);
    cr_assert(fwrite(data, 1, len, f) == len);
    fclose(f);
}

Test(cli, step_writes_loss_and_gradients_equal_to_pytorch) {
    char msg[1024];
    char *args[] = {"step", "--config", FIX("deep3ch", "config.json"), "--params",
                    FIX("deep3ch", "params.bin"), "--views", FIX("deep3ch", "views.bin"), "--out",
                    "/tmp/barlowd-test-out.bin", "--rep", "/tmp/barlowd-test-rep.bin", NULL};
    cr_assert_eq(run_barlowd(args, msg, sizeof msg), 0, "stderr: %s", msg);
    FILE *f = fopen("/tmp/barlowd-test-out.bin", "rb");
    cr_assert(f != NULL);
    size_t nwant;
    float *want = tu_fixture_floats("deep3ch", "out.bin", &nwant);
    float *got = malloc(nwant * 4 + 4);
    size_t ngot = fread(got, 4, nwant + 1, f);
    fclose(f);
    cr_assert_eq(ngot, nwant, "O.bin has %zu floats, want %zu", ngot, nwant);
    cr_expect(tu_rel_l2(got, want, 1) < 1e-4, "loss %g vs %g", got[0], want[0]);
    cr_expect(tu_rel_l2(got + 1, want + 1, nwant - 1) < 1e-4);
    size_t nrep;
    float *rep = tu_fixture_floats("deep3ch", "rep.bin", &nrep);
    f = fopen("/tmp/barlowd-test-rep.bin", "rb");
    cr_assert(f != NULL);
    float *rgot = malloc(nrep * 4 + 4);
    cr_expect_eq(fread(rgot, 4, nrep + 1, f), nrep);
    fclose(f);
    cr_expect(tu_rel_l2(rgot, rep, nrep) < 1e-4);
    free(want);
    free(got);
    free(rep);
    free(rgot);
    unlink("/tmp/barlowd-test-out.bin");
    unlink("/tmp/barlowd-test-rep.bin");
}

/* Each bad input: exit code 2 and a single line on stderr that says what is wrong. */
static void expect_bad(char *config, char *params, char *views, const char *needle) {
    char msg[1024];
    char *args[] = {"step", "--config", config, "--params", params, "--views", views, "--out",
                    "/tmp/barlowd-test-never.bin", NULL};
    int rc = run_barlowd(args, msg, sizeof msg);
    cr_expect_eq(rc, 2, "exit code %d, want 2; stderr: %s", rc, msg);
    cr_expect(strstr(msg, needle) != NULL, "stderr '%s' does not mention '%s'", msg, needle);
    char *nl = strchr(msg, '\n');
    cr_expect(nl != NULL && nl[1] == 0, "want exactly one line, got: %s", msg);
    cr_expect(access("/tmp/barlowd-test-never.bin", F_OK) != 0, "wrote output for bad input");
}

Test(cli, step_refuses_bad_files_with_exit_code_2) {
    unlink("/tmp/barlowd-test-never.bin");
    char *cfg = FIX("tiny", "config.json"), *par = FIX("tiny", "params.bin"),
         *vie = FIX("tiny", "views.bin");
    write_file("/tmp/barlowd-bad.json", "{\"in_channels\": 1,", 18);
    expect_bad("/tmp/barlowd-bad.json", par, vie, "config");
    const char *unk = "{\"in_channels\": 1, \"input_size\": 16, \"stem_width\": 8, \"stages\": "
                      "[[1, 8], [1, 16]], \"projector\": [32, 32], \"lambda\": 0.0051, \"x\": 1}";
    write_file("/tmp/barlowd-unknown.json", unk, strlen(unk));
    expect_bad("/tmp/barlowd-unknown.json", par, vie, "unknown key");
    expect_bad(FIX("deep3ch", "config.json"), par, vie, "params");   /* wrong parameter count */
    expect_bad(cfg, par, FIX("odd", "views.bin"), "views");         /* not whole views */
    write_file("/tmp/barlowd-odd.bin", "abcdefg", 7);
    expect_bad(cfg, "/tmp/barlowd-odd.bin", vie, "multiple of 4");
    size_t n;
    float *v = tu_fixture_floats("tiny", "views.bin", &n);
    v[17] = 0.0f / 0.0f;
    write_file("/tmp/barlowd-nan.bin", v, n * 4);
    expect_bad(cfg, par, "/tmp/barlowd-nan.bin", "not finite");
    free(v);
    expect_bad(cfg, "/nonexistent/p.bin", vie, "No such file");
    unlink("/tmp/barlowd-bad.json");
    unlink("/tmp/barlowd-unknown.json");
    unlink("/tmp/barlowd-odd.bin");
    unlink("/tmp/barlowd-nan.bin");
}

Test(cli, unknown_flags_and_commands_are_refused) {
    char msg[1024];
    char *a1[] = {"step", "--bogus", "1", NULL};
    cr_expect_eq(run_barlowd(a1, msg, sizeof msg), 2, "stderr: %s", msg);
    char *a2[] = {"frobnicate", NULL};
    cr_expect_eq(run_barlowd(a2, msg, sizeof msg), 2);
    char *a3[] = {"help", NULL};
    cr_expect_eq(run_barlowd(a3, msg, sizeof msg), 0);
}


Test(cli, train_writes_a_checkpoint_that_resumes_and_embeds) {
    char msg[4096];
    tu_write_idx("/tmp/barlowd-test-train.idx", 40, 0);
    unlink("/tmp/barlowd-test-ckpt.bin");
    char *train[] = {"train", "--data", "/tmp/barlowd-test-train.idx", "--model", "tiny",
                     "--steps", "3", "--batch", "8", "--checkpoint", "/tmp/barlowd-test-ckpt.bin",
                     NULL};
    cr_assert_eq(run_barlowd(train, msg, sizeof msg), 0, "stderr: %s", msg);
    cr_expect(strstr(msg, "trained 3 steps") != NULL, "stderr: %s", msg);
    char *again[] = {"train", "--data", "/tmp/barlowd-test-train.idx", "--model", "tiny",
                     "--steps", "2", "--batch", "8", "--checkpoint", "/tmp/barlowd-test-ckpt.bin",
                     "--resume", "yes", NULL};
    cr_assert_eq(run_barlowd(again, msg, sizeof msg), 0, "stderr: %s", msg);
    cr_expect(strstr(msg, "resumed from /tmp/barlowd-test-ckpt.bin at step 3") != NULL,
              "stderr: %s", msg);
    cr_expect(strstr(msg, "trained 5 steps (2 in this run)") != NULL, "stderr: %s", msg);
    char *embed[] = {"embed", "--checkpoint", "/tmp/barlowd-test-ckpt.bin", "--data",
                     "/tmp/barlowd-test-train.idx", "--out", "/tmp/barlowd-test-vecs.f32",
                     "--batch", "16", NULL};
    cr_assert_eq(run_barlowd(embed, msg, sizeof msg), 0, "stderr: %s", msg);
    FILE *f = fopen("/tmp/barlowd-test-vecs.f32", "rb");
    cr_assert(f != NULL);
    fseek(f, 0, SEEK_END);
    cr_expect_eq(ftell(f), 40L * 16 * 4, "40 images x 16 floats (tiny's representation)");
    fclose(f);
    /* a corrupt checkpoint is refused with exit code 2 */
    f = fopen("/tmp/barlowd-test-ckpt.bin", "r+b");
    fseek(f, 100, SEEK_SET);
    fputc(0x55, f);
    fclose(f);
    cr_expect_eq(run_barlowd(embed, msg, sizeof msg), 2, "stderr: %s", msg);
    cr_expect(strstr(msg, "checksum") != NULL, "stderr: %s", msg);
    char *nodata[] = {"train", "--steps", "1", NULL};
    cr_expect_eq(run_barlowd(nodata, msg, sizeof msg), 2);
    unlink("/tmp/barlowd-test-train.idx");
    unlink("/tmp/barlowd-test-ckpt.bin");
    unlink("/tmp/barlowd-test-vecs.f32");
}
