"""hack/realnode.py's PodDns answers headless-Service names as cluster DNS does, on a real UDP socket."""

from __future__ import annotations

import socket
import struct
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def dns() -> Any:
    sys.path.insert(0, str(REPO / "hack"))
    import realnode

    slices = {("ns1", "job-a"): [("job-a-0", "10.0.0.5"), ("job-a-1", "10.0.0.6")]}
    server = realnode.PodDns("127.0.0.1", lambda namespace, service: slices.get((namespace, service), []), port=0)
    yield server
    server.close()


def ask(server: Any, name: str, qtype: int = 1) -> tuple[int, list[str]]:
    query = struct.pack("!HHHHHH", 0x1234, 0x0100, 1, 0, 0, 0)
    query += b"".join(bytes([len(part)]) + part.encode() for part in name.split(".")) + b"\0"
    query += struct.pack("!HH", qtype, 1)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(5)
        sock.sendto(query, ("127.0.0.1", server.port))
        reply = sock.recv(512)
    ident, flags, _, count = struct.unpack("!HHHH", reply[:8])
    assert ident == 0x1234
    assert flags & 0x8000
    answers = reply[len(query) :]
    addresses = [socket.inet_ntoa(answers[i * 16 + 12 : i * 16 + 16]) for i in range(count)]
    return flags & 0xF, addresses


def test_pod_names_of_a_headless_service_resolve_to_their_endpoint(dns: Any) -> None:
    assert ask(dns, "job-a-0.job-a.ns1.svc.cluster.local") == (0, ["10.0.0.5"])
    assert ask(dns, "JOB-A-1.job-a.ns1.svc.cluster.local") == (0, ["10.0.0.6"])
    assert ask(dns, "job-a.ns1.svc.cluster.local") == (0, ["10.0.0.5", "10.0.0.6"])
    assert ask(dns, "job-a-0.job-a.ns1.svc.cluster.local", qtype=28) == (0, [])  # AAAA: the name exists, no data


def test_anything_else_is_nxdomain(dns: Any) -> None:
    for name in ("job-a-2.job-a.ns1.svc.cluster.local", "job-a-0.job-a.ns2.svc.cluster.local", "pypi.org"):
        assert ask(dns, name) == (3, [])
