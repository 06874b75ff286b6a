"""The names and addresses this machine answers to, for the Host check of a server bound to a
LAN address or to 0.0.0.0 / :: (a browser on the LAN reaches it by one of these)."""

from __future__ import annotations

import ipaddress
import socket

WILDCARD = ("0.0.0.0", "::", "")


def local_names(bind_host: str) -> set[str]:
    """Host names to trust besides loopback when bound to ``bind_host`` (empty for loopback)."""
    try:
        if ipaddress.ip_address(bind_host).is_loopback:
            return set()
    except ValueError:
        if bind_host in ("localhost",):
            return set()
    names: set[str] = set()
    if bind_host not in WILDCARD:
        names.add(bind_host.lower())  # bound to one address (or name): that one
        return names | _machine_names()
    return names | _machine_names() | _interface_addresses()


def _machine_names() -> set[str]:
    names = set()
    for name in (socket.gethostname(), socket.getfqdn()):
        if name:
            names.add(name.lower())
            names.add(name.split(".")[0].lower())
    return names


def _interface_addresses() -> set[str]:
    """Every address of this machine's interfaces (from the host name's addresses and the
    kernel's interface table), IPv4 and IPv6."""
    out: set[str] = set()
    try:
        for info in socket.getaddrinfo(socket.gethostname(), None):
            out.add(str(info[4][0]).split("%")[0].lower())
    except OSError:
        pass
    try:
        with open("/proc/net/if_inet6") as fh:  # Linux: every IPv6 address, one per line
            for line in fh:
                raw = line.split()[0]
                out.add(str(ipaddress.IPv6Address(int(raw, 16))))
    except (OSError, ValueError):
        pass
    out |= _ipv4_addresses()
    return out


def _ipv4_addresses() -> set[str]:
    """IPv4 addresses of every interface (Linux: SIOCGIFADDR per interface)."""
    out: set[str] = set()
    try:
        import fcntl
        import struct
    except ImportError:  # pragma: no cover - not Linux
        return out
    try:
        interfaces = socket.if_nameindex()
    except OSError:
        return out
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for _, name in interfaces:
            try:
                packed = fcntl.ioctl(s.fileno(), 0x8915,  # SIOCGIFADDR
                                     struct.pack("256s", name.encode()[:15]))
                out.add(socket.inet_ntoa(packed[20:24]))
            except OSError:
                continue
    return out
