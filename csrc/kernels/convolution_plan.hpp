// The plan of a fused tensor-product convolution, as plain arrays.
//
// This header is included by the kernel translation units that are compiled
// once per instruction set (convolution_kernels.cpp), so it holds only plain
// structs: no inline functions or templates from the standard library or
// ATen, whose copies built with wider instructions could otherwise be picked
// by the linker for every caller.
//
// Layout inside the kernels is components-outer, channels-inner: an irrep
// block of multiplicity `mul` and degree l is [2l+1][mul], so each coupling
// non-zero is one vector operation over the channels.

#pragma once

#include <cstdint>

namespace mlipkit {
namespace convolution {

// The Clebsch-Gordan block shared by every path with the same (l1, l2, l3),
// edge harmonics block and path weight: its non-zeros grouped by (i, k) pair,
// pairs ordered by k. Per edge, a[pair] = sum over its non-zeros c * Y[j].
template <typename T>
struct CouplingGroup {
  int64_t dim_in;           // 2 l1 + 1
  int64_t dim_out;          // 2 l3 + 1
  int64_t sh_offset;        // first column of the l2 block in the edge harmonics
  int64_t num_pairs;
  int64_t scratch_offset;   // where this group's a[] lives in the per-edge scratch
  const int64_t* pair_i;    // [num_pairs] input component of each pair
  const int64_t* pair_k;    // [num_pairs] output component of each pair
  const int64_t* k_pairs;   // [dim_out + 1] pairs of output component k: [k_pairs[k], k_pairs[k+1])
  const int64_t* i_pairs;   // [dim_in + 1] pairs of input component i: pairs_by_i[i_pairs[i] .. i_pairs[i+1])
  const int64_t* pairs_by_i;
  const int64_t* pair_nz;   // [num_pairs + 1] non-zeros of each pair
  const int64_t* nz_j;      // edge-harmonic component (within the l2 block) of each non-zero
  const T* nz_c;            // value (path weight included) of each non-zero
};

// One "uvu" path: out[k][u] += w[u] * sum_i a[i,k] x[i][u], u over the channels.
struct Path {
  int64_t group;
  int64_t mul;
  int64_t in_offset;      // first column of the input irrep block ([2l1+1][mul]) in the node features
  int64_t out_offset;     // first column of the output block ([2l3+1][mul])
  int64_t weight_offset;  // first column of the path's mul weights in the edge weights
};

template <typename T>
struct Problem {
  const CouplingGroup<T>* groups;
  int64_t num_groups;
  const Path* paths;
  int64_t num_paths;
  int64_t scratch_size;       // per-edge coupling values: sum of the groups' num_pairs
  int64_t num_in_features;    // columns of the node features (and of grad_x)
  int64_t num_sh;             // columns of the edge harmonics
  int64_t num_weights;        // columns of the edge weights
  int64_t num_out_features;   // columns of the output
  const int64_t* sender;      // [E]
  const int64_t* receiver;    // [E]
};

// Where an edge's row of edge weights (and of their gradient) is: row
// (by_position ? position in the sender's edge list : edge) - first. The plain
// op passes whole [E, W] tensors (first 0, by edge); the op with the radial MLP
// inside passes the rows of one tile of edges it has just computed.
struct WeightRows {
  int64_t first;
  bool by_position;
};

// Scratch each thread needs, in elements of T: scratch_size coupling values,
// then (backward) the weighted output gradient of one path, [2l3+1][mul].

// Scratch of the double-backward kernels: twice that (coupling values of the harmonics and of their
// cotangent, then two weighted output gradients).

// Kernels of one instruction set, in namespaces baseline / avx2 / avx512.
// forward: rows [begin, end) of out; edges of node r are [receiver_ptr[r], receiver_ptr[r+1]).
// backward: rows [begin, end) of grad_x, and the grad_sh / grad_w rows of the edges those
// nodes send, sender_edges[sender_ptr[s] .. sender_ptr[s+1]) in increasing edge order.
// Forward weight rows are by edge (rows.by_position is ignored).
// double_forward / double_backward: the derivative of the backward, given the cotangents dx [N, F_in],
// dsh [E, S], dw [E, W] of its outputs (all weights by edge):
//   double_forward:  out = F(dx, Y, w) + F(x, dY, w) + F(x, Y, dw)        (the cotangent of grad_out)
//   double_backward: grad_x = B_x(g; dY, w) + B_x(g; Y, dw),  grad_sh = B_Y(g; dx, w) + B_Y(g; x, dw),
//                    grad_w = B_w(g; dx, Y) + B_w(g; x, dY).
#define MLIPKIT_DECLARE_CONVOLUTION_KERNELS(NS)                                                        \
  namespace NS {                                                                                      \
  void forward(const Problem<float>& p, const float* x, const float* sh, const float* w, WeightRows rows, \
               const int64_t* receiver_ptr, int64_t begin, int64_t end, float* out, float* scratch);        \
  void forward(const Problem<double>& p, const double* x, const double* sh, const double* w,                \
               WeightRows rows, const int64_t* receiver_ptr, int64_t begin, int64_t end, double* out,        \
               double* scratch);                                                                             \
  void backward(const Problem<float>& p, const float* grad_out, const float* x, const float* sh,            \
                const float* w, WeightRows rows, const int64_t* sender_ptr, const int64_t* sender_edges,     \
                int64_t begin, int64_t end, float* grad_x, float* grad_sh, float* grad_w, float* scratch);   \
  void backward(const Problem<double>& p, const double* grad_out, const double* x, const double* sh,        \
                const double* w, WeightRows rows, const int64_t* sender_ptr, const int64_t* sender_edges,    \
                int64_t begin, int64_t end, double* grad_x, double* grad_sh, double* grad_w,                 \
                double* scratch);                                                                            \
  void double_forward(const Problem<float>& p, const float* x, const float* dx, const float* sh,            \
                      const float* dsh, const float* w, const float* dw, const int64_t* receiver_ptr,        \
                      int64_t begin, int64_t end, float* out, float* scratch);                               \
  void double_forward(const Problem<double>& p, const double* x, const double* dx, const double* sh,        \
                      const double* dsh, const double* w, const double* dw, const int64_t* receiver_ptr,     \
                      int64_t begin, int64_t end, double* out, double* scratch);                             \
  void double_backward(const Problem<float>& p, const float* grad_out, const float* x, const float* dx,      \
                       const float* sh, const float* dsh, const float* w, const float* dw,                   \
                       const int64_t* sender_ptr, const int64_t* sender_edges, int64_t begin, int64_t end,   \
                       float* grad_x, float* grad_sh, float* grad_w, float* scratch);                        \
  void double_backward(const Problem<double>& p, const double* grad_out, const double* x, const double* dx,  \
                       const double* sh, const double* dsh, const double* w, const double* dw,               \
                       const int64_t* sender_ptr, const int64_t* sender_edges, int64_t begin, int64_t end,   \
                       double* grad_x, double* grad_sh, double* grad_w, double* scratch);                    \
  }

MLIPKIT_DECLARE_CONVOLUTION_KERNELS(baseline)
MLIPKIT_DECLARE_CONVOLUTION_KERNELS(avx2)
MLIPKIT_DECLARE_CONVOLUTION_KERNELS(avx512)

}  // namespace convolution
}  // namespace mlipkit
