// Chunked OpenMP parallel-for used by the CPU kernels (serial when one chunk suffices).
#pragma once
#include <algorithm>
#include <cstdint>

#ifndef AUGGEN_CPU_NS
#error "compile the kernel sources with -DAUGGEN_CPU_NS=<namespace>"
#endif

namespace auggen {

// fn(begin, end) over [0, n) in chunks of `grain` items.
template <typename F>
inline void parallel_chunks(int64_t n, int64_t grain, F&& fn) {
  grain = std::max<int64_t>(grain, 1);
  const int64_t chunks = (n + grain - 1) / grain;
#pragma omp parallel for schedule(static) if (chunks > 1)
  for (int64_t k = 0; k < chunks; ++k) fn(k * grain, std::min(n, (k + 1) * grain));
}

// Elements handled per task: large enough to amortise the OpenMP fork, small enough to balance.
constexpr int64_t kGrain = 16384;

}  // namespace auggen
