"""bench/bench_results.py: a run stopped mid-way resumes from its last checkpoint and ends exactly as an
uninterrupted one (the README's accuracy tables come from runs of 1-2 h each)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"


class Killed(Exception):
    pass


@pytest.fixture
def bench_results(monkeypatch):
    """The script as a module. Its runs here use one torch thread (exactly reproducible sums; with several, CPU
    matmuls may split their sums differently from run to run); the test process's thread count is restored."""
    import torch

    monkeypatch.syspath_prepend(str(BENCH))
    import bench_results

    threads = torch.get_num_threads()
    yield bench_results
    torch.set_num_threads(threads)


def _main(mod, monkeypatch, model_dir, out) -> None:
    monkeypatch.setattr("sys.argv", ["bench_results.py", "--data", "rotten_tomatoes", "--base", str(model_dir),
                                     "--dtype", "fp32", "--recipe", "quick", "--methods", "prompt_tuning",
                                     "--seeds", "0", "--steps", "6", "--eval-every", "2", "--eval-examples", "8",
                                     "--test-limit", "8", "--tokens", "4", "--threads", "1", "--quiet",
                                     "--out", str(out)])
    mod.main()


def _runs(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "rotten_tomatoes" / "runs.jsonl").read_text().splitlines()]


def _metrics(out: Path) -> list[dict]:
    """The run's metrics.jsonl without its timings (tokens_per_s), which differ from run to run."""
    (run,) = (out / "rotten_tomatoes" / "runs").iterdir()
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k != "tokens_per_s"} for r in records]


def test_a_stopped_run_resumes_and_ends_as_an_uninterrupted_one(bench_results, monkeypatch, model_dir, tmp_path):
    from softprompt.training import tune

    _main(bench_results, monkeypatch, model_dir, tmp_path / "whole")

    real, calls = tune.optimizer_step, []

    def dies_at_step_5(*a, **k):  # the checkpoint of step 4 is written, then the process "dies"
        calls.append(1)
        if len(calls) == 5:
            raise Killed
        return real(*a, **k)

    with monkeypatch.context() as m:
        m.setattr(tune, "optimizer_step", dies_at_step_5)
        with pytest.raises(Killed):
            _main(bench_results, m, model_dir, tmp_path / "stopped")
    (run,) = (tmp_path / "stopped" / "rotten_tomatoes" / "runs").iterdir()
    assert (run / "checkpoints" / "LATEST").read_text() == "step-0000004"
    assert [r["method"] for r in _runs(tmp_path / "stopped")] == ["handwritten"]  # nothing recorded for it yet

    steps_after = []

    def counted(*a, **k):
        steps_after.append(1)
        return real(*a, **k)

    with monkeypatch.context() as m:
        m.setattr(tune, "optimizer_step", counted)
        _main(bench_results, m, model_dir, tmp_path / "stopped")  # the same command again
    assert len(steps_after) == 2  # steps 5 and 6 only: it went on from the checkpoint, not from the start
    whole, resumed = _runs(tmp_path / "whole")[-1], _runs(tmp_path / "stopped")[-1]
    assert resumed["resumed_at_step"] == 4 and whole["resumed_at_step"] == 0
    same = ("test_accuracy", "val_best", "best_step", "steps", "val_curve")
    assert {k: resumed[k] for k in same} == {k: whole[k] for k in same}
    assert _metrics(tmp_path / "stopped") == _metrics(tmp_path / "whole")
    assert len([r for r in _metrics(tmp_path / "whole") if r["kind"] == "train"]) == 6
    assert not (run / "checkpoints").exists()  # removed once the run is recorded


def test_a_changed_recipe_does_not_resume_another_runs_checkpoint(bench_results, model_dir):
    from softprompt.training.tune import TrainConfig

    class Args:
        data, base, dtype, out = "rotten_tomatoes", str(model_dir), "fp32", "x"

    a = bench_results.run_dir(Args, "prompt_tuning", 0, TrainConfig(steps=6, lr=1e-2), {"num_virtual_tokens": 4})
    assert a == bench_results.run_dir(Args, "prompt_tuning", 0, TrainConfig(steps=6, lr=1e-2),
                                      {"num_virtual_tokens": 4})
    assert a != bench_results.run_dir(Args, "prompt_tuning", 0, TrainConfig(steps=6, lr=3e-3),
                                      {"num_virtual_tokens": 4})
    assert a != bench_results.run_dir(Args, "prompt_tuning", 0, TrainConfig(steps=6, lr=1e-2),
                                      {"num_virtual_tokens": 5})
    assert a != bench_results.run_dir(Args, "prompt_tuning", 1, TrainConfig(steps=6, lr=1e-2),
                                      {"num_virtual_tokens": 4})
    assert bench_results.run_dir(Args, "full_finetune", 0, TrainConfig(steps=6), None) is None


def test_virtual_tokens_come_from_the_flag_else_the_converged_recipe_else_the_default(bench_results):
    from types import SimpleNamespace

    def tokens(method, recipe="converged", data="rotten_tomatoes", flag=None):
        return bench_results.recipe_tokens(method, SimpleNamespace(tokens=flag, recipe=recipe, data=data))

    tuned = bench_results.RECIPE_TUNED[("rotten_tomatoes", "prompt_tuning")]["tokens"]
    assert tuned != bench_results.TOKENS
    assert tokens("prompt_tuning") == tuned
    assert tokens("prompt_tuning", recipe="quick") == bench_results.TOKENS  # the quick recipe is never tuned
    assert tokens("prompt_tuning", data="bbc_news") == bench_results.TOKENS
    assert tokens("deep_prompt") == bench_results.TOKENS
    assert tokens("prompt_tuning", flag=8) == 8


def test_the_hybrid_template_comes_from_the_flag_else_the_converged_recipe_else_the_preset(bench_results):
    from types import SimpleNamespace

    def template(recipe="converged", data="rotten_tomatoes", flag=None):
        return bench_results.recipe_template("hybrid", SimpleNamespace(hybrid_template=flag, recipe=recipe, data=data))

    tuned = bench_results.RECIPE_TUNED[("rotten_tomatoes", "hybrid")]["template"]
    assert tuned != bench_results.PRESETS["rotten_tomatoes"].hybrid_template
    assert template() == tuned
    assert template(recipe="quick") is None  # the quick recipe is never tuned: the preset's
    assert template(data="bbc_news") is None
    assert template(flag="{soft:2} {text} {label}") == "{soft:2} {text} {label}"
