"""`smearscope run --config device.yaml`: the device loop on real (or simulated) hardware."""

from __future__ import annotations

from pathlib import Path

import click


@click.command()
@click.option("--config", "config_path", required=True, type=click.Path(path_type=Path),
              help="Device config (YAML); `smearscope config example default` prints every key; see docs/device.md.")
@click.option("--sample-id", default=None, help="Pseudonymous id of the sample on the stage.")
@click.option("--patient-id", default=None,
              help="Patient id; hashed with the site secret when sample.pseudonym_secret_env is set.")
@click.option("--lab", "labs", multiple=True, metavar="NAME=VALUE",
              help="A lab value of the sample, e.g. --lab fpg_mmol_l=6.1 --lab hba1c_pct=6.3 (repeatable).")
@click.option("--worklist", type=click.Path(path_type=Path), default=None,
              help="CSV or JSON worklist of samples (sample_id, patient_id, fields, lab columns).")
@click.option("--fields", type=click.IntRange(min=1), default=None, help="Fields (captures) per sample.")
def run(config_path: Path, sample_id: str | None, patient_id: str | None, labs: tuple[str, ...],
        worklist: Path | None, fields: int | None) -> None:
    """Run the device: wait for CAPTURE (button, keyboard or interval), analyse, publish.

    One field at a time, in press order; presses during an analysis are queued (the next one's
    frame is captured meanwhile). A bad frame, a camera that drops out or an unusable model is
    reported (and shown on the status LED) and the device keeps waiting for the next capture.
    Stop with `q` on the keyboard or Ctrl-C.
    """
    import logging

    from runtime.device.assembly import build_device
    from runtime.contracts.config import load_config
    from runtime.contracts.errors import SmearscopeError
    from runtime.contracts.sample import parse_lab_options
    from smearscope.cli.entry import as_user_error

    try:
        cfg = load_config(config_path)
        sample = cfg.sample
        overrides = {k: v for k, v in {"sample_id": sample_id, "patient_id": patient_id,
                                         "worklist": str(worklist) if worklist else None,
                                         "fields_per_sample": fields}.items() if v is not None}
        if labs and worklist:
            raise click.UsageError("--lab belongs to one sample (--sample-id); a --worklist carries labs in its rows")
        if labs:
            overrides["labs"] = {**sample.labs, **parse_lab_options(labs)}
        elif worklist:  # the worklist's rows carry their own labs; the config's were its replaced sample's
            overrides["labs"] = {}
        if sample_id or worklist:  # a sample on the command line replaces the config's sample or worklist
            overrides.setdefault("worklist", None)
            overrides.setdefault("sample_id", None)
        cfg = cfg.replace(sample=sample.replace(**overrides))
        logging.basicConfig(level=cfg.output.log_level.upper(), format="%(asctime)s %(levelname)s %(message)s")
        setup = build_device(cfg)
    except SmearscopeError as exc:
        raise as_user_error(exc) from None

    if cfg.trigger.type == "stdin":
        click.echo("Press Enter to capture, 'sample ID [PATIENT]' to change sample, 'q' to quit.", err=True)
    import signal

    # systemd stops a service with SIGTERM: answer the presses already queued, then stop cleanly.
    previous = signal.signal(signal.SIGTERM, lambda *_: setup.device.events.quit("SIGTERM"))
    setup.start()
    try:
        outcomes = setup.device.run()
    except KeyboardInterrupt:
        outcomes = []
        click.echo("stopping", err=True)
    finally:
        signal.signal(signal.SIGTERM, previous)
        setup.stop()
    ok = sum(o.status == "ok" for o in outcomes)
    click.echo(f"{len(outcomes)} capture(s): {ok} published, {len(outcomes) - ok} rejected or failed", err=True)
    for summary in setup.device.summaries.values():
        data = summary.to_dict()
        click.echo(f"sample {data['sample_id']}: {data['accepted_fields']}/{data['fields']} fields accepted, "
                   f"counts {data['total_counts']}", err=True)
