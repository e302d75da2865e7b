"""GNeSF network (feature volume, coarse-to-fine geometry, soft semantic voting, rendering) and its training.

Modules: feature2d, volume, sparse_conv, geometry_net, heads, voting, visibility, fields, render,
losses, targets, gnesf (the GNeSF nn.Module and inference API), data (training windows), train.
"""
from gnesf_ros.model.gnesf import GNeSF

__all__ = ["GNeSF"]
