// The device ops: the host side of the kernels in kernels.cuh, written once for
// the GPU (cuda_ops.cu, launching on the current CUDA stream) and for its CPU
// emulation (emulated_ops.cpp, launching as a loop). The including file defines
//
//   template <typename F> void launch(int64_t num_elements, const F& kernel);
//
// in namespace mlipkit::device before including this file. Plans are built on
// the host from the same validated plans as the CPU kernels' and copied to the
// device in two transfers; graphs are validated on the device with one
// synchronisation per op.

#pragma once

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <c10/core/DeviceGuard.h>
#include <torch/library.h>

#include <algorithm>
#include <array>
#include <initializer_list>
#include <tuple>
#include <utility>
#include <vector>

#include "../kernels/convolution_problem.hpp"
#include "../kernels/polynomial_terms.hpp"
#include "../ops/segment_outer.hpp"
#include "kernels.cuh"

namespace mlipkit {
namespace device {

// Integer and value arrays made on the host, copied to a device in one transfer each; each registered field
// of a plan struct points into the copy afterwards.
template <typename T>
class Arrays {
 public:
  void add(const int64_t*& field, const std::vector<int64_t>& values) {
    int_fields_.emplace_back(&field, static_cast<int64_t>(ints_.size()));
    ints_.insert(ints_.end(), values.begin(), values.end());
  }

  void add(const T*& field, const std::vector<T>& values) {
    value_fields_.emplace_back(&field, static_cast<int64_t>(values_.size()));
    values_.insert(values_.end(), values.begin(), values.end());
  }

  void upload(const at::Device& device) {
    ints_on_device_ = at::tensor(ints_.empty() ? std::vector<int64_t>{0} : ints_, at::kLong).to(device);
    values_on_device_ = at::tensor(values_.empty() ? std::vector<T>{T(0)} : values_, at::CppTypeToScalarType<T>::value)
                            .to(device);
    for (auto& [field, offset] : int_fields_) *field = ints_on_device_.template data_ptr<int64_t>() + offset;
    for (auto& [field, offset] : value_fields_) *field = values_on_device_.template data_ptr<T>() + offset;
  }

 private:
  std::vector<int64_t> ints_;
  std::vector<T> values_;
  std::vector<std::pair<const int64_t**, int64_t>> int_fields_;
  std::vector<std::pair<const T**, int64_t>> value_fields_;
  at::Tensor ints_on_device_, values_on_device_;
};

// The entries grouped by key in CSR form: ptr[num_keys + 1] and the entries in key order, each key's in their
// given order (the CPU ops' stable counting sort, rows_by_group).
template <typename Entry>
std::pair<std::vector<int64_t>, std::vector<Entry>> by_key(const std::vector<std::pair<int64_t, Entry>>& keyed,
                                                           int64_t num_keys) {
  std::vector<int64_t> keys;
  for (const auto& item : keyed) keys.push_back(item.first);
  auto [ptr, rows] = rows_by_group(keys.data(), static_cast<int64_t>(keys.size()), num_keys);
  std::vector<Entry> entries;
  for (const int64_t row : rows) entries.push_back(keyed[static_cast<size_t>(row)].second);
  return {std::move(ptr), std::move(entries)};
}

// ---------------------------------------------------------------- convolution plan

struct NonZero {
  int64_t i, j, k;
  double c;
};

template <typename T>
class DeviceConvolutionPlan {
 public:
  DeviceConvolutionPlan(const convolution::Problem<T>& cpu, const at::Device& device) {
    ConvolutionPlan<T>& p = plan_;
    p.num_in = cpu.num_in_features;
    p.num_sh = cpu.num_sh;
    p.num_weights = cpu.num_weights;
    p.num_out = cpu.num_out_features;
    std::vector<std::vector<NonZero>> groups;
    for (int64_t g = 0; g < cpu.num_groups; ++g) {
      const auto& group = cpu.groups[g];
      std::vector<NonZero> nonzeros;
      for (int64_t pair = 0; pair < group.num_pairs; ++pair) {
        for (int64_t z = group.pair_nz[pair]; z < group.pair_nz[pair + 1]; ++z) {
          nonzeros.push_back(NonZero{group.pair_i[pair], group.nz_j[z], group.pair_k[pair],
                                     static_cast<double>(group.nz_c[z])});
        }
      }
      groups.push_back(std::move(nonzeros));
    }
    add_nonzeros(groups, p.by_k, [](const NonZero& z) { return z.k; });
    add_nonzeros(groups, p.by_i, [](const NonZero& z) { return z.i; });
    add_nonzeros(groups, p.by_j, [](const NonZero& z) { return z.j; });
    std::vector<int64_t> nz_begin, nz_end;
    int64_t offset = 0;
    for (const auto& nonzeros : groups) {
      nz_begin.push_back(offset);
      offset += static_cast<int64_t>(nonzeros.size());
      nz_end.push_back(offset);
    }
    arrays_.add(p.group_nz_begin, nz_begin);
    arrays_.add(p.group_nz_end, nz_end);

    std::vector<int64_t> group, mul, in, sh, out, weight;
    // the paths' weight columns tile [0, W) (the CPU plan checked), so each column is one path and channel
    std::vector<int64_t> weight_path(static_cast<size_t>(p.num_weights)), weight_u(weight_path.size());
    std::vector<std::pair<int64_t, std::array<int64_t, 3>>> out_columns, in_columns;
    std::vector<std::pair<int64_t, std::array<int64_t, 2>>> sh_columns;
    for (int64_t path = 0; path < cpu.num_paths; ++path) {
      const auto& spec = cpu.paths[path];
      const auto& g = cpu.groups[spec.group];
      group.push_back(spec.group);
      mul.push_back(spec.mul);
      in.push_back(spec.in_offset);
      sh.push_back(g.sh_offset);
      out.push_back(spec.out_offset);
      weight.push_back(spec.weight_offset);
      for (int64_t u = 0; u < spec.mul; ++u) {
        for (int64_t k = 0; k < g.dim_out; ++k) out_columns.push_back({spec.out_offset + k * spec.mul + u, {path, k, u}});
        for (int64_t i = 0; i < g.dim_in; ++i) in_columns.push_back({spec.in_offset + i * spec.mul + u, {path, i, u}});
        weight_path[static_cast<size_t>(spec.weight_offset + u)] = path;
        weight_u[static_cast<size_t>(spec.weight_offset + u)] = u;
      }
      for (int64_t j = 0; j < harmonics_rows(groups[static_cast<size_t>(spec.group)]); ++j) {
        sh_columns.push_back({g.sh_offset + j, {path, j}});
      }
    }
    arrays_.add(p.path_group, group);
    arrays_.add(p.path_mul, mul);
    arrays_.add(p.path_in, in);
    arrays_.add(p.path_sh, sh);
    arrays_.add(p.path_out, out);
    arrays_.add(p.path_weight, weight);
    add_columns(out_columns, p.num_out, p.out_ptr, {&p.out_path, &p.out_k, &p.out_u});
    add_columns(in_columns, p.num_in, p.in_ptr, {&p.in_path, &p.in_i, &p.in_u});
    add_columns(sh_columns, p.num_sh, p.sh_ptr, {&p.sh_path, &p.sh_j});
    arrays_.add(p.weight_path, weight_path);
    arrays_.add(p.weight_u, weight_u);
    arrays_.upload(device);
  }

  const ConvolutionPlan<T>& plan() const { return plan_; }

 private:
  static int64_t harmonics_rows(const std::vector<NonZero>& nonzeros) {
    int64_t rows = 0;
    for (const auto& z : nonzeros) rows = std::max(rows, z.j + 1);
    return rows;
  }

  template <typename Key>
  void add_nonzeros(const std::vector<std::vector<NonZero>>& groups, NonZeros<T>& target, Key key) {
    std::vector<int64_t> row, ptr{0}, i, j, k;
    std::vector<T> c;
    for (const auto& nonzeros : groups) {
      int64_t rows = 0;
      std::vector<std::pair<int64_t, NonZero>> keyed;
      for (const auto& z : nonzeros) {
        rows = std::max(rows, key(z) + 1);
        keyed.push_back({key(z), z});
      }
      row.push_back(static_cast<int64_t>(ptr.size()) - 1);
      const int64_t first = static_cast<int64_t>(i.size());
      auto [group_ptr, sorted] = by_key(keyed, rows);
      for (const auto& z : sorted) {
        i.push_back(z.i);
        j.push_back(z.j);
        k.push_back(z.k);
        c.push_back(static_cast<T>(z.c));
      }
      for (int64_t m = 0; m < rows; ++m) ptr.push_back(first + group_ptr[static_cast<size_t>(m) + 1]);
    }
    arrays_.add(target.row, row);
    arrays_.add(target.ptr, ptr);
    arrays_.add(target.i, i);
    arrays_.add(target.j, j);
    arrays_.add(target.k, k);
    arrays_.add(target.c, c);
  }

  template <size_t Fields>
  void add_columns(const std::vector<std::pair<int64_t, std::array<int64_t, Fields>>>& columns, int64_t num_columns,
                   const int64_t*& ptr_field, std::array<const int64_t**, Fields> fields) {
    auto [ptr, entries] = by_key(columns, num_columns);
    arrays_.add(ptr_field, ptr);
    for (size_t f = 0; f < Fields; ++f) {
      std::vector<int64_t> values;
      for (const auto& entry : entries) values.push_back(entry[f]);
      arrays_.add(*fields[f], values);
    }
  }

  ConvolutionPlan<T> plan_{};
  Arrays<T> arrays_;
};

// ---------------------------------------------------------------- graphs

// One index an op reads: its values must lie in [0, size) and, if sorted, never decrease (`hint` follows
// that message).
struct IndexCheck {
  const char* name;
  at::Tensor index;
  int64_t size;
  bool sorted;
  const char* hint;
};

// Fails, naming the op, the index and its first wrong entry, unless every index is as its check says; one
// synchronisation for all of them when all is well.
inline void check_indices_on_device(const char* op, std::initializer_list<IndexCheck> checks) {
  std::vector<at::Tensor> outside, decreasing, flags;
  for (const IndexCheck& check : checks) {
    const auto& index = check.index;
    outside.push_back((index < 0) | (index >= check.size));
    decreasing.push_back(check.sorted && index.numel() > 1 ? index.slice(0, 1) < index.slice(0, 0, -1)
                                                           : at::zeros({1}, index.options().dtype(at::kBool)));
    flags.push_back(outside.back().any());
    flags.push_back(decreasing.back().any());
  }
  const auto found = at::stack(flags).cpu();
  size_t n = 0;
  for (const IndexCheck& check : checks) {
    const auto& index = check.index;
    if (found[static_cast<int64_t>(2 * n)].item<bool>()) {
      const int64_t entry = outside[n].nonzero()[0][0].item<int64_t>();
      TORCH_CHECK(false, op, ": ", check.name, " entry ", entry, " = ", index[entry].item<int64_t>(),
                  " is outside [0, ", check.size, ")");
    }
    if (found[static_cast<int64_t>(2 * n + 1)].item<bool>()) {
      const int64_t entry = decreasing[n].nonzero()[0][0].item<int64_t>();
      TORCH_CHECK(false, op, ": ", check.name, " is not sorted (entry ", entry, " = ", index[entry].item<int64_t>(),
                  " > entry ", entry + 1, " = ", index[entry + 1].item<int64_t>(), ")", check.hint);
    }
    ++n;
  }
}

// Where each index value's rows are: ptr[v] .. ptr[v + 1] into `rows` (by_value: a stable sort of the index; a
// sorted index is its own order and has no `rows`).
struct DeviceRows {
  at::Tensor ptr, rows;
};

inline DeviceRows rows_by_value(const at::Tensor& index, int64_t size, bool sorted) {
  DeviceRows result;
  const auto values = at::arange(size + 1, index.options());
  if (sorted) {
    result.ptr = at::searchsorted(index, values);
  } else {
    result.rows = std::get<1>(at::sort(index, /*stable=*/true, 0, false));
    result.ptr = at::searchsorted(index.index_select(0, result.rows), values);
  }
  return result;
}

struct DeviceEdges {
  at::Tensor index, receiver_ptr, sender_ptr, sender_edges;

  Edges edges() const {
    return Edges{index.data_ptr<int64_t>(), index.data_ptr<int64_t>() + index.size(1),
                 receiver_ptr.data_ptr<int64_t>(), sender_ptr.defined() ? sender_ptr.data_ptr<int64_t>() : nullptr,
                 sender_edges.defined() ? sender_edges.data_ptr<int64_t>() : nullptr};
  }
};

// Receiver pointers, and with by_sender the edges of each sender in increasing edge order.
inline DeviceEdges device_edges(const char* op, const at::Tensor& edge_index, int64_t num_nodes, bool by_sender) {
  DeviceEdges edges;
  edges.index = edge_index.contiguous();
  const auto sender = edges.index[0], receiver = edges.index[1];
  check_indices_on_device(op, {{"receiver", receiver, num_nodes, true, "; sort edges by receiver first"},
                               {"sender", sender, num_nodes, false, ""}});
  edges.receiver_ptr = rows_by_value(receiver, num_nodes, true).ptr;
  if (by_sender) {
    auto senders = rows_by_value(sender, num_nodes, false);
    edges.sender_ptr = senders.ptr;
    edges.sender_edges = senders.rows;
  }
  return edges;
}

// ---------------------------------------------------------------- convolution ops

constexpr const char* kConvolutionOp = "mlipkit::tensor_product_convolution";

template <typename T>
DeviceConvolutionPlan<T> convolution_plan(const at::Tensor& couplings, at::IntArrayRef paths, const at::Tensor& x,
                                          int64_t num_sh, int64_t num_weights, int64_t num_out) {
  const convolution::Plan<T> cpu(kConvolutionOp, couplings, paths, x.size(1), num_sh, num_weights, num_out);
  return DeviceConvolutionPlan<T>(cpu.problem(nullptr, nullptr), x.device());
}

template <typename T>
void convolution_forward(const ConvolutionPlan<T>& p, const Edges& g, const at::Tensor& x, const at::Tensor& sh,
                         const at::Tensor& w, at::Tensor& out) {
  launch(out.numel(), ConvolutionForward<T>{p, g, x.data_ptr<T>(), sh.data_ptr<T>(), w.data_ptr<T>(), out.data_ptr<T>()});
}

template <typename T>
void convolution_input_gradient(const ConvolutionPlan<T>& p, const Edges& g, const at::Tensor& grad_out,
                                const at::Tensor& sh, const at::Tensor& w, at::Tensor& grad_x) {
  launch(grad_x.numel(), ConvolutionInputGradient<T>{p, g, grad_out.data_ptr<T>(), sh.data_ptr<T>(), w.data_ptr<T>(),
                                                      grad_x.data_ptr<T>()});
}

template <typename T>
void convolution_harmonics_gradient(const ConvolutionPlan<T>& p, const Edges& g, const at::Tensor& grad_out,
                                    const at::Tensor& x, const at::Tensor& w, at::Tensor& grad_sh) {
  launch(grad_sh.numel(), ConvolutionHarmonicsGradient<T>{p, g, grad_out.data_ptr<T>(), x.data_ptr<T>(),
                                                          w.data_ptr<T>(), grad_sh.data_ptr<T>()});
}

template <typename T>
void convolution_weight_gradient(const ConvolutionPlan<T>& p, const Edges& g, const at::Tensor& grad_out,
                                 const at::Tensor& x, const at::Tensor& sh, at::Tensor& grad_w) {
  launch(grad_w.numel(), ConvolutionWeightGradient<T>{p, g, grad_out.data_ptr<T>(), x.data_ptr<T>(),
                                                      sh.data_ptr<T>(), grad_w.data_ptr<T>()});
}

inline at::Tensor convolution_device(const at::Tensor& node_features, const at::Tensor& edge_sh,
                                     const at::Tensor& edge_weights, const at::Tensor& edge_index,
                                     const at::Tensor& couplings, at::IntArrayRef paths, int64_t num_out_features) {
  convolution::check_operands(kConvolutionOp, node_features, {{"edge_sh", edge_sh}, {"edge_weights", edge_weights}},
                              {}, edge_index);
  TORCH_CHECK(num_out_features >= 0, kConvolutionOp, ": num_out_features must be >= 0, got ", num_out_features);
  const c10::DeviceGuard device_guard(node_features.device());
  const auto x = node_features.contiguous(), sh = edge_sh.contiguous(), w = edge_weights.contiguous();
  const auto edges = device_edges(kConvolutionOp, edge_index, x.size(0), false);
  auto out = at::empty({x.size(0), num_out_features}, x.options());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "mlipkit_tensor_product_convolution_device", [&] {
    const auto plan = convolution_plan<scalar_t>(couplings, paths, x, sh.size(1), w.size(1), num_out_features);
    convolution_forward(plan.plan(), edges.edges(), x, sh, w, out);
  });
  return out;
}

inline std::tuple<at::Tensor, at::Tensor, at::Tensor> convolution_backward_device(
    const at::Tensor& grad_out, const at::Tensor& node_features, const at::Tensor& edge_sh,
    const at::Tensor& edge_weights, const at::Tensor& edge_index, const at::Tensor& couplings, at::IntArrayRef paths) {
  convolution::check_operands(kConvolutionOp, node_features, {{"edge_sh", edge_sh}, {"edge_weights", edge_weights}},
                              {}, edge_index);
  convolution::check_grad_out(kConvolutionOp, "_backward", grad_out, node_features);
  const c10::DeviceGuard device_guard(node_features.device());
  const auto g = grad_out.contiguous(), x = node_features.contiguous(), sh = edge_sh.contiguous(),
             w = edge_weights.contiguous();
  const auto edges = device_edges(kConvolutionOp, edge_index, x.size(0), true);
  auto grad_x = at::empty_like(x), grad_sh = at::empty_like(sh), grad_w = at::empty_like(w);
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "mlipkit_tensor_product_convolution_backward_device", [&] {
    const auto plan = convolution_plan<scalar_t>(couplings, paths, x, sh.size(1), w.size(1), g.size(1));
    convolution_input_gradient(plan.plan(), edges.edges(), g, sh, w, grad_x);
    convolution_harmonics_gradient(plan.plan(), edges.edges(), g, x, w, grad_sh);
    convolution_weight_gradient(plan.plan(), edges.edges(), g, x, sh, grad_w);
  });
  return {grad_x, grad_sh, grad_w};
}

// The backward op's derivative (see convolution.cpp): three forward and six gradient kernels with swapped
// operands, each output a sum of two or three of them.
inline std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> convolution_double_backward_device(
    const at::Tensor& grad_out, const at::Tensor& node_features, const at::Tensor& edge_sh,
    const at::Tensor& edge_weights, const at::Tensor& d_node_features, const at::Tensor& d_edge_sh,
    const at::Tensor& d_edge_weights, const at::Tensor& edge_index, const at::Tensor& couplings,
    at::IntArrayRef paths) {
  convolution::check_operands(kConvolutionOp, node_features,
                              {{"edge_sh", edge_sh}, {"edge_weights", edge_weights}, {"d_edge_sh", d_edge_sh},
                               {"d_edge_weights", d_edge_weights}},
                              {{"grad_out", grad_out}, {"d_node_features", d_node_features}}, edge_index);
  convolution::check_grad_out(kConvolutionOp, "_double_backward", grad_out, node_features);
  convolution::check_cotangents(kConvolutionOp, node_features, edge_sh, edge_weights, d_node_features, d_edge_sh,
                                d_edge_weights);
  const c10::DeviceGuard device_guard(node_features.device());
  const auto g = grad_out.contiguous(), x = node_features.contiguous(), sh = edge_sh.contiguous(),
             w = edge_weights.contiguous(), dx = d_node_features.contiguous(), dsh = d_edge_sh.contiguous(),
             dw = d_edge_weights.contiguous();
  const auto edges = device_edges(kConvolutionOp, edge_index, x.size(0), true);
  auto grad_g = at::empty_like(g), grad_x = at::empty_like(x), grad_sh = at::empty_like(sh),
       grad_w = at::empty_like(w);
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "mlipkit_tensor_product_convolution_double_backward_device", [&] {
    const auto plan = convolution_plan<scalar_t>(couplings, paths, x, sh.size(1), w.size(1), g.size(1));
    const auto& p = plan.plan();
    const auto e = edges.edges();
    auto term_g = at::empty_like(g), term_x = at::empty_like(x), term_sh = at::empty_like(sh),
         term_w = at::empty_like(w);
    convolution_forward(p, e, dx, sh, w, grad_g);
    convolution_forward(p, e, x, dsh, w, term_g);
    grad_g.add_(term_g);
    convolution_forward(p, e, x, sh, dw, term_g);
    grad_g.add_(term_g);
    convolution_input_gradient(p, e, g, dsh, w, grad_x);
    convolution_input_gradient(p, e, g, sh, dw, term_x);
    grad_x.add_(term_x);
    convolution_harmonics_gradient(p, e, g, dx, w, grad_sh);
    convolution_harmonics_gradient(p, e, g, x, dw, term_sh);
    grad_sh.add_(term_sh);
    convolution_weight_gradient(p, e, g, dx, sh, grad_w);
    convolution_weight_gradient(p, e, g, x, dsh, term_w);
    grad_w.add_(term_w);
  });
  return {grad_g, grad_x, grad_sh, grad_w};
}

// ---------------------------------------------------------------- channelwise polynomial

// Nodes summed by one thread of the coefficient gradient before the chunks' sums are added in order.
constexpr int64_t kCoefficientGradientNodes = 64;

template <typename T>
class DevicePolynomialTerms {
 public:
  DevicePolynomialTerms(const std::vector<polynomial::Term>& parsed, bool by_coefficient, int64_t num_keys,
                        const at::Device& device) {
    std::vector<std::pair<int64_t, polynomial::Term>> keyed;
    for (const auto& t : parsed) keyed.push_back({by_coefficient ? t.coefficient : t.output, t});
    auto [ptr, sorted] = by_key(keyed, num_keys);
    std::vector<int64_t> output, coefficient, degree, factors;
    std::vector<T> multiplier;
    for (const auto& t : sorted) {
      output.push_back(t.output);
      coefficient.push_back(t.coefficient);
      degree.push_back(t.degree);
      factors.insert(factors.end(), t.factors, t.factors + polynomial::kMaxDegree);
      multiplier.push_back(static_cast<T>(t.multiplier));
    }
    arrays_.add(terms_.ptr, ptr);
    arrays_.add(terms_.output, output);
    arrays_.add(terms_.coefficient, coefficient);
    arrays_.add(terms_.degree, degree);
    arrays_.add(terms_.factors, factors);
    arrays_.add(terms_.multiplier, multiplier);
    arrays_.upload(device);
  }

  const PolynomialTerms<T>& terms() const { return terms_; }

 private:
  PolynomialTerms<T> terms_{};
  Arrays<T> arrays_;
};

inline at::Tensor polynomial_device(const at::Tensor& features, const at::Tensor& node_weights,
                                    const at::Tensor& coefficients, at::IntArrayRef terms, int64_t num_outputs) {
  polynomial::check_evaluate(features, node_weights, coefficients, num_outputs);
  const c10::DeviceGuard device_guard(features.device());
  const auto x = features.contiguous(), w = node_weights.contiguous(), k = coefficients.contiguous();
  const auto parsed = polynomial::parse_terms(terms, x.size(1), num_outputs, k.size(1), "mlipkit::channelwise_polynomial");
  auto out = at::empty({x.size(0), num_outputs, x.size(2)}, x.options());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "mlipkit_channelwise_polynomial_device", [&] {
    const DevicePolynomialTerms<scalar_t> plan(parsed, false, num_outputs, x.device());
    const PolynomialShape shape{x.size(2), x.size(1), w.size(1), num_outputs, k.size(1)};
    launch(out.numel(), PolynomialEvaluate<scalar_t>{plan.terms(), shape, x.data_ptr<scalar_t>(), w.data_ptr<scalar_t>(),
                                                     k.data_ptr<scalar_t>(), out.data_ptr<scalar_t>()});
  });
  return out;
}

inline at::Tensor coefficient_grad_device(const at::Tensor& features, const at::Tensor& node_weights,
                                         const at::Tensor& grad_out, at::IntArrayRef terms, int64_t num_coefficients) {
  polynomial::check_coefficient_grad(features, node_weights, grad_out, num_coefficients);
  const c10::DeviceGuard device_guard(features.device());
  const auto x = features.contiguous(), w = node_weights.contiguous(), g = grad_out.contiguous();
  const auto parsed = polynomial::parse_terms(terms, x.size(1), g.size(1), num_coefficients,
                                              "mlipkit::channelwise_polynomial_coefficient_grad");
  const int64_t num_nodes = x.size(0), num_sets = w.size(1), C = x.size(2);
  const int64_t num_chunks = std::max<int64_t>(1, (num_nodes + kCoefficientGradientNodes - 1) / kCoefficientGradientNodes);
  auto partial = at::empty({num_chunks, num_sets, num_coefficients, C}, x.options());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "mlipkit_channelwise_polynomial_coefficient_grad_device", [&] {
    const DevicePolynomialTerms<scalar_t> plan(parsed, true, num_coefficients, x.device());
    const PolynomialShape shape{C, x.size(1), num_sets, g.size(1), num_coefficients};
    launch(partial.numel(), PolynomialCoefficientGradient<scalar_t>{plan.terms(), shape, x.data_ptr<scalar_t>(),
                                                                    w.data_ptr<scalar_t>(), g.data_ptr<scalar_t>(),
                                                                    num_nodes, kCoefficientGradientNodes,
                                                                    partial.data_ptr<scalar_t>()});
  });
  return partial.sum(0);
}

// ---------------------------------------------------------------- sums of outer products over sorted segments

struct DeviceSegmentRows {
  at::Tensor source, target;
  DeviceRows by_target, by_source;

  SegmentOuterRows rows(int64_t num_basis, int64_t num_channels) const {
    auto pointer = [](const at::Tensor& t) { return t.defined() ? t.data_ptr<int64_t>() : nullptr; };
    return SegmentOuterRows{source.data_ptr<int64_t>(), target.data_ptr<int64_t>(), pointer(by_target.ptr),
                            pointer(by_source.ptr), pointer(by_source.rows), num_basis, num_channels};
  }
};

inline DeviceSegmentRows segment_rows(const char* op, const at::Tensor& source, const at::Tensor& sorted_target,
                                      int64_t num_sources, int64_t num_targets, bool by_source) {
  DeviceSegmentRows rows{source.contiguous(), sorted_target.contiguous(), {}, {}};
  check_indices_on_device(op, {{"source", rows.source, num_sources, false, ""},
                               {"sorted_target", rows.target, num_targets, true, ""}});
  rows.by_target = rows_by_value(rows.target, num_targets, true);
  if (by_source) rows.by_source = rows_by_value(rows.source, num_sources, false);
  return rows;
}

inline at::Tensor outer_sum_device(const at::Tensor& basis, const at::Tensor& features, const at::Tensor& source,
                                   const at::Tensor& sorted_target, int64_t num_targets) {
  segment_outer::check_outer_sum(basis, features, source, sorted_target, num_targets);
  const c10::DeviceGuard device_guard(basis.device());
  const auto b = basis.contiguous(), f = features.contiguous();
  const auto rows = segment_rows("mlipkit::segment_outer_sum", source, sorted_target, f.size(0), num_targets, false);
  auto out = at::empty({num_targets, b.size(1), f.size(1)}, b.options());
  AT_DISPATCH_FLOATING_TYPES(b.scalar_type(), "mlipkit_segment_outer_sum_device", [&] {
    launch(out.numel(), SegmentOuterSum<scalar_t>{rows.rows(b.size(1), f.size(1)), b.data_ptr<scalar_t>(),
                                                  f.data_ptr<scalar_t>(), out.data_ptr<scalar_t>()});
  });
  return out;
}

inline at::Tensor basis_grad_device(const at::Tensor& grad, const at::Tensor& features, const at::Tensor& source,
                                    const at::Tensor& sorted_target) {
  segment_outer::check_basis_grad(grad, features, source, sorted_target);
  const c10::DeviceGuard device_guard(grad.device());
  const auto g = grad.contiguous(), f = features.contiguous();
  const auto rows = segment_rows("mlipkit::segment_outer_sum_basis_grad", source, sorted_target, f.size(0), g.size(0),
                                 false);
  auto out = at::empty({source.size(0), g.size(1)}, g.options());
  AT_DISPATCH_FLOATING_TYPES(g.scalar_type(), "mlipkit_segment_outer_sum_basis_grad_device", [&] {
    launch(out.numel(), SegmentOuterBasisGradient<scalar_t>{rows.rows(g.size(1), g.size(2)), g.data_ptr<scalar_t>(),
                                                            f.data_ptr<scalar_t>(), out.data_ptr<scalar_t>()});
  });
  return out;
}

inline at::Tensor features_grad_device(const at::Tensor& basis, const at::Tensor& grad, const at::Tensor& source,
                                       const at::Tensor& sorted_target, int64_t num_sources) {
  segment_outer::check_features_grad(basis, grad, source, sorted_target, num_sources);
  const c10::DeviceGuard device_guard(basis.device());
  const auto b = basis.contiguous(), g = grad.contiguous();
  const auto rows = segment_rows("mlipkit::segment_outer_sum_features_grad", source, sorted_target, num_sources,
                                 g.size(0), true);
  auto out = at::empty({num_sources, g.size(2)}, b.options());
  AT_DISPATCH_FLOATING_TYPES(b.scalar_type(), "mlipkit_segment_outer_sum_features_grad_device", [&] {
    launch(out.numel(), SegmentOuterFeaturesGradient<scalar_t>{rows.rows(b.size(1), g.size(2)), b.data_ptr<scalar_t>(),
                                                               g.data_ptr<scalar_t>(), out.data_ptr<scalar_t>()});
  });
  return out;
}

// The device ops under their names, for the CUDA key and for the emulation alike.
inline void register_device_ops(torch::Library& m) {
  m.impl("tensor_product_convolution", convolution_device);
  m.impl("tensor_product_convolution_backward", convolution_backward_device);
  m.impl("tensor_product_convolution_double_backward", convolution_double_backward_device);
  m.impl("channelwise_polynomial", polynomial_device);
  m.impl("channelwise_polynomial_coefficient_grad", coefficient_grad_device);
  m.impl("segment_outer_sum", outer_sum_device);
  m.impl("segment_outer_sum_basis_grad", basis_grad_device);
  m.impl("segment_outer_sum_features_grad", features_grad_device);
}

}  // namespace device
}  // namespace mlipkit
