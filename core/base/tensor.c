#include "base/tensor.h"

#include <string.h>

static const struct { const char *name; size_t size; } dtype_info[UP_DTYPE_COUNT] = {
    [UP_DTYPE_F32] = {"F32", 4},
    [UP_DTYPE_BF16] = {"BF16", 2},
    [UP_DTYPE_F16] = {"F16", 2},
    [UP_DTYPE_I32] = {"I32", 4},
    [UP_DTYPE_I64] = {"I64", 8},
};

size_t up_dtype_size(up_dtype dtype) { return dtype < UP_DTYPE_COUNT ? dtype_info[dtype].size : 0; }

const char *up_dtype_name(up_dtype dtype) {
    return dtype < UP_DTYPE_COUNT ? dtype_info[dtype].name : "?";
}

int up_dtype_parse(const char *name, up_dtype *out) {
    for (int i = 0; i < UP_DTYPE_COUNT; i++) {
        if (strcmp(name, dtype_info[i].name) == 0) {
            *out = (up_dtype)i;
            return 0;
        }
    }
    return -1;
}

int64_t up_tensor_numel(const up_tensor *t) {
    int64_t n = 1;
    for (int i = 0; i < t->ndim; i++) n *= t->shape[i];
    return n;
}

uint16_t up_f32_to_bf16(float f) {
    union { float f; uint32_t u; } v = { f };
    if ((v.u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((v.u >> 16) | 0x40); /* quiet NaN */
    uint32_t rounding = 0x7fffu + ((v.u >> 16) & 1u);
    return (uint16_t)((v.u + rounding) >> 16);
}

float up_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu;
    uint32_t mant = h & 0x3ffu;
    uint32_t bits;
    if (exp == 0) {
        if (mant == 0) {
            bits = sign;
        } else { /* subnormal: renormalise */
            int e = -1;
            do { e++; mant <<= 1; } while (!(mant & 0x400u));
            bits = sign | ((uint32_t)(127 - 15 - e) << 23) | ((mant & 0x3ffu) << 13);
        }
    } else if (exp == 31) {
        bits = sign | 0x7f800000u | (mant << 13);
    } else {
        bits = sign | ((exp + 127 - 15) << 23) | (mant << 13);
    }
    union { uint32_t u; float f; } v = { bits };
    return v.f;
}

void up_convert_to_f32(float *dst, const void *src, up_dtype dtype, size_t n) {
    switch (dtype) {
    case UP_DTYPE_F32: memcpy(dst, src, n * sizeof(float)); break;
    case UP_DTYPE_BF16: {
        const uint16_t *s = src;
        for (size_t i = 0; i < n; i++) dst[i] = up_bf16_to_f32(s[i]);
        break;
    }
    case UP_DTYPE_F16: {
        const uint16_t *s = src;
        for (size_t i = 0; i < n; i++) dst[i] = up_f16_to_f32(s[i]);
        break;
    }
    default: memset(dst, 0, n * sizeof(float)); break;
    }
}
