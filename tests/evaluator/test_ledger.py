import csv
import hashlib
import io
import json
import threading

import pytest

from evaluator.client import canonical_json
from evaluator.ledger import CSV_FIELDS, Ledger, LedgerError


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


def test_a_release_of_statistics_records_its_rho_epsilon_delta_split_and_the_owners_note(tmp_path):
    ledger = Ledger(tmp_path / "ledger.jsonl")
    payload = canonical_json({"statistics": {"correct": [12.5]}})
    ledger.append(job_id=1, submission_id=5, task_id=3, vendor_id=2, kind="metrics", payload=payload,
                  rho=0.02, epsilon=1.0, delta=1e-6, split="public", note="fallback released; timeout")  # fmt: skip
    [entry] = ledger.read_entries()
    assert (entry.rho, entry.epsilon, entry.delta, entry.split) == (0.02, 1.0, 1e-6, "public")
    assert entry.note == "fallback released; timeout" and "timeout" not in entry.payload
    rows = list(csv.DictReader(io.StringIO(ledger.export_csv_text())))
    assert list(rows[0]) == list(CSV_FIELDS)
    assert "cost_bits" not in rows[0]
    assert (rows[0]["rho"], rows[0]["epsilon"], rows[0]["delta"], rows[0]["split"]) == ("0.02", "1.0", "1e-06", "public")
    assert rows[0]["note"] == "fallback released; timeout"


def test_entries_written_by_an_older_agent_with_cost_bits_still_read(tmp_path):
    path = tmp_path / "ledger.jsonl"
    payload = b'{"metrics":{"a":0.5}}'
    old = {"time": "2026-01-01T00:00:00Z", "job_id": 1, "submission_id": 1, "task_id": 1, "kind": "metrics",
           "payload": payload.decode(), "bytes": len(payload), "sha256": hashlib.sha256(payload).hexdigest(),
           "epsilon": None, "vendor_id": 2, "cost_bits": 36.5}  # fmt: skip
    path.write_text(json.dumps(old) + "\n")
    [entry] = Ledger(path).read_entries()
    assert entry.rho is None and entry.job_id == 1
    assert Ledger(path).spent() == {}  # no rho: not a priced release of statistics


def test_spent_composes_rho_per_task_vendor_and_split(tmp_path):
    from evaluator.privacy.zcdp import epsilon_for_rho

    ledger = Ledger(tmp_path / "ledger.jsonl")
    for job, vendor, split in [(1, 2, "public"), (2, 2, "public"), (3, 2, "private"), (4, 9, "public")]:
        ledger.append(job_id=job, submission_id=job, task_id=3, vendor_id=vendor, kind="metrics", payload=b"{}",
                      rho=0.02, epsilon=1.0, delta=1e-6, split=split)  # fmt: skip
    ledger.append(job_id=5, submission_id=5, task_id=3, vendor_id=2, kind="failure", payload=b"{}")
    ledger.append(job_id=6, submission_id=6, task_id=3, vendor_id=2, kind="update", payload=b"{}", epsilon=0.7)
    spent = ledger.spent()
    assert set(spent) == {("3", "2", "public"), ("3", "2", "private"), ("3", "9", "public")}
    two = spent[("3", "2", "public")]
    assert (two.releases, two.rho, two.delta) == (2, pytest.approx(0.04), 1e-6)
    # one figure: the epsilon of the summed rho, not the sum of epsilons
    assert two.epsilon == pytest.approx(epsilon_for_rho(0.04, 1e-6)) and two.epsilon < 2.0


def test_budget_command_prints_spent_epsilon_per_task_vendor_and_split(tmp_path, capsys):
    from evaluator.__main__ import main
    from evaluator.privacy.zcdp import epsilon_for_rho
    from evaluator.site_budget import SiteBudget

    data = tmp_path / "site"
    ledger = Ledger(data / "ledger.jsonl")
    for job, vendor in [(1, 2), (2, 2), (3, 9)]:
        ledger.append(job_id=job, submission_id=job, task_id=3, vendor_id=vendor, kind="metrics", payload=b"{}",
                      rho=0.02, epsilon=1.0, delta=1e-6, split="public")  # fmt: skip
    SiteBudget(data / "site-budget.json").reserve(job_id=4, task_id=3, vendor_id=2, split="public", rho=0.02,
                                                  vendor_cap_rho=1.0, task_cap_rho=1.0)  # fmt: skip
    config = tmp_path / "site.toml"
    config.write_text(f'data_dir = "{data}"\n')
    assert main(["budget", "--config", str(config)]) == 0
    rows = {(r["task"], r["vendor"], r["split"]): r for r in map(json.loads, capsys.readouterr().out.splitlines())}
    assert set(rows) == {("3", "2", "public"), ("3", "9", "public"), ("3", "*", "public")}
    vendor = rows[("3", "2", "public")]
    assert vendor["releases"] == 2 and vendor["epsilon"] == pytest.approx(epsilon_for_rho(0.04, 1e-6))
    assert vendor["reserved_rho"] == pytest.approx(0.02) and rows[("3", "9", "public")]["reserved_rho"] == 0
    total = rows[("3", "*", "public")]
    assert total["releases"] == 3 and total["epsilon"] == pytest.approx(epsilon_for_rho(0.06, 1e-6))
    assert total["reserved_rho"] == pytest.approx(0.02)
