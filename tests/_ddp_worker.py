"""Run under torchrun by test_train_ddp: train the tiny tokenizer (ViT, or conv with argv[3] == "cnn"), then save
this process's weights, and the tokenizer's and discriminator's weights as built (before the first step) under
``init.``."""
import sys
from pathlib import Path

from safetensors.torch import save_file

sys.path.insert(0, str(Path(__file__).parent))
from _train_helpers import TINY_CNN_TOKENIZER, TINY_TOKENIZER  # noqa: E402

from imagefolder.distributed import init_from_env, shutdown  # noqa: E402
from imagefolder.train.options import TOKENIZER_ACCEPTED_ONLY, TokenizerTrainOptions, load_options  # noqa: E402
from imagefolder.train.tokenizer_trainer import TokenizerTrainer  # noqa: E402

data, out = Path(sys.argv[1]), Path(sys.argv[2])
info = init_from_env("cpu")
base = TINY_CNN_TOKENIZER if sys.argv[3:] == ["cnn"] else TINY_TOKENIZER
opts, model = load_options(TokenizerTrainOptions, TOKENIZER_ACCEPTED_ONLY, None, {
    **base, "data_path": str(data), "max_steps": 3, "semantic_guide": "dinov2",
    "disc_type": "patchgan", "disc_num_layers": 1, "disc_dim": 8, "disc_start": 1, "lecam_loss_weight": 0.01})


class Recorded(TokenizerTrainer):
    def build(self, schedule):
        super().build(schedule)
        self.initial = {**{f"init.tok.{k}": v.detach().clone() for k, v in self.tok.state_dict().items()},
                        **{f"init.disc.{k}": v.detach().clone() for k, v in self.disc.state_dict().items()}}


trainer = Recorded(opts, model, out, info, show_progress=False)
trainer.fit()
state = {f"tok.{k}": v.contiguous() for k, v in trainer.tok.state_dict().items()}
state.update({f"disc.{k}": v.contiguous() for k, v in trainer.disc.state_dict().items()})
state.update({f"ema.{k}": v.contiguous() for k, v in trainer.ema.shadow.items()})
state.update({k: v.contiguous() for k, v in trainer.initial.items()})
save_file(state, str(out / f"rank{info.rank}.safetensors"))
shutdown()
