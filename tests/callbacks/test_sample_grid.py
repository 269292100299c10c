from types import SimpleNamespace

import numpy as np
import torch
from PIL import Image

from talkinghead.callbacks.samples import SampleGrid, grid_image


class Mirror:
    """Stands in for a model: reconstruct_batch returns the driving frame mirrored."""

    def reconstruct_batch(self, batch):
        return batch["driving"].flip(-1)


def test_grid_puts_columns_side_by_side():
    a, b = torch.zeros(2, 3, 4, 4), torch.ones(2, 3, 4, 4)
    image = grid_image(a, b)
    assert image.shape == (8, 8, 3) and image.dtype == np.uint8
    assert (image[:, :4] == 0).all() and (image[:, 4:] == 255).all()


def test_sample_grid_writes_every_n_steps(tmp_path):
    callback = SampleGrid(every_n_steps=2, max_images=3, directory=str(tmp_path))
    trainer = SimpleNamespace(is_global_zero=True, current_epoch=0, logger=None)
    batch = {"source": torch.rand(4, 3, 8, 8), "driving": torch.rand(4, 3, 8, 8)}
    for index in range(4):
        callback.on_train_batch_end(trainer, Mirror(), None, batch, index)
    written = sorted(p.name for p in tmp_path.iterdir())
    assert written == ["epoch000-batch000000.png", "epoch000-batch000002.png"]
    image = np.asarray(Image.open(tmp_path / written[0]))
    assert image.shape == (3 * 8, 3 * 8, 3)
    expected = grid_image(batch["source"][:3], batch["driving"][:3], batch["driving"][:3].flip(-1))
    np.testing.assert_array_equal(image, expected)


def test_sample_grid_shows_first_reference_of_few_shot_batches(tmp_path):
    callback = SampleGrid(every_n_steps=1, max_images=2, directory=str(tmp_path))
    trainer = SimpleNamespace(is_global_zero=True, current_epoch=0, logger=None)
    batch = {"references": torch.rand(3, 4, 3, 8, 8), "driving": torch.rand(3, 3, 8, 8), "video": ["a", "b", "c"]}
    callback.on_train_batch_end(trainer, Mirror(), None, batch, 0)
    image = np.asarray(Image.open(next(tmp_path.iterdir())))
    expected = grid_image(batch["references"][:2, 0], batch["driving"][:2], batch["driving"][:2].flip(-1))
    np.testing.assert_array_equal(image, expected)
