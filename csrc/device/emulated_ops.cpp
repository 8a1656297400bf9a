// The device ops (ops_impl.hpp) emulated on the CPU: the same host code and the
// same kernel functors, each "thread" a loop iteration. Registered as
// torch.ops.mlipkit_emulated.* in a library of their own that only tests load,
// so that machines without a GPU check what the GPU runs against the CPU
// kernels; what emulation cannot check (CUDA launches, streams, the compiled
// device code) is left to tools/gpu_check.sh.

#include <ATen/Parallel.h>
#include <torch/library.h>

#include <cstdint>

namespace mlipkit {
namespace device {

template <typename F>
void launch(int64_t num_elements, const F& kernel) {
  at::parallel_for(0, num_elements, 256, [&](int64_t begin, int64_t end) {
    for (int64_t index = begin; index < end; ++index) kernel(index);
  });
}

}  // namespace device
}  // namespace mlipkit

#include "../kernels/activation.hpp"
#include "../kernels/radial_convolution.hpp"
#include "ops_impl.hpp"

// The schemas of torch.ops.mlipkit's ops of the same names.
TORCH_LIBRARY(mlipkit_emulated, m) {
  m.def(
      "tensor_product_convolution(Tensor node_features, Tensor edge_sh, Tensor edge_weights, Tensor edge_index, "
      "Tensor couplings, int[] paths, int num_out_features) -> Tensor");
  m.def(
      "tensor_product_convolution_backward(Tensor grad_out, Tensor node_features, Tensor edge_sh, "
      "Tensor edge_weights, Tensor edge_index, Tensor couplings, int[] paths) -> (Tensor, Tensor, Tensor)");
  m.def(
      "tensor_product_convolution_double_backward(Tensor grad_out, Tensor node_features, Tensor edge_sh, "
      "Tensor edge_weights, Tensor d_node_features, Tensor d_edge_sh, Tensor d_edge_weights, Tensor edge_index, "
      "Tensor couplings, int[] paths) -> (Tensor, Tensor, Tensor, Tensor)");
  m.def("channelwise_polynomial(Tensor features, Tensor node_weights, Tensor coefficients, int[] terms, "
        "int num_outputs) -> Tensor");
  m.def("channelwise_polynomial_coefficient_grad(Tensor features, Tensor node_weights, Tensor grad_out, "
        "int[] terms, int num_coefficients) -> Tensor");
  m.def("activation_derivative(Tensor x, str activation, int order=0, float scale=1.0, Tensor? factor=None) -> Tensor");
  m.def(
      "radial_convolution(Tensor node_features, Tensor edge_sh, Tensor edge_radial, Tensor mlp_weights, "
      "int[] mlp_widths, str activation, float activation_scale, Tensor edge_index, Tensor couplings, int[] paths, "
      "int num_out_features) -> Tensor");
  m.def(
      "radial_convolution_backward(Tensor grad_out, Tensor node_features, Tensor edge_sh, Tensor edge_radial, "
      "Tensor mlp_weights, int[] mlp_widths, str activation, float activation_scale, Tensor edge_index, "
      "Tensor couplings, int[] paths, bool weight_gradients) -> (Tensor, Tensor, Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(mlipkit_emulated, CPU, m) {
  m.impl("tensor_product_convolution", mlipkit::device::convolution_device);
  m.impl("tensor_product_convolution_backward", mlipkit::device::convolution_backward_device);
  m.impl("tensor_product_convolution_double_backward", mlipkit::device::convolution_double_backward_device);
  m.impl("channelwise_polynomial", mlipkit::device::polynomial_device);
  m.impl("channelwise_polynomial_coefficient_grad", mlipkit::device::coefficient_grad_device);
  m.impl("activation_derivative", mlipkit::activation::derivative_composite);
  m.impl("radial_convolution", mlipkit::convolution::radial_convolution_composite);
  m.impl("radial_convolution_backward", mlipkit::convolution::radial_convolution_backward_composite);
}
