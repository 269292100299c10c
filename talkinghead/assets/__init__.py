"""Package data: the embedded default model, the meta-learned tiny few-shot models and the synthetic judge.

``osfv_tiny.ckpt``: tiny OSFV trained on synthetic people with the CPU recipe of lightning_configs/osfv/tiny.yaml,
as an inference-only checkpoint (generator side, no discriminator, loss networks or optimizer state; see
:mod:`talkinghead.lightning.slim`). It loads with ``talkinghead evaluate --checkpoint`` and ``OSFVModule.
load_from_checkpoint``; `make demo` shows it. Remade by::

    python benchmarks/osfv_learning.py --minutes 60 --identities 192 --out /tmp/osfv_60 \\
        --export talkinghead/assets/osfv_tiny.ckpt

(2837 generator steps in 60 minutes on 2 CPU cores; its held-out figures are in the README.)

``fsth_tiny_meta.ckpt`` and ``lpd_tiny_meta.ckpt``: tiny FSTH and LPD meta-learned on synthetic people
(lightning_configs/fsth/tiny_meta.yaml, lightning_configs/lpd/tiny_meta.yaml), small checkpoints with the
discriminator that fine-tuning starts from (no VGG, no optimizer state). They load with ``load_from_checkpoint``
(and ``talkinghead.evaluation.load_model``) and as ``--model.init_args.init_from`` of the tiny_finetune.yaml
configs, and ``talkinghead evaluate --mode few-shot`` scores them. Remade by::

    python benchmarks/fsth_learning.py --meta-minutes 40 --identities 256 --finetune-steps 300 \
        --out /tmp/fsth_learning --export talkinghead/assets/fsth_tiny_meta.ckpt
    python benchmarks/lpd_learning.py --settings on --meta-minutes 40 --identities 256 --out /tmp/lpd_learning \
        --export talkinghead/assets/lpd_tiny_meta.ckpt

(FSTH: 10,147 generator steps in 40 minutes on 256 people, embedding match weight 8; LPD: 13,261 generator
steps in 40 minutes on 256 people, pose augmentation on; 2 CPU cores.)

``synthetic_judge.safetensors``: the identity / landmark judge for synthetic heads
(:mod:`talkinghead.metrics.synthetic_judge`), remade by ``python benchmarks/identity_judge.py``.
"""
