"""Data-parallel training: two gloo processes on 127.0.0.1 run the one recipe (`tune.train`) and end where one
process with the same global batch ends, with evaluation, early stopping, checkpoints and exact resume."""

from __future__ import annotations

import socket
import time

import pytest
import torch
import torch.multiprocessing as mp

import softprompt as sp
from softprompt.templates import Template, Verbalizer
from softprompt.training import tune
from softprompt.training.distributed import Group, shard
from softprompt.training.task import Task
from softprompt.training.tune import TrainConfig, train
from tests.tiny import tiny_base

CASES = {
    # classification, uneven shards (7 -> 4 + 3), two micro-batches per step, evaluation and early stopping
    "cls": dict(config=lambda: sp.PromptTuningConfig(num_virtual_tokens=3),
                cfg=TrainConfig(steps=6, batch_size=7, grad_accum=2, warmup_steps=1, eval_every=1, patience=2,
                                checkpoint_every=2)),
    # generation: the loss is a mean over answer tokens, and shards hold different numbers of them
    "gen": dict(config=lambda: sp.PrefixTuningConfig(num_virtual_tokens=2),
                cfg=TrainConfig(steps=4, batch_size=5, warmup_steps=1, eval_every=2, checkpoint_every=1)),
}
KILL_AT = 5  # the resumed run dies at the 5th micro-batch call of each process (step 3 of "cls")


def _task_and_examples(case: str, base):
    if case == "cls":
        task = Task(Template.parse("{text}:{label}"), Verbalizer({"p": ["P"], "n": ["N"]}))
        texts = ["ab", "xyz", "hello", "q", "cab"] * 6
        recs = [{"text": t, "label": "p" if i % 3 else "n"} for i, t in enumerate(texts)]
    else:
        task = Task(Template.parse("{text}={answer}", answer_field="answer"))
        recs = [{"text": t, "answer": a} for t, a in zip(["ab", "cde", "xyz", "hello", "q"] * 4,
                                                          ["ok", "yes!", "n", "maybe", "no"] * 4)]
    ex = task.encode_all(recs, base.tokenizer)
    return task, ex, ex[:9]


def _result_tensors(p, res) -> dict[str, torch.Tensor]:
    out = {k: v.detach().contiguous() for k, v in p.prompt.state_dict().items()}
    out["train_losses"] = torch.tensor([r["loss"] for r in res.history if r["kind"] == "train"], dtype=torch.float64)
    out["eval_acc"] = torch.tensor([r["accuracy"] for r in res.history if r["kind"] == "eval"], dtype=torch.float64)
    out["eval_loss"] = torch.tensor([r["loss"] for r in res.history if r["kind"] == "eval"], dtype=torch.float64)
    out["done"] = torch.tensor([res.steps_done, res.best_step, int(res.stopped_early)])
    return out


def _worker(rank: int, world_size: int, port: int, out_dir: str) -> None:
    import torch.distributed as dist
    from safetensors.torch import save_file

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size)
    try:
        base = tiny_base("llama", init_range=0.2)
        for case, spec in CASES.items():
            task, ex, val = _task_and_examples(case, base)
            p = sp.attach(base, spec["config"]())
            res = train(p, task, ex, val, spec["cfg"], out_dir=f"{out_dir}/{case}-full", progress=False)
            save_file(_result_tensors(p, res), f"{out_dir}/{case}-full-rank{rank}.safetensors")
        # "cls" again, killed mid-run on every process, then resumed from the checkpoint rank 0 wrote
        task, ex, val = _task_and_examples("cls", base)
        real, calls = tune._micro_step, {"n": 0}

        def dying(*a, **k):
            calls["n"] += 1
            if calls["n"] == KILL_AT:
                raise KeyboardInterrupt
            return real(*a, **k)

        tune._micro_step = dying
        try:
            train(sp.attach(base, CASES["cls"]["config"]()), task, ex, val, CASES["cls"]["cfg"],
                  out_dir=f"{out_dir}/cls-resumed", progress=False)
        except KeyboardInterrupt:
            pass
        tune._micro_step = real
        p = sp.attach(base, CASES["cls"]["config"]())
        res = train(p, task, ex, val, CASES["cls"]["cfg"], out_dir=f"{out_dir}/cls-resumed", progress=False)
        save_file(_result_tensors(p, res), f"{out_dir}/cls-resumed-rank{rank}.safetensors")
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun(*args: str, timeout: int = 600):
    """`python -m torch.distributed.run --standalone --nproc-per-node 2 ARGS` with this checkout importable, one
    thread a process and no GPU (gloo); the finished process."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1]), "OMP_NUM_THREADS": "1",
           "CUDA_VISIBLE_DEVICES": ""}
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                           *args], env=env, capture_output=True, text=True, timeout=timeout)


def _single_process(case: str, out_dir=None):
    base = tiny_base("llama", init_range=0.2)
    task, ex, val = _task_and_examples(case, base)
    p = sp.attach(base, CASES[case]["config"]())
    res = train(p, task, ex, val, CASES[case]["cfg"], out_dir=out_dir, progress=False)
    return p, res


def test_shards_cover_the_batch_in_order():
    for n in range(0, 12):
        for w in (1, 2, 3, 4):
            parts = [shard(list(range(n)), r, w) for r in range(w)]
            assert sum(parts, []) == list(range(n))
            assert max(map(len, parts)) - min(map(len, parts)) <= 1


def test_one_process_group_is_the_identity():
    g = Group()
    assert (g.rank, g.size, g.is_main) == (0, 1, True)
    assert g.shard([1, 2, 3]) == [1, 2, 3] and g.sum([1.5, 2.0]) == [1.5, 2.0]


def test_two_processes_train_the_same_prompt_as_one(tmp_path):
    from safetensors.torch import load_file

    ctx = mp.spawn(_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=False)
    deadline = time.time() + 600  # generous: the cores are shared; only a hung worker gets here
    while not ctx.join(timeout=5):
        if time.time() > deadline:
            for proc in ctx.processes:
                proc.kill()
            pytest.fail("the two workers did not finish in 600 s")
    for case in CASES:
        ref, res = _single_process(case, tmp_path / f"{case}-single")
        want = _result_tensors(ref, res)
        if case == "cls":  # the case stops early, and the best prompt is an earlier step's (restored on resume)
            assert want["done"][2] == 1 and want["done"][1] < want["done"][0]
        moved = sp.attach(ref.base, CASES[case]["config"]()).prompt.state_dict()
        assert any(not torch.allclose(moved[k], v) for k, v in ref.prompt.state_dict().items())  # it trained
        runs = [f"{case}-full-rank0", f"{case}-full-rank1"] + (["cls-resumed-rank0", "cls-resumed-rank1"]
                                                                if case == "cls" else [])
        for run in runs:
            got = load_file(str(tmp_path / f"{run}.safetensors"))
            assert got["done"].tolist() == want["done"].tolist(), run  # same steps, best step, early stop
            assert got["eval_acc"].tolist() == want["eval_acc"].tolist(), run
            assert torch.allclose(got["train_losses"], want["train_losses"], atol=1e-5), run
            assert torch.allclose(got["eval_loss"], want["eval_loss"], atol=1e-5), run
            for k, v in ref.prompt.state_dict().items():
                assert torch.allclose(got[k], v, rtol=1e-4, atol=1e-5), (run, k, float((got[k] - v).abs().max()))
    # only the first process wrote the run directory, and it wrote what one process writes
    assert (tmp_path / "cls-full" / "best").is_dir() and (tmp_path / "cls-full" / "metrics.jsonl").is_file()
    assert (tmp_path / "cls-resumed" / "checkpoints" / "LATEST").is_file()


def test_non_finite_loss_stops_with_clear_message():
    base = tiny_base("llama")
    task, ex, _ = _task_and_examples("cls", base)
    p = sp.attach(base, sp.PromptTuningConfig(num_virtual_tokens=3))
    with torch.no_grad():
        p.prompt.embeds[0, 0] = float("nan")
    with pytest.raises(sp.TrainingError, match="non-finite"):
        train(p, task, ex, [], TrainConfig(steps=2, batch_size=4), progress=False)


def test_torchrun_runs_the_cli_train_command_as_one_process_does(tmp_path):
    """The documented command: `torchrun --nproc-per-node 2 -m softprompt.cli.main train ...` (CSV, tiny model)."""
    import csv
    import json
    import random

    from safetensors.torch import load_file

    from softprompt.cli.main import main
    from tests.tiny import tiny_model, tiny_tokenizer

    tiny_model("llama").save_pretrained(tmp_path / "model")
    tiny_tokenizer().save_pretrained(tmp_path / "model")
    rng = random.Random(0)
    with open(tmp_path / "d.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["text", "label"])
        for _ in range(40):
            w.writerow(["".join(rng.choice("abcxyz") for _ in range(5)), rng.choice(["good", "bad"])])
    flags = ["train", "--base", str(tmp_path / "model"), "--data", str(tmp_path / "d.csv"), "--template",
             "{text}:{label}", "--labels", "good,bad", "--steps", "4", "--batch-size", "7", "--eval-every", "2",
             "--no-progress"]
    run = _torchrun("-m", "softprompt.cli.main", *flags, "--out", str(tmp_path / "two"))
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.count("saved ") == 1  # the first process reports and saves, the other only trains
    assert main([*flags, "--out", str(tmp_path / "one")]) == 0
    two, one = (load_file(str(tmp_path / d / "prompt" / "prompt.safetensors")) for d in ("two", "one"))
    for k, v in one.items():
        assert torch.allclose(two[k], v, rtol=1e-4, atol=1e-5), k
    two_log, one_log = ([json.loads(x) for x in (tmp_path / d / "metrics.jsonl").read_text().splitlines()]
                        for d in ("two", "one"))
    assert [(r["kind"], r["step"]) for r in two_log] == [(r["kind"], r["step"]) for r in one_log]
    assert [r.get("accuracy") for r in two_log] == [r.get("accuracy") for r in one_log]


def test_a_group_joined_from_the_environment_is_left_before_exit(tmp_path):
    """`group()` joins the group torchrun describes and, at exit, destroys it and joins gloo's worker threads while
    the interpreter is whole. A worker still alive in the interpreter's finalisation aborts the process now and then
    (SIGABRT, "terminate called without an active exception"), which failed the torchrun CLI test in CI: the group
    outlived `destroy_process_group` because torch.distributed.nn.functional, imported after the group existed (as
    transformers does through torch.distributed.fsdp when a model loads), had bound it into default arguments.
    Checked without a race: an exit handler that runs after group()'s counts the process's threads."""
    import os

    if not os.path.isdir("/proc/self/task"):
        pytest.skip("counts threads through /proc")
    script = tmp_path / "join.py"
    script.write_text(
        "import atexit, os\n"
        "import torch.distributed as dist\n"
        "def threads():\n"
        "    return len(os.listdir('/proc/self/task'))\n"
        "before = threads()\n"
        "def check():  # registered first, so it runs after the handler group() registers\n"
        "    if dist.is_initialized() or threads() != before:\n"
        "        print(f'{threads()} threads at exit, {before} before the group', flush=True)\n"
        "        os._exit(3)\n"
        "atexit.register(check)\n"
        "from softprompt.training.distributed import group\n"
        "g = group()\n"
        "import torch.distributed.fsdp  # what transformers imports when a model loads\n"
        "assert g.size == 2 and g.sum([1.0]) == [2.0]\n")
    run = _torchrun(str(script), timeout=300)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-3000:]
