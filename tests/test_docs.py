"""The documentation site: built in strict mode, option tables equal to the configs, code blocks that run.

The site is built by MkDocs from docs/ (mkdocs.yml). A scratch copy with one
broken link must fail the strict build; every option of every registered
model and of the training config appears in the generated tables; the
``bash`` and ``python`` blocks of the pages and the README run in a scratch
directory holding a small model (those marked ``<!-- not run: ... -->`` say
why not; the Quick start's run in the demo); every docs page the code cites
in help texts and error messages exists, with its anchor.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))

from docs_snippets import snippets  # noqa: E402

BUILD_ENVIRONMENT = dict(os.environ, NO_MKDOCS_2_WARNING="1")
PAGES = sorted(ROOT.glob("docs/**/*.md"))
QUICKSTART = ROOT / "docs" / "quickstart.md"


def docs_hooks():
    spec = importlib.util.spec_from_file_location("docs_hooks", ROOT / "tools" / "docs_hooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def copy_docs_project(destination: Path) -> Path:
    """docs/, mkdocs.yml and the hook in a scratch directory (python/ linked), as the build reads them."""
    shutil.copytree(ROOT / "docs", destination / "docs")
    shutil.copy(ROOT / "mkdocs.yml", destination / "mkdocs.yml")
    (destination / "tools").mkdir()
    shutil.copy(ROOT / "tools" / "docs_hooks.py", destination / "tools" / "docs_hooks.py")
    (destination / "python").symlink_to(ROOT / "python")
    return destination


def build(project: Path, site: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(project / "mkdocs.yml"), "-d", str(site)],
        capture_output=True, text=True, env=BUILD_ENVIRONMENT, cwd=project,
    )


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """The site built in strict mode from the repository's docs (a warning fails it)."""
    site = tmp_path_factory.mktemp("site")
    run = build(ROOT, site)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "WARNING" not in run.stderr, run.stderr
    return site


def test_site_has_every_page_and_the_api(site):
    for page in PAGES:
        relative = page.relative_to(ROOT / "docs").with_suffix("")
        html = site / (relative.parent if relative.name == "index" else relative) / "index.html"
        assert html.exists(), f"{page} was not built"
    api = (site / "api" / "models" / "index.html").read_text()
    assert "build_model" in api and "Build a registered model" in api  # the docstring, rendered
    nequip = (site / "models" / "nequip" / "index.html").read_text()
    assert "mlipkit:options" not in nequip and "num_layers" in nequip


def test_a_broken_link_fails_the_strict_build(tmp_path):
    project = copy_docs_project(tmp_path / "project")
    index = project / "docs" / "index.md"
    index.write_text(index.read_text() + "\nSee [the missing page](no-such-page.md).\n")
    run = build(project, tmp_path / "site")
    assert run.returncode != 0
    output = run.stdout + run.stderr
    assert "no-such-page.md" in output and "Aborted" in output, output


def test_an_undocumented_option_fails_the_build(tmp_path):
    hooks = docs_hooks()
    from pydantic import BaseModel, ConfigDict

    class Undocumented(BaseModel):
        model_config = ConfigDict(use_attribute_docstrings=True)
        documented: int = 1
        """said"""
        silent: int = 2

    with pytest.raises(Exception, match="silent has no docstring"):
        hooks.table(hooks.option_rows(Undocumented))


def table_options(markdown: str) -> set[str]:
    return set(re.findall(r"^\| `([^`]+)` \|", markdown, re.MULTILINE))


def flattened_fields(klass, prefix: str = "") -> set[str]:
    hooks = docs_hooks()
    names = set()
    for name, field in klass.model_fields.items():
        nested = hooks.nested_config(field.annotation)
        names |= flattened_fields(nested, f"{prefix}{name}.") if nested else {f"{prefix}{name}"}
    return names


def test_option_tables_equal_the_config_classes():
    from mlipkit.models.registry import REGISTRY
    from mlipkit.train import config as train_config

    hooks = docs_hooks()
    for name, entry in REGISTRY.items():
        assert table_options(hooks.options_markdown(name)) == flattened_fields(entry.config_class), name
    training = hooks.options_markdown("mlipkit.train.config.TrainConfig")
    assert table_options(training) == flattened_fields(train_config.TrainConfig)
    assert "`optimizer.lr` |  | `0.01` | learning rate |" in training
    spellings = hooks.options_markdown("mace")
    assert "| `num_interactions` | `num_layers` | `2` |" in spellings
    assert "| `avg_num_neighbours` | `avg_num_neighbors` | `null` |" in spellings
    # every model page and the config reference carry their generated tables
    for page, marker in [("models/nequip.md", "nequip"), ("models/mace.md", "mace"), ("models/gemnet-oc.md", "gemnet_oc"),
                         ("training-config.md", "mlipkit.train.config.TrainConfig")]:
        assert f"<!-- mlipkit:options {marker} -->" in (ROOT / "docs" / page).read_text(), page


@pytest.fixture(scope="module")
def scratch(tmp_path_factory, artifacts, small_checkpoint) -> Path:
    """What the docs' examples name: model.ckpt (a small Cu/Au/H/C/O NequIP), model.pt2 (compiled), examples/, tests/."""
    directory = tmp_path_factory.mktemp("docs_examples")
    shutil.copy(small_checkpoint, directory / "model.ckpt")
    shutil.copy(artifacts["aotinductor_float64"][0], directory / "model.pt2")
    for name in ("examples", "tests"):
        (directory / name).symlink_to(ROOT / name)
    return directory


RUNNABLE_PAGES = [page for page in [*PAGES, ROOT / "README.md"]
                  if page != QUICKSTART and any(snippet.runs for snippet in snippets(page))]


@pytest.mark.parametrize("page", RUNNABLE_PAGES, ids=lambda page: str(page.relative_to(ROOT)))
def test_code_blocks_run(page, scratch, monkeypatch):
    """A page's blocks in order, its Python blocks sharing one namespace, in the scratch directory."""
    monkeypatch.chdir(scratch)
    environment = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    namespace: dict = {}
    for snippet in snippets(page):
        if not snippet.runs:
            continue
        where = f"{page.relative_to(ROOT)}:{snippet.line}"
        if snippet.language == "python":
            exec(compile(snippet.code, where, "exec"), namespace)
        else:
            run = subprocess.run(["bash", "-e", "-c", snippet.code], capture_output=True, text=True, env=environment)
            assert run.returncode == 0, f"{where}:\n{run.stdout}\n{run.stderr}"


def test_every_block_not_run_says_why():
    for page in [*PAGES, ROOT / "README.md"]:
        for snippet in snippets(page):
            if snippet.not_run is not None:
                assert len(snippet.not_run.split()) >= 3, f"{page}:{snippet.line}: say why the block is not run"


def test_the_quick_start_is_the_demo():
    """Every command and code block of the Quick start runs in the demo, which reads them from the page."""
    blocks = snippets(QUICKSTART)
    skipped = [snippet for snippet in blocks if snippet.language in ("bash", "python") and not snippet.runs]
    assert [snippet.code.strip() for snippet in skipped] == ["bash tools/setup.sh demo"]
    run = [snippet for snippet in blocks if snippet.runs]
    assert [snippet.language for snippet in run] == ["bash", "bash", "bash", "python", "python", "bash"]
    for snippet in run:
        if snippet.language == "python":
            compile(snippet.code, str(snippet.line), "exec")
            continue
        for command in snippet.code.splitlines():
            program = command.split()[0]
            assert (Path(sys.executable).parent / program).exists(), f"{program} is not in the environment"
            for word in command.split():
                if word.startswith("examples/"):
                    assert (ROOT / word).exists(), word
    demo = (ROOT / "examples" / "demo.py").read_text()
    assert 'PAGE = ROOT / "docs" / "quickstart.md"' in demo and "snippets(PAGE)" in demo


#: a docs page cited in code, with an optional anchor
DOCS_REFERENCE = re.compile(r"docs/([\w/.-]+?\.md)(?:#([\w-]+))?\b")


def test_pages_cited_by_the_code_exist(site):
    sources = [*ROOT.glob("python/mlipkit/**/*.py"), *ROOT.glob("lammps_plugin/*.cpp"), *ROOT.glob("lammps_plugin/*.h"),
               *ROOT.glob("csrc/**/*.cpp"), *ROOT.glob("examples/**/*.yaml"), *ROOT.glob("tools/*.sh")]
    cited = {(path, match[1], match[2]) for path in sources for match in DOCS_REFERENCE.finditer(path.read_text())}
    assert len(cited) >= 10
    for path, page, anchor in cited:
        assert (ROOT / "docs" / page).exists(), f"{path} cites docs/{page}, which does not exist"
        if anchor:
            html = (site / page.removesuffix(".md").removesuffix("index") / "index.html").read_text()
            assert f'id="{anchor}"' in html, f"{path} cites docs/{page}#{anchor}, which has no such section"


@pytest.mark.parametrize("command, page", [
    ("mlip-train", "docs/training-config.md"), ("mlip-compile", "docs/compiling.md"),
    ("mlip-info", "docs/compiling.md#the-artifact-contract"), ("mlip-eval", "docs/training.md#evaluating-mlip-eval"),
    ("mlip-import", "docs/importing.md"),
])
def test_help_points_to_the_docs(command, page):
    run = subprocess.run([str(Path(sys.executable).parent / command), "--help"], capture_output=True, text=True)
    assert run.returncode == 0 and page in "".join(run.stdout.split()), run.stdout  # argparse wraps at hyphens


def test_a_config_error_points_to_the_reference(tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text("data: {train: missing.xyz}\nmodel: {name: nequip}\noptimizer: {lr: -1}\n")
    run = subprocess.run([str(Path(sys.executable).parent / "mlip-train"), str(config)], capture_output=True, text=True)
    assert run.returncode == 1
    assert "optimizer.lr" in run.stderr and "docs/training-config.md" in run.stderr
