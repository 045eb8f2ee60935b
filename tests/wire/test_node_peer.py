"""The Node tier: medici (Node + Mongoose) and mongoledger through one ``serve-db``, as
``scripts/bench --peer medici`` runs them (a smoke run: correctness, not speed)."""

from __future__ import annotations

from tests.wire._node import NODE_TIER, ensure_node_tools

pytestmark = NODE_TIER


def test_medici_and_mongoledger_through_one_server() -> None:
    from benchmarks import wire

    ensure_node_tools()
    messages: list[str] = []
    result = wire.medici(20, 4, messages.append)
    assert "skipped" not in result, messages
    assert "error" not in result, result.get("error")
    medici, ours = result["medici"], result["mongoledger"]
    assert medici["failed"] == 0
    assert medici["balance_sum"] == 0
    assert medici["journal_entries"] == medici["expected_entries"]
    assert medici["commands_per_transfer"] > 0
    assert ours["failed"] == 0
    assert ours["balance_sum"] == 0
    assert ours["verify_ok"] is True
    assert ours["commands_per_transfer"] == 4  # two findAndModify, one insert, the commit
