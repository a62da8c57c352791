"""What a remote job cost: its GPU seconds times the backend's price per second.

The worker reports each job's GPU seconds (`protocol.timing`: queue wait,
cold start, execution); this module prices them. Prices come from the
extension's config file (`config.config_path()`), under `prices`, per
backend:

    prices:
      runpod: {gpu: "4090 PRO"}          # a GPU type of the list prices below
      modal: {gpu: H100, gpu_types: {H100: 0.0011}}   # or your own table
      http: {gpu_per_second: 0.00031}    # or one flat price per second

`gpu_per_second` wins over `gpu`; a GPU type is looked up in `gpu_types`
first, then in `LIST_PRICES`. A backend without a price still shows its GPU
seconds, with no cost. `CostLedger` keeps this ComfyUI session's running total.

`LIST_PRICES` are list prices (USD per GPU-second, on-demand "flex" workers
for RunPod), as published by the platforms on the date in
`LIST_PRICES_AS_OF`; they change, and accounts may pay other rates, so the
config file overrides them. They are not read from the platforms at runtime.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..protocol import JobTiming

CURRENCY = "USD"

LIST_PRICES_AS_OF = {
    # docs.runpod.io/serverless/pricing, "Flex cost per second" (the copy read 2026-11-23).
    "runpod": "2026-11-23",
    # modal.com/pricing's per-second GPU rates, as a dated price survey quoted them
    # (verified against modal.com on 2026-05-07); only the GPUs it confirmed are listed.
    "modal": "2026-05-07",
}
LIST_PRICES: dict[str, dict[str, float]] = {
    "runpod": {
        "A4000": 0.00016, "A4500": 0.00016, "RTX 4000": 0.00016,
        "4090 PRO": 0.00031,
        "L4": 0.00019, "A5000": 0.00019, "3090": 0.00019,
        "L40": 0.00053, "L40S": 0.00053, "6000 Ada PRO": 0.00053,
        "A6000": 0.00034, "A40": 0.00034,
        "H100 PRO": 0.00116,
        "A100": 0.00076,
        "H200 PRO": 0.00155,
        "B200": 0.00240,
    },
    "modal": {
        "H100": 0.001097,
        "A100-80GB": 0.000694,
        "L40S": 0.000542,
        "L4": 0.000222,
        "T4": 0.000164,
    },
}


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        return None
    return float(value)


@dataclass(frozen=True)
class Price:
    per_second: float
    gpu: str | None = None
    source: str = "config"  # "config", or "list prices as of <date>"


def price_for(backend: str, prices: object) -> Price | None:
    """The price per GPU-second of `backend` from the config file's `prices`, or None."""
    section = prices.get(backend) if isinstance(prices, Mapping) else None
    if not isinstance(section, Mapping):
        return None
    gpu = section.get("gpu")
    gpu = str(gpu) if gpu is not None else None
    flat = _number(section.get("gpu_per_second"))
    if flat is not None:
        return Price(flat, gpu, "config")
    if gpu is None:
        return None
    own = section.get("gpu_types")
    mine = _number(own.get(gpu)) if isinstance(own, Mapping) else None
    if mine is not None:
        return Price(mine, gpu, "config")
    listed = LIST_PRICES.get(backend, {}).get(gpu)
    if listed is None:
        return None
    return Price(listed, gpu, f"list prices as of {LIST_PRICES_AS_OF[backend]}")


@dataclass(frozen=True)
class JobCost:
    timing: JobTiming
    price: Price | None

    @property
    def gpu_seconds(self) -> float:
        return self.timing.gpu_seconds

    @property
    def cost(self) -> float | None:
        return None if self.price is None else self.gpu_seconds * self.price.per_second

    def to_dict(self) -> dict[str, Any]:
        price = self.price
        return {"gpu_seconds": round(self.gpu_seconds, 3),
                "cost": None if self.cost is None else round(self.cost, 6),
                "currency": CURRENCY,
                "price_per_second": price.per_second if price else None,
                "gpu": price.gpu if price else None,
                "price_source": price.source if price else None,
                "timing": self.timing.to_dict()}


@dataclass
class CostLedger:
    """This session's running total: jobs, GPU seconds and cost, overall and per backend.
    Jobs without a price add their GPU seconds and count as `unpriced`."""

    jobs: int = 0
    gpu_seconds: float = 0.0
    cost: float = 0.0
    unpriced: int = 0
    by_backend: dict[str, dict[str, float]] = field(default_factory=dict)

    def add(self, backend: str, job: JobCost) -> None:
        self.jobs += 1
        self.gpu_seconds += job.gpu_seconds
        mine = self.by_backend.setdefault(backend, {"jobs": 0, "gpu_seconds": 0.0,
                                                    "cost": 0.0})
        mine["jobs"] += 1
        mine["gpu_seconds"] += job.gpu_seconds
        if job.cost is None:
            self.unpriced += 1
        else:
            self.cost += job.cost
            mine["cost"] += job.cost

    def view(self) -> dict[str, Any]:
        return {"jobs": self.jobs, "gpu_seconds": round(self.gpu_seconds, 3),
                "cost": round(self.cost, 6), "currency": CURRENCY, "unpriced": self.unpriced,
                "by_backend": {name: {"jobs": int(v["jobs"]),
                                      "gpu_seconds": round(v["gpu_seconds"], 3),
                                      "cost": round(v["cost"], 6)}
                               for name, v in self.by_backend.items()}}
