"""Attack families: one name for the attacks that behave alike across datasets.

CICIDS2017 and CSE-CIC-IDS2018 name the same attacks differently (`FTP-Patator` vs
`FTP-BruteForce`, `DDoS` vs `DDoS attacks-LOIC-HTTP`); NSL-KDD names 39 attacks. A family is
what a classifier names, so a model trained on one dataset speaks the other's language.
Unknown attack names keep their own name as their family.
"""

from __future__ import annotations

import re

import numpy as np

from deepids.io.schema import BENIGN

UNKNOWN_ANOMALY = "unknown-anomaly"

_RULES: tuple[tuple[str, str], ...] = (
    (r"^ddos|^ddos attack|loic|hoic", "DDoS"),
    (r"^dos\b|^dos attacks|hulk|goldeneye|slowloris|slowhttptest|^heartbleed", "DoS"),
    (r"portscan|port scan", "PortScan"),
    (r"patator|bruteforce|brute force -|brute-force|^ssh-|^ftp-", "Brute Force"),
    (r"^web attack|sql injection|xss", "Web Attack"),
    (r"^bot\b|^bot$", "Bot"),
    (r"infilt", "Infiltration"),
)
_WEB_FIRST = re.compile(r"^web attack|brute force -web|brute force -xss|sql injection", re.I)

# NSL-KDD attack names by the four classic categories
_NSL_KDD = {
    "DoS": "back land neptune pod smurf teardrop apache2 mailbomb processtable udpstorm worm",
    "Probe": "ipsweep nmap portsweep satan mscan saint",
    "R2L": "ftp_write guess_passwd imap multihop phf spy warezclient warezmaster named sendmail snmpgetattack "
           "snmpguess xlock xsnoop httptunnel",
    "U2R": "buffer_overflow loadmodule perl rootkit ps sqlattack xterm",
}
_NSL_LOOKUP = {name: fam for fam, names in _NSL_KDD.items() for name in names.split()}


def attack_family(label: str) -> str:
    """The family of one normalised label ("benign" stays "benign")."""
    if label == BENIGN:
        return BENIGN
    low = label.lower()
    if low in _NSL_LOOKUP:
        return _NSL_LOOKUP[low]
    if _WEB_FIRST.search(low):
        return "Web Attack"
    for pattern, family in _RULES:
        if re.search(pattern, low):
            return family
    return label


def attack_families(labels) -> np.ndarray:
    """Vectorised `attack_family` over an array of labels (object array out)."""
    labels = np.asarray(labels, dtype=object)
    uniq, inverse = np.unique(labels, return_inverse=True)
    return np.asarray([attack_family(str(u)) for u in uniq], dtype=object)[inverse]
