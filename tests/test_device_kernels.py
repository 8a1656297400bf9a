"""The device ops (csrc/device) that a CUDA build runs on the GPU, against the CPU kernels: on every machine
through their CPU emulation (torch.ops.mlipkit_emulated: the same host code and kernel functors, each thread
a loop iteration), and on a GPU, where there is one, as CUDA ops; every model on a device other than the CPU
(fake tensors here, a GPU there); CUDA artifacts and the C++ runtime on a GPU. tools/gpu_check.sh runs this
file on a GPU machine."""

import copy
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.fx.experimental.symbolic_shapes import ShapeEnv

import mlipkit
from conftest import artifact_for_device, build_small, cu_au_triclinic
from mlipkit import ops
from mlipkit.compile.export import ExportablePotential, contract_inputs, relative_difference
from mlipkit.compile.modifiers import ModifierError, set_kernels
from mlipkit.compile.metadata import TARGET_INPUTS, artifact_outputs
from mlipkit.data import graph_from_atoms
from mlipkit.nn.mlp import mlp_operands
from test_convolution_kernel import KERNEL_MODELS, build, convolutions_of, operands, random_graph
from test_polynomial_kernel import problem
from test_radial_convolution import ACTIVATIONS, radial_operands, standalone_convolution
from test_segment_outer import problem as segment_outer_problem

TOLERANCE = {torch.float64: 1e-12, torch.float32: 1e-5}
GPU = torch.cuda.is_available()
#: where the GPU tests run: the GPU; MLIPKIT_TEST_DEVICE=cpu runs them on the CPU instead (tools/gpu_check.sh's
#: dry run on a machine without a GPU, which checks the script and the tests, comparing the CPU with itself)
TEST_DEVICE = os.environ.get("MLIPKIT_TEST_DEVICE", "cuda")
needs_gpu = pytest.mark.skipif(not (GPU or TEST_DEVICE == "cpu"), reason="needs a GPU (tools/gpu_check.sh runs these on one)")


class DeviceOps:
    """``ops.NAME(*cpu_tensors)``: the device ops on CPU tensors, through the emulation or on the GPU (results
    brought back to the CPU)."""

    def __init__(self, backend: str):
        self.backend = backend
        if backend == "emulated":
            torch.ops.load_library(str(ops.emulation_library_path()))

    def __getattr__(self, name):
        if self.backend == "emulated":
            return getattr(torch.ops.mlipkit_emulated, name)

        def on_gpu(*arguments):
            moved = [a.to(TEST_DEVICE) if isinstance(a, torch.Tensor) else a for a in arguments]
            result = getattr(torch.ops.mlipkit, name)(*moved)
            return tuple(r.cpu() for r in result) if isinstance(result, (tuple, list)) else result.cpu()

        return on_gpu


@pytest.fixture(scope="module", params=["emulated", pytest.param("cuda", marks=needs_gpu)])
def device_ops(request):
    return DeviceOps(request.param)


def assert_all_close(produced, expected, dtype):
    for index, (value, reference) in enumerate(zip(produced, expected, strict=True)):
        difference = relative_difference(value, reference)
        assert difference <= TOLERANCE[dtype], f"output {index}: {difference:.3g}"


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("name", sorted(KERNEL_MODELS))
def test_convolution_ops_equal_the_cpu_kernels(device_ops, name, dtype):
    """Forward, backward and double backward of every path set, with an isolated node and repeated edges."""
    for layer, convolution in enumerate(convolutions_of(build(name, dtype))):
        fused = convolution.fused
        edge_index = random_graph(9, 40, seed=layer, isolated=(4,))
        x, sh, w = operands(convolution, 9, edge_index, dtype, layer)
        dx, dsh, dw = operands(convolution, 9, edge_index, dtype, layer + 100)
        g = torch.randn(9, fused.num_out_features, dtype=dtype)
        plan = (edge_index, fused.couplings.to(dtype), fused.paths)
        for op_name, arguments in {
            "tensor_product_convolution": (x, sh, w, *plan, fused.num_out_features),
            "tensor_product_convolution_backward": (g, x, sh, w, *plan),
            "tensor_product_convolution_double_backward": (g, x, sh, w, dx, dsh, dw, *plan),
        }.items():
            produced = getattr(device_ops, op_name)(*arguments)
            expected = getattr(torch.ops.mlipkit, op_name)(*arguments)
            if isinstance(expected, torch.Tensor):
                produced, expected = (produced,), (expected,)
            assert_all_close(produced, expected, dtype)


def test_convolution_ops_on_empty_graphs(device_ops):
    convolution = convolutions_of(build("nequip_uneven"))[0]
    fused = convolution.fused
    for num_nodes in (0, 3):
        edge_index = torch.zeros(2, 0, dtype=torch.long)
        x, sh, w = operands(convolution, num_nodes, edge_index, torch.float64, 0)
        out = device_ops.tensor_product_convolution(x, sh, w, edge_index, fused.couplings, fused.paths, fused.num_out_features)
        assert out.shape == (num_nodes, fused.num_out_features) and not out.any()


def test_device_ops_refuse_bad_graphs(device_ops):
    convolution = convolutions_of(build("nequip_uneven"))[0]
    fused = convolution.fused
    edge_index = random_graph(5, 12, seed=0)
    x, sh, w = operands(convolution, 5, edge_index, torch.float64, 0)
    unsorted = edge_index.flip(1)
    outside = edge_index.clone()
    outside[0, 3] = 5
    for bad, message in ((unsorted, r"\(.*= 4 > .*= 3\); sort edges by receiver first"),
                         (outside, r"sender.* 3 = 5 is outside \[0, 5\)")):
        with pytest.raises(RuntimeError, match=message):
            device_ops.tensor_product_convolution(x, sh, w, bad, fused.couplings, fused.paths, fused.num_out_features)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("channels", [1, 37])
def test_polynomial_ops_equal_the_cpu_kernels(device_ops, channels, dtype):
    """Evaluation and the coefficient gradient; the nodes span several of the gradient's node chunks."""
    (features, node_weights, coefficients), terms, num_outputs = problem(channels, dtype)
    features, node_weights = features.repeat(20, 1, 1), node_weights.repeat(20, 1)
    grad_out = torch.randn(features.shape[0], num_outputs, channels, dtype=dtype)
    num_coefficients = coefficients.shape[1]
    for op_name, arguments in {
        "channelwise_polynomial": (features, node_weights, coefficients, terms, num_outputs),
        "channelwise_polynomial_coefficient_grad": (features, node_weights, grad_out, terms, num_coefficients),
    }.items():
        produced = getattr(device_ops, op_name)(*arguments)
        expected = getattr(torch.ops.mlipkit, op_name)(*arguments)
        assert_all_close((produced,), (expected,), dtype)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_segment_outer_ops_equal_the_cpu_kernels(device_ops, dtype):
    """GemNet-OC's triplet contraction and its two derivatives (targets without rows, unused sources)."""
    basis, features, source, target, num_targets = segment_outer_problem(dtype=dtype)
    grad = torch.randn(num_targets, basis.shape[1], features.shape[1], dtype=dtype)
    for op_name, arguments in {
        "segment_outer_sum": (basis, features, source, target, num_targets),
        "segment_outer_sum_basis_grad": (grad, features, source, target),
        "segment_outer_sum_features_grad": (basis, grad, source, target, features.shape[0]),
    }.items():
        produced = getattr(device_ops, op_name)(*arguments)
        expected = getattr(torch.ops.mlipkit, op_name)(*arguments)
        assert_all_close((produced,), (expected,), dtype)
    unsorted = target.flip(0)
    with pytest.raises(RuntimeError, match=r"is not sorted \(entry"):
        device_ops.segment_outer_sum(basis, features, source, unsorted, num_targets)


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_activation_composite_equals_the_kernel(device_ops, activation):
    """Orders 0-3 with and without a factor, across softplus's threshold at 20."""
    generator = torch.Generator().manual_seed(0)
    x = torch.cat([torch.randn(500, generator=generator, dtype=torch.float64) * 4, torch.tensor([19.5, 20.0, 20.5, 30.0], dtype=torch.float64)])
    factor = torch.randn(x.shape, generator=generator, dtype=torch.float64)
    for order in range(4):
        for given in (None, factor):
            produced = device_ops.activation_derivative(x, activation, order, 0.7, given)
            expected = torch.ops.mlipkit.activation_derivative(x, activation, order, 0.7, given)
            assert_all_close((produced,), (expected,), torch.float64)


@pytest.mark.parametrize("weight_gradients", [True, False])
def test_radial_convolution_composite_equals_the_fused_op(device_ops, weight_gradients):
    convolution = standalone_convolution(3, [16, 16], "silu")
    fused = convolution.fused
    edge_index = random_graph(11, 60, seed=3, isolated=(2,))
    x, sh, radial = radial_operands(convolution, 11, edge_index, 3)
    mlp_weights, widths, scale = mlp_operands(convolution.radial)
    mlp = (mlp_weights.detach(), widths, "silu", scale)
    plan = (edge_index, fused.couplings, fused.paths)
    g = torch.randn(11, fused.num_out_features, dtype=torch.float64)
    forward = (x, sh, radial, *mlp, *plan, fused.num_out_features)
    assert_all_close((device_ops.radial_convolution(*forward),), (torch.ops.mlipkit.radial_convolution(*forward),), torch.float64)
    backward = (g, x, sh, radial, *mlp, *plan, weight_gradients)
    assert_all_close(device_ops.radial_convolution_backward(*backward), torch.ops.mlipkit.radial_convolution_backward(*backward), torch.float64)


def model_on_fake_device(model, inputs: dict, device: str):
    """Run ``model`` with its parameters, buffers and ``inputs`` as fake tensors on ``device``: a tensor the
    model makes on the CPU, or keeps outside its buffers (so that ``.to`` would not move it), meets one of them
    and raises, as it would on a GPU."""
    mode = FakeTensorMode(shape_env=ShapeEnv())
    with mode:
        tensors = {**dict(model.named_parameters()), **dict(model.named_buffers())}
        state = {name: torch.empty(t.shape, dtype=t.dtype, device=device) for name, t in tensors.items()}
        fake = {name: torch.empty(t.shape, dtype=t.dtype, device=device) for name, t in inputs.items()}
        return torch.func.functional_call(model, state, tuple(fake.values()))


@pytest.mark.parametrize("path", ["kernels", "reference"])
@pytest.mark.parametrize("name", sorted(mlipkit.models.REGISTRY))
def test_every_model_follows_its_inputs_device(name, path, monkeypatch):
    """The artifact's function (energies and edge forces by autograd) of every model on the meta device (a
    fake CUDA device cannot run autograd without a CUDA build), through the fused kernels as a CUDA build
    takes them (their shapes from the ops' meta kernels) or the reference path: every output on that device."""
    monkeypatch.setattr(ops, "has_kernels", lambda device: path == "kernels")
    model = build_small(name)
    model.do_derivatives = True
    graph = graph_from_atoms(cu_au_triclinic(), model.r_max, model.type_names, torch.float64)
    graph["node_energy_mask"] = torch.ones(len(graph["atom_types"]), dtype=torch.bool)
    inputs = TARGET_INPUTS["lammps"]
    outputs = artifact_outputs("lammps", model.energy_uncertainty_readout is not None, model.direct_forces)
    exportable = ExportablePotential(model, inputs, outputs)
    values = dict(zip(inputs, contract_inputs(graph, torch.device("cpu"), inputs, torch.float64)))
    produced = model_on_fake_device(exportable, values, "meta")
    assert len(produced) == len(outputs) and all(value.device.type == "meta" for value in produced)


def test_a_tensor_left_on_the_cpu_is_caught():
    """The check above can fail: a module that adds a CPU tensor to its input raises on the fake device."""

    class LeavesATensorOnTheCpu(torch.nn.Module):
        def forward(self, x):
            return x + torch.ones(x.shape)

    with pytest.raises(RuntimeError, match="device"):
        model_on_fake_device(LeavesATensorOnTheCpu(), {"x": torch.zeros(3, 2)}, "meta")


def test_fused_kernels_where_the_build_has_them():
    """The CPU always; the GPU where this build has CUDA kernels, which a machine with a GPU must have."""
    assert ops.has_kernels(torch.device("cpu"))
    assert not ops.has_kernels(torch.device("meta"))
    assert ops.has_kernels(torch.device("cuda")) == GPU


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="no nvcc on this machine")
def test_cuda_sources_compile_for_sm90():
    """tools/cuda_build_check.sh: the CUDA sources compile against this torch's headers, every kernel built."""
    script = Path(__file__).resolve().parent.parent / "tools" / "cuda_build_check.sh"
    result = subprocess.run(["bash", str(script)], capture_output=True, text=True, env=dict(os.environ, PYTHON=sys.executable))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "18 kernels" in result.stdout


@pytest.mark.skipif(GPU, reason="checks what a machine without a GPU says")
@pytest.mark.parametrize("name", ["aotinductor_float64", "torchscript_float64"])
def test_a_cuda_artifact_says_it_needs_a_gpu(artifacts, tmp_path, name):
    from mlipkit import _runtime
    from mlipkit.calculators import MLIPCalculator

    source = artifacts[name][0]
    path = artifact_for_device(source, "cuda", tmp_path / f"cuda{source.suffix}")
    with pytest.raises(ValueError, match="was compiled for CUDA, but this torch has no usable GPU"):
        MLIPCalculator(path)
    with pytest.raises(_runtime.ArtifactError, match="was compiled for CUDA, but this libtorch has no usable GPU"):
        _runtime.Model(str(path))


# ---------------------------------------------------------------- on a GPU


@needs_gpu
def test_cuda_ops_are_deterministic_and_pass_gradcheck():
    """Two calls give the same bits; first and second derivatives by finite differences (float64)."""
    convolution = convolutions_of(build("mace_odd"))[0]
    fused = convolution.fused
    edge_index = random_graph(6, 20, seed=1).to(TEST_DEVICE)
    x, sh, w = (t.to(TEST_DEVICE).requires_grad_(True) for t in operands(convolution, 6, edge_index, torch.float64, 1))
    plan = (edge_index, fused.couplings.to(TEST_DEVICE), fused.paths, fused.num_out_features)
    convolve = lambda x, sh, w: torch.ops.mlipkit.tensor_product_convolution(x, sh, w, *plan)  # noqa: E731
    assert torch.equal(convolve(x, sh, w), convolve(x, sh, w))
    assert torch.autograd.gradcheck(convolve, (x, sh, w))
    assert torch.autograd.gradgradcheck(convolve, (x, sh, w))
    (features, node_weights, coefficients), terms, num_outputs = problem(3)
    tensors = [t.to(TEST_DEVICE).requires_grad_(True) for t in (features, node_weights, coefficients)]
    polynomial = lambda *t: torch.ops.mlipkit.channelwise_polynomial(*t, terms, num_outputs)  # noqa: E731
    assert torch.equal(polynomial(*tensors), polynomial(*tensors))
    assert torch.autograd.gradcheck(polynomial, tensors)
    assert torch.autograd.gradgradcheck(polynomial, tensors)


def evaluate_on(model, atoms, device):
    graph = graph_from_atoms(atoms, model.r_max, model.type_names, torch.float64)
    results = model.to(device)({name: value.to(device) for name, value in graph.items()})
    return {name: results[name].detach().cpu() for name in ("energy", "forces", "stress")}


@needs_gpu
@pytest.mark.parametrize("kernel", ["fused", "reference"])
@pytest.mark.parametrize("name", sorted(mlipkit.models.REGISTRY))
def test_models_on_the_gpu_equal_the_cpu(name, kernel):
    """Energy, forces and stress of every model on the GPU, with its kernels or the reference path, against
    the CPU (float64)."""
    model = build_small(name)
    expected = evaluate_on(copy.deepcopy(model), cu_au_triclinic(), "cpu")
    if kernel == "reference":
        for option, value in (("tensor_product", "e3nn"), ("symmetric_contraction", "dense"), ("triplet_contraction", "padded")):
            try:
                set_kernels(model, **{option: value})
            except ModifierError:
                pass  # the model has no such kernel
    produced = evaluate_on(model, cu_au_triclinic(), TEST_DEVICE)
    for key, value in produced.items():
        assert relative_difference(value, expected[key]) <= 1e-10, key


@needs_gpu
@pytest.mark.parametrize("mode", ["aotinductor", "torchscript"])
def test_cuda_artifact_equals_eager_and_the_cpp_runtime(tmp_path, mode):
    """mlip-compile --device cuda (which verifies the artifact against the eager model itself), then the
    artifact from Python and from the C++ runtime against the eager model on the CPU."""
    from mlipkit.compile import compile_model
    from mlipkit.compile.artifact import Artifact

    model = build_small("nequip")
    path = tmp_path / ("nequip.pt2" if mode == "aotinductor" else "nequip.pt")
    compile_model(copy.deepcopy(model), path, mode, "ase", TEST_DEVICE)
    atoms = cu_au_triclinic()
    expected = evaluate_on(model, atoms, "cpu")
    graph = graph_from_atoms(atoms, model.r_max, model.type_names, torch.float64)
    python = Artifact(path)(graph)
    assert relative_difference(python["forces"].detach().cpu(), expected["forces"]) <= 1e-10
    try:
        from mlipkit import _runtime
    except ImportError:
        pytest.skip("the Python artifact agrees; this build has no Python bindings of the C++ runtime (no Python.h)")
    cpp = _runtime.Model(str(path)).evaluate(*contract_inputs(graph, torch.device("cpu")))
    assert relative_difference(cpp["forces"].detach().cpu(), expected["forces"]) <= 1e-10
    assert relative_difference(cpp["energy"].detach().cpu().reshape(()), expected["energy"].reshape(())) <= 1e-10
