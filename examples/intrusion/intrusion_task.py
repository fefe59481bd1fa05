"""Intrusion detection across organisations: NSL-KDD connections, five classes (normal and four attack families).

Four organisations each see normal traffic and hold most of the records of one or two attack families (non-IID
by family): the ISP DoS floods, the university probes, the bank remote-to-local (R2L) and user-to-root (U2R)
attacks, the cloud provider DoS and probes. Each attack record goes to one of its family's organisations with
probability 0.9 and to one of the others otherwise; normal records are spread evenly (a fixed draw, seed 0).

Training: `KDDTrain+_20Percent` (25,192 records). Test: `KDDTest+` (22,544), or `KDDTest-21` (its 11,850
records that fewer than 21 of the data set authors' 21 classifiers got right: the file is exactly the rows of
KDDTest+ whose difficulty column is not 21). 17 attack names of the test files never occur in training; the
standard NSL-KDD attack -> family table below maps every name to its family.
"""

from __future__ import annotations

import csv
import gzip
from pathlib import Path

import numpy as np
from torch import nn

import hamrah
from hamrah.data import Examples, Field, Schema

DATA = Path(__file__).resolve().parents[2] / "data" / "tabular" / "nsl_kdd"
COLUMNS = (DATA / "columns.txt").read_text().strip().split(",")  # 41 features, attack, difficulty
CLASSES = ("normal", "DoS", "Probe", "R2L", "U2R")


def words(text: str) -> tuple[str, ...]:
    return tuple(text.split())


DOS = "back land neptune pod smurf teardrop apache2 mailbomb processtable udpstorm"
PROBE = "ipsweep nmap portsweep satan mscan saint"
R2L = "ftp_write guess_passwd imap multihop phf spy warezclient warezmaster named sendmail snmpgetattack snmpguess"
R2L += " xlock xsnoop worm"
U2R = "buffer_overflow loadmodule perl rootkit httptunnel ps sqlattack xterm"
# The standard NSL-KDD attack -> family table: KDD Cup 99's 22 training attacks and the 17 that occur only in test.
FAMILY = {"normal": "normal"}
for family, names in (("DoS", DOS), ("Probe", PROBE), ("R2L", R2L), ("U2R", U2R)):
    FAMILY.update(dict.fromkeys(words(names), family))
SERVICES = "IRC X11 Z39_50 aol auth bgp courier csnet_ns ctf daytime discard domain domain_u echo eco_i ecr_i efs exec"
SERVICES += " finger ftp ftp_data gopher harvest hostnames http http_2784 http_443 http_8001 imap4 iso_tsap klogin"
SERVICES += " kshell ldap link login mtp name netbios_dgm netbios_ns netbios_ssn netstat nnsp nntp ntp_u other pm_dump"
SERVICES += " pop_2 pop_3 printer private red_i remote_job rje shell smtp sql_net ssh sunrpc supdup systat telnet"
SERVICES += " tftp_u tim_i time urh_i urp_i uucp uucp_path vmnet whois"
CATEGORIES = {  # the text features' full vocabularies (KDD Cup 99), so train and test share the one-hot codes
    "protocol_type": ("icmp", "tcp", "udp"),
    "service": words(SERVICES),
    "flag": words("OTH REJ RSTO RSTOS0 RSTR S0 S1 S2 S3 SF SH"),
}
NUMERIC = [c for c in COLUMNS[:41] if c not in CATEGORIES]
SCHEMA = Schema(
    (
        *(
            Field(c, "int64", categories=CATEGORIES[c]) if c in CATEGORIES else Field(c, "float32")
            for c in COLUMNS[:41]
        ),
        Field("family", "int64", categories=CLASSES),
    ),
    label="family",
)
ORGANISATIONS = {"isp": ("DoS",), "university": ("Probe",), "bank": ("R2L", "U2R"), "cloud": ("DoS", "Probe")}


def read_kdd(name: str, hardest: bool = False) -> Examples:
    """Read an NSL-KDD file (`KDDTrain+_20Percent`, `KDDTest+`); ``hardest``: only rows of difficulty < 21."""
    with gzip.open(DATA / f"{name}.txt.gz", "rt", newline="") as f:
        rows = [r for r in csv.reader(f) if not hardest or int(r[42]) != 21]
    cols: dict = {}
    table = np.array(rows, dtype=object)
    for i, c in enumerate(COLUMNS[:41]):  # counts and byte totals are heavy-tailed: log(1 + x)
        cols[c] = table[:, i].astype(str) if c in CATEGORIES else np.log1p(table[:, i].astype(np.float64))
    cols["family"] = np.array([FAMILY[a] for a in table[:, 41]])
    return Examples.from_columns(cols, SCHEMA, source=name)


def organisations(train: Examples, seed: int = 0) -> np.ndarray:
    """Return each training record's organisation (an index into ORGANISATIONS), non-IID by attack family."""
    rng = np.random.default_rng(seed)
    names = list(ORGANISATIONS)
    orgs = rng.integers(len(names), size=len(train))  # normal traffic: evenly
    for k, family in enumerate(CLASSES[1:], start=1):
        home = [i for i, n in enumerate(names) if family in ORGANISATIONS[n]]
        away = [i for i in range(len(names)) if i not in home]
        rows = np.flatnonzero(train.labels == k)
        at_home = rng.random(len(rows)) < 0.9
        orgs[rows] = np.where(at_home, rng.choice(home, len(rows)), rng.choice(away, len(rows)))
    return orgs


class Intrusion(hamrah.ClassificationTask):
    name = "intrusion"

    def __init__(self, hidden: int = 64, test: str = "KDDTest+"):
        if test not in ("KDDTest+", "KDDTest-21"):
            raise ValueError(f"test = {test!r}: expected 'KDDTest+' or 'KDDTest-21'")
        self.hidden, self.test = hidden, test

    def model(self) -> nn.Module:
        inputs = len(NUMERIC) + sum(len(v) for v in CATEGORIES.values())
        return nn.Sequential(nn.Linear(inputs, self.hidden), nn.ReLU(), nn.Linear(self.hidden, len(CLASSES)))

    def data(self):
        train = read_kdd("KDDTrain+_20Percent")
        train = Examples(train.schema, train.fields, organisations(train), tuple(ORGANISATIONS), train.source)
        return train, read_kdd("KDDTest+", hardest=self.test == "KDDTest-21")
