"""Imports stay lazy: ``import hf_sentinel`` and the commands that need no model pay for neither the methods' code nor
PEFT and datasets, while every public name still resolves and a saved sentinel still loads through the Auto classes.

Each check runs in a fresh interpreter (in this process, earlier tests have imported everything already)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import types

import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM, AutoTokenizer

import hf_sentinel
from hf_sentinel.sentinel import SentinelForCausalLM

#: What `import hf_sentinel` and `hf-sentinel eval --compare` must not import.
HEAVY = ("peft", "datasets", "fastapi", "transformers.modeling_utils", "transformers.training_args",
         "hf_sentinel.training", "hf_sentinel.mart", "hf_sentinel.dro", "hf_sentinel.red_flag", "hf_sentinel.judges",
         "hf_sentinel.data", "hf_sentinel.sentinel.modeling", "hf_sentinel.sentinel.config", "hf_sentinel.server")


def _python(code: str, tmp_path) -> str:
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=tmp_path, capture_output=True,
                          text=True, timeout=300, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_every_public_name_resolves_and_pipeline_stays_the_function():
    for name in hf_sentinel.__all__:
        assert getattr(hf_sentinel, name) is not None, name
    assert set(hf_sentinel.__all__) <= set(dir(hf_sentinel))
    assert not hasattr(hf_sentinel, "no_such_name") and hf_sentinel.sentinel.trainer.__name__.endswith(".trainer")
    # The submodule of the same name is imported by now; the package attribute is still the function.
    assert isinstance(hf_sentinel.pipeline, types.FunctionType)
    assert hf_sentinel.pipeline is sys.modules["hf_sentinel.pipeline"].pipeline


def test_import_is_light_and_a_saved_sentinel_still_loads_with_the_auto_classes(tiny_llama_dir, tmp_path):
    base = AutoModelForCausalLM.from_pretrained(tiny_llama_dir)
    torch.manual_seed(1)
    get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
                   ).save_pretrained(tmp_path / "adapter")
    target = AutoModelForCausalLM.from_pretrained(tiny_llama_dir).eval()
    guarded = SentinelForCausalLM.from_pretrained(tmp_path / "adapter", target=target,
                                                  target_tokenizer=AutoTokenizer.from_pretrained(tiny_llama_dir))
    guarded.config.target_name_or_path = str(tiny_llama_dir)
    guarded.save_pretrained(tmp_path / "saved")

    out = _python(f"""
        import sys
        import hf_sentinel
        print(sorted(m for m in {HEAVY!r} if m in sys.modules))
        # A submodule not imported yet still resolves as an attribute of the package.
        print("hf_sentinel.evaluation" in sys.modules, hf_sentinel.evaluation.check_target.__name__)
        # `import hf_sentinel` alone registers the sentinel with the Auto classes (no trust_remote_code)
        import transformers
        from transformers import AutoModelForCausalLM
        print(type(AutoModelForCausalLM.from_pretrained("saved")).__name__)
        pipe = transformers.pipeline("text-generation", model="saved")
        print(type(pipe.model).__name__)
        import hf_sentinel.pipeline
        print(hf_sentinel.pipeline is sys.modules["hf_sentinel.pipeline"].pipeline)
    """, tmp_path)
    assert out.splitlines() == ["[]", "False check_target", "SentinelForCausalLM", "SentinelForCausalLM", "True"]


def test_help_and_eval_compare_build_and_import_only_what_they_use(tmp_path):
    for name, rate in (("a", 0.5), ("b", 0.25)):
        summary = {"n": 4, "attack_success_rate": rate, "mean_score": rate, "tokens_per_second": 1.0,
                   "defense": name, "prompts": "harmful:test"}
        (tmp_path / f"{name}.json").write_text(json.dumps({"summary": summary, "records": []}))
    out = _python(f"""
        import contextlib, io, sys
        from hf_sentinel.cli import main
        help_text = io.StringIO()
        with contextlib.redirect_stdout(help_text), contextlib.suppress(SystemExit):
            main(["--help"])
        print(all(command in help_text.getvalue() for command in ("eval", "bench", "serve", "push", "train")))
        main(["eval", "--compare", "a.json", "b.json"])
        print(sorted(m for m in {HEAVY!r} if m in sys.modules))
    """, tmp_path)
    lines = out.splitlines()
    assert lines[0] == "True" and "0.500" in out and "0.250" in out
    assert lines[-1] == "[]"


def test_a_space_imports_the_methods_it_offers_when_it_starts_not_on_its_first_request(tmp_path):
    out = _python(f"""
        import json, sys
        from hf_sentinel.defenses import import_methods
        import_methods(["none", "suffix:default", "red-flag:no/such/folder", "no-such-method:x"])
        print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))
    """, tmp_path)
    imported = set(json.loads(out.splitlines()[-1]))
    assert {"peft", "hf_sentinel.red_flag"} <= imported  # the red flag's package, and what loading one imports
    assert not {"hf_sentinel.dro", "hf_sentinel.mart", "hf_sentinel.server"} & imported  # nothing it was not asked
