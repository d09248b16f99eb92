"""Issue 30's protocol: the converged suites' plans, stage select's ASHA (per task and
strategy, on the learning curve, never in stage final), seed-major order and the pinned
training code, through real Ray Tune, MLflow on SQLite and tiny-llama trials."""

import json
from pathlib import Path

import pytest
import yaml

from benchmark.cli import main
from benchmark.reporting.convergence import budget_rule
from benchmark.sweep.suite import expand_trials, final_trials, load_suite, trial_key
from benchmark.sweep.trial_files import training_code
from benchmark.sweep.tracking import connect, runs_of

FAST_PATH = {"precision": "bf16", "adamw": "fused", "attention": "auto",
             "dropout_masks": "fast", "frozen_weights": "compute"}


def test_converged_suites_load_and_plan_the_protocol(capsys):
    probe = load_suite("revisions-converged-probe")
    assert probe.model == "smollm2-135m" and probe.tasks == ["iterater"] and probe.seeds == [0]
    assert list(probe.strategies) == ["ir-tuning", "random-matched", "lora", "full-ft"]
    assert probe.budget["epochs"] == 4 and "max_steps" not in probe.budget
    assert probe.budget["curve_every"] == probe.budget["eval_every"] == 40  # 5% of 804 steps
    assert "curve_limit" not in probe.budget and "eval_limit" not in probe.budget  # all 385 rows
    assert {k: probe.budget[k] for k in FAST_PATH} == FAST_PATH and probe.pin_training_code
    for entry in ("ir-tuning", "random-matched", "lora"):
        assert probe.strategies[entry]["search"] == {"lr": [2e-4]}
    assert main(["run", "--suite", "revisions-converged-probe", "--dry-run"]) == 0
    plan = capsys.readouterr().out
    assert "4 trials" in plan and "seed-major" in plan and "training code pinned" in plan

    assert "lora_input_cast" not in probe.budget  # the probe trained with peft's cast
    ref = load_suite("revisions-converged")
    assert {k: ref.budget[k] for k in FAST_PATH} == FAST_PATH and ref.pin_training_code
    assert ref.budget["lora_input_cast"] == "none"
    assert ref.select["scheduler"] == {"type": "asha", "metric": "curve_macro_f1",
                                       "grace_period": 0.25, "reduction_factor": 2.0}
    assert all(2e-4 in spec["search"]["lr"] and len(spec["search"]["lr"]) > 1
               for spec in ref.strategies.values())
    assert ref.strategies["random-layers"]["options"]["k"] == 4  # L/8 of SmolLM2's 30 blocks
    assert "BUDGET FIXED BY THE PROBE; COST PLAN OPEN" in ref_notes() and ref.budget["epochs"] == 4
    selected = expand_trials(ref)
    assert {t["seed"] for t in selected} == {0}
    # Every lr's seed-0 run at the full budget: stage final then runs the chosen lr's seeds.
    final, _ = final_trials(ref, selected, {trial_key(t): 0.5 for t in selected})
    seeds = {}
    for t in final:
        seeds.setdefault((t["task"], t["strategy"]), []).append(t["seed"])
    for strategy in ("ir-tuning", "random-matched", "lora"):
        assert seeds[("iterater", strategy)] == seeds[("argrewrite", strategy)] == [0, 1, 2, 3, 4]
    for strategy in ("full-ft", "head-only"):
        assert seeds[("argrewrite", strategy)] == [0, 1, 2]
    for strategy in ("random-layers", "spectrum", "ist", "lisa"):
        assert seeds[("iterater", strategy)] == [0, 1, 2] and ("argrewrite", strategy) not in seeds
    assert [t["seed"] for t in final] == sorted(t["seed"] for t in final)  # seed-major
    assert main(["run", "--suite", "revisions-converged", "--dry-run"]) == 0
    plan = capsys.readouterr().out
    assert "stage select: the 42 trials below" in plan and "stage final: 54 trials" in plan
    assert "ASHA (Ray Tune) on curve_macro_f1 per task and strategy, rungs at 25%, 50%" in plan


def ref_notes() -> str:
    return yaml.safe_load(load_suite("revisions-converged").path.read_text())["notes"]


def test_a_select_scheduler_needs_a_curve_and_a_share_of_the_budget(tmp_path, capsys):
    def suite(**select):
        return _suite_file(tmp_path, "bad", {"head-only": {"search": {"lr": [1e-3, 1e-2]}}},
                           seeds=[0, 1], stages={"select": {"seeds": [0], **select}})

    budget = {**TINY, "curve_every": 0}
    path = _suite_file(tmp_path, "nocurve", {"head-only": {"search": {"lr": [1e-3]}}}, budget=budget,
                       stages={"select": {"scheduler": {"asha": {}}}})
    assert main(["run", "--suite", str(path), "--dry-run"]) == 2
    assert "the select budget records no learning curve: set curve_every" in capsys.readouterr().err
    path = suite(scheduler={"asha": {"grace_period": 2}})
    assert main(["run", "--suite", str(path), "--dry-run"]) == 2
    assert "grace_period is a share of each trial's budget" in capsys.readouterr().err


TINY = {"max_steps": 8, "eval_every": 1, "curve_every": 1, "batch_size": 8, "train_limit": 64,
        "eval_limit": 16, "curve_limit": 16, "test_limit": 16, "max_length": 48}


def _suite_file(tmp_path, name, strategies, **extra):
    spec = {"name": name, "model": "tiny-llama", "tasks": ["iterater"], "seeds": [0],
            "budget": TINY, "strategies": strategies,
            "resources": {"cpus_per_trial": 1, "max_concurrent_trials": 1, "reuse_workers": True},
            **extra}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def _run(tmp_path, suite, data_dir, uri, *flags):
    return main(["run", "--suite", str(suite), "--tracking-uri", uri, "--data-dir", str(data_dir),
                 "--results-dir", str(tmp_path / "results"),
                 "--storage-path", str(tmp_path / "ray"), *flags])


def _files(folder: Path) -> dict[str, dict]:
    return {p.name: json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))}


def test_asha_cuts_a_rate_in_stage_select_only_and_the_code_stays_pinned(tmp_path, data_dir,
                                                                         capsys):
    """Head-only at lr 1e-9 stays at its initial curve; at 3e-2 its curve drops below that
    at the first rung (a quarter of 8 steps): ASHA cuts it there. The cut trial's file says
    so and it is no candidate; stage final (seed 1) runs the other rate to its end. Then a
    pinned suite refuses trial files of another training-code digest, unless told."""
    path = _suite_file(tmp_path, "asha", {"head-only": {"search": {"lr": [1e-9, 3e-2]}}},
                       seeds=[0, 1], pin_training_code=True,
                       stages={"select": {"seeds": [0], "scheduler": {"asha": {
                           "metric": "curve_macro_f1", "grace_period": 0.25,
                           "reduction_factor": 2}}}})
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    before = training_code()["sha256"]
    assert _run(tmp_path, path, data_dir, uri) == 0
    out = capsys.readouterr().out
    assert "lr=0.03 stopped early by the scheduler at step 2/8" in out
    assert "chose lr=1e-09 (dev macro F1 lr=1e-09:" in out and "lr=0.03:" not in out.split("chose")[1]
    folder = tmp_path / "results" / "asha" / "trials"
    files = _files(folder)
    assert len(files) == 3
    cut = [r for r in files.values() if r["status"] == "KILLED"]
    assert len(cut) == 1 and cut[0]["trial"]["hyperparameters"] == {"lr": 3e-2}
    stopped = cut[0]["stopped_early"]
    assert stopped["at_step"] == 2 and stopped["max_steps"] == 8 and cut[0]["result"] is None
    assert [p["step"] for p in stopped["curve"]] == [1, 2] and "ASHA" in stopped["by"]
    finished = [r for r in files.values() if r["status"] == "FINISHED"]
    assert sorted((r["trial"]["stage"], r["trial"]["seed"]) for r in finished) == [
        ("final", 1), ("select", 0)]
    for r in finished:  # ran every step: a trial is never stopped at its last curve point
        assert r["trial"]["hyperparameters"] == {"lr": 1e-9} and len(r["result"]["curve"]) == 8
    digests = {r["run"]["training_code"]["sha256"] for r in files.values()}
    assert len(digests) == 1 and len(digests.pop()) == 64
    if training_code()["sha256"] == before:  # (no one edited the training code meanwhile)
        assert files[next(iter(files))]["run"]["training_code"]["sha256"] == before
    client = connect(uri)
    runs = runs_of(client, client.get_experiment_by_name("asha").experiment_id)
    killed = [r for r in runs if r.info.status == "KILLED"]
    assert len(killed) == 1 and killed[0].data.tags["stopped_early"] == "true"

    # A resumed run trains nothing: the cut trial is not run again.
    assert _run(tmp_path, path, data_dir, uri) == 0
    assert "2 trials in stage select, 1 already finished" in capsys.readouterr().out
    assert _files(folder) == files

    # Run again without the cut trial's file (a fresh store): ASHA is primed with the
    # finished rate's curve from its file, so the rerun rate is cut at the same point.
    cut_name = next(n for n, r in files.items() if r["status"] == "KILLED")
    (folder / cut_name).unlink()
    assert _run(tmp_path, path, data_dir, f"sqlite:///{tmp_path}/primed.db",
                "--allow-mixed-code") == 0  # (in case someone edits the code meanwhile)
    assert "lr=0.03 stopped early by the scheduler at step 2/8" in capsys.readouterr().out
    assert json.loads((folder / cut_name).read_text())["stopped_early"]["at_step"] == 2

    # Trial files of another training code: the pinned suite refuses to add to them.
    select = next(n for n, r in files.items() if r["status"] == "FINISHED"
                  and r["trial"]["stage"] == "select")
    other = {**files[select], "run": {**files[select]["run"],
                                      "training_code": {"sha256": "0" * 64}}}
    (folder / select).write_text(json.dumps(other))
    seed1 = next(n for n, r in files.items() if r["trial"]["seed"] == 1)
    (folder / seed1).unlink()
    fresh = f"sqlite:///{tmp_path}/fresh.db"  # as in a fresh clone: the files are all there is
    here = training_code()["sha256"]
    assert _run(tmp_path, path, data_dir, fresh) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "pins its training code" in err[0] and "--allow-mixed-code" in err[0]
    assert "000000000000" in err[0] and here[:12] in err[0]
    assert not (folder / seed1).exists()
    assert _run(tmp_path, path, data_dir, fresh, "--allow-mixed-code") == 0
    assert json.loads((folder / seed1).read_text())["status"] == "FINISHED"


def test_grouped_asha_and_seed_major_order_through_ray_tune(tmp_path):
    """Through a real Tuner, a trainable reporting set curves: ASHA cuts a rate only against
    the same task and strategy's other rates (a worse strategy alone is never cut), at the
    rungs (25%, 50% of the budget), never at the last point; trials start in the order
    given, which expand_trials makes seed-major."""
    import ray
    from ray import tune

    from benchmark.sweep.tune_runner import GroupedASHA, curve_report

    path = _suite_file(tmp_path, "order", {"lora": {"search": {"lr": [1e-3, 1e-2]}},
                                           "head-only": {}}, seeds=[0, 1, 2])
    ordered = expand_trials(load_suite(str(path)))
    assert [(t["seed"], t["strategy"], t["hyperparameters"].get("lr")) for t in ordered] == [
        (s, strategy, lr) for s in (0, 1, 2)
        for strategy, lr in (("lora", 1e-3), ("lora", 1e-2), ("head-only", None))]

    def trial(strategy, lr):
        return {"task": "iterater", "strategy": strategy, "seed": 0, "model": "m", "budget": {},
                "hyperparameters": {"lr": lr}, "options": {}}

    # (trial, curve at steps 2, 4, 6, 8 of 8)
    plan = [(trial("lora", 1), [0.5, 0.6, 0.7, 0.7]),  # first: nothing to compare with
            (trial("lora", 2), [0.3, 0.9, 0.9, 0.9]),  # below 0.5 at 25%: cut there
            (trial("lora", 3), [0.6, 0.55, 0.9, 0.9]),  # below the median at 50%: cut
            (trial("lora", 4), [0.6, 0.7, 0.7, 0.1]),  # worst at its last point: finishes
            (trial("head-only", 1), [0.1, 0.1, 0.1, 0.1])]  # worse, but alone in its group
    log = tmp_path / "started.txt"

    def trainable(config):
        with open(log, "a") as f:
            f.write(f"{config['trial']['strategy']} {config['trial']['hyperparameters']['lr']}\n")
        for i, f1 in enumerate(config["curve"]):
            tune.report(curve_report(2 * (i + 1), {"curve_macro_f1": f1, "curve_accuracy": f1,
                                                   "max_steps": 8}))
        tune.report({"dev_macro_f1": 0.5, "trial_finished": 1})

    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
    try:
        tuner = tune.Tuner(
            trainable,
            param_space={"case": tune.grid_search(list(range(len(plan)))),
                         "trial": tune.sample_from(lambda spec: plan[spec.config.case][0]),
                         "curve": tune.sample_from(lambda spec: plan[spec.config.case][1])},
            tune_config=tune.TuneConfig(metric="dev_macro_f1", mode="max",
                                        scheduler=GroupedASHA("curve_macro_f1", 0.25, 2),
                                        max_concurrent_trials=1, reuse_actors=True),
            run_config=tune.RunConfig(storage_path=str(tmp_path / "ray"), verbose=0))
        results = tuner.fit()
    finally:
        ray.shutdown()
    ends = {}
    for result in results:
        config = result.config
        ends[(config["trial"]["strategy"], config["trial"]["hyperparameters"]["lr"])] = (
            result.metrics.get("trial_finished") == 1,
            result.metrics.get("curve_step"))
    assert ends[("lora", 1)][0] and ends[("lora", 4)][0] and ends[("head-only", 1)][0]
    assert ends[("lora", 2)] == (False, 2) and ends[("lora", 3)] == (False, 4)
    assert log.read_text().split("\n")[:-1] == [f"{t['strategy']} {t['hyperparameters']['lr']}"
                                                 for t, _ in plan]


def test_budget_rule_finds_where_every_mean_curve_has_flattened():
    def run(values, every=40):
        return [{"step": every * (i + 1), "macro_f1": v} for i, v in enumerate(values)]

    # Window means: at 400 the last quarter (320-400: 0.466) is 0.0035 above the quarter
    # before (240, 280: 0.4625); at 360 it is 0.0107 above (200, 240), so 400, the first
    # budget from which on every strategy passes. LoRA alone is flat from 240.
    rising = [0.1, 0.2, 0.3, 0.4, 0.45, 0.46, 0.465, 0.466] + [0.466] * 8
    early = [0.1, 0.3, 0.35, 0.36] + [0.36] * 12
    rule = budget_rule({"ir-tuning": [run(rising), run(rising)], "lora": [run(early)]})
    assert (rule.budget, rule.full) == (400, 640)
    gain = rule.gains["ir-tuning"]
    assert (gain.start_step, gain.end_step, gain.runs) == (240, 400, 2)
    assert (gain.start, gain.end) == (pytest.approx(0.4625), pytest.approx(0.466))
    assert "met at 400 of 640 steps" in rule.text()
    assert budget_rule({"lora": [run(early)]}).budget == 240
    # Two seeds that disagree: the mean decides. Still rising by 0.02 at the end: not met.
    late = [0.1, 0.2, 0.3, 0.4, 0.45, 0.46, 0.48, 0.49]
    short = rising[:8]
    rule = budget_rule({"ir-tuning": [run(late), run(short)], "lora": [run(early[:8])]})
    assert rule.budget is None and "not met within 320 steps" in rule.text()
    # Last quarter 280, 320 against 200, 240, each the mean over both seeds.
    assert rule.at_full["ir-tuning"].gain == pytest.approx(
        (0.48 + 0.465 + 0.49 + 0.466) / 4 - (0.45 + 0.45 + 0.46 + 0.46) / 4)
    # Flat early for both: at 120 the last quarter (120: 0.5) against the one before (80).
    flat = [0.3, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5]
    assert budget_rule({"a": [run(flat)], "b": [run(flat)]}).budget == 120
    # One seed's noise: a dip (200: 0.44, as the probe's curves dipped) is no plateau. Two
    # points (120 -> 200) would call 200 flat; the windows wait until the curve stops rising.
    noisy = [0.1, 0.3, 0.45, 0.50, 0.44, 0.47, 0.50, 0.52, 0.51, 0.53, 0.52, 0.53, 0.52, 0.53,
             0.52, 0.53]
    assert budget_rule({"a": [run(noisy)]}).budget == 560
    assert budget_rule({"a": [[]]}) is None
