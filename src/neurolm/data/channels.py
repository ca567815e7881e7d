"""The 10-20 channel vocabulary of NeuroLM and normalisation of real-world channel labels.

The 10-20 and 10-10 names of one electrode (``T3``/``T7``, ``T4``/``T8``, ``T5``/``P7``, ``T6``/``P8``) are one
channel to a task: a task asking for either name takes a recording labelled with the other (MNE's ``standard_1020``
montage and modern caps use the 10-10 names, TUH and EEGMAT the 10-20 ones). The window keeps the name the task asks
for, so a task's windows look the same to the model whatever cap they came from; the manifest records the file's
label. Both names stay vocabulary entries (the reference's list), so pretraining keeps each file's own name.

The vocabulary order is the reference implementation's ``standard_1020`` list: the index of a channel is what the
models' channel embeddings are looked up with, so the order must never change (checkpoint compatibility).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

from ..errors import NeuroLMError

VOCABULARY: tuple[str, ...] = tuple(
    """FP1 FPZ FP2 AF9 AF7 AF5 AF3 AF1 AFZ AF2 AF4 AF6 AF8 AF10 F9 F7 F5 F3 F1 FZ F2 F4 F6 F8 F10 FT9 FT7 FC5 FC3 FC1
    FCZ FC2 FC4 FC6 FT8 FT10 T9 T7 C5 C3 C1 CZ C2 C4 C6 T8 T10 TP9 TP7 CP5 CP3 CP1 CPZ CP2 CP4 CP6 TP8 TP10 P9 P7 P5
    P3 P1 PZ P2 P4 P6 P8 P10 PO9 PO7 PO5 PO3 PO1 POZ PO2 PO4 PO6 PO8 PO10 O1 OZ O2 O9 CB1 CB2 IZ O10 T3 T5 T4 T6 M1
    M2 A1 A2 CFC1 CFC2 CFC3 CFC4 CFC5 CFC6 CFC7 CFC8 CCP1 CCP2 CCP3 CCP4 CCP5 CCP6 CCP7 CCP8 T1 T2 FTT9h TTP7h TPP9h
    FTT10h TPP8h TPP10h FP1-F7 F7-T7 T7-P7 P7-O1 FP2-F8 F8-T8 T8-P8 P8-O2 FP1-F3 F3-C3 C3-P3 P3-O1 FP2-F4 F4-C4
    C4-P4 P4-O2 pad I1 I2""".split()
)
INDEX: dict[str, int] = {name.upper(): i for i, name in enumerate(VOCABULARY)}
"""Upper-cased name → vocabulary index (labels are matched case-insensitively)."""
PAD_INDEX: int = INDEX["PAD"]
"""Channel index of padded tokens. The list has 139 entries and ``pad`` is at 136; the spec's prose says "128 entries,
pad = 125", which contradicts its own list and the reference code, so the list wins (docs/data.md, decisions)."""

# Old (10-20) and new (10-10) names of the same temporal/parietal sites. The reference keeps both as separate
# vocabulary entries; a task's channel list accepts either (module notes), pretraining keeps the file's name.
T3_T7_ALIASES: dict[str, str] = {"T3": "T7", "T4": "T8", "T5": "P7", "T6": "P8"}
SAME_ELECTRODE: dict[str, str] = T3_T7_ALIASES | {new: old for old, new in T3_T7_ALIASES.items()}
"""Either name of an electrode → its other name."""

# Montage references that trail a label: TUH "-REF"/"-LE", mastoid/ear references "-A1/-A2/-M1/-M2", average "-AVG".
_REFERENCE_SUFFIX = re.compile(r"-(REF|LE|AR|AVG|AV|A1|A2|M1|M2|CZ)$")
_TYPE_PREFIX = re.compile(r"^(EEG|EOG|EMG|ECG|EKG)\s+")


class UnknownChannelError(NeuroLMError, ValueError):
    """A channel label that is not in the 10-20 vocabulary."""


def normalize_name(label: str, *, alias_t3_t7: bool = False) -> str | None:
    """Map a recording's channel label to its vocabulary name, or ``None`` when it is not an EEG site we know.

    ``EEG FP1-REF``, ``EEG FP1-LE``, ``Fp1``, ``EEG Fp1-A2`` → ``FP1``; ``EEG F4-M1`` → ``F4``. Bipolar labels whose
    pair is itself a vocabulary entry (``FP1-F7``) are kept as the pair. Trailing dots are dropped: PhysioNet's EEG
    Motor Movement/Imagery EDFs pad every label to four characters with them (``Fc5.``, ``Cz..``), as MNE's
    ``eegbci.standardize`` also strips.
    """
    name = label.strip().rstrip(".").upper()
    if _TYPE_PREFIX.match(name) and not name.startswith("EEG"):
        return None  # EOG/EMG/ECG channels are never EEG sites, whatever their suffix says
    name = _TYPE_PREFIX.sub("", name).strip().replace(" ", "")
    if name not in INDEX:
        name = _REFERENCE_SUFFIX.sub("", name)
    if alias_t3_t7:
        name = T3_T7_ALIASES.get(name, name)
    return name if name in INDEX and name != "PAD" else None


def channel_indices(names: Iterable[str]) -> list[int]:
    """Vocabulary indices of already-normalised names; raises naming every unknown one."""
    names = list(names)
    unknown = [n for n in names if n.upper() not in INDEX]
    if unknown:
        raise UnknownChannelError(f"channel(s) not in the 10-20 vocabulary: {', '.join(unknown)}")
    return [INDEX[n.upper()] for n in names]


def map_channels(
    labels: Sequence[str], wanted: Sequence[str] | None = None, *, alias_t3_t7: bool = False
) -> dict[str, str]:
    """Map vocabulary names to the recording's labels.

    With ``wanted`` (a dataset's channel list), every wanted channel must be present, under its name or the other
    name of the same electrode (:data:`SAME_ELECTRODE`), else the error names the missing ones, what the file has
    and which of its labels are no 10-20 name at all. Without it, every recognisable EEG channel is kept
    (pretraining). The first label wins when two labels normalise to the same site.
    """
    found: dict[str, str] = {}
    for label in labels:
        name = normalize_name(label, alias_t3_t7=alias_t3_t7)
        if name is not None and name not in found:
            found[name] = label
    if wanted is None:
        return found
    for w in wanted:
        other = SAME_ELECTRODE.get(w)
        if w not in found and other in found and other not in wanted:
            found[w] = found[other]
    missing = [w for w in wanted if w not in found]
    if missing:
        named = [f"{w} (or {SAME_ELECTRODE[w]})" if w in SAME_ELECTRODE else w for w in missing]
        unknown = [lab for lab in labels if normalize_name(lab) is None]
        raise UnknownChannelError(
            f"missing required channel(s) {', '.join(named)}; the recording has: {', '.join(labels)}"
            + (f" (not 10-20 names: {', '.join(unknown)})" if unknown else "")
        )
    return {w: found[w] for w in wanted}


def renamed_channels(mapping: dict[str, str]) -> dict[str, str]:
    """The channels of a :func:`map_channels` result read under the other name of their electrode: task name →
    the file's label (what the manifest records)."""
    return {name: label for name, label in mapping.items() if normalize_name(label) != name}
