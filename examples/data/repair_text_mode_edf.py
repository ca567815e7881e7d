"""Undo a text-mode copy of EDF files: a CR byte put before every LF byte of the data section.

`neurolm prepare` refuses such files (their samples are shifted into noise). The EEGMMIDB files of
Quixotte/bci_practical_heyni_boorn_janssen@72dd3be are stored that way: R03-R14 are longer than their headers declare
by exactly their CR-LF count; R01-R02 were also cut back to their declared size, losing their last record. Dropping
the CR of every CR-LF pair restores the bytes; each EDF+ record's annotation must then start with its own onset
("+k"), which is checked. A partial last record is dropped and the header's record count set to the whole records.

    python examples/data/repair_text_mode_edf.py SRC_DIR DST_DIR    # every *.edf below SRC_DIR, same layout in DST_DIR
"""

from __future__ import annotations

import sys
from pathlib import Path


def repair(src: Path, dst: Path) -> str:
    """Write the repaired copy of EDF+ file ``src`` to ``dst``; return what was done."""
    b = src.read_bytes()
    ns = int(b[252:256])
    n_header = 256 * (ns + 1)
    declared = int(b[236:244])
    per_record = [int(b[256 + ns * 216 + i * 8 : 256 + ns * 216 + (i + 1) * 8]) for i in range(ns)]
    record = sum(per_record) * 2
    labels = [b[256 + i * 16 : 256 + (i + 1) * 16].decode("latin-1").strip() for i in range(ns)]
    head, data = bytearray(b[:n_header]), b[n_header:]
    if b"\n" in head:
        raise SystemExit(f"{src}: LF bytes in the header: not a text-mode copy of an EDF")
    crlf = data.count(b"\r\n")
    if crlf == data.count(b"\n") > 0:  # every LF after a CR: the copy put them there
        data = data.replace(b"\r\n", b"\n")
    else:
        crlf = 0
    whole = min(declared, len(data) // record)
    data = data[: whole * record]
    head[236:244] = f"{whole:<8d}".encode()
    if labels[-1] == "EDF Annotations":  # the proof that the records are aligned again
        for k in range(whole):
            tal = data[(k + 1) * record - per_record[-1] * 2 : (k + 1) * record]
            if not tal.startswith(b"+%d\x14" % k):
                raise SystemExit(f"{src}: record {k}'s annotation starts {tal[:12]!r}, not '+{k}': not repaired")
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_bytes(bytes(head) + data)
    return f"{crlf} CR bytes dropped, {whole} of {declared} records kept"


if __name__ == "__main__":
    src_dir, dst_dir = Path(sys.argv[1]), Path(sys.argv[2])
    for path in sorted(src_dir.rglob("*.edf")):
        print(f"{path.relative_to(src_dir)}: {repair(path, dst_dir / path.relative_to(src_dir))}")
