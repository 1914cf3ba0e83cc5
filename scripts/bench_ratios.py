#!/usr/bin/env python3
"""Prints the event store benchmark as events/s (median) and the ratios the targets are set in.

Reads criterion's results of the last `cargo bench --bench event_store` from
$CARGO_TARGET_DIR/criterion (default ~/.cache/openrun-target/criterion, or ./target/criterion).
"""
import json
import os
import pathlib
import sys

target = pathlib.Path(os.environ.get("CARGO_TARGET_DIR", pathlib.Path.home() / ".cache/openrun-target"))
root = target / "criterion" / "append"
if not root.is_dir():
    root = pathlib.Path("target/criterion/append")
if not root.is_dir():
    sys.exit(f"no criterion results under {root}: run `cargo bench --bench event_store` first")

rates = {}
for bench in sorted(root.glob("*/*/new/benchmark.json")):
    meta = json.loads(bench.read_text())
    estimates = json.loads((bench.parent / "estimates.json").read_text())
    elements = meta["throughput"]["Elements"]
    median_ns = estimates["median"]["point_estimate"]
    name, param = bench.parent.parent.parent.name, bench.parent.parent.name
    rates[(name, param)] = elements / (median_ns / 1e9)

print(f"{'benchmark':<28}{'appenders':>10}{'events/s (median)':>20}")
for (name, param), rate in sorted(rates.items(), key=lambda kv: (kv[0][0], int(kv[0][1]))):
    print(f"{name:<28}{param:>10}{rate:>20,.0f}")

def ratio(a, b):
    return f"{rates[a] / rates[b]:.2f}" if a in rates and b in rates else "n/a"

raw = next((k for k in rates if k[0] == "mariadb-raw-insert-500"), None)
print()
print("at 1024 appenders:")
print(f"  MariaDB openrun / mysql-es        = {ratio(('mariadb-openrun', '1024'), ('mariadb-mysql-es', '1024'))}  (target >= 5)")
print(f"  MariaDB openrun / raw 500-row ceiling = {ratio(('mariadb-openrun', '1024'), raw) if raw else 'n/a'}  (target >= 0.33)")
print(f"  SQLite openrun events/s           = {rates.get(('sqlite-openrun', '1024'), float('nan')):,.0f}  (target >= 50,000)")
