// mlipkit::activation_derivative, for the other ops' C++ (the radial MLP of
// radial_convolution.cpp): see activation.cpp.

#pragma once

#include <ATen/ATen.h>
#include <c10/util/string_view.h>

#include <optional>

namespace mlipkit {
namespace activation {

// Throws, naming `op`, unless `name` is an activation the op knows.
void check_name(const char* op, c10::string_view name);

// scale * f^(order)(x) * factor through the dispatcher (differentiable to any order).
at::Tensor derivative(const at::Tensor& x, c10::string_view name, int64_t order, double scale,
                      const std::optional<at::Tensor>& factor = std::nullopt);

// The op from ATen's element-wise ops, for devices without the kernel (CUDA): equal to the CPU kernel up to
// rounding.
at::Tensor derivative_composite(const at::Tensor& x, c10::string_view name, int64_t order, double scale,
                                const std::optional<at::Tensor>& factor);

}  // namespace activation
}  // namespace mlipkit
