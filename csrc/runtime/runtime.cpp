#include "mlipkit/runtime.hpp"

#include <caffe2/serialize/inline_container.h>
#include <dlfcn.h>
#include <torch/csrc/inductor/aoti_package/model_package_loader.h>
#include <torch/csrc/jit/runtime/graph_executor.h>
#include <torch/script.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <mutex>
#include <set>
#include <sstream>

namespace mlipkit {
namespace {

constexpr const char* kPrefix = "mlipkit.";
constexpr const char* kTorchScriptMetadata = "extra/mlipkit_metadata.txt";

std::string ends_in(const std::string& path) {
  auto extension = std::filesystem::path(path).extension().string();
  if (extension == ".pt2") return "aotinductor";
  if (extension == ".pt") return "torchscript";
  throw ArtifactError(path + ": unknown artifact extension '" + extension +
                      "'; mlipkit artifacts end in '.pt2' (AOTInductor) or '.pt' (TorchScript)");
}

std::vector<std::string> split(const std::string& text) {
  std::istringstream stream(text);
  std::vector<std::string> words;
  for (std::string word; stream >> word;) words.push_back(word);
  return words;
}

const std::string& entry(const std::map<std::string, std::string>& entries, const std::string& key,
                         const std::string& path) {
  auto found = entries.find(key);
  if (found == entries.end()) throw ArtifactError(path + ": artifact metadata lacks '" + kPrefix + key + "'");
  return found->second;
}

template <typename Number>
Number number(const std::map<std::string, std::string>& entries, const std::string& key, const std::string& path) {
  const std::string& text = entry(entries, key, path);
  try {
    size_t used = 0;
    Number value = std::is_integral_v<Number> ? static_cast<Number>(std::stoll(text, &used))
                                              : static_cast<Number>(std::stod(text, &used));
    if (used == text.size()) return value;
  } catch (const std::exception&) {
  }
  throw ArtifactError(path + ": artifact metadata '" + kPrefix + key + "' is not a number: '" + text + "'");
}

// The geometry, optionally the mask, then any of the charge models' inputs, in the order mlipkit writes them.
void check_inputs(const std::vector<std::string>& inputs, const std::string& text, const std::string& path) {
  const std::vector<std::string> geometry{"atom_types", "edge_index", "edge_vectors"};
  const std::vector<std::string> charge_inputs{"total_charge",  "charge_shift", "charge_shift_weight",
                                               "lr_edge_index", "lr_edge_vectors", "positions",
                                               "cell",          "pbc",          "k_indices"};
  bool known = inputs.size() >= geometry.size() && std::equal(geometry.begin(), geometry.end(), inputs.begin());
  size_t next = geometry.size();
  if (known && next < inputs.size() && inputs[next] == "node_energy_mask") ++next;
  auto candidate = charge_inputs.begin();
  for (; known && next < inputs.size(); ++next) {
    candidate = std::find(candidate, charge_inputs.end(), inputs[next]);
    known = candidate != charge_inputs.end();
  }
  if (!known) {
    throw ArtifactError(path + ": artifact inputs '" + text +
                        "' are not a calling convention this runtime knows (atom_types edge_index edge_vectors"
                        " [node_energy_mask] [total_charge charge_shift charge_shift_weight lr_edge_index lr_edge_vectors"
                        " positions cell pbc k_indices])");
  }
}

Metadata parse_metadata(const std::map<std::string, std::string>& raw, const std::string& path) {
  Metadata metadata;
  for (const auto& [key, value] : raw) {
    if (key.rfind(kPrefix, 0) == 0) metadata.entries[key.substr(std::string(kPrefix).size())] = value;
  }
  const auto& entries = metadata.entries;
  auto format = entries.find("format");
  if (format == entries.end() || format->second != "mlipkit-artifact") {
    throw ArtifactError(path + " is not an mlipkit artifact (its metadata has no 'mlipkit.format' entry)");
  }
  metadata.format_version = number<int>(entries, "format_version", path);
  if (metadata.format_version != kArtifactFormatVersion) {
    throw ArtifactError(path + " has artifact format version " + std::to_string(metadata.format_version) +
                        "; this runtime reads version " + std::to_string(kArtifactFormatVersion) +
                        ": recompile it with a matching mlipkit");
  }
  metadata.model_name = entry(entries, "model_name", path);
  metadata.type_names = split(entry(entries, "type_names", path));
  metadata.r_max = number<double>(entries, "r_max", path);
  metadata.num_message_passing_layers = number<int>(entries, "num_message_passing_layers", path);
  metadata.units = entry(entries, "units", path);
  metadata.energy_unit = entry(entries, "energy_unit", path);
  metadata.length_unit = entry(entries, "length_unit", path);
  const std::string& dtype = entry(entries, "dtype", path);
  if (dtype == "float64") {
    metadata.dtype = torch::kFloat64;
  } else if (dtype == "float32") {
    metadata.dtype = torch::kFloat32;
  } else {
    throw ArtifactError(path + ": unsupported artifact dtype '" + dtype + "'");
  }
  metadata.device = entry(entries, "device", path);
  metadata.mode = entry(entries, "mode", path);
  metadata.target = entry(entries, "target", path);
  metadata.inputs = split(entry(entries, "inputs", path));
  metadata.outputs = split(entry(entries, "outputs", path));
  metadata.op_libraries = split(entry(entries, "op_libraries", path));
  metadata.mlipkit_version = entry(entries, "mlipkit_version", path);
  if (entries.count("long_range_cutoff")) metadata.long_range_cutoff = number<double>(entries, "long_range_cutoff", path);
  if (entries.count("ewald_k_max")) metadata.ewald_k_max = number<double>(entries, "ewald_k_max", path);
  if (entries.count("entry_points")) metadata.entry_points = split(entries.at("entry_points"));
  if (entries.count("coulomb_method")) metadata.coulomb_method = entries.at("coulomb_method");
  if (entries.count("halo_exchange")) {
    const std::string& flag = entries.at("halo_exchange");
    if (flag != "True" && flag != "False") {
      throw ArtifactError(path + ": artifact metadata 'mlipkit.halo_exchange' is '" + flag + "', not True or False");
    }
    metadata.halo_exchange = flag == "True";
    metadata.halo_exchange_width = number<int>(entries, "halo_exchange_width", path);
    if (metadata.halo_exchange_width < 0) {
      throw ArtifactError(path + ": artifact metadata 'mlipkit.halo_exchange_width' is " +
                          std::to_string(metadata.halo_exchange_width) + ", not a number of values per atom (>= 0)");
    }
  }
  if (entries.count("charge_correction")) metadata.charge_correction = entries.at("charge_correction");
  if (entries.count("available_total_charges")) {
    for (const auto& word : split(entries.at("available_total_charges"))) {
      try {
        metadata.available_total_charges.push_back(std::stod(word));
      } catch (const std::exception&) {
        throw ArtifactError(path + ": artifact metadata 'mlipkit.available_total_charges' holds '" + word +
                            "', not a number");
      }
    }
  }
  check_inputs(metadata.inputs, entry(entries, "inputs", path), path);
  if (!metadata.has_output("node_energies")) {
    throw ArtifactError(path + ": artifact outputs '" + entry(entries, "outputs", path) + "' lack node_energies");
  }
  if (metadata.type_names.empty() || metadata.r_max <= 0.0) {
    throw ArtifactError(path + ": artifact metadata has no type names or a non-positive r_max");
  }
  if (metadata.mode != ends_in(path)) {
    throw ArtifactError(path + ": the file's extension does not match its mode '" + metadata.mode + "'");
  }
  return metadata;
}

std::map<std::string, std::string> parse_lines(const std::string& text) {
  std::map<std::string, std::string> entries;
  std::istringstream stream(text);
  for (std::string line; std::getline(stream, line);) {
    auto equals = line.find('=');
    if (equals != std::string::npos) entries[line.substr(0, equals)] = line.substr(equals + 1);
  }
  return entries;
}

std::filesystem::path own_directory() {
  Dl_info info;
  if (dladdr(reinterpret_cast<void*>(&own_directory), &info) == 0 || info.dli_fname == nullptr) return {};
  return std::filesystem::path(info.dli_fname).parent_path();
}

// Op libraries stay loaded for the life of the process: the operators they
// register are global and compiled artifacts keep pointers to them.
void load_op_library(const std::string& name, const std::string& artifact_path) {
  static std::mutex mutex;
  static std::set<std::string> loaded;
  std::lock_guard<std::mutex> lock(mutex);
  if (loaded.count(name)) return;
  std::vector<std::filesystem::path> directories;
  if (const char* paths = std::getenv("MLIPKIT_OP_LIBRARY_PATH")) {
    std::stringstream stream(paths);
    for (std::string directory; std::getline(stream, directory, ':');) {
      if (!directory.empty()) directories.emplace_back(directory);
    }
  }
  directories.push_back(own_directory());
  std::string tried;
  for (const auto& directory : directories) {
    auto candidate = directory / ("lib" + name + ".so");
    if (!std::filesystem::exists(candidate)) {
      tried += " " + candidate.string();
      continue;
    }
    if (dlopen(candidate.c_str(), RTLD_NOW | RTLD_GLOBAL) == nullptr) {
      throw ArtifactError(artifact_path + " needs op library '" + name + "'; loading " + candidate.string() +
                          " failed: " + dlerror());
    }
    loaded.insert(name);
    return;
  }
  throw ArtifactError(artifact_path + " needs op library '" + name + "', not found (looked for" + tried +
                      "); add its directory to MLIPKIT_OP_LIBRARY_PATH");
}

void check_input(const torch::Tensor& tensor, const char* name, std::vector<int64_t> shape, torch::Dtype dtype,
                 const std::string& path) {
  bool ok = tensor.defined() && tensor.scalar_type() == dtype && tensor.dim() == static_cast<int64_t>(shape.size());
  for (size_t i = 0; ok && i < shape.size(); ++i) ok = shape[i] < 0 || tensor.size(i) == shape[i];
  if (ok) return;
  std::ostringstream message;
  message << path << ": input '" << name << "' must be " << c10::toString(dtype) << " of shape [";
  for (size_t i = 0; i < shape.size(); ++i) message << (i ? ", " : "") << (shape[i] < 0 ? "?" : std::to_string(shape[i]));
  message << "], got ";
  if (tensor.defined()) {
    message << c10::toString(tensor.scalar_type()) << " of shape " << tensor.sizes();
  } else {
    message << "an undefined tensor";
  }
  throw ArtifactError(message.str());
}

void check_receiver_sorted(const torch::Tensor& edge_index, const char* name, const std::string& path) {
  const int64_t num_edges = edge_index.size(1);
  if (num_edges < 2) return;
  auto receivers = edge_index[1];
  if (!(receivers.slice(0, 1) >= receivers.slice(0, 0, num_edges - 1)).all().item<bool>()) {
    throw ArtifactError(path + ": " + name + " must be sorted by receiver (row 1 non-decreasing)");
  }
}

// One function of the artifact: a model of the AOTInductor package, or a TorchScript module.
struct Entry {
  std::unique_ptr<torch::inductor::AOTIModelPackageLoader> package;
  torch::jit::Module script;
};

Entry load_entry(const std::string& path, const std::string& mode, const std::string& name, torch::Device device) {
  Entry entry;
  if (mode == "aotinductor") {
    entry.package = std::make_unique<torch::inductor::AOTIModelPackageLoader>(path, name);
  } else if (name == "model") {
    entry.script = torch::jit::load(path, device);
  } else {
    // another entry point is a TorchScript archive in an extra file of the main one
    std::unordered_map<std::string, std::string> extra_files{{"mlipkit_entry_" + name + ".pt", ""}};
    torch::jit::load(path, device, extra_files);
    std::istringstream archive(extra_files.begin()->second);
    entry.script = torch::jit::load(archive, device);
  }
  if (!entry.package) entry.script.eval();
  return entry;
}

std::vector<torch::Tensor> call(Entry& entry, const std::vector<torch::Tensor>& inputs, const std::string& path) {
  std::vector<torch::Tensor> values;
  try {
    c10::InferenceMode inference;
    if (entry.package) {
      values = entry.package->run(inputs);
    } else {
      // the unoptimized plan: the profiling executor specializes on each call's shapes, which change every
      // MD step, and has nothing to fuse on the CPU (GemNet-OC: 1.9-2.9 s a call with it, 1.4-1.7 s without)
      torch::jit::GraphOptimizerEnabledGuard unoptimized(false);
      auto output = entry.script.forward(std::vector<torch::IValue>(inputs.begin(), inputs.end()));
      for (const auto& element : output.toTupleRef().elements()) values.push_back(element.toTensor());
    }
  } catch (const c10::Error& error) {
    throw ArtifactError(path + ": evaluation failed: " + error.what_without_backtrace());
  } catch (const std::exception& error) {
    throw ArtifactError(path + ": evaluation failed: " + error.what());
  }
  return values;
}

}  // namespace

bool Metadata::takes(const std::string& input) const {
  return std::find(inputs.begin(), inputs.end(), input) != inputs.end();
}

torch::Tensor ewald_k_indices(const torch::Tensor& cell, double k_max, torch::Dtype dtype) {
  const auto lattice = cell.to(torch::kCPU, torch::kFloat64).reshape({3, 3}).contiguous();
  const auto reciprocal = (2.0 * M_PI * torch::linalg_inv(lattice).transpose(0, 1)).contiguous();
  auto b = reciprocal.accessor<double, 2>();
  int64_t bounds[3];
  for (int axis = 0; axis < 3; ++axis) {
    bounds[axis] = static_cast<int64_t>(std::floor(k_max * lattice[axis].norm().item<double>() / (2.0 * M_PI)));
  }
  std::vector<double> kept;
  for (int64_t n0 = -bounds[0]; n0 <= bounds[0]; ++n0) {
    for (int64_t n1 = -bounds[1]; n1 <= bounds[1]; ++n1) {
      for (int64_t n2 = -bounds[2]; n2 <= bounds[2]; ++n2) {
        const int64_t first_nonzero = n0 != 0 ? n0 : (n1 != 0 ? n1 : n2);
        if (first_nonzero <= 0) continue;
        double k_squared = 0.0;
        for (int axis = 0; axis < 3; ++axis) {
          const double k = n0 * b[0][axis] + n1 * b[1][axis] + n2 * b[2][axis];
          k_squared += k * k;
        }
        if (k_squared <= k_max * k_max) kept.insert(kept.end(), {double(n0), double(n1), double(n2)});
      }
    }
  }
  const auto count = static_cast<int64_t>(kept.size() / 3);
  return torch::from_blob(kept.data(), {count, 3}, torch::kFloat64).to(dtype).clone();
}

bool Metadata::has_output(const std::string& name) const {
  return std::find(outputs.begin(), outputs.end(), name) != outputs.end();
}

bool Metadata::takes_node_energy_mask() const {
  return std::find(inputs.begin(), inputs.end(), "node_energy_mask") != inputs.end();
}

HaloExchangeScope::HaloExchangeScope(HaloExchange* exchange) {
  set_exchange_ = reinterpret_cast<void (*)(HaloExchange*)>(dlsym(RTLD_DEFAULT, "mlipkit_set_halo_exchange"));
  if (set_exchange_ == nullptr) {
    throw ArtifactError("the halo exchange needs op library 'mlipkit_ops' loaded (by a Model whose artifact names it) "
                        "and built with mlipkit_set_halo_exchange; this process has none");
  }
  set_exchange_(exchange);
}

HaloExchangeScope::~HaloExchangeScope() { set_exchange_(nullptr); }

Metadata read_metadata(const std::string& path) {
  if (!std::filesystem::is_regular_file(path)) throw ArtifactError("artifact not found: " + path);
  std::string mode = ends_in(path);
  try {
    if (mode == "aotinductor") {
      auto raw = torch::inductor::AOTIModelPackageLoader::load_metadata_from_package(path, "model");
      return parse_metadata(std::map<std::string, std::string>(raw.begin(), raw.end()), path);
    }
    caffe2::serialize::PyTorchStreamReader reader(path);
    if (!reader.hasRecord(kTorchScriptMetadata)) {
      throw ArtifactError(path + " is not an mlipkit artifact (a TorchScript archive without " +
                          std::string(kTorchScriptMetadata) + ")");
    }
    auto [data, size] = reader.getRecord(kTorchScriptMetadata);
    return parse_metadata(parse_lines(std::string(static_cast<const char*>(data.get()), size)), path);
  } catch (const c10::Error& error) {
    throw ArtifactError(path + " is not a readable mlipkit artifact (corrupt or truncated?): " +
                        error.what_without_backtrace());
  }
}

std::pair<torch::Tensor, torch::Tensor> forces_and_atomic_virials(
    const torch::Tensor& edge_index, const torch::Tensor& edge_vectors, const torch::Tensor& edge_forces,
    int64_t num_atoms) {
  auto sender = edge_index[0];
  auto receiver = edge_index[1];
  auto forces = torch::zeros({num_atoms, 3}, edge_forces.options());
  forces.index_add_(0, receiver, edge_forces);
  forces.index_add_(0, sender, -edge_forces);
  auto half_edge_virials = 0.5 * edge_vectors.unsqueeze(2) * edge_forces.unsqueeze(1);
  auto atomic_virials = torch::zeros({num_atoms, 3, 3}, edge_forces.options());
  atomic_virials.index_add_(0, receiver, half_edge_virials);
  atomic_virials.index_add_(0, sender, half_edge_virials);
  return {forces, atomic_virials};
}

struct Model::Backend {
  Entry main;
  std::map<std::string, Entry> entries;  // metadata.entry_points
};

Model::Model(const std::string& path)
    : path_(path), metadata_(read_metadata(path)), device_(torch::kCPU), backend_(std::make_unique<Backend>()) {
  if (metadata_.device == "cuda") {
    if (!torch::cuda::is_available()) {
      throw ArtifactError(path + " was compiled for CUDA, but this libtorch has no usable GPU");
    }
    device_ = torch::Device(torch::kCUDA);
  } else if (metadata_.device != "cpu") {
    throw ArtifactError(path + ": unknown artifact device '" + metadata_.device + "'");
  }
  for (const auto& library : metadata_.op_libraries) load_op_library(library, path);
  try {
    backend_->main = load_entry(path, metadata_.mode, "model", device_);
    for (const auto& entry : metadata_.entry_points) backend_->entries[entry] = load_entry(path, metadata_.mode, entry, device_);
  } catch (const c10::Error& error) {
    throw ArtifactError(path + ": cannot load the compiled model: " + error.what_without_backtrace());
  } catch (const std::exception& error) {
    throw ArtifactError(path + ": cannot load the compiled model: " + error.what());
  }
}

Model::~Model() = default;

std::vector<torch::Tensor> Model::checked_inputs(
    const torch::Tensor& atom_types, const torch::Tensor& edge_index, const torch::Tensor& edge_vectors,
    const torch::Tensor& node_energy_mask, const ChargeInputs& charge_inputs) const {
  check_input(atom_types, "atom_types", {-1}, torch::kInt64, path_);
  const int64_t num_atoms = atom_types.size(0);
  torch::Tensor mask = node_energy_mask;
  if (mask.defined()) {
    check_input(mask, "node_energy_mask", {num_atoms}, torch::kBool, path_);
    if (!metadata_.takes_node_energy_mask() && !mask.all().item<bool>()) {
      throw ArtifactError(path_ + ": this '" + metadata_.target +
                          "' artifact counts every atom's energy; compile with --target lammps to mask atoms out");
    }
  } else {
    mask = torch::ones({num_atoms}, torch::kBool);
  }
  const int64_t num_edges = edge_index.defined() && edge_index.dim() == 2 ? edge_index.size(1) : -1;
  check_input(edge_index, "edge_index", {2, -1}, torch::kInt64, path_);
  if (edge_vectors.defined() && edge_vectors.is_floating_point() && edge_vectors.scalar_type() != metadata_.dtype) {
    throw ArtifactError(path_ + ": dtype mismatch: the artifact computes in " + c10::toString(metadata_.dtype) +
                        ", edge_vectors are " + c10::toString(edge_vectors.scalar_type()));
  }
  check_input(edge_vectors, "edge_vectors", {num_edges, 3}, metadata_.dtype, path_);
  const int64_t num_types = static_cast<int64_t>(metadata_.type_names.size());
  if (atom_types.numel() > 0 && (atom_types.min().item<int64_t>() < 0 || atom_types.max().item<int64_t>() >= num_types)) {
    throw ArtifactError(path_ + ": atom_types must lie in [0, " + std::to_string(num_types) + "), got values from " +
                        std::to_string(atom_types.min().item<int64_t>()) + " to " +
                        std::to_string(atom_types.max().item<int64_t>()));
  }
  check_receiver_sorted(edge_index, "edge_index", path_);
  const auto& known_charges = metadata_.available_total_charges;
  if (!known_charges.empty() &&
      std::find(known_charges.begin(), known_charges.end(), charge_inputs.total_charge) == known_charges.end()) {
    std::ostringstream known;
    for (double charge : known_charges) known << " " << charge;
    throw ArtifactError(path_ + ": total charge " + std::to_string(charge_inputs.total_charge) +
                        " was not seen in training; the model knows" + known.str());
  }
  const auto real = torch::TensorOptions().dtype(metadata_.dtype);
  const int64_t num_lr_edges = charge_inputs.lr_edge_index.defined() ? charge_inputs.lr_edge_index.size(-1) : -1;
  std::vector<torch::Tensor> inputs;
  for (const auto& name : metadata_.inputs) {
    torch::Tensor tensor;
    if (name == "atom_types") {
      tensor = atom_types;
    } else if (name == "edge_index") {
      tensor = edge_index;
    } else if (name == "edge_vectors") {
      tensor = edge_vectors;
    } else if (name == "node_energy_mask") {
      tensor = mask;
    } else if (name == "total_charge") {
      tensor = torch::full({1}, charge_inputs.total_charge, real);
    } else if (name == "charge_shift") {
      tensor = torch::full({1}, charge_inputs.charge_shift, real);
    } else if (name == "charge_shift_weight") {
      tensor = torch::full({1}, charge_inputs.charge_shift_weight, real);
    } else if (name == "lr_edge_index") {
      check_input(charge_inputs.lr_edge_index, "lr_edge_index", {2, -1}, torch::kInt64, path_);
      check_receiver_sorted(charge_inputs.lr_edge_index, "lr_edge_index", path_);
      tensor = charge_inputs.lr_edge_index;
    } else if (name == "lr_edge_vectors") {
      check_input(charge_inputs.lr_edge_vectors, "lr_edge_vectors", {num_lr_edges, 3}, metadata_.dtype, path_);
      tensor = charge_inputs.lr_edge_vectors;
    } else if (name == "positions") {
      check_input(charge_inputs.positions, "positions", {num_atoms, 3}, metadata_.dtype, path_);
      tensor = charge_inputs.positions;
    } else if (name == "cell") {
      check_input(charge_inputs.cell, "cell", {3, 3}, metadata_.dtype, path_);
      tensor = charge_inputs.cell.reshape({1, 3, 3});
    } else if (name == "pbc") {
      check_input(charge_inputs.pbc, "pbc", {3}, torch::kBool, path_);
      tensor = charge_inputs.pbc.reshape({1, 3});
    } else {  // k_indices: check_inputs admits no other name
      check_input(charge_inputs.k_indices, "k_indices", {-1, 3}, metadata_.dtype, path_);
      tensor = charge_inputs.k_indices;
    }
    inputs.push_back(tensor.to(device_).contiguous());
  }
  return inputs;
}

std::map<std::string, torch::Tensor> Model::run(
    const torch::Tensor& atom_types, const torch::Tensor& edge_index, const torch::Tensor& edge_vectors,
    const torch::Tensor& node_energy_mask, const ChargeInputs& charge_inputs) {
  auto values = call(backend_->main, checked_inputs(atom_types, edge_index, edge_vectors, node_energy_mask, charge_inputs),
                     path_);
  if (values.size() != metadata_.outputs.size()) {
    throw ArtifactError(path_ + ": the artifact returned " + std::to_string(values.size()) + " tensors, its metadata lists " +
                        std::to_string(metadata_.outputs.size()) + " outputs");
  }
  std::map<std::string, torch::Tensor> outputs;
  for (size_t i = 0; i < values.size(); ++i) outputs[metadata_.outputs[i]] = values[i];
  return outputs;
}

torch::Tensor Model::charge_correction_terms(const torch::Tensor& atom_types, const torch::Tensor& edge_index,
                                             const torch::Tensor& edge_vectors, const torch::Tensor& node_energy_mask,
                                             const ChargeInputs& charge_inputs) {
  auto found = backend_->entries.find("charge_correction_terms");
  if (found == backend_->entries.end()) {
    throw ArtifactError(path_ + " has no charge_correction_terms entry point (its model has no global charge "
                        "correction, or it was compiled for another target than lammps)");
  }
  auto values = call(found->second, checked_inputs(atom_types, edge_index, edge_vectors, node_energy_mask, charge_inputs),
                     path_);
  if (values.size() != 1) {
    throw ArtifactError(path_ + ": charge_correction_terms returned " + std::to_string(values.size()) + " tensors, not 1");
  }
  return values[0].reshape({4});
}

Results Model::evaluate(const torch::Tensor& atom_types, const torch::Tensor& edge_index,
                        const torch::Tensor& edge_vectors, const torch::Tensor& node_energy_mask,
                        const ChargeInputs& charge_inputs) {
  auto outputs = run(atom_types, edge_index, edge_vectors, node_energy_mask, charge_inputs);
  Results results;
  results.atomic_energies = outputs.at("node_energies");
  const auto counted = node_energy_mask.defined() ? node_energy_mask.to(device_)
                                                  : torch::ones_like(results.atomic_energies, torch::kBool);
  results.energy = torch::where(counted, results.atomic_energies, 0.0).sum();
  if (outputs.count("node_energy_uncertainty")) {
    results.atomic_energy_uncertainty = outputs.at("node_energy_uncertainty");
    results.energy_uncertainty =
        torch::where(counted, results.atomic_energy_uncertainty, 0.0).sum().abs() / counted.sum().clamp_min(1);
  }
  if (outputs.count("charges")) results.charges = outputs.at("charges");
  if (outputs.count("edge_forces")) results.edge_forces = outputs.at("edge_forces");
  if (outputs.count("forces")) {
    results.forces = outputs.at("forces");
    if (outputs.count("virial")) {
      results.virial = outputs.at("virial").reshape({3, 3});
      results.atomic_virials = outputs.at("node_virials");
    }
  } else if (results.edge_forces.defined()) {
    const int64_t num_atoms = atom_types.size(0);
    std::tie(results.forces, results.atomic_virials) = forces_and_atomic_virials(
        edge_index.to(device_), edge_vectors.to(device_), results.edge_forces, num_atoms);
    if (outputs.count("lr_edge_forces")) {
      auto [forces, atomic_virials] = forces_and_atomic_virials(charge_inputs.lr_edge_index.to(device_),
                                                                charge_inputs.lr_edge_vectors.to(device_),
                                                                outputs.at("lr_edge_forces"), num_atoms);
      results.forces = results.forces + forces;
      results.atomic_virials = results.atomic_virials + atomic_virials;
    }
    if (outputs.count("position_forces")) {
      // Ewald's reciprocal sum: -dE/dx adds to the forces; its virial -sum x (x) dE/dx - h^T dE/dh is shared equally
      // (the first terms alone depend on the periodic image each x is given in, the sum does not)
      const auto& position_forces = outputs.at("position_forces");
      const auto positions = charge_inputs.positions.to(device_);
      const auto cell = charge_inputs.cell.to(device_).reshape({3, 3});
      const auto direct_virial = (positions.unsqueeze(2) * position_forces.unsqueeze(1)).sum(0) -
                                 cell.transpose(0, 1).matmul(outputs.at("cell_gradient").reshape({3, 3}));
      results.forces = results.forces + position_forces;
      results.atomic_virials = results.atomic_virials + direct_virial.unsqueeze(0) / std::max<int64_t>(num_atoms, 1);
    }
    results.virial = results.atomic_virials.sum(0);
  }
  return results;
}

Results Model::evaluate_positions(const torch::Tensor& atom_types, const torch::Tensor& positions,
                                  const torch::Tensor& edge_index, const torch::Tensor& edge_shifts) {
  check_input(positions, "positions", {atom_types.defined() ? atom_types.size(0) : -1, 3}, metadata_.dtype, path_);
  check_input(edge_index, "edge_index", {2, -1}, torch::kInt64, path_);
  auto edge_vectors = positions.index_select(0, edge_index[1]) - positions.index_select(0, edge_index[0]);
  if (edge_shifts.defined()) {
    check_input(edge_shifts, "edge_shifts", {edge_index.size(1), 3}, metadata_.dtype, path_);
    edge_vectors = edge_vectors + edge_shifts;
  }
  return evaluate(atom_types, edge_index, edge_vectors);
}

}  // namespace mlipkit
