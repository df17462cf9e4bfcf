"""``fr serve``: the face registration REST API (fr_lib.recognition.serve) over an SQLite gallery, with uvicorn."""
from __future__ import annotations

import os
from pathlib import Path

from fr_lib.cli.compare import CliError, add_model_arguments, load_pipeline, run_cli

TOKEN_ENV = "FR_API_TOKEN"


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "serve", help="REST API: enroll people, match photos, list / delete (FastAPI + uvicorn)",
        description=f"Serve the gallery over HTTP; OpenAPI docs at /docs. Writes need the bearer token from "
                    f"${TOKEN_ENV} or --token-file.")
    add_model_arguments(p)
    p.add_argument("--db", type=Path, required=True, metavar="FILE", help="SQLite gallery (created if missing)")
    p.add_argument("--host", default="127.0.0.1", help="interface to listen on (default 127.0.0.1: this machine)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--token-file", type=Path, metavar="FILE", help=f"file holding the token (else ${TOKEN_ENV})")
    p.add_argument("--max-request-mb", type=float, default=10.0, help="largest request body, MiB (default 10)")
    p.add_argument("--max-image-side", type=int, default=4096, help="largest photo width/height, px (default 4096)")
    p.add_argument("--protect-reads", action="store_true", help="require the token for /match and GET /people too")
    p.set_defaults(func=lambda args: run_cli(serve_command, args))


def read_token(token_file: Path | None) -> str:
    if token_file is not None:
        try:
            token = token_file.read_text().strip()
        except OSError as e:
            raise CliError(f"cannot read --token-file {token_file}: {e}") from e
    else:
        token = os.environ.get(TOKEN_ENV, "").strip()
    if not token:
        raise CliError(f"no API token: set ${TOKEN_ENV} or pass --token-file (e.g. "
                       "python -c \"import secrets; print(secrets.token_urlsafe(32))\" > token.txt)")
    return token


def serve_command(args) -> int:
    from fr_lib.recognition.gallery import Gallery
    from fr_lib.recognition.serve import ServeLimits, create_app, run_server

    token = read_token(args.token_file)
    pipeline, threshold, where = load_pipeline(args)
    gallery = Gallery(args.db, pipeline, threshold=threshold)
    limits = ServeLimits(max_request_bytes=int(args.max_request_mb * 1024 * 1024),
                         max_image_side=args.max_image_side, protect_reads=args.protect_reads)
    try:
        app = create_app(pipeline, gallery, token, limits)
    except ValueError as e:
        raise CliError(str(e)) from e
    print(f"gallery {args.db}: {len(gallery)} people, model {gallery.model_name}, threshold {threshold:.4f} "
          f"({where}); docs at http://{args.host}:{args.port}/docs")
    run_server(app, host=args.host, port=args.port)
    return 0
