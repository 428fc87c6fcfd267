"""Our clients against OpenAI's document: Prism (Stainless's fork, `@stainless-api/prism-cli`)
mocks the API from the OpenAPI file and answers 422 (or 401, 404) to any request that breaks
it: body, headers, auth, path.

Cases:
* a self-check that Prism validates at all: a valid request and the official Python SDK's
  create / part / complete go through, an invalid request is refused with 422;
* each Rust client example (a constant in xtask) runs against Prism through a recording
  proxy; the case passes when the example exits 0, no request was refused, and every
  operation of the document was called at least once.
"""

from __future__ import annotations

import hashlib
import http.client
import http.server
import json
import os
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import openai

from harness import CaseFailed, Report, SpecValidator, check, check_eq

PRISM_START_TIMEOUT_S = 90
CLIENT_TIMEOUT_S = 300
PRISM_API_KEY = "sk-prism"
# Headers that belong to one connection, not to the request a proxy passes on.
HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade",
              "proxy-authorization", "proxy-authenticate", "expect", "host", "content-length"}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Prism:
    """`prism mock <spec>` on a free port; started at once, waited for on first use."""

    def __init__(self, node_dir: Path, spec: Path, log_path: Path):
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self._log = open(log_path, "w")
        binary = node_dir / "node_modules" / ".bin" / "prism"
        self.process = subprocess.Popen(
            [str(binary), "mock", "--host", "127.0.0.1", "--port", str(self.port), str(spec)],
            stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )

    def wait_ready(self) -> None:
        deadline = time.monotonic() + PRISM_START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise CaseFailed(f"prism exited with {self.process.returncode}; see {self.log_path}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return
            except OSError:
                time.sleep(0.2)
        raise CaseFailed(f"prism did not listen within {PRISM_START_TIMEOUT_S} s; see {self.log_path}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()


def post_json(url: str, body: dict, key: str | None = PRISM_API_KEY) -> tuple[int, dict]:
    headers = {"content-type": "application/json"}
    if key:
        headers["authorization"] = f"Bearer {key}"
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}")


def self_check_accepts_valid_requests(mock: Prism) -> None:
    status, body = post_json(
        f"{mock.base_url}/uploads",
        {"purpose": "batch", "filename": "a.jsonl", "bytes": 3, "mime_type": "text/jsonl"},
    )
    check_eq(status, 200, f"status of a valid create ({body})")
    # The official SDK's own requests, multipart part included, are what the document
    # describes: if Prism refused them, Prism (or the document) would be the problem.
    client = openai.OpenAI(api_key=PRISM_API_KEY, base_url=mock.base_url, max_retries=0)
    data = os.urandom(200_000)
    upload = client.uploads.create(bytes=len(data), filename="a.jsonl", mime_type="text/jsonl", purpose="batch")
    part = client.uploads.parts.create(upload.id, data=data)
    client.uploads.complete(upload.id, part_ids=[part.id], md5=hashlib.md5(data).hexdigest())
    client.files.list(limit=2)


def self_check_refuses_invalid_requests(mock: Prism) -> None:
    status, body = post_json(f"{mock.base_url}/uploads", {"purpose": "nope", "filename": "a.jsonl"})
    check_eq(status, 422, f"status of a create without bytes, mime_type, with a bad purpose ({body})")
    messages = " ".join(problem.get("message", "") for problem in body.get("validation", []))
    check("'bytes'" in messages and "purpose" in messages, f"Prism names the problems: {messages!r}")
    status, _ = post_json(
        f"{mock.base_url}/uploads",
        {"purpose": "batch", "filename": "a.jsonl", "bytes": 3, "mime_type": "text/jsonl"},
        key=None,
    )
    check_eq(status, 401, "status of a create without a key")


@dataclass
class Seen:
    method: str
    path: str
    status: int
    problem: str


class RecordingProxy:
    """An HTTP reverse proxy in front of Prism that records each request's answer, so a case
    knows exactly which requests a client sent and which Prism refused, and why."""

    def __init__(self, upstream_port: int):
        self.seen: list[Seen] = []
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_any(self) -> None:
                body = self._read_body()
                headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
                headers["Content-Length"] = str(len(body))
                upstream = http.client.HTTPConnection("127.0.0.1", upstream_port, timeout=60)
                try:
                    upstream.request(self.command, self.path, body=body, headers=headers)
                    answer = upstream.getresponse()
                    data = answer.read()
                finally:
                    upstream.close()
                problem = "" if 200 <= answer.status < 300 else _prism_problem(data)
                proxy.seen.append(Seen(self.command, self.path, answer.status, problem))
                self.send_response(answer.status)
                for name, value in answer.getheaders():
                    if name.lower() not in HOP_BY_HOP:
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_DELETE = do_PUT = do_PATCH = do_any

            def _read_body(self) -> bytes:
                if self.headers.get("transfer-encoding", "").lower() == "chunked":
                    chunks = []
                    while size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16):
                        chunks.append(self.rfile.read(size))
                        self.rfile.readline()
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return b"".join(chunks)
                return self.rfile.read(int(self.headers.get("content-length", "0")))

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base_url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _prism_problem(data: bytes) -> str:
    try:
        body = json.loads(data)
    except ValueError:
        return data[:200].decode(errors="replace")
    details = [
        f"{'.'.join(map(str, problem.get('location', [])))}: {problem.get('message')}"
        for problem in body.get("validation", [])
    ]
    return "; ".join(details) or str(body.get("detail") or body.get("title") or body)


def client_requests_are_accepted(mock: Prism, validator: SpecValidator, workdir: Path, name: str,
                                 command: list[str]) -> None:
    proxy = RecordingProxy(mock.port)
    try:
        env = dict(os.environ, OPENAI_API_KEY=PRISM_API_KEY)
        for variable in ("OPENAI_BASE_URL", "OPENAI_ORG_ID", "OPENAI_PROJECT_ID"):
            env.pop(variable, None)
        try:
            finished = subprocess.run([*command, proxy.base_url], capture_output=True, text=True,
                                      timeout=CLIENT_TIMEOUT_S, env=env, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            raise CaseFailed(f"{name} did not finish within {CLIENT_TIMEOUT_S} s") from None
        (workdir / f"prism-{name}.out").write_text(finished.stdout + finished.stderr)
    finally:
        proxy.close()
    refused = [f"{s.method} {s.path} -> {s.status}: {s.problem}" for s in proxy.seen if not 200 <= s.status < 300]
    check(not refused, f"{len(refused)} of {len(proxy.seen)} requests refused: {'; '.join(refused[:3])}")
    called = {validator.operation_id(s.method, "/v1" + s.path.split("?", 1)[0]) for s in proxy.seen}
    missing = sorted(set(validator.operation_ids()) - called)
    check(not missing, f"operations never called: {', '.join(missing)}")
    tail = " | ".join((finished.stdout + finished.stderr).strip().splitlines()[-3:])
    check_eq(finished.returncode, 0, f"{name}'s exit status ({tail})")


def run(report: Report, mock: Prism, validator: SpecValidator, workdir: Path,
        clients: list[tuple[str, list[str]]], missing: list[str]) -> None:
    try:
        mock.wait_ready()
    except CaseFailed as failure:
        report.fails("prism: starts", str(failure))
        return
    report.case("prism: self-check: valid requests and the Python SDK's are accepted",
                lambda: self_check_accepts_valid_requests(mock))
    report.case("prism: self-check: an invalid request is 422, a missing key 401",
                lambda: self_check_refuses_invalid_requests(mock))
    for name in missing:
        report.skips("prism", f"{name} not in the workspace yet")
    for name, command in clients:
        report.case(f"prism: {name}: low-level calls and upload_file accepted by OpenAI's document",
                    lambda name=name, command=command: client_requests_are_accepted(
                        mock, validator, workdir, name, command))
