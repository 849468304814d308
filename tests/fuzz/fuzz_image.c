/* fuzz_image.c — libFuzzer harness: untrusted image bytes (PNG, JPEG, PGM, training copies,
 * IDX). Built by `bench/fuzz` (clang, -fsanitize=fuzzer,address,undefined). */
#include "fuzz_inputs.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    return fuzz_image_input(data, size);
}
