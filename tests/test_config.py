"""params.yaml is read strictly: typos and bad values are errors that name the key."""

from __future__ import annotations

import pytest
import yaml

from conftest import REPO
from facectx.config import load_params


def _write(tmp_path, change):
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    change(raw)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_repo_params_load(params):
    assert params.crop.size_px == params.prepare.resolutions[-1] == 128
    assert params.landmarks.backend == "dlib"


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda r: r["prepare"].update(mirorr=True), "prepare: unknown key"),
        (lambda r: r["validate"].pop("max_pixels"), "validate: missing key"),
        (lambda r: r["landmarks"].update(backend="mediapipe"), "landmarks.backend"),
        (lambda r: r["prepare"].update(resolutions=[8, 32, 128]), "prepare.resolutions"),
        (lambda r: r["validate"].update(min_side_px="big"), "validate.min_side_px"),
        (lambda r: r["evaluate"].update(lpips_backbone_weights="alexnet.pth"), "evaluate.lpips_linear_weights"),
        # Every per-stage loss weight is checked, found by its type (a new term's too).
        (lambda r: r["losses"].update(lambda_pc=[0.1, 0.1]), r"losses\.lambda_pc must give one weight"),
        (lambda r: r["losses"].update(lambda_adv=[0.01, 0.01, -1, 0.01, 0.01]), r"losses\.lambda_adv must give"),
        (lambda r: r["tracking"].pop("experiment"), "tracking: missing key"),
        (lambda r: r["hallucinate"].update(shard_photos=0), r"hallucinate\.shard_photos must be >= 1"),
        (lambda r: r["hallucinate"].update(image_format="jpeg"), r"hallucinate\.image_format must be one of"),
        (lambda r: r["hallucinate"].update(webp_quality=101), r"hallucinate\.webp_quality must be 1\.\.100"),
        (lambda r: r["hallucinate"].update(out="data/raw/images/"), "hallucinate.source and hallucinate.out"),
        # The critic levers (issue 27).
        (lambda r: r["losses"].update(lambda_fm=[1.0]), r"losses\.lambda_fm must give one weight"),
        (lambda r: r["model"].update(disc_scales=4), r"model\.disc_scales must be 1, 2 or 3"),
        (lambda r: r["losses"].update(adversarial_loss="wgan"), r"losses\.adversarial_loss must be one of"),
        (lambda r: r["losses"].update(r1_every=0), r"losses\.r1_every >= 1"),
        (lambda r: r["losses"].update(r1_gamma=-1), r"losses\.r1_gamma must be >= 0"),
        (lambda r: r["train"].update(critic_lr=0), r"train\.critic_lr must be > 0"),
        (lambda r: r["train"].update(critic_beta1=1.0), r"train\.critic_beta1 must be in \[0, 1\)"),
        (
            lambda r: r["losses"].update(perceptual_network="lpips", lpips_backbone_weights="alexnet.pth"),
            r"losses\.perceptual_network is lpips: set losses\.lpips_backbone_weights and losses\.lpips_linear",
        ),
    ],
)
def test_bad_params_name_the_key(tmp_path, change, message):
    with pytest.raises(ValueError, match=message):
        load_params(_write(tmp_path, change))


def test_missing_params_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="params file not found"):
        load_params(tmp_path / "nope.yaml")


def test_a_variant_overrides_on_top_of_the_profile():
    cascade = load_params(REPO / "params.yaml")
    progan = load_params(REPO / "params.yaml", variant="progan")
    assert cascade.model.kind == "cascade" and progan.model.kind == "progan"
    assert progan.model.width == cascade.model.width  # the profile's sizes still apply
    # ProGAN's own Adam settings (Karras et al. 2018), the cascade's pix2pix ones untouched
    assert (progan.train.lr, progan.train.beta1, progan.train.beta2) == (0.001, 0.0, 0.99)
    assert (cascade.train.lr, cascade.train.beta1, cascade.train.beta2) == (0.0002, 0.5, 0.999)
    assert not load_params(REPO / "params.yaml", variant="without_identity").losses.identity
    assert set(cascade.compare) <= set(cascade.variants)


@pytest.mark.parametrize(
    "change, variant, message",
    [
        (lambda r: None, "progam", "variant 'progam' is not among variants"),
        (lambda r: r.update(compare=["progan", "l3_loss"]), None, r"compare names \['l3_loss'\]"),
        (
            lambda r: r["variants"].update(odd={"prepare": {"mirror": False}}),
            None,
            "variants.odd may only override model",
        ),
        (lambda r: r["variants"].update(typo={"losses": {"identty": False}}), None, "variants.typo.losses.identty"),
    ],
)
def test_bad_variants_name_the_key(tmp_path, change, variant, message):
    with pytest.raises(ValueError, match=message):
        load_params(_write(tmp_path, change), variant=variant)
