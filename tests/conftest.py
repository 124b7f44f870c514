import os

os.environ.setdefault("MPLBACKEND", "Agg")

if os.environ.get("PYTEST_XDIST_WORKER"):
    # pytest -n N: the cores are shared out among the workers, as among a sweep's workers
    import torch

    from memdyn.sweep import worker_threads

    torch.set_num_threads(worker_threads(int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))))
