"""The one trainer shape (issue 16), checked across the four methods: every config is TrainingArguments with help on
every field and a `Parameters:` entry for each of its own fields; every `hf-sentinel train METHOD` takes the same
flag for the same concept; every trainer is a transformers.Trainer (MART: the same public methods) with TRL's
constructor shape; the shared plumbing in hf_sentinel/training.py."""

import dataclasses
import importlib
import inspect
import re

import pytest
from datasets import Dataset
from transformers import Trainer, TrainingArguments

from hf_sentinel.cli import TRAIN_COMMANDS, build_parser
from hf_sentinel.training import (
    LoraTrainingArguments,
    SentinelTrainingArguments,
    TrainScriptArguments,
    check_prompt_dataset,
    labelled_prompts,
    resume_argument,
    split_by_label,
)

CLIS = {method: importlib.import_module(module) for method, module in TRAIN_COMMANDS.items()}
TRAINERS = {"sentinel": ("hf_sentinel.sentinel", "StackelbergPPOTrainer"), "red-flag": ("hf_sentinel.red_flag",
            "RedFlagTrainer"), "dro": ("hf_sentinel.dro", "DROTrainer"), "mart": ("hf_sentinel.mart", "MARTTrainer")}
#: One flag for one concept, in every method.
SHARED_FLAGS = ["--target", "--torch-dtype", "--harmful", "--benign", "--limit", "--output-dir", "--seed",
                "--max-steps", "--num-train-epochs", "--learning-rate", "--report-to", "--save-steps",
                "--save-total-limit", "--resume-from-checkpoint", "--push-to-hub", "--hub-model-id", "--bf16"]
LORA_FLAGS = ["--lora-rank", "--lora-alpha", "--lora-layers"]


def _own_fields(config_class):
    """The fields a method's config declares or re-declares (TrainingArguments' own are documented upstream)."""
    own = set()
    for cls in config_class.__mro__:
        if cls in (TrainingArguments, object):
            break
        own |= set(vars(cls).get("__annotations__", {}))
    return [f for f in dataclasses.fields(config_class) if f.name in own]


@pytest.mark.parametrize("method", sorted(CLIS))
def test_every_config_field_has_help_and_a_parameters_entry(method):
    config_class = CLIS[method].CONFIG_CLASS
    assert issubclass(config_class, SentinelTrainingArguments)
    assert issubclass(config_class, LoraTrainingArguments) == (method != "dro")  # DRO trains a prompt, not LoRA
    documented = "".join(inspect.getdoc(cls) or "" for cls in config_class.__mro__ if cls is not TrainingArguments)
    assert "Parameters:" in inspect.getdoc(config_class)
    for field in _own_fields(config_class) + list(dataclasses.fields(CLIS[method].ScriptArguments)):
        assert field.metadata.get("help", "").strip(), f"{method}: field {field.name} has no help"
    for field in _own_fields(config_class):
        assert f"{field.name} (`" in documented, f"{method}: {field.name} is not in a Parameters: docstring"


@pytest.mark.parametrize("method", sorted(CLIS))
def test_train_commands_share_flag_names_and_fail_before_loading_a_model(method, capsys):
    cli = CLIS[method]
    assert issubclass(cli.ScriptArguments, TrainScriptArguments)
    script_fields = {f.name for f in dataclasses.fields(cli.ScriptArguments)}
    assert not script_fields & {f.name for f in dataclasses.fields(cli.CONFIG_CLASS)}  # no flag defined twice
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", method, "--help"])
    help_text = capsys.readouterr().out
    for flag in SHARED_FLAGS + (LORA_FLAGS if method != "dro" else []):
        assert flag in help_text, f"hf-sentinel train {method} has no {flag}"
    # The glossary: the red team (never "adversary"), lora_rank (never lora_r), harmful prompts (never "corpus").
    assert not re.search(r"\badversary\b|--lora-r\b|--corpus\s", help_text)


def test_every_help_text_formats():
    """argparse %-formats every help text when it prints one, so a stray `%` breaks `--help` of the whole parser."""
    import argparse

    def parsers(parser):
        yield parser
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for child in action.choices.values():
                    yield from parsers(child)

    every = list(parsers(build_parser()))
    assert len(every) > 8  # the top level, its commands and `train METHOD`
    for parser in every:
        assert parser.format_help(), parser.prog


@pytest.mark.parametrize("method", sorted(TRAINERS))
def test_every_trainer_has_the_one_shape(method):
    module, name = TRAINERS[method]
    trainer_class = getattr(importlib.import_module(module), name)
    parameters = list(inspect.signature(trainer_class.__init__).parameters)[1:]
    assert parameters[:5] == ["model", "args", "train_dataset", "eval_dataset", "processing_class"]
    assert {"peft_config", "callbacks"} <= set(parameters)
    if method != "mart":  # MART runs rounds of Trainers; the others are one optimisation loop each
        assert issubclass(trainer_class, Trainer)
    for public in ("train", "save_model", "push_to_hub"):
        assert callable(getattr(trainer_class, public))
    assert "resume_from_checkpoint" in inspect.signature(trainer_class.train).parameters
    from hf_sentinel.training import ArtifactPushMixin

    assert issubclass(trainer_class, ArtifactPushMixin)  # the one push path


def test_labelled_prompts_keep_columns_of_either_side_and_split_back():
    harmful = Dataset.from_dict({"prompt": ["a", "b"], "category": ["x", "y"]})
    benign = Dataset.from_dict({"prompt": ["c"], "history": [[{"role": "user", "content": "hi"}]]})
    data = labelled_prompts(harmful, benign)
    assert list(data["label"]) == ["harmful", "harmful", "benign"]
    assert list(data["category"]) == ["x", "y", None] and data[0]["history"] is None
    parts = split_by_label(data)
    assert list(parts["harmful"]["prompt"]) == ["a", "b"] and list(parts["benign"]["prompt"]) == ["c"]
    assert list(labelled_prompts(harmful, None)["label"]) == ["harmful", "harmful"]


@pytest.mark.parametrize("data, message", [
    (None, "is required"),
    (Dataset.from_dict({"text": ["a"]}), r"no \['prompt'\] column"),
    (Dataset.from_dict({"prompt": ["a", " "], "label": ["harmful", "benign"]}), "empty prompts at rows \\[1\\]"),
    (Dataset.from_dict({"prompt": ["a"], "label": ["toxic"]}), "labels \\['toxic'\\]"),
])
def test_bad_datasets_get_an_error_that_names_the_fix(data, message):
    with pytest.raises(ValueError, match=message):
        check_prompt_dataset(data, "train_dataset", ("prompt", "label") if data is not None and "label" in
                             data.column_names else ("prompt",))


@pytest.mark.parametrize("value, expected", [(None, None), ("last", True), ("true", True), ("false", None),
                                             ("out/checkpoint-4", "out/checkpoint-4")])
def test_resume_argument(value, expected, tmp_path):
    args = SentinelTrainingArguments(output_dir=str(tmp_path), resume_from_checkpoint=value)
    assert resume_argument(args) == expected


def test_lora_fields_are_checked_and_alpha_follows_the_rank(tmp_path):
    assert LoraTrainingArguments(output_dir=str(tmp_path), lora_rank=8).effective_lora_alpha == 16
    with pytest.raises(ValueError, match="lora_rank=0"):
        LoraTrainingArguments(output_dir=str(tmp_path), lora_rank=0)
