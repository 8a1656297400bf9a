// The kernels of mlipkit::segment_outer_sum and its two companions (csrc/ops/segment_outer.cpp), compiled
// once per instruction set (segment_outer_kernels.cpp). Channels are the vector lanes. Row-major operands:
// basis [T, S], features [N, C], grad [O, S, C]; `target_ptr[o] .. target_ptr[o + 1]` are the rows of
// target o, `source_rows[source_ptr[n] .. source_ptr[n + 1]]` those of source n in row order.

#pragma once

#include <cstdint>

namespace mlipkit {
namespace segment_outer {

#define MLIPKIT_DECLARE_SEGMENT_OUTER_KERNELS(NS, T)                                                              \
  namespace NS {                                                                                                 \
  /* out[o] for targets [begin, end) (overwritten) */                                                            \
  void outer_sum(const T* basis, const T* features, const int64_t* source, const int64_t* target_ptr, int64_t S, \
                 int64_t C, int64_t begin, int64_t end, T* out);                                                  \
  /* out[t] for the rows of targets [begin, end) (overwritten) */                                                \
  void basis_grad(const T* grad, const T* features, const int64_t* source, const int64_t* target_ptr, int64_t S, \
                  int64_t C, int64_t begin, int64_t end, T* out);                                                 \
  /* out[n] for sources [begin, end) (overwritten) */                                                            \
  void features_grad(const T* basis, const T* grad, const int64_t* target, const int64_t* source_ptr,             \
                     const int64_t* source_rows, int64_t S, int64_t C, int64_t begin, int64_t end, T* out);       \
  }

MLIPKIT_DECLARE_SEGMENT_OUTER_KERNELS(baseline, float)
MLIPKIT_DECLARE_SEGMENT_OUTER_KERNELS(baseline, double)
MLIPKIT_DECLARE_SEGMENT_OUTER_KERNELS(avx2, float)
MLIPKIT_DECLARE_SEGMENT_OUTER_KERNELS(avx2, double)
MLIPKIT_DECLARE_SEGMENT_OUTER_KERNELS(avx512, float)
MLIPKIT_DECLARE_SEGMENT_OUTER_KERNELS(avx512, double)

}  // namespace segment_outer
}  // namespace mlipkit
