"""The seven synthetic datasets: physiology per label, native layout per dataset.

Each ``<name>_recordings(n_subjects, rng)`` yields :class:`~.writers.Recording` objects one at a time (so the
corpus is never held in memory), each carrying the labelled windows its reader will cut, for the calibration
benchmark. Label effects vary per subject and per window, so class distributions overlap; the effect sizes below were
tuned with ``benchmarks/bench_synth_baseline.py`` so that a log band-power logistic regression lands between 0.6
and 0.9 balanced accuracy on every task at the default size.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from collections.abc import Iterator

import numpy as np

from ..datasets import DATASETS, SEED_CHANNELS, TUH_CHANNELS, in_order_blocks
from .signals import (
    Scalp,
    Subject,
    blink,
    broadband,
    burst,
    ecg,
    k_complex,
    narrowband,
    sharp_wave,
    slow_wander,
    spike_wave,
)
from .writers import Recording, Window

# --- montages ---------------------------------------------------------------------------------------------------
TUH_EEG = list(TUH_CHANNELS)
TUH_LABELS = [f"EEG {c}-REF" for c in TUH_EEG] + ["EEG EKG1-REF", "PHOTIC-REF"]
TCP_MONTAGE = [  # TUEV .rec channel index → bipolar pair of the TCP (temporal central parasagittal) montage
    ("FP1", "F7"), ("F7", "T3"), ("T3", "T5"), ("T5", "O1"), ("FP2", "F8"), ("F8", "T4"), ("T4", "T6"), ("T6", "O2"),
    ("A1", "T3"), ("T3", "C3"), ("C3", "CZ"), ("CZ", "C4"), ("C4", "T4"), ("T4", "A2"), ("FP1", "F3"), ("F3", "C3"),
    ("C3", "P3"), ("P3", "O1"), ("FP2", "F4"), ("F4", "C4"), ("C4", "P4"), ("P4", "O2"),
]  # fmt: skip
HMC_LABELS = ["EEG F4-M1", "EEG C4-M1", "EEG O2-M1", "EEG C3-M2", "EMG chin", "EOG E1-M2", "EOG E2-M2", "ECG"]
HMC_STAGES = list(DATASETS["hmc"].classes)
EEGMAT_EEG = "Fp1 Fp2 F3 F4 F7 F8 T3 T4 C3 C4 T5 T6 P3 P4 O1 O2 Fz Cz Pz".split()
EEGMAT_LABELS = [f"EEG {c}" for c in EEGMAT_EEG] + ["EEG A2-A1", "ECG ECG"]
SEED_EEG = list(SEED_CHANNELS)
# The raw sessions carry five more channels that readers drop: mastoids inside the cap order, EOG and ECG at the end.
SEED_LABELS = SEED_EEG[:32] + ["M1"] + SEED_EEG[32:41] + ["M2"] + SEED_EEG[41:] + ["HEO", "VEO", "ECG"]
SEED_FILMS = "H N S S N H S N H H N S N H S".split()
SEED_CLASS = {"H": 0, "N": 1, "S": 2}  # positive, neutral, negative (the store's labels)
SEED_MAT_LABEL = {"H": 1, "N": 0, "S": -1}  # label.mat's coding

# --- small helpers ------------------------------------------------------------------------------------------------


def tuh_ids(rng: np.random.Generator, n: int) -> list[str]:
    """``n`` distinct TUH-style 8-letter subject ids (``aaaaamfo``), sorted."""
    codes = rng.choice(26**5, size=n, replace=False)
    return sorted("aaa" + "".join(chr(97 + (int(c) // 26**k) % 26) for k in range(4, -1, -1)) for c in codes)


def draw_val_subjects(rng: np.random.Generator, ids: list[str], val_fraction: float = 0.2) -> dict[str, str]:
    """The train/val annotation of the TUH generators' windows (calibration only): the real split is ``prepare``'s
    own seeded draw (:func:`neurolm.data.datasets.split_subjects`), which the files do not fix; drawn from the
    generator's stream so the corpus stays what it was."""
    order = list(rng.permutation(len(ids)))
    n_val = min(max(1, round(val_fraction * len(ids))), len(ids) - 1) if len(ids) > 1 else 0
    return {ids[i]: ("val" if rank < n_val else "train") for rank, i in enumerate(order)}


def session_start(rng: np.random.Generator, year: int, hour: tuple[int, int] = (8, 17)) -> dt.datetime:
    day = dt.datetime(year, 1, 1) + dt.timedelta(days=int(rng.integers(365)))
    return day.replace(hour=int(rng.integers(*hour)), minute=int(rng.integers(60)), second=int(rng.integers(60)))


def awake(scalp: Scalp, *, delta=1.0, theta=1.0, alpha=1.0, beta=1.0, gamma=1.0, level_uv: float = 10.0) -> None:
    """Resting awake EEG: 1/f background plus the five rhythms with their usual topographies.

    Keyword gains are scalars or per-second arrays multiplying each band's baseline amplitude (µV at the
    topography's maximum): delta 4, theta 3.5, alpha 12 (posterior), beta 3, gamma 1.
    """
    secs = scalp.seconds
    wander = {b: slow_wander(scalp.rng, secs, 0.3) for b in ("delta", "theta", "beta")}
    scalp.background(level_uv)
    scalp.band("delta", 4.0, 0.5 + 0.5 * scalp.topo("frontal"), delta * wander["delta"])
    scalp.band("theta", 3.5, 0.6 + 0.4 * scalp.topo("central"), theta * wander["theta"])
    scalp.band("alpha", 12.0, scalp.topo("posterior"), alpha * slow_wander(scalp.rng, secs, 0.45))
    scalp.band("beta", 3.0, 0.5 + 0.5 * scalp.topo("frontal"), beta * wander["beta"])
    scalp.band("gamma", 1.0, scalp.topo("diffuse"), gamma)


def tuh_extras(scalp: Scalp) -> None:
    """The non-EEG channels of a TUH recording: EKG and the photic stimulator's trigger trace."""
    scalp.set_channel("EEG EKG1-REF", ecg(scalp.rng, scalp.n_times, scalp.sfreq, scalp.subject.heart_bpm))
    photic = np.zeros(scalp.n_times)
    if scalp.rng.random() < 0.5:  # one block of flashes at a random rate
        rate, start = scalp.rng.uniform(1, 20), scalp.rng.uniform(0, max(scalp.seconds - 10, 1))
        t = np.arange(scalp.n_times) / scalp.sfreq
        on = (t >= start) & (t < start + 10) & ((t - start) * rate % 1 < 0.1)
        photic[on] = 200.0
    scalp.set_channel("PHOTIC-REF", photic)


def _tuh_rate(rng: np.random.Generator) -> float:
    return float(rng.choice([250.0, 256.0]))


# --- TUAB ---------------------------------------------------------------------------------------------------------


def tuab_recordings(n_subjects: int, rng: np.random.Generator) -> Iterator[Recording]:
    """TUH Abnormal: abnormal = diffuse (sometimes focal) slowing and a slower, weaker posterior alpha."""
    n_subjects = max(n_subjects, 8)
    ids = tuh_ids(rng, n_subjects)
    n_eval = max(2, round(0.4 * n_subjects))
    order = rng.permutation(n_subjects)
    sets = {ids[i]: ("eval" if rank < n_eval else "train") for rank, i in enumerate(order)}
    # classes alternate within each set so that both sets hold both classes
    classes, seen = {}, {"eval": 0, "train": 0}
    for sid in ids:
        classes[sid] = seen[sets[sid]] % 2
        seen[sets[sid]] += 1
    train_split = draw_val_subjects(rng, [s for s in ids if sets[s] == "train"])
    for sid in ids:
        srng = np.random.default_rng(rng.integers(2**63))
        abnormal = classes[sid]
        subject = Subject.draw(srng)
        severity = srng.uniform(0.3, 0.95) if abnormal else 0.0
        if abnormal:
            subject.alpha_hz = max(7.0, subject.alpha_hz - 2.5 * severity)
        sfreq = _tuh_rate(srng)
        for session in range(1, 1 + int(srng.integers(1, 3))):
            seconds = 10 * int(srng.integers(6, 10))
            scalp = Scalp(TUH_LABELS, sfreq, seconds, subject, srng)
            # window-to-window variation: slowing comes and goes; normals have drowsy spells
            s_t = severity * slow_wander(srng, seconds, 0.5, tau_s=8.0)
            drowsy = np.where(slow_wander(srng, seconds, 1.0, tau_s=10.0) > 2.2, 1.0, 0.0) * (not abnormal)
            awake(
                scalp,
                delta=1 + 3.0 * s_t + 0.5 * drowsy,
                theta=1 + 1.5 * s_t + 0.8 * drowsy,
                alpha=(1 - 0.5 * severity) * (1 - 0.5 * drowsy),
            )
            if abnormal and srng.random() < 0.5:  # focal slowing over one hemisphere
                side = "left" if srng.random() < 0.5 else "right"
                scalp.band("delta", 6.0, scalp.topo(side), s_t)
            scalp.artifacts()
            tuh_extras(scalp)
            split = "test" if sets[sid] == "eval" else train_split[sid]
            cls = "abnormal" if abnormal else "normal"
            yield Recording(
                path=f"edf/{sets[sid]}/{cls}/01_tcp_ar/{sid}_s{session:03d}_t000.edf",
                labels=TUH_LABELS,
                data=scalp.finish(60.0),
                sfreq=sfreq,
                start=session_start(srng, 2009 + session),
                patient=sid,
                windows=[Window(float(s), 10.0, abnormal, split) for s in range(0, seconds - 9, 10)],
                used=[f"EEG {c}-REF" for c in TUH_EEG],
            )


# --- TUEV ---------------------------------------------------------------------------------------------------------
_TUEV_PROBS = np.array([0.15, 0.15, 0.15, 0.15, 0.15, 0.25])  # labels 1..6: spsw gped pled eyem artf bckg


def _tcp_rows(scalp: Scalp, topo: np.ndarray, rng: np.random.Generator) -> list[int]:
    """TCP channels on which an event is annotated: the bipolar pairs where its field is strongest."""
    index = {lb.split()[1].split("-")[0]: i for i, lb in enumerate(scalp.labels[: len(TUH_EEG)])}
    strength = np.array([max(abs(topo[index[a]]), abs(topo[index[b]])) for a, b in TCP_MONTAGE])
    strength += rng.uniform(0, 1e-3, strength.size)  # random order among equals (background, generalized)
    return sorted(np.argsort(strength)[::-1][: int(rng.integers(1, 4))].tolist())


def _tuev_event(scalp: Scalp, label: int, t0: float, focus: tuple[float, float], rng: np.random.Generator):
    """Add one event of class ``label`` in [t0, t0 + 1] s; returns the field used to pick its annotated channels."""
    fs, x = scalp.sfreq, scalp.xy
    dist2 = np.nan_to_num((x[:, 0] - focus[0]) ** 2 + (x[:, 1] - focus[1]) ** 2, nan=9.0)
    focal = np.exp(-dist2 / (2 * 0.3**2)) * scalp.eeg
    size = math.exp(rng.normal(0.0, 0.35))  # how conspicuous this event is
    if label == 1:  # spike and slow wave, focal; spiking patients spike repeatedly, so some fall in the context too
        times = [t0 + 0.1 + 0.4 * k for k in range(int(rng.integers(1, 3)))]
        times += list(rng.uniform(t0 - 2, t0 + 2.6, int(rng.integers(0, 3))))
        for t in times:
            scalp.transient(spike_wave(fs), t, 100 * size, focal)
        return focal
    if label in (2, 3):  # periodic discharges through the whole 5 s context: generalized or lateralized
        if label == 2:  # both hemispheres, frontal predominance
            field = (0.6 + 0.4 * scalp.topo("frontal")) * scalp.eeg
        else:  # the focus's hemisphere only
            field = (focal + 0.5 * scalp.topo("left" if focus[0] < 0 else "right")) * scalp.eeg
        period = rng.uniform(0.7, 1.4)
        for t in np.arange(t0 - 2 + rng.uniform(0, period), t0 + 3, period):
            scalp.transient(sharp_wave(fs), t, 65 * size, field)
        return field
    if label == 4:  # eye movement: slow frontal deflection, lateral ones with opposite polarity at F7/F8
        field = scalp.topo("prefrontal")
        if rng.random() < 0.5:
            field = field * np.tanh(np.nan_to_num(x[:, 0]) / 0.3) * 2.5
        for _ in range(int(rng.integers(1, 3))):
            scalp.transient(blink(fs, rng.uniform(0.3, 0.7)), t0 + rng.uniform(0, 0.5), 100 * size, field)
        return field
    if label == 5:  # muscle artifact over the temporal channels
        field = scalp.topo("temporal")
        scalp.muscle(t0 + rng.uniform(-0.3, 0.2), rng.uniform(0.6, 1.2), 25 * size, field)
        return field
    return rng.uniform(0, 1, len(scalp.labels)) * scalp.eeg  # background: annotated on arbitrary channels


def tuev_recordings(n_subjects: int, rng: np.random.Generator) -> Iterator[Recording]:
    """TUH Events: 1 s events (plus context) of six classes; ``.rec`` rows per annotated TCP channel."""
    n_subjects = max(n_subjects, 4)
    ids = tuh_ids(rng, n_subjects)
    n_eval = max(1, round(n_subjects / 2))
    sets = {sid: ("eval" if rank < n_eval else "train") for rank, sid in enumerate(rng.permutation(ids))}
    train_split = draw_val_subjects(rng, [s for s in ids if sets[s] == "train"])
    for sid in ids:
        srng = np.random.default_rng(rng.integers(2**63))
        subject = Subject.draw(srng)
        sfreq = _tuh_rate(srng)
        side = -1.0 if srng.random() < 0.5 else 1.0
        focus = (side * srng.uniform(0.5, 0.8), srng.uniform(-0.3, 0.3))  # the patient's (temporal) focus
        split = "test" if sets[sid] == "eval" else train_split[sid]
        for number in range(1, 1 + int(srng.integers(1, 3))):
            seconds = 10 * int(srng.integers(6, 9))
            scalp = Scalp(TUH_LABELS, sfreq, seconds, subject, srng)
            awake(scalp, delta=srng.uniform(1.0, 2.0), theta=srng.uniform(1.0, 1.6), alpha=srng.uniform(0.4, 1.0))
            scalp.artifacts(blinks_per_min=2.0, muscle_per_min=0.5)
            rows, windows = [], []
            t = 2.0 + srng.uniform(0, 1)
            while t + 1 + 2 <= seconds:
                label = int(srng.choice(6, p=_TUEV_PROBS)) + 1
                event_focus = (focus[0] + srng.normal(0, 0.1), focus[1] + srng.normal(0, 0.1))
                field = _tuev_event(scalp, label, t, event_focus, srng)
                for ch in _tcp_rows(scalp, field, srng):
                    rows.append(f"{ch},{t:.4f},{t + 1:.4f},{label}")
                windows.append(Window(t - 2, 5.0, label - 1, split))  # one window per event, however many rows
                t += 5.0 + srng.uniform(0, 0.5)
            tuh_extras(scalp)
            stem = f"edf/{sets[sid]}/{sid}/{sid}_{number:08d}"
            yield Recording(
                path=f"{stem}.edf",
                labels=TUH_LABELS,
                data=scalp.finish(60.0),
                sfreq=sfreq,
                start=session_start(srng, 2012),
                patient=sid,
                sidecars={f"{stem}.rec": "\n".join(rows) + "\n"},
                windows=windows,
                used=[f"EEG {c}-REF" for c in TUH_EEG],
            )


# --- TUSL ---------------------------------------------------------------------------------------------------------
TUSL_LABELS = list(DATASETS["tusl"].classes)
_TUSL_NEXT = np.array([[0.50, 0.20, 0.30], [0.30, 0.55, 0.15], [0.30, 0.10, 0.60]])  # Markov chain over segments


def tusl_recordings(n_subjects: int, rng: np.random.Generator) -> Iterator[Recording]:
    """TUH Slowing: consecutive 10 s segments of background, seizure (rhythmic, evolving) or slowing."""
    n_subjects = max(n_subjects, 5)
    ids = tuh_ids(rng, n_subjects)
    for sid, split in zip(ids, in_order_blocks(n_subjects, DATASETS["tusl"].split.blocks)):
        srng = np.random.default_rng(rng.integers(2**63))
        subject = Subject.draw(srng)
        sfreq = _tuh_rate(srng)
        n_seg = int(srng.integers(12, 19))
        seq = [int(srng.integers(3))]
        for _ in range(n_seg - 1):
            seq.append(int(srng.choice(3, p=_TUSL_NEXT[seq[-1]])))
        seconds = 10 * n_seg
        per_sec = np.repeat(np.array(seq), 10)
        slowing = (per_sec == 2) * np.exp(srng.normal(0.0, 0.4, seconds).repeat(1))
        scalp = Scalp(TUH_LABELS, sfreq, seconds, subject, srng)
        awake(scalp, delta=1 + 1.2 * slowing, theta=1 + 0.8 * slowing, alpha=1 - 0.3 * (per_sec == 2))
        side = "left" if srng.random() < 0.5 else "right"
        scalp.band("delta", 5.0, scalp.topo(side), slowing * srng.uniform(0.0, 1.0))
        _seizures(scalp, per_sec == 1, srng)
        scalp.artifacts()
        tuh_extras(scalp)
        stem = f"edf/{sid}/s001_2010/01_tcp_ar/{sid}_s001_t000"
        lines = ["version = tse_v1.0.0", ""] + [
            f"{10.0 * i:.4f} {10.0 * (i + 1):.4f} {TUSL_LABELS[c]} 1.0000" for i, c in enumerate(seq)
        ]
        yield Recording(
            path=f"{stem}.edf",
            labels=TUH_LABELS,
            data=scalp.finish(60.0),
            sfreq=sfreq,
            start=session_start(srng, 2010),
            patient=sid,
            sidecars={f"{stem}.tse_agg": "\n".join(lines) + "\n"},
            windows=[Window(10.0 * i, 10.0, c, split) for i, c in enumerate(seq)],
            used=[f"EEG {c}-REF" for c in TUH_EEG],
        )


def _seizures(scalp: Scalp, ictal: np.ndarray, rng: np.random.Generator) -> None:
    """Rhythmic activity over each run of seizure seconds: 5-8 Hz slowing to 3-4 Hz, focal onset spreading wide."""
    fs = scalp.sfreq
    edges = np.flatnonzero(np.diff(np.r_[0, ictal.astype(int), 0]))
    x = scalp.xy
    for on, off in zip(edges[::2], edges[1::2]):
        n = int((off - on) * fs)
        t = np.arange(n) / n
        freq = rng.uniform(5.0, 8.0) + (rng.uniform(3.0, 4.0) - rng.uniform(5.0, 8.0)) * t
        phase = 2 * np.pi * np.cumsum(freq) / fs
        amp = np.exp(rng.normal(math.log(22.0), 0.4)) * np.minimum(1.0, 4 * t) * (1 + 0.5 * t)
        wave = amp * (np.sin(phase) + 0.3 * np.sin(2 * phase)) + 5 * narrowband(rng, n, fs, 6.0, 2.0)
        cx = rng.choice([-0.5, 0.5])
        focal = np.nan_to_num(np.exp(-((x[:, 0] - cx) ** 2 + x[:, 1] ** 2) / (2 * 0.35**2)))
        field = (focal + rng.uniform(0.2, 0.6)) * scalp.eeg
        scalp.transient(wave, float(on), 1.0, field)


# --- HMC ----------------------------------------------------------------------------------------------------------
# Amplitude multipliers per stage for the awake bands, and event rates (per minute).
_STAGE_BANDS = {  # delta, theta, alpha, beta, gamma (muscle tone leaking into the EEG)
    "W": (0.7, 0.7, 1.2, 1.2, 1.8),
    "N1": (1.0, 1.6, 0.45, 0.8, 1.2),
    "N2": (1.8, 1.3, 0.2, 0.5, 0.8),
    "N3": (4.5, 1.2, 0.2, 0.4, 0.7),
    "R": (0.9, 1.5, 0.5, 0.9, 0.5),
}
_STAGE_EMG_UV = {"W": 20.0, "N1": 10.0, "N2": 8.0, "N3": 6.0, "R": 2.0}


def hypnogram(rng: np.random.Generator, n_epochs: int) -> list[str]:
    """A plausible night: wake, then cycles N1 → N2 → N3 → N2 → R with brief awakenings."""
    stages = ["W"] * int(rng.integers(2, 5))
    while len(stages) < n_epochs:
        for stage, lo, hi in (("N1", 2, 5), ("N2", 2, 6), ("N3", 2, 6), ("N2", 1, 4), ("R", 2, 6), ("W", 1, 4)):
            stages += [stage] * int(rng.integers(lo, hi))
    return stages[:n_epochs]


def hmc_recordings(n_subjects: int, rng: np.random.Generator) -> Iterator[Recording]:
    """HMC sleep: 30 s epochs scored W/N1/N2/N3/R; every third night's scoring is an EDF+ annotation file."""
    n_subjects = max(n_subjects, 6)
    splits = in_order_blocks(n_subjects, DATASETS["hmc"].split.blocks)
    sfreq, epoch = 256.0, 30
    for k in range(n_subjects):
        srng = np.random.default_rng(rng.integers(2**63))
        subject = Subject.draw(srng)
        stages = hypnogram(srng, int(srng.integers(36, 51)))
        seconds = epoch * len(stages)
        per_sec = np.repeat(stages, epoch)
        depth = np.repeat(np.exp(srng.normal(0.0, 0.3, len(stages))), epoch)  # epoch-to-epoch variation
        gains = np.array([_STAGE_BANDS[s] for s in per_sec]).T
        scalp = Scalp(HMC_LABELS, sfreq, seconds, subject, srng)
        awake(scalp, delta=gains[0] * depth, theta=gains[1] * depth, alpha=gains[2] / depth, beta=gains[3],
              gamma=gains[4])
        _sleep_events(scalp, stages, epoch, srng)
        name = f"SN{k + 1:03d}"
        start = session_start(srng, 2018, hour=(21, 24))
        onsets = [(i * epoch, epoch, f"Sleep stage {s}") for i, s in enumerate(stages)]
        lights = (float(epoch), 0.0, "Lights off@@EEG F4-A1")
        if (k + 1) % 3 == 0:
            sidecars = {f"{name}_sleepscoring.edf": [onsets[0], lights, *onsets[1:]]}
        else:
            rows = ["Date, Time, Recording onset, Duration, Annotation, Linked channel"]
            for on, dur, text in [onsets[0], lights, *onsets[1:]]:
                clock = start + dt.timedelta(seconds=on)
                linked = "EEG F4-A1" if text.startswith("Lights") else ""
                rows.append(f"{clock:%Y-%m-%d}, {clock:%H:%M:%S}, {on:.2f}, {dur:.2f}, {text}, {linked}")
            sidecars = {f"{name}_sleepscoring.txt": "\n".join(rows) + "\n"}
        yield Recording(
            path=f"{name}.edf",
            labels=HMC_LABELS,
            data=scalp.finish(50.0),
            sfreq=sfreq,
            start=start,
            patient=name,
            sidecars=sidecars,
            windows=[Window(float(i * epoch), 30.0, HMC_STAGES.index(s), splits[k]) for i, s in enumerate(stages)],
            used=HMC_LABELS[:4],
        )


def _sleep_events(scalp: Scalp, stages: list[str], epoch: int, rng: np.random.Generator) -> None:
    """Stage-specific graphoelements, eye movements (EOG), chin EMG and ECG."""
    fs, n = scalp.sfreq, scalp.n_times
    central, frontal = scalp.topo("central"), 0.5 + 0.5 * scalp.topo("frontal")
    eog_h, eog_v = np.zeros(n), np.zeros(n)
    emg = np.zeros(n)
    noise = broadband(rng, n, fs, 20.0, 100.0)
    for i, stage in enumerate(stages):
        t0 = float(i * epoch)

        def times(per_min: float, t0: float = t0) -> np.ndarray:
            """Poisson event onsets within this epoch."""
            return t0 + rng.uniform(0, epoch, rng.poisson(per_min * epoch / 60))

        emg[int(t0 * fs) : int((t0 + epoch) * fs)] = _STAGE_EMG_UV[stage] * math.exp(rng.normal(0, 0.3))
        if stage == "W":
            for t in times(12):
                _place(eog_v, blink(fs), t, fs, rng.uniform(80, 200))
            for t in times(20):
                _place(eog_h, np.ones(int(0.4 * fs)), t, fs, rng.uniform(-100, 100))
        elif stage == "N1":
            for t in times(3):
                scalp.transient(sharp_wave(fs, 200.0), t, rng.uniform(40, 90), central)  # vertex waves
            for t in times(4):
                _place(eog_h, np.hanning(int(2.0 * fs)), t, fs, rng.uniform(-80, 80))  # slow rolling
        elif stage in ("N2", "N3"):
            for t in times(5 if stage == "N2" else 1):
                spindle = burst(fs, rng.uniform(12.0, 14.0), rng.uniform(0.6, 1.5), rng)
                scalp.transient(spindle, t, rng.uniform(15, 35), central)
            for t in times(2 if stage == "N2" else 0.5):
                scalp.transient(k_complex(fs), t, rng.uniform(70, 150), frontal)
        elif stage == "R":
            for t in times(6):  # sawtooth runs and rapid eye movements
                run = burst(fs, rng.uniform(2.0, 3.5), rng.uniform(1.0, 3.0), rng)
                scalp.transient(run, t, rng.uniform(20, 45), central)
            for t in times(25):
                _place(eog_h, np.sign(np.sin(np.linspace(0, np.pi, int(0.3 * fs)))), t, fs, rng.uniform(-150, 150))
    scalp.set_channel("EMG chin", emg * noise)
    scalp.set_channel("EOG E1-M2", eog_h + eog_v)
    scalp.set_channel("EOG E2-M2", -eog_h + eog_v)
    scalp.set_channel("ECG", ecg(rng, n, fs, scalp.subject.heart_bpm))
    scalp.data[: len(HMC_LABELS) - 4] += np.outer(0.15 * scalp.topo("prefrontal")[:4] + 0.05, eog_v + 0.3 * eog_h)


def _place(target: np.ndarray, wave: np.ndarray, t: float, fs: float, amp: float) -> None:
    start = int(t * fs)
    lo, hi = max(start, 0), min(start + wave.size, target.size)
    if hi > lo:
        target[lo:hi] += amp * wave[lo - start : hi - start]


# --- Workload (EEGMAT) ----------------------------------------------------------------------------------------------


def workload_recordings(n_subjects: int, rng: np.random.Generator) -> Iterator[Recording]:
    """EEG during mental arithmetic: frontal-midline theta up and posterior alpha down versus rest."""
    n_subjects = max(n_subjects, 6)
    splits = in_order_blocks(n_subjects, DATASETS["workload"].split.blocks)
    sfreq = 500.0
    for k in range(n_subjects):
        srng = np.random.default_rng(rng.integers(2**63))
        subject = Subject.draw(srng)
        effect = max(0.2, srng.normal(1.0, 0.4))  # how strongly this person's EEG reacts to the task
        for part, seconds in ((1, 62 + 2 * int(srng.integers(0, 5))), (2, 62)):
            task = part == 2
            e = effect * task * slow_wander(srng, seconds, 0.4)
            scalp = Scalp(EEGMAT_LABELS, sfreq, seconds, subject, srng)
            awake(scalp, alpha=1 / (1 + 0.9 * e), beta=1 + 0.3 * e)
            scalp.band("theta", 4.0, scalp.topo("frontal_midline"), 0.5 + 1.0 * e)
            scalp.artifacts(blinks_per_min=8.0 + 6.0 * task)
            scalp.set_channel("ECG ECG", ecg(srng, scalp.n_times, sfreq, subject.heart_bpm * (1 + 0.08 * task)))
            scalp.set_channel("EEG A2-A1", 3.0 * narrowband(srng, scalp.n_times, sfreq, 10.0, 4.0))
            first = seconds - 60
            yield Recording(
                path=f"Subject{k:02d}_{part}.edf",
                labels=EEGMAT_LABELS,
                data=scalp.finish(50.0),
                sfreq=sfreq,
                start=session_start(srng, 2015),
                patient=f"Subject{k:02d}",
                windows=[Window(first + 2.0 * w, 4.0, int(task), splits[k]) for w in range(29)],
                used=EEGMAT_LABELS[:19],
            )


# --- SEED -----------------------------------------------------------------------------------------------------------
SEED_TRIAL_S, SEED_GAP_S, SEED_LEAD_S = 20.0, 4.0, 3.0


def seed_trial_times() -> tuple[list[float], list[float]]:
    """Start and end (s) of the 15 film clips in every synthetic session (one shared timing, as in SEED)."""
    starts = [SEED_LEAD_S + i * (SEED_TRIAL_S + SEED_GAP_S) for i in range(len(SEED_FILMS))]
    return starts, [s + SEED_TRIAL_S for s in starts]


def seed_recordings(n_subjects: int, rng: np.random.Generator) -> Iterator[Recording]:
    """SEED emotion: raw Neuroscan sessions (+ the 200 Hz ``Preprocessed_EEG`` release written from the same data).

    Positive films: less left-frontal alpha (approach) and more temporal beta/gamma; neutral: more posterior alpha;
    negative: less right-frontal alpha and more posterior delta. Each trial has its own effect size and its own
    class-unrelated arousal, so the classes overlap.
    """
    n_subjects = max(n_subjects, 1)
    sfreq = 250.0
    starts, ends = seed_trial_times()
    seconds = int(ends[-1] + SEED_LEAD_S)
    prefixes = _seed_prefixes(rng, n_subjects)
    for k in range(n_subjects):
        srng = np.random.default_rng(rng.integers(2**63))
        subject = Subject.draw(srng)
        gains = {b: np.ones(seconds) for b in ("delta", "theta", "alpha", "beta", "gamma")}
        left_alpha, right_alpha, temporal_fast = np.zeros(seconds), np.zeros(seconds), np.zeros(seconds)
        windows = []
        for film, s0, s1 in zip(SEED_FILMS, starts, ends):
            sl = slice(int(s0), int(s1))
            size = math.exp(srng.normal(0.0, 0.4)) * slow_wander(srng, int(s1 - s0), 0.3)
            for b in gains:  # film-specific arousal, unrelated to the class
                gains[b][sl] *= math.exp(srng.normal(0.0, 0.15))
            if film == "H":
                left_alpha[sl] = 0.35 * size
                temporal_fast[sl] = 0.5 * size
            elif film == "N":
                gains["alpha"][sl] *= 1 + 0.35 * size
            else:
                right_alpha[sl] = 0.35 * size
                gains["delta"][sl] *= 1 + 0.4 * size
            n_win = int((s1 - s0) // 4)
            for w in range(n_win):
                split = "train" if w < 0.6 * n_win else "val" if w < 0.8 * n_win else "test"
                windows.append(Window(s0 + 4.0 * w, 4.0, SEED_CLASS[film], split))
        scalp = Scalp(SEED_LABELS, sfreq, seconds, subject, srng)
        awake(scalp, **gains)
        for side, suppression in (("left", left_alpha), ("right", right_alpha)):  # frontal alpha, per hemisphere
            scalp.band("alpha", 6.0, scalp.topo(side) * scalp.topo("frontal"), 1 - suppression)
        scalp.band("beta", 3.0, scalp.topo("temporal"), temporal_fast)
        scalp.band("gamma", 1.5, scalp.topo("temporal"), temporal_fast)
        scalp.artifacts()
        scalp.set_channel("HEO", 30.0 * narrowband(srng, scalp.n_times, sfreq, 0.5, 0.5))
        scalp.set_channel("VEO", 30.0 * narrowband(srng, scalp.n_times, sfreq, 0.5, 0.5))
        scalp.set_channel("ECG", ecg(srng, scalp.n_times, sfreq, subject.heart_bpm))
        date = session_start(srng, 2013)
        stem = f"{k + 1}_{date:%Y%m%d}"
        data = scalp.finish(50.0)
        yield Recording(
            path=f"SEED_RAW_EEG/{stem}.cnt",
            labels=SEED_LABELS,
            data=data,
            sfreq=sfreq,
            start=date,
            patient=prefixes[k],  # SEED names the preprocessed arrays after the subject's initials
            windows=windows,
            used=SEED_EEG,
            sidecars={"SEED_RAW_EEG/trial_times.json": json.dumps({"start_s": starts, "end_s": ends}) + "\n"},
        )


def _seed_prefixes(rng: np.random.Generator, n: int) -> list[str]:
    """Distinct 2-3 letter variable prefixes (SEED names its arrays after the subject's initials, ``djc_eeg1``)."""
    out: list[str] = []
    while len(out) < n:
        p = "".join(chr(97 + int(c)) for c in rng.integers(26, size=int(rng.integers(2, 4))))
        if p not in out:
            out.append(p)
    return out


def seed_preprocessed(rec: Recording) -> dict[str, np.ndarray]:
    """The ``Preprocessed_EEG`` arrays of one session: each trial's 62 EEG channels low-passed at 75 Hz, 200 Hz."""
    from scipy.signal import butter, resample_poly, sosfiltfilt

    eeg = np.array([rec.labels.index(c) for c in SEED_EEG])
    lowpassed = sosfiltfilt(butter(4, 75.0, fs=rec.sfreq, output="sos"), rec.data[eeg], axis=1)
    up, down = 200, int(rec.sfreq)
    starts, ends = seed_trial_times()
    return {  # float32 halves the files; the real release is float64 but every reader casts anyway
        f"{rec.patient}_eeg{i}": resample_poly(lowpassed[:, int(s0 * rec.sfreq) : int(s1 * rec.sfreq)], up, down,
                                               axis=1).astype(np.float32)
        for i, (s0, s1) in enumerate(zip(starts, ends), start=1)
    }


def seed_labels() -> np.ndarray:
    return np.array([[SEED_MAT_LABEL[f] for f in SEED_FILMS]], dtype=np.int16)


# --- pretraining ------------------------------------------------------------------------------------------------------
_BIOSEMI32 = """Fp1 AF3 F7 F3 FC1 FC5 T7 C3 CP1 CP5 P7 P3 Pz PO3 O1 Oz O2 PO4 P4 P8 CP6 CP2 C4 T8 FC6 FC2 F4 F8 AF4
Fp2 Fz Cz""".split()
_TEN_TWENTY = "Fp1 Fp2 F7 F3 Fz F4 F8 T7 C3 Cz C4 T8 P7 P3 Pz P4 P8 O1 O2".split()
_TEN_TEN_EXTRA = "AF3 AF4 FC5 FC1 FC2 FC6 CP5 CP1 CP2 CP6 PO3 PO4 Oz".split()
_PRETRAIN_FORMATS = ("edf", "bdf", "fif", "set", "vhdr")


def pretrain_recordings(n_subjects: int, rng: np.random.Generator) -> Iterator[Recording]:
    """Unlabelled recordings in every format MNE reads, with mixed montages (19-32 channels) and rates."""
    for k in range(max(n_subjects, len(_PRETRAIN_FORMATS))):
        srng = np.random.default_rng(rng.integers(2**63))
        fmt = _PRETRAIN_FORMATS[k % len(_PRETRAIN_FORMATS)]
        if fmt == "edf":
            labels, sfreq = [f"EEG {c}-REF" for c in TUH_EEG[: int(srng.integers(19, 24))]], _tuh_rate(srng)
            stem, mains = f"tueg_{tuh_ids(srng, 1)[0]}_s001_t000", 60.0
        elif fmt == "bdf":
            labels, sfreq, stem, mains = _BIOSEMI32, 512.0, f"biosemi_{k:02d}", 50.0
        else:
            extra = list(srng.choice(_TEN_TEN_EXTRA, size=int(srng.integers(0, 11)), replace=False))
            labels = _TEN_TWENTY + extra
            sfreq = {"fif": 500.0, "set": 200.0, "vhdr": 256.0}[fmt]
            stem = {"fif": f"rec{k:02d}_raw", "set": f"eeglab_{k:02d}", "vhdr": f"brainvision_{k:02d}"}[fmt]
            mains = 50.0
        seconds = 10 * int(srng.integers(6, 13))
        subject = Subject.draw(srng)
        scalp = Scalp(labels, sfreq, seconds, subject, srng)
        awake(scalp, delta=srng.uniform(0.8, 2.5), theta=srng.uniform(0.8, 1.8), alpha=srng.uniform(0.3, 1.2))
        scalp.artifacts()
        yield Recording(
            path=f"{stem}.{fmt}",
            labels=labels,
            data=scalp.finish(mains),
            sfreq=sfreq,
            start=session_start(srng, 2016),
            patient=f"P{k:03d}",
            used=labels,
        )
