"""imagefolder: ImageFolder (arXiv 2410.01756) tokenizer and VAR generator with folded tokens."""
from .config import (ConfigError, GeneratorConfig, TokenizerConfig, generator_preset, tokenizer_preset,
                     GENERATOR_PRESETS, TOKENIZER_PRESETS)
from .loading import (convert, export_official, export_var_release, load_generator, load_tokenizer, save_generator,
                      save_tokenizer)
from .models.generator import Generator
from .models.tokenizer import Tokenizer
from .errors import CheckpointError

__version__ = "0.1.0"

__all__ = [
    "CheckpointError", "ConfigError", "Generator", "GeneratorConfig", "Tokenizer", "TokenizerConfig",
    "GENERATOR_PRESETS", "TOKENIZER_PRESETS", "convert", "export_official", "export_var_release", "generator_preset", "load_generator",
    "load_tokenizer", "save_generator", "save_tokenizer", "tokenizer_preset",
]
