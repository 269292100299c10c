"""Package data: the embedded default model.

``osfv_tiny.ckpt``: tiny OSFV trained on synthetic people with the CPU recipe of lightning_configs/osfv/tiny.yaml,
as an inference-only checkpoint (generator side, no discriminator, loss networks or optimizer state; see
:mod:`talkinghead.lightning.slim`). It loads with ``talkinghead evaluate --checkpoint`` and ``OSFVModule.
load_from_checkpoint``; `make demo` shows it. Remade by::

    python benchmarks/osfv_learning.py --minutes 60 --identities 192 --out /tmp/osfv_60 \\
        --export talkinghead/assets/osfv_tiny.ckpt

(2837 generator steps in 60 minutes on 2 CPU cores; its held-out figures are in the README.)
"""
