"""`python -m sipnodes.engine --config FILE`: run one virtual SIP server."""

from __future__ import annotations

import argparse
import logging
import sys

import uvloop

from .config import ConfigError, load_config
from .server import Worker


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sipnodes.engine")
    parser.add_argument("--config", required=True, help="the server's JSON config file")
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        sys.stderr.write(f"{exc}\n")
        return 2
    try:
        return uvloop.run(Worker(args.config, config).run())
    except OSError as exc:  # typically the port is taken: the operator's to fix
        sys.stderr.write(
            f"cannot listen on {config.listen.address}:{config.listen.sip_port}: {exc}\n"
        )
        return 1


if __name__ == "__main__":
    sys.exit(main())
