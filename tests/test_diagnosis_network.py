"""The diagnosis network: shipped model on ONNX Runtime (hash-checked, any subset of inputs), the
training data loaders (Pima zeros, Iraqi dedup), metrics, baseline imputation, a tiny train ->
export -> parity run, and (slow) the cross-validated floors on the shared tables."""

from __future__ import annotations

import csv
import itertools

import numpy as np
import pytest

from runtime.diagnosis import Measurement, PatientInputs, diagnose
from runtime.diagnosis.features import CLASSES, FEATURES, feature_vector
from runtime.diagnosis.network import DiagnosisNetwork, default_model_path
from runtime.diagnosis.units import PERCENT


@pytest.fixture(scope="module")
def network():
    return DiagnosisNetwork.load()


def test_shipped_card_describes_the_graph(network):
    card = network.card
    assert card.extra["features"] == list(FEATURES) and card.classes == list(CLASSES)
    cv = card.metrics["cross_validation"]["methods"]
    assert {"network (calibrated)", "logistic regression", "guideline rule (WHO 2-h / ADA HbA1c)"} <= set(cv)
    assert "pima_ece" in cv["network (calibrated)"] and "temperature" in card.metrics["final_model_calibration"]


def test_any_subset_of_inputs_gives_probabilities(network):
    full = dict(age=45.0, sex="F", bmi=31.0, pregnancies=2.0, ogtt_2h=Measurement(9.0, "mmol/L"),
                diastolic_bp_mmhg=80.0, insulin_2h_uu_ml=120.0, diabetes_pedigree=0.4,
                hba1c=Measurement(6.8, PERCENT), urea_mmol_l=5.0, creatinine_umol_l=70.0,
                cholesterol_mmol_l=5.0, triglycerides_mmol_l=2.0, hdl_mmol_l=1.1, ldl_mmol_l=2.9, vldl_mmol_l=0.9)
    keys = sorted(full)
    rng = np.random.default_rng(0)
    subsets = [dict(full)] + [{k: full[k] for k in keys if rng.random() < 0.4} for _ in range(40)]
    subsets = [s for s in subsets if s]
    patients = [PatientInputs(**s) for s in subsets]
    for p, probs in zip(patients, network.predict_many(patients)):
        assert probs is not None and set(probs) == {"p_normal", "p_prediabetes", "p_diabetes"}
        assert sum(probs.values()) == pytest.approx(1.0, abs=1e-3)
        assert all(0.0 <= v <= 1.0 for v in probs.values())
    assert network.predict(PatientInputs(fpg=Measurement(7.0, "mmol/L"))) is None  # nothing the network uses


def test_probabilities_follow_hba1c(network):
    low, high = (network.predict(PatientInputs(age=50, bmi=27, sex="M", hba1c=Measurement(v, PERCENT)))
                 for v in (5.0, 9.0))
    assert high["p_diabetes"] > 0.8 > low["p_diabetes"]
    assert max(low, key=low.get) == "p_normal"


def test_excluded_hba1c_is_masked_out_of_the_network(network):
    p = PatientInputs(age=50, bmi=27, sex="F", hba1c=Measurement(9.0, PERCENT))
    values, mask = feature_vector(p, exclude_hba1c=True)
    assert mask[FEATURES.index("hba1c_pct")] == 0 and values[FEATURES.index("hba1c_pct")] == 0
    with_hba1c = diagnose(p, "ada", network=network).probabilities
    anaemic = diagnose(PatientInputs(age=50, bmi=27, sex="F", hba1c=Measurement(9.0, PERCENT), haemoglobin_g_l=90),
                       "ada", network=network)
    assert anaemic.hba1c_excluded.excluded
    assert anaemic.probabilities == network.predict(PatientInputs(age=50, bmi=27, sex="F"))
    assert anaemic.probabilities != with_hba1c


def test_tampered_model_is_refused(tmp_path):
    import shutil

    from runtime.contracts.errors import ModelIntegrityError

    path = tmp_path / "diagnosis.onnx"
    shutil.copy(default_model_path(), path)
    shutil.copy(default_model_path().with_suffix(".json"), tmp_path / "diagnosis.json")
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ModelIntegrityError):
        DiagnosisNetwork.load(path)


# ---------------------------------------------------------------------------------------------
# training side

torch = pytest.importorskip("torch")


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Tiny networks: more threads only contend on the shared cores."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tables(shared_data):
    from training.diagnosis.data import load_tables

    return load_tables(shared_data / "diabetes")


def test_pima_zeros_are_missing(tables, shared_data):
    pima, _ = tables
    with (shared_data / "diabetes" / "pima.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    for col, feat in (("Insulin", "insulin_2h_uu_ml"), ("Glucose", "ogtt_2h_mmol_l"), ("BMI", "bmi")):
        zero = np.array([float(r[col]) == 0 for r in rows])
        _, mask = pima.column(feat)
        assert zero.any() and (mask[zero] == 0).all() and (mask[~zero] == 1).all()
    glucose, mask = pima.column("ogtt_2h_mmol_l")
    assert glucose[mask > 0][0] == pytest.approx(float(rows[0]["Glucose"]) / 18.016, rel=1e-5)
    assert (pima.allowed[pima.label == 0] == [1, 1, 0]).all()  # "not diabetes" allows normal or prediabetes


def test_iraqi_is_deduplicated_on_clinical_values(tables):
    _, iraqi = tables
    rows = {tuple(np.round(v, 4)) + tuple(m) for v, m in zip(iraqi.values, iraqi.mask)}
    assert len(rows) == len(iraqi) == iraqi.notes["kept"]
    assert iraqi.notes["rows"] - iraqi.notes["duplicates_removed"] == iraqi.notes["unique_clinical_rows"]


def test_iraqi_conflicting_labels_are_dropped(tmp_path):
    from training.diagnosis.data import load_iraqi

    header = "ID,No_Pation,Gender,AGE,Urea,Cr,HbA1c,Chol,TG,HDL,LDL,VLDL,BMI,CLASS\n"
    same = "50,4.7,46,4.9,4.2,0.9,2.4,1.4,0.5,24"
    body = (f"1,11,F,{same},N\n2,12,F,{same},N\n3,13,f,{same},N \n"   # one patient entered three times
            f"4,14,M,{same},N\n5,15,M,{same},Y\n"                      # same values, different classes
            "6,16,M,60,5.1,80,7.9,5.0,2.0,1.0,3.0,0.9,31,Y\n")
    path = tmp_path / "iraqi.csv"
    path.write_text(header + body)
    t = load_iraqi(path)
    assert t.notes["duplicates_removed"] == 3 and t.notes["conflicting_groups_dropped"] == 1
    assert t.notes["conflicting_rows_dropped"] == 2 and len(t) == 2
    assert sorted(t.label.tolist()) == [0, 2]


def test_metrics_match_definitions():
    from training.diagnosis.metrics import balanced_accuracy, binary_ece, roc_auc

    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 60)
    s = rng.random(60) + 0.3 * y
    s[:10] = 0.5  # ties
    pairs = [(a, b) for a, b in itertools.product(np.flatnonzero(y == 1), np.flatnonzero(y == 0))]
    brute = np.mean([1.0 if s[a] > s[b] else 0.5 if s[a] == s[b] else 0.0 for a, b in pairs])
    assert roc_auc(y, s) == pytest.approx(brute)
    assert balanced_accuracy(np.array([0, 0, 0, 1]), np.array([0, 0, 1, 1]), 2) == pytest.approx((2 / 3 + 1) / 2)
    assert binary_ece(np.array([1, 0, 1, 0]), np.array([0.5, 0.5, 0.5, 0.5])) == pytest.approx(0.0)
    assert binary_ece(np.array([1, 1]), np.array([0.2, 0.2])) == pytest.approx(0.8)


def test_folds_are_stratified_and_baseline_imputes_pooled_median(tables):
    from training.diagnosis.crossval import stratified_folds
    from training.diagnosis.train import LogisticRegression

    pima, iraqi = tables
    fold = stratified_folds(iraqi.label, 5, 0)
    for k in range(5):
        counts = np.bincount(iraqi.label[fold == k], minlength=3)
        assert (np.abs(counts - np.bincount(iraqi.label, minlength=3) / 5) <= 1).all()
    train = pima.subset(np.flatnonzero(stratified_folds(pima.label, 5, 0) != 0))
    lr = LogisticRegression().fit(train, 2, balanced=False)
    j = list(lr.columns).index(FEATURES.index("insulin_2h_uu_ml"))
    values, mask = train.column("insulin_2h_uu_ml")
    assert lr.median[j] == pytest.approx(np.median(values[mask > 0]))  # all classes pooled


def test_tiny_train_export_parity_and_card(tables, tmp_path):
    from export.diagnosis import check_parity, export_network, train_final
    from runtime.contracts.modelcard import load_card
    from training.diagnosis.train import NetConfig

    torch.set_num_threads(1)
    pima, iraqi = tables
    small_p, small_i = pima.subset(np.arange(0, len(pima), 4)), iraqi.subset(np.arange(0, len(iraqi), 4))
    net, calib = train_final(small_p, small_i, NetConfig(epochs=20, members=2), seed=0)
    assert calib["temperature"] > 0
    path = export_network(net, tmp_path / "diagnosis.onnx")
    assert check_parity(net, path, [small_p, small_i]) < 1e-4
    from export.card import CardContent, write_card

    write_card(path, CardContent(name="diagnosis", version="0", task="diabetes-classification", preprocess=None,
                                 quantization=None, training_data={}, metrics={}, classes=list(CLASSES),
                                 extra={"features": list(FEATURES)}))
    assert load_card(path).extra["features"] == list(FEATURES)
    runner = DiagnosisNetwork.load(path)
    probs = runner.predict(PatientInputs(hba1c=Measurement(7.0, PERCENT), age=50))
    assert sum(probs.values()) == pytest.approx(1.0, abs=1e-3)


@pytest.mark.slow
def test_cross_validated_floors(tables):
    """Pima AUC >= 0.83 and Iraqi balanced accuracy >= 0.92 (5-fold, seed 0, default config)."""
    from training.diagnosis.crossval import cross_validate
    from training.diagnosis.train import NetConfig

    torch.set_num_threads(1)
    result = cross_validate(*tables, NetConfig(), folds=5, seed=0)
    net = result.metrics["network (calibrated)"]
    assert net["pima_auc"] >= 0.83, result.table()
    assert net["iraqi_balanced_accuracy"] >= 0.92, result.table()
    assert "logistic regression" in result.metrics and "guideline rule (WHO 2-h / ADA HbA1c)" in result.metrics


def test_runtime_side_never_imports_torch():
    import subprocess
    import sys

    code = ("import sys, runtime.diagnosis, runtime.diagnosis.network, smearscope.cli.diagnose; "
            "assert 'torch' not in sys.modules and 'onnx' not in sys.modules")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True).returncode == 0
