"""Demo contexts for context compression (`softprompt compress --demo ...`, bench/bench_compress.py).

Each demo is a `DemoCase`: the context to compress, distillation queries, held-out queries, and a task metric
that scores a prompt-like object (a compressed prompt, the full context as a K/V prefix, or None).

  rotten_tomatoes  a hand-written instruction + 8 few-shot reviews taken deterministically from the TRAIN split
                   (the first single-line reviews of 50-160 characters in the split's order, alternating
                   negative/positive); queries are other train reviews formatted as the task's query
                   "Review: {text}\\nSentiment:"; held-out queries are validation reviews; the task metric is
                   test accuracy with the verbalizer (negative/positive).
  persona          a pirate persona as a chat system turn (SmolLM2's chat format); queries are user turns built
                   from question forms x topics; held-out queries use topics never seen in training; the task
                   metric is the share of greedy answers that contain a pirate word.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

RT_INSTRUCTION = (
    "Classify the sentiment of movie reviews. Each review is a short excerpt written by a film critic. "
    "Answer \"positive\" if the critic liked the movie and \"negative\" if the critic disliked it. Judge the "
    "overall opinion, not single words: a review that praises the actors but calls the film a failure is "
    "negative, and a review that admits flaws but still recommends the film is positive. Sarcasm counts as "
    "negative. Answer with one word, positive or negative.\n\n"
)
RT_QUERY = "Review: {text}\nSentiment:"
RT_SHOTS = 8


@dataclass
class DemoCase:
    name: str
    context: str
    queries: list[str]
    held_out: list[str]
    metric_name: str
    metric: Callable[[Any, Any], float]
    """metric(base, prompt) -> score; prompt is a Prompted, PromptParts (the full context) or None."""
    overrides: dict[str, Any] = field(default_factory=dict)
    """DistillConfig fields this demo sets unless the user passes them."""


def few_shot_records(train: list[dict], n: int = RT_SHOTS) -> list[dict]:
    """The first single-line train reviews of 50-160 characters, alternating negative/positive (deterministic)."""
    want = ["negative", "positive"]
    picked: list[dict] = []
    pools = {lab: [r for r in train if r["label"] == lab and "\n" not in r["text"] and 50 <= len(r["text"]) <= 160]
             for lab in want}
    for i in range(n):
        picked.append(pools[want[i % 2]][i // 2])
    return picked


def rotten_tomatoes_case(n_queries: int = 320, n_held_out: int = 100, test_limit: int = 0) -> DemoCase:
    from softprompt.training.presets import PRESETS
    from softprompt.training.run import load_data, make_task
    from softprompt.training.task import evaluate

    data = load_data("rotten_tomatoes")
    shots = few_shot_records(data.train)
    context = RT_INSTRUCTION + "".join(RT_QUERY.format(text=r["text"]) + f" {r['label']}\n\n" for r in shots)
    used = {r["text"] for r in shots}
    queries = [RT_QUERY.format(text=r["text"]) for r in data.train if r["text"] not in used][:n_queries]
    held = [RT_QUERY.format(text=r["text"]) for r in data.validation[:n_held_out]]
    task = make_task("rotten_tomatoes", PRESETS["rotten_tomatoes"].template, None)
    test = data.test[: test_limit or None]
    cache: dict[int, Any] = {}

    def accuracy(base: Any, prompt: Any) -> float:
        if id(base) not in cache:
            cache.clear()
            cache[id(base)] = task.encode_all(test, base.tokenizer)
        return evaluate(base, prompt, task, cache[id(base)], batch_size=32)["accuracy"]

    return DemoCase("rotten_tomatoes", context, queries, held, f"test accuracy (n={len(test)})", accuracy,
                    {"continuation_tokens": 2})


PERSONA_SYSTEM = (
    "<|im_start|>system\n"
    "You are Captain Redbeard, an old pirate who sailed the seven seas for forty years. Answer every question "
    "in pirate speak. Start your answers with \"Arr\" or \"Ahoy\", call the user \"matey\", say \"ye\" instead "
    "of \"you\" and \"be\" instead of \"is\" and \"are\". Talk about the sea, your ship the Black Gull, rum, "
    "treasure and your parrot Polly whenever you can. Keep answers short, cheerful and helpful, and always "
    "give the right answer: a pirate who misleads his crew walks the plank. Never break character, never say "
    "you are an AI, and never answer in plain modern English. Use pirate words such as \"aye\", \"avast\", "
    "\"landlubber\", \"me hearties\" and \"shiver me timbers\". End your answers with a short pirate "
    "saying.\n\n"
    "Example:\nUser: What is the capital of France?\n"
    "Captain Redbeard: Arr, matey! The capital of France be Paris, a fine port for spending yer treasure! "
    "Fair winds to ye!\n\n"
    "Example:\nUser: How do I boil an egg?\n"
    "Captain Redbeard: Ahoy! Drop yer egg in boiling water for nine minutes, matey, same as me cook does "
    "aboard the Black Gull! Yo ho ho!\n\n"
    "Example:\nUser: Why is the sky blue?\n"
    "Captain Redbeard: Aye, a fine question, matey! The sunlight be scattered by the air, and the blue light "
    "scatters most, so the sky over the seven seas be blue. Shiver me timbers!\n\n"
    "Example:\nUser: Can you recommend a good book?\n"
    "Captain Redbeard: Avast, me hearty! Read Treasure Island, the finest tale of pirates and buried gold "
    "ever told. Polly says so too!<|im_end|>\n"
)
PERSONA_QUERY = "<|im_start|>user\n{q}<|im_end|>\n<|im_start|>assistant\n"
FORMS = ("What is {t}?", "Can you explain {t} to me?", "Why do people like {t}?",
         "How do I get started with {t}?", "Tell me a fun fact about {t}.")
TOPICS = ("the moon", "coffee", "chess", "volcanoes", "bicycles", "the ocean", "music", "rainbows", "bread",
          "football", "cats", "dogs", "gardening", "the internet", "trains", "snow", "history", "maths",
          "painting", "the sun", "birds", "cooking pasta", "camping", "libraries", "dinosaurs", "robots",
          "tea", "swimming", "mountains", "photography", "knitting", "jazz", "deserts", "electricity",
          "honey bees", "castles", "poetry", "running", "clouds", "pizza", "rivers", "magnets",
          # held-out topics: never seen in training
          "whales", "the weather", "soap", "airplanes", "chocolate", "forests", "the alphabet", "bridges")
HELD_OUT_TOPICS = 8
PIRATE_WORDS = re.compile(r"\b(arr+|ahoy|matey|mateys|ye|yer|aye|avast|landlubbers?|hearties|hearty|shiver)\b", re.I)


def persona_case(max_new_tokens: int = 24) -> DemoCase:
    import softprompt as sp

    train_topics, held_topics = TOPICS[:-HELD_OUT_TOPICS], TOPICS[-HELD_OUT_TOPICS:]
    queries = [PERSONA_QUERY.format(q=f.format(t=t)) for t in train_topics for f in FORMS]
    held = [PERSONA_QUERY.format(q=f.format(t=t)) for t in held_topics for f in FORMS]

    def pirate_rate(base: Any, prompt: Any) -> float:
        outs = sp.generate_mixed(base, [prompt] * len(held), held, max_new_tokens=max_new_tokens)
        return sum(bool(PIRATE_WORDS.search(o)) for o in outs) / len(outs)

    return DemoCase("persona", PERSONA_SYSTEM, queries, held, "pirate-word answers (held-out)", pirate_rate,
                    {"continuation_tokens": 16})


DEMOS: dict[str, Callable[..., DemoCase]] = {"rotten_tomatoes": rotten_tomatoes_case, "persona": persona_case}


def make_demo(name: str, test_limit: int = 0) -> DemoCase:
    """A demo case by name; `test_limit` caps the rotten_tomatoes test examples (0: all)."""
    return rotten_tomatoes_case(test_limit=test_limit) if name == "rotten_tomatoes" else DEMOS[name]()
