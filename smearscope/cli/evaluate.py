"""`smearscope evaluate`: segmentation and counting accuracy of a model on a labelled TXL-PBC split."""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Sequence
from pathlib import Path

import click

def _numeric_overrides(items: tuple[str, ...], section: type, option: str) -> dict[str, float | int]:
    """runtime.contracts.overrides.numeric_overrides, its errors as usage errors of `option`."""
    from runtime.contracts.overrides import OverrideError, numeric_overrides

    try:
        return numeric_overrides(items, section)
    except OverrideError as err:
        raise click.BadParameter(str(err), param_hint=option) from None


def method_names(models: Sequence[Path]) -> dict[Path, str]:
    """Each model's name in the report: its file name, or folder/file name where two models share a
    file name (models/v3/segmentation.int8.onnx beside models/segmentation.int8.onnx)."""
    models = [Path(p) for p in models]
    clash = {p.name for p in models if sum(q.name == p.name for q in models) > 1}
    names = {p: f"{p.parent.name}/{p.name}" if p.name in clash else p.name for p in models}
    if len(set(names.values())) < len(names):
        raise click.UsageError("two --model files with the same folder and file name: " + ", ".join(sorted(map(str, models))))
    return names


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--split", default="val", show_default=True, type=click.Choice(["train", "val"]),
              help="Which split to evaluate (the data's test split is never read).")
@click.option("--model", "models", multiple=True, type=click.Path(dir_okay=False, path_type=Path),
              help="ONNX model with its card beside it; repeat to compare (e.g. int8 and fp32). "
                   "Default: the shipped models/segmentation.int8.onnx and .fp32.onnx.")
@click.option("--data", "data_dir", type=click.Path(file_okay=False, path_type=Path),
              default=None,
              help="TXL-PBC folder (images/<split>, labels/<split>). Default: $SMEARSCOPE_DATA/txl_pbc, or "
                   "../shared/data/txl_pbc beside a source checkout.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Where to write the full report (per image too). Default: evaluation-<split>.json.")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="Evaluate an evenly spaced subset of N images.")
@click.option("--holdout", default=0, show_default=True, type=click.IntRange(0), metavar="N",
              help="Evaluate only the last N frames of the split by name: with --split train, the frames "
                   "`train segmentation --holdout N` kept out of training.")
@click.option("--baseline/--no-baseline", default=True, show_default=True,
              help="Also run the classical baseline (thresholds + watershed) on the same images.")
@click.option("--flip-average/--no-flip-average", default=None,
              help="Override the card's inference plan: average the final pass with its flipped runs, or not.")
@click.option("--plan", "plan_overrides", multiple=True, metavar="FIELD=VALUE",
              help="Override a number in the card's inference plan (runtime.analysis.counting.InferencePlan), "
                   "e.g. --plan wbc_border_min_prob=0.2; repeatable.")
@click.option("--rule", "rule_overrides", multiple=True, metavar="FIELD=VALUE",
              help="Override a counting rule (runtime.analysis.counting.CountRules), e.g. --rule platelet_min_area=0.015; "
                   "repeatable. Rules are chosen on --split train; overrides cannot go into the cards.")
@click.option("--threads", type=click.IntRange(min=1), default=2, show_default=True, help="ONNX Runtime threads.")
@click.option("--update-cards", is_flag=True,
              help="Write the results into each model's card (metrics.txl_pbc_evaluation; an int8 model whose "
                   ".fp32.onnx sibling was evaluated too also gets its change from fp32). Needs the whole split.")
def evaluate(split: str, models: tuple[Path, ...], data_dir: Path | None, json_path: Path | None, limit: int | None,
             holdout: int, baseline: bool, flip_average: bool | None, plan_overrides: tuple[str, ...], rule_overrides: tuple[str, ...],
             threads: int, update_cards: bool) -> None:
    """Score models (and the classical baseline) against the box-derived masks and box counts.

    Per-class Dice is pooled over all pixels of the split; counts are compared per image with the
    number of boxes (border-cut cells included): red-cell mean absolute percentage error,
    white-cell exact-count rate, platelet mean absolute error; every counted cell's box is matched
    with the labelled boxes (IoU >= 0.5, greedy by confidence): per class precision, recall, F1
    and AP@0.5. The scale is estimated from each
    image as on the device, never taken from the boxes. Every metric is also reported without the
    images whose labels the label checks flag.

    \b
    Example:
      smearscope evaluate --split val
      smearscope evaluate --split val --model models/segmentation.int8.onnx --limit 50 --no-baseline
      smearscope evaluate --split train --no-baseline --rule platelet_min_area=0.015
    """
    import json

    from runtime.contracts.errors import DataError, SmearscopeError
    from runtime.contracts.modelcard import default_models_dir

    try:
        from training.evaluate import baseline_method, evaluate as run_evaluation, format_report, onnx_method
        from training.data_paths import data_dir as data_dir_of
        from training.label_checks import check_split
    except ImportError as exc:
        raise click.ClickException(f"evaluation needs the workstation install ({exc})") from None

    from runtime.analysis.counting import DEFAULT_RULES, CountRules
    from runtime.contracts.card_sections import InferencePlan

    if update_cards and (plan_overrides or rule_overrides):
        raise click.UsageError("--update-cards records the shipped plan and rules: drop --plan/--rule")
    plan_changes = _numeric_overrides(plan_overrides, InferencePlan, "--plan")
    rule_changes = _numeric_overrides(rule_overrides, CountRules, "--rule")
    rules = dataclasses.replace(DEFAULT_RULES, **rule_changes)
    if not models:
        models = tuple(p for p in (default_models_dir() / "segmentation.int8.onnx",
                                   default_models_dir() / "segmentation.fp32.onnx") if p.is_file())
        if not models:
            raise click.ClickException("no model given and no shipped model in models/; pass --model PATH")
    try:
        data_dir = data_dir_of("txl_pbc", data_dir)
        if not (data_dir / "images" / split).is_dir():
            raise DataError(f"{data_dir}: no images/{split} folder (pass --data, the TXL-PBC folder)")
        changes = {**plan_changes, **({} if flip_average is None else {"flip_average": flip_average})}
        names = method_names(models)
        methods = [onnx_method(p, name=names[p], threads=threads, rules=rules, **changes) for p in models]
        if baseline:
            methods.append(baseline_method(rules))
        flagged = check_split(data_dir, split)
        from training.txl_pbc import Part, list_samples

        part = Part(holdout, held=holdout > 0)
        total = len(list_samples(data_dir, split, part)) if limit is None else limit
        with click.progressbar(length=total, label=f"evaluating {split}", file=sys.stderr) as bar:
            last = [0]

            def step(done: int) -> None:
                bar.update(done - last[0])
                last[0] = done

            report = run_evaluation(data_dir, split, methods, limit=limit, flagged=set(flagged), progress=step,
                                    part=part)
    except SmearscopeError as exc:
        from smearscope.cli.entry import as_user_error

        raise as_user_error(exc) from None  # exit 2 for config/model, 1 for data
    report["flagged"] = flagged
    report["overrides"] = {"plan": plan_changes, "rules": rule_changes}
    json_path = json_path or Path(f"evaluation-{split}.json")
    try:
        json_path.write_text(json.dumps(report, indent=1) + "\n")
    except OSError as exc:
        raise click.ClickException(f"{json_path}: cannot write report ({exc.strerror or exc})") from None
    click.echo(format_report(report))
    click.echo(f"full report: {json_path}")
    if update_cards:
        if limit is not None or holdout:
            raise click.UsageError("--update-cards needs the whole split (drop --limit and --holdout)")
        from training.evaluate import card_metrics, write_card_metrics

        for path in models:
            sibling = path.with_name(path.name.replace(".int8.", ".fp32."))
            reference = names.get(sibling) if sibling != path else None
            write_card_metrics(path, card_metrics(report, names[path], reference))
            click.echo(f"card updated: {path.with_suffix('.json')}")
