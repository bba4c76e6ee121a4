"""Warm starts: begin a run from a model in the store instead of from random weights.

Every session that trains should ship a better model than the last, so a run can start from
the shipped one (`train --init-from es-en/transformer@2`). The usual case is the same
architecture and size on a new corpus. The vocabulary may differ, since a new corpus gets a
new SentencePiece model: the layers that do not depend on the vocabulary are copied as they are,
and each row of an embedding (or of the output bias) is carried over by piece: a piece both
vocabularies have keeps its row; a new piece starts from the mean of the rows of the old
pieces its text splits into under the old tokenizer, which places "reunión" near "re" + "unión"
rather than at random. This is the vocabulary-transfer initialisation of Xu et al. and
Gee et al. (2022) in its simplest form, and it is what lets a new vocabulary keep what the old
model learnt.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from service.models import config_to_dict


@dataclass(frozen=True)
class WarmStart:
    model_id: str
    version: int
    copied: int  # tensors copied whole
    remapped: int  # vocabulary-indexed tensors carried over piece by piece
    shared_pieces: int  # pieces both vocabularies have
    new_pieces: int

    def as_dict(self) -> dict:
        return {
            "from": f"{self.model_id}@{self.version}",
            "tensors_copied": self.copied,
            "tensors_remapped": self.remapped,
            "shared_pieces": self.shared_pieces,
            "new_pieces": self.new_pieces,
        }


def parse_init_from(spec: str) -> tuple[str, int | None]:
    """'es-en/transformer@2' -> ('es-en/transformer', 2); no '@': the newest version."""
    model_id, _, version = spec.partition("@")
    if not model_id:
        raise ValueError(f"--init-from needs a model id such as es-en/transformer@2, got {spec!r}")
    if version and not version.isdigit():
        raise ValueError(f"--init-from: version must be a number, got {version!r}")
    return model_id, int(version) if version else None


def piece_map(old_tokenizer, new_tokenizer) -> list[list[int]]:
    """For each new id, the old ids whose rows initialise it (one id for a shared piece)."""
    old_pieces = old_tokenizer.pieces(list(range(old_tokenizer.vocab_size)))
    old_index = {piece: i for i, piece in enumerate(old_pieces)}
    mapping: list[list[int]] = []
    for piece in new_tokenizer.pieces(list(range(new_tokenizer.vocab_size))):
        if piece in old_index:
            mapping.append([old_index[piece]])
            continue
        text = piece.replace("\u2581", " ")
        ids = [i for i in old_tokenizer.encode(text) if i != old_tokenizer.unk_id]
        mapping.append(ids)
    return mapping


def _vocab_axis(old: Tensor, new: Tensor, old_vocab: int, new_vocab: int) -> int | None:
    """The axis a tensor is indexed by piece on: (V, d) embeddings, (1, V) output biases."""
    if old.ndim != new.ndim:
        return None
    for axis in range(old.ndim):
        rest_old = old.shape[:axis] + old.shape[axis + 1 :]
        rest_new = new.shape[:axis] + new.shape[axis + 1 :]
        if old.shape[axis] == old_vocab and new.shape[axis] == new_vocab and rest_old == rest_new:
            return axis
    return None


def _remap(old: Tensor, mapping: list[list[int]], fallback: Tensor, axis: int) -> Tensor:
    """`old` gathered piece by piece along `axis`; pieces with nothing to map keep `fallback`."""
    old_rows, rows = old.movedim(axis, 0), fallback.clone().movedim(axis, 0)
    for new_id, old_ids in enumerate(mapping):
        if old_ids:
            rows[new_id] = old_rows[old_ids].mean(dim=0)
    return rows.movedim(0, axis)


def warm_start(
    model: nn.Module,
    arch: str,
    model_config,
    tokenizer,
    init_from: str,
    store_root,
) -> WarmStart:
    """Load the stored model named by `init_from` into `model` (same arch and size)."""
    from service.store import ModelStore
    from service.text.tokenizer import Tokenizer

    model_id, version = parse_init_from(init_from)
    loaded = ModelStore(store_root).load(model_id, version)
    if loaded.manifest.arch != arch:
        raise ValueError(
            f"--init-from {init_from}: a {loaded.manifest.arch} model cannot start a {arch} run"
        )
    stored = loaded.manifest.config
    theirs = dict(stored) if isinstance(stored, dict) else config_to_dict(stored)
    ours = dict(config_to_dict(model_config))
    ignored = {"vocab_size", "dropout", "attention_dropout", "activation_dropout"}
    differing = sorted(k for k in ours if k not in ignored and theirs.get(k) != ours[k])
    if differing:
        raise ValueError(
            f"--init-from {init_from}: its config differs from this run's in {differing}; "
            "use the same --preset"
        )
    old_state = loaded.model.state_dict()
    new_state = model.state_dict()
    old_tokenizer = Tokenizer.load(loaded.tokenizer_path)
    same_vocabulary = old_tokenizer.sha256 == tokenizer.sha256
    mapping = None if same_vocabulary else piece_map(old_tokenizer, tokenizer)
    old_vocab, new_vocab = old_tokenizer.vocab_size, tokenizer.vocab_size
    copied = remapped = 0
    with torch.no_grad():
        for name, tensor in new_state.items():
            old = old_state.get(name)
            if old is None:
                raise ValueError(f"--init-from {init_from}: it has no tensor {name!r}")
            axis = None if mapping is None else _vocab_axis(old, tensor, old_vocab, new_vocab)
            if axis is not None:
                tensor.copy_(_remap(old.to(tensor.dtype), mapping, tensor, axis))
                remapped += 1
            elif old.shape == tensor.shape:
                tensor.copy_(old.to(tensor.dtype))
                copied += 1
            else:
                raise ValueError(
                    f"--init-from {init_from}: tensor {name!r} has shape {tuple(old.shape)}, "
                    f"this run's {tuple(tensor.shape)}"
                )
    shared = 0 if mapping is None else sum(1 for ids in mapping if len(ids) == 1)
    return WarmStart(
        model_id=loaded.manifest.id,
        version=loaded.manifest.version,
        copied=copied,
        remapped=remapped,
        shared_pieces=new_vocab if mapping is None else shared,
        new_pieces=0 if mapping is None else new_vocab - shared,
    )
