import shutil

import pytest
import torch

from talkinghead.datamodules.shard_format import ShardError
from talkinghead.datamodules.talking_heads import FewShotDataModule, PairsDataModule, PersonDataModule

SIZE = 16


def batches(loader, count=None):
    out = []
    for i, batch in enumerate(loader):
        out.append(batch)
        if count is not None and i + 1 == count:
            break
    return out


def check_role(batch, role, lead):
    assert batch[role].shape == (*lead, 3, SIZE, SIZE) and batch[role].dtype == torch.float32
    assert 0.0 <= batch[role].min() and batch[role].max() <= 1.0
    assert batch[f"{role}_landmarks"].shape == (*lead, 68, 2)
    assert batch[f"{role}_pose"].shape == (*lead, 6)
    assert batch[f"{role}_mask"].shape == (*lead, 1, SIZE, SIZE)


def test_pairs_mode_with_two_workers(random_shards):
    data = PairsDataModule(shards=str(random_shards), image_size=SIZE, batch_size=3, num_workers=2,
                           samples_per_epoch=10)
    data.setup("fit")
    loader = data.train_dataloader()
    epoch = batches(loader)
    # 10 samples -> 4 batches of 3, rounded up to 2 whole batches per worker.
    assert len(loader) == len(epoch) == 4
    for batch in epoch:
        check_role(batch, "source", (3,))
        check_role(batch, "driving", (3,))
        assert batch["frame_index"].shape == (3, 2)
        assert (batch["frame_index"][:, 0] != batch["frame_index"][:, 1]).all()
        assert len(batch["identity"]) == len(batch["sample"]) == 3
    seen = {s.split("#")[0] for batch in epoch for s in batch["sample"]}
    assert len(seen) > 1  # the two workers read different shards


def test_few_shot_mode_keeps_the_target_out_of_the_references(random_shards):
    data = FewShotDataModule(shards=str(random_shards), image_size=SIZE, batch_size=2, num_workers=2,
                             samples_per_epoch=8, num_references=4)
    data.setup("fit")
    assert data.num_videos == 12
    for batch in batches(data.train_dataloader()):
        check_role(batch, "references", (2, 4))
        check_role(batch, "driving", (2,))
        references, target = batch["frame_index"][:, :-1], batch["frame_index"][:, -1:]
        assert not (references == target).any()
        for video, index in zip(batch["video"], batch["video_index"]):
            assert data.video_to_index[video] == index


def test_few_shot_needs_two_frames_per_clip(tmp_path, random_clip):
    from talkinghead.datamodules.shard_format import ShardWriter

    with ShardWriter(tmp_path, codec="npy") as writer:
        writer.write(random_clip(0, num_frames=1), "single")
    data = FewShotDataModule(shards=str(tmp_path), image_size=SIZE, batch_size=1, num_workers=0,
                             samples_per_epoch=1, num_references=2)
    data.setup("fit")
    with pytest.raises(ShardError, match="at least 2 frames"):
        next(iter(data.train_dataloader()))


def test_validation_is_deterministic(random_shards):
    data = PairsDataModule(shards=str(random_shards), val_shards=str(random_shards), image_size=SIZE, batch_size=4,
                           num_workers=0, val_samples=6, color_jitter=None)
    data.setup("fit")
    first, second = batches(data.val_dataloader()), batches(data.val_dataloader())
    assert [b["source"].shape[0] for b in first] == [4, 2]
    for a, b in zip(first, second):
        torch.testing.assert_close(a["driving"], b["driving"])
        assert a["sample"] == b["sample"]
    assert (first[0]["frame_index"][:, 0] == 0).all()


def test_few_shot_validation_marks_unknown_videos(random_shards, tmp_path, random_clip):
    from talkinghead.datamodules.shard_format import ShardWriter

    with ShardWriter(tmp_path, codec="npy") as writer:
        writer.write(random_clip(99, num_frames=6), "held-out")
    data = FewShotDataModule(shards=str(random_shards), val_shards=str(tmp_path), image_size=SIZE, batch_size=1,
                             num_workers=0, num_references=3)
    data.setup("fit")
    (batch,) = batches(data.val_dataloader())
    assert batch["video_index"].tolist() == [-1]
    check_role(batch, "references", (1, 3))


def test_person_mode(random_shards):
    data = PersonDataModule(shards=str(random_shards), image_size=SIZE, batch_size=2, num_workers=2,
                            samples_per_epoch=6, num_frames=5, val_samples=4)
    data.setup("fit")
    assert data.identity == "person-0"  # the first one found
    person = data.person_frames()
    check_role(person, "references", (1, 5))
    assert person["identity"] == ["person-0"]
    train = batches(data.train_dataloader())
    assert len(train) == 3
    for batch in train:
        check_role(batch, "source", (2,))
        check_role(batch, "driving", (2,))
    val = batches(data.val_dataloader())
    assert sum(b["driving"].shape[0] for b in val) == 4
    held_out = torch.cat([b["driving"] for b in val])
    for frame in person["references"][0]:  # held-out frames are not among the T
        assert not any(torch.equal(frame, h) for h in held_out)


def test_person_mode_by_identity_and_errors(random_shards):
    data = PersonDataModule(shards=str(random_shards), image_size=SIZE, num_workers=0, identity="person-3",
                            num_frames=20)
    data.setup("fit")
    assert data.person_frames()["references"].shape[1] == 20
    with pytest.raises(ShardError, match="'nobody' is not in the shards"):
        PersonDataModule(shards=str(random_shards), identity="nobody").setup("fit")
    with pytest.raises(ShardError, match="has 20 frames, fewer than num_frames=21"):
        PersonDataModule(shards=str(random_shards), identity="person-1", num_frames=21).setup("fit")


def test_person_held_out_frames_are_the_same_for_every_t_and_never_among_them(random_shards):
    """held_out_frames: the frames are held out before the T are chosen (the few-shot protocol scores every T on the
    same frames); and a person is never mirrored by default (mirrored, it is another-looking person)."""
    def person(num_frames):
        data = PersonDataModule(shards=str(random_shards), image_size=SIZE, num_workers=0, identity="person-2",
                                num_frames=num_frames, held_out_frames=4)
        data.setup("fit")
        return data.person_frames()["references"][0], torch.cat([b["driving"] for b in data.val_dataloader()])

    assert PersonDataModule(shards=str(random_shards)).augment.flip_probability == 0.0
    held = None
    for num_frames in (1, 8, 16):  # person-2 has 2 clips x 10 frames = 20 frames
        references, held_out = person(num_frames)
        assert references.shape[0] == num_frames and held_out.shape[0] == 4
        held = held_out if held is None else held
        torch.testing.assert_close(held_out, held)
        for frame in references:
            assert not any(torch.equal(frame, h) for h in held_out)
    with pytest.raises(ShardError, match=r"has 20 frames, fewer than num_frames=17 \+ held_out_frames=4"):
        person(17)


def test_corrupt_shard_in_the_stream_names_the_file(random_shards, tmp_path):
    for path in sorted(random_shards.glob("*.tar"))[:2]:
        shutil.copy(path, tmp_path)
    broken = tmp_path / "shard-000001.tar"
    broken.write_bytes(broken.read_bytes()[:3000])
    data = PairsDataModule(shards=str(tmp_path), image_size=SIZE, batch_size=1, num_workers=0,
                           samples_per_epoch=20)
    data.setup("fit")
    with pytest.raises(ShardError, match=f"shard {broken} is unreadable"):
        batches(data.train_dataloader())
    data.skip_corrupt = True
    assert len(batches(data.train_dataloader())) == 20


def test_empty_glob_is_a_clear_error(tmp_path):
    data = PairsDataModule(shards=str(tmp_path / "*.tar"))
    with pytest.raises(ShardError, match="matched no .tar files"):
        data.setup("fit")


def test_shards_from_an_fsspec_url(random_shards):
    """Shards behind a URL (fsspec's in-memory file system standing in for object storage)."""
    import fsspec

    memory = fsspec.filesystem("memory")
    for path in sorted(random_shards.iterdir()):
        memory.pipe(f"/bucket/shards/{path.name}", path.read_bytes())
    data = FewShotDataModule(shards="memory://bucket/shards/shard-{000000..000002}.tar", image_size=SIZE,
                             batch_size=2, num_workers=0, samples_per_epoch=4, num_references=2,
                             val_shards="memory://bucket/shards/*.tar", val_samples=3)
    data.setup("fit")
    assert data.num_videos == 6
    (batch, _) = batches(data.train_dataloader())
    assert all(s.startswith("memory://bucket/shards/") for s in batch["sample"])
    assert sum(b["driving"].shape[0] for b in batches(data.val_dataloader())) == 3


def test_remove_background_blacks_out_where_masks_are_stored(random_shards, tmp_path, random_clip):
    from talkinghead.datamodules.shard_format import ShardWriter

    kept = dict(shards=str(random_shards), val_shards=str(random_shards), image_size=SIZE, batch_size=4,
                num_workers=0, val_samples=4, num_references=2)
    whole, segmented = FewShotDataModule(**kept), FewShotDataModule(**kept, remove_background=True)
    for data in (whole, segmented):
        data.setup("fit")
    for plain, cut in zip(batches(whole.val_dataloader()), batches(segmented.val_dataloader())):
        mask = plain["driving_mask"]
        assert mask.isfinite().all() and (mask == 0).any() and (mask == 1).any()
        torch.testing.assert_close(cut["driving"], plain["driving"] * mask)
        torch.testing.assert_close(cut["references"], plain["references"] * plain["references_mask"])
        assert (plain["driving"][mask.expand_as(plain["driving"]) == 0] > 0).any()  # there was a background

    # Clips without masks stay whole.
    with ShardWriter(tmp_path, codec="npy") as writer:
        writer.write(random_clip(0, num_frames=4, mask=False), "no-mask")
    maskless = dict(kept, shards=str(tmp_path), val_shards=str(tmp_path))
    whole, segmented = FewShotDataModule(**maskless), FewShotDataModule(**maskless, remove_background=True)
    for data in (whole, segmented):
        data.setup("fit")
    plain, cut = batches(whole.val_dataloader())[0], batches(segmented.val_dataloader())[0]
    assert plain["driving_mask"].isnan().all()
    torch.testing.assert_close(cut["driving"], plain["driving"])


def _break(path):
    path.write_bytes(path.read_bytes()[:3000])


@pytest.mark.parametrize("workers", [0, 1])
def test_skip_corrupt_over_shards_that_are_all_bad_stops_with_one_error(random_shards, tmp_path, workers):
    """Issue 14: skip_corrupt over only bad shards looped forever; now the stream ends with a clear error."""
    import time

    for path in sorted(random_shards.glob("*.tar"))[:2]:
        shutil.copy(path, tmp_path)
        _break(tmp_path / path.name)
    data = PairsDataModule(shards=str(tmp_path), image_size=SIZE, batch_size=1, num_workers=workers,
                           samples_per_epoch=20, skip_corrupt=True)
    data.setup("fit")
    start = time.perf_counter()
    with pytest.raises(ShardError, match="no readable training sample left: all 2 shard"):
        batches(data.train_dataloader())
    assert time.perf_counter() - start < 30


def test_skip_corrupt_counts_and_does_not_retry_a_bad_shard_within_the_epoch(random_shards, tmp_path, caplog):
    for path in sorted(random_shards.glob("*.tar"))[:3]:
        shutil.copy(path, tmp_path)
    _break(tmp_path / "shard-000001.tar")
    data = PairsDataModule(shards=str(tmp_path), image_size=SIZE, batch_size=1, num_workers=0,
                           samples_per_epoch=40, skip_corrupt=True)
    data.setup("fit")
    assert len(batches(data.train_dataloader())) == 40
    assert data._skipped[1] == 1  # the broken shard failed once and was not chosen again in the epoch
    with caplog.at_level("WARNING"):
        data.teardown("fit")
    assert "1 unreadable shards skipped in training in all" in caplog.text


def test_validation_and_few_shot_setup_honour_skip_corrupt(random_shards, tmp_path):
    for path in sorted(random_shards.glob("*.tar"))[:3]:
        shutil.copy(path, tmp_path)
        shutil.copy(path.with_suffix(".json"), tmp_path)
    _break(tmp_path / "shard-000000.tar")
    (tmp_path / "shard-000002.json").write_text("{not json")
    strict = PairsDataModule(shards=str(tmp_path), val_shards=str(tmp_path), image_size=SIZE, val_samples=3)
    with pytest.raises(ShardError):
        strict.setup("fit")
        [strict.val_items[i] for i in range(len(strict.val_items))]
    data = PairsDataModule(shards=str(tmp_path), val_shards=str(tmp_path), image_size=SIZE, val_samples=3,
                           skip_corrupt=True)
    data.setup("fit")
    assert len(data.val_items) >= 1 and all(data.val_items[i]["source"].shape[-1] == SIZE
                                            for i in range(len(data.val_items)))
    with pytest.raises(ShardError, match="is corrupt"):
        FewShotDataModule(shards=str(tmp_path), image_size=SIZE, num_references=2).setup("fit")
    few = FewShotDataModule(shards=str(tmp_path), image_size=SIZE, num_references=2, skip_corrupt=True)
    few.setup("fit")
    assert str(tmp_path / "shard-000002.tar") not in few.train_urls and few.num_videos >= 1


@pytest.mark.parametrize("module", ["pairs", "few_shot"])
def test_items_per_clip_decodes_each_clip_once_for_its_items(random_shards, monkeypatch, module):
    """items_per_clip = 3: one decode per clip read serves three items, each holding exactly the frames (and
    labels) of its own frame numbers, and a shuffle buffer of items spreads one clip's items over batches."""
    import talkinghead.datamodules.talking_heads as talking_heads
    from talkinghead.datamodules.shard_format import decode_clip, iter_shard_samples
    from talkinghead.datamodules.transforms import clip_to_frames

    decoded = []
    monkeypatch.setattr(talking_heads, "decode_clip", lambda sample, indices: decoded.append(sorted(indices))
                        or decode_clip(sample, indices))
    kind = PairsDataModule if module == "pairs" else FewShotDataModule
    extra = {} if module == "pairs" else {"num_references": 3}
    data = kind(shards=str(random_shards), image_size=SIZE, batch_size=3, num_workers=0, samples_per_epoch=24,
                items_per_clip=3, flip_probability=0.0, **extra)
    data.setup("fit")
    epoch = batches(data.train_dataloader())
    assert sum(len(batch["sample"]) for batch in epoch) == 24
    assert len(decoded) == (24 + 9) // 3  # three items per decode: the 24 yielded and the 3 x 3 buffered ones
    frames_per_item = 2 if module == "pairs" else 4
    assert all(frames_per_item <= len(indices) <= 3 * frames_per_item for indices in decoded)
    samples = {f"{s['__url__']}#{s['__key__']}": s for url in data.train_urls for s in iter_shard_samples(url)}
    roles = ("source", "driving") if module == "pairs" else ("references", "driving")
    for batch in epoch:
        for row, name in enumerate(batch["sample"]):
            alone = clip_to_frames(decode_clip(samples[name], batch["frame_index"][row].tolist()), SIZE)
            images = torch.cat([batch[role][row].reshape(-1, 3, SIZE, SIZE) for role in roles])
            landmarks = torch.cat([batch[f"{role}_landmarks"][row].reshape(-1, 68, 2) for role in roles])
            torch.testing.assert_close(images, alone["image"])
            torch.testing.assert_close(landmarks, alone["landmarks"])
    together = sum(len(set(batch["sample"])) < len(batch["sample"]) for batch in epoch)
    assert together < len(epoch)  # not every batch holds one clip's items side by side


def test_items_per_clip_must_be_positive(random_shards):
    from talkinghead.errors import ConfigError

    with pytest.raises(ConfigError, match="items_per_clip"):
        PairsDataModule(shards=str(random_shards), image_size=SIZE, items_per_clip=0)


@pytest.mark.parametrize("module", ["pairs", "few_shot"])
@pytest.mark.parametrize("image_size", [SIZE, 12])
def test_uint8_transfer_carries_the_float_pipelines_training_batches(random_shards, module, image_size):
    """uint8_transfer: workers send uint8 images/masks and each item's jitter parameters; after
    on_after_batch_transfer the batch equals the float pipeline's (exact up to float rounding at the stored size,
    within the 1/510 quantisation, grown by the jitter, when resized), with the jitter applied item by item."""
    from talkinghead.datamodules.transforms import ColorJitter, from_uint8

    kind, extra = ((PairsDataModule, {}) if module == "pairs"
                   else (FewShotDataModule, {"num_references": 3, "remove_background": True}))
    roles = ("source", "driving") if module == "pairs" else ("references", "driving")

    def data(uint8):
        made = kind(shards=str(random_shards), image_size=image_size, batch_size=3, num_workers=1,
                    samples_per_epoch=6, items_per_clip=2, color_jitter=ColorJitter(0.2, 0.2, 0.2, 0.05),
                    uint8_transfer=uint8, **extra)
        made.setup("fit")
        return made

    plain, packed = data(False), data(True)
    pairs = list(zip(batches(plain.train_dataloader()), batches(packed.train_dataloader())))
    assert len(pairs) == 2
    atol = 1e-5 if image_size == SIZE else 3 / 255
    for expected, sent in pairs:
        assert "color_jitter" not in expected and sent["color_jitter"].shape == (3, 4)
        assert all(sent[role].dtype == sent[f"{role}_mask"].dtype == torch.uint8 for role in roles)
        got = packed.on_after_batch_transfer(sent, 0)
        assert "color_jitter" not in got
        for role in roles:
            torch.testing.assert_close(got[role], expected[role], rtol=0, atol=atol)
            assert (got[role] - expected[role]).abs().mean() < 0.5 / 255
            torch.testing.assert_close(got[f"{role}_mask"], expected[f"{role}_mask"], rtol=0, atol=0)
            torch.testing.assert_close(got[f"{role}_landmarks"], expected[f"{role}_landmarks"])
        assert expected["sample"] == got["sample"]
    # the jitter was applied: without it the images differ from the float pipeline's
    undone = from_uint8(pairs[0][1], color=None)
    assert (undone[roles[1]] - pairs[0][0][roles[1]]).abs().max() > 0.02


def test_uint8_transfer_trains_on_float_batches(random_shards, tmp_path):
    """Through a Trainer, the module's training step sees float32 images in [0, 1] and float masks."""
    import lightning as L
    from probe_module import ProbeModule

    seen = []

    class Probe(ProbeModule):
        def training_step(self, batch, batch_idx):
            seen.append((batch["source"].dtype, batch["source_mask"].dtype, float(batch["source"].max()),
                         "color_jitter" in batch))
            return super().training_step(batch, batch_idx)

    data = PairsDataModule(shards=str(random_shards), image_size=SIZE, batch_size=2, num_workers=0,
                           samples_per_epoch=4, uint8_transfer=True)
    trainer = L.Trainer(max_steps=2, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path)
    trainer.fit(Probe(), datamodule=data)
    assert seen and all(entry[:2] == (torch.float32, torch.float32) and entry[2] <= 1.0 for entry in seen)
