"""Diabetes decision support on the device: WHO/ADA/NICE guideline rules (as data tables),
gestational criteria, HbA1c reliability (including the smear's red-cell findings), type assessment,
follow-up tests and the calibrated diagnosis network on ONNX Runtime.

    from runtime.diagnosis import diagnose, patient_inputs_from_mapping
    report = diagnose({"fpg_mg_dl": 126, "hba1c_pct": 6.1}, guideline="ada")
    report.to_dict()  # fits the `diagnosis` object of result/1
"""

from __future__ import annotations

from runtime.diagnosis.engine import diagnose
from runtime.diagnosis.inputs import InvalidInputs, PatientInputs, patient_inputs_from_mapping
from runtime.diagnosis.report import DiagnosisReport
from runtime.diagnosis.smear import SmearFindings, smear_from_mapping
from runtime.diagnosis.units import InputError, Measurement

__all__ = [
    "diagnose", "DiagnosisReport", "PatientInputs", "SmearFindings", "Measurement", "InputError",
    "InvalidInputs", "patient_inputs_from_mapping", "smear_from_mapping", "DiagnosisNetwork",
]


def __getattr__(name: str):
    # The network pulls in onnxruntime; import it only when asked for.
    if name == "DiagnosisNetwork":
        from runtime.diagnosis.network import DiagnosisNetwork

        return DiagnosisNetwork
    raise AttributeError(name)
