"""The one device rule."""

from __future__ import annotations

import pytest
import torch

from service.models.device import resolve_device


def test_auto_is_cuda_only_where_there_is_a_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == torch.device("cuda")
    assert resolve_device("cuda:1") == torch.device("cuda:1")


def test_names_are_torchs_and_missing_cuda_is_refused(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("cpu") == resolve_device(torch.device("cpu")) == torch.device("cpu")
    with pytest.raises(RuntimeError, match="'cuda' asked for, but this process sees no GPU"):
        resolve_device("cuda")
    with pytest.raises(RuntimeError):
        resolve_device("nonsense")
