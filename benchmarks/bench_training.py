"""Training images/s of the bundle's trainer against a bare PyTorch loop (issue #8, item 1c).

Both loops are built from ``bundles/fracture_classification/configs/train.json`` with MONAI's
``ConfigParser``: the same network (ImageNet EfficientNet-Lite0, new head), the same
class-weighted ``CrossEntropyLoss`` and AdamW with the bundle's parameter groups. They consume
the same batches: ``n`` batches of 16 drawn once from the bundle's own ``train#dataloader``
(CacheDataset of the synthetic radiographs, preprocessing and augmentation), kept in memory and
fed to

- the bare loop: ``opt.zero_grad(); loss(net(x), y).backward(); opt.step()`` per batch;
- the bundle trainer: ``train#trainer`` (MONAI ``SupervisedTrainer``) with its train handlers
  (UnfreezeBackbone, LrScheduleHandler, TrainingHistory, StatsHandler, TensorBoardStatsHandler),
  its postprocessing (decollate + softmax) and its ``prepare_batch``, running one epoch over
  the same list of batches.

Timed: the full fine-tuning phase (``warmup_epochs`` 0: backbone trainable) in both. Left out
of the timed part: the epoch-end ``ValidationHandler`` (validation is not training throughput)
and checkpointing (attached only by the ``training`` run list). Data loading is left out of
both (it is the same DataLoader either way). Every repeat starts from the same initial weights,
optimizer and scheduler state and RNG seed; repeats of the variants are interleaved so machine
noise hits them alike. Logging goes to a file at INFO, as the bundle's ``logging.conf`` would
send it to stdout.

A second pair of loops runs with the bundle's ``channels_last`` flag (network and inputs in
NHWC) to show whether it helps the training step on this machine.

    python -m benchmarks.bench_training [--quick] [--repeats 5] [--json benchmarks/out/training.json]
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import logging
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

from benchmarks.common import BenchContext, Row, Section, Timing

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "bundles" / "fracture_classification" / "configs"
TARGET_OVERHEAD = 0.10


def _parser(overrides: dict[str, Any]):
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_meta(str(CONFIGS / "metadata.json"))
    parser.read_config(str(CONFIGS / "train.json"))
    handlers = parser["train#handlers"]
    for index, handler in enumerate(handlers):
        target = str(handler.get("_target_", "")) if isinstance(handler, dict) else ""
        if target.endswith("ValidationHandler"):  # epoch-end validation: not training throughput
            overrides[f"train#handlers#{index}#_disabled_"] = True
        if target.endswith("TrainingHistory"):
            overrides[f"train#handlers#{index}#validator"] = None
    parser.update(overrides)
    return parser


def _take(loader: Any, n: int) -> list[dict[str, Any]]:
    """``n`` batches from ``loader``, going round it again when it is shorter."""
    batches: list[dict[str, Any]] = []
    while len(batches) < n:
        before = len(batches)
        for batch in loader:
            batches.append(batch)
            if len(batches) == n:
                break
        if len(batches) == before:
            raise ValueError("the training DataLoader yielded no batch")
    return batches


@contextlib.contextmanager
def _log_to(path: Path) -> Iterator[None]:
    """Root logging at INFO into ``path`` (what logging.conf does to stdout), restored afterwards."""
    root = logging.getLogger()
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s - %(name)s - %(levelname)s - %(message)s"))
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        yield
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
        handler.close()


class _Variant:
    """One network/optimizer/trainer set from the bundle config, and its two loops."""

    def __init__(self, parser: Any, batches: list[dict[str, Any]], device: torch.device, amp: bool,
                 channels_last: bool, initial: dict[str, torch.Tensor] | None = None) -> None:
        self.net = parser.get_parsed_content("network")
        if initial is not None:
            self.net.load_state_dict(initial)
        self.loss = parser.get_parsed_content("loss")
        self.opt = parser.get_parsed_content("optimizer")
        self.scheduler = parser.get_parsed_content("lr_scheduler")
        self.trainer = parser.get_parsed_content("train#trainer")
        # the same in-memory batches for both loops (the bundle's own DataLoader made them)
        self.trainer.data_loader = batches
        self.trainer.state.epoch_length = len(batches)
        self.batches, self.device, self.amp, self.channels_last = batches, device, amp, channels_last
        self.initial = copy.deepcopy(self.net.state_dict())
        self.opt_state = copy.deepcopy(self.opt.state_dict())
        self.scheduler_state = copy.deepcopy(self.scheduler.state_dict())

    def reset(self) -> None:
        self.net.load_state_dict(self.initial)
        self.opt.load_state_dict(self.opt_state)
        self.scheduler.load_state_dict(self.scheduler_state)
        torch.manual_seed(0)

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def bare(self) -> None:
        self.reset()
        net, loss_fn, opt = self.net, self.loss, self.opt
        scaler = torch.amp.GradScaler("cuda") if self.amp else None
        net.train()
        for batch in self.batches:
            x = batch["image"].to(self.device, non_blocking=True)
            y = batch["label"].to(self.device, non_blocking=True)
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            opt.zero_grad(set_to_none=True)
            if scaler is not None:
                with torch.autocast("cuda"):
                    loss = loss_fn(net(x), y)
                scaler.scale(loss).backward()
                scaler.step(opt)
                scaler.update()
            else:
                loss_fn(net(x), y).backward()
                opt.step()
        self._sync()

    def bundle(self) -> None:
        self.reset()
        self.trainer.run()
        self._sync()


def _max_weight_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    return max(float((a[k].float() - b[k].float()).abs().max()) for k in a if a[k].is_floating_point())


def _paired_overhead(bare: Timing, trainer: Timing) -> Timing:
    """Per-round overhead 1 - trainer rate / bare rate = 1 - t_bare / t_trainer (as %)."""
    return Timing([100.0 * (1.0 - b / t) for b, t in zip(bare.values, trainer.values)])


def _profile(variant: _Variant) -> dict[str, Any]:
    """One more (untimed) trainer epoch under ignite's ``HandlersTimeProfiler``: seconds in the
    engine's event handlers (train handlers, decollate, postprocessing) against seconds in the
    iteration itself, a split that machine noise barely moves."""
    from ignite.handlers import HandlersTimeProfiler

    profiler = HandlersTimeProfiler()
    profiler.attach(variant.trainer)
    variant.bundle()
    results = profiler.get_results()
    handlers: dict[str, float] = {}
    for name, event, total, *_ in results[:-3]:
        if isinstance(total, (int, float)) and total > 0:
            handlers[f"{name} ({event})"] = float(total)
    processing = float(results[-2][2]) if isinstance(results[-2][2], (int, float)) else float("nan")
    handler_total = sum(handlers.values())
    return {"iteration_s": processing, "handlers_s": handler_total,
            "handlers_pct_of_iteration": 100.0 * handler_total / processing if processing else None,
            "handlers": dict(sorted(handlers.items(), key=lambda kv: -kv[1]))}


def run(ctx: BenchContext) -> Section:
    started = time.perf_counter()
    device = torch.device(ctx.device)
    amp = device.type == "cuda"
    iterations = 6 if ctx.quick else 16
    batch_size = 16
    repeats = min(ctx.repeats, 3) if ctx.quick else ctx.repeats
    image_size = 160  # the bundle default
    synthetic_n = 128 if ctx.quick else 320  # 320: the bundle default (256 training images, 16 batches)
    data_root = ctx.data_dir / "training"

    with tempfile.TemporaryDirectory(prefix="bench_training_") as tmp:
        tmp_path = Path(tmp)
        overrides: dict[str, Any] = {
            "bundle_root": str(tmp_path), "data_root": str(data_root), "synthetic": True, "synthetic_n": synthetic_n,
            "check_pixels": False, "image_size": image_size, "batch_size": batch_size, "num_workers": 0,
            "warmup_epochs": 0, "max_epochs": 1, "device": f"$torch.device('{device}')", "amp": amp,
        }
        parser = _parser({**overrides, "channels_last": False})
        loader = parser.get_parsed_content("train#dataloader")
        torch.manual_seed(0)
        batches = _take(loader, iterations)
        images = sum(int(b["image"].shape[0]) for b in batches)

        plain = _Variant(parser, batches, device, amp, channels_last=False)
        # channels_last: its own parser (the bundle flag), the same initial weights and batches;
        # its trainer gets the batches directly, so no second CacheDataset is built
        parser_cl = _parser({**overrides, "channels_last": True, "train#trainer#train_data_loader": "$[]"})
        fast = _Variant(parser_cl, batches, device, amp, channels_last=True, initial=plain.initial)

        runs: dict[str, Callable[[], None]] = {
            "bare": plain.bare, "trainer": plain.bundle, "bare_cl": fast.bare, "trainer_cl": fast.bundle,
        }
        values: dict[str, list[float]] = {name: [] for name in runs}
        cpu: dict[str, list[float]] = {name: [] for name in runs}
        with _log_to(tmp_path / "train.log"):
            # warm-up round (untimed) doubles as a check that both loops compute the same step
            plain.bare()
            after_bare = copy.deepcopy(plain.net.state_dict())
            plain.bundle()
            same_step = _max_weight_diff(after_bare, plain.net.state_dict())
            fast.bare()
            fast.bundle()
            names = list(runs)
            for round_ in range(max(1, repeats)):
                order = names[round_ % len(names):] + names[:round_ % len(names)]  # rotate the order
                for name in order:
                    t0, c0 = time.perf_counter(), time.process_time()
                    runs[name]()
                    values[name].append(time.perf_counter() - t0)
                    cpu[name].append(time.process_time() - c0)
            log_lines = len((tmp_path / "train.log").read_text().splitlines())
            # after the timed rounds: where the trainer's time goes (the profiler wraps every handler)
            profile = _profile(plain)

    timings = {name: Timing(v) for name, v in values.items()}
    cpu_timings = {name: Timing(v) for name, v in cpu.items()}
    bare, trainer, bare_cl, trainer_cl = (timings[k] for k in ("bare", "trainer", "bare_cl", "trainer_cl"))
    overhead = _paired_overhead(bare, trainer)
    overhead_cl = _paired_overhead(bare_cl, trainer_cl)
    speed = "rate / bare loop rate (medians)"
    bare_case = "bare PyTorch loop"
    rows = [
        Row.rate(bare_case, bare, images),
        Row.rate("bundle trainer (SupervisedTrainer + train handlers)", trainer, images,
                 baseline=bare_case, ratio=bare.median / trainer.median, ratio_meaning=speed),
        Row(case="trainer overhead (1 - trainer/bare, paired per round)", metric="overhead",
            median=overhead.median, low=overhead.low, high=overhead.high, unit="%",
            target=f"<= {TARGET_OVERHEAD:.0%}", passed=overhead.median <= 100 * TARGET_OVERHEAD),
        Row.rate("bare PyTorch loop, channels_last", bare_cl, images,
                 baseline=bare_case, ratio=bare.median / bare_cl.median, ratio_meaning=speed),
        Row.rate("bundle trainer, --channels_last True", trainer_cl, images,
                 baseline=bare_case, ratio=bare.median / trainer_cl.median, ratio_meaning=speed,
                 extra={"overhead_vs_bare_channels_last_pct": overhead_cl.to_dict()}),
    ]
    details = {
        "config": "bundles/fracture_classification/configs/train.json",
        "overrides": {k: v for k, v in overrides.items() if k not in ("bundle_root", "data_root")},
        "network": parser["network_name"], "image_size": image_size, "batch_size": batch_size,
        "iterations_per_repeat": iterations, "images_per_repeat": images, "repeats": repeats,
        "device": str(device), "amp": amp, "torch_threads": torch.get_num_threads(),
        "phase": "full fine-tuning (warmup_epochs 0: backbone trainable) in both loops",
        "trainer_includes": "SupervisedTrainer.run() over one epoch of the batches: prepare_batch, network.train(), "
                            "zero_grad/forward/loss/backward/step, decollate + Activationsd postprocessing, "
                            "per-iteration StatsHandler, TensorBoardStatsHandler and TrainingHistory, "
                            "epoch-level UnfreezeBackbone, LrScheduleHandler, TrainingHistory (history.json), "
                            "Stats/TensorBoard epoch writes; logging at INFO to a file",
        "excluded": "ValidationHandler (epoch-end validation) disabled; no CheckpointSaver (attached only by the "
                    "'training' run list); data loading and augmentation done once before timing, the same "
                    "batches feed both loops",
        "same_step_max_weight_diff": same_step,
        "log_lines_written": log_lines,
        "overhead_pct": overhead.to_dict(),
        "overhead_channels_last_pct": overhead_cl.to_dict(),
        "overhead_best_times_pct": 100.0 * (1.0 - bare.low / trainer.low),
        "overhead_cpu_time_pct": _paired_overhead(cpu_timings["bare"], cpu_timings["trainer"]).to_dict(),
        "trainer_profile": profile,
        "timings_s": {name: t.to_dict() for name, t in timings.items()},
        "cpu_times_s": {name: t.to_dict() for name, t in cpu_timings.items()},
    }
    return Section(name="training", title="Training throughput: bundle trainer vs bare PyTorch loop",
                   rows=rows, details=details, seconds=time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", type=Path, help="also write the section (rows and details) to this file")
    args = parser.parse_args()
    section = run(BenchContext(repeats=args.repeats, quick=args.quick, device=args.device))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(section.to_dict(), indent=2, default=str) + "\n", encoding="utf-8")
    print(section.title)
    for row in section.rows:
        ratio = f"  x{row.ratio:.3f} vs {row.baseline}" if row.ratio is not None else ""
        target = f"  target {row.target}: {'pass' if row.passed else 'FAIL'}" if row.target else ""
        print(f"  {row.case:55s} {row.median:8.2f} {row.unit:5s} [{row.low:.2f} .. {row.high:.2f}]{ratio}{target}")
    d = section.details
    print(f"  {d['images_per_repeat']} images/repeat, {d['repeats']} repeats, {d['device']}, "
          f"{d['torch_threads']} threads; same-step max |w diff| {d['same_step_max_weight_diff']:.2e}; "
          f"{section.seconds:.0f} s")
    cpu_overhead, profile = d["overhead_cpu_time_pct"], d["trainer_profile"]
    print(f"  overhead from the best (least disturbed) repeats: {d['overhead_best_times_pct']:.1f} %; "
          f"by process CPU time: {cpu_overhead['median']:.1f} % "
          f"[{cpu_overhead['min']:.1f} .. {cpu_overhead['max']:.1f}]; trainer event handlers "
          f"{profile['handlers_s']:.3f} s = {profile['handlers_pct_of_iteration']:.2f} % of iteration time")


if __name__ == "__main__":
    main()
