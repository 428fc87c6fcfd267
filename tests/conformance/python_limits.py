"""The official OpenAI Python SDK against a server with a quota and a request rate.

Usage: python_limits.py BASE_URL API_KEY QUOTA_BYTES REQUESTS_PER_MINUTE WORKDIR

* An Upload over the owner's bytes quota is refused as OpenAI refuses one over its file
  storage quota (`openai.BadRequestError`, 400, `param` `bytes`), and nothing is stored: the
  owner has no File, and an Upload of exactly the room left goes through.
* A burst of requests over the key's rate completes through the SDK's own retries: it reads
  the 429's `retry-after-ms` and waits that long; every 429 carries OpenAI's headers. Then a
  chunked Upload against the spent bucket completes the same way.

Prints `ok` and exits 0, or names what differs and exits 1. Run by
crates/uploads-server/tests/sdk_limits.rs.
"""

from __future__ import annotations

import sys
from pathlib import Path

import openai


def check(condition: bool, message: str) -> None:
    if not condition:
        raise AssertionError(message)


def main() -> int:
    base_url, api_key = sys.argv[1], sys.argv[2]
    quota_bytes, per_minute = int(sys.argv[3]), int(sys.argv[4])
    workdir = Path(sys.argv[5])
    answers: list = []
    client = openai.OpenAI(
        api_key=api_key,
        base_url=base_url,
        # Enough retries for a burst's requests to each wait for a token.
        max_retries=10,
        timeout=60,
        http_client=openai.DefaultHttpxClient(event_hooks={"response": [answers.append]}),
    )

    # Over the quota: refused, nothing stored.
    try:
        client.uploads.create(
            bytes=quota_bytes + 1, filename="big.txt", mime_type="text/plain", purpose="assistants"
        )
        raise AssertionError("an Upload over the quota was accepted")
    except openai.BadRequestError as error:
        body = error.body or {}
        check(error.status_code == 400, f"status {error.status_code}")
        check(body.get("param") == "bytes", f"param {body!r}")
        check(body.get("code") is None, f"code {body!r}")
        check(
            str(body.get("message", "")).startswith("You have exceeded your file storage quota."),
            f"message {body!r}",
        )
    check(list(client.files.list()) == [], "a File is stored after the refusal")
    # The refused Upload took no room: exactly the quota fits.
    path = workdir / "exact.txt"
    path.write_bytes(b"q" * quota_bytes)
    upload = client.uploads.upload_file_chunked(
        file=path, mime_type="text/plain", purpose="assistants", part_size=quota_bytes
    )
    check(upload.status == "completed" and upload.file is not None, f"upload {upload!r}")
    try:
        client.uploads.create(bytes=1, filename="one.txt", mime_type="text/plain", purpose="assistants")
        raise AssertionError("an Upload past a full quota was accepted")
    except openai.BadRequestError as error:
        check(error.status_code == 400, f"status {error.status_code}")
    check([file.id for file in client.files.list()] == [upload.file.id], "the Files differ")

    # A burst over the rate: every call returns, some after a 429 the SDK waited out.
    answers.clear()
    for _ in range(per_minute + 5):
        client.files.retrieve(upload.file.id)
    refused = [answer for answer in answers if answer.status_code == 429]
    check(len(refused) >= 5, f"{len(refused)} requests were refused in a burst of {per_minute + 5}")
    for answer in refused:
        for header in (
            "retry-after-ms",
            "retry-after",
            "x-ratelimit-limit-requests",
            "x-ratelimit-remaining-requests",
            "x-ratelimit-reset-requests",
        ):
            check(header in answer.headers, f"a 429 without {header}: {dict(answer.headers)}")
        check(answer.headers["x-ratelimit-limit-requests"] == str(per_minute), "the limit differs")
        check(answer.headers["x-ratelimit-remaining-requests"] == "0", "remaining is not 0")
        answer.read()
        error = answer.json()["error"]
        check(error["type"] == "requests" and error["code"] == "rate_limit_exceeded", f"{error!r}")
    allowed = [answer for answer in answers if answer.status_code == 200]
    check(len(allowed) == per_minute + 5, f"{len(allowed)} calls succeeded")
    check(all("x-ratelimit-remaining-requests" in answer.headers for answer in allowed), "no x-ratelimit headers on a 200")

    # An Upload of several Parts against the spent bucket: each request waits for its token.
    client.files.delete(upload.file.id)
    answers.clear()
    path = workdir / "parts.txt"
    path.write_bytes(b"p" * quota_bytes)
    chunked = client.uploads.upload_file_chunked(
        file=path, mime_type="text/plain", purpose="assistants", part_size=quota_bytes // 4
    )
    check(chunked.status == "completed" and chunked.file is not None, f"upload {chunked!r}")
    check(client.files.content(chunked.file.id).content == path.read_bytes(), "the content differs")
    check(any(answer.status_code == 429 for answer in answers), "no request of the Upload was refused")
    print("ok")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except AssertionError as failure:
        print(f"failed: {failure}", file=sys.stderr)
        sys.exit(1)
