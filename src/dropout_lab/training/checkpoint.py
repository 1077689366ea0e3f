"""A pack's checkpoint: the state after its last saved epoch, so that a rerun resumes bit-identically.

Saving must cost little next to training (a GPU pack of 145 paper-sized MLPs
holds about 2.2 GB of weights and momenta). So `Checkpointer.save` only copies
the state into host buffers kept from one save to the next (pinned on a GPU:
the part that holds training up) and a background thread writes the file
atomically. A save is skipped while the previous file is still being written,
sooner than `min_seconds` after the last one, or when the last copy took more
than `budget` of the time since it: the copies then take at most that fraction
of training. A checkpoint belongs to exact settings (its fingerprint); any other
is ignored, and a damaged one costs a restart, never a wrong result: each file
carries the SHA-256 of its content (every tensor's bytes, dtype and shape, and
every other value), checked before the state is used.
"""

from __future__ import annotations

import hashlib
import json
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from omegaconf import DictConfig, OmegaConf

from dropout_lab.settings.atomic import WriteError, atomic_path
from dropout_lab.settings.identity import defining_settings, digest

CHECKPOINT = "checkpoint.pt"
DIGEST = "content_sha256"  # the key of a saved state that holds the digest of the rest of it

# A checkpoint belongs to its runs' identity (dropout_lab.settings.identity: a change to any other setting
# keeps it) and, besides, to the device: it holds the state of the gates' random generators, which live on
# the device (a CUDA generator's state does not load into a CPU one).
ALSO_FINGERPRINTED = ("device",)


def fingerprint(cfgs: Sequence[DictConfig]) -> str:
    """The digest of the pack's runs' defining settings and device, in order."""
    digests = [digest(defining_settings(OmegaConf.to_container(cfg, resolve=True), keep=ALSO_FINGERPRINTED))
               for cfg in cfgs]
    return hashlib.sha256("\n".join(digests).encode()).hexdigest()


def content_digest(state: dict) -> str:
    """SHA-256 of a state's content: its values and structure, and each tensor's dtype, shape and bytes."""
    sha = hashlib.sha256()

    def visit(node: Any) -> Any:
        if isinstance(node, torch.Tensor):
            tensor = node.detach().cpu().contiguous()
            sha.update(f"{tensor.dtype}{tuple(tensor.shape)}".encode())
            sha.update(tensor.reshape(-1).view(torch.uint8).numpy().data)
            return "<tensor>"
        if isinstance(node, dict):
            return [[str(k), visit(v)] for k, v in node.items()]
        if isinstance(node, (list, tuple)):
            return [visit(v) for v in node]
        return node

    sha.update(json.dumps(visit({k: v for k, v in state.items() if k != DIGEST}), default=repr).encode())
    return sha.hexdigest()


def load(path: Path, expected: str) -> dict | None:
    """The state saved after the last saved epoch, if its content is whole and it belongs to these exact settings;
    otherwise None, with one line saying why it is ignored."""
    if not path.is_file():
        return None
    try:
        state = torch.load(path, weights_only=True)  # never unpickles arbitrary objects
    except Exception as err:  # a damaged checkpoint costs a restart, never a wrong result
        print(f"ignoring unreadable checkpoint {path} ({' '.join(str(err).split())[:200]}); training starts from "
              "the first epoch", file=sys.stderr)
        return None
    if not isinstance(state, dict) or state.get(DIGEST) != content_digest(state):
        print(f"ignoring damaged checkpoint {path}: its content does not match its digest; training starts from "
              "the first epoch", file=sys.stderr)
        return None
    if state.get("fingerprint") != expected:
        print(f"ignoring checkpoint {path}: it belongs to other settings", file=sys.stderr)
        return None
    return state


class _TensorAt(int):
    """Where a tensor stood in the state: its index among the host buffers."""


class Checkpointer:
    """Writes a state to `path` in the background, at a bounded cost to the training loop."""

    def __init__(self, path: Path, min_seconds: float = 0.0, budget: float = 0.05,
                 clock: Callable[[], float] = time.perf_counter) -> None:
        self.path, self.min_seconds, self.budget, self.clock = Path(path), min_seconds, budget, clock
        self._host: list[torch.Tensor] = []  # reused host copies of the state's tensors
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._last_save = clock()
        self._last_copy = 0.0  # seconds the last save held the training loop
        self.saves = 0

    def due(self) -> bool:
        """Whether a save now keeps to the interval and the budget, and the last write has finished."""
        if self._thread is not None and self._thread.is_alive():
            return False
        since = self.clock() - self._last_save
        return since >= self.min_seconds and self._last_copy <= self.budget * since

    def save(self, state: Callable[[], dict[str, Any]]) -> bool:
        """Copy state() to host memory now and write it in the background, if a save is due."""
        self._raise_failed_write()
        if not self.due():
            return False
        started = self.clock()
        host = self._to_host(state())
        self._last_save = self.clock()
        self._last_copy = self._last_save - started
        self._thread = threading.Thread(target=self._write, args=(host,), name="checkpoint", daemon=True)
        self._thread.start()
        self.saves += 1
        return True

    def wait(self) -> None:
        """Let the write in progress finish (call before the process ends, or before removing the file)."""
        if self._thread is not None:
            self._thread.join()
        self._raise_failed_write()

    def _write(self, state: dict) -> None:
        try:
            state = {**state, DIGEST: content_digest(state)}  # of the host copy: what the file holds
            with atomic_path(self.path) as tmp:
                torch.save(state, tmp)
        except (OSError, RuntimeError) as err:  # torch.save reports a full disk as RuntimeError
            self._error = err

    def _raise_failed_write(self) -> None:
        if self._error is not None:
            err, self._error = self._error, None
            raise WriteError(f"could not write {self.path}: {err}; free space or make the folder writable, "
                             "then run again (training resumes from its last good checkpoint)") from err

    def _to_host(self, state: Any) -> Any:
        """The state with every tensor copied into this checkpointer's host buffers (allocated once)."""
        tensors: list[torch.Tensor] = []

        def collect(node: Any) -> Any:
            if isinstance(node, torch.Tensor):
                tensors.append(node.detach())
                return _TensorAt(len(tensors) - 1)
            if isinstance(node, dict):
                return {k: collect(v) for k, v in node.items()}
            if isinstance(node, (list, tuple)):
                return type(node)(collect(v) for v in node)
            return node

        skeleton = collect(state)
        if [(t.shape, t.dtype) for t in self._host] != [(t.shape, t.dtype) for t in tensors]:
            pin = torch.cuda.is_available() and any(t.is_cuda for t in tensors)
            self._host = [torch.empty(t.shape, dtype=t.dtype, pin_memory=pin and t.is_cuda) for t in tensors]
        for buffer, tensor in zip(self._host, tensors):
            buffer.copy_(tensor, non_blocking=tensor.is_cuda)
        if any(t.is_cuda for t in tensors):
            torch.cuda.synchronize()

        def fill(node: Any) -> Any:
            if isinstance(node, _TensorAt):
                return self._host[node]
            if isinstance(node, dict):
                return {k: fill(v) for k, v in node.items()}
            if isinstance(node, (list, tuple)):
                return type(node)(fill(v) for v in node)
            return node

        return fill(skeleton)


@dataclass
class Histories:
    """A pack's epochs so far (checkpointed with it): each run's history and the epoch it diverged in, if it did."""

    runs: list[list[dict]]
    diverged: list[int | None]
    first_epoch: int = 1  # the first epoch this process trains: 1, or the one after a checkpoint's


class Interrupted(KeyboardInterrupt):
    """Ctrl-C while a pack trains: the epoch it was in and the checkpoint the same command resumes from."""

    def __init__(self, epoch: int, epochs: int, saved: int | None, path: Path) -> None:
        super().__init__(epoch)
        self.epoch, self.epochs, self.saved, self.path = epoch, epochs, saved, path

    def line(self) -> str:
        head = f"interrupted in epoch {self.epoch} of {self.epochs}; "
        if self.saved is None:
            return head + "no checkpoint was saved yet: the same command trains from the first epoch"
        return head + f"{self.path} holds the state after epoch {self.saved}: the same command resumes from it"


def interrupted_line(err: KeyboardInterrupt) -> str:
    """One line for Ctrl-C: where training stood and what the same command does next."""
    if isinstance(err, Interrupted):
        return err.line()
    return ("interrupted outside the epochs; nothing finished was written: the same command resumes from the "
            "checkpoint, if one was saved, or trains from the start")


def train_resumably(trainer: Any, cfg: DictConfig, runs: int, path: Path, expected: str,
                    train_epoch: Callable[[Histories, int], list[int]]) -> tuple[Histories, int]:
    """Train a pack's epochs (`train_epoch`: one epoch, returning the runs still training) from its checkpoint at
    `path`, if it has one, saving new ones on the way; return the histories and how many checkpoints were saved.
    Ctrl-C ends it as Interrupted, once the checkpoint being written is whole."""
    histories = Histories([[] for _ in range(runs)], [None] * runs)
    state = load(path, expected) if cfg.checkpoint else None
    if state is not None:
        trainer.load_state_dict(state["trainer"])
        histories = Histories(state["histories"], state["diverged"], state["epoch"] + 1)
        print(f"resuming after epoch {state['epoch']} from {path}", flush=True)
    saver = Checkpointer(path, cfg.checkpoint_seconds)
    epoch, saved = histories.first_epoch, (histories.first_epoch - 1 if state is not None else None)
    try:
        for epoch in range(histories.first_epoch, cfg.train.epochs + 1):
            if not train_epoch(histories, epoch):
                break
            if cfg.checkpoint and epoch < cfg.train.epochs and saver.save(
                    lambda: {"fingerprint": expected, "epoch": epoch, "histories": histories.runs,
                             "diverged": histories.diverged, "trainer": trainer.state_dict()}):
                saved = epoch
    except KeyboardInterrupt:
        saver.wait()
        raise Interrupted(epoch, cfg.train.epochs, saved, path) from None
    finally:
        saver.wait()  # an interrupted pack keeps its last checkpoint whole
    return histories, saver.saves
