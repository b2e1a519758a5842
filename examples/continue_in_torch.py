"""Continue training an rnnkit char-LM in PyTorch with DistributedDataParallel, then bring it back to rnnkit.

The path past one machine: rnnkit trains on one CPU process; a user who outgrows it converts the
model to ``torch.nn`` (:func:`rnnkit.to_torch`), trains it with ``DistributedDataParallel`` over
several processes (here: ``--world-size`` CPU processes on this machine, gloo backend, localhost
only; on a cluster the same code runs with a real ``init_method`` and, on GPUs, the nccl backend),
converts it back (:func:`rnnkit.from_torch`) and deploys it NumPy-only::

    rnnkit train --minutes 2 --out runs/demo
    python examples/continue_in_torch.py runs/demo --steps 200 --out runs/continued.safetensors
    rnnkit sample runs/continued.safetensors --prime "The " --length 300

Each process reads its own rows of the text (the stream is split into ``world_size * batch_size``
rows, one contiguous stretch per row), truncated BPTT carries the hidden state from chunk to chunk,
and DDP averages the gradients so that every process holds the same weights after every step (the
script checks this at the end).  The result is a weights-only char-LM checkpoint, which ``rnnkit
sample`` reads like any other.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.nn.parallel import DistributedDataParallel

from rnnkit import Sequential, from_torch, to_torch
from rnnkit.charlm import load_model, load_text
from rnnkit.charlm.export import save_weights


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("checkpoint", metavar="RUN|CHECKPOINT", help="a char-LM run directory or checkpoint")
    p.add_argument("--out", required=True, help="the weights-only checkpoint to write (.safetensors)")
    p.add_argument("--data", help="UTF-8 text to train on (default: the text the run was trained on)")
    p.add_argument("--steps", type=int, default=200, help="optimizer steps (default %(default)s)")
    p.add_argument("--batch-size", type=int, default=32, help="rows per process (default %(default)s)")
    p.add_argument("--seq-len", type=int, default=64, help="truncated-BPTT chunk length (default %(default)s)")
    p.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (default %(default)s)")
    p.add_argument("--clip", type=float, default=5.0, help="max gradient norm (default %(default)s)")
    p.add_argument("--world-size", type=int, default=2, help="training processes (default %(default)s)")
    p.add_argument("--threads", type=int, default=1, help="torch threads per process (default %(default)s)")
    p.add_argument("--log-every", type=int, default=20, help="steps between printed losses (default %(default)s)")
    args = p.parse_args(argv)
    for name in ("steps", "batch_size", "seq_len", "world_size", "threads", "log_every"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be a positive integer")
    if not args.out.endswith(".safetensors"):
        p.error("--out must name a .safetensors file")
    return args


def worker(rank: int, world_size: int, rendezvous: str, net: Sequential, rows: np.ndarray,
           args: argparse.Namespace, result: str) -> None:
    """One training process: its own rows of the text, gradients averaged with the others by DDP."""
    torch.set_num_threads(args.threads)
    # Each process converts the rnnkit model itself.  (A torch module handed to mp.spawn would have its
    # tensors moved to shared memory: every process would then update the same weights.)
    module = to_torch(net)
    # The processes find each other through a file (no port to pick, so none to collide with); gloo then
    # connects them over the loopback device.  On a cluster: init_method="tcp://<rank 0's host>:<port>".
    dist.init_process_group("gloo", init_method=f"file://{rendezvous}", rank=rank, world_size=world_size)
    try:
        ddp = DistributedDataParallel(module)
        optimizer = torch.optim.Adam(ddp.parameters(), lr=args.lr)
        mine = torch.from_numpy(rows[rank * args.batch_size:(rank + 1) * args.batch_size])  # (B, N)
        chunks = (mine.shape[1] - 1) // args.seq_len
        state = None
        for step in range(args.steps):
            start = (step % chunks) * args.seq_len
            if start == 0:
                state = None  # a new pass over the rows starts from the zero state
            x, y = mine[:, start:start + args.seq_len], mine[:, start + 1:start + 1 + args.seq_len]
            logits, state = ddp(x, state)
            loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(ddp.parameters(), args.clip)
            optimizer.step()
            # Truncated BPTT: the state goes on, its gradient does not.
            state = {name: tuple(s.detach() for s in value) if isinstance(value, tuple) else value.detach()
                     for name, value in state.items()}
            if rank == 0 and (step % args.log_every == 0 or step == args.steps - 1):
                print(f"step {step + 1}/{args.steps}: {loss.item() / np.log(2):.3f} bits/char (rank 0's rows)",
                      flush=True)
        # DDP keeps the processes' weights identical; check it rather than trust it.
        weights = torch.nn.utils.parameters_to_vector(module.parameters()).detach()
        gathered = [torch.empty_like(weights) for _ in range(world_size)]
        dist.all_gather(gathered, weights)
        if rank == 0:
            if not all(torch.equal(g, weights) for g in gathered):
                raise RuntimeError("the processes' weights differ after training")
            print(f"the {world_size} processes hold identical weights", flush=True)
            torch.save(module.state_dict(), result)
        # Every process leaves the group together: one that tore down its connections while a peer
        # still used them died now and then in gloo's teardown (SIGABRT, "terminate called without
        # an active exception").
        dist.barrier()
    finally:
        dist.destroy_process_group()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    loaded = load_model(args.checkpoint)
    if loaded.document.get("mode", "stream") != "stream":
        sys.exit("continue_in_torch.py: this example continues stream-mode runs (not --mode lines)")
    data = args.data if args.data is not None else loaded.document.get("config", {}).get("data")
    text = load_text(data)
    unknown = loaded.vocab.unknown(text)
    if unknown:
        sys.exit(f"continue_in_torch.py: the text has {len(unknown)} character(s) outside the model's vocabulary")
    ids = loaded.vocab.encode(text).astype(np.int64)
    n_rows = args.world_size * args.batch_size
    per_row = len(ids) // n_rows
    if per_row < args.seq_len + 1:
        sys.exit(f"continue_in_torch.py: {len(ids)} characters are too few for {n_rows} rows of "
                 f"{args.seq_len + 1}; lower --batch-size, --seq-len or --world-size")
    rows = ids[:n_rows * per_row].reshape(n_rows, per_row)

    print(f"{loaded.path}: {loaded.model.config.cell} with {loaded.model.num_parameters():,} parameters, "
          f"{len(ids):,} characters; training on {args.world_size} processes x {args.batch_size} rows")
    if sys.platform == "linux":
        os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")  # gloo talks over the loopback device only
    with tempfile.TemporaryDirectory() as tmp:
        result = os.path.join(tmp, "trained.pt")
        rendezvous = os.path.join(tmp, "rendezvous")
        mp.spawn(worker, args=(args.world_size, rendezvous, loaded.model.net, rows, args, result),
                 nprocs=args.world_size, join=True)
        module = to_torch(loaded.model.net)
        module.load_state_dict(torch.load(result, weights_only=True))

    back = from_torch(module)  # and back to rnnkit: NumPy only from here on
    loaded.model.load_state_dict(back.state_dict())
    out = save_weights(Path(args.out), loaded.model, loaded.vocab, mode="stream",
                       max_item_length=loaded.document.get("max_item_length"))
    print(f"wrote {out}; sample from it with: rnnkit sample {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
