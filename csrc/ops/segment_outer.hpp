// The operand checks of GemNet-OC's segment outer-product ops (see segment_outer.cpp), shared by their CPU and
// device kernels; the index values are checked where the indices live.

#pragma once

#include <ATen/ATen.h>

namespace mlipkit {
namespace segment_outer {

void check_outer_sum(const at::Tensor& basis, const at::Tensor& features, const at::Tensor& source,
                     const at::Tensor& sorted_target, int64_t num_targets);
void check_basis_grad(const at::Tensor& grad, const at::Tensor& features, const at::Tensor& source,
                      const at::Tensor& sorted_target);
void check_features_grad(const at::Tensor& basis, const at::Tensor& grad, const at::Tensor& source,
                         const at::Tensor& sorted_target, int64_t num_sources);

}  // namespace segment_outer
}  // namespace mlipkit
