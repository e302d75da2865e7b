"""Sparse conv backend: submanifold conv equals dense Conv3d restricted to the active voxels."""
import torch
import torch.nn.functional as F

from gnesf_ros.model.sparse_conv import KernelMap, SubmConv3d, VoxelHash

torch.set_num_threads(1)


def _dense_reference(coords, x, conv, d, shift):
    """Scatter into a dense grid, run Conv3d with the same weights, read the active voxels back."""
    c = coords - shift
    full = torch.zeros(1, x.shape[1], d, d, d, dtype=x.dtype)
    full[0, :, c[:, 0], c[:, 1], c[:, 2]] = x.t()
    w = conv.weight.view(3, 3, 3, conv.c_in, conv.c_out).permute(4, 3, 0, 1, 2)
    y = F.conv3d(full, w, conv.bias, padding=1)
    return y[0][:, c[:, 0], c[:, 1], c[:, 2]].t()


def test_subm_conv_matches_dense_conv3d_forward_and_backward():
    g = torch.Generator().manual_seed(0)
    d = 20
    mask = torch.rand(d, d, d, generator=g) < 0.25
    shift = torch.tensor([-7, 3, -12])  # negative global coordinates must work too
    coords = torch.nonzero(mask) + shift
    conv = SubmConv3d(5, 7)
    with torch.no_grad():
        conv.bias.normal_()
    x = torch.randn(coords.shape[0], 5, generator=g, requires_grad=True)
    y = conv(x, KernelMap(coords))
    x_ref = x.detach().clone().requires_grad_(True)
    ref = _dense_reference(coords, x_ref, conv, d, shift)
    assert (y - ref).abs().max() < 1e-5
    probe = torch.randn(y.shape, generator=g)
    gx, gw = torch.autograd.grad((y * probe).sum(), (x, conv.weight))
    gx_ref, gw_ref = torch.autograd.grad((ref * probe).sum(), (x_ref, conv.weight))
    assert (gx - gx_ref).abs().max() < 1e-4
    assert (gw - gw_ref).abs().max() < 1e-3 * gw_ref.abs().max()


def test_isolated_voxel_only_sees_centre_weight():
    coords = torch.tensor([[0, 0, 0], [5, 5, 5]])
    conv = SubmConv3d(2, 3, bias=False)
    x = torch.randn(2, 2)
    y = conv(x, KernelMap(coords))
    assert torch.allclose(y, x @ conv.weight[13], atol=1e-6)  # offset (0, 0, 0) is index 13


def test_voxel_hash_lookup():
    coords = torch.tensor([[1, 2, 3], [-4, 0, 9], [100000, -100000, 7]])
    h = VoxelHash(coords)
    q = torch.tensor([[-4, 0, 9], [1, 2, 3], [0, 0, 0], [100000, -100000, 7]])
    assert h.lookup(q).tolist() == [1, 0, -1, 2]
    assert VoxelHash(torch.zeros(0, 3, dtype=torch.long)).lookup(q).tolist() == [-1] * 4
