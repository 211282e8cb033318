"""SentinelForCausalLM: a sentinel prefix model that refines each prompt before the target answers it.

One guarded answer, in order:

1. render the conversation with the target's chat template and cut it at the end of the last user turn
   (:func:`split_user_turn`): ``head`` = everything up to the end of the user's text, ``tail`` = the end-of-turn
   markup and the assistant header (plus any pre-filled answer);
2. the sentinel continues ``head`` with at most ``max_sentinel_tokens`` tokens: the suffix (it may be empty:
   a sentinel learns *when* to append what);
3. the target answers ``head + suffix + tail``, i.e. the suffix sits inside the user turn.

A LoRA sentinel over the target's own base keeps one copy of the base weights: its adapter layers are
disabled except during the sentinel pass, so the target (and anything else holding it) sees the plain model. Stacked
with a red flag (:class:`~hf_sentinel.defenses.DefenseStack`), the same PEFT model holds the red flag's adapter too,
active while the target generates: the sentinel's pass switches to its own adapter and back.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    DynamicCache,
    GenerationMixin,
    LogitsProcessor,
    LogitsProcessorList,
    PreTrainedModel,
)
from transformers.utils import ModelOutput

from ..defaults import resolve_model_path
from ..generation import appended, left_padded, pad_token_id, positions_from_mask
from ..loading import artifact_folder, check_artifact_kind, same_vocabulary
from ..remote import RemoteChatTarget
from .configuration import SentinelConfig
from .decision import SuffixDecisionProcessor
from .drafts import SuffixDrafts
from .frozen_layers import first_adapted_layer
from .prompt_states import PromptStates
from .sampling import draw, shared_opening

SENTINEL_SUBFOLDER = "sentinel"
_MARK = "\x00SENTINEL-USER-TURN-END\x00"


def user_turn_end(tokenizer) -> str:
    """The markup a chat template writes between the end of the user's text and the assistant's answer."""
    probe = tokenizer.apply_chat_template([{"role": "user", "content": _MARK}], tokenize=False,
                                          add_generation_prompt=True)
    return probe[probe.index(_MARK) + len(_MARK):]


def split_user_turn(text: str, turn_end: str | None) -> tuple[str, str]:
    """``(head, tail)`` of a rendered prompt, cut where the last user turn ends (for plain text: at the end)."""
    cut = text.rfind(turn_end) if turn_end else -1
    return (text, "") if cut < 0 else (text[:cut], text[cut:])


@dataclass
class SentinelGenerateOutput(ModelOutput):
    """``generate(..., return_dict_in_generate=True)`` output: the usual sequences (original prompt + answer)
    and the suffix the sentinel appended to each prompt."""

    sequences: torch.LongTensor | None = None
    sentinel_suffixes: list[str] | None = None


class SentinelForCausalLM(PreTrainedModel, GenerationMixin):
    """A target guarded by a sentinel prefix model, usable wherever a causal LM is.

    Load a saved sentinel (a folder written by :meth:`save_pretrained` or ``StackelbergPPOTrainer``, a plain PEFT
    LoRA adapter, or a full causal LM) onto a target::

        >>> from hf_sentinel.defaults import tiny_model
        >>> from peft import LoraConfig, get_peft_model
        >>> import tempfile
        >>> target, tokenizer = tiny_model()
        >>> folder = tempfile.mkdtemp()
        >>> lora = LoraConfig(r=2, target_modules=["q_proj", "v_proj"])
        >>> get_peft_model(tiny_model()[0], lora).save_pretrained(folder)
        >>> guarded = SentinelForCausalLM.from_pretrained(folder, target=target, target_tokenizer=tokenizer,
        ...                                               max_sentinel_tokens=5)
        >>> out = guarded.chat([[{"role": "user", "content": "Hello"}]], max_new_tokens=4)
        >>> sorted(out[0])
        ['response', 'sentinel_suffix']

    ``generate(input_ids, ...)`` works like any model's (the stock ``transformers.pipeline("text-generation",
    model=folder)`` loads a saved folder after ``import hf_sentinel``) and returns the original prompt followed
    by the target's answer; ``return_dict_in_generate=True`` also gives ``sentinel_suffixes``. :meth:`chat` works
    at conversation level and also with a black-box target behind an OpenAI-compatible endpoint.
    """

    config_class = SentinelConfig
    base_model_prefix = "sentinel"
    _no_split_modules: list[str] = []

    def __init__(self, config: SentinelConfig, target=None, target_tokenizer=None, sentinel=None,
                 sentinel_tokenizer=None):
        super().__init__(config)
        if sentinel is None or sentinel_tokenizer is None:
            raise ValueError("SentinelForCausalLM needs a sentinel model and its tokenizer; load one with "
                             "SentinelForCausalLM.from_pretrained(path, target=...).")
        if target is None:
            raise ValueError("SentinelForCausalLM needs a target: a causal LM or a RemoteChatTarget.")
        self.sentinel = sentinel
        self.sentinel_tokenizer = sentinel_tokenizer
        self.remote_target = target if isinstance(target, RemoteChatTarget) else None
        # For a shared-base LoRA sentinel, `target` is the module the adapter was injected into.
        self.target = None if self.remote_target else target
        self.tokenizer = target_tokenizer if self.target is not None else sentinel_tokenizer
        if self.target is not None and target_tokenizer is None:
            raise ValueError("Pass target_tokenizer with a local target.")
        if self.target is not None:
            self.generation_config = self.target.generation_config
        self._turn_end = user_turn_end(self.tokenizer) if self.tokenizer.chat_template else None
        self.suffix_drafts = SuffixDrafts() if config.draft_suffixes else None
        #: What the last sentinel pass computed below its adapter for each head, for the target to continue
        #: (:meth:`continue_prompt_states`); None when the sentinel does not share such layers with the target.
        self.prompt_states: PromptStates | None = None
        if self.is_lora:
            sentinel.base_model.disable_adapter_layers()  # off by default: the target must see the plain base

    # ------------------------------------------------------------------------------------------ loading

    @property
    def is_lora(self) -> bool:
        return self.config.sentinel_kind == "lora"

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *model_args, target=None, target_tokenizer=None,
                        config: SentinelConfig | None = None, **kwargs):
        """Load a sentinel and compose it with its target.

        Args:
            pretrained_model_name_or_path: local folder or Hub id of a saved sentinel, a PEFT LoRA adapter, or
                a full causal LM used as the sentinel.
            target: the target model (or a :class:`RemoteChatTarget`); by default loaded from the config's
                ``target_name_or_path`` / ``target_endpoint``. A LoRA sentinel over the target's own base is
                injected into this model (one copy of the weights).
            target_tokenizer: the target's tokenizer (default: the one saved with the sentinel).
            kwargs: :class:`SentinelConfig` overrides, e.g. ``max_sentinel_tokens=20``.
        """
        folder = artifact_folder(str(pretrained_model_name_or_path), "sentinel")
        check_artifact_kind(folder, "sentinel")
        overrides = {k: v for k, v in kwargs.items() if k in SentinelConfig.__dataclass_fields__}
        config = config or _config_for(folder, **overrides)
        config.name_or_path = str(pretrained_model_name_or_path)
        sentinel_dir = folder / SENTINEL_SUBFOLDER if (folder / SENTINEL_SUBFOLDER).is_dir() else folder

        if target is None:
            if config.target_endpoint:
                target = RemoteChatTarget(config.target_endpoint, config.target_model_name,
                                          timeout=config.request_timeout)
            elif config.target_name_or_path:
                target = AutoModelForCausalLM.from_pretrained(resolve_model_path(config.target_name_or_path),
                                                              use_safetensors=True).eval()
                target.name_or_path = config.target_name_or_path
            else:
                raise ValueError(f"{folder} does not say which target it guards; pass target=...")
        saved_tokenizer = (folder / "tokenizer_config.json").is_file()
        # A tokenizer the caller passes must be the one saved with the sentinel; one loaded from the folder is.
        tokenizer_to_check = folder if saved_tokenizer and target_tokenizer is not None else None
        if target_tokenizer is None and not isinstance(target, RemoteChatTarget):
            source = folder if saved_tokenizer else resolve_model_path(
                config.target_name_or_path or target.name_or_path)
            target_tokenizer = AutoTokenizer.from_pretrained(source)

        if config.sentinel_kind == "lora":
            sentinel, sentinel_tokenizer = _load_lora_sentinel(sentinel_dir, config, target, target_tokenizer,
                                                               tokenizer_to_check)
        else:
            sentinel = AutoModelForCausalLM.from_pretrained(sentinel_dir, use_safetensors=True).eval()
            sentinel_tokenizer = AutoTokenizer.from_pretrained(sentinel_dir)
        return cls(config, target, target_tokenizer, sentinel, sentinel_tokenizer)

    def save_pretrained(self, save_directory, **kwargs):
        """Write the config, the sentinel (adapter or full model, in ``sentinel/``), the target's tokenizer and
        generation config (so the stock text-generation pipeline can load the folder), and a model card."""
        if not self.config.target_name_or_path and self.target is not None:
            self.config.target_name_or_path = self.target.name_or_path
        write_sentinel_folder(save_directory, self.config, self.sentinel, self.tokenizer,
                              self.target.generation_config if self.target is not None else None,
                              sentinel_tokenizer=None if self.is_lora else self.sentinel_tokenizer)

    def _init_weights(self, module):
        # Every weight comes from the sentinel and the target, already initialised.
        pass

    # --------------------------------------------------------------------------------------- the method

    @contextlib.contextmanager
    def _sentinel_pass(self):
        """Switches the LoRA sentinel's adapter on for its pass, and the shared model back as it was: alone on the
        target's base, the sentinel's adapter layers are off outside its pass; beside another adapter there (a red
        flag's, which the target generates with), that one is the active adapter outside it."""
        if not self.is_lora:
            yield
            return
        if len(self.sentinel.peft_config) == 1:
            self.sentinel.base_model.enable_adapter_layers()
            try:
                yield
            finally:
                self.sentinel.base_model.disable_adapter_layers()
            return
        outside = self.sentinel.active_adapter
        # inference_mode: PEFT would otherwise make the adapter it activates trainable.
        self.sentinel.set_adapter(SENTINEL_SUBFOLDER, inference_mode=True)
        try:
            yield
        finally:
            self.sentinel.set_adapter(outside, inference_mode=True)

    @torch.no_grad()
    def suffix_token_ids(self, heads: list[str]) -> list[list[int]]:
        """The sentinel's continuation of each prompt head, as its token ids: at most ``max_sentinel_tokens``,
        cut before its end-of-turn token.

        Greedy, or with ``sentinel_do_sample`` sampled at ``sentinel_temperature`` from the sentinel's whole
        distribution, as its training rollouts sample (:func:`continue_rows`: batches of ``sentinel_batch_size``
        heads of similar length, in which a row stops costing anything at its end of turn). Greedy, with
        ``draft_suffixes`` (the default), the suffixes written before are drafts of the next ones, checked in one
        forward pass each (``self.suffix_drafts``)."""
        tok = self.sentinel_tokenizer
        rows = [tok(head, add_special_tokens=False)["input_ids"] for head in heads]
        if not all(rows):
            raise ValueError("Empty prompt: the sentinel needs some text to continue.")
        threshold = self.config.suffix_threshold

        def processors() -> LogitsProcessorList:  # fresh for each batch: the decision knows its first step
            # The operating point: append exactly where p(suffix) at the first token reaches the threshold.
            decision = [] if threshold is None else [SuffixDecisionProcessor(tok.eos_token_id, threshold)]
            # First, so p(suffix) is read over the sentinel's own vocabulary, as on a base of that size.
            return LogitsProcessorList([OwnVocabularyProcessor(len(tok)), *decision])

        temperature = self.config.sentinel_temperature if self.config.sentinel_do_sample else 0.0
        first_adapted = self._first_layer_of_its_own()
        states = self.prompt_states = None if first_adapted is None else PromptStates(self.target, first_adapted)
        suffixes: list[list[int]] = [[] for _ in rows]
        order = sorted(range(len(rows)), key=lambda i: len(rows[i]))
        with self._sentinel_pass():
            for start in range(0, len(order), self.config.sentinel_batch_size):
                batch = order[start:start + self.config.sentinel_batch_size]
                batch_rows = [rows[i] for i in batch]
                with states.recording(batch_rows) if states is not None else contextlib.nullcontext():
                    written = continue_rows(self.sentinel, batch_rows, self.config.max_sentinel_tokens,
                                            tok.eos_token_id, processors(), temperature, drafts=self.suffix_drafts,
                                            on_prefill=states.record if states is not None else None)
                for i, ids in zip(batch, written):
                    suffixes[i] = ids
        return suffixes

    def _first_layer_of_its_own(self) -> int | None:
        """The first layer a LoRA sentinel computes differently from the target it shares weights with, where the
        layers below it are the target's (:func:`~hf_sentinel.sentinel.frozen_layers.first_adapted_layer`) and
        ``reuse_prompt_states`` is on; else None."""
        if not (self.config.reuse_prompt_states and self.is_lora and self.target is not None
                and self.sentinel.base_model.model is self.target):
            return None
        return first_adapted_layer(self.sentinel, SENTINEL_SUBFOLDER)

    def continue_prompt_states(self, model, inputs: dict) -> dict | None:
        """``model.generate`` keyword arguments for the target's batch ``inputs`` that continue what the last
        sentinel pass computed for its prompt heads (:meth:`PromptStates.continue_batch
        <hf_sentinel.sentinel.prompt_states.PromptStates.continue_batch>`); None where they cannot."""
        return None if self.prompt_states is None else self.prompt_states.continue_batch(model, inputs)

    def sentinel_suffixes(self, heads: list[str]) -> list[str]:
        """The sentinel's suffix for each prompt head, as text ("" when it appends nothing)."""
        suffixes = [self.sentinel_tokenizer.decode(ids, skip_special_tokens=True)
                    for ids in self.suffix_token_ids(heads)]
        return [suffix if suffix.strip() else "" for suffix in suffixes]

    def refine_texts(self, texts: list[str]) -> tuple[list[str], list[str]]:
        """Rendered prompts with the sentinel's suffix inserted at the end of the last user turn."""
        parts = [split_user_turn(text, self._turn_end) for text in texts]
        suffixes = self.sentinel_suffixes([head for head, _ in parts])
        return [head + suffix + tail for (head, tail), suffix in zip(parts, suffixes)], suffixes

    def refine(self, conversations: list[list[dict]]) -> tuple[list[list[dict]], list[str]]:
        """Conversations whose last user message ends with the sentinel's suffix, and the suffixes."""
        heads = []
        for conv in conversations:
            if not conv or conv[-1]["role"] != "user" or not str(conv[-1]["content"]).strip():
                raise ValueError("Each conversation must end with a non-empty user message for the sentinel to "
                                 "refine.")
            if self._turn_end is None:
                heads.append(conv[-1]["content"])
                continue
            rendered = self.tokenizer.apply_chat_template(conv, tokenize=False, add_generation_prompt=True)
            heads.append(split_user_turn(rendered, self._turn_end)[0])
        suffixes = self.sentinel_suffixes(heads)
        refined = [appended(conv, suffix) for conv, suffix in zip(conversations, suffixes)]
        return refined, suffixes

    @torch.no_grad()
    def generate(self, input_ids=None, attention_mask=None, return_dict_in_generate: bool = False, **kwargs):
        """Refine each prompt with the sentinel, then let the target answer.

        Returns the *original* prompt ids followed by the target's answer (so pipelines strip the prompt as
        usual), or a :class:`SentinelGenerateOutput` with ``sentinel_suffixes`` when
        ``return_dict_in_generate=True``. Other keyword arguments (max_new_tokens, do_sample, streamer,
        logits_processor, ...) go to the target's ``generate``.
        """
        if self.target is None:
            raise ValueError("generate() needs a local target; with a remote target use chat(conversations).")
        if input_ids is None:
            raise ValueError("generate() needs input_ids (the tokenized prompt).")
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        texts = [self.tokenizer.decode(ids[mask.bool()], skip_special_tokens=False)
                 for ids, mask in zip(input_ids, attention_mask)]
        refined, suffixes = self.refine_texts(texts)
        pad_id = pad_token_id(self.tokenizer)
        inputs = left_padded([self.tokenizer(t, add_special_tokens=False)["input_ids"] for t in refined],
                             pad_id, input_ids.device)
        if "past_key_values" not in kwargs:
            inputs = self.continue_prompt_states(self.target, inputs) or inputs
        kwargs.setdefault("pad_token_id", pad_id)
        output = self.target.generate(**inputs, **kwargs)
        answers = output[:, inputs["input_ids"].shape[1]:]
        sequences = torch.cat([input_ids, answers], dim=1)
        if return_dict_in_generate:
            return SentinelGenerateOutput(sequences=sequences, sentinel_suffixes=suffixes)
        return sequences

    def forward(self, *args, **kwargs):
        """The target's forward pass (the sentinel acts only in :meth:`generate`)."""
        if self.target is None:
            raise ValueError("A remote target has no forward pass; use chat(conversations).")
        return self.target(*args, **kwargs)

    def chat(self, conversations: list[list[dict]], max_new_tokens: int = 48, do_sample: bool = False,
             temperature: float = 1.0, seed: int = 0) -> list[dict]:
        """Answer conversations; each result is ``{"response", "sentinel_suffix"}``."""
        refined, suffixes = self.refine(conversations)
        if self.remote_target is not None:
            responses = self.remote_target.chat(refined, max_new_tokens=max_new_tokens, do_sample=do_sample,
                                                temperature=temperature, seed=seed)
        else:
            from ..generation import GenerationSettings, generate

            settings = GenerationSettings(max_new_tokens=max_new_tokens, do_sample=do_sample,
                                          temperature=temperature, seed=seed)
            responses = generate(self.target, self.tokenizer, refined, settings).responses
        return [{"response": r, "sentinel_suffix": s} for r, s in zip(responses, suffixes)]


# ------------------------------------------------------------------------------------------------ helpers


class OwnVocabularyProcessor(LogitsProcessor):
    """Masks the scores of ids at or past ``vocab_size``: the sentinel writes only tokens its tokenizer has. On a
    base another adapter grew (a red flag's `<rf>` row and the padding rows after it), those rows are not its words.

    >>> OwnVocabularyProcessor(2)(torch.zeros(1, 1, dtype=torch.long), torch.tensor([[1.0, 2.0, 9.0]]))
    tensor([[1., 2., -inf]])
    """

    def __init__(self, vocab_size: int):
        self.vocab_size = vocab_size

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if scores.shape[-1] <= self.vocab_size:
            return scores
        scores = scores.clone()
        scores[:, self.vocab_size:] = -float("inf")
        return scores


def continue_rows(model, rows: list[list[int]], max_new_tokens: int, stop_id: int,
                  processors: LogitsProcessorList | None = None, temperature: float = 0.0,
                  drafts: SuffixDrafts | None = None, on_prefill=None) -> list[list[int]]:
    """Each token row's continuation by ``model``, up to (without) ``stop_id`` and at most ``max_new_tokens`` tokens:
    the argmax of the scores (the last logits after ``processors``) at temperature 0, else a draw from
    ``softmax(scores / temperature)``.

    Greedy, it writes what ``model.generate(..., do_sample=False, eos_token_id=stop_id, logits_processor=processors)``
    writes (the same sums; the shared opening's in a batch of one), for less: the rows' shared opening (a chat
    template's system turn) runs once (:func:`~hf_sentinel.sentinel.sampling.shared_opening`), and a row leaves the
    batch when it writes ``stop_id``, where ``generate()`` keeps computing it, as padding, until the last row has
    ended. ``processors`` see the rows still writing; the model's generation config is not read (no top-k, no
    repetition penalty: the sentinel decodes from its logits, as its rollouts were sampled in training).

    ``drafts`` (greedy only): each row's next tokens are proposed from the suffixes written before
    (:class:`~hf_sentinel.sentinel.drafts.SuffixDrafts`, which learns this call's continuations) and checked in one
    forward pass; a row keeps the drafted tokens up to the first the argmax disagrees with, then the argmax there.
    The same continuations up to float rounding (a draft's tokens are summed in one pass, not one at a time). A
    rejected draft token stays in the key/value cache, masked, and in what ``processors`` read: with drafts, use
    processors that do not read the tokens (as the sentinel's own: the vocabulary mask, the first-step decision).

    ``on_prefill``: called once with ``(cache, attention_mask)`` right after the rows' own forward pass, before any
    token is written (:meth:`PromptStates.record <hf_sentinel.sentinel.prompt_states.PromptStates.record>`).
    """
    drafting = drafts is not None and temperature == 0
    device = next(model.parameters()).device
    inputs = left_padded(rows, 0, device)  # the padding is masked: any id does
    sequences = inputs["input_ids"]  # what the processors read: each row so far
    cache = DynamicCache()
    input_ids, attention_mask = shared_opening(model, sequences, inputs["attention_mask"], cache)
    live = list(range(len(rows)))  # the rows still writing, in batch order
    continuations: list[list[int]] = [[] for _ in rows]
    while live:
        # A row's draft leaves room for the token the model writes after it, within max_new_tokens.
        proposed = [drafts.propose(continuations[row], max_new_tokens - len(continuations[row]) - 1)
                    if drafting else [] for row in live]
        width = max(map(len, proposed))
        # Right-padded, so every row's draft starts in the column after its last token; the padding is masked.
        draft = torch.tensor([d + [0] * (width - len(d)) for d in proposed], dtype=torch.long, device=device)
        draft_mask = torch.tensor([[1] * len(d) + [0] * (width - len(d)) for d in proposed], device=device)
        input_ids = torch.cat([input_ids, draft], 1)
        attention_mask = torch.cat([attention_mask, draft_mask.to(attention_mask.dtype)], 1)
        sequences = torch.cat([sequences, draft], 1)
        position_ids = positions_from_mask(attention_mask, last=input_ids.shape[1])
        logits = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                       past_key_values=cache, use_cache=True, logits_to_keep=width + 1).logits.float()
        if on_prefill is not None:
            on_prefill(cache, attention_mask)
            on_prefill = None
        # The token after each prefix of the draft: column j follows the row's tokens and the draft's first j.
        tokens = []
        for j in range(width + 1):
            seen = sequences[:, :sequences.shape[1] - width + j]
            scores = processors(seen, logits[:, j]) if processors else logits[:, j]
            tokens.append(scores.argmax(-1) if temperature == 0 else draw((scores / temperature).softmax(-1)))
        tokens = torch.stack(tokens, 1).tolist()
        keep, next_tokens, ended = [], [], []
        for i, row in enumerate(live):
            accepted = 0
            while accepted < len(proposed[i]) and tokens[i][accepted] == proposed[i][accepted]:
                accepted += 1
            draft_mask[i, accepted:] = 0  # the rejected draft: masked for every later token
            for token in [*proposed[i][:accepted], tokens[i][accepted]]:
                if token == stop_id:
                    ended.append(continuations[row] + [stop_id])
                    break
                continuations[row].append(token)
                if len(continuations[row]) == max_new_tokens:
                    ended.append(continuations[row])
                    break
            else:  # neither the stop token nor the budget: the row goes on from the model's token
                keep.append(i)
                next_tokens.append(tokens[i][accepted])
        if drafting:
            drafts.add(ended)
        if not keep:
            break
        if width:
            attention_mask[:, -width:] = draft_mask
        if len(keep) < len(live):
            index = torch.tensor(keep, device=device)
            cache.batch_select_indices(index)
            live = [live[i] for i in keep]
            sequences, attention_mask = sequences[index], attention_mask[index]
        input_ids = torch.tensor(next_tokens, device=device)[:, None]
        sequences = torch.cat([sequences, input_ids], 1)
        attention_mask = torch.cat([attention_mask, attention_mask.new_ones(len(live), 1)], 1)
    return continuations


def write_sentinel_folder(folder, config: SentinelConfig, sentinel, tokenizer, generation_config=None,
                          sentinel_tokenizer=None, eval_results: list | None = None, card_extra: str = "") -> Path:
    """Write a Hub-ready sentinel folder that :meth:`SentinelForCausalLM.from_pretrained` loads.

    ``sentinel`` is a PEFT model holding an adapter named ``sentinel`` (only that adapter is written) or, for
    ``sentinel_kind="model"``, a full causal LM saved with ``sentinel_tokenizer``.
    """
    from ..hub import write_sentinel_card

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    config.save_pretrained(folder)
    if config.sentinel_kind == "lora":  # PEFT writes a named adapter into the subfolder of its name
        sentinel.save_pretrained(folder, selected_adapters=[SENTINEL_SUBFOLDER])
    else:
        sentinel.save_pretrained(folder / SENTINEL_SUBFOLDER)
        sentinel_tokenizer.save_pretrained(folder / SENTINEL_SUBFOLDER)
    tokenizer.save_pretrained(folder)
    if generation_config is not None:
        generation_config.save_pretrained(folder)
    write_sentinel_card(folder, config, eval_results=eval_results, extra=card_extra)
    return folder


def _config_for(folder: Path, **overrides) -> SentinelConfig:
    """A SentinelConfig for a saved sentinel folder, a bare PEFT adapter folder, or a full causal LM folder."""
    config_file, adapter_file = folder / "config.json", folder / "adapter_config.json"
    if config_file.is_file() and json.loads(config_file.read_text()).get("model_type") == SentinelConfig.model_type:
        config = SentinelConfig.from_pretrained(folder)
        for key, value in overrides.items():
            setattr(config, key, value)
        config.__post_init__()
        return config
    if adapter_file.is_file():
        base = json.loads(adapter_file.read_text()).get("base_model_name_or_path")
        return SentinelConfig(**{"sentinel_kind": "lora", "target_name_or_path": base,
                                 "sentinel_base_name_or_path": base, **overrides})
    if config_file.is_file():
        return SentinelConfig(**{"sentinel_kind": "model", **overrides})
    raise FileNotFoundError(f"{folder} holds no sentinel: expected config.json (a saved SentinelForCausalLM or a "
                            f"causal LM) or adapter_config.json (a PEFT LoRA adapter).")


def _load_lora_sentinel(adapter_dir: Path, config: SentinelConfig, target, target_tokenizer,
                        saved_tokenizer_dir: Path | None = None):
    """The PEFT sentinel and its tokenizer; ``saved_tokenizer_dir``: the tokenizer the sentinel was saved with,
    which a target's tokenizer chosen by the caller must equal when the sentinel shares the target's weights."""
    from peft import PeftModel

    base_name = config.sentinel_base_name_or_path
    if _on_target_base(config, target):
        base, tokenizer = target, target_tokenizer
        if saved_tokenizer_dir is not None:
            _check_same_tokenizer(saved_tokenizer_dir, tokenizer)
    else:
        if base_name is None:
            raise ValueError(f"The LoRA sentinel in {adapter_dir} guards a remote target, so it needs its own base: "
                             f"set sentinel_base_name_or_path.")
        base = AutoModelForCausalLM.from_pretrained(resolve_model_path(base_name), use_safetensors=True).eval()
        tokenizer = AutoTokenizer.from_pretrained(resolve_model_path(base_name))
    _check_adapter_fits(adapter_dir, base)
    sentinel = PeftModel.from_pretrained(base, adapter_dir, adapter_name=SENTINEL_SUBFOLDER).eval()
    return sentinel, tokenizer


def _on_target_base(config: SentinelConfig, target) -> bool:
    """Whether a LoRA sentinel runs on the target's own weights: unless it says it runs on another base, or the
    target is remote."""
    own_base = config.sentinel_base_name_or_path not in (None, config.target_name_or_path,
                                                         getattr(target, "name_or_path", None))
    return not own_base and not isinstance(target, RemoteChatTarget)


def sentinel_placement(folder: Path, target, target_tokenizer) -> str:
    """Which weights the sentinel saved in ``folder`` runs on when it guards the local ``target``, read from its
    files (no model loads):

    - ``"target"``: the target's own (a LoRA sentinel over its base: :func:`_on_target_base`), when it was trained
      with the target's tokenizer, or names no target of its own to fall back on (loading it onto the target then
      fails clearly when the tokenizers differ);
    - ``"own"``: weights of its own, in front of the target (a full causal LM; a LoRA over another base);
    - ``"apart"``: a copy of the target its folder names (a LoRA over the target's base, trained with another
      tokenizer: it cannot read the target's token ids, so it composes at text level from the target it knows).
    """
    config = _config_for(folder)
    if config.sentinel_kind != "lora" or not _on_target_base(config, target):
        return "own"
    saved = (folder / "tokenizer_config.json").is_file()
    if not saved or same_vocabulary(AutoTokenizer.from_pretrained(folder), target_tokenizer):
        return "target"
    return "apart" if config.target_name_or_path or config.target_endpoint else "target"


def _check_same_tokenizer(folder: Path, tokenizer) -> None:
    """Fail clearly when the target's tokenizer is not the one the sentinel was saved with: the shared-base LoRA
    sentinel would read the target's token ids with the meaning of its own, and write garbage."""
    saved = AutoTokenizer.from_pretrained(folder)
    if same_vocabulary(saved, tokenizer):
        return
    name = getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__
    sizes = f"{len(tokenizer)} tokens, the saved one {len(saved)}" if len(saved) != len(tokenizer) else \
        f"both {len(saved)} tokens, but other token ids"
    raise ValueError(
        f"The sentinel in {folder} was trained with the tokenizer saved next to it, and this target's tokenizer "
        f"({name}) differs from it ({sizes}). Guard the target the sentinel was trained for, with its tokenizer, "
        f"or load the sentinel on its own base (sentinel_base_name_or_path=...), which composes at text level."
    )


def _check_adapter_fits(adapter_dir: Path, base) -> None:
    """Fail clearly when a LoRA adapter was trained for a base of other shapes (PEFT's own error is cryptic)."""
    from safetensors import safe_open

    weights = adapter_dir / "adapter_model.safetensors"
    if not weights.is_file():
        raise FileNotFoundError(f"{adapter_dir} has no adapter_model.safetensors (only safetensors adapters load).")
    modules = dict(base.named_modules())
    with safe_open(str(weights), framework="pt") as f:
        for key in f.keys():
            if ".lora_A." not in key:
                continue
            module_name = key.split(".lora_A.")[0].removeprefix("base_model.model.")
            module = modules.get(module_name)
            in_features = f.get_slice(key).get_shape()[1]
            if module is None or getattr(module, "in_features", in_features) != in_features:
                found = "absent" if module is None else f"takes {module.in_features} inputs"
                raise ValueError(
                    f"The LoRA sentinel in {adapter_dir} does not fit this target: its layer {module_name} expects "
                    f"{in_features} inputs, the target's is {found}. The adapter was trained for another base model; "
                    f"use a sentinel trained for this target, or load it with its own base "
                    f"(sentinel_base_name_or_path=...)."
                )


# A saved sentinel folder loads through AutoModelForCausalLM (and so the stock text-generation pipeline) without
# trust_remote_code; SentinelConfig registers with AutoConfig in .configuration, and building one imports this module.
AutoModelForCausalLM.register(SentinelConfig, SentinelForCausalLM, exist_ok=True)
