// The device kernels of the op library, one output element per thread.
//
// Each kernel is a functor whose call operator computes one element of one
// output from plain arrays, in a fixed order (receiver-sorted or
// sender-sorted edges, never atomics), so results are deterministic. nvcc
// compiles them for the GPU (cuda_ops.cu); the host compiler compiles the same
// functors for the CPU emulation (emulated_ops.cpp) that tests them against the
// CPU kernels where no GPU is at hand.

#pragma once

#include <cstdint>

#include "../kernels/polynomial_plan.hpp"

#if defined(__CUDACC__)
#define MLIPKIT_HOST_DEVICE __host__ __device__
#else
#define MLIPKIT_HOST_DEVICE
#endif

namespace mlipkit {
namespace device {

// ---------------------------------------------------------------- tensor-product convolution

// The Clebsch-Gordan non-zeros of every coupling group, in one order (by output component k, by input
// component i or by harmonic component j): the non-zeros of group g whose key is m are
// [ptr[row[g] + m], ptr[row[g] + m + 1]).
template <typename T>
struct NonZeros {
  const int64_t* row;
  const int64_t* ptr;
  const int64_t* i;
  const int64_t* j;  // within the path's harmonics block
  const int64_t* k;
  const T* c;
};

// A convolution's plan as device arrays (built by the host from the CPU plan, see ops_impl.hpp). Path p:
// out[k][u] += w[u] sum_{i, j} c x[i][u] Y[j]; column lists say which (path, component, channel) each column
// of the output, input, weights and harmonics is.
template <typename T>
struct ConvolutionPlan {
  const int64_t* path_group;
  const int64_t* path_mul;
  const int64_t* path_in;      // first column of the input block [2 l1 + 1][mul]
  const int64_t* path_sh;      // first column of the harmonics block
  const int64_t* path_out;     // first column of the output block [2 l3 + 1][mul]
  const int64_t* path_weight;  // first weight column
  const int64_t* group_nz_begin;  // the group's non-zeros in by_k order
  const int64_t* group_nz_end;
  NonZeros<T> by_k, by_i, by_j;
  const int64_t* out_ptr;  // output column f: entries [out_ptr[f], out_ptr[f + 1]) of (out_path, out_k, out_u)
  const int64_t* out_path;
  const int64_t* out_k;
  const int64_t* out_u;
  const int64_t* in_ptr;  // input column: entries of (in_path, in_i, in_u)
  const int64_t* in_path;
  const int64_t* in_i;
  const int64_t* in_u;
  const int64_t* weight_path;  // weight column -> (path, channel)
  const int64_t* weight_u;
  const int64_t* sh_ptr;  // harmonics column: entries of (sh_path, sh_j)
  const int64_t* sh_path;
  const int64_t* sh_j;
  int64_t num_in, num_sh, num_weights, num_out;
};

// The graph as the kernels read it: receiver-sorted edges, and the edges of each sender.
struct Edges {
  const int64_t* sender;
  const int64_t* receiver;
  const int64_t* receiver_ptr;  // edges of receiver r: [receiver_ptr[r], receiver_ptr[r + 1])
  const int64_t* sender_ptr;    // positions of sender s in sender_edges: [sender_ptr[s], sender_ptr[s + 1])
  const int64_t* sender_edges;  // edges ordered by sender, each sender's in increasing edge order
};

// out[r][f] for one receiver r and output column f.
template <typename T>
struct ConvolutionForward {
  ConvolutionPlan<T> p;
  Edges g;
  const T* x;
  const T* sh;
  const T* w;
  T* out;

  MLIPKIT_HOST_DEVICE void operator()(int64_t index) const {
    const int64_t r = index / p.num_out, f = index % p.num_out;
    T sum = T(0);
    for (int64_t q = p.out_ptr[f]; q < p.out_ptr[f + 1]; ++q) {
      const int64_t path = p.out_path[q], k = p.out_k[q], u = p.out_u[q];
      const int64_t group = p.path_group[path], mul = p.path_mul[path];
      const int64_t nz_begin = p.by_k.ptr[p.by_k.row[group] + k], nz_end = p.by_k.ptr[p.by_k.row[group] + k + 1];
      for (int64_t e = g.receiver_ptr[r]; e < g.receiver_ptr[r + 1]; ++e) {
        const T* xs = x + g.sender[e] * p.num_in + p.path_in[path] + u;
        const T* she = sh + e * p.num_sh + p.path_sh[path];
        T a = T(0);
        for (int64_t z = nz_begin; z < nz_end; ++z) a += p.by_k.c[z] * xs[p.by_k.i[z] * mul] * she[p.by_k.j[z]];
        sum += w[e * p.num_weights + p.path_weight[path] + u] * a;
      }
    }
    out[index] = sum;
  }
};

// grad_x[s][column] for one sender s: over the edges s sends, in increasing edge order.
template <typename T>
struct ConvolutionInputGradient {
  ConvolutionPlan<T> p;
  Edges g;
  const T* grad_out;
  const T* sh;
  const T* w;
  T* grad_x;

  MLIPKIT_HOST_DEVICE void operator()(int64_t index) const {
    const int64_t s = index / p.num_in, column = index % p.num_in;
    T sum = T(0);
    for (int64_t q = p.in_ptr[column]; q < p.in_ptr[column + 1]; ++q) {
      const int64_t path = p.in_path[q], i = p.in_i[q], u = p.in_u[q];
      const int64_t group = p.path_group[path], mul = p.path_mul[path];
      const int64_t nz_begin = p.by_i.ptr[p.by_i.row[group] + i], nz_end = p.by_i.ptr[p.by_i.row[group] + i + 1];
      for (int64_t position = g.sender_ptr[s]; position < g.sender_ptr[s + 1]; ++position) {
        const int64_t e = g.sender_edges[position];
        const T* gr = grad_out + g.receiver[e] * p.num_out + p.path_out[path] + u;
        const T* she = sh + e * p.num_sh + p.path_sh[path];
        T a = T(0);
        for (int64_t z = nz_begin; z < nz_end; ++z) a += p.by_i.c[z] * she[p.by_i.j[z]] * gr[p.by_i.k[z] * mul];
        sum += w[e * p.num_weights + p.path_weight[path] + u] * a;
      }
    }
    grad_x[index] = sum;
  }
};

// grad_w[e][column]: the column's path and channel alone.
template <typename T>
struct ConvolutionWeightGradient {
  ConvolutionPlan<T> p;
  Edges g;
  const T* grad_out;
  const T* x;
  const T* sh;
  T* grad_w;

  MLIPKIT_HOST_DEVICE void operator()(int64_t index) const {
    const int64_t e = index / p.num_weights, column = index % p.num_weights;
    const int64_t path = p.weight_path[column], u = p.weight_u[column];
    const int64_t group = p.path_group[path], mul = p.path_mul[path];
    const T* xs = x + g.sender[e] * p.num_in + p.path_in[path] + u;
    const T* she = sh + e * p.num_sh + p.path_sh[path];
    const T* gr = grad_out + g.receiver[e] * p.num_out + p.path_out[path] + u;
    T sum = T(0);
    for (int64_t z = p.group_nz_begin[group]; z < p.group_nz_end[group]; ++z) {
      sum += p.by_k.c[z] * xs[p.by_k.i[z] * mul] * she[p.by_k.j[z]] * gr[p.by_k.k[z] * mul];
    }
    grad_w[index] = sum;
  }
};

// grad_sh[e][column]: over the paths reading the column, their non-zeros with that j, and their channels.
template <typename T>
struct ConvolutionHarmonicsGradient {
  ConvolutionPlan<T> p;
  Edges g;
  const T* grad_out;
  const T* x;
  const T* w;
  T* grad_sh;

  MLIPKIT_HOST_DEVICE void operator()(int64_t index) const {
    const int64_t e = index / p.num_sh, column = index % p.num_sh;
    T sum = T(0);
    for (int64_t q = p.sh_ptr[column]; q < p.sh_ptr[column + 1]; ++q) {
      const int64_t path = p.sh_path[q], j = p.sh_j[q];
      const int64_t group = p.path_group[path], mul = p.path_mul[path];
      const T* xs = x + g.sender[e] * p.num_in + p.path_in[path];
      const T* gr = grad_out + g.receiver[e] * p.num_out + p.path_out[path];
      const T* we = w + e * p.num_weights + p.path_weight[path];
      for (int64_t z = p.by_j.ptr[p.by_j.row[group] + j]; z < p.by_j.ptr[p.by_j.row[group] + j + 1]; ++z) {
        const T* xi = xs + p.by_j.i[z] * mul;
        const T* gk = gr + p.by_j.k[z] * mul;
        T a = T(0);
        for (int64_t u = 0; u < mul; ++u) a += we[u] * xi[u] * gk[u];
        sum += p.by_j.c[z] * a;
      }
    }
    grad_sh[index] = sum;
  }
};

// ---------------------------------------------------------------- channelwise polynomial

using polynomial::kMaxDegree;

// Terms sorted by a key row (output row, or coefficient row): the terms of key m are [ptr[m], ptr[m + 1]).
template <typename T>
struct PolynomialTerms {
  const int64_t* ptr;
  const int64_t* output;
  const int64_t* coefficient;
  const int64_t* degree;
  const int64_t* factors;  // [kMaxDegree] per term
  const T* multiplier;
};

struct PolynomialShape {
  int64_t num_channels, num_features, num_sets, num_outputs, num_coefficients;
};

// out[n][o][c] = sum over the terms of output row o of multiplier * (sum_e w[n][e] k[e][coefficient][c])
// * prod features[n][factor][c].
template <typename T>
struct PolynomialEvaluate {
  PolynomialTerms<T> terms;  // by output row
  PolynomialShape shape;
  const T* features;
  const T* node_weights;
  const T* coefficients;
  T* out;

  MLIPKIT_HOST_DEVICE void operator()(int64_t index) const {
    const int64_t C = shape.num_channels;
    const int64_t c = index % C, o = (index / C) % shape.num_outputs, n = index / (C * shape.num_outputs);
    const T* x = features + n * shape.num_features * C + c;
    const T* weights = node_weights + n * shape.num_sets;
    T sum = T(0);
    for (int64_t t = terms.ptr[o]; t < terms.ptr[o + 1]; ++t) {
      T product = terms.multiplier[t];
      for (int64_t s = 0; s < terms.degree[t]; ++s) product *= x[terms.factors[t * kMaxDegree + s] * C];
      T coefficient = T(0);
      for (int64_t e = 0; e < shape.num_sets; ++e) {
        coefficient += weights[e] * coefficients[(e * shape.num_coefficients + terms.coefficient[t]) * C + c];
      }
      sum += coefficient * product;
    }
    out[index] = sum;
  }
};

// partial[chunk][e][m][c]: the coefficient gradient's sum over the nodes of one chunk; the chunks are summed
// afterwards in a fixed order.
template <typename T>
struct PolynomialCoefficientGradient {
  PolynomialTerms<T> terms;  // by coefficient row
  PolynomialShape shape;
  const T* features;
  const T* node_weights;
  const T* grad_out;
  int64_t num_nodes, chunk_nodes;
  T* partial;

  MLIPKIT_HOST_DEVICE void operator()(int64_t index) const {
    const int64_t C = shape.num_channels, M = shape.num_coefficients;
    const int64_t c = index % C, m = (index / C) % M, e = (index / (C * M)) % shape.num_sets;
    const int64_t chunk = index / (C * M * shape.num_sets);
    const int64_t first = chunk * chunk_nodes;
    const int64_t last = first + chunk_nodes < num_nodes ? first + chunk_nodes : num_nodes;
    T sum = T(0);
    for (int64_t n = first; n < last; ++n) {
      const T* x = features + n * shape.num_features * C + c;
      const T* g = grad_out + n * shape.num_outputs * C + c;
      T node_sum = T(0);
      for (int64_t t = terms.ptr[m]; t < terms.ptr[m + 1]; ++t) {
        T product = terms.multiplier[t] * g[terms.output[t] * C];
        for (int64_t s = 0; s < terms.degree[t]; ++s) product *= x[terms.factors[t * kMaxDegree + s] * C];
        node_sum += product;
      }
      sum += node_weights[n * shape.num_sets + e] * node_sum;
    }
    partial[index] = sum;
  }
};

// ---------------------------------------------------------------- sums of outer products over sorted segments

// GemNet-OC's triplet and quadruplet contraction and its two derivatives (see csrc/ops/segment_outer.cpp):
// rows t of basis [T, S] carry features[source[t]] [N, C] into target sorted_target[t].
struct SegmentOuterRows {
  const int64_t* source;
  const int64_t* target;      // sorted
  const int64_t* target_ptr;  // rows of target o: [target_ptr[o], target_ptr[o + 1])
  const int64_t* source_ptr;  // positions of source n in source_rows: [source_ptr[n], source_ptr[n + 1])
  const int64_t* source_rows; // rows ordered by source, each source's in increasing row order
  int64_t num_basis, num_channels;
};

// out[o][s][c] = sum over the rows of target o of basis[t][s] features[source[t]][c].
template <typename T>
struct SegmentOuterSum {
  SegmentOuterRows rows;
  const T* basis;
  const T* features;
  T* out;

  MLIPKIT_HOST_DEVICE void operator()(int64_t index) const {
    const int64_t S = rows.num_basis, C = rows.num_channels;
    const int64_t c = index % C, s = (index / C) % S, o = index / (C * S);
    T sum = T(0);
    for (int64_t t = rows.target_ptr[o]; t < rows.target_ptr[o + 1]; ++t) {
      sum += basis[t * S + s] * features[rows.source[t] * C + c];
    }
    out[index] = sum;
  }
};

// grad_basis[t][s] = sum over c of grad[target[t]][s][c] features[source[t]][c].
template <typename T>
struct SegmentOuterBasisGradient {
  SegmentOuterRows rows;
  const T* grad;
  const T* features;
  T* grad_basis;

  MLIPKIT_HOST_DEVICE void operator()(int64_t index) const {
    const int64_t S = rows.num_basis, C = rows.num_channels;
    const int64_t s = index % S, t = index / S;
    const T* g = grad + (rows.target[t] * S + s) * C;
    const T* f = features + rows.source[t] * C;
    T sum = T(0);
    for (int64_t c = 0; c < C; ++c) sum += g[c] * f[c];
    grad_basis[index] = sum;
  }
};

// grad_features[n][c] = sum over the rows of source n (in row order) and s of basis[t][s] grad[target[t]][s][c].
template <typename T>
struct SegmentOuterFeaturesGradient {
  SegmentOuterRows rows;
  const T* basis;
  const T* grad;
  T* grad_features;

  MLIPKIT_HOST_DEVICE void operator()(int64_t index) const {
    const int64_t S = rows.num_basis, C = rows.num_channels;
    const int64_t c = index % C, n = index / C;
    T sum = T(0);
    for (int64_t position = rows.source_ptr[n]; position < rows.source_ptr[n + 1]; ++position) {
      const int64_t t = rows.source_rows[position];
      const T* g = grad + rows.target[t] * S * C + c;
      for (int64_t s = 0; s < S; ++s) sum += basis[t * S + s] * g[s * C];
    }
    grad_features[index] = sum;
  }
};

}  // namespace device
}  // namespace mlipkit
