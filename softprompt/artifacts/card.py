"""The README.md model card a saved prompt directory carries, generated from its manifest.

Hugging Face model-card layout: YAML front matter (`library_name`, `base_model`, `tags`) then Markdown: the
method, the base model and its fingerprint, the template and verbalizer, the size, how to load and serve it,
and the metrics the run recorded. The card is for people and the Hub; loading never reads it.
"""

from __future__ import annotations

import json
from typing import Any

PAPERS = {
    "prompt_tuning": "https://arxiv.org/abs/2104.08691",
    "p_tuning": "https://arxiv.org/abs/2103.10385",
    "prefix_tuning": "https://arxiv.org/abs/2101.00190",
    "deep_prompt": "https://arxiv.org/abs/2110.07602",
    "adapter": "https://arxiv.org/abs/1902.00751",
}
HUB_IDS = {"smollm2": "HuggingFaceTB/SmolLM2-135M-Instruct"}
"""Embedded defaults whose Hub id is known (the card's `base_model`)."""
EMBEDDED = ("smollm2", "gemma3-270m")
METRIC_KEYS = ("best_step", "val_accuracy", "test_accuracy", "metric", "results", "evaluation", "compression")


def _yaml_str(s: str) -> str:
    return json.dumps(s)  # a JSON string is a valid YAML scalar


def _front_matter(m: dict[str, Any], base_name: str | None) -> list[str]:
    hub_id = HUB_IDS.get(base_name or "", base_name)
    tags = ["softprompt", "peft", "soft-prompt", m["method"].replace("_", "-")]
    if m["base"].get("model_type"):
        tags.append(str(m["base"]["model_type"]))
    lines = ["---", "library_name: softprompt"]
    if hub_id and "/" in hub_id and not hub_id.startswith(("/", ".")):
        lines.append(f"base_model: {_yaml_str(hub_id)}")
    lines += ["tags:"] + [f"- {_yaml_str(t)}" for t in tags] + ["---", ""]
    return lines


def _metrics(extra: dict[str, Any]) -> list[str]:
    found = {k: extra[k] for k in METRIC_KEYS if extra.get(k) is not None}
    if not found:
        return []
    out = ["## Metrics", "", "Recorded by the run that saved this prompt:", ""]
    for key, value in found.items():
        if isinstance(value, list) and value and all(isinstance(r, dict) for r in value):
            cols = list(dict.fromkeys(c for r in value for c in r))
            out += ["", f"{key}:", "", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
            out += ["| " + " | ".join(str(r.get(c, "")) for c in cols) + " |" for r in value]
            out.append("")
        else:
            out.append(f"- {key}: `{json.dumps(value, sort_keys=True)}`")
    return out + [""]


def _task(extra: dict[str, Any]) -> list[str]:
    out = []
    template = extra.get("template")
    if isinstance(template, dict) and template.get("source") is not None:
        out += ["## Template", "", "```text", str(template["source"]), "```", ""]
    verb = extra.get("verbalizer")
    if isinstance(verb, dict) and isinstance(verb.get("label_words"), dict):
        out += ["## Verbalizer", "", "| class | label words |", "|---|---|"]
        out += [f"| {c} | {', '.join(repr(w) for w in words)} |" for c, words in verb["label_words"].items()]
        out.append("")
    return out


def model_card(manifest: dict[str, Any], base_name: str | None = None, tensor_bytes: int | None = None) -> str:
    """README.md text for a prompt directory whose manifest is `manifest` (trained on base `base_name`)."""
    m, b = manifest, manifest["base"]
    extra = m.get("extra") or {}
    method = m["method"]
    paper = f" ([paper]({PAPERS[method]}))" if method in PAPERS else ""
    shapes = ", ".join(f"`{k}` {v['shape']}" for k, v in sorted(m["tensors"].items()))
    size = f", {tensor_bytes:,} bytes of tensors" if tensor_bytes is not None else ""
    name = base_name or b.get("model_type", "?")
    loadable = name in EMBEDDED or name.endswith(".gguf") or ("/" in name and not name.startswith(("/", ".")))
    load = f"sp.load_base({name!r})" if loadable else "sp.load_base(...)  # the base model described above"
    lines = _front_matter(m, base_name) + [
        f"# {method} soft prompt for {name}", "",
        f"A [softprompt](https://pypi.org/project/softprompt/) artifact: a **{method}**{paper} prompt for the "
        f"frozen base model `{name}`. The base model's weights are not included.", "",
        "## Method", "", f"- method: `{method}`",
        f"- config: `{json.dumps(m.get('config', {}), sort_keys=True)}`",
        f"- size: {m.get('num_parameters', '?'):,} parameters ({shapes}){size}", "",
        "## Base model", "",
        f"- name: `{name}`",
        f"- architecture: `{b.get('model_type')}`, hidden size {b.get('hidden_size')}, {b.get('num_layers')} "
        f"layers, vocabulary {b.get('vocab_size')}, {b.get('kv_heads')} key/value heads of {b.get('head_dim')}",
        f"- fingerprint: embedding sha256 `{b.get('embedding_sha256')}`, tokenizer sha256 "
        f"`{b.get('tokenizer_sha256')}` (loading refuses any other base model)", "",
    ]
    lines += _task(extra) + _metrics(extra)
    lines += [
        "## Use", "", "```python", "import softprompt as sp", "",
        f"base = {load}", 'prompt = sp.Prompted.from_pretrained("path/to/this/directory", base)',
        'print(prompt.generate(["..."], max_new_tokens=20))', "```", "",
        "Serve it next to other tenants' prompts on one frozen model:", "", "```bash",
        f"softprompt serve --registry ./registry --base {name if loadable else 'BASE'} --port 8000",
        "softprompt push my-task path/to/this/directory --promote", "```", "",
        f"Files: `manifest.json` (method, config, base fingerprint, sha256 `{m.get('sha256', '')[:16]}...` of the "
        "tensors), `prompt.safetensors`, and this card. Saved by softprompt "
        f"{m.get('library_version', '?')}.", "",
    ]
    return "\n".join(lines)
