"""The OpenSpec specs and the implement-data-sync change pass the OpenSpec validator, strictly."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
OPENSPEC = REPO_ROOT / "node_modules" / ".bin" / "openspec"


def run_openspec(*args: str) -> subprocess.CompletedProcess[str]:
    """Run the pinned OpenSpec command line at the repo root, with telemetry off."""
    if not OPENSPEC.exists():
        pytest.fail(
            f"`{OPENSPEC}` is missing; run `npm ci` in {REPO_ROOT} to install the pinned "
            "@fission-ai/openspec"
        )

    env = {
        **os.environ,
        "OPENSPEC_TELEMETRY": "0",
        "OPENSPEC_NO_UPDATE_CHECK": "1",
        "NO_COLOR": "1",
    }
    return subprocess.run(
        [str(OPENSPEC), *args],
        cwd=REPO_ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def assert_passed(result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode == 0, (
        f"`{' '.join(result.args[1:])}` exited with {result.returncode}\n"
        f"--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}"
    )


def test_the_implement_data_sync_change_passes_strict_validation() -> None:
    assert_passed(run_openspec("validate", "implement-data-sync", "--strict", "--no-interactive"))


def test_every_spec_passes_strict_validation() -> None:
    assert_passed(run_openspec("validate", "--specs", "--strict", "--no-interactive"))
