"""`python -m sipnodes.callback_client`: ask a virtual server for a call-back, as an AS does.

Sends one REQUEST (or, with --cancel, a CANCEL), prints the ACK, and after an
accepted REQUEST waits for the RESPONSE and prints it; each line is the datagram
as received. With a secret (--secret, or the environment variable
SIPCLOUD_CALLBACK_SECRET so that it stays out of `ps`), it adds `ts` and `sig`.
The protocol is in docs/callback.md. No Django: it runs anywhere the package does.

Exit status: 0 accepted (and the RESPONSE came), 1 refused (ACK result not 0),
3 no answer in time, 2 bad command line.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import time
import uuid

from sipnodes.engine.callback import MessageError, encode, encode_signed, parse

SECRET_ENV = "SIPCLOUD_CALLBACK_SECRET"


def arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m sipnodes.callback_client",
        description="Send a call-back REQUEST (or CANCEL) to a virtual server and print the "
        "ACK and the RESPONSE.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="the server's address")
    parser.add_argument("--port", type=int, required=True, help="the server's call-back port")
    parser.add_argument("--bind", default="", help="local address to send from")
    parser.add_argument("--callid", default="", help="default: a new random id")
    parser.add_argument("--callee1", help="the number called first")
    parser.add_argument("--callee2", help="the number called when callee1 answers")
    parser.add_argument("--caller1", default="", help="caller number shown to callee1")
    parser.add_argument("--caller2", default="", help="caller number shown to callee2")
    parser.add_argument("--maxduration", default="", help="seconds of talk at most")
    parser.add_argument("--cancel", metavar="CALLID", help="send CANCEL for this callid instead")
    parser.add_argument("--secret", default=os.environ.get(SECRET_ENV, ""), help="shared secret")
    parser.add_argument("--timeout", type=float, default=3.0, help="seconds to wait for the ACK")
    parser.add_argument(
        "--wait", type=float, default=3600.0, help="seconds to wait for the RESPONSE"
    )
    args = parser.parse_args(argv)
    if args.cancel is None and not (args.callee1 and args.callee2):
        parser.error("a REQUEST needs --callee1 and --callee2 (or use --cancel CALLID)")
    return args


def message(args: argparse.Namespace) -> bytes:
    """The datagram: REQUEST or CANCEL, signed when there is a secret."""
    if args.cancel is not None:
        method, fields = "CANCEL", [("callid", args.cancel)]
    else:
        method = "REQUEST"
        fields = [("callid", args.callid or uuid.uuid4().hex[:16])]
        for name in ("callee1", "callee2", "caller1", "caller2", "maxduration"):
            if getattr(args, name):
                fields.append((name, getattr(args, name)))
    if not args.secret:
        return encode(method, fields)
    fields.append(("ts", str(int(time.time()))))
    return encode_signed(method, fields, args.secret.encode("utf-8"))


def receive(sock: socket.socket, method: str, callid: str, timeout: float) -> dict[str, str]:
    """The next `method` datagram for `callid` (others are skipped), printed as received."""
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        sock.settimeout(left)
        try:
            data = sock.recv(4096)
        except TimeoutError:
            break
        except ConnectionRefusedError:  # ICMP port unreachable: nothing listens there
            sys.stderr.write("the port is closed (ICMP port unreachable)\n")
            break
        try:
            received = parse(data)
        except MessageError:
            continue
        if received.method == method and received.fields.get("callid") in (callid, ""):
            sys.stdout.write(data.decode("ascii") + "\n")
            sys.stdout.flush()
            return received.fields
    raise TimeoutError(f"no {method} within {timeout:g} s")


def main(argv: list[str] | None = None) -> int:
    args = arguments(argv)
    data = message(args)
    callid = parse(data).fields["callid"]
    family = socket.AF_INET6 if ":" in args.host else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        if args.bind:
            sock.bind((args.bind, 0))
        sock.connect((args.host, args.port))  # only the server's datagrams reach us
        sock.send(data)
        try:
            acked = receive(sock, "ACK", callid, args.timeout)
            if acked.get("result") != "0":
                return 1
            if args.cancel is None:
                receive(sock, "RESPONSE", callid, args.wait)
        except TimeoutError as exc:
            sys.stderr.write(f"{exc}\n")
            return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
