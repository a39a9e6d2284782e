"""Errors raised by softprompt. Every message names the cause and the fix."""

from __future__ import annotations


class SoftPromptError(Exception):
    """Base class of every error softprompt raises on purpose."""


class ConfigError(SoftPromptError, ValueError):
    """A configuration is invalid. Holds every problem found, not only the first."""

    def __init__(self, problems: list[str], where: str = "config"):
        self.problems = list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"invalid {where} ({len(self.problems)} problem(s)):\n{lines}")


class ArtifactError(SoftPromptError):
    """A saved prompt cannot be loaded: unreadable, unsafe, inconsistent or corrupted."""


class IncompatibleBaseError(ArtifactError):
    """A prompt was trained for a different base model than the one it is loaded on."""


class InputError(SoftPromptError, ValueError):
    """A call got inputs it cannot use (bad shapes, empty batch, too long, ...)."""


class TrainingError(SoftPromptError):
    """Training cannot go on (non-finite loss, no data, ...)."""
