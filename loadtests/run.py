"""Run Locust headless against a local service and keep everything it measured.

    python loadtests/run.py --host http://127.0.0.1:8000 --users 32 --spawn-rate 8 \\
        --duration 60s --tags translate [-- <more locust options>]

(`make loadtest USERS=32 SPAWN_RATE=8 DURATION=60s TAGS=translate` runs this.) Each run gets a
folder `loadtests/results/<UTC timestamp>/` holding Locust's CSV files (`locust_stats.csv`,
`locust_failures.csv`, `locust_exceptions.csv`, `locust_stats_history.csv`, and the final
snapshot `locust_final_stats.csv` / `locust_final_failures.csv` that our locustfile writes
when the run ends), its HTML report (`report.html`), its log (`locust.log`) and `summary.json`:
requests/s, p50/p95/p99 and failures, in total and per endpoint, plus the command and the
machine's load.

Only loopback hosts are accepted: this tool exists to load the service on this machine, and a
typo must not turn it on someone else's. The exit status is Locust's (1 when any request
failed), after the summary is written.
"""

from __future__ import annotations

import argparse
import csv
import ipaddress
import json
import os
import platform
import re
import shlex
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

HERE = Path(__file__).resolve().parent
LOCUSTFILE = HERE / "locustfile.py"
RESULTS = HERE / "results"
CSV_PREFIX = "locust"


class NotLoopback(ValueError):
    """The target host is not this machine."""


def check_loopback(host: str) -> str:
    """Return `host` (an http(s) URL) if it names this machine by a loopback address or
    `localhost`; raise `NotLoopback` otherwise. Names other than `localhost` are not resolved:
    what a name points at can change between this check and the test."""
    parts = urlsplit(host)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise NotLoopback(
            f"host must be an http(s) URL such as http://127.0.0.1:8000, got {host!r}"
        )
    name = parts.hostname
    if name == "localhost":
        return host
    try:
        loopback = ipaddress.ip_address(name).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise NotLoopback(
            f"refusing to load-test {name!r}: only loopback hosts (127.0.0.1, ::1, localhost) "
            "are allowed; start the service locally (`make serve`) and point --host at it"
        )
    return host


# Locust records a failure marked by `response.failure(message)` as this exception's repr.
_CAUGHT = re.compile(r"""^CatchResponseError\((['"])(?P<message>.*)\1\)$""", re.DOTALL)


def failure_message(error: str) -> str:
    """`CatchResponseError('overloaded: 503 ...')` -> `overloaded: 503 ...`; others as they are."""
    match = _CAUGHT.match(error)
    return match.group("message") if match else error


def _number(value: str | None) -> float | None:
    if value is None or value.strip() in ("", "N/A"):
        return None
    return float(value)


def _row_summary(row: dict[str, str]) -> dict[str, Any]:
    requests = int(_number(row["Request Count"]) or 0)
    failures = int(_number(row["Failure Count"]) or 0)
    return {
        "requests": requests,
        "failures": failures,
        "failure_ratio": failures / requests if requests else 0.0,
        "requests_per_s": _number(row["Requests/s"]) or 0.0,
        "failures_per_s": _number(row["Failures/s"]) or 0.0,
        "p50_ms": _number(row["50%"]),
        "p95_ms": _number(row["95%"]),
        "p99_ms": _number(row["99%"]),
        "avg_ms": _number(row["Average Response Time"]),
        "min_ms": _number(row["Min Response Time"]),
        "max_ms": _number(row["Max Response Time"]),
    }


def summarize_stats(stats_csv: Path | str, failures_csv: Path | str | None = None) -> dict:
    """Locust's `<prefix>_stats.csv` (and `_failures.csv`) as {total, endpoints, failures}.

    Percentiles are Locust's (its response times are bucketed: exact below 100 ms, then to two
    significant digits); a percentile of an endpoint with no requests is null.
    """
    with open(stats_csv, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    total = next((row for row in rows if row["Name"] == "Aggregated"), None)
    if total is None:
        raise ValueError(f"{stats_csv}: no Aggregated row; is this a Locust stats CSV?")
    endpoints = [
        {"method": row["Type"], "name": row["Name"], **_row_summary(row)}
        for row in rows
        if row is not total
    ]
    failures = []
    if failures_csv is not None and Path(failures_csv).is_file():
        with open(failures_csv, newline="", encoding="utf-8") as handle:
            failures = [
                {
                    "method": row["Method"],
                    "name": row["Name"],
                    "error": failure_message(row["Error"]),
                    "occurrences": int(row["Occurrences"]),
                }
                for row in csv.DictReader(handle)
            ]
    failures.sort(key=lambda f: -f["occurrences"])
    return {"total": _row_summary(total), "endpoints": endpoints, "failures": failures}


def _load_average() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def _locust_version() -> str | None:
    try:
        from importlib.metadata import version

        return version("locust")
    except Exception:
        return None


def _split_tags(values: list[str] | None) -> list[str]:
    return [t for value in values or [] for t in value.replace(",", " ").split() if t]


def new_results_dir(root: Path) -> Path:
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    for suffix in ("", *(f"-{n}" for n in range(1, 100))):
        path = root / f"{stamp}{suffix}"
        try:
            path.mkdir(parents=True)
            return path
        except FileExistsError:
            continue
    raise RuntimeError(f"cannot make a fresh results folder under {root}")


def locust_command(
    *,
    host: str,
    users: int,
    spawn_rate: float,
    duration: str,
    tags: list[str],
    out: Path,
    locustfile: Path = LOCUSTFILE,
    extra: list[str] | None = None,
) -> list[str]:
    command = [
        sys.executable,
        "-m",
        "locust",
        "-f",
        str(locustfile),
        "--headless",
        "--host",
        host,
        "--users",
        str(users),
        "--spawn-rate",
        str(spawn_rate),
        "--run-time",
        duration,
        "--stop-timeout",
        "10",
        "--csv",
        str(out / CSV_PREFIX),
        "--html",
        str(out / "report.html"),
        "--logfile",
        str(out / "locust.log"),
        "--only-summary",
    ]
    if tags:
        command += ["--tags", *tags]
    return command + list(extra or [])


def print_summary(summary: dict, out: Path) -> None:
    total = summary["total"]

    def ms(value: float | None) -> str:
        return "-" if value is None else f"{value:.0f}"

    print(f"\nresults: {out}")
    print(f"{'endpoint':44} {'reqs':>7} {'fails':>6} {'req/s':>7} {'p50':>6} {'p95':>6} {'p99':>6}")
    for entry in [*summary["endpoints"], {"method": "", "name": "total", **total}]:
        label = f"{entry['method']} {entry['name']}".strip()[:44]
        print(
            f"{label:44} {entry['requests']:>7} {entry['failures']:>6} "
            f"{entry['requests_per_s']:>7.2f} {ms(entry['p50_ms']):>6} {ms(entry['p95_ms']):>6} "
            f"{ms(entry['p99_ms']):>6}"
        )
    for failure in summary["failures"][:10]:
        print(f"  failed {failure['occurrences']}x {failure['name']}: {failure['error']}")


def run(
    *,
    host: str,
    users: int,
    spawn_rate: float,
    duration: str,
    tags: list[str] | None = None,
    results_root: Path = RESULTS,
    locustfile: Path = LOCUSTFILE,
    extra: list[str] | None = None,
    timeout_s: float | None = None,
) -> tuple[int, Path]:
    """Run Locust once; write `summary.json` next to its reports. Returns (exit code, folder)."""
    check_loopback(host)
    tags = _split_tags(tags)
    out = new_results_dir(Path(results_root))
    command = locust_command(
        host=host,
        users=users,
        spawn_rate=spawn_rate,
        duration=duration,
        tags=tags,
        out=out,
        locustfile=locustfile,
        extra=extra,
    )
    started = datetime.now(timezone.utc)
    load_before = _load_average()
    completed = subprocess.run(command, check=False, timeout=timeout_s)
    finished = datetime.now(timezone.utc)
    meta = {
        "host": host,
        "users": users,
        "spawn_rate": spawn_rate,
        "duration": duration,
        "tags": tags,
        "started_at": started.isoformat(timespec="seconds"),
        "finished_at": finished.isoformat(timespec="seconds"),
        "locust_exit_code": completed.returncode,
        "command": shlex.join(command),
        "locust": _locust_version(),
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "load_average_before": load_before,
            "load_average_after": _load_average(),
        },
    }
    # The locustfile's final snapshot when there is one (see its `_write_final_stats`).
    final = out / f"{CSV_PREFIX}_final_stats.csv"
    stats = final if final.is_file() else out / f"{CSV_PREFIX}_stats.csv"
    failures = out / f"{CSV_PREFIX}_{'final_' if final.is_file() else ''}failures.csv"
    if not stats.is_file():
        (out / "summary.json").write_text(json.dumps({**meta, "error": "no stats"}, indent=2))
        print(f"locust wrote no statistics (exit {completed.returncode}); see {out}/locust.log")
        return completed.returncode or 1, out
    summary = {**meta, "stats_file": stats.name, **summarize_stats(stats, failures)}
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    print_summary(summary, out)
    return completed.returncode, out


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="Options after `--` go to Locust as they are: `-- --models transformer,rnnsearch`.",
    )
    parser.add_argument("--host", default="http://127.0.0.1:8000", help="loopback only")
    parser.add_argument("--users", "-u", type=int, default=32)
    parser.add_argument("--spawn-rate", "-r", type=float, default=8.0, help="users started per s")
    parser.add_argument("--duration", "-t", default="60s", help="Locust run time: 30s, 5m, 1h")
    parser.add_argument(
        "--tags", nargs="*", default=[], help="scenarios (space or comma separated); none: all"
    )
    parser.add_argument("--results", type=Path, default=RESULTS, help="parent of the run folder")
    parser.add_argument("--locustfile", type=Path, default=LOCUSTFILE)
    argv = list(sys.argv[1:] if argv is None else argv)
    extra: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, extra = argv[:cut], argv[cut + 1 :]
    args = parser.parse_args(argv)
    args.extra = extra
    if args.users < 1 or args.spawn_rate <= 0:
        parser.error("--users must be at least 1 and --spawn-rate positive")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        code, _ = run(
            host=args.host,
            users=args.users,
            spawn_rate=args.spawn_rate,
            duration=args.duration,
            tags=args.tags,
            results_root=args.results,
            locustfile=args.locustfile,
            extra=args.extra,
        )
    except NotLoopback as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return code


if __name__ == "__main__":
    sys.exit(main())
