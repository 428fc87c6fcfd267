"""The conformance run: `cargo xtask conformance` calls this with the venv's Python.

It starts our server (and, in the background, the Prism mock of OpenAI's document), then runs
  1. the official Python SDK against the server (python_sdk.py),
  2. the official Node SDK against the server (node_sdk.mjs),
  3. with --tls-cert/--tls-key/--tls-ca, both SDKs again over HTTPS against a server whose
     certificate a private CA signed, trusting it as their users do (SSL_CERT_FILE for
     Python, NODE_EXTRA_CA_CERTS for Node), and Python refusing it without,
  4. the schema checks of every JSON body the server answered in 1 to 3 (harness.py),
  5. Prism's self-check and our Rust clients against Prism (prism.py),
and prints one line per case, then `N passed, N failed`. Exit status 1 on any FAIL.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import prism
import python_sdk
from harness import Recorder, Report, Server, SpecValidator, eprint

HERE = Path(__file__).resolve().parent
NODE_SDK_TIMEOUT_S = 120


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--server", required=True, type=Path, help="the server binary, e.g. target/debug/uploads")
    parser.add_argument("--server-subcommand", default="serve", help="its subcommand taking --listen, --data-dir, --api-key")
    parser.add_argument("--spec", required=True, type=Path, help="OpenAI's OpenAPI document")
    parser.add_argument("--node-dir", required=True, type=Path, help="folder whose node_modules has openai and prism")
    parser.add_argument("--workdir", required=True, type=Path, help="scratch folder, emptied first")
    parser.add_argument("--prism-client", action="append", default=[], metavar="NAME=COMMAND",
                        help="a Rust client example to run against Prism; the base URL is appended")
    parser.add_argument("--prism-client-missing", action="append", default=[], metavar="NAME",
                        help="a client crate that does not exist yet: its case is skipped, visibly")
    parser.add_argument("--tls-cert", type=Path, help="a certificate (PEM) for 127.0.0.1, for the HTTPS run")
    parser.add_argument("--tls-key", type=Path, help="its private key (PEM)")
    parser.add_argument("--tls-ca", type=Path, help="the CA (PEM) that signed it, which the SDKs are told to trust")
    args = parser.parse_args()
    tls = (args.tls_cert, args.tls_key, args.tls_ca)
    if any(tls) and not all(tls):
        parser.error("--tls-cert, --tls-key and --tls-ca go together")

    shutil.rmtree(args.workdir, ignore_errors=True)
    args.workdir.mkdir(parents=True)
    report = Report()
    recorder = Recorder()
    validator = SpecValidator(args.spec)
    mock = prism.Prism(args.node_dir, args.spec, args.workdir / "prism.log")
    server = None
    try:
        try:
            server = Server(
                [str(args.server), args.server_subcommand],
                args.workdir / "data",
                python_sdk.API_KEYS,
                args.workdir / "server.log",
            )
        except (OSError, RuntimeError) as error:
            report.fails("server starts", str(error))
        if server is not None:
            python_sdk.run(report, server, recorder, args.workdir)
            run_node_sdk(report, server, recorder, args.node_dir, args.workdir)
            if args.tls_ca is not None:
                run_https(report, args, recorder)
            validator.validate_all(report, recorder)
        clients = [spec.split("=", 1) for spec in args.prism_client]
        prism.run(report, mock, validator, args.workdir,
                  [(name, shlex.split(command)) for name, command in clients], args.prism_client_missing)
    finally:
        mock.stop()
        if server is not None:
            server.stop()
    print(report.summary(), flush=True)
    if report.failed:
        eprint(f"conformance: logs and data are in {args.workdir} (server.log, prism.log)")
    return 1 if report.failed else 0


def run_https(report: Report, args: argparse.Namespace, recorder: Recorder) -> None:
    """Starts a second server, on HTTPS, and runs both SDKs against it trusting the test CA."""
    command = [str(args.server), args.server_subcommand, "--tls-cert", str(args.tls_cert), "--tls-key", str(args.tls_key)]
    try:
        server = Server(command, args.workdir / "data-https", python_sdk.API_KEYS, args.workdir / "server-https.log", "https")
    except (OSError, RuntimeError) as error:
        report.fails("https server starts", str(error))
        return
    try:
        python_sdk.run_https(report, server, recorder, args.workdir, args.tls_ca)
        run_node_sdk(report, server, recorder, args.node_dir, args.workdir,
                     name="node sdk over https", env={"NODE_EXTRA_CA_CERTS": str(args.tls_ca)})
    finally:
        server.stop()


def run_node_sdk(
    report: Report, server: Server, recorder: Recorder, node_dir: Path, workdir: Path,
    name: str = "node sdk", env: dict[str, str] | None = None,
) -> None:
    """Runs node_sdk.mjs (with `env` added to the environment); its PASS/FAIL lines become
    cases named after `name`, its recorded bodies are checked."""
    records = workdir / f"{name.replace(' ', '-')}-responses.jsonl"
    command = ["node", str(HERE / "node_sdk.mjs"), server.base_url, python_sdk.KEY_ALICE, str(records), str(node_dir.resolve())]
    try:
        finished = subprocess.run(command, capture_output=True, text=True, timeout=NODE_SDK_TIMEOUT_S,
                                  env={**os.environ, **(env or {})})
    except subprocess.TimeoutExpired:
        report.fails(name, f"did not finish within {NODE_SDK_TIMEOUT_S} s")
        return
    cases = 0
    for line in finished.stdout.splitlines():
        if line.startswith("PASS "):
            cases += 1
            report.passes(f"{name}: " + line[len("PASS "):])
        elif line.startswith("FAIL "):
            cases += 1
            case, _, reason = line[len("FAIL "):].partition(": ")
            report.fails(f"{name}: " + case, reason)
    if finished.returncode != 0 or cases == 0:
        tail = " | ".join(finished.stderr.strip().splitlines()[-5:])
        report.fails(name, f"exited with {finished.returncode} after {cases} cases: {tail}")
    recorder.load_json_lines(records, "node")


if __name__ == "__main__":
    sys.exit(main())
