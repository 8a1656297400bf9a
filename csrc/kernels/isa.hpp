// Which instruction set the CPU kernels run with: every kernel file is compiled
// once per set (namespaces baseline / avx2 / avx512) and the widest one this CPU
// supports is chosen once per process (MLIPKIT_CPU_ISA=baseline|avx2|avx512
// overrides the choice).

#pragma once

namespace mlipkit {

enum class Isa { baseline, avx2, avx512 };

Isa active_isa();
const char* isa_name(Isa isa);

}  // namespace mlipkit
