"""Crafted event sequences (NOT recorded data) modelled on two OTRF Empire recordings that are not in
../shared/data: `empire_launcher_vbs` (a VBS launcher: wscript.exe starting an encoded PowerShell
stager) and `empire_uac_shellapi_fodhelper` (a UAC bypass: a write under
`ms-settings\\shell\\open\\command`, then fodhelper.exe starting a shell at high integrity). Field
names and values follow the OTRF NXLog layout; timestamps are placed inside a real recording so the
crafted events mix with its real background events. Tests say they use crafted events."""

from __future__ import annotations

import gzip
import json
from datetime import datetime, timedelta

SYSMON = "Microsoft-Windows-Sysmon/Operational"
PS = "C:\\Windows\\System32\\WindowsPowerShell\\v1.0\\powershell.exe"
STAGER = ("powershell -noP -sta -w 1 -enc SQBGACgAJABQAFMAVgBlAFIAcwBpAE8ATgBUAEEAQgBMAGUALgBQAFMAVgBlAHIAUwBJAE8AbgAu"
          "AE0AQQBKAE8AcgAgAC0ARwBlACAAMwApAHsAJABSAGUAZgA9AFsAUgBlAEYAXQAuAEEAUwBzAGUAbQBiAGwAeQAuAEcARQB0AFQAeQBQAGUA")


def _event(t: datetime, host: str, event_id: int, **fields) -> dict:
    return {"EventID": event_id, "Channel": SYSMON, "Hostname": host, "SourceName": "Microsoft-Windows-Sysmon",
            "@timestamp": t.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z", **fields}


def vbs_launcher(start: datetime, host: str = "WORKSTATION5.theshire.local", user: str = "THESHIRE\\pgustavo") -> list[dict]:
    t = lambda s: start + timedelta(seconds=s)  # noqa: E731
    wscript = {"ProcessGuid": "{c0ffee00-0000-0000-0000-00000000a001}", "ProcessId": 9001}
    ps = {"ProcessGuid": "{c0ffee00-0000-0000-0000-00000000a002}", "ProcessId": 9002}
    out = [_event(t(0), host, 1, Image="C:\\Windows\\System32\\wscript.exe", User=user, IntegrityLevel="Medium",
                  CommandLine='"C:\\Windows\\System32\\WScript.exe" "C:\\Users\\pgustavo\\Downloads\\invoice.vbs"',
                  ParentImage="C:\\Windows\\explorer.exe", ParentProcessGuid="{c0ffee00-0000-0000-0000-00000000a000}",
                  ParentProcessId=4000, ParentCommandLine="C:\\Windows\\Explorer.EXE", **wscript),
           _event(t(1), host, 1, Image=PS, CommandLine=STAGER, User=user, IntegrityLevel="Medium",
                  ParentImage="C:\\Windows\\System32\\wscript.exe", ParentProcessGuid=wscript["ProcessGuid"],
                  ParentProcessId=wscript["ProcessId"], ParentCommandLine="wscript invoice.vbs", **ps)]
    for i, dll in enumerate(("clr.dll", "mscoree.dll", "System.Management.Automation.ni.dll", "amsi.dll")):
        out.append(_event(t(2 + i * 0.1), host, 7, Image=PS, ImageLoaded=f"C:\\Windows\\System32\\{dll}", **ps))
    out.append(_event(t(3), host, 3, Image=PS, User=user, DestinationIp="10.10.10.5", DestinationPort=80,
                      SourceIp="172.18.39.5", SourcePort=50123, Protocol="tcp", **ps))
    return out


def fodhelper_bypass(start: datetime, host: str = "WORKSTATION5.theshire.local",
                     user: str = "THESHIRE\\pgustavo") -> list[dict]:
    t = lambda s: start + timedelta(seconds=s)  # noqa: E731
    agent = {"ProcessGuid": "{c0ffee00-0000-0000-0000-00000000b001}", "ProcessId": 9101}
    fod = {"ProcessGuid": "{c0ffee00-0000-0000-0000-00000000b002}", "ProcessId": 9102}
    cmd = {"ProcessGuid": "{c0ffee00-0000-0000-0000-00000000b003}", "ProcessId": 9103}
    key = "HKU\\S-1-5-21-4228717743-1032521047-1810997296-1104_Classes\\ms-settings\\shell\\open\\command"
    return [
        _event(t(0), host, 13, Image=PS, EventType="SetValue", TargetObject=key + "\\(Default)",
               Details="C:\\Windows\\System32\\cmd.exe /c " + STAGER, User=user, **agent),
        _event(t(0.1), host, 13, Image=PS, EventType="SetValue", TargetObject=key + "\\DelegateExecute",
               Details="(Empty)", User=user, **agent),
        _event(t(1), host, 1, Image="C:\\Windows\\System32\\fodhelper.exe", CommandLine="fodhelper.exe",
               User=user, IntegrityLevel="High", ParentImage=PS, ParentProcessGuid=agent["ProcessGuid"],
               ParentProcessId=agent["ProcessId"], ParentCommandLine=STAGER, **fod),
        _event(t(1.5), host, 1, Image="C:\\Windows\\System32\\cmd.exe", CommandLine="C:\\Windows\\System32\\cmd.exe /c "
               + STAGER, User=user, IntegrityLevel="High", ParentImage="C:\\Windows\\System32\\fodhelper.exe",
               ParentProcessGuid=fod["ProcessGuid"], ParentProcessId=fod["ProcessId"], ParentCommandLine="fodhelper.exe",
               **cmd),
        _event(t(2), host, 1, Image=PS, CommandLine=STAGER, User=user, IntegrityLevel="High",
               ParentImage="C:\\Windows\\System32\\cmd.exe", ParentProcessGuid=cmd["ProcessGuid"],
               ParentProcessId=cmd["ProcessId"], ParentCommandLine="cmd.exe /c " + STAGER,
               ProcessGuid="{c0ffee00-0000-0000-0000-00000000b004}", ProcessId=9104),
    ]


def write_recording(path, real_recording, crafted: list[dict]):
    """The real recording's lines with the crafted events appended (JSON Lines, gzip)."""
    with gzip.open(real_recording, "rt", encoding="utf-8", newline="\n") as fh:
        lines = [line for line in fh.read().split("\n") if line.strip()]
    with gzip.open(path, "wt", encoding="utf-8") as fh:
        for line in lines + [json.dumps(e) for e in crafted]:
            fh.write(line + "\n")
    return path
