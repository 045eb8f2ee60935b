"""mongoledger's benchmark (run it with ``scripts/bench``; see ``benchmarks.bench``)."""
