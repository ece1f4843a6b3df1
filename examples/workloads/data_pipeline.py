"""A batch data pipeline: CSV text -> parsed rows -> cleaned records -> group-by aggregates -> JSON."""
import csv
import io
import json
import random
import time
from collections import defaultdict

REGIONS = ("north", "south", "east", "west", "central")
PRODUCTS = tuple(f"sku-{i:04d}" for i in range(200))


def make_batch(rng, rows=2000):
    """A CSV document of sales rows, as an upstream system would deliver it."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["date", "region", "product", "quantity", "unit_price", "customer"])
    for _ in range(rows):
        writer.writerow([f"2024-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}", rng.choice(REGIONS),
                         rng.choice(PRODUCTS), rng.randint(1, 20), f"{rng.uniform(1, 500):.2f}",
                         f"cust-{rng.randint(1, 5000)}"])
    return out.getvalue()


def process(text):
    """Parses, cleans and aggregates one batch; returns the JSON report."""
    rows = list(csv.DictReader(io.StringIO(text)))
    cleaned = []
    for row in rows:
        quantity = int(row["quantity"])
        price = float(row["unit_price"])
        cleaned.append({"month": row["date"][:7], "region": row["region"].upper(), "product": row["product"],
                        "revenue": quantity * price, "customer": row["customer"]})
    by_key = defaultdict(lambda: {"revenue": 0.0, "orders": 0, "customers": set()})
    for rec in cleaned:
        agg = by_key[(rec["month"], rec["region"])]
        agg["revenue"] += rec["revenue"]
        agg["orders"] += 1
        agg["customers"].add(rec["customer"])
    report = [{"month": m, "region": r, "revenue": round(a["revenue"], 2), "orders": a["orders"],
               "customers": len(a["customers"])} for (m, r), a in sorted(by_key.items())]
    return json.dumps(report)


def run(duration_s=1.0, seed=1):
    """Generates and processes batches until ``duration_s`` has passed."""
    rng = random.Random(seed)
    deadline = time.monotonic() + duration_s
    batches = out_bytes = 0
    while time.monotonic() < deadline:
        out_bytes += len(process(make_batch(rng)))
        batches += 1
    return {"batches": batches, "report_bytes": out_bytes}


if __name__ == "__main__":
    print(run(2.0))
