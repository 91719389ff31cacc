"""The container's recipe: hadolint passes, and its install (wheels into a clean environment) runs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from provider_gateway import __version__

ROOT = Path(__file__).parent.parent
BIN = Path(sys.executable).parent


def test_hadolint_passes_on_the_dockerfile() -> None:
    done = subprocess.run(
        [str(BIN / "hadolint"), "Dockerfile"], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_dockerfiles_install_runs_from_a_clean_virtualenv(tmp_path: Path) -> None:
    wheels = tmp_path / "wheels"
    # As the Dockerfile's build stage: the package and its dependencies as wheels...
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--wheel-dir", str(wheels), str(ROOT)],
        check=True,
        timeout=600,
    )
    # ...installed in the runtime stage from those wheels alone, into an environment with nothing else.
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    (package,) = wheels.glob("provider_gateway-*.whl")
    subprocess.run(
        [str(venv / "bin" / "pip"), "install", "--quiet", "--no-index", "--find-links", str(wheels), str(package)],
        check=True,
        timeout=600,
    )
    helped = subprocess.run(
        [str(venv / "bin" / "provider-gateway"), "--help"], capture_output=True, text=True, timeout=60, check=False
    )
    version = subprocess.run(
        [str(venv / "bin" / "provider-gateway"), "--version"], capture_output=True, text=True, timeout=60, check=False
    )
    assert helped.returncode == 0, helped.stderr
    for command in ("run", "validate", "download", "status", "demo"):
        assert f"  {command} " in helped.stdout
    assert version.stdout.strip() == f"provider-gateway, version {__version__}"
    no_tests_inside = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import moto"], capture_output=True, timeout=60, check=False
    )
    assert no_tests_inside.returncode != 0, "the runtime install must not pull in the local/test extras"
