"""Joint transforms keep the mask aligned with the image and integer."""
import numpy as np
import torch

from i2iuda.data import labels as L
from i2iuda.data.transforms import AugmentConfig, eval_transform, train_transform
from i2iuda.pictures import denormalize


def blocky_pair(h=180, w=360, block=30, seed=0):
    rng = np.random.default_rng(seed)
    mask = rng.choice(np.arange(19), size=(h // block, w // block)).astype(np.uint8)
    mask = np.kron(mask, np.ones((block, block), np.uint8))
    return L.PALETTE[mask], mask  # each class has its own colour: alignment is checkable


def decode(image: np.ndarray) -> np.ndarray:
    d = ((image[:, :, None, :].astype(int) - L.PALETTE[None, None].astype(int)) ** 2).sum(-1)
    return d.argmin(-1)


def test_train_transform_keeps_mask_aligned_and_integer():
    image, mask = blocky_pair()
    cfg = AugmentConfig(size=(90, 180), scale=(0.75, 1.5), crop=(80, 160), hflip=0.5, blur=0.0)
    tf = train_transform(cfg)
    torch.manual_seed(0)
    padded = 0
    for _ in range(10):
        x, m = tf(image, mask)
        assert x.dtype == torch.float32 and x.shape == (3, 80, 160)
        assert m.dtype == torch.int64 and m.shape == (80, 160)
        assert set(m.unique().tolist()) <= set(range(19)) | {255}
        assert x.min() >= -1 and x.max() <= 1
        decoded, m = decode(denormalize(x)), m.numpy()
        valid = m != 255
        padded += (~valid).any()
        agree = (decoded == m)[valid].mean()
        assert agree > 0.8, agree  # only pixels on block edges may blur into a neighbour
        shifted = (np.roll(decoded, 8, axis=1) == m)[valid].mean()
        assert shifted < agree - 0.1  # a misalignment of 8 px would be caught
    assert padded  # scale < 1 made crops larger than the frame: mask padded with 255


def test_blur_touches_image_not_mask():
    image, mask = blocky_pair()
    tf = train_transform(AugmentConfig(size=(180, 360), hflip=0.0, blur=1.0))
    x, m = tf(image, mask)
    assert np.array_equal(m.numpy(), mask)
    assert not np.array_equal(denormalize(x), image)


def test_eval_transform_keeps_full_resolution_mask():
    image, mask = blocky_pair()
    x, m = eval_transform((45, 90))(image, mask)
    assert x.shape == (3, 45, 90) and m.shape == mask.shape and np.array_equal(m.numpy(), mask)
    x, m = eval_transform((45, 90), resize_mask=True)(image, mask)
    assert m.shape == (45, 90) and set(m.unique().tolist()) <= set(np.unique(mask).tolist())
    x, none = eval_transform(None)(image, None)
    assert none is None and x.shape == (3, 180, 360)


def test_a_seeded_draw_repeats_its_augmentation_and_leaves_every_other_generator_alone(monkeypatch):
    """Seeded (the training loaders' wrapper): the same draw gives the same random crop and flip,
    the global CPU generator is as it was, and no accelerator generator is reseeded per frame."""
    from i2iuda.data.sampling import Seeded

    image, mask = blocky_pair()
    tf = train_transform(AugmentConfig(size=(90, 180), scale=(0.75, 1.5), crop=(80, 160), hflip=0.5, blur=0.0))

    class Frames(torch.utils.data.Dataset):
        def __len__(self):
            return 1

        def __getitem__(self, i):
            return tf(image, mask)

    def no_reseed(*args):
        raise AssertionError("an accelerator's generator reseeded by a data draw")

    frames = Seeded(Frames())
    torch.manual_seed(123)
    monkeypatch.setattr(torch.cuda, "manual_seed_all", no_reseed)
    before = torch.get_rng_state()
    a, b, c = frames[(7, 0)], frames[(7, 0)], frames[(8, 0)]
    assert torch.equal(torch.get_rng_state(), before)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])
