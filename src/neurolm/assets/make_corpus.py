"""Regenerate ``corpus.txt``, the small plain-text corpus shipped for the demo's text-LM loss.

No public text corpus can be downloaded where NeuroLM is built and tested, so the demo's text comes from this seeded
template grammar (our own work, released with the package under its MIT licence). The sentences are about EEG, sleep
and clinical routine so that the text the LM keeps modelling during pretraining resembles the instruction answers.

Run ``python src/neurolm/assets/make_corpus.py`` to rewrite the file; the output is byte-identical for a given seed.
"""

from __future__ import annotations

import random
from pathlib import Path

SUBJECTS = [
    "the patient", "the recording", "the technician", "the neurologist", "the night nurse", "the volunteer",
    "the sleeping child", "the older adult", "the research team", "the amplifier", "the left hemisphere",
    "the occipital rhythm", "the frontal lead", "the study", "the reviewer", "the student", "the clinic",
]
VERBS = [
    "shows", "suggests", "contains", "reveals", "follows", "records", "describes", "reports", "needs", "measures",
    "explains", "hides", "repeats", "predicts", "changes", "misses", "confirms", "compares",
]
OBJECTS = [
    "a slow wave over the temporal region", "a burst of spikes", "a clean alpha rhythm",
    "sleep spindles near the vertex",
    "eye movements at the start", "muscle artifact from the jaw", "a calm background", "periodic discharges",
    "a brief arousal", "the transition from wake to light sleep", "deep slow-wave sleep", "rapid eye movement sleep",
    "a steady heart rate", "a noisy electrode", "the mains hum at sixty hertz", "a question about workload",
    "a pleasant film clip", "a sad scene", "a neutral documentary", "mental arithmetic", "a long quiet night",
    "the answer to the question", "a normal pattern for this age", "an abnormal slowing", "the event in the middle",
]
CLAUSES = [
    "after the lights were turned off", "before the morning review", "while the subject counted backwards",
    "during the second hour", "when the window was filtered", "because the reference was unstable",
    "although the signal was weak", "as the doctor expected", "in every channel", "only on the right side",
    "for about ten seconds", "at the end of the session", "once the cap was adjusted", "without any medication",
]
ADJECTIVES = [
    "quiet", "careful", "long", "short", "clear", "noisy", "slow", "fast", "regular", "strange", "familiar", "gentle",
    "bright", "dark", "warm", "cold", "simple", "difficult",
]
NOUNS = [
    "morning", "evening", "room", "corridor", "window", "garden", "report", "screen", "cable", "question", "answer",
    "river", "city", "train", "letter", "notebook", "experiment", "headset", "dream", "walk",
]
OPENERS = ["Then", "Later", "Meanwhile", "In the end", "At first", "Afterwards", "Still", "Fortunately", "Often"]
PEOPLE = ["Anna", "Ben", "Chen", "Dara", "Elif", "Farid", "Grace", "Hugo", "Ines", "Jonas", "Keiko", "Luis", "Mira"]
PLACES = ["the lab", "the ward", "the station", "the library", "the kitchen", "the park", "the sleep unit", "home"]


def sentence(rng: random.Random) -> str:
    kind = rng.randrange(6)
    if kind == 0:
        s = f"{rng.choice(SUBJECTS)} {rng.choice(VERBS)} {rng.choice(OBJECTS)} {rng.choice(CLAUSES)}"
    elif kind == 1:
        s = f"{rng.choice(OPENERS)}, {rng.choice(SUBJECTS)} {rng.choice(VERBS)} {rng.choice(OBJECTS)}"
    elif kind == 2:
        s = (f"{rng.choice(PEOPLE)} walked to {rng.choice(PLACES)} on a {rng.choice(ADJECTIVES)} "
             f"{rng.choice(NOUNS)} and thought about {rng.choice(OBJECTS)}")
    elif kind == 3:
        s = (f"It was a {rng.choice(ADJECTIVES)} {rng.choice(NOUNS)}, and {rng.choice(PEOPLE)} wrote "
             f"{rng.randint(2, 60)} lines in the {rng.choice(ADJECTIVES)} {rng.choice(NOUNS)}")
    elif kind == 4:
        s = (f"Question: does {rng.choice(SUBJECTS)} show {rng.choice(OBJECTS)}? Answer: "
             f"{rng.choice(['Yes', 'No', 'Perhaps', 'Not in this segment'])}")
    else:
        s = (f"{rng.choice(SUBJECTS)} {rng.choice(VERBS)} {rng.choice(OBJECTS)}, "
             f"but {rng.choice(SUBJECTS)} {rng.choice(VERBS)} {rng.choice(OBJECTS)}")
    return s[0].upper() + s[1:] + ("" if s.endswith("?") else ".")


def corpus(n_paragraphs: int = 800, seed: int = 2409) -> str:
    rng = random.Random(seed)
    paragraphs = [" ".join(sentence(rng) for _ in range(rng.randint(3, 7))) for _ in range(n_paragraphs)]
    return "\n\n".join(paragraphs) + "\n"


if __name__ == "__main__":
    out = Path(__file__).with_name("corpus.txt")
    out.write_text(corpus(), encoding="utf-8")
    print(f"wrote {out} ({out.stat().st_size:,} bytes)")
