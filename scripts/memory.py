#!/usr/bin/env python3
"""Resident memory of the embedded shop under a burst of sign-ups and logins.

Starts `openrun serve` (release build) on a fresh SQLite database in a temporary directory,
signs up N members with C requests in flight, logs each in L / N times with C in flight, then
waits for the process to settle. Prints the resident memory (RSS) at start, the peak (VmHWM)
and the settled figure, in MB, as one line of JSON at the end.

    cargo build --release && python3 scripts/memory.py [--signups 1000] [--logins 5000]
        [--concurrency 400] [--binary PATH]

Only loopback traffic; the server and its files are removed afterwards.
"""

import argparse
import concurrent.futures
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

PASSWORD = "correct horse battery"


def status_kib(pid, field):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/{pid}/status")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def post(base, path, body):
    request = urllib.request.Request(
        base + path,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=600) as response:
            return response.status
    except urllib.error.HTTPError as e:
        return e.code


def sign_up_body(n):
    return {
        "login_id": f"member{n}",
        "password": PASSWORD,
        "name": f"Member {n}",
        "phone": f"010-{5000 + n // 10000:04d}-{n % 10000:04d}",
        "email": f"member{n}@example.com",
        "address": {"line1": f"Teheran-ro {n}", "line2": "", "postal_code": "06236"},
    }


def burst(label, jobs, concurrency):
    started = time.monotonic()
    statuses = {}
    with concurrent.futures.ThreadPoolExecutor(max_workers=concurrency) as pool:
        for status in pool.map(lambda job: job(), jobs):
            statuses[status] = statuses.get(status, 0) + 1
    elapsed = time.monotonic() - started
    print(f"{label}: {len(jobs)} in {elapsed:.1f} s, statuses {statuses}", file=sys.stderr)
    return statuses


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--signups", type=int, default=1000)
    parser.add_argument("--logins", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=400)
    parser.add_argument("--settle", type=float, default=20.0, help="seconds idle before the settled reading")
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(os.path.dirname(__file__), "..", "target"))
    parser.add_argument("--binary", default=os.path.join(target, "release", "openrun"))
    args = parser.parse_args()

    data = tempfile.mkdtemp(prefix="openrun_memory_")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = dict(
        os.environ,
        LISTEN_ADDR=f"127.0.0.1:{port}",
        DATABASE_URL=f"sqlite://{data}/openrun.db",
        OPENRUN_KEYS_FILE=f"{data}/keys.toml",
        MAIL_OUTBOX_DIR=f"{data}/outbox",
        SIGNUPS_PER_ADDRESS_PER_HOUR="1000000",
        LOGIN_PER_ADDRESS_PER_MINUTE="1000000",
        LOGIN_PER_ACCOUNT_PER_MINUTE="1000",
        HTTP_REQUEST_TIMEOUT_SECS="600",
        RUST_LOG="warn",
    )
    server = subprocess.Popen([args.binary, "serve"], env=env, stdout=subprocess.DEVNULL)
    try:
        for _ in range(600):
            try:
                urllib.request.urlopen(base + "/healthz", timeout=1).read()
                break
            except OSError:
                time.sleep(0.05)
        start_kib = status_kib(server.pid, "VmRSS")
        signups = burst(
            "sign-ups",
            [lambda n=n: post(base, "/v1/members", sign_up_body(n)) for n in range(args.signups)],
            args.concurrency,
        )
        logins = burst(
            "logins",
            [
                lambda n=n: post(
                    base,
                    "/v1/auth/login",
                    {"login_id": f"member{n % args.signups}", "password": PASSWORD},
                )
                for n in range(args.logins)
            ],
            args.concurrency,
        )
        peak_kib = status_kib(server.pid, "VmHWM")
        time.sleep(args.settle)
        settled_kib = status_kib(server.pid, "VmRSS")
        report = {
            "signups": args.signups,
            "logins": args.logins,
            "concurrency": args.concurrency,
            "signup_statuses": signups,
            "login_statuses": logins,
            "start_mb": round(start_kib / 1024, 1),
            "peak_mb": round(peak_kib / 1024, 1),
            "settled_mb": round(settled_kib / 1024, 1),
        }
        print(json.dumps(report))
    finally:
        server.terminate()
        server.wait(timeout=30)
        shutil.rmtree(data, ignore_errors=True)


if __name__ == "__main__":
    main()
