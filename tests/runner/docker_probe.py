"""Run INSIDE a container by tests/runner/test_docker_confinement.py (``python -c``): prints one
JSON line about the process itself, for the test to judge on the host.

argv[1]: comma-separated files to try to create (each: "ok", or the errno name);
argv[2]: comma-separated host:port to try to connect to (3 s each; "ok" or the errno name).
Standard library only: it runs in any image with a python."""
import errno
import json
import os
import socket
import sys


def status() -> dict:
    """Capabilities, no-new-privileges and seccomp of this process (/proc/self/status)."""
    fields = dict(line.split(":", 1) for line in open("/proc/self/status").read().splitlines() if ":" in line)
    keys = ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb", "NoNewPrivs", "Seccomp")
    return {k: fields[k].strip() for k in keys if k in fields}


def write(path: str) -> str:
    try:
        with open(path, "w") as f:
            f.write("x")
        os.unlink(path)
        return "ok"
    except OSError as exc:
        return errno.errorcode.get(exc.errno, str(exc.errno))


def mounts() -> list:
    """Every mount: its point, options, root (the source path for a bind mount) and type."""
    out = []
    for line in open("/proc/self/mountinfo"):
        mine, theirs = line.split(" - ")
        fields = mine.split()
        out.append({"point": fields[4], "opts": fields[5], "root": fields[3], "fstype": theirs.split()[0]})
    return out


def connect(target: str) -> str:
    host, port = target.rsplit(":", 1)
    sock = socket.socket()
    sock.settimeout(3)
    try:
        sock.connect((host, int(port)))
        return "ok"
    except OSError as exc:
        return errno.errorcode.get(exc.errno, type(exc).__name__)
    finally:
        sock.close()


def setuid_root() -> str:
    try:
        os.setuid(0)
        return "ok"
    except OSError as exc:
        return errno.errorcode[exc.errno]


def main() -> None:
    files = [p for p in sys.argv[1].split(",") if p]
    targets = [t for t in sys.argv[2].split(",") if t]
    print(json.dumps({
        "uid": os.getuid(), "euid": os.geteuid(), "gid": os.getgid(), "groups": os.getgroups(),
        "status": status(),
        "writes": {p: write(p) for p in files},
        "mounts": mounts(),
        "interfaces": sorted(os.listdir("/sys/class/net")),
        "connect": {t: connect(t) for t in targets},
        "setuid0": setuid_root(),
        "pid1": open("/proc/1/cmdline", "rb").read().split(b"\0")[0].decode(),
    }))


main()
