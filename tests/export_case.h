/* export_case.h — a model and images for comparing exported files with barlowd's own inference,
 * shared by test_export (the ONNX runtime check, in the suite) and the export_case tool that
 * tests/export_torch.py runs (the PyTorch check, where PyTorch is).
 *
 * A case directory holds:
 *   barlowd.db   a store whose version 1 is the model (for `barlowd export --db`)
 *   case.json    {"n", "channels", "size", "dim", "images": [[width, height], ...]}
 *   pixels.u8    the n images as barlowd keeps them (training copies: 8-bit HWC in the model's
 *                channels), back to back
 *   input.f32    barlowd's preprocessing of them (eng_infer_view): [n, C, S, S] float32 LE
 *   want.f32     barlowd's vectors of them (eng_infer_embed, the serving path): [n, E] */
#ifndef EXPORT_CASE_H
#define EXPORT_CASE_H

#include <stddef.h>
#include <stdint.h>

/* A checkpoint (*blob malloc'd) of the model of fixture tests/fixtures/<name> with its perturbed
 * parameters (params.bin), running statistics drawn from a seeded generator for every batch
 * norm (means N(0, 0.3²), variances U(0.5, 2): none is the untrained 0 and 1), at `step`.
 * Returns 0, or -1 with a message in err. */
int export_fixture_blob(const char *fixtures, const char *name, uint64_t step, uint8_t **blob,
                        size_t *len, char *err, size_t err_len);

/* Writes a case of n_images (1..64) images for the checkpoint blob into the existing directory
 * dir. Returns 0, or -1 with a message in err. */
int export_case_write(const char *dir, const uint8_t *blob, size_t len, int n_images, char *err,
                      size_t err_len);

#endif
