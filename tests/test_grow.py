"""ddpm/grow.py: a trained UNet laid out for a larger one starts as the same function, and its new parts learn."""
from dataclasses import replace

import pytest
import torch

from ddpm.grow import grow, growable, source_names
from ddpm.unet import PRESETS, UNet


def trained_like(cfg, seed=0):
    """A float64 UNet with every parameter drawn N(0, 0.05^2): zero-initialised layers of a fresh network would
    hide a wrong mapping."""
    torch.manual_seed(seed)
    net = UNet(cfg).double()
    with torch.no_grad():
        for p in net.parameters():
            p.normal_(0, 0.05)
    return net


@pytest.mark.parametrize("change", [dict(num_res_blocks=2), dict(num_res_blocks=3),
                                    dict(attn_resolutions=(16, 32)), dict(num_classes=10),
                                    dict(num_res_blocks=2, attn_resolutions=(16, 32), num_classes=10)])
def test_the_grown_network_computes_exactly_the_source_and_its_new_parts_get_gradients(change):
    """eps_theta of the grown network equals the source's bit for bit (float64, max difference 0) at t = 0, 500,
    999, for every label when a class embedding is new; every new tensor set to zero (conv2, proj_out, the class
    embedding) receives a nonzero gradient, so training moves it from the first step."""
    src = trained_like(PRESETS["tiny"])
    dst = UNet(replace(PRESETS["tiny"], **change)).double()
    (state,), index = grow(dst, src.cfg, src.state_dict())
    dst.load_state_dict(state)
    x = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    t = torch.tensor([0, 500, 999])
    with torch.no_grad():
        ref = src(x, t)
        assert torch.equal(dst(x, t), ref)
        if "num_classes" in change:
            assert all(torch.equal(dst(x, t, torch.full((3,), y)), ref) for y in (0, 9))
    new = [k for k, i in zip(dst.state_dict(), index) if i < 0]
    assert new and len(index) == len(dst.state_dict())
    dst(x, t, torch.tensor([1, 2, 3]) if "num_classes" in change else None).square().mean().backward()
    zeroed = [k for k in new if k.endswith(("conv2.weight", "proj_out.weight", "class_emb.weight"))]
    assert zeroed and all(torch.count_nonzero(dst.get_parameter(k)) == 0 for k in zeroed)
    assert all(dst.get_parameter(k).grad.abs().max() > 0 for k in zeroed), zeroed


def test_the_up_path_keeps_its_first_block_and_takes_the_new_ones_second():
    """One more res block per level: down blocks 0 keep their weights, down 1 is new; up block 0 keeps block 0,
    up 1 is new, up 2 is the old up 1 (it pops the same skip): the layout `grow` derives its exactness from."""
    names = source_names(PRESETS["tiny"], replace(PRESETS["tiny"], num_res_blocks=2))
    assert names["down.0.res.0.conv1.weight"] == "down.0.res.0.conv1.weight"
    assert names["down.0.res.1.conv1.weight"] is None
    assert names["up.0.res.0.conv1.weight"] == "up.0.res.0.conv1.weight"
    assert names["up.0.res.1.conv1.weight"] is None
    assert names["up.0.res.2.conv1.weight"] == "up.0.res.1.conv1.weight"
    assert names["up.0.attn.2.q.weight"] == "up.0.attn.1.q.weight"  # tiny: attention at 16x16, the up path's first level
    assert names["mid.1.q.weight"] == "mid.1.q.weight"


@pytest.mark.parametrize("change, why", [(dict(ch=64), "ch differ"), (dict(image_size=64), "image_size differ"),
                                         (dict(num_res_blocks=0), "fewer res blocks"),
                                         (dict(attn_resolutions=()), "no attention at [16]")])
def test_a_network_that_cannot_start_equal_is_refused_with_the_reason(change, why):
    """Wider, at another size, shallower or without an attention block the source has: no layout of the source's
    weights computes the same function, so `grow` refuses and says which field stands in the way. (Another num_groups
    is a documented warm start: the v1 -> 8-group and 8 -> 1-group moves of the shipped models.)"""
    assert growable(PRESETS["tiny"], replace(PRESETS["tiny"], num_groups=8)) == ""
    dst = UNet(replace(PRESETS["tiny"], **change))
    assert why in growable(PRESETS["tiny"], dst.cfg)
    with pytest.raises(ValueError, match=why.replace("[", r"\[").replace("]", r"\]")):
        grow(dst, PRESETS["tiny"], UNet(PRESETS["tiny"]).state_dict())
