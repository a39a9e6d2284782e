"""Hybrid hard/soft prompt templates and verbalizers (P-tuning, https://arxiv.org/abs/2103.10385; PET, https://arxiv.org/abs/2001.07676).

Template syntax::

    "{soft:10} Review: {text} {soft:4|in one word:} Sentiment: {label}"

    hard text            anything outside braces; {{ and }} are literal braces
    {text}               input slot, filled from example["text"] (identifier names)
    {label}              answer slot (name set by Template.parse(..., answer_field="label")); at most one, last
    {soft:N}             N trainable vectors
    {soft:N|some text}   N vectors initialised from the tokens of "some text", tiled/truncated to N
    {soft:N:name}        named slot; {soft:name} (or {soft:N:name} with the same N) later reuses its vectors
    {soft:N:name|text}   named slot with init text (give the text once, at the first use)

A template is parsed by a hand-written scanner: nothing in the string is evaluated.
"""

from softprompt.templates.parser import MAX_SOFT_LENGTH, SoftSlot
from softprompt.templates.render import Template, tile
from softprompt.templates.verbalizer import Verbalizer, class_scores, score_classes

__all__ = ["MAX_SOFT_LENGTH", "SoftSlot", "Template", "Verbalizer", "class_scores", "score_classes", "tile"]
