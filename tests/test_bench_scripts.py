"""Every bench/ script the README prints a command for still runs to the end and prints its verdict lines, on a
tiny random model with the smallest settings (the numbers are meaningless here; bench_results has its own test)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _run(script: str, *args: str, cwd: Path, timeout: float = 300) -> str:
    """The script's stdout; it runs in its own process (as from the README) at one torch thread, offline."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    r = subprocess.run([sys.executable, str(ROOT / "bench" / script), *args], cwd=cwd, env=env,
                       capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, f"{script} exited {r.returncode}:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return r.stdout


def test_bench_storage(word_model_dir, tmp_path):
    out = _run("bench_storage.py", "--base", str(word_model_dir), "--tokens", "4", cwd=tmp_path)
    for row in ("| softprompt prompt_tuning |", "same, PEFT format (prompt_tuning)", "PEFT LoRA r=8",
                "full model copy (save_pretrained, float32)"):
        assert row in out


def test_bench_train_step(word_model_dir, tmp_path):
    out = _run("bench_train_step.py", "--base", str(word_model_dir), "--tokens", "4", "--repeats", "2",
               "--batches", "2", "--threads", "1", cwd=tmp_path)
    assert "time ratio softprompt / hand:" in out and "peak memory ratio softprompt / hand:" in out


def test_bench_peft(word_model_dir, tmp_path):
    out = _run("bench_peft.py", "--base", str(word_model_dir), "--quick", "--steps", "2", "--test-limit", "8",
               "--gen-repeats", "1", "--gen-tokens", "2", "--tokens", "4", "--threads", "1",
               "--json", str(tmp_path / "peft.json"), cwd=tmp_path)
    for method in ("prompt_tuning", "prefix_tuning", "p_tuning"):
        assert f"for {method}:" in out
    assert (tmp_path / "peft.json").stat().st_size > 0


def test_bench_compress(word_model_dir, tmp_path):
    out = _run("bench_compress.py", "--base", str(word_model_dir), "--demo", "product", "--tokens", "2",
               "--steps", "2", "--timing-queries", "2", "--timing-repeats", "1", "--out", str(tmp_path / "c"),
               cwd=tmp_path)
    assert "compression >= 30x" in out and "prefill per request:" in out


def test_bench_registry_scale(tmp_path):
    out = _run("bench_registry_scale.py", "--tasks", "50", "--requests", "20", "--clients", "4", "--max-tokens",
               "2", "--virtual-tokens", "4", "--repeats", "1", "--threads", "1", cwd=tmp_path)
    assert "registered 50 tasks" in out and "zipf / hot8 =" in out


def test_bench_serving(tmp_path):
    """Two of its servers (each its own process on 127.0.0.1), four requests each."""
    out = _run("bench_serving.py", "--requests", "4", "--rates", "4", "--max-out", "4", "--virtual-tokens", "4",
               "--max-batch", "4", "--kv-cache-bytes", str(4 << 20), "--start-timeout", "120",
               "--servers", "mixed,static", cwd=tmp_path)
    assert "| softprompt mixed |" in out and "| softprompt static |" in out and "mixed / static TTFT p95:" in out
