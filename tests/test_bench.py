"""Smoke test of the benchmark: ``--quick`` runs and writes valid JSON (no timing asserted)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_quick_run_writes_json(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.bench", "--quick", "--json", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "### Commands per operation" in proc.stdout
    results = json.loads(out.read_text())
    assert results["meta"]["quick"] is True
    commands = {row["operation"]: row for row in results["commands"]}
    assert set(commands) >= {"increase", "transfer", "post (5 legs)", "revert (transfer)"}
    assert commands["transfer"]["commands"] == {
        "commitTransaction": 1,
        "findAndModify": 2,
        "insert": 1,
    }
    modes = {(row["operation"], row["mode"]) for row in results["throughput"]}
    assert len(modes) == 4 * 4
    assert all(
        row["ledger_ops_s"] > 0 and row["baseline_ops_s"] > 0 for row in results["throughput"]
    )
    growth = results["growth"]
    assert len(growth["sizes"]) >= 2
    for query in ("history page", "balance_at", "report page", "verify"):
        assert len(growth["queries"][query]["seconds"]) == len(growth["sizes"])
