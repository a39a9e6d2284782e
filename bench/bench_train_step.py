"""Prompt-tuning training step on smollm2: softprompt against the same step written by hand, side by side.

    python bench/bench_train_step.py [--dtype fp32|bf16] [--repeats 16] [--batch-size 8] [--tokens 20]

Both sides train a soft prompt P [n,H] (same initial values) with AdamW(lr=3e-2) on the same rotten_tomatoes
batches, in the same order, and compute the same loss: cross-entropy over the verbalizer's class logits at
the answer position (the last real token).

  hand        left-pad the ids; x = E(ids) with the model's embedding layer; inputs_embeds = [P ; x];
              attention mask [1..1 ; mask]; positions counted over real tokens; the plain HF backbone
              (`model.model`); h[:, -1] @ W[verbalizer].T; cross-entropy; backward; AdamW step.
  softprompt  `task.loss(base, [prompted] * B, batch)` (padding, left packing, splice, backbone, verbalizer
              fast path); backward; AdamW step.

Both sides take their backward and AdamW step through softprompt's one `optimizer_step` (clipping off), so
only the loss computations differ.

The two compute the same function (the bench prints the first losses, which agree bit for bit, and the largest
loss difference over the run), so the ratio measures only the wrapper; it also times the code that differs,
building inputs_embeds and its backward, on its own. Steps alternate hand/softprompt (order flipped every
round) and the medians are compared. Peak memory: allocator peak above the start of one step (bench/common.py).
Target: softprompt's step within 5% of the hand-written step.
"""

from __future__ import annotations

import argparse

import torch
from common import human_bytes, interleaved, iqr, machine, median, peak_bytes, rotten_tomatoes_setup


def left_pad(seqs: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    L = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), L), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), L), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, L - len(s):] = torch.tensor(s)
        mask[i, L - len(s):] = 1
    return ids, mask


def hand_loss(model, P: torch.Tensor, batch, flat: torch.Tensor, pad_id: int) -> torch.Tensor:
    """The prompt-tuning loss with the plain Hugging Face model and nothing else."""
    ids, mask = left_pad([e.ids for e in batch], pad_id)
    ids, mask = ids.to(P.device), mask.to(P.device)
    B, n = ids.shape[0], P.shape[0]
    x = model.get_input_embeddings()(ids)  # [B,L,H]
    inp = torch.cat([P.to(x.dtype).expand(B, -1, -1), x], dim=1)  # [B,n+L,H]
    m = torch.cat([mask.new_ones(B, n), mask], dim=1)  # [B,n+L]
    pos = (m.cumsum(-1) - 1).clamp(min=0)  # soft tokens 0..n-1, text from n (pads masked)
    h = model.model(inputs_embeds=inp, attention_mask=m, position_ids=pos).last_hidden_state[:, -1]  # [B,H]
    logits = (h @ model.get_output_embeddings().weight[flat].T).float()  # [B,C] verbalizer tokens only
    labels = torch.tensor([e.label for e in batch], device=logits.device)
    return torch.nn.functional.cross_entropy(logits, labels)


def input_prep_times(base, prompted, P: torch.Tensor, batch, pad_id: int) -> dict[str, float]:
    """The only code that differs between the two steps, timed alone: building inputs_embeds, and its backward."""
    from softprompt.model.inject import build_layout, pad_batch, resolve_parts

    def sp_prep() -> None:
        ids, mask = pad_batch([e.ids for e in batch], pad_id)
        layout = build_layout(base, resolve_parts(base, [prompted] * len(batch)), ids, mask)
        layout.inputs_embeds.float().sum().backward()

    def hand_prep() -> None:
        ids, mask = left_pad([e.ids for e in batch], pad_id)
        x = base.model.get_input_embeddings()(ids.to(P.device))
        inp = torch.cat([P.to(x.dtype).expand(len(batch), -1, -1), x], dim=1)
        m = torch.cat([mask.new_ones(len(batch), P.shape[0]), mask], dim=1)
        (m.cumsum(-1) - 1).clamp(min=0)
        inp.float().sum().backward()

    t = interleaved({"softprompt": sp_prep, "hand": hand_prep}, 50, warmup=2, device=base.device)
    prompted.zero_grad(set_to_none=True)
    P.grad = None
    return {k: median(v) for k, v in t.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", default="smollm2")
    ap.add_argument("--dtype", default="fp32", choices=["fp32", "bf16"])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--tokens", type=int, default=20, help="virtual tokens")
    ap.add_argument("--batches", type=int, default=4, help="distinct real batches, cycled")
    ap.add_argument("--repeats", type=int, default=16, help="timed steps per side")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = ap.parse_args()
    base, data, task = rotten_tomatoes_setup(args)

    import softprompt as sp
    from softprompt.training.loop import Micro, optimizer_step
    from softprompt.training.task import length_batches

    examples = task.encode_all(data.train[:2000], base.tokenizer)
    batches = [[examples[i] for i in b] for b in length_batches(examples, args.batch_size, 0)[: args.batches]]
    words = task.word_ids(base.tokenizer)
    assert all(len(w) == 1 and len(w[0]) == 1 for w in words), "the hand step assumes one-token class words"
    flat = torch.tensor([w[0][0] for w in words], device=base.device)
    pad_id = base.tokenizer.pad_token_id or 0

    prompted = sp.attach(base, sp.PromptTuningConfig(num_virtual_tokens=args.tokens))
    P = torch.nn.Parameter(prompted.prompt.embeds.detach().clone())  # the hand side's own copy
    sp_params = list(prompted.parameters())
    opt_sp = torch.optim.AdamW(sp_params, lr=3e-2)
    opt_hand = torch.optim.AdamW([P], lr=3e-2)

    with torch.no_grad():
        l_sp = float(task.loss(base, [prompted] * len(batches[0]), batches[0])[0])
        l_hand = float(hand_loss(base.model, P, batches[0], flat, pad_id))

    losses: dict[str, list[float]] = {"sp": [], "hand": []}

    def sp_step() -> None:
        batch = batches[len(losses["sp"]) % len(batches)]
        st = optimizer_step(opt_sp, sp_params, [Micro(lambda: task.loss(base, [prompted] * len(batch), batch), 1)],
                            lr=3e-2, clip_norm=0.0, step=len(losses["sp"]))
        losses["sp"].append(st["loss"])

    def hand_step() -> None:
        batch = batches[len(losses["hand"]) % len(batches)]
        st = optimizer_step(opt_hand, [P], [Micro(lambda: (hand_loss(base.model, P, batch, flat, pad_id), {}), 1)],
                            lr=3e-2, clip_norm=0.0, step=len(losses["hand"]))
        losses["hand"].append(st["loss"])

    times = interleaved({"hand": hand_step, "softprompt": sp_step}, args.repeats, warmup=1, device=base.device)
    mem = {"hand": peak_bytes(hand_step, base.device), "softprompt": peak_bytes(sp_step, base.device)}
    loss_gap = max(abs(a - b) for a, b in zip(losses["sp"], losses["hand"]))
    prep = input_prep_times(base, prompted, P, batches[0], pad_id)

    lens = [len(e.ids) for b in batches for e in b]
    print(f"machine: {machine()}")
    print(f"base {args.base} ({args.dtype}, {args.device}); prompt tuning, {args.tokens} virtual tokens; batch "
          f"{args.batch_size}; {len(batches)} rotten_tomatoes batches cycled, {min(lens)}-{max(lens)} tokens per "
          f"input; {args.repeats} timed steps per side, interleaved")
    print(f"same function: first loss hand {l_hand:.6f} softprompt {l_sp:.6f} (|diff| {abs(l_hand - l_sp):.2e}); "
          f"largest loss difference over the {len(losses['sp'])} training steps {loss_gap:.2e}")
    print()
    print(f"{'':12} {'median step':>12} {'IQR':>19} {'peak memory':>12}")
    for k in ("hand", "softprompt"):
        lo, hi = iqr(times[k])
        print(f"{k:12} {median(times[k]) * 1e3:>9.1f} ms {lo * 1e3:>8.1f}-{hi * 1e3:<7.1f} ms "
              f"{human_bytes(mem[k]):>12}")
    ratio = median(times["softprompt"]) / median(times["hand"])
    paired = median([s / h for s, h in zip(times["softprompt"], times["hand"])])
    print()
    print(f"time ratio softprompt / hand: {ratio:.3f} (median of paired per-round ratios {paired:.3f}); "
          f"target <= 1.05: {'met' if ratio <= 1.05 else 'NOT met'}")
    print(f"peak memory ratio softprompt / hand: {mem['softprompt'] / max(mem['hand'], 1):.3f}")
    print(f"input preparation alone (pad + splice, forward and backward; median of 50): softprompt "
          f"{prep['softprompt'] * 1e3:.2f} ms, hand {prep['hand'] * 1e3:.2f} ms; difference "
          f"{(prep['softprompt'] - prep['hand']) / median(times['hand']):.2%} of a hand step")


if __name__ == "__main__":
    main()
