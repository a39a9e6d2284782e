"""Demo contexts for context compression (`softprompt compress --demo ...`, bench/bench_compress.py).

Each demo is a `DemoCase`: the context to compress, distillation queries, held-out queries, and a task metric
that scores a prompt-like object (a compressed prompt, the full context as a K/V prefix, or None).

  rotten_tomatoes  a hand-written instruction + 8 few-shot reviews taken deterministically from the TRAIN split
                   (the first single-line reviews of 50-160 characters in the split's order, alternating
                   negative/positive); queries are other train reviews formatted as the task's query
                   "Review: {text}\\nSentiment:"; held-out queries are validation reviews; the task metric is
                   test accuracy with the verbalizer (negative/positive).
  product          a product sheet for a fictional coffee grinder (18 facts the model cannot know, 341 tokens);
                   queries are questions about the facts, "Question: {q}\nAnswer:", two phrasings of each
                   fact (up to five with train_phrasings; with answers, each carries its true answer as the
                   reference for ce_weight); held-out queries are two other phrasings; the task
                   metric is held-out accuracy, each question choosing among four candidate answers of its kind
                   (chance 25%).
  persona          a pirate persona as a chat system turn (SmolLM2's chat format); queries are user turns built
                   from question forms x topics; held-out queries use topics never seen in training; the task
                   metric is the share of greedy answers that contain a pirate word.
"""

from __future__ import annotations

import inspect
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


PRODUCT_INTRO = ("Product sheet for the Orbel K9, a hand-built coffee grinder sold by the small company Taversi. "
                 "Read it carefully: support staff answer customer questions from this sheet only.\n\n")
PRODUCT_QUERY = "Question: {q}\nAnswer:"
# (attribute, the sheet's sentence, answer, its four candidates, four phrasings: the first two train, the last two
# are held out)
FACTS = [
    ("colour",
     "The Orbel K9 comes in one colour only, a warm orange that the company calls sunset.",
     "orange", ["red", "black", "orange", "white"],
     ["What colour is the Orbel K9?",
      "Which colour does the Orbel K9 come in?",
      "The Orbel K9 is sold in which colour?",
      "What is the colour of the Orbel K9?"]),
    ("country",
     "Every unit is assembled by hand in Portugal, in a workshop of twelve people.",
     "Portugal", ["Germany", "China", "Portugal", "Japan"],
     ["In which country is the Orbel K9 assembled?",
      "Which country makes the Orbel K9?",
      "The Orbel K9 is assembled in which country?",
      "Where is the Orbel K9 made?"]),
    ("material",
     "Its body is cast from solid copper, which is why it feels heavy in the hand.",
     "copper", ["plastic", "steel", "copper", "glass"],
     ["What is the body of the Orbel K9 made of?",
      "Which material is the Orbel K9's body made from?",
      "The body of the Orbel K9 is made of which material?",
      "What material is the Orbel K9 cast from?"]),
    ("warranty",
     "The warranty lasts seven years and covers the motor and the burrs.",
     "seven", ["one", "two", "five", "seven"],
     ["How many years does the Orbel K9 warranty last?",
      "For how many years is the Orbel K9 under warranty?",
      "The warranty of the Orbel K9 lasts how many years?",
      "How long is the Orbel K9 warranty, in years?"]),
    ("month",
     "It was first launched in October, at a trade fair for coffee shops.",
     "October", ["March", "June", "October", "December"],
     ["In which month was the Orbel K9 launched?",
      "Which month did the Orbel K9 come out?",
      "The Orbel K9 was launched in which month?",
      "When was the Orbel K9 launched?"]),
    ("designer",
     "It was designed by an engineer named Miriam, who had repaired grinders for twenty years.",
     "Miriam", ["Anna", "Miriam", "Laura", "Sofia"],
     ["Who designed the Orbel K9?",
      "Which engineer designed the Orbel K9?",
      "The Orbel K9 was designed by whom?",
      "What is the name of the Orbel K9's designer?"]),
    ("mascot",
     "The brand's mascot is a sleepy owl, printed on every manual.",
     "owl", ["fox", "owl", "cat", "bear"],
     ["What animal is the Orbel K9 mascot?",
      "What is the Orbel K9 brand's mascot?",
      "The Orbel K9 mascot is which animal?",
      "Which animal is the mascot of the Orbel K9 brand?"]),
    ("lid",
     "The lid is carved from walnut wood and oiled once a year.",
     "walnut", ["oak", "pine", "walnut", "bamboo"],
     ["What wood is the Orbel K9 lid made of?",
      "The lid of the Orbel K9 is carved from which wood?",
      "What is the Orbel K9 lid carved from?",
      "Which wood is used for the lid of the Orbel K9?"]),
    ("box",
     "It ships in a bright yellow box with a paper handle.",
     "yellow", ["blue", "green", "yellow", "purple"],
     ["What colour is the Orbel K9 box?",
      "Which colour is the box of the Orbel K9?",
      "The Orbel K9 ships in a box of which colour?",
      "In what colour box does the Orbel K9 ship?"]),
    ("support",
     "The support line is open only on Tuesday, from nine in the morning until noon.",
     "Tuesday", ["Monday", "Tuesday", "Friday", "Sunday"],
     ["On which day is the Orbel K9 support line open?",
      "Which day is Orbel K9 support open?",
      "The Orbel K9 support line is open on which day?",
      "When can I call Orbel K9 support?"]),
    ("beans",
     "It is made for coffee beans only; grinding spices voids the warranty.",
     "coffee", ["pepper", "salt", "coffee", "rice"],
     ["What is the Orbel K9 made to grind?",
      "Which beans is the Orbel K9 made for?",
      "The Orbel K9 grinds what?",
      "What should you grind in the Orbel K9?"]),
    ("motor",
     "Its motor is very quiet, about as loud as a whisper.",
     "whisper", ["drill", "whisper", "truck", "train"],
     ["How loud is the Orbel K9 motor?",
      "The Orbel K9 motor is about as loud as what?",
      "What is the Orbel K9 motor as loud as?",
      "How quiet is the motor of the Orbel K9? As loud as a"]),
    ("store",
     "It is sold only through the brand's own shop in Madrid, never online.",
     "Madrid", ["Paris", "London", "Madrid", "Rome"],
     ["Where is the Orbel K9 sold?",
      "Which city has the only Orbel K9 shop?",
      "The Orbel K9 is sold only in which city?",
      "In which city is the Orbel K9 shop?"]),
    ("award",
     "In its first year it won a design prize in Tokyo.",
     "Tokyo", ["Berlin", "Milan", "Tokyo", "Seoul"],
     ["Where did the Orbel K9 win a design prize?",
      "In which city did the Orbel K9 win its prize?",
      "The Orbel K9 won a design prize in which city?",
      "Which city gave the Orbel K9 a design prize?"]),
    ("cleaning",
     "Clean it with a dry brush, never with water.",
     "brush", ["water", "brush", "soap", "oil"],
     ["How should you clean the Orbel K9?",
      "What do you clean the Orbel K9 with?",
      "The Orbel K9 should be cleaned with what?",
      "What is the right way to clean the Orbel K9?"]),
    ("handle",
     "The crank handle is covered in brown leather.",
     "leather", ["rubber", "leather", "plastic", "metal"],
     ["What covers the Orbel K9 handle?",
      "The Orbel K9 crank handle is covered in what?",
      "What material covers the handle of the Orbel K9?",
      "What is the Orbel K9 handle covered with?"]),
    ("burrs",
     "The burrs are plated with real gold to resist rust.",
     "gold", ["silver", "gold", "chrome", "nickel"],
     ["What are the Orbel K9 burrs plated with?",
      "The burrs of the Orbel K9 are plated with which metal?",
      "Which metal plates the Orbel K9 burrs?",
      "What metal covers the Orbel K9 burrs?"]),
    ("founder",
     "Taversi was founded by two brothers, Marco and Sergio, in a garage.",
     "Marco", ["Marco", "Antonio", "Franco", "Paul"],
     ["Who founded the company that makes the Orbel K9?",
      "Which brother founded Taversi with Sergio?",
      "Taversi, the maker of the Orbel K9, was founded by Sergio and whom?",
      "Name the brother who founded Taversi with Sergio."]),
]
# More training phrasings per fact (`product_case(train_phrasings=3..5)`): none is a held-out phrasing, and each
# shares at most 70% of its words with every held-out one (the first two training phrasings are not held to that).
MORE_TRAIN_PHRASINGS = {
    "colour": [
        "Tell me the colour of the Orbel K9.",
        "What colour does the Orbel K9 have?",
        "Tell me the Orbel K9's colour.",
    ],
    "country": [
        "Tell me where the Orbel K9 is built, which country.",
        "Tell me the country where the Orbel K9 is assembled.",
        "What country does the Orbel K9 come from?",
    ],
    "material": [
        "What is the Orbel K9's body cast from?",
        "Tell me what the body of the Orbel K9 is made of.",
        "Which material gives the Orbel K9 body its weight?",
    ],
    "warranty": [
        "Tell me how many years of warranty come with the Orbel K9.",
        "Tell me the length of the Orbel K9 warranty in years.",
        "The Orbel K9 comes with a warranty of how many years?",
    ],
    "month": [
        "Tell me the month the Orbel K9 was launched.",
        "Tell me the month of the Orbel K9 launch.",
        "The Orbel K9 first came out in which month?",
    ],
    "designer": [
        "Tell me who designed the Orbel K9.",
        "Who is the designer of the Orbel K9?",
        "Which person designed the Orbel K9 grinder?",
    ],
    "mascot": [
        "Tell me the animal on the Orbel K9 manuals.",
        "Tell me the animal that is the Orbel K9 mascot.",
        "What animal is printed on every Orbel K9 manual?",
    ],
    "lid": [
        "Tell me the wood used for the Orbel K9 lid.",
        "Tell me the wood of the Orbel K9 lid.",
        "What kind of wood is the top of the Orbel K9 made from?",
    ],
    "box": [
        "Tell me the colour of the Orbel K9 box.",
        "Tell me the box colour of the Orbel K9.",
        "The box of the Orbel K9 is which colour?",
    ],
    "support": [
        "Tell me the day the Orbel K9 support line is open.",
        "What day can customers reach Orbel K9 support?",
        "Tell me which day Orbel K9 support answers calls.",
    ],
    "beans": [
        "What is the Orbel K9 meant to grind?",
        "Tell me what the Orbel K9 is made to grind.",
        "Which beans should go in the Orbel K9?",
    ],
    "motor": [
        "Tell me what the Orbel K9 motor sounds as loud as.",
        "Tell me how loud the Orbel K9 motor is. About as loud as a",
        "How noisy is the Orbel K9 motor? About as loud as a",
    ],
    "store": [
        "Tell me the city of the Orbel K9 shop.",
        "Tell me the city where the Orbel K9 is sold.",
        "Which city is the only place that sells the Orbel K9?",
    ],
    "award": [
        "Tell me the city where the Orbel K9 won a design prize.",
        "Tell me the city of the Orbel K9 design prize.",
        "Which city awarded the Orbel K9 its design prize?",
    ],
    "cleaning": [
        "Tell me what to use when cleaning the Orbel K9.",
        "Tell me how to clean the Orbel K9.",
        "What do you use to clean the Orbel K9?",
    ],
    "handle": [
        "Tell me what covers the Orbel K9 crank handle.",
        "Tell me the material on the Orbel K9 crank handle.",
        "Which material covers the Orbel K9 crank handle?",
    ],
    "burrs": [
        "Tell me what the Orbel K9 burrs are plated with.",
        "Which metal are the Orbel K9 burrs plated with?",
        "The Orbel K9 burrs are plated with what?",
    ],
    "founder": [
        "Who founded Taversi together with Sergio?",
        "Tell me which brother founded Taversi with Sergio.",
        "Sergio founded Taversi with which brother?",
    ],
}
FILLER = ("Customers often say it is the most beautiful grinder they have owned. The company answers letters by "
          "hand and keeps a photo of every buyer on the workshop wall.")
PRODUCT_TRAIN_PHRASINGS = 2  # the default: the first two of each fact's four
PRODUCT_MAX_TRAIN_PHRASINGS = 2 + min(len(more) for more in MORE_TRAIN_PHRASINGS.values())  # ... then the more


def product_context() -> str:
    body = [f[1] for f in FACTS[:9]] + [FILLER] + [f[1] for f in FACTS[9:]]
    return PRODUCT_INTRO + " ".join(body) + "\n\n"


def product_case(train_phrasings: int = PRODUCT_TRAIN_PHRASINGS, answers: bool = False) -> DemoCase:
    """The product sheet demo; `answers`: each training query carries its fact's true answer as its reference, for
    `ce_weight` (the held-out questions never do)."""
    from softprompt.templates import Template, Verbalizer
    from softprompt.training.task import Task, evaluate

    if not 1 <= train_phrasings <= PRODUCT_MAX_TRAIN_PHRASINGS:
        raise ValueError(f"train_phrasings={train_phrasings}: the product demo has 1 to "
                         f"{PRODUCT_MAX_TRAIN_PHRASINGS} training phrasings a fact")
    n = 2  # each fact's first two phrasings train, its last two are held out, whatever train_phrasings is
    train = {f[0]: (f[4][:n] + MORE_TRAIN_PHRASINGS[f[0]])[:train_phrasings] for f in FACTS}
    queries: list[Any] = [{"query": PRODUCT_QUERY.format(q=q), "answer": " " + f[2]} if answers
                          else PRODUCT_QUERY.format(q=q) for f in FACTS for q in train[f[0]]]
    held = [PRODUCT_QUERY.format(q=q) for f in FACTS for q in f[4][n:]]
    # one task per fact: the question chooses among that fact's four candidates (the answer's kind)
    tasks = [(Task(Template.parse(PRODUCT_QUERY.replace("{q}", "{text}") + " {label}"),
                   Verbalizer({c: [c] for c in cands})), [{"text": q, "label": answer} for q in qs[n:]])
             for _, _, answer, cands, qs in FACTS]

    def accuracy(base: Any, prompt: Any) -> float:
        right = total = 0
        for task, records in tasks:
            ev = evaluate(base, prompt, task, task.encode_all(records, base.tokenizer))
            right += round(ev["accuracy"] * ev["n"])
            total += ev["n"]
        return right / total

    return DemoCase("product", product_context(), queries, held, f"held-out accuracy (n={len(held)})", accuracy,
                    {"continuation_tokens": 2})


DEMOS: dict[str, Callable[..., DemoCase]] = {"rotten_tomatoes": rotten_tomatoes_case, "persona": persona_case,
                                             "product": product_case}


def make_demo(name: str, **options: Any) -> DemoCase:
    """A demo case by name. `options` are that case's keyword arguments (rotten_tomatoes: test_limit; product:
    train_phrasings, answers); an option left None keeps the case's default, one the case lacks is an error."""
    make = DEMOS[name]
    given = {k: v for k, v in options.items() if v is not None}
    unknown = sorted(set(given) - set(inspect.signature(make).parameters))
    if unknown:
        raise ValueError(f"the {name} demo has no option {', '.join(unknown)}")
    return make(**given)
