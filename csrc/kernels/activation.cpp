// mlipkit::activation_derivative: an activation's derivative of any order, times a
// scale and a factor, in one pass over the elements:
//
//   activation_derivative(x, activation str, order int, scale float, factor Tensor?)
//     = scale * f^(order)(x) * factor
//
// for torch.nn.functional's silu (swish), tanh, sigmoid, softplus (beta 1,
// threshold 20), gelu (erf) and relu. The op's derivative is the op again
// (order + 1 for x, the same order for the factor), so a radial MLP's force
// training (activation, its derivative under create_graph, then that one's
// derivative) runs a few element passes per hidden layer where autograd's own
// formulas run dozens. The transcendental part is the sigmoid (made by the
// kernel), tanh or the normal density (from ATen); the rest is a polynomial in
// it (the sigmoid's derivatives are polynomials in the sigmoid, tanh's in tanh,
// the normal density's are Hermite polynomials times the density).

#include "activation.hpp"

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/autograd.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "activation_plan.hpp"
#include "isa.hpp"
#include "../ops/schemas.hpp"

namespace mlipkit {
namespace activation {
namespace {

constexpr const char* kOp = "mlipkit::activation_derivative";
// Orders beyond this would only come from differentiating a model more than seven times.
constexpr int64_t kMaxOrder = 8;
constexpr int64_t kGrain = 16384;
constexpr int64_t kAlignment = 64;  // elements; a multiple of every instruction set's lanes

enum class Activation { silu, tanh, sigmoid, softplus, gelu, relu };

Activation parse(const char* op, c10::string_view name) {
  if (name == "silu" || name == "swish") return Activation::silu;
  if (name == "tanh") return Activation::tanh;
  if (name == "sigmoid") return Activation::sigmoid;
  if (name == "softplus") return Activation::softplus;
  if (name == "gelu") return Activation::gelu;
  if (name == "relu") return Activation::relu;
  TORCH_CHECK(false, op, ": unknown activation '", std::string(name),
              "'; known: gelu, relu, sigmoid, silu, softplus, swish, tanh");
}

using Polynomial = std::vector<double>;  // coefficients, constant term first

Polynomial derivative_of(const Polynomial& p) {
  Polynomial d;
  for (size_t k = 1; k < p.size(); ++k) d.push_back(static_cast<double>(k) * p[k]);
  return d;
}

Polynomial product(const Polynomial& p, const Polynomial& q) {
  if (p.empty() || q.empty()) return {};
  Polynomial r(p.size() + q.size() - 1, 0.0);
  for (size_t i = 0; i < p.size(); ++i)
    for (size_t j = 0; j < q.size(); ++j) r[i + j] += p[i] * q[j];
  return r;
}

Polynomial scaled(Polynomial p, double factor) {
  for (double& c : p) c *= factor;
  return p;
}

// The order-th derivative of a function u whose derivative is chain(u), as a polynomial in u
// (sigmoid: chain = u - u^2; tanh: chain = 1 - u^2).
Polynomial chain_derivative(int64_t order, const Polynomial& chain) {
  Polynomial p{0.0, 1.0};
  for (int64_t k = 0; k < order; ++k) p = product(derivative_of(p), chain);
  return p;
}

const Polynomial kSigmoidChain{0.0, 1.0, -1.0};
const Polynomial kTanhChain{1.0, 0.0, -1.0};

// Probabilists' Hermite polynomial He_n in x: the normal density's n-th derivative is (-1)^n He_n(x) phi(x).
Polynomial hermite(int64_t n) {
  Polynomial previous{1.0}, current{0.0, 1.0};
  if (n == 0) return previous;
  for (int64_t k = 1; k < n; ++k) {
    Polynomial next = product(current, {0.0, 1.0});
    for (size_t i = 0; i < previous.size(); ++i) next[i] -= static_cast<double>(k) * previous[i];
    previous = current;
    current = next;
  }
  return current;
}

// What the kernel evaluates for one activation and order: value = multiplier * (A(base) + x B(base)) + addend.
struct Formula {
  bool sigmoid_base = false;            // the kernel makes base = sigmoid(x)
  at::Tensor base, multiplier, addend;  // undefined when absent
  Polynomial a, b;
  bool has_threshold = false, threshold_inclusive = false;  // x > 20, or x >= 20
  double above_threshold = 0.0;
};

Formula formula(Activation activation, const at::Tensor& x, int64_t order) {
  const Polynomial identity{0.0, 1.0};
  Formula f;
  switch (activation) {
    case Activation::sigmoid:
      f.sigmoid_base = true;
      f.a = chain_derivative(order, kSigmoidChain);
      break;
    case Activation::silu:  // (x s)^(n) = x s^(n) + n s^(n-1)
      f.sigmoid_base = true;
      f.b = chain_derivative(order, kSigmoidChain);
      if (order > 0) f.a = scaled(chain_derivative(order - 1, kSigmoidChain), static_cast<double>(order));
      break;
    case Activation::softplus:  // softplus' = sigmoid; above the threshold softplus(x) = x
      if (order == 0) {
        f.base = at::softplus(x, 1, 20);
        f.a = identity;
        break;
      }
      f.sigmoid_base = true;
      f.a = chain_derivative(order - 1, kSigmoidChain);
      // as torch's formulas: the first derivative is 1 above 20, higher ones are 0 from 20 on
      f.has_threshold = true;
      f.threshold_inclusive = order > 1;
      f.above_threshold = order == 1 ? 1.0 : 0.0;
      break;
    case Activation::tanh:
      f.base = at::tanh(x);
      f.a = chain_derivative(order, kTanhChain);
      break;
    case Activation::gelu: {  // (x Phi)' = Phi + x phi; (x Phi)^(n) = x phi^(n-1) + n phi^(n-2) for n >= 2
      if (order == 0) {
        f.base = at::gelu(x);
        f.a = identity;
        break;
      }
      f.base = x;
      f.multiplier = at::exp(x * x * -0.5) * 0.39894228040143267794;
      if (order == 1) {
        f.b = {1.0};
        f.addend = (at::erf(x * 0.70710678118654752440) + 1.0) * 0.5;
        break;
      }
      const double sign = order % 2 == 0 ? 1.0 : -1.0;  // (-1)^(n-2) = (-1)^n
      f.a = scaled(hermite(order - 2), sign * static_cast<double>(order));
      f.b = scaled(hermite(order - 1), -sign);
      break;
    }
    case Activation::relu:
      f.base = order == 0 ? at::relu(x) : order == 1 ? (x > 0).to(x.scalar_type()) : x;
      if (order <= 1) f.a = identity;
      break;
  }
  return f;
}

template <typename T>
void run_evaluate(const Terms<T>& terms, const Operands<T>& operands, int64_t begin, int64_t end) {
  switch (active_isa()) {
#if defined(MLIPKIT_X86_KERNELS)
    case Isa::avx512:
      return avx512::evaluate(terms, operands, begin, end);
    case Isa::avx2:
      return avx2::evaluate(terms, operands, begin, end);
#endif
    default:
      return baseline::evaluate(terms, operands, begin, end);
  }
}

void check_operands(const at::Tensor& x, int64_t order, const std::optional<at::Tensor>& factor) {
  TORCH_CHECK(x.scalar_type() == at::kFloat || x.scalar_type() == at::kDouble, kOp,
              ": x must be float32 or float64, got ", x.scalar_type());
  TORCH_CHECK(order >= 0 && order <= kMaxOrder, kOp, ": order must be in [0, ", kMaxOrder, "], got ", order);
  if (factor.has_value()) {
    TORCH_CHECK(factor->sym_sizes() == x.sym_sizes(), kOp, ": factor must have x's shape ", x.sym_sizes(),
                ", got ", factor->sym_sizes());  // symbolic sizes: the shape check adds no guard when tracing
    TORCH_CHECK(factor->scalar_type() == x.scalar_type(), kOp, ": factor must be ", x.scalar_type(), " like x, got ",
                factor->scalar_type());
    TORCH_CHECK(factor->device() == x.device(), kOp, ": factor must be on ", x.device(), " like x, got ",
                factor->device());
  }
}

at::Tensor derivative_cpu(const at::Tensor& x_in, c10::string_view name, int64_t order, double scale,
                          const std::optional<at::Tensor>& factor_in) {
  const Activation activation = parse(kOp, name);
  check_operands(x_in, order, factor_in);
  const auto x = x_in.contiguous();
  const Formula f = formula(activation, x, order);
  const auto base = f.base.defined() ? f.base.contiguous() : f.base;
  const auto multiplier = f.multiplier.defined() ? f.multiplier.contiguous() : f.multiplier;
  // scale multiplies A, B and the threshold value in the kernel; the addend (gelu's first derivative) here
  const auto addend = f.addend.defined() ? (f.addend * scale).contiguous() : f.addend;
  const auto factor = factor_in.has_value() ? factor_in->contiguous() : at::Tensor();
  auto out = at::empty_like(x, at::MemoryFormat::Contiguous);
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "mlipkit_activation_derivative", [&] {
    auto as_scalars = [](const Polynomial& p, double s) {
      std::vector<scalar_t> c;
      for (double v : p) c.push_back(static_cast<scalar_t>(v * s));
      return c;
    };
    const auto a = as_scalars(f.a, scale), b = as_scalars(f.b, scale);
    auto pointer = [](const at::Tensor& t) { return t.defined() ? t.data_ptr<scalar_t>() : nullptr; };
    const scalar_t threshold =
        f.threshold_inclusive ? std::nextafter(scalar_t(20), scalar_t(0)) : scalar_t(20);  // the kernel tests x >
    const Terms<scalar_t> terms{a.data(), static_cast<int64_t>(a.size()), b.data(), static_cast<int64_t>(b.size()),
                                f.sigmoid_base, f.has_threshold, threshold,
                                static_cast<scalar_t>(f.above_threshold * scale)};
    const Operands<scalar_t> operands{x.data_ptr<scalar_t>(), pointer(base), pointer(multiplier),
                                      pointer(addend), pointer(factor), out.data_ptr<scalar_t>()};
    // chunks start at multiples of kAlignment, so only the last elements take the kernel's scalar path
    // (std::exp rather than the vectorised exp): results do not depend on the number of threads
    const int64_t size = x.numel();
    const auto aligned = [size](int64_t i) {
      return std::min(size, (i + kAlignment - 1) / kAlignment * kAlignment);
    };
    at::parallel_for(0, size, kGrain, [&](int64_t begin, int64_t end) {
      run_evaluate(terms, operands, aligned(begin), aligned(end));
    });
  });
  return out;
}

// sum_k p[k] scale u^k by Horner's rule, on tensors
at::Tensor polynomial_in(const Polynomial& p, const at::Tensor& u, double scale) {
  if (p.empty()) return at::zeros_like(u);
  at::Tensor sum = at::full_like(u, p.back() * scale);
  for (size_t k = p.size() - 1; k-- > 0;) sum = sum * u + p[k] * scale;
  return sum;
}

at::Tensor derivative_meta(const at::Tensor& x, c10::string_view name, int64_t order, double scale,
                           const std::optional<at::Tensor>& factor) {
  parse(kOp, name);
  check_operands(x, order, factor);
  (void)scale;
  return at::empty_like(x, at::MemoryFormat::Contiguous);
}

// ---------------------------------------------------------------- autograd

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

class DerivativeFunction : public torch::autograd::Function<DerivativeFunction> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, c10::string_view name, int64_t order,
                            double scale, const std::optional<at::Tensor>& factor) {
    ctx->save_for_backward({x, factor.value_or(at::Tensor())});
    ctx->saved_data["name"] = std::string(name);
    ctx->saved_data["order"] = order;
    ctx->saved_data["scale"] = scale;
    at::AutoDispatchBelowADInplaceOrView guard;
    return derivative(x, name, order, scale, factor);
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    variable_list result(5);
    const auto& g = grads[0];
    if (!g.defined()) return result;
    const auto saved = ctx->get_saved_variables();
    const auto& x = saved[0];
    const auto& factor = saved[1];
    const auto name = ctx->saved_data["name"].toStringRef();
    const int64_t order = ctx->saved_data["order"].toInt();
    const double scale = ctx->saved_data["scale"].toDouble();
    if (ctx->needs_input_grad(0)) {
      result[0] = derivative(x, name, order + 1, scale, factor.defined() ? g * factor : g);
    }
    // needs_input_grad counts tensors only: the factor is the second
    if (factor.defined() && ctx->needs_input_grad(1)) result[4] = derivative(x, name, order, scale, g);
    return result;
  }
};

at::Tensor derivative_autograd(const at::Tensor& x, c10::string_view name, int64_t order, double scale,
                               const std::optional<at::Tensor>& factor) {
  return DerivativeFunction::apply(x, name, order, scale, factor);
}

}  // namespace

void check_name(const char* op, c10::string_view name) { parse(op, name); }

at::Tensor derivative(const at::Tensor& x, c10::string_view name, int64_t order, double scale,
                      const std::optional<at::Tensor>& factor) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("mlipkit::activation_derivative", "")
                       .typed<at::Tensor(const at::Tensor&, c10::string_view, int64_t, double,
                                         const std::optional<at::Tensor>&)>();
  return op.call(x, name, order, scale, factor);
}

// Any other device (CUDA): the kernel's formula from ATen's element-wise ops (a few passes where the CPU kernel
// makes one), equal to it up to rounding.
at::Tensor derivative_composite(const at::Tensor& x, c10::string_view name, int64_t order, double scale,
                                const std::optional<at::Tensor>& factor) {
  const Activation activation = parse(kOp, name);
  check_operands(x, order, factor);
  const Formula f = formula(activation, x, order);
  const at::Tensor base = f.sigmoid_base ? at::sigmoid(x) : f.base;
  at::Tensor value = polynomial_in(f.a, base, scale);
  if (!f.b.empty()) value = value + x * polynomial_in(f.b, base, scale);
  if (f.multiplier.defined()) value = value * f.multiplier;
  if (f.addend.defined()) value = value + f.addend * scale;
  if (f.has_threshold) {
    const auto above = f.threshold_inclusive ? x >= 20.0 : x > 20.0;
    value = at::where(above, at::full_like(value, f.above_threshold * scale), value);
  }
  return (factor.has_value() ? value * *factor : value).contiguous();
}

}  // namespace activation

TORCH_LIBRARY_FRAGMENT(mlipkit, m) {
  m.def(schemas::kActivationDerivative);
}

TORCH_LIBRARY_IMPL(mlipkit, CPU, m) { m.impl("activation_derivative", activation::derivative_cpu); }

TORCH_LIBRARY_IMPL(mlipkit, CUDA, m) { m.impl("activation_derivative", activation::derivative_composite); }

TORCH_LIBRARY_IMPL(mlipkit, Meta, m) { m.impl("activation_derivative", activation::derivative_meta); }

TORCH_LIBRARY_IMPL(mlipkit, Autograd, m) { m.impl("activation_derivative", activation::derivative_autograd); }

}  // namespace mlipkit
