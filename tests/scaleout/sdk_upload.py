"""The official Python SDK's `upload_file_chunked` through the scale-out test's balancer.

Every request says `Connection: close`, so each is a new connection and the round-robin
balancer sends consecutive requests (create, each part, complete, content) to different
instances. Usage: sdk_upload.py BASE_URL API_KEY FILE PART_SIZE. Prints the File's id;
exits non-zero (with the reason) when anything differs.
"""

import hashlib
import sys
from pathlib import Path

import openai


def main() -> int:
    base_url, api_key, path, part_size = sys.argv[1], sys.argv[2], Path(sys.argv[3]), int(sys.argv[4])
    data = path.read_bytes()
    md5 = hashlib.md5(data).hexdigest()
    client = openai.OpenAI(
        api_key=api_key,
        base_url=base_url,
        http_client=openai.DefaultHttpxClient(headers={"Connection": "close"}),
    )
    upload = client.uploads.upload_file_chunked(
        file=path, mime_type="text/jsonl", purpose="batch", part_size=part_size, md5=md5
    )
    if upload.status != "completed" or upload.file is None:
        print(f"the Upload is {upload.status}, with file {upload.file}", file=sys.stderr)
        return 1
    content = client.files.content(upload.file.id).content
    if content != data:
        print(f"files.content returned {len(content)} bytes that differ from the file's {len(data)}", file=sys.stderr)
        return 1
    listed = [file.id for file in client.files.list(purpose="batch")]
    if upload.file.id not in listed:
        print(f"files.list does not name {upload.file.id}: {listed}", file=sys.stderr)
        return 1
    print(upload.file.id)
    return 0


if __name__ == "__main__":
    sys.exit(main())
