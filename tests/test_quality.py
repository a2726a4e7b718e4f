"""bench/quality.py: the Frechet distance, chroma, image-mean spread and mean-error diagnosis against closed forms,
and the bench end to end on a tiny model."""
import json
import shutil
from dataclasses import replace
from types import SimpleNamespace

import pytest
import torch
from torch.utils.data import TensorDataset

from bench import classifier
from bench.quality import (chroma, draw, features, frechet, frechet_change, frechet_distance, frechet_se,
                           image_mean_spread, mean_error, mean_gain, pairs_with, reference, seen_like)
from ddpm.checkpoint import Model, save_model
from ddpm.data import load_dataset
from ddpm.evaluate import loss_gap
from ddpm.grow import grow
from ddpm.schedule import linear_schedule
from ddpm.unet import PRESETS, UNet, UNetConfig

from conftest import ASSETS, cli


def test_frechet_distance_matches_the_closed_form_for_diagonal_gaussians():
    """For N(mu_a, diag(v_a)) and N(mu_b, diag(v_b)): ||mu_a - mu_b||^2 + sum_k (sqrt(v_a,k) - sqrt(v_b,k))^2
    (Heusel et al. 2017, eq. 6 with commuting covariances); within 2% from 40,000 draws, the same number from the real
    set's precomputed `reference`, and 0 for a set with itself."""
    g = torch.Generator().manual_seed(0)
    mu_a, mu_b = torch.tensor([0.0, 1.0, -2.0, 0.5]), torch.tensor([1.0, 1.0, 0.0, 0.0])
    v_a, v_b = torch.tensor([1.0, 4.0, 0.25, 2.0]), torch.tensor([2.0, 1.0, 0.25, 0.5])
    a = (mu_a + v_a.sqrt() * torch.randn(40000, 4, generator=g)).double()
    b = (mu_b + v_b.sqrt() * torch.randn(40000, 4, generator=g)).double()
    exact = ((mu_a - mu_b) ** 2).sum() + ((v_a.sqrt() - v_b.sqrt()) ** 2).sum()
    assert frechet_distance(a, b) == pytest.approx(exact.item(), rel=0.02)
    assert frechet_distance(a, reference(b)) == frechet_distance(a, b)  # the real set's moments, computed once
    assert abs(frechet_distance(a, a)) < 1e-8


def test_frechet_se_predicts_how_far_another_draw_of_the_samples_moves_the_distance():
    """The bootstrap standard error from one set of 400 samples of N(0.3, diag(v)) against a fixed real set is within
    a factor 1.5 of the std of the distance over 40 independent draws of 400 samples (what another --seed does)."""
    g = torch.Generator().manual_seed(0)
    v = torch.linspace(0.5, 2.0, 8)
    b = torch.randn(4000, 8, generator=g).double()
    draws = [(0.3 + v.sqrt() * torch.randn(400, 8, generator=g)).double() for _ in range(40)]
    spread = torch.tensor([frechet_distance(a, b) for a in draws]).std().item()
    se = sum(frechet_se(a, b, B=100, seed=k) for k, a in enumerate(draws[:4])) / 4
    assert spread / 1.5 < se < spread * 1.5, (se, spread)


def test_frechet_change_of_paired_draws_has_the_spread_of_the_change_over_seeds_far_below_frechet_se():
    """Two 'checkpoints' sample from the same noise z (a = 0.3 + sqrt(v) z, a_before = 0.35 + 1.05 sqrt(v) z + a
    little of its own): the change is exactly D(a) - D(a_before); its paired standard error from one draw is within a
    factor 1.5 of the change's std over 40 seeds, and under a third of frechet_se (what the unpaired sets would
    give). Resampling the two sets' rows independently breaks both."""
    g = torch.Generator().manual_seed(0)
    v = torch.linspace(0.5, 2.0, 8)
    b = reference(torch.randn(4000, 8, generator=g).double())

    def pair():
        z = torch.randn(400, 8, generator=g)
        return ((0.3 + v.sqrt() * z).double(),
                (0.35 + 1.05 * v.sqrt() * z + 0.1 * torch.randn(400, 8, generator=g)).double())

    draws = [pair() for _ in range(40)]
    a, a_before = draws[0]
    change, se = frechet_change(a, a_before, b, B=100)
    assert change == pytest.approx(frechet_distance(a, b) - frechet_distance(a_before, b), abs=1e-12)
    spread = torch.tensor([frechet_change(x, y, b, B=2)[0] for x, y in draws]).std().item()
    se = sum(frechet_change(x, y, b, B=100, seed=k)[1] for k, (x, y) in enumerate(draws[:4])) / 4
    assert spread / 1.5 < se < spread * 1.5, (se, spread)
    assert se < frechet_se(a, b, B=100) / 3
    with pytest.raises(ValueError, match="same --n"):
        frechet_change(a, a_before[:399], b)


def test_a_grown_successor_pairs_with_its_source_and_another_image_size_or_schedule_does_not():
    """--against accepts a model and its ddpm.grow successor (one more res block per level): from one seed both
    draw the same samples (the same x_T and z_t through the same function; max difference <= 1e-5). It refuses a
    model of another image size, class count or schedule, whose draws would not share their noise."""
    torch.manual_seed(0)
    src = UNet(PRESETS["tiny"]).eval()
    big = UNet(replace(PRESETS["tiny"], num_res_blocks=2)).eval()
    (state,), _ = grow(big, src.cfg, src.state_dict())
    big.load_state_dict(state)
    sched = linear_schedule(1000, 1e-4, 0.02)
    a, b = Model(src, sched), Model(big, sched)
    assert pairs_with(a, b) and pairs_with(b, a)
    with torch.no_grad():
        assert (draw(a, 2, 3, seed=5) - draw(b, 2, 3, seed=5)).abs().max() <= 1e-5
    assert not pairs_with(a, Model(UNet(replace(PRESETS["tiny"], image_size=16)), sched))
    assert not pairs_with(a, Model(UNet(replace(PRESETS["tiny"], num_classes=10)), sched))
    assert not pairs_with(a, Model(src, linear_schedule(1000, 1e-4, 0.03)))


def test_chroma_is_zero_for_grey_and_8_9_for_pure_red():
    """mean |x - mean over channels|: grey images 0; (1, -1, -1) everywhere: |(4/3, -2/3, -2/3)| averaged = 8/9."""
    grey = torch.rand(2, 1, 8, 8).expand(2, 3, 8, 8) * 2 - 1
    red = torch.tensor([1.0, -1.0, -1.0])[None, :, None, None].expand(2, 3, 8, 8)
    assert chroma(grey) == pytest.approx(0, abs=1e-12) and chroma(red) == pytest.approx(8 / 9)


def test_image_mean_spread_is_the_std_of_the_per_image_levels_and_ignores_texture():
    """Images that are a constant level v_i plus zero-mean texture: the spread is std(v_i) in every channel (0.5 for
    levels -0.5, 0, 0.5), whatever the texture; a set of images with one level has spread 0."""
    levels = torch.tensor([-0.5, 0.0, 0.5])[:, None, None, None]
    texture = torch.tensor([[0.3, -0.3], [-0.3, 0.3]]).repeat(4, 4)  # zero mean over the 8x8 image
    assert image_mean_spread(levels + texture.expand(3, 3, 8, 8)) == pytest.approx(0.5)
    assert image_mean_spread(0.2 + texture.expand(3, 3, 8, 8)) == pytest.approx(0, abs=1e-12)


def block_blur(x):
    """Every 2x2 block replaced by its mean, at the same size."""
    return torch.nn.functional.interpolate(torch.nn.functional.avg_pool2d(x, 2), scale_factor=2, mode="nearest")


def test_features_of_a_64px_image_are_those_of_its_32px_average_pool_unless_native():
    """The classifier sees 32x32 images: a 64x64 image's features equal those of its 2x2 average pool, so they cannot
    tell it from its 2x2 block-blurred copy; its native features are the ResNet's on the 64x64 image itself, and do."""
    net = classifier.build().eval()
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0)) * 2 - 1
    pooled, blurred = torch.nn.functional.avg_pool2d(x, 2), block_blur(x)
    assert torch.allclose(features(net, x), features(net, pooled), atol=1e-6)
    assert torch.allclose(features(net, x), features(net, blurred), atol=1e-6)
    body = torch.nn.Sequential(*list(net.children())[:-1])
    with torch.no_grad():
        assert torch.allclose(body(x).flatten(1).double(), features(net, x, native=True), atol=1e-6)
    assert not torch.allclose(features(net, x, native=True), features(net, blurred, native=True), atol=1e-3)


def test_frechet_reports_the_native_distance_only_above_32px():
    """For 64x64 images the bench reports the pooled and the native distance with their floors; a set against
    itself is at 0 in both; a sharp set against its blurred copy is at 0 pooled and above 0 native. At 32x32 the two
    would be the same number, so only the pooled one is reported."""
    net = classifier.build().eval()
    x = torch.rand(16, 3, 64, 64, generator=torch.Generator().manual_seed(1)) * 2 - 1
    f = frechet(net, block_blur(x), x, x, B=2)
    assert set(f) == {"frechet_distance", "frechet_floor", "frechet_distance_native", "frechet_floor_native",
                      "frechet_se", "frechet_se_native"}
    assert f["frechet_floor"] == pytest.approx(0, abs=1e-6) and f["frechet_floor_native"] == pytest.approx(0, abs=1e-6)
    assert f["frechet_distance"] == pytest.approx(0, abs=1e-6) and f["frechet_distance_native"] > 1e-3
    x32 = x[:, :, :32, :32]
    assert set(frechet(net, x32, x32, x32, B=2)) == {"frechet_distance", "frechet_se", "frechet_floor"}


def test_mean_error_is_0_for_the_exact_noise_and_1_for_a_network_that_predicts_none_of_it():
    """An oracle that knows x_0 returns eps exactly, (x_t - sqrt(alpha_bar) x_0) / sqrt(1 - alpha_bar): ratio and x0_hat
    error 0 at every t. A network that predicts eps = 0: error = -eps, ratio exactly 1, and x0_hat's mean error is
    sqrt((1 - alpha_bar) / alpha_bar) times the std of eps's spatial mean (~1/16 for 16x16 images)."""
    sched = linear_schedule()
    x = torch.rand(64, 3, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1
    ab = lambda t: sched.alpha_bar[t].float()[:, None, None, None]
    oracle = SimpleNamespace(sched=sched, eps=lambda x_t, t: (x_t - ab(t).sqrt() * x) / (1 - ab(t)).sqrt())
    zero = SimpleNamespace(sched=sched, eps=lambda x_t, t: torch.zeros_like(x_t))
    exact, none = mean_error(oracle, x, (990, 200), 0), mean_error(zero, x, (990, 200), 0)
    assert max(abs(v) for v in exact.values()) < 1e-3
    assert none["eps_mean_error_ratio_t990"] == pytest.approx(1) and none["eps_mean_error_ratio_t200"] == pytest.approx(1)
    for t in (990, 200):
        a = sched.alpha_bar[t].item()
        assert none[f"x0_hat_mean_error_std_t{t}"] == pytest.approx(((1 - a) / a) ** 0.5 / 16, rel=0.15)


def test_mean_gain_is_the_slope_of_the_predicted_image_mean():
    """eps_theta = k x_t has gain k at every t, per channel and grey; a network that removes each channel's spatial
    mean has gain 0 in both; one that removes only the mean over all channels (one normalisation group) has grey gain
    0 and per-channel gain 2/3; the exact posterior's gain is sqrt(1 - ab) / (HW ab V + 1 - ab) (grey: C HW, V_grey):
    > 0.98 at t = 990 and < 0.05 at t = 200 for 16x16 images whose means spread with std ~0.3."""
    sched = linear_schedule()
    g = torch.Generator().manual_seed(0)
    x = (torch.rand(32, 3, 1, 1, generator=g) - 0.5) + 0.3 * torch.randn(32, 3, 16, 16, generator=g)
    scaled = SimpleNamespace(sched=sched, eps=lambda x_t, t: 0.7 * x_t)
    flat = SimpleNamespace(sched=sched, eps=lambda x_t, t: x_t - x_t.mean((2, 3), keepdim=True))
    grey = SimpleNamespace(sched=sched, eps=lambda x_t, t: x_t - x_t.mean((1, 2, 3), keepdim=True))
    a, b, c = (mean_gain(m, x, (990, 200), 0) for m in (scaled, flat, grey))
    V, V_grey = x.double().mean((2, 3)).var(0).mean().item(), x.double().mean((1, 2, 3)).var().item()
    for t in (990, 200):
        ab = sched.alpha_bar[t].item()
        assert a[f"mean_gain_t{t}"] == pytest.approx(0.7, rel=1e-4) and abs(b[f"mean_gain_t{t}"]) < 1e-4
        assert a[f"mean_gain_grey_t{t}"] == pytest.approx(0.7, rel=1e-4) and abs(b[f"mean_gain_grey_t{t}"]) < 1e-4
        assert c[f"mean_gain_t{t}"] == pytest.approx(2 / 3, rel=1e-4) and abs(c[f"mean_gain_grey_t{t}"]) < 1e-4
        assert a[f"mean_gain_exact_t{t}"] == pytest.approx((1 - ab) ** 0.5 / (256 * ab * V + 1 - ab))
        assert a[f"mean_gain_grey_exact_t{t}"] == pytest.approx((1 - ab) ** 0.5 / (768 * ab * V_grey + 1 - ab))
    assert a["mean_gain_exact_t990"] > 0.98 and a["mean_gain_exact_t200"] < 0.05


def test_loss_gap_of_a_network_that_memorized_its_one_training_image_is_the_closed_form():
    """A network that returns eps exactly for the one image it was trained on, (x_t - sqrt(alpha_bar) c_seen) /
    sqrt(1 - alpha_bar), has training loss 0 and, on an unseen constant image c, loss alpha_bar / (1 - alpha_bar)
    (c - c_seen)^2 at the t drawn for that slot: the gap is their mean over the slots' t. The same network on the
    same unseen image in both sets has gap 0: the k-th images of both sets share t and eps."""
    sched, g = linear_schedule(), lambda: torch.Generator().manual_seed(0)
    ab = lambda t: sched.alpha_bar[t].float()[:, None, None, None]  # noqa: E731

    class Memorized(torch.nn.Module):
        cfg = SimpleNamespace(num_classes=0)

        def forward(self, x_t, t):
            return (x_t - ab(t).sqrt() * 0.2) / (1 - ab(t)).sqrt()

    images = lambda c: TensorDataset(torch.full((40, 3, 4, 4), c), torch.zeros(40, dtype=torch.long))  # noqa: E731
    r = loss_gap(Memorized(), sched, images(0.2), images(-0.3), n=40, batch=64, generator=g())
    a = sched.alpha_bar[torch.randint(0, sched.T, (40,), generator=g())]  # the slots' t, drawn first
    assert r["train_loss"] == pytest.approx(0, abs=1e-6) and r["gap_images"] == 40
    assert r["loss_gap"] == pytest.approx((a / (1 - a) * 0.25).mean().item(), rel=1e-4)
    same = loss_gap(Memorized(), sched, images(-0.3), images(-0.3), n=40, batch=16, generator=g())
    assert same["loss_gap"] == 0 and same["loss_gap_ci95"] == 0


def test_seen_like_takes_the_training_faces_of_the_folders_the_held_out_faces_come_from(tmp_path):
    """CelebA: held-out faces (ids after 162770) only in the larger archive, so the gap's training faces are that
    archive's train-partition faces, not the smaller archive's; a CIFAR-10 folder keeps --ref."""
    from PIL import Image

    for folder, width, ids in (("half", 44, [1, 2, 3, 4]), ("full", 88, [5, 6, 162771, 162772])):
        (tmp_path / folder / "faces").mkdir(parents=True)
        for k in ids:
            face = Image.new("RGB", (width, width * 109 // 89), (k % 255, 90, 40))
            face.save(tmp_path / folder / "faces" / f"{k:06d}.jpg")
        (tmp_path / folder / "identity.txt").write_text("".join(f"{k:06d}.jpg {k}\n" for k in ids))
    unseen = load_dataset(tmp_path, 16, train=False)
    seen = seen_like(unseen, str(tmp_path), 16)
    assert [f.name for f in unseen.files] == ["162771.jpg", "162772.jpg"]
    assert [f.name for f in seen.files] == ["000005.jpg", "000006.jpg"]
    assert len(load_dataset(tmp_path, 16, train=True)) == 6
    real = tmp_path / "real" / "cat"
    real.mkdir(parents=True)
    shutil.copy(sorted((ASSETS / "cifar10").glob("*.jpg"))[0], real)
    assert len(seen_like(load_dataset(real.parent, 32), str(real.parent), 32)) == 1


def test_the_bench_reports_every_number_of_a_card_row(tmp_path):
    """python -m bench.quality on a tiny class-conditional model and the 10 shipped CIFAR-10 images: the JSON file
    holds the Frechet distance and its floor, chroma, held-out figures and class agreement at guidance 1 and 3."""
    real = tmp_path / "real"
    for f in sorted((ASSETS / "cifar10").glob("*.jpg")):
        (real / f.name.rsplit("_", 1)[0]).mkdir(parents=True)
        shutil.copy(f, real / f.name.rsplit("_", 1)[0])
    torch.manual_seed(0)
    save_model(tmp_path / "cond.safetensors", UNet(UNetConfig(ch=32, ch_mult=(1, 2), num_res_blocks=1, dropout=0.0,
                                                               num_classes=10)))
    r = cli("bench.quality", "--ckpt", tmp_path / "cond.safetensors", "--real", real, "--ref", real, "--n", 10,
            "--n-class", 10, "--steps", 2, "--json", tmp_path / "q.json", "--threads", 1,
            "--against", tmp_path / "cond.safetensors")
    assert r.returncode == 0, r.stderr[-2000:]
    q = json.loads((tmp_path / "q.json").read_text())
    assert {"frechet_distance", "frechet_floor", "chroma_samples", "chroma_real", "eval_loss", "bits_per_dim",
            "class_agreement_cfg1", "class_agreement_cfg3", "classifier_test_accuracy", "image_mean_spread_samples",
            "eps_mean_error_ratio_t800"} <= set(q)
    assert q["frechet_floor"] == pytest.approx(0, abs=1e-3)  # --ref = --real: a set against itself (rank 9)
    assert q["loss_gap"] == 0 and q["gap_images"] == 10  # the same 10 images, each slot's t and noise shared
    assert q["frechet_distance"] > 1 and 0 <= q["class_agreement_cfg3"] <= 1 and len(q["sha256"]) == 64
    # --against the same file: the same samples from the same noise, so no change and no paired error
    assert q["frechet_change"] == 0 and q["frechet_change_se"] == 0 and q["against_sha256"] == q["sha256"]
