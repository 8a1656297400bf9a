// segment_outer_sum's kernels for one instruction set (see segment_outer_plan.hpp): channels in vector
// registers, each output row written by one thread in a fixed order.

#include <cstring>
#include <vector>

#include "lanes.hpp"
#include "segment_outer_plan.hpp"

namespace mlipkit {
namespace segment_outer {
namespace MLIPKIT_ISA {
namespace {

using mlipkit::MLIPKIT_ISA::kLanes;
using mlipkit::MLIPKIT_ISA::Lanes;

// Vectors per block of outputs, kept in registers while the sum over k runs.
constexpr int64_t kBlock = 4;

// M vectors of dst at i: sum_k coefficient[k] matrix[k * stride + i + ...], even and odd k in separate registers
// (two chains of dependent multiply-adds instead of one, added at the end: a fixed order).
template <typename T, int64_t M>
inline void combine_block(const T* coefficient, const T* matrix, int64_t stride, int64_t K, int64_t i, T* dst,
                          bool accumulate) {
  using V = Lanes<T, kLanes<T>>;
  constexpr int64_t L = kLanes<T>;
  typename V::type even[M], odd[M];
  for (int64_t j = 0; j < M; ++j) {
    even[j] = accumulate ? V::load(dst + i + j * L) : typename V::type{};
    odd[j] = typename V::type{};
  }
  int64_t k = 0;
  for (; k + 1 < K; k += 2) {
    const T w0 = coefficient[k], w1 = coefficient[k + 1];
    const T* row0 = matrix + k * stride + i;
    const T* row1 = row0 + stride;
    for (int64_t j = 0; j < M; ++j) {
      even[j] += w0 * V::load(row0 + j * L);
      odd[j] += w1 * V::load(row1 + j * L);
    }
  }
  if (k < K) {
    for (int64_t j = 0; j < M; ++j) even[j] += coefficient[k] * V::load(matrix + k * stride + i + j * L);
  }
  for (int64_t j = 0; j < M; ++j) V::store(dst + i + j * L, even[j] + odd[j]);
}

// dst[0, n) = (accumulate ? dst : 0) + sum_k coefficient[k] matrix[k * stride + (0, n)].
template <typename T>
inline void combine(const T* coefficient, const T* matrix, int64_t stride, int64_t K, int64_t n, T* dst, bool accumulate) {
  constexpr int64_t L = kLanes<T>;
  int64_t i = 0;
  for (; i + kBlock * L <= n; i += kBlock * L) combine_block<T, kBlock>(coefficient, matrix, stride, K, i, dst, accumulate);
  switch ((n - i) / L) {
    case 3:
      combine_block<T, 3>(coefficient, matrix, stride, K, i, dst, accumulate);
      break;
    case 2:
      combine_block<T, 2>(coefficient, matrix, stride, K, i, dst, accumulate);
      break;
    case 1:
      combine_block<T, 1>(coefficient, matrix, stride, K, i, dst, accumulate);
      break;
    default:
      break;
  }
  for (i += (n - i) / L * L; i < n; ++i) {
    T acc = accumulate ? dst[i] : T(0);
    for (int64_t k = 0; k < K; ++k) acc += coefficient[k] * matrix[k * stride + i];
    dst[i] = acc;
  }
}

// out[o, s, :] = sum over the rows t of o of basis[t, s] features[source[t], :], in registers per block of channels.
template <typename T>
void outer_sum_impl(const T* basis, const T* features, const int64_t* source, const int64_t* target_ptr, int64_t S,
                    int64_t C, int64_t begin, int64_t end, T* out) {
  using V = Lanes<T, kLanes<T>>;
  constexpr int64_t L = kLanes<T>;
  for (int64_t o = begin; o < end; ++o) {
    const int64_t first = target_ptr[o], last = target_ptr[o + 1];
    for (int64_t s = 0; s < S; ++s) {
      T* dst = out + (o * S + s) * C;
      int64_t c = 0;
      for (; c + kBlock * L <= C; c += kBlock * L) {
        typename V::type acc[kBlock] = {};
        for (int64_t t = first; t < last; ++t) {
          const T weight = basis[t * S + s];
          const T* row = features + source[t] * C + c;
          for (int64_t j = 0; j < kBlock; ++j) acc[j] += weight * V::load(row + j * L);
        }
        for (int64_t j = 0; j < kBlock; ++j) V::store(dst + c + j * L, acc[j]);
      }
      for (; c + L <= C; c += L) {
        typename V::type acc = {};
        for (int64_t t = first; t < last; ++t) acc += basis[t * S + s] * V::load(features + source[t] * C + c);
        V::store(dst + c, acc);
      }
      for (; c < C; ++c) {
        T acc = 0;
        for (int64_t t = first; t < last; ++t) acc += basis[t * S + s] * features[source[t] * C + c];
        dst[c] = acc;
      }
    }
  }
}

// Per target o: its block transposed once into `scratch` ([C, S] with rows padded by zeros to whole vectors),
// then out[t, :] = sum_c features[source[t], c] block^T[c, :] for each of its rows, vectors over S.
template <typename T>
void basis_grad_impl(const T* grad, const T* features, const int64_t* source, const int64_t* target_ptr, int64_t S,
                     int64_t C, int64_t begin, int64_t end, T* out) {
  constexpr int64_t L = kLanes<T>;
  const int64_t padded = (S + L - 1) / L * L;
  std::vector<T> scratch(static_cast<size_t>(padded * C), T(0)), row_out(static_cast<size_t>(padded));
  for (int64_t o = begin; o < end; ++o) {
    if (target_ptr[o] == target_ptr[o + 1]) continue;
    const T* block = grad + o * S * C;
    for (int64_t s = 0; s < S; ++s) {
      for (int64_t c = 0; c < C; ++c) scratch[static_cast<size_t>(c * padded + s)] = block[s * C + c];
    }
    for (int64_t t = target_ptr[o]; t < target_ptr[o + 1]; ++t) {
      combine(features + source[t] * C, scratch.data(), padded, C, padded, row_out.data(), false);
      std::memcpy(out + t * S, row_out.data(), sizeof(T) * S);
    }
  }
}

// out[n, :] = sum over the rows t of source n (in row order) of sum_s basis[t, s] grad[target[t], s, :].
template <typename T>
void features_grad_impl(const T* basis, const T* grad, const int64_t* target, const int64_t* source_ptr,
                        const int64_t* source_rows, int64_t S, int64_t C, int64_t begin, int64_t end, T* out) {
  for (int64_t n = begin; n < end; ++n) {
    T* dst = out + n * C;
    std::memset(dst, 0, sizeof(T) * C);
    for (int64_t k = source_ptr[n]; k < source_ptr[n + 1]; ++k) {
      const int64_t t = source_rows[k];
      combine(basis + t * S, grad + target[t] * S * C, C, S, C, dst, true);
    }
  }
}

}  // namespace

#define MLIPKIT_DEFINE_SEGMENT_OUTER_KERNELS(T)                                                                      \
  void outer_sum(const T* basis, const T* features, const int64_t* source, const int64_t* target_ptr, int64_t S,     \
                 int64_t C, int64_t begin, int64_t end, T* out) {                                                     \
    outer_sum_impl(basis, features, source, target_ptr, S, C, begin, end, out);                                      \
  }                                                                                                                  \
  void basis_grad(const T* grad, const T* features, const int64_t* source, const int64_t* target_ptr, int64_t S,     \
                  int64_t C, int64_t begin, int64_t end, T* out) {                                                    \
    basis_grad_impl(grad, features, source, target_ptr, S, C, begin, end, out);                                      \
  }                                                                                                                  \
  void features_grad(const T* basis, const T* grad, const int64_t* target, const int64_t* source_ptr,                 \
                     const int64_t* source_rows, int64_t S, int64_t C, int64_t begin, int64_t end, T* out) {          \
    features_grad_impl(basis, grad, target, source_ptr, source_rows, S, C, begin, end, out);                         \
  }

MLIPKIT_DEFINE_SEGMENT_OUTER_KERNELS(float)
MLIPKIT_DEFINE_SEGMENT_OUTER_KERNELS(double)

}  // namespace MLIPKIT_ISA
}  // namespace segment_outer
}  // namespace mlipkit
