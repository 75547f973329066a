// modulated_mp_silu: out = mp_silu(y * c) with c per (n, channel), forward and backward.
// y is viewed as (N, S1, C, S2) with c[n * C + ch]; NCHW gives S1 = 1, NHWC gives S2 = 1.
// The backward writes dy and reduces dc = sum over space of dz * y in the same pass.
#include "auggen/cpu_kernels.h"
#include "auggen/half.h"
#include "parallel.h"

namespace auggen {
namespace AUGGEN_CPU_NS {
namespace {

constexpr int64_t kChanBlock = 64;

template <typename T>
void fwd_t(const T* y_, const T* c_, T* out_, int64_t N, int64_t S1, int64_t C, int64_t S2) {
  if (S2 > 1) {  // rows of S2 contiguous elements share one c value
    parallel_chunks(N * S1 * C, kGrain / S2 + 1, [&](int64_t b, int64_t e) {
      const T* __restrict y = y_;
      const T* __restrict c = c_;
      T* __restrict out = out_;
      for (int64_t r = b; r < e; ++r) {
        const float cv = to_float(c[(r / (S1 * C)) * C + r % C]);
        const T* yr = y + r * S2;
        T* orow = out + r * S2;
#pragma omp simd
        for (int64_t i = 0; i < S2; ++i) orow[i] = from_float<T>(mp_silu_value(to_float(yr[i]) * cv));
      }
    });
  } else {  // rows of C contiguous channels
    parallel_chunks(N * S1, kGrain / C + 1, [&](int64_t b, int64_t e) {
      const T* __restrict y = y_;
      const T* __restrict c = c_;
      T* __restrict out = out_;
      for (int64_t r = b; r < e; ++r) {
        const T* cr = c + (r / S1) * C;
        const T* yr = y + r * C;
        T* orow = out + r * C;
#pragma omp simd
        for (int64_t k = 0; k < C; ++k)
          orow[k] = from_float<T>(mp_silu_value(to_float(yr[k]) * to_float(cr[k])));
      }
    });
  }
}

template <typename T>
void bwd_t(const T* g_, const T* y_, const T* c_, T* gy_, T* gc_, int64_t N, int64_t S1, int64_t C,
           int64_t S2) {
  if (S2 > 1) {  // one task per (n, ch): loop over S1 rows of S2 contiguous elements
    parallel_chunks(N * C, kGrain / (S1 * S2) + 1, [&](int64_t b, int64_t e) {
      const T* __restrict g = g_;
      const T* __restrict y = y_;
      const T* __restrict c = c_;
      T* __restrict gy = gy_;
      T* __restrict gc = gc_;
      for (int64_t nc = b; nc < e; ++nc) {
        const int64_t n = nc / C, ch = nc % C;
        const float cv = to_float(c[nc]);
        float acc = 0.0f;
        for (int64_t s1 = 0; s1 < S1; ++s1) {
          const int64_t off = ((n * S1 + s1) * C + ch) * S2;
#pragma omp simd reduction(+ : acc)
          for (int64_t i = 0; i < S2; ++i) {
            const float yv = to_float(y[off + i]);
            const float gz = to_float(g[off + i]) * mp_silu_grad(yv * cv);
            gy[off + i] = from_float<T>(gz * cv);
            acc += gz * yv;
          }
        }
        gc[nc] = from_float<T>(acc);
      }
    });
  } else {  // one task per (n, block of channels): loop over S1 rows, accumulate per channel
    const int64_t blocks = (C + kChanBlock - 1) / kChanBlock;
    parallel_chunks(N * blocks, 1, [&](int64_t b, int64_t e) {
      const T* __restrict g = g_;
      const T* __restrict y = y_;
      const T* __restrict c = c_;
      T* __restrict gy = gy_;
      T* __restrict gc = gc_;
      float acc[kChanBlock], cv[kChanBlock];
      for (int64_t task = b; task < e; ++task) {
        const int64_t n = task / blocks, c0 = (task % blocks) * kChanBlock;
        const int64_t w = std::min(kChanBlock, C - c0);
        for (int64_t k = 0; k < w; ++k) {
          acc[k] = 0.0f;
          cv[k] = to_float(c[n * C + c0 + k]);
        }
        for (int64_t s1 = 0; s1 < S1; ++s1) {
          const int64_t off = (n * S1 + s1) * C + c0;
#pragma omp simd
          for (int64_t k = 0; k < w; ++k) {
            const float yv = to_float(y[off + k]);
            const float gz = to_float(g[off + k]) * mp_silu_grad(yv * cv[k]);
            gy[off + k] = from_float<T>(gz * cv[k]);
            acc[k] += gz * yv;
          }
        }
        for (int64_t k = 0; k < w; ++k) gc[n * C + c0 + k] = from_float<T>(acc[k]);
      }
    });
  }
}

}  // namespace

void modulated_mp_silu_fwd(int dtype, const void* y, const void* c, void* out, int64_t n,
                           int64_t s1, int64_t ch, int64_t s2) {
  AUGGEN_DISPATCH_DTYPE(dtype, fwd_t(static_cast<const scalar_t*>(y),
                                     static_cast<const scalar_t*>(c),
                                     static_cast<scalar_t*>(out), n, s1, ch, s2));
}

void modulated_mp_silu_bwd(int dtype, const void* g, const void* y, const void* c, void* gy,
                           void* gc, int64_t n, int64_t s1, int64_t ch, int64_t s2) {
  AUGGEN_DISPATCH_DTYPE(
      dtype, bwd_t(static_cast<const scalar_t*>(g), static_cast<const scalar_t*>(y),
                   static_cast<const scalar_t*>(c), static_cast<scalar_t*>(gy),
                   static_cast<scalar_t*>(gc), n, s1, ch, s2));
}

}  // namespace AUGGEN_CPU_NS
}  // namespace auggen
