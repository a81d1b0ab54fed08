"""`cxrkit bench --quick` runs end to end and reports every figure (no timing is asserted:
speed goals are checked by `make bench`, not by tests)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cxrkit.tools.bench import run_bench


@pytest.mark.slow
def test_quick_bench_reports_every_figure(tmp_path):
    table = run_bench(data=tmp_path / "data", out=tmp_path / "out", quick=True)
    names = " ".join(table["benchmark"])
    for what in ("feed", "speed-up", "train", "inference", "data-parallel", "refiner share"):
        assert what in names, what
    rates = table.loc[table["images/s"].notna(), "images/s"]
    assert (rates > 0).all() and np.isfinite(rates).all()
    share = table.loc[table["benchmark"].str.contains("refiner share"), "share_%"].iloc[0]
    assert 0 < share < 100
    goals = {g["goal"]: g for g in table.attrs["goals"]}
    assert len(goals) == 2 and all(isinstance(g["met"], bool) for g in goals.values())
    assert [g["measured"] for g in goals.values() if "refiner" in g["goal"]] == [share]
    assert table.loc[table["benchmark"].str.contains("bootstrap"), "seconds"].iloc[0] > 0
    assert {r["setting"].split(" ")[0] for r in json.loads((tmp_path / "out" / "bench.json").read_text())["results"]
            if "data-parallel" in r["benchmark"]} == {"1", "2"}
