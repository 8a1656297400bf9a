// mlipkit::channelwise_polynomial: a sparse polynomial in each node's features,
// evaluated channel by channel, with coefficients per channel mixed per node
// from a few sets (MACE's symmetric contraction with its per-type weights folded
// into the couplings).
//
//   channelwise_polynomial(features [N, D, C], node_weights [N, E], coefficients [E, K, C],
//       terms int[8 T], num_outputs) -> out [N, num_outputs, C]
//   out[n][o][c] = sum_e node_weights[n][e] sum_{t: output_t = o}
//                  multiplier_t coefficients[e][coefficient_t][c] prod_{s < degree_t} features[n][factor_ts][c]
//
//   channelwise_polynomial_coefficient_grad(features, node_weights, grad_out [N, O, C], terms,
//       num_coefficients) -> [E, num_coefficients, C], the derivative of sum(grad_out * out)
//       by the coefficients.
//
// A term is 8 integers: output row, coefficient row, multiplier (> 0), degree
// (1..4), then 4 feature rows of which the first `degree` are used and the rest
// are -1.
//
// Derivatives stay in the family: the derivative by the features of
// sum(g * out) is channelwise_polynomial of [features, g] (g appended as rows)
// with the terms of derivative_terms (each factor replaced once by g's row,
// degree unchanged), and derivatives by the coefficients are the second op. Both
// ops are registered with autograd formulas that call each other, so
// derivatives of any order use these two kernels.

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/autograd.h>
#include <torch/library.h>

#include <algorithm>
#include <numeric>
#include <vector>

#include "fixed_size.hpp"
#include "isa.hpp"
#include "polynomial_plan.hpp"
#include "polynomial_terms.hpp"
#include "../ops/schemas.hpp"

namespace mlipkit {
namespace polynomial {

constexpr const char* kOp = "mlipkit::channelwise_polynomial";
constexpr const char* kGradOp = "mlipkit::channelwise_polynomial_coefficient_grad";

std::vector<Term> parse_terms(at::IntArrayRef fields, int64_t num_features, int64_t num_outputs,
                              int64_t num_coefficients, const char* op) {
  TORCH_CHECK(fields.size() % kTermFields == 0, op, ": terms must hold ", kTermFields, " integers per term, got ",
              fields.size());
  std::vector<Term> terms(fields.size() / kTermFields);
  for (size_t index = 0; index < terms.size(); ++index) {
    const int64_t* f = fields.data() + index * kTermFields;
    Term& t = terms[index];
    t = Term{f[0], f[1], f[2], f[3], {f[4], f[5], f[6], f[7]}};
    TORCH_CHECK(t.output >= 0 && t.output < num_outputs, op, ": term ", index, " writes output row ", t.output,
                " but there are ", num_outputs);
    TORCH_CHECK(t.coefficient >= 0 && t.coefficient < num_coefficients, op, ": term ", index,
                " reads coefficient row ", t.coefficient, " but there are ", num_coefficients);
    TORCH_CHECK(t.multiplier > 0, op, ": term ", index, " has multiplier ", t.multiplier, "; it must be positive");
    TORCH_CHECK(t.degree >= 1 && t.degree <= kMaxDegree, op, ": term ", index, " has degree ", t.degree,
                "; it must lie in 1..", kMaxDegree);
    for (int64_t s = 0; s < kMaxDegree; ++s) {
      if (s < t.degree) {
        TORCH_CHECK(t.factors[s] >= 0 && t.factors[s] < num_features, op, ": term ", index, " reads feature row ",
                    t.factors[s], " but there are ", num_features);
      } else {
        TORCH_CHECK(t.factors[s] == -1, op, ": term ", index, " of degree ", t.degree, " names feature row ",
                    t.factors[s], " in unused slot ", s, " (unused slots hold -1)");
      }
    }
  }
  return terms;
}

// ---------------------------------------------------------------- checks

static void check_operands(const at::Tensor& features, const at::Tensor& node_weights, const at::Tensor& third,
                    const char* third_name, const char* op) {
  TORCH_CHECK(features.dim() == 3, op, ": features must be [N, D, C], got shape ", features.sizes());
  TORCH_CHECK(node_weights.dim() == 2 && node_weights.size(0) == features.size(0), op,
              ": node_weights must be [N, E] with N = ", features.size(0), ", got shape ", node_weights.sizes());
  TORCH_CHECK(third.dim() == 3 && third.size(2) == features.size(2), op, ": ", third_name,
              " must be 3-D with C = ", features.size(2), " channels last, got shape ", third.sizes());
  TORCH_CHECK(features.scalar_type() == at::kFloat || features.scalar_type() == at::kDouble, op,
              ": features must be float32 or float64, got ", features.scalar_type());
  TORCH_CHECK(node_weights.scalar_type() == features.scalar_type() && third.scalar_type() == features.scalar_type(),
              op, ": features, node_weights and ", third_name, " must have one dtype, got ", features.scalar_type(),
              ", ", node_weights.scalar_type(), ", ", third.scalar_type());
  for (const at::Tensor* t : {&features, &node_weights, &third}) {
    TORCH_CHECK(t->device() == features.device(), op, ": features is on ", features.device(), " but ",
                t == &node_weights ? "node_weights" : third_name, " is on ", t->device());
  }
}

void check_evaluate(const at::Tensor& features, const at::Tensor& node_weights, const at::Tensor& coefficients,
                    int64_t num_outputs) {
  check_operands(features, node_weights, coefficients, "coefficients", kOp);
  TORCH_CHECK(coefficients.size(0) == node_weights.size(1), kOp, ": coefficients has ", coefficients.size(0),
              " sets but node_weights has ", node_weights.size(1), " columns");
  TORCH_CHECK(num_outputs >= 0, kOp, ": num_outputs must be >= 0, got ", num_outputs);
}

void check_coefficient_grad(const at::Tensor& features, const at::Tensor& node_weights, const at::Tensor& grad_out,
                            int64_t num_coefficients) {
  check_operands(features, node_weights, grad_out, "grad_out", kGradOp);
  TORCH_CHECK(grad_out.size(0) == features.size(0), kGradOp, ": grad_out has ", grad_out.size(0),
              " rows but features has ", features.size(0));
  TORCH_CHECK(num_coefficients >= 0, kGradOp, ": num_coefficients must be >= 0, got ", num_coefficients);
}

namespace {

// The terms sorted into runs by key (output or coefficient row), with offsets in elements.
template <typename T>
class Plan {
 public:
  Plan(std::vector<Term> terms, int64_t num_channels, bool by_coefficient) {
    auto key = [by_coefficient](const Term& t) { return by_coefficient ? t.coefficient : t.output; };
    std::stable_sort(terms.begin(), terms.end(), [&](const Term& a, const Term& b) {
      return key(a) != key(b) ? key(a) < key(b) : a.degree < b.degree;
    });
    const int64_t C = num_channels;
    for (size_t index = 0; index < terms.size(); ++index) {
      const Term& t = terms[index];
      if (index == 0 || key(t) != key(terms[index - 1])) {
        run_key_.push_back(key(t) * C);
        run_begin_.push_back(static_cast<int64_t>(index));
      }
      output_offset_.push_back(t.output * C);
      coefficient_offset_.push_back(t.coefficient * C);
      degree_.push_back(t.degree);
      for (int64_t s = 0; s < kMaxDegree; ++s) {
        factor_offset_.push_back(s < t.degree ? t.factors[s] * C : 0);
      }
      multiplier_.push_back(static_cast<T>(t.multiplier));
    }
    run_begin_.push_back(static_cast<int64_t>(terms.size()));
  }

  Terms<T> terms() const {
    return Terms<T>{static_cast<int64_t>(run_key_.size()), run_key_.data(), run_begin_.data(),
                    output_offset_.data(), coefficient_offset_.data(), degree_.data(), factor_offset_.data(),
                    multiplier_.data()};
  }

 private:
  std::vector<int64_t> run_key_, run_begin_, output_offset_, coefficient_offset_, degree_, factor_offset_;
  std::vector<T> multiplier_;
};

template <typename T>
void run_evaluate(const Problem<T>& p, const T* x, const T* w, const T* k, int64_t begin, int64_t end, T* out) {
  switch (active_isa()) {
#if defined(MLIPKIT_X86_KERNELS)
    case Isa::avx512:
      return avx512::evaluate(p, x, w, k, begin, end, out);
    case Isa::avx2:
      return avx2::evaluate(p, x, w, k, begin, end, out);
#endif
    default:
      return baseline::evaluate(p, x, w, k, begin, end, out);
  }
}

template <typename T>
void run_coefficient_gradient(const Problem<T>& p, const T* x, const T* w, const T* g, int64_t num_nodes,
                              int64_t run_begin, int64_t run_end, int64_t channel_begin, int64_t channel_end,
                              T* grad) {
  switch (active_isa()) {
#if defined(MLIPKIT_X86_KERNELS)
    case Isa::avx512:
      return avx512::coefficient_gradient(p, x, w, g, num_nodes, run_begin, run_end, channel_begin, channel_end,
                                          grad);
    case Isa::avx2:
      return avx2::coefficient_gradient(p, x, w, g, num_nodes, run_begin, run_end, channel_begin, channel_end, grad);
#endif
    default:
      return baseline::coefficient_gradient(p, x, w, g, num_nodes, run_begin, run_end, channel_begin, channel_end,
                                            grad);
  }
}

// Nodes per parallel chunk: enough term-channel products to outweigh the scheduling.
int64_t node_grain(size_t num_terms, int64_t num_channels) {
  const int64_t work = std::max<int64_t>(1, static_cast<int64_t>(num_terms) * std::max<int64_t>(1, num_channels));
  return std::max<int64_t>(1, 16384 / work);
}

// Channels per parallel chunk of the coefficient gradient: a multiple of every vector width.
constexpr int64_t kChannelChunk = 16;
// Coefficient rows per parallel chunk of the coefficient gradient.
constexpr int64_t kRunChunk = 32;

// ---------------------------------------------------------------- CPU ops

at::Tensor polynomial_cpu(const at::Tensor& features, const at::Tensor& node_weights, const at::Tensor& coefficients,
                          at::IntArrayRef terms, int64_t num_outputs) {
  check_evaluate(features, node_weights, coefficients, num_outputs);
  const auto x = features.contiguous();
  const auto w = node_weights.contiguous();
  const auto k = coefficients.contiguous();
  const int64_t num_nodes = x.size(0), C = x.size(2);
  auto parsed = parse_terms(terms, x.size(1), num_outputs, k.size(1), kOp);
  const int64_t grain = node_grain(parsed.size(), C);
  auto out = at::empty({num_nodes, num_outputs, C}, x.options());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "mlipkit_channelwise_polynomial", [&] {
    const Plan<scalar_t> plan(std::move(parsed), C, false);
    const Problem<scalar_t> problem{plan.terms(), C, x.size(1), w.size(1), num_outputs, k.size(1)};
    const scalar_t* xp = x.data_ptr<scalar_t>();
    const scalar_t* wp = w.data_ptr<scalar_t>();
    const scalar_t* kp = k.data_ptr<scalar_t>();
    scalar_t* outp = out.data_ptr<scalar_t>();
    at::parallel_for(0, num_nodes, grain, [&](int64_t begin, int64_t end) {
      run_evaluate(problem, xp, wp, kp, begin, end, outp);
    });
  });
  return out;
}

at::Tensor coefficient_grad_cpu(const at::Tensor& features, const at::Tensor& node_weights,
                                const at::Tensor& grad_out, at::IntArrayRef terms, int64_t num_coefficients) {
  check_coefficient_grad(features, node_weights, grad_out, num_coefficients);
  const auto x = features.contiguous();
  const auto w = node_weights.contiguous();
  const auto g = grad_out.contiguous();
  const int64_t num_nodes = x.size(0), C = x.size(2), num_sets = w.size(1);
  auto parsed = parse_terms(terms, x.size(1), g.size(1), num_coefficients, kGradOp);
  // rows no term reads have a zero gradient; the kernels write the others
  auto grad = at::zeros({num_sets, num_coefficients, C}, x.options());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "mlipkit_channelwise_polynomial_coefficient_grad", [&] {
    const Plan<scalar_t> plan(std::move(parsed), C, true);
    const Problem<scalar_t> problem{plan.terms(), C, x.size(1), num_sets, g.size(1), num_coefficients};
    const int64_t num_runs = problem.terms.num_runs;
    const int64_t channel_chunks = (C + kChannelChunk - 1) / kChannelChunk;
    const int64_t run_chunks = (num_runs + kRunChunk - 1) / kRunChunk;
    const scalar_t* xp = x.data_ptr<scalar_t>();
    const scalar_t* wp = w.data_ptr<scalar_t>();
    const scalar_t* gp = g.data_ptr<scalar_t>();
    scalar_t* gradp = grad.data_ptr<scalar_t>();
    at::parallel_for(0, channel_chunks * run_chunks, 1, [&](int64_t begin, int64_t end) {
      for (int64_t chunk = begin; chunk < end; ++chunk) {
        const int64_t channel_begin = (chunk % channel_chunks) * kChannelChunk;
        const int64_t run_begin = (chunk / channel_chunks) * kRunChunk;
        run_coefficient_gradient(problem, xp, wp, gp, num_nodes, run_begin, std::min(num_runs, run_begin + kRunChunk),
                                 channel_begin, std::min(C, channel_begin + kChannelChunk), gradp);
      }
    });
  });
  return grad;
}

// ---------------------------------------------------------------- Meta (shapes only)

at::Tensor polynomial_meta(const at::Tensor& features, const at::Tensor& node_weights, const at::Tensor& coefficients,
                           at::IntArrayRef terms, int64_t num_outputs) {
  (void)node_weights, (void)coefficients, (void)terms;
  return at::empty_symint({features.sym_size(0), c10::SymInt(num_outputs), features.sym_size(2)}, features.options());
}

at::Tensor coefficient_grad_meta(const at::Tensor& features, const at::Tensor& node_weights,
                                 const at::Tensor& grad_out, at::IntArrayRef terms, int64_t num_coefficients) {
  (void)grad_out, (void)terms;
  return at::empty_symint({node_weights.sym_size(1), c10::SymInt(num_coefficients), features.sym_size(2)},
                          features.options());
}

// ---------------------------------------------------------------- autograd

// The terms of d/d(features) sum(g * out), over [features, g] (g's rows after the
// num_features feature rows): each distinct factor f of a term, appearing m
// times, gives a term writing row f with multiplier * m and one f replaced by g's
// row of the term's output.
std::vector<int64_t> derivative_terms(at::IntArrayRef terms, int64_t num_features) {
  std::vector<int64_t> derived;
  for (size_t index = 0; index + kTermFields <= terms.size(); index += kTermFields) {
    const int64_t* f = terms.data() + index;
    const int64_t degree = f[3];
    const int64_t* factors = f + 4;
    for (int64_t s = 0; s < degree; ++s) {
      if (std::find(factors, factors + s, factors[s]) != factors + s) {
        continue;  // this factor's row was handled at its first appearance
      }
      const int64_t count = std::count(factors, factors + degree, factors[s]);
      derived.insert(derived.end(), {factors[s], f[1], f[2] * count, degree});
      for (int64_t r = 0; r < kMaxDegree; ++r) {
        derived.push_back(r == s ? num_features + f[0] : (r < degree ? factors[r] : -1));
      }
    }
  }
  return derived;
}

at::Tensor call_polynomial(const at::Tensor& features, const at::Tensor& node_weights, const at::Tensor& coefficients,
                           at::IntArrayRef terms, int64_t num_outputs) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("mlipkit::channelwise_polynomial", "")
                       .typed<at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&, at::IntArrayRef,
                                         int64_t)>();
  return op.call(features, node_weights, coefficients, terms, num_outputs);
}

at::Tensor call_coefficient_grad(const at::Tensor& features, const at::Tensor& node_weights,
                                 const at::Tensor& grad_out, at::IntArrayRef terms, int64_t num_coefficients) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("mlipkit::channelwise_polynomial_coefficient_grad", "")
                       .typed<at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&, at::IntArrayRef,
                                         int64_t)>();
  return op.call(features, node_weights, grad_out, terms, num_coefficients);
}

// d/d(node_weights[n][e]) of sum(g * out(coefficients)) = sum over rows and channels of g times
// the polynomial of set e alone at node n: one evaluation per set.
at::Tensor node_weights_gradient(const at::Tensor& features, const at::Tensor& node_weights,
                                 const at::Tensor& coefficients, at::IntArrayRef terms, const at::Tensor& g) {
  std::vector<at::Tensor> columns;
  for (int64_t e = 0; e < fixed_size(node_weights, 1); ++e) {
    auto only_e = at::zeros_like(node_weights);
    only_e.select(1, e).fill_(1);
    columns.push_back((call_polynomial(features, only_e, coefficients, terms, fixed_size(g, 1)) * g).sum({1, 2}));
  }
  return at::stack(columns, 1);
}

// d/d(features) of sum(g * polynomial(features; coefficients)): the derivative terms over [features, g].
at::Tensor features_gradient(const at::Tensor& features, const at::Tensor& node_weights,
                             const at::Tensor& coefficients, at::IntArrayRef terms, const at::Tensor& g) {
  const int64_t num_features = fixed_size(features, 1);
  return call_polynomial(at::cat({features, g}, 1), node_weights, coefficients, derivative_terms(terms, num_features),
                         num_features);
}

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

class PolynomialFunction : public torch::autograd::Function<PolynomialFunction> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& features, const at::Tensor& node_weights,
                            const at::Tensor& coefficients, at::IntArrayRef terms, int64_t num_outputs) {
    ctx->save_for_backward({features, node_weights, coefficients});
    ctx->saved_data["terms"] = terms.vec();
    at::AutoDispatchBelowADInplaceOrView guard;
    return call_polynomial(features, node_weights, coefficients, terms, num_outputs);
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const auto& features = saved[0];
    const auto& node_weights = saved[1];
    const auto& coefficients = saved[2];
    const auto terms = ctx->saved_data["terms"].toIntVector();
    const auto& g = grads[0];
    at::Tensor grad_features, grad_node_weights, grad_coefficients;
    if (g.defined()) {
      if (ctx->needs_input_grad(0)) {
        grad_features = features_gradient(features, node_weights, coefficients, terms, g);
      }
      if (ctx->needs_input_grad(1)) {
        grad_node_weights = node_weights_gradient(features, node_weights, coefficients, terms, g);
      }
      if (ctx->needs_input_grad(2)) {
        grad_coefficients = call_coefficient_grad(features, node_weights, g, terms, fixed_size(coefficients, 1));
      }
    }
    return {grad_features, grad_node_weights, grad_coefficients, at::Tensor(), at::Tensor()};
  }
};

// G = sum_n w[n] (d out / d coefficients)^T g; its derivatives with cotangent dG: by g,
// the polynomial with coefficients dG; by the features, the derivative polynomial with
// coefficients dG; by the node weights, as for the first op.
class CoefficientGradFunction : public torch::autograd::Function<CoefficientGradFunction> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& features, const at::Tensor& node_weights,
                            const at::Tensor& grad_out, at::IntArrayRef terms, int64_t num_coefficients) {
    ctx->save_for_backward({features, node_weights, grad_out});
    ctx->saved_data["terms"] = terms.vec();
    at::AutoDispatchBelowADInplaceOrView guard;
    return call_coefficient_grad(features, node_weights, grad_out, terms, num_coefficients);
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const auto& features = saved[0];
    const auto& node_weights = saved[1];
    const auto& g = saved[2];
    const auto terms = ctx->saved_data["terms"].toIntVector();
    const auto& dG = grads[0];
    at::Tensor grad_features, grad_node_weights, grad_g;
    if (dG.defined()) {
      if (ctx->needs_input_grad(0)) {
        grad_features = features_gradient(features, node_weights, dG, terms, g);
      }
      if (ctx->needs_input_grad(1)) {
        grad_node_weights = node_weights_gradient(features, node_weights, dG, terms, g);
      }
      if (ctx->needs_input_grad(2)) {
        grad_g = call_polynomial(features, node_weights, dG, terms, fixed_size(g, 1));
      }
    }
    return {grad_features, grad_node_weights, grad_g, at::Tensor(), at::Tensor()};
  }
};

at::Tensor polynomial_autograd(const at::Tensor& features, const at::Tensor& node_weights,
                               const at::Tensor& coefficients, at::IntArrayRef terms, int64_t num_outputs) {
  return PolynomialFunction::apply(features, node_weights, coefficients, terms, num_outputs);
}

at::Tensor coefficient_grad_autograd(const at::Tensor& features, const at::Tensor& node_weights,
                                     const at::Tensor& grad_out, at::IntArrayRef terms, int64_t num_coefficients) {
  return CoefficientGradFunction::apply(features, node_weights, grad_out, terms, num_coefficients);
}

}  // namespace
}  // namespace polynomial

TORCH_LIBRARY_FRAGMENT(mlipkit, m) {
  m.def(schemas::kChannelwisePolynomial);
  m.def(schemas::kChannelwisePolynomialCoefficientGrad);
}

TORCH_LIBRARY_IMPL(mlipkit, CPU, m) {
  m.impl("channelwise_polynomial", polynomial::polynomial_cpu);
  m.impl("channelwise_polynomial_coefficient_grad", polynomial::coefficient_grad_cpu);
}

TORCH_LIBRARY_IMPL(mlipkit, Meta, m) {
  m.impl("channelwise_polynomial", polynomial::polynomial_meta);
  m.impl("channelwise_polynomial_coefficient_grad", polynomial::coefficient_grad_meta);
}

TORCH_LIBRARY_IMPL(mlipkit, Autograd, m) {
  m.impl("channelwise_polynomial", polynomial::polynomial_autograd);
  m.impl("channelwise_polynomial_coefficient_grad", polynomial::coefficient_grad_autograd);
}

}  // namespace mlipkit
