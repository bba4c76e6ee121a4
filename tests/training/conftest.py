import pytest

from .helpers import WordTokenizer


@pytest.fixture
def tokenizer():
    return WordTokenizer()
