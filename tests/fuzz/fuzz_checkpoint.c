/* fuzz_checkpoint.c — libFuzzer harness: checkpoint blobs as the store hands them to the engine
 * (see fuzz_checkpoint_input for the flags byte). Built by `bench/fuzz`. */
#include "eng_ctx.h"
#include "fuzz_inputs.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerInitialize(int *argc, char ***argv) {
    eng_set_threads(1); /* one core per fuzzer */
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    return fuzz_checkpoint_input(data, size);
}
