// Deterministic segment reductions over receiver-sorted edges.
//
// mlipkit::segment_sum(src, sorted_index, num_segments): out[s] = sum of the
//   rows src[k] with sorted_index[k] == s, added in k order. Because the index
//   is sorted, each output row is owned by one thread and the result does not
//   depend on the number of threads.
// mlipkit::segment_gather(values, sorted_index): out[k] = values[sorted_index[k]].
//
// Each op is the other's derivative, so gradients of any order stay on these
// two deterministic kernels.

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/autograd.h>
#include <torch/library.h>

#include "sorted_segments.hpp"

namespace mlipkit {
namespace {

void check_index(const at::Tensor& src, const at::Tensor& sorted_index, const char* op) {
  TORCH_CHECK(sorted_index.dim() == 1, "mlipkit::", op, ": sorted_index must be 1-D, got shape ",
              sorted_index.sizes());
  TORCH_CHECK(sorted_index.scalar_type() == at::kLong, "mlipkit::", op,
              ": sorted_index must be int64, got ", sorted_index.scalar_type());
  TORCH_CHECK(src.dim() >= 1 && src.size(0) == sorted_index.size(0), "mlipkit::", op,
              ": src has ", (src.dim() >= 1 ? src.size(0) : 0), " rows but sorted_index has ",
              sorted_index.size(0), " entries");
  TORCH_CHECK(src.device() == sorted_index.device(), "mlipkit::", op,
              ": src and sorted_index are on different devices (", src.device(), " vs ",
              sorted_index.device(), ")");
}

at::Tensor segment_sum_cpu(const at::Tensor& src, const at::Tensor& sorted_index, int64_t num_segments) {
  check_index(src, sorted_index, "segment_sum");
  TORCH_CHECK(num_segments >= 0, "mlipkit::segment_sum: num_segments must be >= 0, got ", num_segments);
  auto src_c = src.contiguous();
  auto index_c = sorted_index.contiguous();
  std::vector<int64_t> out_shape = src.sizes().vec();
  out_shape[0] = num_segments;
  auto out = at::empty(out_shape, src.options());
  int64_t row_size = 1;
  for (int64_t d = 1; d < src.dim(); ++d) {
    row_size *= src.size(d);
  }
  const auto ptr = segment_pointers(index_c, num_segments, "segment_sum");
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, src.scalar_type(), "mlipkit_segment_sum", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* in = src_c.data_ptr<scalar_t>();
    scalar_t* res = out.data_ptr<scalar_t>();
    at::parallel_for(0, num_segments, 1, [&](int64_t begin, int64_t end) {
      std::vector<acc_t> acc(static_cast<size_t>(row_size));
      for (int64_t s = begin; s < end; ++s) {
        std::fill(acc.begin(), acc.end(), acc_t(0));
        for (int64_t k = ptr[s]; k < ptr[s + 1]; ++k) {
          const scalar_t* row = in + k * row_size;
          for (int64_t c = 0; c < row_size; ++c) {
            acc[c] += static_cast<acc_t>(row[c]);
          }
        }
        scalar_t* dst = res + s * row_size;
        for (int64_t c = 0; c < row_size; ++c) {
          dst[c] = static_cast<scalar_t>(acc[c]);
        }
      }
    });
  });
  return out;
}

at::Tensor segment_gather_index_select(const at::Tensor& values, const at::Tensor& sorted_index) {
  TORCH_CHECK(values.dim() >= 1, "mlipkit::segment_gather: values must have at least one dimension");
  TORCH_CHECK(sorted_index.dim() == 1 && sorted_index.scalar_type() == at::kLong,
              "mlipkit::segment_gather: sorted_index must be a 1-D int64 tensor");
  return values.index_select(0, sorted_index);
}

// Any other device (CUDA): ATen's segment_reduce sums each segment in order,
// so results stay deterministic; the index is not validated (that would sync).
at::Tensor segment_sum_device(const at::Tensor& src, const at::Tensor& sorted_index, int64_t num_segments) {
  check_index(src, sorted_index, "segment_sum");
  TORCH_CHECK(num_segments >= 0, "mlipkit::segment_sum: num_segments must be >= 0, got ", num_segments);
  auto lengths = at::bincount(sorted_index, {}, num_segments);
  return at::segment_reduce(src.contiguous(), "sum", lengths, std::nullopt, std::nullopt, 0,
                            /*unsafe=*/true, at::Scalar(0));
}

at::Tensor segment_sum_meta(const at::Tensor& src, const at::Tensor& sorted_index, c10::SymInt num_segments) {
  TORCH_CHECK(sorted_index.dim() == 1, "mlipkit::segment_sum: sorted_index must be 1-D");
  std::vector<c10::SymInt> out_shape(src.sym_sizes().begin(), src.sym_sizes().end());
  out_shape[0] = std::move(num_segments);
  return at::empty_symint(out_shape, src.options());
}

at::Tensor segment_gather_meta(const at::Tensor& values, const at::Tensor& sorted_index) {
  std::vector<c10::SymInt> out_shape(values.sym_sizes().begin(), values.sym_sizes().end());
  out_shape[0] = sorted_index.sym_size(0);
  return at::empty_symint(out_shape, values.options());
}

at::Tensor call_segment_sum(const at::Tensor& src, const at::Tensor& sorted_index, const c10::SymInt& num_segments) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("mlipkit::segment_sum", "")
                       .typed<at::Tensor(const at::Tensor&, const at::Tensor&, c10::SymInt)>();
  return op.call(src, sorted_index, num_segments);
}

at::Tensor call_segment_gather(const at::Tensor& values, const at::Tensor& sorted_index) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("mlipkit::segment_gather", "")
                       .typed<at::Tensor(const at::Tensor&, const at::Tensor&)>();
  return op.call(values, sorted_index);
}

class SegmentSumFunction : public torch::autograd::Function<SegmentSumFunction> {
 public:
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& src,
                            const at::Tensor& sorted_index, const c10::SymInt& num_segments) {
    ctx->save_for_backward({sorted_index});
    at::AutoDispatchBelowADInplaceOrView guard;
    return call_segment_sum(src, sorted_index, num_segments);
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto sorted_index = ctx->get_saved_variables()[0];
    return {call_segment_gather(grads[0], sorted_index), at::Tensor(), at::Tensor()};
  }
};

class SegmentGatherFunction : public torch::autograd::Function<SegmentGatherFunction> {
 public:
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& values,
                            const at::Tensor& sorted_index) {
    ctx->save_for_backward({sorted_index});
    ctx->saved_data["num_rows"] = values.sym_size(0);
    at::AutoDispatchBelowADInplaceOrView guard;
    return call_segment_gather(values, sorted_index);
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto sorted_index = ctx->get_saved_variables()[0];
    const auto num_rows = ctx->saved_data["num_rows"].toSymInt();
    return {call_segment_sum(grads[0], sorted_index, num_rows), at::Tensor()};
  }
};

at::Tensor segment_sum_autograd(const at::Tensor& src, const at::Tensor& sorted_index, c10::SymInt num_segments) {
  return SegmentSumFunction::apply(src, sorted_index, num_segments);
}

at::Tensor segment_gather_autograd(const at::Tensor& values, const at::Tensor& sorted_index) {
  return SegmentGatherFunction::apply(values, sorted_index);
}

}  // namespace

TORCH_LIBRARY(mlipkit, m) {
  m.def("segment_sum(Tensor src, Tensor sorted_index, SymInt num_segments) -> Tensor");
  m.def("segment_gather(Tensor values, Tensor sorted_index) -> Tensor");
}

TORCH_LIBRARY_IMPL(mlipkit, CPU, m) {
  m.impl("segment_sum", segment_sum_cpu);
  m.impl("segment_gather", segment_gather_index_select);
}

TORCH_LIBRARY_IMPL(mlipkit, CUDA, m) {
  m.impl("segment_sum", segment_sum_device);
  m.impl("segment_gather", segment_gather_index_select);
}

TORCH_LIBRARY_IMPL(mlipkit, Meta, m) {
  m.impl("segment_sum", segment_sum_meta);
  m.impl("segment_gather", segment_gather_meta);
}

TORCH_LIBRARY_IMPL(mlipkit, Autograd, m) {
  m.impl("segment_sum", segment_sum_autograd);
  m.impl("segment_gather", segment_gather_autograd);
}

}  // namespace mlipkit
