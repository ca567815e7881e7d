"""Peak memory of ``neurolm ask`` on a short and a long recording: it must not grow with the recording's length
(issue 35: 10 h of 19-channel 256 Hz EEG within 300 MB of 15 minutes' peak).

    python benchmarks/bench_ask_memory.py [--hours 10] [--minutes 15] [--every 30] [--tmp /tmp/bench_ask_memory]

Writes two 19-channel 256 Hz EDFs of 20 µV noise (the header by edfio, as tests/conftest.py writes EDFs; the data
records appended a block at a time, so that writing 10 h needs no 10 h array), saves a random tiny NeuroLM, and runs
``neurolm ask MODEL EDF --task workload --every S`` on each in its own process, reading that process's peak resident
memory from ``wait4``. Also runs the 15-minute recording through the whole-file path (``chunk_s=None``, what ``ask``
did before chunking) for comparison. Printed: each peak and run time, the difference and the ratio long/short.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import edfio
import numpy as np

LABELS = "FP1 FP2 F3 F4 F7 F8 T3 T4 C3 C4 T5 T6 P3 P4 O1 O2 FZ CZ PZ".split()  # the workload task's 19 channels
SFREQ = 256
PHYSICAL = 1000.0  # ± µV of the EDF's physical range, as the test fixtures use


def write_long_edf(path: Path, seconds: int, seed: int = 0) -> Path:
    """A plain EDF of ``seconds`` 1-second records of 20 µV Gaussian noise on 19 channels, written a block at a time."""
    if path.exists() and path.stat().st_size > 0:
        return path
    one = [edfio.EdfSignal(np.zeros(SFREQ), sampling_frequency=SFREQ, label=lab, physical_dimension="uV",
                           physical_range=(-PHYSICAL, PHYSICAL)) for lab in LABELS]
    edfio.Edf(one, data_record_duration=1).write(path)
    raw = path.read_bytes()
    header = bytearray(raw[: 256 * (len(LABELS) + 1)])
    header[236:244] = f"{seconds:<8d}".encode()  # number of data records
    rng = np.random.default_rng(seed)
    with open(path, "wb") as fh:
        fh.write(header)
        for done in range(0, seconds, 900):
            n = min(900, seconds - done)
            uv = rng.normal(0, 20, (n, len(LABELS), SFREQ))
            digital = np.clip(np.round(uv / PHYSICAL * 32767), -32768, 32767).astype("<i2")
            fh.write(digital.tobytes())  # record-major, then signal, then sample: the EDF data record layout
    return path


def peak_rss_mb(cmd: list[str]) -> tuple[float, float]:
    """Run ``cmd``; its peak resident memory (MB, from wait4) and wall time (s)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    err = proc.stderr.read().decode()
    proc.stderr.close()
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({code}):\n{err[-2000:]}")
    return usage.ru_maxrss / 1024, wall  # Linux: kilobytes


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hours", type=float, default=10.0, help="length of the long recording (default 10)")
    ap.add_argument("--minutes", type=float, default=15.0, help="length of the short recording (default 15)")
    ap.add_argument("--every", type=float, default=30.0, help="ask's --every in seconds (default 30)")
    ap.add_argument("--tmp", type=Path, default=Path("/tmp/bench_ask_memory"), help="where the files go")
    args = ap.parse_args()
    args.tmp.mkdir(parents=True, exist_ok=True)
    model = args.tmp / "model"
    if not (model / "config.json").exists():
        import torch

        from neurolm.lm import NeuroLM
        from neurolm.tokenizer import NeuralTokenizer, TokenizerConfig

        torch.manual_seed(0)
        NeuroLM.from_tokenizer(NeuralTokenizer(TokenizerConfig.from_preset("tiny")), "tiny").save_pretrained(model)
    short = write_long_edf(args.tmp / f"short_{args.minutes:g}min.edf", int(args.minutes * 60))
    long = write_long_edf(args.tmp / f"long_{args.hours:g}h.edf", int(args.hours * 3600), seed=1)
    ask = [sys.executable, "-c", "import sys; from neurolm.cli import main; sys.exit(main(sys.argv[1:]))", "ask",
           str(model), "--task", "workload", "--every", f"{args.every:g}", "--device", "cpu"]
    whole = [sys.executable, "-c", ("import sys, warnings; warnings.simplefilter('ignore'); "
                                    "from neurolm.instruct.ask import ask; "
                                    f"ask(sys.argv[1], sys.argv[2], 'workload', every={args.every!r}, chunk_s=None)"),
             str(model), str(short)]
    rows = {}
    for name, cmd in ((f"{args.minutes:g} min", [*ask[:5], str(short), *ask[5:]]),
                      (f"{args.hours:g} h", [*ask[:5], str(long), *ask[5:]]),
                      (f"{args.minutes:g} min, whole-file path", whole)):
        rows[name] = peak_rss_mb(cmd)
        print(f"{name:>28}: peak RSS {rows[name][0]:7.0f} MB, {rows[name][1]:6.1f} s", flush=True)
    (s, _), (lg, _) = rows[f"{args.minutes:g} min"], rows[f"{args.hours:g} h"]
    print(f"{args.hours:g} h vs {args.minutes:g} min: +{lg - s:.0f} MB, ratio {lg / s:.2f} "
          f"(target: within 300 MB) -> {'OK' if lg - s <= 300 else 'OVER'}")


if __name__ == "__main__":
    main()
