"""Data-parallel training: two gloo processes on 127.0.0.1 train the same prompt as one process does."""

from __future__ import annotations

import socket
import time

import pytest
import torch
import torch.multiprocessing as mp

import softprompt as sp
from softprompt.templates import Template, Verbalizer
from softprompt.training.ddp import shard, train_ddp
from softprompt.training.task import Task
from softprompt.training.tune import TrainConfig, train
from tests.tiny import tiny_base

CASES = {
    # classification, uneven shards (7 -> 4 + 3), two micro-batches per step
    "cls": dict(config=lambda: sp.PromptTuningConfig(num_virtual_tokens=3),
                cfg=TrainConfig(steps=3, batch_size=7, grad_accum=2, warmup_steps=1)),
    # generation: the loss is a mean over answer tokens, and shards hold different numbers of them
    "gen": dict(config=lambda: sp.PrefixTuningConfig(num_virtual_tokens=2),
                cfg=TrainConfig(steps=3, batch_size=5, warmup_steps=1)),
}


def _task_and_examples(case: str, base):
    if case == "cls":
        task = Task(Template.parse("{text}:{label}"), Verbalizer({"p": ["P"], "n": ["N"]}))
        texts = ["ab", "xyz", "hello", "q", "cab"] * 6
        recs = [{"text": t, "label": "p" if i % 3 else "n"} for i, t in enumerate(texts)]
    else:
        task = Task(Template.parse("{text}={answer}", answer_field="answer"))
        recs = [{"text": t, "answer": a} for t, a in zip(["ab", "cde", "xyz", "hello", "q"] * 4,
                                                          ["ok", "yes!", "n", "maybe", "no"] * 4)]
    return task, task.encode_all(recs, base.tokenizer)


def _worker(rank: int, world_size: int, port: int, out_dir: str) -> None:
    import torch.distributed as dist
    from safetensors.torch import save_file

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size)
    try:
        base = tiny_base("llama", init_range=0.2)
        for case, spec in CASES.items():
            task, ex = _task_and_examples(case, base)
            p = sp.attach(base, spec["config"]())
            res = train_ddp(p, task, ex, spec["cfg"])
            if rank == 0:
                tensors = {k: v.detach().contiguous() for k, v in p.prompt.state_dict().items()}
                tensors["losses"] = torch.tensor([r["loss"] for r in res.history])
                save_file(tensors, f"{out_dir}/{case}.safetensors")
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _single_process(case: str):
    base = tiny_base("llama", init_range=0.2)
    task, ex = _task_and_examples(case, base)
    p = sp.attach(base, CASES[case]["config"]())
    res = train(p, task, ex, [], CASES[case]["cfg"], progress=False)
    return p, [r["loss"] for r in res.history if r["kind"] == "train"]


def test_shards_cover_the_batch_in_order():
    for n in range(0, 12):
        for w in (1, 2, 3, 4):
            parts = [shard(list(range(n)), r, w) for r in range(w)]
            assert sum(parts, []) == list(range(n))
            assert max(map(len, parts)) - min(map(len, parts)) <= 1


@pytest.mark.parametrize("case", sorted(CASES))
def test_one_process_without_group_equals_the_recipe(case):
    """Without a process group train_ddp is the single-process recipe (same batches, schedule, clipping)."""
    ref, ref_losses = _single_process(case)
    base = ref.base
    task, ex = _task_and_examples(case, base)
    p = sp.attach(base, CASES[case]["config"]())
    res = train_ddp(p, task, ex, CASES[case]["cfg"])
    for (k, a), b in zip(p.prompt.state_dict().items(), ref.prompt.state_dict().values()):
        assert torch.allclose(a, b, atol=1e-6), k
    if case == "gen":  # one micro-batch per step: the logged loss is the same token mean
        assert [r["loss"] for r in res.history] == pytest.approx(ref_losses, abs=1e-6)


def test_two_processes_train_the_same_prompt_as_one(tmp_path):
    from safetensors.torch import load_file

    ctx = mp.spawn(_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=False)
    deadline = time.time() + 150
    while not ctx.join(timeout=5):
        if time.time() > deadline:
            for proc in ctx.processes:
                proc.kill()
            pytest.fail("the two DDP workers did not finish in 150 s")
    for case in CASES:
        got = load_file(str(tmp_path / f"{case}.safetensors"))
        ref, ref_losses = _single_process(case)
        for k, v in ref.prompt.state_dict().items():
            assert torch.allclose(got[k], v, rtol=1e-4, atol=1e-5), (case, k, float((got[k] - v).abs().max()))
        moved = sp.attach(ref.base, CASES[case]["config"]()).prompt.state_dict()
        assert any(not torch.allclose(moved[k], v) for k, v in ref.prompt.state_dict().items())  # it trained
        if case == "gen":
            assert got["losses"].tolist() == pytest.approx(ref_losses, abs=1e-5)


def test_non_finite_loss_stops_with_clear_message():
    base = tiny_base("llama")
    task, ex = _task_and_examples("cls", base)
    p = sp.attach(base, sp.PromptTuningConfig(num_virtual_tokens=3))
    with torch.no_grad():
        p.prompt.embeds[0, 0] = float("nan")
    with pytest.raises(sp.TrainingError, match="non-finite"):
        train_ddp(p, task, ex, TrainConfig(steps=2, batch_size=4))
