"""softprompt against Hugging Face PEFT on smollm2 + rotten_tomatoes: training speed, memory, accuracy, generation.

    python bench/bench_peft.py --quick --threads 1     # about 4 minutes of CPU time
    python bench/bench_peft.py --dtype bf16 --quick
    python bench/bench_peft.py                         # the full run (more steps, larger test subset)

For each method (prompt tuning, prefix tuning, P-tuning; batch 8, 20 virtual tokens) both libraries train
on the same frozen model object, the same batches in the same order, with the same optimizer (AdamW, the
method's softprompt learning rate, linear warm-up/decay, gradient clipping 1.0) from the same initial
values (P-tuning: same input vectors; each library keeps its own prompt encoder). What differs is the
library and the loss each uses:

  softprompt  `task.loss`: the hidden state at the answer position only, logits only for the verbalizer's
              tokens, class cross-entropy.
  PEFT        the causal-LM recipe of PEFT's prompt-based-methods guide (docs/source/task_guides/
              prompt_based_methods.md, peft 0.21): `PeftModelForCausalLM(input_ids, attention_mask,
              labels)` over the whole sequence, input = prompt + answer token, labels -100 everywhere but
              the answer token, so full-vocabulary logits at every position and the model's LM loss.
              One change in PEFT's favour: batches are left-padded to their longest row instead of the
              guide's fixed max_length=64.

Steps alternate softprompt/PEFT. examples/s = examples / summed step time. Accuracy: both scored the same
way on the same test subset (argmax of the verbalizer tokens' logits at the answer position). Peak memory:
allocator peak above the start of one training step (bench/common.py). Generation: a fixed batch of test
requests, greedy, exactly --gen-tokens new tokens each, interleaved repeats, median latency.
"""

from __future__ import annotations

import argparse
import json

import torch
from common import human_bytes, interleaved, machine, markdown_table, median, peak_bytes, rotten_tomatoes_setup

METHODS = ("prompt_tuning", "prefix_tuning", "p_tuning")


# --- PEFT side ------------------------------------------------------------------------------------------

def peft_model_for(method: str, model, prompted, n: int):
    """A PeftModelForCausalLM over `model` whose prompt starts from `prompted`'s initial values."""
    from peft import PrefixTuningConfig, PromptEncoderConfig, PromptTuningConfig, get_peft_model

    from softprompt.interop.peft_format import kv_to_peft

    if method == "prompt_tuning":
        cfg = PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=n)
        init = prompted.prompt.embeds
    elif method == "prefix_tuning":
        cfg = PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=n)
        init = kv_to_peft(*prompted.prompt.kv())  # [n, L*2*kvh*hd], PEFT's layout
    else:
        cfg = PromptEncoderConfig(task_type="CAUSAL_LM", num_virtual_tokens=n,
                                  encoder_hidden_size=prompted.config.encoder_hidden)
        init = prompted.prompt.inputs
    pm = get_peft_model(model, cfg)
    emb = pm.prompt_encoder["default"].embedding.weight
    with torch.no_grad():
        emb.copy_(init.detach().to(emb.dtype))
    return pm


def peft_batch(batch, answer_ids: list[int], pad_id: int, device) -> dict[str, torch.Tensor]:
    """PEFT guide's preprocessing: prompt + answer token, labels -100 but on the answer, left padding."""
    seqs = [e.ids + [answer_ids[e.label]] for e in batch]
    L = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), L), pad_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    labels = torch.full_like(ids, -100)
    for i, s in enumerate(seqs):
        ids[i, L - len(s):] = torch.tensor(s)
        mask[i, L - len(s):] = 1
        labels[i, -1] = s[-1]
    return {"input_ids": ids.to(device), "attention_mask": mask.to(device), "labels": labels.to(device)}


@torch.no_grad()
def peft_accuracy(pm, examples, answer_ids: list[int], pad_id: int, device, batch_size: int = 32) -> float:
    """Argmax over the verbalizer tokens' logits at the answer position (softprompt's scoring)."""
    order = sorted(range(len(examples)), key=lambda i: len(examples[i].ids))
    flat = torch.tensor(answer_ids, device=device)
    correct = 0
    for s in range(0, len(order), batch_size):
        batch = [examples[i] for i in order[s:s + batch_size]]
        L = max(len(e.ids) for e in batch)
        ids = torch.full((len(batch), L), pad_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for i, e in enumerate(batch):
            ids[i, L - len(e.ids):] = torch.tensor(e.ids)
            mask[i, L - len(e.ids):] = 1
        logits = pm(input_ids=ids.to(device), attention_mask=mask.to(device), logits_to_keep=1).logits[:, -1]
        pred = logits[:, flat].argmax(-1).cpu()
        correct += int((pred == torch.tensor([e.label for e in batch])).sum())
    return correct / len(examples)


# --- one method -----------------------------------------------------------------------------------------

def config_for(method: str, n: int):
    import softprompt as sp

    return sp.registry.build_config(method, sp.Knobs(num_virtual_tokens=n))


def bench_training(method: str, base, task, train_ex, test_ex, args) -> dict:
    import softprompt as sp
    from softprompt.training.loop import Micro, optimizer_step
    from softprompt.training.task import evaluate
    from softprompt.training.tune import BatchStream, TrainConfig, lr_at

    answer_ids = [w[0][0] for w in task.word_ids(base.tokenizer)]
    pad_id = base.tokenizer.pad_token_id or 0
    prompted = sp.attach(base, config_for(method, args.tokens))
    pm = peft_model_for(method, base.model, prompted, args.tokens)
    sp_params = [p for p in prompted.parameters() if p.requires_grad]
    pe_params = [p for p in pm.parameters() if p.requires_grad]
    peak_lr = type(prompted.config).default_lr
    cfg = TrainConfig(steps=args.steps, batch_size=args.batch_size, warmup_steps=min(20, args.steps // 5))
    opts = {"softprompt": torch.optim.AdamW(sp_params, lr=peak_lr), "peft": torch.optim.AdamW(pe_params, lr=peak_lr)}
    stream = BatchStream(train_ex, args.batch_size, seed=0)
    step = {"softprompt": 0, "peft": 0}
    losses: dict[str, list[float]] = {"softprompt": [], "peft": []}

    def take_step(name: str, loss_fn, params) -> None:
        """Both libraries step through softprompt's one optimizer step (clip 1.0), so only the losses differ."""
        st = optimizer_step(opts[name], params, [Micro(loss_fn, 1)], lr=lr_at(step[name], cfg, peak_lr),
                            clip_norm=1.0, step=step[name])
        losses[name].append(st["loss"])
        step[name] += 1

    def sp_step() -> None:
        batch = stream.get(step["softprompt"])
        take_step("softprompt", lambda: task.loss(base, [prompted] * len(batch), batch), sp_params)

    def peft_step() -> None:
        batch = stream.get(step["peft"])
        take_step("peft", lambda: (pm(**peft_batch(batch, answer_ids, pad_id, base.device)).loss, {}), pe_params)

    sp_acc0 = evaluate(base, prompted, task, test_ex)["accuracy"]
    times = interleaved({"softprompt": sp_step, "peft": peft_step}, args.steps, warmup=0, device=base.device)
    mem = {"softprompt": peak_bytes(sp_step, base.device), "peft": peak_bytes(peft_step, base.device)}
    acc = {"softprompt": evaluate(base, prompted, task, test_ex)["accuracy"],
           "peft": peft_accuracy(pm, test_ex, answer_ids, pad_id, base.device)}
    n_ex = args.steps * args.batch_size
    eps = {k: n_ex / sum(v) for k, v in times.items()}
    return {
        "method": method, "steps": args.steps, "accuracy_before": sp_acc0,
        "sp_examples_per_s": eps["softprompt"], "peft_examples_per_s": eps["peft"],
        "speedup": eps["softprompt"] / eps["peft"],
        "median_step_ratio": median(times["peft"]) / median(times["softprompt"]),
        "sp_peak_bytes": mem["softprompt"], "peft_peak_bytes": mem["peft"],
        "memory_ratio": mem["softprompt"] / max(mem["peft"], 1),
        "sp_accuracy": acc["softprompt"], "peft_accuracy": acc["peft"],
        "sp_final_loss": median(losses["softprompt"][-5:]), "peft_final_loss": median(losses["peft"][-5:]),
        "sp_trainable": sum(p.numel() for p in sp_params), "peft_trainable": sum(p.numel() for p in pe_params),
        "_prompted": prompted, "_peft": pm,
    }


def bench_generation(method: str, base, prompted, pm, texts: list[list[int]], args) -> dict:
    from softprompt.model.generate import generate_ids

    pad_id = base.tokenizer.pad_token_id or 0
    L = max(len(t) for t in texts)
    ids = torch.full((len(texts), L), pad_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, t in enumerate(texts):
        ids[i, L - len(t):] = torch.tensor(t)
        mask[i, L - len(t):] = 1
    ids, mask = ids.to(base.device), mask.to(base.device)
    k = args.gen_tokens

    def sp_gen():
        out = generate_ids(base, [prompted] * len(texts), texts, max_new_tokens=k, eos_token_id=[])
        assert all(len(o) == k for o in out)

    @torch.no_grad()
    def peft_gen():
        out = pm.generate(input_ids=ids, attention_mask=mask, max_new_tokens=k, min_new_tokens=k, do_sample=False,
                          pad_token_id=pad_id)
        assert out.shape[1] - L == k

    times = interleaved({"softprompt": sp_gen, "peft": peft_gen}, args.gen_repeats, warmup=1, device=base.device)
    lat = {n: median(t) for n, t in times.items()}
    toks = len(texts) * k
    return {"method": method, "batch": len(texts), "new_tokens": k,
            "sp_latency_ms": lat["softprompt"] * 1e3, "peft_latency_ms": lat["peft"] * 1e3,
            "sp_tokens_per_s": toks / lat["softprompt"], "peft_tokens_per_s": toks / lat["peft"],
            "speedup": lat["peft"] / lat["softprompt"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", default="smollm2")
    ap.add_argument("--dtype", default="fp32", choices=["fp32", "bf16"])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--quick", action="store_true", help="few steps, small test subset (about 5 minutes)")
    ap.add_argument("--steps", type=int, default=None, help="training steps per method and library "
                    "(default 60; --quick 10)")
    ap.add_argument("--test-limit", type=int, default=None, help="test examples scored (default 300; --quick 96)")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--tokens", type=int, default=20, help="virtual tokens")
    ap.add_argument("--gen-batch", type=int, default=8)
    ap.add_argument("--gen-tokens", type=int, default=16)
    ap.add_argument("--gen-repeats", type=int, default=None, help="(default 7; --quick 3)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--json", default=None, help="also write the results to this JSON file")
    args = ap.parse_args()
    args.steps = args.steps or (10 if args.quick else 60)
    args.test_limit = args.test_limit or (96 if args.quick else 300)
    args.gen_repeats = args.gen_repeats or (3 if args.quick else 7)
    base, data, task = rotten_tomatoes_setup(args)
    tok = base.tokenizer
    assert all(len(w) == 1 and len(w[0]) == 1 for w in task.word_ids(tok)), "one-token class words expected"
    train_ex = task.encode_all(data.train, tok)
    test_ex = task.encode_all(data.test[: args.test_limit], tok)
    requests = [e.ids for e in test_ex[: args.gen_batch]]

    where = machine()
    print(f"machine: {where}")
    print(f"base {args.base} ({args.dtype}, {args.device}); batch {args.batch_size}; {args.tokens} virtual tokens; "
          f"{args.steps} steps per method and library; accuracy on {len(test_ex)} test examples")
    train_rows, gen_rows = [], []
    for method in args.methods.split(","):
        r = bench_training(method, base, task, train_ex, test_ex, args)
        print(f"  {method}: softprompt {r['sp_examples_per_s']:.2f} ex/s, PEFT {r['peft_examples_per_s']:.2f} ex/s "
              f"(x{r['speedup']:.2f}); accuracy {r['sp_accuracy']:.3f} vs {r['peft_accuracy']:.3f}", flush=True)
        if method in ("prompt_tuning", "prefix_tuning"):
            g = bench_generation(method, base, r["_prompted"], r["_peft"], requests, args)
            gen_rows.append(g)
            print(f"  {method} generation: {g['sp_latency_ms']:.0f} ms vs {g['peft_latency_ms']:.0f} ms "
                  f"(x{g['speedup']:.2f})", flush=True)
        train_rows.append({k: v for k, v in r.items() if not k.startswith("_")})

    print("\n### Training (examples/s: higher is better; memory: allocator peak of one step)\n")
    rows = [{"method": r["method"], "softprompt ex/s": r["sp_examples_per_s"], "PEFT ex/s": r["peft_examples_per_s"],
             "speed-up": f"{r['speedup']:.2f}x", "softprompt acc": r["sp_accuracy"], "PEFT acc": r["peft_accuracy"],
             "softprompt acc at step 0": r["accuracy_before"], "softprompt peak": human_bytes(r["sp_peak_bytes"]),
             "PEFT peak": human_bytes(r["peft_peak_bytes"]), "memory ratio": f"{r['memory_ratio']:.2f}"}
            for r in train_rows]
    print(markdown_table(rows, list(rows[0])))
    rows = [{"method": g["method"], "batch x tokens": f"{g['batch']} x {g['new_tokens']}",
             "softprompt ms": g["sp_latency_ms"], "PEFT ms": g["peft_latency_ms"],
             "softprompt tok/s": g["sp_tokens_per_s"], "PEFT tok/s": g["peft_tokens_per_s"],
             "speed-up": f"{g['speedup']:.2f}x"} for g in gen_rows]
    if rows:
        print("\n### Generation (batch of test requests, greedy, fixed number of new tokens)\n")
        print(markdown_table(rows, list(rows[0])))
    print()
    for r in train_rows:
        ok = r["speedup"] >= 3 and r["sp_accuracy"] >= r["peft_accuracy"] and r["memory_ratio"] <= 1
        print(f"target (>= 3x examples/s, accuracy >= PEFT, memory <= PEFT) for {r['method']}: "
              f"{'met' if ok else 'NOT met'}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "machine": where, "training": train_rows, "generation": gen_rows}, f,
                      indent=2)


if __name__ == "__main__":
    main()
