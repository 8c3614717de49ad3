"""Per-event labels of OTRF Empire recordings, from the agents in their metadata."""

from __future__ import annotations

import polars as pl

from deepids.io.logs import read_events
from deepids.io.otrf import EmpireAgent, empire_agents, empire_attack_labels, read_otrf_index, recording_agents


def test_index_and_agents(samples_dir):
    root = samples_dir / "otrf"
    recs = {r.name: r for r in read_otrf_index(root)}
    assert len(recs) == 5
    empire = recs["empire_shell_samr_EnumDomainUsers_2020-09-21193527.json.gz"]
    assert empire.is_empire and empire.techniques == ["T1087.002"]
    agents = recording_agents(root, empire)
    assert {(a.host, a.pid) for a in agents} == {("WORKSTATION5", 4092), ("WORKSTATION5", 7456)}
    assert recording_agents(root, recs["cmd_sharpview_pcre_net_2020-10-2920232423.json.gz"]) == []


def test_empire_labels_follow_agent_and_children(samples_dir):
    root = samples_dir / "otrf"
    empire = next(r for r in read_otrf_index(root) if r.is_empire)
    events, _ = read_events(root / empire.file)
    labels = empire_attack_labels(events, recording_agents(root, empire))
    attack = events.filter(pl.Series(labels == 1))
    assert 0 < attack.height < events.height
    assert set(attack.get_column("host")) == {"WORKSTATION5"}
    # the agent's children (net.exe and the like) are attack events too
    children = attack.filter((pl.col("event_id") == 1) & (pl.col("parent_process_id") == 7456))
    assert children.height > 0
    # Security 4688 names the same children by PID (NewProcessId), created by the agent (hex 0x1d20)
    created = attack.filter((pl.col("event_id") == 4688) & (pl.col("parent_process_id") == 7456))
    assert created.height > 0
    child_pids = set(created.get_column("process_id"))
    assert attack.filter(pl.col("process_id").is_in(list(child_pids)) & (pl.col("event_id") != 4688)).height > 0
    # nothing on the other hosts; an agent on a host absent from the data labels nothing
    assert empire_attack_labels(events, [EmpireAgent("X", "NOHOST", "u", 7456)]).sum() == 0


def test_agent_table_parsing():
    text = """
    Name     La Internal IP     Machine Name      Username                Process            PID    Delay    Last Seen            Listener
    ----     -- -----------     ------------      --------                -------            ---    -----    ---------            ----------------
    4EH9PC5S ps 172.18.39.6     WORKSTATION6      *THESHIRE\\wardog        powershell         5056   5/0.0    2020-09-22 02:12:12  http
    """
    assert empire_agents(text) == [EmpireAgent("4EH9PC5S", "WORKSTATION6", "wardog", 5056)]


def test_broad_labels_add_target_and_powershell_engine_events(samples_dir):
    from deepids.io.otrf import empire_attack_labels_broad

    root = samples_dir / "otrf"
    empire = next(r for r in read_otrf_index(root) if r.is_empire)
    events, _ = read_events(root / empire.file)
    agents = recording_agents(root, empire)
    narrow, broad = empire_attack_labels(events, agents), empire_attack_labels_broad(events, agents)
    assert (broad >= narrow).all() and broad.sum() > narrow.sum()
    added = events.filter(pl.Series((broad == 1) & (narrow == 0)))
    # the agent's Windows PowerShell 800 events carry no PID, only the agent's launcher as host application
    engine = added.filter((pl.col("channel") == "Windows PowerShell") & (pl.col("event_id") == 800))
    assert engine.height > 0 and engine.get_column("command_line").str.contains("-enc").all()
    assert set(added.get_column("host")) == {"WORKSTATION5"}


def _agent_sysmon_events(events: pl.DataFrame, guid: str) -> pl.DataFrame:
    """The Sysmon events whose own `ProcessGuid` is `guid`."""
    from deepids.io.logs import raw_fields

    own = [str(raw_fields(r).get("ProcessGuid") or "").lower() == guid for r in events.get_column("raw").to_list()]
    sysmon = pl.col("channel") == "Microsoft-Windows-Sysmon/Operational"
    return events.with_row_index("_i").filter(pl.Series(own) & sysmon)


def test_agent_own_sysmon_events_are_labelled_by_guid(samples_dir):
    """The NXLog export drops `ProcessId` from the agent's own Sysmon registry and pipe events; they
    carry only its `ProcessGuid`, which a Sysmon 10 event pairs with the agent's PID (7456)."""
    root = samples_dir / "otrf"
    empire = next(r for r in read_otrf_index(root) if r.is_empire)
    events, _ = read_events(root / empire.file)
    access = events.filter((pl.col("event_id") == 10) & (pl.col("process_id") == 7456))
    assert access.height == 1 and '"{b34bc01c-2f95-5f69-5f01-000000000900}"' in access.get_column("raw")[0].lower()
    own = _agent_sysmon_events(events, "{b34bc01c-2f95-5f69-5f01-000000000900}")
    assert own.get_column("process_id").null_count() == own.height        # no PID to follow
    assert set(own.get_column("image").str.to_lowercase().str.split("\\").list.last()) == {"powershell.exe"}
    assert {12, 17, 18} <= set(own.get_column("event_id"))
    labels = empire_attack_labels(events, recording_agents(root, empire))
    assert labels[own.get_column("_i").to_numpy()].all(), own.select("event_id", "image")
    assert own.height >= 12


def test_lateral_agent_creation_and_startup_are_labelled(shared_data):
    """psexec: the agent started on WORKSTATION6 (PID 4312). Its own Sysmon 1 creation, image loads and
    registry writes carry only its GUID (paired with 4312 by Sysmon 10) and are attack events."""
    root = shared_data / "logs" / "windows" / "otrf_security_datasets"
    rec = next(r for r in read_otrf_index(root) if r.name.startswith("empire_psexec_dcerpc_tcp_svcctl"))
    events, _ = read_events(root / rec.file)
    agents = recording_agents(root, rec)
    assert ("WORKSTATION6", 4312) in {(a.host, a.pid) for a in agents}
    own = _agent_sysmon_events(events, "{d273d0f0-8078-5f67-cc06-000000000800}")
    assert set(own.get_column("host")) == {"WORKSTATION6"}
    created = own.filter(pl.col("event_id") == 1)
    assert created.height == 1 and "-enc" in created.get_column("command_line")[0].lower()
    assert own.filter(pl.col("event_id") == 7).height > 50 and own.filter(pl.col("event_id") == 12).height > 200
    from deepids.io.otrf import empire_attack_labels_broad

    for labels in (empire_attack_labels(events, agents), empire_attack_labels_broad(events, agents)):
        assert labels[own.get_column("_i").to_numpy()].all()
