"""Process-tree context of Windows events: who started the process an event belongs to.

A :class:`ProcessTable` follows the processes of every host, by Sysmon process GUID and by PID,
in the order events arrive. Process creations (Sysmon 1, Security 4688) add a process with its
parent, grandparent, ancestry depth, command line, user and integrity level; any other event
names its acting process (Sysmon `ProcessGuid`/`ProcessId`, Security `ProcessId`, PowerShell's
`ExecutionProcessID` with its host application) and so either finds it or adds what it shows
(a process started before the log began: its parent is `unknown`). A child's Sysmon 1 event also
tells its parent's command line (`ParentCommandLine`).

Every event then carries its process's context (:func:`process_context`): parent and grandparent
image, ancestry depth, whether a script host (wscript, cscript, mshta, ...) is among its
ancestors, whether the process is a living-off-the-land binary, and the shape of its command line
(encoded command, hidden window, download cradle, longest base64-like run). The table is bounded
(least recently used processes are forgotten, `max_processes`) and is carried from one chunk of
a file, or one live batch, to the next, so batch, chunked and live scoring give the same features.
"""

from __future__ import annotations

import math
import re
from collections import OrderedDict
from dataclasses import dataclass
from functools import lru_cache

import polars as pl

SYSMON = "Microsoft-Windows-Sysmon/Operational"
UNKNOWN = "unknown"
SCRIPT_HOSTS = frozenset({"wscript.exe", "cscript.exe", "mshta.exe", "scrobj.dll", "hh.exe"})
LOLBINS = frozenset({
    "rundll32.exe", "regsvr32.exe", "mshta.exe", "wscript.exe", "cscript.exe", "msbuild.exe", "installutil.exe",
    "regasm.exe", "regsvcs.exe", "certutil.exe", "bitsadmin.exe", "wmic.exe", "cmstp.exe", "fodhelper.exe",
    "eventvwr.exe", "sdclt.exe", "computerdefaults.exe", "msiexec.exe", "odbcconf.exe", "forfiles.exe",
    "pcalua.exe", "schtasks.exe", "sc.exe", "wuauclt.exe", "control.exe", "msdt.exe", "esentutl.exe",
    "powershell.exe", "pwsh.exe", "cmd.exe", "net.exe", "net1.exe", "whoami.exe", "psexesvc.exe", "at.exe",
    "reg.exe", "vssadmin.exe", "ntdsutil.exe", "nltest.exe", "dsquery.exe"})
# fields read from `raw` (the canonical table keeps the whole event there)
RAW_FIELDS = {
    "guid": ("ProcessGuid", "SourceProcessGuid", "SourceProcessGUID"),
    "parent_guid": ("ParentProcessGuid",),
    "parent_command_line": ("ParentCommandLine",),
    "integrity": ("IntegrityLevel", "MandatoryLabel"),
    "target_image": ("TargetImage",),
    "target_object": ("TargetObject",),
    "image_loaded": ("ImageLoaded",),
    "granted_access": ("GrantedAccess",),
}
_ENCODED = re.compile(r"(?i)(?:^|\s)[-/]e(?:nc|ncodedcommand|c)?\b|frombase64string")
_B64 = re.compile(r"[A-Za-z0-9+/=]{20,}")
_HIDDEN = re.compile(r"(?i)(?:^|\s)[-/]w(?:indowstyle)?\s+(?:h(?:idden)?|1)\b")
_CRADLE = re.compile(r"(?i)downloadstring|downloadfile|net\.webclient|invoke-webrequest|iwr |iex|invoke-expression"
                     r"|start-bitstransfer|https?://")
_NOPROFILE = re.compile(r"(?i)(?:^|\s)[-/]nop(?:rofile)?\b")
_INTEGRITY = {"s-1-16-4096": "low", "s-1-16-8192": "medium", "s-1-16-8448": "medium", "s-1-16-12288": "high",
              "s-1-16-16384": "system"}


@lru_cache(maxsize=1 << 16)
def base_name(path) -> str | None:
    """`C:\\Windows\\System32\\cmd.exe` -> `cmd.exe` (lower case); remembered for the last 65,536 paths."""
    if path is None:
        return None
    return re.split(r"[\\/]", str(path).strip().strip('"'))[-1].lower() or None


def integrity_level(value) -> str | None:
    """Sysmon's `High` or Security 4688's `S-1-16-12288` -> `high` (low/medium/high/system)."""
    if not value:
        return None
    v = str(value).strip().lower()
    return _INTEGRITY.get(v, v)


def command_shape(cmd: str | None) -> str:
    """A coarse signature of a command line: which suspicious traits it has, and its length class."""
    if not cmd:
        return "none"
    traits = [name for name, rx in (("enc", _ENCODED), ("hidden", _HIDDEN), ("cradle", _CRADLE),
                                   ("noprofile", _NOPROFILE)) if rx.search(cmd)]
    longest = max((len(m) for m in _B64.findall(cmd)), default=0)
    if longest >= 100:
        traits.append("b64")
    traits.append(f"len{min(int(math.log2(len(cmd) + 1)), 12)}")
    return "+".join(traits)


def longest_base64(cmd: str | None) -> int:
    return max((len(m) for m in _B64.findall(cmd)), default=0) if cmd else 0


@dataclass(slots=True)
class Process:
    image: str
    parent: str = UNKNOWN
    grandparent: str = UNKNOWN
    depth: int = 0                  # 0: creation not seen; 1: parent not known; 2+: known ancestry
    command_line: str | None = None
    user: str | None = None
    integrity: str | None = None
    script_ancestor: bool = False
    created: bool = False
    uid: str = ""                   # host:pid@first-seen-order, unique within a table's life
    tree: str = ""                  # uid of the process tree's root (see SESSION_ROOTS)


# long-lived parents whose children start trees of their own (else every service would be one tree)
SESSION_ROOTS = frozenset({UNKNOWN, "system", "smss.exe", "wininit.exe", "winlogon.exe", "services.exe",
                           "svchost.exe", "explorer.exe", "userinit.exe", "lsass.exe"})
CONTEXT_CATEGORICAL = ("proc_parent", "proc_grandparent")
CONTEXT_NUMERIC = ("proc_depth", "proc_created", "proc_script_ancestor", "proc_lolbin", "proc_cmd_encoded",
                   "proc_cmd_hidden", "proc_cmd_cradle", "proc_cmd_b64")


class ProcessTable:
    """Processes per host by GUID and PID, least recently used forgotten beyond `max_processes` keys."""

    def __init__(self, max_processes: int = 200_000):
        self.max_processes = max_processes
        self._procs: OrderedDict[tuple, Process] = OrderedDict()
        self._seen = 0

    def __len__(self) -> int:
        return len(self._procs)

    def _get(self, host, guid, pid) -> Process | None:
        for key in ((host, "g", guid) if guid else None, (host, "p", pid) if pid is not None else None):
            if key is not None and key in self._procs:
                self._procs.move_to_end(key)
                return self._procs[key]
        return None

    def _name(self, host, pid, proc: Process) -> Process:
        self._seen += 1
        proc.uid = f"{host}:{proc.image}({pid if pid is not None else '?'})#{self._seen}"
        if not proc.tree:
            proc.tree = proc.uid
        return proc

    def _put(self, host, guid, pid, proc: Process) -> None:
        for key in ((host, "g", guid) if guid else None, (host, "p", pid) if pid is not None else None):
            if key is not None:
                self._procs[key] = proc
                self._procs.move_to_end(key)
        while len(self._procs) > self.max_processes:
            self._procs.popitem(last=False)

    def created(self, host, guid, pid, image, command_line, user, integrity, parent_guid, parent_pid,
                parent_image, parent_command_line) -> Process:
        parent = self._get(host, parent_guid, parent_pid)
        pimg = base_name(parent_image)
        if parent is None and pimg:
            parent = self._name(host, parent_pid, Process(image=pimg, command_line=parent_command_line))
            self._put(host, parent_guid, parent_pid, parent)
        elif parent is not None and parent_command_line and not parent.command_line:
            parent.command_line = parent_command_line
        img = base_name(image) or UNKNOWN
        if parent is None:
            proc = Process(image=img, depth=1)
        else:
            proc = Process(image=img, parent=parent.image, grandparent=parent.parent,
                           depth=(parent.depth + 1) if parent.depth else 2,
                           script_ancestor=parent.script_ancestor or parent.image in SCRIPT_HOSTS)
        proc.command_line, proc.user, proc.integrity, proc.created = command_line, user, integrity, True
        if parent is not None and parent.image not in SESSION_ROOTS:
            proc.tree = parent.tree
        self._put(host, guid, pid, self._name(host, pid, proc))
        return proc

    def acting(self, host, guid, pid, image, command_line, user) -> Process:
        proc = self._get(host, guid, pid)
        img = base_name(image)
        if proc is None or (img and proc.image != img and proc.image != UNKNOWN):
            proc = self._name(host, pid, Process(image=img or UNKNOWN))   # not seen yet, or the PID was reused
            self._put(host, guid, pid, proc)
        else:
            if guid or pid is not None:
                self._put(host, guid, pid, proc)        # a PowerShell event may be the first to name its GUID
            if img and proc.image == UNKNOWN:
                proc.image = img
        if command_line and not proc.command_line:
            proc.command_line = command_line
        if user and not proc.user:
            proc.user = user
        return proc


def raw_context_fields(events: pl.DataFrame) -> pl.DataFrame:
    """The few `raw` fields process context needs, as columns (null where absent or when there is no `raw`).

    Only Sysmon events and Security 4688 carry them; `raw` is decoded once per such event, for the
    named fields only (about twice as fast as one JSON path per field)."""
    if "raw" not in events.columns:
        return pl.DataFrame({name: pl.Series(name, [None] * events.height, dtype=pl.Utf8) for name in RAW_FIELDS})
    keys = sorted({k for names in RAW_FIELDS.values() for k in names})
    wanted = (pl.col("channel") == SYSMON) | ((pl.col("channel") == "Security") & (pl.col("event_id") == 4688))
    raw = pl.when(wanted).then(pl.col("raw")).otherwise(None)
    decoded = events.select(raw.str.json_decode(pl.Struct({k: pl.Utf8 for k in keys})).alias("_r")).unnest("_r")
    return decoded.select([(pl.coalesce([pl.col(k) for k in names]) if len(names) > 1 else pl.col(names[0])).alias(name)
                           for name, names in RAW_FIELDS.items()])


def process_context(events: pl.DataFrame, table: ProcessTable, raw_fields: pl.DataFrame | None = None) -> dict:
    """Per event, in input order: the context columns (CONTEXT_*) plus `proc_image`, `proc_user`,
    `proc_integrity` and `proc_command_line` of its acting process, and the names of that process
    (`process`) and of its tree (`process_tree`); updates `table` as it goes.

    The loop over events does only what needs the table's state at that event: it finds or adds
    the acting process and keeps a snapshot of its fields; the columns and the command-line
    traits (once per distinct command line) are derived from the snapshots afterwards."""
    extra = raw_fields if raw_fields is not None else raw_context_fields(events)
    cols = {c: events.get_column(c).to_list() for c in (
        "host", "channel", "event_id", "image", "parent_image", "command_line", "process_id", "parent_process_id",
        "execution_process_id", "user")}
    x = {c: extra.get_column(c).to_list() for c in ("guid", "parent_guid", "parent_command_line", "integrity")}
    snapshots = []
    last, snapshot = None, None      # the previous event's `acting` call and what it gave
    for i in range(events.height):
        host, channel, eid = cols["host"][i], cols["channel"][i], cols["event_id"][i]
        guid = (x["guid"][i] or "").lower() or None
        if (channel == SYSMON and eid == 1) or (channel == "Security" and eid == 4688):
            proc = table.created(host, guid, cols["process_id"][i], cols["image"][i], cols["command_line"][i],
                                 cols["user"][i], integrity_level(x["integrity"][i]),
                                 (x["parent_guid"][i] or "").lower() or None, cols["parent_process_id"][i],
                                 cols["parent_image"][i], x["parent_command_line"][i])
            last = None
        else:
            pid = cols["process_id"][i] if channel in (SYSMON, "Security") else (
                cols["execution_process_id"][i] or None)
            call = (host, guid, pid, cols["image"][i], cols["command_line"][i], cols["user"][i])
            # the same call again (a process's events come in runs) finds the same process and leaves
            # the table as it was: its snapshot is the last one (not so without a GUID or PID: each
            # such event is a process of its own)
            if call == last and (guid or pid is not None):
                snapshots.append(snapshot)
                continue
            proc, last = table.acting(*call), call
        snapshot = (proc.parent, proc.grandparent, proc.depth, proc.created, proc.script_ancestor, proc.image,
                    proc.user, proc.integrity, proc.command_line, proc.uid, proc.tree)
        snapshots.append(snapshot)
    names = ("proc_parent", "proc_grandparent", "depth", "created", "script_ancestor", "proc_image", "proc_user",
             "proc_integrity", "proc_command_line", "process", "process_tree")
    snap = dict(zip(names, map(list, zip(*snapshots)))) if snapshots else {n: [] for n in names}
    flags: dict = {}
    for cmd in snap["proc_command_line"]:
        if cmd not in flags:
            flags[cmd] = (1.0 if cmd and _ENCODED.search(cmd) else 0.0, 1.0 if cmd and _HIDDEN.search(cmd) else 0.0,
                          1.0 if cmd and _CRADLE.search(cmd) else 0.0, math.log1p(longest_base64(cmd)))
    f = [flags[cmd] for cmd in snap["proc_command_line"]]
    out = {"proc_parent": snap["proc_parent"], "proc_grandparent": snap["proc_grandparent"],
           "proc_depth": [float(d) for d in snap["depth"]],
           "proc_created": [1.0 if v else 0.0 for v in snap["created"]],
           "proc_script_ancestor": [1.0 if v else 0.0 for v in snap["script_ancestor"]],
           "proc_lolbin": [1.0 if v in LOLBINS else 0.0 for v in snap["proc_image"]]}
    for k, name in enumerate(("proc_cmd_encoded", "proc_cmd_hidden", "proc_cmd_cradle", "proc_cmd_b64")):
        out[name] = [v[k] for v in f]
    out.update({c: snap[c] for c in ("proc_image", "proc_user", "proc_integrity", "proc_command_line", "process",
                                     "process_tree")})
    return out
