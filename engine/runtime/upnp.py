"""UPnP IGD client for RFC 6081's UPnP-enabled symmetric NAT extension (docs/protocol.md §13.8).

The protocol core does no I/O (docs/architecture.md), so discovery (SSDP), the device
description (HTTP) and the SOAP calls that open, refresh and remove a UDP port mapping on the
Internet Gateway Device live here, in the runtime; the HTTP exchanges go through
`engine.runtime.http_lite` (a plain socket), the XML through expat.

Everything an IGD sends comes from the LAN, where anyone can answer an SSDP search, so it is
treated as hostile: every read is bounded in size and time, XML with a DOCTYPE (the door to
entity expansion) is refused before parsing, the device description and the control URL must
name the host that answered the search, and any malformed answer is an `UpnpError` whose one
meaning to the caller is "no UPnP here".

`python -m engine.runtime.upnp map|unmap|show ...` runs the same calls once, for the lab and
for diagnosis (`show` finds the IGD and its external address and changes nothing).
"""

from __future__ import annotations

import socket
import sys
import time
from xml.parsers import expat

from engine.proto.addr import ipv4_pack
from engine.proto.records import dataclass
from engine.runtime import http_lite

# No codec lookups: every byte string here is decoded or encoded as ASCII, Latin-1 or UTF-8,
# which CPython converts without importing a codec module (a chrooted worker could not), and
# http_lite never resolves a host name (no "idna").  tests/unit/test_upnp.py runs a whole
# exchange with imports blocked.


def escape(text: str) -> str:
    """``&``, ``<`` and ``>`` as XML entities: `xml.sax.saxutils.escape`, whose module imports
    `urllib.request` (and with it `hashlib`, `tempfile`, `bz2`, `lzma`...: about 20 ms and
    several MiB in a client's worker, docs/performance.md)."""
    return text.replace("&", "&amp;").replace(">", "&gt;").replace("<", "&lt;")

SSDP_GROUP = ("239.255.255.250", 1900)
SEARCH_TARGETS = ("urn:schemas-upnp-org:device:InternetGatewayDevice:1",
                  "urn:schemas-upnp-org:device:InternetGatewayDevice:2")
WAN_SERVICES = ("urn:schemas-upnp-org:service:WANIPConnection:",
                "urn:schemas-upnp-org:service:WANPPPConnection:")
MAX_SSDP_BYTES = 2048
"""An SSDP answer is a few headers; anything longer is not one."""
MAX_XML_BYTES = 65536
"""miniupnpd's device description is about 3 KiB; 64 KiB leaves room for bigger IGDs."""
HTTP_TIMEOUT = 3.0
"""Seconds for each connect and each read of one HTTP exchange."""
HTTP_TOTAL = 3.0
"""Seconds for one whole HTTP exchange, connect to last byte: a device that trickles its
answer within each read's timeout ends here too, which keeps the keeper's DeletePortMapping at
shutdown within its bound (engine.runtime.upnp_keeper.UpnpKeeper.stop)."""
CONFLICT_IN_MAPPING = 718
"""UPnP error: the external port is mapped to another client already."""


class UpnpError(Exception):
    """No usable IGD: the one-line reason (what failed, and where)."""


@dataclass(frozen=True)
class Igd:
    """The WAN connection service of one gateway, and our address on the LAN towards it."""

    control_url: str
    service_type: str
    lan_ip: str


@dataclass(frozen=True)
class Mapping:
    """A UDP port mapping held on the IGD (what the client advertises, docs/protocol.md §13.8)."""

    external_ip: str
    external_port: int
    internal_ip: str
    internal_port: int
    lease: int  # seconds; 0 = the IGD keeps it until deleted


# ------------------------------------------------------------------ parsing (no I/O)

def parse_ssdp_response(data: bytes, source_ip: str) -> str | None:
    """The LOCATION of an SSDP search answer from `source_ip`, or None when it is not a usable
    one (not `HTTP/1.1 200`, no http LOCATION, or a LOCATION naming another host than the one
    that answered: a LAN host must not point us at a third party)."""
    if len(data) > MAX_SSDP_BYTES:
        return None
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError:
        return None
    lines = text.split("\r\n")
    if not lines[0].startswith("HTTP/1.1 200"):
        return None
    location = None
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep and name.strip().lower() == "location":
            location = value.strip()
    if location is None:
        return None
    try:
        url = http_lite.split_url(location)
    except http_lite.HttpError:
        return None
    if url.host != source_ip:
        return None
    return location


class Element:
    """One element of an IGD's XML: its local name (the namespace dropped: IGDs differ in
    them, the names do not), its character data and its child elements."""

    __slots__ = ("children", "name", "text")

    def __init__(self, name: str) -> None:
        self.name = name
        self.text = ""
        self.children: list[Element] = []


def _refuse(*_args: object) -> None:
    raise UpnpError("has a DOCTYPE or ENTITY declaration (refused)")


def parse_xml(data: bytes, what: str) -> list[Element]:
    """The elements of an IGD's XML in document order (the root first); refuse a DOCTYPE or
    an ENTITY declaration, and oversized input.

    expat directly rather than `xml.etree.ElementTree`, which this needs nothing of and which
    costs about 0.4 MiB in a client's worker (docs/performance.md, "The UPnP client without
    http.client")."""
    if len(data) > MAX_XML_BYTES:
        raise UpnpError(f"{what}: more than {MAX_XML_BYTES} bytes")
    lowered = data.lower()
    if b"<!doctype" in lowered or b"<!entity" in lowered:
        raise UpnpError(f"{what}: has a DOCTYPE or ENTITY declaration (refused)")
    elements: list[Element] = []
    open_: list[Element] = []

    def start(name: str, _attrs: object) -> None:
        el = Element(name.rpartition(" ")[2])
        if open_:
            open_[-1].children.append(el)
        open_.append(el)
        elements.append(el)

    def text(chars: str) -> None:
        if open_:
            open_[-1].text += chars

    parser = expat.ParserCreate(namespace_separator=" ")
    parser.buffer_text = True
    parser.StartElementHandler = start
    parser.EndElementHandler = lambda _name: open_.pop()
    parser.CharacterDataHandler = text
    # a second guard, for what the byte scan cannot see (UTF-16, say)
    parser.StartDoctypeDeclHandler = _refuse
    parser.EntityDeclHandler = _refuse
    try:
        parser.Parse(data, True)
    except UpnpError as e:
        raise UpnpError(f"{what}: {e}") from None
    except (expat.ExpatError, LookupError, ValueError) as e:
        raise UpnpError(f"{what}: not XML ({e})") from None
    return elements


def find_wan_service(desc: bytes, location: str) -> tuple[str, str]:
    """(service type, absolute control URL) of the first WANIPConnection or WANPPPConnection
    service in a device description fetched from `location`.  The control URL must stay on
    the description's host and port."""
    elements = parse_xml(desc, f"device description {location}")
    base = location
    for el in elements:
        if el.name == "URLBase" and el.text:
            base = el.text.strip()
    for service in elements:
        if service.name != "service":
            continue
        fields = {c.name: c.text.strip() for c in service.children}
        stype = fields.get("serviceType", "")
        if not stype.startswith(WAN_SERVICES) or not fields.get("controlURL"):
            continue
        if not (base + fields["controlURL"]).isascii():
            raise UpnpError(f"device description {location}: non-ASCII control URL")
        control = http_lite.join_url(base, fields["controlURL"])
        if not control.lower().startswith("http://"):
            raise UpnpError(f"device description {location}: control URL {control!r} "
                            "leaves the device")
        try:
            a, b = http_lite.split_url(location), http_lite.split_url(control)
        except http_lite.HttpError as e:
            raise UpnpError(f"device description {location}: control URL {control!r}: {e}")
        if (a.host, a.port) != (b.host, b.port):
            raise UpnpError(f"device description {location}: control URL {control!r} "
                            "leaves the device")
        return stype, control
    raise UpnpError(f"device description {location}: no WANIPConnection/WANPPPConnection")


def soap_envelope(service_type: str, action: str, args: list[tuple[str, str]]) -> bytes:
    """The SOAP request body of one action (arguments escaped, in the order given)."""
    body = "".join(f"<{k}>{escape(v)}</{k}>" for k, v in args)
    return ('<?xml version="1.0"?>\r\n<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/'
            'envelope/" s:encodingStyle="http://schemas.xmlsoap.org/soap/encoding/"><s:Body>'
            f'<u:{action} xmlns:u="{escape(service_type)}">{body}</u:{action}>'
            "</s:Body></s:Envelope>\r\n").encode()


def parse_soap_response(status: int, data: bytes, action: str) -> dict[str, str]:
    """The output arguments of a SOAP answer, or UpnpError with the UPnP error code."""
    elements = parse_xml(data, f"{action} answer")
    if status != 200:
        code = next((el.text for el in elements if el.name == "errorCode"), None)
        raise UpnpError(f"{action}: UPnP error {(code or '?').strip()} (HTTP {status})")
    for el in elements:
        if el.name == f"{action}Response":
            return {c.name: c.text.strip() for c in el.children}
    raise UpnpError(f"{action}: answer without {action}Response")


def parse_external_ip(value: str) -> str:
    """GetExternalIPAddress's answer, which must be a unicast IPv4 address."""
    try:
        first = ipv4_pack(value)[0]
    except ValueError:
        raise UpnpError(f"GetExternalIPAddress: {value!r} is not an IPv4 address") from None
    # 0.0.0.0 (as ipaddress's is_unspecified), 127/8, 224/4 multicast, 240/4 reserved
    if value == "0.0.0.0" or first == 127 or first >= 224:
        raise UpnpError(f"GetExternalIPAddress: {value} is not a unicast address")
    return value


# ------------------------------------------------------------------ I/O

def discover(lan_ip: str, timeout: float = 2.0) -> list[str]:
    """LOCATIONs of the IGDs that answer an SSDP search sent from `lan_ip` (first answer of
    each host only; at most 8), within `timeout` seconds."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(lan_ip))
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 2)
        sock.bind((lan_ip, 0))
        for st in SEARCH_TARGETS:
            msg = ("M-SEARCH * HTTP/1.1\r\nHOST: 239.255.255.250:1900\r\n"
                   f'MAN: "ssdp:discover"\r\nMX: 1\r\nST: {st}\r\n\r\n')
            sock.sendto(msg.encode(), SSDP_GROUP)
        found: dict[str, str] = {}
        deadline = time.monotonic() + timeout
        while len(found) < 8:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            sock.settimeout(left)
            try:
                data, (src, _port) = sock.recvfrom(MAX_SSDP_BYTES + 1)
            except TimeoutError:
                break
            location = parse_ssdp_response(data, src)
            if location is not None and src not in found:
                found[src] = location
        return list(found.values())
    except OSError as e:
        raise UpnpError(f"SSDP search from {lan_ip}: {e}") from None
    finally:
        sock.close()


def _http(method: str, url: str, body: bytes | None = None,
          headers: tuple[tuple[str, str], ...] = ()) -> tuple[int, bytes, str]:
    """(status, body, our local address) of one bounded HTTP exchange."""
    try:
        r = http_lite.exchange(method, url, body=body, headers=headers, timeout=HTTP_TIMEOUT,
                               total=HTTP_TOTAL, max_body=MAX_XML_BYTES)
    except http_lite.HttpError as e:
        raise UpnpError(f"{method} {url}: {e}") from None
    return r.status, r.body, r.local_ip


def open_igd(location: str) -> Igd:
    """Fetch a device description and pick its WAN connection service."""
    status, data, local = _http("GET", location)
    if status != 200:
        raise UpnpError(f"GET {location}: HTTP {status}")
    stype, control = find_wan_service(data, location)
    return Igd(control, stype, local)


def soap_call(igd: Igd, action: str, args: list[tuple[str, str]]) -> dict[str, str]:
    """One SOAP action on the IGD's WAN connection service."""
    headers = (("Content-Type", 'text/xml; charset="utf-8"'),
               ("SOAPAction", f'"{igd.service_type}#{action}"'))
    status, data, _ = _http("POST", igd.control_url,
                            soap_envelope(igd.service_type, action, args), headers)
    return parse_soap_response(status, data, action)


def add_mapping(igd: Igd, internal_port: int, lease: int, description: str) -> Mapping:
    """Map UDP `internal_port` of our LAN address, external port = internal port.

    Called again before the lease ends, the same call refreshes the mapping (the IGD replaces
    its own entry for the same client)."""
    external_ip = parse_external_ip(soap_call(igd, "GetExternalIPAddress", [])
                                    .get("NewExternalIPAddress", ""))
    soap_call(igd, "AddPortMapping", [
        ("NewRemoteHost", ""), ("NewExternalPort", str(internal_port)),
        ("NewProtocol", "UDP"), ("NewInternalPort", str(internal_port)),
        ("NewInternalClient", igd.lan_ip), ("NewEnabled", "1"),
        ("NewPortMappingDescription", description), ("NewLeaseDuration", str(lease))])
    return Mapping(external_ip, internal_port, igd.lan_ip, internal_port, lease)


def delete_mapping(igd: Igd, mapping: Mapping) -> None:
    soap_call(igd, "DeletePortMapping", [
        ("NewRemoteHost", ""), ("NewExternalPort", str(mapping.external_port)),
        ("NewProtocol", "UDP")])


def acquire(lan_ip: str, internal_port: int, lease: int, description: str,
            search_timeout: float = 2.0) -> tuple[Igd, Mapping]:
    """Discover the LAN's IGD and map `internal_port`; UpnpError says why not."""
    locations = discover(lan_ip, search_timeout)
    if not locations:
        raise UpnpError(f"SSDP search from {lan_ip}: no IGD answered")
    errors = []
    for location in locations:
        try:
            igd = open_igd(location)
            return igd, add_mapping(igd, internal_port, lease, description)
        except UpnpError as e:
            errors.append(str(e))
    raise UpnpError("; ".join(errors))


def _first_igd(lan_ip: str) -> tuple[str, Igd]:
    locations = discover(lan_ip)
    if not locations:
        raise UpnpError(f"SSDP search from {lan_ip}: no IGD answered")
    return locations[0], open_igd(locations[0])


def main(argv: list[str]) -> int:
    """`map LAN_IP PORT LEASE` prints the mapping; `unmap LAN_IP PORT` removes it; `show
    LAN_IP` prints the IGD that answers and its external address."""
    try:
        if len(argv) == 4 and argv[0] == "map":
            _igd, m = acquire(argv[1], int(argv[2]), int(argv[3]), "teredo-engine")
            print(f"{m.external_ip}:{m.external_port} -> {m.internal_ip}:{m.internal_port} "
                  f"lease {m.lease}")
            return 0
        if len(argv) == 3 and argv[0] == "unmap":
            _location, igd = _first_igd(argv[1])
            port = int(argv[2])
            delete_mapping(igd, Mapping("", port, igd.lan_ip, port, 0))
            return 0
        if len(argv) == 2 and argv[0] == "show":
            location, igd = _first_igd(argv[1])
            external = parse_external_ip(soap_call(igd, "GetExternalIPAddress", [])
                                         .get("NewExternalIPAddress", ""))
            print(f"igd {location}\nservice {igd.service_type}\ncontrol {igd.control_url}\n"
                  f"lan {igd.lan_ip}\nexternal {external}")
            return 0
    except UpnpError as e:
        print(f"upnp: {e}", file=sys.stderr)
        return 1
    except ValueError as e:
        print(f"upnp: bad argument: {e}", file=sys.stderr)
        return 2
    print("usage: python -m engine.runtime.upnp map LAN_IP PORT LEASE | unmap LAN_IP PORT"
          " | show LAN_IP", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
