// mlipplugin.so, the LAMMPS plugin (`plugin load mlipplugin.so`, or automatically from a directory on
// LAMMPS_PLUGIN_PATH): a loader for the pair style, mlip_pair_style.so beside it.
//
// The pair style is compiled against one LAMMPS's headers: its classes' layouts, its integer sizes, its fmt
// and C++ string ABI. Loaded into another LAMMPS it would not even open (its C++ symbols differ) or, worse,
// read the wrong memory. This loader uses nothing of LAMMPS but its C library interface, stable across
// versions, so it always opens: it compares the running LAMMPS with the one the pair style was built for and
// opens the pair style only when they match, and otherwise says what differs, registering nothing. LAMMPS
// then stops at `pair_style mlip` as an unknown style, after that message.
#include <dlfcn.h>

#include <algorithm>
#include <cstdio>
#include <string>

#include <mpi.h>

#include "lmptype.h"

extern "C" {
void lammpsplugin_init(void* lmp, void* handle, void* regfunc);
// LAMMPS's C library interface (library.h), present in every LAMMPS that can load plugins
int lammps_version(void* handle);
int lammps_extract_setting(void* handle, const char* keyword);
}

// A serial LAMMPS (its MPI stubs) may not have it: then the MPI family is not checked.
#pragma weak MPI_Get_library_version

namespace {

constexpr const char* kPairStyleLibrary = "mlip_pair_style.so";

// The MPI family mpi.h came from ("" when neither).
std::string compiled_mpi_family() {
#if defined(OPEN_MPI)
  return "Open MPI";
#elif defined(MPICH_VERSION) || defined(MPICH)
  return "MPICH";
#else
  return "";
#endif
}

// The first line of the running MPI library's name for itself ("" when unknown).
std::string running_mpi_library() {
  if (&MPI_Get_library_version == nullptr) return "";
  std::string version(8192, '\0');  // MPICH's MPI_MAX_LIBRARY_VERSION_STRING, the largest
  int length = 0;
  if (MPI_Get_library_version(version.data(), &length) != MPI_SUCCESS) return "";
  version.resize(static_cast<size_t>(std::max(length, 0)));
  return version.substr(0, version.find('\n'));
}

// Why this LAMMPS cannot run the pair style ("" if it can).
std::string mismatch(void* lmp) {
  const int running = lammps_version(lmp);
  if (running != MLIPKIT_LAMMPS_NUM_VERSION) {
    return "it was built against the headers of LAMMPS " + std::to_string(MLIPKIT_LAMMPS_NUM_VERSION) +
           " and this LAMMPS is " + std::to_string(running) + "; build it against this LAMMPS (cmake -S lammps_plugin "
           "-DLAMMPS_DIR=<this LAMMPS>, see docs/lammps/builds.md)";
  }
  const struct {
    const char* name;
    int size;
  } integer_sizes[] = {{"bigint", static_cast<int>(sizeof(LAMMPS_NS::bigint))},
                       {"tagint", static_cast<int>(sizeof(LAMMPS_NS::tagint))},
                       {"imageint", static_cast<int>(sizeof(LAMMPS_NS::imageint))}};
  for (const auto& integer : integer_sizes) {
    const int size = lammps_extract_setting(lmp, integer.name);
    if (size != integer.size) {
      return std::string("it was built with ") + std::to_string(integer.size) + "-byte " + integer.name +
             " and this LAMMPS uses " + std::to_string(size) + " bytes (give cmake -DLAMMPS_SIZES= as LAMMPS was built)";
    }
  }
  const std::string family = compiled_mpi_family();
  const std::string library = running_mpi_library();
  if (!family.empty() && !library.empty() && (family == "Open MPI") != (library.find("Open MPI") != std::string::npos)) {
    return "it was built with " + family + "'s mpi.h and this LAMMPS runs on '" + library +
           "'; build it with this LAMMPS's MPI (cmake -DMPI_CXX_COMPILER=<its mpicxx>)";
  }
  return "";
}

// The directory of this file, with its slash.
std::string own_directory() {
  Dl_info info{};
  if (dladdr(reinterpret_cast<void*>(&own_directory), &info) == 0 || info.dli_fname == nullptr) return "";
  const std::string path = info.dli_fname;
  const auto slash = path.rfind('/');
  return slash == std::string::npos ? "" : path.substr(0, slash + 1);
}

void refuse(const std::string& why) {
  std::fprintf(stderr, "ERROR: mlipkit: pair_style mlip was not loaded: %s\n", why.c_str());
  std::fflush(stderr);
}

}  // namespace

extern "C" void lammpsplugin_init(void* lmp, void* handle, void* regfunc) {
  const std::string why = mismatch(lmp);
  if (!why.empty()) return refuse(why);
  const std::string path = own_directory() + kPairStyleLibrary;
  void* pair_style = dlopen(path.c_str(), RTLD_NOW | RTLD_GLOBAL);
  if (pair_style == nullptr) {
    const char* failure = dlerror();
    return refuse("cannot open " + path + ": " + (failure ? failure : "unknown error") +
                  " (built for LAMMPS " + std::to_string(MLIPKIT_LAMMPS_NUM_VERSION) +
                  "; a missing LAMMPS_NS symbol means a LAMMPS built with another C++ string ABI or fmt: give cmake "
                  "-DLAMMPS_CXX11_ABI=ON|OFF as LAMMPS was built)");
  }
  using Register = void (*)(void*, void*, void*);
  auto register_pair_style = reinterpret_cast<Register>(dlsym(pair_style, "mlipkit_register_pair_mlip"));
  if (register_pair_style == nullptr) return refuse(path + " has no mlipkit_register_pair_mlip: a corrupt build?");
  register_pair_style(lmp, handle, regfunc);
}
