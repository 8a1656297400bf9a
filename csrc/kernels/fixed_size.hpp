// Sizes read inside autograd formulas. Tensor::size() reads every size, which
// under symbolic tracing (mlip-compile, torch.export) would fix the number of
// nodes and edges to the traced graph's; a size that does not depend on them
// is read on its own.

#pragma once

#include <ATen/ATen.h>

namespace mlipkit {

inline int64_t fixed_size(const at::Tensor& t, int64_t dim) { return t.sym_size(dim).guard_int(__FILE__, __LINE__); }

}  // namespace mlipkit
