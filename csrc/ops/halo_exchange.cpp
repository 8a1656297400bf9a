// mlipkit::halo_exchange(node_features) and mlipkit::halo_exchange_reverse(gradients): node features of a part of
// a system whose ghost rows take their owners' values between message-passing layers, and the adjoint that sums
// ghost rows' gradients onto their owners. The communication is the registered HaloExchange's (see
// mlipkit/halo_exchange.hpp); with none registered both return a copy of their input. Each op is the other's
// derivative, so an artifact's forces (and any higher derivative) exchange as its energies do.

#include <ATen/ATen.h>
#include <torch/autograd.h>
#include <torch/library.h>

#include <atomic>

#include "mlipkit/halo_exchange.hpp"

namespace mlipkit {
namespace {

std::atomic<HaloExchange*> registered_exchange{nullptr};

void check_rows(const at::Tensor& tensor, const char* op) {
  TORCH_CHECK(tensor.dim() == 2, "mlipkit::", op, ": expects node rows [N, W], got shape ", tensor.sizes());
  TORCH_CHECK(tensor.is_floating_point(), "mlipkit::", op, ": expects floating-point rows, got ", tensor.scalar_type());
}

at::Tensor halo_exchange_kernel(const at::Tensor& node_features) {
  check_rows(node_features, "halo_exchange");
  auto exchanged = node_features.contiguous().clone();
  if (auto* exchange = registered_exchange.load()) exchange->forward(exchanged);
  return exchanged;
}

at::Tensor halo_exchange_reverse_kernel(const at::Tensor& gradients) {
  check_rows(gradients, "halo_exchange_reverse");
  auto summed = gradients.contiguous().clone();
  if (auto* exchange = registered_exchange.load()) exchange->reverse(summed);
  return summed;
}

at::Tensor same_shape_meta(const at::Tensor& rows) { return at::empty_like(rows); }

at::Tensor call(const char* name, const at::Tensor& rows) {
  auto op = c10::Dispatcher::singleton().findSchemaOrThrow(name, "").typed<at::Tensor(const at::Tensor&)>();
  return op.call(rows);
}

constexpr char kExchange[] = "mlipkit::halo_exchange";
constexpr char kReverse[] = "mlipkit::halo_exchange_reverse";

// A linear op whose derivative is the op named Adjoint (and the other way round).
template <const char* Op, const char* Adjoint>
class LinearOpFunction : public torch::autograd::Function<LinearOpFunction<Op, Adjoint>> {
 public:
  static at::Tensor forward(torch::autograd::AutogradContext*, const at::Tensor& rows) {
    at::AutoDispatchBelowADInplaceOrView guard;
    return call(Op, rows);
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext*, torch::autograd::variable_list grads) {
    return {call(Adjoint, grads[0])};
  }
};

at::Tensor halo_exchange_autograd(const at::Tensor& node_features) {
  return LinearOpFunction<kExchange, kReverse>::apply(node_features);
}

at::Tensor halo_exchange_reverse_autograd(const at::Tensor& gradients) {
  return LinearOpFunction<kReverse, kExchange>::apply(gradients);
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(mlipkit, m) {
  m.def("halo_exchange(Tensor node_features) -> Tensor");
  m.def("halo_exchange_reverse(Tensor gradients) -> Tensor");
}

TORCH_LIBRARY_IMPL(mlipkit, CPU, m) {
  m.impl("halo_exchange", halo_exchange_kernel);
  m.impl("halo_exchange_reverse", halo_exchange_reverse_kernel);
}

TORCH_LIBRARY_IMPL(mlipkit, CUDA, m) {
  m.impl("halo_exchange", halo_exchange_kernel);
  m.impl("halo_exchange_reverse", halo_exchange_reverse_kernel);
}

TORCH_LIBRARY_IMPL(mlipkit, Meta, m) {
  m.impl("halo_exchange", same_shape_meta);
  m.impl("halo_exchange_reverse", same_shape_meta);
}

TORCH_LIBRARY_IMPL(mlipkit, Autograd, m) {
  m.impl("halo_exchange", halo_exchange_autograd);
  m.impl("halo_exchange_reverse", halo_exchange_reverse_autograd);
}

}  // namespace mlipkit

extern "C" void mlipkit_set_halo_exchange(mlipkit::HaloExchange* exchange) { mlipkit::registered_exchange.store(exchange); }
