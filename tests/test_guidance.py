"""guidance.py: classifier-free guidance as an eps model; exact inversion holds under guidance."""
import pytest
import torch

from ddpm.diffusion import sample
from ddpm.guidance import class_index, guided_eps
from ddpm.inversion import invert
from ddpm.schedule import linear_schedule, make_steps, strided_timesteps
from ddpm.unet import UNet, UNetConfig


@pytest.fixture(scope="module")
def cond_unet():
    torch.manual_seed(0)
    unet = UNet(UNetConfig(ch=32, ch_mult=(1, 2), num_res_blocks=1, dropout=0.0, num_classes=10)).eval()
    torch.nn.init.normal_(unet.class_emb.weight)
    return unet


def test_null_condition_with_guidance_1_is_the_unconditional_path(cond_unet):
    """y = null and w = 1 gives exactly unet(x, t) (no labels), for any batch layout."""
    x, t = torch.randn(4, 3, 32, 32), torch.tensor([1, 2, 3, 4])
    null = torch.full((2,), 10)
    with torch.no_grad():
        assert torch.equal(guided_eps(cond_unet, null, 1.0)(x, t), cond_unet(x, t))
        # any w: cond = uncond when y is null, so the guided eps equals it to rounding
        torch.testing.assert_close(guided_eps(cond_unet, null, 3.0)(x, t), cond_unet(x, t), rtol=0, atol=1e-5)


@pytest.mark.parametrize("mode", ["exact", "batched"])
def test_reconstruction_with_the_source_class_and_guidance_stays_exact(cond_unet, cifar_images, mode):
    """Invert with (class, w) and regenerate with the same (class, w): max-abs <= 1e-4 in float32."""
    sched = linear_schedule()
    steps = make_steps(sched, strided_timesteps(10))
    eps = guided_eps(cond_unet, torch.tensor([3, 5]), 3.0)
    x0 = cifar_images[:2]
    inv = invert(eps, x0, steps, sched, mode=mode, generator=torch.Generator().manual_seed(0), progress=False)
    xT, zs, sigma = inv.xT, inv.zs, inv.sigma
    assert (sample(eps, xT, steps, sigma, zs=zs, progress=False) - x0).abs().max() <= 1e-4
    other = guided_eps(cond_unet, torch.tensor([1, 1]), 3.0)  # negative control: another class, another image
    assert (sample(other, xT, steps, sigma, zs=zs, progress=False) - x0).abs().max() > 1e-3


def test_class_names_and_unconditional_models_are_checked():
    assert class_index("cat", 10) == 3 and class_index("7", 10) == 7
    with pytest.raises(ValueError, match="not one of"):
        class_index("zebra", 10)
    torch.manual_seed(0)
    with pytest.raises(ValueError, match="unconditional"):
        guided_eps(UNet(UNetConfig(ch=32, ch_mult=(1, 2), num_res_blocks=1)), torch.tensor([0]), 1.0)


def test_class_edit_through_the_command_lines(tmp_path, cond_unet):
    """invert.py --class cat --cfg 2 records the condition; edit.py with no edit reproduces x0 (<= 1e-4);
    edit.py --class dog --skip 3 regenerates a different image from the same maps."""
    from ddpm.checkpoint import save_model
    from ddpm.noisemap import load_maps

    from conftest import ASSETS, cli

    ckpt = tmp_path / "cond.safetensors"
    save_model(ckpt, cond_unet)
    maps = tmp_path / "m.npz"
    run = lambda *a: cli(*a, "--no-progress")  # noqa: E731
    r = run("invert", "--ckpt", ckpt, "--image", ASSETS / "cifar10" / "cat_0000.jpg", "--steps", 10,
            "--class", "cat", "--cfg", 2.0, "--out", maps)
    assert r.returncode == 0, r.stderr
    m = load_maps(maps)
    assert m.extra["class_label"].tolist() == [3] and m.extra["cfg_scale"] == 2.0
    r = run("edit", maps, "--ckpt", ckpt, "--out", tmp_path / "same.png")
    assert r.returncode == 0 and float(r.stdout.split("inverted image ")[1].split()[0]) <= 1e-4, r.stdout + r.stderr
    r = run("edit", maps, "--ckpt", ckpt, "--class", "dog", "--cfg", 3.0, "--skip", 3, "--out",
            tmp_path / "dog.png")
    assert r.returncode == 0, r.stderr
    from ddpm.images import load_image

    assert (load_image(tmp_path / "dog.png", 32) - load_image(tmp_path / "same.png", 32)).abs().max() > 0.05


def test_sampling_a_class_saves_native_maps_that_verify(tmp_path, cond_unet):
    """python -m ddpm.sample --class dog --cfg 2 --save-maps: the file records the class and guidance, and
    ddpm.verify regenerates its samples from it within 1e-4 (exit 0)."""
    from ddpm.checkpoint import save_model
    from ddpm.noisemap import load_maps

    from conftest import cli

    ckpt = tmp_path / "cond.safetensors"
    save_model(ckpt, cond_unet)
    run = lambda *a: cli(*a, "--no-progress")  # noqa: E731
    r = run("ddpm.sample", "--ckpt", ckpt, "--n", 2, "--steps", 8, "--class", "dog", "--cfg", 2.0,
            "--out", tmp_path / "g.png", "--save-maps", tmp_path / "n.npz")
    assert r.returncode == 0, r.stderr
    m = load_maps(tmp_path / "n.npz")
    assert m.method == "native" and m.extra["class_label"].tolist() == [5, 5] and m.extra["cfg_scale"] == 2.0
    r = run("ddpm.verify", tmp_path / "n.npz", "--ckpt", ckpt, "--tol", 1e-4)
    assert r.returncode == 0, r.stdout + r.stderr


def test_cyclediffusion_switch_to_another_model_through_the_command_line(tmp_path):
    """edit.py --other-ckpt B --skip K on maps inverted with model A: the first K steps reproduce A's inversion,
    the rest run model B on the same maps (regenerate_switched); with B = A it reproduces x0 (<= 1e-4)."""
    from ddpm.checkpoint import save_model
    from ddpm.edits import regenerate_switched
    from ddpm.images import load_image
    from ddpm.models import load_model
    from ddpm.noisemap import load_maps

    from conftest import ASSETS, cli, seeded_unet

    a, b, maps = tmp_path / "a.safetensors", tmp_path / "b.safetensors", tmp_path / "m.npz"
    save_model(a, seeded_unet("tiny", seed=0))
    save_model(b, seeded_unet("tiny", seed=1))
    run = lambda *args: cli(*args, "--no-progress")  # noqa: E731
    r = run("invert", "--ckpt", a, "--image", ASSETS / "cifar10" / "cat_0000.jpg", "--steps", 10,
            "--out", maps)
    assert r.returncode == 0, r.stderr
    m = load_maps(maps)
    for other, skip in ((a, 0), (b, 4)):
        r = run("edit", maps, "--ckpt", a, "--other-ckpt", other, "--skip", skip, "--out",
                tmp_path / f"{other.stem}{skip}.png")
        assert r.returncode == 0, r.stderr
    with torch.no_grad():
        want = regenerate_switched(load_model(a).eps, load_model(b).eps, m, 4)
    got_a, got_b = load_image(tmp_path / "a0.png", 32), load_image(tmp_path / "b4.png", 32)
    assert (got_a - m.x0).abs().max() <= 1 / 127.5  # the 8-bit PNG of an exact reconstruction
    assert (got_b - want.clamp(-1, 1)).abs().max() <= 1 / 127.5
    assert (got_b - got_a).abs().max() > 0.05  # model B does change the image
