// Row ranges of a sorted index: the one place that validates receiver-sorted
// edges for the CPU ops.

#pragma once

#include <ATen/ATen.h>

#include <vector>

namespace mlipkit {

// ptr[s] .. ptr[s+1] are the rows whose index is s. Fails, naming `op` and the
// offending entry, if an index is outside [0, num_segments) or out of order.
std::vector<int64_t> segment_pointers(const at::Tensor& sorted_index, int64_t num_segments, const char* op);

}  // namespace mlipkit
