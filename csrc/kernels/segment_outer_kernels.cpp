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

// Basis columns per register block of outer_sum (with two vectors of channels, 12 accumulators, which leaves
// AVX2's 16 registers room for the operands) and rows of targets per register block of basis_grad (with two
// vectors of basis columns, 8 accumulators; 6 rows x 2 vectors and 4 rows x 3 vectors measured no faster).
constexpr int64_t kOuterColumns = 6;
constexpr int64_t kGradRows = 4;

// out[o, s0 .. s0 + SB, c .. c + CB W] for the rows [first, last) of o: SB x CB accumulators stay in registers
// while the rows go by, so each features row is loaded once per SB basis columns (not once per column).
template <typename T, int64_t W, int64_t SB, int64_t CB>
inline void outer_sum_block(const T* basis, const T* features, const int64_t* source, int64_t first, int64_t last,
                            int64_t S, int64_t C, int64_t s0, int64_t c, T* dst) {
  using V = Lanes<T, W>;
  typename V::type acc[SB][CB] = {};
  for (int64_t t = first; t < last; ++t) {
    const T* row = features + source[t] * C + c;
    typename V::type f[CB];
    for (int64_t v = 0; v < CB; ++v) f[v] = V::load(row + v * W);
    const T* weights = basis + t * S + s0;
    for (int64_t j = 0; j < SB; ++j) {
      const T w = weights[j];
      for (int64_t v = 0; v < CB; ++v) acc[j][v] += w * f[v];
    }
  }
  for (int64_t j = 0; j < SB; ++j) {
    for (int64_t v = 0; v < CB; ++v) V::store(dst + (s0 + j) * C + c + v * W, acc[j][v]);
  }
}

// Every basis column of out[o] at channels c .. c + CB W: whole blocks of kOuterColumns, then the rest.
template <typename T, int64_t W, int64_t CB>
inline void outer_sum_columns(const T* basis, const T* features, const int64_t* source, int64_t first, int64_t last,
                              int64_t S, int64_t C, int64_t c, T* dst) {
  int64_t s0 = 0;
  for (; s0 + kOuterColumns <= S; s0 += kOuterColumns) {
    outer_sum_block<T, W, kOuterColumns, CB>(basis, features, source, first, last, S, C, s0, c, dst);
  }
  switch (S - s0) {
    case 5:
      return outer_sum_block<T, W, 5, CB>(basis, features, source, first, last, S, C, s0, c, dst);
    case 4:
      return outer_sum_block<T, W, 4, CB>(basis, features, source, first, last, S, C, s0, c, dst);
    case 3:
      return outer_sum_block<T, W, 3, CB>(basis, features, source, first, last, S, C, s0, c, dst);
    case 2:
      return outer_sum_block<T, W, 2, CB>(basis, features, source, first, last, S, C, s0, c, dst);
    case 1:
      return outer_sum_block<T, W, 1, CB>(basis, features, source, first, last, S, C, s0, c, dst);
    default:
      return;
  }
}

// dst[s, :] = sum over the n rows t (in row order) of basis[t, s] features[source[t], :]: one target's small
// matrix product basis^T features, in register blocks of two vectors of channels, then one, then single channels.
template <typename T>
void outer_sum_target(const T* basis, const T* features, const int64_t* source, int64_t n, int64_t S, int64_t C,
                      T* dst) {
  constexpr int64_t L = kLanes<T>;
  int64_t c = 0;
  for (; c + 2 * L <= C; c += 2 * L) outer_sum_columns<T, L, 2>(basis, features, source, 0, n, S, C, c, dst);
  for (; c + L <= C; c += L) outer_sum_columns<T, L, 1>(basis, features, source, 0, n, S, C, c, dst);
  for (; c < C; ++c) outer_sum_columns<T, 1, 1>(basis, features, source, 0, n, S, C, c, dst);
}

template <typename T>
void outer_sum_impl(const T* basis, const T* features, const int64_t* source, const int64_t* target_ptr, int64_t S,
                    int64_t C, int64_t begin, int64_t end, T* out) {
  for (int64_t o = begin; o < end; ++o) {
    const int64_t first = target_ptr[o], last = target_ptr[o + 1];
    outer_sum_target(basis + first * S, features, source + first, last - first, S, C, out + o * S * C);
  }
}

// rows_out[j, s0 .. s0 + VB L] = sum_c features[source[t + j], c] block^T[c, s0 ..] for TB rows t + j of one
// target: TB x VB accumulators in registers over c (``transposed``: [C, padded], rows padded to whole vectors).
template <typename T, int64_t TB, int64_t VB>
inline void basis_grad_block(const T* transposed, int64_t padded, const T* features, const int64_t* source,
                             int64_t t, int64_t C, int64_t s0, T* rows_out) {
  using V = Lanes<T, kLanes<T>>;
  constexpr int64_t L = kLanes<T>;
  typename V::type acc[TB][VB] = {};
  const T* rows[TB];
  for (int64_t j = 0; j < TB; ++j) rows[j] = features + source[t + j] * C;
  for (int64_t c = 0; c < C; ++c) {
    typename V::type column[VB];
    for (int64_t v = 0; v < VB; ++v) column[v] = V::load(transposed + c * padded + s0 + v * L);
    for (int64_t j = 0; j < TB; ++j) {
      const T w = rows[j][c];
      for (int64_t v = 0; v < VB; ++v) acc[j][v] += w * column[v];
    }
  }
  for (int64_t j = 0; j < TB; ++j) {
    for (int64_t v = 0; v < VB; ++v) V::store(rows_out + j * padded + s0 + v * L, acc[j][v]);
  }
}

// TB rows of one target, every vector of basis columns: blocks of two vectors, then the rest; rows t .. t + TB of
// dst (S wide) written.
template <typename T, int64_t TB>
inline void basis_grad_rows(const T* transposed, int64_t padded, const T* features, const int64_t* source, int64_t t,
                            int64_t S, int64_t C, T* rows_out, T* dst) {
  constexpr int64_t L = kLanes<T>;
  int64_t s0 = 0;
  for (; s0 + 2 * L <= padded; s0 += 2 * L) basis_grad_block<T, TB, 2>(transposed, padded, features, source, t, C, s0, rows_out);
  if (s0 < padded) basis_grad_block<T, TB, 1>(transposed, padded, features, source, t, C, s0, rows_out);
  for (int64_t j = 0; j < TB; ++j) std::memcpy(dst + (t + j) * S, rows_out + j * padded, sizeof(T) * S);
}

// Scratch of basis_grad for one thread: a target's block transposed ([C, S] with rows padded by zeros to whole
// vectors) and kGradRows result rows.
template <typename T>
struct BasisGradScratch {
  int64_t padded;
  std::vector<T> transposed, rows_out;
  BasisGradScratch(int64_t S, int64_t C)
      : padded((S + kLanes<T> - 1) / kLanes<T> * kLanes<T>),
        transposed(static_cast<size_t>(padded * C), T(0)),
        rows_out(static_cast<size_t>(kGradRows * padded)) {}
};

// dst[t, :] = block features[source[t], :] for one target's n rows (block: its [S, C] grad), kGradRows at a time:
// a small matrix product with the block's columns in registers.
template <typename T>
void basis_grad_target(const T* block, const T* features, const int64_t* source, int64_t n, int64_t S, int64_t C,
                       BasisGradScratch<T>& scratch, T* dst) {
  const int64_t padded = scratch.padded;
  T* transposed = scratch.transposed.data();
  T* rows_out = scratch.rows_out.data();
  for (int64_t s = 0; s < S; ++s) {
    for (int64_t c = 0; c < C; ++c) transposed[c * padded + s] = block[s * C + c];
  }
  int64_t t = 0;
  for (; t + kGradRows <= n; t += kGradRows) {
    basis_grad_rows<T, kGradRows>(transposed, padded, features, source, t, S, C, rows_out, dst);
  }
  switch (n - t) {
    case 3:
      return basis_grad_rows<T, 3>(transposed, padded, features, source, t, S, C, rows_out, dst);
    case 2:
      return basis_grad_rows<T, 2>(transposed, padded, features, source, t, S, C, rows_out, dst);
    case 1:
      return basis_grad_rows<T, 1>(transposed, padded, features, source, t, S, C, rows_out, dst);
    default:
      return;
  }
}

template <typename T>
void basis_grad_impl(const T* grad, const T* features, const int64_t* source, const int64_t* target_ptr, int64_t S,
                     int64_t C, int64_t begin, int64_t end, T* out) {
  BasisGradScratch<T> scratch(S, C);
  for (int64_t o = begin; o < end; ++o) {
    const int64_t first = target_ptr[o], n = target_ptr[o + 1] - first;
    if (n > 0) basis_grad_target(grad + o * S * C, features, source + first, n, S, C, scratch, out + first * S);
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
