"""`python -m sipnodes.engine --config FILE`: run one virtual SIP server."""

from __future__ import annotations

import logging
import sys

import uvloop

from .config import ConfigError, load_config
from .server import Worker

USAGE = "usage: python -m sipnodes.engine --config FILE [--log-level LEVEL]\n"


def parse_args(argv: list[str]) -> dict[str, str] | None:
    """The options (`--name VALUE` or `--name=VALUE`); None when the command line is wrong.

    Not argparse: it would cost each idle worker about 0.5 MiB (with the shutil,
    gettext and compression modules it imports) for two options.
    """
    options = {"--log-level": "INFO"}
    args = iter(argv)
    for arg in args:
        name, equals, value = arg.partition("=")
        if name not in ("--config", "--log-level"):
            return None
        options[name] = value if equals else next(args, "")
        if not options[name]:
            return None
    return options if "--config" in options else None


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv in (["-h"], ["--help"]):
        sys.stdout.write(USAGE)
        return 0
    options = parse_args(argv)
    if options is None:
        sys.stderr.write(USAGE)
        return 2
    logging.basicConfig(
        level=options["--log-level"].upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        config = load_config(options["--config"])
    except ConfigError as exc:
        sys.stderr.write(f"{exc}\n")
        return 2
    try:
        return uvloop.run(Worker(options["--config"], config).run())
    except OSError as exc:  # typically the port is taken: the operator's to fix
        sys.stderr.write(
            f"cannot listen on {config.listen.address}:{config.listen.sip_port}: {exc}\n"
        )
        return 1


if __name__ == "__main__":
    sys.exit(main())
