#include "sorted_segments.hpp"

namespace mlipkit {

std::vector<int64_t> segment_pointers(const at::Tensor& sorted_index, int64_t num_segments, const char* op) {
  const auto index = sorted_index.contiguous();
  const int64_t n = index.size(0);
  const int64_t* idx = index.data_ptr<int64_t>();
  for (int64_t k = 0; k < n; ++k) {
    TORCH_CHECK(idx[k] >= 0 && idx[k] < num_segments, "mlipkit::", op, ": sorted index entry ", k, " = ", idx[k],
                " is outside [0, ", num_segments, ")");
    TORCH_CHECK(k == 0 || idx[k - 1] <= idx[k], "mlipkit::", op, ": the sorted index is not sorted (entry ", k - 1,
                " = ", idx[k - 1], " > entry ", k, " = ", idx[k], "); sort edges by receiver first");
  }
  std::vector<int64_t> ptr(static_cast<size_t>(num_segments) + 1, n);
  int64_t row = 0;
  for (int64_t s = 0; s <= num_segments; ++s) {
    while (row < n && idx[row] < s) {
      ++row;
    }
    ptr[static_cast<size_t>(s)] = row;
  }
  return ptr;
}

std::pair<std::vector<int64_t>, std::vector<int64_t>> rows_by_group(const int64_t* index, int64_t num_rows,
                                                                     int64_t num_groups) {
  std::vector<int64_t> ptr(static_cast<size_t>(num_groups) + 1, 0);
  for (int64_t r = 0; r < num_rows; ++r) ++ptr[static_cast<size_t>(index[r]) + 1];
  for (int64_t g = 0; g < num_groups; ++g) ptr[static_cast<size_t>(g) + 1] += ptr[static_cast<size_t>(g)];
  std::vector<int64_t> next(ptr.begin(), ptr.end() - 1), rows(static_cast<size_t>(num_rows));
  for (int64_t r = 0; r < num_rows; ++r) rows[static_cast<size_t>(next[static_cast<size_t>(index[r])]++)] = r;
  return {std::move(ptr), std::move(rows)};
}

}  // namespace mlipkit
