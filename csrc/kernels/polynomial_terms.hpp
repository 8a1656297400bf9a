// The terms of mlipkit::channelwise_polynomial as the op receives them (see
// polynomial.cpp), validated once for the CPU and the device kernels.

#pragma once

#include <ATen/ATen.h>

#include <vector>

#include "polynomial_plan.hpp"

namespace mlipkit {
namespace polynomial {

constexpr int64_t kTermFields = 4 + kMaxDegree;

struct Term {
  int64_t output, coefficient, multiplier, degree;
  int64_t factors[kMaxDegree];
};

// Throws, naming `op` and the term, unless every term reads and writes rows that exist.
std::vector<Term> parse_terms(at::IntArrayRef fields, int64_t num_features, int64_t num_outputs,
                              int64_t num_coefficients, const char* op);

// The operands' shapes, dtypes and device, as channelwise_polynomial and its coefficient gradient need them.
void check_evaluate(const at::Tensor& features, const at::Tensor& node_weights, const at::Tensor& coefficients,
                    int64_t num_outputs);
void check_coefficient_grad(const at::Tensor& features, const at::Tensor& node_weights, const at::Tensor& grad_out,
                            int64_t num_coefficients);

}  // namespace polynomial
}  // namespace mlipkit
