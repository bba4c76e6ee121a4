"""Locust scenarios for the translation service; pick one or more with `--tags`.

    locust -f loadtests/locustfile.py --host http://127.0.0.1:8000                 # web UI
    locust -f loadtests/locustfile.py --headless -u 32 -r 8 -t 60s --tags translate
    make loadtest USERS=32 SPAWN_RATE=8 DURATION=60s TAGS=translate            # + reports

Tags (one per user class):

    translate       TranslateUser       POST /v1/translate: one sentence, or a list of 2 to 5
    libretranslate  LibreTranslateUser  POST /translate, LibreTranslate style (JSON and form)
    compare         CompareUser         POST /v1/compare: the same input through both models
    feedback        FeedbackUser        translate, then POST /v1/feedback on that request id
    generate        GenerateUser        POST /v1/generate (streamed and not), /v1/completions

With no `--tags` every class runs, mixed by `weight`. Classes left without tasks by the tags
are dropped before the test starts (Locust would otherwise fail to start them).

Sentences are the Spanish side of the held-out Bible split (`model_store/data/es-en/bible.tsv.gz`,
read directly so that Locust needs neither torch nor the `service` package); prompts for
generation are the first words of its English side. `LOADTEST_DATA` points elsewhere.

Overload is an expected answer under load, but still a failure: a 503 or 429 is recorded with
the message `overloaded: 503 <type>, Retry-After <n> s`, so the failures table says how often
the service shed load rather than broke.
"""

from __future__ import annotations

import gzip
import json
import os
import random
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from locust import HttpUser, between, events, tag, task

REPO_ROOT = Path(__file__).resolve().parents[1]
TEST_SPLIT = REPO_ROOT / "model_store" / "data" / "es-en" / "bible.tsv.gz"
DEFAULT_HOST = "http://127.0.0.1:8000"
# (connect, read) seconds: a request never hangs a simulated user. Above the service's own
# 60 s request timeout, so its 504 is what gets recorded.
REQUEST_TIMEOUT = (5.0, 90.0)

# Only if the test split is missing (a checkout without the prepared corpus).
FALLBACK_PAIRS = [
    ("En el principio creó Dios los cielos y la tierra.", "In the beginning, God created"),
    ("Y dijo Dios: Sea la luz; y fué la luz.", "God said, Let there be light"),
    ("Bienaventurados los pobres en espíritu.", "Blessed are the poor in spirit"),
    ("El Señor es mi pastor; nada me faltará.", "The Lord is my shepherd"),
    ("Y el Verbo fué hecho carne, y habitó entre nosotros.", "The Word became flesh"),
]


def read_pairs(path: Path | str | None = None) -> list[tuple[str, str]]:
    """(Spanish, English) pairs of a split file (`key<TAB>source<TAB>target`, gzip)."""
    path = Path(path or os.environ.get("LOADTEST_DATA") or TEST_SPLIT)
    if not path.is_file():
        return list(FALLBACK_PAIRS)
    pairs = []
    with gzip.open(path, "rt", encoding="utf-8", newline="\n") as handle:
        for line in handle:
            fields = line.rstrip("\n").split("\t")
            if len(fields) == 3 and fields[1].strip() and fields[2].strip():
                pairs.append((fields[1], fields[2]))
    return pairs or list(FALLBACK_PAIRS)


PAIRS = read_pairs()
SENTENCES = [source for source, _ in PAIRS]
PROMPTS = [" ".join(target.split()[:6]) for _, target in PAIRS]


@events.init_command_line_parser.add_listener
def _add_arguments(parser) -> None:
    parser.add_argument(
        "--models",
        default="",
        include_in_web_ui=True,
        help="Comma-separated model names to spread translate requests over "
        "(e.g. transformer,rnnsearch); empty sends no `model` (the default model).",
    )
    parser.add_argument(
        "--max-beam",
        type=int,
        default=4,
        include_in_web_ui=True,
        help="beam_size is drawn from 1..max-beam per request.",
    )
    parser.add_argument(
        "--max-length",
        type=int,
        default=0,
        include_in_web_ui=True,
        help="max_length sent with each translation; 0 leaves the service default.",
    )
    parser.add_argument(
        "--max-new-tokens",
        type=int,
        default=32,
        include_in_web_ui=True,
        help="max_new_tokens (max_tokens for /v1/completions) per generation request.",
    )


def _tags_of(holder: Any) -> Iterator[set[str]]:
    """The tag set of every task reachable from a user class or TaskSet (nested sets too)."""
    for entry in getattr(holder, "tasks", None) or []:
        if hasattr(entry, "tasks"):
            yield from _tags_of(entry)
        else:
            yield set(getattr(entry, "locust_tag_set", set()))


def runnable_user_classes(
    user_classes: Iterable[type], tags: Iterable[str] | None, exclude: Iterable[str] | None
) -> list[type]:
    """The classes that keep at least one task under Locust's tag rules."""
    wanted = set(tags) if tags else None
    unwanted = set(exclude or ())

    def keeps(task_tags: set[str]) -> bool:
        if task_tags & unwanted:
            return False
        return wanted is None or bool(task_tags & wanted)

    return [cls for cls in user_classes if any(keeps(t) for t in _tags_of(cls))]


@events.init.add_listener
def _drop_classes_without_tasks(environment, **_: Any) -> None:
    options = environment.parsed_options
    if options is None:
        return
    keep = runnable_user_classes(
        environment.user_classes,
        getattr(options, "tags", None),
        getattr(options, "exclude_tags", None),
    )
    if keep:  # none left: let Locust report the bad tags itself
        environment.user_classes[:] = keep


_ENVIRONMENTS: list[Any] = []


@events.init.add_listener
def _remember_environment(environment, **_: Any) -> None:
    _ENVIRONMENTS[:] = [environment]


@events.quit.add_listener
def _write_final_stats(**_: Any) -> None:
    """`<csv prefix>_final_stats.csv` and `_final_failures.csv`: the statistics as they stand
    when the run is over. Locust's own `--csv` files are rewritten once a second by a
    background writer that stops without a last write, so they can miss the final second;
    loadtests/run.py summarizes these files instead when they exist."""
    import csv

    from locust.runners import WorkerRunner
    from locust.stats import PERCENTILES_TO_REPORT, StatsCSV

    for environment in _ENVIRONMENTS:
        prefix = getattr(environment.parsed_options, "csv_prefix", None)
        if not prefix or isinstance(environment.runner, WorkerRunner):
            continue
        writer = StatsCSV(environment, PERCENTILES_TO_REPORT)
        with open(f"{prefix}_final_stats.csv", "w", newline="", encoding="utf-8") as handle:
            writer.requests_csv(csv.writer(handle))
        with open(f"{prefix}_final_failures.csv", "w", newline="", encoding="utf-8") as handle:
            writer.failures_csv(csv.writer(handle))


def error_message(response) -> str:
    """A stable failure label: status and error type, never anything request-specific."""
    status = response.status_code
    if not status:
        return f"connection error: {type(response.error).__name__}"
    kind = None
    try:
        body = response.json()
        if isinstance(body, dict):
            error = body.get("error")
            kind = error.get("type") if isinstance(error, dict) else None
            kind = kind or (body.get("detail") if isinstance(body.get("detail"), str) else None)
    except ValueError:  # Serve's proxy answers overload in plain text
        pass
    if status in (429, 503):
        retry = response.headers.get("Retry-After")
        label = f"overloaded: {status} {kind or 'from the Serve proxy'}"
        return f"{label}, Retry-After {retry} s" if retry else f"{label}, no Retry-After"
    return f"HTTP {status} {kind or 'error'}"


def judge(response, expect: Any = None) -> Any:
    """Mark a `catch_response` response; return its JSON body when it passed, else None.

    `expect(body)` returns a problem description, or None when the body is as it should be.
    """
    if not 200 <= response.status_code < 300:
        response.failure(error_message(response))
        return None
    if expect is None:
        response.success()
        return True
    try:
        body = response.json()
    except ValueError:
        response.failure("response is not JSON")
        return None
    problem = expect(body)
    if problem:
        response.failure(problem)
        return None
    response.success()
    return body


@dataclass(frozen=True)
class Knobs:
    """The command-line options that shape request bodies (see `_add_arguments`)."""

    models: tuple[str, ...] = ()
    max_beam: int = 4
    max_length: int = 0
    max_new_tokens: int = 32

    @classmethod
    def from_options(cls, options: Any) -> Knobs:
        if options is None:
            return cls()
        models = str(getattr(options, "models", "") or "")
        return cls(
            models=tuple(m.strip() for m in models.split(",") if m.strip()),
            max_beam=max(1, int(getattr(options, "max_beam", 4))),
            max_length=int(getattr(options, "max_length", 0)),
            max_new_tokens=max(1, int(getattr(options, "max_new_tokens", 32))),
        )


# Request bodies, one function per endpoint, so the tests can check them against the service's
# own request models.


def translate_body(texts: str | list[str], knobs: Knobs, rng: Any = random) -> dict[str, Any]:
    body: dict[str, Any] = {"text": texts, "beam_size": rng.randint(1, knobs.max_beam)}
    if knobs.models:
        body["model"] = rng.choice(knobs.models)
    if knobs.max_length:
        body["max_length"] = knobs.max_length
    return body


def libretranslate_body(text: str, *, form: bool) -> dict[str, Any]:
    if form:  # as a browser form would send it: LibreTranslate's `auto` source, no format
        return {"q": text, "source": "auto", "target": "en"}
    return {"q": text, "source": "es", "target": "en", "format": "text"}


def compare_body(texts: str | list[str], knobs: Knobs, rng: Any = random) -> dict[str, Any]:
    body = translate_body(texts, knobs, rng)
    body.pop("model", None)
    if rng.random() < 0.5:  # else: every served model
        body["models"] = ["transformer", "rnnsearch"]
    return body


def feedback_body(request_id: str, rng: Any = random) -> dict[str, Any]:
    return {"request_id": request_id, "rating": rng.randint(1, 5)}


def generate_body(knobs: Knobs, *, stream: bool, rng: Any = random) -> dict[str, Any]:
    return {
        "prompt": rng.choice(PROMPTS),
        "max_new_tokens": knobs.max_new_tokens,
        "temperature": rng.choice([0.0, 0.7, 1.0]),
        "seed": rng.randint(0, 2**31 - 1),
        "stream": stream,
    }


def completion_body(knobs: Knobs, rng: Any = random) -> dict[str, Any]:
    return {
        "model": "lm",
        "prompt": rng.choice(PROMPTS),
        "max_tokens": knobs.max_new_tokens,
        "temperature": 0.7,
        "seed": rng.randint(0, 2**31 - 1),
    }


class ServiceUser(HttpUser):
    abstract = True
    host = os.environ.get("LOADTEST_HOST", DEFAULT_HOST)
    wait_time = between(0.1, 1.0)

    def on_start(self) -> None:
        self.knobs = Knobs.from_options(self.environment.parsed_options)

    def sentence(self) -> str:
        return random.choice(SENTENCES)

    def post(self, path: str, name: str, **kwargs: Any):
        return self.client.post(
            path, name=name, catch_response=True, timeout=REQUEST_TIMEOUT, **kwargs
        )


def _translations(count: int):
    def expect(body: Any) -> str | None:
        items = body.get("translations") if isinstance(body, dict) else None
        if not isinstance(items, list) or len(items) != count:
            return f"expected {count} translations"
        return None

    return expect


class TranslateUser(ServiceUser):
    """The main workload: single sentences mostly, now and then a small list."""

    weight = 6

    @tag("translate")
    @task(3)
    def translate_one(self) -> None:
        with self.post(
            "/v1/translate",
            "/v1/translate (1 text)",
            json=translate_body(self.sentence(), self.knobs),
        ) as response:
            judge(response, _translations(1))

    @tag("translate")
    @task(1)
    def translate_list(self) -> None:
        texts = random.sample(SENTENCES, k=min(len(SENTENCES), random.randint(2, 5)))
        with self.post(
            "/v1/translate", "/v1/translate (2-5 texts)", json=translate_body(texts, self.knobs)
        ) as response:
            judge(response, _translations(len(texts)))


class LibreTranslateUser(ServiceUser):
    """An unchanged LibreTranslate client."""

    weight = 1

    @staticmethod
    def _translated(body: Any) -> str | None:
        if not isinstance(body, dict) or not isinstance(body.get("translatedText"), str):
            return "no translatedText"
        return None

    @tag("libretranslate")
    @task(2)
    def translate_json(self) -> None:
        payload = libretranslate_body(self.sentence(), form=False)
        with self.post("/translate", "/translate (json)", json=payload) as response:
            judge(response, self._translated)

    @tag("libretranslate")
    @task(1)
    def translate_form(self) -> None:
        payload = libretranslate_body(self.sentence(), form=True)
        with self.post("/translate", "/translate (form)", data=payload) as response:
            judge(response, self._translated)


def _compared(body: Any) -> str | None:
    """/v1/compare answers 200 even when one model failed; that model's `error` says why."""
    results = body.get("results") if isinstance(body, dict) else None
    if not isinstance(results, list) or not results:
        return "no results"
    for result in results:
        error = result.get("error") if isinstance(result, dict) else None
        if error:
            return f"compare: {result.get('model')} answered {error.get('type')}"
    return None


class CompareUser(ServiceUser):
    """A/B comparison: one sentence (sometimes two) through both translators."""

    weight = 1

    @tag("compare")
    @task
    def compare(self) -> None:
        texts = self.sentence() if random.random() < 0.8 else random.sample(SENTENCES, k=2)
        body = compare_body(texts, self.knobs)
        with self.post("/v1/compare", "/v1/compare", json=body) as response:
            judge(response, _compared)


class FeedbackUser(ServiceUser):
    """Translate, then rate that translation by its request id."""

    weight = 1

    @tag("feedback")
    @task
    def translate_and_rate(self) -> None:
        with self.post(
            "/v1/translate",
            "/v1/translate (before feedback)",
            json=translate_body(self.sentence(), self.knobs),
        ) as response:
            body = judge(response, _translations(1))
            request_id = (body or {}).get("id") or response.headers.get("X-Request-ID")
        if not body or not request_id:
            return
        rating = feedback_body(request_id)
        with self.post("/v1/feedback", "/v1/feedback", json=rating) as response:
            judge(response)


def read_stream(response) -> tuple[int, float | None, int]:
    """Consume a streamed body (server-sent events or JSON lines): (events, `perf_counter` time
    of the first event, bytes). An error event inside the stream raises ValueError."""
    events_seen, first, size = 0, None, 0
    for raw in response.iter_lines():
        size += len(raw) + 1
        line = raw.decode("utf-8", "replace").strip() if isinstance(raw, bytes) else raw.strip()
        if not line or line.startswith((":", "event:", "id:", "retry:")):
            continue
        data = line.removeprefix("data:").strip()
        if data == "[DONE]":
            break
        try:
            payload = json.loads(data)
        except ValueError:
            payload = None
        if isinstance(payload, dict) and payload.get("error"):
            raise ValueError(f"error event in stream: {str(payload['error'])[:80]}")
        events_seen += 1
        if first is None:
            first = time.perf_counter()
    return events_seen, first, size


class GenerateUser(ServiceUser):
    """Text generation with the language model: whole answers and token streams."""

    weight = 1

    @tag("generate")
    @task(2)
    def generate(self) -> None:
        with self.post(
            "/v1/generate", "/v1/generate", json=generate_body(self.knobs, stream=False)
        ) as response:
            judge(response, lambda b: None if isinstance(b, dict) else "not a JSON object")

    @tag("generate")
    @task(2)
    def generate_stream(self) -> None:
        """Recorded time is the whole stream; time to first token is its own entry."""
        started = time.perf_counter()
        with self.client.post(
            "/v1/generate",
            name="/v1/generate (stream)",
            json=generate_body(self.knobs, stream=True),
            stream=True,
            catch_response=True,
            timeout=REQUEST_TIMEOUT,
        ) as response:
            if not 200 <= response.status_code < 300:
                response.failure(error_message(response))
                return
            try:
                count, first, size = read_stream(response)
            except Exception as error:  # a broken stream is a failed request, not a crash
                response.failure(f"stream broke: {type(error).__name__}")
                return
            response.request_meta["response_time"] = (time.perf_counter() - started) * 1000
            response.request_meta["response_length"] = size
            if not count:
                response.failure("empty stream")
                return
            response.success()
        self.environment.events.request.fire(
            request_type="SSE",
            name="/v1/generate (stream, first token)",
            response_time=(first - started) * 1000,
            response_length=0,
            exception=None,
            context={},
        )

    @tag("generate")
    @task(1)
    def completions(self) -> None:
        body = completion_body(self.knobs)
        with self.post("/v1/completions", "/v1/completions", json=body) as response:
            judge(
                response,
                lambda b: None if isinstance(b, dict) and b.get("choices") else "no choices",
            )
