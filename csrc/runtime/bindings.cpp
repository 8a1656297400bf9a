// mlipkit._runtime: the C++ runtime from Python, so pytest can check it
// against the eager model and the Python loaders.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>
#include <torch/extension.h>

#include "mlipkit/runtime.hpp"

namespace py = pybind11;

namespace {

py::dict results_dict(const mlipkit::Results& results) {
  py::dict values;
  const std::pair<const char*, const torch::Tensor*> fields[] = {
      {"energy", &results.energy},          {"atomic_energies", &results.atomic_energies},
      {"forces", &results.forces},          {"virial", &results.virial},
      {"atomic_virials", &results.atomic_virials}, {"edge_forces", &results.edge_forces},
      {"energy_uncertainty", &results.energy_uncertainty},
      {"atomic_energy_uncertainty", &results.atomic_energy_uncertainty}, {"charges", &results.charges}};
  for (const auto& [name, tensor] : fields) {
    if (tensor->defined()) values[name] = *tensor;
  }
  return values;
}

// The charge models' inputs from keyword arguments named as the artifact's inputs.
mlipkit::ChargeInputs charge_inputs(const py::kwargs& extra) {
  mlipkit::ChargeInputs inputs;
  for (const auto& [key, value] : extra) {
    const auto name = key.cast<std::string>();
    if (name == "total_charge") {
      inputs.total_charge = value.cast<double>();
    } else if (name == "charge_shift") {
      inputs.charge_shift = value.cast<double>();
    } else if (name == "charge_shift_weight") {
      inputs.charge_shift_weight = value.cast<double>();
    } else if (name == "lr_edge_index") {
      inputs.lr_edge_index = value.cast<torch::Tensor>();
    } else if (name == "lr_edge_vectors") {
      inputs.lr_edge_vectors = value.cast<torch::Tensor>();
    } else if (name == "positions") {
      inputs.positions = value.cast<torch::Tensor>();
    } else if (name == "cell") {
      inputs.cell = value.cast<torch::Tensor>();
    } else if (name == "pbc") {
      inputs.pbc = value.cast<torch::Tensor>();
    } else if (name == "k_indices") {
      inputs.k_indices = value.cast<torch::Tensor>();
    } else {
      throw py::type_error("unknown charge input '" + name + "'");
    }
  }
  return inputs;
}

}  // namespace

PYBIND11_MODULE(_runtime, module) {
  module.doc() = "The mlipkit C++ runtime (libmlipkit_runtime), for tests and embedding";
  py::register_exception<mlipkit::ArtifactError>(module, "ArtifactError", PyExc_ValueError);
  module.def(
      "read_metadata", [](const std::string& path) { return mlipkit::read_metadata(path).entries; }, py::arg("path"));
  py::class_<mlipkit::Model>(module, "Model")
      .def(py::init<const std::string&>(), py::arg("path"))
      .def_property_readonly("metadata", [](const mlipkit::Model& model) { return model.metadata().entries; })
      .def_property_readonly("type_names", [](const mlipkit::Model& model) { return model.metadata().type_names; })
      .def_property_readonly("r_max", [](const mlipkit::Model& model) { return model.metadata().r_max; })
      .def(
          "run",
          [](mlipkit::Model& model, const torch::Tensor& atom_types, const torch::Tensor& edge_index,
             const torch::Tensor& edge_vectors, std::optional<torch::Tensor> node_energy_mask, const py::kwargs& extra) {
            return model.run(atom_types, edge_index, edge_vectors, node_energy_mask.value_or(torch::Tensor()),
                             charge_inputs(extra));
          },
          py::arg("atom_types"), py::arg("edge_index"), py::arg("edge_vectors"), py::arg("node_energy_mask") = py::none())
      .def(
          "evaluate",
          [](mlipkit::Model& model, const torch::Tensor& atom_types, const torch::Tensor& edge_index,
             const torch::Tensor& edge_vectors, std::optional<torch::Tensor> node_energy_mask, const py::kwargs& extra) {
            return results_dict(model.evaluate(atom_types, edge_index, edge_vectors,
                                               node_energy_mask.value_or(torch::Tensor()), charge_inputs(extra)));
          },
          py::arg("atom_types"), py::arg("edge_index"), py::arg("edge_vectors"), py::arg("node_energy_mask") = py::none())
      .def(
          "evaluate_positions",
          [](mlipkit::Model& model, const torch::Tensor& atom_types, const torch::Tensor& positions,
             const torch::Tensor& edge_index, std::optional<torch::Tensor> edge_shifts) {
            return results_dict(
                model.evaluate_positions(atom_types, positions, edge_index, edge_shifts.value_or(torch::Tensor())));
          },
          py::arg("atom_types"), py::arg("positions"), py::arg("edge_index"), py::arg("edge_shifts") = py::none())
      .def(
          "charge_correction_terms",
          [](mlipkit::Model& model, const torch::Tensor& atom_types, const torch::Tensor& edge_index,
             const torch::Tensor& edge_vectors, std::optional<torch::Tensor> node_energy_mask, const py::kwargs& extra) {
            return model.charge_correction_terms(atom_types, edge_index, edge_vectors,
                                                 node_energy_mask.value_or(torch::Tensor()), charge_inputs(extra));
          },
          py::arg("atom_types"), py::arg("edge_index"), py::arg("edge_vectors"), py::arg("node_energy_mask") = py::none());
  module.def(
      "ewald_k_indices",
      [](const torch::Tensor& cell, double k_max) { return mlipkit::ewald_k_indices(cell, k_max, torch::kFloat64); },
      py::arg("cell"), py::arg("k_max"));
}
