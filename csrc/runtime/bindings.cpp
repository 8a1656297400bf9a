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
      {"atomic_energy_uncertainty", &results.atomic_energy_uncertainty}};
  for (const auto& [name, tensor] : fields) {
    if (tensor->defined()) values[name] = *tensor;
  }
  return values;
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
             const torch::Tensor& edge_vectors, std::optional<torch::Tensor> node_energy_mask) {
            return model.run(atom_types, edge_index, edge_vectors, node_energy_mask.value_or(torch::Tensor()));
          },
          py::arg("atom_types"), py::arg("edge_index"), py::arg("edge_vectors"), py::arg("node_energy_mask") = py::none())
      .def(
          "evaluate",
          [](mlipkit::Model& model, const torch::Tensor& atom_types, const torch::Tensor& edge_index,
             const torch::Tensor& edge_vectors, std::optional<torch::Tensor> node_energy_mask) {
            return results_dict(
                model.evaluate(atom_types, edge_index, edge_vectors, node_energy_mask.value_or(torch::Tensor())));
          },
          py::arg("atom_types"), py::arg("edge_index"), py::arg("edge_vectors"), py::arg("node_energy_mask") = py::none())
      .def(
          "evaluate_positions",
          [](mlipkit::Model& model, const torch::Tensor& atom_types, const torch::Tensor& positions,
             const torch::Tensor& edge_index, std::optional<torch::Tensor> edge_shifts) {
            return results_dict(
                model.evaluate_positions(atom_types, positions, edge_index, edge_shifts.value_or(torch::Tensor())));
          },
          py::arg("atom_types"), py::arg("positions"), py::arg("edge_index"), py::arg("edge_shifts") = py::none());
}
