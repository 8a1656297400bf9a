// The validated plan of a fused convolution, built from an op's arguments, and
// the helpers both convolution ops (plain edge weights, and with the radial MLP
// inside) share: the instruction-set dispatch and the edges of each sender.
// Only for the files compiled without instruction-set flags (see
// convolution_plan.hpp).

#pragma once

#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>

#include <algorithm>
#include <cstdlib>
#include <initializer_list>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "../ops/sorted_segments.hpp"
#include "convolution_plan.hpp"
#include "isa.hpp"

namespace mlipkit {
namespace convolution {

constexpr int64_t kPathFields = 8;

template <typename T>
void run_forward(const Problem<T>& p, const T* x, const T* sh, const T* w, WeightRows rows, const int64_t* receiver_ptr,
                 int64_t begin, int64_t end, T* out, T* scratch) {
  switch (active_isa()) {
#if defined(MLIPKIT_X86_KERNELS)
    case Isa::avx512:
      return avx512::forward(p, x, sh, w, rows, receiver_ptr, begin, end, out, scratch);
    case Isa::avx2:
      return avx2::forward(p, x, sh, w, rows, receiver_ptr, begin, end, out, scratch);
#endif
    default:
      return baseline::forward(p, x, sh, w, rows, receiver_ptr, begin, end, out, scratch);
  }
}

template <typename T>
void run_backward(const Problem<T>& p, const T* grad_out, const T* x, const T* sh, const T* w, WeightRows rows,
                  const int64_t* sender_ptr, const int64_t* sender_edges, int64_t begin, int64_t end, T* grad_x,
                  T* grad_sh, T* grad_w, T* scratch) {
  switch (active_isa()) {
#if defined(MLIPKIT_X86_KERNELS)
    case Isa::avx512:
      return avx512::backward(p, grad_out, x, sh, w, rows, sender_ptr, sender_edges, begin, end, grad_x, grad_sh,
                              grad_w, scratch);
    case Isa::avx2:
      return avx2::backward(p, grad_out, x, sh, w, rows, sender_ptr, sender_edges, begin, end, grad_x, grad_sh,
                            grad_w, scratch);
#endif
    default:
      return baseline::backward(p, grad_out, x, sh, w, rows, sender_ptr, sender_edges, begin, end, grad_x, grad_sh,
                                grad_w, scratch);
  }
}

template <typename T>
void run_double_forward(const Problem<T>& p, const T* x, const T* dx, const T* sh, const T* dsh, const T* w,
                        const T* dw, const int64_t* receiver_ptr, int64_t begin, int64_t end, T* out, T* scratch) {
  switch (active_isa()) {
#if defined(MLIPKIT_X86_KERNELS)
    case Isa::avx512:
      return avx512::double_forward(p, x, dx, sh, dsh, w, dw, receiver_ptr, begin, end, out, scratch);
    case Isa::avx2:
      return avx2::double_forward(p, x, dx, sh, dsh, w, dw, receiver_ptr, begin, end, out, scratch);
#endif
    default:
      return baseline::double_forward(p, x, dx, sh, dsh, w, dw, receiver_ptr, begin, end, out, scratch);
  }
}

template <typename T>
void run_double_backward(const Problem<T>& p, const T* grad_out, const T* x, const T* dx, const T* sh, const T* dsh,
                         const T* w, const T* dw, const int64_t* sender_ptr, const int64_t* sender_edges,
                         int64_t begin, int64_t end, T* grad_x, T* grad_sh, T* grad_w, T* scratch) {
  switch (active_isa()) {
#if defined(MLIPKIT_X86_KERNELS)
    case Isa::avx512:
      return avx512::double_backward(p, grad_out, x, dx, sh, dsh, w, dw, sender_ptr, sender_edges, begin, end, grad_x,
                                     grad_sh, grad_w, scratch);
    case Isa::avx2:
      return avx2::double_backward(p, grad_out, x, dx, sh, dsh, w, dw, sender_ptr, sender_edges, begin, end, grad_x,
                                   grad_sh, grad_w, scratch);
#endif
    default:
      return baseline::double_backward(p, grad_out, x, dx, sh, dsh, w, dw, sender_ptr, sender_edges, begin, end,
                                       grad_x, grad_sh, grad_w, scratch);
  }
}

// ---------------------------------------------------------------- the plan

struct PathSpec {
  int64_t l1, l2, l3, mul, in_offset, sh_offset, out_offset, weight_offset;
  int64_t dim(int64_t l) const { return 2 * l + 1; }
};

template <typename T>
struct GroupStorage {
  PathSpec spec;                  // the first path of the group (l's and harmonics column)
  std::vector<double> block;      // its dense coupling block, to recognise equal blocks
  std::vector<int64_t> pair_i, pair_k, k_pairs, i_pairs, pairs_by_i, pair_nz, nz_j;
  std::vector<T> nz_c;
};

// Validated plan with the storage its Problem points into.
template <typename T>
class Plan {
 public:
  Plan(const char* kOp, const at::Tensor& couplings, at::IntArrayRef paths, int64_t num_in, int64_t num_sh,
       int64_t num_weights, int64_t num_out) {
    TORCH_CHECK(!paths.empty() && paths.size() % kPathFields == 0, kOp, ": paths must hold ", kPathFields,
                " integers per path, got ", paths.size());
    TORCH_CHECK(couplings.dim() == 1, kOp, ": couplings must be 1-D, got shape ", couplings.sizes());
    const auto values = couplings.to(at::kCPU, at::kDouble).contiguous();  // read on the host
    const double* c = values.data_ptr<double>();
    int64_t c_offset = 0;
    std::vector<std::pair<int64_t, int64_t>> weight_ranges;
    for (size_t n = 0; n < paths.size() / kPathFields; ++n) {
      const int64_t* f = paths.data() + n * kPathFields;
      const PathSpec s{f[0], f[1], f[2], f[3], f[4], f[5], f[6], f[7]};
      TORCH_CHECK(s.l1 >= 0 && s.l2 >= 0 && s.l3 >= 0 && s.l3 >= std::abs(s.l1 - s.l2) && s.l3 <= s.l1 + s.l2,
                  kOp, ": path ", n, " couples l = ", s.l1, " and ", s.l2, " into ", s.l3, ", which is not allowed");
      TORCH_CHECK(s.mul > 0, kOp, ": path ", n, " has ", s.mul, " channels");
      TORCH_CHECK(s.in_offset >= 0 && s.in_offset + s.dim(s.l1) * s.mul <= num_in, kOp, ": path ", n,
                  " reads node-feature columns [", s.in_offset, ", ", s.in_offset + s.dim(s.l1) * s.mul,
                  ") but the node features have ", num_in);
      TORCH_CHECK(s.sh_offset >= 0 && s.sh_offset + s.dim(s.l2) <= num_sh, kOp, ": path ", n,
                  " reads edge-harmonic columns [", s.sh_offset, ", ", s.sh_offset + s.dim(s.l2),
                  ") but the edge harmonics have ", num_sh);
      TORCH_CHECK(s.out_offset >= 0 && s.out_offset + s.dim(s.l3) * s.mul <= num_out, kOp, ": path ", n,
                  " writes output columns [", s.out_offset, ", ", s.out_offset + s.dim(s.l3) * s.mul,
                  ") but the output has ", num_out);
      weight_ranges.emplace_back(s.weight_offset, s.weight_offset + s.mul);
      const int64_t size = s.dim(s.l1) * s.dim(s.l2) * s.dim(s.l3);
      TORCH_CHECK(c_offset + size <= values.numel(), kOp, ": couplings has ", values.numel(),
                  " values, fewer than the paths' blocks need");
      std::vector<double> block(c + c_offset, c + c_offset + size);
      c_offset += size;
      paths_.push_back(Path{group_of(s, std::move(block)), s.mul, s.in_offset, s.out_offset, s.weight_offset});
    }
    TORCH_CHECK(c_offset == values.numel(), kOp, ": couplings has ", values.numel(), " values but the paths' blocks need ",
                c_offset);
    std::sort(weight_ranges.begin(), weight_ranges.end());
    int64_t covered = 0;
    for (const auto& range : weight_ranges) {
      TORCH_CHECK(range.first == covered, kOp, ": the paths' weight columns must tile [0, ", num_weights,
                  ") without gaps or overlaps; column ", covered, " is ",
                  (range.first > covered ? "not used" : "used twice"));
      covered = range.second;
    }
    TORCH_CHECK(covered == num_weights, kOp, ": the paths use ", covered, " weight columns but edge_weights has ",
                num_weights);
    int64_t scratch_offset = 0;
    for (auto& g : storage_) {
      const int64_t num_pairs = static_cast<int64_t>(g.pair_i.size());
      groups_.push_back(CouplingGroup<T>{g.spec.dim(g.spec.l1), g.spec.dim(g.spec.l3), g.spec.sh_offset, num_pairs,
                                         scratch_offset, g.pair_i.data(), g.pair_k.data(), g.k_pairs.data(),
                                         g.i_pairs.data(), g.pairs_by_i.data(), g.pair_nz.data(), g.nz_j.data(),
                                         g.nz_c.data()});
      scratch_offset += num_pairs;
    }
    for (const Path& path : paths_) {
      max_out_block_ = std::max(max_out_block_, groups_[static_cast<size_t>(path.group)].dim_out * path.mul);
    }
    problem_ = Problem<T>{groups_.data(), static_cast<int64_t>(groups_.size()), paths_.data(),
                          static_cast<int64_t>(paths_.size()), scratch_offset, num_in, num_sh, num_weights,
                          num_out, nullptr, nullptr};
  }

  Problem<T> problem(const int64_t* sender, const int64_t* receiver) const {
    Problem<T> p = problem_;
    p.sender = sender;
    p.receiver = receiver;
    return p;
  }

  int64_t scratch_elements() const { return problem_.scratch_size + max_out_block_; }

 private:
  // Paths with the same l's, harmonics block and coupling values share one group.
  int64_t group_of(const PathSpec& s, std::vector<double> block) {
    for (size_t g = 0; g < storage_.size(); ++g) {
      const PathSpec& t = storage_[g].spec;
      if (t.l1 == s.l1 && t.l2 == s.l2 && t.l3 == s.l3 && t.sh_offset == s.sh_offset && storage_[g].block == block) {
        return static_cast<int64_t>(g);
      }
    }
    GroupStorage<T> g;
    g.spec = s;
    const int64_t d1 = s.dim(s.l1), d2 = s.dim(s.l2), d3 = s.dim(s.l3);
    g.pair_nz.push_back(0);
    for (int64_t k = 0; k < d3; ++k) {
      g.k_pairs.push_back(static_cast<int64_t>(g.pair_i.size()));
      for (int64_t i = 0; i < d1; ++i) {
        bool any = false;
        for (int64_t j = 0; j < d2; ++j) {
          const double value = block[static_cast<size_t>((i * d2 + j) * d3 + k)];
          if (value != 0.0) {
            g.nz_j.push_back(j);
            g.nz_c.push_back(static_cast<T>(value));
            any = true;
          }
        }
        if (any) {
          g.pair_i.push_back(i);
          g.pair_k.push_back(k);
          g.pair_nz.push_back(static_cast<int64_t>(g.nz_j.size()));
        }
      }
    }
    g.k_pairs.push_back(static_cast<int64_t>(g.pair_i.size()));
    for (int64_t i = 0; i < d1; ++i) {
      g.i_pairs.push_back(static_cast<int64_t>(g.pairs_by_i.size()));
      for (size_t q = 0; q < g.pair_i.size(); ++q) {
        if (g.pair_i[q] == i) {
          g.pairs_by_i.push_back(static_cast<int64_t>(q));
        }
      }
    }
    g.i_pairs.push_back(static_cast<int64_t>(g.pairs_by_i.size()));
    g.block = std::move(block);
    storage_.push_back(std::move(g));
    return static_cast<int64_t>(storage_.size()) - 1;
  }

  std::vector<GroupStorage<T>> storage_;
  std::vector<CouplingGroup<T>> groups_;
  std::vector<Path> paths_;
  int64_t max_out_block_ = 0;
  Problem<T> problem_{};
};

// ---------------------------------------------------------------- checks


// An operand as the op's messages name it.
struct Operand {
  const char* name;
  at::Tensor tensor;
};

// node_features [N, F] (float32 or float64) and the per-edge operands [E, columns] (edge_sh first) against
// edge_index [2, E] int64; they and `others` share one dtype; all on one device.
inline void check_operands(const char* op, const at::Tensor& x, std::initializer_list<Operand> edge_operands,
                           std::initializer_list<Operand> others, const at::Tensor& edge_index) {
  TORCH_CHECK(x.dim() == 2, op, ": node_features must be [N, F], got shape ", x.sizes());
  for (const Operand& operand : edge_operands) {
    TORCH_CHECK(operand.tensor.dim() == 2, op, ": ", operand.name, " must be [E, columns], got shape ",
                operand.tensor.sizes());
  }
  TORCH_CHECK(edge_index.dim() == 2 && edge_index.size(0) == 2, op, ": edge_index must be [2, E], got shape ",
              edge_index.sizes());
  TORCH_CHECK(edge_index.scalar_type() == at::kLong, op, ": edge_index must be int64, got ",
              edge_index.scalar_type());
  const int64_t num_edges = edge_index.size(1);
  std::vector<Operand> typed(edge_operands);
  std::string rows;
  bool rows_match = true;
  for (size_t i = 0; i < typed.size(); ++i) {
    const int64_t size = typed[i].tensor.size(0);
    rows += i == 0 ? c10::str(" edges but ", typed[i].name, " has ", size, " rows") : c10::str(" and ", typed[i].name, " ", size);
    rows_match = rows_match && size == num_edges;
  }
  TORCH_CHECK(rows_match, op, ": edge_index has ", num_edges, rows);
  TORCH_CHECK(x.scalar_type() == at::kFloat || x.scalar_type() == at::kDouble, op,
              ": node_features must be float32 or float64, got ", x.scalar_type());
  typed.insert(typed.end(), others.begin(), others.end());
  std::string names = "node_features", dtypes = c10::str(x.scalar_type());
  bool dtypes_match = true;
  for (size_t i = 0; i < typed.size(); ++i) {
    names += c10::str(i + 1 == typed.size() ? " and " : ", ", typed[i].name);
    dtypes += c10::str(", ", typed[i].tensor.scalar_type());
    dtypes_match = dtypes_match && typed[i].tensor.scalar_type() == x.scalar_type();
  }
  TORCH_CHECK(dtypes_match, op, ": ", names, " must have one dtype, got ", dtypes);
  typed.push_back(Operand{"node_features", x});
  typed.push_back(Operand{"edge_index", edge_index});
  for (const Operand& operand : typed) {
    TORCH_CHECK(operand.tensor.device() == x.device(), op, ": ", operand.name, " is on ", operand.tensor.device(),
                " but node_features is on ", x.device());
  }
}

// grad_out of a convolution op's backward (`stage`: "_backward" or "_double_backward"): [N, F_out] in
// node_features' dtype, on its device.
inline void check_grad_out(const char* op, const char* stage, const at::Tensor& grad_out, const at::Tensor& x) {
  TORCH_CHECK(grad_out.dim() == 2 && grad_out.size(0) == x.size(0), op, stage,
              ": grad_out must be [N, F_out] with N = ", x.size(0), ", got shape ", grad_out.sizes());
  TORCH_CHECK(grad_out.scalar_type() == x.scalar_type(), op, stage, ": grad_out is ", grad_out.scalar_type(),
              " but node_features is ", x.scalar_type());
  TORCH_CHECK(grad_out.device() == x.device(), op, stage, ": grad_out is on ", grad_out.device(),
              " but node_features is on ", x.device());
}

// The double backward's cotangents, each shaped like the operand it pairs with.
inline void check_cotangents(const char* op, const at::Tensor& x, const at::Tensor& sh, const at::Tensor& w,
                             const at::Tensor& dx, const at::Tensor& dsh, const at::Tensor& dw) {
  TORCH_CHECK(dx.sizes() == x.sizes() && dsh.sizes() == sh.sizes() && dw.sizes() == w.sizes(), op,
              "_double_backward: the cotangents must be shaped like node_features ", x.sizes(), ", edge_sh ",
              sh.sizes(), " and edge_weights ", w.sizes(), ", got ", dx.sizes(), ", ", dsh.sizes(), " and ",
              dw.sizes());
}

inline void check_senders(const char* kOp, const int64_t* sender, int64_t num_edges, int64_t num_nodes) {
  for (int64_t e = 0; e < num_edges; ++e) {
    TORCH_CHECK(sender[e] >= 0 && sender[e] < num_nodes, kOp, ": sender of edge ", e, " = ", sender[e],
                " is outside [0, ", num_nodes, ")");
  }
}

// Edges of each sender in increasing edge order (a stable counting sort).
inline std::pair<std::vector<int64_t>, std::vector<int64_t>> edges_by_sender(const char* kOp, const int64_t* sender,
                                                                            int64_t num_edges, int64_t num_nodes) {
  check_senders(kOp, sender, num_edges, num_nodes);
  return rows_by_group(sender, num_edges, num_nodes);
}

// Nodes per parallel chunk: a node costs about (edges per node) x (paths) x channels operations.
constexpr int64_t kNodeGrain = 4;

// The plain op through the dispatcher, so that autograd records it.
inline at::Tensor call_forward(const at::Tensor& x, const at::Tensor& sh, const at::Tensor& w, const at::Tensor& edge_index,
                        const at::Tensor& couplings, at::IntArrayRef paths, int64_t num_out_features) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("mlipkit::tensor_product_convolution", "")
                       .typed<at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                         const at::Tensor&, at::IntArrayRef, int64_t)>();
  return op.call(x, sh, w, edge_index, couplings, paths, num_out_features);
}

inline std::tuple<at::Tensor, at::Tensor, at::Tensor> call_backward(const at::Tensor& grad_out, const at::Tensor& x,
                                                             const at::Tensor& sh, const at::Tensor& w,
                                                             const at::Tensor& edge_index, const at::Tensor& couplings,
                                                             at::IntArrayRef paths) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("mlipkit::tensor_product_convolution_backward", "")
                       .typed<std::tuple<at::Tensor, at::Tensor, at::Tensor>(
                           const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&,
                           const at::Tensor&, const at::Tensor&, at::IntArrayRef)>();
  return op.call(grad_out, x, sh, w, edge_index, couplings, paths);
}

inline std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> call_double_backward(
    const at::Tensor& grad_out, const at::Tensor& x, const at::Tensor& sh, const at::Tensor& w, const at::Tensor& dx,
    const at::Tensor& dsh, const at::Tensor& dw, const at::Tensor& edge_index, const at::Tensor& couplings,
    at::IntArrayRef paths) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("mlipkit::tensor_product_convolution_double_backward", "")
                       .typed<std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor>(
                           const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&,
                           const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&,
                           const at::Tensor&, at::IntArrayRef)>();
  return op.call(grad_out, x, sh, w, dx, dsh, dw, edge_index, couplings, paths);
}

// t, or zeros shaped like `like` where t is undefined (a zero cotangent)
inline at::Tensor defined_or_zeros(const at::Tensor& t, const at::Tensor& like) {
  return t.defined() ? t : at::zeros_like(like);
}

// a + b where either may be undefined (a zero gradient)
inline at::Tensor add_defined(const at::Tensor& a, const at::Tensor& b) {
  if (!a.defined()) {
    return b;
  }
  if (!b.defined()) {
    return a;
  }
  return a + b;
}

// The derivative of the backward op given the cotangents (dx, dsh, dw; undefined = zero) of its outputs:
// the gradients of grad_out, x, sh and w. Without grad mode one fused double-backward call; with it (a graph
// is being built) three forward and three backward calls with swapped operands, differentiable again.
struct DoubleBackward {
  at::Tensor grad_out, x, sh, w;
};

inline DoubleBackward double_backward(const at::Tensor& g, const at::Tensor& x, const at::Tensor& sh,
                                      const at::Tensor& w, const at::Tensor& dx, const at::Tensor& dsh,
                                      const at::Tensor& dw, const at::Tensor& edge_index, const at::Tensor& couplings,
                                      at::IntArrayRef paths) {
  if (!at::GradMode::is_enabled()) {
    auto [grad_g, grad_x, grad_sh, grad_w] =
        call_double_backward(g, x, sh, w, defined_or_zeros(dx, x), defined_or_zeros(dsh, sh), defined_or_zeros(dw, w),
                             edge_index, couplings, paths);
    return {grad_g, grad_x, grad_sh, grad_w};
  }
  const int64_t num_out = g.size(1);
  DoubleBackward result;
  if (dx.defined()) {
    result.grad_out = add_defined(result.grad_out, call_forward(dx, sh, w, edge_index, couplings, paths, num_out));
    auto [unused, by_sh, by_w] = call_backward(g, dx, sh, w, edge_index, couplings, paths);
    result.sh = add_defined(result.sh, by_sh);
    result.w = add_defined(result.w, by_w);
  }
  if (dsh.defined()) {
    result.grad_out = add_defined(result.grad_out, call_forward(x, dsh, w, edge_index, couplings, paths, num_out));
    auto [by_x, unused, by_w] = call_backward(g, x, dsh, w, edge_index, couplings, paths);
    result.x = add_defined(result.x, by_x);
    result.w = add_defined(result.w, by_w);
  }
  if (dw.defined()) {
    result.grad_out = add_defined(result.grad_out, call_forward(x, sh, dw, edge_index, couplings, paths, num_out));
    auto [by_x, by_sh, unused] = call_backward(g, x, sh, dw, edge_index, couplings, paths);
    result.x = add_defined(result.x, by_x);
    result.sh = add_defined(result.sh, by_sh);
  }
  return result;
}

}  // namespace convolution
}  // namespace mlipkit
