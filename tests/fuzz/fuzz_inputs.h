/* fuzz_inputs.h — one fuzz input through the engine's parsers of untrusted bytes. The libFuzzer
 * harnesses (fuzz_image.c, fuzz_checkpoint.c) call these, and so does test_fuzz_replay, which
 * replays the committed corpora and every crasher found in the normal (ASan) test suite. */
#ifndef FUZZ_INPUTS_H
#define FUZZ_INPUTS_H

#include <stddef.h>
#include <stdint.h>

/* Image bytes as an upload: sniff, decode (pixel limit 4 MP), convert to 1 and 3 channels,
 * make, pack and unpack the training copy, the evaluation view; and the same bytes as a stored
 * training copy ("BTC1") and as an IDX file. Returns 0 (libFuzzer's convention). */
int fuzz_image_input(const uint8_t *data, size_t size);

/* A checkpoint blob: data[0] is a flags byte, the rest the blob. Flag bit 0: recompute the
 * trailing CRC-32 first, so mutations reach the parser behind the checksum. When the blob
 * validates and describes a small model, an inference model is built from it and run once, and
 * it is exported in every format (eng_export.h). */
int fuzz_checkpoint_input(const uint8_t *data, size_t size);

#endif
