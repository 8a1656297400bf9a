// The activation-derivative kernel (activation_plan.hpp), compiled once per
// instruction set: one pass over the elements, a register of them at a time.
// The sigmoid is made here (one exp per element) rather than read from a
// tensor ATen wrote, which would double the memory traffic.

#include <cmath>
#include <cstdint>

#include "activation_plan.hpp"
#include "lanes.hpp"

namespace mlipkit {
namespace activation {
namespace MLIPKIT_ISA {
namespace {

using mlipkit::MLIPKIT_ISA::kLanes;
using mlipkit::MLIPKIT_ISA::Lanes;
using mlipkit::MLIPKIT_ISA::Vector;

// exp(x) = 2^n e^r, n = round(x / ln 2), |r| <= ln(2) / 2: Cody-Waite reduction (ln 2 in two parts), the Taylor
// series of e^r (error below half an ulp), 2^n from the exponent bits. x is clamped to where 2^n is normal.
template <typename T>
struct ExpConstants;

template <>
struct ExpConstants<double> {
  using Bits = int64_t;
  static constexpr double lowest = -708.0, highest = 709.0;
  static constexpr double ln2_high = 0.693147180369123816490, ln2_low = 1.90821492927058770002e-10;
  static constexpr double round_magic = 6755399441055744.0;  // 1.5 * 2^52: adding it rounds to an integer
  static constexpr int64_t exponent_bias = 1023, mantissa_bits = 52, taylor_degree = 13;
};

template <>
struct ExpConstants<float> {
  using Bits = int32_t;
  static constexpr float lowest = -87.0f, highest = 88.0f;
  static constexpr float ln2_high = 0.693359375f, ln2_low = -2.12194440e-4f;
  static constexpr float round_magic = 12582912.0f;  // 1.5 * 2^23
  static constexpr int32_t exponent_bias = 127, mantissa_bits = 23, taylor_degree = 7;
};

template <typename T>
inline Vector<T> vector_exp(Vector<T> x) {
  using C = ExpConstants<T>;
  using Bits = Vector<typename C::Bits>;
  x = x < C::lowest ? Vector<T>{} + C::lowest : x;
  x = x > C::highest ? Vector<T>{} + C::highest : x;
  const Vector<T> n = (x * T(1.44269504088896340736) + C::round_magic) - C::round_magic;
  const Vector<T> r = (x - n * C::ln2_high) - n * C::ln2_low;
  // sum_k r^k / k! by Horner, innermost term first
  double inverse_factorial = 1.0;
  for (int64_t k = 2; k <= C::taylor_degree; ++k) inverse_factorial /= static_cast<double>(k);
  Vector<T> series = Vector<T>{} + static_cast<T>(inverse_factorial);
  for (int64_t k = C::taylor_degree; k >= 1; --k) {
    inverse_factorial *= static_cast<double>(k);
    series = series * r + static_cast<T>(inverse_factorial);
  }
  const Bits exponent = (__builtin_convertvector(n, Bits) + C::exponent_bias) << C::mantissa_bits;
  // the same bits read as floats (GCC vector extensions: a cast between vectors of one size keeps the bits;
  // a reinterpret_cast of the reference would break strict aliasing)
  return series * (Vector<T>)exponent;
}

template <typename T, int64_t L>
inline typename Lanes<T, L>::type sigmoid_of(typename Lanes<T, L>::type x) {
  if constexpr (L == 1) {
    return T(1) / (T(1) + std::exp(-x));
  } else {
    return T(1) / (T(1) + vector_exp<T>(-x));
  }
}

template <typename T, typename V>
inline V polynomial(const T* coefficients, int64_t size, V u) {
  V sum = V{} + T(0);
  for (int64_t k = size; k-- > 0;) sum = sum * u + coefficients[k];
  return sum;
}

template <typename T, int64_t L>
inline void evaluate_at(const Terms<T>& t, const Operands<T>& o, int64_t i) {
  using V = Lanes<T, L>;
  using type = typename V::type;
  const type x = V::load(o.x + i);
  const type u = t.sigmoid_base ? sigmoid_of<T, L>(x) : V::load(o.base + i);
  type value = polynomial(t.a, t.a_size, u) + x * polynomial(t.b, t.b_size, u);
  if (o.multiplier != nullptr) value *= V::load(o.multiplier + i);
  if (o.addend != nullptr) value += V::load(o.addend + i);
  if (t.has_threshold) {
    const type above = type{} + t.above_threshold;
    value = x > t.threshold ? above : value;
  }
  if (o.factor != nullptr) value *= V::load(o.factor + i);
  V::store(o.out + i, value);
}

template <typename T>
void evaluate_range(const Terms<T>& terms, const Operands<T>& operands, int64_t begin, int64_t end) {
  constexpr int64_t B = kLanes<T>;
  int64_t i = begin;
  for (; i + B <= end; i += B) evaluate_at<T, B>(terms, operands, i);
  for (; i < end; ++i) evaluate_at<T, 1>(terms, operands, i);
}

}  // namespace

void evaluate(const Terms<float>& terms, const Operands<float>& operands, int64_t begin, int64_t end) {
  evaluate_range(terms, operands, begin, end);
}

void evaluate(const Terms<double>& terms, const Operands<double>& operands, int64_t begin, int64_t end) {
  evaluate_range(terms, operands, begin, end);
}

}  // namespace MLIPKIT_ISA
}  // namespace activation
}  // namespace mlipkit
