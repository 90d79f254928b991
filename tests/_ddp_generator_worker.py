"""Run under torchrun by test_train_ddp: train the tiny generator on the tiny official tokenizer for a few steps
(EMA on), then save this process's generator and EMA weights, the generator as built (``init.``) and the
tokenizer's weights after training (``tok.``)."""
import sys
from pathlib import Path

from safetensors.torch import save_file

from imagefolder.distributed import init_from_env, shutdown
from imagefolder.train.generator_trainer import GeneratorTrainer
from imagefolder.train.options import GENERATOR_ACCEPTED_ONLY, GeneratorTrainOptions, load_options

data, out, tokenizer = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
info = init_from_env("cpu")
opts, model = load_options(GeneratorTrainOptions, GENERATOR_ACCEPTED_ONLY, None, {
    "model_preset": "tiny", "tokenizer": tokenizer, "data_path": str(data), "max_steps": 3, "global_batch_size": 4,
    "num_workers": 0, "val_every": 0, "tensorboard": False, "val_samples": 0, "ema_decay": 0.5, "lr": 1e-3})


class Recorded(GeneratorTrainer):
    def build(self, schedule):
        super().build(schedule)
        self.initial = {f"init.gen.{k}": v.detach().clone() for k, v in self.gen.state_dict().items()}


trainer = Recorded(opts, model, out, info, show_progress=False)
trainer.fit()
state = {f"gen.{k}": v.contiguous() for k, v in trainer.gen.state_dict().items()}
state.update({f"ema.{k}": v.contiguous() for k, v in trainer.ema.shadow.items()})
state.update({f"tok.{k}": v.contiguous() for k, v in trainer.tok.state_dict().items()})
state.update({k: v.contiguous() for k, v in trainer.initial.items()})
save_file(state, str(out / f"rank{info.rank}.safetensors"))
shutdown()
