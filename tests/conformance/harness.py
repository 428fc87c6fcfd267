"""What every conformance suite shares: the report, the server under test, the record of
every response the server gave, and the validation of those responses against OpenAI's
OpenAPI document.

Nothing here knows about a particular SDK; python_sdk.py, node_sdk.mjs (through run.py) and
prism.py add cases to one Report.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import jsonschema
import yaml

# The server logs this once it accepts connections (tracing's key=value format).
LISTEN_LINE = re.compile(r"listening local_addr=(\S+)")
SERVER_START_TIMEOUT_S = 30


class Report:
    """One line per case, `PASS name` or `FAIL name: reason`, then `N passed, N failed`."""

    def __init__(self) -> None:
        self.passed = 0
        self.failed = 0
        self._lock = threading.Lock()

    def passes(self, name: str) -> None:
        with self._lock:
            self.passed += 1
            print(f"PASS {name}", flush=True)

    def fails(self, name: str, reason: str) -> None:
        with self._lock:
            self.failed += 1
            reason = " ".join(reason.split())
            print(f"FAIL {name}: {reason}", flush=True)

    def skips(self, name: str, reason: str) -> None:
        """A case that cannot run yet; printed, not counted."""
        print(f"SKIP {name}: {reason}", flush=True)

    def case(self, name: str, body: Callable[[], None]) -> None:
        """Runs one case: it passes when `body` returns, fails with the reason it raised."""
        try:
            body()
        except CaseFailed as failure:
            self.fails(name, str(failure))
        except Exception as error:  # a case that crashed is a failed case, with its cause
            where = traceback.extract_tb(error.__traceback__)[-1]
            self.fails(
                name,
                f"{type(error).__name__}: {error} (at {Path(where.filename).name}:{where.lineno})",
            )
        else:
            self.passes(name)

    def summary(self) -> str:
        return f"{self.passed} passed, {self.failed} failed"


class CaseFailed(Exception):
    """A case's expectation that did not hold; the message is the reason printed."""


def check(condition: bool, reason: str) -> None:
    if not condition:
        raise CaseFailed(reason)


def check_eq(actual: object, expected: object, what: str) -> None:
    if actual != expected:
        raise CaseFailed(f"{what}: expected {expected!r}, got {actual!r}")


@dataclass
class Exchange:
    """One response the server (or a mock) gave, as a client received it."""

    source: str
    method: str
    path: str
    status: int
    content_type: str
    body: bytes


@dataclass
class Recorder:
    """Every response a client saw during the run, for the schema checks at the end."""

    exchanges: list[Exchange] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, exchange: Exchange) -> None:
        with self._lock:
            self.exchanges.append(exchange)

    def load_json_lines(self, path: Path, source: str) -> None:
        """Adds the exchanges another process wrote, one JSON object a line."""
        if not path.exists():
            return
        for line in path.read_text().splitlines():
            if line.strip():
                record = json.loads(line)
                self.add(
                    Exchange(
                        source=source,
                        method=record["method"],
                        path=record["path"],
                        status=record["status"],
                        content_type=record["content_type"],
                        body=record["body"].encode(),
                    )
                )


class Server:
    """`<server binary> serve` on 127.0.0.1, a free port, its own data directory (`scheme` is
    `https` when `command` carries `--tls-cert`/`--tls-key`)."""

    def __init__(
        self, command: list[str], data_dir: Path, api_keys: dict[str, str], log_path: Path, scheme: str = "http"
    ):
        self.data_dir = data_dir
        self.log_path = log_path
        args = [*command, "--listen", "127.0.0.1:0", "--data-dir", str(data_dir)]
        for key, owner in api_keys.items():
            args += ["--api-key", f"{key}={owner}"]
        env = dict(os.environ, RUST_LOG=os.environ.get("RUST_LOG", "info"))
        env.pop("UPLOADS_API_KEYS", None)
        self._log = open(log_path, "w")
        self._drainer: threading.Thread | None = None
        self.process = subprocess.Popen(
            args, stdout=self._log, stderr=subprocess.PIPE, text=True, env=env
        )
        self.address = self._wait_for_listen_line()
        self.base_url = f"{scheme}://{self.address}/v1"

    def _wait_for_listen_line(self) -> str:
        deadline = time.monotonic() + SERVER_START_TIMEOUT_S
        assert self.process.stderr is not None
        while time.monotonic() < deadline:
            line = self.process.stderr.readline()
            if not line:
                break
            self._log.write(line)
            self._log.flush()
            found = LISTEN_LINE.search(line)
            if found:
                # Keep draining stderr into the log so the server never blocks on a full pipe.
                self._drainer = threading.Thread(target=self._drain, daemon=True)
                self._drainer.start()
                return found.group(1)
        self.stop()
        raise RuntimeError(f"the server did not report its address; its log: {self.log_tail()}")

    def _drain(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self._log.write(line)
            self._log.flush()

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text().splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self._drainer is not None:
            self._drainer.join(timeout=5)
        self._log.close()


# The error body every non-2xx answer must carry (OpenAI's, which the spec does not model).
ERROR_BODY_SCHEMA = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["message", "type", "param", "code"],
            "properties": {
                "message": {"type": "string"},
                "type": {"type": "string"},
                "param": {"type": ["string", "null"]},
                "code": {"type": ["string", "null"]},
            },
        }
    },
}
ERROR_SCHEMA_NAME = "error body"


class SpecValidator:
    """Validates response bodies against the component schemas of OpenAI's OpenAPI document.

    Which schema a response must match comes from the document itself: the `200` response of
    the operation whose path template and method match the request. The document is OpenAPI
    3.1, whose schemas are JSON Schema 2020-12, so they are used as written, `$ref`s resolved
    inside the document; nothing is relaxed.
    """

    def __init__(self, spec_path: Path, path_prefix: str = "/v1"):
        self.document = yaml.safe_load(spec_path.read_text())
        # (method, path pattern, operationId, schema name of the 200 answer)
        self.operations: list[tuple[str, re.Pattern[str], str, str | None]] = []
        for template, item in self.document["paths"].items():
            pattern = re.compile(
                "^" + re.escape(path_prefix) + re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(template)) + "$"
            )
            for method, operation in item.items():
                content = operation.get("responses", {}).get("200", {}).get("content", {})
                schema = content.get("application/json", {}).get("schema", {})
                ref = schema.get("$ref")
                name = ref.rsplit("/", 1)[-1] if ref else None
                self.operations.append((method.upper(), pattern, operation["operationId"], name))

    def schema_names(self) -> list[str]:
        return sorted({name for _, _, _, name in self.operations if name}) + [ERROR_SCHEMA_NAME]

    def operation_ids(self) -> list[str]:
        return [operation_id for _, _, operation_id, _ in self.operations]

    def operation_id(self, method: str, path: str) -> str | None:
        for known_method, pattern, operation_id, _ in self.operations:
            if known_method == method and pattern.match(path):
                return operation_id
        return None

    def schema_for(self, exchange: Exchange) -> str | None:
        """The schema name a response must match, or None when the spec gives no JSON schema
        for it (the content download, whose body is the File's bytes)."""
        if not 200 <= exchange.status < 300:
            return ERROR_SCHEMA_NAME
        for method, pattern, _, name in self.operations:
            if method == exchange.method and pattern.match(exchange.path):
                return name
        return None

    def errors(self, schema_name: str, instance: object) -> list[str]:
        if schema_name == ERROR_SCHEMA_NAME:
            schema: dict = ERROR_BODY_SCHEMA
        else:
            schema = {
                "$ref": f"#/components/schemas/{schema_name}",
                "components": self.document["components"],
            }
        validator = jsonschema.Draft202012Validator(schema)
        problems = []
        if schema_name != ERROR_SCHEMA_NAME and not isinstance(instance, dict):
            problems.append(f"{_short(instance)} is not a JSON object")
        for error in sorted(validator.iter_errors(instance), key=lambda e: list(e.absolute_path)):
            where = "/".join(str(part) for part in error.absolute_path) or "(root)"
            problems.append(f"at {where}: {error.message}")
        return problems

    def validate_all(self, report: Report, recorder: Recorder) -> None:
        """One case per schema: every recorded body that must match it does."""
        by_schema: dict[str, list[Exchange]] = {name: [] for name in self.schema_names()}
        for exchange in recorder.exchanges:
            name = self.schema_for(exchange)
            if name is not None:
                by_schema.setdefault(name, []).append(exchange)
        for name, exchanges in by_schema.items():
            failures = []
            for exchange in exchanges:
                where = f"{exchange.source} {exchange.method} {exchange.path} -> {exchange.status}"
                if not exchange.content_type.startswith("application/json"):
                    failures.append(f"{where}: content-type {exchange.content_type!r}")
                    continue
                try:
                    body = json.loads(exchange.body)
                except ValueError as error:
                    failures.append(f"{where}: not JSON ({error})")
                    continue
                problems = self.errors(name, body)
                if problems:
                    failures.append(f"{where}: {'; '.join(problems)} in {_short(body)}")
            case = f"schema {name}: {len(exchanges)} response bodies"
            if not exchanges:
                report.fails(case, "no response was checked against it")
            elif failures:
                shown = "; ".join(failures[:3])
                more = f" (and {len(failures) - 3} more)" if len(failures) > 3 else ""
                report.fails(case, f"{len(failures)} invalid: {shown}{more}")
            else:
                report.passes(case)


def _short(value: object, limit: int = 300) -> str:
    text = json.dumps(value) if not isinstance(value, str) else value
    return text if len(text) <= limit else text[:limit] + "..."


def eprint(*args: object) -> None:
    print(*args, file=sys.stderr, flush=True)
