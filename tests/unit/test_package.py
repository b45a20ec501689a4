"""The image's install steps, in a clean virtualenv: build the wheel, install it, run it.

This is what the Dockerfile's two stages do; it proves the wheel carries ``schemas/`` and
works outside the source tree.
"""

from __future__ import annotations

import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run(*args: str | Path, cwd: Path | None = None) -> str:
    done = subprocess.run(
        [str(a) for a in args], capture_output=True, text=True, check=False, cwd=cwd, timeout=600
    )
    assert done.returncode == 0, f"{args}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def test_wheel_installs_in_a_clean_virtualenv_and_runs(tmp_path: Path) -> None:
    wheels = tmp_path / "wheels"
    run(sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", wheels, ROOT)
    [wheel] = wheels.glob("asset_sync-*.whl")
    env = tmp_path / "env"
    venv.create(env, with_pip=True)
    run(env / "bin" / "pip", "install", "-q", wheel)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    assert run(env / "bin" / "asset-sync", "--version", cwd=outside).startswith("asset-sync ")
    out = run(
        env / "bin" / "asset-sync", "validate", ROOT / "examples" / "events.jsonl", cwd=outside
    )
    assert "5 event(s) checked, 0 invalid" in out
    # the packaged schemas are the ones in schemas/, byte for byte
    packaged = run(
        env / "bin" / "python",
        "-c",
        "import consumer.schemas as s; print(s.schemas_dir())",
        cwd=outside,
    ).strip()
    assert "site-packages" in packaged
    for schema in (ROOT / "schemas").glob("*.json"):
        assert (Path(packaged) / schema.name).read_bytes() == schema.read_bytes()
