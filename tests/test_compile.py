"""The opt-in compiled blocks compute the same scores as the exact path (checked through dynamo tracing)."""

import copy

import torch

from conftest import golden_path
from met3r_metrics import met3r
from met3r_metrics.compile import compile_networks, transformer_blocks
from met3r_metrics.scorer import MEt3RScorer
from met3r_metrics.settings import Settings
from met3r_metrics.testing import tiny_met3r_kwargs


def test_compiled_blocks_give_the_same_scores(tmp_path):
    kw = tiny_met3r_kwargs(golden_path(), tmp_path)
    settings = Settings.official(**kw)
    exact = MEt3RScorer.from_settings(settings)
    images = torch.rand(2, 3, 3, 64, 64, generator=torch.Generator().manual_seed(0)) * 2 - 1
    ref = met3r(images, scorer=exact, return_details=True).pair_scores
    # a private copy of the networks, so the process-cached ones stay uncompiled for other tests
    fresh = copy.deepcopy(exact)
    blocks = list(transformer_blocks(fresh))
    assert len(blocks) == 2 + 2 * 12 + 2  # tiny MASt3R: 2 encoder, 2 x 12 decoder blocks; DINO depth 2
    torch._dynamo.reset()
    compile_networks(fresh, backend="aot_eager", dynamic=False)
    got = met3r(images, scorer=fresh, return_details=True).pair_scores
    torch.testing.assert_close(got, ref, rtol=0, atol=1e-6)
    torch._dynamo.reset()
