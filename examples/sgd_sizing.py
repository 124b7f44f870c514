"""How diffusion-temperature's size was chosen: plain SGD on 8 MNIST digits at 7 px, trained from
scratch, two runs per setting, every step sampled over a window after a burn-in.

    python examples/sgd_sizing.py            # about 4.5 minutes on 2 cores

For each (lr, B) it prints f_mem in the window and the mean memorization episode length (steps,
memdyn.protocol, checkpoints every step). At lr 0.4 the lengths are about a dozen steps whatever B,
a large-step regime where SGD is not its SDE; at lr 0.1 they start to grow with B.
"""

import numpy as np
import torch

from memdyn.diffusion import ResidualMLP, load_dataset
from memdyn.diffusion.ensemble import train_ensemble
from memdyn.protocol import mean_episode_length

RUNS = 2


def measure(lr: float, batches: list[int], burn: int, window: int) -> None:
    settings = [(b, r) for b in batches for r in range(RUNS)]
    data = torch.stack([load_dataset("mnist5k-7", 8, seed=r).train for _, r in settings])
    res = train_ensemble(lambda: ResidualMLP((1, 7, 7), width=64), data, steps=burn + window, lrs=lr,
                         batch_sizes=[b for b, _ in settings], weights_seeds=[r for _, r in settings],
                         batch_seeds=list(range(100, 100 + len(settings))), every=1, start=burn, probes=32,
                         sample_steps=10, progress=False)
    for b in batches:
        mons = [m for m, (bb, _) in zip(res.monitors, settings) if bb == b]
        f_mem = np.mean([m.f_mem(n_boot=2)["f_mem"].mean() for m in mons])
        length = mean_episode_length([m.states() for m in mons], 1, free=8)
        print(f"lr {lr:g}  B {b:3d}  steps {burn}+{window}  f_mem {f_mem:.2f}  mean episode {length:.1f} steps")


if __name__ == "__main__":
    torch.set_num_threads(1)
    measure(0.4, [16, 64, 256], 8000, 1000)
    measure(0.1, [8, 32, 128], 20000, 2000)
