import csv
import hashlib
import json
import threading

import pytest

from evaluator.client import canonical_json
from evaluator.ledger import Ledger, LedgerError


def test_append_records_the_exact_bytes_their_size_and_sha256(tmp_path):
    ledger = Ledger(tmp_path / "ledger.jsonl")
    payload = canonical_json({"agent_id": "a1", "metrics": {"roc_auc": 0.91}, "n_rows": 100})
    entry = ledger.append(job_id=12, submission_id=7, task_id=3, kind="metrics", payload=payload)
    assert entry.sha256 == hashlib.sha256(payload).hexdigest()
    assert entry.bytes == len(payload)
    [read] = ledger.read_entries()
    assert read == entry
    assert read.payload.encode("ascii") == payload
    assert json.loads(read.payload)["metrics"] == {"roc_auc": 0.91}
    assert read.time.endswith("Z")


def test_entries_are_appended_one_json_line_each(tmp_path):
    ledger = Ledger(tmp_path / "ledger.jsonl")
    for i in range(3):
        ledger.append(
            job_id=i, submission_id=1, task_id=1, kind="failure", payload=b'{"reason":"timeout"}'
        )
    lines = (tmp_path / "ledger.jsonl").read_bytes().splitlines()
    assert len(lines) == 3
    assert [json.loads(line)["job_id"] for line in lines] == [0, 1, 2]


def test_concurrent_appends_never_interleave(tmp_path):
    ledger = Ledger(tmp_path / "ledger.jsonl")
    payload = canonical_json({"metrics": {"x": 0.5}, "pad": "y" * 5000})

    def write(n):
        for i in range(20):
            ledger.append(
                job_id=n * 100 + i, submission_id=1, task_id=1, kind="metrics", payload=payload
            )

    threads = [threading.Thread(target=write, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    entries = ledger.read_entries()
    assert len(entries) == 80
    assert len({e.job_id for e in entries}) == 80


def test_ledger_file_is_private_to_the_owner(tmp_path):
    ledger = Ledger(tmp_path / "ledger.jsonl")
    ledger.append(job_id=1, submission_id=1, task_id=1, kind="metrics", payload=b"{}")
    assert (tmp_path / "ledger.jsonl").stat().st_mode & 0o077 == 0


def test_an_unknown_kind_is_refused(tmp_path):
    with pytest.raises(ValueError):
        Ledger(tmp_path / "l.jsonl").append(
            job_id=1, submission_id=1, task_id=1, kind="weights", payload=b"{}"
        )


def test_a_tampered_entry_is_detected(tmp_path):
    path = tmp_path / "ledger.jsonl"
    ledger = Ledger(path)
    ledger.append(
        job_id=1, submission_id=1, task_id=1, kind="metrics", payload=b'{"metrics":{"a":0.5}}'
    )
    path.write_text(path.read_text().replace("0.5", "0.9"))
    with pytest.raises(LedgerError):
        ledger.read_entries()


def test_a_torn_last_line_is_ignored(tmp_path):
    path = tmp_path / "ledger.jsonl"
    ledger = Ledger(path)
    ledger.append(job_id=1, submission_id=1, task_id=1, kind="metrics", payload=b"{}")
    with path.open("ab") as fh:
        fh.write(b'{"job_id": 2, "kin')
    assert [e.job_id for e in ledger.read_entries()] == [1]


def test_missing_ledger_reads_as_empty(tmp_path):
    assert Ledger(tmp_path / "nothing.jsonl").read_entries() == []


def test_csv_export_has_one_row_per_entry_with_hash_and_size(tmp_path):
    ledger = Ledger(tmp_path / "ledger.jsonl")
    p1 = canonical_json({"metrics": {"accuracy": 0.9}})
    p2 = canonical_json({"reason": "timeout"})
    ledger.append(job_id=1, submission_id=5, task_id=3, kind="metrics", payload=p1)
    ledger.append(job_id=2, submission_id=6, task_id=3, kind="failure", payload=p2)
    out = tmp_path / "ledger.csv"
    assert ledger.export_csv(out) == 2
    rows = list(csv.DictReader(out.open()))
    assert [r["kind"] for r in rows] == ["metrics", "failure"]
    assert rows[0]["sha256"] == hashlib.sha256(p1).hexdigest()
    assert rows[1]["bytes"] == str(len(p2))
    assert rows[0]["payload"] == p1.decode()
    assert rows[0]["submission_id"] == "5"
