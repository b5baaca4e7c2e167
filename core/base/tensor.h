/* tensor — element types and non-owning views of n-d arrays.
 *
 * An up_tensor never owns its data: it points into an mmap'd file, a caller's
 * buffer or a model's allocation, whose owner outlives the view. Shapes are
 * row-major, outermost first. Conversions to fp32 are exact (bf16/f16 widen
 * losslessly); fp32 -> bf16 rounds to nearest even. */
#ifndef UP_TENSOR_H
#define UP_TENSOR_H

#include <stddef.h>
#include <stdint.h>

typedef enum {
    UP_DTYPE_F32 = 0,
    UP_DTYPE_BF16,
    UP_DTYPE_F16,
    UP_DTYPE_I32,
    UP_DTYPE_I64,
    UP_DTYPE_COUNT
} up_dtype;

#define UP_MAX_DIMS 8

typedef struct up_tensor {
    up_dtype dtype;
    int ndim;
    int64_t shape[UP_MAX_DIMS];
    const void *data;
} up_tensor;

size_t up_dtype_size(up_dtype dtype);
/* Safetensors spelling: "F32", "BF16", "F16", "I32", "I64". */
const char *up_dtype_name(up_dtype dtype);
/* Returns 0 and sets *out, or -1 for an unknown or unsupported name. */
int up_dtype_parse(const char *name, up_dtype *out);

int64_t up_tensor_numel(const up_tensor *t);

static inline float up_bf16_to_f32(uint16_t h) {
    union { uint32_t u; float f; } v = { (uint32_t)h << 16 };
    return v.f;
}
uint16_t up_f32_to_bf16(float f);
float up_f16_to_f32(uint16_t h);

/* dst[i] = (float)src[i] for n elements of a floating dtype (F32, BF16, F16). */
void up_convert_to_f32(float *dst, const void *src, up_dtype dtype, size_t n);

#endif
