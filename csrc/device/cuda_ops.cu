// The device ops on NVIDIA GPUs: the kernels of kernels.cuh, one thread per
// output element, on the current CUDA stream of the operands' device.
// Built only where torch has CUDA and nvcc is found (csrc/CMakeLists.txt);
// tools/cuda_build_check.sh compiles this file on machines without a GPU.

#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <cstdint>

namespace mlipkit {
namespace device {

constexpr int64_t kThreadsPerBlock = 256;

template <typename F>
__global__ void run_elements(int64_t num_elements, F kernel) {
  const int64_t index = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (index < num_elements) kernel(index);
}

template <typename F>
void launch(int64_t num_elements, const F& kernel) {
  if (num_elements == 0) return;
  const int64_t blocks = (num_elements + kThreadsPerBlock - 1) / kThreadsPerBlock;
  run_elements<<<static_cast<unsigned int>(blocks), kThreadsPerBlock, 0, c10::cuda::getCurrentCUDAStream()>>>(
      num_elements, kernel);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

}  // namespace device
}  // namespace mlipkit

#include "ops_impl.hpp"

TORCH_LIBRARY_IMPL(mlipkit, CUDA, m) {
  mlipkit::device::register_device_ops(m);
}
