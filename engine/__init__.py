"""rwkv-tui's inference engine: RWKV-7 models, states, tokenizers, sampling and music.

A library first: the TUI and the CLI are thin clients of the names exported here, and nothing
in this package imports Textual.
"""

from engine.chat import Conversation, ThinkMode, Turn
from engine.checkpoint import ModelConfig
from engine.errors import BackendError, CheckpointError, EngineError, StateError, TokenizerError
from engine.generate import Generation, GenerationResult, GenerationStats, StopReason
from engine.model import Model, ModelInfo, build_model, load_model
from engine.sampling import Sampler, SamplingParams
from engine.state import State
from engine.tokenizers import Tokenizer, get_tokenizer, tokenizer_name_for

__all__ = [
    "BackendError", "CheckpointError", "Conversation", "EngineError", "Generation",
    "GenerationResult", "GenerationStats", "Model", "ModelConfig", "ModelInfo", "Sampler",
    "SamplingParams", "State", "StateError", "StopReason", "ThinkMode", "Tokenizer",
    "TokenizerError", "Turn", "build_model", "get_tokenizer", "load_model", "tokenizer_for_model",
    "tokenizer_name_for",
]


def tokenizer_for_model(model: Model, override: str | None = None) -> Tokenizer:
    """The tokenizer a loaded model was trained with, or ``override`` by name."""
    name = override or tokenizer_name_for(model.info.path, model.config.vocab)
    return get_tokenizer(name)
