"""engine.runtime.upnp: what an IGD (or anyone on the LAN) sends is bounded and parsed
defensively; a malformed answer is an UpnpError ("no UPnP"), never a crash or a hang."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
from collections.abc import Iterator

import pytest

from engine.runtime import upnp
from engine.runtime.upnp import UpnpError

LOCATION = "http://198.19.0.1:39499/rootDesc.xml"
SSDP_OK = (b"HTTP/1.1 200 OK\r\nCACHE-CONTROL: max-age=120\r\n"
           b"ST: urn:schemas-upnp-org:device:InternetGatewayDevice:1\r\n"
           b"LOCATION: " + LOCATION.encode() + b"\r\n\r\n")
# The shape of miniupnpd 2.3's description (IGD v2), cut down to what is read.
DESC = b"""<?xml version="1.0"?>
<root xmlns="urn:schemas-upnp-org:device-1-0"><device>
<deviceType>urn:schemas-upnp-org:device:InternetGatewayDevice:2</deviceType>
<serviceList><service><serviceType>urn:schemas-upnp-org:service:Layer3Forwarding:1</serviceType>
<controlURL>/ctl/L3F</controlURL></service></serviceList>
<deviceList><device><deviceList><device><serviceList><service>
<serviceType>urn:schemas-upnp-org:service:WANIPConnection:2</serviceType>
<serviceId>urn:upnp-org:serviceId:WANIPConn1</serviceId>
<controlURL>/ctl/IPConn</controlURL></service></serviceList></device></deviceList>
</device></deviceList></device></root>"""
SOAP_OK = b"""<?xml version="1.0"?>
<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body>
<u:GetExternalIPAddressResponse xmlns:u="urn:schemas-upnp-org:service:WANIPConnection:2">
<NewExternalIPAddress>198.51.100.2</NewExternalIPAddress>
</u:GetExternalIPAddressResponse></s:Body></s:Envelope>"""
SOAP_FAULT = b"""<?xml version="1.0"?>
<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body><s:Fault>
<faultcode>s:Client</faultcode><faultstring>UPnPError</faultstring><detail>
<UPnPError xmlns="urn:schemas-upnp-org:control-1-0"><errorCode>718</errorCode>
<errorDescription>ConflictInMappingEntry</errorDescription></UPnPError>
</detail></s:Fault></s:Body></s:Envelope>"""
LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;">]>
<root>&lol2;</root>"""


# ---------------------------------------------------------------- SSDP

def test_ssdp_answer_gives_its_location() -> None:
    assert upnp.parse_ssdp_response(SSDP_OK, "198.19.0.1") == LOCATION


@pytest.mark.parametrize("data, source", [
    (SSDP_OK.replace(b"200 OK", b"404 Not Found"), "198.19.0.1"),
    (SSDP_OK.replace(b"LOCATION", b"X-LOC"), "198.19.0.1"),
    (SSDP_OK, "198.19.0.9"),  # names another host than the one that answered
    (SSDP_OK.replace(b"http://", b"https://"), "198.19.0.1"),
    (SSDP_OK.replace(b"http://", b"file://"), "198.19.0.1"),
    (SSDP_OK + b"X-PAD: " + b"a" * upnp.MAX_SSDP_BYTES + b"\r\n", "198.19.0.1"),
    (SSDP_OK.replace(b"OK", b"\xff\xfe"), "198.19.0.1"),
    (b"", "198.19.0.1"),
    (b"M-SEARCH * HTTP/1.1\r\n\r\n", "198.19.0.1"),
], ids=["status", "no-location", "other-host", "https", "file", "oversized", "binary",
        "empty", "a-search"])
def test_ssdp_answer_refused(data: bytes, source: str) -> None:
    assert upnp.parse_ssdp_response(data, source) is None


# ---------------------------------------------------------------- XML

def test_doctype_is_refused_before_parsing() -> None:
    with pytest.raises(UpnpError, match="DOCTYPE or ENTITY"):
        upnp.parse_xml(LAUGHS, "device description")
    with pytest.raises(UpnpError, match="DOCTYPE or ENTITY"):
        upnp.find_wan_service(DESC.replace(b"<root", b"<!doctype r><root", 1), LOCATION)


@pytest.mark.parametrize("data, message", [
    (b"<root>" + b"x" * upnp.MAX_XML_BYTES + b"</root>", "more than 65536 bytes"),
    (b"<root><unclosed></root>", "not XML"),
    (b"", "not XML"),
    (b"\x00\x01\x02", "not XML"),
])
def test_malformed_xml(data: bytes, message: str) -> None:
    with pytest.raises(UpnpError, match=message):
        upnp.parse_xml(data, "answer")


def test_wan_service_of_a_miniupnpd_description() -> None:
    stype, control = upnp.find_wan_service(DESC, LOCATION)
    assert stype == "urn:schemas-upnp-org:service:WANIPConnection:2"
    assert control == "http://198.19.0.1:39499/ctl/IPConn"


def test_wan_service_of_an_igd_v1_with_urlbase() -> None:
    desc = (DESC.replace(b"WANIPConnection:2", b"WANPPPConnection:1")
            .replace(b"<device>", b"<URLBase>http://198.19.0.1:39499/base/</URLBase><device>", 1)
            .replace(b"/ctl/IPConn", b"ctl/PPP"))
    assert upnp.find_wan_service(desc, LOCATION) == (
        "urn:schemas-upnp-org:service:WANPPPConnection:1", "http://198.19.0.1:39499/base/ctl/PPP")


@pytest.mark.parametrize("control", [b"http://192.0.2.66/ctl", b"http://198.19.0.1:80/ctl",
                                     b"https://198.19.0.1:39499/ctl"])
def test_control_url_must_stay_on_the_device(control: bytes) -> None:
    with pytest.raises(UpnpError, match="leaves the device"):
        upnp.find_wan_service(DESC.replace(b"/ctl/IPConn", control), LOCATION)


def test_description_without_a_wan_service() -> None:
    with pytest.raises(UpnpError, match="no WANIPConnection"):
        upnp.find_wan_service(DESC.replace(b"WANIPConnection", b"WANEthernetLink"), LOCATION)


# ---------------------------------------------------------------- SOAP

def test_soap_answer_arguments() -> None:
    assert upnp.parse_soap_response(200, SOAP_OK, "GetExternalIPAddress") == {
        "NewExternalIPAddress": "198.51.100.2"}


def test_soap_fault_names_the_upnp_error() -> None:
    with pytest.raises(UpnpError, match=r"AddPortMapping: UPnP error 718 \(HTTP 500\)"):
        upnp.parse_soap_response(500, SOAP_FAULT, "AddPortMapping")


def test_soap_answer_of_another_action() -> None:
    with pytest.raises(UpnpError, match="without AddPortMappingResponse"):
        upnp.parse_soap_response(200, SOAP_OK, "AddPortMapping")


def test_soap_request_escapes_arguments() -> None:
    body = upnp.soap_envelope("urn:x:1", "AddPortMapping",
                              [("NewPortMappingDescription", "<a&b>")])
    assert b"<NewPortMappingDescription>&lt;a&amp;b&gt;</NewPortMappingDescription>" in body
    assert upnp.parse_xml(body, "own request") is not None


@pytest.mark.parametrize("value", ["", "0.0.0.0", "224.0.0.1", "127.0.0.1",
                                   "255.255.255.255", "2001:db8::1", "198.51.100.2 "])
def test_external_address_must_be_unicast_ipv4(value: str) -> None:
    with pytest.raises(UpnpError, match="GetExternalIPAddress"):
        upnp.parse_external_ip(value)


def test_external_address() -> None:
    assert upnp.parse_external_ip("198.51.100.2") == "198.51.100.2"


# ---------------------------------------------------------------- bounded HTTP (loopback)

@pytest.fixture
def http_server() -> Iterator[tuple[socket.socket, list[bytes]]]:
    """A loopback listener that answers each connection with the next canned bytes."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen()
    srv.settimeout(0.05)  # accept() wakes up to see `stop`
    answers: list[bytes] = []
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with conn:
                conn.recv(65536)
                if answers:
                    try:
                        conn.sendall(answers.pop(0))
                    except OSError:
                        pass
                else:
                    stop.wait(2)  # never answers (the client gives up first)

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    yield srv, answers
    stop.set()
    srv.close()
    t.join(timeout=10)


def _url(srv: socket.socket) -> str:
    return f"http://127.0.0.1:{srv.getsockname()[1]}/rootDesc.xml"


def test_description_over_http(http_server) -> None:
    srv, answers = http_server
    desc = DESC.replace(b"/ctl/IPConn", b"/ctl/IPConn")
    answers.append(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n"
                   % len(desc) + desc)
    igd = upnp.open_igd(_url(srv))
    assert igd.control_url == f"http://127.0.0.1:{srv.getsockname()[1]}/ctl/IPConn"
    assert igd.lan_ip == "127.0.0.1"


def test_oversized_http_answer_is_cut(http_server) -> None:
    srv, answers = http_server
    answers.append(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n" + b"<a>" * 100000)
    with pytest.raises(UpnpError, match="longer than 65536 bytes"):
        upnp.open_igd(_url(srv))


def test_silent_server_times_out(http_server, monkeypatch) -> None:
    srv, _answers = http_server
    monkeypatch.setattr(upnp, "HTTP_TIMEOUT", 0.3)
    with pytest.raises(UpnpError, match="timed out"):
        upnp.open_igd(_url(srv))


def test_garbage_http_answer(http_server) -> None:
    srv, answers = http_server
    answers.append(b"\x00\x01garbage\r\n\r\n")
    with pytest.raises(UpnpError, match=r"GET http://127\.0\.0\.1"):
        upnp.open_igd(_url(srv))


def test_chunked_description_over_http(http_server) -> None:
    srv, answers = http_server
    answers.append(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                   + b"".join(b"%x\r\n%s\r\n" % (len(DESC[i:i + 700]), DESC[i:i + 700])
                              for i in range(0, len(DESC), 700)) + b"0\r\n\r\n")
    igd = upnp.open_igd(_url(srv))
    assert igd.control_url == f"http://127.0.0.1:{srv.getsockname()[1]}/ctl/IPConn"


@pytest.mark.parametrize("answer, message", [
    (b"HTTP/1.1 OK\r\n\r\n", "bad status line"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 5000\r\n\r\n" + DESC[:100],
     r"connection closed early \(100 of 5000 bytes of the body\)"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 65537\r\n\r\n", "answer longer than 65536 bytes"),
    (b"HTTP/1.1 200 OK\r\nX: " + b"a" * 9000 + b"\r\n\r\n", "header section longer than"),
    (b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n", "HTTP 404"),
])
def test_bad_http_answer_is_one_line_naming_the_url(http_server, answer: bytes,
                                                     message: str) -> None:
    srv, answers = http_server
    answers.append(answer)
    with pytest.raises(UpnpError, match=rf"^GET {_url(srv)}: {message}") as e:
        upnp.open_igd(_url(srv))
    assert "\n" not in str(e.value)


def test_control_url_that_would_split_the_request_is_never_sent(http_server) -> None:
    """A description can put spaces, and CR LF as character references, into its control
    URL; the request line must not carry them (a header injected into the IGD's SOAP
    request).  `join_url` drops the CR LF (as URL parsers do); the space makes the
    description unusable, and a request to such a URL is refused by http_lite too."""
    srv, answers = http_server
    location = _url(srv)
    desc = DESC.replace(b"/ctl/IPConn", b"/ctl/IPConn HTTP/1.0&#13;&#10;X-Injected: 1")
    with pytest.raises(UpnpError, match="control characters, spaces or non-ASCII"):
        upnp.find_wan_service(desc, location)
    control = location.rsplit("/", 1)[0] + "/ctl/IPConn HTTP/1.0X-Injected: 1"
    answers.append(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(SOAP_OK) + SOAP_OK)
    stype = "urn:schemas-upnp-org:service:WANIPConnection:2"
    for url in (control, location + "\r\nX-Injected: 1"):
        with pytest.raises(UpnpError, match="control characters, spaces or non-ASCII"):
            upnp.soap_call(upnp.Igd(url, stype, "127.0.0.1"), "GetExternalIPAddress", [])
    assert answers, "a request went out"


def test_non_ascii_control_url_is_refused() -> None:
    desc = DESC.replace(b"/ctl/IPConn", "http://198.19.0.1:39499/ctl/\u00e9".encode())
    with pytest.raises(UpnpError, match="non-ASCII control URL"):
        upnp.find_wan_service(desc, LOCATION)


def test_doctype_the_byte_scan_cannot_see_is_refused_by_the_parser() -> None:
    data = LAUGHS.replace(b'<?xml version="1.0"?>', b"").decode().encode("utf-16")
    assert b"<!doctype" not in data.lower()
    with pytest.raises(UpnpError, match="DOCTYPE or ENTITY"):
        upnp.parse_xml(data, "answer")


# ---------------------------------------------------------------- after a chroot

AFTER_CHROOT = r"""
import socket, sys, threading
from engine.runtime import upnp

ADD_OK = (b'<?xml version="1.0"?><s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/'
          b'envelope/"><s:Body><u:AddPortMappingResponse xmlns:u="urn:schemas-upnp-org:'
          b'service:WANIPConnection:2"/></s:Body></s:Envelope>')
desc, soap_ok, fault = (bytes.fromhex(a) for a in sys.argv[1:4])
answers = [
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n0\r\n\r\n"
    % (len(desc), desc),
    b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(soap_ok), soap_ok),
    b"HTTP/1.0 200 OK\r\nContent-Type: text/xml; charset=\"utf-8\"\r\n\r\n" + ADD_OK,
    b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: %d\r\n\r\n%s" % (len(fault), fault),
    b"\xff\xfe garbage\r\n\r\n",
]
srv = socket.socket()
srv.bind(("127.0.0.1", 0))
srv.listen()

def serve():
    for answer in answers:
        conn, _ = srv.accept()
        with conn:
            conn.recv(65536)
            conn.sendall(answer)

threading.Thread(target=serve, daemon=True).start()
url = f"http://127.0.0.1:{srv.getsockname()[1]}/rootDesc.xml"


class Chroot:
    # what a chrooted worker sees: no module can be loaded any more
    def find_spec(self, name, path=None, target=None):
        raise ImportError(f"import of {name} after the chroot")


sys.meta_path.insert(0, Chroot())
igd = upnp.open_igd(url)
m = upnp.add_mapping(igd, 40000, 600, "teredo-engine (RFC 6081) <\u00e9>")
print(m.external_ip, m.external_port, m.internal_ip, m.lease)
for _ in range(2):
    try:
        upnp.delete_mapping(igd, m)
    except upnp.UpnpError as e:
        print(str(e).replace(url.rpartition("/")[0], "URL"))
"""


def test_a_whole_exchange_imports_nothing_after_the_chroot() -> None:
    """The worker imports upnp before it drops privileges (engine.runtime.worker), and may
    then be chrooted: description, SOAP answers, a fault and garbage must be handled without
    loading a module or a codec."""
    cp = subprocess.run([sys.executable, "-c", AFTER_CHROOT, DESC.hex(),
                         SOAP_OK.hex(), SOAP_FAULT.hex()],
                        capture_output=True, text=True, timeout=60)
    assert cp.returncode == 0, cp.stderr
    assert cp.stdout.splitlines() == [
        "198.51.100.2 40000 127.0.0.1 600",
        "DeletePortMapping: UPnP error 718 (HTTP 500)",
        "POST URL/ctl/IPConn: bad status line"]


# ---------------------------------------------------------------- control URL resolution

JOIN_BASES = ("http://198.19.0.1:39499/rootDesc.xml", "http://198.19.0.1:39499/base/",
              "http://198.19.0.1:5000", "http://198.19.0.1/a/b/c?q=1")
JOIN_REFS = ("/ctl/IPConn", "ctl/PPP", "../x", "../../../../y", "./z", ".", "..", "", "?q",
             "//198.19.0.9:9/p", "http://198.19.0.1:1/y", "https://x/y", "a/./b/../c/",
             "/a/b/../../..", "urn:x", "./g:h", "/ctl/IPConn HTTP/1.0\r\nX-Injected: 1",
             " \t/ctl\n")


@pytest.mark.parametrize("base", JOIN_BASES)
def test_control_urls_resolve_as_urllib_resolves_them(base: str) -> None:
    """`http_lite.join_url` replaced `urllib.parse.urljoin` (which imports `ipaddress`); on
    the references device descriptions use, and on dot segments and line breaks, both give
    the same URL."""
    from urllib.parse import urljoin

    from engine.runtime.http_lite import join_url

    assert [join_url(base, r) for r in JOIN_REFS] == [urljoin(base, r) for r in JOIN_REFS]


def test_a_resolved_control_url_names_the_device_urllib_would() -> None:
    """Where the two differ (urllib drops an empty ``?`` or ``#`` and RFC 1808's ``;params``),
    the authority never does: whenever `split_url` accepts our result, urllib's result has
    the same scheme, host and port, so the "leaves the device" check decides alike."""
    from urllib.parse import urljoin, urlsplit

    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    from engine.runtime.http_lite import HttpError, join_url, split_url

    paths = st.text(alphabet="ab./?#;", max_size=12).map(
        lambda t: "/" + t if t and t[0] not in "/?#" else t)
    bases = st.builds(lambda port, path: f"http://198.19.0.1{port}{path}",
                      st.sampled_from([":39499", ":80", "", ":"]), paths)

    @settings(max_examples=3000, suppress_health_check=list(HealthCheck), database=None,
              deadline=None)
    @given(bases, st.text(alphabet="ab./?#:;=%@[]1", max_size=14))
    def check(base: str, ref: str) -> None:
        try:
            ours = split_url(join_url(base, ref))
        except HttpError:
            return  # refused: no request is made
        theirs = urlsplit(urljoin(base, ref))
        assert theirs.scheme == "http"
        assert (theirs.hostname, theirs.port or 80) == (ours.host, ours.port)

    check()
