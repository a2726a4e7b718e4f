"""unet.py: the Ho et al. architecture, with the parameter counts of the diffusers reference networks."""
import pytest
import torch

from ddpm.unet import PRESETS, UNet, UNetConfig, count_params

from conftest import seeded_unet


@pytest.mark.parametrize("preset,n", [("cifar10", 35_746_307), ("celebahq256", 113_673_219)])
def test_parameter_counts_equal_the_diffusers_networks(preset, n):
    """cifar10 = google/ddpm-cifar10-32 (35.75M), celebahq256 = google/ddpm-celebahq-256 (113.67M), exactly."""
    assert count_params(UNet(PRESETS[preset])) == n


def test_output_shape_dtype_and_input_checks():
    m = seeded_unet("tiny")
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert m(x, torch.tensor([0, 999])).shape == x.shape
        assert m.double()(x.double(), torch.tensor([1, 2])).dtype == torch.float64
    with pytest.raises(ValueError, match="expects"):
        m(torch.randn(1, 3, 16, 16, dtype=torch.float64), torch.tensor([0]))


def test_timestep_changes_the_output():
    """The network is conditioned on t (negative control for the embedding being wired in)."""
    m, x = seeded_unet("tiny"), torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert (m(x, torch.tensor([10])) - m(x, torch.tensor([900]))).abs().max() > 1e-4


def test_class_conditional_null_class_is_the_unconditional_path():
    """y = None and y = null class (index num_classes) give identical outputs; a real class differs."""
    torch.manual_seed(0)
    m = UNet(UNetConfig(ch=32, ch_mult=(1, 2), num_res_blocks=1, num_classes=10)).eval()
    x, t = torch.randn(2, 3, 32, 32), torch.tensor([5, 500])
    with torch.no_grad():
        torch.nn.init.normal_(m.class_emb.weight)
        assert torch.equal(m(x, t), m(x, t, torch.tensor([10, 10])))
        assert (m(x, t) - m(x, t, torch.tensor([3, 3]))).abs().max() > 1e-4
    with pytest.raises(ValueError, match="unconditional"):
        seeded_unet("tiny")(x, t, torch.tensor([1, 1]))


def test_channels_last_and_bf16_autocast_run():
    m, x = seeded_unet("tiny").to(memory_format=torch.channels_last), torch.randn(2, 3, 32, 32)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        y = m(x.contiguous(memory_format=torch.channels_last), torch.tensor([1, 2]))
    assert y.shape == x.shape and torch.isfinite(y).all()


def test_bad_configs_are_refused():
    with pytest.raises(ValueError, match="divisible"):
        UNetConfig(image_size=30)
    with pytest.raises(ValueError, match="multiple of num_groups = 32"):
        UNetConfig(ch=48)
