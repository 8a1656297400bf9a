// mlipkit::tensor_product_convolution: gather sender features, channelwise
// ("uvu") tensor product with the edge spherical harmonics weighted per edge
// and path, sum into receivers; one pass per receiver over receiver-sorted
// edges, no atomics, deterministic for any number of threads.
//
//   tensor_product_convolution(node_features [N, F_in], edge_sh [E, S], edge_weights [E, W],
//       edge_index [2, E] (sender, receiver; receivers sorted), couplings [C],
//       paths int[8 P], num_out_features) -> [N, F_out]
//   tensor_product_convolution_backward(grad_out [N, F_out], node_features, edge_sh, edge_weights,
//       edge_index, couplings, paths) -> (grad_node_features, grad_edge_sh, grad_edge_weights)
//
// Features are components-outer, channels-inner per irrep ([2l+1][mul]).
// Each path is 8 integers: l1, l2, l3, mul, input column, harmonics column,
// output column, weight column; `couplings` holds each path's dense
// Clebsch-Gordan block [2l1+1][2l2+1][2l3+1] (path weight included), in path
// order. The paths' weight columns must tile [0, W).
//
//   tensor_product_convolution_double_backward(grad_out, node_features, edge_sh, edge_weights,
//       d_node_features, d_edge_sh, d_edge_weights, edge_index, couplings, paths)
//     -> (grad_grad_out, grad_node_features, grad_edge_sh, grad_edge_weights)
//
// The backward op is linear in grad_out and in each of the three operands, so
// its own derivative, given the cotangents d_* of its three outputs, is three
// forward and three backward calls with swapped operands. The double backward
// op does all six in one receiver pass and one sender pass. Autograd uses it where no
// graph is built (create_graph=False, as in force training's loss.backward);
// under create_graph it uses the six calls, both ops being registered with
// autograd formulas that call each other, so derivatives of any order work.

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/autograd.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdlib>
#include <string>
#include <vector>

#include "../ops/sorted_segments.hpp"
#include "convolution_problem.hpp"
#include "fixed_size.hpp"
#include "../ops/schemas.hpp"

namespace mlipkit {
namespace convolution {
namespace {

constexpr const char* kOp = "mlipkit::tensor_product_convolution";

// ---------------------------------------------------------------- CPU ops

at::Tensor convolution_cpu(const at::Tensor& node_features, const at::Tensor& edge_sh, const at::Tensor& edge_weights,
                           const at::Tensor& edge_index, const at::Tensor& couplings, at::IntArrayRef paths,
                           int64_t num_out_features) {
  check_operands(kOp, node_features, {{"edge_sh", edge_sh}, {"edge_weights", edge_weights}}, {}, edge_index);
  TORCH_CHECK(num_out_features >= 0, kOp, ": num_out_features must be >= 0, got ", num_out_features);
  const auto x = node_features.contiguous();
  const auto sh = edge_sh.contiguous();
  const auto w = edge_weights.contiguous();
  const auto index = edge_index.contiguous();
  const int64_t num_nodes = x.size(0);
  const auto receiver_ptr = segment_pointers(index[1], num_nodes, "tensor_product_convolution");
  const int64_t* sender = index.data_ptr<int64_t>();
  check_senders(kOp, sender, index.size(1), num_nodes);
  auto out = at::empty({num_nodes, num_out_features}, x.options());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "mlipkit_tensor_product_convolution", [&] {
    const Plan<scalar_t> plan(kOp, couplings, paths, x.size(1), sh.size(1), w.size(1), num_out_features);
    const auto problem = plan.problem(sender, sender + index.size(1));
    const scalar_t* xp = x.data_ptr<scalar_t>();
    const scalar_t* shp = sh.data_ptr<scalar_t>();
    const scalar_t* wp = w.data_ptr<scalar_t>();
    scalar_t* outp = out.data_ptr<scalar_t>();
    at::parallel_for(0, num_nodes, kNodeGrain, [&](int64_t begin, int64_t end) {
      std::vector<scalar_t> scratch(static_cast<size_t>(plan.scratch_elements()));
      run_forward(problem, xp, shp, wp, WeightRows{0, false}, receiver_ptr.data(), begin, end, outp, scratch.data());
    });
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> convolution_backward_cpu(
    const at::Tensor& grad_out, const at::Tensor& node_features, const at::Tensor& edge_sh,
    const at::Tensor& edge_weights, const at::Tensor& edge_index, const at::Tensor& couplings, at::IntArrayRef paths) {
  check_operands(kOp, node_features, {{"edge_sh", edge_sh}, {"edge_weights", edge_weights}}, {}, edge_index);
  check_grad_out(kOp, "_backward", grad_out, node_features);
  const auto g = grad_out.contiguous();
  const auto x = node_features.contiguous();
  const auto sh = edge_sh.contiguous();
  const auto w = edge_weights.contiguous();
  const auto index = edge_index.contiguous();
  const int64_t num_nodes = x.size(0);
  const int64_t num_edges = index.size(1);
  // validates receivers (sorted, in range) as the forward does
  segment_pointers(index[1], num_nodes, "tensor_product_convolution_backward");
  const int64_t* sender = index.data_ptr<int64_t>();
  const auto [sender_ptr, sender_edges] = edges_by_sender(kOp, sender, num_edges, num_nodes);
  auto grad_x = at::empty_like(x);
  auto grad_sh = at::empty_like(sh);
  auto grad_w = at::empty_like(w);
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "mlipkit_tensor_product_convolution_backward", [&] {
    const Plan<scalar_t> plan(kOp, couplings, paths, x.size(1), sh.size(1), w.size(1), g.size(1));
    const auto problem = plan.problem(sender, sender + num_edges);
    const scalar_t* gp = g.data_ptr<scalar_t>();
    const scalar_t* xp = x.data_ptr<scalar_t>();
    const scalar_t* shp = sh.data_ptr<scalar_t>();
    const scalar_t* wp = w.data_ptr<scalar_t>();
    scalar_t* gxp = grad_x.data_ptr<scalar_t>();
    scalar_t* gshp = grad_sh.data_ptr<scalar_t>();
    scalar_t* gwp = grad_w.data_ptr<scalar_t>();
    at::parallel_for(0, num_nodes, kNodeGrain, [&](int64_t begin, int64_t end) {
      std::vector<scalar_t> scratch(static_cast<size_t>(plan.scratch_elements()));
      run_backward(problem, gp, xp, shp, wp, WeightRows{0, false}, sender_ptr.data(), sender_edges.data(), begin, end, gxp, gshp, gwp,
                   scratch.data());
    });
  });
  return {grad_x, grad_sh, grad_w};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> convolution_double_backward_cpu(
    const at::Tensor& grad_out, const at::Tensor& node_features, const at::Tensor& edge_sh,
    const at::Tensor& edge_weights, const at::Tensor& d_node_features, const at::Tensor& d_edge_sh,
    const at::Tensor& d_edge_weights, const at::Tensor& edge_index, const at::Tensor& couplings,
    at::IntArrayRef paths) {
  check_operands(kOp, node_features,
                 {{"edge_sh", edge_sh}, {"edge_weights", edge_weights}, {"d_edge_sh", d_edge_sh},
                  {"d_edge_weights", d_edge_weights}},
                 {{"grad_out", grad_out}, {"d_node_features", d_node_features}}, edge_index);
  check_grad_out(kOp, "_double_backward", grad_out, node_features);
  check_cotangents(kOp, node_features, edge_sh, edge_weights, d_node_features, d_edge_sh, d_edge_weights);
  const auto g = grad_out.contiguous();
  const auto x = node_features.contiguous();
  const auto sh = edge_sh.contiguous();
  const auto w = edge_weights.contiguous();
  const auto dx = d_node_features.contiguous();
  const auto dsh = d_edge_sh.contiguous();
  const auto dw = d_edge_weights.contiguous();
  const auto index = edge_index.contiguous();
  const int64_t num_nodes = x.size(0);
  const int64_t num_edges = index.size(1);
  const auto receiver_ptr = segment_pointers(index[1], num_nodes, "tensor_product_convolution_double_backward");
  const int64_t* sender = index.data_ptr<int64_t>();
  const auto [sender_ptr, sender_edges] = edges_by_sender(kOp, sender, num_edges, num_nodes);
  auto grad_g = at::empty_like(g);
  auto grad_x = at::empty_like(x);
  auto grad_sh = at::empty_like(sh);
  auto grad_w = at::empty_like(w);
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "mlipkit_tensor_product_convolution_double_backward", [&] {
    const Plan<scalar_t> plan(kOp, couplings, paths, x.size(1), sh.size(1), w.size(1), g.size(1));
    const auto problem = plan.problem(sender, sender + num_edges);
    const size_t scratch_size = static_cast<size_t>(2 * plan.scratch_elements());
    at::parallel_for(0, num_nodes, kNodeGrain, [&](int64_t begin, int64_t end) {
      std::vector<scalar_t> scratch(scratch_size);
      run_double_forward(problem, x.data_ptr<scalar_t>(), dx.data_ptr<scalar_t>(), sh.data_ptr<scalar_t>(),
                         dsh.data_ptr<scalar_t>(), w.data_ptr<scalar_t>(), dw.data_ptr<scalar_t>(),
                         receiver_ptr.data(), begin, end, grad_g.data_ptr<scalar_t>(), scratch.data());
    });
    at::parallel_for(0, num_nodes, kNodeGrain, [&](int64_t begin, int64_t end) {
      std::vector<scalar_t> scratch(scratch_size);
      run_double_backward(problem, g.data_ptr<scalar_t>(), x.data_ptr<scalar_t>(), dx.data_ptr<scalar_t>(),
                          sh.data_ptr<scalar_t>(), dsh.data_ptr<scalar_t>(), w.data_ptr<scalar_t>(),
                          dw.data_ptr<scalar_t>(), sender_ptr.data(), sender_edges.data(), begin, end,
                          grad_x.data_ptr<scalar_t>(), grad_sh.data_ptr<scalar_t>(), grad_w.data_ptr<scalar_t>(),
                          scratch.data());
    });
  });
  return {grad_g, grad_x, grad_sh, grad_w};
}

// ---------------------------------------------------------------- Meta (shapes only)

at::Tensor convolution_meta(const at::Tensor& node_features, const at::Tensor& edge_sh, const at::Tensor& edge_weights,
                            const at::Tensor& edge_index, const at::Tensor& couplings, at::IntArrayRef paths,
                            int64_t num_out_features) {
  (void)edge_sh, (void)edge_weights, (void)edge_index, (void)couplings, (void)paths;
  return at::empty_symint({node_features.sym_size(0), c10::SymInt(num_out_features)}, node_features.options());
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> convolution_backward_meta(
    const at::Tensor& grad_out, const at::Tensor& node_features, const at::Tensor& edge_sh,
    const at::Tensor& edge_weights, const at::Tensor& edge_index, const at::Tensor& couplings, at::IntArrayRef paths) {
  (void)grad_out, (void)edge_index, (void)couplings, (void)paths;
  return {at::empty_like(node_features), at::empty_like(edge_sh), at::empty_like(edge_weights)};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> convolution_double_backward_meta(
    const at::Tensor& grad_out, const at::Tensor& node_features, const at::Tensor& edge_sh,
    const at::Tensor& edge_weights, const at::Tensor& d_node_features, const at::Tensor& d_edge_sh,
    const at::Tensor& d_edge_weights, const at::Tensor& edge_index, const at::Tensor& couplings,
    at::IntArrayRef paths) {
  (void)d_node_features, (void)d_edge_sh, (void)d_edge_weights, (void)edge_index, (void)couplings, (void)paths;
  return {at::empty_like(grad_out), at::empty_like(node_features), at::empty_like(edge_sh),
          at::empty_like(edge_weights)};
}

// ---------------------------------------------------------------- autograd

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

class ConvolutionFunction : public torch::autograd::Function<ConvolutionFunction> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& sh, const at::Tensor& w,
                            const at::Tensor& edge_index, const at::Tensor& couplings, at::IntArrayRef paths,
                            int64_t num_out_features) {
    ctx->save_for_backward({x, sh, w, edge_index, couplings});
    ctx->saved_data["paths"] = paths.vec();
    at::AutoDispatchBelowADInplaceOrView guard;
    return call_forward(x, sh, w, edge_index, couplings, paths, num_out_features);
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const auto paths = ctx->saved_data["paths"].toIntVector();
    if (!grads[0].defined()) {
      return {at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
    }
    auto [grad_x, grad_sh, grad_w] = call_backward(grads[0], saved[0], saved[1], saved[2], saved[3], saved[4], paths);
    return {grad_x, grad_sh, grad_w, at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

class ConvolutionBackwardFunction : public torch::autograd::Function<ConvolutionBackwardFunction> {
 public:
  static variable_list forward(AutogradContext* ctx, const at::Tensor& grad_out, const at::Tensor& x,
                               const at::Tensor& sh, const at::Tensor& w, const at::Tensor& edge_index,
                               const at::Tensor& couplings, at::IntArrayRef paths) {
    ctx->save_for_backward({grad_out, x, sh, w, edge_index, couplings});
    ctx->saved_data["paths"] = paths.vec();
    at::AutoDispatchBelowADInplaceOrView guard;
    auto [grad_x, grad_sh, grad_w] = call_backward(grad_out, x, sh, w, edge_index, couplings, paths);
    return {grad_x, grad_sh, grad_w};
  }

  // With S(x, Y, w, g) = <g, F(x, Y, w)> the backward op returns dS/d(x, Y, w); the
  // cotangents (dx, dY, dw) of those outputs make L = S(dx,Y,w,g) + S(x,dY,w,g) + S(x,Y,dw,g).
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const auto& g = saved[0];
    const auto& x = saved[1];
    const auto& sh = saved[2];
    const auto& w = saved[3];
    const auto& edge_index = saved[4];
    const auto& couplings = saved[5];
    const auto paths = ctx->saved_data["paths"].toIntVector();
    const auto& dx = grads[0];
    const auto& dsh = grads[1];
    const auto& dw = grads[2];
    if (!dx.defined() && !dsh.defined() && !dw.defined()) return variable_list(7);
    const auto grad = double_backward(g, x, sh, w, dx, dsh, dw, edge_index, couplings, paths);
    return {grad.grad_out, grad.x, grad.sh, grad.w, at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

at::Tensor convolution_autograd(const at::Tensor& x, const at::Tensor& sh, const at::Tensor& w,
                                const at::Tensor& edge_index, const at::Tensor& couplings, at::IntArrayRef paths,
                                int64_t num_out_features) {
  return ConvolutionFunction::apply(x, sh, w, edge_index, couplings, paths, num_out_features);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> convolution_backward_autograd(
    const at::Tensor& grad_out, const at::Tensor& x, const at::Tensor& sh, const at::Tensor& w,
    const at::Tensor& edge_index, const at::Tensor& couplings, at::IntArrayRef paths) {
  auto outputs = ConvolutionBackwardFunction::apply(grad_out, x, sh, w, edge_index, couplings, paths);
  return {outputs[0], outputs[1], outputs[2]};
}

std::string selected_isa_name() { return isa_name(active_isa()); }

}  // namespace
}  // namespace convolution

TORCH_LIBRARY_FRAGMENT(mlipkit, m) {
  m.def(schemas::kTensorProductConvolution);
  m.def(schemas::kTensorProductConvolutionBackward);
  m.def(schemas::kTensorProductConvolutionDoubleBackward);
  m.def("kernel_isa() -> str", convolution::selected_isa_name);
}

TORCH_LIBRARY_IMPL(mlipkit, CPU, m) {
  m.impl("tensor_product_convolution", convolution::convolution_cpu);
  m.impl("tensor_product_convolution_backward", convolution::convolution_backward_cpu);
  m.impl("tensor_product_convolution_double_backward", convolution::convolution_double_backward_cpu);
}

TORCH_LIBRARY_IMPL(mlipkit, Meta, m) {
  m.impl("tensor_product_convolution", convolution::convolution_meta);
  m.impl("tensor_product_convolution_backward", convolution::convolution_backward_meta);
  m.impl("tensor_product_convolution_double_backward", convolution::convolution_double_backward_meta);
}

TORCH_LIBRARY_IMPL(mlipkit, Autograd, m) {
  m.impl("tensor_product_convolution", convolution::convolution_autograd);
  m.impl("tensor_product_convolution_backward", convolution::convolution_backward_autograd);
}

}  // namespace mlipkit
