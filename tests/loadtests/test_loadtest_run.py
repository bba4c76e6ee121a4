"""The load-test runner: loopback only, Locust's CSV to summary.json, a short real run."""

from __future__ import annotations

import json

import pytest
from loadtest_modules import load_module

run = load_module("run")

# What Locust 2.47 writes to <prefix>_stats.csv (two endpoints, one with failures).
STATS_CSV = """\
Type,Name,Request Count,Failure Count,Median Response Time,Average Response Time,\
Min Response Time,Max Response Time,Average Content Size,Requests/s,Failures/s,50%,66%,75%,\
80%,90%,95%,98%,99%,99.9%,99.99%,100%
POST,/v1/compare,12,12,3,3.5,2.1,9.8,88.0,2.4,2.4,3,4,4,4,5,9,10,10,10,10,10
POST,/v1/translate (1 text),200,0,120,131.2,40.5,612.0,410.3,40.1,0.0,120,140,150,160,210,\
300,420,510,610,610,610
GET,/v1/models,0,0,0,0.0,0,0,0,0.0,0.0,N/A,N/A,N/A,N/A,N/A,N/A,N/A,N/A,N/A,N/A,N/A
,Aggregated,212,12,110,124.0,2.1,612.0,392.0,42.5,2.4,110,130,150,150,200,290,410,500,610,\
610,610
"""

FAILURES_CSV = """\
Method,Name,Error,Occurrences
POST,/v1/compare,"CatchResponseError('overloaded: 503 overloaded, Retry-After 1 s')",12
POST,/v1/translate (1 text),"ConnectionError(MaxRetryError(""pool""))",1
"""


def test_summary_from_locust_csv(tmp_path):
    (tmp_path / "locust_stats.csv").write_text(STATS_CSV)
    (tmp_path / "locust_failures.csv").write_text(FAILURES_CSV)
    summary = run.summarize_stats(tmp_path / "locust_stats.csv", tmp_path / "locust_failures.csv")
    assert summary["total"] == {
        "requests": 212,
        "failures": 12,
        "failure_ratio": pytest.approx(12 / 212),
        "requests_per_s": 42.5,
        "failures_per_s": 2.4,
        "p50_ms": 110.0,
        "p95_ms": 290.0,
        "p99_ms": 500.0,
        "avg_ms": 124.0,
        "min_ms": 2.1,
        "max_ms": 612.0,
    }
    by_name = {e["name"]: e for e in summary["endpoints"]}
    assert list(by_name) == ["/v1/compare", "/v1/translate (1 text)", "/v1/models"]
    translate = by_name["/v1/translate (1 text)"]
    assert (translate["method"], translate["requests"], translate["failures"]) == ("POST", 200, 0)
    assert (translate["p50_ms"], translate["p95_ms"], translate["p99_ms"]) == (120, 300, 510)
    assert translate["requests_per_s"] == 40.1
    idle = by_name["/v1/models"]
    assert idle["requests"] == 0 and idle["p99_ms"] is None and idle["failure_ratio"] == 0
    assert summary["failures"] == [
        {
            "method": "POST",
            "name": "/v1/compare",
            "error": "overloaded: 503 overloaded, Retry-After 1 s",
            "occurrences": 12,
        },
        {
            "method": "POST",
            "name": "/v1/translate (1 text)",
            "error": 'ConnectionError(MaxRetryError("pool"))',
            "occurrences": 1,
        },
    ]
    json.dumps(summary)  # plain JSON types only


def test_summary_needs_a_stats_file(tmp_path):
    (tmp_path / "other.csv").write_text("Type,Name\nPOST,/x\n")
    with pytest.raises(ValueError, match="Aggregated"):
        run.summarize_stats(tmp_path / "other.csv")
    (tmp_path / "locust_stats.csv").write_text(STATS_CSV)
    assert (
        run.summarize_stats(tmp_path / "locust_stats.csv", tmp_path / "none.csv")["failures"] == []
    )


@pytest.mark.parametrize(
    "host",
    [
        "http://127.0.0.1:8000",
        "http://127.0.0.1",
        "https://127.1.2.3:8443/prefix",
        "http://localhost:8000",
        "http://[::1]:8000",
    ],
)
def test_loopback_hosts_are_accepted(host):
    assert run.check_loopback(host) == host


@pytest.mark.parametrize(
    "host",
    [
        "http://10.0.0.1:8000",
        "http://example.com",
        "http://0.0.0.0:8000",
        "http://192.168.1.5",
        "http://127.0.0.1.example.com",
        "http://localhost.example.com",
        "127.0.0.1:8000",
        "ftp://127.0.0.1",
        "",
    ],
)
def test_other_hosts_are_refused(host):
    with pytest.raises(run.NotLoopback):
        run.check_loopback(host)


def test_the_command_line_refuses_before_starting_locust(tmp_path, capsys, monkeypatch):
    def no_locust(*args, **kwargs):
        raise AssertionError("locust must not start")

    monkeypatch.setattr(run.subprocess, "run", no_locust)
    for host in ("http://10.0.0.1:8000", "http://example.com"):
        assert run.main(["--host", host, "--results", str(tmp_path)]) == 2
        assert "only loopback hosts" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def test_command_line_arguments():
    args = run.parse_args(
        ["-u", "4", "-r", "2", "-t", "5s", "--tags", "translate,compare", "--", "--models", "x"]
    )
    assert (args.users, args.spawn_rate, args.duration) == (4, 2.0, "5s")
    assert run._split_tags(args.tags) == ["translate", "compare"]
    assert args.extra == ["--models", "x"]
    command = run.locust_command(
        host="http://127.0.0.1:1",
        users=4,
        spawn_rate=2,
        duration="5s",
        tags=["translate"],
        out=run.Path("/r"),
        extra=args.extra,
    )
    joined = " ".join(command)
    assert (
        "--headless" in command
        and "--csv /r/locust" in joined
        and "--html /r/report.html" in joined
    )
    assert joined.endswith("--tags translate --models x")


@pytest.mark.slow
def test_a_short_real_run_writes_csv_html_and_summary(fake_service, tmp_path):
    """7 users (6 translating, 1 comparing, by weight) for 4 s: translation succeeds, the fake's
    503s on /v1/compare are counted as labelled failures, the other scenarios never start."""
    code, out = run.run(
        host=fake_service,
        users=7,
        spawn_rate=7,
        duration="4s",
        tags=["translate", "compare"],
        results_root=tmp_path,
        extra=["--max-beam", "2"],
        timeout_s=120,
    )
    assert out.parent == tmp_path
    files = {p.name for p in out.iterdir()}
    assert {"locust_stats.csv", "locust_failures.csv", "report.html", "summary.json"} <= files
    assert {"locust_final_stats.csv", "locust_final_failures.csv"} <= files
    assert "<html" in (out / "report.html").read_text().lower()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["host"] == fake_service and summary["tags"] == ["translate", "compare"]
    assert summary["stats_file"] == "locust_final_stats.csv"
    names = {e["name"]: e for e in summary["endpoints"]}
    translated = sum(e["requests"] for n, e in names.items() if n.startswith("/v1/translate"))
    assert translated > 0
    assert all(e["failures"] == 0 for n, e in names.items() if n.startswith("/v1/translate"))
    assert summary["total"]["requests"] > 0 and summary["total"]["p95_ms"] is not None
    assert code == 1  # Locust's exit status: some requests failed
    assert summary["failures"][0]["error"] == "overloaded: 503 overloaded, Retry-After 1 s"
    assert summary["total"]["failures"] == names["/v1/compare"]["requests"] > 0
    log = (out / "locust.log").read_text()
    assert '"CompareUser": 1' in log
    assert "GenerateUser" not in log and "FeedbackUser" not in log
