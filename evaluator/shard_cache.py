"""Verified shards kept between jobs: the fingerprint is checked once per shard load.

``datasets.load_task_data(pin_dir=...)`` copies a task's features into a private folder and
checks the keyed fingerprint of that copy and of the labels, so a job reads exactly the bytes
that were checked. That costs a copy and an HMAC over the whole shard (0.24 s at 1M rows) on
every job. This cache does it once per shard and hands the same verified, private copy to the
jobs that follow, as long as the site's stored files are unchanged (same inode, size and
modification time of ``meta.json``, the features and the labels); any change loads and verifies
again. The copy lives in the cache's own folder of ``work_dir`` (``shard-*``), locked like a job
folder (``evaluator.workdirs``) and removed on ``close``; sandboxes mount it read-only, so a job
cannot alter what the next job reads.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections import OrderedDict
from pathlib import Path
from typing import Any

from evaluator import datasets

MAX_SHARDS = 8  # verified copies kept (least recently used go first)


def _stamp(root: Path) -> tuple[tuple[int, int, int], ...]:
    """Identity of the stored files: a changed, replaced or rewritten file changes it."""
    files = (root / "meta.json", root / "features" / datasets.FEATURES_FILE, root / "labels" / datasets.LABELS_FILE)
    stamps = []
    for path in files:
        try:
            st = os.stat(path)
        except OSError:
            return ()  # missing: never cached, load_task_data says why
        stamps.append((st.st_ino, st.st_size, st.st_mtime_ns))
    return tuple(stamps)


class ShardCache:
    def __init__(self, *, data_dir: Path, work_root: Path, max_shards: int = MAX_SHARDS) -> None:
        from evaluator.workdirs import claim_work_dir

        self.data_dir = data_dir
        self.max_shards = max_shards
        work_root.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.dir = work_root / f"shard-{uuid.uuid4().hex}"
        self.dir.mkdir(mode=0o700)
        self._lock = claim_work_dir(self.dir)
        self._shards: OrderedDict[str, tuple[tuple[Any, ...], Any, Path]] = OrderedDict()
        self.loads = 0  # verified loads (tests and benchmarks)

    def load(self, task_id: int | str) -> datasets.TaskData:
        """The task's shard, verified; from the cache when the stored files have not changed."""
        key = str(task_id)
        stamp = _stamp(datasets.task_dir(self.data_dir, task_id))
        cached = self._shards.get(key)
        if cached is not None and stamp and cached[0] == stamp and cached[1].features_path.is_file():
            self._shards.move_to_end(key)
            return cached[1]
        self._drop(key)
        pin_dir = self.dir / uuid.uuid4().hex
        try:
            data = datasets.load_task_data(data_dir=self.data_dir, task_id=task_id, pin_dir=pin_dir)
        except BaseException:
            shutil.rmtree(pin_dir, ignore_errors=True)
            raise
        self.loads += 1
        if stamp and stamp == _stamp(datasets.task_dir(self.data_dir, task_id)):  # unchanged meanwhile
            self._shards[key] = (stamp, data, pin_dir)
            while len(self._shards) > self.max_shards:
                self._drop(next(iter(self._shards)))
        return data

    def _drop(self, key: str) -> None:
        entry = self._shards.pop(key, None)
        if entry is not None:
            shutil.rmtree(entry[2], ignore_errors=True)

    def close(self) -> None:
        self._shards.clear()
        shutil.rmtree(self.dir, ignore_errors=True)
        if self._lock >= 0:
            os.close(self._lock)
            self._lock = -1
