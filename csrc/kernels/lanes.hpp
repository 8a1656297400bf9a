// A vector of channels for the kernel files compiled once per instruction set:
// GCC/Clang vector extensions as wide as the set's registers
// (MLIPKIT_VECTOR_BYTES), element-aligned so any channel offset can be loaded.
// Everything here lives in the set's own namespace (MLIPKIT_ISA), so copies
// built with different instructions never meet in the linker.

#pragma once

#include <cstdint>

#if !defined(MLIPKIT_ISA) || !defined(MLIPKIT_VECTOR_BYTES)
#error "compile with -DMLIPKIT_ISA=<namespace> -DMLIPKIT_VECTOR_BYTES=<register width>"
#endif

namespace mlipkit {
namespace MLIPKIT_ISA {

template <typename T>
using Vector __attribute__((vector_size(MLIPKIT_VECTOR_BYTES), aligned(sizeof(T)))) = T;

template <typename T>
constexpr int64_t kLanes = MLIPKIT_VECTOR_BYTES / sizeof(T);

// One vector (L = kLanes) or one channel (L = 1), loaded from and stored to memory.
template <typename T, int64_t L>
struct Lanes;

template <typename T>
struct Lanes<T, 1> {
  using type = T;
  static T load(const T* p) { return *p; }
  static void store(T* p, T v) { *p = v; }
};

template <typename T, int64_t L>
struct Lanes {
  using type = Vector<T>;
  static type load(const T* p) { return *reinterpret_cast<const type*>(p); }
  static void store(T* p, type v) { *reinterpret_cast<type*>(p) = v; }
};

}  // namespace MLIPKIT_ISA
}  // namespace mlipkit
