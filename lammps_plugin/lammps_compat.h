// The LAMMPS API differences pair_style mlip meets between LAMMPS versions, in one place.
//
// MLIPKIT_LAMMPS_NUM_VERSION is the numeric version (yyyymmdd, LAMMPS's own num_ver) of the LAMMPS whose headers
// the pair style is compiled against: a compile definition of the plugin build (lammps_plugin/CMakeLists.txt), or
// the header install_into_lammps.sh writes next to the sources in a LAMMPS source tree. Versions checked by build
// and test: see the table of tested LAMMPS versions in docs/lammps/builds.md.
#pragma once

#ifndef MLIPKIT_LAMMPS_NUM_VERSION
#include "mlipkit_lammps_version.h"
#endif

#include "comm.h"
#include "neighbor.h"
#include "pair.h"

#if MLIPKIT_LAMMPS_NUM_VERSION < 20220324
#include "neigh_request.h"
#endif

// Pair::finish(), called at the end of each run (the pair style's time summary), exists in 2Aug2023 and later
// (not in 23Jun2022; the feature releases between were not checked, so they go without the summary).
#define MLIPKIT_PAIR_HAS_FINISH (MLIPKIT_LAMMPS_NUM_VERSION >= 20230802)

namespace mlipkit_lammps {

// Asks for a full neighbour list, with neighbours of ghost atoms too when `ghost`.
// 24Mar2022 replaced the request's public flags by add_request(flags).
// `instance` is the pair's instance_me.
inline void request_full_neighbor_list(LAMMPS_NS::Neighbor* neighbor, LAMMPS_NS::Pair* pair, int instance, bool ghost) {
#if MLIPKIT_LAMMPS_NUM_VERSION >= 20220324
  (void)instance;
  neighbor->add_request(pair, LAMMPS_NS::NeighConst::REQ_FULL | (ghost ? LAMMPS_NS::NeighConst::REQ_GHOST : 0));
#else
  const int index = neighbor->request(pair, instance);
  neighbor->requests[index]->half = 0;
  neighbor->requests[index]->full = 1;
  neighbor->requests[index]->ghost = ghost ? 1 : 0;
#endif
}

// Forward and reverse communication of `width` values per atom through the pair style's pack/unpack functions.
// Every version sizes its receive buffers by the pair's comm_forward/comm_reverse (the largest width, set at init),
// so they are set to `width` for the call and restored after; the explicit size argument of 2025's
// forward_comm(Pair*, int) falls back to them when 0. 24Mar2022 renamed forward_comm_pair to forward_comm.
class CommWidth {
 public:
  CommWidth(LAMMPS_NS::Pair* pair, int width)
      : pair_(pair), forward_(pair->comm_forward), reverse_(pair->comm_reverse) {
    pair->comm_forward = pair->comm_reverse = width;
  }
  ~CommWidth() {
    pair_->comm_forward = forward_;
    pair_->comm_reverse = reverse_;
  }
  CommWidth(const CommWidth&) = delete;
  CommWidth& operator=(const CommWidth&) = delete;

 private:
  LAMMPS_NS::Pair* pair_;
  int forward_, reverse_;
};

inline void forward_comm(LAMMPS_NS::Comm* comm, LAMMPS_NS::Pair* pair, int width) {
  CommWidth sized(pair, width);
#if MLIPKIT_LAMMPS_NUM_VERSION >= 20220324
  comm->forward_comm(pair);
#else
  comm->forward_comm_pair(pair);
#endif
}

inline void reverse_comm(LAMMPS_NS::Comm* comm, LAMMPS_NS::Pair* pair, int width) {
  CommWidth sized(pair, width);
#if MLIPKIT_LAMMPS_NUM_VERSION >= 20220324
  comm->reverse_comm(pair);
#else
  comm->reverse_comm_pair(pair);
#endif
}

}  // namespace mlipkit_lammps
