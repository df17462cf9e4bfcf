"""``fr serve``: the face registration REST API (fr_lib.recognition.serve) over an SQLite gallery, with uvicorn.

Every endpoint except /health and the docs needs a bearer token: the write token (``$FR_API_TOKEN`` or
``--token-file``) for everything, the optional read-only token (``$FR_API_READ_TOKEN`` or ``--read-token-file``)
for /match and GET /people only. ``--public-reads`` opens the reads to anyone, with a warning at start-up.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

from fr_lib.cli.compare import CliError, add_model_arguments, load_pipeline, run_cli

TOKEN_ENV = "FR_API_TOKEN"
READ_TOKEN_ENV = "FR_API_READ_TOKEN"
_MAKE_TOKEN = "python -c \"import secrets; print(secrets.token_urlsafe(32))\""


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "serve", help="REST API: enroll people, match photos, list / delete (FastAPI + uvicorn)",
        description=f"Serve the gallery over HTTP; OpenAPI docs at /docs. Every endpoint but /health needs the "
                    f"bearer token from ${TOKEN_ENV} or --token-file; an optional read-only token "
                    f"(${READ_TOKEN_ENV} or --read-token-file) may match and list but not enroll or delete.")
    add_model_arguments(p)
    p.add_argument("--db", type=Path, required=True, metavar="FILE", help="SQLite gallery (created if missing)")
    p.add_argument("--index", choices=("auto", "exact", "ivf", "hnsw", "flat"), default="auto",
                   help="nearest-face search: exact (numpy), a FAISS index kept in step with the SQLite file "
                        "(pip install 'fr_lib[faiss]'), or auto: exact below 50,000 faces, else ivf (default)")
    p.add_argument("--host", default="127.0.0.1", help="interface to listen on (default 127.0.0.1: this machine)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--token-file", type=Path, metavar="FILE", help=f"file holding the token (else ${TOKEN_ENV})")
    p.add_argument("--read-token-file", type=Path, metavar="FILE",
                   help=f"file holding a read-only token for /match and GET /people (else ${READ_TOKEN_ENV}, "
                        "if set)")
    p.add_argument("--public-reads", action="store_true",
                   help="answer /match and GET /people WITHOUT a token (anyone who can reach the port can list "
                        "who is enrolled and identify photos); writes still need the token")
    p.add_argument("--max-request-mb", type=float, default=10.0, help="largest request body, MiB (default 10)")
    p.add_argument("--max-image-side", type=int, default=4096, help="largest photo width/height, px (default 4096)")
    p.set_defaults(func=lambda args: run_cli(serve_command, args))


def _token_from(token_file: Path | None, env: str, flag: str) -> str:
    """The stripped contents of ``token_file`` if given, else of ``$env`` ('' when neither is set)."""
    if token_file is None:
        return os.environ.get(env, "").strip()
    try:
        return token_file.read_text().strip()
    except OSError as e:
        raise CliError(f"cannot read {flag} {token_file}: {e}") from e


def read_token(token_file: Path | None) -> str:
    """The write token: --token-file, else $FR_API_TOKEN; CliError saying how to make one when neither is set."""
    token = _token_from(token_file, TOKEN_ENV, "--token-file")
    if not token:
        raise CliError(f"no API token: set ${TOKEN_ENV} or pass --token-file (e.g. {_MAKE_TOKEN} > token.txt)")
    return token


def read_read_token(token_file: Path | None) -> str | None:
    """The optional read-only token: --read-token-file (must not be empty), else $FR_API_READ_TOKEN, else None."""
    token = _token_from(token_file, READ_TOKEN_ENV, "--read-token-file")
    if token_file is not None and not token:
        raise CliError(f"--read-token-file {token_file} is empty (e.g. {_MAKE_TOKEN} > {token_file})")
    return token or None


def serve_command(args) -> int:
    from fr_lib.recognition.index import open_gallery
    from fr_lib.recognition.serve import ServeLimits, create_app, run_server

    token, read_only = read_token(args.token_file), read_read_token(args.read_token_file)
    if args.max_request_mb <= 0 or args.max_image_side <= 0:
        raise CliError("--max-request-mb and --max-image-side must be positive")
    pipeline, threshold, where = load_pipeline(args)
    try:
        gallery = open_gallery(args.db, pipeline, threshold=threshold, index=args.index)
    except ImportError as e:
        raise CliError(str(e)) from e
    limits = ServeLimits(max_request_bytes=int(args.max_request_mb * 1024 * 1024),
                         max_image_side=args.max_image_side, public_reads=args.public_reads)
    try:
        app = create_app(pipeline, gallery, token, limits, read_token=read_only)
    except ValueError as e:
        raise CliError(str(e)) from e
    print(f"gallery {args.db}: {len(gallery)} people, model {gallery.model_name}, threshold {threshold:.4f} "
          f"({where}); docs at http://{args.host}:{args.port}/docs")
    if args.public_reads:
        print(f"warning: --public-reads: POST /match and GET /people answer WITHOUT a token: anyone who can reach "
              f"{args.host}:{args.port} can list who is enrolled and identify photos; writes still need the token",
              file=sys.stderr)
    else:
        print("reads and writes need the bearer token" + (" (the read-only token opens /match and GET /people)"
                                                          if read_only else ""))
    run_server(app, host=args.host, port=args.port)
    return 0
