"""`RedFlagLogitsProcessor`: the model's own p(<rf>) read at every decoding step, and what to do when it fires."""

from __future__ import annotations

import torch
from transformers import LogitsProcessor

from ..generation import positions_from_mask
from .settings import DEFAULT_REFUSAL, RedFlagSettings, check_action, check_threshold

__all__ = ["RedFlagLogitsProcessor", "RequestAloneReader", "red_flag_probability", "smoothed_score"]


def red_flag_probability(logits: torch.Tensor, red_flag_token_id: int, vocab_size: int) -> torch.Tensor:
    """p(`<rf>`) from next-token ``logits`` (..., vocabulary), in float32, over the real tokens only: the rows at
    or above ``vocab_size`` pad the embedding matrix and take no probability mass."""
    real = logits[..., :vocab_size].float()
    return torch.exp(real[..., red_flag_token_id] - torch.logsumexp(real, dim=-1))


def smoothed_score(recent: torch.Tensor, counted: torch.Tensor) -> torch.Tensor:
    """The flag's score: the mean of the newest ``counted`` probabilities (1 to ``window``) of each window of
    ``recent`` (..., window), newest last. Shared by the processor (one window per row, step by step) and
    :class:`~hf_sentinel.red_flag.RedFlagJudge` (every step's window at once), so both smooth alike.

    >>> smoothed_score(torch.tensor([[0.0, 0.2, 0.6], [0.0, 0.0, 0.3]]), torch.tensor([2, 1]))
    tensor([0.4000, 0.3000])
    """
    sums = recent.flip(-1).cumsum(-1)
    return sums.gather(-1, (counted - 1).unsqueeze(-1)).squeeze(-1) / counted


class RedFlagLogitsProcessor(LogitsProcessor):
    r"""Reads p(`<rf>`) at every generation step and stops, refuses or flags a sequence when it fires.

    A model trained with :class:`~hf_sentinel.red_flag.RedFlagTrainer` puts probability on its red-flag token
    `<rf>` where a harmful answer is produced or imminent. At each step this processor computes that
    probability from the raw scores (it runs before the sampling warpers: temperature and top-p do not change
    it), smooths it over the last ``window`` steps, and records for every sequence of the batch whether and
    where the score first reached ``threshold``. Then it applies ``action``:

    - ``"refuse"``: the sequence ends at once (its end-of-sequence token is forced); the caller replaces the
      partial answer by a refusal (:meth:`refuse` does it, and so does ``RedFlagDefense``).
    - ``"stop"``: the sequence ends at once and its partial answer is kept.
    - ``"flag"``: generation goes on unchanged; :attr:`flags` reports where it fired.

    In every case `<rf>` itself is masked, so it never appears in the text, and so are the padding rows of a
    vocabulary padded past ``vocab_size``. One processor serves one batch: build a fresh one per
    ``generate()`` call. Rows that have already ended (they produced an end-of-sequence token) are not read.

    Args:
        red_flag_token_id (`int`): id of `<rf>` in the model's vocabulary.
        threshold (`float`): score in (0, 1) at which a sequence is flagged.
        action (`str`): ``"refuse"``, ``"stop"`` or ``"flag"``.
        eos_token_id (`int` or `list[int]`, *optional*): end-of-sequence id(s); needed by ``"refuse"`` and
            ``"stop"``, and to stop reading finished rows.
        vocab_size (`int`, *optional*): number of real tokens (``len(tokenizer)``); rows at or above it are
            padding of the embedding matrix and are masked. Defaults to ``red_flag_token_id + 1``.
        window (`int`, *optional*, defaults to 1): the score is the mean of p(`<rf>`) over the last ``window``
            steps of the sequence (1 = the current step only).
        refusal_text (`str`, *optional*): what :meth:`refuse` puts in place of a flagged answer.
        reader (`callable`, *optional*): ``reader(input_ids) -> logits`` (batch, vocabulary) that p(`<rf>`) is read
            from instead of the scores being processed, e.g. :class:`RequestAloneReader`: the red-flag model reading
            the request as the user sent it, where the generating context has a defense's prefix or suffix, or
            where another model (the original target) generates. The scores then need no `<rf>` column.

    Examples:

    ```python
    >>> import torch
    >>> from transformers import LogitsProcessorList
    >>> from hf_sentinel.defaults import tiny_model
    >>> from hf_sentinel.red_flag import RedFlagLogitsProcessor, add_red_flag_token
    >>> model, tokenizer = tiny_model()
    >>> red_flag_id = add_red_flag_token(model, tokenizer)
    >>> # Stand-in for a trained model that flags this answer: raise the <rf> logit at every step.
    >>> hook = model.get_output_embeddings().register_forward_hook(
    ...     lambda module, args, logits: logits.index_fill(-1, torch.tensor([red_flag_id]), 30.0))
    >>> inputs = tokenizer(["How do I bake bread?"], return_tensors="pt")
    >>> processor = RedFlagLogitsProcessor.from_tokenizer(tokenizer, threshold=0.5, action="refuse")
    >>> output = model.generate(**inputs, logits_processor=LogitsProcessorList([processor]), max_new_tokens=8,
    ...                         do_sample=False)
    >>> processor.flags[0]["fired"], processor.flags[0]["step"]
    (True, 0)
    >>> processor.refuse(["(partial answer)"])
    ["I'm sorry, but I can't help with that."]

    ```

    The scores alone show the mechanics: column 3 is `<rf>`, column 4 a padding row, token 0 ends a sequence.

    ```python
    >>> processor = RedFlagLogitsProcessor(red_flag_token_id=3, threshold=0.5, action="refuse", eos_token_id=0,
    ...                                    vocab_size=4)
    >>> scores = torch.tensor([[0.0, 0.0, 0.0, 5.0, 9.0], [0.0, 2.0, 1.0, -5.0, 9.0]])
    >>> processor(torch.tensor([[7], [7]]), scores)
    tensor([[0., -inf, -inf, -inf, -inf],
            [0., 2., 1., -inf, -inf]])
    >>> [(flag["fired"], flag["step"], round(flag["probability"], 3)) for flag in processor.flags]
    [(True, 0, 0.98), (False, None, 0.001)]

    ```
    """

    def __init__(self, red_flag_token_id: int, threshold: float = 0.5, action: str = "refuse",
                 eos_token_id: int | list[int] | None = None, vocab_size: int | None = None, window: int = 1,
                 refusal_text: str = DEFAULT_REFUSAL, reader=None):
        check_threshold(threshold)
        check_action(action)
        if not isinstance(red_flag_token_id, int) or red_flag_token_id < 0:
            raise ValueError(f"red_flag_token_id must be a token id (int >= 0), got {red_flag_token_id!r}.")
        if isinstance(window, bool) or not isinstance(window, int) or window < 1:
            raise ValueError(f"window must be a positive number of steps, got {window!r}.")
        vocab_size = red_flag_token_id + 1 if vocab_size is None else vocab_size
        if red_flag_token_id >= vocab_size:
            raise ValueError(f"red_flag_token_id {red_flag_token_id} is outside the vocabulary of {vocab_size} "
                             f"tokens.")
        eos = [] if eos_token_id is None else [eos_token_id] if isinstance(eos_token_id, int) else list(eos_token_id)
        if action != "flag" and not eos:
            raise ValueError(f"action={action!r} ends flagged sequences, which needs eos_token_id; "
                             f"pass it (e.g. tokenizer.eos_token_id) or use action='flag'.")
        self.red_flag_token_id = red_flag_token_id
        self.threshold = threshold
        self.action = action
        self.eos_token_ids = eos
        self.vocab_size = vocab_size
        self.window = window
        self.refusal_text = refusal_text
        self.reader = reader
        self._start_length: int | None = None
        self._recent: torch.Tensor | None = None  # (batch, window) probabilities of the last steps
        self._steps_read: torch.Tensor | None = None  # per row: how many steps have been read
        self._finished: torch.Tensor | None = None
        self._fired_step: torch.Tensor | None = None  # -1 = not fired
        self._max_score: torch.Tensor | None = None

    @classmethod
    def from_tokenizer(cls, tokenizer, token: str = "<rf>", **kwargs) -> RedFlagLogitsProcessor:
        """Build the processor for a tokenizer that contains the red-flag ``token`` (``eos_token_id`` and
        ``vocab_size`` are taken from the tokenizer unless given)."""
        token_id = tokenizer.convert_tokens_to_ids(token)
        if token not in tokenizer.get_vocab() or token_id is None or token_id == tokenizer.unk_token_id:
            raise ValueError(
                f"The tokenizer has no red-flag token {token!r}, so this model cannot flag anything. Load a model "
                f"trained with RedFlagTrainer together with its tokenizer (hf_sentinel.red_flag.load_red_flag_model), "
                f"or train one with `hf-sentinel train red-flag`."
            )
        kwargs.setdefault("eos_token_id", tokenizer.eos_token_id)
        kwargs.setdefault("vocab_size", len(tokenizer))
        return cls(token_id, **kwargs)

    @classmethod
    def from_pretrained(cls, path, **overrides) -> RedFlagLogitsProcessor:
        """The processor a trained red-flag folder describes (token, threshold, action, window); keyword
        arguments override the saved values, e.g. ``threshold=0.9`` or ``action="flag"``."""
        from transformers import AutoTokenizer

        settings = RedFlagSettings.from_pretrained(path)
        tokenizer = AutoTokenizer.from_pretrained(path)
        kwargs = dict(threshold=settings.threshold, action=settings.action, window=settings.window,
                      refusal_text=settings.refusal_text)
        return cls.from_tokenizer(tokenizer, token=settings.token, **{**kwargs, **overrides})

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        read = scores if self.reader is None else self.reader(input_ids)
        if read.shape[-1] <= self.red_flag_token_id:
            reading = "The model's" if self.reader is None else "The reader's model's"
            raise ValueError(
                f"{reading} vocabulary has {read.shape[-1]} entries, so it has no red-flag token (id "
                f"{self.red_flag_token_id}). Read with the model trained for <rf> (load_red_flag_model), "
                f"not the original one."
            )
        batch = scores.shape[0]
        if self._start_length is None:
            self._start(batch, scores.device)
            self._start_length = input_ids.shape[1]
        elif self.eos_token_ids:
            # A row whose last token ends the sequence has finished: later steps only produce padding for it.
            eos = torch.tensor(self.eos_token_ids, device=input_ids.device)
            self._finished |= torch.isin(input_ids[:, -1], eos)
        step = input_ids.shape[1] - self._start_length

        probability = red_flag_probability(read, self.red_flag_token_id, self.vocab_size)
        reading = ~self._finished
        self._recent = torch.roll(self._recent, shifts=-1, dims=1)
        self._recent[:, -1] = probability
        self._steps_read += reading.long()
        score = smoothed_score(self._recent, self._steps_read.clamp(max=self.window).clamp(min=1))
        self._max_score = torch.where(reading, torch.maximum(self._max_score, score), self._max_score)
        newly_fired = reading & (self._fired_step < 0) & (score >= self.threshold)
        self._fired_step[newly_fired] = step

        scores = scores.clone()
        # Slices, not an index: read by a reader, the generating model may have no <rf> column (the original target).
        scores[:, self.red_flag_token_id:self.red_flag_token_id + 1] = -float("inf")
        scores[:, self.vocab_size:] = -float("inf")
        if self.action != "flag":
            stopping = (self._fired_step >= 0) & ~self._finished
            if stopping.any():
                scores[stopping] = -float("inf")
                scores[stopping, self.eos_token_ids[0]] = 0.0
        return scores

    def _start(self, batch: int, device) -> None:
        self._recent = torch.zeros(batch, self.window, device=device)
        self._steps_read = torch.zeros(batch, dtype=torch.long, device=device)
        self._finished = torch.zeros(batch, dtype=torch.bool, device=device)
        self._fired_step = torch.full((batch,), -1, dtype=torch.long, device=device)
        self._max_score = torch.zeros(batch, device=device)

    @property
    def flags(self) -> list[dict]:
        """Per sequence of the last batch: ``{"fired": bool, "step": int | None, "probability": float}``.

        ``step`` counts generated tokens (0 = the first one) and is the first step at which the score reached
        the threshold; ``probability`` is the highest score seen while the sequence was generating.
        """
        if self._fired_step is None:
            return []
        return [{"fired": step >= 0, "step": step if step >= 0 else None, "probability": max_score}
                for step, max_score in zip(self._fired_step.tolist(), self._max_score.tolist())]

    @property
    def max_scores(self) -> list[float]:
        """Per sequence of the last batch: the highest (smoothed) score over the whole generation."""
        return [] if self._max_score is None else self._max_score.tolist()

    def refuse(self, texts: list[str]) -> list[str]:
        """``texts`` (the decoded answers of the batch, in order) with every flagged one replaced by the refusal."""
        flags = self.flags
        if len(texts) != len(flags):
            raise ValueError(f"Got {len(texts)} answers for a batch of {len(flags)} sequences; pass the whole "
                             f"batch, in order.")
        return [self.refusal_text if flag["fired"] else text for text, flag in zip(texts, flags)]



class RequestAloneReader:
    """The model's next-token logits on the request as the user sent it, followed by the answer generated so far.

    Stacked behind defenses that change what the target reads (a DRO soft prompt in front, a sentinel's suffix),
    the red flag would read p(`<rf>`) in a context it was not trained on; measured on the held-out suite, it then
    stopped firing on harmful requests it flags alone. Handed to :class:`RedFlagLogitsProcessor` as ``reader``, this
    runs a second, cached forward pass of the same model over the request as sent, one generated token per step,
    so the flag judges the answer as it would alone. It costs one more decoding pass (and the request's prefill).
    The same reader lets the red-flag model watch another model's answer: with
    ``RedFlagSettings.answers_from_original`` the original target generates and this reads beside it.

    Args:
        model: the red-flag model (the generating one, or a copy beside the original target that generates).
        requests (`dict`): the batch as sent, left-padded: ``input_ids`` and ``attention_mask``.

    Examples:

    ```python
    >>> import torch
    >>> from hf_sentinel.defaults import tiny_model
    >>> model, tokenizer = tiny_model()
    >>> request = tokenizer(["How do I bake bread?"], return_tensors="pt")
    >>> reader = RequestAloneReader(model, dict(request))
    >>> first = reader(torch.tensor([[5, 6, 7]]))  # the generating side's ids (another context): not read at step 0
    >>> second = reader(torch.tensor([[5, 6, 7, 9]]))  # step 1: the request, then the generated token 9
    >>> alone = model(torch.cat([request["input_ids"], torch.tensor([[9]])], dim=1)).logits[:, -1]
    >>> torch.allclose(second, alone, atol=1e-5)
    True

    ```
    """

    def __init__(self, model, requests: dict):
        self.model = model
        self.input_ids = requests["input_ids"]
        self.attention_mask = requests["attention_mask"]
        self.cache = None

    @torch.no_grad()
    def __call__(self, input_ids: torch.LongTensor) -> torch.FloatTensor:
        if self.cache is None:  # step 0: the request as sent, the answer's first token still to come
            new = self.input_ids
        else:  # the token the generating side just produced (padding for rows that ended: never read)
            new = input_ids[:, -1:].to(self.input_ids.device)
            self.attention_mask = torch.cat([self.attention_mask, torch.ones_like(new)], dim=1)
        positions = positions_from_mask(self.attention_mask, last=new.shape[1])
        output = self.model(input_ids=new, attention_mask=self.attention_mask, position_ids=positions,
                            past_key_values=self.cache, use_cache=True)
        self.cache = output.past_key_values
        return output.logits[:, -1]
