"""`python -m sipnodes.webphone --config var/hosts/<host>/nodes/<id>.json`: the web phone
gateway of one virtual server, reading the same config file as the server's worker."""

import argparse
import asyncio
import logging
import sys

from sipnodes.engine.config import ConfigError, load_config
from sipnodes.webphone.gateway import Gateway


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sipnodes.webphone")
    parser.add_argument("--config", required=True, help="the server's worker config (JSON)")
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        config = load_config(args.config)
    except (ConfigError, OSError) as exc:
        logging.getLogger("sipnodes.webphone").error("%s", exc)
        return 2

    async def run() -> None:
        await Gateway(config, args.config).run()

    asyncio.run(run())
    return 0


if __name__ == "__main__":
    sys.exit(main())
