"""Run under torchrun by test_train_ddp: gather_with_grad over processes with different lengths; each process
prints what it gathered and the gradient its own rows received."""
import torch

from imagefolder.distributed import gather_with_grad, init_from_env, shutdown

info = init_from_env("cpu")
mine = torch.full((3 if info.rank == 0 else 1, 2), float(info.rank + 1), requires_grad=True)
everyone = gather_with_grad(mine)
(everyone * torch.arange(1.0, everyone.shape[0] + 1).unsqueeze(1)).sum().backward()
print(f"rank {info.rank}: gathered {everyone[:, 0].tolist()} grad {mine.grad[:, 0].tolist()}", flush=True)
shutdown()
