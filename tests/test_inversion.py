"""inversion.py + noisemap.py: exact reconstruction, batched = sequential, the official zero-last error,
the portable noise-map file, and an independent regeneration of it."""
import numpy as np
import pytest
import torch

from ddpm.diffusion import sample
from ddpm.inversion import invert, map_stats
from ddpm.noisemap import NoiseMapError, invert_to_maps, load_maps, regenerate, save_maps
from ddpm.schedule import make_steps, strided_timesteps

from conftest import seeded_unet, tiny_model

TOL = {torch.float32: 1e-4, torch.float64: 1e-10}


def run(model, x0, sched, S, method="edit_friendly", mode="exact", skip=0, last="fixed_large", seed=0):
    steps = make_steps(sched, strided_timesteps(S))[skip:]
    inv = invert(model, x0, steps, sched, method=method, mode=mode, generator=torch.Generator().manual_seed(seed),
                 last=last, progress=False)
    return steps, (inv.xT, inv.zs, inv.sigma, inv.x0_rec)


GRID = [(dt, m, 10, skip) for dt in (torch.float32, torch.float64) for m in ("edit_friendly", "dpm_encoder")
        for skip in (0, 4)] + [(torch.float32, "edit_friendly", 100, 0), (torch.float64, "dpm_encoder", 50, 15)]


@pytest.mark.parametrize("dtype,method,S,skip", GRID)
def test_exact_reconstruction_tiny(sched, cifar_images, dtype, method, S, skip):
    """Sampler(xT, zs) reproduces x0, last step included: max-abs <= 1e-4 (float32) / 1e-10 (float64)."""
    model = seeded_unet("tiny", dtype=dtype)
    x0 = cifar_images[:2].to(dtype)
    steps, (xT, zs, sigma, x_rec) = run(model, x0, sched, S, method, skip=skip)
    assert sigma[-1] > 0
    x_gen = sample(model, xT, steps, sigma, zs=zs, progress=False)
    assert torch.equal(x_gen, x_rec), "exact mode must compute exactly what the sampler computes"
    assert (x_gen - x0).abs().max() <= TOL[dtype]


@pytest.mark.slow
@pytest.mark.parametrize("dtype,S,method,skip", [(torch.float32, 10, "edit_friendly", 0),
                                                 (torch.float32, 10, "dpm_encoder", 3),
                                                 (torch.float64, 10, "edit_friendly", 0),
                                                 (torch.float64, 10, "dpm_encoder", 4)])
def test_exact_reconstruction_cifar10_preset(sched, cifar_images, dtype, S, method, skip):
    """The 35.7M-parameter CIFAR-10 network: reconstruction within 1e-4 (float32) / 1e-10 (float64)."""
    model = seeded_unet("cifar10", dtype=dtype)
    x0 = cifar_images[:1].to(dtype)
    steps, (xT, zs, sigma, x_rec) = run(model, x0, sched, S, method, skip=skip)
    assert (sample(model, xT, steps, sigma, zs=zs, progress=False) - x0).abs().max() <= TOL[dtype]


@pytest.mark.slow
def test_exact_reconstruction_celebahq256_float32(sched):
    """The 113.7M-parameter 256x256 network, S = 3 (the last step included), float32, on a real CelebA face."""
    from ddpm.images import load_image
    from conftest import ASSETS

    model = seeded_unet("celebahq256")
    x0 = load_image(ASSETS / "celeba" / "000001.jpg", 256)[None]
    steps, (xT, zs, sigma, x_rec) = run(model, x0, sched, 3)
    assert (x_rec - x0).abs().max() <= 1e-4


def test_zero_last_reproduces_the_official_nonzero_error(sched, cifar_images):
    """last='zero' (official code: z_1 = 0) leaves x0 - x0_hat(x_1) as error: measurably > 1e-3."""
    model = seeded_unet("tiny")
    _, (_, _, sigma, x_rec) = run(model, cifar_images, sched, 10, last="zero")
    assert sigma[-1] == 0
    assert (x_rec - cifar_images).abs().max() > 1e-3


def test_perturbed_maps_do_not_reconstruct(sched, cifar_images):
    """Negative control: z_t + 1e-3 at one step breaks the reconstruction (> 1e-4)."""
    model = seeded_unet("tiny")
    steps, (xT, zs, sigma, _) = run(model, cifar_images, sched, 10)
    zs = zs.clone()
    zs[5] += 1e-3
    assert (sample(model, xT, steps, sigma, zs=zs, progress=False) - cifar_images).abs().max() > 1e-4


@pytest.mark.parametrize("method", ["edit_friendly", "dpm_encoder"])
def test_batched_and_sequential_inversions_give_the_same_maps_float64(sched, cifar_images, method):
    """Chunked network calls on the independent x_t = one call per step, to float64 rounding (1e-8)."""
    model = seeded_unet("tiny", dtype=torch.float64)
    x0 = cifar_images.double()
    _, (xT_a, zs_a, _, rec_a) = run(model, x0, sched, 10, method, mode="exact")
    _, (xT_b, zs_b, _, rec_b) = run(model, x0, sched, 10, method, mode="batched")
    assert torch.equal(xT_a, xT_b)
    torch.testing.assert_close(zs_a, zs_b, rtol=0, atol=1e-8)
    assert (rec_b - x0).abs().max() <= 1e-10


def test_batched_mode_reports_its_float32_error(sched, cifar_images):
    """Batched float32 evaluates other batch compositions, so its error is measured (not assumed) and small here."""
    model = seeded_unet("tiny")
    _, (_, _, _, rec) = run(model, cifar_images, sched, 20, mode="batched")
    err = (rec - cifar_images).abs().max().item()
    assert 0 < err <= 1e-3


def test_same_seed_same_maps_other_seed_other_maps(sched, cifar_images):
    model = seeded_unet("tiny")
    a = run(model, cifar_images, sched, 10, seed=1)[1][1]
    b = run(model, cifar_images, sched, 10, seed=1)[1][1]
    c = run(model, cifar_images, sched, 10, seed=2)[1][1]
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_map_stats_of_native_noise_are_standard_normal():
    """i.i.d. N(0,1) maps: variance ~1 and consecutive correlation ~0 (the reference the paper compares to)."""
    st = map_stats(torch.randn(10, 2, 3, 32, 32, generator=torch.Generator().manual_seed(0)))
    assert (st["var"] - 1).abs().max() < 0.05 and st["corr_next"][:-1].abs().max() < 0.05


def regenerate_independently(f: dict, eps_fn) -> np.ndarray:
    """The file's regeneration rule written out in numpy float64, without the library's sampler."""
    x, ab = f["xT"].astype(np.float64), f["alphas_cumprod"]
    ts = f["timesteps"]
    for i, t in enumerate(ts):
        ab_t = ab[t]
        ab_prev = ab[ts[i + 1]] if i + 1 < len(ts) else 1.0
        eps = eps_fn(x, int(t))
        x0 = (x - np.sqrt(1 - ab_t) * eps) / np.sqrt(ab_t)
        if f["clip_x0"]:
            x0 = np.clip(x0, -1, 1)
        mu = (np.sqrt(ab_prev) * (1 - ab_t / ab_prev) / (1 - ab_t) * x0
              + np.sqrt(ab_t / ab_prev) * (1 - ab_prev) / (1 - ab_t) * x)
        x = mu + f["sigmas"][i] * f["zs"][i]
    return x


def test_noise_map_file_round_trips_and_regenerates_independently(tmp_path, cifar_images):
    """save -> load is lossless; a numpy re-implementation of the documented rule reproduces x0 to 1e-10 (float64)."""
    model = tiny_model(torch.float64)
    maps, rec = invert_to_maps(model, cifar_images.double(), S=20, skip=2, progress=False)
    path = tmp_path / "maps.npz"
    save_maps(path, maps)
    back = load_maps(path)
    for k in ("x0", "xT", "zs", "timesteps", "alphas_cumprod", "sigmas"):
        assert torch.equal(getattr(back, k), getattr(maps, k)), k
    assert (back.clip_x0, back.method, back.model_sha256) == (True, "edit_friendly", "test")
    with np.load(path, allow_pickle=False) as npz:
        f = {k: npz[k] for k in npz.files}
    assert int(f["format_version"]) == 1 and f["zs"].shape == (18, 4, 3, 32, 32) and f["timesteps"].dtype == np.int64

    def eps_fn(x, t):
        with torch.no_grad():
            return model.unet(torch.from_numpy(x), torch.full((x.shape[0],), t)).numpy()

    assert np.abs(regenerate_independently(f, eps_fn) - f["x0"]).max() <= 1e-10
    assert (regenerate(model.eps, back, progress=False) - back.x0).abs().max() <= 1e-10


def test_noise_map_file_refuses_pickles_and_bad_contents(tmp_path, cifar_images):
    maps, _ = invert_to_maps(tiny_model(), cifar_images[:1], S=5, progress=False)
    evil = tmp_path / "evil.npz"
    np.savez(evil, **{"format_version": 1, "x0": np.array([object()], dtype=object)})
    with pytest.raises(NoiseMapError, match="refused"):
        load_maps(evil)
    nan = maps.replace(zs=maps.zs.clone())
    nan.zs[0, 0, 0, 0, 0] = float("nan")
    with pytest.raises(NoiseMapError, match="NaN"):
        save_maps(tmp_path / "nan.npz", nan)
    with pytest.raises(NoiseMapError, match="zs has shape"):
        maps.replace(zs=maps.zs[1:]).validate()


def test_invert_to_maps_checks_its_ranges(cifar_images):
    with pytest.raises(ValueError, match="steps"):
        invert_to_maps(tiny_model(), cifar_images, S=1001)
    with pytest.raises(ValueError, match="skip"):
        invert_to_maps(tiny_model(), cifar_images, S=10, skip=10)


def test_ddim_inversion_is_the_inverse_of_the_eta0_sampler_when_eps_is_constant(sched, cifar_images):
    """DDIM inversion's only approximation is eps(x_hi) ~ eps(x_lo): with an eps model that ignores x the
    eta = 0 sampler brings the inverted x_T back to x0 within 1e-10 (float64); with a real network it does
    not (error > 1e-6), so the test can tell the two apart."""
    from ddpm.inversion import ddim_invert, ddim_regenerate

    x0 = cifar_images.double()
    c = torch.randn(x0.shape, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    steps = make_steps(sched, strided_timesteps(20))
    const = lambda x, t: c  # noqa: E731
    xT = ddim_invert(const, x0, steps, progress=False)
    assert (ddim_regenerate(const, xT, steps, progress=False) - x0).abs().max() < 1e-10
    assert (xT - x0).abs().max() > 0.5  # it did move the image up the chain
    net = seeded_unet("tiny").double()
    rec = ddim_regenerate(net, ddim_invert(net, x0, steps, progress=False), steps, progress=False)
    assert (rec - x0).abs().max() > 1e-6


def test_edit_friendly_map_statistics_match_their_closed_form(sched, cifar_images):
    """With an exact eps (the true noise of each x_t, so x0_hat = x_0), the measured variance of every map and the
    correlation of consecutive maps equal `edit_friendly_stats` (Var = 1 + 2 alpha' (1 - alpha_bar_prev) / beta',
    corr about -0.5) to sampling error, on 4 real images x 3072 values, S = 20; DPM-Encoder maps do not follow it."""
    from ddpm.inversion import edit_friendly_stats

    x0 = cifar_images.double()
    steps = make_steps(sched, strided_timesteps(20))
    alpha_bar = sched.alpha_bar

    def exact_eps(x_t, t):  # the noise that q_sample put into x_t
        ab = alpha_bar[t.cpu()].view(-1, 1, 1, 1).to(x_t.dtype)
        return (x_t - ab.sqrt() * x0) / (1.0 - ab).sqrt()

    want = edit_friendly_stats(steps)
    inv = invert(exact_eps, x0, steps, sched, generator=torch.Generator().manual_seed(0), progress=False)
    got = map_stats(inv.zs)
    rel = (got["var"][:-1] / want["var"][:-1] - 1).abs()
    assert rel.max() < 0.1 and want["var"][5] > 2  # +-10%: 12,288 values per map
    assert (got["corr_next"][:-2] - want["corr_next"][:-2]).abs().max() < 0.05
    assert got["var"][-1] < 1e-20 and want["var"][-1] == 0  # the last target is x_0 itself: z = 0 up to rounding
    assert -0.6 < want["corr_next"][:-2].mean() < -0.4
    dpm = invert(exact_eps, x0, steps, sched, method="dpm_encoder", generator=torch.Generator().manual_seed(0),
                 progress=False)
    assert (map_stats(dpm.zs)["var"][:-1] / want["var"][:-1] - 1).abs().max() > 0.5  # negative control
