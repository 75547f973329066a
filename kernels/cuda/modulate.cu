// CUDA kernels: modulated_mp_silu = mp_silu(y * c), forward and backward, on the
// (N, S1, C, S2) view with c[n * C + ch]; auggen.ops only produces S1 == 1 (NCHW: rows of S2
// contiguous pixels share one c) or S2 == 1 (NHWC: rows of C contiguous channels read a row
// of c). Both are "rows of len contiguous elements": row r reads c[(r / per_n) * c_row + j *
// c_step] for its element j, so there is one integer division per row, none per element.
// Backward writes dy and reduces dc without atomics:
//   NCHW: one warp per (n, ch) over its S2 pixels, shuffle reduction;
//   NHWC: one block per (n, 32 channels): lanes on adjacent channels, 8 warps split the S1
//         pixels, shared-memory reduction.
#include "common.cuh"

namespace auggen {
namespace cuda {
namespace {

constexpr int kWarps = kThreads / 32;
constexpr int kUnroll = 4;

// One warp per row of `len` elements, packs of 4 when aligned (len % 4 == 0 and pointers).
template <typename T, bool AL>
__global__ void __launch_bounds__(kThreads)
    fwd_rows_k(const T* __restrict__ y, const T* __restrict__ c, T* __restrict__ o,
               int64_t rows, int64_t len, int64_t per_n, int64_t c_row, int64_t c_step) {
  const int64_t r = static_cast<int64_t>(blockIdx.x) * kWarps + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (r >= rows) return;
  const T* yr = y + r * len;
  T* orow = o + r * len;
  const T* cr = c + (r / per_n) * c_row;
  for (int64_t j = static_cast<int64_t>(lane) * kVec; j < len; j += 32 * kVec) {
    float v[kVec];
    load4<AL>(yr, j, len, v);
#pragma unroll
    for (int k = 0; k < kVec; ++k) {
      const int64_t jj = j + k < len ? j + k : j;  // past the end: any valid c, not stored
      v[k] = mp_silu_value(v[k] * to_float(cr[jj * c_step]));
    }
    store4<AL>(orow, j, len, v);
  }
}

template <typename T>
__device__ __forceinline__ float bwd_one(const T* __restrict__ g, const T* __restrict__ y,
                                         T* __restrict__ gy, int64_t k, float cv) {
  const float yv = to_float(y[k]);
  const float gz = to_float(g[k]) * mp_silu_grad(yv * cv);
  gy[k] = from_float<T>(gz * cv);
  return gz * yv;
}

// NCHW (S1 == 1): warp per (n, ch) row nc of S2 contiguous pixels.
template <typename T>
__global__ void __launch_bounds__(kThreads)
    bwd_nchw_k(const T* __restrict__ g, const T* __restrict__ y, const T* __restrict__ c,
               T* __restrict__ gy, T* __restrict__ gc, int64_t rows, int64_t S2) {
  const int64_t nc = static_cast<int64_t>(blockIdx.x) * kWarps + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (nc >= rows) return;
  const float cv = to_float(c[nc]);
  const int64_t base = nc * S2;
  float acc = 0.0f;
#pragma unroll kUnroll
  for (int64_t s = lane; s < S2; s += 32) acc += bwd_one(g, y, gy, base + s, cv);
  acc = warp_sum(acc);
  if (lane == 0) gc[nc] = from_float<T>(acc);
}

// NHWC (S2 == 1): block per (n, tile of 32 channels); blockIdx.x = n * tiles + tile.
template <typename T>
__global__ void __launch_bounds__(kThreads)
    bwd_nhwc_k(const T* __restrict__ g, const T* __restrict__ y, const T* __restrict__ c,
               T* __restrict__ gy, T* __restrict__ gc, int64_t S1, int64_t C, int64_t tiles) {
  __shared__ float part[kWarps][33];
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const int64_t n = blockIdx.x / tiles;
  const int64_t ch = (blockIdx.x % tiles) * 32 + lane;
  const bool ok = ch < C;
  float acc = 0.0f;
  if (ok) {
    const float cv = to_float(c[n * C + ch]);
    const int64_t base = n * S1 * C + ch;
#pragma unroll kUnroll
    for (int64_t s1 = warp; s1 < S1; s1 += kWarps) acc += bwd_one(g, y, gy, base + s1 * C, cv);
  }
  part[warp][lane] = acc;
  __syncthreads();
  if (warp == 0 && ok) {
    float t = 0.0f;
#pragma unroll
    for (int w = 0; w < kWarps; ++w) t += part[w][lane];
    gc[n * C + ch] = from_float<T>(t);
  }
}

}  // namespace

int modulated_mp_silu_fwd(int dt, ptr_t y, ptr_t c, ptr_t o, int64_t n, int64_t s1, int64_t ch,
                          int64_t s2, ptr_t stream) {
  if (s1 != 1 && s2 != 1) return static_cast<int>(cudaErrorInvalidValue);
  // NCHW: rows (n, ch) of s2 pixels, c[row]; NHWC: rows (n, s1) of ch channels, c[n * ch + j].
  const bool nchw = s1 == 1;
  const int64_t rows = nchw ? n * ch : n * s1, len = nchw ? s2 : ch;
  const int64_t per_n = nchw ? 1 : s1, c_row = nchw ? 1 : ch, c_step = nchw ? 0 : 1;
  AUGGEN_CUDA_DISPATCH(dt, stream, {
    const unsigned grid = blocks_for(rows, kWarps);
    if (len % kVec == 0 && packs_aligned<scalar_t>({y, o}))
      fwd_rows_k<scalar_t, true><<<grid, kThreads, 0, as_stream(stream)>>>(
          in<scalar_t>(y), in<scalar_t>(c), out<scalar_t>(o), rows, len, per_n, c_row, c_step);
    else
      fwd_rows_k<scalar_t, false><<<grid, kThreads, 0, as_stream(stream)>>>(
          in<scalar_t>(y), in<scalar_t>(c), out<scalar_t>(o), rows, len, per_n, c_row, c_step);
  });
}

int modulated_mp_silu_bwd(int dt, ptr_t g, ptr_t y, ptr_t c, ptr_t gy, ptr_t gc, int64_t n,
                          int64_t s1, int64_t ch, int64_t s2, ptr_t stream) {
  if (s1 != 1 && s2 != 1) return static_cast<int>(cudaErrorInvalidValue);
  const int64_t tiles = (ch + 31) / 32;
  AUGGEN_CUDA_DISPATCH(dt, stream, {
    if (s1 == 1)
      bwd_nchw_k<scalar_t><<<blocks_for(n * ch, kWarps), kThreads, 0, as_stream(stream)>>>(
          in<scalar_t>(g), in<scalar_t>(y), in<scalar_t>(c), out<scalar_t>(gy),
          out<scalar_t>(gc), n * ch, s2);
    else
      bwd_nhwc_k<scalar_t><<<blocks_for(n * tiles, 1), kThreads, 0, as_stream(stream)>>>(
          in<scalar_t>(g), in<scalar_t>(y), in<scalar_t>(c), out<scalar_t>(gy),
          out<scalar_t>(gc), s1, ch, tiles);
  });
}

}  // namespace cuda
}  // namespace auggen
