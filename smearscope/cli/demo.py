"""`smearscope demo`: the whole device path in one command, on built-in defaults.

Real smear frames bundled with the package (runtime/capture/frames) stand in for the camera (or
synthetic smears, with `--source synthetic`), the controller simulator (a real pseudo-terminal speaking
the serial protocol) stands in for the CAPTURE button and status LED, and the shipped models do the
work. Results are printed as a table and saved as result/2 JSON (every cell) plus overlay and gallery PNGs. `run_demo`
takes a Publisher, so the delivery path (outbox -> MQTT -> server) plugs in without changing it.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import click

DEMO_DEVICE_ID = "demo-scope"
DEMO_SECRET = b"smearscope-demo-site-secret"  # demo only: a real site keeps its secret out of the code
DEMO_SAMPLES = (
    # (sample id, patient reference (hashed before use), fields, lab values)
    ("D-001", "demo-patient-1", 2, {"age": 54, "sex": "F", "pregnant": False, "bmi": 31.2,
                                    "fpg_mmol_l": 7.4, "hba1c_pct": 6.9}),
    ("D-002", "demo-patient-2", 2, {"age": 38, "sex": "M", "bmi": 24.0, "fpg_mmol_l": 5.1, "hba1c_pct": 5.3}),
)


@dataclass
class DemoReport:
    outcomes: list[Any] = field(default_factory=list)
    summaries: dict[str, dict[str, Any]] = field(default_factory=dict)
    button_presses: int = 0
    led_states: list[str] = field(default_factory=list)


@click.command()
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=Path("demo-output"),
              show_default=True, help="Folder for results/*.json and overlays/*.png (overlay and gallery per field).")
@click.option("--presses", type=click.IntRange(1, 50), default=4, show_default=True,
              help="Simulated CAPTURE button presses (fields imaged).")
@click.option("--model", "model_path", type=click.Path(path_type=Path), default=None,
              help="Segmentation model; default: the shipped models/segmentation.int8.onnx.")
@click.option("--guideline", type=click.Choice(["who", "ada", "nice"]), default="who", show_default=True,
              help="Diagnostic guideline applied to the demo samples' lab values.")
@click.option("--source", type=click.Choice(["bundled", "synthetic"]), default="bundled", show_default=True,
              help="Frames: the bundled real smears (their labels' counts are shown beside the device's) or "
                   "seeded synthetic smears.")
@click.option("--seed", type=int, default=0, show_default=True, help="First synthetic smear's seed (--source synthetic).")
@click.option("--threads", type=click.IntRange(min=0), default=0, show_default=True,
              help="ONNX Runtime CPU threads (0: one per core).")
@click.option("--delivery/--no-delivery", default=True, show_default=True,
              help="Also deliver every result through a private Mosquitto (started on a free loopback "
                   "port) to the server's SQLite database (DIR/server.sqlite3), waiting for each receipt.")
def demo(out_dir: Path, presses: int, model_path: Path | None, guideline: str, source: str, seed: int, threads: int,
         delivery: bool) -> None:
    """Run the device end to end on real smear frames with a simulated microscope controller.

    Presses the simulated CAPTURE button a few times (quickly, so some presses arrive while a
    field is being analysed and wait in the queue), analyses each bundled real field with the
    shipped int8 U-Net on ONNX Runtime, applies the guideline to two demo samples' lab values,
    prints a table and saves every result (result/2 JSON) with its overlay and gallery images. With delivery (the
    default), results also go through the durable outbox, a private Mosquitto and the central
    server into DIR/server.sqlite3, exactly as a deployed device's would; without Mosquitto
    installed, the demo says how to install it and saves the results as files only.
    """
    import contextlib

    from runtime.contracts.errors import SmearscopeError
    from smearscope.cli.entry import as_user_error
    from runtime.delivery.sinks import FanOut, FileSink

    try:
        with contextlib.ExitStack() as stack:
            publisher = FileSink(out_dir / "results")
            path = None
            if delivery:
                from runtime.delivery.mosquitto import INSTALL_HINT, find_mosquitto
                from server.local_path import LocalDeliveryPath

                if find_mosquitto() is None:
                    click.secho(f"mosquitto not found, so results are saved as files only: {INSTALL_HINT}",
                                fg="yellow", err=True)
                else:
                    path = stack.enter_context(LocalDeliveryPath(out_dir, device_id=DEMO_DEVICE_ID))
                    publisher = FanOut(publisher, path.publisher)
            report = run_demo(DemoSettings(out_dir=out_dir, presses=presses, model_path=model_path,
                                           guideline=guideline, source=source, seed=seed, threads=threads),
                              publisher=publisher)
        if path is not None:
            summary = path.summary
            click.echo(f"delivered: {summary['sent']} sent over MQTT, {summary['receipts']} receipts, "
                       f"{summary['left_in_outbox']} left in the outbox; {path.database} holds "
                       f"{summary['stored']} result(s) and {summary['field_images']} field image(s) "
                       f"({summary['media_parts_sent']} media part(s) sent)")
        click.echo(click.style("Glucose cannot be seen in a smear: the diagnosis comes from the lab values; the "
                               "smear decides whether HbA1c can be trusted.", dim=True))
    except SmearscopeError as exc:
        raise as_user_error(exc) from None  # one line; exit 2 for config/model, 1 for data
    failed = [o for o in report.outcomes if o.status in ("error", "offline")]
    if failed or len(report.outcomes) < presses:
        raise SystemExit(1)


@dataclass(frozen=True)
class DemoSettings:
    """What the demo runs: where its files go, how many presses, which model, guideline and frames."""

    out_dir: Path = Path("demo-output")
    presses: int = 4
    model_path: Path | None = None
    guideline: str = "who"
    source: str = "bundled"
    seed: int = 0
    threads: int = 0
    timeout_s: float | None = None


def _demo_camera(settings: DemoSettings) -> Any:
    from runtime.capture.bundled import BundledCamera
    from runtime.capture.cameras import SyntheticCamera
    from runtime.contracts.config import SyntheticCameraConfig

    if settings.source == "synthetic":
        return SyntheticCamera(SyntheticCameraConfig(seed=settings.seed, width=640, height=480))
    return BundledCamera()


def run_demo(settings: DemoSettings, publisher: Any, echo: Callable[[str], None] = click.echo) -> DemoReport:
    """The demo itself; `publisher` receives every result (a FileSink, or the MQTT publisher)."""
    out_dir, presses, model_path, guideline = settings.out_dir, settings.presses, settings.model_path, settings.guideline
    from runtime.contracts.config import DiagnosisConfig, QualityConfig
    from runtime.diagnosis.decision import GuidelineDiagnoser
    from runtime.device.loop import Device, DeviceParts, DeviceSettings, ModelHolder
    from runtime.contracts.errors import ModelError
    from runtime.inference.session import SessionOptions
    from runtime.contracts.sample import SampleContext, SampleTracker, pseudonymize
    from runtime.inference.model import default_model_path
    from runtime.capture.triggers import RecordingStatus

    model_file = Path(model_path) if model_path else default_model_path()
    if model_path is None and not model_file.is_file():
        raise ModelError(f"the shipped model {model_file} is missing from this checkout; "
                         "pass --model PATH to use another one")
    holder = ModelHolder(model_file, SessionOptions(intra_op_threads=settings.threads))
    model = holder.get()  # fail early, with the model's own error, before any hardware is opened
    samples = SampleTracker(SampleContext(sid, pseudonymize(ref, DEMO_SECRET), labs, n)
                            for sid, ref, n, labs in DEMO_SAMPLES)
    leds = RecordingStatus()
    parts = DeviceParts(camera=_demo_camera(settings), model=holder, publisher=publisher, samples=samples,
                        diagnoser=GuidelineDiagnoser.from_config(DiagnosisConfig(guideline=guideline)),
                        indicators=[leds])
    device = Device(DEMO_DEVICE_ID, parts,
                    DeviceSettings(quality=QualityConfig(), overlays_dir=out_dir / "overlays", idle_poll_s=0.2))
    report = DemoReport()
    table = _Table(echo, guideline)
    echo(click.style("smearscope demo", bold=True)
         + f" - model {model.card.name} {model.card.version} on {', '.join(model.loaded.providers)}")

    def on_outcome(outcome: Any) -> None:
        report.outcomes.append(outcome)
        table.row(outcome)
        if len(report.outcomes) >= presses:
            device.events.quit("demo")

    device.on_outcome = on_outcome
    bridge, trigger = _open_controller(echo)
    if bridge is not None:
        device.indicators.append(_LedStatus(bridge))
    trigger.start(device.events)
    timeout_s = settings.timeout_s or 20.0 + 5.0 * presses
    watchdog = threading.Timer(timeout_s, lambda: device.events.quit("demo timeout"))
    watchdog.daemon = True
    watchdog.start()
    try:
        echo(f"pressing CAPTURE {presses} times on the {'simulated controller' if bridge else 'keyboard queue'}"
             " (presses during an analysis wait in the queue)\n")
        table.header()
        _press(bridge, device, presses)
        device.run()
    finally:
        watchdog.cancel()
        trigger.stop()
        device.close()
    if len(report.outcomes) < presses:
        echo(click.style(f"only {len(report.outcomes)} of {presses} presses reached the device within "
                         f"{timeout_s:.0f} s", fg="red"))
    report.summaries = {k: v.to_dict() for k, v in device.summaries.items()}
    report.led_states = leds.states
    report.button_presses = getattr(trigger, "presses", presses)
    _print_summary(echo, report, out_dir)
    return report


class _LedStatus:
    def __init__(self, bridge: Any) -> None:
        self.bridge = bridge

    def set_state(self, state: str, detail: str = "") -> None:
        self.bridge.set_status(state)


def _open_controller(echo: Callable[[str], None]) -> tuple[Any, Any]:
    """The controller simulator on a pseudo-terminal, or (on a system without ptys) queued presses."""
    from runtime.capture.bridge_trigger import BridgeTrigger
    from runtime.capture.triggers import ManualTrigger

    try:
        from firmware_bridge import BridgeError, open_bridge

        bridge = open_bridge({"type": "simulator"})
        if not bridge.wait_connected(10.0):
            bridge.close()
            raise BridgeError("simulated controller did not answer the handshake")
    except (ImportError, OSError, Exception) as exc:  # the demo must run even where a pty is unavailable
        echo(click.style(f"controller simulator unavailable ({exc}); using queued presses instead", fg="yellow"))
        return None, ManualTrigger("demo")
    return bridge, BridgeTrigger(bridge)


def _press(bridge: Any, device: Any, presses: int) -> None:
    if bridge is None:
        for _ in range(presses):
            device.events.capture("demo")
        return
    for _ in range(presses):
        bridge.simulator.press()


class _Table:
    """The readable per-capture table."""

    def __init__(self, echo: Callable[[str], None], guideline: str) -> None:
        self.echo, self.guideline = echo, guideline
        self.n = 0

    def header(self) -> None:
        self.echo(click.style(f"{'#':>2}  {'sample':<7} {'field':<5} {'RBC':>9} {'WBC':>7} {'PLT':>7} "
                              f"{'RBC area':>9}  {'RBC/mm²':>8}  {'quality':<8} {'diagnosis (' + self.guideline.upper() + ') | network':<40} {'time':>7}",
                              bold=True))

    def row(self, outcome: Any) -> None:
        from runtime.contracts.sample import field_number

        self.n += 1
        result = outcome.result
        if result is None:
            self.echo(click.style(f"{self.n:>2}  {outcome.status}: {outcome.message}", fg="red"))
            return
        sample, counts, derived = result["sample"], result["counts"], result.get("derived") or {}
        truth = (outcome.frame.truth or {}).get("counts") if outcome.frame is not None else None
        density = (derived.get("density_per_mm2") or {}).get("rbc")
        quality = "ok" if result["quality"]["accepted"] else "rejected"
        diagnosis = _diagnosis_text(result.get("diagnosis"))
        self.echo(f"{self.n:>2}  {sample['sample_id']:<7} {field_number(sample['field_index']):<5} "
                  f"{_with_truth(counts, truth, 'rbc'):>9} {_with_truth(counts, truth, 'wbc'):>7} "
                  f"{_with_truth(counts, truth, 'platelet'):>7} {result['area_pct']['rbc']:>8.1f}%  "
                  f"{'' if density is None else f'{density:>8.0f}':>8}  "
                  f"{click.style(f'{quality:<8}', fg='green' if quality == 'ok' else 'yellow')} {diagnosis:<40} "
                  f"{result['timings_ms']['total']:>5.0f}ms")


def _with_truth(counts: dict[str, int], truth: dict[str, int] | None, name: str) -> str:
    """The device's count, and the frame's labelled count in brackets when the frame has labels."""
    return f"{counts[name]}" if truth is None else f"{counts[name]} ({truth[name]})"


def _diagnosis_text(diagnosis: dict[str, Any] | None) -> str:
    if not diagnosis:
        return "-"
    text = diagnosis["status"].replace("_", " ")
    if diagnosis.get("category") and diagnosis["category"] != diagnosis["status"]:
        text += f" ({diagnosis['category']})"
    if diagnosis.get("confirmation_needed"):
        text += ", confirm"
    probabilities = diagnosis.get("probabilities") or {}
    if probabilities:  # the diagnosis network's probability for the class it favours
        best = max(probabilities, key=probabilities.get)
        text += f" | net: {best.removeprefix('p_')} {probabilities[best]:.2f}"
    return text[:40]


def _print_summary(echo: Callable[[str], None], report: DemoReport, out_dir: Path) -> None:
    last_diagnosis: dict[str, dict[str, Any]] = {}
    for outcome in report.outcomes:
        if outcome.result is not None and outcome.result.get("diagnosis"):
            last_diagnosis[outcome.result["sample"]["sample_id"]] = outcome.result["diagnosis"]
    echo("")
    echo(click.style("per sample", bold=True))
    for sample_id, data in report.summaries.items():
        means = data["mean_counts_per_field"] or {}
        density = (data.get("mean_density_per_mm2") or {}).get("rbc")
        echo(f"  {sample_id}: {data['accepted_fields']}/{data['fields']} fields accepted; mean per field "
             f"RBC {means.get('rbc', 0):.0f}, WBC {means.get('wbc', 0):.1f}, PLT {means.get('platelet', 0):.1f}"
             + (f"; {density:.0f} RBC/mm²" if density else ""))
        diagnosis = last_diagnosis.get(sample_id)
        if diagnosis is None:
            continue
        echo(f"    diagnosis: {_diagnosis_text(diagnosis)}")
        if diagnosis.get("confirmation_reason"):
            echo(f"    {diagnosis['confirmation_reason']}")
        seen = diagnosis.get("network") or {}
        if seen.get("inputs_not_used"):
            echo(f"    network saw {', '.join(seen['inputs_used'])}; not {', '.join(seen['inputs_not_used'])}")
        excluded = diagnosis.get("hba1c_excluded") or {}
        if isinstance(excluded, dict) and excluded.get("excluded"):
            echo(f"    HbA1c not used: {'; '.join(excluded.get('reasons') or [])}")
        for item in (diagnosis.get("followup") or [])[:3]:
            echo(f"    next: {item['test']}")
    states = " -> ".join(_collapse(report.led_states))
    echo(f"\nstatus LED: {states}")
    if any(o.frame is not None and o.frame.truth for o in report.outcomes):
        echo("(in brackets: the frame's labelled counts)")
    echo(f"saved: {out_dir / 'results'}/*.json (result/2, every cell), {out_dir / 'overlays'}/"
         "<sample>_f<field>.overlay.png and .gallery.png")


def _collapse(states: list[str]) -> list[str]:
    out: list[str] = []
    for state in states:
        if not out or out[-1] != state:
            out.append(state)
    return out[:12] + (["..."] if len(out) > 12 else [])
