#include "isa.hpp"

#include <c10/util/Exception.h>

#include <cstdlib>
#include <string>

namespace mlipkit {
namespace {

bool isa_supported(Isa isa) {
#if defined(MLIPKIT_X86_KERNELS)
  __builtin_cpu_init();
  switch (isa) {
    case Isa::avx512:
      return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    case Isa::avx2:
      return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    default:
      return true;
  }
#else
  return isa == Isa::baseline;
#endif
}

Isa select_isa() {
  const char* requested = std::getenv("MLIPKIT_CPU_ISA");
  if (requested != nullptr && *requested != '\0') {
    for (Isa isa : {Isa::baseline, Isa::avx2, Isa::avx512}) {
      if (std::string(requested) == isa_name(isa)) {
        TORCH_CHECK(isa_supported(isa), "MLIPKIT_CPU_ISA=", requested, ": this CPU (or build) does not support it");
        return isa;
      }
    }
    TORCH_CHECK(false, "MLIPKIT_CPU_ISA=", requested, " is not one of baseline, avx2, avx512");
  }
  for (Isa isa : {Isa::avx512, Isa::avx2}) {
    if (isa_supported(isa)) {
      return isa;
    }
  }
  return Isa::baseline;
}

}  // namespace

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::avx512:
      return "avx512";
    case Isa::avx2:
      return "avx2";
    default:
      return "baseline";
  }
}

Isa active_isa() {
  static const Isa isa = select_isa();
  return isa;
}

}  // namespace mlipkit
