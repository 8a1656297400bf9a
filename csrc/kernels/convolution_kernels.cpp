// Fused tensor-product convolution kernels, compiled once per instruction set
// (MLIPKIT_ISA names the namespace: baseline, avx2, avx512) and chosen at run
// time. Channels are processed a register-wide vector at a time (GCC/Clang
// vector extensions, lowered to the instructions the file is compiled for, see
// lanes.hpp); nothing here calls inline code from other headers (see
// convolution_plan.hpp).
//
// Forward, for each receiver r (edges of r are contiguous, in edge order):
//   out[r][path k][u] = sum_e sum_paths w[e][u] * sum_i a_e[i,k] x[sender][i][u],
//   a_e[i,k] = sum_j C[i,j,k] Y_e[j]   (C: the path's Clebsch-Gordan block times its weight)
// Backward, for each sender s (its edges in edge order), given g = dL/dout:
//   grad_x[s][i][u] += a[i,k] w[u] g[r][k][u]
//   grad_w[e][u]     = sum_k g[r][k][u] sum_i a[i,k] x[s][i][u]
//   grad_Y[e][j]    += C[i,j,k] sum_u w[u] g[r][k][u] x[s][i][u]
// Double forward / double backward (the backward's derivative, see
// convolution_plan.hpp) do the same with two coupling sets per edge, a from Y
// and a' from the harmonics' cotangent dY, in one pass each.
// Every output row is written by one thread, in a fixed order: results do not
// depend on the number of threads.

#include "convolution_plan.hpp"
#include "lanes.hpp"

namespace mlipkit {
namespace convolution {
namespace MLIPKIT_ISA {
namespace {

using mlipkit::MLIPKIT_ISA::kLanes;
using mlipkit::MLIPKIT_ISA::Lanes;

template <typename T>
void edge_couplings(const Problem<T>& p, const T* sh_row, T* a) {
  for (int64_t g = 0; g < p.num_groups; ++g) {
    const CouplingGroup<T>& group = p.groups[g];
    const T* y = sh_row + group.sh_offset;
    T* a_group = a + group.scratch_offset;
    for (int64_t q = 0; q < group.num_pairs; ++q) {
      T sum = 0;
      for (int64_t n = group.pair_nz[q]; n < group.pair_nz[q + 1]; ++n) {
        sum += group.nz_c[n] * y[group.nz_j[n]];
      }
      a_group[q] = sum;
    }
  }
}

template <typename T>
inline void fill_zero(T* row, int64_t size) {
  for (int64_t c = 0; c < size; ++c) {
    row[c] = 0;
  }
}

// wg[k][u] = w[u] g[k][u]: a path's output gradient weighted by its edge weights.
template <typename T>
inline void weight_output_gradient(const T* w, const T* g, int64_t dim_out, int64_t mul, T* wg) {
  for (int64_t k = 0; k < dim_out; ++k) {
    for (int64_t u = 0; u < mul; ++u) {
      wg[k * mul + u] = w[u] * g[k * mul + u];
    }
  }
}

template <typename T, int64_t L>
inline void forward_block(const CouplingGroup<T>& group, const T* a, const T* x, const T* w, T* out,
                          int64_t mul, int64_t u0) {
  using V = Lanes<T, L>;
  const typename V::type wv = V::load(w + u0);
  for (int64_t k = 0; k < group.dim_out; ++k) {
    typename V::type t = {};
    for (int64_t q = group.k_pairs[k]; q < group.k_pairs[k + 1]; ++q) {
      t += a[q] * V::load(x + group.pair_i[q] * mul + u0);
    }
    T* o = out + k * mul + u0;
    V::store(o, V::load(o) + wv * t);
  }
}

// grad_w over one vector of channels, then grad_x of the sender over the same channels.
template <typename T, int64_t L>
inline void backward_block(const CouplingGroup<T>& group, const T* a, const T* x, const T* g, const T* wg,
                           T* grad_x, T* grad_w, int64_t mul, int64_t u0) {
  using V = Lanes<T, L>;
  typename V::type grad_w_block = {};
  for (int64_t k = 0; k < group.dim_out; ++k) {
    typename V::type t = {};
    for (int64_t q = group.k_pairs[k]; q < group.k_pairs[k + 1]; ++q) {
      t += a[q] * V::load(x + group.pair_i[q] * mul + u0);
    }
    grad_w_block += V::load(g + k * mul + u0) * t;
  }
  V::store(grad_w + u0, grad_w_block);
  for (int64_t i = 0; i < group.dim_in; ++i) {
    T* gxi = grad_x + i * mul + u0;
    typename V::type sum = V::load(gxi);
    for (int64_t n = group.i_pairs[i]; n < group.i_pairs[i + 1]; ++n) {
      const int64_t q = group.pairs_by_i[n];
      sum += a[q] * V::load(wg + group.pair_k[q] * mul + u0);
    }
    V::store(gxi, sum);
  }
}

// sum_u p[u] * q[u] over mul channels, in a fixed order.
template <typename T>
inline T dot(const T* p, const T* q, int64_t mul) {
  constexpr int64_t B = kLanes<T>;
  using V = Lanes<T, B>;
  typename V::type sum = {};
  int64_t u = 0;
  for (; u + B <= mul; u += B) {
    sum += V::load(p + u) * V::load(q + u);
  }
  T total = 0;
  for (int64_t lane = 0; lane < B; ++lane) {
    total += sum[lane];
  }
  for (; u < mul; ++u) {
    total += p[u] * q[u];
  }
  return total;
}

template <typename T>
void forward_range(const Problem<T>& p, const T* x, const T* sh, const T* w, WeightRows rows,
                   const int64_t* receiver_ptr, int64_t begin, int64_t end, T* out, T* scratch) {
  constexpr int64_t B = kLanes<T>;
  for (int64_t r = begin; r < end; ++r) {
    T* out_row = out + r * p.num_out_features;
    fill_zero(out_row, p.num_out_features);
    for (int64_t e = receiver_ptr[r]; e < receiver_ptr[r + 1]; ++e) {
      const T* x_row = x + p.sender[e] * p.num_in_features;
      const T* w_row = w + (e - rows.first) * p.num_weights;
      edge_couplings(p, sh + e * p.num_sh, scratch);
      for (int64_t n = 0; n < p.num_paths; ++n) {
        const Path& path = p.paths[n];
        const CouplingGroup<T>& group = p.groups[path.group];
        const T* a = scratch + group.scratch_offset;
        const T* xp = x_row + path.in_offset;
        const T* wp = w_row + path.weight_offset;
        T* op = out_row + path.out_offset;
        int64_t u0 = 0;
        for (; u0 + B <= path.mul; u0 += B) {
          forward_block<T, B>(group, a, xp, wp, op, path.mul, u0);
        }
        for (; u0 < path.mul; ++u0) {
          forward_block<T, 1>(group, a, xp, wp, op, path.mul, u0);
        }
      }
    }
  }
}

template <typename T>
void backward_range(const Problem<T>& p, const T* grad_out, const T* x, const T* sh, const T* w, WeightRows rows,
                    const int64_t* sender_ptr, const int64_t* sender_edges, int64_t begin, int64_t end,
                    T* grad_x, T* grad_sh, T* grad_w, T* scratch) {
  constexpr int64_t B = kLanes<T>;
  T* wg = scratch + p.scratch_size;
  for (int64_t s = begin; s < end; ++s) {
    T* grad_x_row = grad_x + s * p.num_in_features;
    fill_zero(grad_x_row, p.num_in_features);
    const T* x_row = x + s * p.num_in_features;
    for (int64_t position = sender_ptr[s]; position < sender_ptr[s + 1]; ++position) {
      const int64_t e = sender_edges[position];
      const T* g_row = grad_out + p.receiver[e] * p.num_out_features;
      const int64_t weight_row = (rows.by_position ? position : e) - rows.first;
      const T* w_row = w + weight_row * p.num_weights;
      T* grad_sh_row = grad_sh + e * p.num_sh;
      fill_zero(grad_sh_row, p.num_sh);
      T* grad_w_row = grad_w + weight_row * p.num_weights;
      edge_couplings(p, sh + e * p.num_sh, scratch);
      for (int64_t n = 0; n < p.num_paths; ++n) {
        const Path& path = p.paths[n];
        const CouplingGroup<T>& group = p.groups[path.group];
        const int64_t mul = path.mul;
        const T* a = scratch + group.scratch_offset;
        const T* xp = x_row + path.in_offset;
        const T* wp = w_row + path.weight_offset;
        const T* gp = g_row + path.out_offset;
        weight_output_gradient(wp, gp, group.dim_out, mul, wg);
        T* gxp = grad_x_row + path.in_offset;
        T* gwp = grad_w_row + path.weight_offset;
        int64_t u0 = 0;
        for (; u0 + B <= mul; u0 += B) {
          backward_block<T, B>(group, a, xp, gp, wg, gxp, gwp, mul, u0);
        }
        for (; u0 < mul; ++u0) {
          backward_block<T, 1>(group, a, xp, gp, wg, gxp, gwp, mul, u0);
        }
        // grad_Y[j] = sum over pairs (i, k) and their non-zeros of c * <w g_k, x_i>
        T* grad_y = grad_sh_row + group.sh_offset;
        for (int64_t q = 0; q < group.num_pairs; ++q) {
          const T b = dot(wg + group.pair_k[q] * mul, xp + group.pair_i[q] * mul, mul);
          for (int64_t nz = group.pair_nz[q]; nz < group.pair_nz[q + 1]; ++nz) {
            grad_y[group.nz_j[nz]] += group.nz_c[nz] * b;
          }
        }
      }
    }
  }
}

// out[k] += w * sum_i (a[i,k] dx[i] + a'[i,k] x[i]) + dw * sum_i a[i,k] x[i] over one vector of channels.
template <typename T, int64_t L>
inline void double_forward_block(const CouplingGroup<T>& group, const T* a, const T* a2, const T* x, const T* dx,
                                 const T* w, const T* dw, T* out, int64_t mul, int64_t u0) {
  using V = Lanes<T, L>;
  const typename V::type wv = V::load(w + u0);
  const typename V::type dwv = V::load(dw + u0);
  for (int64_t k = 0; k < group.dim_out; ++k) {
    typename V::type by_x = {}, mixed = {};
    for (int64_t q = group.k_pairs[k]; q < group.k_pairs[k + 1]; ++q) {
      const int64_t column = group.pair_i[q] * mul + u0;
      const typename V::type xv = V::load(x + column);
      by_x += a[q] * xv;
      mixed += a[q] * V::load(dx + column) + a2[q] * xv;
    }
    T* o = out + k * mul + u0;
    V::store(o, V::load(o) + wv * mixed + dwv * by_x);
  }
}

// grad_w over one vector of channels, then grad_x of the sender; wg = w g, dwg = dw g.
template <typename T, int64_t L>
inline void double_backward_block(const CouplingGroup<T>& group, const T* a, const T* a2, const T* x, const T* dx,
                                  const T* g, const T* wg, const T* dwg, T* grad_x, T* grad_w,
                                  int64_t mul, int64_t u0) {
  using V = Lanes<T, L>;
  typename V::type grad_w_block = {};
  for (int64_t k = 0; k < group.dim_out; ++k) {
    typename V::type mixed = {};
    for (int64_t q = group.k_pairs[k]; q < group.k_pairs[k + 1]; ++q) {
      const int64_t column = group.pair_i[q] * mul + u0;
      mixed += a[q] * V::load(dx + column) + a2[q] * V::load(x + column);
    }
    grad_w_block += V::load(g + k * mul + u0) * mixed;
  }
  V::store(grad_w + u0, grad_w_block);
  for (int64_t i = 0; i < group.dim_in; ++i) {
    T* gxi = grad_x + i * mul + u0;
    typename V::type sum = V::load(gxi);
    for (int64_t n = group.i_pairs[i]; n < group.i_pairs[i + 1]; ++n) {
      const int64_t q = group.pairs_by_i[n];
      const int64_t column = group.pair_k[q] * mul + u0;
      sum += a2[q] * V::load(wg + column) + a[q] * V::load(dwg + column);
    }
    V::store(gxi, sum);
  }
}

template <typename T>
void double_forward_range(const Problem<T>& p, const T* x, const T* dx, const T* sh, const T* dsh, const T* w,
                          const T* dw, const int64_t* receiver_ptr, int64_t begin, int64_t end, T* out, T* scratch) {
  constexpr int64_t B = kLanes<T>;
  T* a2_all = scratch + p.scratch_size;
  for (int64_t r = begin; r < end; ++r) {
    T* out_row = out + r * p.num_out_features;
    fill_zero(out_row, p.num_out_features);
    for (int64_t e = receiver_ptr[r]; e < receiver_ptr[r + 1]; ++e) {
      const int64_t row = p.sender[e] * p.num_in_features;
      edge_couplings(p, sh + e * p.num_sh, scratch);
      edge_couplings(p, dsh + e * p.num_sh, a2_all);
      for (int64_t n = 0; n < p.num_paths; ++n) {
        const Path& path = p.paths[n];
        const CouplingGroup<T>& group = p.groups[path.group];
        const T* a = scratch + group.scratch_offset;
        const T* a2 = a2_all + group.scratch_offset;
        const T* xp = x + row + path.in_offset;
        const T* dxp = dx + row + path.in_offset;
        const T* wp = w + e * p.num_weights + path.weight_offset;
        const T* dwp = dw + e * p.num_weights + path.weight_offset;
        T* op = out_row + path.out_offset;
        int64_t u0 = 0;
        for (; u0 + B <= path.mul; u0 += B) {
          double_forward_block<T, B>(group, a, a2, xp, dxp, wp, dwp, op, path.mul, u0);
        }
        for (; u0 < path.mul; ++u0) {
          double_forward_block<T, 1>(group, a, a2, xp, dxp, wp, dwp, op, path.mul, u0);
        }
      }
    }
  }
}

template <typename T>
void double_backward_range(const Problem<T>& p, const T* grad_out, const T* x, const T* dx, const T* sh,
                           const T* dsh, const T* w, const T* dw, const int64_t* sender_ptr,
                           const int64_t* sender_edges, int64_t begin, int64_t end, T* grad_x, T* grad_sh, T* grad_w,
                           T* scratch) {
  constexpr int64_t B = kLanes<T>;
  T* a2_all = scratch + p.scratch_size;
  T* wg = a2_all + p.scratch_size;
  for (int64_t s = begin; s < end; ++s) {
    T* grad_x_row = grad_x + s * p.num_in_features;
    fill_zero(grad_x_row, p.num_in_features);
    const T* x_row = x + s * p.num_in_features;
    const T* dx_row = dx + s * p.num_in_features;
    for (int64_t position = sender_ptr[s]; position < sender_ptr[s + 1]; ++position) {
      const int64_t e = sender_edges[position];
      const T* g_row = grad_out + p.receiver[e] * p.num_out_features;
      T* grad_sh_row = grad_sh + e * p.num_sh;
      fill_zero(grad_sh_row, p.num_sh);
      edge_couplings(p, sh + e * p.num_sh, scratch);
      edge_couplings(p, dsh + e * p.num_sh, a2_all);
      for (int64_t n = 0; n < p.num_paths; ++n) {
        const Path& path = p.paths[n];
        const CouplingGroup<T>& group = p.groups[path.group];
        const int64_t mul = path.mul;
        const T* a = scratch + group.scratch_offset;
        const T* a2 = a2_all + group.scratch_offset;
        const T* xp = x_row + path.in_offset;
        const T* dxp = dx_row + path.in_offset;
        const T* wp = w + e * p.num_weights + path.weight_offset;
        const T* dwp = dw + e * p.num_weights + path.weight_offset;
        const T* gp = g_row + path.out_offset;
        T* dwg = wg + group.dim_out * mul;
        weight_output_gradient(wp, gp, group.dim_out, mul, wg);
        weight_output_gradient(dwp, gp, group.dim_out, mul, dwg);
        T* gxp = grad_x_row + path.in_offset;
        T* gwp = grad_w + e * p.num_weights + path.weight_offset;
        int64_t u0 = 0;
        for (; u0 + B <= mul; u0 += B) {
          double_backward_block<T, B>(group, a, a2, xp, dxp, gp, wg, dwg, gxp, gwp, mul, u0);
        }
        for (; u0 < mul; ++u0) {
          double_backward_block<T, 1>(group, a, a2, xp, dxp, gp, wg, dwg, gxp, gwp, mul, u0);
        }
        // grad_Y[j] = sum over pairs (i, k) and their non-zeros of c * (<w g_k, dx_i> + <dw g_k, x_i>)
        T* grad_y = grad_sh_row + group.sh_offset;
        for (int64_t q = 0; q < group.num_pairs; ++q) {
          const T b = dot(wg + group.pair_k[q] * mul, dxp + group.pair_i[q] * mul, mul) +
                      dot(dwg + group.pair_k[q] * mul, xp + group.pair_i[q] * mul, mul);
          for (int64_t nz = group.pair_nz[q]; nz < group.pair_nz[q + 1]; ++nz) {
            grad_y[group.nz_j[nz]] += group.nz_c[nz] * b;
          }
        }
      }
    }
  }
}

}  // namespace

void forward(const Problem<float>& p, const float* x, const float* sh, const float* w, WeightRows rows,
             const int64_t* receiver_ptr, int64_t begin, int64_t end, float* out, float* scratch) {
  forward_range(p, x, sh, w, rows, receiver_ptr, begin, end, out, scratch);
}

void forward(const Problem<double>& p, const double* x, const double* sh, const double* w, WeightRows rows,
             const int64_t* receiver_ptr, int64_t begin, int64_t end, double* out, double* scratch) {
  forward_range(p, x, sh, w, rows, receiver_ptr, begin, end, out, scratch);
}

void backward(const Problem<float>& p, const float* grad_out, const float* x, const float* sh, const float* w,
              WeightRows rows, const int64_t* sender_ptr, const int64_t* sender_edges, int64_t begin, int64_t end,
              float* grad_x, float* grad_sh, float* grad_w, float* scratch) {
  backward_range(p, grad_out, x, sh, w, rows, sender_ptr, sender_edges, begin, end, grad_x, grad_sh, grad_w,
                 scratch);
}

void backward(const Problem<double>& p, const double* grad_out, const double* x, const double* sh, const double* w,
              WeightRows rows, const int64_t* sender_ptr, const int64_t* sender_edges, int64_t begin, int64_t end,
              double* grad_x, double* grad_sh, double* grad_w, double* scratch) {
  backward_range(p, grad_out, x, sh, w, rows, sender_ptr, sender_edges, begin, end, grad_x, grad_sh, grad_w,
                 scratch);
}

#define MLIPKIT_DEFINE_DOUBLE_KERNELS(T)                                                                      \
  void double_forward(const Problem<T>& p, const T* x, const T* dx, const T* sh, const T* dsh, const T* w,     \
                      const T* dw, const int64_t* receiver_ptr, int64_t begin, int64_t end, T* out, T* scratch) { \
    double_forward_range(p, x, dx, sh, dsh, w, dw, receiver_ptr, begin, end, out, scratch);                   \
  }                                                                                                          \
  void double_backward(const Problem<T>& p, const T* grad_out, const T* x, const T* dx, const T* sh,          \
                       const T* dsh, const T* w, const T* dw, const int64_t* sender_ptr,                      \
                       const int64_t* sender_edges, int64_t begin, int64_t end, T* grad_x, T* grad_sh,        \
                       T* grad_w, T* scratch) {                                                               \
    double_backward_range(p, grad_out, x, dx, sh, dsh, w, dw, sender_ptr, sender_edges, begin, end, grad_x,   \
                          grad_sh, grad_w, scratch);                                                          \
  }
MLIPKIT_DEFINE_DOUBLE_KERNELS(float)
MLIPKIT_DEFINE_DOUBLE_KERNELS(double)
#undef MLIPKIT_DEFINE_DOUBLE_KERNELS

}  // namespace MLIPKIT_ISA
}  // namespace convolution
}  // namespace mlipkit
