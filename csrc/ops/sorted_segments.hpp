// Row ranges of a sorted index: the one place that validates receiver-sorted
// edges for the CPU ops.

#pragma once

#include <ATen/ATen.h>

#include <utility>
#include <vector>

namespace mlipkit {

// ptr[s] .. ptr[s+1] are the rows whose index is s. Fails, naming `op` and the
// offending entry, if an index is outside [0, num_segments) or out of order.
std::vector<int64_t> segment_pointers(const at::Tensor& sorted_index, int64_t num_segments, const char* op);

// The rows of an unsorted index grouped by its value, each group in increasing row order (a stable counting
// sort): the rows of group g are rows[ptr[g] .. ptr[g + 1]]. Returns (ptr, rows); the caller has checked that
// every entry lies in [0, num_groups).
std::pair<std::vector<int64_t>, std::vector<int64_t>> rows_by_group(const int64_t* index, int64_t num_rows,
                                                                     int64_t num_groups);

}  // namespace mlipkit
