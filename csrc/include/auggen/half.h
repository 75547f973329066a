// bf16 / fp16 <-> fp32 conversions (round to nearest even) for kernels that store
// 16-bit floats as raw uint16_t. Host code uses bit tricks; device code uses CUDA intrinsics
// (device fp32 math may flush denormals, which would break the fp16 bit tricks).
#pragma once
#include <cstdint>
#include <stdexcept>

#include "auggen/mp_math.h"

#if defined(__CUDACC__)
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#elif defined(__F16C__)
#include <immintrin.h>  // one-instruction fp16 conversions (the AVX2 CPU build)
#endif

namespace auggen {

struct bf16_t {
  uint16_t bits;
};
struct f16_t {
  uint16_t bits;
};

AUGGEN_HD float to_float(float v) { return v; }

AUGGEN_HD float to_float(bf16_t v) { return bits_as_float(static_cast<uint32_t>(v.bits) << 16); }

AUGGEN_HD float to_float(f16_t v) {
#if defined(__CUDA_ARCH__)
  return __half2float(__ushort_as_half(v.bits));
#elif defined(__F16C__) && !defined(__CUDACC__)
  return _cvtsh_ss(v.bits);
#else
  // exponent/mantissa moved into fp32 position, then rebias; denormals via a float subtract
  const uint32_t h = v.bits;
  uint32_t o = (h & 0x7fffu) << 13;
  const uint32_t exp = o & 0x0f800000u;
  o += (127u - 15u) << 23;
  if (exp == 0x0f800000u) {
    o += (128u - 16u) << 23;  // inf / nan
  } else if (exp == 0) {
    o += 1u << 23;
    o = float_as_bits(bits_as_float(o) - bits_as_float(113u << 23));
  }
  return bits_as_float(o | ((h & 0x8000u) << 16));
#endif
}

template <typename T>
AUGGEN_HD T from_float(float f);

template <>
AUGGEN_HD float from_float<float>(float f) {
  return f;
}

template <>
AUGGEN_HD bf16_t from_float<bf16_t>(float f) {
  uint32_t u = float_as_bits(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return bf16_t{static_cast<uint16_t>((u >> 16) | 0x40u)};
  u += 0x7fffu + ((u >> 16) & 1u);
  return bf16_t{static_cast<uint16_t>(u >> 16)};
}

template <>
AUGGEN_HD f16_t from_float<f16_t>(float f) {
#if defined(__CUDA_ARCH__)
  return f16_t{__half_as_ushort(__float2half_rn(f))};
#elif defined(__F16C__) && !defined(__CUDACC__)
  return f16_t{static_cast<uint16_t>(_cvtss_sh(f, _MM_FROUND_TO_NEAREST_INT))};
#else
  uint32_t u = float_as_bits(f);
  const uint32_t sign = u & 0x80000000u;
  u ^= sign;
  uint16_t o;
  if (u >= (143u << 23)) {  // overflow -> inf, nan stays nan
    o = u > 0x7f800000u ? 0x7e00 : 0x7c00;
  } else if (u < (113u << 23)) {  // fp16 denormal or zero: let the fp32 adder round
    const uint32_t magic = ((127u - 15u) + (23u - 10u) + 1u) << 23;
    o = static_cast<uint16_t>(float_as_bits(bits_as_float(u) + bits_as_float(magic)) - magic);
  } else {
    const uint32_t odd = (u >> 13) & 1u;
    u += ((15u - 127u) << 23) + 0xfffu + odd;
    o = static_cast<uint16_t>(u >> 13);
  }
  return f16_t{static_cast<uint16_t>(o | (sign >> 16))};
#endif
}

// dtype codes shared with Python (auggen/ops/_layout.py DTYPE_CODES)
enum DType : int { kFloat32 = 0, kFloat16 = 1, kBFloat16 = 2 };

}  // namespace auggen

// Runs BODY with `scalar_t` bound to the storage type of dtype code DT.
#define AUGGEN_DISPATCH_DTYPE(DT, ...)                   \
  switch (DT) {                                          \
    case ::auggen::kFloat32: {                           \
      using scalar_t = float;                            \
      __VA_ARGS__;                                       \
      break;                                             \
    }                                                    \
    case ::auggen::kFloat16: {                           \
      using scalar_t = ::auggen::f16_t;                  \
      __VA_ARGS__;                                       \
      break;                                             \
    }                                                    \
    case ::auggen::kBFloat16: {                          \
      using scalar_t = ::auggen::bf16_t;                 \
      __VA_ARGS__;                                       \
      break;                                             \
    }                                                    \
    default:                                             \
      throw std::invalid_argument("unsupported dtype code"); \
  }
