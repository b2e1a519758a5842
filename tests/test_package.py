"""The package namespace: every public name resolves lazily to the right object."""

from __future__ import annotations

import subprocess
import sys
import types

import rnnkit


def test_every_public_name_resolves_and_is_in_the_lazy_table() -> None:
    assert set(rnnkit.__all__) - {"__version__"} == set(rnnkit._EXPORTS)
    for name in rnnkit.__all__:
        assert getattr(rnnkit, name) is not None


def test_functions_named_like_their_submodule_stay_functions() -> None:
    """``rnnkit.fit`` stays the function after its module is imported by name (``rnnkit.threads`` too)."""
    code = (
        "import rnnkit, types\n"
        "from rnnkit.fit import History\n"          # loads the submodule rnnkit.fit first
        "from rnnkit.parallel import available_cores\n"
        "assert callable(rnnkit.fit) and not isinstance(rnnkit.fit, types.ModuleType), rnnkit.fit\n"
        "assert callable(rnnkit.threads) and not isinstance(rnnkit.threads, types.ModuleType)\n"
        "assert rnnkit.fit.__module__ == 'rnnkit.fit' and rnnkit.threads.__module__ == 'rnnkit.parallel'\n"
        "assert isinstance(rnnkit.data, types.ModuleType) and isinstance(rnnkit.optim, types.ModuleType)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert isinstance(sys.modules["rnnkit.fit"], types.ModuleType)
    assert rnnkit.fit is sys.modules["rnnkit.fit"].fit
    assert rnnkit.threads is sys.modules["rnnkit.parallel"].threads


def test_importing_the_package_does_not_load_numpy() -> None:
    result = subprocess.run([sys.executable, "-c", "import sys, rnnkit; print('numpy' in sys.modules)"],
                            capture_output=True, text=True, timeout=120)
    assert result.stdout.strip() == "False", result.stderr
