"""hack/controlplane.py's hints name the cluster they belong to (its --state-dir), checked without starting one."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def controlplane() -> ModuleType:
    sys.path.insert(0, str(REPO / "hack"))
    spec = importlib.util.spec_from_file_location("controlplane", REPO / "hack" / "controlplane.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("controlplane", module)
    spec.loader.exec_module(module)
    return module


def test_hints_of_a_cluster_in_another_state_dir_carry_it(
    controlplane: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DATASWEEP_CLUSTER_DIR", str(tmp_path / "default"))
    other = tmp_path / "my cluster"
    state = {"kubeconfig": str(other / "kubeconfig"), "workdir": str(other / "run")}
    hints = controlplane.up_hints(state, other)
    for verb in ("env", "status", "down"):
        assert f"python hack/controlplane.py {verb} --state-dir '{other}'" in hints, hints
    assert "make cluster-down" not in hints
    assert f"export KUBECONFIG={other / 'kubeconfig'}" in hints


def test_hints_of_the_default_cluster_use_the_short_commands(
    controlplane: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    default = tmp_path / "default"
    monkeypatch.setenv("DATASWEEP_CLUSTER_DIR", str(default))
    state = {"kubeconfig": str(default / "kubeconfig"), "workdir": str(default / "run")}
    hints = controlplane.up_hints(state, default)
    assert "stop: make cluster-down" in hints
    assert "eval $(python hack/controlplane.py env)" in hints
    assert "--state-dir" not in hints
    assert controlplane.command_for("up", default) == "make cluster-up"


def test_the_hack_scripts_import_no_circle() -> None:
    """controlplane imports realnode; neither realnode nor images imports controlplane back."""
    for script in ("realnode.py", "images.py"):
        text = (REPO / "hack" / script).read_text()
        assert "from controlplane import" not in text, script
        assert "import controlplane" not in text, script
