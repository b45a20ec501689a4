"""``asset-sync dispatch`` end to end against the fakes, and that it never prints a secret."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

from tests.fakes import FakeVendors, Reply
from tests.samples import EXAMPLES, event_for


def write_config(tmp_path: Path, fakes: FakeVendors) -> tuple[Path, dict[str, str]]:
    """A config whose secrets come from the environment, as in production."""
    connections = fakes.connections()
    env: dict[str, str] = {}
    for vendor, named in connections.items():
        for key, value in list(named["default"].items()):
            if value in fakes.secrets.values():
                name = f"{vendor}_{key}".upper()
                env[name] = value
                named["default"][key] = "${" + name + "}"
    config = {
        "connections": connections,
        "retry": {"max_attempts": 2, "base_delay_s": 0.01, "max_delay_s": 0.02},
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path, env


def run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "consumer", *args],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, **env},
        timeout=60,
    )


def test_delivers_one_seed_event_per_vendor(tmp_path: Path, vendors: FakeVendors) -> None:
    config, env = write_config(tmp_path, vendors)
    done = run(["dispatch", "--config", str(config), str(EXAMPLES)], env)
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert [line["outcome"] for line in lines] == ["delivered"] * 5
    assert {line["vendor"] for line in lines} == set(vendors.fakes)
    assert all(len(f.updates()) >= 1 for f in vendors.fakes.values())
    assert vendors.violations() == []


def test_failures_exit_1_and_no_secret_is_printed(tmp_path: Path, vendors: FakeVendors) -> None:
    config, env = write_config(tmp_path, vendors)
    # Vendors that echo credentials back in their error bodies must not leak them either.
    vendors.webflow.always = Reply(
        400, body={"error": f"bad token {vendors.secrets['webflow_token']}"}
    )
    vendors.lexful.revoke_tokens()
    vendors.trelica.always = Reply(500)
    events = tmp_path / "events.jsonl"
    events.write_text("\n".join(json.dumps(event_for(v)) for v in vendors.fakes) + "\nnot json\n")
    done = run(["dispatch", "--config", str(config), str(events)], env)
    assert done.returncode == 1
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    reasons = {line["vendor"] or "?": line["reason"] for line in lines}
    assert reasons == {
        "lexful": "auth_failed",
        "webflow": "vendor_rejected",
        "autodesk": None,
        "trelica": "retries_exhausted",
        "enos": None,
        "?": "invalid_json",
    }
    output = done.stdout + done.stderr
    for secret in vendors.secrets.values():
        assert secret not in output
    assert "***" in output
    vendors.lexful.violations.clear()


def test_bad_config_is_one_line_naming_the_key(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("retry:\n  max_attempts: lots\n")
    done = run(["dispatch", "--config", str(path), str(EXAMPLES)], {})
    assert done.returncode == 2
    assert done.stderr.strip() == (
        "asset-sync dispatch: config key 'retry.max_attempts': must be int, got 'lots'"
    )
