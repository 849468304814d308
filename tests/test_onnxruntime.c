/* test_onnxruntime.c — an exported ONNX file in a real ONNX runtime: `barlowd export` on a real
 * store (a fixture's model with perturbed weights and statistics), then tests/node/onnx_check.js
 * runs it in onnxruntime-node (pinned in tests/node/package.json, installed by scripts/dev setup)
 * and compares it with barlowd's own inference of the same images (1e-4 relative), the batch at
 * once and one image at a time; it also applies the preprocessing that the file's
 * metadata_props describe and compares that with barlowd's. Three models: gray, RGB with widths
 * of no 8-channel block, and 16-channel blocks (oneDNN's fastest paths in barlowd). */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "export_case.h"
#include "test_util.h"

TestSuite(onnxruntime, .timeout = 300);

/* Runs a shell command; its output goes to `log` and then to stderr. Returns the exit status. */
static int run(const char *cmd, const char *log) {
    char full[4096];
    snprintf(full, sizeof full, "%s > %s 2>&1", cmd, log);
    int st = system(full);
    size_t n;
    char *out = tu_read_file(log, &n);
    fprintf(stderr, "%s", out);
    free(out);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128;
}

static void onnxruntime_case(const char *fixture, int images) {
    char node_modules[512];
    snprintf(node_modules, sizeof node_modules, "%s/node_modules/onnxruntime-node",
             BARLOWD_NODE_DIR);
    struct stat sb;
    cr_assert(stat(node_modules, &sb) == 0,
              "%s is missing: run `bash scripts/dev setup` (npm ci --ignore-scripts in %s)",
              node_modules, BARLOWD_NODE_DIR);
    char dir[] = "/tmp/barlowd-export-XXXXXX";
    cr_assert(mkdtemp(dir) != NULL);
    uint8_t *blob;
    size_t len;
    char msg[512];
    cr_assert(export_fixture_blob(BARLOWD_FIXTURES, fixture, 250, &blob, &len, msg,
                                  sizeof msg) == 0, "%s", msg);
    cr_assert(export_case_write(dir, blob, len, images, msg, sizeof msg) == 0, "%s", msg);
    free(blob);
    char cmd[2048], log[600];
    snprintf(log, sizeof log, "%s/log", dir);
    snprintf(cmd, sizeof cmd, "'%s' export --db '%s/barlowd.db' --format onnx --out '%s/model.onnx'",
             BARLOWD_BIN, dir, dir);
    cr_assert_eq(run(cmd, log), 0, "barlowd export failed");
    snprintf(cmd, sizeof cmd, "node '%s/onnx_check.js' '%s'", BARLOWD_NODE_DIR, dir);
    int rc = run(cmd, log);
    cr_expect_eq(rc, 0, "%s: ONNX Runtime disagrees with barlowd (exit %d, see above)", fixture,
                 rc);
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    cr_expect_eq(system(cmd), 0);
}

Test(onnxruntime, gives_barlowds_vectors_for_a_gray_model) { onnxruntime_case("tiny", 6); }
Test(onnxruntime, gives_barlowds_vectors_for_an_rgb_model_with_odd_widths) {
    onnxruntime_case("odd", 7);
}
Test(onnxruntime, gives_barlowds_vectors_for_a_model_of_16_channel_blocks) {
    onnxruntime_case("wide64", 5);
}
