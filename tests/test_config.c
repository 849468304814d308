/* test_config.c — model config parsing, validation, presets and round-trips. */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "eng_config.h"
#include "eng_model.h"

Test(config, presets_have_the_documented_shapes) {
    eng_config c;
    eng_err err = {0};
    cr_assert(eng_config_preset(&c, "tiny", &err) == 0, "%s", err.msg);
    cr_expect(c.in_channels == 1 && c.input_size == 16 && c.stem_width == 8 && c.n_stages == 2);
    cr_expect(c.n_proj == 2 && c.proj[1] == 32 && c.lambda == 0.0051);
    cr_assert(eng_config_preset(&c, "small", &err) == 0, "%s", err.msg);
    cr_expect(c.in_channels == 3 && c.input_size == 32 && c.stage_width[3] == 256);
    cr_expect(eng_config_rep_dim(&c) == 256 && eng_config_out_dim(&c) == 512);
    double gf = eng_config_forward_flops(&c) / 1e9;
    cr_expect(gf > 0.12 && gf < 0.14, "small: %.3f GFLOP per view, issue says about 0.13", gf);
    cr_assert(eng_config_preset(&c, "resnet18", &err) == 0, "%s", err.msg);
    cr_expect(c.stem_width == 64 && c.stage_blocks[0] == 2 && c.proj[2] == 2048);
    cr_expect(eng_config_preset(&c, "resnet50", &err) != 0);
    cr_expect(strstr(err.msg, "resnet50") != NULL);
}

Test(config, json_round_trip_is_lossless) {
    eng_config a, b;
    eng_err err = {0};
    cr_assert(eng_config_preset(&a, "resnet18", &err) == 0);
    char *json = eng_config_to_json(&a);
    cr_assert(json != NULL);
    cr_assert(eng_config_parse(&b, json, &err) == 0, "%s: %s", json, err.msg);
    cr_expect(memcmp(&a, &b, sizeof a) == 0, "round trip changed the config: %s", json);
    free(json);
}

static void expect_refused(const char *json, const char *needle) {
    eng_config c;
    eng_err err = {0};
    cr_expect(eng_config_parse(&c, json, &err) != 0, "accepted: %s", json);
    cr_expect(strstr(err.msg, needle) != NULL, "message '%s' does not mention '%s'", err.msg, needle);
}

#define BASE_MID "\"input_size\": 16, \"stem_width\": 8, \"stages\": [[1, 8]], \"projector\": [32]"

Test(config, bad_configs_are_refused_with_a_message_naming_the_problem) {
    expect_refused("{", "invalid JSON");
    expect_refused("[1, 2]", "object");
    expect_refused("{\"in_channels\": 1, " BASE_MID ", \"lambda\": 0.1, \"depth\": 3}", "depth");
    expect_refused("{" BASE_MID ", \"lambda\": 0.1}", "in_channels");
    expect_refused("{\"in_channels\": \"1\", " BASE_MID ", \"lambda\": 0.1}", "in_channels");
    expect_refused("{\"in_channels\": 0, " BASE_MID ", \"lambda\": 0.1}", "in_channels");
    expect_refused("{\"in_channels\": 1, " BASE_MID ", \"lambda\": -1}", "lambda");
    expect_refused("{\"in_channels\": 1, \"input_size\": 16, \"stem_width\": 8, \"stages\": [],"
                   " \"projector\": [32], \"lambda\": 0.1}",
                   "stages");
    expect_refused("{\"in_channels\": 1, \"input_size\": 16, \"stem_width\": 8,"
                   " \"stages\": [[1, 8, 3]], \"projector\": [32], \"lambda\": 0.1}",
                   "pair");
    expect_refused("{\"in_channels\": 1, \"input_size\": 16, \"stem_width\": 8,"
                   " \"stages\": [[1, 8]], \"projector\": [32, 1e9], \"lambda\": 0.1}",
                   "projector");
    expect_refused("{\"in_channels\": 1, \"in_channels\": 1, " BASE_MID ", \"lambda\": 0.1}",
                   "invalid JSON");
}

Test(config, parameter_table_is_in_canonical_order) {
    eng_config c;
    eng_err err = {0};
    cr_assert(eng_config_preset(&c, "tiny", &err) == 0);
    eng_param *tab;
    int n;
    size_t floats;
    cr_assert(eng_model_param_table(&c, &tab, &n, &floats, &err) == 0);
    static const char *want[] = {"stem.conv.weight", "stem.bn.weight", "stem.bn.bias",
                                 "s0.b0.conv1.weight", "s0.b0.bn1.weight", "s0.b0.bn1.bias",
                                 "s0.b0.conv2.weight", "s0.b0.bn2.weight", "s0.b0.bn2.bias",
                                 "s1.b0.conv1.weight", "s1.b0.bn1.weight", "s1.b0.bn1.bias",
                                 "s1.b0.conv2.weight", "s1.b0.bn2.weight", "s1.b0.bn2.bias",
                                 "s1.b0.short.conv.weight", "s1.b0.short.bn.weight",
                                 "s1.b0.short.bn.bias", "proj0.linear.weight", "proj0.bn.weight",
                                 "proj0.bn.bias", "proj1.linear.weight"};
    cr_assert_eq(n, (int)(sizeof want / sizeof *want));
    size_t off = 0;
    for (int i = 0; i < n; i++) {
        cr_expect_str_eq(tab[i].name, want[i]);
        cr_expect_eq(tab[i].offset, off);
        off += tab[i].count;
    }
    cr_expect_eq(floats, off);
    cr_expect_eq(floats, 6552, "tiny has 6552 parameters (PyTorch count)");
    free(tab);
}
