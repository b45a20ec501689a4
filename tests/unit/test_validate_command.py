"""``asset-sync validate``: output with file, line and pointer; exit 0/1/2; no traceback."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from consumer.cli import main
from tests.samples import EXAMPLES, event_for


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "consumer", *args], capture_output=True, text=True, check=False
    )


def test_seed_examples_pass(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", str(EXAMPLES)]) == 0
    assert "5 event(s) checked, 0 invalid" in capsys.readouterr().out


def test_invalid_line_is_reported_with_file_line_and_pointer(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = event_for("trelica", changes={"platform": "BeOS"})
    path = tmp_path / "events.jsonl"
    path.write_text(json.dumps(event_for("webflow")) + "\n\n" + json.dumps(bad) + "\n")
    assert main(["validate", str(path)]) == 1
    out = capsys.readouterr().out
    assert f"{path}:3: /data/changes/platform: 'BeOS' is not one of" in out
    assert "2 event(s) checked, 1 invalid" in out


def test_pretty_printed_single_event(tmp_path: Path) -> None:
    path = tmp_path / "event.json"
    path.write_text(json.dumps(event_for("enos"), indent=2))
    assert main(["validate", str(path)]) == 0


def test_unreadable_file_exits_2_without_traceback() -> None:
    done = run("validate", "/nonexistent/events.jsonl")
    assert done.returncode == 2
    assert "cannot read" in done.stdout
    assert "Traceback" not in done.stdout + done.stderr


def test_usage_error_exits_2() -> None:
    done = run("validate")
    assert done.returncode == 2
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("content", [b"\xff\xfe\x00garbage", b"[" * 50_000, b"{}\n[]\n1\n"])
def test_any_content_is_reported_not_raised(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "junk"
    path.write_bytes(content)
    done = run("validate", str(path))
    assert done.returncode == 1
    assert "Traceback" not in done.stdout + done.stderr
