"""The official OpenAI Python SDK against our server, used as its users use it.

Each case drives the SDK's public API (`client.uploads.*`, `client.files.*`, and the client's
own `get`/`post` for requests the resources cannot express) and asserts what a user would
see: the returned objects, the bytes that come back, and for refusals the exception class
OpenAI's service would cause (the SDK picks it from the status) with our `param` and message.
Every response the SDK received is recorded for the schema checks in harness.py.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import socket
import threading
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable

import openai
from openai.types import FileObject, Upload

from harness import CaseFailed, Exchange, Recorder, Report, Server, check, check_eq

KEY_ALICE = "sk-conformance-alice"
KEY_BOB = "sk-conformance-bob"
API_KEYS = {KEY_ALICE: "alice", KEY_BOB: "bob"}

MIB = 1024 * 1024
# The SDK's DEFAULT_PART_SIZE and the server's part limit: the same number on purpose.
PART_LIMIT = 64 * MIB
SMALL_PART = 64 * 1024
UPLOAD_TTL_S = 3600
INVALID = "invalid_request_error"
# A stuck server fails a case instead of hanging the run (the SDK's default is 10 minutes).
REQUEST_TIMEOUT_S = 60


class Sdk:
    """SDK clients for two owners (two API keys) that record every response they receive."""

    def __init__(self, server: Server, recorder: Recorder, workdir: Path):
        self.server = server
        self.recorder = recorder
        self.workdir = workdir
        # (method, path, content-length, x-stainless-retry-count) of every request sent.
        self.requests: list[tuple[str, str, int, str]] = []
        self.rng = random.Random(7)
        self.alice = self.client(KEY_ALICE)
        self.bob = self.client(KEY_BOB)

    def client(self, api_key: str, base_url: str | None = None, source: str = "python") -> openai.OpenAI:
        def on_request(request) -> None:
            self.requests.append(
                (
                    request.method,
                    request.url.path,
                    int(request.headers.get("content-length", "0")),
                    request.headers.get("x-stainless-retry-count", ""),
                )
            )

        def on_response(response) -> None:
            content_type = response.headers.get("content-type", "")
            # File content is the File's bytes, not JSON: left to stream to the SDK.
            if content_type.startswith("application/json") or not response.is_success:
                response.read()
                self.recorder.add(
                    Exchange(
                        source=source,
                        method=response.request.method,
                        path=response.request.url.path,
                        status=response.status_code,
                        content_type=content_type,
                        body=response.content,
                    )
                )

        http_client = openai.DefaultHttpxClient(
            event_hooks={"request": [on_request], "response": [on_response]}
        )
        return openai.OpenAI(
            api_key=api_key,
            base_url=base_url or self.server.base_url,
            http_client=http_client,
            timeout=REQUEST_TIMEOUT_S,
        )

    def part_requests(self, upload_id: str) -> list[tuple[str, str, int, str]]:
        return [r for r in self.requests if r[1] == f"/v1/uploads/{upload_id}/parts"]

    def write(self, name: str, data: bytes) -> Path:
        path = self.workdir / name
        path.write_bytes(data)
        return path

    def raw(self, method: str, path: str, headers: dict[str, str], body: bytes | None = None) -> tuple[int, dict]:
        """A request the SDK cannot send (no API key at all), recorded like the SDK's."""
        request = urllib.request.Request(
            self.server.base_url + path, data=body, method=method, headers=headers
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                status, content_type, data = response.status, response.headers.get("content-type", ""), response.read()
        except urllib.error.HTTPError as error:
            status, content_type, data = error.code, error.headers.get("content-type", ""), error.read()
        self.recorder.add(Exchange("python raw", method, "/v1" + path, status, content_type, data))
        return status, json.loads(data)


def expect_error(
    call: Callable[[], object],
    exception: type[openai.APIStatusError],
    status: int,
    param: str | None,
    message: str | Callable[[str], bool],
    code: str | None = None,
) -> openai.APIStatusError:
    """Runs `call`, which must raise exactly `exception` carrying our status, type, param,
    code and message (a string is compared exactly, a predicate is applied)."""
    try:
        call()
    except openai.APIStatusError as error:
        check(
            type(error) is exception,
            f"expected {exception.__name__}, the SDK raised {type(error).__name__} ({error.status_code}: {error.body})",
        )
        check_eq(error.status_code, status, "status")
        body = error.body if isinstance(error.body, dict) else {}
        check_eq(error.type, INVALID, f"type of {body}")
        check_eq(error.param, param, f"param of {body}")
        check_eq(error.code, code, f"code of {body}")
        text = body.get("message", "")
        if isinstance(message, str):
            check_eq(text, message, "message")
        else:
            check(message(text), f"unexpected message {text!r}")
        return error
    raise CaseFailed(f"expected {exception.__name__}, the call succeeded")


def md5_hex(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def create(sdk: Sdk, client: openai.OpenAI, size: int, filename: str, **extra) -> Upload:
    return client.uploads.create(
        bytes=size, filename=filename, mime_type="text/jsonl", purpose="batch", **extra
    )


def add_parts(client: openai.OpenAI, upload_id: str, chunks: list[bytes]) -> list[str]:
    return [client.uploads.parts.create(upload_id, data=chunk).id for chunk in chunks]


def content_of(client: openai.OpenAI, file_id: str) -> bytes:
    return client.files.content(file_id).read()


def check_completed(upload: Upload, data: bytes, filename: str) -> FileObject:
    check_eq(upload.status, "completed", "upload status")
    check(upload.file is not None, "a completed Upload carries its File")
    assert upload.file is not None
    check_eq(upload.file.bytes, len(data), "file.bytes")
    check_eq(upload.file.filename, filename, "file.filename")
    check_eq(upload.file.object, "file", "file.object")
    check(upload.file.id.startswith("file-"), f"file id {upload.file.id!r} starts with file-")
    return upload.file


# ---------------------------------------------------------------- uploads as users do them


def upload_file_chunked_small_parts(sdk: Sdk) -> None:
    data = sdk.rng.randbytes(5 * SMALL_PART - 321)
    path = sdk.write("small-parts.jsonl", data)
    upload = sdk.alice.uploads.upload_file_chunked(
        file=path, mime_type="text/jsonl", purpose="batch", part_size=SMALL_PART, md5=md5_hex(data)
    )
    file = check_completed(upload, data, path.name)
    check_eq(file.purpose, "batch", "file.purpose")
    check_eq(len(sdk.part_requests(upload.id)), 5, "parts the SDK sent")
    check(content_of(sdk.alice, file.id) == data, "files.content returns the uploaded bytes")


def upload_file_chunked_default_part_size(sdk: Sdk) -> None:
    data = os.urandom(PART_LIMIT + 1001)
    path = sdk.write("default-part-size.jsonl", data)
    upload = sdk.alice.uploads.upload_file_chunked(
        file=path, mime_type="text/jsonl", purpose="fine-tune", md5=md5_hex(data)
    )
    file = check_completed(upload, data, path.name)
    parts = sdk.part_requests(upload.id)
    check_eq(len(parts), 2, "parts the SDK sent")
    check(parts[0][2] > PART_LIMIT, f"the first part carries the SDK's full 64 MiB ({parts[0][2]} bytes on the wire)")
    check(md5_hex(content_of(sdk.alice, file.id)) == md5_hex(data), "files.content returns the uploaded bytes")
    path.unlink()


def upload_file_chunked_from_memory(sdk: Sdk) -> None:
    data = b'{"prompt": "hi"}\n' * 1000
    upload = sdk.alice.uploads.upload_file_chunked(
        file=data, filename="in-memory.jsonl", bytes=len(data), mime_type="application/jsonl",
        purpose="batch", part_size=4096,
    )
    file = check_completed(upload, data, "in-memory.jsonl")
    check(content_of(sdk.alice, file.id) == data, "files.content returns the uploaded bytes")


def shuffled_parallel_parts_with_md5(sdk: Sdk) -> None:
    chunks = [sdk.rng.randbytes(size) for size in (70_000, 1, 65_536, 12_345, 99_999)]
    data = b"".join(chunks)
    upload = create(sdk, sdk.alice, len(data), "shuffled.jsonl")
    check_eq(upload.status, "pending", "new upload status")
    check_eq(upload.object, "upload", "upload.object")
    check_eq(upload.bytes, len(data), "upload.bytes")
    check_eq(upload.expires_at, upload.created_at + UPLOAD_TTL_S, "expires_at (an hour after creation)")
    order = list(range(len(chunks)))
    sdk.rng.shuffle(order)

    def send(index: int):
        return index, sdk.alice.uploads.parts.create(upload.id, data=chunks[index])

    with ThreadPoolExecutor(max_workers=3) as pool:
        results = dict(pool.map(send, order))
    for part in results.values():
        check_eq(part.object, "upload.part", "part.object")
        check_eq(part.upload_id, upload.id, "part.upload_id")
    part_ids = [results[index].id for index in range(len(chunks))]
    check_eq(len(set(part_ids)), len(chunks), "distinct part ids")
    done = sdk.alice.uploads.complete(upload.id, part_ids=part_ids, md5=md5_hex(data))
    file = check_completed(done, data, "shuffled.jsonl")
    check_eq(done.id, upload.id, "completed upload id")
    check(content_of(sdk.alice, file.id) == data, "the File holds the parts in the listed order")


def cancel_and_cancel_again(sdk: Sdk) -> None:
    upload = create(sdk, sdk.alice, 10, "cancelled.jsonl")
    part = sdk.alice.uploads.parts.create(upload.id, data=b"0123456789")
    cancelled = sdk.alice.uploads.cancel(upload.id)
    check_eq(cancelled.status, "cancelled", "status after cancel")
    check_eq(cancelled.file, None, "a cancelled Upload has no File")
    again = sdk.alice.uploads.cancel(upload.id)
    check_eq(again.model_dump(), cancelled.model_dump(), "cancel twice answers the same Upload")
    expect_error(
        lambda: sdk.alice.uploads.parts.create(upload.id, data=b"x"),
        openai.BadRequestError, 400, None, "Cannot add parts to an Upload that is already cancelled.",
    )
    expect_error(
        lambda: sdk.alice.uploads.complete(upload.id, part_ids=[part.id]),
        openai.BadRequestError, 400, None, "Cannot complete an Upload that is already cancelled.",
    )


def expires_after_sets_the_files_expiry(sdk: Sdk) -> None:
    data = b"abc\n"
    upload = create(sdk, sdk.alice, len(data), "expiring.jsonl", expires_after={"anchor": "created_at", "seconds": 7200})
    done = sdk.alice.uploads.complete(upload.id, part_ids=add_parts(sdk.alice, upload.id, [data]))
    file = check_completed(done, data, "expiring.jsonl")
    check_eq(file.expires_at, file.created_at + 7200, "file.expires_at (created_at + 7200)")


def files_create(sdk: Sdk) -> None:
    data = b'{"custom_id": "1"}\n'
    file = sdk.alice.files.create(
        file=("direct.jsonl", data), purpose="batch", expires_after={"anchor": "created_at", "seconds": 3600}
    )
    check_eq(file.object, "file", "object")
    check_eq(file.filename, "direct.jsonl", "filename")
    check_eq(file.purpose, "batch", "purpose")
    check_eq(file.bytes, len(data), "bytes")
    check_eq(file.expires_at, file.created_at + 3600, "expires_at")
    check(content_of(sdk.alice, file.id) == data, "files.content returns the posted bytes")


def files_list_retrieve_content_delete(sdk: Sdk) -> None:
    made = [
        sdk.alice.files.create(file=(f"listed-{n}.txt", f"file {n}".encode()), purpose="user_data")
        for n in range(3)
    ]
    ids = {file.id for file in made}
    # limit=2 makes the SDK follow `has_more`/`after` through several pages.
    seen = [file.id for file in sdk.alice.files.list(limit=2)]
    check_eq(len(seen), len(set(seen)), "no File listed twice across pages")
    check(ids <= set(seen), "every File appears in the list")
    newest_first = [file.created_at for file in sdk.alice.files.list()]
    check_eq(newest_first, sorted(newest_first, reverse=True), "created_at of the default (desc) order")
    oldest_first = list(sdk.alice.files.list(order="asc", purpose="user_data"))
    times = [file.created_at for file in oldest_first]
    check_eq(times, sorted(times), "created_at of order=asc")
    check(ids <= {file.id for file in oldest_first}, "purpose=user_data lists these Files")
    check_eq({file.purpose for file in oldest_first}, {"user_data"}, "purposes listed with purpose=user_data")
    check(not ids & {file.id for file in sdk.bob.files.list()}, "another key does not see these Files")
    target = made[1]
    check_eq(sdk.alice.files.retrieve(target.id).model_dump(), target.model_dump(), "retrieve returns the File")
    check_eq(content_of(sdk.alice, target.id), b"file 1", "content")
    deleted = sdk.alice.files.delete(target.id)
    check_eq((deleted.id, deleted.object, deleted.deleted), (target.id, "file", True), "delete answer")
    expect_error(
        lambda: sdk.alice.files.retrieve(target.id),
        openai.NotFoundError, 404, "file_id", f"No such File object: {target.id}",
    )
    check(target.id not in {file.id for file in sdk.alice.files.list()}, "a deleted File is not listed")


# ---------------------------------------------------------------- the behaviour table


def invalid_fields(sdk: Sdk) -> None:
    expect_error(
        lambda: sdk.alice.uploads.create(bytes=1, filename="a.jsonl", mime_type="text/jsonl", purpose="nope"),
        openai.BadRequestError, 400, "purpose",
        lambda m: m.startswith("'nope' is not one of ['assistants', 'batch', 'fine-tune', 'vision'") and m.endswith("] - 'purpose'"),
    )
    expect_error(
        lambda: sdk.alice.post(
            "/uploads", body={"filename": "a.jsonl", "purpose": "batch", "mime_type": "text/jsonl"}, cast_to=Upload
        ),
        openai.BadRequestError, 400, "bytes", "'bytes' is a required property",
    )
    expect_error(
        lambda: sdk.alice.uploads.create(bytes=1, filename="a.png", mime_type="text/jsonl", purpose="vision"),
        openai.BadRequestError, 400, "mime_type",
        lambda m: m.startswith("Invalid MIME type 'text/jsonl' for purpose 'vision'. Supported MIME types: "),
    )


def unknown_and_foreign_uploads_are_404(sdk: Sdk) -> None:
    for upload_id, client in (("upload_doesnotexist", sdk.alice), (create(sdk, sdk.alice, 1, "alices.jsonl").id, sdk.bob)):
        message = f"No such Upload object: {upload_id}"
        for call in (
            lambda: client.uploads.parts.create(upload_id, data=b"x"),
            lambda: client.uploads.complete(upload_id, part_ids=["part_x"]),
            lambda: client.uploads.cancel(upload_id),
        ):
            expect_error(call, openai.NotFoundError, 404, "upload_id", message)


def unknown_and_foreign_files_are_404(sdk: Sdk) -> None:
    alices = sdk.alice.files.create(file=("alices.txt", b"private"), purpose="user_data")
    for file_id, client in (("file-doesnotexist", sdk.alice), (alices.id, sdk.bob)):
        message = f"No such File object: {file_id}"
        for call in (
            lambda: client.files.retrieve(file_id),
            lambda: client.files.content(file_id),
            lambda: client.files.delete(file_id),
        ):
            expect_error(call, openai.NotFoundError, 404, "file_id", message)
    check_eq(content_of(sdk.alice, alices.id), b"private", "the owner still has the File")


def wrong_or_missing_key_is_401(sdk: Sdk) -> None:
    wrong = sdk.client("sk-wrong-key")
    expect_error(
        lambda: wrong.files.list(), openai.AuthenticationError, 401, None,
        lambda m: m.startswith("Incorrect API key provided"), code="invalid_api_key",
    )
    expect_error(
        lambda: wrong.uploads.create(bytes=1, filename="a.jsonl", mime_type="text/jsonl", purpose="batch"),
        openai.AuthenticationError, 401, None,
        lambda m: m.startswith("Incorrect API key provided"), code="invalid_api_key",
    )
    status, body = sdk.raw("GET", "/files", {})
    check_eq(status, 401, "status without a key")
    check_eq(body["error"]["code"], "invalid_api_key", "code without a key")
    check(body["error"]["message"].startswith("You didn't provide an API key."), f"message {body}")


def oversized_part_is_413_and_not_retried(sdk: Sdk) -> None:
    upload = create(sdk, sdk.alice, 3, "oversized.jsonl")
    before = len(sdk.part_requests(upload.id))
    expect_error(
        lambda: sdk.alice.uploads.parts.create(upload.id, data=bytes(PART_LIMIT + 1)),
        openai.APIStatusError, 413, "data", f"'data' is larger than the maximum of {PART_LIMIT} bytes.",
    )
    check_eq(len(sdk.part_requests(upload.id)) - before, 1, "requests the SDK sent (a 413 is not retried)")
    done = sdk.alice.uploads.complete(upload.id, part_ids=add_parts(sdk.alice, upload.id, [b"abc"]))
    check_completed(done, b"abc", "oversized.jsonl")


def finished_uploads_refuse_changes(sdk: Sdk) -> None:
    upload = create(sdk, sdk.alice, 6, "finished.jsonl")
    part_ids = add_parts(sdk.alice, upload.id, [b"abc", b"def"])
    done = sdk.alice.uploads.complete(upload.id, part_ids=part_ids, md5=md5_hex(b"abcdef"))
    check_completed(done, b"abcdef", "finished.jsonl")
    expect_error(
        lambda: sdk.alice.uploads.parts.create(upload.id, data=b"x"),
        openai.BadRequestError, 400, None, "Cannot add parts to an Upload that is already completed.",
    )
    again = sdk.alice.uploads.complete(upload.id, part_ids=part_ids, md5=md5_hex(b"abcdef"))
    check_eq(again.model_dump(), done.model_dump(), "complete retried with the same ids and md5")
    expect_error(
        lambda: sdk.alice.uploads.complete(upload.id, part_ids=list(reversed(part_ids))),
        openai.BadRequestError, 400, "part_ids", lambda m: "already completed" in m,
    )
    expect_error(
        lambda: sdk.alice.uploads.complete(upload.id, part_ids=part_ids, md5=md5_hex(b"other")),
        openai.BadRequestError, 400, "md5", f"Upload {upload.id} is already completed with a different md5.",
    )
    expect_error(
        lambda: sdk.alice.uploads.cancel(upload.id),
        openai.BadRequestError, 400, None, "Cannot cancel an Upload that is already completed.",
    )
    check_eq(sdk.alice.files.retrieve(done.file.id).bytes, 6, "the File is unchanged")
    files = [f for f in sdk.alice.files.list() if f.filename == "finished.jsonl"]
    check_eq(len(files), 1, "Files named finished.jsonl")


def bad_part_lists_keep_the_upload_pending(sdk: Sdk) -> None:
    upload = create(sdk, sdk.alice, 7, "part-lists.jsonl")
    first, second = add_parts(sdk.alice, upload.id, [b"abc", b"defg"])
    other = create(sdk, sdk.alice, 1, "other.jsonl")
    (foreign,) = add_parts(sdk.alice, other.id, [b"z"])
    cases = [
        (["part_doesnotexist"], f"Part part_doesnotexist does not belong to Upload {upload.id}."),
        ([first, foreign], f"Part {foreign} does not belong to Upload {upload.id}."),
        ([first, first], f"Part {first} is listed more than once."),
        ([], "[] is too short - 'part_ids'"),
    ]
    for part_ids, message in cases:
        expect_error(
            lambda: sdk.alice.uploads.complete(upload.id, part_ids=part_ids),
            openai.BadRequestError, 400, "part_ids", message,
        )
    expect_error(
        lambda: sdk.alice.uploads.complete(upload.id, part_ids=[first]),
        openai.BadRequestError, 400, "part_ids",
        "The number of bytes uploaded upon completion (3) does not match the number of bytes initially "
        "specified when creating the Upload (7).",
    )
    expect_error(
        lambda: sdk.alice.uploads.complete(upload.id, part_ids=[first, second], md5="zz"),
        openai.BadRequestError, 400, "md5", "'zz' does not match '^[0-9a-fA-F]{32}$' - 'md5'",
    )
    expect_error(
        lambda: sdk.alice.uploads.complete(upload.id, part_ids=[first, second], md5=md5_hex(b"not the data")),
        openai.BadRequestError, 400, "md5", lambda m: "md5" in m.lower(),
    )
    done = sdk.alice.uploads.complete(upload.id, part_ids=[first, second], md5=md5_hex(b"abcdefg"))
    check_completed(done, b"abcdefg", "part-lists.jsonl")


def parts_beyond_the_declared_size_are_accepted(sdk: Sdk) -> None:
    upload = create(sdk, sdk.alice, 4, "retried-parts.jsonl")
    first, retried, last = add_parts(sdk.alice, upload.id, [b"ab", b"ab", b"cd"])
    done = sdk.alice.uploads.complete(upload.id, part_ids=[retried, last])
    file = check_completed(done, b"abcd", "retried-parts.jsonl")
    check_eq(content_of(sdk.alice, file.id), b"abcd", "only the listed parts count")
    check(first not in (retried, last), "every part has its own id")


def unknown_routes_and_methods(sdk: Sdk) -> None:
    expect_error(
        lambda: sdk.alice.get("/nope", cast_to=FileObject),
        openai.NotFoundError, 404, None, "Invalid URL (GET /v1/nope)",
    )
    expect_error(
        lambda: sdk.alice.get("/uploads", cast_to=Upload),
        openai.APIStatusError, 405, None, "Method not allowed (GET /v1/uploads)",
    )


# ---------------------------------------------------------------- retries


class DropFirstCompleteResponse:
    """A TCP proxy in front of the server that forwards everything, except that it lets the
    first `/complete` request through, reads the server's whole answer, and then closes the
    client's connection without passing the answer on: a response lost on the network."""

    def __init__(self, upstream: str):
        host, port = upstream.rsplit(":", 1)
        self.upstream = (host, int(port))
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.base_url = f"http://127.0.0.1:{self.listener.getsockname()[1]}/v1"
        self.complete_heads: list[bytes] = []
        self.dropped: bytes | None = None
        self._armed = True
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self) -> None:
        self.listener.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        with client, socket.create_connection(self.upstream) as upstream:
            head, rest = _read_head(client)
            if head is None:
                return
            is_complete = b"/complete " in head.split(b"\r\n", 1)[0]
            with self._lock:
                doomed = is_complete and self._armed
                self._armed = self._armed and not doomed
                if is_complete:
                    self.complete_heads.append(head)
            upstream.sendall(head + rest)
            if doomed:
                _send_rest_of_body(client, upstream, head, len(rest))
                self.dropped = _read_response(upstream)
                return  # closing both sockets: the client never sees the answer
            pumps = [
                threading.Thread(target=_pump, args=(client, upstream), daemon=True),
                threading.Thread(target=_pump, args=(upstream, client), daemon=True),
            ]
            for pump in pumps:
                pump.start()
            for pump in pumps:
                pump.join()


def _read_head(sock: socket.socket) -> tuple[bytes | None, bytes]:
    buffer = b""
    while b"\r\n\r\n" not in buffer:
        chunk = sock.recv(65536)
        if not chunk:
            return None, b""
        buffer += chunk
    head, rest = buffer.split(b"\r\n\r\n", 1)
    return head + b"\r\n\r\n", rest


def _content_length(head: bytes) -> int:
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value.strip())
    return 0


def _send_rest_of_body(client: socket.socket, upstream: socket.socket, head: bytes, sent: int) -> None:
    remaining = _content_length(head) - sent
    while remaining > 0:
        chunk = client.recv(min(remaining, 65536))
        if not chunk:
            return
        upstream.sendall(chunk)
        remaining -= len(chunk)


def _read_response(upstream: socket.socket) -> bytes:
    head, body = _read_head(upstream)
    if head is None:
        return b""
    while len(body) < _content_length(head):
        chunk = upstream.recv(65536)
        if not chunk:
            break
        body += chunk
    return head + body


def _pump(source: socket.socket, sink: socket.socket) -> None:
    try:
        while chunk := source.recv(65536):
            sink.sendall(chunk)
    except OSError:
        pass
    finally:
        for sock in (source, sink):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def lost_complete_response_is_retried_into_the_same_file(sdk: Sdk) -> None:
    data = b"retried complete\n"
    filename = "lost-response.jsonl"
    upload = create(sdk, sdk.alice, len(data), filename)
    part_ids = add_parts(sdk.alice, upload.id, [data[:5], data[5:]])
    proxy = DropFirstCompleteResponse(sdk.server.address)
    try:
        through_proxy = sdk.client(KEY_ALICE, base_url=proxy.base_url, source="python via proxy")
        done = through_proxy.uploads.complete(upload.id, part_ids=part_ids, md5=md5_hex(data))
    finally:
        proxy.close()
    check(proxy.dropped is not None and proxy.dropped != b"", "the proxy dropped the server's first answer")
    assert proxy.dropped is not None
    head, _, body = proxy.dropped.partition(b"\r\n\r\n")
    check(head.startswith(b"HTTP/1.1 200"), f"the dropped answer was a 200: {head[:40]!r}")
    sdk.recorder.add(Exchange("python via proxy (dropped)", "POST", f"/v1/uploads/{upload.id}/complete", 200,
                              "application/json", body))
    dropped_file = json.loads(body)["file"]["id"]
    check_eq(len(proxy.complete_heads), 2, "complete requests the server saw (the SDK retried once)")
    check(b"x-stainless-retry-count: 1" in proxy.complete_heads[1].lower(), "the second was the SDK's retry")
    file = check_completed(done, data, filename)
    check_eq(file.id, dropped_file, "the retried complete returns the File of the lost answer")
    files = [f.id for f in sdk.alice.files.list() if f.filename == filename]
    check_eq(files, [dropped_file], "Files made by the Upload")


CASES: list[tuple[str, Callable[[Sdk], None]]] = [
    ("upload_file_chunked with small parts", upload_file_chunked_small_parts),
    ("upload_file_chunked with the default 64 MiB parts", upload_file_chunked_default_part_size),
    ("upload_file_chunked from bytes in memory", upload_file_chunked_from_memory),
    ("create, parts in shuffled order from 3 threads, complete with md5", shuffled_parallel_parts_with_md5),
    ("cancel, cancel twice, then parts and complete are refused", cancel_and_cancel_again),
    ("expires_after on create sets the File's expires_at", expires_after_sets_the_files_expiry),
    ("files.create", files_create),
    ("files.list (paged), retrieve, content, delete", files_list_retrieve_content_delete),
    ("invalid fields are BadRequestError with param", invalid_fields),
    ("unknown or another key's Upload is NotFoundError", unknown_and_foreign_uploads_are_404),
    ("unknown or another key's File is NotFoundError", unknown_and_foreign_files_are_404),
    ("wrong or missing key is AuthenticationError", wrong_or_missing_key_is_401),
    ("part over 64 MiB is APIStatusError 413, not retried", oversized_part_is_413_and_not_retried),
    ("completed Upload refuses parts, other lists, cancel; same complete is idempotent", finished_uploads_refuse_changes),
    ("bad part_ids, byte sum or md5 are BadRequestError and the Upload stays pending", bad_part_lists_keep_the_upload_pending),
    ("parts beyond the declared size are accepted, only listed parts count", parts_beyond_the_declared_size_are_accepted),
    ("unknown route is NotFoundError, wrong method is 405", unknown_routes_and_methods),
    ("SDK retry after a lost complete answer returns the same File, no duplicate", lost_complete_response_is_retried_into_the_same_file),
]


def run(report: Report, server: Server, recorder: Recorder, workdir: Path) -> None:
    sdk = Sdk(server, recorder, workdir)
    for name, case in CASES:
        report.case(f"python sdk: {name}", lambda case=case: case(sdk))


# ---------------------------------------------------------------- over HTTPS


def untrusted_certificate_is_refused(server: Server) -> None:
    """Without the CA, the SDK refuses the server's certificate (and does not retry into it)."""
    client = openai.OpenAI(api_key=KEY_ALICE, base_url=server.base_url, max_retries=0, timeout=REQUEST_TIMEOUT_S)
    try:
        client.files.list()
    except openai.APIConnectionError as error:
        chain, cause = [], error
        while cause is not None:
            chain.append(str(cause))
            cause = cause.__cause__ or cause.__context__
        check(any("certificate verify failed" in text.lower() for text in chain),
              f"the refusal names the certificate: {' <- '.join(chain)}")
        return
    raise CaseFailed("the SDK accepted a certificate that no CA it trusts signed")


HTTPS_CASES: list[tuple[str, Callable[[Sdk], None]]] = [
    ("upload_file_chunked with 64 KiB parts and md5, content read back", upload_file_chunked_small_parts),
    ("parallel parts in shuffled order, complete with md5", shuffled_parallel_parts_with_md5),
    ("files.list pages, retrieve, content, delete", files_list_retrieve_content_delete),
]


def run_https(report: Report, server: Server, recorder: Recorder, workdir: Path, ca_file: Path) -> None:
    """The SDK against an HTTPS server whose certificate a private CA signed: refused without
    that CA, and trusting it through SSL_CERT_FILE (as a team's users would) for the cases."""
    previous = os.environ.pop("SSL_CERT_FILE", None)
    try:
        report.case("python sdk over https: a certificate of an unknown CA is refused",
                    lambda: untrusted_certificate_is_refused(server))
        os.environ["SSL_CERT_FILE"] = str(ca_file)
        sdk = Sdk(server, recorder, workdir)
        for name, case in HTTPS_CASES:
            report.case(f"python sdk over https: {name}", lambda case=case: case(sdk))
    finally:
        if previous is None:
            os.environ.pop("SSL_CERT_FILE", None)
        else:
            os.environ["SSL_CERT_FILE"] = previous
