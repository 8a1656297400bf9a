// The schemas of the ops that are defined twice: in torch.ops.mlipkit, and in the CPU emulation of their
// device kernels (torch.ops.mlipkit_emulated, csrc/device/emulated_ops.cpp).

#pragma once

namespace mlipkit {
namespace schemas {

constexpr const char* kTensorProductConvolution =
    "tensor_product_convolution(Tensor node_features, Tensor edge_sh, Tensor edge_weights, "
    "Tensor edge_index, Tensor couplings, int[] paths, int num_out_features) -> Tensor";
constexpr const char* kTensorProductConvolutionBackward =
    "tensor_product_convolution_backward(Tensor grad_out, Tensor node_features, Tensor edge_sh, "
    "Tensor edge_weights, Tensor edge_index, Tensor couplings, int[] paths) -> (Tensor, Tensor, "
    "Tensor)";
constexpr const char* kTensorProductConvolutionDoubleBackward =
    "tensor_product_convolution_double_backward(Tensor grad_out, Tensor node_features, "
    "Tensor edge_sh, Tensor edge_weights, Tensor d_node_features, Tensor d_edge_sh, "
    "Tensor d_edge_weights, Tensor edge_index, Tensor couplings, int[] paths) -> (Tensor, Tensor, "
    "Tensor, Tensor)";
constexpr const char* kChannelwisePolynomial =
    "channelwise_polynomial(Tensor features, Tensor node_weights, Tensor coefficients, int[] terms, "
    "int num_outputs) -> Tensor";
constexpr const char* kChannelwisePolynomialCoefficientGrad =
    "channelwise_polynomial_coefficient_grad(Tensor features, Tensor node_weights, Tensor grad_out, "
    "int[] terms, int num_coefficients) -> Tensor";
constexpr const char* kActivationDerivative =
    "activation_derivative(Tensor x, str activation, int order=0, float scale=1.0, "
    "Tensor? factor=None) -> Tensor";
constexpr const char* kRadialConvolution =
    "radial_convolution(Tensor node_features, Tensor edge_sh, Tensor edge_radial, "
    "Tensor mlp_weights, int[] mlp_widths, str activation, float activation_scale, "
    "Tensor edge_index, Tensor couplings, int[] paths, int num_out_features) -> Tensor";
constexpr const char* kRadialConvolutionBackward =
    "radial_convolution_backward(Tensor grad_out, Tensor node_features, Tensor edge_sh, "
    "Tensor edge_radial, Tensor mlp_weights, int[] mlp_widths, str activation, "
    "float activation_scale, Tensor edge_index, Tensor couplings, int[] paths, "
    "bool weight_gradients) -> (Tensor, Tensor, Tensor, Tensor)";
constexpr const char* kSegmentOuterSum =
    "segment_outer_sum(Tensor basis, Tensor features, Tensor source, Tensor sorted_target, "
    "SymInt num_targets) -> Tensor";
constexpr const char* kSegmentOuterSumBasisGrad =
    "segment_outer_sum_basis_grad(Tensor grad, Tensor features, Tensor source, Tensor sorted_target) -> Tensor";
constexpr const char* kSegmentOuterSumFeaturesGrad =
    "segment_outer_sum_features_grad(Tensor basis, Tensor grad, Tensor source, Tensor sorted_target, "
    "SymInt num_sources) -> Tensor";

}  // namespace schemas
}  // namespace mlipkit
