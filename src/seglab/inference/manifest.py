"""The prediction manifest: which model and options wrote an output folder, so that `seglab predict
--skip-existing` finishes a folder only with the model and options that began it.

`OUT/seglab-predict.json` holds the model file's sha256, the options that change what is written, and seglab's
version. Outputs are renamed into place whole (`seglab.atomic`), so an output that exists is complete: a rerun
predicts only the inputs whose outputs are missing. A rerun with another model or other options is refused unless
`overwrite` (which predicts everything again and records the new manifest).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from seglab.atomic import remove_temporaries, write_text_atomically
from seglab.errors import ConfigError
from seglab.inference.files import InputImage, first_paths, make_output_folder, output_paths
from seglab.version import __version__

MANIFEST_NAME = "seglab-predict.json"


@dataclass(frozen=True)
class PredictionManifest:
    """What wrote an output folder: the model (its file's sha256, and its path for people) and the options that
    change the outputs (engine, precision, tiling, TTA, scales, extra files)."""

    model_sha256: str
    model_path: str
    options: Mapping[str, Any] = field(default_factory=dict)
    seglab_version: str = __version__

    @classmethod
    def for_run(cls, model_path: str | Path, model_sha256: str, options: Mapping[str, Any]) -> PredictionManifest:
        """This run's manifest; `options` as JSON gives them back (tuples as lists), so that they compare equal
        to a manifest read from the folder."""
        return cls(model_sha256=model_sha256, model_path=str(model_path), options=json.loads(json.dumps(options)))

    def differences(self, other: PredictionManifest) -> list[str]:
        """What `other` (the folder's manifest) records differently from this run, one phrase each."""
        found = []
        if other.model_sha256 != self.model_sha256:
            found.append(f"model {other.model_path} (sha256 {other.model_sha256[:12]}) there, {self.model_path} "
                         f"(sha256 {self.model_sha256[:12]}) now")
        for key in sorted(set(self.options) | set(other.options)):
            if self.options.get(key) != other.options.get(key):
                found.append(f"{key} {other.options.get(key)!r} there, {self.options.get(key)!r} now")
        return found


def read_manifest(out: Path) -> PredictionManifest | None:
    path = out / MANIFEST_NAME
    if not path.is_file():
        return None
    try:
        values = json.loads(path.read_text(encoding="utf-8"))
        return PredictionManifest(**values)
    except (ValueError, TypeError) as error:
        raise ConfigError(f"{path} is not a prediction manifest seglab can read ({error}); remove it, or pass "
                          "--overwrite to predict everything again") from None


def prepare_output_folder(out: Path, manifest: PredictionManifest, items: Sequence[InputImage], *,
                          overlay: bool = False, save_probs: bool = False, overwrite: bool = False,
                          skip_existing: bool = False) -> list[InputImage]:
    """Checks `out` against this run and records its manifest there; returns the inputs still to predict (those
    without all their outputs, with `skip_existing`; else all). Refuses: outputs already there (without
    `overwrite` or `skip_existing`), and a folder written by another model or with other options (without
    `overwrite`). Temporaries that a killed run left are removed: call it while no other process writes to `out`."""
    previous = read_manifest(out)
    present = {id(item): [path.exists() for path in output_paths(item, out, overlay=overlay, save_probs=save_probs)]
               for item in items}
    existing = [path for item in items for path, there in zip(
        output_paths(item, out, overlay=overlay, save_probs=save_probs), present[id(item)], strict=True) if there]
    shown = first_paths(existing)
    if existing and not (overwrite or skip_existing):
        raise ConfigError(f"{len(existing)} output file(s) already exist: {shown}; pass --skip-existing to predict "
                          "only the missing ones, --overwrite to replace them, or choose another --out")
    if previous is not None and not overwrite and (changed := manifest.differences(previous)):
        raise ConfigError(f"--out {out} holds predictions made otherwise ({'; '.join(changed)}); seglab does not mix "
                          "models or options in one folder: pass --overwrite to predict everything again, or choose "
                          "another --out")
    if existing and previous is None and not overwrite:
        raise ConfigError(f"--out {out} holds outputs ({shown}) but no {MANIFEST_NAME}, so which model wrote them "
                          "is unknown and --skip-existing cannot keep them: pass --overwrite, or choose another --out")
    make_output_folder(out)
    remove_temporaries(out)
    write_text_atomically(out / MANIFEST_NAME, json.dumps(asdict(manifest), indent=2, default=list) + "\n")
    if skip_existing and not overwrite:
        return [item for item in items if not all(present[id(item)])]
    return list(items)
