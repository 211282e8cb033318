"""A MART adapter at reduced strength: every LoRA layer's scale times s (the same as lora_alpha x s), merged into a
copy of the target, judged on a harmful and a benign prompt set. The measurement behind docs/mart.md's "A weaker
adapter does not buy the benign answers back" (run with the MART adapter shipped then, the first broad-pool run):

    OMP_NUM_THREADS=2 HF_HUB_OFFLINE=1 python examples/mart_adapter_scale.py --adapter outputs/mart-broad/run \
        --scales 1.0 0.75 0.5 0.25 --output outputs/mart-scale/scales.json

Defaults: the validation slices of the MART ship rules (150 shuffled requests of each, seed 0), greedy, 48 new
tokens, the default judge. Prints one line per scale and writes them all to --output.
"""

from __future__ import annotations

import argparse
import copy
import json
from pathlib import Path

from peft import PeftModel
from peft.tuners.lora import LoraLayer

from hf_sentinel import GenerationSettings, evaluate, load_default_target, load_prompts
from hf_sentinel.defaults import pretrained_path
from hf_sentinel.judges import load_judge


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--adapter", default=None, help="MART target adapter folder (default: mart:default's)")
    parser.add_argument("--scales", type=float, nargs="+", default=[1.0, 0.75, 0.5, 0.25])
    parser.add_argument("--harmful", default="outputs/dro-broad/data/harmful_validation.jsonl")
    parser.add_argument("--benign", default="pool:benign:validation")
    parser.add_argument("--limit", type=int, default=150, help="requests of each set (shuffled with seed 0)")
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--output", default="outputs/mart-scale/scales.json")
    args = parser.parse_args()
    if any(scale <= 0 for scale in args.scales):
        raise SystemExit(f"--scales must be positive (1 = the adapter as trained), got {args.scales}.")

    model, tokenizer = load_default_target()
    judge = load_judge("default")
    harmful = load_prompts(args.harmful, limit=args.limit, seed=0)
    benign = load_prompts(args.benign, limit=args.limit, seed=0)
    settings = GenerationSettings(max_new_tokens=args.max_new_tokens)
    adapter = args.adapter or str(pretrained_path("mart"))
    rows = []
    for scale in args.scales:
        tuned = PeftModel.from_pretrained(copy.deepcopy(model), adapter)
        for layer in tuned.modules():
            if isinstance(layer, LoraLayer):
                layer.scale_layer(scale)
        tuned = tuned.merge_and_unload().eval()
        through = evaluate(tuned, tokenizer, harmful, judge, settings=settings, progress=False)
        answered = evaluate(tuned, tokenizer, benign, judge, settings=settings, progress=False)
        row = {"scale": scale, "harmful_let_through": through["summary"]["attack_success_rate"],
               "benign_answered": answered["summary"]["attack_success_rate"],
               "harmful_by_shape": through["summary"].get("by_shape"),
               "benign_by_shape": answered["summary"].get("by_shape")}
        rows.append(row)
        print(f"scale {scale}: {row['harmful_let_through']:.1%} harmful let through, "
              f"{row['benign_answered']:.1%} benign answered", flush=True)
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps({"adapter": adapter, "settings": vars(args), "rows": rows}, indent=2))
    print(f"written: {output}")


if __name__ == "__main__":
    main()
