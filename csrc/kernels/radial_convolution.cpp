// mlipkit::radial_convolution: the fused convolution with the radial MLP inside,
// so that the per-edge tensor-product weights ([E, paths x channels], the
// largest tensor of a NequIP or MACE layer) never exist in memory.
//
//   radial_convolution(node_features [N, F_in], edge_sh [E, S], edge_radial [E, R],
//       mlp_weights [sum of widths[i] x widths[i+1]], mlp_widths int[] (R, hidden..., W),
//       activation str, activation_scale float, edge_index [2, E], couplings, paths, num_out_features)
//     = tensor_product_convolution(node_features, edge_sh, mlp(edge_radial), edge_index, ...)
//   mlp(r) = h_L W_L with h_0 = r, h_{i+1} = activation(h_i W_i) * activation_scale,
//
// the weights W_i stored row-major one after another (already normalised, as
// e3nn's FullyConnectedNet scales them). The edges are cut into tiles of about
// kTileEdges (whole receivers forward, whole senders backward); each tile's MLP
// runs with ATen's matmuls into a scratch tile that the convolution kernels
// read and write as their edge weights. The backward op recomputes each
// sender tile's MLP and returns the gradients of the node features, harmonics,
// radial inputs and (when asked for) MLP weights. The tiling depends only on
// the graph, never on the number of threads, so results are deterministic.
//
// Derivatives of the first order use the backward op. Under create_graph
// (force training) the backward is composed instead of differentiable ops:
// the MLP on all edges, tensor_product_convolution_backward and the MLP's
// backward (matmuls and mlipkit::activation_derivative), all differentiable to
// any order, so higher derivatives follow without new kernels.

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/autograd.h>
#include <torch/library.h>

#include <algorithm>
#include <cstring>
#include <string>
#include <vector>

#include "../ops/sorted_segments.hpp"
#include "activation.hpp"
#include "radial_convolution.hpp"
#include "convolution_problem.hpp"
#include "fixed_size.hpp"
#include "../ops/schemas.hpp"

namespace mlipkit {
namespace convolution {
namespace {

constexpr const char* kRadialOp = "mlipkit::radial_convolution";
// Edges per tile: the tile's weights and their gradient ([tile, W] each) stay in cache.
constexpr int64_t kTileEdges = 128;
// At most this many partial sums of the MLP weights' gradient, reduced in a fixed order.
constexpr int64_t kWeightGradientChunks = 64;

// ---------------------------------------------------------------- the MLP

struct Mlp {
  std::vector<at::Tensor> weights;  // [widths[i], widths[i+1]] views of the flat weights
  std::string activation;
  double scale;  // after each hidden activation
};

Mlp mlp_of(const at::Tensor& flat, at::IntArrayRef widths, const std::string& activation, double scale) {
  TORCH_CHECK(widths.size() >= 2, kRadialOp, ": mlp_widths must name the input and output widths, got ", widths);
  TORCH_CHECK(flat.dim() == 1, kRadialOp, ": mlp_weights must be 1-D, got shape ", flat.sizes());
  activation::check_name(kRadialOp, activation);
  Mlp mlp{{}, activation, scale};
  int64_t offset = 0;
  for (size_t i = 0; i + 1 < widths.size(); ++i) {
    TORCH_CHECK(widths[i] > 0 && widths[i + 1] > 0, kRadialOp, ": mlp_widths must be positive, got ", widths);
    offset += widths[i] * widths[i + 1];
  }
  TORCH_CHECK(fixed_size(flat, 0) == offset, kRadialOp, ": mlp_widths ", widths, " need ", offset,
              " weights but mlp_weights has ", fixed_size(flat, 0));
  offset = 0;
  for (size_t i = 0; i + 1 < widths.size(); ++i) {
    mlp.weights.push_back(flat.narrow(0, offset, widths[i] * widths[i + 1]).view({widths[i], widths[i + 1]}));
    offset += widths[i] * widths[i + 1];
  }
  return mlp;
}

// What the MLP's backward needs: each layer's input and each hidden pre-activation.
struct MlpTrace {
  std::vector<at::Tensor> inputs;
  std::vector<at::Tensor> pre;
};

at::Tensor mlp_forward(const Mlp& mlp, const at::Tensor& radial, MlpTrace* trace) {
  at::Tensor h = radial;
  const size_t last = mlp.weights.size() - 1;
  for (size_t i = 0; i <= last; ++i) {
    if (trace != nullptr) trace->inputs.push_back(h);
    at::Tensor z = at::mm(h, mlp.weights[i]);
    if (i == last) return z;
    if (trace != nullptr) trace->pre.push_back(z);
    h = activation::derivative(z, mlp.activation, 0, mlp.scale);
  }
  return h;
}

// The gradients of the radial inputs and (with weight_gradients) of each weight matrix, from the outputs' gradient.
std::pair<at::Tensor, std::vector<at::Tensor>> mlp_backward(const Mlp& mlp, const MlpTrace& trace,
                                                            const at::Tensor& grad_output, bool weight_gradients) {
  std::vector<at::Tensor> grad_weights(mlp.weights.size());
  at::Tensor g = grad_output;
  for (size_t i = mlp.weights.size(); i-- > 0;) {
    if (weight_gradients) grad_weights[i] = at::mm(trace.inputs[i].t(), g);
    g = at::mm(g, mlp.weights[i].t());
    if (i > 0) g = activation::derivative(trace.pre[i - 1], mlp.activation, 1, mlp.scale, g);
  }
  return {g, grad_weights};
}

at::Tensor flat_weight_gradient(const std::vector<at::Tensor>& grad_weights) {
  std::vector<at::Tensor> flat;
  for (const auto& g : grad_weights) flat.push_back(g.reshape(-1));
  return at::cat(flat);
}

// ---------------------------------------------------------------- checks and tiles

void check_mlp_input(const at::Tensor& radial, at::IntArrayRef widths) {
  TORCH_CHECK(widths.front() == radial.size(1), kRadialOp, ": the MLP takes ", widths.front(),
              " radial features but edge_radial has ", radial.size(1));
}

// Consecutive nodes [tile_start[t], tile_start[t+1]) whose edges (ptr[node+1] - ptr[node]) add up to about
// kTileEdges; a node with more edges is a tile of its own.
std::vector<int64_t> node_tiles(const std::vector<int64_t>& ptr) {
  const int64_t num_nodes = static_cast<int64_t>(ptr.size()) - 1;
  std::vector<int64_t> starts{0};
  for (int64_t node = 0; node < num_nodes; ++node) {
    const int64_t first = starts.back();
    if (node > first && ptr[static_cast<size_t>(node) + 1] - ptr[static_cast<size_t>(first)] > kTileEdges) {
      starts.push_back(node);
    }
  }
  starts.push_back(num_nodes);
  if (num_nodes == 0) starts.pop_back();
  return starts;
}

// ---------------------------------------------------------------- CPU ops

at::Tensor radial_convolution_cpu(const at::Tensor& node_features, const at::Tensor& edge_sh,
                                  const at::Tensor& edge_radial, const at::Tensor& mlp_weights,
                                  at::IntArrayRef mlp_widths, c10::string_view activation, double activation_scale,
                                  const at::Tensor& edge_index, const at::Tensor& couplings, at::IntArrayRef paths,
                                  int64_t num_out_features) {
  check_operands(kRadialOp, node_features, {{"edge_sh", edge_sh}, {"edge_radial", edge_radial}},
                 {{"mlp_weights", mlp_weights}}, edge_index);
  TORCH_CHECK(num_out_features >= 0, kRadialOp, ": num_out_features must be >= 0, got ", num_out_features);
  const auto x = node_features.contiguous();
  const auto sh = edge_sh.contiguous();
  const auto radial = edge_radial.contiguous();
  const auto index = edge_index.contiguous();
  const Mlp mlp = mlp_of(mlp_weights.contiguous(), mlp_widths, std::string(activation), activation_scale);
  check_mlp_input(radial, mlp_widths);
  const int64_t num_nodes = x.size(0);
  const int64_t num_weights = mlp_widths.back();
  const auto receiver_ptr = segment_pointers(index[1], num_nodes, "radial_convolution");
  const int64_t* sender = index.data_ptr<int64_t>();
  check_senders(kRadialOp, sender, index.size(1), num_nodes);
  const auto tiles = node_tiles(receiver_ptr);
  auto out = at::empty({num_nodes, num_out_features}, x.options());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "mlipkit_radial_convolution", [&] {
    const Plan<scalar_t> plan(kRadialOp, couplings, paths, x.size(1), sh.size(1), num_weights, num_out_features);
    const auto problem = plan.problem(sender, sender + index.size(1));
    const scalar_t* xp = x.data_ptr<scalar_t>();
    const scalar_t* shp = sh.data_ptr<scalar_t>();
    scalar_t* outp = out.data_ptr<scalar_t>();
    const int64_t num_tiles = static_cast<int64_t>(tiles.size()) - 1;
    at::parallel_for(0, std::max<int64_t>(num_tiles, 0), 1, [&](int64_t begin, int64_t end) {
      std::vector<scalar_t> scratch(static_cast<size_t>(plan.scratch_elements()));
      for (int64_t t = begin; t < end; ++t) {
        const int64_t first_node = tiles[static_cast<size_t>(t)], last_node = tiles[static_cast<size_t>(t) + 1];
        const int64_t first_edge = receiver_ptr[static_cast<size_t>(first_node)];
        const int64_t num_tile_edges = receiver_ptr[static_cast<size_t>(last_node)] - first_edge;
        const auto weights = mlp_forward(mlp, radial.narrow(0, first_edge, num_tile_edges), nullptr).contiguous();
        run_forward(problem, xp, shp, weights.data_ptr<scalar_t>(), WeightRows{first_edge, false},
                    receiver_ptr.data(), first_node, last_node, outp, scratch.data());
      }
    });
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> radial_convolution_backward_cpu(
    const at::Tensor& grad_out, const at::Tensor& node_features, const at::Tensor& edge_sh,
    const at::Tensor& edge_radial, const at::Tensor& mlp_weights, at::IntArrayRef mlp_widths,
    c10::string_view activation, double activation_scale, const at::Tensor& edge_index, const at::Tensor& couplings,
    at::IntArrayRef paths, bool weight_gradients) {
  check_operands(kRadialOp, node_features, {{"edge_sh", edge_sh}, {"edge_radial", edge_radial}},
                 {{"mlp_weights", mlp_weights}}, edge_index);
  check_grad_out(kRadialOp, "_backward", grad_out, node_features);
  const auto g = grad_out.contiguous();
  const auto x = node_features.contiguous();
  const auto sh = edge_sh.contiguous();
  const auto radial = edge_radial.contiguous();
  const auto flat = mlp_weights.contiguous();
  const auto index = edge_index.contiguous();
  const Mlp mlp = mlp_of(flat, mlp_widths, std::string(activation), activation_scale);
  check_mlp_input(radial, mlp_widths);
  const int64_t num_nodes = x.size(0);
  const int64_t num_edges = index.size(1);
  const int64_t num_radial = radial.size(1);
  const int64_t num_weights = mlp_widths.back();
  segment_pointers(index[1], num_nodes, "radial_convolution_backward");
  const int64_t* sender = index.data_ptr<int64_t>();
  const auto [sender_ptr, sender_edges] = edges_by_sender(kRadialOp, sender, num_edges, num_nodes);
  const auto tiles = node_tiles(sender_ptr);
  const int64_t num_tiles = std::max<int64_t>(static_cast<int64_t>(tiles.size()) - 1, 0);
  // tiles [chunk * num_tiles / num_chunks, ...) share one partial sum of the weight gradient
  const int64_t num_chunks = weight_gradients ? std::min(num_tiles, kWeightGradientChunks) : num_tiles;
  auto grad_x = at::empty_like(x);
  auto grad_sh = at::empty_like(sh);
  auto grad_radial = at::empty_like(radial);
  auto partial_weight_gradients = at::zeros({weight_gradients ? num_chunks : 0, flat.numel()}, flat.options());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "mlipkit_radial_convolution_backward", [&] {
    const Plan<scalar_t> plan(kRadialOp, couplings, paths, x.size(1), sh.size(1), num_weights, g.size(1));
    const auto problem = plan.problem(sender, sender + num_edges);
    const scalar_t* gp = g.data_ptr<scalar_t>();
    const scalar_t* xp = x.data_ptr<scalar_t>();
    const scalar_t* shp = sh.data_ptr<scalar_t>();
    scalar_t* gxp = grad_x.data_ptr<scalar_t>();
    scalar_t* gshp = grad_sh.data_ptr<scalar_t>();
    scalar_t* grp = grad_radial.data_ptr<scalar_t>();
    const auto index_options = at::TensorOptions().dtype(at::kLong);
    at::parallel_for(0, num_chunks, 1, [&](int64_t chunk_begin, int64_t chunk_end) {
      std::vector<scalar_t> scratch(static_cast<size_t>(plan.scratch_elements()));
      for (int64_t chunk = chunk_begin; chunk < chunk_end; ++chunk) {
        for (int64_t t = chunk * num_tiles / num_chunks; t < (chunk + 1) * num_tiles / num_chunks; ++t) {
          const int64_t first_node = tiles[static_cast<size_t>(t)], last_node = tiles[static_cast<size_t>(t) + 1];
          const int64_t first_position = sender_ptr[static_cast<size_t>(first_node)];
          const int64_t num_tile_edges = sender_ptr[static_cast<size_t>(last_node)] - first_position;
          const int64_t* tile_edges = sender_edges.data() + first_position;
          const auto edge_ids = at::from_blob(const_cast<int64_t*>(tile_edges), {num_tile_edges}, index_options);
          MlpTrace trace;
          const auto weights = mlp_forward(mlp, radial.index_select(0, edge_ids), &trace).contiguous();
          auto grad_weights = at::empty_like(weights);
          run_backward(problem, gp, xp, shp, weights.data_ptr<scalar_t>(), WeightRows{first_position, true},
                       sender_ptr.data(), sender_edges.data(), first_node, last_node, gxp, gshp,
                       grad_weights.data_ptr<scalar_t>(), scratch.data());
          auto [grad_tile_radial, grad_mlp] = mlp_backward(mlp, trace, grad_weights, weight_gradients);
          grad_tile_radial = grad_tile_radial.contiguous();
          const scalar_t* rows = grad_tile_radial.data_ptr<scalar_t>();
          for (int64_t n = 0; n < num_tile_edges; ++n) {
            std::memcpy(grp + tile_edges[n] * num_radial, rows + n * num_radial, sizeof(scalar_t) * num_radial);
          }
          if (weight_gradients) partial_weight_gradients[chunk].add_(flat_weight_gradient(grad_mlp));
        }
      }
    });
  });
  at::Tensor grad_mlp_weights = at::zeros_like(flat);
  for (int64_t chunk = 0; chunk < partial_weight_gradients.size(0); ++chunk) {
    grad_mlp_weights.add_(partial_weight_gradients[chunk]);
  }
  return {grad_x, grad_sh, grad_radial, grad_mlp_weights};
}

// ---------------------------------------------------------------- Meta (shapes only)

at::Tensor radial_convolution_meta(const at::Tensor& node_features, const at::Tensor& edge_sh,
                                   const at::Tensor& edge_radial, const at::Tensor& mlp_weights,
                                   at::IntArrayRef mlp_widths, c10::string_view activation, double activation_scale,
                                   const at::Tensor& edge_index, const at::Tensor& couplings, at::IntArrayRef paths,
                                   int64_t num_out_features) {
  (void)edge_sh, (void)edge_radial, (void)mlp_weights, (void)mlp_widths, (void)activation, (void)activation_scale,
      (void)edge_index, (void)couplings, (void)paths;
  return at::empty_symint({node_features.sym_size(0), c10::SymInt(num_out_features)}, node_features.options());
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> radial_convolution_backward_meta(
    const at::Tensor& grad_out, const at::Tensor& node_features, const at::Tensor& edge_sh,
    const at::Tensor& edge_radial, const at::Tensor& mlp_weights, at::IntArrayRef mlp_widths,
    c10::string_view activation, double activation_scale, const at::Tensor& edge_index, const at::Tensor& couplings,
    at::IntArrayRef paths, bool weight_gradients) {
  (void)grad_out, (void)mlp_widths, (void)activation, (void)activation_scale, (void)edge_index, (void)couplings,
      (void)paths, (void)weight_gradients;
  return {at::empty_like(node_features), at::empty_like(edge_sh), at::empty_like(edge_radial),
          at::empty_like(mlp_weights)};
}

// ---------------------------------------------------------------- autograd

at::Tensor call_radial_forward(const at::Tensor& x, const at::Tensor& sh, const at::Tensor& radial,
                               const at::Tensor& flat, at::IntArrayRef widths, c10::string_view activation,
                               double scale, const at::Tensor& edge_index, const at::Tensor& couplings,
                               at::IntArrayRef paths, int64_t num_out_features) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("mlipkit::radial_convolution", "")
                       .typed<at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                         at::IntArrayRef, c10::string_view, double, const at::Tensor&,
                                         const at::Tensor&, at::IntArrayRef, int64_t)>();
  return op.call(x, sh, radial, flat, widths, activation, scale, edge_index, couplings, paths, num_out_features);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> call_radial_backward(
    const at::Tensor& grad_out, const at::Tensor& x, const at::Tensor& sh, const at::Tensor& radial,
    const at::Tensor& flat, at::IntArrayRef widths, c10::string_view activation, double scale,
    const at::Tensor& edge_index, const at::Tensor& couplings, at::IntArrayRef paths, bool weight_gradients) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("mlipkit::radial_convolution_backward", "")
                       .typed<std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor>(
                           const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&,
                           const at::Tensor&, at::IntArrayRef, c10::string_view, double, const at::Tensor&,
                           const at::Tensor&, at::IntArrayRef, bool)>();
  return op.call(grad_out, x, sh, radial, flat, widths, activation, scale, edge_index, couplings, paths,
                 weight_gradients);
}

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

class RadialConvolutionFunction : public torch::autograd::Function<RadialConvolutionFunction> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& sh,
                            const at::Tensor& radial, const at::Tensor& flat, at::IntArrayRef widths,
                            c10::string_view activation, double scale, const at::Tensor& edge_index,
                            const at::Tensor& couplings, at::IntArrayRef paths, int64_t num_out_features) {
    ctx->save_for_backward({x, sh, radial, flat, edge_index, couplings});
    ctx->saved_data["widths"] = widths.vec();
    ctx->saved_data["activation"] = std::string(activation);
    ctx->saved_data["scale"] = scale;
    ctx->saved_data["paths"] = paths.vec();
    at::AutoDispatchBelowADInplaceOrView guard;
    return call_radial_forward(x, sh, radial, flat, widths, activation, scale, edge_index, couplings, paths,
                               num_out_features);
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    variable_list result(11);
    const auto& g = grads[0];
    if (!g.defined()) return result;
    const auto saved = ctx->get_saved_variables();
    const auto& x = saved[0];
    const auto& sh = saved[1];
    const auto& radial = saved[2];
    const auto& flat = saved[3];
    const auto& edge_index = saved[4];
    const auto& couplings = saved[5];
    const auto widths = ctx->saved_data["widths"].toIntVector();
    const auto activation = ctx->saved_data["activation"].toStringRef();
    const double scale = ctx->saved_data["scale"].toDouble();
    const auto paths = ctx->saved_data["paths"].toIntVector();
    const bool weight_gradients = ctx->needs_input_grad(3);
    if (!at::GradMode::is_enabled()) {
      auto [grad_x, grad_sh, grad_radial, grad_flat] = call_radial_backward(
          g, x, sh, radial, flat, widths, activation, scale, edge_index, couplings, paths, weight_gradients);
      result[0] = grad_x;
      result[1] = grad_sh;
      result[2] = grad_radial;
      if (weight_gradients) result[3] = grad_flat;
      return result;
    }
    // create_graph: the same backward from differentiable ops
    auto [grad_x, grad_sh, grad_radial, grad_flat] = radial_convolution_backward_composite(
        g, x, sh, radial, flat, widths, activation, scale, edge_index, couplings, paths, weight_gradients);
    result[0] = grad_x;
    result[1] = grad_sh;
    result[2] = grad_radial;
    if (weight_gradients) result[3] = grad_flat;
    return result;
  }
};

at::Tensor radial_convolution_autograd(const at::Tensor& x, const at::Tensor& sh, const at::Tensor& radial,
                                       const at::Tensor& flat, at::IntArrayRef widths, c10::string_view activation,
                                       double scale, const at::Tensor& edge_index, const at::Tensor& couplings,
                                       at::IntArrayRef paths, int64_t num_out_features) {
  return RadialConvolutionFunction::apply(x, sh, radial, flat, widths, activation, scale, edge_index, couplings,
                                          paths, num_out_features);
}

}  // namespace

// Any other device (CUDA), and the CPU backward under create_graph: the MLP on all edges at once with ATen's
// matmuls, then the plain convolution ops, all differentiable; the weights [E, W] exist for the call (the CPU
// op's tiles, which never store them, are not carried over to the GPU yet).
at::Tensor radial_convolution_composite(const at::Tensor& node_features, const at::Tensor& edge_sh,
                                        const at::Tensor& edge_radial, const at::Tensor& mlp_weights,
                                        at::IntArrayRef mlp_widths, c10::string_view activation,
                                        double activation_scale, const at::Tensor& edge_index,
                                        const at::Tensor& couplings, at::IntArrayRef paths, int64_t num_out_features) {
  check_operands(kRadialOp, node_features, {{"edge_sh", edge_sh}, {"edge_radial", edge_radial}},
                 {{"mlp_weights", mlp_weights}}, edge_index);
  const Mlp mlp = mlp_of(mlp_weights.contiguous(), mlp_widths, std::string(activation), activation_scale);
  check_mlp_input(edge_radial, mlp_widths);
  const auto weights = mlp_forward(mlp, edge_radial, nullptr);
  return call_forward(node_features, edge_sh, weights, edge_index, couplings, paths, num_out_features);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> radial_convolution_backward_composite(
    const at::Tensor& grad_out, const at::Tensor& node_features, const at::Tensor& edge_sh,
    const at::Tensor& edge_radial, const at::Tensor& mlp_weights, at::IntArrayRef mlp_widths,
    c10::string_view activation, double activation_scale, const at::Tensor& edge_index, const at::Tensor& couplings,
    at::IntArrayRef paths, bool weight_gradients) {
  check_operands(kRadialOp, node_features, {{"edge_sh", edge_sh}, {"edge_radial", edge_radial}},
                 {{"mlp_weights", mlp_weights}}, edge_index);
  check_grad_out(kRadialOp, "_backward", grad_out, node_features);
  const Mlp mlp = mlp_of(mlp_weights.contiguous(), mlp_widths, std::string(activation), activation_scale);
  check_mlp_input(edge_radial, mlp_widths);
  MlpTrace trace;
  const auto weights = mlp_forward(mlp, edge_radial, &trace);
  auto [grad_x, grad_sh, grad_weights] = call_backward(grad_out, node_features, edge_sh, weights, edge_index,
                                                       couplings, paths);
  auto [grad_radial, grad_mlp] = mlp_backward(mlp, trace, grad_weights, weight_gradients);
  return {grad_x, grad_sh, grad_radial,
          weight_gradients ? flat_weight_gradient(grad_mlp) : at::zeros_like(mlp_weights)};
}

}  // namespace convolution

TORCH_LIBRARY_FRAGMENT(mlipkit, m) {
  m.def(schemas::kRadialConvolution);
  m.def(schemas::kRadialConvolutionBackward);
}

TORCH_LIBRARY_IMPL(mlipkit, CPU, m) {
  m.impl("radial_convolution", convolution::radial_convolution_cpu);
  m.impl("radial_convolution_backward", convolution::radial_convolution_backward_cpu);
}

TORCH_LIBRARY_IMPL(mlipkit, CUDA, m) {
  m.impl("radial_convolution", convolution::radial_convolution_composite);
  m.impl("radial_convolution_backward", convolution::radial_convolution_backward_composite);
}

TORCH_LIBRARY_IMPL(mlipkit, Meta, m) {
  m.impl("radial_convolution", convolution::radial_convolution_meta);
  m.impl("radial_convolution_backward", convolution::radial_convolution_backward_meta);
}

TORCH_LIBRARY_IMPL(mlipkit, Autograd, m) {
  m.impl("radial_convolution", convolution::radial_convolution_autograd);
}

}  // namespace mlipkit
