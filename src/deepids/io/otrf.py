"""OTRF Security-Datasets: the recording index, ATT&CK labels, and per-event labels of Empire recordings.

An OTRF recording's `INDEX.csv` label (techniques, tactics) is per recording, not per event; it is
shown beside hunting findings and never used for scoring. Per-event labels exist only where we can
derive them: in Empire recordings the metadata YAML lists the attacker's agents (host and PID) in
its `adversary_view`. :func:`empire_attack_labels` marks as attack, on an agent's host:

1. events whose `ProcessId`, `SourceProcessId` or `ParentProcessId` equals an agent PID, or whose
   `ExecutionProcessID` does outside the Sysmon channel (in Sysmon events it is Sysmon's own process);
2. the processes the agents created (Sysmon 1 `ParentProcessId`, Security 4688 creator `ProcessId`),
   and their children in turn, and every event of those processes by the same rules;
3. the Sysmon events of all these processes by process GUID. In most recordings the OTRF NXLog
   export drops `ProcessId` from the Sysmon events (1, 3, 5, 7, 11, 12, 13, 17, 18, 22, 23 keep only
   `ProcessGuid`), so a process's GUID is read where one event names it beside one of its PIDs
   (Sysmon 1 `ParentProcessGuid`/`ParentProcessId`, Sysmon 8/10 `SourceProcessGUID`/`SourceProcessId`
   and `TargetProcessGUID`/`TargetProcessId`, `ProcessGuid`/`ProcessId` where both are kept), and a
   child's from its own creation. PIDs are unique among live processes, and a recording lasts
   minutes while its agents live; in the 18 labelled recordings every agent PID pairs with one
   GUID, of a `powershell.exe`, as the metadata's agent table says.

:func:`empire_attack_labels_broad` also counts events whose *target* process is an agent process
and the agents' PowerShell engine events (800/4103/4104) found by their host application.

These labels miss what the attack caused on other hosts (a DCSync's replication requests on the
domain controller, lateral movement's remote processes); results say so where they use them.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from deepids.errors import InputError
from deepids.io.logs import normalise_host, parse_int, raw_fields

SYSMON = "Microsoft-Windows-Sysmon/Operational"
_AGENT_ROW = re.compile(
    r"^\s*(?P<name>[A-Z0-9]{8})\s+(?:ps|py)\s+(?P<ip>\d+\.\d+\.\d+\.\d+)\s+(?P<host>\S+)\s+(?P<user>\S+)\s+"
    r"(?P<process>\S+)\s+(?P<pid>\d+)\s", re.M)


@dataclass(frozen=True)
class EmpireAgent:
    name: str
    host: str
    user: str
    pid: int


@dataclass
class Recording:
    file: str                 # path relative to the dataset root, as INDEX.csv names it
    metadata_id: str
    title: str
    techniques: list[str]
    tactics: list[str]

    @property
    def name(self) -> str:
        return Path(self.file).name

    @property
    def is_empire(self) -> bool:
        return self.name.startswith("empire_")

    def attack_label(self) -> str:
        return f"{self.title} ({', '.join(self.techniques)}; {', '.join(self.tactics)})"


def read_otrf_index(root: str | Path) -> list[Recording]:
    """The recordings listed in `<root>/INDEX.csv`."""
    path = Path(root) / "INDEX.csv"
    if not path.exists():
        raise InputError(f"{path} is missing: not an OTRF Security-Datasets folder")
    with open(path, newline="") as fh:
        return [Recording(file=row["file"], metadata_id=row.get("metadata_id") or "", title=row.get("title") or "",
                          techniques=[t for t in (row.get("techniques") or "").split(";") if t],
                          tactics=[t for t in (row.get("tactics") or "").split(";") if t])
                for row in csv.DictReader(fh)]


def empire_agents(metadata_text: str) -> list[EmpireAgent]:
    """The Empire agents listed in a recording's metadata YAML (`adversary_view` agent tables)."""
    seen: dict[str, EmpireAgent] = {}
    for m in _AGENT_ROW.finditer(metadata_text):
        host = normalise_host(m.group("host"))
        user = m.group("user").lstrip("*").rsplit("\\", 1)[-1].lower()
        seen.setdefault(m.group("name"), EmpireAgent(m.group("name"), host, user, int(m.group("pid"))))
    return list(seen.values())


def recording_agents(root: str | Path, recording: Recording) -> list[EmpireAgent]:
    if not recording.metadata_id:
        return []
    path = Path(root) / "metadata" / f"{recording.metadata_id}.yaml"
    return empire_agents(path.read_text(errors="replace")) if path.exists() else []


def _ids(row: dict) -> tuple[set[int], set[str]]:
    """The process ids and process GUIDs an event names, by the rules in the module docstring."""
    raw = raw_fields(row.get("raw"))
    pids = {row["process_id"], row["parent_process_id"], parse_int(raw.get("SourceProcessId"))}
    if row["channel"] != SYSMON:
        pids.add(row["execution_process_id"])
    pids.discard(None)
    guids = {str(raw[k]).lower() for k in ("ProcessGuid", "ParentProcessGuid", "SourceProcessGUID", "SourceProcessGuid")
             if raw.get(k)}
    return pids, guids


def empire_attack_labels(events: pl.DataFrame, agents: list[EmpireAgent]) -> np.ndarray:
    """1 for the events of one Empire recording that belong to its agents (see module docstring), else 0.

    Children are followed by PID (Security 4688 `NewProcessId`, Sysmon 1 `ProcessId` where present)
    and by Sysmon process GUID (the OTRF NXLog export drops Sysmon 1's `ProcessId` but keeps
    `ProcessGuid`), so a child's own Sysmon events are found either way.
    """
    return _agent_labels(events, agents, broad=False)


def empire_attack_labels_broad(events: pl.DataFrame, agents: list[EmpireAgent]) -> np.ndarray:
    """The labels of :func:`empire_attack_labels`, plus, on the agents' hosts, the events whose *target*
    process is an agent process (Sysmon 8/10 `TargetProcessId`/`TargetProcessGUID`: something opening
    or injecting into the agent), and the agents' PowerShell engine events (Windows PowerShell 800,
    PowerShell/Operational 4103/4104) that carry no process id but the agent's host application
    (its launcher command line, as seen on the agent's own labelled PowerShell events)."""
    return _agent_labels(events, agents, broad=True)


def _agent_labels(events: pl.DataFrame, agents: list[EmpireAgent], broad: bool) -> np.ndarray:
    labels = np.zeros(events.height, dtype=np.int64)
    cols = ["host", "channel", "event_id", "process_id", "parent_process_id", "execution_process_id",
            "command_line"]
    cols += ["raw"] if "raw" in events.columns else []
    rows = events.select(cols).with_row_index("_i")
    for host in {a.host for a in agents}:
        attack_pids = {a.pid for a in agents if a.host == host}
        on_host = rows.filter(pl.col("host") == host).to_dicts()
        attack_guids = _descendants(on_host, attack_pids)
        for r in on_host:
            pids, guids = _ids(r)
            if pids & attack_pids or guids & attack_guids:
                labels[r["_i"]] = 1
        if broad:
            _label_broad(on_host, attack_pids, attack_guids, labels)
    return labels


def _descendants(on_host: list[dict], attack_pids: set[int]) -> set[str]:
    """Grows `attack_pids` (in place) by the agents' children, grandchildren, ...; returns the GUIDs of
    the agents and of those descendants (rule 3 of the module docstring)."""
    attack_guids: set[str] = set()
    creations = []
    pairs: set[tuple[int, str]] = set()          # (pid, guid) named together by one event
    for r in on_host:
        if r["channel"] != SYSMON and not (r["channel"] == "Security" and r["event_id"] == 4688):
            continue
        raw = raw_fields(r.get("raw"))
        pairs.update(_pid_guid_pairs(r, raw))
        if r["event_id"] in (1, 4688):
            creations.append((r["parent_process_id"], r["process_id"],
                              str(raw.get("ParentProcessGuid") or "").lower(),
                              str(raw.get("ProcessGuid") or "").lower()))
    grown = True
    while grown:                       # children, grandchildren, ...
        grown = False
        for pid, guid in pairs:
            if pid in attack_pids and guid not in attack_guids:
                attack_guids.add(guid)
                grown = True
        for parent, child, parent_guid, child_guid in creations:
            if parent in attack_pids or (parent_guid and parent_guid in attack_guids):
                if child is not None and child not in attack_pids:
                    attack_pids.add(child)
                    grown = True
                if child_guid and child_guid not in attack_guids:
                    attack_guids.add(child_guid)
                    grown = True
    return attack_guids


_PID_GUID_KEYS = (("SourceProcessId", ("SourceProcessGUID", "SourceProcessGuid")),
                  ("TargetProcessId", ("TargetProcessGUID", "TargetProcessGuid")))


def _pid_guid_pairs(row: dict, raw: dict) -> list[tuple[int, str]]:
    """The (PID, process GUID) pairs one Sysmon event names: its parent's, its own (where the export kept
    both), and the source and target processes of Sysmon 8/10."""
    found = [(row["parent_process_id"], raw.get("ParentProcessGuid"))]
    if row["event_id"] not in (8, 10):     # there `process_id` is the source's PID, paired below
        found.append((row["process_id"], raw.get("ProcessGuid")))
    found += [(parse_int(raw.get(pid_key)), raw.get(guid_keys[0]) or raw.get(guid_keys[1]))
              for pid_key, guid_keys in _PID_GUID_KEYS]
    return [(pid, str(guid).lower()) for pid, guid in found if pid is not None and guid]


_POWERSHELL_ENGINE = {("Windows PowerShell", 800), ("Microsoft-Windows-PowerShell/Operational", 4103),
                      ("Microsoft-Windows-PowerShell/Operational", 4104)}


def _label_broad(on_host: list[dict], attack_pids: set[int], attack_guids: set[str], labels: np.ndarray) -> None:
    agent_hosts = {r["command_line"] for r in on_host if labels[r["_i"]] and r["command_line"]
                   and (r["channel"], r["event_id"]) in _POWERSHELL_ENGINE}
    for r in on_host:
        if labels[r["_i"]]:
            continue
        if (r["channel"], r["event_id"]) in _POWERSHELL_ENGINE and r["command_line"] in agent_hosts:
            labels[r["_i"]] = 1
            continue
        raw = raw_fields(r.get("raw"))
        target_guid = str(raw.get("TargetProcessGUID") or raw.get("TargetProcessGuid") or "").lower()
        if parse_int(raw.get("TargetProcessId")) in attack_pids or (target_guid and target_guid in attack_guids):
            labels[r["_i"]] = 1
