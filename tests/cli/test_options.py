"""The CLI's one source of truth: flags from config dataclasses, names, help, --config files, shell text."""

from __future__ import annotations

import argparse
import json
import shlex

import pytest

from softprompt.cli.main import build_parser, main
from softprompt.cli.options import shell_quote, shell_text

MODEL_COMMANDS = ("train", "eval", "demo", "compress", "compare")


@pytest.fixture(scope="module")
def parser():
    return build_parser()


def _actions(sub: argparse.ArgumentParser):
    return [a for a in sub._actions if not isinstance(a, argparse._HelpAction) and a.help is not argparse.SUPPRESS]


SWITCHES = (argparse._StoreTrueAction, argparse._StoreFalseAction, argparse._VersionAction)


def test_every_flag_has_help_and_a_default_shown(parser):
    bad = []
    for name, sub in parser.commands.items():
        for a in _actions(sub):
            shown = " ".join(sub._get_formatter()._format_action(a).split())
            if not a.help:
                bad.append(f"{name} {a.option_strings or a.dest}: no help")
            elif a.option_strings and not a.required and not isinstance(a, SWITCHES) and a.default != [] \
                    and "default" not in shown:
                bad.append(f"{name} {a.option_strings[-1]}: no default shown")
    assert bad == []


def test_specific_flags_show_help_and_default(parser):
    def help_of(cmd: str, flag: str) -> str:
        text = " ".join(parser.commands[cmd].format_help().split())
        return text.split(f" {flag} ", 1)[1][:200]

    assert "per forward pass" in help_of("eval", "--batch-size") and "(default: 32)" in help_of("eval", "--batch-size")
    assert "(default: 32)" in help_of("generate", "--max-new-tokens")
    assert "temperature" in help_of("generate", "--temperature") and "(default: 1.0)" in help_of("generate",
                                                                                               "--temperature")


def test_same_name_for_the_same_thing_everywhere(parser):
    for cmd in ("train", "compare", "demo", "compress"):
        assert "--num-virtual-tokens" in parser.commands[cmd]._option_string_actions, cmd
    for cmd in ("eval", "compare", "demo", "compress"):
        assert "--limit" in parser.commands[cmd]._option_string_actions, cmd
    for cmd in MODEL_COMMANDS:
        assert "--no-progress" in parser.commands[cmd]._option_string_actions, cmd
    for cmd in parser.commands:
        assert "--config" in parser.commands[cmd]._option_string_actions, cmd


def test_old_spellings_still_parse_and_say_the_new_name(parser, capsys):
    args = parser.parse_args(["demo", "--tokens", "7", "--test-limit", "5"])
    assert vars(args)["method.num_virtual_tokens"] == 7 and args.limit == 5
    err = capsys.readouterr().err
    assert "--tokens is deprecated; use --num-virtual-tokens" in err and "use --limit" in err
    args = parser.parse_args(["compress", "--tokens", "6"])
    assert vars(args)["distill.tokens"] == 6
    assert "--tokens" not in parser.commands["demo"].format_help()  # hidden


@pytest.mark.parametrize("cmd,flag,choices", [
    ("train", "--init", ("random", "vocab", "text", "labels")),
    ("train", "--encoder", ("lstm", "mlp")),
    ("train", "--schedule", ("linear", "cosine", "constant")),
    ("compress", "--form", ("prompt", "prefix")),
    ("compress", "--schedule", ("linear", "cosine", "constant")),
    ("compress", "--prefix-init", ("last", "spread")),
    ("train", "--sites", ("attn", "mlp")),
])
def test_choices_come_from_literal_types(parser, capsys, cmd, flag, choices):
    assert tuple(parser.commands[cmd]._option_string_actions[flag].choices) == choices
    with pytest.raises(SystemExit):
        parser.parse_args([cmd, flag, "nope"])
    assert "invalid choice: 'nope'" in capsys.readouterr().err


def test_train_seed_says_what_it_seeds(parser):
    action = parser.commands["train"]._option_string_actions["--seed"]
    assert all(w in action.help for w in ("split", "initialisation", "data order"))
    assert "down-projection" not in action.help


def test_shell_text_reads_backslash_n_as_a_newline():
    assert shell_text(r"Review: {text}\nSentiment: {label}") == "Review: {text}\nSentiment: {label}"
    assert shell_text(r"a\tb\\nc") == "a\tb\\nc"  # \\ is one backslash
    for s in ("Review: x\nSentiment:", "tab\there", "back\\slash", "plain"):
        assert shell_text(shlex.split(shell_quote(s))[0]) == s


def test_template_flag_from_a_shell_is_a_real_newline(parser):
    args = parser.parse_args(shlex.split(r"train --template 'Review: {text}\nSentiment: {label}'"))
    assert args.template == "Review: {text}\nSentiment: {label}"
    args = parser.parse_args(shlex.split(r"train --init text --init-text 'Classify.\nNow'"))
    assert vars(args)["method.init_text"] == "Classify.\nNow"


def test_demo_try_it_line_runs_the_template_the_prompt_was_trained_with(parser, tmp_path):
    from softprompt.cli.cmd_demo import try_it
    from softprompt.training.presets import PRESETS

    template = PRESETS["rotten_tomatoes"].template
    line = try_it(tmp_path / "prompt", template)
    args = parser.parse_args(shlex.split(line)[1:])
    assert args.text == ["Review: a gem of a film\nSentiment:"]
    assert template.replace("{text}", "a gem of a film").startswith(args.text[0])


def test_compress_held_out_file_does_not_collide_with_the_count(parser):
    args = parser.parse_args(["compress", "--held-out", "held.txt", "--num-held-out", "12"])
    assert args.held_out == "held.txt" and vars(args)["distill.held_out"] == 12


def test_no_flag_collides_across_configs():
    """Building the parser raises on a flag two configs both want (the --held-out bug, caught at build time)."""
    from softprompt.cli.options import add_config_options
    from softprompt.training.config import DistillConfig

    p = argparse.ArgumentParser()
    p.add_argument("--held-out", dest="held_out")
    with pytest.raises(RuntimeError, match="--held-out of DistillConfig.held_out collides"):
        add_config_options(p, DistillConfig, "distill")


def test_method_configs_are_the_registry_classes():
    from softprompt import registry
    from softprompt.cli.common import method_configs
    from softprompt.methods.adapter.config import SITES
    from softprompt.model.hooks import SITES as HOOK_SITES

    configs = method_configs()
    assert sorted(configs) == registry.names()
    for name, cls in configs.items():
        assert registry.get(name).config_cls is cls
    assert tuple(SITES) == tuple(HOOK_SITES)


def _write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_config_file_values_under_typed_flags(parser, tmp_path, no_model):
    from softprompt.cli.cmd_train import prepare

    cfg = _write(tmp_path, "run.json", json.dumps({"steps": 7, "num_virtual_tokens": 5, "schedule": "cosine",
                                                   "template": "T: {text}\\nL: {label}", "seed": 3}))
    p = build_parser()
    from softprompt.cli.options import apply_config

    apply_config(p.commands["train"], cfg)
    args = p.parse_args(["train", "--config", cfg, "--steps", "9"])
    data, config, task, tcfg = prepare(args)
    assert tcfg.steps == 9 and tcfg.schedule == "cosine" and tcfg.seed == 3  # the flag wins over the file
    assert config.num_virtual_tokens == 5 and config.seed == 3
    assert task.template.source == "T: {text}\nL: {label}"


def test_yaml_config_file_runs_through_main(tmp_path, no_model, capsys):
    from tests.cli.conftest import ModelLoaded

    cfg = _write(tmp_path, "run.yaml", "steps: 4\nnum-virtual-tokens: 3\nmethod: p_tuning\nencoder: lstm\n")
    with pytest.raises(ModelLoaded):
        main(["train", "--config", cfg, "--out", str(tmp_path / "r")])


@pytest.mark.parametrize("content,fragment", [
    ('{"stepz": 3}', "'stepz': not an option of this command"),
    ('{"steps": "many"}', "invalid int value: 'many'"),
    ('{"steps": true}', "steps=True: must be an integer"),
    ('{"schedule": "wavy"}', "schedule='wavy': must be one of linear, cosine, constant"),
    ('{"method": "lora"}', "method='lora': must be one of"),
    ('[1, 2]', "must hold a mapping"),
    ('{"steps": 3', "not valid JSON"),
])
def test_config_file_problems_are_clear(tmp_path, no_model, capsys, content, fragment):
    cfg = _write(tmp_path, "bad.json", content)
    try:
        rc = main(["train", "--config", cfg])
    except SystemExit as e:  # argparse's own error for a string it cannot parse
        rc = e.code
    assert rc == 2 and fragment in capsys.readouterr().err
    assert no_model == []


def test_typed_repeatable_flags_replace_the_config_files_list(tmp_path):
    from softprompt.cli.options import apply_config

    cfg = _write(tmp_path, "run.json", json.dumps({"field": ["text=a", "label=b"]}))
    p = build_parser()
    apply_config(p.commands["train"], cfg)
    assert p.parse_args(["train"]).field == ["text=a", "label=b"]
    assert p.parse_args(["train", "--field", "text=c"]).field == ["text=c"]
