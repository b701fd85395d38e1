"""A broken router for the fault tests: answers SSDP searches, then garbage or nothing.

Run in the router's namespace: `python -m tests.sipnodes.upnp.fake_igd ADDRESS MODE`.
MODE `garbage`: the description URL returns a body that is not XML; `slow`: the HTTP
server accepts and never answers; `soap-garbage`: a valid IGD description, then actions
answered with a body that is not XML; `bad-address`: valid answers, but the external
address is not an address. Serves until killed.
"""

import asyncio
import socket
import struct
import sys

SSDP = ("239.255.255.250", 1900)
HTTP_PORT = 5000


def ssdp_socket(address: str) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("", SSDP[1]))
    group = struct.pack("4s4s", socket.inet_aton(SSDP[0]), socket.inet_aton(address))
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, group)
    sock.setblocking(False)
    return sock


async def answer_searches(sock: socket.socket, address: str) -> None:
    loop = asyncio.get_running_loop()
    while True:
        data, peer = await loop.sock_recvfrom(sock, 2048)
        if not data.startswith(b"M-SEARCH"):
            continue
        st = next(
            (line.split(b":", 1)[1].strip() for line in data.split(b"\r\n")
             if line.upper().startswith(b"ST:")),
            b"ssdp:all",
        )  # fmt: skip
        reply = (
            b"HTTP/1.1 200 OK\r\nCACHE-CONTROL: max-age=120\r\nEXT:\r\n"
            + f"LOCATION: http://{address}:{HTTP_PORT}/rootDesc.xml\r\n".encode()
            + b"SERVER: fake/1 UPnP/1.1 fake/1\r\nST: " + st + b"\r\n"
            + b"USN: uuid:00000000-0000-0000-0000-000000000001::" + st + b"\r\n\r\n"
        )  # fmt: skip
        await loop.sock_sendto(sock, reply, peer)


SERVICE = "urn:schemas-upnp-org:service:WANIPConnection:1"
DESCRIPTION = f"""<?xml version="1.0"?>
<root xmlns="urn:schemas-upnp-org:device-1-0">
<specVersion><major>1</major><minor>0</minor></specVersion>
<device>
<deviceType>urn:schemas-upnp-org:device:InternetGatewayDevice:1</deviceType>
<friendlyName>fake</friendlyName><manufacturer>tests</manufacturer><modelName>fake</modelName>
<UDN>uuid:00000000-0000-0000-0000-000000000001</UDN>
<serviceList><service>
<serviceType>{SERVICE}</serviceType><serviceId>urn:upnp-org:serviceId:WANIPConn1</serviceId>
<SCPDURL>/WANIPCn.xml</SCPDURL><controlURL>/ctl/IPConn</controlURL>
<eventSubURL>/evt/IPConn</eventSubURL>
</service></serviceList>
</device>
</root>"""
ADD_ARGS = (
    ("NewRemoteHost", "RemoteHost"),
    ("NewExternalPort", "ExternalPort"),
    ("NewProtocol", "PortMappingProtocol"),
    ("NewInternalPort", "InternalPort"),
    ("NewInternalClient", "InternalClient"),
    ("NewEnabled", "PortMappingEnabled"),
    ("NewPortMappingDescription", "PortMappingDescription"),
    ("NewLeaseDuration", "PortMappingLeaseDuration"),
)
VARIABLES = (
    ("ExternalIPAddress", "string"),
    ("RemoteHost", "string"),
    ("ExternalPort", "ui2"),
    ("PortMappingProtocol", "string"),
    ("InternalPort", "ui2"),
    ("InternalClient", "string"),
    ("PortMappingEnabled", "boolean"),
    ("PortMappingDescription", "string"),
    ("PortMappingLeaseDuration", "ui4"),
)


def _argument(name: str, direction: str, variable: str) -> str:
    return (
        f"<argument><name>{name}</name><direction>{direction}</direction>"
        f"<relatedStateVariable>{variable}</relatedStateVariable></argument>"
    )


SCPD = (
    '<?xml version="1.0"?><scpd xmlns="urn:schemas-upnp-org:service-1-0">'
    "<specVersion><major>1</major><minor>0</minor></specVersion><actionList>"
    "<action><name>GetExternalIPAddress</name><argumentList>"
    + _argument("NewExternalIPAddress", "out", "ExternalIPAddress")
    + "</argumentList></action><action><name>AddPortMapping</name><argumentList>"
    + "".join(_argument(name, "in", variable) for name, variable in ADD_ARGS)
    + "</argumentList></action></actionList><serviceStateTable>"
    + "".join(
        f'<stateVariable sendEvents="no"><name>{n}</name><dataType>{t}</dataType></stateVariable>'
        for n, t in VARIABLES
    )
    + "</serviceStateTable></scpd>"
)
BAD_ADDRESS = (
    '<?xml version="1.0"?><s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/" '
    's:encodingStyle="http://schemas.xmlsoap.org/soap/encoding/"><s:Body>'
    f'<u:GetExternalIPAddressResponse xmlns:u="{SERVICE}">'
    "<NewExternalIPAddress>not-an-address</NewExternalIPAddress>"
    "</u:GetExternalIPAddressResponse></s:Body></s:Envelope>"
)
GARBAGE = "<<<this is not UPnP"


def answer(path: str, mode: str) -> str:
    if mode == "garbage":
        return GARBAGE
    if path == "/rootDesc.xml":
        return DESCRIPTION
    if path == "/WANIPCn.xml":
        return SCPD
    return BAD_ADDRESS if mode == "bad-address" else GARBAGE


async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, mode: str) -> None:
    head = await reader.readuntil(b"\r\n\r\n")
    if mode == "slow":
        await asyncio.sleep(600)
    path = head.split(b" ", 2)[1].decode()
    body = answer(path, mode).encode()
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/xml\r\n")
    writer.write(f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode() + body)
    await writer.drain()
    writer.close()


async def main(address: str, mode: str) -> None:
    server = await asyncio.start_server(lambda r, w: serve(r, w, mode), address, HTTP_PORT)
    async with server:
        await answer_searches(ssdp_socket(address), address)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
