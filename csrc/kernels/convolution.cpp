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
// The backward op is linear in grad_out and in each of the three operands, so
// its own derivative is three forward and three backward calls with swapped
// operands; both ops are registered with autograd formulas that call each
// other, so derivatives of any order use these two kernels.

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
#include "convolution_plan.hpp"
#include "fixed_size.hpp"
#include "isa.hpp"

namespace mlipkit {
namespace convolution {
namespace {

constexpr int64_t kPathFields = 8;
constexpr const char* kOp = "mlipkit::tensor_product_convolution";

template <typename T>
void run_forward(const Problem<T>& p, const T* x, const T* sh, const T* w, const int64_t* receiver_ptr, int64_t begin,
                 int64_t end, T* out, T* scratch) {
  switch (active_isa()) {
#if defined(MLIPKIT_X86_KERNELS)
    case Isa::avx512:
      return avx512::forward(p, x, sh, w, receiver_ptr, begin, end, out, scratch);
    case Isa::avx2:
      return avx2::forward(p, x, sh, w, receiver_ptr, begin, end, out, scratch);
#endif
    default:
      return baseline::forward(p, x, sh, w, receiver_ptr, begin, end, out, scratch);
  }
}

template <typename T>
void run_backward(const Problem<T>& p, const T* grad_out, const T* x, const T* sh, const T* w,
                  const int64_t* sender_ptr, const int64_t* sender_edges, int64_t begin, int64_t end, T* grad_x,
                  T* grad_sh, T* grad_w, T* scratch) {
  switch (active_isa()) {
#if defined(MLIPKIT_X86_KERNELS)
    case Isa::avx512:
      return avx512::backward(p, grad_out, x, sh, w, sender_ptr, sender_edges, begin, end, grad_x, grad_sh, grad_w,
                              scratch);
    case Isa::avx2:
      return avx2::backward(p, grad_out, x, sh, w, sender_ptr, sender_edges, begin, end, grad_x, grad_sh, grad_w,
                            scratch);
#endif
    default:
      return baseline::backward(p, grad_out, x, sh, w, sender_ptr, sender_edges, begin, end, grad_x, grad_sh, grad_w,
                                scratch);
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
  Plan(const at::Tensor& couplings, at::IntArrayRef paths, int64_t num_in, int64_t num_sh, int64_t num_weights,
       int64_t num_out) {
    TORCH_CHECK(!paths.empty() && paths.size() % kPathFields == 0, kOp, ": paths must hold ", kPathFields,
                " integers per path, got ", paths.size());
    TORCH_CHECK(couplings.dim() == 1, kOp, ": couplings must be 1-D, got shape ", couplings.sizes());
    const auto values = couplings.to(at::kDouble).contiguous();
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

void check_operands(const at::Tensor& x, const at::Tensor& sh, const at::Tensor& w, const at::Tensor& edge_index) {
  TORCH_CHECK(x.dim() == 2, kOp, ": node_features must be [N, F], got shape ", x.sizes());
  TORCH_CHECK(sh.dim() == 2, kOp, ": edge_sh must be [E, S], got shape ", sh.sizes());
  TORCH_CHECK(w.dim() == 2, kOp, ": edge_weights must be [E, W], got shape ", w.sizes());
  TORCH_CHECK(edge_index.dim() == 2 && edge_index.size(0) == 2, kOp, ": edge_index must be [2, E], got shape ",
              edge_index.sizes());
  TORCH_CHECK(edge_index.scalar_type() == at::kLong, kOp, ": edge_index must be int64, got ",
              edge_index.scalar_type());
  const int64_t num_edges = edge_index.size(1);
  TORCH_CHECK(sh.size(0) == num_edges && w.size(0) == num_edges, kOp, ": edge_index has ", num_edges,
              " edges but edge_sh has ", sh.size(0), " rows and edge_weights ", w.size(0));
  TORCH_CHECK(x.scalar_type() == at::kFloat || x.scalar_type() == at::kDouble, kOp,
              ": node_features must be float32 or float64, got ", x.scalar_type());
  TORCH_CHECK(sh.scalar_type() == x.scalar_type() && w.scalar_type() == x.scalar_type(), kOp,
              ": node_features, edge_sh and edge_weights must have one dtype, got ", x.scalar_type(), ", ",
              sh.scalar_type(), ", ", w.scalar_type());
  for (const at::Tensor* t : {&x, &sh, &w, &edge_index}) {
    TORCH_CHECK(t->device().is_cpu(), kOp, ": this build has CPU kernels only, got a tensor on ", t->device());
  }
}

void check_senders(const int64_t* sender, int64_t num_edges, int64_t num_nodes) {
  for (int64_t e = 0; e < num_edges; ++e) {
    TORCH_CHECK(sender[e] >= 0 && sender[e] < num_nodes, kOp, ": sender of edge ", e, " = ", sender[e],
                " is outside [0, ", num_nodes, ")");
  }
}

// Edges of each sender in increasing edge order (a stable counting sort).
std::pair<std::vector<int64_t>, std::vector<int64_t>> edges_by_sender(const int64_t* sender, int64_t num_edges,
                                                                     int64_t num_nodes) {
  check_senders(sender, num_edges, num_nodes);
  std::vector<int64_t> ptr(static_cast<size_t>(num_nodes) + 1, 0);
  for (int64_t e = 0; e < num_edges; ++e) {
    ++ptr[static_cast<size_t>(sender[e]) + 1];
  }
  for (int64_t s = 0; s < num_nodes; ++s) {
    ptr[static_cast<size_t>(s) + 1] += ptr[static_cast<size_t>(s)];
  }
  std::vector<int64_t> next(ptr.begin(), ptr.end() - 1);
  std::vector<int64_t> edges(static_cast<size_t>(num_edges));
  for (int64_t e = 0; e < num_edges; ++e) {
    edges[static_cast<size_t>(next[static_cast<size_t>(sender[e])]++)] = e;
  }
  return {std::move(ptr), std::move(edges)};
}

// Nodes per parallel chunk: a node costs about (edges per node) x (paths) x channels operations.
constexpr int64_t kNodeGrain = 4;

// ---------------------------------------------------------------- CPU ops

at::Tensor convolution_cpu(const at::Tensor& node_features, const at::Tensor& edge_sh, const at::Tensor& edge_weights,
                           const at::Tensor& edge_index, const at::Tensor& couplings, at::IntArrayRef paths,
                           int64_t num_out_features) {
  check_operands(node_features, edge_sh, edge_weights, edge_index);
  TORCH_CHECK(num_out_features >= 0, kOp, ": num_out_features must be >= 0, got ", num_out_features);
  const auto x = node_features.contiguous();
  const auto sh = edge_sh.contiguous();
  const auto w = edge_weights.contiguous();
  const auto index = edge_index.contiguous();
  const int64_t num_nodes = x.size(0);
  const auto receiver_ptr = segment_pointers(index[1], num_nodes, "tensor_product_convolution");
  const int64_t* sender = index.data_ptr<int64_t>();
  check_senders(sender, index.size(1), num_nodes);
  auto out = at::empty({num_nodes, num_out_features}, x.options());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "mlipkit_tensor_product_convolution", [&] {
    const Plan<scalar_t> plan(couplings, paths, x.size(1), sh.size(1), w.size(1), num_out_features);
    const auto problem = plan.problem(sender, sender + index.size(1));
    const scalar_t* xp = x.data_ptr<scalar_t>();
    const scalar_t* shp = sh.data_ptr<scalar_t>();
    const scalar_t* wp = w.data_ptr<scalar_t>();
    scalar_t* outp = out.data_ptr<scalar_t>();
    at::parallel_for(0, num_nodes, kNodeGrain, [&](int64_t begin, int64_t end) {
      std::vector<scalar_t> scratch(static_cast<size_t>(plan.scratch_elements()));
      run_forward(problem, xp, shp, wp, receiver_ptr.data(), begin, end, outp, scratch.data());
    });
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> convolution_backward_cpu(
    const at::Tensor& grad_out, const at::Tensor& node_features, const at::Tensor& edge_sh,
    const at::Tensor& edge_weights, const at::Tensor& edge_index, const at::Tensor& couplings, at::IntArrayRef paths) {
  check_operands(node_features, edge_sh, edge_weights, edge_index);
  TORCH_CHECK(grad_out.dim() == 2 && grad_out.size(0) == node_features.size(0), kOp,
              "_backward: grad_out must be [N, F_out] with N = ", node_features.size(0), ", got shape ",
              grad_out.sizes());
  TORCH_CHECK(grad_out.scalar_type() == node_features.scalar_type(), kOp, "_backward: grad_out is ",
              grad_out.scalar_type(), " but node_features is ", node_features.scalar_type());
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
  const auto [sender_ptr, sender_edges] = edges_by_sender(sender, num_edges, num_nodes);
  auto grad_x = at::empty_like(x);
  auto grad_sh = at::empty_like(sh);
  auto grad_w = at::empty_like(w);
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "mlipkit_tensor_product_convolution_backward", [&] {
    const Plan<scalar_t> plan(couplings, paths, x.size(1), sh.size(1), w.size(1), g.size(1));
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
      run_backward(problem, gp, xp, shp, wp, sender_ptr.data(), sender_edges.data(), begin, end, gxp, gshp, gwp,
                   scratch.data());
    });
  });
  return {grad_x, grad_sh, grad_w};
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

// ---------------------------------------------------------------- autograd

at::Tensor call_forward(const at::Tensor& x, const at::Tensor& sh, const at::Tensor& w, const at::Tensor& edge_index,
                        const at::Tensor& couplings, at::IntArrayRef paths, int64_t num_out_features) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("mlipkit::tensor_product_convolution", "")
                       .typed<at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                         const at::Tensor&, at::IntArrayRef, int64_t)>();
  return op.call(x, sh, w, edge_index, couplings, paths, num_out_features);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> call_backward(const at::Tensor& grad_out, const at::Tensor& x,
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

// a + b where either may be undefined (a zero gradient)
at::Tensor add_defined(const at::Tensor& a, const at::Tensor& b) {
  if (!a.defined()) {
    return b;
  }
  if (!b.defined()) {
    return a;
  }
  return a + b;
}

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
    const int64_t num_out = fixed_size(g, 1);
    at::Tensor grad_g, grad_x, grad_sh, grad_w;
    if (dx.defined()) {
      grad_g = add_defined(grad_g, call_forward(dx, sh, w, edge_index, couplings, paths, num_out));
      auto [unused, by_sh, by_w] = call_backward(g, dx, sh, w, edge_index, couplings, paths);
      grad_sh = add_defined(grad_sh, by_sh);
      grad_w = add_defined(grad_w, by_w);
    }
    if (dsh.defined()) {
      grad_g = add_defined(grad_g, call_forward(x, dsh, w, edge_index, couplings, paths, num_out));
      auto [by_x, unused, by_w] = call_backward(g, x, dsh, w, edge_index, couplings, paths);
      grad_x = add_defined(grad_x, by_x);
      grad_w = add_defined(grad_w, by_w);
    }
    if (dw.defined()) {
      grad_g = add_defined(grad_g, call_forward(x, sh, dw, edge_index, couplings, paths, num_out));
      auto [by_x, by_sh, unused] = call_backward(g, x, sh, dw, edge_index, couplings, paths);
      grad_x = add_defined(grad_x, by_x);
      grad_sh = add_defined(grad_sh, by_sh);
    }
    return {grad_g, grad_x, grad_sh, grad_w, at::Tensor(), at::Tensor(), at::Tensor()};
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
  m.def(
      "tensor_product_convolution(Tensor node_features, Tensor edge_sh, Tensor edge_weights, Tensor edge_index, "
      "Tensor couplings, int[] paths, int num_out_features) -> Tensor");
  m.def(
      "tensor_product_convolution_backward(Tensor grad_out, Tensor node_features, Tensor edge_sh, "
      "Tensor edge_weights, Tensor edge_index, Tensor couplings, int[] paths) -> (Tensor, Tensor, Tensor)");
  m.def("kernel_isa() -> str", convolution::selected_isa_name);
}

TORCH_LIBRARY_IMPL(mlipkit, CPU, m) {
  m.impl("tensor_product_convolution", convolution::convolution_cpu);
  m.impl("tensor_product_convolution_backward", convolution::convolution_backward_cpu);
}

TORCH_LIBRARY_IMPL(mlipkit, Meta, m) {
  m.impl("tensor_product_convolution", convolution::convolution_meta);
  m.impl("tensor_product_convolution_backward", convolution::convolution_backward_meta);
}

TORCH_LIBRARY_IMPL(mlipkit, Autograd, m) {
  m.impl("tensor_product_convolution", convolution::convolution_autograd);
  m.impl("tensor_product_convolution_backward", convolution::convolution_backward_autograd);
}

}  // namespace mlipkit
