"""Realism proxies of the GAN levers, measured on the CPU at 32 px on real LFW frames.

    python benchmarks/realism_proxies.py --prepared data/prepared --seeds 0 1 2 \
        [--levers defaults ema blur ...] [--steps 600] [--rows 1024]

What a GPU run would judge by FD and a two-sample classifier cannot be trained on 2 cores; these
proxies can, and each says something the pictures show:

- context_l1: mean |output - photo| over the hallucinated pixels inside the photo ([-1, 1] units,
  the training's L1).
- hf_luma, hf_colour: high-frequency energy (the image minus its 3x3 box blur, squared) of the
  luminance and of the two colour-difference channels over the hallucinated pixels, as a ratio to
  the same photos' own: 1 is a photo's texture, > 1 is speckle, < 1 is smoothness.
- checkerboard: the share of the output's spectral energy (DC left out) on the Nyquist rows and
  columns (a period-2 pattern), beside the photos' own share; and the same share of the critic's
  gradient on the generator's output (what the adversarial term pushes into the image).
- eval_train_gap, shared_bias: mean |eval-mode output - train-mode output| with the weights as
  they are scored (running statistics, standing statistics, EMA), and the share of that
  difference that is the same for every image (a colour cast): |mean_i d_i|^2 / mean_i |d_i|^2.
- curve_cv: the coefficient of variation of the 32 px stage's logged generator and critic losses
  over its second half (how steady training is).

Each lever is a set of params overrides on the quick widths (width 16, stages 8 -> 16 -> 32); the
8 and 16 px stages are trained once (seed 0) with today's defaults and shared, so a lever is
judged on the 32 px stage it trains, once per seed. Every run keeps a generator EMA (it changes
no training step), so each is also scored with its EMA weights (the `ema_` columns) and its
standing statistics (`standing_`). Each run writes benchmarks/out/realism/<lever>/seed_<s>/;
the table (mean +- sd over seeds) is printed and written to benchmarks/out/realism_proxies.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import numpy as np
import torch
import yaml

REPO = Path(__file__).resolve().parents[1]

from facectx.config import parse_params  # noqa: E402
from facectx.steps.train import stage_trainer  # noqa: E402

STAGES = (8, 16, 32)
EMA_DECAY = 0.999
# Each lever: params overrides (dotted key -> value) on top of the proxy baseline.
LEVERS: dict[str, dict] = {
    "defaults": {},
    "blur": {"model.disc_blur": True},
    "r1": {"losses.r1_gamma": 0.1, "losses.r1_every": 16},
    "feature_matching": {"losses.feature_matching": True},
    "two_scales": {"model.disc_scales": 2},
    "hinge": {"losses.adversarial_loss": "hinge"},
    "nonsaturating": {"losses.adversarial_loss": "nonsaturating"},
    "ttur": {"train.critic_lr": 0.0004, "train.critic_beta1": 0.0, "train.critic_beta2": 0.99},
    "without_adversarial": {"losses.adversarial": False},
}
TTUR = LEVERS["ttur"]
# Bundles: do the levers that helped alone add up? (`blur_two_scales` is params.yaml's `realism`
# variant less its EMA, which every proxy run keeps anyway.)
LEVERS["blur_two_scales"] = {"model.disc_blur": True, "model.disc_scales": 2}
LEVERS["blur_two_scales_ttur"] = {**LEVERS["blur_two_scales"], **TTUR}


def proxy_params_text(rows: int, batch: int, epochs: tuple[int, int, int], seed: int, overrides: dict) -> str:
    """params.yaml as the proxies train it: the quick widths, stages 8-32, `rows` training rows."""
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["profile"] = "paper"  # no profile overrides: everything the proxies need is set here
    n = len(raw["train"]["stages"])
    for section in ("losses", "train"):  # per-stage lists follow the first three stages
        for key, value in raw[section].items():
            if isinstance(value, list) and len(value) == n and key != "stages":
                raw[section][key] = value[: len(STAGES)]
    raw["model"].update(width=16, max_width=64, disc_width=16)
    raw["train"].update(
        stages=list(STAGES),
        epochs=list(epochs),
        batch_size=[batch] * len(STAGES),
        max_train_rows=rows,
        val_rows=256,
        checkpoint_every_steps=10**9,
        resume_checkpoints=False,
        log_every_steps=10,
        grad_norm_every_steps=50,
        device="cpu",
        seed=seed,
    )
    if "ema_decay" in raw["train"]:  # an EMA changes no training step: every run scores its EMA too
        raw["train"]["ema_decay"] = EMA_DECAY
    for key, value in overrides.items():
        *path, last = key.split(".")
        node = raw
        for part in path:
            node = node[part]
        node[last] = value
    return yaml.safe_dump(raw)


def luma_chroma(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """[-1, 1] RGB -> luminance (N,1,H,W) and the two colour differences (N,2,H,W)."""
    r, g, b = x[:, 0:1], x[:, 1:2], x[:, 2:3]
    y = 0.299 * r + 0.587 * g + 0.114 * b
    return y, torch.cat([b - y, r - y], dim=1)


def high_pass_energy(x: torch.Tensor, where: torch.Tensor) -> float:
    """Mean squared (x - 3x3 box blur of x) over the pixels `where` (N,1,H,W, 0/1)."""
    blurred = torch.nn.functional.avg_pool2d(torch.nn.functional.pad(x, (1, 1, 1, 1), mode="replicate"), 3, 1)
    energy = ((x - blurred) ** 2).mean(dim=1, keepdim=True)
    return float((energy * where).sum() / where.sum().clamp(min=1))


def checkerboard_share(x: torch.Tensor) -> float:
    """Share of the spectral energy (DC left out) on the Nyquist row and column: a period-2 pattern."""
    spectrum = torch.fft.fft2(x.float() - x.float().mean(dim=(-2, -1), keepdim=True)).abs() ** 2
    n = x.shape[-1] // 2
    nyquist = spectrum[..., n, :].sum() + spectrum[..., :, n].sum() - spectrum[..., n, n].sum()
    return float(nyquist / spectrum.sum().clamp(min=1e-20))


def curve_cv(losses_csv: Path) -> dict[str, float]:
    """Coefficient of variation of each logged loss over the second half of the stage."""
    import csv

    with open(losses_csv) as f:
        rows = list(csv.DictReader(f))
    out = {}
    for column in ("loss_total", "loss_critic"):
        values = [float(r[column]) for r in rows[len(rows) // 2 :] if r.get(column) not in (None, "")]
        if len(values) > 2 and statistics.mean(values) != 0:
            out[f"cv_{column[5:]}"] = statistics.pstdev(values) / abs(statistics.mean(values))
    return out


@torch.no_grad()
def image_proxies(generator, batch, stage: int) -> tuple[dict[str, float], torch.Tensor]:
    """The image proxies of the generator's eval-mode output on one batch of real frames."""
    from facectx.losses import within_photo

    target, valid = batch.target[stage], batch.valid[stage]
    fake = within_photo(generator(batch.masked, batch.mask)[stage], target, valid)
    context = (batch.mask[stage] < 0.5).float() * valid[:, :1]
    (fake_y, fake_c), (real_y, real_c) = luma_chroma(fake), luma_chroma(target)
    l1 = ((fake - target).abs().mean(dim=1, keepdim=True) * context).sum() / context.sum()
    return {
        "context_l1": float(l1),
        "hf_luma": high_pass_energy(fake_y, context) / high_pass_energy(real_y, context),
        "hf_colour": high_pass_energy(fake_c, context) / high_pass_energy(real_c, context),
        "checkerboard": checkerboard_share(fake),
        "checkerboard_photos": checkerboard_share(target),
    }, fake


@torch.no_grad()
def mode_gap(generator, batch, stage: int, eval_output: torch.Tensor) -> dict[str, float]:
    """Eval-mode output against train-mode output (batch statistics of this batch) on the same batch."""
    state = {k: v.clone() for k, v in generator.state_dict().items()}  # train mode updates running stats
    generator.train()
    train_output = generator(batch.masked, batch.mask)[stage]
    generator.load_state_dict(state)
    generator.eval()
    diff = (eval_output - train_output).float()
    shared = diff.mean(dim=0)
    return {
        "eval_train_gap": float(diff.abs().mean()),
        "shared_bias": float((shared**2).sum() / (diff**2).sum(dim=(1, 2, 3)).mean().clamp(min=1e-20)),
    }


def critic_gradient_checkerboard(trainer, batch, stage: int) -> float:
    """Checkerboard share of the adversarial term's gradient on the generator's output."""
    from facectx.losses import TERMS, TermInputs

    fake = trainer.generator(batch.masked, batch.mask)[stage].detach().requires_grad_(True)
    config, critic = trainer.loss.config, trainer.critic
    inputs = TermInputs(
        batch.masked[stage], batch.target[stage], fake, batch.landmarks, config, critic, None, None, False
    )
    (grad,) = torch.autograd.grad(TERMS["adv"].compute(inputs), fake)
    return checkerboard_share(grad)


def measure(trainer, checkpoint: Path, stage: int) -> dict[str, float]:
    """Every proxy of the stage's final checkpoint, once per weight choice it holds (running
    statistics; standing statistics; EMA weights), on up to 256 validation frames."""
    from facectx.checkpoint import available_weights, load_checkpoint
    from facectx.inference import load_generator

    rows = min(trainer.val_data.rows, 256)
    batch = trainer.val_data.batch(torch.arange(rows))
    meta, states, _ = load_checkpoint(checkpoint)
    out: dict[str, float] = {}
    for choice in available_weights(meta, states):
        generator, _, _ = load_generator(checkpoint, "cpu", choice)
        images, fake = image_proxies(generator, batch, stage)
        gap = mode_gap(generator, batch, stage, fake)
        prefix = "" if choice == "running" else f"{choice}_"
        out.update({prefix + k: v for k, v in {**images, **gap}.items()})
    if "adv" in trainer.weights:
        out["critic_grad_checkerboard"] = critic_gradient_checkerboard(trainer, batch, stage)
    return out


def train_run(text: str, prepared: Path, folder: Path, init: Path | None, stages: tuple[int, ...]):
    """Train `stages` in order from `init` (the previous stage's checkpoint); the last trainer."""
    params = parse_params(text, "realism proxies")
    trainer = None
    for stage in stages:
        out = folder / f"stage_{stage}"
        trainer = stage_trainer(params, stage, prepared, out, init, folder / f"resume_{stage}")
        trainer.run()
        init = out / "checkpoint"
    return trainer


def run_lever(name: str, seed: int, args, out_root: Path) -> dict[str, float]:
    # One shared start for every lever and seed: the 8 and 16 px stages with today's defaults,
    # seed 0. The seeds vary the lever's own stage (its new block's weights, the batch order).
    base = out_root / "base" / "seed_0"
    epochs = (args.early_epochs, args.early_epochs, args.epochs)
    base_text = proxy_params_text(args.rows, args.batch, epochs, 0, {})
    if not (base / f"stage_{STAGES[1]}" / "checkpoint" / "meta.json").is_file():
        train_run(base_text, args.prepared, base, None, STAGES[:2])
    text = proxy_params_text(args.rows, args.batch, epochs, seed, LEVERS[name])
    folder = out_root / name / f"seed_{seed}"
    if (folder / "proxies.json").is_file():  # measured already (a rerun adds only what is missing)
        return json.loads((folder / "proxies.json").read_text())
    init = base / f"stage_{STAGES[1]}" / "checkpoint"
    # The shared early stages were trained under the baseline's settings: the lever's stage
    # starts from their weights (its own config hash would refuse them, so load them by hand).
    trainer = train_run_from(text, args.prepared, folder, init)
    last = folder / f"stage_{STAGES[-1]}"
    result = {
        **measure(trainer, last / "checkpoint", STAGES[-1]),
        **curve_cv(folder / f"stage_{STAGES[-1]}" / "losses.csv"),
    }
    metrics = json.loads((folder / f"stage_{STAGES[-1]}" / "metrics.json").read_text())
    result.update({k: v for k, v in metrics.items() if k.startswith("val_")})
    result["images_per_second"] = metrics["images_per_second"]
    (folder / "proxies.json").write_text(json.dumps(result, indent=1))
    return result


def train_run_from(text: str, prepared: Path, folder: Path, init: Path):
    """The last stage of a lever, its generator started from the shared earlier stages' weights."""
    from facectx.checkpoint import load_checkpoint

    params = parse_params(text, "realism proxies")
    stage = STAGES[-1]
    trainer = stage_trainer(
        params, stage, prepared, folder / f"stage_{stage}", None, folder / "resume", require_previous=False
    )
    _, states, _ = load_checkpoint(init)
    own = trainer.generator.state_dict()
    own.update(states["generator"])
    trainer.generator.load_state_dict(own)
    trainer.run()
    return trainer


# The table's columns (the JSON keeps every measure, per weight choice).
TABLE_COLUMNS = (
    "context_l1",
    "hf_luma",
    "hf_colour",
    "checkerboard",
    "critic_grad_checkerboard",
    "eval_train_gap",
    "standing_eval_train_gap",
    "shared_bias",
    "standing_shared_bias",
    "cv_critic",
    "val_ssim",
    "val_identity_distance",
)


def summarise(results: dict[str, list[dict]]) -> list[str]:
    """A markdown table: per lever, mean ± sd over its seeds of each TABLE_COLUMNS measure."""
    columns = [c for c in TABLE_COLUMNS if any(c in r for runs in results.values() for r in runs)]
    lines = ["| lever | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for name, runs in results.items():
        cells = []
        for column in columns:
            values = [r[column] for r in runs if column in r]
            if not values:
                cells.append("")
            elif len(values) == 1:
                cells.append(f"{values[0]:.4g}")
            else:
                cells.append(f"{np.mean(values):.4g} ± {np.std(values, ddof=1):.2g}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prepared", type=Path, default=REPO / "data/prepared")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks/out/realism")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--levers", nargs="+", default=list(LEVERS), choices=list(LEVERS))
    parser.add_argument("--rows", type=int, default=2048, help="training rows (a seeded sample over identities)")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--early-epochs", type=int, default=1, help="epochs of the shared 8 and 16 px stages")
    parser.add_argument("--epochs", type=int, default=1, help="epochs of the 32 px stage each lever trains")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    results: dict[str, list[dict]] = {}
    for name in args.levers:
        for seed in args.seeds:
            results.setdefault(name, []).append(run_lever(name, seed, args, args.out))
            print(name, seed, json.dumps(results[name][-1]), flush=True)
    lines = [f"{len(runs)} seeds" for runs in results.values()][:1] + summarise(results)
    print("\n".join(lines))
    summary = args.out.parent / "realism_proxies.json"
    summary.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "results": results}, indent=1))


if __name__ == "__main__":
    main()
