"""Run under torchrun by test_train_ddp: train the tiny conv tokenizer on a folder where one process's share of the
first epoch is unreadable; each process reports the error it stopped with as ``rank R: MESSAGE`` and exits 3."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _train_helpers import TINY_CNN_TOKENIZER  # noqa: E402

from imagefolder.distributed import init_from_env, shutdown  # noqa: E402
from imagefolder.train.engine import TrainingError  # noqa: E402
from imagefolder.train.options import TOKENIZER_ACCEPTED_ONLY, TokenizerTrainOptions, load_options  # noqa: E402
from imagefolder.train.tokenizer_trainer import TokenizerTrainer  # noqa: E402

data, out = Path(sys.argv[1]), Path(sys.argv[2])
info = init_from_env("cpu")
opts, model = load_options(TokenizerTrainOptions, TOKENIZER_ACCEPTED_ONLY, None, {
    **TINY_CNN_TOKENIZER, "data_path": str(data), "max_steps": 40, "semantic_guide": "none", "val_every": 0})
try:
    TokenizerTrainer(opts, model, out, info, show_progress=False).fit()
except TrainingError as e:
    print(f"rank {info.rank}: {e}", flush=True)
    shutdown()
    sys.exit(3)
shutdown()
