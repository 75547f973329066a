import os
import socket

import torch
import torch.multiprocessing as mp

from auggen.recognition.train import FRTrainConfig, train_fr

CFG = FRTrainConfig(
    backbone="ir18",
    width=4,
    input_size=16,
    embedding_size=16,
    batch_size=16,  # global: 8 per rank
    epochs=2,
    milestones=(),
    partial_fc_rate=0.5,
    checkpoint_every_steps=3,  # a checkpoint inside epoch 1: its collectives run on all ranks
)


def _worker(rank, world, port, out):
    # What torchrun sets for each process.
    os.environ.update(
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(world),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
    )
    torch.set_num_threads(1)
    from tests.recognition.conftest import toy_faces

    net = train_fr(CFG, toy_faces(size=16), out / "run", progress=False)
    torch.save(net.state_dict(), out / f"rank{rank}.pt")


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_gloo_ranks_end_with_identical_weights(tmp_path):
    mp.start_processes(_worker, args=(2, _free_port(), tmp_path), nprocs=2, start_method="spawn")
    a = torch.load(tmp_path / "rank0.pt", weights_only=True)
    b = torch.load(tmp_path / "rank1.pt", weights_only=True)
    for k in a:
        assert torch.equal(a[k], b[k]), k
    history = (tmp_path / "run" / "history.csv").read_text().splitlines()
    assert len(history) == 3  # header + 2 epochs, written once by rank 0
    # 64 images / 16 per step (8 per rank) = 4 steps per epoch.
    assert history[-1].split(",")[1] == "8"
    assert (tmp_path / "run" / "model.safetensors").exists()
