"""Test helper: spectral-norm power iterations set to their fixed point, so steps that run D a different number of
times give the same sigma estimates."""

import torch
import torch.nn.functional as F


def converge_spectral_norms(module):
    """Sets every spectral-norm power iteration to its fixed point, the top singular vectors of the weight.

    Each D forward in training mode runs one power iteration; a step that runs D once fewer per batch would, from
    unconverged vectors, have sigma estimates one iteration apart from the step it replaces.
    """
    for layer in module.modules():
        if hasattr(layer, "parametrizations"):
            weight = layer.parametrizations.weight.original.detach().flatten(1)
            v = torch.linalg.svd(weight, full_matrices=False).Vh[0]
            for parametrization in layer.parametrizations.weight:
                parametrization._v.copy_(v)
                parametrization._u.copy_(F.normalize(weight @ v, dim=0))
