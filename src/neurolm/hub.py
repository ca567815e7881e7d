"""Model directories on the Hugging Face Hub: a model card that says what the weights are and where they came from,
and Hub ids resolved to a pinned revision whose weights are checked by hash.

The card's ``README.md`` carries YAML metadata the Hub indexes (``library_name``, ``tags``, ``license``,
``datasets``) and, under ``neurolm``, the facts a reader needs to trust the weights: every evaluated task's balanced
accuracy with its interval and the band-power baseline (copied from the directory's ``metrics.json``, never typed),
the preprocessing and tuned tasks (``training.json``), the git commit of the code that wrote the card, and the sha256
of ``model.safetensors``, which :func:`resolve` checks after every download.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from .artifacts import CONFIG_FILE, WEIGHTS_FILE
from .errors import NeuroLMError

try:
    __version__ = version("neurolm")
except PackageNotFoundError:  # run from a source tree that was never installed
    __version__ = "unknown"

CARD_FILE = "README.md"
METRICS_FILE = "metrics.json"
CITATION = """@inproceedings{jiang2025neurolm,
  title={NeuroLM: A Universal Multi-task Foundation Model for Bridging the Gap between Language and EEG Signals},
  author={Jiang, Wei-Bang and Wang, Yansen and Lu, Bao-Liang and Li, Dongsheng},
  booktitle={International Conference on Learning Representations},
  year={2025}
}"""


@dataclass(frozen=True)
class Resolved:
    """Where a model's files are on this machine, and which Hub revision they are."""

    path: Path
    repo_id: str | None = None
    """The Hub id, None for a local directory."""
    revision: str | None = None
    """The commit hash the files were downloaded at (a branch or tag asked for is pinned to it)."""
    sha256: str | None = None
    """sha256 of ``model.safetensors`` (checked against the card's)."""


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def git_commit() -> str:
    """The commit of the code this package runs from, ``+dirty`` with uncommitted changes; ``unknown`` when it is
    not a git checkout (an installed wheel)."""
    here = Path(__file__).resolve().parent
    try:
        head = subprocess.run(["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True,
                              check=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(here), "status", "--porcelain", "--", "."], capture_output=True,
                               text=True, check=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return head + ("+dirty" if dirty else "")


def _metadata(directory: Path) -> dict[str, Any]:
    """The ``neurolm`` block of the card: weights hash, commit, tasks and their numbers, preprocessing."""
    training = _read_json(directory / "training.json")
    metrics = _read_json(directory / METRICS_FILE) or {}
    tasks = {}
    for name, m in metrics.items():
        scored, base = m.get("scored", {}), m.get("baseline") or {}
        tasks[name] = {
            "split": m.get("split"), "n": m.get("n"), "chance": m.get("chance"),
            "balanced_accuracy": scored.get("balanced_accuracy"), "ci95": scored.get("ci95"),
            "baseline_balanced_accuracy": base.get("balanced_accuracy"), "baseline_ci95": base.get("ci95"),
        }
    record = training or {}
    return {
        "weights_sha256": sha256_file(directory / WEIGHTS_FILE),
        "git_commit": git_commit(),
        "neurolm_version": __version__,
        "tuned_tasks": record.get("tuned_tasks", []),
        "preprocessing": {k: v.get("preprocessing") for k, v in record.get("datasets", {}).items()},
        "evaluation": tasks,
    }


def _read_json(path: Path) -> Any:
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise NeuroLMError(f"{path}: not valid JSON ({exc})") from exc


def _fmt(x: float | None, ci: list[float] | None) -> str:
    if x is None:
        return "–"
    return f"{x:.3f}" + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "")


def write_model_card(directory: str | Path, *, license: str = "mit", datasets: list[str] | None = None,
                     recipe: str | None = None) -> Path:
    """Write ``README.md`` into a saved model directory (weights, and where present ``training.json`` and
    ``metrics.json``). ``datasets``: Hub dataset ids or names for the metadata (default: the tuned tasks);
    ``recipe``: how the model was trained (commands), shown verbatim."""
    try:
        from huggingface_hub import ModelCard, ModelCardData
    except ImportError as exc:
        raise NeuroLMError("a model card needs huggingface_hub: pip install 'neurolm[hub]' (or save with "
                           "card=False)") from exc

    directory = Path(directory)
    if not (directory / WEIGHTS_FILE).is_file():
        raise NeuroLMError(f"{directory / WEIGHTS_FILE}: missing; save the model before writing its card")
    meta = _metadata(directory)
    data = ModelCardData(library_name="neurolm", license=license, tags=["eeg", "neurolm", "pytorch"],
                         datasets=datasets if datasets is not None else meta["tuned_tasks"] or None,
                         pipeline_tag="feature-extraction", neurolm=meta)
    rows = "\n".join(f"| {name} | {t['split']} | {t['n']} | {_fmt(t['balanced_accuracy'], t['ci95'])} | "
                     f"{_fmt(t['baseline_balanced_accuracy'], t['baseline_ci95'])} | {t['chance']} |"
                     for name, t in meta["evaluation"].items())
    table = ("| task | split | windows | balanced accuracy [95 % CI] | band-power baseline | chance |\n"
             "|---|---|---|---|---|---|\n" + rows) if rows else "No `metrics.json` beside the weights: not evaluated."
    preprocessing = json.dumps(meta["preprocessing"], indent=2) if meta["preprocessing"] else "not recorded"
    body = f"""
# NeuroLM model

An EEG-language model trained with NeuroLM {__version__} (code at commit
`{meta['git_commit']}`). Tuned tasks: {', '.join(meta['tuned_tasks']) or 'none recorded'}.
`model.safetensors` sha256: `{meta['weights_sha256']}`.

## Evaluation

{table}

Scored answers; intervals are 95 % bootstrap intervals from `neurolm evaluate`.

## Use

```python
from neurolm.api import NeuroLM
model = NeuroLM.from_pretrained("REPO_ID", revision="COMMIT")
answers = model.ask("recording.edf", task="{(meta['tuned_tasks'] or ['hmc'])[0]}")
```

## Training recipe

{recipe or 'Not given.'}

## Preprocessing (from training.json)

```json
{preprocessing}
```

## Citation

```bibtex
{CITATION}
```
"""
    path = directory / CARD_FILE
    ModelCard(f"---\n{data.to_yaml()}\n---\n{body}").save(path)
    return path


def read_card_metadata(directory: str | Path) -> dict[str, Any]:
    """The YAML metadata of a directory's model card (empty without a card)."""
    from huggingface_hub import ModelCard

    path = Path(directory) / CARD_FILE
    return ModelCard.load(path).data.to_dict() if path.is_file() else {}


def resolve(source: str | Path, *, revision: str | None = None, cache_dir: str | Path | None = None) -> Resolved:
    """A local model directory as it is, or a Hub id downloaded (or found in the cache; ``HF_HUB_OFFLINE=1`` reads
    the cache only) at ``revision``, pinned to its commit, with its weights' sha256 checked against its card."""
    if Path(source).exists():
        if revision is not None:
            raise NeuroLMError(f"{source}: a local directory has no revision; drop revision={revision!r}")
        return Resolved(Path(source))
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    repo_id = str(source)
    if repo_id.count("/") != 1:
        raise NeuroLMError(f"{source}: neither a local directory nor a Hub id (org/name)")
    try:
        path = Path(snapshot_download(repo_id, revision=revision, cache_dir=cache_dir))
    except (LocalEntryNotFoundError, HfHubHTTPError, OSError) as exc:
        raise NeuroLMError(f"{repo_id}: cannot get it from the Hub or the local cache ({exc})") from exc
    weights = path / WEIGHTS_FILE
    digest = sha256_file(weights) if weights.is_file() else None
    expected = read_card_metadata(path).get("neurolm", {}).get("weights_sha256")
    if expected is not None and digest != expected:
        raise NeuroLMError(f"{weights}: sha256 {digest} differs from the {expected} its model card records; the "
                           "download is corrupt or the weights were replaced without a new card")
    # the snapshot folder is named by the commit it holds, whatever branch or tag was asked for
    return Resolved(path, repo_id, path.name, digest)


def push_folder(directory: str | Path, repo_id: str, *, revision: str | None = None, private: bool = False,
                token: str | None = None, commit_message: str = "Upload NeuroLM model") -> str:
    """Upload a saved model directory (with its card) to the Hub; returns the new commit's hash."""
    from huggingface_hub import HfApi

    directory = Path(directory)
    for name in (CONFIG_FILE, WEIGHTS_FILE, CARD_FILE):
        if not (directory / name).is_file():
            raise NeuroLMError(f"{directory / name}: missing; push a directory written by save_pretrained")
    api = HfApi(token=token)
    api.create_repo(repo_id, private=private, exist_ok=True)
    info = api.upload_folder(repo_id=repo_id, folder_path=str(directory), revision=revision,
                             commit_message=commit_message)
    return info.oid
