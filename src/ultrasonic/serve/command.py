"""`ultrasonic serve RUN_DIR`: its options and what it runs (the CLI, cli.py, registers both).

    add_parser(sub, command_factory, add_ood_option)   # in cli.py's parser
    run(args)                                          # its handler

Importing this module imports neither FastAPI nor Keras: `ultrasonic --help` stays fast.
"""

from __future__ import annotations

import argparse
import os

from ultrasonic.rundir import ENGINES

SETTINGS = ("token", "db", "max_upload_mb", "max_pixels", "engine", "ood", "log_filenames", "header_timeout_s",
            "body_timeout_s", "min_body_rate", "decode_budget_mb", "budget_wait_s", "max_batch", "max_wait_ms")


def add_parser(sub, command_factory, *extra_options) -> argparse.ArgumentParser:
    """The `serve` sub-command; `command_factory(sub, name, help)` makes it (the CLI's shared options),
    each of `extra_options(parser)` adds options shared with other commands (--ood)."""
    p = command_factory(sub, "serve", "REST service and web page for a run (FastAPI on uvicorn)")
    p.add_argument("run_dir")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine "
                                                       "only; any other needs --token or --insecure)")
    p.add_argument("--port", type=int, default=8000, help="TCP port (default 8000)")
    p.add_argument("--token", default=os.environ.get("ULTRASONIC_TOKEN"),
                   help="require 'Authorization: Bearer TOKEN' on /predict, /predictions, /cam and /preview "
                        "(default $ULTRASONIC_TOKEN; none)")
    p.add_argument("--insecure", action="store_true",
                   help="allow a --host other than loopback without --token (default: refused)")
    p.add_argument("--db", help="SQLite audit log of every prediction (default RUN_DIR/audit.sqlite; made 0600)")
    p.add_argument("--max-upload-mb", type=float, help="largest upload accepted (default 32)")
    p.add_argument("--max-pixels", type=int,
                   help="largest image in pixels, against decompression bombs (default 50 million)")
    p.add_argument("--engine", choices=ENGINES,
                   help="keras (default; with heat maps) or onnx: RUN_DIR/model.onnx through ONNX Runtime, "
                        "no TensorFlow needed, no heat maps (make it with `ultrasonic export`)")
    p.add_argument("--log-filenames", action="store_true", default=None,
                   help="write uploaded file names to the server log (default: a short hash of each upload; "
                        "names often carry a patient's name or record number)")
    p.add_argument("--header-timeout", type=float, dest="header_timeout_s", metavar="S",
                   help="close a connection whose request headers are not complete within S seconds (default 10; "
                        "0: never)")
    p.add_argument("--body-timeout", type=float, dest="body_timeout_s", metavar="S",
                   help="seconds a request body gets before --min-body-rate applies (default 10)")
    p.add_argument("--min-body-rate", type=float, metavar="BYTES_PER_S",
                   help="a body slower than this on average after --body-timeout gets 408 and the connection is "
                        "closed (default 10240: a 32 MB upload has 55 minutes; 0: no minimum)")
    p.add_argument("--decode-budget-mb", type=float,
                   help="estimated memory of all images decoding at once; over it a request waits --budget-wait "
                        "seconds, then gets 503 with Retry-After (default 1024; 0: no budget)")
    p.add_argument("--budget-wait", type=float, dest="budget_wait_s", metavar="S",
                   help="how long a request waits for room in the decoding budget (default 5)")
    p.add_argument("--max-batch", type=int,
                   help="at most this many concurrent requests share one model call (default 16; 1: each its own)")
    p.add_argument("--max-wait-ms", type=float,
                   help="how long a request waits for others to share its model call (default 10)")
    for add in extra_options:
        add(p)
    p.set_defaults(func=run)
    return p


def run(args) -> int:
    from ultrasonic.serve import ServeSettings, check_exposure, serve

    check_exposure(args.host, args.token, args.insecure)  # before the settings: the first thing wrong is this
    given = {k: getattr(args, k) for k in SETTINGS}
    settings = ServeSettings(**{k: v for k, v in given.items() if v is not None})
    serve(args.run_dir, args.host, args.port, settings, insecure=args.insecure)
    return 0
