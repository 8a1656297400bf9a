// Sums of outer products over sorted segments: GemNet-OC's triplet and quadruplet contractions.
//
// mlipkit::segment_outer_sum(basis [T,S], features [N,C], source [T], sorted_target [T], num_targets)
//   out[o, s, c] = sum over t with sorted_target[t] == o of basis[t, s] * features[source[t], c]
// (a triplet's angular basis times the features of its input edge, summed into its output edge),
// without the [T, C] gather or a zero-padded [targets, most triplets, ...] matrix.
//
// The output is the derivative of the trilinear form
//   F(basis, features, grad) = sum_t sum_{s,c} basis[t,s] features[source[t],c] grad[target[t],s,c]
// by grad; its derivatives by basis and by features are the other two ops:
// mlipkit::segment_outer_sum_basis_grad(grad [O,S,C], features, source, sorted_target) -> [T, S]
// mlipkit::segment_outer_sum_features_grad(basis, grad [O,S,C], source, sorted_target, num_sources) -> [N, C]
// so the autograd formula of each op calls the other two, and derivatives of any order
// (forces, force training) stay on these three kernels. Each output row is owned by one
// thread and summed in a fixed order (targets in triplet order; sources in triplet order
// after a stable counting sort), so results do not depend on the number of threads.

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/autograd.h>
#include <torch/library.h>

#include <vector>

#include "../kernels/isa.hpp"
#include "../kernels/segment_outer_plan.hpp"
#include "schemas.hpp"
#include "segment_outer.hpp"
#include "sorted_segments.hpp"

namespace mlipkit {
namespace segment_outer {
namespace {

void check_operand(const char* op, const char* name, const at::Tensor& tensor, int64_t dim, const at::Tensor& like) {
  TORCH_CHECK(tensor.dim() == dim, "mlipkit::", op, ": ", name, " must have ", dim, " dimensions, got shape ",
              tensor.sizes());
  TORCH_CHECK(tensor.scalar_type() == like.scalar_type(), "mlipkit::", op, ": ", name, " is ", tensor.scalar_type(),
              " but the other operands are ", like.scalar_type());
  TORCH_CHECK(tensor.device() == like.device(), "mlipkit::", op, ": ", name, " is on ", tensor.device(),
              " but the other operands are on ", like.device());
}

void check_indices(const char* op, const at::Tensor& source, const at::Tensor& sorted_target, int64_t num_rows,
                   const at::Tensor& like) {
  const auto check = [&](const char* name, const at::Tensor& index) {
    TORCH_CHECK(index.dim() == 1 && index.scalar_type() == at::kLong, "mlipkit::", op, ": ", name,
                " must be a 1-D int64 tensor, got ", index.scalar_type(), " of shape ", index.sizes());
    TORCH_CHECK(index.size(0) == num_rows, "mlipkit::", op, ": ", name, " has ", index.size(0), " entries for ",
                num_rows, " basis rows");
    TORCH_CHECK(index.device() == like.device(), "mlipkit::", op, ": ", name, " is on ", index.device(),
                " but the other operands are on ", like.device());
  };
  check("source", source);
  check("sorted_target", sorted_target);
}

}  // namespace

void check_outer_sum(const at::Tensor& basis, const at::Tensor& features, const at::Tensor& source,
                     const at::Tensor& sorted_target, int64_t num_targets) {
  constexpr const char* kOp = "segment_outer_sum";
  check_operand(kOp, "basis", basis, 2, features);
  check_operand(kOp, "features", features, 2, basis);
  check_indices(kOp, source, sorted_target, basis.size(0), basis);
  TORCH_CHECK(num_targets >= 0, "mlipkit::", kOp, ": num_targets must be >= 0, got ", num_targets);
}

void check_basis_grad(const at::Tensor& grad, const at::Tensor& features, const at::Tensor& source,
                      const at::Tensor& sorted_target) {
  constexpr const char* kOp = "segment_outer_sum_basis_grad";
  check_operand(kOp, "grad", grad, 3, features);
  check_operand(kOp, "features", features, 2, grad);
  TORCH_CHECK(grad.size(2) == features.size(1), "mlipkit::", kOp, ": grad has ", grad.size(2),
              " channels but features have ", features.size(1));
  check_indices(kOp, source, sorted_target, source.size(0), grad);
}

void check_features_grad(const at::Tensor& basis, const at::Tensor& grad, const at::Tensor& source,
                         const at::Tensor& sorted_target, int64_t num_sources) {
  constexpr const char* kOp = "segment_outer_sum_features_grad";
  check_operand(kOp, "basis", basis, 2, grad);
  check_operand(kOp, "grad", grad, 3, basis);
  TORCH_CHECK(grad.size(1) == basis.size(1), "mlipkit::", kOp, ": grad has ", grad.size(1), " basis rows but basis has ",
              basis.size(1), " columns");
  check_indices(kOp, source, sorted_target, basis.size(0), basis);
  TORCH_CHECK(num_sources >= 0, "mlipkit::", kOp, ": num_sources must be >= 0, got ", num_sources);
}

}  // namespace segment_outer

namespace {

constexpr int64_t kRowGrain = 16;

void check_sources(const char* op, const int64_t* source, int64_t num_rows, int64_t num_sources) {
  for (int64_t t = 0; t < num_rows; ++t) {
    TORCH_CHECK(source[t] >= 0 && source[t] < num_sources, "mlipkit::", op, ": source entry ", t, " = ", source[t],
                " is outside [0, ", num_sources, ")");
  }
}

// The kernel `name` of the instruction set this CPU runs (csrc/kernels/isa.cpp).
#if defined(MLIPKIT_X86_KERNELS)
#define MLIPKIT_RUN_KERNEL(name, ...)                                             \
  switch (active_isa()) {                                                          \
    case Isa::avx512:                                                              \
      return segment_outer::avx512::name(__VA_ARGS__);                             \
    case Isa::avx2:                                                                \
      return segment_outer::avx2::name(__VA_ARGS__);                               \
    default:                                                                       \
      return segment_outer::baseline::name(__VA_ARGS__);                           \
  }
#else
#define MLIPKIT_RUN_KERNEL(name, ...) return segment_outer::baseline::name(__VA_ARGS__);
#endif

template <typename T>
void run_outer_sum(const T* basis, const T* features, const int64_t* source, const int64_t* target_ptr, int64_t S,
                   int64_t C, int64_t begin, int64_t end, T* out) {
  MLIPKIT_RUN_KERNEL(outer_sum, basis, features, source, target_ptr, S, C, begin, end, out)
}

template <typename T>
void run_basis_grad(const T* grad, const T* features, const int64_t* source, const int64_t* target_ptr, int64_t S,
                    int64_t C, int64_t begin, int64_t end, T* out) {
  MLIPKIT_RUN_KERNEL(basis_grad, grad, features, source, target_ptr, S, C, begin, end, out)
}

template <typename T>
void run_features_grad(const T* basis, const T* grad, const int64_t* target, const int64_t* source_ptr,
                       const int64_t* source_rows, int64_t S, int64_t C, int64_t begin, int64_t end, T* out) {
  MLIPKIT_RUN_KERNEL(features_grad, basis, grad, target, source_ptr, source_rows, S, C, begin, end, out)
}

#undef MLIPKIT_RUN_KERNEL

at::Tensor outer_sum_cpu(const at::Tensor& basis, const at::Tensor& features, const at::Tensor& source,
                         const at::Tensor& sorted_target, int64_t num_targets) {
  constexpr const char* kOp = "segment_outer_sum";
  segment_outer::check_outer_sum(basis, features, source, sorted_target, num_targets);
  const int64_t num_basis = basis.size(1), channels = features.size(1);
  const auto b = basis.contiguous();
  const auto f = features.contiguous();
  const auto src = source.contiguous();
  check_sources(kOp, src.data_ptr<int64_t>(), basis.size(0), features.size(0));
  const auto ptr = segment_pointers(sorted_target, num_targets, kOp);
  auto out = at::empty({num_targets, num_basis, channels}, basis.options());
  AT_DISPATCH_FLOATING_TYPES(basis.scalar_type(), "mlipkit_segment_outer_sum", [&] {
    at::parallel_for(0, num_targets, kRowGrain, [&](int64_t begin, int64_t end) {
      run_outer_sum(b.data_ptr<scalar_t>(), f.data_ptr<scalar_t>(), src.data_ptr<int64_t>(), ptr.data(), num_basis,
                    channels, begin, end, out.data_ptr<scalar_t>());
    });
  });
  return out;
}

at::Tensor basis_grad_cpu(const at::Tensor& grad, const at::Tensor& features, const at::Tensor& source,
                          const at::Tensor& sorted_target) {
  constexpr const char* kOp = "segment_outer_sum_basis_grad";
  segment_outer::check_basis_grad(grad, features, source, sorted_target);
  const int64_t num_rows = source.size(0), num_basis = grad.size(1), channels = grad.size(2);
  const auto g = grad.contiguous();
  const auto f = features.contiguous();
  const auto src = source.contiguous();
  const auto tgt = sorted_target.contiguous();
  check_sources(kOp, src.data_ptr<int64_t>(), num_rows, features.size(0));
  const auto ptr = segment_pointers(tgt, grad.size(0), kOp);
  auto out = at::empty({num_rows, num_basis}, grad.options());
  AT_DISPATCH_FLOATING_TYPES(grad.scalar_type(), "mlipkit_segment_outer_sum_basis_grad", [&] {
    at::parallel_for(0, grad.size(0), kRowGrain, [&](int64_t begin, int64_t end) {
      run_basis_grad(g.data_ptr<scalar_t>(), f.data_ptr<scalar_t>(), src.data_ptr<int64_t>(), ptr.data(), num_basis,
                     channels, begin, end, out.data_ptr<scalar_t>());
    });
  });
  return out;
}

at::Tensor features_grad_cpu(const at::Tensor& basis, const at::Tensor& grad, const at::Tensor& source,
                             const at::Tensor& sorted_target, int64_t num_sources) {
  constexpr const char* kOp = "segment_outer_sum_features_grad";
  segment_outer::check_features_grad(basis, grad, source, sorted_target, num_sources);
  const int64_t num_rows = basis.size(0), num_basis = basis.size(1), channels = grad.size(2);
  const auto b = basis.contiguous();
  const auto g = grad.contiguous();
  const auto src = source.contiguous();
  const auto tgt = sorted_target.contiguous();
  const int64_t* sp = src.data_ptr<int64_t>();
  check_sources(kOp, sp, num_rows, num_sources);
  segment_pointers(tgt, grad.size(0), kOp);
  const auto [ptr, rows] = rows_by_group(sp, num_rows, num_sources);
  auto out = at::empty({num_sources, channels}, basis.options());
  AT_DISPATCH_FLOATING_TYPES(basis.scalar_type(), "mlipkit_segment_outer_sum_features_grad", [&] {
    at::parallel_for(0, num_sources, kRowGrain, [&](int64_t begin, int64_t end) {
      run_features_grad(b.data_ptr<scalar_t>(), g.data_ptr<scalar_t>(), tgt.data_ptr<int64_t>(), ptr.data(),
                        rows.data(), num_basis, channels, begin, end, out.data_ptr<scalar_t>());
    });
  });
  return out;
}

at::Tensor outer_sum_meta(const at::Tensor& basis, const at::Tensor& features, const at::Tensor&, const at::Tensor&,
                          c10::SymInt num_targets) {
  return at::empty_symint({std::move(num_targets), basis.sym_size(1), features.sym_size(1)}, basis.options());
}

at::Tensor basis_grad_meta(const at::Tensor& grad, const at::Tensor&, const at::Tensor& source, const at::Tensor&) {
  return at::empty_symint({source.sym_size(0), grad.sym_size(1)}, grad.options());
}

at::Tensor features_grad_meta(const at::Tensor& basis, const at::Tensor& grad, const at::Tensor&, const at::Tensor&,
                              c10::SymInt num_sources) {
  return at::empty_symint({std::move(num_sources), grad.sym_size(2)}, basis.options());
}

// ---------------------------------------------------------------- the ops through the dispatcher (recorded by autograd)

at::Tensor call_outer_sum(const at::Tensor& basis, const at::Tensor& features, const at::Tensor& source,
                          const at::Tensor& sorted_target, const c10::SymInt& num_targets) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("mlipkit::segment_outer_sum", "")
                       .typed<at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                         c10::SymInt)>();
  return op.call(basis, features, source, sorted_target, num_targets);
}

at::Tensor call_basis_grad(const at::Tensor& grad, const at::Tensor& features, const at::Tensor& source,
                           const at::Tensor& sorted_target) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("mlipkit::segment_outer_sum_basis_grad", "")
                       .typed<at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&)>();
  return op.call(grad, features, source, sorted_target);
}

at::Tensor call_features_grad(const at::Tensor& basis, const at::Tensor& grad, const at::Tensor& source,
                              const at::Tensor& sorted_target, const c10::SymInt& num_sources) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("mlipkit::segment_outer_sum_features_grad", "")
                       .typed<at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                         c10::SymInt)>();
  return op.call(basis, grad, source, sorted_target, num_sources);
}

// ---------------------------------------------------------------- autograd: each op's derivatives are the other two

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

class OuterSumFunction : public torch::autograd::Function<OuterSumFunction> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& basis, const at::Tensor& features,
                            const at::Tensor& source, const at::Tensor& sorted_target, const c10::SymInt& num_targets) {
    ctx->save_for_backward({basis, features, source, sorted_target});
    at::AutoDispatchBelowADInplaceOrView guard;
    return call_outer_sum(basis, features, source, sorted_target, num_targets);
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const auto& basis = saved[0];
    const auto& features = saved[1];
    const auto& source = saved[2];
    const auto& target = saved[3];
    const auto& g = grads[0];
    if (!g.defined()) return variable_list(5);
    return {call_basis_grad(g, features, source, target), call_features_grad(basis, g, source, target, features.sym_size(0)),
            at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

class BasisGradFunction : public torch::autograd::Function<BasisGradFunction> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& grad, const at::Tensor& features,
                            const at::Tensor& source, const at::Tensor& sorted_target) {
    ctx->save_for_backward({grad, features, source, sorted_target});
    at::AutoDispatchBelowADInplaceOrView guard;
    return call_basis_grad(grad, features, source, sorted_target);
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const auto& grad = saved[0];
    const auto& features = saved[1];
    const auto& source = saved[2];
    const auto& target = saved[3];
    const auto& d = grads[0];  // [T, S], in the place of a basis
    if (!d.defined()) return variable_list(4);
    return {call_outer_sum(d, features, source, target, grad.sym_size(0)),
            call_features_grad(d, grad, source, target, features.sym_size(0)), at::Tensor(), at::Tensor()};
  }
};

class FeaturesGradFunction : public torch::autograd::Function<FeaturesGradFunction> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& basis, const at::Tensor& grad,
                            const at::Tensor& source, const at::Tensor& sorted_target, const c10::SymInt& num_sources) {
    ctx->save_for_backward({basis, grad, source, sorted_target});
    at::AutoDispatchBelowADInplaceOrView guard;
    return call_features_grad(basis, grad, source, sorted_target, num_sources);
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const auto& basis = saved[0];
    const auto& grad = saved[1];
    const auto& source = saved[2];
    const auto& target = saved[3];
    const auto& d = grads[0];  // [N, C], in the place of the features
    if (!d.defined()) return variable_list(5);
    return {call_basis_grad(grad, d, source, target), call_outer_sum(basis, d, source, target, grad.sym_size(0)),
            at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

at::Tensor outer_sum_autograd(const at::Tensor& basis, const at::Tensor& features, const at::Tensor& source,
                              const at::Tensor& sorted_target, c10::SymInt num_targets) {
  return OuterSumFunction::apply(basis, features, source, sorted_target, num_targets);
}

at::Tensor basis_grad_autograd(const at::Tensor& grad, const at::Tensor& features, const at::Tensor& source,
                               const at::Tensor& sorted_target) {
  return BasisGradFunction::apply(grad, features, source, sorted_target);
}

at::Tensor features_grad_autograd(const at::Tensor& basis, const at::Tensor& grad, const at::Tensor& source,
                                  const at::Tensor& sorted_target, c10::SymInt num_sources) {
  return FeaturesGradFunction::apply(basis, grad, source, sorted_target, num_sources);
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(mlipkit, m) {
  m.def(schemas::kSegmentOuterSum);
  m.def(schemas::kSegmentOuterSumBasisGrad);
  m.def(schemas::kSegmentOuterSumFeaturesGrad);
}

TORCH_LIBRARY_IMPL(mlipkit, CPU, m) {
  m.impl("segment_outer_sum", outer_sum_cpu);
  m.impl("segment_outer_sum_basis_grad", basis_grad_cpu);
  m.impl("segment_outer_sum_features_grad", features_grad_cpu);
}

TORCH_LIBRARY_IMPL(mlipkit, Meta, m) {
  m.impl("segment_outer_sum", outer_sum_meta);
  m.impl("segment_outer_sum_basis_grad", basis_grad_meta);
  m.impl("segment_outer_sum_features_grad", features_grad_meta);
}

TORCH_LIBRARY_IMPL(mlipkit, Autograd, m) {
  m.impl("segment_outer_sum", outer_sum_autograd);
  m.impl("segment_outer_sum_basis_grad", basis_grad_autograd);
  m.impl("segment_outer_sum_features_grad", features_grad_autograd);
}

}  // namespace mlipkit
