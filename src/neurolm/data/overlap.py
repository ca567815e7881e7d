"""``neurolm overlap``: recordings of a pretraining corpus that are also in a task's val/test sets (TUEG holds TUAB,
TUEV and TUSL recordings), found before pretraining so that a test score is not measured on pretraining data.

Two ways of finding them, both over prepared window stores:

* **Names.** TUH files are named ``<subject>_s<session>_t<token>`` (``aaaaamye_s001_t000.edf``); a pretraining file
  with the name of a task's val/test file is the same recording, one with its subject is the same patient.
* **Signal fingerprints**, for copies whose name changed or that were cut differently. Every channel's log power over
  a sliding 1 s (every 25 ms) is turned into hashes: at a position, 20 bits say whether the power rose or fell over
  each of the next 20 one-second steps. Rises and falls survive a gain change, a different cut (the copy's grid is
  at most 12.5 ms off, so the compared seconds share 99 % of their samples) and the filters' edge effects, and two
  unrelated recordings share a 20-bit pattern on one channel only by chance. The task's hashes (one per second per
  channel) form the index; every pretraining position (ten per second) is looked up, and a hit votes for
  (task recording, time offset). A pair is the same recording when one offset gets at least ``min_votes`` votes and
  at least ``min_fraction`` of the task positions the two recordings could share.

The fingerprint needs 21 s of continuous signal, so event windows of a few seconds (TUEV) are matched by name only.
Cost: one pass over the pretraining store's samples (as ``prepare`` writes them) plus a sorted index of about 20 bytes
per second and channel of the tasks' val/test data.

``--exclude OUT_DIR`` writes a copy of the pretraining store without the overlapping recordings (streamed, one
recording at a time), its manifest listing what was excluded and why.
"""

from __future__ import annotations

import argparse
import json
import re
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ..errors import NeuroLMError
from .store import MANIFEST, SplitWriter, WindowSplit, WindowStore, atomic_write_bytes, recorded_sizes

TUH_NAME = re.compile(r"^(?P<subject>[a-z]{8}|\d{8})_s(?P<session>\d{3})_t(?P<token>\d{3})")
SFREQ = 200
STEP = 5
"""Samples between envelope positions (0.025 s): a copy's grid is at most 12.5 ms off the original's."""
BLOCK = 200
"""Samples in one power value (1 s)."""
BITS = 20
"""Rises/falls per hash, each over one second (BLOCK // STEP positions)."""
TASK_SPLITS = ("val", "test")


@dataclass(frozen=True)
class Match:
    pretrain_file: str
    task: str
    task_split: str
    task_file: str
    kind: str
    """``same recording`` or ``same subject``."""
    evidence: str


def tuh_name(file: str) -> tuple[str, str] | None:
    """(subject, recording id) of a TUH file name, or None for other names."""
    m = TUH_NAME.match(Path(file).name)
    return (m["subject"], m.group(0)) if m else None


def segments(split: WindowSplit) -> Iterator[tuple[str, list[tuple[float, np.ndarray, np.ndarray]]]]:
    """Each file of a split with its continuous stretches ``(start_s, chans, (C, T) signal)``: windows that follow
    or overlap one another without a gap are joined."""
    for file, rows in split.windows_by_file().items():
        pieces: list[tuple[float, np.ndarray, list[np.ndarray]]] = []
        end = None
        for i in rows:
            item = split[int(i)]
            sig, t0 = item["signal"], item["start"]
            if end is not None and t0 < end + 1.5 / SFREQ and np.array_equal(pieces[-1][1], item["chans"]):
                pieces[-1][2].append(sig[:, max(0, int(round((end - t0) * SFREQ))) :])  # overlapping windows
            else:
                pieces.append((t0, item["chans"], [sig]))
            end = max(end or 0.0, t0 + sig.shape[1] / SFREQ)
        yield file, [(t0, chans, np.concatenate(sigs, axis=1)) for t0, chans, sigs in pieces]


def hashes(signal: np.ndarray) -> np.ndarray:
    """``(C, P)`` uint32 hashes of a ``(C, T)`` signal at every envelope position that has 20 s after it."""
    power = np.cumsum(np.asarray(signal, np.float64) ** 2, axis=1)
    power = np.concatenate([np.zeros((len(power), 1)), power], axis=1)
    n = (signal.shape[1] - BLOCK) // STEP + 1
    if n <= 0:
        return np.zeros((len(signal), 0), np.uint32)
    at = np.arange(n) * STEP
    env = np.log(power[:, at + BLOCK] - power[:, at] + 1e-12)
    lag = BLOCK // STEP
    rise = env[:, lag:] > env[:, :-lag]
    p = rise.shape[1] - (BITS - 1) * lag
    if p <= 0:
        return np.zeros((len(signal), 0), np.uint32)
    out = np.zeros((len(signal), p), np.uint32)
    for j in range(BITS):
        out |= rise[:, j * lag : j * lag + p].astype(np.uint32) << j
    return out


def _keys(chans: np.ndarray, h: np.ndarray) -> np.ndarray:
    return (chans.astype(np.uint64)[:, None] << np.uint64(32)) | h.astype(np.uint64)


class TaskIndex:
    """Hashes of the tasks' val/test recordings, one per second per channel, sorted for lookup."""

    def __init__(self, tasks: list[WindowStore], progress: bool = True):
        self.files: list[tuple[str, str, str]] = []  # (task, split, file)
        self.positions: list[int] = []  # indexed positions per file
        keys, owners, times = [], [], []
        for store in tasks:
            for split in (s for s in TASK_SPLITS if s in store.splits):
                sp = store.split(split)
                for file, pieces in tqdm(segments(sp), desc=f"index {store.dataset} {split}", unit="file",
                                         disable=None if progress else True, leave=False):
                    fid, count = len(self.files), 0
                    self.files.append((store.dataset, split, file))
                    for t0, chans, sig in pieces:
                        h = hashes(sig)[:, :: BLOCK // STEP]
                        k = _keys(chans, h)
                        keys.append(k.ravel())
                        owners.append(np.full(k.size, fid, np.int32))
                        times.append(np.tile(t0 + np.arange(h.shape[1]) * BLOCK / SFREQ, len(chans)))
                        count += h.size
                    self.positions.append(count)
        keys = np.concatenate(keys) if keys else np.zeros(0, np.uint64)
        order = np.argsort(keys, kind="stable")
        self.keys = keys[order]
        self.owner = np.concatenate(owners)[order] if owners else np.zeros(0, np.int32)
        self.time = np.concatenate(times)[order] if times else np.zeros(0)
        # Patterns common to many recordings (a steady rise, say) say nothing about which one: not indexed.
        _, counts = np.unique(self.keys, return_counts=True)
        common = np.repeat(counts > 8, counts)
        self.keys, self.owner, self.time = self.keys[~common], self.owner[~common], self.time[~common]

    def votes(self, pieces: list[tuple[float, np.ndarray, np.ndarray]]) -> Counter:
        """Votes of one pretraining recording's hashes for (task file, offset in 0.1 s)."""
        votes: Counter = Counter()
        for t0, chans, sig in pieces:
            h = hashes(sig)
            k = _keys(chans, h).ravel()
            t = np.tile(t0 + np.arange(h.shape[1]) * STEP / SFREQ, len(chans))
            lo, hi = np.searchsorted(self.keys, k, "left"), np.searchsorted(self.keys, k, "right")
            hit = np.flatnonzero(hi > lo)
            if not len(hit):
                continue
            n = hi[hit] - lo[hit]
            rows = np.repeat(lo[hit], n) + (np.arange(n.sum()) - np.repeat(np.cumsum(n) - n, n))
            q = np.repeat(t[hit], n)
            offset = np.round((self.time[rows] - q) * SFREQ / STEP).astype(np.int64)
            pair = self.owner[rows].astype(np.int64) << 32 | (offset + (1 << 31))
            keys, counts = np.unique(pair, return_counts=True)
            votes.update(dict(zip(((int(k >> 32), int(k & 0xFFFFFFFF) - (1 << 31)) for k in keys), counts.tolist())))
        return votes


def find_overlap(pretrain: WindowStore, tasks: list[WindowStore], *, min_votes: int = 50, min_fraction: float = 0.1,
                 progress: bool = True) -> list[Match]:
    """Every pretraining recording that is a task's val/test recording (by TUH name or fingerprint) or of the same
    TUH subject, one :class:`Match` per (pretraining file, task file)."""
    by_subject: dict[str, list[tuple[tuple[str, str, str], str]]] = {}
    for store in tasks:
        for split in (s for s in TASK_SPLITS if s in store.splits):
            for file in store.split(split).windows_by_file():
                if name := tuh_name(file):
                    by_subject.setdefault(name[0], []).append(((store.dataset, split, file), name[1]))
    index = TaskIndex(tasks, progress)
    found: dict[tuple[str, tuple[str, str, str]], Match] = {}
    for split in pretrain.splits:
        for file, pieces in tqdm(segments(pretrain.split(split)), desc=f"overlap {split}", unit="file",
                                 disable=None if progress else True):
            name = tuh_name(file)
            for key, recording in by_subject.get(name[0], []) if name else []:
                same = name[1] == recording
                found[(file, key)] = Match(file, *key, "same recording" if same else "same subject",
                                           f"TUH name {recording if same else 'subject ' + name[0]}")
            votes = index.votes(pieces)
            best: dict[int, tuple[int, int]] = {}
            for (fid, off), n in votes.items():
                score = n + votes.get((fid, off - 1), 0) + votes.get((fid, off + 1), 0)
                if score > best.get(fid, (0, 0))[0]:
                    best[fid] = (score, off)
            query_s = sum(sig.shape[1] for _, _, sig in pieces) / SFREQ
            for fid, (score, off) in best.items():
                shared = min(index.positions[fid], query_s * max(len(c) for _, c, _ in pieces))
                if score >= min_votes and score >= min_fraction * shared:
                    key = index.files[fid]
                    found[(file, key)] = Match(file, *key, "same recording",
                                               f"signal fingerprint ({score} matching hashes at offset "
                                               f"{off * STEP / SFREQ:+.1f} s)")
    return sorted(found.values(), key=lambda m: (m.pretrain_file, m.task, m.task_split, m.task_file))


def exclude(pretrain: WindowStore, matches: list[Match], out_dir: Path, progress: bool = True) -> dict:
    """Copy ``pretrain`` to ``out_dir`` without the recordings in ``matches``; return the copy's manifest."""
    out_dir = Path(out_dir)
    if out_dir.resolve() == pretrain.root.resolve():
        raise NeuroLMError(f"{out_dir}: --exclude needs a new directory, not the pretraining store itself")
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / MANIFEST).unlink(missing_ok=True)
    reasons: dict[str, list[str]] = {}
    for m in matches:
        reasons.setdefault(m.pretrain_file, []).append(f"{m.kind} as {m.task} {m.task_split} {m.task_file} "
                                                       f"({m.evidence})")
    dtype = pretrain.manifest.get("dtype", "float32")
    checksums, splits = {}, {}
    for split in pretrain.splits:
        sp, writer = pretrain.split(split), SplitWriter(out_dir, split, dtype)
        for file, rows in tqdm(sp.windows_by_file().items(), desc=f"exclude {split}", unit="file",
                               disable=None if progress else True):
            if file in reasons:
                continue
            items = [sp[int(i)] for i in rows]
            writer.append([it["signal"] for it in items], items[0]["chans"], np.array([it["label"] for it in items]),
                          np.array([it["start"] for it in items]), items[0]["subject"], file)
        checksums |= writer.finish()
        splits[split] = {"windows": writer.windows, "subjects": len({g.subject for g in writer.groups}),
                         "files": len({g.file for g in writer.groups}), "classes": {}}
    manifest = pretrain.manifest | {
        "splits": splits, "checksums": checksums, "sizes": recorded_sizes(out_dir, checksums),
        "derived_from": str(pretrain.root),
        "fingerprint": None,  # not the raw inputs' store: `neurolm prepare` into this directory starts afresh
        "excluded": [{"file": f, "reasons": r} for f, r in sorted(reasons.items())],
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    atomic_write_bytes(out_dir / MANIFEST, json.dumps(manifest, indent=2).encode())
    return manifest


def format_report(matches: list[Match], pretrain: WindowStore, tasks: list[WindowStore]) -> str:
    files = {m.pretrain_file for m in matches}
    total = len({f for s in pretrain.splits for f in pretrain.split(s).windows_by_file()})
    kinds = Counter(m.kind for m in matches)
    lines = [f"{m.pretrain_file}: {m.kind} as {m.task} {m.task_split} {m.task_file} ({m.evidence})" for m in matches]
    lines.append(f"overlap: {len(files)} of {total} pretraining recordings overlap the val/test sets of "
                 f"{', '.join(t.dataset for t in tasks)} ({kinds['same recording']} same recording, "
                 f"{kinds['same subject']} same subject)")
    return "\n".join(lines)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("pretrain_store", type=Path, help="prepared pretraining store (neurolm prepare pretrain)")
    p.add_argument("task_stores", type=Path, nargs="+", help="prepared task stores whose val/test sets to protect")
    p.add_argument("--report", type=Path, default=None, help="also write the matches as JSON here")
    p.add_argument("--exclude", type=Path, default=None, metavar="OUT_DIR",
                   help="write a copy of the pretraining store without the overlapping recordings")
    p.add_argument("--min-votes", type=int, default=50, help="matching hashes a fingerprint match needs")


def run(args: argparse.Namespace) -> int:
    pretrain, tasks = WindowStore(args.pretrain_store), [WindowStore(t) for t in args.task_stores]
    matches = find_overlap(pretrain, tasks, min_votes=args.min_votes)
    print(format_report(matches, pretrain, tasks))
    if args.report:
        atomic_write_bytes(args.report, json.dumps([asdict(m) for m in matches], indent=2).encode())
    if args.exclude:
        m = exclude(pretrain, matches, args.exclude)
        kept = sum(s["windows"] for s in m["splits"].values())
        print(f"excluded {len(m['excluded'])} recordings; {kept} windows kept → {args.exclude}")
    return 0
