"""CycleGAN (Zhu, Park, Isola, Efros, ICCV 2017): networks, losses and one training step.

Names follow the paper: G maps source S -> target T, F maps T -> S, D_T tells real target
frames from G(S), D_S tells real source frames from F(T).

CyCADA (Hoffman et al., ICML 2018) is CycleGAN plus a *semantic consistency* loss, here the
``semantic`` setting: a frozen segmenter f trained on the source labels must see the same classes
in a frame before and after translation,

    L_sem = CE(f(G(x_s)), argmax f(x_s)) + CE(f(F(x_t)), argmax f(x_t))

so that G cannot turn a bus into a brown box that reads as building. f is in eval mode with
no gradient to its weights; the gradient flows through it into G and F. The caller loads f (the
``semantic_model`` run) and passes it in: a translator knows no segmentation code.

Differences from the seed report, on purpose: the discriminators end in a plain 1-channel
convolution with **no sigmoid**, because the least-squares GAN loss the paper uses is an MSE
on raw scores (the seed report's code puts a sigmoid before it, which squashes the scores
and weakens the gradients).
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field, replace
from typing import ClassVar, Literal

import torch
import torch.nn as nn
import torch.nn.functional as nnf
from torch.optim.swa_utils import AveragedModel

from ..config import Range, adam_beta, at_least, between, positive
from ..errors import UserError
from ..pictures import tensor_rows
from ..runtime import Runtime, unwrap
from .base import Translator
from .gan import (Discriminator, Generator, distributed, init_weights, lsgan_loss, moving_average, pad_and_run,
                  patch_size, schedulers, set_requires_grad)


@dataclass
class CycleGANConfig:
    ngf: int = 64  # generator width (c7s1-ngf, d2ngf, d4ngf, R4ngf x n_blocks, ...)
    ndf: int = 64  # discriminator width (C ndf - C 2ndf - C 4ndf - C 8ndf)
    # PatchGAN depth: 3 gives the paper's 70x70 patches, 2 gives 34x34, 1 gives 16x16. Keep the
    # patch well below the frame: on 64x128 frames a 70x70 patch sees the whole frame height,
    # so D judges layout (where sky and buildings are) rather than texture and pushes G to
    # repaint regions whose frequency differs between the domains.
    d_layers: int = 3
    n_blocks: int = 9  # residual blocks (9 for 256x256 and larger, 6 for 128x128 in the paper)
    lambda_cycle: float = 10.0
    identity: bool = False  # identity loss ||G(t) - t|| + ||F(s) - s||, weight lambda_identity * lambda_cycle
    lambda_identity: float = 0.5  # the identity loss's weight, a share of lambda_cycle (the paper's 0.5)
    # down- and up-sampling of G and F (and D's): transposed (the paper's), resize, bilinear,
    # conv_bilinear, antialias (CUT's); gan.py's docstring
    sampling: Literal["transposed", "resize", "bilinear", "conv_bilinear", "antialias"] = "transposed"
    init_gain: float = 0.02  # std of the N(0, gain) initial weights (the reference's)
    # G and F paint a change to their input, tanh(atanh(x) + net(x)), starting as the identity
    # (gan.Generator; not the paper's): a young generator then keeps the edges the paper's smears
    residual: bool = False
    # decay of an exponential moving average of G and F's weights, the nets translation then uses
    # (Yazici et al., "The unusual effectiveness of averaging in GAN training", ICLR 2019): the
    # colours a GAN's generator swings through early in training average out; 0 = off (the paper's)
    ema: float = 0.0
    lr: float = 2e-4
    beta1: float = 0.5
    beta2: float = 0.999
    pool_size: int = 50  # history of generated images shown to the discriminators
    # CyCADA's semantic consistency loss (weight; 0 = off, the paper's weight is 1). f is the
    # ``segment train`` run in ``semantic_model`` (in a study: the study's source-only model),
    # which the caller loads and passes to ``build``.
    semantic: float = 0.0
    semantic_model: str = ""
    # What G(x_s) must be segmented as: ``pseudo`` = argmax f(x_s), the paper's equation and the
    # default (the loss then asks only that translation keep what f sees, whether f is right or
    # not); ``labels`` = the source label itself, TLlib's variant (it also pushes G to make frames
    # f segments correctly, which can teach G to paint f's cues rather than the target's look).
    semantic_targets: Literal["pseudo", "labels"] = "pseudo"
    # ProCST's label-cycle loss (weight; 0 = off, ProCST's is 1): the frozen source segmenter f
    # (semantic_model, as CyCADA's) must read the source labels in the reconstruction F(G(x_s)),
    #     L_lc = CE(f(F(G(x_s))), y_s)
    # where f is reliable (a source-looking frame) and the labels are the true ones
    label_cycle: float = 0.0

    RANGES: ClassVar[dict] = {"ngf": at_least(1), "ndf": at_least(1), "d_layers": between(1, 5), "n_blocks": at_least(0),
                              "lambda_cycle": at_least(0), "lambda_identity": at_least(0), "init_gain": positive,
                              "ema": Range(lo=0, hi=1, hi_open=True),
                              "lr": positive, "beta1": adam_beta, "beta2": adam_beta, "pool_size": at_least(0),
                              "semantic": at_least(0), "label_cycle": at_least(0)}


# --- the image pool --------------------------------------------------------------------------

class ImagePool:
    """History of generated images (Shrivastava et al. 2017): once full, each new image is, with
    probability 1/2, swapped for a random stored one that the discriminator sees instead.
    Has its own RNG so that a resumed run draws the same swaps."""

    def __init__(self, size: int, seed: int = 0):
        self.size = size
        self.images: list[torch.Tensor] = []
        self.rng = random.Random(seed)

    def query(self, images: torch.Tensor) -> torch.Tensor:
        if self.size == 0:  # no history: the discriminator sees this step's images, detached from G's graph
            return images.detach()
        out = []
        for img in images.detach():
            if len(self.images) < self.size:
                self.images.append(img.clone())
                out.append(img)
            elif self.rng.random() < 0.5:
                i = self.rng.randrange(self.size)
                out.append(self.images[i].clone())
                self.images[i] = img.clone()
            else:
                out.append(img)
        return torch.stack(out)

    def state_dict(self) -> dict:
        return {"images": [t.cpu() for t in self.images], "rng": self.rng.getstate()}

    def load_state_dict(self, state: dict, device: torch.device) -> None:
        self.images = [t.to(device) for t in state["images"]]
        version, internal, gauss_next = state["rng"]
        self.rng.setstate((version, tuple(internal), gauss_next))


# --- the model and one training step ------------------------------------------------------------

class Generators(nn.Module):
    """G and F in one module whose single forward computes every generator output of a step,
    so that DDP sees one forward per backward."""

    def __init__(self, cfg: CycleGANConfig):
        super().__init__()
        self.G = Generator(cfg.ngf, cfg.n_blocks, cfg.sampling, cfg.residual)  # S -> T
        self.F = Generator(cfg.ngf, cfg.n_blocks, cfg.sampling, cfg.residual)  # T -> S
        self.identity = cfg.identity

    def forward(self, real_s: torch.Tensor, real_t: torch.Tensor) -> dict[str, torch.Tensor]:
        if not self.identity:
            fake_t, fake_s = self.G(real_s), self.F(real_t)
            return {"fake_t": fake_t, "rec_s": self.F(fake_t), "fake_s": fake_s, "rec_t": self.G(fake_s)}
        # With the identity loss, G(s) and G(t) go through G as one batch (F(t) and F(s) through
        # F): instance norm is per image, so this is the same computation in 4 passes instead of
        # 6, and larger convolutions run faster on small frames.
        n = real_s.shape[0]
        fake_t, idt_t = self.G(torch.cat([real_s, real_t])).split(n)
        fake_s, idt_s = self.F(torch.cat([real_t, real_s])).split(n)
        return {"fake_t": fake_t, "rec_s": self.F(fake_t), "fake_s": fake_s, "rec_t": self.G(fake_s),
                "idt_t": idt_t, "idt_s": idt_s}


class Discriminators(nn.Module):
    """D_T and D_S; forward returns both discriminators' least-squares losses (halved)."""

    def __init__(self, cfg: CycleGANConfig):
        super().__init__()
        self.D_T = Discriminator(cfg.ndf, cfg.d_layers, cfg.sampling)
        self.D_S = Discriminator(cfg.ndf, cfg.d_layers, cfg.sampling)

    def forward(self, real_s, fake_s, real_t, fake_t) -> dict[str, torch.Tensor]:
        # halved so that D learns slower than G (paper, section 4)
        loss_t = 0.5 * (lsgan_loss(self.D_T(real_t), True) + lsgan_loss(self.D_T(fake_t), False))
        loss_s = 0.5 * (lsgan_loss(self.D_S(real_s), True) + lsgan_loss(self.D_S(fake_s), False))
        return {"D_T": loss_t, "D_S": loss_s}


def semantic_loss(f: nn.Module, real_s, real_t, fake_t, fake_s, labels_s=None) -> dict[str, torch.Tensor]:
    """CyCADA's L_sem: f must see the same classes after translation as before (argmax f of the
    untranslated frame, or the source labels for S -> T when given; 255 = ignore)."""
    with torch.no_grad():
        target_s = f(real_s).argmax(1) if labels_s is None else labels_s
        target_t = f(real_t).argmax(1)
    return {"sem_s": nnf.cross_entropy(f(fake_t).float(), target_s, ignore_index=255),
            "sem_t": nnf.cross_entropy(f(fake_s).float(), target_t, ignore_index=255)}


@dataclass
class CycleGAN(Translator):
    """The four nets (possibly DDP-wrapped), their two Adam optimisers and schedulers, and the
    image pools; for inference only ``gens`` is built (the rest is None)."""

    Config: ClassVar[type] = CycleGANConfig
    TRAINS: ClassVar[bool] = True
    directions: ClassVar[tuple[str, ...]] = ("s2t", "t2s")
    show: ClassVar[tuple[str, ...]] = ("G_total", "D_T", "D_S")

    cfg: CycleGANConfig
    gens: nn.Module  # Generators, or DDP(Generators)
    discs: nn.Module | None = None  # Discriminators, or DDP(Discriminators)
    opt_g: torch.optim.Optimizer | None = None
    opt_d: torch.optim.Optimizer | None = None
    pool_s: ImagePool | None = None
    pool_t: ImagePool | None = None
    scheds: list = field(default_factory=list)
    rt: Runtime = field(default_factory=lambda: Runtime(torch.device("cpu")))
    last: tuple | None = None  # (generator outputs, real_s, real_t) of the last step, for pictures
    f: nn.Module | None = None  # CyCADA's frozen source segmenter (semantic > 0)
    gens_ema: AveragedModel | None = None  # the moving average of G and F (ema > 0), for translation

    @classmethod
    def build(cls, tcfg, rt: Runtime, total_steps: int, training: bool = True,
              judge: nn.Module | None = None) -> "CycleGAN":
        """Nets on ``rt``'s device, DDP-wrapped under torchrun, lr constant then decayed per step
        (``tcfg.lr_decay`` from ``tcfg.decay_start``); ``judge``: CyCADA's f, frozen, reading
        translator frames (segmentation.models.frozen_segmenter)."""
        cfg = tcfg.model
        m = build_cyclegan(cfg, rt.device, tcfg.seed, rt.channels_last, training)
        m.rt = rt
        if not training:
            return m
        if cfg.semantic or cfg.label_cycle:
            if judge is None:
                raise UserError("model.semantic or model.label_cycle > 0 needs model.semantic_model: a 'segment train' "
                                "run trained on the source, whose segmenter reads the translator's frames")
            m.f = judge.to(rt.device)
        m.gens, m.discs = distributed(m.gens, rt), distributed(m.discs, rt)
        m.scheds = schedulers((m.opt_g, m.opt_d), tcfg, total_steps)
        return m

    @classmethod
    def judge_run(cls, model: CycleGANConfig) -> str | None:
        return model.semantic_model if model.semantic or model.label_cycle else None

    @classmethod
    def with_judge_run(cls, model: CycleGANConfig, run: str) -> CycleGANConfig:
        return replace(model, semantic_model=run)

    @classmethod
    def source_labels(cls, model: CycleGANConfig) -> bool:
        return bool(model.label_cycle) or (bool(model.semantic) and model.semantic_targets == "labels")

    # -- training (training.Trainer) --
    def step(self, batch: dict) -> dict:
        """One step of the paper's alternating optimisation -> losses, detached and left on the
        device (no host sync).

        Every generator output is computed once and reused: with gradients for G/F's loss,
        detached (through the pools) for the discriminators'. Both optimisers step at the end
        (the discriminators' loss reads only detached fakes, so G's update cannot change it), which
        lets one fp16 gradient scaler serve both; then the lr schedulers step.
        """
        real_s, real_t = batch["source"], batch["target"]
        discs, lam = unwrap(self.discs), self.cfg.lambda_cycle
        # 1. generators: fool both discriminators, and cycle back to the input.
        set_requires_grad(discs, False)  # D gets no gradients from G's loss
        with self.rt.autocast():
            out = self.gens(real_s, real_t)
            loss = {
                "G_gan": lsgan_loss(discs.D_T(out["fake_t"]), True),
                "F_gan": lsgan_loss(discs.D_S(out["fake_s"]), True),
                "cycle_s": nnf.l1_loss(out["rec_s"].float(), real_s.float()) * lam,
                "cycle_t": nnf.l1_loss(out["rec_t"].float(), real_t.float()) * lam,
            }
            if self.cfg.identity:
                idt = lam * self.cfg.lambda_identity
                loss["idt_t"] = nnf.l1_loss(out["idt_t"].float(), real_t.float()) * idt
                loss["idt_s"] = nnf.l1_loss(out["idt_s"].float(), real_s.float()) * idt
            if self.cfg.semantic:
                labels = batch.get("source_label") if self.cfg.semantic_targets == "labels" else None
                sem = semantic_loss(self.f, real_s, real_t, out["fake_t"], out["fake_s"], labels)
                loss.update({k: v * self.cfg.semantic for k, v in sem.items()})
            if self.cfg.label_cycle:  # ProCST: f reads the source labels in F(G(x_s))
                loss["label_cycle"] = self.cfg.label_cycle * nnf.cross_entropy(
                    self.f(out["rec_s"]).float(), batch["source_label"], ignore_index=255)
        loss_g = sum(loss.values())
        self.opt_g.zero_grad(set_to_none=True)
        self.rt.backward(loss_g)
        # 2. discriminators: real vs. (pooled, detached) generated images.
        set_requires_grad(discs, True)
        fake_t = self.pool_t.query(out["fake_t"])
        fake_s = self.pool_s.query(out["fake_s"])
        with self.rt.autocast():
            loss_d = self.discs(real_s, fake_s, real_t, fake_t)
        self.opt_d.zero_grad(set_to_none=True)
        self.rt.backward(loss_d["D_T"] + loss_d["D_S"])
        self.rt.step(self.opt_g, self.opt_d)
        for s in self.scheds:
            s.step()
        if self.gens_ema is not None:
            self.gens_ema.update_parameters(unwrap(self.gens))
        loss.update(loss_d)
        loss["G_total"] = loss_g
        self.last = ({k: v.detach() for k, v in out.items()}, real_s, real_t)
        return {k: v.detach() for k, v in loss.items()}

    def state_dict(self) -> dict:
        ema = {"gens_ema": self.gens_ema.state_dict()} if self.gens_ema is not None else {}
        return {"gens": unwrap(self.gens).state_dict(), "discs": unwrap(self.discs).state_dict(),
                "opt_g": self.opt_g.state_dict(), "opt_d": self.opt_d.state_dict(),
                "sched": [s.state_dict() for s in self.scheds], "pool_s": self.pool_s.state_dict(),
                "pool_t": self.pool_t.state_dict(), **ema}

    def load_state_dict(self, state: dict) -> None:
        unwrap(self.gens).load_state_dict(state["gens"])
        unwrap(self.discs).load_state_dict(state["discs"])
        self.opt_g.load_state_dict(state["opt_g"])
        self.opt_d.load_state_dict(state["opt_d"])
        for s, sd in zip(self.scheds, state["sched"]):
            s.load_state_dict(sd)
        self.pool_s.load_state_dict(state["pool_s"], self.rt.device)
        self.pool_t.load_state_dict(state["pool_t"], self.rt.device)
        if self.gens_ema is not None:
            self.gens_ema.load_state_dict(state["gens_ema"])

    def weights(self) -> dict[str, torch.Tensor]:  # inference needs G and F only
        return self.inference_module().state_dict()

    def inference_module(self) -> "Generators":
        """The G and F that translate: their moving average where there is one."""
        return self.gens_ema.module if self.gens_ema is not None else unwrap(self.gens)

    def end_of_epoch(self, epoch: int, step: int, mean_losses: dict) -> dict:
        return {"lr": self.scheds[0].get_last_lr()[0]}

    def picture(self):
        """Rows of real S, G(S), F(G(S)), real T, F(T), G(F(T)) for the last step's first 2 frames."""
        out, real_s, real_t = self.last
        cols = [real_s, out["fake_t"], out["rec_s"], real_t, out["fake_s"], out["rec_t"]]
        return tensor_rows(cols, ["real S", "G(S)", "F(G(S))", "real T", "F(T)", "G(F(T))"], n=2)

    def describe(self, size: tuple[int, int] | None = None) -> str:
        c = self.cfg
        p = patch_size(c.d_layers)
        sem = (f", CyCADA semantic loss x{c.semantic:g} ({'argmax f(x_s)' if c.semantic_targets == 'pseudo' else 'source labels'})"
               if c.semantic else "")
        sem += f", ProCST label-cycle loss x{c.label_cycle:g}" if c.label_cycle else ""
        idt = f"on (x{c.lambda_identity:g})" if c.identity and c.lambda_identity != 0.5 else "on" if c.identity else "off"
        look = f", {c.sampling} sampling" if c.sampling != "transposed" else ""
        look += f", init gain {c.init_gain:g}" if c.init_gain != 0.02 else ""
        look += f", weights averaged (EMA {c.ema:g})" if c.ema else ""
        look += ", residual generators (start as the identity)" if c.residual else ""
        return f"CycleGAN ngf={c.ngf}, {c.n_blocks} blocks, {p}x{p} PatchGAN, identity loss {idt}{sem}{look}"

    # -- inference (Translator) --
    @torch.no_grad()
    def translate(self, x: torch.Tensor, names: list[str], direction: str = "s2t") -> torch.Tensor:
        gens = self.inference_module()
        return pad_and_run(gens.G if direction == "s2t" else gens.F, x)

    @torch.no_grad()
    def samples(self, x_s, names_s, x_t):
        gens = self.inference_module()
        G, F = gens.G, gens.F
        g_s, f_t = pad_and_run(G, x_s), pad_and_run(F, x_t)
        return ([x_s, g_s, pad_and_run(F, g_s), x_t, f_t, pad_and_run(G, f_t)],
                ["source", "G(source)", "F(G(source))", "target", "F(target)", "G(F(target))"])

    def eval(self) -> "CycleGAN":
        self.gens.eval()
        return self


def build_cyclegan(cfg: CycleGANConfig, device: torch.device, seed: int = 0, channels_last: bool = False,
                   training: bool = True) -> CycleGAN:
    """The nets (initialised as the reference), their optimisers and the pools, on one device."""
    torch.manual_seed(seed)
    gens = Generators(cfg)
    discs = Discriminators(cfg) if training else None
    for net in (gens, discs) if training else (gens,):
        init_weights(net, cfg.init_gain)
        net.to(device)
        if channels_last:
            net.to(memory_format=torch.channels_last)
    rt = Runtime(device, channels_last=channels_last)
    if not training:
        return CycleGAN(cfg, gens, rt=rt)
    betas = (cfg.beta1, cfg.beta2)
    return CycleGAN(cfg, gens, discs,
                    torch.optim.Adam(gens.parameters(), lr=cfg.lr, betas=betas),
                    torch.optim.Adam(discs.parameters(), lr=cfg.lr, betas=betas),
                    ImagePool(cfg.pool_size, seed + 1), ImagePool(cfg.pool_size, seed + 2), rt=rt,
                    gens_ema=moving_average(gens, cfg.ema))
