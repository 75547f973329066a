// Scalar math of EDM2's magnitude-preserving ops, shared by the CPU (g++) and
// CUDA (nvcc) kernels so the CPU tests cover the exact same formulas.
#pragma once
#include <cmath>
#include <cstdint>
#include <cstring>

#if defined(__CUDACC__)
#define AUGGEN_HD __host__ __device__ __forceinline__
#else
#define AUGGEN_HD inline
#endif

namespace auggen {

// 1 / 0.596: EDM2's mp_silu rescales silu to unit magnitude for unit-variance input.
constexpr float kMpSiluScale = 1.0f / 0.596f;

AUGGEN_HD float bits_as_float(uint32_t u) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(u);
#else
  float f;
  std::memcpy(&f, &u, sizeof(f));
  return f;
#endif
}

AUGGEN_HD uint32_t float_as_bits(float f) {
#if defined(__CUDA_ARCH__)
  return __float_as_uint(f);
#else
  uint32_t u;
  std::memcpy(&u, &f, sizeof(u));
  return u;
#endif
}

// exp(x) without branches so CPU loops vectorise: Cody-Waite reduction x = n ln2 + r,
// |r| <= ln2/2, degree-6 Taylor polynomial (rel. error ~2e-7), 2^n built in the exponent bits.
AUGGEN_HD float exp_poly(float x) {
  x = x > -87.0f ? x : -87.0f;  // (max/min form: a NaN input gives a finite value here, and
  x = x < 88.0f ? x : 88.0f;    // the callers still return NaN through their x * ... factor)
  const float magic = 12582912.0f;  // 1.5 * 2^23: adding it rounds to the nearest integer
  const float t = x * 1.44269504088896341f + magic;
  const float n = t - magic;
  float r = fmaf(n, -0.693145751953125f, x);
  r = fmaf(n, -1.428606765330187e-06f, r);
  float p = 1.0f / 720.0f;
  p = fmaf(p, r, 1.0f / 120.0f);
  p = fmaf(p, r, 1.0f / 24.0f);
  p = fmaf(p, r, 1.0f / 6.0f);
  p = fmaf(p, r, 0.5f);
  p = fmaf(p, r, 1.0f);
  p = fmaf(p, r, 1.0f);
  const int32_t e = static_cast<int32_t>(float_as_bits(t) - float_as_bits(magic)) + 127;
  return p * bits_as_float(static_cast<uint32_t>(e) << 23);
}

AUGGEN_HD float exp_fast(float x) {
#if defined(__CUDA_ARCH__)
  return __expf(x);
#else
  return exp_poly(x);
#endif
}

AUGGEN_HD float sigmoidf_(float x) { return 1.0f / (1.0f + exp_fast(-x)); }

// mp_silu(x) = x * sigmoid(x) / 0.596 (the gain folded into the sigmoid's division)
AUGGEN_HD float mp_silu_value(float x) { return x * (kMpSiluScale / (1.0f + exp_fast(-x))); }

// d/dx mp_silu(x) = s (1 + x (1 - s)) / 0.596 with s = sigmoid(x)
AUGGEN_HD float mp_silu_grad(float x) {
  const float s = sigmoidf_(x);
  return s * (1.0f + x * (1.0f - s)) * kMpSiluScale;
}

// mp_sum(a, b, t) = lerp(a, b, t) / sqrt((1-t)^2 + t^2): coefficients (ca, cb).
AUGGEN_HD void mp_sum_coeffs(float t, float* ca, float* cb) {
  const float inv = 1.0f / sqrtf((1.0f - t) * (1.0f - t) + t * t);
  *ca = (1.0f - t) * inv;
  *cb = t * inv;
}

// clamp that keeps NaN (like torch.clamp): comparisons with NaN are false, so v passes through.
// Written as two selects of the form x86 maxps/minps implement (one instruction each).
AUGGEN_HD float clamp_keep_nan(float v, float clip) {
  const float lo = -clip > v ? -clip : v;
  return clip < lo ? clip : lo;
}

// d clamp(v)/dv as torch defines it: 1 inside [-clip, clip] (bounds included), else 0.
AUGGEN_HD float clamp_grad_mask(float v, float clip) {
  return (v >= -clip && v <= clip) ? 1.0f : 0.0f;
}

// pixel_norm scale: 1 / (eps + ||x|| / sqrt(C)) from the sum of squares over C elements.
AUGGEN_HD float pixel_norm_scale(float sumsq, int64_t c, float eps) {
  return 1.0f / (eps + sqrtf(sumsq / static_cast<float>(c)));
}

// Backward of y = x * s(x), s = 1 / (eps + r), r = ||x|| / sqrt(C):
//   dx = s g - s^2 x (g . x) / (C r)   (the second term is 0 at r = 0, as in torch).
// Returns the coefficient k of x, so that dx = s g - k x.
AUGGEN_HD float pixel_norm_grad_coeff(float sumsq, float dot, int64_t c, float eps) {
  const float r = sqrtf(sumsq / static_cast<float>(c));
  if (!(r > 0.0f)) return 0.0f;
  const float s = 1.0f / (eps + r);
  return s * s * dot / (static_cast<float>(c) * r);
}

}  // namespace auggen
