// The halo exchange between message-passing layers, as the op library sees it.
//
// A caller that holds part of a system (a LAMMPS rank) evaluates its own
// atoms' layers only; the ghost atoms around them are graph nodes whose
// features must be their owners'. Artifacts compiled for it call
// mlipkit::halo_exchange on the node features between layers and, in their
// backward pass, mlipkit::halo_exchange_reverse on the gradients. Both ops ask
// the HaloExchange registered here (process-wide, one at a time) to do the
// communication; with none registered (ASE, the C++ runtime on a whole system,
// one LAMMPS rank) they are the identity.
#pragma once

#include <ATen/core/Tensor.h>

namespace mlipkit {

class HaloExchange {
 public:
  virtual ~HaloExchange() = default;
  // node_features [N, W] (contiguous, the caller's own copy): the ghost nodes' rows become their owners' rows.
  virtual void forward(at::Tensor& node_features) = 0;
  // gradients [N, W] (contiguous, the caller's own copy): the ghost nodes' rows are added onto their owners' rows,
  // wherever those live, and zeroed.
  virtual void reverse(at::Tensor& gradients) = 0;
};

}  // namespace mlipkit

// Registers the exchange both ops use (nullptr: none, the identity). Exported with C linkage from libmlipkit_ops so
// that the runtime, which loads that library at run time, finds it by name.
extern "C" void mlipkit_set_halo_exchange(mlipkit::HaloExchange* exchange);
