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
#include "../ops/schemas.hpp"
#include "ops_impl.hpp"

TORCH_LIBRARY(mlipkit_emulated, m) {
  m.def(mlipkit::schemas::kTensorProductConvolution);
  m.def(mlipkit::schemas::kTensorProductConvolutionBackward);
  m.def(mlipkit::schemas::kTensorProductConvolutionDoubleBackward);
  m.def(mlipkit::schemas::kChannelwisePolynomial);
  m.def(mlipkit::schemas::kChannelwisePolynomialCoefficientGrad);
  m.def(mlipkit::schemas::kActivationDerivative);
  m.def(mlipkit::schemas::kRadialConvolution);
  m.def(mlipkit::schemas::kRadialConvolutionBackward);
  m.def(mlipkit::schemas::kSegmentOuterSum);
  m.def(mlipkit::schemas::kSegmentOuterSumBasisGrad);
  m.def(mlipkit::schemas::kSegmentOuterSumFeaturesGrad);
}

TORCH_LIBRARY_IMPL(mlipkit_emulated, CPU, m) {
  mlipkit::device::register_device_ops(m);
  m.impl("activation_derivative", mlipkit::activation::derivative_composite);
  m.impl("radial_convolution", mlipkit::convolution::radial_convolution_composite);
  m.impl("radial_convolution_backward", mlipkit::convolution::radial_convolution_backward_composite);
}
