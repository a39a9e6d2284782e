"""Task presets for the built-in data sets: template, verbalizer, and hand-written prompts to compare against."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Preset:
    template: str
    """Template the soft prompt is trained with (the method's virtual tokens come first)."""
    verbalizer: dict[str, list[str]]
    handwritten: tuple[str, ...]
    """Hand-written prompts (no soft tokens); the best on validation is the baseline."""
    hybrid_template: str
    """A hybrid hard + soft template for the same task."""


PRESETS = {
    "rotten_tomatoes": Preset(
        template="Review: {text}\nSentiment: {label}",
        verbalizer={"negative": ["negative"], "positive": ["positive"]},
        handwritten=(
            "Review: {text}\nSentiment: {label}",
            "Classify the sentiment of this movie review as positive or negative.\nReview: {text}\nSentiment: {label}",
            "Movie review: {text}\nIs this review positive or negative? Answer: {label}",
            "{text}\nQuestion: Did the critic like the movie, positive or negative?\nAnswer: {label}",
        ),
        hybrid_template="{soft:16|Classify the sentiment of this movie review.} Review: {text}\n"
                        "{soft:4|Sentiment:} Sentiment: {label}",
    ),
    "bbc_news": Preset(
        template="Article: {text}\nTopic: {label}",
        verbalizer={"business": ["business"], "entertainment": ["entertainment"], "politics": ["politics"],
                    "sports": ["sport"], "tech": ["technology"]},
        handwritten=(
            "Article: {text}\nTopic: {label}",
            "Classify the news article into business, entertainment, politics, sport or technology.\n"
            "Article: {text}\nTopic: {label}",
        ),
        hybrid_template="{soft:16|Classify the topic of this news article.} Article: {text}\n{soft:4|Topic:} "
                        "Topic: {label}",
    ),
    "drug_reviews": Preset(
        template="Review: {text}\nRating: {label}",
        verbalizer={"negative": ["negative"], "neutral": ["neutral"], "positive": ["positive"]},
        handwritten=(
            "Review: {text}\nRating: {label}",
            "Is this drug review negative, neutral or positive?\nReview: {text}\nAnswer: {label}",
        ),
        hybrid_template="{soft:16|Rate this drug review.} Review: {text}\n{soft:4|Rating:} Rating: {label}",
    ),
}
