// The plan of a channelwise polynomial, as plain arrays (see convolution_plan.hpp
// for why kernel headers hold nothing but plain structs).
//
// Per node n and channel c, a term t contributes
//   multiplier[t] * coefficients[e][coefficient[t]][c] * prod_s features[n][factor[t][s]][c]
// to row output[t], for every coefficient set e the node weighs. The kernels
// see offsets already multiplied by the channel count (rows are C apart).

#pragma once

#include <cstdint>

namespace mlipkit {
namespace polynomial {

constexpr int64_t kMaxDegree = 4;

// Terms grouped into runs that share a key row: the output row (evaluation)
// or the coefficient row (coefficient gradient); within a run by degree.
template <typename T>
struct Terms {
  int64_t num_runs;
  const int64_t* run_key;             // [num_runs] key row offset
  const int64_t* run_begin;           // [num_runs + 1]: terms of run r are [run_begin[r], run_begin[r+1])
  const int64_t* output_offset;       // [T] output row offset
  const int64_t* coefficient_offset;  // [T] coefficient row offset
  const int64_t* degree;              // [T] 1..kMaxDegree
  const int64_t* factor_offset;       // [kMaxDegree T] feature row offsets, the first degree[t] used
  const T* multiplier;                // [T]
};

template <typename T>
struct Problem {
  Terms<T> terms;
  int64_t num_channels;      // C
  int64_t num_features;      // feature rows per node
  int64_t num_sets;          // coefficient sets (node weight columns)
  int64_t num_outputs;       // output (or output-gradient) rows per node
  int64_t num_coefficients;  // coefficient rows per set
};

// Kernels of one instruction set, in namespaces baseline / avx2 / avx512.
// evaluate: out rows of nodes [begin, end) (overwritten).
// coefficient_gradient: grad_coefficients[e][key of runs [run_begin, run_end)][channels
// [channel_begin, channel_end)] (overwritten), summed over every node in order.
#define MLIPKIT_DECLARE_POLYNOMIAL_KERNELS(NS)                                                            \
  namespace NS {                                                                                         \
  void evaluate(const Problem<float>& p, const float* features, const float* node_weights,               \
                const float* coefficients, int64_t begin, int64_t end, float* out);                      \
  void evaluate(const Problem<double>& p, const double* features, const double* node_weights,            \
                const double* coefficients, int64_t begin, int64_t end, double* out);                    \
  void coefficient_gradient(const Problem<float>& p, const float* features, const float* node_weights,   \
                            const float* grad_out, int64_t num_nodes, int64_t run_begin, int64_t run_end, \
                            int64_t channel_begin, int64_t channel_end, float* grad_coefficients);        \
  void coefficient_gradient(const Problem<double>& p, const double* features, const double* node_weights, \
                            const double* grad_out, int64_t num_nodes, int64_t run_begin, int64_t run_end, \
                            int64_t channel_begin, int64_t channel_end, double* grad_coefficients);       \
  }

MLIPKIT_DECLARE_POLYNOMIAL_KERNELS(baseline)
MLIPKIT_DECLARE_POLYNOMIAL_KERNELS(avx2)
MLIPKIT_DECLARE_POLYNOMIAL_KERNELS(avx512)

}  // namespace polynomial
}  // namespace mlipkit
