"""Smoke test of the benchmark: ``--quick`` runs and writes valid JSON (no timing asserted)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def run_quick(tmp_path: Path, *options: str, timeout: int) -> tuple[str, dict[str, Any]]:
    """``scripts/bench --quick`` with ``options``: its output, and the JSON it wrote."""
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.bench", "--quick", *options, "--json", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout, json.loads(out.read_text())


def test_quick_run_writes_json(tmp_path: Path) -> None:
    stdout, results = run_quick(tmp_path, timeout=120)
    assert "### Commands per operation" in stdout
    assert results["meta"]["quick"] is True
    commands = {row["operation"]: row for row in results["commands"]}
    assert set(commands) >= {"increase", "transfer", "post (5 legs)", "revert (transfer)"}
    assert commands["transfer"]["commands"] == {
        "commitTransaction": 1,
        "findAndModify": 2,
        "insert": 1,
    }
    assert commands["hold"]["commands"] == {
        "commitTransaction": 1,
        "findAndModify": 1,
        "insert": 1,
    }
    assert commands["capture"]["total"] <= 5
    assert commands["void"]["total"] <= 3
    assert all(commands[op]["meets_floor"] for op in ("hold", "capture", "void"))
    modes = {(row["operation"], row["mode"]) for row in results["throughput"]}
    assert len(modes) == 6 * 4
    assert {"hold", "capture"} <= {operation for operation, _ in modes}
    assert all(
        row["ledger_ops_s"] > 0 and row["baseline_ops_s"] > 0 for row in results["throughput"]
    )
    hot = {row["mode"]: row for row in results["contention"]}
    assert set(hot) == {"8 threads", "64 tasks"}
    assert all(row["ops_s"] > 0 and row["p99_ms"] >= row["p50_ms"] > 0 for row in hot.values())
    assert hot["64 tasks"]["conflicts"] > 0  # the tasks' transactions really overlapped
    assert "### Contention: transfers among 3 hot accounts" in stdout
    web = {row["operation"]: row for row in results["web"]}
    assert set(web) == {"balance read", "increase"}
    assert all(row["app_ops_s"] > 0 and row["library_ops_s"] > 0 for row in web.values())
    assert "### The web app" in stdout
    growth = results["growth"]
    assert len(growth["sizes"]) >= 2
    for query in ("history page", "balance_at", "report page", "verify"):
        assert len(growth["queries"][query]["seconds"]) == len(growth["sizes"])
    store = results["store"]
    assert [row["mode"] for row in store["throughput"]] == [
        "sync",
        "async x1",
        "async x16",
        "async x64",
    ]
    assert all(row["store_ops_s"] > 0 and row["fsyncs_per_op"] > 0 for row in store["throughput"])
    assert store["fsync"]["median_us"] > 0
    assert store["open"]["transactions"] == 10_000
    assert "### The embedded store" in stdout


def test_quick_run_over_the_wire_counts_commands_with_the_driver(tmp_path: Path) -> None:
    """``--wire`` (as ``--uri`` would): real PyMongo clients, sync and async, through a
    serve-db subprocess; commands counted by command monitoring, conflicts of the contention
    rows counted from the driver's replies."""
    _, results = run_quick(tmp_path, "--wire", "--only", "transfer", timeout=300)
    assert "wire endpoint" in results["meta"]["target"]
    commands = {row["operation"]: row for row in results["commands"]}
    assert commands["transfer"]["commands"] == {
        "commitTransaction": 1,
        "findAndModify": 2,
        "insert": 1,
    }
    modes = [row["mode"] for row in results["throughput"]]
    assert modes == ["sync", "async x1", "async x16", "async x64"]
    hot = {row["mode"]: row for row in results["contention"]}
    assert set(hot) == {"8 threads", "64 tasks"}
    assert all(row["ops_s"] > 0 for row in hot.values())
    assert hot["64 tasks"]["conflicts"] > 0  # counted by the listener of the task's own client


def test_captured_commands_are_explained_as_sent() -> None:
    """The ``--uri`` path (no server here): a find the ledger sent is captured by command
    monitoring and explained without its session and transaction fields."""
    from bson import SON
    from pymongo import monitoring

    from benchmarks import bench

    listener = bench._Listener()
    listener.captured = []
    command = SON(
        [
            ("find", "transactions"),
            ("filter", {"account_id": 1}),
            ("sort", {"account_seq": -1}),
            ("limit", 50),
            ("lsid", {"id": "x"}),
            ("$db", "ledger"),
            ("$readPreference", {"mode": "primary"}),
        ]
    )
    for cmd in (command, SON([("insert", "t")])):
        listener.started(
            monitoring.CommandStartedEvent(cmd, "ledger", 1, ("localhost", 27017), 7, None)
        )
    assert [(db, c["find"]) for db, c in listener.captured] == [("ledger", "transactions")]
    assert listener.counts == {"find": 1, "insert": 1}

    class FakeDb:
        sent: Any = None

        def command(self, cmd: Any) -> dict:
            self.sent = cmd
            return {"queryPlanner": {"winningPlan": {"stage": "LIMIT", "inputStage": {}}}}

    db = FakeDb()
    bench.explain_command(db, listener.captured[0][1])
    assert list(db.sent) == ["explain", "verbosity"]
    assert db.sent["explain"] == {
        "find": "transactions",
        "filter": {"account_id": 1},
        "sort": {"account_seq": -1},
        "limit": 50,
    }
    assert next(iter(db.sent["explain"])) == "find"  # the command name leads, as a server needs


def test_plan_summary_reads_classic_sbe_express_and_sharded_plans() -> None:
    from benchmarks import bench

    classic = {
        "queryPlanner": {
            "winningPlan": {
                "stage": "LIMIT",
                "inputStage": {
                    "stage": "FETCH",
                    "inputStage": {"stage": "IXSCAN", "indexName": "ledger_account_seq"},
                },
            }
        }
    }
    assert bench.plan_summary(classic) == {
        "stages": ["LIMIT", "FETCH", "IXSCAN"],
        "indexes": ["ledger_account_seq"],
        "access": "IXSCAN",
    }
    sbe = {
        "queryPlanner": {
            "winningPlan": {
                "queryPlan": {"stage": "GROUP", "inputStage": {"stage": "COLLSCAN"}},
                "slotBasedPlan": {"stages": "[1] group ..."},
            }
        }
    }
    assert bench.plan_summary(sbe)["access"] == "COLLSCAN"
    express = {"queryPlanner": {"winningPlan": {"stage": "EXPRESS_IXSCAN", "indexName": "_id_"}}}
    assert bench.plan_summary(express)["access"] == "IXSCAN"
    aggregate = {
        "stages": [
            {
                "$cursor": {
                    "queryPlanner": {
                        "winningPlan": {"stage": "IXSCAN", "indexName": "ledger_account_date"}
                    }
                }
            },
            {"$group": {}},
        ]
    }
    assert bench.plan_summary(aggregate)["indexes"] == ["ledger_account_date"]
    sharded = {
        "queryPlanner": {
            "winningPlan": {
                "stage": "SINGLE_SHARD",
                "shards": [{"winningPlan": {"stage": "FETCH", "inputStage": {"stage": "IXSCAN"}}}],
            }
        }
    }
    assert bench.plan_summary(sharded)["stages"] == ["SINGLE_SHARD", "FETCH", "IXSCAN"]


def test_explain_reads_run_on_loaded_data() -> None:
    """Every read ``explain_plans`` makes runs against the benchmark's data (on the memory
    engine nothing is captured: it has no command monitoring, so no plan is asked for)."""
    from benchmarks import bench
    from mongoledger import Ledger

    target = bench.memory_target()
    target.listener = bench._Listener()
    db, _ = target.database("explain")
    ledger = Ledger(db)
    accounts, last = bench.load(ledger, 1_000)
    assert bench.explain_plans(target, ledger, accounts[0]["_id"], last) == {}
    assert ledger.verify().ok
    # The loaded transfers have the ledger's shape, counterpart link included.
    transfers = ledger.transactions.count_documents({"kind": "transfer"})
    assert transfers > 0
    assert ledger.transactions.count_documents({"extra_account_id": {"$exists": True}}) == transfers


def test_timed_blocks_pause_the_cyclic_collector_unless_asked() -> None:
    import gc

    from benchmarks import bench

    assert gc.isenabled()
    try:
        with bench.timed_block(collector=False):
            assert not gc.isenabled()
        assert gc.isenabled()
        with bench.timed_block(collector=True):
            assert gc.isenabled()
        assert bench.settings(False, False, collector=True).collector
        assert not bench.settings(True, False).collector
    finally:
        gc.unfreeze()
        gc.enable()


def test_sides_take_turns_going_first() -> None:
    from benchmarks import bench

    sides = ["ledger", "baseline"]
    orders = [bench.alternate(sides, n) for n in range(bench.settings(False, False).rounds)]
    assert [order[0] for order in orders].count("ledger") == len(orders) // 2
    assert all(sorted(order) == sorted(sides) for order in orders)


def test_three_sides_rotate_so_each_goes_first_equally() -> None:
    from benchmarks import bench

    sides = ["app", "floor", "library"]
    orders = [bench.alternate(sides, n) for n in range(6)]
    assert all(sorted(order) == sorted(sides) for order in orders)
    assert sorted(order[0] for order in orders) == sorted(sides * 2)


def test_only_web_measures_the_web_rows_alone() -> None:
    from benchmarks import bench

    cfg = bench.settings(False, False, only=["web"])
    assert cfg.web
    assert cfg.writes == ()
    assert cfg.sizes == []
    assert not bench.settings(False, False, only=["increase"]).web
    assert bench.settings(False, False).web


def test_a_cell_reports_best_rates_and_the_median_of_back_to_back_ratios() -> None:
    from benchmarks import bench

    # One lucky baseline round (160/s) would make the ratio of best rounds 1.6.
    cell = bench.row("revert", "sync", {"ledger": [100, 90, 100], "baseline": [125, 160, 120]})
    assert (cell["ledger_ops_s"], cell["baseline_ops_s"]) == (100, 160)
    assert cell["round_ratios"] == [1.25, 1.778, 1.2]
    assert cell["ratio"] == 1.25
