"""Pricing a job's GPU seconds (`extension.cost`) and the session's running total."""

from __future__ import annotations

import pytest

from comfy_remote_exec.extension.cost import (
    LIST_PRICES,
    LIST_PRICES_AS_OF,
    CostLedger,
    JobCost,
    Price,
    price_for,
)
from comfy_remote_exec.protocol import JobTiming


def test_a_flat_price_wins_then_own_table_then_list_prices() -> None:
    prices = {
        "http": {"gpu_per_second": 0.0002, "gpu": "mine"},
        "modal": {"gpu": "H100", "gpu_types": {"H100": 0.001}},
        "runpod": {"gpu": "4090 PRO"},
        "local": {"gpu": "no such GPU"},
    }
    assert price_for("http", prices) == Price(0.0002, "mine", "config")
    assert price_for("modal", prices) == Price(0.001, "H100", "config")
    listed = price_for("runpod", prices)
    assert listed == Price(LIST_PRICES["runpod"]["4090 PRO"], "4090 PRO",
                           f"list prices as of {LIST_PRICES_AS_OF['runpod']}")
    assert price_for("local", prices) is None
    assert price_for("runpod", None) is None and price_for("runpod", {"runpod": 3}) is None
    assert price_for("http", {"http": {"gpu_per_second": -1}}) is None
    assert price_for("http", {"http": {"gpu_per_second": True}}) is None


def test_list_prices_name_their_date() -> None:
    assert set(LIST_PRICES) == set(LIST_PRICES_AS_OF)
    for table in LIST_PRICES.values():
        assert all(0 < price < 0.01 for price in table.values())


def test_job_cost_and_the_session_total() -> None:
    timing = JobTiming(queue_wait_s=1.0, cold_start_s=9.0, execution_s=10.0)
    priced = JobCost(timing, Price(0.0005, "A100"))
    assert priced.gpu_seconds == 20.0 and priced.cost == pytest.approx(0.01)
    view = priced.to_dict()
    assert view["cost"] == 0.01 and view["currency"] == "USD" and view["gpu"] == "A100"
    assert view["timing"] == timing.to_dict()
    unpriced = JobCost(JobTiming(execution_s=4.0), None)
    assert unpriced.cost is None and unpriced.to_dict()["cost"] is None
    ledger = CostLedger()
    ledger.add("runpod", priced)
    ledger.add("local", unpriced)
    ledger.add("runpod", priced)
    total = ledger.view()
    assert (total["jobs"], total["gpu_seconds"], total["cost"], total["unpriced"]) == (
        3, 44.0, 0.02, 1)
    assert total["by_backend"]["runpod"] == {"jobs": 2, "gpu_seconds": 40.0, "cost": 0.02}
    assert total["by_backend"]["local"]["cost"] == 0.0
