"""The peer of `cargo xtask bench`: the official OpenAI Python SDK uploading a file as its
users must when they want the md5 checked: hashlib's md5 of the file first, then
`client.uploads.upload_file_chunked` with it.

Prints one line on stdout: `upload_id=<id> file_id=<id> seconds=<md5 + upload, wall time>`.
Interpreter start-up and `import openai` are left out of the time on purpose (they are not
the transfer), which favours the SDK.
"""

import argparse
import hashlib
import os
import time
from pathlib import Path

from openai import OpenAI

HASH_READ_BYTES = 1024 * 1024


def md5_of(path: Path) -> str:
    digest = hashlib.md5()
    with path.open("rb") as file:
        while chunk := file.read(HASH_READ_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--file", type=Path, required=True)
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--part-size", type=int, default=64 * 1024 * 1024)
    parser.add_argument("--purpose", default="user_data")
    parser.add_argument("--mime-type", default="application/octet-stream")
    args = parser.parse_args()

    client = OpenAI(api_key=os.environ["OPENAI_API_KEY"], base_url=args.base_url)
    size = args.file.stat().st_size
    started = time.perf_counter()
    md5 = md5_of(args.file)
    upload = client.uploads.upload_file_chunked(
        file=args.file,
        mime_type=args.mime_type,
        purpose=args.purpose,
        bytes=size,
        part_size=args.part_size,
        md5=md5,
    )
    seconds = time.perf_counter() - started
    if upload.status != "completed" or upload.file is None:
        raise SystemExit(f"the upload ended {upload.status}, not completed")
    print(f"upload_id={upload.id} file_id={upload.file.id} seconds={seconds:.6f}")


if __name__ == "__main__":
    main()
