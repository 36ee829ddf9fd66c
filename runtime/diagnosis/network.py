"""Runs the shipped diagnosis network (models/diagnosis.onnx) with ONNX Runtime.

The graph takes raw feature values in canonical units plus a presence mask (inputs `features` and
`mask`, both [N, F]) and returns calibrated class probabilities (`probabilities`, [N, 3]):
standardisation and temperature scaling are inside the graph, so the card's feature list is all
the runtime needs to agree on.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from runtime.diagnosis.features import CLASSES, FEATURES, feature_vector
from runtime.diagnosis.inputs import PatientInputs
from runtime.contracts.errors import ModelError
from runtime.contracts.modelcard import default_models_dir
from runtime.inference.session import LoadedModel, SessionOptions, load_model

DEFAULT_MODEL_NAME = "diagnosis.onnx"


def default_model_path() -> Path:
    return default_models_dir() / DEFAULT_MODEL_NAME


class DiagnosisNetwork:
    """A verified diagnosis model; `predict` gives {"p_normal", "p_prediabetes", "p_diabetes"}."""

    def __init__(self, model: LoadedModel) -> None:
        features = model.card.extra.get("features")
        if list(features or []) != list(FEATURES):
            raise ModelError(f"{model.path}: card features {features} differ from this runtime's {list(FEATURES)}")
        if list(model.card.classes) != list(CLASSES):
            raise ModelError(f"{model.path}: card classes {model.card.classes} differ from {list(CLASSES)}")
        self.model = model

    @classmethod
    def load(cls, path: str | Path | None = None, options: SessionOptions | None = None) -> "DiagnosisNetwork":
        """Load (and hash-check) the model; default models/diagnosis.onnx, CPU, one thread."""
        options = options or SessionOptions(providers=("cpu",), intra_op_threads=1)
        return cls(load_model(path or default_model_path(), options))

    @property
    def card(self):
        return self.model.card

    def predict_arrays(self, values: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """[N, F] values and masks -> [N, 3] probabilities."""
        out = self.model.run({"features": values.astype(np.float32), "mask": mask.astype(np.float32)})
        return out["probabilities"]

    def predict_many(self, patients: Sequence[PatientInputs], exclude_hba1c: Sequence[bool] | None = None,
                     ) -> list[dict[str, float] | None]:
        """Probabilities per patient; None for a patient with no network input at all."""
        if not patients:
            return []
        excl = list(exclude_hba1c) if exclude_hba1c is not None else [False] * len(patients)
        pairs = [feature_vector(p, exclude_hba1c=e) for p, e in zip(patients, excl)]
        values = np.stack([v for v, _ in pairs])
        mask = np.stack([m for _, m in pairs])
        probs = self.predict_arrays(values, mask)
        return [
            None if mask[i].sum() == 0 else {f"p_{c}": round(float(probs[i, j]), 4) for j, c in enumerate(CLASSES)}
            for i in range(len(patients))
        ]

    def predict(self, p: PatientInputs, *, exclude_hba1c: bool = False) -> dict[str, float] | None:
        return self.predict_many([p], [exclude_hba1c])[0]
