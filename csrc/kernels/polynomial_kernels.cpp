// Channelwise polynomial kernels, compiled once per instruction set (see
// lanes.hpp). Channels are the vector lanes: every term is a few vector
// multiplies over one register of channels, with the term's coefficients
// loaded for those channels.
//
// evaluate, per node n, output row o, channel c:
//   out[n][o][c] = sum_e w[n][e] sum_{t in run o} m_t K[e][k_t][c] prod_s x[n][f_ts][c]
// coefficient_gradient, per set e, coefficient row k, channel c:
//   G[e][k][c] = sum_n w[n][e] sum_{t in run k} m_t g[n][o_t][c] prod_s x[n][f_ts][c]
// Every output element is written by one thread in a fixed order: results do
// not depend on the number of threads.

#include "lanes.hpp"
#include "polynomial_plan.hpp"

namespace mlipkit {
namespace polynomial {
namespace MLIPKIT_ISA {
namespace {

using mlipkit::MLIPKIT_ISA::kLanes;
using mlipkit::MLIPKIT_ISA::Lanes;

// v * prod of the term's feature rows, at channel c0.
template <typename T, int64_t L>
inline typename Lanes<T, L>::type times_factors(typename Lanes<T, L>::type v, const Terms<T>& terms, int64_t t,
                                                const T* x, int64_t c0) {
  using V = Lanes<T, L>;
  const int64_t* f = terms.factor_offset + kMaxDegree * t;
  switch (terms.degree[t]) {
    case 4:
      v *= V::load(x + f[3] + c0);
      [[fallthrough]];
    case 3:
      v *= V::load(x + f[2] + c0);
      [[fallthrough]];
    case 2:
      v *= V::load(x + f[1] + c0);
      [[fallthrough]];
    default:
      v *= V::load(x + f[0] + c0);
  }
  return v;
}

// For runs [run_begin, run_end): out[key] += weight * sum_t m_t source[source_offset[t]] prod_s x[f_ts], at
// channel c0. Evaluation reads the coefficients (source_offset: coefficient rows), the coefficient gradient
// reads the output gradient (source_offset: output rows).
template <typename T, int64_t L>
inline void accumulate_runs(const Terms<T>& terms, const int64_t* source_offset, const T* source, const T* x,
                            T weight, int64_t run_begin, int64_t run_end, T* out, int64_t c0) {
  using V = Lanes<T, L>;
  for (int64_t r = run_begin; r < run_end; ++r) {
    typename V::type sum = {};
    for (int64_t t = terms.run_begin[r]; t < terms.run_begin[r + 1]; ++t) {
      const auto k = terms.multiplier[t] * V::load(source + source_offset[t] + c0);
      sum += times_factors<T, L>(k, terms, t, x, c0);
    }
    T* o = out + terms.run_key[r] + c0;
    V::store(o, V::load(o) + weight * sum);
  }
}

template <typename T>
void evaluate_range(const Problem<T>& p, const T* features, const T* node_weights, const T* coefficients,
                    int64_t begin, int64_t end, T* out) {
  constexpr int64_t B = kLanes<T>;
  const int64_t C = p.num_channels;
  for (int64_t n = begin; n < end; ++n) {
    T* out_row = out + n * p.num_outputs * C;
    for (int64_t i = 0; i < p.num_outputs * C; ++i) {
      out_row[i] = 0;
    }
    const T* x = features + n * p.num_features * C;
    for (int64_t e = 0; e < p.num_sets; ++e) {
      const T weight = node_weights[n * p.num_sets + e];
      if (weight == T(0)) {
        continue;
      }
      const T* k = coefficients + e * p.num_coefficients * C;
      int64_t c0 = 0;
      for (; c0 + B <= C; c0 += B) {
        accumulate_runs<T, B>(p.terms, p.terms.coefficient_offset, k, x, weight, 0, p.terms.num_runs, out_row, c0);
      }
      for (; c0 < C; ++c0) {
        accumulate_runs<T, 1>(p.terms, p.terms.coefficient_offset, k, x, weight, 0, p.terms.num_runs, out_row, c0);
      }
    }
  }
}

template <typename T>
void coefficient_gradient_range(const Problem<T>& p, const T* features, const T* node_weights, const T* grad_out,
                                int64_t num_nodes, int64_t run_begin, int64_t run_end, int64_t channel_begin,
                                int64_t channel_end, T* grad_coefficients) {
  constexpr int64_t B = kLanes<T>;
  const int64_t C = p.num_channels;
  for (int64_t e = 0; e < p.num_sets; ++e) {
    T* grad = grad_coefficients + e * p.num_coefficients * C;
    for (int64_t r = run_begin; r < run_end; ++r) {
      for (int64_t c = channel_begin; c < channel_end; ++c) {
        grad[p.terms.run_key[r] + c] = 0;
      }
    }
  }
  for (int64_t n = 0; n < num_nodes; ++n) {
    const T* x = features + n * p.num_features * C;
    const T* g = grad_out + n * p.num_outputs * C;
    for (int64_t e = 0; e < p.num_sets; ++e) {
      const T weight = node_weights[n * p.num_sets + e];
      if (weight == T(0)) {
        continue;
      }
      T* grad = grad_coefficients + e * p.num_coefficients * C;
      int64_t c0 = channel_begin;
      for (; c0 + B <= channel_end; c0 += B) {
        accumulate_runs<T, B>(p.terms, p.terms.output_offset, g, x, weight, run_begin, run_end, grad, c0);
      }
      for (; c0 < channel_end; ++c0) {
        accumulate_runs<T, 1>(p.terms, p.terms.output_offset, g, x, weight, run_begin, run_end, grad, c0);
      }
    }
  }
}

}  // namespace

void evaluate(const Problem<float>& p, const float* features, const float* node_weights, const float* coefficients,
              int64_t begin, int64_t end, float* out) {
  evaluate_range(p, features, node_weights, coefficients, begin, end, out);
}

void evaluate(const Problem<double>& p, const double* features, const double* node_weights,
              const double* coefficients, int64_t begin, int64_t end, double* out) {
  evaluate_range(p, features, node_weights, coefficients, begin, end, out);
}

void coefficient_gradient(const Problem<float>& p, const float* features, const float* node_weights,
                          const float* grad_out, int64_t num_nodes, int64_t run_begin, int64_t run_end,
                          int64_t channel_begin, int64_t channel_end, float* grad_coefficients) {
  coefficient_gradient_range(p, features, node_weights, grad_out, num_nodes, run_begin, run_end, channel_begin,
                             channel_end, grad_coefficients);
}

void coefficient_gradient(const Problem<double>& p, const double* features, const double* node_weights,
                          const double* grad_out, int64_t num_nodes, int64_t run_begin, int64_t run_end,
                          int64_t channel_begin, int64_t channel_end, double* grad_coefficients) {
  coefficient_gradient_range(p, features, node_weights, grad_out, num_nodes, run_begin, run_end, channel_begin,
                             channel_end, grad_coefficients);
}

}  // namespace MLIPKIT_ISA
}  // namespace polynomial
}  // namespace mlipkit
