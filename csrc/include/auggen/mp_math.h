// Scalar math of EDM2's magnitude-preserving ops, shared by the CPU (g++) and
// CUDA (nvcc) kernels so the CPU tests cover the exact same formulas.
#pragma once
#include <cmath>

#if defined(__CUDACC__)
#define AUGGEN_HD __host__ __device__ __forceinline__
#else
#define AUGGEN_HD inline
#endif

namespace auggen {

// 1 / 0.596: EDM2's mp_silu rescales silu to unit magnitude for unit-variance input.
constexpr float kMpSiluScale = 1.0f / 0.596f;

AUGGEN_HD float sigmoidf_(float x) { return 1.0f / (1.0f + expf(-x)); }

// mp_silu(x) = x * sigmoid(x) / 0.596
AUGGEN_HD float mp_silu_fwd(float x) { return x * sigmoidf_(x) * kMpSiluScale; }

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

// pixel_norm scale: 1 / (eps + ||x|| / sqrt(C)) from the sum of squares over C elements.
AUGGEN_HD float pixel_norm_scale(float sumsq, int c, float eps) {
  return 1.0f / (eps + sqrtf(sumsq / static_cast<float>(c)));
}

}  // namespace auggen
