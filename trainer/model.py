"""Tokenizer and model: a random-init preset (no download) or a hub name / local directory.

Presets (``tiny`` for tests and demos, ``bert-base-random`` with bert-base-cased's shape for GPU
benchmarks) get a WordPiece tokenizer trained on the training text in well under a second. The
tokenizer is part of the trial's state: rank 0 trains it once, saves it in the run directory, and
every rank (and every restart) uses exactly that vocabulary.
"""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path
from typing import Any

from trainer.config import TrainConfig
from trainer.distributed import DistInfo, broadcast_object, main_process_first

logger = logging.getLogger(__name__)

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
# BertConfig's defaults are bert-base (768 hidden, 12 layers, 12 heads, 3072 intermediate).
PRESETS: dict[str, dict[str, Any]] = {
    "tiny": {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 128},
    "bert-base-random": {"vocab_size": 28996},  # bert-base-cased's vocabulary size
}
PRESET_TOKENIZER_VOCAB = {"tiny": 2000, "bert-base-random": 28996}
PRESET_MAX_POSITIONS = 512


def is_preset(model: str) -> bool:
    return model in PRESETS


def train_wordpiece(texts: list[str], vocab_size: int) -> Any:
    """A BERT-style WordPiece tokenizer whose vocabulary is learned from ``texts``.

    The vocabulary is every character seen (as a word start and as a ``##`` continuation, so any
    word of the text can be spelled) followed by the most frequent whole words, ties broken
    alphabetically, up to ``vocab_size``. Unlike ``tokenizers``' own WordPieceTrainer, whose
    result varies from run to run, the same texts always give the same vocabulary, so runs with
    the same seed train the same model.
    """
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

    normalizer = normalizers.BertNormalizer(lowercase=True)
    pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    counts: Counter[str] = Counter()
    for text in texts:
        counts.update(word for word, _ in pre_tokenizer.pre_tokenize_str(normalizer.normalize_str(text)))
    alphabet = sorted({char for word in counts for char in word})
    tokens = list(SPECIAL_TOKENS) + alphabet + ["##" + char for char in alphabet]
    known = set(tokens)
    by_frequency = sorted((word for word in counts if word not in known), key=lambda word: (-counts[word], word))
    tokens += by_frequency[: max(vocab_size - len(tokens), 0)]
    tokenizer = Tokenizer(models.WordPiece(vocab={token: i for i, token in enumerate(tokens)}, unk_token="[UNK]"))
    tokenizer.normalizer = normalizer
    tokenizer.pre_tokenizer = pre_tokenizer
    tokenizer.decoder = decoders.WordPiece()
    cls_id, sep_id = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)]
    )
    return tokenizer


def wrap_tokenizer(tokenizer_json: str) -> Any:
    """A transformers fast tokenizer around a ``tokenizers`` JSON definition."""
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_str(tokenizer_json),
        pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]",
        model_max_length=PRESET_MAX_POSITIONS,
    )


def build_tokenizer(config: TrainConfig, train_texts: list[str], *, run_dir: Path, dist: DistInfo) -> Any:
    """The trial's tokenizer, identical on every rank and across restarts."""
    if not is_preset(config.model):
        from transformers import AutoTokenizer

        with main_process_first(dist):  # rank 0 fills the hub cache, the others read it
            return AutoTokenizer.from_pretrained(config.model)
    saved = run_dir / "tokenizer.json"
    tokenizer_json = None
    if dist.is_main:
        if config.resume and saved.exists():
            tokenizer_json = saved.read_text(encoding="utf-8")
            logger.info("using the trial's saved tokenizer %s", saved)
        else:
            tokenizer_json = train_wordpiece(train_texts, PRESET_TOKENIZER_VOCAB[config.model]).to_str()
            _write_atomic(saved, tokenizer_json)
    return wrap_tokenizer(broadcast_object(tokenizer_json, dist))


def build_model(config: TrainConfig, tokenizer: Any, label_names: tuple[str, ...], *, dist: DistInfo) -> Any:
    """Sequence classifier with ``len(label_names)`` outputs; call after seeding for a seeded init."""
    # keyword arguments of both config classes (BertConfig here, the model's own via AutoConfig below)
    labels: dict[str, Any] = {"num_labels": len(label_names), "id2label": dict(enumerate(label_names)),
                              "label2id": {name: i for i, name in enumerate(label_names)}}
    dropout: dict[str, Any] = {"hidden_dropout_prob": config.dropout, "attention_probs_dropout_prob": config.dropout}
    if is_preset(config.model):
        from transformers import BertConfig, BertForSequenceClassification

        shape = {"vocab_size": len(tokenizer), **PRESETS[config.model]}
        model_config = BertConfig(**shape, **labels, **dropout, pad_token_id=tokenizer.pad_token_id,
                                  max_position_embeddings=PRESET_MAX_POSITIONS)
        return BertForSequenceClassification(model_config)
    from transformers import AutoConfig, AutoModelForSequenceClassification

    with main_process_first(dist):
        model_config = AutoConfig.from_pretrained(config.model, **labels)
        for name, value in dropout.items():
            if hasattr(model_config, name):
                setattr(model_config, name, value)
            else:
                logger.warning("%s has no %s: --dropout does not apply to it", config.model, name)
        return AutoModelForSequenceClassification.from_pretrained(
            config.model, config=model_config, ignore_mismatched_sizes=True
        )


def max_positions(model: Any) -> int:
    return int(getattr(model.config, "max_position_embeddings", PRESET_MAX_POSITIONS))


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
