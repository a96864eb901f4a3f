"""Load test of the search API (by hand; localhost only; bounded in time and count).

    make run   # or gunicorn on a data directory with ~10k indexed patents
    .venv/bin/python bench/load.py --url http://127.0.0.1:8000 --clients 1,8,32 --seconds 60

N concurrent clients search for --seconds each (at most --max-requests); prints throughput,
p50/p95/p99 latency and the error count per N. Refuses any host but localhost.
"""

import argparse
import sys
import urllib.parse
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.search import bench_api  # noqa: E402


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--clients", default="1,8,32")
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--max-requests", type=int, default=200_000)
    args = parser.parse_args()
    host = urllib.parse.urlparse(args.url).hostname
    if host not in ("127.0.0.1", "localhost", "::1"):
        parser.error("load tests run against this machine only (127.0.0.1 / localhost)")
    bench_api(args)


if __name__ == "__main__":
    main()
