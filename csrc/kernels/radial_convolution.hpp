// mlipkit::radial_convolution and its backward from the plain convolution op and ATen (see
// radial_convolution.cpp): what devices without the fused kernel run (CUDA).

#pragma once

#include <ATen/ATen.h>
#include <c10/util/string_view.h>

#include <tuple>

namespace mlipkit {
namespace convolution {

at::Tensor radial_convolution_composite(const at::Tensor& node_features, const at::Tensor& edge_sh,
                                        const at::Tensor& edge_radial, const at::Tensor& mlp_weights,
                                        at::IntArrayRef mlp_widths, c10::string_view activation,
                                        double activation_scale, const at::Tensor& edge_index,
                                        const at::Tensor& couplings, at::IntArrayRef paths, int64_t num_out_features);

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> radial_convolution_backward_composite(
    const at::Tensor& grad_out, const at::Tensor& node_features, const at::Tensor& edge_sh,
    const at::Tensor& edge_radial, const at::Tensor& mlp_weights, at::IntArrayRef mlp_widths,
    c10::string_view activation, double activation_scale, const at::Tensor& edge_index, const at::Tensor& couplings,
    at::IntArrayRef paths, bool weight_gradients);

}  // namespace convolution
}  // namespace mlipkit
