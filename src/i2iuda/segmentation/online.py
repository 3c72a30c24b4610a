"""Online self-training on the target (``i2iuda segment adapt``): a student and its mean (EMA)
teacher with ClassMix, after DACS (Tranheden et al., WACV 2021; vikolss/DACS, trainUDA.py),
optionally with DAFormer's rare-class sampling (Hoyer et al., CVPR 2022; lhoyer/DAFormer,
uda_dataset.py) and MIC's masked image consistency (Hoyer et al., CVPR 2023; lhoyer/MIC,
masking_consistency_module.py). One step, with a labelled source batch (x_s, y_s) and an
unlabelled target batch x_t of B frames each:

 1. The teacher h_phi labels the *un-augmented* target frames: p = softmax(h_phi(x_t)),
    y^_t = argmax p, and one confidence weight for the batch
        q = |{pixels of the batch with max_c p >= tau}| / |pixels of the batch|,  tau = 0.968
    (DAFormer also sets it to 0 in the top and bottom rows of the crop: ``ignore_top/bottom``).
 2. ClassMix, per frame i: C_i = ceil(n_i / 2) of the n_i classes of y_s[i], drawn without
    replacement, M_i = [y_s[i] in C_i], and
        x_m = M x_s + (1 - M) x_t,   y_m = M y_s + (1 - M) y^_t,   w_m = M + (1 - M) q,
    then strong augmentation of x_m: colour jitter with p 0.8 (brightness, contrast, saturation
    and hue, strength 0.25 in DACS, 0.2 in DAFormer) and a gaussian blur with p 0.5,
    sigma ~ U(0.15, 1.15).
 3. L = CE(f_theta(x_s), y_s) + mean over pixels of w_m CE(f_theta(x_m), y_m)
        [+ lambda mean over pixels of q CE(f_theta(mask(aug(x_t))), y^_t)   with MIC: 70% of the
         patches of the augmented target frame zeroed in the normalised image, lambda = 1]
 4. theta <- an optimiser step; phi <- alpha_t phi + (1 - alpha_t) theta over the parameters, with
    alpha_t = min(1 - 1/(t + 1), alpha) after step t = 0, 1, ... (alpha 0.99 in DACS, 0.999 in
    DAFormer); the teacher's own BatchNorm statistics are its own.

DAFormer's additions, as settings (any of them with any segmenter, as its ablations run them):
the ImageNet feature distance (``feature_distance``), param-wise AdamW and warm-up (segment
settings ``norm_decay_mult``, ``backbone_lr_mult``; ``warmup`` here), class-balanced source crops
(``data.cat_max_ratio``), the pseudo-label margins (``ignore_top/bottom``) and EMA 0.999:

    L_FD = lambda_FD mean over the cells c whose pooled source label is a thing class of
           || F_theta(x_s)_c - F_ImageNet(x_s)_c ||_2            (F: the last encoder stage)

with the label pooled as DAFormer's ``downscale_label_ratio``: each cell's majority class over the
stride's pixels (void a class of its own), ignored where that share is under 0.75 or the class is
void. A crop without such a cell gives 0 (the reference's mean over no cell is NaN, with no
gradient). The teacher runs in training mode (BatchNorm with the target batch's statistics) with
only dropout and drop-path off, as DAFormer's.

Choices where the two reference codes differ or leave it open:
- ClassMix draws the classes per source frame (DACS), not over the whole batch (DAFormer), and
  leaves ignore (255) out of the classes (DACS counts it as one: then void source pixels are
  pasted, labelled void). Frame i of the source batch is pasted into frame i of the target batch.
- The teacher runs in training mode, as in DACS (its BatchNorm uses the target batch's
  statistics), with dropout and drop-path off (DAFormer; DACS's DeepLabV2 has none); under DDP
  its statistics are averaged over the ranks, so every rank's teacher is the same network.
- Model selection: the *student* at the end of the fixed schedule (both papers evaluate the
  student and take the last checkpoint): selecting on source val would favour the epochs that fit
  the source best, which is not what adaptation is for, and the target has no labels to select
  with. checkpoints/student.safetensors is the last epoch's student (what the run is evaluated
  with), checkpoints/teacher.safetensors its EMA teacher; history.json holds the student's and the
  teacher's source-val mIoU of every epoch.

Rare-class sampling: f_c = class c's share of the source label pixels, P(c) = softmax((1 - f_c) / T)
with T = 0.01; a draw picks c, then a source frame holding at least ``rcs_min_pixels`` of c (3000
pixels of a GTA5 label file at its native 1914x1052 in DAFormer, tools/convert_datasets/gta.py:
a fraction of the frame's pixels here, so that it scales), then re-crops it up to 10 times until
the crop holds more than ``rcs_min_crop_pixels`` of c (DAFormer: 0.5 x 3000 px of a 512x512 crop
of the frame resized to 1280x720).

Exact resume: the student, the teacher, the optimiser, the generator of ClassMix, augmentation and
MIC masks, and the two streams (position-based: data/sampling.py) are all in the checkpoint.
"""
from __future__ import annotations

import copy
import json
import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as nnf
from torchvision.transforms.v2 import functional as TF

from ..checkpoint import save_weights
from ..config import Range, adam_beta, at_least, between, fraction, positive, to_dict
from ..data.datasets import SegmentationDataset, build_index
from ..data.labels import CLASS_NAMES, IGNORE, NUM_CLASSES, overlay
from ..data.sampling import Seeded, StreamSampler
from ..data.transforms import train_transform
from ..errors import UserError
from ..io import atomic_write_text, write_json
from ..pictures import denormalize, grid
from ..progress import say
from ..runtime import Runtime, init_runtime, loader_workers, unwrap
from ..training import Schedule, resolve_run_config, train_loop
from .evaluate import EvalProtocol, evaluate
from .models import EncoderTap, encoder_of, last_stage
from .train import SegmentConfig, SegmentTrainer, labelled_source


@dataclass
class OnlineSettings:
    """The method's settings (DACS's defaults; DAFormer and MIC add to them)."""

    alpha: float = 0.99  # EMA of the teacher (DACS 0.99, DAFormer 0.999)
    threshold: float = 0.968  # teacher confidence counted in the pixel weight q
    jitter: float = 0.25  # colour jitter strength of the strong augmentation (DACS 0.25, DAFormer 0.2)
    jitter_p: float = 0.8
    blur_p: float = 0.5
    blur_sigma: tuple[float, float] = (0.15, 1.15)
    # DAFormer: no pseudo-label weight in the top and bottom rows of the crop (ego car,
    # rectification border): 15 and 120 rows of 512, as fractions of the crop height
    ignore_top: float = 0.0
    ignore_bottom: float = 0.0
    # linear lr warm-up over this fraction of the steps (DAFormer 1500 of 40000), from 1e-6 of the lr
    # as mmcv's (lr = poly(t) * (1 - (1 - t/w) (1 - 1e-6)) for t < w)
    warmup: float = 0.0
    # DAFormer's ImageNet feature distance, its weight (DAFormer 0.005; 0 = off): the student's last
    # encoder stage on the source frames kept near a frozen copy of the ImageNet-initialised
    # encoder, at the cells whose label (pooled by the stride) is a thing class; needs model.pretrained
    feature_distance: float = 0.0
    feature_distance_classes: tuple[int, ...] = (6, 7, 11, 12, 13, 14, 15, 16, 17, 18)  # traffic light ... bicycle
    feature_distance_min_ratio: float = 0.75  # a cell counts when this share of its pixels is its class
    rare_class_sampling: bool = False  # DAFormer's RCS
    rcs_temperature: float = 0.01
    rcs_min_pixels: float = 3000 / (1914 * 1052)  # of a frame's label pixels, for it to count as holding a class
    rcs_min_crop_pixels: float = 1500 / (512 * 512)  # of a crop, to stop re-cropping
    mic: bool = False  # MIC's masked image consistency on the target frames
    mic_ratio: float = 0.7  # share of the patches zeroed
    mic_block: float = 32 / 512  # patch side as a fraction of the crop height (32 px of 512)
    mic_lambda: float = 1.0
    # the size target frames are resized to before the random crop (None: data.size); Cityscapes'
    # 2:1 frames at 512x1024 in DACS and DAFormer, GTA5's at 720x1280
    target_size: tuple[int, int] | None = None

    RANGES: ClassVar[dict] = {"alpha": adam_beta, "threshold": fraction, "jitter": between(0, 0.5),
                              "jitter_p": fraction, "blur_p": fraction, "blur_sigma": Range(lo=0, lo_open=True, ordered=True),
                              "ignore_top": between(0, 0.5), "ignore_bottom": between(0, 0.5), "warmup": between(0, 0.5),
                              "feature_distance": at_least(0), "feature_distance_classes": between(0, NUM_CLASSES - 1),
                              "feature_distance_min_ratio": fraction,
                              "rcs_temperature": positive, "rcs_min_pixels": fraction, "rcs_min_crop_pixels": fraction,
                              "mic_ratio": between(0, 1, hi_open=True), "mic_block": between(0, 1, lo_open=True),
                              "mic_lambda": at_least(0), "target_size": at_least(16)}


@dataclass
class OnlineConfig(SegmentConfig):
    """``segment train``'s settings (the labelled source, model, data, optimiser, schedule) plus
    the unlabelled target and the method's settings. Self-training's ``mix`` and ``init_from``
    belong to ``segment train``: set here they are refused."""

    target: str = ""  # unlabelled target frames (train split), e.g. cityscapes:/data/cityscapes:train
    online: OnlineSettings = field(default_factory=OnlineSettings)

    def __post_init__(self):
        for name in ("mix", "mix_fraction", "init_from"):
            if getattr(self, name) != getattr(SegmentConfig, name):
                raise ValueError(f"{name}: segment train's self-training setting; segment adapt trains on train and "
                                 f"the unlabelled target")


# --- the method's parts (each tested against its definition) ---------------------------------------

@torch.no_grad()
def ema_update(teacher: torch.nn.Module, student: torch.nn.Module, step: int, alpha: float) -> float:
    """phi <- a phi + (1 - a) theta over the parameters, a = min(1 - 1/(step + 1), alpha): the
    plain mean of the students so far until the exponential mean weighs more. Returns a."""
    a = min(1 - 1 / (step + 1), alpha)
    for p_t, p_s in zip(teacher.parameters(), student.parameters()):
        p_t.mul_(a).add_(p_s.detach(), alpha=1 - a)
    return a


def classmix_masks(labels: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """(B, H, W) bool: per frame, the pixels of ceil(n/2) of the n classes in its label (ignore
    left out), drawn without replacement."""
    masks = torch.zeros_like(labels, dtype=torch.bool)
    for i, y in enumerate(labels):
        classes = y.unique()
        classes = classes[classes != IGNORE]
        n = len(classes)
        chosen = classes[torch.randperm(n, generator=gen)[:(n + 1) // 2].to(classes.device)]
        masks[i] = torch.isin(y, chosen)
    return masks


def class_mix(x_s, y_s, x_t, y_t, w_t, masks):
    """x_m = M x_s + (1 - M) x_t, y_m = M y_s + (1 - M) y^_t, w_m = M + (1 - M) w_t."""
    m = masks[:, None].to(x_s.dtype)
    return (m * x_s + (1 - m) * x_t, torch.where(masks, y_s, y_t),
            torch.where(masks, torch.ones_like(w_t), w_t))


def confidence_weight(probs: torch.Tensor, threshold: float, valid: torch.Tensor | None = None) -> torch.Tensor:
    """q: the share of the batch's pixels whose highest class probability is >= threshold (a 0-d
    tensor); with ``valid`` (B, H, W), of its valid pixels (a crop's padding is no frame)."""
    confident = (probs.max(1).values >= threshold).float()
    return confident.mean() if valid is None else (confident * valid).sum() / valid.sum().clamp(min=1)


def rare_class_probabilities(freq: dict[int, float], temperature: float) -> dict[int, float]:
    """P(c) = softmax((1 - f_c) / T) over the classes present in the source."""
    classes = [c for c, f in freq.items() if f > 0]
    logits = torch.tensor([(1 - freq[c]) / temperature for c in classes], dtype=torch.float64)
    return dict(zip(classes, logits.softmax(0).tolist()))


def mic_mask(shape: tuple[int, int, int], ratio: float, block: int, gen: torch.Generator) -> torch.Tensor:
    """(B, 1, H, W) float: 1 where a pixel is kept; each block x block patch is zeroed with
    probability ``ratio`` (MIC's BlockMaskGenerator)."""
    b, h, w = shape
    keep = (torch.rand(b, 1, math.ceil(h / block), math.ceil(w / block), generator=gen) > ratio).float()
    return keep.repeat_interleave(block, 2).repeat_interleave(block, 3)[:, :, :h, :w]


def strong_augment(x: torch.Tensor, gen: torch.Generator, s: OnlineSettings, mean=(0.5, 0.5, 0.5),
                   std=(0.5, 0.5, 0.5)) -> torch.Tensor:
    """DACS's strong augmentation of normalised frames, each its own draws: colour jitter (with
    probability jitter_p; brightness, contrast and saturation factors in [1 - s, 1 + s], hue
    shift in [-s, s] (at most 0.5), in a random order) and a gaussian blur (with probability
    blur_p; sigma ~ U(blur_sigma), kernel ~10% of the height, odd)."""
    m = torch.tensor(mean, device=x.device).view(3, 1, 1)
    sd = torch.tensor(std, device=x.device).view(3, 1, 1)
    u = lambda lo, hi: float(lo + (hi - lo) * torch.rand((), generator=gen))  # noqa: E731
    out = []
    k = int(math.ceil(0.1 * x.shape[-2]))
    k = k + 1 - k % 2
    for img in x:
        img = (img.float() * sd + m).clamp(0, 1)
        if u(0, 1) < s.jitter_p and s.jitter > 0:
            ops = [lambda im, f=u(1 - s.jitter, 1 + s.jitter): TF.adjust_brightness(im, f),
                   lambda im, f=u(1 - s.jitter, 1 + s.jitter): TF.adjust_contrast(im, f),
                   lambda im, f=u(1 - s.jitter, 1 + s.jitter): TF.adjust_saturation(im, f),
                   lambda im, f=u(-min(s.jitter, 0.5), min(s.jitter, 0.5)): TF.adjust_hue(im, f)]
            for j in torch.randperm(4, generator=gen).tolist():
                img = ops[j](img)
        if u(0, 1) < s.blur_p:
            sigma = u(*s.blur_sigma)
            img = TF.gaussian_blur(img, [k, k], [sigma, sigma])
        out.append((img - m) / sd)
    return torch.stack(out).to(x.dtype)


def weighted_ce(logits: torch.Tensor, labels: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Mean over all pixels of w * CE (an ignored pixel counts 0), as DACS's pixel-wise weighted CE."""
    ce = nnf.cross_entropy(logits.float(), labels, ignore_index=IGNORE, reduction="none")
    return (weight * ce).mean()


def pooled_labels(labels: torch.Tensor, factor: int, min_ratio: float, classes: int = NUM_CLASSES) -> torch.Tensor:
    """(B, H, W) trainIds -> (B, H/f, W/f): each f x f cell's majority class, void (255) where that
    class covers under ``min_ratio`` of the cell or is void itself (DAFormer's downscale_label_ratio)."""
    one_hot = nnf.one_hot(labels.masked_fill(labels == IGNORE, classes).long(), classes + 1).permute(0, 3, 1, 2)
    share, cls = nnf.avg_pool2d(one_hot.float(), factor).max(1)
    return cls.masked_fill((cls == classes) | (share < min_ratio), IGNORE)


def feature_distance(student: torch.Tensor, imagenet: torch.Tensor, labels: torch.Tensor, s: "OnlineSettings") -> torch.Tensor:
    """The mean L2 distance over channels between the student's and the ImageNet encoder's last-stage
    features (B, C, h, w) at the cells whose pooled label is one of the thing classes; 0 if none."""
    factor = labels.shape[-1] // student.shape[-1]
    if factor * student.shape[-1] != labels.shape[-1] or factor * student.shape[-2] != labels.shape[-2]:
        raise ValueError(f"labels {tuple(labels.shape[-2:])} are not a whole multiple of the features "
                         f"{tuple(student.shape[-2:])}")
    pooled = pooled_labels(labels, factor, s.feature_distance_min_ratio)
    things = torch.isin(pooled, torch.tensor(s.feature_distance_classes, device=pooled.device))
    dist = (student.float() - imagenet.float()).norm(dim=1)
    return (dist * things).sum() / things.sum().clamp(min=1)


def without_dropout(net: torch.nn.Module) -> torch.nn.Module:
    """``net`` in training mode (BatchNorm on batch statistics) with dropout and drop-path off."""
    net.train()
    for m in net.modules():
        if isinstance(m, torch.nn.modules.dropout._DropoutNd) or type(m).__name__ == "DropPath":
            m.training = False
    return net


def warmup_poly(t: int, total: int, warmup: int, power: float, ratio: float = 1e-6) -> float:
    """mmcv's poly schedule with its linear warm-up, as a factor of the lr at step t (0-based):
    (1 - t/total)^power, times 1 - (1 - t/warmup)(1 - ratio) for t < warmup."""
    poly = max(0.0, 1 - t / total) ** power
    return poly * (1 - (1 - t / warmup) * (1 - ratio)) if t < warmup else poly


# --- rare-class sampling --------------------------------------------------------------------------

def class_pixels(index, workers: int = 2) -> np.ndarray:
    """(frames, 20): per frame's label at its stored size, the pixel count of every class, then
    of the whole label (ignore included: DAFormer's threshold is a count of a native GTA5 label)."""
    ds = SegmentationDataset(index, transform=None)
    counts = lambda item: np.append(np.bincount(item["mask"].ravel(), minlength=256)[:NUM_CLASSES], item["mask"].size)  # noqa: E731
    loader = torch.utils.data.DataLoader(ds, batch_size=None, num_workers=loader_workers(workers), collate_fn=counts)
    return np.stack(list(loader)).astype(np.int64)


class RareClassStream(StreamSampler):
    """Source positions drawn by class: position p draws a class c ~ P(c), then a frame among those
    holding enough of c; yields (draw_seed, (frame, c)). Position-based like StreamSampler."""

    def __init__(self, frames_of: dict[int, list[int]], probs: dict[int, float], batch: int, seed: int,
                 start_step: int, total_steps: int, rank: int = 0, world: int = 1):
        super().__init__(1, batch, seed, start_step, total_steps, rank, world)
        self.classes = [c for c in probs if frames_of.get(c)]
        p = np.array([probs[c] for c in self.classes])
        self.p, self.frames_of = p / p.sum(), frames_of

    def __iter__(self):
        for step in range(self.start, self.total):
            for j in range(self.batch):
                pos = (step * self.world + self.rank) * self.batch + j
                rng = np.random.default_rng([self.seed, pos, 13])
                c = self.classes[rng.choice(len(self.classes), p=self.p)]
                frames = self.frames_of[c]
                yield int(rng.integers(2**62)), (int(frames[rng.integers(len(frames))]), int(c))


class ClassCrops(torch.utils.data.Dataset):
    """``dataset[(frame, c)]``: the frame, re-drawn (a new random crop each time) up to ``tries``
    times until its crop holds more than ``min_pixels`` of class c."""

    def __init__(self, dataset, min_pixels: float, tries: int = 10):
        self.dataset, self.min_pixels, self.tries = dataset, min_pixels, tries

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, key):
        frame, c = key
        for _ in range(self.tries):
            item = self.dataset[frame]
            if int((item["mask"] == c).sum()) > self.min_pixels:
                break
        return item


def rare_class_setup(cfg: OnlineConfig, index, run: Path) -> tuple[dict, dict, dict]:
    """Class frequencies of the source train labels (cached in RUN/rcs_stats.json), P(c), and the
    frames holding enough of each class."""
    cache = run / "rcs_stats.json"
    names = [s.rel for s in index.samples]
    stats = json.loads(cache.read_text()) if cache.is_file() else {}
    if stats.get("frames") != names or len(stats["counts"][0]) != NUM_CLASSES + 1:  # (older caches: no frame size)
        counts = class_pixels(index, cfg.data.workers)
        stats = {"frames": names, "counts": counts.tolist()}
        run.mkdir(parents=True, exist_ok=True)
        atomic_write_text(cache, json.dumps(stats))
    counts = np.asarray(stats["counts"], dtype=np.int64)
    counts, pixels = counts[:, :NUM_CLASSES], counts[:, NUM_CLASSES].clip(min=1)
    total = counts.sum(0)
    freq = {c: float(total[c] / max(total.sum(), 1)) for c in range(NUM_CLASSES)}
    probs = rare_class_probabilities(freq, cfg.online.rcs_temperature)
    frames_of = {c: np.flatnonzero(counts[:, c] / pixels >= cfg.online.rcs_min_pixels).tolist() for c in probs}
    return freq, probs, frames_of


class Unlabelled:
    """A joint transform for unlabelled frames that still says where its crop was padded: the mask
    it returns is 0 on the frame and IGNORE on the padding (a random scale below 1 pads the crop),
    so that the teacher's labels and the confidence weight leave the padding out."""

    def __init__(self, transform):
        self.transform = transform

    def __call__(self, image: np.ndarray, mask):
        return self.transform(image, np.zeros(image.shape[:2], np.uint8))


# --- the trainer ----------------------------------------------------------------------------------

class OnlineTrainer(SegmentTrainer):
    """The student (SegmentTrainer's model, optimiser and schedule) and its EMA teacher; one DACS
    step (module docstring). At the end of each epoch the student and the teacher are validated
    on the (translated) source val split and kept as student.safetensors and teacher.safetensors."""

    show = ("CE", "mix", "q", "FD")

    def __init__(self, cfg: OnlineConfig, rt: Runtime, total: int, val_index, run: Path):
        super().__init__(cfg, rt, total, val_index, run)
        s = cfg.online
        if s.warmup > 0:  # DAFormer: linear warm-up, then the poly decay
            w, power = max(round(s.warmup * total), 1), cfg.poly_power
            self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, lambda t: warmup_poly(t, total, w, power))
        self.teacher = without_dropout(copy.deepcopy(unwrap(self.model)))
        for p in self.teacher.parameters():
            p.requires_grad_(False)
        self.imagenet = self.tap = None
        if s.feature_distance > 0:  # the frozen ImageNet-initialised encoder, and a tap on the student's
            if not cfg.model.pretrained:
                raise UserError("online.feature_distance > 0 keeps the encoder near its ImageNet weights: set "
                                "model.pretrained (true, or a weights file)")
            encoder = encoder_of(unwrap(self.model))
            self.imagenet = copy.deepcopy(encoder).eval()
            for p in self.imagenet.parameters():
                p.requires_grad_(False)
            self.tap = EncoderTap(encoder)
        self.gen = torch.Generator().manual_seed(10_007 * cfg.seed + 101 * rt.rank + 3)  # mixes, augmentation, masks
        self.t = 0  # optimiser steps taken
        self.last = None

    @torch.no_grad()
    def pseudo_labels(self, target: torch.Tensor, valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The teacher's labels of the un-augmented target frames and the confidence weight q per pixel
        (q; 0 in the ignored top and bottom rows; ignore where a crop was padded: ``valid`` false)."""
        with self.rt.autocast():
            logits = self.teacher(target)
        if self.rt.distributed:  # one teacher on every rank: its batch statistics averaged
            import torch.distributed as dist

            for b in self.teacher.buffers():
                if b.is_floating_point():
                    dist.all_reduce(b)
                    b.div_(self.rt.world_size)
        probs = logits.float().softmax(1)
        labels = probs.argmax(1).masked_fill(~valid, IGNORE)
        q = confidence_weight(probs, self.cfg.online.threshold, valid)
        weight = torch.full_like(labels, 1.0, dtype=torch.float32) * q
        h = labels.shape[1]
        top, bottom = round(self.cfg.online.ignore_top * h), round(self.cfg.online.ignore_bottom * h)
        weight[:, :top] = 0
        if bottom:
            weight[:, h - bottom:] = 0
        return labels, weight, q

    def step(self, batch: dict) -> dict:
        s = self.cfg.online
        x_s, y_s, x_t = batch["image"], batch["mask"], batch["target"]
        y_t, w_t, q = self.pseudo_labels(x_t, batch["target_valid"])
        x_m, y_m, w_m = class_mix(x_s, y_s, x_t, y_t, w_t, classmix_masks(y_s, self.gen).to(x_s.device))
        x_m = strong_augment(x_m, self.gen, s)
        self.opt.zero_grad(set_to_none=True)
        # one forward and backward per term (as DAFormer): each batch its own BatchNorm statistics,
        # and only one graph held at a time
        with self.rt.autocast():
            logits = self.model(x_s)
        loss_s = nnf.cross_entropy(logits.float(), y_s, ignore_index=IGNORE)
        out = {"CE": loss_s.detach()}
        if self.imagenet is not None:  # on the source frames' forward: one backward for both
            with torch.no_grad(), self.rt.autocast():
                reference = last_stage(self.imagenet(x_s))
            loss_fd = s.feature_distance * feature_distance(last_stage(self.tap.output), reference, y_s, s)
            loss_s = loss_s + loss_fd
            out["FD"] = loss_fd.detach()
        self.rt.backward(loss_s)
        with self.rt.autocast():
            logits = self.model(x_m)
        loss_m = weighted_ce(logits, y_m, w_m)
        self.rt.backward(loss_m)
        out.update(mix=loss_m.detach(), q=q.detach())
        x_k = None
        if s.mic:
            block = max(1, round(s.mic_block * x_t.shape[-2]))
            keep = mic_mask((x_t.shape[0], *x_t.shape[-2:]), s.mic_ratio, block, self.gen).to(x_t.device)
            x_k = strong_augment(x_t, self.gen, s) * keep
            with self.rt.autocast():
                logits = self.model(x_k)
            loss_k = s.mic_lambda * weighted_ce(logits, y_t, w_t)
            self.rt.backward(loss_k)
            out["mic"] = loss_k.detach()
        self.rt.step(self.opt)
        self.sched.step()
        ema_update(self.teacher, unwrap(self.model), self.t, s.alpha)
        self.t += 1
        self.last = (x_s[:2], y_s[:2], x_t[:2], y_t[:2], x_m[:2], y_m[:2], None if x_k is None else x_k[:2])
        return out

    def end_of_epoch(self, epoch: int, step: int, mean_losses: dict) -> dict:
        d = self.cfg.data
        protocol = EvalProtocol(size=tuple(d.val_size or d.size))
        student = evaluate(self.model, self.val_index, self.rt, protocol, resize_mask=True, batch_size=d.batch_size,
                           workers=d.workers)
        teacher = evaluate(self.teacher, self.val_index, self.rt, protocol, resize_mask=True,
                           batch_size=d.batch_size, workers=d.workers)
        without_dropout(self.teacher)  # (evaluate left it in plain training mode)
        self.history.append({"epoch": epoch, "step": step, "train_loss": mean_losses["CE"],
                             "mix_loss": mean_losses.get("mix"), "confidence_weight": mean_losses.get("q"),
                             **{k: student[k] for k in ("PA", "MPA", "mIoU", "FWIoU")},
                             "teacher_mIoU": teacher["mIoU"]})
        self.best = student["mIoU"]
        if self.rt.is_main:  # the last student, not the best on source val (module docstring)
            for name, net, val in (("student", unwrap(self.model), student), ("teacher", self.teacher, teacher)):
                save_weights(self.run / "checkpoints" / f"{name}.safetensors", net.state_dict(), "segmenter",
                             config=to_dict(self.cfg), epoch=epoch, step=step, selection="last",
                             val={k: val[k] for k in ("PA", "MPA", "mIoU", "FWIoU", "per_class_IoU")})
            write_json(self.run / "history.json", self.history)
        return {"val/mIoU": student["mIoU"], "val/teacher_mIoU": teacher["mIoU"]}

    def state_dict(self) -> dict:
        return {**super().state_dict(), "teacher": self.teacher.state_dict(), "gen": self.gen.get_state(), "t": self.t}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.teacher.load_state_dict(state["teacher"])
        without_dropout(self.teacher)
        self.gen.set_state(state["gen"].cpu())
        self.t = state["t"]

    def picture(self):
        """Source frames, the target frames with the teacher's labels, the mixed frames with their
        labels and (MIC) the masked target frames."""
        if self.last is None:
            return None
        x_s, y_s, x_t, y_t, x_m, y_m, x_k = self.last
        im = lambda x: denormalize(x)  # noqa: E731
        rows = []
        for i in range(len(x_s)):
            s, t, mx = im(x_s[i]), im(x_t[i]), im(x_m[i])
            row = [s, overlay(s, y_s[i].cpu().numpy()), t, overlay(t, y_t[i].cpu().numpy()), mx,
                   overlay(mx, y_m[i].cpu().numpy())]
            if x_k is not None:
                row.append(im(x_k[i]))
            rows.append(row)
        captions = ["source", "source label", "target", "teacher's label", "mixed (augmented)", "mixed label"]
        return grid(rows, captions=captions + (["MIC: masked target"] if x_k is not None else []))

    def describe(self) -> str:
        s = self.cfg.online
        parts = [f"DACS (EMA {s.alpha:g}, ClassMix, confidence >= {s.threshold:g})"]
        if s.rare_class_sampling:
            parts.append(f"rare-class sampling (T {s.rcs_temperature:g})")
        if s.mic:
            parts.append(f"MIC ({100 * s.mic_ratio:.0f}% of patches masked)")
        if s.feature_distance:
            parts.append(f"ImageNet feature distance x{s.feature_distance:g}")
        return super().describe() + ", " + " + ".join(parts)

    def summary(self) -> dict:
        return {**super().summary(), "selection": "last"}


def resolve_config(run: Path, config, overrides: list[str], resume: bool) -> OnlineConfig:
    cfg = resolve_run_config(OnlineConfig, run, config, overrides, resume)
    if not cfg.train or not cfg.val or not cfg.target:
        raise UserError("give --train, --val and --target (or train:/val:/target: in the config)")
    return cfg


def train_online(cfg: OnlineConfig, run: str | Path, resume: bool = False, stop_at_step: int | None = None,
                 progress: bool = True) -> dict:
    """Train a student with its EMA teacher on labelled ``train`` frames and unlabelled ``target``
    frames (module docstring); a segment run folder whose student.safetensors is the last student."""
    run = Path(run)
    rt = init_runtime(cfg.device, cfg.amp, cfg.channels_last)
    d = cfg.data
    aug, train_index, val_index, source, per_epoch = labelled_source(cfg, rt)
    # the target's labels (the synthetic benchmark has them) are never read
    # the target's crops: plain (DAFormer's class-balanced crops are the source's)
    target_aug = replace(aug, size=tuple(cfg.online.target_size or aug.size), cat_max_ratio=None)
    target = SegmentationDataset(build_index(cfg.target), Unlabelled(train_transform(target_aug)), with_labels=False)
    total = cfg.epochs * per_epoch
    trainer = OnlineTrainer(cfg, rt, total, val_index, run)
    rcs = rare_class_setup(cfg, train_index, run) if cfg.online.rare_class_sampling else None
    crop_px = (d.crop or d.size)[0] * (d.crop or d.size)[1]

    def make_loader(start: int, end: int):
        kw = dict(batch_size=d.batch_size, num_workers=loader_workers(d.workers), pin_memory=rt.device.type == "cuda", drop_last=True)
        if rcs is not None:
            src = RareClassStream(rcs[2], rcs[1], d.batch_size, cfg.seed, start, end, rt.rank, rt.world_size)
            src_ds = Seeded(ClassCrops(source, cfg.online.rcs_min_crop_pixels * crop_px))
        else:
            src, src_ds = StreamSampler(len(source), d.batch_size, cfg.seed, start, end, rt.rank, rt.world_size), Seeded(source)
        tgt = StreamSampler(len(target), d.batch_size, cfg.seed + 7919, start, end, rt.rank, rt.world_size)
        a = torch.utils.data.DataLoader(src_ds, sampler=src, generator=torch.Generator().manual_seed(cfg.seed), **kw)
        b = torch.utils.data.DataLoader(Seeded(target), sampler=tgt, generator=torch.Generator().manual_seed(cfg.seed + 1),
                                        **kw)
        for s, t in zip(a, b):
            yield {"image": s["image"], "mask": s["mask"], "target": t["image"], "target_valid": t["mask"] != IGNORE}

    schedule = Schedule(total, per_epoch, cfg.log_every, cfg.checkpoint_every,
                        image_every=per_epoch)
    if rcs is not None and rt.is_main:

        top = sorted(rcs[1].items(), key=lambda kv: -kv[1])[:5]
        say("rare-class sampling: " + ", ".join(f"{CLASS_NAMES[c]} {p:.2f}" for c, p in top))
        write_json(run / "rcs.json", {"frequency": {CLASS_NAMES[c]: f for c, f in rcs[0].items()},
                                      "probability": {CLASS_NAMES[c]: p for c, p in rcs[1].items()},
                                      "frames": {CLASS_NAMES[c]: len(v) for c, v in rcs[2].items()}})
    return train_loop(trainer, make_loader, run, cfg, rt, schedule, resume, stop_at_step, progress,
                      name=f"adapt ({len(source)} source + {len(target)} target / {len(val_index.samples)} val frames)")
