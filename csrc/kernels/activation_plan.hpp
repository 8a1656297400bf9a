// An activation's derivative of any order as the kernels evaluate it (plain
// arrays, see convolution_plan.hpp for why): per element i,
//   out[i] = (multiplier[i] * (A(base[i]) + x[i] * B(base[i])) + addend[i]) * factor[i],
// where A and B are polynomials, base is the activation's transcendental part
// (sigmoid(x), made by the kernel itself when sigmoid_base; else tanh(x), ...
// read from memory), multiplier, addend and factor may be absent, and
// elements with x > threshold (softplus's linear range) take above_threshold
// before the factor.

#pragma once

#include <cstdint>

namespace mlipkit {
namespace activation {

template <typename T>
struct Terms {
  const T* a;  // A's coefficients, constant term first
  int64_t a_size;
  const T* b;  // B's coefficients
  int64_t b_size;
  bool sigmoid_base;  // base = sigmoid(x), computed in the kernel
  bool has_threshold;
  T threshold;
  T above_threshold;
};

template <typename T>
struct Operands {
  const T* x;
  const T* base;  // unused when sigmoid_base
  const T* multiplier;  // nullptr: 1
  const T* addend;      // nullptr: 0
  const T* factor;      // nullptr: 1
  T* out;
};

// Kernels of one instruction set, in namespaces baseline / avx2 / avx512: elements [begin, end).
#define MLIPKIT_DECLARE_ACTIVATION_KERNELS(NS)                                                         \
  namespace NS {                                                                                      \
  void evaluate(const Terms<float>& terms, const Operands<float>& operands, int64_t begin, int64_t end); \
  void evaluate(const Terms<double>& terms, const Operands<double>& operands, int64_t begin,           \
                int64_t end);                                                                         \
  }

MLIPKIT_DECLARE_ACTIVATION_KERNELS(baseline)
MLIPKIT_DECLARE_ACTIVATION_KERNELS(avx2)
MLIPKIT_DECLARE_ACTIVATION_KERNELS(avx512)

}  // namespace activation
}  // namespace mlipkit
