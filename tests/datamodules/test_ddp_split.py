"""Two CPU processes (ddp_spawn) stream disjoint shards, and see the same number of batches."""

import lightning as L
import pytest
from probe_module import ProbeModule

from talkinghead.datamodules.shard_format import expand_shards
from talkinghead.datamodules.talking_heads import PairsDataModule


@pytest.mark.slow
def test_two_ranks_read_disjoint_shards(random_shards, tmp_path):
    data = PairsDataModule(shards=str(random_shards), image_size=16, batch_size=2, num_workers=2,
                           samples_per_epoch=12)
    trainer = L.Trainer(accelerator="cpu", devices=2, strategy="ddp_spawn", max_epochs=1, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(ProbeModule(record_dir=str(tmp_path)), datamodule=data)
    records = sorted(tmp_path.glob("rank-*.txt"))
    assert [p.name.split("-pid")[0] for p in records] == ["rank-0", "rank-1"]
    seen = [{line.split("#")[0] for line in p.read_text().splitlines()} for p in records]
    counts = [len(p.read_text().splitlines()) for p in records]
    urls = expand_shards(str(random_shards))
    assert counts == [12, 12]
    assert seen[0].isdisjoint(seen[1])
    assert seen[0] <= set(urls[0::2]) and seen[1] <= set(urls[1::2])
