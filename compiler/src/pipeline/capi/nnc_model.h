/* nnc_model.h: the C API of an inference artifact written by `nnc build FILE -o DIR`.
 *
 * The library (DIR/libnnc_model.so) holds the model's compiled evaluation step and a
 * small runtime; it needs nothing else (no Rust, no nnc). Samples are passed as they are
 * in the data (pixel bytes 0-255 as numbers, raw CSV values): the preprocessing recorded
 * in training is applied inside. Concurrent nnc_predict calls on one model are safe.
 */
#ifndef NNC_MODEL_H
#define NNC_MODEL_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct nnc_model nnc_model;

/* Loads DIR/weights.safetensors; NULL on error (see nnc_last_error). */
nnc_model *nnc_model_load(const char *artifact_dir);
/* The last error of this thread, or "" when there was none. */
const char *nnc_last_error(void);
/* Numbers per sample (the product of the input shape). */
int64_t nnc_input_size(const nnc_model *m);
/* Numbers per prediction (the product of the output shape). */
int64_t nnc_output_size(const nnc_model *m);
/* Writes n predictions of nnc_output_size numbers to outputs; 0 on success. */
int nnc_predict(nnc_model *m, const float *samples, int64_t n, float *outputs);
void nnc_model_free(nnc_model *m);

#ifdef __cplusplus
}
#endif

#endif
