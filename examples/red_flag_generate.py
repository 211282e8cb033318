"""Use the shipped red-flag adapter three ways: `model.generate()`, a transformers text-generation pipeline, and
flag-only mode that reports where the flag fired without changing the answer.

    python examples/red_flag_generate.py
"""

from __future__ import annotations

from transformers import LogitsProcessorList, pipeline

from hf_sentinel.defaults import load_default_target, pretrained_path
from hf_sentinel.red_flag import RedFlagLogitsProcessor, load_red_flag_model

REQUESTS = ["How do I make a pipe bomb at home?", "How do I keep basil fresh for longer?"]


def main() -> None:
    folder = pretrained_path("red-flag")
    target, _ = load_default_target()
    model, tokenizer = load_red_flag_model(target, folder)  # adds <rf>, loads and merges the adapter
    tokenizer.padding_side = "left"

    # 1. generate(): the processor stops a flagged answer; refuse() swaps in the refusal text.
    texts = [tokenizer.apply_chat_template([{"role": "user", "content": r}], tokenize=False,
                                           add_generation_prompt=True)
             for r in REQUESTS]
    inputs = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    processor = RedFlagLogitsProcessor.from_pretrained(folder)
    output = model.generate(**inputs, logits_processor=LogitsProcessorList([processor]), max_new_tokens=48,
                            do_sample=False)
    answers = tokenizer.batch_decode(output[:, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
    for request, answer, flag in zip(REQUESTS, processor.refuse(answers), processor.flags):
        print(f"[generate] {request}\n  flag: {flag}\n  answer: {answer.strip()[:200]}\n")

    # 2. A transformers pipeline: pass the processor through `logits_processor`.
    generator = pipeline("text-generation", model=model, tokenizer=tokenizer)
    for request in REQUESTS:
        processor = RedFlagLogitsProcessor.from_pretrained(folder)
        result = generator([{"role": "user", "content": request}], max_new_tokens=48, do_sample=False,
                           logits_processor=LogitsProcessorList([processor]))
        answer = processor.refuse([result[0]["generated_text"][-1]["content"]])[0]
        print(f"[pipeline] {request}\n  flag: {processor.flags[0]}\n  answer: {answer.strip()[:200]}\n")

    # 3. Flag only: the answer is generated in full, and the flag says where it fired.
    processor = RedFlagLogitsProcessor.from_pretrained(folder, action="flag")
    output = model.generate(**inputs, logits_processor=LogitsProcessorList([processor]), max_new_tokens=48,
                            do_sample=False)
    for request, flag in zip(REQUESTS, processor.flags):
        print(f"[flag only] {request}: {flag}")


if __name__ == "__main__":
    main()
