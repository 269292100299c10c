"""DataModules that stream talking-head shards and build the batch each model needs.

Three modes, one class each, chosen by class_path in a LightningCLI config:

- :class:`PairsDataModule`: (source, driving) frames of one clip (OSFV);
- :class:`FewShotDataModule`: K reference frames + one distinct driving/target frame of one video, with the
  video's index for a projection discriminator (FSTH, LPD meta-learning);
- :class:`PersonDataModule`: the T frames of one person, for the fine-tuning stages.

Training streams shards with WebDataset: the shard list is split by node (rank) and by worker, each worker
resamples its own shards forever and the stream is cut into epochs of ``samples_per_epoch`` per rank, so every
rank sees the same number of batches. Validation is deterministic: fixed clips, fixed frames, no augmentation.
"""

from __future__ import annotations

import logging
import math
import multiprocessing
import random
import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import lightning as L
import numpy as np
import torch
import webdataset as wds
from torch.utils.data import DataLoader, Dataset, IterableDataset

from talkinghead.batch import Batch
from talkinghead.errors import ConfigError

from .shard_format import (
    Clip,
    IndexEntry,
    ShardError,
    decode_clip,
    expand_shards,
    iter_shard_samples,
    read_index,
    sample_num_frames,
)
from .transforms import (
    Augment,
    ColorJitter,
    Frames,
    clip_to_frames,
    from_uint8,
    remove_background,
    select,
    to_uint8,
)

__all__ = ["ShardDataModule", "PairsDataModule", "FewShotDataModule", "PersonDataModule"]

log = logging.getLogger(__name__)

Sample = dict[str, Any]  # a raw shard sample: member name -> bytes, plus __key__ and __url__


def role_fields(frames: Frames, role: str) -> dict[str, torch.Tensor]:
    """Frames renamed into the batch vocabulary: image -> role, landmarks -> role_landmarks, ..."""
    return {role if name == "image" else f"{role}_{name}": value for name, value in frames.items()}


class ClipStream(IterableDataset):
    """An endless, resampled stream of training items from the shards of one rank, cut into epochs.

    Args:
        urls: every shard of the data set, in the same order on every rank.
        rank: this process's rank; it reads shards rank, rank + world_size, ...
        world_size: number of processes.
        make_item: builds one training item from a raw sample and a random generator.
        samples_per_worker: items one worker yields per epoch.
        num_workers: DataLoader workers per rank (for the length only).
        shuffle_buffer: samples held for shuffling across shards.
        seed: base seed; combined with rank, worker and epoch.
        skip_corrupt: log and skip unreadable shards/samples instead of raising. A shard that fails to read, or
            gives three corrupt samples and no good one, is not chosen again in the epoch; when no shard is left
            the stream raises.
        skipped: a shared ``multiprocessing`` array of two counters (samples, shards) the workers add their
            epoch's skips to, for the DataModule's summary.
        start_epoch: epochs streamed before (a resumed run): the next epoch's items are those of epoch
            ``start_epoch + 1`` of an uninterrupted run.
        skip_batches: batches of the first epoch the resumed run already trained on; each worker drops its share
            (the DataLoader takes batch k from worker k mod num_workers), so the run continues with the very items
            an uninterrupted one would have seen.
        batch_size: the DataLoader's batch size (for ``skip_batches``).
        items_per_clip: training items made from each sample drawn (``make_items(sample, rng, count)``, one decode
            of the clip for all of them); above 1 the items pass a shuffle buffer of items_per_clip x batch_size
            so that a batch seldom holds two items of one clip.
        make_items: builds ``count`` items from one sample (``ItemBuilder.train_many``); needed above 1.
    """

    def __init__(
        self,
        urls: Sequence[str],
        rank: int,
        world_size: int,
        make_item: Callable[[Sample, random.Random], dict[str, Any]],
        samples_per_worker: int,
        num_workers: int,
        shuffle_buffer: int,
        seed: int,
        skip_corrupt: bool,
        skipped: Any = None,
        start_epoch: int = 0,
        skip_batches: int = 0,
        batch_size: int = 1,
        items_per_clip: int = 1,
        make_items: Callable[[Sample, random.Random, int], list[dict[str, Any]]] | None = None,
    ) -> None:
        super().__init__()
        if items_per_clip > 1 and make_items is None:
            raise ValueError("items_per_clip > 1 needs make_items (ItemBuilder.train_many)")
        if len(urls) < world_size:
            raise ShardError(
                f"{len(urls)} shard(s) cannot be split across {world_size} processes: each rank needs its own "
                "shards; write more, smaller shards (e.g. `talkinghead synth --clips-per-shard` lower)"
            )
        # Split by node here, with the rank captured in the main process, rather than wds.split_by_node in the
        # worker: workers of a ddp_spawn process do not always see the initialised process group.
        self.urls = list(urls)[rank::world_size]
        self.rank, self.make_item = rank, make_item
        self.samples_per_worker, self.num_workers = samples_per_worker, max(1, num_workers)
        self.shuffle_buffer, self.seed, self.skip_corrupt = shuffle_buffer, seed, skip_corrupt
        self.epoch = start_epoch  # epochs already streamed (a resumed run continues the count)
        self.skipped = skipped
        self.skip_batches, self.batch_size = skip_batches, batch_size
        self.items_per_clip, self.make_items = items_per_clip, make_items

    def __len__(self) -> int:
        return self.samples_per_worker * self.num_workers

    def _worker_rng(self) -> random.Random:
        info = torch.utils.data.get_worker_info()
        worker = 0 if info is None else info.id
        self.epoch += 1  # each worker keeps its own copy, so this counts that worker's epochs
        return random.Random(f"{self.seed}/{self.rank}/{worker}/{self.epoch}")

    def _resampled_shards(self, rng: random.Random, bad: set[str]) -> Iterator[str]:
        urls = list(wds.split_by_worker(self.urls))
        if not urls:  # fewer shards than workers on this rank: workers share them, with different seeds
            urls = self.urls
        while True:
            good = [url for url in urls if url not in bad]  # a shard that failed is not read again this epoch
            if not good:
                raise ShardError(
                    f"no readable training sample left: all {len(urls)} shard(s) of this worker failed "
                    f"(skip_corrupt skipped {len(bad)} shard(s) this epoch, e.g. {sorted(bad)[0]}); "
                    f"rewrite those shards or remove them from the shard list"
                )
            yield rng.choice(good)

    def _samples(self, urls: Iterator[str], bad: set[str], counts: dict[str, int]) -> Iterator[Sample]:
        for url in urls:
            try:
                yield from iter_shard_samples(url)
            except ShardError as error:
                if not self.skip_corrupt:
                    raise
                bad.add(url)
                counts["shards"] += 1
                log.warning("skipping shard: %s", error)

    def _items(self, samples: Iterator[Sample], rng: random.Random, bad: set[str],
               counts: dict[str, int]) -> Iterator[dict[str, Any]]:
        good_of: dict[str, int] = {}
        bad_of: dict[str, int] = {}
        for sample in samples:
            url = sample.get("__url__", "?")
            try:
                items = ([self.make_item(sample, rng)] if self.items_per_clip == 1
                         else self.make_items(sample, rng, self.items_per_clip))
            except ShardError as error:
                if not self.skip_corrupt:
                    raise
                counts["samples"] += 1
                if counts["samples"] <= 10:
                    log.warning("skipping sample: %s", error)
                elif counts["samples"] == 11:
                    log.warning("skipping more corrupt samples (counted, not logged one by one)")
                bad_of[url] = bad_of.get(url, 0) + 1
                if bad_of[url] >= 3 and not good_of.get(url):  # nothing readable in it so far: stop choosing it
                    bad.add(url)
                continue
            good_of[url] = good_of.get(url, 0) + 1
            yield from items

    def __iter__(self) -> Iterator[dict[str, Any]]:
        rng = self._worker_rng()
        info = torch.utils.data.get_worker_info()
        worker, workers = (0, 1) if info is None else (info.id, info.num_workers)
        bad: set[str] = set()
        counts = {"samples": 0, "shards": 0}
        stages = [
            lambda: self._resampled_shards(rng, bad),
            lambda urls: self._samples(urls, bad, counts),
            wds.shuffle(self.shuffle_buffer, initial=min(self.shuffle_buffer, 8), rng=rng),
            lambda samples: self._items(samples, rng, bad, counts),
        ]
        if self.items_per_clip > 1:  # spread one clip's items over batches
            spread = self.items_per_clip * self.batch_size
            stages.append(wds.shuffle(spread, initial=spread, rng=rng))
        pipeline = wds.DataPipeline(*stages).with_epoch(self.samples_per_worker)
        skip = 0
        if self.skip_batches:  # only in the first epoch after a mid-epoch resume
            skip = len(range(worker, self.skip_batches, workers)) * self.batch_size
            self.skip_batches = 0
        for index, item in enumerate(pipeline):
            if index >= skip:
                yield item
        if counts["samples"] or counts["shards"]:
            log.warning("skip_corrupt: rank %d worker %d epoch %d skipped %d corrupt samples and %d unreadable shards",
                        self.rank, worker, self.epoch, counts["samples"], counts["shards"])
            if self.skipped is not None:
                with self.skipped.get_lock():
                    self.skipped[0] += counts["samples"]
                    self.skipped[1] += counts["shards"]


class FixedItems(Dataset):
    """A deterministic map-style data set: item i is always built the same way from the same raw sample."""

    def __init__(self, samples: Sequence[Sample], make_item: Callable[[Sample, int], dict[str, Any]]) -> None:
        self.samples, self.make_item = list(samples), make_item

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.make_item(self.samples[index], index)


class ItemBuilder:
    """Turns raw shard samples into batch items: random ones for training, fixed ones for validation.

    Args:
        image_size: side of the images in the items.
        augment: training augmentation.
        remove_background: multiply each frame by its foreground mask where the shard stores one.
    """

    uint8_transfer = False  # training items as to_uint8 makes them, their colour jitter left to from_uint8

    def __init__(self, image_size: int, augment: Augment, remove_background: bool = False) -> None:
        self.image_size, self.augment, self.remove_background = image_size, augment, remove_background
        self._decoded: tuple[Sample, list[int], Clip, Frames] | None = None  # train_many's one decode of a clip

    def decode(self, sample: Sample, frame_indices: Sequence[int]) -> tuple[Clip, Frames]:
        cached = self._decoded
        if cached is not None and cached[0] is sample:  # train_many decoded these frames already
            _, union, clip, frames = cached
            picks = [union.index(int(i)) for i in frame_indices]
            subset = Clip(frames=clip.frames[picks], landmarks=clip.landmarks[picks], meta=clip.meta,
                          pose=None if clip.pose is None else clip.pose[picks],
                          mask=None if clip.mask is None else clip.mask[picks])
            return subset, select(frames, picks)
        clip = decode_clip(sample, frame_indices)
        frames = clip_to_frames(clip, self.image_size, uint8=self.uint8_transfer)
        return clip, remove_background(frames) if self.remove_background else frames

    def train_indices(self, num_frames: int, rng: random.Random) -> list[int]:
        """The frame numbers of one training item of a clip with ``num_frames`` frames."""
        raise NotImplementedError

    def build(self, sample: Sample, indices: list[int], rng: random.Random | None) -> dict[str, Any]:
        """The item of those frames, augmented with ``rng`` (None: not augmented)."""
        raise NotImplementedError

    def augmented(self, frames: Frames, rng: random.Random) -> tuple[Frames, dict[str, Any]]:
        """Training frames augmented, and the item's extra fields: with uint8_transfer the colour jitter is only
        drawn, and travels as ``color_jitter`` parameters for from_uint8 to apply on the training device."""
        if not self.uint8_transfer:
            return self.augment(frames, rng), {}
        frames, color = self.augment.flip_and_draw(frames, rng)
        return frames, {} if color is None else {"color_jitter": torch.tensor(color, dtype=torch.float32)}

    def train(self, sample: Sample, rng: random.Random) -> dict[str, Any]:
        item = self.build(sample, self.train_indices(sample_num_frames(sample), rng), rng)
        return to_uint8(item) if self.uint8_transfer else item

    def train_many(self, sample: Sample, rng: random.Random, count: int) -> list[dict[str, Any]]:
        """``count`` training items of one clip from ONE decode of the frames they use together (an mp4 is then
        decoded once up to the last of them, instead of once per item up to each item's last frame)."""
        if count == 1:
            return [self.train(sample, rng)]
        num_frames = sample_num_frames(sample)
        chosen = [self.train_indices(num_frames, rng) for _ in range(count)]
        union = sorted({index for indices in chosen for index in indices})
        clip = decode_clip(sample, union)
        frames = clip_to_frames(clip, self.image_size, uint8=self.uint8_transfer)
        self._decoded = (sample, union, clip, remove_background(frames) if self.remove_background else frames)
        try:
            items = [self.build(sample, indices, rng) for indices in chosen]
            return [to_uint8(item) for item in items] if self.uint8_transfer else items
        finally:
            self._decoded = None

    @staticmethod
    def provenance(sample: Sample, clip: Clip, frame_indices: Sequence[int]) -> dict[str, Any]:
        return {
            "identity": clip.meta.identity,
            "video": clip.meta.video,
            "sample": f"{sample.get('__url__', '?')}#{sample['__key__']}",
            "frame_index": torch.as_tensor(list(frame_indices), dtype=torch.int64),
        }

    def val(self, sample: Sample, index: int) -> dict[str, Any]:
        raise NotImplementedError


class ShardDataModule(L.LightningDataModule):
    """Shared machinery of the talking-head DataModules: shard lists, loaders, decoding and augmentation.

    Args:
        shards: training shards: a folder of .tar files, a glob, a brace pattern, an fsspec URL, or a list.
        val_shards: validation shards (held-out clips or people); None runs no validation.
        image_size: side of the square images in the batch; frames are resized when the shards differ.
        batch_size: items per batch and per process.
        num_workers: DataLoader worker processes per process.
        samples_per_epoch: training items per epoch and per process (rounded up to whole batches per worker).
        val_samples: validation clips (or frames, for a person), the same ones every time.
        shuffle_buffer: raw samples held for shuffling across shards.
        flip_probability: chance of a horizontal flip of a training item (frames, landmarks, pose, mask alike).
        color_jitter: colour jitter of training items, the same for all frames of an item; None for none.
        seed: seed of the sampling of shards, frames and augmentations.
        skip_corrupt: log and skip unreadable shards or samples during training instead of stopping.
        remove_background: black out the background of every frame (image x foreground mask) where the shard
            stores masks, as LPD trains on segmented frames; frames without a mask are left whole.
        items_per_clip: training items made from each clip read (pairs or few-shot items with their own random
            frames), decoded together: an mp4 clip is decoded once for all of them. 1 (the default) reads a clip
            per item; 4 made the 256-px pairs stream ~2x faster (benchmarks/data_throughput.py) at the price of
            items that come four to a clip (spread over batches by a shuffle buffer of items).
        uint8_transfer: training items leave the DataLoader workers with uint8 images and masks (a quarter of the
            bytes) and with their colour jitter drawn but not applied; ``on_after_batch_transfer`` turns the batch
            back into float32 and applies the jitter, batched, on the training device. For GPU training, where
            the workers' copying and the jitter's float work limit the stream (benchmarks/data_throughput.py).
            Exact for frames used at their stored size; resized frames move by at most 1/510. Validation and
            the person mode's loaders are unchanged; a loop over ``train_dataloader()`` outside a Trainer gets
            uint8 batches, which ``transforms.from_uint8`` (or this hook) converts.
    """

    def __init__(
        self,
        shards: str | list[str],
        val_shards: str | list[str] | None = None,
        image_size: int = 256,
        batch_size: int = 8,
        num_workers: int = 4,
        samples_per_epoch: int = 10_000,
        val_samples: int = 64,
        shuffle_buffer: int = 64,
        flip_probability: float = 0.5,
        color_jitter: ColorJitter | None = None,
        seed: int = 0,
        skip_corrupt: bool = False,
        remove_background: bool = False,
        items_per_clip: int = 1,
        uint8_transfer: bool = False,
    ) -> None:
        super().__init__()
        if image_size < 8:
            raise ConfigError(f"data image_size must be at least 8 pixels, got {image_size}")
        for name, value, least in (("batch_size", batch_size, 1), ("num_workers", num_workers, 0),
                                   ("samples_per_epoch", samples_per_epoch, 1), ("val_samples", val_samples, 0),
                                   ("items_per_clip", items_per_clip, 1)):
            if value < least:
                raise ConfigError(f"data {name} must be at least {least}, got {value}")
        self.shards, self.val_shards = shards, val_shards
        self.image_size, self.batch_size, self.num_workers = image_size, batch_size, num_workers
        self.samples_per_epoch, self.val_samples = samples_per_epoch, val_samples
        self.shuffle_buffer, self.seed, self.skip_corrupt = shuffle_buffer, seed, skip_corrupt
        self.remove_background, self.items_per_clip = remove_background, items_per_clip
        self.uint8_transfer = uint8_transfer
        self.augment = Augment(flip_probability=flip_probability, color=color_jitter)
        self.train_urls: list[str] = []
        self.val_items: Dataset | None = None
        self._skipped: Any = None  # corrupt (samples, shards) skipped by training workers: made by train_dataloader
        self._resume = {"epoch": 0, "batches": 0}  # from a checkpoint's state_dict: see load_state_dict

    # -- set-up --------------------------------------------------------------------------------------------------

    @property
    def rank_and_world(self) -> tuple[int, int]:
        trainer = self.trainer
        return (0, 1) if trainer is None else (trainer.global_rank, trainer.world_size)

    def setup(self, stage: str | None = None) -> None:
        if not self.train_urls:
            self.train_urls = expand_shards(self.shards)
        if self.val_shards is not None and self.val_items is None:
            self.val_items = FixedItems(self._first_samples(expand_shards(self.val_shards)), self.items().val)

    def _first_samples(self, urls: Sequence[str]) -> list[Sample]:
        """The first val_samples raw samples of the shards, in stored order (readable ones only, with
        skip_corrupt: each is built once here, so a corrupt one never reaches the validation loop)."""
        samples: list[Sample] = []
        skipped = 0
        build = self.items().val
        for url in urls:
            try:
                for sample in iter_shard_samples(url):
                    if self.skip_corrupt:
                        try:
                            build(sample, len(samples))
                        except ShardError as error:
                            skipped += 1
                            log.warning("skipping validation sample: %s", error)
                            continue
                    samples.append(sample)
                    if len(samples) == self.val_samples:
                        break
            except ShardError as error:
                if not self.skip_corrupt:
                    raise
                skipped += 1
                log.warning("skipping validation shard: %s", error)
            if len(samples) == self.val_samples:
                break
        if skipped:
            log.warning("skip_corrupt: validation skipped %d corrupt samples or shards", skipped)
        if self.skip_corrupt and not samples and urls:
            raise ShardError(f"no readable validation sample in {len(urls)} shard(s) ({urls[0]} ...)")
        return samples

    def items(self) -> ItemBuilder:
        """The builder of this mode's items; it travels to worker processes, so it holds no trainer."""
        raise NotImplementedError

    # -- loaders -------------------------------------------------------------------------------------------------

    def _loader(self, dataset: Dataset, shuffle: bool = False, generator: torch.Generator | None = None) -> DataLoader:
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            shuffle=shuffle,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            generator=generator,
        )

    def train_dataloader(self) -> DataLoader:
        rank, world_size = self.rank_and_world
        workers = max(1, self.num_workers)
        batches_per_worker = math.ceil(math.ceil(self.samples_per_epoch / self.batch_size) / workers)
        if self._skipped is None:  # made in the process that trains (a ddp_spawn rank), inherited by its workers
            self._skipped = multiprocessing.Array("q", 2)
        items = self.items()
        items.uint8_transfer = self.uint8_transfer
        stream = ClipStream(
            self.train_urls,
            rank=rank,
            world_size=world_size,
            make_item=items.train,
            make_items=items.train_many,
            items_per_clip=self.items_per_clip,
            samples_per_worker=batches_per_worker * self.batch_size,
            num_workers=self.num_workers,
            shuffle_buffer=self.shuffle_buffer,
            seed=self.seed,
            skip_corrupt=self.skip_corrupt,
            skipped=self._skipped,
            start_epoch=self._resume["epoch"],
            skip_batches=self._resume["batches"],
            batch_size=self.batch_size,
        )
        self._resume = {"epoch": 0, "batches": 0}
        # The loader's own generator: creating its iterator then leaves the global torch RNG alone, so a resumed
        # run's RNG (restored by AdversarialModule) meets the training step exactly where it was saved.
        return self._loader(stream, generator=torch.Generator().manual_seed(self.seed))

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """A uint8_transfer batch as float32, its colour jitter applied on the device it now lives on."""
        return from_uint8(batch, self.augment.color) if isinstance(batch, dict) else batch

    def state_dict(self) -> dict[str, Any]:
        """Where the training stream stands, for exact resume: epochs streamed and batches of the current one."""
        trainer = self.trainer
        if trainer is None:
            return {}
        loop = trainer.fit_loop
        # processed, not completed: ModelCheckpoint saves in on_train_batch_end, before Lightning counts the batch
        # completed (at an epoch's or validation's end the two agree)
        done = loop.epoch_loop.batch_progress.current.processed
        total = trainer.num_training_batches
        epoch = trainer.current_epoch
        finished = isinstance(total, int) and done >= total
        return {"stream_epoch": epoch + 1 if finished else epoch, "stream_batches": 0 if finished else done}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state:
            self._resume = {"epoch": int(state["stream_epoch"]), "batches": int(state["stream_batches"])}
            # This DataModule resumes its stream itself (above), which Lightning's check of the loaders cannot see.
            warnings.filterwarnings("ignore", message="You're resuming from a checkpoint that ended before the epoch")

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_skipped"] = None  # shared memory of this process: never pickled into another (ddp_spawn)
        return state

    def teardown(self, stage: str) -> None:
        if stage == "fit" and self.skip_corrupt and self._skipped is not None:
            samples, shards = self._skipped[0], self._skipped[1]
            log.warning("skip_corrupt: %d corrupt samples and %d unreadable shards skipped in training in all "
                        "(completed epochs)", samples, shards)

    def val_dataloader(self) -> DataLoader | list:
        return [] if self.val_items is None else self._loader(self.val_items, generator=torch.Generator())


def distinct_frames(num_frames: int, count: int, rng: random.Random) -> list[int]:
    """count frame numbers out of num_frames, distinct when the clip is long enough."""
    if num_frames >= count:
        return rng.sample(range(num_frames), count)
    return [rng.randrange(num_frames) for _ in range(count)]


class PairItems(ItemBuilder):
    """(source, driving) items from one clip."""

    def train_indices(self, num_frames: int, rng: random.Random) -> list[int]:
        return distinct_frames(num_frames, 2, rng)

    def val(self, sample: Sample, index: int) -> dict[str, Any]:
        num_frames = sample_num_frames(sample)
        driving = random.Random(index).randrange(1, num_frames) if num_frames > 1 else 0
        return self.build(sample, [0, driving], None)

    def build(self, sample: Sample, indices: list[int], rng: random.Random | None) -> dict[str, Any]:
        clip, frames = self.decode(sample, indices)
        frames, extra = (frames, {}) if rng is None else self.augmented(frames, rng)
        return {
            **extra,
            **role_fields(select(frames, 0), "source"),
            **role_fields(select(frames, 1), "driving"),
            **self.provenance(sample, clip, indices),
        }


class PairsDataModule(ShardDataModule):
    """(source, driving) pairs from one clip, for OSFV. Validation: frame 0 drives from a fixed other frame."""

    def items(self) -> PairItems:
        return PairItems(self.image_size, self.augment, self.remove_background)


class FewShotDataModule(ShardDataModule):
    """K reference frames and one distinct driving/target frame of a video, with the video's index (FSTH, LPD).

    Args:
        num_references: K, frames fed to the embedder / identity encoder (8 in the papers' meta-learning).
        **kwargs: see :class:`ShardDataModule`.

    The video index is the position of the clip's video id in the sorted list of the training shards' videos
    (read from the shard indices), so it is the same on every rank; ``num_videos`` sizes a projection
    discriminator. Validation videos that are not in the training set get index -1.
    """

    def __init__(self, *args: Any, num_references: int = 8, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if num_references < 1:
            raise ValueError(f"num_references must be at least 1, got {num_references}")
        self.num_references = num_references
        self.video_to_index: dict[str, int] = {}

    def setup(self, stage: str | None = None) -> None:
        if not self.video_to_index:
            self.train_urls = expand_shards(self.shards)
            videos: set[str] = set()
            readable = []
            for url in self.train_urls:
                try:
                    videos.update(entry.video for entry in read_index(url))
                    readable.append(url)
                except ShardError as error:
                    if not self.skip_corrupt:
                        raise
                    log.warning("skipping shard: %s", error)
            if not readable:
                raise ShardError(f"no readable shard among {len(self.train_urls)} ({self.train_urls[0]} ...)")
            self.train_urls = readable
            self.video_to_index = {video: i for i, video in enumerate(sorted(videos))}
        super().setup(stage)

    @property
    def num_videos(self) -> int:
        """Number of training videos (call after setup)."""
        if not self.video_to_index:
            self.setup("fit")
        return len(self.video_to_index)

    def items(self) -> FewShotItems:
        return FewShotItems(self.image_size, self.augment, self.num_references, self.video_to_index,
                            remove_background=self.remove_background)


class FewShotItems(ItemBuilder):
    """K references + 1 distinct driving frame of one clip, with the video's index (-1 for unknown videos)."""

    def __init__(self, image_size: int, augment: Augment, num_references: int, video_to_index: dict[str, int],
                 remove_background: bool = False):
        super().__init__(image_size, augment, remove_background)
        self.num_references, self.video_to_index = num_references, video_to_index

    def train_indices(self, num_frames: int, rng: random.Random) -> list[int]:
        if num_frames < 2:
            raise ShardError("few-shot items need clips of at least 2 frames (references + a distinct target)")
        driving = rng.randrange(num_frames)
        others = [i for i in range(num_frames) if i != driving]
        references = [others[i] for i in distinct_frames(len(others), self.num_references, rng)]
        return references + [driving]

    def val(self, sample: Sample, index: int) -> dict[str, Any]:
        return self.build(sample, self.train_indices(sample_num_frames(sample), random.Random(index)), None)

    def build(self, sample: Sample, indices: list[int], rng: random.Random | None) -> dict[str, Any]:
        clip, frames = self.decode(sample, indices)
        frames, extra = (frames, {}) if rng is None else self.augmented(frames, rng)
        return {
            **extra,
            **role_fields(select(frames, slice(0, -1)), "references"),
            **role_fields(select(frames, -1), "driving"),
            "video_index": torch.tensor(self.video_to_index.get(clip.meta.video, -1), dtype=torch.int64),
            **self.provenance(sample, clip, indices),
        }


class PersonFrames(Dataset):
    """Random (source, driving) pairs among the T frames of one person, for fine-tuning."""

    def __init__(self, frames: Frames, length: int, augment: Augment, seed: int) -> None:
        self.frames, self.length, self.augment, self.seed = frames, length, augment, seed

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict[str, Any]:
        # torch.initial_seed() differs per worker and per epoch, so pairs differ between epochs.
        rng = random.Random(f"{self.seed}/{torch.initial_seed()}/{index}")
        indices = distinct_frames(self.frames["image"].shape[0], 2, rng)
        frames = self.augment(select(self.frames, indices), rng)
        return {
            **role_fields(select(frames, 0), "source"),
            **role_fields(select(frames, 1), "driving"),
            "frame_index": torch.as_tensor(indices, dtype=torch.int64),
        }


def _spread(indices: Sequence[int], count: int) -> list[int]:
    """``count`` of ``indices`` spread evenly from the first to the last (all of them when there are fewer)."""
    indices = list(indices)
    if not indices or count < 1:
        return []
    return [indices[i] for i in sorted(set(np.linspace(0, len(indices) - 1, count).round().astype(int).tolist()))]


class PersonDataModule(ShardDataModule):
    """The T frames of one person, for the fine-tuning stages (FSTH, LPD), and held-out frames for validation.

    Args:
        identity: the person's id in the shards' metadata; None takes the first identity found.
        num_frames: T, the shot count: frames spread evenly over all of the person's clips.
        held_out_frames: 0 (default): validation takes up to ``val_samples`` of the person's frames that are not
            among the T. N > 0: N frames spread evenly over all of the person's frames are held out FIRST and the T
            are spread over the rest, so runs with different T validate on the same frames (the paper's protocol,
            ``talkinghead evaluate --mode few-shot``); the person then needs T + N frames.
        **kwargs: see :class:`ShardDataModule`; ``val_shards`` is not used: validation drives the model with the
            held-out frames (driving), with the first of the T as source. ``flip_probability`` defaults to 0 here:
            mirrored, the person is someone else (hair parting, light from the other side) with a sketch that looks
            like an ordinary mirrored pose, so a fine-tuned generator, whose person is one fixed embedding, is asked
            for two appearances per pose and learns their blur. Measured on tiny FSTH fine-tuned to 8 frames of a
            held-out synthetic person: with flips 21.2 dB on its own training frames after 75-225 G steps, without
            27.6 dB (README, FSTH).

    ``person_frames()`` returns the T frames as one batch with a ``references`` role (1, T, ...), which is what a
    fine-tuning stage initialises its person embedding from.

    Prediction (``talkinghead predict``) streams one driving clip in frame order as ``driving`` items (frames,
    landmarks, pose): the reenactment of the fine-tuned person by anyone's motion.

    Args (prediction):
        driving: shards holding the driving clip (preprocess a video with ``talkinghead preprocess`` first); None
            uses ``shards``.
        driving_clip: the clip's sample key, video id or identity in those shards; None takes the first clip.
        driving_frames: at most this many frames of the clip; None for all.
    """

    def __init__(self, *args: Any, identity: str | None = None, num_frames: int = 8, held_out_frames: int = 0,
                 driving: str | None = None, driving_clip: str | None = None, driving_frames: int | None = None,
                 **kwargs: Any) -> None:
        kwargs.setdefault("flip_probability", 0.0)
        super().__init__(*args, **kwargs)
        if num_frames < 1:
            raise ValueError(f"num_frames must be at least 1, got {num_frames}")
        if held_out_frames < 0:
            raise ValueError(f"held_out_frames must be 0 or more, got {held_out_frames}")
        self.identity, self.num_frames, self.held_out_frames = identity, num_frames, held_out_frames
        self.driving, self.driving_clip, self.driving_frames = driving, driving_clip, driving_frames
        self.train_frames: Frames | None = None
        self.held_out: Frames | None = None

    def setup(self, stage: str | None = None) -> None:
        if self.train_frames is not None or stage == "predict":
            return
        self.train_urls = expand_shards(self.shards)
        entries = [entry for url in self.train_urls for entry in read_index(url)]
        if self.identity is None:
            self.identity = entries[0].identity
        person = [entry for entry in entries if entry.identity == self.identity]
        if not person:
            known = sorted({entry.identity for entry in entries})
            raise ShardError(
                f"identity {self.identity!r} is not in the shards; known identities include {known[:10]}: "
                "set --data.init_args.identity to one of them"
            )
        frames = [(entry, i) for entry in person for i in range(entry.num_frames)]
        needed = self.num_frames + self.held_out_frames
        if len(frames) < needed:
            wanted = f"num_frames={self.num_frames}" + (
                f" + held_out_frames={self.held_out_frames}" if self.held_out_frames else "")
            raise ShardError(f"identity {self.identity!r} has {len(frames)} frames, fewer than {wanted}: choose "
                             "fewer frames or a person with more")
        if self.held_out_frames:
            rest = _spread(range(len(frames)), self.held_out_frames)
            chosen = _spread([i for i in range(len(frames)) if i not in set(rest)], self.num_frames)
        else:
            chosen = _spread(range(len(frames)), self.num_frames)
            rest = _spread([i for i in range(len(frames)) if i not in set(chosen)], self.val_samples)
        if not rest:
            log.warning("identity %r has no frames beyond the %d chosen: validation reuses them", self.identity,
                        self.num_frames)
        self.train_frames = self._load([frames[i] for i in chosen])
        self.held_out = self._load([frames[i] for i in rest]) if rest else self.train_frames
        log.info("person %r: %d frames for fine-tuning, %d held out", self.identity, len(chosen), len(rest))

    def _load(self, wanted: list[tuple[IndexEntry, int]]) -> Frames:
        """Decodes the wanted (clip, frame) pairs, streaming each shard that holds one of them once."""
        by_clip: dict[tuple[str, str], list[int]] = {}
        for entry, frame in wanted:
            by_clip.setdefault((entry.shard, entry.key), []).append(frame)
        decoded: dict[tuple[str, str], Frames] = {}
        builder = ItemBuilder(self.image_size, self.augment, self.remove_background)
        for url in dict.fromkeys(shard for shard, _ in by_clip):
            for sample in iter_shard_samples(url):
                indices = by_clip.get((url, sample["__key__"]))
                if indices is not None:
                    decoded[(url, sample["__key__"])] = builder.decode(sample, indices)[1]
        parts = [decoded[clip] for clip in by_clip]
        return Frames(**{name: torch.cat([part[name] for part in parts]) for name in parts[0]})

    def person_frames(self) -> Batch:
        """The T frames of the person, unaugmented, as a batch of one with a ``references`` role."""
        if self.train_frames is None:
            self.setup("fit")
        fields = role_fields(self.train_frames, "references")
        return Batch(**{name: value.unsqueeze(0) for name, value in fields.items()}, identity=[self.identity])

    def train_dataloader(self) -> DataLoader:
        return self._loader(
            PersonFrames(self.train_frames, self.samples_per_epoch, self.augment, self.seed), shuffle=True
        )

    def val_dataloader(self) -> DataLoader:
        source = select(self.train_frames, 0)
        items = [
            {
                **role_fields(source, "source"),
                **role_fields(select(self.held_out, i), "driving"),
                "frame_index": torch.tensor([0, i], dtype=torch.int64),
            }
            for i in range(self.held_out["image"].shape[0])
        ]
        return self._loader(items)

    def driving_clip_frames(self) -> tuple[IndexEntry, Frames]:
        """The driving clip chosen by ``driving`` / ``driving_clip``, all frames decoded (or the first
        ``driving_frames``)."""
        urls = expand_shards(self.driving if self.driving is not None else self.shards)
        entries = [entry for url in urls for entry in read_index(url)]
        wanted = self.driving_clip
        matches = [entry for entry in entries if wanted in (None, entry.key, entry.video, entry.identity)]
        if not matches:
            known = sorted({entry.video for entry in entries})
            raise ShardError(f"driving clip {wanted!r} is not in the driving shards (no sample key, video id or "
                             f"identity matches); videos there include {known[:10]}: set "
                             "--data.init_args.driving_clip to one of them")
        entry = matches[0]
        count = entry.num_frames if self.driving_frames is None else min(entry.num_frames, self.driving_frames)
        for sample in iter_shard_samples(entry.shard):
            if sample["__key__"] == entry.key:
                builder = ItemBuilder(self.image_size, self.augment, self.remove_background)
                return entry, builder.decode(sample, range(count))[1]
        raise ShardError(f"sample {entry.key!r} is listed in the index of {entry.shard} but missing from the shard")

    def predict_dataloader(self) -> DataLoader:
        entry, frames = self.driving_clip_frames()
        items = [
            {
                **role_fields(select(frames, i), "driving"),
                "frame_index": torch.tensor([i], dtype=torch.int64),
                "video": entry.video,
                "identity": entry.identity,
            }
            for i in range(frames["image"].shape[0])
        ]
        return DataLoader(items, batch_size=self.batch_size, shuffle=False, num_workers=0)
